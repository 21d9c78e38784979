// Score-SDE samplers: Euler-Maruyama on the reverse VP SDE, Euler and Heun on the probability-flow
// ODE, DPM-Solver++(2M); see ddpm/model/diffusion/sde_samplers.h for the time grid and formulas.
#include "ddpm/model/diffusion/sde_samplers.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ddpm::diffusion {

namespace {

// alphas_cumprod as plain doubles (T).
std::vector<double> alpha_bars(const GaussianDiffusion& d) {
  const at::Tensor a = d.arrays().alphas_cumprod.contiguous();
  return std::vector<double>(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
}

at::Tensor clip_if(const at::Tensor& x0, bool clip) { return clip ? x0.clamp(-1.0, 1.0) : x0; }

}  // namespace

SdeSampler parse_sde_sampler(const std::string& s) {
  if (s == "euler-maruyama") return SdeSampler::kEulerMaruyama;
  if (s == "pf-ode-euler") return SdeSampler::kPfOdeEuler;
  if (s == "pf-ode-heun") return SdeSampler::kPfOdeHeun;
  if (s == "dpm-solver++2m") return SdeSampler::kDpmSolverPP2M;
  throw std::invalid_argument("unknown SDE sampler '" + s + "'; known: " + known_sde_sampler_names());
}

std::string to_string(SdeSampler s) {
  switch (s) {
    case SdeSampler::kEulerMaruyama: return "euler-maruyama";
    case SdeSampler::kPfOdeEuler: return "pf-ode-euler";
    case SdeSampler::kPfOdeHeun: return "pf-ode-heun";
    case SdeSampler::kDpmSolverPP2M: return "dpm-solver++2m";
  }
  return "?";
}

std::string known_sde_sampler_names() { return "euler-maruyama, pf-ode-euler, pf-ode-heun, dpm-solver++2m"; }

double vp_alpha_bar(const GaussianDiffusion& d, double s) {
  const std::vector<double> ab = alpha_bars(d);
  const int64_t T = static_cast<int64_t>(ab.size());
  const double u = std::clamp(s, 0.0, 1.0) * static_cast<double>(T);
  const int64_t j = std::min<int64_t>(static_cast<int64_t>(std::floor(u)), T - 1);
  const double lo = j == 0 ? 0.0 : std::log(ab[j - 1]), hi = std::log(ab[j]);  // log abar at s = j/T, (j+1)/T
  return std::exp(lo + (u - static_cast<double>(j)) * (hi - lo));
}

double vp_beta(const GaussianDiffusion& d, double s) {
  const int64_t T = d.num_timesteps();
  const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(s * static_cast<double>(T))) - 1, 0, T - 1);
  return -static_cast<double>(T) * std::log1p(-d.betas()[i]);
}

std::vector<int64_t> sde_time_indices(const GaussianDiffusion& d, int64_t steps, bool logsnr, double lambda_min) {
  const int64_t T = d.num_timesteps();
  const std::vector<double> ab = alpha_bars(d);
  std::vector<double> lam(T);  // decreasing in i
  for (int64_t i = 0; i < T; ++i) lam[i] = 0.5 * (std::log(ab[i]) - std::log1p(-ab[i]));
  int64_t first = T - 1;  // i_0
  if (logsnr) {
    while (first > 0 && lam[first] < lambda_min) --first;
    if (lam[first] < lambda_min) first = T - 1;  // no step reaches lambda_min: do not clip
  }
  if (steps < 1 || steps > first + 1) {
    throw std::invalid_argument("--steps " + std::to_string(steps) + ": give 1.." + std::to_string(first + 1) +
                                " (the diffusion has T = " + std::to_string(T) + " steps" +
                                (first + 1 < T ? ", of which dpm-solver++2m uses " + std::to_string(first + 1) : "") +
                                ")");
  }
  std::vector<int64_t> idx(steps);
  if (steps == 1) return {first};
  if (!logsnr) {
    for (int64_t k = 0; k < steps; ++k) {
      idx[k] = std::llround(static_cast<double>(T - 1) * (1.0 - static_cast<double>(k) / static_cast<double>(steps - 1)));
    }
    return idx;  // spacing (T-1)/(N-1) >= 1: strictly decreasing already
  }
  for (int64_t k = 0; k < steps; ++k) {
    const double target = lam[first] + (lam[0] - lam[first]) * static_cast<double>(k) / static_cast<double>(steps - 1);
    int64_t best = 0;
    for (int64_t i = 1; i <= first; ++i) {
      if (std::abs(lam[i] - target) < std::abs(lam[best] - target)) best = i;
    }
    idx[k] = best;
  }
  idx.front() = first, idx.back() = 0;
  // Collisions pushed to lower indices, leaving room for the steps still to come (idx[k] >= N-1-k).
  for (int64_t k = 1; k < steps; ++k) idx[k] = std::max(std::min(idx[k], idx[k - 1] - 1), steps - 1 - k);
  return idx;
}

