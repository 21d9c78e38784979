// The domain feature network: file round trip and errors (no data needed), then the network
// ddpm_fid_net trained on the real Fashion-MNIST (CTest fixture fmnist_fid_net): its accuracy on
// the full 10k test set, its features, and FID sanity between halves vs a noised test set.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdio>
#include <filesystem>

#include "ddpm/data/dataset.h"
#include "ddpm/evaluation/domain_net.h"
#include "ddpm/ops/tensor_dict.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::evaluation;

std::string fixture(const std::string& name) { return ddpm::testing::binary_dir() + "/tmp/fid_net/" + name; }

at::Tensor test_images() {  // (10000, 1, 28, 28) in [0, 1]
  return ddpm::data::ImageDataset::open(fixture("t10k.h5")).read_all_images().permute({0, 3, 1, 2}).to(at::kFloat) / 255;
}

GaussianStats stats_of(FeatureExtractor& ex, const at::Tensor& images, const std::string& name) {
  FeatureStats s;
  for (int64_t i = 0; i < images.size(0); i += 1000) s.add(ex.features(images.slice(0, i, i + 1000)));
  return GaussianStats{s.mean(), s.covariance(), s.count(), ex.name(), name};
}

double fid(std::shared_ptr<FeatureExtractor> ex, const GaussianStats& ref, const at::Tensor& images) {
  FidEvaluator ev(ex, ref);
  for (int64_t i = 0; i < images.size(0); i += 1000) ev.add_images(images.slice(0, i, i + 1000));
  return ev.compute().fid;
}

TEST(DomainNet, SaveLoadRoundTripAndErrors) {
  at::manual_seed(3);
  DomainNet net(DomainNetOptions{3, 7, 4, 32});
  net->eval();
  const std::string dir = ddpm::testing::temp_dir("domain_net_roundtrip");
  save_domain_net(dir + "/net.pt", *net, 0.5);
  double acc = 0;
  DomainNet back = load_domain_net(dir + "/net.pt", &acc);
  EXPECT_EQ(acc, 0.5);
  EXPECT_EQ(back->options().width, 4);
  EXPECT_EQ(back->options().num_classes, 7);
  const at::Tensor x = at::rand({2, 3, 20, 24});  // any H, W >= 16
  at::NoGradGuard no_grad;
  EXPECT_TRUE(ddpm::testing::tensors_near(back->forward(x), net->forward(x), 0, 0, "reloaded logits"));
  auto ex = make_domain_extractor(dir + "/net.pt");
  EXPECT_EQ(ex->name(), "domain:net.pt");
  EXPECT_EQ(ex->features(x).sizes(), (c10::IntArrayRef{2, 32}));
  EXPECT_THROW(ex->features(at::rand({2, 1, 20, 20})), c10::Error);  // wrong channels
  ddpm::ops::save_tensor_dict(dir + "/bad.pt", {{"conv1.weight", at::zeros({1})}});
  EXPECT_THROW(make_domain_extractor(dir + "/bad.pt"), std::runtime_error);
}

TEST(DomainNetFashionMnist, TestAccuracyAtLeast90Percent) {
  double stored = -1;
  DomainNet net = load_domain_net(fixture("fmnist_net.pt"), &stored);
  const at::Tensor x = test_images();
  const at::Tensor y = ddpm::data::ImageDataset::open(fixture("t10k.h5")).labels();  // (10000)
  at::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < x.size(0); i += 1000) {
    correct += (net->forward(x.slice(0, i, i + 1000)).argmax(1) == y.slice(0, i, i + 1000)).sum().item<int64_t>();
  }
  const double acc = correct / 10000.0;
  std::printf("[accuracy] Fashion-MNIST test set (10000 images): %.4f (ddpm_fid_net reported %.4f)\n", acc, stored);
  EXPECT_GE(acc, 0.90);
  EXPECT_NEAR(acc, stored, 1e-9);
}

TEST(DomainNetFashionMnist, FeaturesAndFidSanity) {
  std::shared_ptr<FeatureExtractor> ex = make_domain_extractor(fixture("fmnist_net.pt"));
  EXPECT_EQ(ex->name(), "domain:fmnist_net.pt");
  const at::Tensor x = test_images();
  const at::Tensor f = ex->features(x.slice(0, 0, 500));
  EXPECT_EQ(f.sizes(), (c10::IntArrayRef{500, 128}));
  EXPECT_TRUE(at::equal(f, ex->features(x.slice(0, 0, 500))));  // deterministic
  EXPECT_TRUE(f.isfinite().all().item<bool>());

  at::manual_seed(0);
  const at::Tensor a = x.slice(0, 0, 5000), b = x.slice(0, 5000, 10000);
  const at::Tensor noised = (x + 0.2 * at::randn_like(x)).clamp(0, 1);   // Gaussian noise, sigma 0.2
  const at::Tensor shifted = at::roll(x, {4}, {3});                       // 4 pixels to the right
  const GaussianStats ref_a = stats_of(*ex, a, "fmnist-t10k[:5000]");
  const GaussianStats ref_all = stats_of(*ex, x, "fmnist-t10k");
  const double halves = fid(ex, ref_a, b), noise = fid(ex, ref_all, noised), shift = fid(ex, ref_all, shifted);
  std::printf("[fid] %s: halves %.4f, noised (sigma 0.2) %.4f, shifted (4 px) %.4f\n", ex->name().c_str(), halves,
              noise, shift);
  EXPECT_GE(halves, 0.0);
  EXPECT_GT(noise, 10 * halves);
  EXPECT_GT(shift, 10 * halves);
}

}  // namespace
