// The C++ KL autoencoder against tests/reference/autoencoder_reference.py: the same weights file
// (torch.save), the same inputs and posterior noise; state_dict keys and shapes, parameter count,
// posterior mean / log-variance, decoder output and the loss terms (float32 and float64 vs the
// float64 reference). Also the shapes for f = 2 and 4 and the options' errors.
#include <ATen/ATen.h>


#include "ddpm/model/autoencoder/autoencoder.h"
#include "ddpm/model/unet/state_dict.h"
#include "testing/testing.h"

namespace {
using ddpm::model::AutoencoderKL;
using ddpm::model::AutoencoderOptions;
using ddpm::testing::tensors_near;

// autoencoder_reference.py's CONFIGS, written down again.
AutoencoderOptions config(const std::string& name) {
  AutoencoderOptions o;
  if (name == "f2") {
    o.in_channels = 1, o.channels = 32, o.channel_mult = {1, 2}, o.num_res_blocks = 1, o.z_channels = 4;
    o.norm_groups = 32;
  } else {
    o.in_channels = 3, o.channels = 16, o.channel_mult = {1, 2, 2}, o.num_res_blocks = 2, o.z_channels = 3;
    o.norm_groups = 8;
  }
  return o;
}

class AutoencoderGolden : public ::testing::TestWithParam<std::string> {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("autoencoder");
  at::Tensor r(const std::string& n) { return g.read(GetParam() + "/" + n); }
  AutoencoderKL loaded() {
    AutoencoderKL ae(config(GetParam()));
    const std::string path = ddpm::testing::binary_dir() + "/golden/autoencoder_" + GetParam() + ".pt";
    ddpm::model::load_state_dict(*ae, ddpm::model::load_tensor_dict(path), path);
    ae->eval();
    return ae;
  }
};

TEST_P(AutoencoderGolden, StateDictKeysAndShapesMatchTheReference) {
  AutoencoderKL ae(config(GetParam()));
  const auto sd = ddpm::model::state_dict(*ae);
  ASSERT_TRUE(ddpm::testing::state_dict_matches_golden(sd, r("keys"), r("shapes")));
  EXPECT_EQ(ae->num_parameters(), r("num_params")[0].item<int64_t>());
}

TEST_P(AutoencoderGolden, EncodeDecodeMatchTheReferenceFromTheSameWeightsFile) {
  AutoencoderKL ae = loaded();
  at::NoGradGuard no_grad;
  const std::string p = GetParam();
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    ae->to(dtype);
    const double rtol = dtype == at::kFloat ? 1e-4 : 1e-10, atol = dtype == at::kFloat ? 1e-4 : 1e-10;
    const std::string tag = p + (dtype == at::kFloat ? " f32" : " f64");
    const auto q = ae->encode(r("x").to(dtype));
    EXPECT_TRUE(tensors_near(q.mean, r("mean"), rtol, atol, tag + " posterior mean"));
    EXPECT_TRUE(tensors_near(q.logvar, r("logvar"), rtol, atol, tag + " posterior logvar"));
    EXPECT_TRUE(tensors_near(q.kl(), r("kl"), rtol, atol, tag + " KL"));
    EXPECT_TRUE(tensors_near(ae->decode(r("mean").to(dtype)), r("decoded_mean"), rtol, atol, tag + " decode(mean)"));
  }
}

TEST_P(AutoencoderGolden, LossTermsMatchTheReference) {
  AutoencoderKL ae = loaded();
  ae->to(at::kDouble);
  at::NoGradGuard no_grad;
  const double kl_weight = g.read("kl_weight")[0].item<double>();
  for (const std::string type : {"l1", "l2"}) {
    const auto t = ddpm::model::autoencoder_loss(ae, r("x").to(at::kDouble), r("noise").to(at::kDouble), type, kl_weight);
    const std::string tag = GetParam() + " " + type;
    EXPECT_TRUE(tensors_near(t.rec, r(type + "/rec"), 1e-10, 1e-12, tag + " rec"));
    EXPECT_TRUE(tensors_near(t.kl, r(type + "/kl"), 1e-10, 1e-12, tag + " kl"));
    EXPECT_TRUE(tensors_near(t.loss, r(type + "/loss"), 1e-10, 1e-12, tag + " loss"));
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, AutoencoderGolden, ::testing::Values("f2", "f4"));

TEST(Autoencoder, LatentShapeFollowsTheFactor) {
  for (int64_t f : {1, 2, 4, 8}) {
    AutoencoderOptions o;
    o.channel_mult = ddpm::model::autoencoder_channel_mult(f);
    o.z_channels = 3;
    EXPECT_EQ(o.factor(), f);
    AutoencoderKL ae(o);
    at::NoGradGuard no_grad;
    const auto q = ae->encode(at::zeros({2, 1, 16, 16}));
    EXPECT_EQ(q.mean.sizes().vec(), (std::vector<int64_t>{2, 3, 16 / f, 16 / f})) << "f " << f;
    EXPECT_EQ(ae->decode(q.mean).sizes().vec(), (std::vector<int64_t>{2, 1, 16, 16})) << "f " << f;
  }
}

TEST(Autoencoder, BadOptionsAndInputsAreClearErrors) {
  EXPECT_THROW(ddpm::model::autoencoder_channel_mult(3), std::invalid_argument);
  AutoencoderOptions o;
  o.channels = 24;  // not a multiple of 32 groups
  EXPECT_THROW(o.validate(), std::invalid_argument);
  AutoencoderKL ae(AutoencoderOptions{});
  at::NoGradGuard no_grad;
  EXPECT_THROW(ae->encode(at::zeros({1, 1, 10, 10})), c10::Error);  // 10 is not a multiple of f = 4
  EXPECT_THROW(ae->decode(at::zeros({1, 3, 2, 2})), c10::Error);    // 3 latent channels, not 4
}

}  // namespace
