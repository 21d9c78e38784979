// GradientReducer: a data-parallel step equals the single-process step (with and without
// microbatch accumulation under no_sync), buckets are launched during backward (overlap), a
// parameter without gradient is named in the error, and over a SingleProcessCommunicator the
// gradients are those of a plain backward.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ddpm/dist/check.h"
#include "ddpm/dist/gradient_reducer.h"
#include "dist/dist_test_env.h"
#include "dist/step_equality.h"

namespace {

using ddpm::dist::GradientReducer;
using ddpm::dist::ReducerEvent;
using ddpm::dist::testing::comm;

// conv -> conv (stride 2) -> group norm -> linear -> linear: 10 parameter tensors of mixed sizes.
struct TinyConvNetImpl : torch::nn::Module {
  TinyConvNetImpl(bool with_unused = false) {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3).padding(1)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 8, 3).stride(2).padding(1)));
    norm = register_module("norm", torch::nn::GroupNorm(2, 8));
    fc1 = register_module("fc1", torch::nn::Linear(8 * 4 * 4, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 5));
    if (with_unused) unused = register_module("unused", torch::nn::Linear(5, 5));
  }
  at::Tensor forward(const at::Tensor& x) {      // (N, 3, 8, 8)
    at::Tensor h = torch::silu(conv1->forward(x));  // (N, 6, 8, 8)
    h = torch::silu(norm->forward(conv2->forward(h)));  // (N, 8, 4, 4)
    h = torch::silu(fc1->forward(h.flatten(1)));  // (N, 32)
    return fc2->forward(h);                        // (N, 5)
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, unused{nullptr};
};

constexpr int64_t kMaxSamples = 64;

// A fixed global batch: x (64, 3, 8, 8), target (64, 5), the same on every rank.
struct Data {
  at::Tensor x, target;
  Data() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(4242);
    x = at::randn({kMaxSamples, 3, 8, 8}, gen, at::TensorOptions(at::kFloat));
    target = at::randn({kMaxSamples, 5}, gen, at::TensorOptions(at::kFloat));
  }
};

// Hand-written loss: mean over samples of sum_k (y - target)^2 + 0.1 log(1 + y^2).
at::Tensor tiny_loss(torch::nn::Module& m, const Data& d, int64_t begin, int64_t end) {
  auto& net = static_cast<TinyConvNetImpl&>(m);
  const at::Tensor y = net.forward(d.x.slice(0, begin, end));  // (n, 5)
  const at::Tensor per_sample = ((y - d.target.slice(0, begin, end)).pow(2) + 0.1 * torch::log1p(y * y)).sum(1);
  return per_sample.mean();
}

ddpm::dist::testing::StepCase tiny_case(int64_t batch, int microbatches) {
  auto data = std::make_shared<Data>();
  ddpm::dist::testing::StepCase c;
  c.make_model = [] {
    torch::manual_seed(7);
    return std::make_shared<TinyConvNetImpl>();
  };
  c.loss = [data](torch::nn::Module& m, int64_t b, int64_t e) { return tiny_loss(m, *data, b, e); };
  c.per_rank_batch = batch;
  c.microbatches = microbatches;
  c.reducer.first_bucket_cap_bytes = 1024;  // several small buckets
  c.reducer.bucket_cap_bytes = 4096;
  return c;
}

TEST(GradientReducer, StepEqualsSingleProcessStep) {
  const int64_t buckets = ddpm::dist::testing::expect_step_matches_single_process(comm(), tiny_case(4, 1), 1e-6, 1e-7);
  EXPECT_GE(buckets, 3);
}

TEST(GradientReducer, MicrobatchAccumulationUnderNoSyncEqualsSingleProcessStep) {
  ddpm::dist::testing::expect_step_matches_single_process(comm(), tiny_case(2, 3), 1e-6, 1e-7);
}

TEST(GradientReducer, BucketsFilledInReverseRegistrationOrderWithSmallFirstBucket) {
  torch::manual_seed(7);
  TinyConvNetImpl net;
  ddpm::dist::ReducerOptions o;
  o.first_bucket_cap_bytes = 1024;
  o.bucket_cap_bytes = 4096;
  GradientReducer r(comm(), net, o);
  const int64_t n = static_cast<int64_t>(net.parameters().size());
  EXPECT_EQ(r.bucket_parameters(0).front(), n - 1);  // fc2.bias first
  EXPECT_LE(r.bucket_bytes(0), 1024);
  int64_t expected = n - 1;
  for (int64_t b = 0; b < r.num_buckets(); ++b)
    for (int64_t i : r.bucket_parameters(b)) EXPECT_EQ(i, expected--);
  EXPECT_EQ(expected, -1);
}

