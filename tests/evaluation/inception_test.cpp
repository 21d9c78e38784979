// InceptionV3 FID features against pytorch-fid's own InceptionV3([3]) with the same random
// weights (tests/reference/inception_reference.py), and the TorchScript extractor.
#include <ATen/ATen.h>

#include <fstream>

#include "ddpm/evaluation/fid.h"
#include "ddpm/evaluation/inception.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::evaluation;
using ddpm::testing::tensors_near;

std::string golden_file(const std::string& suffix) { return ddpm::testing::binary_dir() + "/golden/inception" + suffix; }

TEST(InceptionV3, FeaturesMatchPytorchFid) {
  auto g = ddpm::testing::golden("inception");
  auto ex = make_inception_extractor(golden_file("_weights.pth"));
  EXPECT_EQ(ex->name(), "inception-v3");
  const at::Tensor images = g.read("images");  // (3, 3, 40, 52) in [0, 1]
  const at::Tensor f = ex->features(images);   // (3, 2048)
  ASSERT_EQ(f.sizes(), (at::IntArrayRef{3, 2048}));
  // Same float32 math, different conv algorithms/summation order: ~1e-6 of a feature of ~0.1.
  EXPECT_TRUE(tensors_near(f, g.read("features"), 1e-4, 2e-6, "inception pool3 vs pytorch-fid f32"));
  EXPECT_TRUE(tensors_near(f, g.read("features64"), 1e-4, 2e-6, "inception pool3 vs pytorch-fid f64"));
}

TEST(InceptionV3, GrayscaleIsRepeatedToRgb) {
  auto g = ddpm::testing::golden("inception");
  auto ex = make_inception_extractor(golden_file("_weights.pth"));
  const at::Tensor gray = g.read("images").slice(0, 0, 1).slice(1, 0, 1);  // (1, 1, 40, 52)
  EXPECT_TRUE(tensors_near(ex->features(gray), ex->features(gray.expand({-1, 3, -1, -1}).contiguous()), 0, 0, "gray -> rgb"));
}

TEST(InceptionV3, BadWeightsFileIsAClearError) {
  const std::string bad = ddpm::testing::temp_dir("inception_bad") + "/not_weights.pth";
  std::ofstream(bad) << "not a zip";
  try {
    make_inception_extractor(bad);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_inception_extractor(bad + ".missing"), std::runtime_error);
  // A torch.save'd dict that is not Inception (the TorchScript file is a zip, but wrong content).
  EXPECT_THROW(make_inception_extractor(golden_file("_extractor.pt")), std::runtime_error);
}

TEST(TorchScriptExtractor, CallsTheUserModule) {
  auto g = ddpm::testing::golden("inception");
  auto ex = make_torchscript_extractor(golden_file("_extractor.pt"));
  EXPECT_EQ(ex->name(), "torchscript:inception_extractor.pt");
  EXPECT_TRUE(tensors_near(ex->features(g.read("images")), g.read("tiny_features"), 1e-5, 1e-6, "torchscript"));
  EXPECT_EQ(make_torchscript_extractor(golden_file("_extractor.pt"), c10::kCPU, "fmnist-net")->name(), "fmnist-net");
  EXPECT_THROW(make_torchscript_extractor(golden_file("_weights.pth")), std::runtime_error);
}

}  // namespace
