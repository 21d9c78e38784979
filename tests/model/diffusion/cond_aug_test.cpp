// Gaussian conditioning augmentation (cond_aug.h) against its closed form: z_s = sqrt(abar'_s) x +
// sqrt(1 - abar'_s) eps with abar'_s = prod_{i<s} (1 - beta_i) computed here in float64 from the
// betas; s = 0 leaves the image as it is, s = t + 1 is the forward process q(x_t | x_0); the
// moments over many noise draws; levels uniform on {0, ..., s_max}.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "ddpm/model/diffusion/cond_aug.h"
#include "ddpm/model/diffusion/respace.h"
#include "testing/testing.h"

namespace ddpm::diffusion {
namespace {
using ddpm::testing::tensors_near;

GaussianDiffusion cosine(int64_t steps) {
  DiffusionConfig c;
  c.schedule = "cosine";
  c.steps = steps;
  return create_gaussian_diffusion(c);
}

TEST(ConditioningAugmentation, ClosedFormFromTheBetas) {
  const GaussianDiffusion d = cosine(100);
  at::manual_seed(0);
  const at::Tensor low = at::rand({4, 2, 3, 3}, at::kDouble) * 2 - 1, noise = at::randn({4, 2, 3, 3}, at::kDouble);
  const std::vector<int64_t> levels = {0, 1, 37, 99};
  std::vector<at::Tensor> want;
  for (size_t i = 0; i < levels.size(); ++i) {
    double abar = 1.0;
    for (int64_t k = 0; k < levels[i]; ++k) abar *= 1.0 - d.betas()[k];
    want.push_back(std::sqrt(abar) * low[i] + std::sqrt(1.0 - abar) * noise[i]);
  }
  const at::Tensor s = at::tensor(levels, at::kLong);
  const at::Tensor z = augment_condition(d, low, s, noise);
  EXPECT_TRUE(tensors_near(z, at::stack(want), 1e-14, 1e-14, "z_s f64 vs closed form"));
  const at::Tensor z32 = augment_condition(d, low.to(at::kFloat), s, noise.to(at::kFloat));
  EXPECT_EQ(z32.scalar_type(), at::kFloat);
  EXPECT_TRUE(tensors_near(z32, at::stack(want), 1e-6, 1e-6, "z_s f32 vs closed form"));
  // Level 0 is the clean image, bit for bit; level t + 1 is q_sample at t.
  EXPECT_TRUE(at::equal(z[0], low[0]));
  const at::Tensor t = at::tensor({0, 36, 98}, at::kLong);
  EXPECT_TRUE(tensors_near(z.slice(0, 1), d.q_sample(low.slice(0, 1), t, noise.slice(0, 1)), 1e-14, 1e-14,
                           "z_{t+1} vs q_sample(t)"));
}

TEST(ConditioningAugmentation, MomentsOverNoiseDraws) {
  const GaussianDiffusion d = cosine(1000);
  const int64_t n = 20000, s_level = 250;
  at::manual_seed(1);
  const at::Tensor low = at::full({n, 1, 1, 1}, 0.6, at::kDouble);
  const at::Tensor z = augment_condition(d, low, at::full({n}, s_level, at::kLong), at::randn({n, 1, 1, 1}, at::kDouble));
  const double abar = d.arrays().alphas_cumprod_prev[s_level].item<double>();
  const double mean = z.mean().item<double>(), var = z.var().item<double>();
  // Standard errors: sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance; 5 of them.
  const double se_mean = std::sqrt((1 - abar) / n), se_var = (1 - abar) * std::sqrt(2.0 / n);
  std::printf("[maxdiff] z_250 moments: mean %.5f vs %.5f, var %.5f vs %.5f\n", mean, std::sqrt(abar) * 0.6, var,
              1 - abar);
  EXPECT_NEAR(mean, std::sqrt(abar) * 0.6, 5 * se_mean);
  EXPECT_NEAR(var, 1 - abar, 5 * se_var);
}

TEST(ConditioningAugmentation, LevelsAreUniformUpToTheMaximum) {
  const int64_t n = 40000, s_max = 7;
  at::manual_seed(2);
  const at::Tensor s = sample_augmentation_levels(n, s_max, at::kCPU);
  EXPECT_EQ(s.scalar_type(), at::kLong);
  EXPECT_EQ(s.min().item<int64_t>(), 0);
  EXPECT_EQ(s.max().item<int64_t>(), s_max);
  const at::Tensor counts = at::bincount(s);
  const double p = 1.0 / (s_max + 1), se = std::sqrt(n * p * (1 - p));
  for (int64_t k = 0; k <= s_max; ++k) EXPECT_NEAR(counts[k].item<double>(), n * p, 5 * se) << "level " << k;
  EXPECT_TRUE(at::equal(sample_augmentation_levels(5, 0, at::kCPU), at::zeros({5}, at::kLong)));
}

}  // namespace
}  // namespace ddpm::diffusion
