// The C++ U-Net against tests/reference/unet_reference.py: the same weights file (torch.save),
// the same inputs; forward outputs (vs float64), state_dict keys and shapes, parameter and FLOP
// counts, and the timestep embedding.
#include <ATen/ATen.h>
#include <torch/nn/module.h>


#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/unet.h"
#include "testing/testing.h"

namespace {
using ddpm::model::UNet;
using ddpm::model::UNetOptions;
using ddpm::testing::tensors_near;

// The configurations of unet_reference.py's CONFIGS, written down again.
UNetOptions config(const std::string& name) {
  UNetOptions o;
  o.model_channels = 32;
  o.image_size = 16;
  if (name == "tiny") {
    o = ddpm::model::unet_preset("tiny");
  } else if (name == "full") {
    o.channel_mult = {1, 2, 2};
    o.num_res_blocks = 2;
    o.attention_resolutions = {8, 4};
    o.num_head_channels = 16;
    o.use_scale_shift_norm = true;
    o.resblock_updown = true;
    o.learn_sigma = true;
    o.num_classes = 5;
    o.dropout = 0.1;
  } else if (name == "plain") {
    o.in_channels = o.out_channels = 1;
    o.channel_mult = {1, 2};
    o.num_res_blocks = 1;
    o.attention_resolutions = {8};
    o.conv_resample = false;
    o.image_size = 8;
  }
  return o;
}

class UNetGolden : public ::testing::TestWithParam<std::string> {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("unet");
  at::Tensor r(const std::string& n) { return g.read(GetParam() + "/" + n); }
  std::string weights() { return ddpm::testing::binary_dir() + "/golden/unet_" + GetParam() + ".pt"; }
};

TEST_P(UNetGolden, StateDictKeysAndShapesMatchTheReference) {
  UNet net(config(GetParam()));
  const auto sd = ddpm::model::state_dict(*net);
  ASSERT_TRUE(ddpm::testing::state_dict_matches_golden(sd, r("keys"), r("shapes")));
  EXPECT_EQ(net->num_parameters(), r("num_params")[0].item<int64_t>());
}

TEST_P(UNetGolden, ForwardMatchesTheReferenceFromTheSameWeightsFile) {
  UNet net(config(GetParam()));
  ddpm::model::load_unet_weights(net, weights());
  net->eval();
  at::NoGradGuard no_grad;
  const at::Tensor y = g.has(GetParam() + "/y") ? r("y") : at::Tensor();
  const at::Tensor out = net->forward(r("x"), r("t"), y);
  EXPECT_TRUE(tensors_near(out, r("out"), 1e-4, 1e-4, GetParam() + " forward f32 vs f64 reference"));
  // The same in float64 (model and input converted) agrees to ~1e-12.
  net->to(at::kDouble);
  const at::Tensor out64 = net->forward(r("x").to(at::kDouble), r("t"), y);
  EXPECT_TRUE(tensors_near(out64, r("out"), 1e-9, 1e-10, GetParam() + " forward f64"));
}

TEST_P(UNetGolden, ForwardFlopsEqualTorchFlopCounter) {
  UNet net(config(GetParam()));
  const int64_t s = net->options().image_size;
  const double ref = r("flops")[0].item<double>();
  EXPECT_NEAR(net->forward_flops(s, s), ref, 1e-9 * ref);
}

INSTANTIATE_TEST_SUITE_P(Configs, UNetGolden, ::testing::Values("tiny", "full", "plain"));

TEST(UNetGoldenEmbedding, TimestepEmbeddingMatchesFloat64Reference) {
  auto g = ddpm::testing::golden("unet");
  const at::Tensor emb = ddpm::model::timestep_embedding(g.read("timestep_embedding/t"), 33);
  EXPECT_EQ(emb.scalar_type(), at::kFloat);
  EXPECT_TRUE(tensors_near(emb, g.read("timestep_embedding/emb"), 1e-5, 2e-4, "timestep_embedding dim 33"));
  const at::Tensor emb64 = ddpm::model::timestep_embedding(g.read("timestep_embedding/t"), 33, 10000.0, at::kDouble);
  EXPECT_TRUE(tensors_near(emb64, g.read("timestep_embedding/emb"), 1e-12, 1e-12, "timestep_embedding f64"));
}

}  // namespace
