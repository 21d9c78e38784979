// End-to-end data parallelism: one SGD step of the `tiny` U-Net (learn_sigma) with the hybrid loss
// (L_simple + rescaled L_vlb, cosine schedule) on W ranks with batch B each equals one step on one
// process with batch W*B, with and without microbatch accumulation under no_sync.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/unet/unet.h"
#include "dist/dist_test_env.h"
#include "dist/step_equality.h"

namespace {

using ddpm::diffusion::GaussianDiffusion;
using ddpm::dist::testing::comm;
using ddpm::dist::testing::expect_step_matches_single_process;

constexpr int64_t kT = 50;          // diffusion steps (small T keeps the vb term well scaled)
constexpr int64_t kImage = 16;      // the tiny preset's image size
constexpr uint64_t kDataSeed = 20261122;

ddpm::model::UNetOptions tiny_options() {
  ddpm::model::UNetOptions o = ddpm::model::unet_preset("tiny");
  o.learn_sigma = true;  // 2C outputs: eps and the variance interpolation v (hybrid loss)
  o.dropout = 0.0;       // no randomness in the forward pass: replicas must compute the same thing
  o.image_size = kImage;
  return o;
}

// The tiny U-Net, identical on every call and rank. The ADM zero-initialises its output
// convolutions (out, each ResBlock's last conv, attention proj_out); at that point the first
// step's gradient of every earlier layer is exactly 0 and the comparison would be vacuous, so
// those tensors get small seeded values instead.
std::shared_ptr<torch::nn::Module> make_tiny_unet() {
  torch::manual_seed(11);
  ddpm::model::UNet net(tiny_options());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) {
    if (p.abs().max().item<double>() == 0.0) p.copy_(0.05 * at::randn(p.sizes(), gen, p.options()));
  }
  return net.ptr();
}

GaussianDiffusion hybrid_diffusion() {
  ddpm::diffusion::DiffusionConfig c;
  c.schedule = "cosine";
  c.steps = kT;
  c.mean_type = ddpm::diffusion::ModelMeanType::kEpsilon;
  c.var_type = ddpm::diffusion::ModelVarType::kLearnedRange;
  c.loss_type = ddpm::diffusion::LossType::kRescaledMse;
  return ddpm::diffusion::create_gaussian_diffusion(c);
}

// Sample i of the global batch, a function of i alone: x_0 ~ U[-1, 1], t ~ U{0..T-1}, eps ~ N(0, I).
struct Sample {
  at::Tensor x_start, t, noise;  // (1, 3, H, W), (1) int64, (1, 3, H, W)
};
Sample global_sample(int64_t i) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(kDataSeed + static_cast<uint64_t>(i));
  const auto f32 = at::TensorOptions(at::kFloat);
  Sample s;
  s.x_start = at::rand({1, 3, kImage, kImage}, gen, f32) * 2 - 1;
  s.t = at::randint(0, kT, {1}, gen, at::TensorOptions(at::kLong));
  s.noise = at::randn({1, 3, kImage, kImage}, gen, f32);
  return s;
}

// Mean hybrid loss over global samples [begin, end).
at::Tensor hybrid_loss(const GaussianDiffusion& diffusion, torch::nn::Module& m, int64_t begin, int64_t end) {
  auto& net = static_cast<ddpm::model::UNetImpl&>(m);
  std::vector<at::Tensor> x, t, noise;
  for (int64_t i = begin; i < end; ++i) {
    Sample s = global_sample(i);
    x.push_back(s.x_start);
    t.push_back(s.t);
    noise.push_back(s.noise);
  }
  const auto model = [&net](const at::Tensor& x_t, const at::Tensor& ts) { return net.forward(x_t, ts); };
  const auto terms = diffusion.training_losses(model, at::cat(x), at::cat(t), at::cat(noise));  // (n)
  EXPECT_TRUE(terms.vb.defined()) << "the hybrid loss must have a vb term";
  return terms.loss.mean();
}

ddpm::dist::testing::StepCase unet_case(int64_t batch, int microbatches) {
  auto diffusion = std::make_shared<GaussianDiffusion>(hybrid_diffusion());
  ddpm::dist::testing::StepCase c;
  c.make_model = make_tiny_unet;
  c.loss = [diffusion](torch::nn::Module& m, int64_t b, int64_t e) { return hybrid_loss(*diffusion, m, b, e); };
  c.per_rank_batch = batch;
  c.microbatches = microbatches;
  c.lr = 0.1;
  c.reducer.first_bucket_cap_bytes = 64 << 10;  // several buckets over the ~0.9 MB of gradients
  c.reducer.bucket_cap_bytes = 256 << 10;
  return c;
}

// Parameters: |d - s| <= 1e-6 |s| + 1e-7 (the absolute floor of the reducer's own step tests,
// for entries near 0); gradients within 1e-4 relative + 1e-6 (inside the helper).
constexpr double kRtol = 1e-6, kAtol = 1e-7;

TEST(UNetHybridStep, TwoRanksBatchBEqualsOneProcessBatchWB) {
  const int64_t buckets = expect_step_matches_single_process(comm(), unet_case(2, 1), kRtol, kAtol);
  std::printf("[unet step] %d ranks x batch 2, %lld buckets\n", comm().world_size(), static_cast<long long>(buckets));
  EXPECT_GE(buckets, 3);
}

TEST(UNetHybridStep, MicrobatchAccumulationUnderNoSyncEqualsOneProcessStep) {
  expect_step_matches_single_process(comm(), unet_case(2, 2), kRtol, kAtol);
}

}  // namespace