EpsX0 predict_eps_x0(const GaussianDiffusion& d, const ModelFn& model, const at::Tensor& x, int64_t i) {
  TORCH_CHECK(x.dim() >= 2, "predict_eps_x0: x must be (N, C, ...), got ", x.sizes());
  const at::Tensor t = at::full({x.size(0)}, i, at::TensorOptions().dtype(at::kLong).device(x.device()));
  const at::Tensor out = d.call_model(model, x, t).slice(1, 0, x.size(1)).to(x.scalar_type());  // (N, C, ...)
  switch (d.mean_type()) {
    case ModelMeanType::kEpsilon: return {out, d.predict_xstart_from_eps(x, t, out)};
    case ModelMeanType::kStartX: return {d.predict_eps_from_xstart(x, t, out), out};
    case ModelMeanType::kVelocity: {
      const at::Tensor x0 = d.predict_xstart_from_v(x, t, out);
      return {d.predict_eps_from_xstart(x, t, x0), x0};
    }
    case ModelMeanType::kPreviousX: {
      const at::Tensor x0 = d.predict_xstart_from_xprev(x, t, out);
      return {d.predict_eps_from_xstart(x, t, x0), x0};
    }
  }
  throw std::logic_error("predict_eps_x0: unknown mean type");
}

at::Tensor sde_sample_loop(const GaussianDiffusion& d, SdeSampler sampler, const ModelFn& model, const at::Tensor& x_T,
                           const SdeSampleOptions& opts) {
  const bool logsnr = sampler == SdeSampler::kDpmSolverPP2M;
  const std::vector<int64_t> idx = sde_time_indices(d, opts.steps, logsnr, opts.lambda_min);
  const std::vector<double> ab = alpha_bars(d);
  const int64_t N = static_cast<int64_t>(idx.size());
  const auto noise = [&](const at::Tensor& like) {
    if (!opts.noise) return at::randn(like.sizes(), opts.generator, like.options());
    const at::Tensor z = opts.noise();
    TORCH_CHECK(z.sizes() == like.sizes(), "sde_sample_loop: noise ", z.sizes(), " vs x ", like.sizes());
    return z.to(like.options());
  };
  // The network's eps at step i; with clip_denoised, the eps of its x_0 clipped to [-1, 1]
  // (eps = (x - sqrt(abar) clip(x_0)) / sqrt(1 - abar)), as DDIM's steps use it.
  const auto eps_at = [&](const at::Tensor& x, int64_t i) {
    const EpsX0 p = predict_eps_x0(d, model, x, i);
    if (!opts.clip_denoised) return p.eps;
    return (x - std::sqrt(ab[i]) * p.x0.clamp(-1.0, 1.0)) / std::sqrt(1.0 - ab[i]);
  };
  // The probability-flow drift in rho: dx/drho = -1/2 (x + score) with rho decreasing, so a step
  // adds +1/2 Delta (x - eps / sqrt(1 - abar)).
  const auto flow = [&](const at::Tensor& x, int64_t i) { return 0.5 * (x - eps_at(x, i) / std::sqrt(1.0 - ab[i])); };
  at::Tensor x = x_T;  // (N, C, H, W) at step i_0 = T-1
  at::Tensor x0_prev;  // DPM-Solver++: the previous step's data prediction
  for (int64_t k = 0; k + 1 < N; ++k) {
    const int64_t i = idx[k], j = idx[k + 1];
    const double delta = std::log(ab[j] / ab[i]);  // rho(s_i) - rho(s_j) > 0
    switch (sampler) {
      case SdeSampler::kEulerMaruyama: {
        const at::Tensor eps = eps_at(x, i);
        // Reverse SDE: x + Delta (x/2 + score) + sqrt(Delta) z, score = -eps / sqrt(1 - abar_i).
        x = x + delta * (0.5 * x - eps / std::sqrt(1.0 - ab[i])) + std::sqrt(delta) * noise(x);
        break;
      }
      case SdeSampler::kPfOdeEuler: x = x + delta * flow(x, i); break;
      case SdeSampler::kPfOdeHeun: {
        const at::Tensor f_a = flow(x, i);
        if (j == 0) {  // Euler into step 0: see sde_samplers.h (the corrector there is unstable)
          x = x + delta * f_a;
          break;
        }
        const at::Tensor f_b = flow(x + delta * f_a, j);
        x = x + 0.5 * delta * (f_a + f_b);
        break;
      }
      case SdeSampler::kDpmSolverPP2M: {
        // Lu et al. 2022, Algorithm 2 (data prediction, multistep, order 2; first order at k = 0).
        const auto lambda = [&](int64_t n) { return 0.5 * (std::log(ab[n]) - std::log1p(-ab[n])); };
        const at::Tensor x0 = clip_if(predict_eps_x0(d, model, x, i).x0, opts.clip_denoised);
        const double h = lambda(j) - lambda(i);
        at::Tensor D = x0;
        if (x0_prev.defined()) {
          const double r = (lambda(i) - lambda(idx[k - 1])) / h;
          D = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev;
        }
        x = std::sqrt((1.0 - ab[j]) / (1.0 - ab[i])) * x - std::sqrt(ab[j]) * std::expm1(-h) * D;
        x0_prev = x0;
        break;
      }
    }
    if (opts.progress) opts.progress(k + 1, N);
  }
  // Final step to s = 0: the denoised x_0 at step 0 (the limit sigma -> 0 of every update above).
  x = clip_if(predict_eps_x0(d, model, x, idx.back()).x0, opts.clip_denoised);
  if (opts.progress) opts.progress(N, N);
  return x;
}

}  // namespace ddpm::diffusion
