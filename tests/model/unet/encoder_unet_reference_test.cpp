// The C++ EncoderUNet (classifier of classifier guidance) against
// tests/reference/encoder_unet_reference.py: the same weights file (torch.save), the same inputs;
// logits (float32 and float64 vs the float64 reference), state_dict keys and shapes, parameter
// counts; and the gradient of log p(y | x_t) that guidance uses, against finite differences.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/nn/module.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>


#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/model/unet/state_dict.h"
#include "testing/testing.h"

namespace {
using ddpm::model::EncoderUNet;
using ddpm::model::EncoderUNetOptions;
using ddpm::testing::tensors_near;

// The configurations of encoder_unet_reference.py's CONFIGS, written down again.
EncoderUNetOptions config(const std::string& name) {
  EncoderUNetOptions o;
  auto& u = o.unet;
  u.model_channels = 32;
  if (name == "attention") {
    u.in_channels = 3;
    o.out_channels = 5;
    u.channel_mult = {1, 2, 2};
    u.num_res_blocks = 2;
    u.attention_resolutions = {8, 4};
    u.num_head_channels = 16;
    u.use_scale_shift_norm = true;
    u.resblock_updown = true;
    u.dropout = 0.1;
    u.image_size = 16;
    o.pool = "attention";
  } else if (name == "heads") {
    u.in_channels = 1;
    o.out_channels = 4;
    u.channel_mult = {1, 2};
    u.num_res_blocks = 1;
    u.attention_resolutions = {4};
    u.num_heads = 2;
    u.image_size = 8;
    o.pool = "attention";
  } else if (name == "adaptive") {
    u.in_channels = 1;
    o.out_channels = 3;
    u.channel_mult = {1, 2};
    u.num_res_blocks = 1;
    u.attention_resolutions = {8};
    u.conv_resample = false;
    u.image_size = 8;
    o.pool = "adaptive";
  }
  return o;
}

class EncoderUNetGolden : public ::testing::TestWithParam<std::string> {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("encoder_unet");
  at::Tensor r(const std::string& n) { return g.read(GetParam() + "/" + n); }
  EncoderUNet loaded(bool channels_last = false) {
    EncoderUNetOptions o = config(GetParam());
    o.unet.channels_last = channels_last;
    EncoderUNet net(o);
    const std::string path = ddpm::testing::binary_dir() + "/golden/encoder_unet_" + GetParam() + ".pt";
    ddpm::model::load_state_dict(*net, ddpm::model::load_tensor_dict(path), path);
    net->eval();
    return net;
  }
};

TEST_P(EncoderUNetGolden, StateDictKeysAndShapesMatchTheReference) {
  EncoderUNet net(config(GetParam()));
  const auto sd = ddpm::model::state_dict(*net);
  ASSERT_TRUE(ddpm::testing::state_dict_matches_golden(sd, r("keys"), r("shapes")));
  EXPECT_EQ(net->num_parameters(), r("num_params")[0].item<int64_t>());
}

TEST_P(EncoderUNetGolden, LogitsMatchTheReferenceFromTheSameWeightsFile) {
  EncoderUNet net = loaded();
  at::NoGradGuard no_grad;
  const at::Tensor logits = net->forward(r("x"), r("t"));  // (3, K)
  EXPECT_EQ(logits.sizes(), r("logits").sizes());
  EXPECT_TRUE(tensors_near(logits, r("logits"), 1e-4, 1e-4, GetParam() + " logits f32 vs f64 reference"));
  net->to(at::kDouble);
  const at::Tensor logits64 = net->forward(r("x").to(at::kDouble), r("t"));
  EXPECT_TRUE(tensors_near(logits64, r("logits"), 1e-10, 1e-10, GetParam() + " logits f64"));
}

// Nodes of the autograd graph behind `t` whose name is `name` (e.g. the layout copies).
int count_nodes(const at::Tensor& t, const std::string& name) {
  std::vector<torch::autograd::Node*> todo{t.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  int n = 0;
  while (!todo.empty()) {
    torch::autograd::Node* node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node).second) continue;
    n += node->name() == name;
    for (const auto& e : node->next_edges()) todo.push_back(e.function.get());
  }
  return n;
}

// The U-Net option channels_last (NHWC activations): the same logits as the reference, and the
// activations really NHWC (layout copies in the graph: the input's, and the attention's reshapes
// of NHWC maps, none of which the default layout makes).
TEST_P(EncoderUNetGolden, ChannelsLastGivesTheSameLogits) {
  EncoderUNet cl = loaded(true), plain = loaded();
  const at::Tensor x = r("x").requires_grad_(true);
  const at::Tensor logits = cl->forward(x, r("t")), ref = plain->forward(x, r("t"));
  EXPECT_TRUE(tensors_near(logits.detach(), r("logits"), 1e-4, 1e-4, GetParam() + " channels_last logits f32"));
  const int copies = count_nodes(logits, "CloneBackward0"), plain_copies = count_nodes(ref, "CloneBackward0");
  std::printf("[graph] %s: %d layout copies with channels_last, %d without\n", GetParam().c_str(), copies, plain_copies);
  EXPECT_GT(copies, plain_copies);
}

// What classifier guidance differentiates: d/dx log_softmax(logits)[y], in float64, against
// central differences along a random direction.
TEST_P(EncoderUNetGolden, GradientOfLogProbabilityMatchesFiniteDifferences) {
  EncoderUNet net = loaded();
  net->to(at::kDouble);
  const at::Tensor x = r("x").to(at::kDouble), t = r("t");
  const at::Tensor y = at::arange(x.size(0), at::kLong) % net->options().out_channels;
  const auto log_p = [&](const at::Tensor& xi) {  // (N) log p(y | x)
    return at::log_softmax(net->forward(xi, t), 1).gather(1, y.unsqueeze(1)).squeeze(1);
  };
  const at::Tensor xg = x.detach().requires_grad_(true);
  const at::Tensor grad = torch::autograd::grad({log_p(xg).sum()}, {xg})[0];  // (N, C, H, W)
  at::manual_seed(3);
  const at::Tensor dir = at::randn_like(x);
  const double h = 1e-5;
  at::NoGradGuard no_grad;
  const at::Tensor fd = (log_p(x + h * dir) - log_p(x - h * dir)) / (2 * h);  // (N)
  const at::Tensor analytic = (grad * dir).sum({1, 2, 3});
  EXPECT_TRUE(tensors_near(analytic, fd, 1e-6, 1e-6, GetParam() + " d log p(y|x) / dx . v vs finite differences"));
}

INSTANTIATE_TEST_SUITE_P(Configs, EncoderUNetGolden, ::testing::Values("attention", "heads", "adaptive"));

TEST(EncoderUNet, OptionErrorsNameTheField) {
  EncoderUNetOptions o = config("heads");
  o.pool = "spatial";
  EXPECT_THROW(EncoderUNet{o}, std::invalid_argument);
  o = config("attention");
  o.unet.num_head_channels = 24;  // 64 channels do not split into heads of 24
  try {
    EncoderUNet net(o);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("UNetOptions.num_head_channels = 24: expected a divisor of 64"),
              std::string::npos) << e.what();
  }
  o = config("attention");
  EncoderUNet net(o);
  EXPECT_THROW(net->forward(at::zeros({1, 3, 8, 8}), at::zeros({1}, at::kLong)), c10::Error);  // not 16x16
}

}  // namespace
