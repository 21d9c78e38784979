// FusedAdamW against the AdamW equations (float64, written out here from Loshchilov & Hutter's
// Algorithm 2 with decoupled weight decay and Adam's bias corrections) and against
// torch::optim::AdamW (the per-parameter form it replaced) on CPU, and on CUDA when present;
// state save/restore continues the same trajectory.
#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "ddpm/trainer/adamw.h"
#include "ddpm/trainer/checkpoint.h"
#include "testing/testing.h"

namespace {
using ddpm::model::TensorDict;
using ddpm::trainer::AdamWOptions;
using ddpm::trainer::FusedAdamW;

AdamWOptions options() {
  AdamWOptions o;
  o.lr = 3e-3;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  return o;
}

// Parameters of a few shapes (scalar-sized, odd lengths, a matrix) and gradients per step.
TensorDict make_params(at::ScalarType dtype, const at::Device& device) {
  at::manual_seed(7);
  return {{"w", at::randn({5, 3}, at::kDouble).to(dtype).to(device)},
          {"b", at::randn({7}, at::kDouble).to(dtype).to(device)},
          {"s", at::randn({1}, at::kDouble).to(dtype).to(device)}};
}
at::Tensor grad_for(int step, size_t i, const at::Tensor& p) {
  at::manual_seed(100 * step + static_cast<int64_t>(i));
  return at::randn(p.sizes(), at::kDouble).mul_(std::pow(10.0, static_cast<double>(i) - 1.0));  // scales 0.1..10
}

// The equations, float64: theta <- theta (1 - lr wd); m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
// theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
std::vector<at::Tensor> reference(const TensorDict& init, int steps, const AdamWOptions& o) {
  std::vector<at::Tensor> th, m, v;
  for (const auto& [n, p] : init) {
    th.push_back(p.to(at::kDouble).cpu().clone());
    m.push_back(at::zeros_like(th.back()));
    v.push_back(at::zeros_like(th.back()));
  }
  for (int t = 1; t <= steps; ++t) {
    for (size_t i = 0; i < th.size(); ++i) {
      const at::Tensor g = grad_for(t, i, th[i]);
      th[i] = th[i] * (1 - o.lr * o.weight_decay);
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const at::Tensor m_hat = m[i] / (1 - std::pow(o.beta1, t)), v_hat = v[i] / (1 - std::pow(o.beta2, t));
      th[i] = th[i] - o.lr * m_hat / (v_hat.sqrt() + o.eps);
    }
  }
  return th;
}

void run_steps(FusedAdamW& opt, TensorDict& params, int from, int to) {
  for (int t = from; t <= to; ++t) {
    opt.zero_grad();
    for (size_t i = 0; i < params.size(); ++i)
      params[i].second.mutable_grad() = grad_for(t, i, params[i].second).to(params[i].second.options());
    opt.step();
  }
}

void check_against_equations(at::ScalarType dtype, const at::Device& device, double rtol, double atol) {
  TensorDict params = make_params(dtype, device);
  const TensorDict init = [&] {
    TensorDict c;
    for (const auto& [n, p] : params) c.emplace_back(n, p.clone());
    return c;
  }();
  FusedAdamW opt(params, options());
  run_steps(opt, params, 1, 12);
  const auto expected = reference(init, 12, options());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(ddpm::testing::tensors_near(params[i].second.cpu().to(at::kDouble), expected[i], rtol, atol,
                                            params[i].first + " on " + device.str()));
  }
  EXPECT_EQ(opt.steps(), 12);
}

TEST(FusedAdamW, Float64MatchesTheEquationsOnCpu) { check_against_equations(at::kDouble, at::kCPU, 1e-12, 1e-14); }
TEST(FusedAdamW, Float32MatchesTheEquationsOnCpu) { check_against_equations(at::kFloat, at::kCPU, 2e-5, 1e-6); }
TEST(FusedAdamW, Float32MatchesTheEquationsOnCuda) {
  DDPM_REQUIRE_CUDA();
  check_against_equations(at::kFloat, at::Device(at::kCUDA, 0), 2e-5, 1e-6);
}

// The same trajectory as torch::optim::AdamW with the same options.
TEST(FusedAdamW, MatchesTorchOptimAdamW) {
  TensorDict ours = make_params(at::kFloat, at::kCPU);
  std::vector<at::Tensor> theirs;
  for (const auto& [n, p] : ours) theirs.push_back(p.clone());
  const AdamWOptions o = options();
  torch::optim::AdamW torch_opt(theirs, torch::optim::AdamWOptions(o.lr)
                                            .betas({o.beta1, o.beta2})
                                            .eps(o.eps)
                                            .weight_decay(o.weight_decay));
  FusedAdamW opt(ours, o);
  for (int t = 1; t <= 10; ++t) {
    torch_opt.zero_grad();
    for (size_t i = 0; i < theirs.size(); ++i) theirs[i].mutable_grad() = grad_for(t, i, theirs[i]).to(at::kFloat);
    torch_opt.step();
  }
  run_steps(opt, ours, 1, 10);
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_TRUE(ddpm::testing::tensors_near(ours[i].second, theirs[i], 1e-5, 1e-6, "vs torch::optim " + ours[i].first));
}

// 5 steps, save, restore into a fresh optimizer over fresh copies, 5 more: equals 10 straight.
TEST(FusedAdamW, RestoredStateContinuesTheSameTrajectory) {
  TensorDict straight = make_params(at::kFloat, at::kCPU);
  FusedAdamW a(straight, options());
  run_steps(a, straight, 1, 10);

  TensorDict first = make_params(at::kFloat, at::kCPU);
  FusedAdamW b(first, options());
  EXPECT_TRUE(b.state().empty());
  run_steps(b, first, 1, 5);
  TensorDict saved;
  for (const auto& [n, t] : b.state()) saved.emplace_back(n, t.clone());
  ASSERT_EQ(saved.size(), 9u);
  EXPECT_EQ(saved[2].first, "w/step");
  EXPECT_EQ(saved[2].second.item<int64_t>(), 5);

  TensorDict resumed;
  for (const auto& [n, p] : first) resumed.emplace_back(n, p.detach().clone());
  FusedAdamW c(resumed, options());
  c.load_state(saved, "test state");
  EXPECT_EQ(c.steps(), 5);
  run_steps(c, resumed, 6, 10);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_TRUE(ddpm::testing::tensors_near(resumed[i].second, straight[i].second, 0, 0, "resumed " + straight[i].first));
}

TEST(FusedAdamW, DamagedStateIsRefusedWithTheParameterName) {
  TensorDict params = make_params(at::kFloat, at::kCPU);
  FusedAdamW opt(params, options());
  run_steps(opt, params, 1, 1);
  TensorDict partial = opt.state();
  partial.erase(partial.begin() + 1);  // w/exp_avg_sq
  FusedAdamW fresh(make_params(at::kFloat, at::kCPU), options());
  try {
    fresh.load_state(partial, "ckpt/optimizer.pt");
    FAIL() << "no error";
  } catch (const ddpm::trainer::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt/optimizer.pt: incomplete AdamW state for parameter 'w'"),
              std::string::npos)
        << e.what();
  }
  TensorDict wrong = opt.state();
  wrong[0].second = at::zeros({2, 2});
  EXPECT_THROW(fresh.load_state(wrong, "x"), ddpm::trainer::CheckpointError);
}
}  // namespace
