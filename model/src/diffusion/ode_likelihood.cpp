// Probability-flow ODE log-likelihood with Hutchinson's trace estimator and Heun's method; see
// ddpm/model/diffusion/ode_likelihood.h.
#include "ddpm/model/diffusion/ode_likelihood.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "ddpm/model/diffusion/sde_samplers.h"

namespace ddpm::diffusion {

namespace {

struct DriftDiv {
  at::Tensor g;    // (N, C, H, W) dx/drho
  at::Tensor div;  // (N) float64, Hutchinson's estimate of div g
};

// g(x, i) and its divergence: one network call and one vector-Jacobian product v^T (d eps / dx).
DriftDiv drift_and_divergence(const GaussianDiffusion& d, const ModelFn& model, const at::Tensor& x,
                              const at::Tensor& probe, int64_t i, double abar) {
  const at::AutoGradMode grad_on(true);
  const at::Tensor xg = x.detach().requires_grad_(true);
  const at::Tensor eps = predict_eps_x0(d, model, xg, i).eps;  // (N, C, H, W)
  const at::Tensor vjp = torch::autograd::grad({eps}, {xg}, {probe.to(eps.options())})[0];
  const double dims = static_cast<double>(x[0].numel()), sd = std::sqrt(1.0 - abar);
  // tr(J / sd) = tr(J / sd - I) + D, with the probe on J / sd - I only (E |v|^2 = D): the same for
  // Rademacher probes (|v|^2 = D), far less variance for Gaussian ones where J / sd ~ I (high noise).
  const at::Tensor vjv = (vjp.detach() * probe).flatten(1).sum(1).to(at::kDouble);     // (N) v^T J v
  const at::Tensor vv = probe.to(at::kDouble).flatten(1).pow(2).sum(1);                // (N) |v|^2
  const at::Tensor div_eps_sd = vjv / sd - vv + dims;                                  // (N) ~ tr(J) / sd
  return {-0.5 * (x - eps.detach() / sd), -0.5 * (dims - div_eps_sd)};
}

}  // namespace

OdeLikelihood ode_log_likelihood(const GaussianDiffusion& d, const ModelFn& model, const at::Tensor& x,
                                 const at::Tensor& probe, int64_t steps,
                                 const std::function<void(int64_t, int64_t)>& progress) {
  TORCH_CHECK(x.dim() >= 2 && probe.sizes() == x.sizes(), "ode_log_likelihood: x ", x.sizes(), " and probe ",
              probe.sizes(), " must be the same (N, C, ...)");
  const int64_t T = d.num_timesteps();
  if (steps < 1 || steps > T - 1) {
    throw std::invalid_argument("--ode-steps " + std::to_string(steps) + ": give 1.." + std::to_string(T - 1) +
                                " (Heun steps between the diffusion's T = " + std::to_string(T) + " steps)");
  }
  // Uniform in log-SNR from step 0 to T-1 (no lambda_min: the prior sits at T-1): near the data the
  // flow is stiff in rho (its Jacobian ~ 1 / (1 - abar)) but not in lambda.
  std::vector<int64_t> idx = sde_time_indices(d, steps + 1, /*logsnr=*/true, -HUGE_VAL);  // T-1 ... 0
  std::reverse(idx.begin(), idx.end());                                                  // 0 ... T-1
  const at::Tensor ab_t = d.arrays().alphas_cumprod.contiguous();
  const double* ab = ab_t.data_ptr<double>();
  at::Tensor x_k = x.detach();
  at::Tensor integral = at::zeros({x.size(0)}, x.options().dtype(at::kDouble));  // (N) int div g drho
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t i = idx[k], j = idx[k + 1];
    const double delta = std::log(ab[i] / ab[j]);  // rho_j - rho_i > 0
    const DriftDiv a = drift_and_divergence(d, model, x_k, probe, i, ab[i]);
    const DriftDiv b = drift_and_divergence(d, model, x_k + delta * a.g, probe, j, ab[j]);
    x_k = x_k + 0.5 * delta * (a.g + b.g);
    integral = integral + 0.5 * delta * (a.div + b.div);
    if (progress) progress(k + 1, steps);
  }
  const double dims = static_cast<double>(x[0].numel());
  const at::Tensor sq = x_k.to(at::kDouble).flatten(1).pow(2).sum(1);  // (N)
  OdeLikelihood out;
  out.prior_log_p = -0.5 * sq - 0.5 * dims * std::log(2.0 * std::numbers::pi);
  out.log_p = out.prior_log_p + integral;
  out.x_T = x_k;
  return out;
}

}  // namespace ddpm::diffusion
