// The U-Net's speed options against its plain paths, output and every gradient: attention through
// at::scaled_dot_product_attention against the explicit softmax(QK^T)V (both qkv orders), the new
// qkv order against the legacy one with permuted weights, and the fused GroupNorm + scale/shift +
// SiLU (CPU: the plain chain, bit for bit; CUDA: the kernel, fp32, bf16 autocast, channels-last),
// and channels_last activations against the default layout (CPU; CUDA with the fused kernel).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/model/unet/unet.h"
#include "testing/testing.h"

namespace {
using ddpm::model::UNet;
using ddpm::model::UNetOptions;
using ddpm::testing::tensors_near;

// Two levels with attention at both (16x16 and 8x8: T = 256 and 64), 2 heads, AdaGN, learned sigma.
UNetOptions small(bool scale_shift = true) {
  UNetOptions o = ddpm::model::unet_preset("tiny");
  o.attention_resolutions = {16, 8};
  o.use_scale_shift_norm = scale_shift;
  o.learn_sigma = true;
  return o;
}

// Weights of `from` (non-zero everywhere: zero-initialised convolutions too) copied into `to`.
void randomise(UNet& net, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(0.1 * at::randn_like(p));
}
void copy_weights(UNet& from, UNet& to) {
  at::NoGradGuard no_grad;
  auto dst = to->named_parameters();
  for (const auto& kv : from->named_parameters()) dst[kv.key()].copy_(kv.value());
}

struct Result {
  at::Tensor out;
  std::vector<std::pair<std::string, at::Tensor>> grads;  // "x" then every parameter
};

// out = net(x, t) and the gradients of sum(out * g), optionally under bf16 autocast.
Result forward_backward(UNet& net, const at::Tensor& x_in, const at::Tensor& t, const at::Tensor& g,
                        bool bf16 = false) {
  net->zero_grad();
  at::Tensor x = x_in.detach().clone().requires_grad_(true);
  const auto dev = x.device().type();
  at::autocast::set_autocast_enabled(dev, bf16);
  if (bf16) at::autocast::set_autocast_dtype(dev, at::kBFloat16);
  at::Tensor out = net->forward(x, t).to(g.scalar_type());
  at::autocast::set_autocast_enabled(dev, false);
  at::autocast::clear_cache();
  (out * g).sum().backward();
  Result r{out.detach(), {{"x", x.grad()}}};
  for (const auto& kv : net->named_parameters()) r.grads.emplace_back(kv.key(), kv.value().grad());
  return r;
}

// Elementwise: |a - e| <= rtol |e| + atol * max(1, max |e|), per tensor; prints the worst
// max |a - e| / max(1, max |e|) over the gradients.
void expect_same(const Result& a, const Result& e, double rtol, double atol, const std::string& label) {
  auto scaled = [&](const at::Tensor& ref) { return atol * std::max(1.0, ref.abs().max().item<double>()); };
  EXPECT_TRUE(tensors_near(a.out.cpu(), e.out.cpu(), rtol, scaled(e.out), label + " output"));
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < e.grads.size(); ++i) {
    const at::Tensor& ga = a.grads[i].second;
    const at::Tensor& ge = e.grads[i].second;
    ASSERT_TRUE(ga.defined() && ge.defined()) << label << " " << e.grads[i].first;
    const double ref_max = std::max(1.0, ge.abs().max().item<double>());
    const double d = (ga.to(at::kDouble) - ge.to(at::kDouble)).abs().max().item<double>() / ref_max;
    if (d > worst) {
      worst = d;
      worst_name = e.grads[i].first;
    }
    EXPECT_TRUE(((ga.to(at::kDouble) - ge.to(at::kDouble)).abs() <= rtol * ge.to(at::kDouble).abs() + scaled(ge))
                    .all()
                    .item<bool>())
        << label << " gradient of " << e.grads[i].first << ": max diff " << d * ref_max;
  }
  std::printf("[maxdiff] %s gradients (%zu tensors): worst max|diff| / max(1, max|ref|) %.3e (%s)\n", label.c_str(),
              e.grads.size(), worst, worst_name.c_str());
}

