// ddpm::ops::ema_update_ against tests/reference/ema_reference.py (float64 numpy), its CPU lerp and
// the CUDA multi-tensor kernel against the LibTorch foreach reference (gpu; skips without a device).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "ddpm/ops/ema.h"
#include "testing/testing.h"

namespace {
using ddpm::testing::tensors_near;

class EmaGolden : public ::testing::Test {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("ema");
  at::Tensor r(const std::string& n) { return g.read(n); }
  static constexpr int kTensors = 3;
  static constexpr int kSteps = 6;

  std::vector<at::Tensor> tensors(const std::string& prefix, at::ScalarType dtype) {
    std::vector<at::Tensor> out;
    for (int i = 0; i < kTensors; ++i) out.push_back(r(prefix + std::to_string(i)).to(dtype));
    return out;
  }
  // Runs kSteps updates (no warmup) with rate index j and checks against the golden EMA.
  void check(int j, at::ScalarType dtype, double rtol, double atol, bool reference) {
    const double rate = r("rates")[j].item<double>();
    std::vector<at::Tensor> ema = tensors("init_", dtype);
    for (int k = 1; k <= kSteps; ++k) {
      const std::vector<at::Tensor> params = tensors("param_" + std::to_string(k) + "_", dtype);
      if (reference) {
        ddpm::ops::ema_update_reference_(ema, params, rate);
      } else {
        ddpm::ops::ema_update_(ema, params, rate);
      }
    }
    for (int i = 0; i < kTensors; ++i) {
      const std::string name = "ema_r" + std::to_string(j) + "_w0_" + std::to_string(i);
      EXPECT_TRUE(tensors_near(ema[i], r(name), rtol, atol,
                               name + " " + std::string(c10::toString(dtype))));
    }
  }
};

TEST_F(EmaGolden, Float64MatchesFormula) {
  for (int j = 0; j < 3; ++j) check(j, at::kDouble, 1e-13, 1e-14, false);
}

TEST_F(EmaGolden, Float32MatchesFormula) {
  for (int j = 0; j < 3; ++j) check(j, at::kFloat, 1e-5, 1e-6, false);
}

// bfloat16 keeps 8 bits of mantissa; each of 6 updates rounds twice (mul, add).
TEST_F(EmaGolden, BFloat16ReferenceWithinRounding) {
  for (int j = 0; j < 3; ++j) check(j, at::kBFloat16, 0.0, 3e-2, true);
}

TEST(Ema, RateOneKeepsAndRateZeroCopies) {
  std::vector<at::Tensor> ema = {at::full({4}, 3.0, at::kDouble)};
  const std::vector<at::Tensor> p = {at::arange(4, at::kDouble)};
  ddpm::ops::ema_update_(ema, p, 1.0);
  EXPECT_TRUE(tensors_near(ema[0], at::full({4}, 3.0, at::kDouble), 0, 0, "rate 1"));
  ddpm::ops::ema_update_(ema, p, 0.0);
  EXPECT_TRUE(tensors_near(ema[0], p[0], 0, 0, "rate 0"));
}

TEST(Ema, ClearErrorsOnMismatch) {
  std::vector<at::Tensor> ema = {at::zeros({3})};
  EXPECT_THROW(ddpm::ops::ema_update_(ema, {at::zeros({4})}, 0.9), c10::Error);
  EXPECT_THROW(ddpm::ops::ema_update_(ema, {at::zeros({3}, at::kDouble)}, 0.9), c10::Error);
  EXPECT_THROW(ddpm::ops::ema_update_(ema, {}, 0.9), c10::Error);
  EXPECT_THROW(ddpm::ops::ema_update_(ema, {at::zeros({3})}, 1.5), c10::Error);
}

// The CPU path (one foreach lerp) against the reference's mul + add, over 3 updates of 40 tensors:
// the same formula, rounded differently.
TEST(Ema, CpuLerpMatchesForeachReference) {
  at::manual_seed(5);
  std::vector<at::Tensor> ema, ref;
  for (int i = 0; i < 40; ++i) ema.push_back(at::randn({1 + i * 131}));
  for (const auto& t : ema) ref.push_back(t.clone());
  for (int k = 0; k < 3; ++k) {
    std::vector<at::Tensor> params;
    for (const auto& t : ema) params.push_back(at::randn_like(t));
    ddpm::ops::ema_update_(ema, params, 0.999);
    ddpm::ops::ema_update_reference_(ref, params, 0.999);
  }
  for (size_t i = 0; i < ema.size(); ++i) {
    EXPECT_TRUE(tensors_near(ema[i], ref[i], 1e-6, 1e-7, "lerp vs mul + add " + std::to_string(i)));
  }
}

// Many tensors (more than one launch's 36) and one larger than a launch's 320 x 65536 chunks.
std::vector<at::Tensor> gpu_set(at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> out;
  for (int i = 0; i < 50; ++i) out.push_back(at::randn({1 + i * 997}, at::device(at::kCUDA).dtype(dtype)));
  out.push_back(at::randn({3, 7, 1000003}, at::device(at::kCUDA).dtype(dtype)));
  out.push_back(at::randn({0}, at::device(at::kCUDA).dtype(dtype)));
  return out;
}

void check_kernel(at::ScalarType dtype, double rtol, double atol) {
  std::vector<at::Tensor> ema = gpu_set(dtype, 1);
  std::vector<at::Tensor> ref;
  for (const auto& t : ema) ref.push_back(t.clone());
  for (int k = 0; k < 3; ++k) {
    const std::vector<at::Tensor> params = gpu_set(dtype, 100 + k);
    ddpm::ops::ema_update_(ema, params, 0.999);
    ddpm::ops::ema_update_reference_(ref, params, 0.999);
  }
  for (size_t i = 0; i < ema.size(); i += 10) {
    EXPECT_TRUE(tensors_near(ema[i], ref[i], rtol, atol, "kernel vs foreach " + std::to_string(i)));
  }
  EXPECT_TRUE(tensors_near(ema[50], ref[50], rtol, atol, "kernel vs foreach, 21M-element tensor"));
}

TEST(EmaCuda, Float32KernelMatchesForeach) {
  DDPM_REQUIRE_CUDA();
  check_kernel(at::kFloat, 1e-6, 1e-6);
}

// The kernel rounds once per update, the reference twice (mul, then add): one bf16 ulp apart.
TEST(EmaCuda, BFloat16KernelMatchesForeach) {
  DDPM_REQUIRE_CUDA();
  check_kernel(at::kBFloat16, 1.6e-2, 1e-2);
}

}  // namespace
