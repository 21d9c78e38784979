// Properties of the U-Net: option errors, output shapes per preset and option, published parameter counts,
// state_dict names, weights round trip and load errors, gradient checkpointing, class
// conditioning with the null label, determinism, bf16 autocast and channels_last on CPU.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>

#include <functional>
#include <map>

#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/unet.h"
#include "testing/testing.h"

namespace {
using ddpm::model::UNet;
using ddpm::model::UNetOptions;
using ddpm::model::unet_preset;
using ddpm::testing::tensors_near;

UNetOptions tiny() { return unet_preset("tiny"); }

at::Tensor run(UNet& net, int64_t n, int64_t size, const at::Tensor& y = {}) {
  const auto& o = net->options();
  return net->forward(at::randn({n, o.in_channels, size, size}), at::randint(0, 1000, {n}, at::kLong), y);
}

// Random non-zero weights everywhere (zero-initialised convolutions included).
void randomise(UNet& net, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(0.05 * at::randn_like(p));
}

TEST(UNetPresets, PublishedParameterCounts) {
  // Published figures (docs/ENVIRONMENT.md, from improved-diffusion's code with these settings).
  const std::map<std::string, int64_t> published = {
      {"ddpm-cifar10", 35746307}, {"improved-cifar10", 52546438}, {"improved-imagenet64", 121063942}};
  for (const auto& [name, count] : published) {
    UNet net(unet_preset(name));
    EXPECT_EQ(net->num_parameters(), count) << name;
  }
}

TEST(UNetPresets, ForwardFlopsOfDdpmCifar10) {
  // Ho et al.'s CIFAR-10 model: ~12.4 GFLOP forward per 32x32 image (docs/ENVIRONMENT.md).
  UNet net(unet_preset("ddpm-cifar10"));
  EXPECT_NEAR(net->forward_flops(32, 32) / 1e9, 12.4, 0.1);
}

TEST(UNetPresets, SmallPresetsGiveTheirOutputShapes) {
  for (const std::string name : {"tiny", "fmnist-small"}) {
    UNet net(unet_preset(name));
    at::NoGradGuard no_grad;
    const auto& o = net->options();
    const at::Tensor out = run(net, 2, o.image_size);
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{2, o.output_channels(), o.image_size, o.image_size})) << name;
  }
}