// Relative L2 errors against `truth` of the output, the input gradient and all parameter
// gradients together (one vector: a tensor whose gradient is ~0, such as a conv bias before a
// GroupNorm of one channel per group, would make per-tensor ratios noise); prints and returns the worst.
double worst_rel_l2(const Result& a, const Result& truth, const std::string& label) {
  auto flat = [](const Result& r) {
    std::vector<at::Tensor> p;
    for (size_t i = 1; i < r.grads.size(); ++i) p.push_back(r.grads[i].second.reshape(-1).to(at::kCPU, at::kDouble));
    return at::cat(p);
  };
  auto rel = [](const at::Tensor& x, const at::Tensor& y) {
    const at::Tensor yd = y.to(at::kCPU, at::kDouble);
    return (x.to(at::kCPU, at::kDouble) - yd).norm().item<double>() / std::max(1e-30, yd.norm().item<double>());
  };
  const double out = rel(a.out, truth.out), dx = rel(a.grads[0].second, truth.grads[0].second),
               params = rel(flat(a), flat(truth));
  std::printf("[maxdiff] %s: relative L2 error output %.3e, input gradient %.3e, parameter gradients %.3e\n",
              label.c_str(), out, dx, params);
  return std::max({out, dx, params});
}

struct Inputs {
  at::Tensor x, t, g;
};
Inputs inputs(const UNetOptions& o, at::ScalarType dtype, at::Device dev, int64_t n = 2) {
  at::manual_seed(11);
  const auto opt = at::TensorOptions().dtype(dtype).device(dev);
  return {at::randn({n, o.in_channels, o.image_size, o.image_size}, opt), at::randint(0, 1000, {n}, opt.dtype(at::kLong)),
          at::randn({n, o.output_channels(), o.image_size, o.image_size}, opt)};
}

// A pair of nets with the same weights differing in one option set by `vary`.
template <typename Vary>
std::pair<UNet, UNet> pair_of(UNetOptions o, Vary vary, at::ScalarType dtype, at::Device dev) {
  UNet a(o);
  vary(o);
  UNet b(o);
  a->to(dev, dtype);
  b->to(dev, dtype);
  randomise(a, 5);
  copy_weights(a, b);
  return {a, b};
}

// CPU training is deterministic (README): SDPA's forward and backward too.
TEST(UNetAttention, SdpaIsDeterministicOnCpu) {
  UNet net(small());
  randomise(net, 9);
  const Inputs in = inputs(small(), at::kFloat, at::kCPU);
  expect_same(forward_backward(net, in.x, in.t, in.g), forward_backward(net, in.x, in.t, in.g), 0, 0,
              "sdpa twice on the cpu");
}

// bf16 autocast: the fast path and the plain path against the plain path in float32 (relative L2,
// see worst_rel_l2): the fast path within 5% (bf16 keeps 8 bits; the plain path lands near 2% on
// the CPU) and no worse than the plain one (+10%, +1e-3).
void expect_bf16_no_worse(UNet& fast, UNet& plain, const Inputs& in, const std::string& label) {
  const Result truth = forward_backward(plain, in.x, in.t, in.g);
  const double e_fast = worst_rel_l2(forward_backward(fast, in.x, in.t, in.g, true), truth, label + " bf16 fast path");
  const double e_plain = worst_rel_l2(forward_backward(plain, in.x, in.t, in.g, true), truth, label + " bf16 plain path");
  EXPECT_LT(e_fast, 5e-2) << label;
  EXPECT_LT(e_fast, 1.1 * e_plain + 1e-3) << label;
}

// ---- attention: SDPA against the explicit path (CPU) --------------------------------------

