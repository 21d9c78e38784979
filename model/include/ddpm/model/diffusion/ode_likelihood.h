// Exact log-likelihood of the probability-flow ODE (Song et al. 2021, section 4.3 and appendix D.2)
// of a trained GaussianDiffusion, with the VP SDE of sde_samplers.h (step i at s = (i+1)/T, rho =
// -log alpha_bar). Along dx/drho = g(x, rho) = -1/2 (x - eps(x, rho) / sqrt(1 - abar)), rho rising
// from the data to the noise, the instantaneous change of variables gives
//   log p_0(x) = log N(x_T; 0, I) + int div g(x(rho), rho) drho,  div g = -1/2 (D - div eps / sqrt(1 - abar)),
// where p_0 is the model's density at step 0 (s = 1/T, the smallest t the network knows: the eps of
// Song et al.), x(rho_0) = x, and x_T = x(rho_{T-1}) at step T-1 (s = 1). div eps is Hutchinson's
// estimate v^T (d eps / dx) v with one probe v per sample, the same along the path (one vector-
// Jacobian product by autograd per network call), taken as v^T (J / sd - I) v + D (sd = sqrt(1 - abar):
// J / sd is near I at high noise, so Gaussian probes lose most of their variance; Rademacher probes
// are unchanged). Heun's method integrates x and the log-density together between the integer steps
// of the uniform-in-t grid (sde_time_indices), as pf-ode-heun does backwards. Unbiased in v for a
// given path; exact when d eps / dx is diagonal and v is Rademacher (v_k^2 = 1). Not the
// dequantization or bits/dim (trainer/inference.h).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

struct OdeLikelihood {
  at::Tensor log_p;        // (N) float64 nats: log p_0(x), the prior term plus the path integral
  at::Tensor prior_log_p;  // (N) float64 nats: log N(x_T; 0, I)
  at::Tensor x_T;          // (N, C, H, W) the end of the path, x's dtype
};

// x (N, C, H, W) at step 0, probe (N, C, H, W) (Rademacher or standard normal), `steps` Heun steps
// (1..T-1; 2 network calls with a backward pass each). The model is called with gradients enabled
// for its input whatever the caller's grad mode; parameters that require grad add work only (turn
// it off for evaluation). Throws std::invalid_argument naming --ode-steps when steps is out of range.
OdeLikelihood ode_log_likelihood(const GaussianDiffusion& d, const ModelFn& model, const at::Tensor& x,
                                 const at::Tensor& probe, int64_t steps,
                                 const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace ddpm::diffusion
