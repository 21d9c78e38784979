// The score-SDE samplers against a closed-form case: data x_0 ~ N(mu, sigma^2) (1-D, float64), whose
// exact eps-prediction is eps*(x_t, t) = sqrt(1 - ab_t) (x_t - sqrt(ab_t) mu) / (ab_t sigma^2 + 1 - ab_t).
// The probability-flow ODE keeps z = (x - sqrt(ab) mu) / sqrt(ab sigma^2 + 1 - ab) constant, so the
// exact sampler output (ODE from step T-1 to step 0, then the denoising step) is
// mu + sqrt(ab_0) sigma^2 / sqrt(v_0) * z_T. Linear and cosine schedules, T = 1000.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/diffusion/sde_samplers.h"

namespace ddpm::diffusion {
namespace {

constexpr double kMu = 0.3, kSigma = 0.5;
constexpr int64_t kT = 1000, kM = 20000;  // steps, samples

GaussianDiffusion make(const std::string& schedule, ModelMeanType mean = ModelMeanType::kEpsilon,
                       ModelVarType var = ModelVarType::kFixedLarge, bool rescale = false) {
  DiffusionConfig c;
  c.schedule = schedule, c.steps = kT, c.mean_type = mean, c.var_type = var, c.rescale_timesteps = rescale;
  return create_gaussian_diffusion(c);
}

// The exact network of the Gaussian data for diffusion d, in d's mean type (learned variances: the
// second C channels are zeros). t: integer indices, or float t * 1000/T under rescale_timesteps.
ModelFn exact_model(const GaussianDiffusion& d, double sigma = kSigma) {
  const at::Tensor abar = d.arrays().alphas_cumprod;
  const ModelMeanType mean = d.mean_type();
  const bool learned = is_learned(d.var_type()), rescale = d.rescale_timesteps();
  return [abar, mean, learned, rescale, sigma](const at::Tensor& x, const at::Tensor& t_in) {
    const at::Tensor t = rescale ? (t_in.to(at::kDouble) * (kT / 1000.0)).round().to(at::kLong) : t_in;
    const at::Tensor ab = abar.index_select(0, t).to(x.dtype()).view({-1, 1, 1, 1});
    const at::Tensor eps = at::sqrt(1.0 - ab) * (x - at::sqrt(ab) * kMu) / (ab * sigma * sigma + 1.0 - ab);
    const at::Tensor x0 = (x - at::sqrt(1.0 - ab) * eps) / at::sqrt(ab);
    at::Tensor out = eps;
    if (mean == ModelMeanType::kStartX) out = x0;
    if (mean == ModelMeanType::kVelocity) out = at::sqrt(ab) * eps - at::sqrt(1.0 - ab) * x0;
    return learned ? at::cat({out, at::zeros_like(out)}, 1) : out;
  };
}

double abar(const GaussianDiffusion& d, int64_t i) { return d.arrays().alphas_cumprod[i].item<double>(); }

// x_T: m standard-normal quantiles (moments exact up to O(1/m)), (m, 1, 1, 1) float64.
at::Tensor quantiles(int64_t m = 5000) {
  const at::Tensor u = (at::arange(m, at::kDouble) + 0.5) / static_cast<double>(m);
  return (std::sqrt(2.0) * at::erfinv(2.0 * u - 1.0)).view({m, 1, 1, 1});
}

// The exact probability-flow output for x_T taken as the sample at step `first` (default T-1).
at::Tensor exact_flow(const GaussianDiffusion& d, const at::Tensor& x_T, int64_t first = kT - 1, double sigma = kSigma) {
  const double a_T = abar(d, first), a_0 = abar(d, 0);
  const double v_T = a_T * sigma * sigma + 1.0 - a_T, v_0 = a_0 * sigma * sigma + 1.0 - a_0;
  return kMu + std::sqrt(a_0) * sigma * sigma / std::sqrt(v_0) * (x_T - std::sqrt(a_T) * kMu) / std::sqrt(v_T);
}

at::Tensor run(const GaussianDiffusion& d, SdeSampler s, int64_t steps, const at::Tensor& x_T,
               std::optional<at::Generator> gen = std::nullopt) {
  SdeSampleOptions o;
  o.steps = steps, o.clip_denoised = false, o.generator = gen;
  return sde_sample_loop(d, s, exact_model(d), x_T, o);
}

struct Moments {
  double mean_err, std_err, max_err;  // |mean - mu|, |std - sigma|, max |x - exact| (if given)
};
Moments check(const std::string& what, const at::Tensor& x, const at::Tensor& exact = {}) {
  Moments m{std::abs(x.mean().item<double>() - kMu), std::abs(x.std().item<double>() - kSigma),
            exact.defined() ? (x - exact).abs().max().item<double>() : 0.0};
  std::cout << "[maxdiff] " << what << ": |mean - mu| " << m.mean_err << ", |std - sigma| " << m.std_err
            << (exact.defined() ? ", max |x - exact flow| " + std::to_string(m.max_err) : std::string()) << std::endl;
  return m;
}

const char* kSchedules[] = {"linear", "cosine"};

TEST(SdeSamplers, ContinuousTimeMatchesTheDiscreteScheduleAtGridPoints) {
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    EXPECT_DOUBLE_EQ(vp_alpha_bar(d, 0.0), 1.0);
    for (int64_t i : {0, 1, 499, 998, 999}) {
      const double s = static_cast<double>(i + 1) / kT;
      EXPECT_NEAR(vp_alpha_bar(d, s), abar(d, i), 1e-12 * abar(d, i)) << sch << " i " << i;
      // Piecewise-constant beta integrates exactly to the log ratio of the grid values.
      const double prev = i == 0 ? 1.0 : abar(d, i - 1);
      EXPECT_NEAR(vp_beta(d, s - 0.5 / kT) / kT, std::log(prev / abar(d, i)), 1e-12) << sch << " i " << i;
      EXPECT_NEAR(std::log(vp_alpha_bar(d, s - 0.5 / kT)), 0.5 * (std::log(prev) + std::log(abar(d, i))), 1e-12);
    }
    // The log-SNR grid starts at the last step with lambda >= kDpmSolverLambdaMin: T-5 for the
    // cosine schedule (its clipped last beta puts lambda_{T-1} at -9.9), T-1 for the linear one.
    const auto lambda = [&](int64_t i) { return 0.5 * std::log(abar(d, i) / (1.0 - abar(d, i))); };
    const int64_t first = sde_time_indices(d, 1, true).front();
    std::cout << sch << ": lambda_{T-1} " << lambda(kT - 1) << ", log-SNR grid from step " << first << " (lambda "
              << lambda(first) << ")" << std::endl;
    EXPECT_EQ(first, std::string(sch) == "cosine" ? kT - 5 : kT - 1) << sch;
    EXPECT_GE(lambda(first), kDpmSolverLambdaMin);
    if (first < kT - 1) {
      EXPECT_LT(lambda(first + 1), kDpmSolverLambdaMin);
    }
    EXPECT_EQ(sde_time_indices(d, 1, true, -1e9).front(), kT - 1) << "lambda_min = -inf must not clip";
    for (bool logsnr : {false, true}) {
      for (int64_t n : std::vector<int64_t>{1, 2, 5, 20, 300, first + 1}) {
        const auto idx = sde_time_indices(d, n, logsnr);
        ASSERT_EQ(static_cast<int64_t>(idx.size()), n);
        EXPECT_EQ(idx.front(), logsnr ? first : kT - 1);
        if (n > 1) {
          EXPECT_EQ(idx.back(), 0);
        }
        for (size_t k = 1; k < idx.size(); ++k) ASSERT_LT(idx[k], idx[k - 1]) << sch << " n " << n << " k " << k;
      }
    }
    for (const auto& [n, logsnr] : std::vector<std::pair<int64_t, bool>>{{0, false}, {kT + 1, false}, {first + 2, true}}) {
      try {
        sde_time_indices(d, n, logsnr);
        ADD_FAILURE() << "no error for steps " << n;
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("--steps"), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_EQ(parse_sde_sampler("dpm-solver++2m"), SdeSampler::kDpmSolverPP2M);
  EXPECT_EQ(to_string(parse_sde_sampler("pf-ode-heun")), "pf-ode-heun");
  EXPECT_THROW(parse_sde_sampler("heun"), std::invalid_argument);
}

// Probability-flow ODE against the exact flow per sample (x_T: normal quantiles, so the moments
// carry no sampling error): Heun converges to it (1000 steps: max error < 5e-4, 250 steps: < 3e-3),
// Euler at 1000 steps is within 1e-2 and better than at 50 steps. Moments within 1e-2 of (mu, sigma)
// (the linear schedule keeps a bias of ~1e-3 in the mean: x_T ~ N(0, 1) ignores sqrt(abar_{T-1}) mu).
TEST(SdeSamplers, ProbabilityFlowOdeMatchesTheExactFlow) {
  const at::Tensor x_T = quantiles();
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    const at::Tensor exact = exact_flow(d, x_T);
    const std::string p = std::string(sch) + " ";
    const Moments h1000 = check(p + "pf-ode-heun 1000 steps", run(d, SdeSampler::kPfOdeHeun, kT, x_T), exact);
    const Moments h250 = check(p + "pf-ode-heun 250 steps", run(d, SdeSampler::kPfOdeHeun, 250, x_T), exact);
    const Moments e1000 = check(p + "pf-ode-euler 1000 steps", run(d, SdeSampler::kPfOdeEuler, kT, x_T), exact);
    const Moments e50 = check(p + "pf-ode-euler 50 steps", run(d, SdeSampler::kPfOdeEuler, 50, x_T), exact);
    EXPECT_LT(h1000.max_err, 5e-4);
    EXPECT_LT(h250.max_err, 3e-3);
    EXPECT_LT(e1000.max_err, 1e-2);
    EXPECT_LT(e1000.max_err, e50.max_err / 5) << "Euler must converge";
    for (const Moments& m : {h1000, h250, e1000}) {
      EXPECT_LT(m.mean_err, 1e-2);
      EXPECT_LT(m.std_err, 1e-2);
    }
  }
}

// Narrow data (sigma = 0.05): near step 0 the flow contracts at a rate ~ abar / (2 (1 - abar)) per
// unit rho, and Heun's corrector evaluated at step 0 would multiply a 50-step grid's last step by
// ~22 and amplify errors (max error 0.26 sigma cosine, 1.05 sigma linear); pf-ode-heun's Euler step
// into step 0 keeps it below 0.15 sigma at 50 steps and 0.05 sigma at 100.
TEST(SdeSamplers, PfOdeHeunIsStableNearNarrowData) {
  constexpr double kNarrow = 0.05;
  const at::Tensor x_T = quantiles(2000);
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    const at::Tensor exact = exact_flow(d, x_T, kT - 1, kNarrow);
    for (const auto& [steps, tol] : std::vector<std::pair<int64_t, double>>{{50, 0.15}, {100, 0.05}}) {
      SdeSampleOptions o;
      o.steps = steps, o.clip_denoised = false;
      const at::Tensor x = sde_sample_loop(d, SdeSampler::kPfOdeHeun, exact_model(d, kNarrow), x_T, o);
      const double err = (x - exact).abs().max().item<double>() / kNarrow;
      std::cout << "[maxdiff] " << sch << " sigma " << kNarrow << " pf-ode-heun " << steps
                << " steps: max |x - exact flow| / sigma " << err << std::endl;
      EXPECT_LT(err, tol) << sch << " " << steps << " steps";
    }
  }
}

// DPM-Solver++(2M) on the log-SNR grid: at 20 steps the moments are within 2e-2 of (mu, sigma) and
// the error against the exact flow (from the grid's first step) is below that at 5 steps; it
// converges at second order once the steps are small (200 steps: more than 10x better than 50).
TEST(SdeSamplers, DpmSolverPlusPlus2MConvergesInFewSteps) {
  const at::Tensor x_T = quantiles();
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    const at::Tensor exact = exact_flow(d, x_T, sde_time_indices(d, 1, true).front());
    std::map<int64_t, Moments> m;
    for (int64_t n : {5, 10, 20, 50, 200}) {
      m[n] = check(std::string(sch) + " dpm-solver++2m " + std::to_string(n) + " steps",
                   run(d, SdeSampler::kDpmSolverPP2M, n, x_T), exact);
    }
    EXPECT_LT(m[20].max_err, m[5].max_err / 5) << sch;
    EXPECT_LT(m[200].max_err, m[50].max_err / 10) << sch;
    EXPECT_LT(m[20].mean_err, 1e-2) << sch;
    EXPECT_LT(m[20].std_err, 2e-2) << sch;
    EXPECT_LT(m[10].std_err, 2e-2) << sch;
  }
}

// For Gaussian data every update is affine in x, so a sampler's output is a x_T + b and its error
// is that of the slope a against the exact flow's (b's error is a's times sqrt(abar_first) mu).
// The slope's relative error a / a_exact - 1 at n steps (x_T at the grid's first step).
double slope_error(const GaussianDiffusion& d, int64_t n, double lambda_min) {
  SdeSampleOptions o;
  o.steps = n, o.clip_denoised = false, o.lambda_min = lambda_min;
  const at::Tensor x_T = at::tensor(std::vector<double>{-2.0, 2.0}, at::kDouble).view({2, 1, 1, 1});
  const at::Tensor x = sde_sample_loop(d, SdeSampler::kDpmSolverPP2M, exact_model(d), x_T, o);
  const at::Tensor e = exact_flow(d, x_T, sde_time_indices(d, n, true, lambda_min).front());
  return ((x[1] - x[0]) / (e[1] - e[0])).item<double>() - 1.0;
}

// The error of DPM-Solver++(2M) falls with every step count from 10 on, for both schedules, without
// changing sign (no lucky cancellation), and at second order (50 -> 200 steps: > 10x). Without the
// lambda_min clipping the cosine schedule's error is larger at 20 steps than at 10 (-1% at 10 is a
// sign change between 10 and 12 steps, +3% at 20): the weakness the clipping removes.
TEST(SdeSamplers, DpmSolverPlusPlus2MErrorFallsWithSteps) {
  const std::vector<int64_t> steps = {10, 15, 20, 30, 50, 100, 200};
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    std::map<int64_t, double> e;
    std::string line;
    for (int64_t n : steps) {
      e[n] = slope_error(d, n, kDpmSolverLambdaMin);
      line += " " + std::to_string(n) + ": " + std::to_string(e[n]);
    }
    std::cout << "[maxdiff] " << sch << " dpm-solver++2m slope error by steps" << line << std::endl;
    for (size_t k = 0; k < steps.size(); ++k) {
      EXPECT_GT(e[steps[k]], 0.0) << sch << " " << steps[k] << " steps";
      if (k > 0) {
        EXPECT_LT(e[steps[k]], e[steps[k - 1]]) << sch << " " << steps[k] << " vs " << steps[k - 1] << " steps";
      }
    }
    EXPECT_LT(e[200], e[50] / 10) << sch;
    EXPECT_LT(e[20], 0.02) << sch;
  }
  const GaussianDiffusion cosine = make("cosine");
  const double u10 = slope_error(cosine, 10, -1e9), u20 = slope_error(cosine, 20, -1e9);
  std::cout << "[maxdiff] cosine dpm-solver++2m from step T-1 (no clipping): slope error 10 steps " << u10
            << ", 20 steps " << u20 << std::endl;
  EXPECT_GT(std::abs(u20), std::abs(u10)) << "unclipped, 20 steps were worse than 10 (the weakness fixed here)";
  EXPECT_LT(slope_error(cosine, 20, kDpmSolverLambdaMin), std::abs(u20) / 1.5);
}