TEST(UNetAttention, SdpaMatchesExplicitFloat64) {
  for (const bool new_order : {false, true}) {
    UNetOptions o = small();
    o.use_new_attention_order = new_order;
    auto [sdpa, expl] = pair_of(o, [](UNetOptions& v) { v.sdpa_attention = false; }, at::kDouble, at::kCPU);
    const Inputs in = inputs(o, at::kDouble, at::kCPU);
    expect_same(forward_backward(sdpa, in.x, in.t, in.g), forward_backward(expl, in.x, in.t, in.g), 1e-9, 1e-11,
                std::string("sdpa vs explicit float64 ") + (new_order ? "new order" : "legacy order"));
  }
}

TEST(UNetAttention, SdpaMatchesExplicitFloat32) {
  for (const bool new_order : {false, true}) {
    UNetOptions o = small();
    o.use_new_attention_order = new_order;
    auto [sdpa, expl] = pair_of(o, [](UNetOptions& v) { v.sdpa_attention = false; }, at::kFloat, at::kCPU);
    const Inputs in = inputs(o, at::kFloat, at::kCPU);
    expect_same(forward_backward(sdpa, in.x, in.t, in.g), forward_backward(expl, in.x, in.t, in.g), 1e-4, 2e-5,
                std::string("sdpa vs explicit float32 ") + (new_order ? "new order" : "legacy order"));
  }
}

TEST(UNetAttention, SdpaNoWorseThanExplicitUnderBf16Autocast) {
  for (const bool new_order : {false, true}) {
    UNetOptions o = small();
    o.use_new_attention_order = new_order;
    auto [sdpa, expl] = pair_of(o, [](UNetOptions& v) { v.sdpa_attention = false; }, at::kFloat, at::kCPU);
    expect_bf16_no_worse(sdpa, expl, inputs(o, at::kFloat, at::kCPU),
                         std::string("cpu sdpa vs explicit ") + (new_order ? "new order" : "legacy order"));
  }
}

// CPU time of forward + backward, explicit against SDPA, the two alternating, the minimum of 9
// runs each (the minimum resists other jobs on the machine): one AttentionBlock at 16x16 (T = 256,
// 128 channels, 4 heads, batch 8) and the whole small U-Net (batch 8). Prints; asserts nothing.
// Disabled in the suite (about 20 s): --gtest_also_run_disabled_tests --gtest_filter='*PrintCpuTimes'.
TEST(UNetAttention, DISABLED_PrintCpuTimes) {
  auto print_min_ms = [](const std::string& what, const std::function<void()>& expl,
                         const std::function<void()>& sdpa) {
    double best[2] = {1e30, 1e30};
    for (int i = 0; i < 9; ++i) {
      for (int k = 0; k < 2; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        (k ? sdpa : expl)();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        best[k] = std::min(best[k], ms);
      }
    }
    std::printf("[time] %s forward+backward: explicit %.1f ms, sdpa %.1f ms (x%.2f)\n", what.c_str(), best[0], best[1],
                best[0] / best[1]);
  };
  at::manual_seed(3);
  const at::Tensor x = at::randn({8, 128, 16, 16}).requires_grad_(true);
  std::shared_ptr<ddpm::model::AttentionBlock> blocks[2];
  for (const bool sdpa : {false, true}) {
    ddpm::model::AttentionOptions ao{128, 4};
    ao.sdpa = sdpa;
    blocks[sdpa] = std::make_shared<ddpm::model::AttentionBlock>(ao);
  }
  print_min_ms("AttentionBlock 8x128x16x16, 4 heads", [&] { blocks[0]->forward(x, {}).square().sum().backward(); },
               [&] { blocks[1]->forward(x, {}).square().sum().backward(); });
  auto [sdpa, expl] = pair_of(small(), [](UNetOptions& v) { v.sdpa_attention = false; }, at::kFloat, at::kCPU);
  const Inputs in = inputs(small(), at::kFloat, at::kCPU, 8);
  print_min_ms("U-Net tiny + attention at 16 and 8, batch 8", [&, &e = expl] { forward_backward(e, in.x, in.t, in.g); },
               [&, &s = sdpa] { forward_backward(s, in.x, in.t, in.g); });
}

