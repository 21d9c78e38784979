// Per-sample noise (trainer/inference.h: per_sample_normal, sample_generator): an index's values do
// not depend on the batch it is drawn in, repeat with the seed and differ between indices, and are
// standard normal (moments within 5 standard errors), on the CPU and, drawn there, on a GPU
// (label gpu; the CUDA case skips without one).
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cmath>
#include <cstdio>

#include "ddpm/trainer/inference.h"
#include "testing/testing.h"

namespace ddpm::trainer {
namespace {

void check_per_sample_noise(const c10::Device& device) {
  const std::vector<int64_t> shape{250, 1, 8, 8};  // T x C x H x W of bits/dim: 16,000 values an image
  const at::Tensor batch = per_sample_normal(9, {3, 7, 11}, shape, device);  // (3, 250, 1, 8, 8)
  ASSERT_EQ(batch.device(), device);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{3, 250, 1, 8, 8}));
  const at::Tensor alone = per_sample_normal(9, {7}, shape, device);  // index 7 in a batch of its own
  const double batch_diff = (batch[1] - alone[0]).abs().max().item<double>();
  const double repeat_diff = (per_sample_normal(9, {3, 7, 11}, shape, device) - batch).abs().max().item<double>();
  const double other_seed = (per_sample_normal(10, {7}, shape, device)[0] - alone[0]).abs().max().item<double>();
  const double other_index = (batch[0] - batch[2]).abs().max().item<double>();
  std::printf("[maxdiff] %s: index 7 alone vs in a batch %.3g, repeat %.3g; another seed differs by up to %.3g, "
              "another index by %.3g\n",
              device.str().c_str(), batch_diff, repeat_diff, other_seed, other_index);
  EXPECT_EQ(batch_diff, 0.0);
  EXPECT_EQ(repeat_diff, 0.0);
  EXPECT_GT(other_seed, 1.0);
  EXPECT_GT(other_index, 1.0);
  const at::Tensor v = batch.to(at::kDouble).flatten();  // 48,000 values
  const double n = static_cast<double>(v.numel()), mean = v.mean().item<double>(), var = v.var().item<double>();
  // Standard errors of the mean (1/sqrt(n)) and of the variance (sqrt(2/n)) of N(0, 1).
  std::printf("[moments] %s: mean %.4f (tolerance %.4f), variance %.4f (tolerance 1 +- %.4f)\n", device.str().c_str(),
              mean, 5 / std::sqrt(n), var, 5 * std::sqrt(2 / n));
  EXPECT_LT(std::abs(mean), 5 / std::sqrt(n));
  EXPECT_LT(std::abs(var - 1), 5 * std::sqrt(2 / n));
}

TEST(PerSampleNoise, CpuIsPerIndexAndStandardNormal) { check_per_sample_noise(c10::Device(c10::kCPU)); }

TEST(PerSampleNoise, CudaIsDrawnOnTheDevicePerIndexAndStandardNormal) {
  DDPM_REQUIRE_CUDA();
  check_per_sample_noise(c10::Device(c10::kCUDA, 0));
}

}  // namespace
}  // namespace ddpm::trainer
