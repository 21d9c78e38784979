// Classifier guidance end to end on tiny checkpoints built here (tiny U-Nets and a tiny noise
// classifier, 8x8 grey, T = 20): ddpm_sample --classifier gives the same bytes on 1 and 2 ranks
// (ancestral and DDIM, respaced) and the same samples as an in-process sample_indices; scale 0
// on a class-conditional model is exactly the unguided sampler; the errors name the flag. And
// ddpm_eval --fid-npz: an .npz of a dataset's own images has FID ~0 against it, and the domain
// accuracy equals a direct evaluation of the domain network.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/evaluation/domain_net.h"
#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"
#include "testing/testing.h"

namespace ddpm::trainer {
namespace {

namespace fs = std::filesystem;
using ddpm::testing::read_text;

constexpr int64_t kClasses = 3;

using ddpm::testing::bin;
using ddpm::testing::mpirun;
int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, /*cpu_only=*/true); }

void write_dataset(const std::string& path, int64_t n, int64_t size) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const at::Tensor images = (at::rand({n, size, size, 1}, gen, at::kFloat) * 255.0).to(at::kByte);  // (N, S, S, 1)
  data::DatasetInfo info;
  info.count = n, info.height = size, info.width = size, info.channels = 1;
  info.has_labels = true, info.num_classes = kClasses, info.source = "random (tests/trainer/classifier_guidance)";
  data::DatasetWriter w(path, info);
  w.write_images(0, images);
  w.write_labels(at::arange(n, at::kLong) % kClasses);
  w.finish();
}

// Fills the zero-initialised layers (they would hide x, t and the labels) with small noise.
void randomise_zeros(torch::nn::Module& net) {
  torch::NoGradGuard g;
  for (auto& p : net.named_parameters()) {
    if (p.value().abs().max().item<double>() == 0.0) p.value().normal_(0.0, 0.05);
  }
}

// A run dir with one checkpoint (step 3) of a random network: the tiny U-Net (task diffusion,
// `classes` > 0 class-conditional) or the tiny noise classifier (task classifier, 4x4 attention pool).
void make_run(const std::string& run_dir, const std::string& data, const std::string& task, int64_t classes,
              int64_t steps = 20) {
  TrainConfig c;
  c.data = data, c.run_dir = run_dir, c.model = "tiny", c.task = task;
  c.schedule = "cosine", c.diffusion_steps = steps, c.num_classes = classes;
  c.global_batch = 4, c.max_steps = 3, c.metrics_addr = "none", c.ema_rates = {0.9}, c.sample_respacing = "5";
  torch::manual_seed(task == "classifier" ? 8 : 5 + classes);
  std::shared_ptr<torch::nn::Module> net;
  if (task == "classifier") {
    c.model_overrides = Json{{"in_channels", 1}, {"image_size", 8}, {"attention_resolutions", "4"}};
    validate(c);
    net = model::EncoderUNet(make_encoder_unet_options(c)).ptr();
  } else {
    c.model_overrides = Json{{"in_channels", 1}, {"out_channels", 1}, {"image_size", 8}};
    c.var_type = "learned-range", c.loss_type = "rescaled-mse";
    validate(c);
    net = make_unet(c).ptr();
  }
  randomise_zeros(*net);
  TrainState s;
  s.step = 3, s.images_seen = 12;
  s.model = model::state_dict(*net);
  model::TensorDict ema;
  for (const auto& p : net->named_parameters()) ema.emplace_back(p.key(), p.value().detach().clone());
  s.emas = {{0.9, ema}};
  s.config = to_json(c);
  CheckpointStore(run_dir).save(s);
}

class ClassifierGuidance : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = ddpm::testing::temp_dir("classifier_guidance");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_dataset(dir_ + "/data.h5", 6, 8);
    make_run(dir_ + "/uncond", dir_ + "/data.h5", "diffusion", 0);
    make_run(dir_ + "/cond", dir_ + "/data.h5", "diffusion", kClasses);
    make_run(dir_ + "/clf", dir_ + "/data.h5", "classifier", kClasses);
    make_run(dir_ + "/clf_t10", dir_ + "/data.h5", "classifier", kClasses, 10);
    make_run(dir_ + "/clf4", dir_ + "/data.h5", "classifier", 4);
  }
  static std::string dir_;
};
std::string ClassifierGuidance::dir_;

at::Tensor arr0(const std::string& path) { return data::read_npz(path).at("arr_0"); }

