// Learning-rate schedule against tests/reference/lr_reference.py (float64 from the formula).
#include <ATen/ATen.h>

#include "ddpm/trainer/config.h"
#include "ddpm/trainer/lr_schedule.h"
#include "testing/testing.h"

namespace {
using ddpm::trainer::LrDecay;
using ddpm::trainer::LrSchedule;

TEST(LrSchedule, MatchesFormulaForEveryDecay) {
  ddpm::data::H5TensorFile g = ddpm::testing::golden("lr");
  const at::Tensor cases = g.read("cases");  // (K, 5): base, W, decay, D, min
  for (int64_t i = 0; i < cases.size(0); ++i) {
    const at::Tensor c = cases[i];
    LrSchedule s;
    s.base_lr = c[0].item<double>();
    s.warmup_steps = c[1].item<int64_t>();
    s.decay = static_cast<LrDecay>(c[2].item<int64_t>());
    s.decay_steps = c[3].item<int64_t>();
    s.min_lr = c[4].item<double>();
    const at::Tensor expected = g.read("lr_" + std::to_string(i));
    at::Tensor got = at::empty_like(expected);
    for (int64_t step = 0; step < expected.size(0); ++step) got[step] = ddpm::trainer::learning_rate(s, step);
    EXPECT_TRUE(ddpm::testing::tensors_near(got, expected, 1e-14, 1e-18, "lr case " + std::to_string(i)));
  }
}

TEST(LrSchedule, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(ddpm::trainer::parse_lr_decay("cosine"), LrDecay::kCosine);
  EXPECT_EQ(ddpm::trainer::parse_lr_decay("linear"), LrDecay::kLinear);
  EXPECT_EQ(ddpm::trainer::parse_lr_decay("constant"), LrDecay::kConstant);
  EXPECT_THROW(ddpm::trainer::parse_lr_decay("cos"), std::invalid_argument);
  EXPECT_THROW(ddpm::trainer::learning_rate(LrSchedule{}, -1), std::invalid_argument);
}
TEST(LrSchedule, FromConfigDecaysOverTheRun) {
  ddpm::trainer::TrainConfig c;
  c.lr = 2e-4;
  c.warmup_steps = 10;
  c.lr_decay = "cosine";
  c.lr_min = 1e-5;
  c.global_batch = 10;
  c.max_images = 1000;  // 100 steps
  LrSchedule s = ddpm::trainer::make_lr_schedule(c);
  EXPECT_EQ(s.decay, LrDecay::kCosine);
  EXPECT_EQ(s.decay_steps, 100);
  EXPECT_DOUBLE_EQ(ddpm::trainer::learning_rate(s, 100), 1e-5);
  c.lr_decay_steps = 50;
  EXPECT_EQ(ddpm::trainer::make_lr_schedule(c).decay_steps, 50);
}
}  // namespace
