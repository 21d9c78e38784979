// ddpm::ops GroupNorm + scale/shift + SiLU: the fused path (custom autograd over our kernels)
// against the plain ATen path (ATen's autograd), forward and every gradient. CPU: the CPU loop,
// which runs the CUDA kernel's formulas, in float64 and float32, both layouts, groups of 1, 2 and
// 12 channels. GPU (skips without a device): the CUDA kernel in float32 and bf16, and a timing print.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "ddpm/ops/group_norm_silu.h"
#include "testing/testing.h"

namespace {
using ddpm::ops::GroupNormSiluArgs;
using ddpm::testing::tensors_near;

struct Case {
  int64_t n, c, h, w, groups;
  bool scale_shift, channels_last;
  std::string name() const {
    return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w) + " g" +
           std::to_string(groups) + (scale_shift ? " scale/shift" : "") + (channels_last ? " channels-last" : "");
  }
};

struct Inputs {
  at::Tensor x, gamma, beta, scale, shift, dy;
};

// x with a non-zero mean per image (the statistics must centre it); gamma, beta float32
// parameters (float64 for float64 x); scale, shift and dy in x's dtype.
Inputs make_inputs(const Case& k, at::ScalarType dtype, at::Device dev, uint64_t seed) {
  at::manual_seed(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const auto pdtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  Inputs in;
  in.x = (1.5 * at::randn({k.n, k.c, k.h, k.w}, f64) + at::randn({k.n, 1, 1, 1}, f64) * 3).to(dev, dtype);
  if (k.channels_last) in.x = in.x.contiguous(at::MemoryFormat::ChannelsLast);
  in.gamma = (1 + 0.5 * at::randn({k.c}, f64)).to(dev, pdtype);
  in.beta = (0.5 * at::randn({k.c}, f64)).to(dev, pdtype);
  if (k.scale_shift) {
    in.scale = (0.5 * at::randn({k.n, k.c}, f64)).to(dev, dtype);
    in.shift = (0.5 * at::randn({k.n, k.c}, f64)).to(dev, dtype);
  }
  in.dy = at::randn({k.n, k.c, k.h, k.w}, f64).to(dev, dtype);
  return in;
}

struct Outputs {
  at::Tensor y, dx, dgamma, dbeta, dscale, dshift;
};

using PathFn = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, GroupNormSiluArgs)>;

// y = path(inputs) and the gradients of sum(y * dy) (inputs `cast` to another dtype first, if given).
Outputs run(const Inputs& in, int64_t groups, const PathFn& path, at::ScalarType cast = at::ScalarType::Undefined) {
  auto leaf = [&](const at::Tensor& t) {
    if (!t.defined()) return at::Tensor();
    at::Tensor c = cast == at::ScalarType::Undefined ? t.detach().clone() : t.detach().to(cast);
    return c.requires_grad_(true);
  };
  Outputs o;
  const at::Tensor x = leaf(in.x), gamma = leaf(in.gamma), beta = leaf(in.beta), scale = leaf(in.scale),
                   shift = leaf(in.shift);
  GroupNormSiluArgs args;
  args.groups = groups;
  o.y = path(x, gamma, beta, scale, shift, args);
  o.y.backward(cast == at::ScalarType::Undefined ? in.dy : in.dy.to(cast));
  o.dx = x.grad();
  o.dgamma = gamma.grad();
  o.dbeta = beta.grad();
  if (scale.defined()) {
    o.dscale = scale.grad();
    o.dshift = shift.grad();
  }
  return o;
}

// Compares every output; the tolerance of each is (rtol, atol * max |expected|).
void expect_near(const Outputs& a, const Outputs& e, double rtol, double atol, const std::string& label) {
  auto near = [&](const at::Tensor& x, const at::Tensor& y, const std::string& what) {
    ASSERT_EQ(x.defined(), y.defined()) << label << " " << what;
    if (!x.defined()) return;
    const double scale = std::max(1.0, y.abs().max().item<double>());
    EXPECT_TRUE(tensors_near(x.to(at::kCPU), y.to(at::kCPU), rtol, atol * scale, label + " " + what));
  };
  near(a.y, e.y, "y");
  near(a.dx, e.dx, "dx");
  near(a.dgamma, e.dgamma, "dgamma");
  near(a.dbeta, e.dbeta, "dbeta");
  near(a.dscale, e.dscale, "dscale");
  near(a.dshift, e.dshift, "dshift");
}