// The same bytes on 1 and 2 ranks, the same samples as in process, and guidance visible.
TEST_F(ClassifierGuidance, SamplesDoNotDependOnRankCount) {
  for (const char* respacing : {"5", "ddim5"}) {
    const std::string flags = std::string(" --checkpoint ") + dir_ + "/uncond --classifier " + dir_ +
                              "/clf --classifier-scale 20 --num-samples 5 --batch-size 2 --seed 9 --respacing " +
                              respacing,
                      name = dir_ + "/g" + respacing;
    ASSERT_EQ(run(mpirun(1) + bin("ddpm_sample") + flags + " --out " + name + "_1.npz", name + "_1.txt"), 0)
        << read_text(name + "_1.txt");
    ASSERT_EQ(run(mpirun(2) + bin("ddpm_sample") + flags + " --out " + name + "_2.npz", name + "_2.txt"), 0)
        << read_text(name + "_2.txt");
    EXPECT_NE(read_text(name + "_1.txt").find("classifier guidance: "), std::string::npos) << read_text(name + "_1.txt");
    const auto one = data::read_npz(name + "_1.npz"), two = data::read_npz(name + "_2.npz");
    const at::Tensor a = one.at("arr_0"), b = two.at("arr_0");
    ASSERT_EQ(a.sizes(), at::IntArrayRef({5, 8, 8, 1}));
    EXPECT_TRUE(at::equal(a, b)) << respacing << ": 1 vs 2 ranks, max diff "
                                 << (a.to(at::kInt) - b.to(at::kInt)).abs().max().item<int>();
    ASSERT_EQ(one.count("arr_1"), 1u) << "guided samples of an unconditional model carry their labels";
    EXPECT_TRUE(at::equal(one.at("arr_1"), two.at("arr_1")));
    EXPECT_LT(one.at("arr_1").max().item<int64_t>(), kClasses);

    // In process, all 5 in one batch: the same up to float rounding in another batch size.
    LoadedModel m = load_model(dir_ + "/uncond", "", c10::kCPU);
    SampleRequest req;
    req.respacing = respacing, req.seed = 9, req.classifier_scale = 20.0;
    req.classifier = std::make_shared<LoadedClassifier>(load_classifier(dir_ + "/clf", "", c10::kCPU));
    const SampleBatch direct = sample_indices(m, make_diffusion(m.config, respacing), req, 0, 5, c10::kCPU);
    const at::Tensor diff = (data::to_uint8_nhwc(direct.images).to(at::kInt) - a.to(at::kInt)).abs();
    std::cout << "[maxdiff] " << respacing << " guided npz vs in-process uint8: " << diff.max().item<int>() << std::endl;
    EXPECT_LE(diff.max().item<int>(), 1);
    EXPECT_TRUE(at::equal(direct.labels, one.at("arr_1")));
    req.classifier_scale = 0.0;
    const SampleBatch unguided = sample_indices(m, make_diffusion(m.config, respacing), req, 0, 5, c10::kCPU);
    const double moved = (unguided.images - direct.images).abs().max().item<double>();
    std::cout << "[guidance] " << respacing << ": scale 20 moves the samples by up to " << moved << std::endl;
    EXPECT_GT(moved, 1e-3) << "guidance must change the samples";
  }
}

// Scale 0 adds Sigma * 0 to the mean: exactly the sampler without a classifier (same labels).
TEST_F(ClassifierGuidance, ScaleZeroOnAConditionalModelIsTheUnguidedSampler) {
  const std::string base = bin("ddpm_sample") + " --checkpoint " + dir_ + "/cond --num-samples 3 --respacing 4 --seed 2";
  ASSERT_EQ(run(base + " --out " + dir_ + "/c0.npz", dir_ + "/c0.txt"), 0) << read_text(dir_ + "/c0.txt");
  ASSERT_EQ(run(base + " --classifier " + dir_ + "/clf --classifier-scale 0 --out " + dir_ + "/c1.npz",
                dir_ + "/c1.txt"), 0) << read_text(dir_ + "/c1.txt");
  EXPECT_TRUE(at::equal(arr0(dir_ + "/c0.npz"), arr0(dir_ + "/c1.npz")));
  EXPECT_TRUE(at::equal(data::read_npz(dir_ + "/c0.npz").at("arr_1"), data::read_npz(dir_ + "/c1.npz").at("arr_1")));
  ASSERT_EQ(run(base + " --classifier " + dir_ + "/clf --classifier-scale 30 --out " + dir_ + "/c2.npz",
                dir_ + "/c2.txt"), 0) << read_text(dir_ + "/c2.txt");
  EXPECT_FALSE(at::equal(arr0(dir_ + "/c0.npz"), arr0(dir_ + "/c2.npz")));
}

