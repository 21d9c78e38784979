// Uniform and loss-second-moment timestep samplers: probabilities after a fixed history against
// tests/reference/diffusion_reference.py, importance weights, warm-up, state save/restore.
#include <ATen/CPUGeneratorImpl.h>

#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/tensor_dict.h"
#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

class Samplers : public DiffusionGolden {};

TEST_F(Samplers, SecondMomentProbabilitiesAfterAFixedHistory) {
  LossSecondMomentResampler s(6);
  const at::Tensor ts = r("is.ts"), losses = r("is.losses");
  // Each t has 10 losses after the first 60 pairs, not before.
  s.update_with_all_losses(ts.narrow(0, 0, 59), losses.narrow(0, 0, 59));
  EXPECT_FALSE(s.warmed_up());
  EXPECT_TRUE(tensors_near(s.probabilities(), at::full({6}, 1.0 / 6.0, at::kDouble), kRtol64, 0.0, "uniform warm-up"));
  s.update_with_all_losses(ts.narrow(0, 59, ts.size(0) - 59), losses.narrow(0, 59, ts.size(0) - 59));
  EXPECT_TRUE(s.warmed_up());
  EXPECT_TRUE(tensors_near(s.probabilities(), r("is.probs"), kRtol64, 0.0, "second-moment probabilities"));
  const model::TensorDict st = s.state();
  EXPECT_TRUE(tensors_near(st[0].second, r("is.history"), 0.0, 0.0, "loss_history"));
  EXPECT_TRUE(at::equal(st[1].second, r("is.counts")));
}

TEST_F(Samplers, WeightsAreOneOverTp) {
  LossSecondMomentResampler s(6);
  s.update_with_all_losses(r("is.ts"), r("is.losses"));
  const TimestepSample b = s.sample(20000, at::detail::createCPUGenerator(11));
  EXPECT_EQ(b.t.scalar_type(), at::kLong);
  EXPECT_EQ(b.weights.scalar_type(), at::kFloat);
  const at::Tensor p = r("is.probs");
  EXPECT_TRUE(tensors_near(b.weights, 1.0 / (6.0 * p.index_select(0, b.t)), 1e-7, 0.0, "weights 1/(T p_t)"));
  // Empirical frequencies of 20000 draws follow p (3 standard deviations, fixed seed).
  const at::Tensor freq = at::bincount(b.t, {}, 6).to(at::kDouble) / 20000.0;
  EXPECT_TRUE(tensors_near(freq, p, 0.0, 3.0 * std::sqrt(0.25 / 20000.0), "empirical frequencies"));
}

TEST_F(Samplers, UniformSampler) {
  UniformSampler s(10);
  EXPECT_TRUE(tensors_near(s.probabilities(), at::full({10}, 0.1, at::kDouble), kRtol64, 0.0, "uniform p"));
  const TimestepSample b = s.sample(64, at::detail::createCPUGenerator(1));
  EXPECT_TRUE(at::equal(b.weights, at::ones({64}, at::kFloat)));
  EXPECT_TRUE((b.t >= 0).all().item<bool>() && (b.t < 10).all().item<bool>());
  EXPECT_THROW(create_named_schedule_sampler("importance", 10), std::invalid_argument);
  EXPECT_NE(dynamic_cast<LossSecondMomentResampler*>(create_named_schedule_sampler("loss-second-moment", 10).get()),
            nullptr);
}

TEST_F(Samplers, StateSurvivesACheckpoint) {
  LossSecondMomentResampler a(6);
  a.update_with_all_losses(r("is.ts").narrow(0, 0, 70), r("is.losses").narrow(0, 0, 70));
  const std::string path = ddpm::testing::temp_dir("diffusion_sampler_state") + "/sampler.pt";
  model::save_tensor_dict(path, a.state());
  LossSecondMomentResampler b(6);
  b.load_state(model::load_tensor_dict(path));
  const at::Tensor ts = r("is.ts").narrow(0, 70, 15), losses = r("is.losses").narrow(0, 70, 15);
  a.update_with_all_losses(ts, losses);
  b.update_with_all_losses(ts, losses);
  EXPECT_TRUE(at::equal(a.probabilities(), b.probabilities()));
  EXPECT_TRUE(tensors_near(b.probabilities(), r("is.probs"), kRtol64, 0.0, "restored probabilities"));

  LossSecondMomentResampler c(7);
  EXPECT_TRUE(contains(error_of([&] { c.load_state(a.state()); }), "do not match T = 7"));
  EXPECT_TRUE(contains(error_of([&] { c.load_state({}); }), "needs 'loss_history' and 'loss_counts'"));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
