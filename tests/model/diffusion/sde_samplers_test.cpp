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
ModelFn exact_model(const GaussianDiffusion& d) {
  const at::Tensor abar = d.arrays().alphas_cumprod;
  const ModelMeanType mean = d.mean_type();
  const bool learned = is_learned(d.var_type()), rescale = d.rescale_timesteps();
  return [abar, mean, learned, rescale](const at::Tensor& x, const at::Tensor& t_in) {
    const at::Tensor t = rescale ? (t_in.to(at::kDouble) * (kT / 1000.0)).round().to(at::kLong) : t_in;
    const at::Tensor ab = abar.index_select(0, t).to(x.dtype()).view({-1, 1, 1, 1});
    const at::Tensor eps = at::sqrt(1.0 - ab) * (x - at::sqrt(ab) * kMu) / (ab * kSigma * kSigma + 1.0 - ab);
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

// The exact probability-flow output for x_T.
at::Tensor exact_flow(const GaussianDiffusion& d, const at::Tensor& x_T) {
  const double a_T = abar(d, kT - 1), a_0 = abar(d, 0);
  const double v_T = a_T * kSigma * kSigma + 1.0 - a_T, v_0 = a_0 * kSigma * kSigma + 1.0 - a_0;
  return kMu + std::sqrt(a_0) * kSigma * kSigma / std::sqrt(v_0) * (x_T - std::sqrt(a_T) * kMu) / std::sqrt(v_T);
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
    for (bool logsnr : {false, true}) {
      for (int64_t n : std::vector<int64_t>{1, 2, 5, 20, 300, kT}) {
        const auto idx = sde_time_indices(d, n, logsnr);
        ASSERT_EQ(static_cast<int64_t>(idx.size()), n);
        EXPECT_EQ(idx.front(), kT - 1);
        if (n > 1) {
          EXPECT_EQ(idx.back(), 0);
        }
        for (size_t k = 1; k < idx.size(); ++k) ASSERT_LT(idx[k], idx[k - 1]) << sch << " n " << n << " k " << k;
      }
    }
    for (int64_t n : std::vector<int64_t>{0, kT + 1}) {
      try {
        sde_time_indices(d, n, false);
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

// DPM-Solver++(2M) on the log-SNR grid: at 20 steps the moments are within 2e-2 of (mu, sigma) and
// the error against the exact flow is below that at 5 steps; it converges at second order once the
// steps are small (200 steps: more than 10x better than 50).
TEST(SdeSamplers, DpmSolverPlusPlus2MConvergesInFewSteps) {
  const at::Tensor x_T = quantiles();
  for (const char* sch : kSchedules) {
    const GaussianDiffusion d = make(sch);
    const at::Tensor exact = exact_flow(d, x_T);
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

}  // namespace
}  // namespace ddpm::diffusion