TEST_F(ClassifierGuidance, ErrorsNameTheFlag) {
  const std::string base = bin("ddpm_sample") + " --num-samples 2 --out " + dir_ + "/x.npz ";
  const struct {
    std::string args, expect;
  } bad[] = {
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf --sampler euler-maruyama",
       "--classifier: classifier guidance works with --sampler ancestral or ddim"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf_t10", "T = 10"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/cond", "was trained with --task diffusion"},
      {"--checkpoint " + dir_ + "/clf", "holds a noise classifier"},
      {"--checkpoint " + dir_ + "/cond --classifier " + dir_ + "/clf4", "has 4 classes"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/nowhere", "--classifier " + dir_ + "/nowhere"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf --classifier-ema 0.5", "--classifier-ema 0.5"},
      {"--checkpoint " + dir_ + "/uncond --class-label 1", "give --classifier"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf --class 3", "0..2"},
      {"--checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf --image-size 16 --respacing 2",
       "--image-size 16: the classifier " + dir_ + "/clf"},
  };
  for (const auto& b : bad) {
    EXPECT_EQ(run(base + b.args, dir_ + "/bad.txt"), 1) << b.args;
    EXPECT_NE(read_text(dir_ + "/bad.txt").find(b.expect), std::string::npos) << read_text(dir_ + "/bad.txt");
  }
  ASSERT_EQ(run(base + "--respacing 4 --checkpoint " + dir_ + "/uncond --classifier " + dir_ + "/clf --class-label 2",
                dir_ + "/ok.txt"), 0) << read_text(dir_ + "/ok.txt");
  EXPECT_TRUE(at::equal(data::read_npz(dir_ + "/x.npz").at("arr_1"), at::full({2}, 2, at::kLong)));
}

// ddpm_eval --fid-npz on the reference's own images: FID ~0 (the npz round trip is exact) and the
// accuracy of the domain network computed directly.
TEST_F(ClassifierGuidance, EvalSamplesFidAndDomainAccuracy) {
  const std::string data = dir_ + "/ref16.h5", net_path = dir_ + "/domain.pt", npz = dir_ + "/ref16.npz";
  write_dataset(data, 24, 16);
  torch::manual_seed(4);
  evaluation::DomainNetOptions o;
  o.num_classes = kClasses, o.width = 4, o.feature_dim = 6;
  evaluation::DomainNet net(o);
  evaluation::save_domain_net(net_path, *net);
  const auto ds = data::ImageDataset::open(data);
  const at::Tensor images = ds.read_all_images(), labels = at::arange(24, at::kLong) % kClasses;
  data::write_npz(npz, {{"arr_0", images}, {"arr_1", labels}});
  double want = 0;
  {
    torch::NoGradGuard g;
    evaluation::DomainNet loaded = evaluation::load_domain_net(net_path);
    const at::Tensor logits = loaded->forward(images.permute({0, 3, 1, 2}).to(at::kFloat).div(255.0));
    want = (logits.argmax(1) == labels).to(at::kDouble).mean().item<double>();
  }
  for (int np : {1, 2}) {
    const std::string json = dir_ + "/samples" + std::to_string(np) + ".json";
    const std::string cmd = mpirun(np) + bin("ddpm_eval") + " --fid-npz " + npz + " --data " + data +
                            " --fid-extractor domain:" + net_path + " --fid-stats " + dir_ + "/stats.h5 --fid-batch 5" +
                            " --out-json " + json;
    ASSERT_EQ(run(cmd, dir_ + "/samples.txt"), 0) << read_text(dir_ + "/samples.txt");
    const auto j = nlohmann::json::parse(read_text(json));
    const double fid = j["fid"], acc = j["accuracy"];
    std::cout << "[maxdiff] np" << np << " FID of the reference's own images " << fid << " (must be < 1e-4); accuracy "
              << acc << " vs direct " << want << std::endl;
    EXPECT_LT(std::abs(fid), 1e-4);
    EXPECT_EQ(j["fid_samples"], 24);
    EXPECT_DOUBLE_EQ(acc, want);
  }
  EXPECT_EQ(run(bin("ddpm_eval") + " --fid-npz " + npz + " --data " + data, dir_ + "/bad.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("--fid-npz needs --fid-extractor"), std::string::npos)
      << read_text(dir_ + "/bad.txt");
  // More samples than the file holds: refused, not a FID of fewer samples than asked for.
  EXPECT_EQ(run(bin("ddpm_eval") + " --fid-npz " + npz + " --data " + data + " --fid-extractor domain:" + net_path +
                    " --fid-stats " + dir_ + "/stats.h5 --fid-samples 25",
                dir_ + "/bad.txt"),
            1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("--fid-samples 25: --fid-npz " + npz + " holds 24 images"),
            std::string::npos)
      << read_text(dir_ + "/bad.txt");
}

}  // namespace
}  // namespace ddpm::trainer
