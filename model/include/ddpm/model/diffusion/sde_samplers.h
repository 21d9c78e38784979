// Score-SDE samplers over a trained GaussianDiffusion (Song et al. 2021): the VP SDE of the discrete
// schedule, reverse-SDE Euler-Maruyama, probability-flow ODE Euler and Heun, and DPM-Solver++(2M)
// (Lu et al. 2022). The network is a callable (ModelFn), as everywhere in diffusion/. Not the
// ancestral and DDIM samplers (sampling.cpp), nor the per-sample noise streams (trainer/).
//
// Continuous time s in [0, 1]. Discrete step i = 0..T-1 (alphas_cumprod[i]) sits at s = (i + 1)/T
// and s = 0 is the data (alpha_bar = 1). log alpha_bar(s) is linear between these grid points,
// i.e. beta(s) is piecewise constant, beta(s) = -T log(1 - beta_i) (~ T beta_i) on (i/T, (i+1)/T],
// so alpha_bar(s) = exp(-int_0^s beta) equals the discrete alphas_cumprod at every grid point. With
// rho(s) = int_0^s beta = -log alpha_bar(s):
//   forward SDE      dx = -1/2 beta(s) x ds + sqrt(beta(s)) dW
//   reverse SDE      dx = [-1/2 beta(s) x - beta(s) score(x, s)] ds + sqrt(beta(s)) dW_bar
//   probability flow dx/ds = -1/2 beta(s) (x + score(x, s))
//   score(x, s) = -eps(x, s) / sqrt(1 - alpha_bar(s)).
//
// Every sampler steps between grid points only: s_k = (i_k + 1)/T for N strictly decreasing integer
// indices i_0 = T-1 > ... > i_{N-1} = 0, so the network is called with exactly the integer t it was
// trained on (mapped by GaussianDiffusion::call_model: timestep_map, rescale_timesteps) and
// alpha_bar(s_k) = alphas_cumprod[i_k]; the interpolation enters only through the step's
// integrated rate Delta = rho(s_k) - rho(s_{k+1}) = log(alphas_cumprod[i_{k+1}] / alphas_cumprod[i_k]),
// i.e. Euler steps in rho (beta averaged over the step, exact for piecewise-constant beta).
// The last step, from i_{N-1} = 0 to s = 0, is the denoising step x_0 = E[x_0 | x_{s_{N-1}}] of the
// network (clipped to [-1, 1] when asked), as ancestral and DDIM sampling end. N steps cost N
// network calls (pf-ode-heun: 2N - 2). pf-ode-heun takes an Euler step into step 0, as EDM's
// sampler (Karras et al. 2022, Algorithm 1) does on its last step: in a direction the denoiser
// ignores the flow contracts at a rate z / Delta = abar / (2 (1 - abar)) per unit rho, and Heun's
// update multiplies an error by |1 - z_i/2 - z_j/2 (1 - z_i)|. Into step 0, z_j is 22 for 50 steps
// of the cosine schedule (31 linear; step 20 -> 0) and the factor 5 (7): errors grow (Gaussian
// test: 3-14x the error); into any other step of the uniform-in-t grid the factor is at most 1
// for N >= 10, and Euler's 1 - z_i lies in [1/2, 1].
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

// euler-maruyama | pf-ode-euler | pf-ode-heun | dpm-solver++2m.
enum class SdeSampler { kEulerMaruyama, kPfOdeEuler, kPfOdeHeun, kDpmSolverPP2M };
// Throws std::invalid_argument listing the known names.
SdeSampler parse_sde_sampler(const std::string& s);
std::string to_string(SdeSampler s);
std::string known_sde_sampler_names();  // "euler-maruyama, pf-ode-euler, pf-ode-heun, dpm-solver++2m"

