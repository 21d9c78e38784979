// The C++ U-Net against tests/reference/unet_reference.py: the same weights file (torch.save),
// the same inputs; forward outputs (vs float64), state_dict keys and shapes, parameter and FLOP
// counts, and the timestep embedding; for the channel_mult[0] != 1 configurations also every
// gradient of forward + backward.
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
  } else if (name == "mult2") {  // channel_mult[0] != 1: input and output convs of 64 channels
    o.channel_mult = {2, 2};
    o.num_res_blocks = 1;
    o.attention_resolutions = {8};
    o.num_heads = 2;
  } else if (name == "mult24") {
    o.in_channels = o.out_channels = 1;
    o.channel_mult = {2, 4};
    o.num_res_blocks = 1;
    o.attention_resolutions = {8, 4};
    o.num_head_channels = 32;
    o.use_scale_shift_norm = true;
    o.resblock_updown = true;
    o.learn_sigma = true;
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

INSTANTIATE_TEST_SUITE_P(Configs, UNetGolden, ::testing::Values("tiny", "full", "plain", "mult2", "mult24"));

// Forward + backward of the channel_mult[0] != 1 configurations: the gradients of
// sum(out * cotangent) with respect to x and to every parameter against the float64 reference.
class UNetGoldenGradients : public UNetGolden {
 protected:
  // Runs forward + backward in `dtype`; returns (grad_x, all parameter gradients flattened in
  // named_parameters order) and the reference's in the same order.
  std::pair<at::Tensor, at::Tensor> gradients(UNet& net, at::ScalarType dtype, at::Tensor* ref_params) {
    net->to(dtype);
    net->zero_grad();
    const at::Tensor x = r("x").to(dtype).requires_grad_(true);  // (N, C, H, W)
    const at::Tensor out = net->forward(x, r("t"));               // (N, output_channels, H, W)
    (out * r("cotangent").to(dtype)).sum().backward();
    std::vector<at::Tensor> got, ref;
    for (const auto& p : net->named_parameters()) {
      EXPECT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
      got.push_back(p.value().grad().flatten());
      ref.push_back(r("grad/" + p.key()).flatten());
    }
    *ref_params = at::cat(ref);
    return {x.grad(), at::cat(got)};
  }
};

TEST_P(UNetGoldenGradients, BackwardMatchesTheReference) {
  UNet net(config(GetParam()));
  ddpm::model::load_unet_weights(net, weights());
  net->eval();
  at::Tensor ref_params;
  // float64: the same algebra, agrees to rounding.
  auto [gx64, gp64] = gradients(net, at::kDouble, &ref_params);
  EXPECT_TRUE(tensors_near(gx64, r("grad_x"), 1e-8, 1e-10, GetParam() + " grad x f64"));
  EXPECT_TRUE(tensors_near(gp64, ref_params, 1e-8, 1e-10, GetParam() + " grad parameters f64"));
  // float32 against the float64 reference: absolute tolerance relative to the largest gradient
  // (2e-5 for x, 1e-5 for the parameters; seen about 10x below).
  auto [gx32, gp32] = gradients(net, at::kFloat, &ref_params);
  const double sx = r("grad_x").abs().max().item<double>(), sp = ref_params.abs().max().item<double>();
  EXPECT_TRUE(tensors_near(gx32, r("grad_x"), 0.0, 2e-5 * sx, GetParam() + " grad x f32 vs f64"));
  EXPECT_TRUE(tensors_near(gp32, ref_params, 0.0, 1e-5 * sp, GetParam() + " grad parameters f32 vs f64"));
}

INSTANTIATE_TEST_SUITE_P(ChannelMult, UNetGoldenGradients, ::testing::Values("mult2", "mult24"));

TEST(UNetGoldenEmbedding, TimestepEmbeddingMatchesFloat64Reference) {
  auto g = ddpm::testing::golden("unet");
  const at::Tensor emb = ddpm::model::timestep_embedding(g.read("timestep_embedding/t"), 33);
  EXPECT_EQ(emb.scalar_type(), at::kFloat);
  EXPECT_TRUE(tensors_near(emb, g.read("timestep_embedding/emb"), 1e-5, 2e-4, "timestep_embedding dim 33"));
  const at::Tensor emb64 = ddpm::model::timestep_embedding(g.read("timestep_embedding/t"), 33, 10000.0, at::kDouble);
  EXPECT_TRUE(tensors_near(emb64, g.read("timestep_embedding/emb"), 1e-12, 1e-12, "timestep_embedding f64"));
}

}  // namespace