TEST(UNetPresets, UnknownPresetListsTheValidNames) {
  try {
    unet_preset("cifar");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    for (const auto& n : ddpm::model::unet_preset_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
}

TEST(UNetOptionsText, OverridesAndErrors) {
  UNetOptions o = tiny();
  ddpm::model::set_unet_option(o, "channel_mult", "1,2,2");
  ddpm::model::set_unet_option(o, "learn_sigma", "true");
  ddpm::model::set_unet_option(o, "num_classes", "10");
  ddpm::model::set_unet_option(o, "dropout", "0.25");
  EXPECT_EQ(o.channel_mult, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_TRUE(o.learn_sigma);
  EXPECT_EQ(o.num_classes.value(), 10);
  EXPECT_DOUBLE_EQ(o.dropout, 0.25);
  EXPECT_NE(ddpm::model::describe(o).find("channel_mult=1,2,2\n"), std::string::npos);
  EXPECT_THROW(ddpm::model::set_unet_option(o, "channels", "3"), std::invalid_argument);
  EXPECT_THROW(ddpm::model::set_unet_option(o, "num_heads", "two"), std::invalid_argument);
  o.model_channels = 48;  // not a multiple of 32
  EXPECT_THROW(o.validate(), std::invalid_argument);
}

// Invalid shapes fail when the options are validated (before any module is built), with a
// message that names the option, the value and what would fit.
TEST(UNetOptionsText, InvalidShapesNameTheOptionAndTheFix) {
  auto message = [](const std::function<void(UNetOptions&)>& edit) {
    UNetOptions o = tiny();  // model_channels 32, channel_mult 1,2, attention at 8 of 16, 2 heads
    edit(o);
    try {
      UNet net(o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << "'" << part << "' not in: " << msg;
  };
  std::string m = message([](UNetOptions& o) { o.model_channels = 48; });
  EXPECT_TRUE(has(m, "UNetOptions.model_channels = 48: expected a positive multiple of 32"));
  m = message([](UNetOptions& o) { o.channel_mult.clear(); });
  EXPECT_TRUE(has(m, "UNetOptions.channel_mult = (empty): expected one multiplier per level"));
  m = message([](UNetOptions& o) { o.channel_mult = {1, 2, 2, 2}; o.image_size = 12; });
  EXPECT_TRUE(has(m, "UNetOptions.image_size = 12: expected a multiple of 8 (2^(levels-1) for 4 levels)"));
  m = message([](UNetOptions& o) { o.attention_resolutions = {3}; });
  EXPECT_TRUE(has(m, "UNetOptions.attention_resolutions = 3: expected feature-map sizes image_size/2^k"));
  // Heads that do not divide an attention block's width (level 1 and the middle block: 64).
  m = message([](UNetOptions& o) { o.num_heads = 3; });
  EXPECT_TRUE(has(m, "UNetOptions.num_heads = 3: expected a divisor of 64 for the attention at level 1 and in the "
                     "middle block (64 channels); set num_heads to a divisor"));
  m = message([](UNetOptions& o) { o.num_head_channels = 48; });
  EXPECT_TRUE(has(m, "UNetOptions.num_head_channels = 48: expected a divisor of 64"));
  EXPECT_TRUE(has(m, "set num_head_channels to a divisor of every attention width"));
  // Attention at level 0 (16x16: 96 channels with channel_mult 3,4): heads of 64 channels fit the
  // middle block's 128 but not level 0's 96.
  m = message([](UNetOptions& o) { o.channel_mult = {3, 4}; o.attention_resolutions = {16}; o.num_head_channels = 64; });
  EXPECT_TRUE(has(m, "UNetOptions.num_head_channels = 64: expected a divisor of 96 for the attention at level 0 (96 "
                     "channels)"));
  // The same widths with heads that fit build, channel_mult[0] != 1 included.
  EXPECT_EQ(message([](UNetOptions& o) { o.channel_mult = {3, 4}; o.attention_resolutions = {16}; o.num_head_channels = 32; }),
            "(no exception)");
}

// Each option on its own changes what it should, and the output has the right shape.
TEST(UNetShapes, EveryOption) {
  std::vector<std::pair<std::string, std::string>> variants = {
      {"learn_sigma", "true"}, {"use_scale_shift_norm", "true"}, {"resblock_updown", "true"},
      {"conv_resample", "false"}, {"num_head_channels", "16"}, {"num_res_blocks", "2"},
      {"channel_mult", "1,1,2"}, {"channel_mult", "2,2"}, {"attention_resolutions", "16,8"}, {"in_channels", "1"},
      {"out_channels", "2"}, {"num_classes", "3"}, {"use_checkpoint", "true"}, {"dropout", "0.2"}};
  at::NoGradGuard no_grad;
  for (const auto& [key, value] : variants) {
    UNetOptions o = tiny();
    o.image_size = 8;
    o.attention_resolutions = {4};
    if (key != "attention_resolutions") ddpm::model::set_unet_option(o, key, value);
    else o.attention_resolutions = {8, 4};
    UNet net(o);
    const at::Tensor out = run(net, 2, 8);
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{2, o.output_channels(), 8, 8})) << key;
    // Non-square inputs work too.
    const at::Tensor rect = net->forward(at::randn({1, o.in_channels, 8, 16}), at::zeros({1}, at::kLong));
    EXPECT_EQ(rect.sizes().vec(), (std::vector<int64_t>{1, o.output_channels(), 8, 16})) << key;
  }
}

TEST(UNetShapes, RejectsBadInputs) {
  UNet net(tiny());
  at::NoGradGuard no_grad;
  EXPECT_THROW(net->forward(at::randn({1, 3, 15, 15}), at::zeros({1}, at::kLong)), c10::Error);
  EXPECT_THROW(net->forward(at::randn({1, 1, 16, 16}), at::zeros({1}, at::kLong)), c10::Error);
  EXPECT_THROW(net->forward(at::randn({2, 3, 16, 16}), at::zeros({1}, at::kLong)), c10::Error);
  EXPECT_THROW(net->forward(at::randn({1, 3, 16, 16}), at::zeros({1}, at::kLong), at::zeros({1}, at::kLong)),
               c10::Error);
}

TEST(UNetZeroInit, OutputIsZeroAtInitialisation) {
  UNet net(tiny());
  at::NoGradGuard no_grad;
  EXPECT_EQ(run(net, 2, 16).abs().max().item<float>(), 0.0f);  // out.2 is zero-initialised
}

TEST(UNetStateDict, KeysWrittenDownFromImprovedDiffusionNaming) {
  UNetOptions o = tiny();
  o.num_classes = 10;
  o.resblock_updown = false;
  UNet net(o);
  std::map<std::string, std::vector<int64_t>> have;
  for (const auto& [k, v] : ddpm::model::state_dict(*net)) have[k] = v.sizes().vec();
  // tiny: ch 32, mult 1,2, one block per level, attention at 8 px (ds 2), temb 128.
  const std::map<std::string, std::vector<int64_t>> want = {
      {"time_embed.0.weight", {128, 32}}, {"time_embed.2.weight", {128, 128}}, {"label_emb.weight", {11, 128}},
      {"input_blocks.0.0.weight", {32, 3, 3, 3}}, {"input_blocks.1.0.in_layers.0.weight", {32}},
      {"input_blocks.1.0.in_layers.2.weight", {32, 32, 3, 3}}, {"input_blocks.1.0.emb_layers.1.weight", {32, 128}},
      {"input_blocks.1.0.out_layers.0.bias", {32}}, {"input_blocks.1.0.out_layers.3.weight", {32, 32, 3, 3}},
      {"input_blocks.2.0.op.weight", {32, 32, 3, 3}}, {"input_blocks.3.0.skip_connection.weight", {64, 32, 1, 1}},
      {"input_blocks.3.1.norm.weight", {64}}, {"input_blocks.3.1.qkv.weight", {192, 64, 1}},
      {"input_blocks.3.1.proj_out.weight", {64, 64, 1}}, {"middle_block.0.in_layers.2.weight", {64, 64, 3, 3}},
      {"middle_block.1.qkv.bias", {192}}, {"middle_block.2.out_layers.3.bias", {64}},
      {"output_blocks.0.0.in_layers.0.weight", {128}}, {"output_blocks.0.0.skip_connection.weight", {64, 128, 1, 1}},
      {"output_blocks.1.1.proj_out.bias", {64}}, {"output_blocks.1.2.conv.weight", {64, 64, 3, 3}},
      {"output_blocks.2.0.skip_connection.weight", {32, 96, 1, 1}}, {"output_blocks.3.0.in_layers.0.weight", {64}},
      {"out.0.weight", {32}}, {"out.2.weight", {3, 32, 3, 3}}, {"out.2.bias", {3}}};
  for (const auto& [k, shape] : want) {
    ASSERT_TRUE(have.count(k)) << "missing " << k;
    EXPECT_EQ(have[k], shape) << k;
  }
  EXPECT_FALSE(have.count("input_blocks.1.0.skip_connection.weight"));  // identity when widths match
  EXPECT_FALSE(have.count("output_blocks.4.0.in_layers.0.weight"));     // 2 levels x 2 blocks
}

TEST(UNetStateDict, SaveLoadRoundTripGivesTheSameOutputs) {
  const std::string path = ddpm::testing::temp_dir("unet_state_dict") + "/w.pt";
  UNetOptions o = tiny();
  o.num_classes = 4;
  at::manual_seed(1);
  UNet a(o);
  randomise(a, 2);
  ddpm::model::save_unet_weights(a, path);
  at::manual_seed(3);
  UNet b(o);
  ddpm::model::load_unet_weights(b, path);
  a->eval();
  b->eval();
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({2, 3, 16, 16}), t = at::tensor({5, 900}, at::kLong), y = at::tensor({0, 4}, at::kLong);
  EXPECT_TRUE(tensors_near(b->forward(x, t, y), a->forward(x, t, y), 0, 0, "round trip"));
}

TEST(UNetStateDict, LoadErrorListsMissingUnexpectedAndMisshapedKeys) {
  UNet net(tiny());
  auto sd = ddpm::model::state_dict(*net);
  ddpm::model::TensorDict bad;
  for (auto& [k, v] : sd) {
    if (k == "out.2.bias") continue;                                   // missing
    if (k == "input_blocks.0.0.weight") bad.emplace_back(k, at::zeros({32, 1, 3, 3}));  // mis-shaped
    else bad.emplace_back(k, v);
  }
  bad.emplace_back("label_emb.weight", at::zeros({11, 128}));         // unexpected
  try {
    ddpm::model::load_unet_state_dict(net, bad, "test dict");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const char* s : {"test dict", "missing keys (1)", "out.2.bias", "unexpected keys (1)", "label_emb.weight",
                          "mis-shaped keys (1)", "input_blocks.0.0.weight: file has [32, 1, 3, 3], model expects [32, 3, 3, 3]"}) {
      EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' not in: " << msg;
    }
  }
}

TEST(UNetStateDict, AcceptsLabelEmbeddingWithoutNullRow) {
  UNetOptions o = tiny();
  o.num_classes = 4;
  UNet net(o);
  auto sd = ddpm::model::state_dict(*net);
  const at::Tensor null_row = net->named_parameters()["label_emb.weight"][4].clone();
  for (auto& [k, v] : sd) {
    if (k == "label_emb.weight") v = at::ones({4, 128});  // improved-diffusion: num_classes rows
    else v = v.clone();
  }
  ddpm::model::load_unet_state_dict(net, sd);
  const at::Tensor w = net->named_parameters()["label_emb.weight"];
  EXPECT_TRUE(tensors_near(w.slice(0, 0, 4), at::ones({4, 128}), 0, 0, "label rows"));
  EXPECT_TRUE(tensors_near(w[4], null_row, 0, 0, "null row kept"));
}

// Gradients with per-block recomputation equal those without, dropout included (the replay
// restores the RNG state), and the RNG stream afterwards is the same.
TEST(UNetCheckpoint, SameGradientsWithAndWithoutCheckpointing) {
  UNetOptions o = tiny();
  o.dropout = 0.3;
  o.use_scale_shift_norm = true;
  o.num_classes = 3;
  std::vector<at::Tensor> grads[2];
  at::Tensor xgrad[2], after[2];
  for (int c = 0; c < 2; ++c) {
    o.use_checkpoint = c == 1;
    at::manual_seed(7);
    UNet net(o);
    randomise(net, 8);
    net->to(at::kDouble);  // float64, so that only real differences exceed the tolerance
    net->train();
    at::manual_seed(9);
    const at::Tensor x = at::randn({2, 3, 16, 16}, at::kDouble).requires_grad_(true);
    const at::Tensor out = net->forward(x, at::tensor({3, 700}, at::kLong), at::tensor({1, 3}, at::kLong));
    (out * out).sum().backward();
    for (auto& p : net->parameters()) grads[c].push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
    xgrad[c] = x.grad().clone();
    after[c] = at::rand({4});
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  double worst = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    ASSERT_TRUE(grads[0][i].defined() && grads[1][i].defined()) << "parameter " << i << " plain " << grads[0][i].defined();
    worst = std::max(worst, (grads[0][i] - grads[1][i]).abs().max().item<double>());
    EXPECT_TRUE(at::allclose(grads[1][i], grads[0][i], 1e-10, 1e-12)) << "parameter " << i;
  }
  std::printf("[maxdiff] checkpointed vs plain parameter gradients: abs %.3g\n", worst);
  EXPECT_GT(grads[0].back().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(tensors_near(xgrad[1], xgrad[0], 1e-10, 1e-12, "input gradient"));
  EXPECT_TRUE(tensors_near(after[1], after[0], 0, 0, "RNG stream after backward"));
}

TEST(UNetConditioning, LabelsChangeTheOutputAndTheNullLabelWorks) {
  UNetOptions o = tiny();
  o.num_classes = 3;
  UNet net(o);
  randomise(net, 11);
  net->eval();
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({1, 3, 16, 16}).repeat({4, 1, 1, 1}), t = at::full({4}, 250, at::kLong);
  const at::Tensor out = net->forward(x, t, at::tensor({0, 1, 2, 3}, at::kLong));
  for (int i = 0; i < 4; ++i) {
    for (int j = i + 1; j < 4; ++j) EXPECT_GT((out[i] - out[j]).abs().max().item<double>(), 1e-4) << i << " vs " << j;
  }
  // No labels = the null label (3).
  EXPECT_TRUE(tensors_near(net->forward(x.slice(0, 0, 1), t.slice(0, 0, 1)), out.slice(0, 3, 4), 1e-4, 1e-5,
                           "absent labels = null label"));
  EXPECT_THROW(net->forward(x.slice(0, 0, 1), t.slice(0, 0, 1), at::tensor({4}, at::kLong)), c10::Error);
  // Timesteps matter, as int64 or float.
  const at::Tensor a = net->forward(x.slice(0, 0, 1), at::tensor({10}, at::kLong));
  EXPECT_GT((a - net->forward(x.slice(0, 0, 1), at::tensor({500}, at::kLong))).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(tensors_near(net->forward(x.slice(0, 0, 1), at::tensor({10.0f})), a, 0, 0, "float t"));
}

TEST(UNetDeterminism, SameSeedSameWeightsAndOutputs) {
  auto build = [](uint64_t seed) {
    at::manual_seed(seed);
    UNetOptions o = tiny();
    o.dropout = 0.1;
    UNet net(o);
    randomise(net, seed + 1);
    at::manual_seed(seed + 2);
    return run(net, 2, 16);  // training mode: dropout draws from the seeded generator
  };
  const at::Tensor a = build(5), b = build(5), c = build(6);
  EXPECT_TRUE(tensors_near(a, b, 0, 0, "same seed"));
  EXPECT_GT((a - c).abs().max().item<double>(), 1e-3);
}

TEST(UNetPrecision, Bf16AutocastAndChannelsLastOnCpu) {
  UNetOptions o = tiny();
  o.use_scale_shift_norm = true;
  UNet net(o);
  randomise(net, 21);
  net->eval();
  at::NoGradGuard no_grad;
  at::manual_seed(22);
  const at::Tensor x = at::randn({2, 3, 16, 16}), t = at::tensor({1, 600}, at::kLong);
  const at::Tensor ref = net->forward(x, t);
  // channels_last: same numbers up to summation order.
  net->to(at::kFloat, /*non_blocking=*/false);
  for (auto& p : net->parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
  const at::Tensor cl = net->forward(x.contiguous(at::MemoryFormat::ChannelsLast), t);
  EXPECT_TRUE(tensors_near(cl, ref, 1e-4, 1e-4, "channels_last"));
  // bf16 autocast: bf16 has 8 significant bits, so a loose tolerance relative to the output scale.
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  const at::Tensor bf = net->forward(x, t);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_EQ(bf.scalar_type(), at::kBFloat16);
  const double scale = ref.abs().max().item<double>();
  EXPECT_TRUE(tensors_near(bf.to(at::kFloat), ref, 0.0, 0.05 * scale, "bf16 autocast vs float32"));
  EXPECT_GT((bf.to(at::kFloat) - ref).abs().max().item<double>(), 0.0);  // it did run in bf16
}

}  // namespace