// The VP SDE's continuous quantities of a diffusion's discrete schedule (see above), s in [0, 1].
double vp_alpha_bar(const GaussianDiffusion& d, double s);
double vp_beta(const GaussianDiffusion& d, double s);  // right-continuous at grid points: the interval (i/T, (i+1)/T] holding s

// DPM-Solver++'s log-SNR grid starts at the last step whose half log-SNR lambda_i =
// 1/2 log(abar_i / (1 - abar_i)) is >= this (DPM-Solver's lambda_min clipping for the cosine
// schedule, as its authors set it in diffusers: -5.1). The cosine schedule's clipped last beta
// (0.999) puts lambda_{T-1} at -9.9 against -6.5 at T-2 and -5.1 at T-5 (T = 1000): a grid uniform
// from -9.9 spends several of few steps on single-index moves where the signal is e^-5 of the noise
// or less, and on the Gaussian test its error grows from 10 to 20 steps. The linear schedule ends at
// lambda_{T-1} = -5.06 (T = 1000) and is not clipped. Starting at abar = 3.9e-5 (cosine, T-5) instead
// of 2.4e-9 treats x_T ~ N(0, I) as a sample there, a prior mismatch of about abar |x_0|^2 / 2 nats
// per dimension (< 2e-5), smaller than the linear schedule's own (abar_{T-1} = 4e-5).
inline constexpr double kDpmSolverLambdaMin = -5.1;

// The N integer step indices i_0 > ... > i_{N-1} = 0 (1 <= N <= T; N = 1 gives {i_0}).
//   uniform in time (euler-maruyama, pf-ode-*): i_0 = T-1, i_k = round((T-1)(1 - k/(N-1)));
//   uniform in log-SNR (dpm-solver++2m): i_0 = the largest i with lambda_i >= lambda_min (T-1 when
//   every lambda is below it), lambda_k evenly from lambda_{i_0} to lambda_0, each snapped to the
//   index of nearest lambda in [0, i_0], then made strictly decreasing (collisions pushed to the
//   neighbouring index, keeping both ends).
// Throws std::invalid_argument (naming --steps) when N < 1 or N > i_0 + 1.
std::vector<int64_t> sde_time_indices(const GaussianDiffusion& d, int64_t steps, bool logsnr,
                                      double lambda_min = kDpmSolverLambdaMin);

// The network's eps and x_0 predictions at integer step i for x (N, C, ...), whatever the mean
// type (eps, x0, v, prev: converted with GaussianDiffusion's helpers); learned-variance outputs
// contribute their first C channels only. x0 is not clipped.
struct EpsX0 {
  at::Tensor eps, x0;
};
EpsX0 predict_eps_x0(const GaussianDiffusion& d, const ModelFn& model, const at::Tensor& x, int64_t i);

struct SdeSampleOptions {
  int64_t steps = 50;          // N, 1..T
  bool clip_denoised = true;   // clip the predicted x_0 to [-1, 1] at every network call, as
                               // ancestral and DDIM steps do: DPM-Solver++ and the final step use
                               // it, the others the eps of the clipped x_0
  // A fresh standard normal of x's shape and options per call (euler-maruyama, one call per step
  // before the last); at::randn(generator) when unset. trainer/ draws it from each sample's own
  // generator, so samples do not depend on batch split or rank count.
  std::function<at::Tensor()> noise;
  std::optional<at::Generator> generator;
  std::function<void(int64_t done, int64_t total)> progress;  // after each step, done = 1..N
  double lambda_min = kDpmSolverLambdaMin;  // dpm-solver++2m's first step (-inf: always T-1)
};

// x_T (N, C, H, W) at the grid's first step i_0 (T-1; dpm-solver++2m: see kDpmSolverLambdaMin)
// -> samples at s = 0, in x_T's dtype and device.
at::Tensor sde_sample_loop(const GaussianDiffusion& d, SdeSampler sampler, const ModelFn& model, const at::Tensor& x_T,
                           const SdeSampleOptions& opts = {});

}  // namespace ddpm::diffusion