// Groups of 2, 1 and 12 channels; H*W odd, tiny (fewer pixels than the kernel's pixel slots) and
// larger; every case with and without scale/shift, in both layouts.
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const bool ss : {false, true}) {
    for (const bool cl : {false, true}) {
      out.push_back({2, 64, 5, 3, 32, ss, cl});
      out.push_back({3, 32, 4, 4, 32, ss, cl});
      out.push_back({2, 96, 6, 6, 8, ss, cl});
      out.push_back({1, 64, 1, 1, 32, ss, cl});
    }
  }
  return out;
}

TEST(GroupNormSiluCpu, FusedLoopMatchesAtenInFloat64) {
  for (const Case& k : cases()) {
    const Inputs in = make_inputs(k, at::kDouble, at::kCPU, 1);
    const Outputs ref = run(in, k.groups, ddpm::ops::group_norm_silu_reference);
    const Outputs fused = run(in, k.groups, ddpm::ops::group_norm_silu_fused);
    expect_near(fused, ref, 1e-11, 1e-11, "float64 " + k.name());
    if (k.channels_last) {
      EXPECT_TRUE(fused.y.is_contiguous(at::MemoryFormat::ChannelsLast)) << k.name();
      EXPECT_TRUE(fused.dx.is_contiguous(at::MemoryFormat::ChannelsLast)) << k.name();
    }
  }
}

TEST(GroupNormSiluCpu, FusedLoopMatchesAtenInFloat32) {
  for (const Case& k : cases()) {
    const Inputs in = make_inputs(k, at::kFloat, at::kCPU, 2);
    // float32 against the float64 truth, the fused loop and the plain path alike (a group of 2
    // values, the 1x1 case, is ill-conditioned: the plain path's dx is 1.5e-5 off there).
    const Outputs truth = run(in, k.groups, ddpm::ops::group_norm_silu_reference, at::kDouble);
    expect_near(run(in, k.groups, ddpm::ops::group_norm_silu_fused), truth, 5e-5, 5e-5, "float32 fused " + k.name());
    expect_near(run(in, k.groups, ddpm::ops::group_norm_silu_reference), truth, 5e-5, 5e-5,
                "float32 plain " + k.name());
  }
}

// The U-Net's entry point falls back to the plain path on the CPU: bit for bit.
TEST(GroupNormSiluCpu, DispatchOnCpuIsThePlainPath) {
  const Case k{2, 64, 4, 4, 32, true, false};
  const Inputs in = make_inputs(k, at::kFloat, at::kCPU, 3);
  expect_near(run(in, k.groups, ddpm::ops::group_norm_silu), run(in, k.groups, ddpm::ops::group_norm_silu_reference),
              0, 0, "dispatch on cpu");
}

TEST(GroupNormSiluCpu, SupportAndErrors) {
  const at::Tensor x = at::randn({2, 64, 4, 4});
  EXPECT_FALSE(ddpm::ops::group_norm_silu_fused_supports(x, 32));  // CPU only on request
  EXPECT_TRUE(ddpm::ops::group_norm_silu_fused_supports(x, 32, true));
  EXPECT_FALSE(ddpm::ops::group_norm_silu_fused_supports(at::randn({1, 514, 2, 2}), 2, true));  // 257 per group
  EXPECT_FALSE(ddpm::ops::group_norm_silu_fused_supports(x.to(at::kInt), 32, true));
  EXPECT_FALSE(ddpm::ops::group_norm_silu_fused_supports(x, 3, true));
  const at::Tensor g = at::ones({64}), b = at::zeros({64}), s = at::zeros({2, 64});
  GroupNormSiluArgs args;
  EXPECT_THROW(ddpm::ops::group_norm_silu_fused(x, at::ones({32}), b, {}, {}, args), c10::Error);
  EXPECT_THROW(ddpm::ops::group_norm_silu_fused(x, g, b, s, {}, args), c10::Error);           // shift missing
  EXPECT_THROW(ddpm::ops::group_norm_silu_reference(x, g, b, at::zeros({2, 32}), s, args), c10::Error);
  EXPECT_THROW(ddpm::ops::group_norm_silu_fused(x.to(at::kInt), g, b, {}, {}, args), c10::Error);
}