// Reverse SDE, Euler-Maruyama: moments of 20k samples from random x_T and noise.
TEST(SdeSamplers, EulerMaruyamaMatchesTheDataMoments) {
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
    const at::Tensor x_T = at::randn({kM, 1, 1, 1}, gen, at::kDouble);
    // Standard errors over 20k samples: mean 0.0035, std 0.0025; the tolerance adds the discretisation.
    const Moments m = check(std::string(sch) + " euler-maruyama 1000 steps", run(d, SdeSampler::kEulerMaruyama, kT, x_T, gen));
    EXPECT_LT(m.mean_err, 0.015);
    EXPECT_LT(m.std_err, 0.015);
  }
}

// x0 and v (learned-range, 2C outputs) networks and rescaled timesteps give the eps network's samples.
TEST(SdeSamplers, MeanTypesAndRescaledTimestepsAgree) {
  const at::Tensor x_T = quantiles(200);
  for (SdeSampler s : {SdeSampler::kPfOdeHeun, SdeSampler::kDpmSolverPP2M, SdeSampler::kEulerMaruyama}) {
    const GaussianDiffusion base = make("cosine");
    at::Generator g0 = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor ref = run(base, s, 10, x_T, g0);
    const GaussianDiffusion others[] = {make("cosine", ModelMeanType::kStartX),
                                        make("cosine", ModelMeanType::kVelocity, ModelVarType::kLearnedRange),
                                        make("cosine", ModelMeanType::kEpsilon, ModelVarType::kLearned, true)};
    double worst = 0.0;
    for (const auto& d : others) {
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
      worst = std::max(worst, (run(d, s, 10, x_T, g) - ref).abs().max().item<double>());
    }
    std::cout << "[maxdiff] " << to_string(s) << " x0 / v learned-range / rescaled vs eps: " << worst << std::endl;
    EXPECT_LT(worst, 1e-9);
  }
}