// The new order with qkv rows [q; k; v] x heads equals the legacy order with the same rows
// rearranged per head: legacy row h*3d + p*d + j = new row p*C + h*d + j (p = q, k, v).
TEST(UNetAttention, NewOrderIsLegacyWithPermutedQkvRows) {
  for (const bool sdpa : {true, false}) {
    UNetOptions o = small();
    o.sdpa_attention = sdpa;
    auto [legacy, fresh] = pair_of(o, [](UNetOptions& v) { v.use_new_attention_order = true; }, at::kDouble, at::kCPU);
    {
      at::NoGradGuard no_grad;
      auto dst = legacy->named_parameters();
      for (const auto& kv : fresh->named_parameters()) {
        if (kv.key().find(".qkv.") == std::string::npos) continue;
        const at::Tensor w = kv.value();  // (3C, C, 1) or (3C)
        const int64_t c = w.size(0) / 3, heads = o.num_heads, d = c / heads;
        const at::Tensor perm = w.reshape({3, heads, d, -1}).transpose(0, 1).reshape(w.sizes());  // row h*3d + p*d + j
        dst[kv.key()].copy_(perm);
      }
    }
    const Inputs in = inputs(o, at::kDouble, at::kCPU);
    const Result a = forward_backward(legacy, in.x, in.t, in.g), b = forward_backward(fresh, in.x, in.t, in.g);
    EXPECT_TRUE(tensors_near(a.out, b.out, 1e-12, 1e-12, std::string("new order vs permuted legacy, sdpa ") +
                                                             (sdpa ? "on" : "off")));
    EXPECT_TRUE(tensors_near(a.grads[0].second, b.grads[0].second, 1e-10, 1e-12, "input gradient"));
    // And the orders differ for the same weights (the option does something).
    UNet same(o);
    same->to(at::kDouble);
    copy_weights(fresh, same);
    EXPECT_GT((forward_backward(same, in.x, in.t, in.g).out - b.out).abs().max().item<double>(), 1e-3);
  }
}

// ---- fused GroupNorm + SiLU on the CPU: the plain chain ------------------------------------

TEST(UNetFusedGroupNorm, CpuFallbackIsThePlainPathBitForBit) {
  for (const bool ss : {false, true}) {
    auto [fused, plain] = pair_of(small(ss), [](UNetOptions& v) { v.fused_group_norm = false; }, at::kFloat, at::kCPU);
    const Inputs in = inputs(small(ss), at::kFloat, at::kCPU);
    expect_same(forward_backward(fused, in.x, in.t, in.g), forward_backward(plain, in.x, in.t, in.g), 0, 0,
                std::string("fused_group_norm on the cpu") + (ss ? " (scale/shift)" : ""));
  }
}

// ---- channels_last: NHWC activations, the same numbers --------------------------------------

// The option against the default layout with the same weights: output (returned NCHW) and every
// gradient, float64 (within rounding) and float32; the gradients keep the parameters' layout.
TEST(UNetChannelsLast, MatchesTheDefaultLayoutOnCpu) {
  for (const auto& [dtype, channels] : {std::pair{at::kDouble, 3}, std::pair{at::kFloat, 3}, std::pair{at::kFloat, 1}}) {
    UNetOptions o = small();
    o.in_channels = o.out_channels = channels;  // 1: an input that is NCHW and NHWC at once
    o.channels_last = true;
    auto [cl, plain] = pair_of(o, [](UNetOptions& v) { v.channels_last = false; }, dtype, at::kCPU);
    const Inputs in = inputs(o, dtype, at::kCPU);
    const Result a = forward_backward(cl, in.x, in.t, in.g), e = forward_backward(plain, in.x, in.t, in.g);
    EXPECT_TRUE(a.out.is_contiguous()) << "the output is returned NCHW";
    // The output conv ran on NHWC activations: its output needed the copy back to NCHW.
    const at::Tensor out_cl = cl->forward(in.x, in.t), out_plain = plain->forward(in.x, in.t);
    EXPECT_EQ(out_cl.grad_fn()->name(), "CloneBackward0");
    EXPECT_EQ(out_plain.grad_fn()->name(), "ConvolutionBackward0");
    for (const auto& [name, g] : a.grads) EXPECT_TRUE(g.is_contiguous()) << name << "'s gradient changed layout";
    const bool f64 = dtype == at::kDouble;
    expect_same(a, e, f64 ? 1e-9 : 1e-4, f64 ? 1e-11 : 2e-5,
                std::string("channels_last cpu ") + (f64 ? "float64" : "float32") + ", " + std::to_string(channels) +
                    " input channel(s)");
  }
}

