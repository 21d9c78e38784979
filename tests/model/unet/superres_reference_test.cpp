// The super-resolution U-Net against tests/reference/unet_reference.py's SuperResModel (improved-
// diffusion's semantics; with ddpm's augmentation-level embedding as an option): the same weights
// file, the same inputs; state_dict keys and shapes (the UNet's of those options with 2C input
// channels, aug_embed last), forward outputs vs float64, the bilinear upsampling alone, and the
// properties the trainer relies on (a fresh aug_embed ignores the level, input checks).
#include <ATen/ATen.h>


#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/superres.h"
#include "testing/testing.h"

namespace {
using ddpm::model::SuperResUNet;
using ddpm::model::UNetOptions;
using ddpm::testing::tensors_near;

// unet_reference.py's SR_CONFIGS, written down again: (options, low-res size, aug embedding).
struct SrConfig {
  UNetOptions options;
  int64_t low_res;
  bool aug;
};
SrConfig config(const std::string& name) {
  UNetOptions o;
  o.model_channels = 32;
  o.channel_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attention_resolutions = {8};
  o.image_size = 16;
  if (name == "superres_mult2") {  // channel_mult[0] != 1
    o.in_channels = o.out_channels = 1;
    o.channel_mult = {2, 2};
    return {o, 8, false};
  }
  if (name == "superres") {
    o.in_channels = o.out_channels = 1;
    o.learn_sigma = true;
    return {o, 8, false};
  }
  o.in_channels = o.out_channels = 3;
  o.num_heads = 2;
  o.use_scale_shift_norm = true;
  return {o, 4, true};
}

class SuperResGolden : public ::testing::TestWithParam<std::string> {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("unet");
  at::Tensor r(const std::string& n) { return g.read(GetParam() + "/" + n); }
  at::Tensor aug() { return g.has(GetParam() + "/aug_level") ? r("aug_level") : at::Tensor(); }
  SuperResUNet make() {
    const SrConfig c = config(GetParam());
    return SuperResUNet(c.options, c.aug);
  }
};

TEST_P(SuperResGolden, StateDictKeysAndShapesMatchTheReference) {
  SuperResUNet net = make();
  const auto sd = ddpm::model::state_dict(*net);
  ASSERT_TRUE(ddpm::testing::state_dict_matches_golden(sd, r("keys"), r("shapes")));
  EXPECT_EQ(net->num_parameters(), r("num_params")[0].item<int64_t>());
  // The UNet of the same options with 2C input channels has the same keys, minus aug_embed.
  UNetOptions doubled = config(GetParam()).options;
  doubled.in_channels *= 2;
  const auto plain = ddpm::model::state_dict(*ddpm::model::UNet(doubled));
  ASSERT_EQ(plain.size() + (config(GetParam()).aug ? 4 : 0), sd.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_EQ(plain[i].first, sd[i].first);
}

TEST_P(SuperResGolden, ForwardMatchesTheReferenceFromTheSameWeightsFile) {
  SuperResUNet net = make();
  ddpm::model::load_state_dict(*net, ddpm::model::load_tensor_dict(
      ddpm::testing::binary_dir() + "/golden/unet_" + GetParam() + ".pt"), GetParam());
  net->eval();
  at::NoGradGuard no_grad;
  const at::Tensor out = net->forward(r("x"), r("t"), r("low_res"), aug());
  EXPECT_TRUE(tensors_near(out, r("out"), 1e-4, 1e-4, GetParam() + " forward f32 vs f64 reference"));
  net->to(at::kDouble);
  const at::Tensor out64 = net->forward(r("x").to(at::kDouble), r("t"), r("low_res").to(at::kDouble), aug());
  EXPECT_TRUE(tensors_near(out64, r("out"), 1e-9, 1e-10, GetParam() + " forward f64"));
}

TEST_P(SuperResGolden, UpsamplingIsBilinearWithoutAlignedCorners) {
  const int64_t size = config(GetParam()).options.image_size;
  const at::Tensor up = ddpm::model::upsample_bilinear(r("low_res").to(at::kDouble), size, size);
  EXPECT_TRUE(tensors_near(up, r("upsampled"), 1e-14, 1e-14, GetParam() + " F.interpolate(bilinear)"));
}

INSTANTIATE_TEST_SUITE_P(Configs, SuperResGolden, ::testing::Values("superres", "superres_aug", "superres_mult2"));

// A fresh network's aug_embed ends in a zero layer: the level has no effect until trained, and the
// output equals that of the network without aug_embed carrying the same other weights.
TEST(SuperResUNet, FreshAugmentationEmbeddingIgnoresTheLevel) {
  const SrConfig c = config("superres_aug");
  at::manual_seed(3);
  SuperResUNet with(c.options, true);
  SuperResUNet without(c.options, false);
  ddpm::model::TensorDict sd = ddpm::model::state_dict(*with);
  sd.resize(sd.size() - 4);  // drop aug_embed.*
  ddpm::model::load_state_dict(*without, sd);
  with->eval(), without->eval();
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({2, 3, 16, 16}), t = at::tensor({5, 700}), low = at::randn({2, 3, 4, 4});
  const at::Tensor a = with->forward(x, t, low, at::tensor({0, 0}));
  const at::Tensor b = with->forward(x, t, low, at::tensor({400, 999}));
  const at::Tensor ref = without->forward(x, t, low);
  EXPECT_TRUE(tensors_near(a, ref, 0, 0, "fresh aug_embed, level 0 vs no aug_embed"));
  EXPECT_TRUE(tensors_near(b, ref, 0, 0, "fresh aug_embed, levels 400, 999 vs no aug_embed"));
}

TEST(SuperResUNet, InputsAreChecked) {
  const SrConfig c = config("superres_aug");
  SuperResUNet net(c.options, true);
  const at::Tensor x = at::randn({2, 3, 16, 16}), t = at::tensor({5, 700}), s = at::tensor({0, 1});
  EXPECT_THROW(net->forward(x, t, at::randn({2, 1, 4, 4}), s), c10::Error);      // channels differ
  EXPECT_THROW(net->forward(x, t, at::randn({3, 3, 4, 4}), s), c10::Error);      // batch differs
  EXPECT_THROW(net->forward(x, t, at::randn({2, 3, 4, 4})), c10::Error);         // level missing
  SuperResUNet plain(c.options, false);
  EXPECT_THROW(plain->forward(x, t, at::randn({2, 3, 4, 4}), s), c10::Error);    // level not expected
  EXPECT_EQ(plain->forward(x, t, at::randn({2, 3, 8, 8})).sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
}

}  // namespace
