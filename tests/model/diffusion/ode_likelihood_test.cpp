// The probability-flow ODE log-likelihood against closed forms: data x_0 ~ N(mu, Sigma) with the
// exact eps network eps*(x, t) = sqrt(1 - ab) (ab Sigma + (1 - ab) I)^-1 (x - sqrt(ab) mu). In the
// eigenbasis of Sigma (variances s_k^2) the exact flow keeps z_k = (y_k - sqrt(ab) m_k) / sqrt(v_k),
// v_k = ab s_k^2 + 1 - ab, constant, so the model's density at step 0 with the N(0, I) prior at step
// T-1 is log N(y_T; 0, I) + sum_k 1/2 log(v_k(T-1) / v_k(0)), y_T = sqrt(ab_T) m + sqrt(v_T / v_0) (y - sqrt(ab_0) m).
// Cosine and linear schedules, T = 1000, float64.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <numbers>

#include "ddpm/model/diffusion/ode_likelihood.h"
#include "ddpm/model/diffusion/respace.h"

namespace ddpm::diffusion {
namespace {

constexpr int64_t kT = 1000;

GaussianDiffusion make(const std::string& schedule) {
  DiffusionConfig c;
  c.schedule = schedule, c.steps = kT, c.mean_type = ModelMeanType::kEpsilon, c.var_type = ModelVarType::kFixedLarge;
  return create_gaussian_diffusion(c);
}

// A Gaussian in D = 2 dimensions (images (N, 2, 1, 1)): eigenvalues s^2 along the columns of R.
struct Gaussian2 {
  double theta, s[2], m[2];  // rotation angle, eigen standard deviations, mean in the eigenbasis
  at::Tensor R() const {     // (2, 2), columns the eigenvectors
    return at::tensor(std::vector<double>{std::cos(theta), -std::sin(theta), std::sin(theta), std::cos(theta)},
                      at::kDouble)
        .view({2, 2});
  }
  at::Tensor s2() const { return at::tensor(std::vector<double>{s[0] * s[0], s[1] * s[1]}, at::kDouble); }
  at::Tensor mean() const { return at::tensor(std::vector<double>{m[0], m[1]}, at::kDouble); }
};

ModelFn exact_model(const GaussianDiffusion& d, const Gaussian2& g) {
  const at::Tensor abar = d.arrays().alphas_cumprod, R = g.R(), s2 = g.s2(), m = g.mean();
  return [abar, R, s2, m](const at::Tensor& x, const at::Tensor& t) {
    const at::Tensor ab = abar.index_select(0, t).view({-1, 1});                  // (N, 1)
    const at::Tensor y = x.flatten(1).matmul(R);                                  // (N, 2) eigen coordinates
    const at::Tensor eps_y = at::sqrt(1.0 - ab) * (y - at::sqrt(ab) * m) / (ab * s2 + 1.0 - ab);
    return eps_y.matmul(R.t()).view(x.sizes());                                   // (N, 2, 1, 1)
  };
}

at::Tensor closed_form(const GaussianDiffusion& d, const Gaussian2& g, const at::Tensor& x) {
  const double a0 = d.arrays().alphas_cumprod[0].item<double>(), aT = d.arrays().alphas_cumprod[kT - 1].item<double>();
  const at::Tensor s2 = g.s2(), m = g.mean();
  const at::Tensor v0 = a0 * s2 + 1.0 - a0, vT = aT * s2 + 1.0 - aT;              // (2)
  const at::Tensor y = x.flatten(1).matmul(g.R());                                 // (N, 2)
  const at::Tensor yT = std::sqrt(aT) * m + at::sqrt(vT / v0) * (y - std::sqrt(a0) * m);
  return -0.5 * yT.pow(2).sum(1) - std::log(2.0 * std::numbers::pi) + 0.5 * at::log(vT / v0).sum();
}

at::Tensor rademacher(const std::vector<int64_t>& shape, at::Generator& gen) {
  return at::randint(0, 2, shape, gen, at::kDouble) * 2.0 - 1.0;
}

// Axis-aligned covariance: d eps / dx is diagonal, so Rademacher probes give the exact trace and the
// only error is Heun's on the log-SNR grid, falling with the steps at second order (max over 64
// samples, cosine / linear: ~1.2 / 0.5 nats at 25 steps, 0.09 / 0.04 at 100, 3e-4 (linear) and 1.4e-3
// (cosine) at 999, every integer step). Cosine's floor is its clipped last step (T-2 -> T-1,
// Delta rho = log 1000 = 6.9 in one Heun step, an error in x_T of ~1e-3 that enters through the prior
// term; the path integral itself is within 3e-5).
TEST(OdeLikelihood, MatchesTheClosedFormForADiagonalGaussian) {
  const Gaussian2 g{0.0, {0.5, 0.2}, {0.3, -0.4}};
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor x = (g.mean() + at::randn({64, 2}, gen, at::kDouble) * at::sqrt(g.s2())).view({64, 2, 1, 1});
  const at::Tensor v = rademacher({64, 2, 1, 1}, gen);
  for (const char* sch : {"cosine", "linear"}) {
    const GaussianDiffusion d = make(sch);
    const at::Tensor want = closed_form(d, g, x);
    const std::vector<int64_t> steps = {25, 100, 300, kT - 1};
    std::vector<double> err;
    for (int64_t n : steps) {
      const OdeLikelihood r = ode_log_likelihood(d, exact_model(d, g), x, v, n);
      err.push_back((r.log_p - want).abs().max().item<double>());
      std::cout << "[maxdiff] " << sch << " " << n << " Heun steps: max |log p - closed form| " << err.back()
                << " nats (log p ~ " << want.mean().item<double>() << ")" << std::endl;
    }
    for (size_t k = 1; k < steps.size(); ++k) EXPECT_LT(err[k], err[k - 1]) << sch << " " << steps[k] << " steps";
    EXPECT_LT(err[0], 1.5) << sch;
    EXPECT_LT(err[1], 0.1) << sch;
    EXPECT_LT(err[2], 1.5e-2) << sch;
    EXPECT_LT(err[3], 2e-3) << sch;
  }
}

// A rotated covariance: d eps / dx is not diagonal and Hutchinson's estimate is random. Along the
// same path the estimate is linear in v v^T, so the basis probes e_1 and e_2 give the exact trace:
// log p(e_1) + log p(e_2) - prior = the exact-trace Heun result. Against it the mean over 1000
// samples is within 4 standard errors for both probe kinds (the estimator is unbiased), and that
// exact-trace result is within Heun's 0.1 of the closed form (100 steps); Rademacher probes have the smaller
// variance (2 sum_{i != j} J_ij^2 against 2 |J|_F^2 for Gaussian ones).
TEST(OdeLikelihood, HutchinsonIsUnbiasedForARotatedGaussian) {
  const Gaussian2 g{0.6, {0.6, 0.25}, {0.2, -0.1}};
  const GaussianDiffusion d = make("cosine");
  constexpr int64_t kM = 1000, kSteps = 100;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor y = g.mean() + at::randn({kM, 2}, gen, at::kDouble) * at::sqrt(g.s2());
  const at::Tensor x = y.matmul(g.R().t()).view({kM, 2, 1, 1});
  const ModelFn model = exact_model(d, g);
  const at::Tensor e1 = at::zeros_like(x).index_fill_(1, at::tensor(int64_t{0}), 1.0);
  const at::Tensor e2 = at::zeros_like(x).index_fill_(1, at::tensor(int64_t{1}), 1.0);
  const OdeLikelihood r1 = ode_log_likelihood(d, model, x, e1, kSteps);
  const at::Tensor exact_trace = r1.log_p + ode_log_likelihood(d, model, x, e2, kSteps).log_p - r1.prior_log_p;  // (M)
  const double heun = (exact_trace - closed_form(d, g, x)).abs().max().item<double>();
  std::cout << "[maxdiff] rotated Gaussian, exact trace, " << kSteps << " Heun steps: max |log p - closed form| "
            << heun << std::endl;
  EXPECT_LT(heun, 0.1);
  double var[2];
  int k = 0;
  for (const char* probe : {"rademacher", "gaussian"}) {
    const at::Tensor v = std::string(probe) == "gaussian" ? at::randn({kM, 2, 1, 1}, gen, at::kDouble)
                                                          : rademacher({kM, 2, 1, 1}, gen);
    const at::Tensor diff = ode_log_likelihood(d, model, x, v, kSteps).log_p - exact_trace;  // (M)
    const double mean = diff.mean().item<double>(), se = diff.std().item<double>() / std::sqrt(double(kM));
    var[k++] = diff.var().item<double>();
    std::cout << "[maxdiff] rotated Gaussian, " << probe << " probes: mean (log p - exact trace) " << mean
              << " nats, standard error " << se << ", variance " << var[k - 1] << std::endl;
    EXPECT_LT(std::abs(mean), 4.0 * se) << probe;
    EXPECT_GT(se, 1e-3) << probe << ": off-diagonal Jacobian, the estimate must vary";
  }
  EXPECT_LT(var[0], var[1]) << "Rademacher probes should have the smaller variance";
}

TEST(OdeLikelihood, StepsOutOfRangeNameTheFlag) {
  const GaussianDiffusion d = make("cosine");
  const Gaussian2 g{0.0, {1.0, 1.0}, {0.0, 0.0}};
  const at::Tensor x = at::zeros({1, 2, 1, 1}, at::kDouble);
  for (int64_t n : {int64_t{0}, kT}) {
    try {
      ode_log_likelihood(d, exact_model(d, g), x, x, n);
      ADD_FAILURE() << "no error for " << n << " steps";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--ode-steps"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ddpm::diffusion