// ---- CUDA (label gpu) ---------------------------------------------------------------------

// channels_last with the fused GroupNorm (the layout it is for) against the default layout and
// the plain chain: fp32 within tolerance, bf16 autocast no worse against float64 truth.
TEST(UNetChannelsLastCuda, MatchesTheDefaultLayout) {
  DDPM_REQUIRE_CUDA();
  for (const bool ss : {false, true}) {
    UNetOptions o = small(ss);
    o.channels_last = true;
    auto [cl, plain] = pair_of(o, [](UNetOptions& v) { v.channels_last = false; v.fused_group_norm = false; },
                               at::kFloat, at::kCUDA);
    const Inputs in = inputs(o, at::kFloat, at::kCUDA, 4);
    const std::string label = std::string("cuda channels_last + fused gn") + (ss ? " (scale/shift)" : "");
    expect_same(forward_backward(cl, in.x, in.t, in.g), forward_backward(plain, in.x, in.t, in.g), 1e-3, 1e-4,
                label + " float32");
    expect_bf16_no_worse(cl, plain, in, label);
  }
}


// fp32: SDPA's efficient kernel against the explicit path; bf16 autocast: expect_bf16_no_worse.
TEST(UNetAttentionCuda, SdpaMatchesExplicit) {
  DDPM_REQUIRE_CUDA();
  for (const bool new_order : {false, true}) {
    UNetOptions o = small();
    o.use_new_attention_order = new_order;
    const std::string label = std::string("cuda sdpa vs explicit ") + (new_order ? "new order" : "legacy order");
    auto [sdpa, expl] = pair_of(o, [](UNetOptions& v) { v.sdpa_attention = false; }, at::kFloat, at::kCUDA);
    const Inputs in = inputs(o, at::kFloat, at::kCUDA, 4);
    expect_same(forward_backward(sdpa, in.x, in.t, in.g), forward_backward(expl, in.x, in.t, in.g), 1e-3, 1e-4,
                label + " float32");
    expect_bf16_no_worse(sdpa, expl, in, label);
  }
}

// fp32: the kernel against the plain chain; bf16 autocast: expect_bf16_no_worse. Channels-last
// weights and input likewise.
TEST(UNetFusedGroupNormCuda, FusedMatchesPlain) {
  DDPM_REQUIRE_CUDA();
  for (const bool ss : {false, true}) {
    for (const bool cl : {false, true}) {
      const std::string label = std::string(ss ? "scale/shift" : "plain resblocks") + (cl ? " channels-last" : "");
      auto [fused, plain] = pair_of(small(ss), [](UNetOptions& v) { v.fused_group_norm = false; }, at::kFloat,
                                    at::kCUDA);
      Inputs in = inputs(small(ss), at::kFloat, at::kCUDA, 4);
      if (cl) {
        for (UNet* net : {&fused, &plain}) {
          for (auto& p : (*net)->parameters()) {
            if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
          }
        }
        in.x = in.x.contiguous(at::MemoryFormat::ChannelsLast);
      }
      expect_same(forward_backward(fused, in.x, in.t, in.g), forward_backward(plain, in.x, in.t, in.g), 1e-3, 1e-4,
                  "cuda fused gn float32 " + label);
      expect_bf16_no_worse(fused, plain, in, "cuda fused gn " + label);
    }
  }
}

}  // namespace
