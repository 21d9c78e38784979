// RNG capture/restore: draw, save, draw, restore, draw again gives identical numbers (CPU, and
// CUDA generators when a device is present); the state survives a tensor-dict round trip.
#include <ATen/ATen.h>

#include "ddpm/trainer/rng_state.h"
#include "testing/testing.h"

namespace {
using ddpm::testing::tensors_near;

TEST(RngState, CpuRestoreReproducesDraws) {
  at::manual_seed(7);
  (void)at::randn({5});
  const ddpm::trainer::RngState saved = ddpm::trainer::capture_rng_state();
  EXPECT_EQ(saved.cpu.scalar_type(), at::kByte);
  const at::Tensor first = at::randn({100});
  const at::Tensor first_int = at::randint(0, 1000, {50});
  ddpm::trainer::restore_rng_state(saved);
  EXPECT_TRUE(tensors_near(at::randn({100}), first, 0, 0, "randn after restore"));
  EXPECT_TRUE(tensors_near(at::randint(0, 1000, {50}), first_int, 0, 0, "randint after restore"));
  // And the draws after restore differ from a fresh continuation (the state really moved).
  EXPECT_FALSE(at::equal(at::randn({100}), first));
}

TEST(RngState, SurvivesTensorDictRoundTrip) {
  const std::string dir = ddpm::testing::temp_dir("rng_state");
  at::manual_seed(11);
  const ddpm::trainer::RngState saved = ddpm::trainer::capture_rng_state();
  ddpm::model::TensorDict d;
  ddpm::trainer::append_rng_state(d, "rng/rank0", saved);
  ddpm::model::save_tensor_dict(dir + "/rng.pt", d);
  const at::Tensor expected = at::rand({64});
  const ddpm::trainer::RngState loaded =
      ddpm::trainer::extract_rng_state(ddpm::model::load_tensor_dict(dir + "/rng.pt"), "rng/rank0");
  EXPECT_EQ(loaded.cuda.size(), saved.cuda.size());
  ddpm::trainer::restore_rng_state(loaded);
  EXPECT_TRUE(tensors_near(at::rand({64}), expected, 0, 0, "rand after file round trip"));
  EXPECT_THROW(ddpm::trainer::extract_rng_state(d, "rng/rank1"), std::invalid_argument);
}

TEST(RngState, CudaRestoreReproducesDraws) {
  DDPM_REQUIRE_CUDA();
  const ddpm::trainer::RngState saved = ddpm::trainer::capture_rng_state();
  ASSERT_FALSE(saved.cuda.empty());
  const at::Tensor first = at::randn({1000}, at::kCUDA);
  ddpm::trainer::restore_rng_state(saved);
  EXPECT_TRUE(tensors_near(at::randn({1000}, at::kCUDA), first, 0, 0, "cuda randn after restore"));
}
}  // namespace