// The CPU loop against the plain chain, forward + backward, min of 9 alternating runs (prints;
// the U-Net keeps the plain chain on the CPU). Disabled in the suite:
// --gtest_also_run_disabled_tests --gtest_filter='*PrintCpuTimes'.
TEST(GroupNormSiluCpu, DISABLED_PrintCpuTimes) {
  for (const bool ss : {false, true}) {
    const Case k{32, 64, 16, 16, 32, ss, false};
    const Inputs in = make_inputs(k, at::kFloat, at::kCPU, 8);
    double best[2] = {1e30, 1e30};
    for (int i = 0; i < 9; ++i) {
      for (int p = 0; p < 2; ++p) {
        const auto t0 = std::chrono::steady_clock::now();
        run(in, k.groups, p ? PathFn(ddpm::ops::group_norm_silu_fused) : PathFn(ddpm::ops::group_norm_silu_reference));
        best[p] = std::min(best[p],
                           std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    std::printf("[time] group_norm_silu cpu %s float32: plain %.2f ms, fused loop %.2f ms forward+backward\n",
                k.name().c_str(), best[0], best[1]);
  }
}

// ---- CUDA (label gpu) ---------------------------------------------------------------------

std::vector<Case> gpu_cases() {
  std::vector<Case> out = cases();
  for (const bool ss : {false, true}) {
    for (const bool cl : {false, true}) {
      out.push_back({8, 128, 32, 32, 32, ss, cl});  // ddpm-cifar10's first level
      out.push_back({4, 384, 8, 8, 32, ss, cl});    // 12 channels per group
      out.push_back({2, 256, 64, 64, 32, ss, cl});  // 32K elements per group
      out.push_back({2, 32, 16, 16, 32, ss, cl});   // 1 channel per group
    }
  }
  return out;
}

TEST(GroupNormSiluCuda, Float32KernelMatchesAten) {
  DDPM_REQUIRE_CUDA();
  for (const Case& k : gpu_cases()) {
    const Inputs in = make_inputs(k, at::kFloat, at::kCUDA, 4);
    const Outputs ref = run(in, k.groups, ddpm::ops::group_norm_silu_reference);
    const Outputs fused = run(in, k.groups, ddpm::ops::group_norm_silu);  // the U-Net's entry point
    expect_near(fused, ref, 1e-4, 1e-5, "cuda float32 " + k.name());
    if (k.channels_last) {
      EXPECT_TRUE(fused.y.is_contiguous(at::MemoryFormat::ChannelsLast)) << k.name();
    }
  }
}

TEST(GroupNormSiluCuda, Float64KernelMatchesAten) {
  DDPM_REQUIRE_CUDA();
  for (const Case& k : cases()) {
    const Inputs in = make_inputs(k, at::kDouble, at::kCUDA, 5);
    expect_near(run(in, k.groups, ddpm::ops::group_norm_silu),
                run(in, k.groups, ddpm::ops::group_norm_silu_reference), 1e-11, 1e-11, "cuda float64 " + k.name());
  }
}

// bf16 x, scale, shift, dy (float32 gamma, beta), as under autocast. The fused kernel rounds once
// (the output); the plain path rounds after the norm, the affine and SiLU. The fused path within
// 8e-3 of the largest value (2 bf16 ulps) of the float64 truth, the plain path and the two paths
// against each other within 3e-2.
TEST(GroupNormSiluCuda, BFloat16KernelMatchesAten) {
  DDPM_REQUIRE_CUDA();
  for (const Case& k : gpu_cases()) {
    const Inputs in = make_inputs(k, at::kBFloat16, at::kCUDA, 6);
    const Outputs truth = run(in, k.groups, ddpm::ops::group_norm_silu_reference, at::kDouble);
    const Outputs fused = run(in, k.groups, ddpm::ops::group_norm_silu);
    const Outputs plain = run(in, k.groups, ddpm::ops::group_norm_silu_reference);
    expect_near(fused, truth, 1e-2, 8e-3, "cuda bf16 fused vs float64 " + k.name());
    expect_near(plain, truth, 3e-2, 3e-2, "cuda bf16 plain vs float64 " + k.name());
    expect_near(fused, plain, 3e-2, 3e-2, "cuda bf16 fused vs plain " + k.name());
  }
}

// Forward + backward time of both paths at ddpm-cifar10's shapes (prints; asserts nothing).
TEST(GroupNormSiluCuda, PrintTimes) {
  DDPM_REQUIRE_CUDA();
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool ss : {false, true}) {
      const Case k{128, 128, 32, 32, 32, ss, false};
      const Inputs in = make_inputs(k, dtype, at::kCUDA, 7);
      for (const auto& [name, fn] : std::vector<std::pair<std::string, PathFn>>{
               {"plain", ddpm::ops::group_norm_silu_reference}, {"fused", ddpm::ops::group_norm_silu}}) {
        for (int i = 0; i < 3; ++i) run(in, k.groups, fn);
        c10::cuda::device_synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        constexpr int kReps = 20;
        for (int i = 0; i < kReps; ++i) run(in, k.groups, fn);
        c10::cuda::device_synchronize();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::printf("[time] group_norm_silu %s %s %s: %.3f ms forward+backward\n", k.name().c_str(),
                    c10::toString(dtype), name.c_str(), ms / kReps);
      }
    }
  }
}

}  // namespace