// clip_denoised clips the network's x_0 at every call: each sampler with it equals the sampler
// without it on a network whose x_0 is clipped (eps recomputed from the clipped x_0), and differs
// from the sampler without it on the plain network. The network is an imperfect one, 0.95 times
// the exact eps: at high noise its x_0 = (x - 0.95 sqrt(1 - abar) eps) / sqrt(abar) leaves [-1, 1]
// far, as an undertrained network's does.
TEST(SdeSamplers, ClipDenoisedClipsEveryNetworkCall) {
  const GaussianDiffusion d = make("cosine");
  const at::Tensor abar = d.arrays().alphas_cumprod;
  const ModelFn exact_eps = exact_model(d);
  const ModelFn exact = [&](const at::Tensor& x, const at::Tensor& t) { return 0.95 * exact_eps(x, t); };
  const ModelFn clipped = [&](const at::Tensor& x, const at::Tensor& t) {
    const at::Tensor ab = abar.index_select(0, t).to(x.dtype()).view({-1, 1, 1, 1});
    const at::Tensor x0 = ((x - at::sqrt(1.0 - ab) * exact(x, t)) / at::sqrt(ab)).clamp(-1.0, 1.0);
    return (x - at::sqrt(ab) * x0) / at::sqrt(1.0 - ab);
  };
  const at::Tensor x_T = quantiles(500);
  for (SdeSampler s : {SdeSampler::kEulerMaruyama, SdeSampler::kPfOdeEuler, SdeSampler::kPfOdeHeun,
                       SdeSampler::kDpmSolverPP2M}) {
    const auto sample = [&](const ModelFn& model, bool clip) {
      SdeSampleOptions o;
      o.steps = 10, o.clip_denoised = clip, o.generator = at::make_generator<at::CPUGeneratorImpl>(5);
      return sde_sample_loop(d, s, model, x_T, o);
    };
    const at::Tensor with = sample(exact, true);
    const double same = (with - sample(clipped, false).clamp(-1.0, 1.0)).abs().max().item<double>();
    const double unclipped = (with - sample(exact, false).clamp(-1.0, 1.0)).abs().max().item<double>();
    std::cout << "[maxdiff] " << to_string(s) << " clip_denoised vs a clipped-x_0 network: " << same
              << " (vs no clipping: " << unclipped << ")" << std::endl;
    EXPECT_LT(same, 1e-12) << to_string(s);
    EXPECT_GT(unclipped, 1e-3) << to_string(s) << ": clipping must change the samples";
  }
}

}  // namespace
}  // namespace ddpm::diffusion