// A deep MLP, one bucket per layer: the first bucket (last layer) must be launched while the
// gradients of earlier layers are still being computed.
TEST(GradientReducer, FirstBucketLaunchesBeforeBackwardEnds) {
  torch::manual_seed(3);
  torch::nn::Sequential mlp;
  for (int i = 0; i < 8; ++i) {
    mlp->push_back(torch::nn::Linear(128, 128));
    mlp->push_back(torch::nn::Tanh());
  }
  ddpm::dist::ReducerOptions o;
  o.first_bucket_cap_bytes = o.bucket_cap_bytes = 128 * 129 * 4;  // one layer per bucket
  o.record_trace = true;
  GradientReducer r(comm(), *mlp, o);
  EXPECT_EQ(r.num_buckets(), 8);
  const at::Tensor x = torch::randn({64, 128});
  mlp->forward(x).pow(2).mean().backward();
  const auto events = r.trace();  // copy: finish() appends
  r.finish();
  int64_t first_launch = -1, last_grad = -1;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].kind == ReducerEvent::Kind::kBucketLaunched && events[i].index == 0 && first_launch < 0)
      first_launch = static_cast<int64_t>(i);
    if (events[i].kind == ReducerEvent::Kind::kGradReady) last_grad = static_cast<int64_t>(i);
  }
  ASSERT_GE(first_launch, 0);
  ASSERT_GE(last_grad, 0);
  std::printf("[overlap] bucket 0 launched at %.6f s (event %lld), last gradient ready at %.6f s (event %lld) of %zu\n",
              events[first_launch].seconds, static_cast<long long>(first_launch), events[last_grad].seconds,
              static_cast<long long>(last_grad), events.size());
  EXPECT_LT(first_launch, last_grad);
  EXPECT_LT(events[first_launch].seconds, events[last_grad].seconds);
  int launched_before_end = 0;
  for (int64_t i = 0; i < last_grad; ++i)
    launched_before_end += events[i].kind == ReducerEvent::Kind::kBucketLaunched;
  EXPECT_EQ(launched_before_end, 7);  // all but the bucket holding the first layer
}

// One process: finish() leaves exactly the gradients of a plain backward (no bucket round trip),
// step after step, and still names a parameter without gradient.
TEST(GradientReducer, SingleProcessLeavesPlainGradients) {
  ddpm::dist::SingleProcessCommunicator single;
  torch::manual_seed(7);
  TinyConvNetImpl net, plain;
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < net.parameters().size(); ++i) plain.parameters()[i].copy_(net.parameters()[i]);
  }
  GradientReducer r(single, net, {});
  const Data data;
  for (int step = 0; step < 2; ++step) {
    for (auto* m : {&net, &plain}) {
      for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
      tiny_loss(*m, data, 8 * step, 8 * step + 8).backward();
    }
    r.finish();
    for (size_t i = 0; i < net.parameters().size(); ++i) {
      EXPECT_TRUE(net.parameters()[i].grad().equal(plain.parameters()[i].grad())) << "parameter " << i;
    }
  }
  torch::manual_seed(7);
  TinyConvNetImpl with_unused(/*with_unused=*/true);
  GradientReducer u(single, with_unused, {});
  with_unused.forward(torch::randn({2, 3, 8, 8})).sum().backward();
  EXPECT_THROW(u.finish(), ddpm::dist::DistError);
}

TEST(GradientReducer, UnusedParameterIsNamed) {
  torch::manual_seed(7);
  TinyConvNetImpl net(/*with_unused=*/true);
  GradientReducer r(comm(), net, {});
  net.forward(torch::randn({2, 3, 8, 8})).sum().backward();
  try {
    r.finish();
    FAIL() << "finish() must throw when a parameter got no gradient";
  } catch (const ddpm::dist::DistError& e) {
    const std::string what = e.what();
    std::printf("[unused] %s\n", what.c_str());
    EXPECT_NE(what.find("unused.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("unused.bias"), std::string::npos) << what;
    EXPECT_EQ(what.find("fc1.weight"), std::string::npos) << what;
  }
}

}  // namespace
