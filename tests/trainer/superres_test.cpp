// ddpm_sample --cascade and ddpm_eval --fid-npz on tiny checkpoints built here: a base U-Net at
// 4x4 and a super-resolution U-Net 4 -> 8 (grey, T = 20, conditioning augmentation). The cascade
// gives the same bytes on 1 and 2 ranks; its low-resolution samples are the base's own
// (ddpm_sample --checkpoint), its high-resolution ones super_resolve of them with seed + 1, also
// from the low-res samples stored in an .npz; the level flag is used; mismatched runs are refused. --fid-npz equals the float64 numpy FID
// (fid_train_reference.py) of the stored images, and of their bilinear upsampling.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/superres.h"
#include "testing/testing.h"

namespace ddpm::trainer {
namespace {

namespace fs = std::filesystem;
using ddpm::testing::read_text;

constexpr int64_t kImages = 64;

using ddpm::testing::bin;
using ddpm::testing::mpirun;
int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, /*cpu_only=*/true); }

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// Random grey images (N, size, size, 1) and, for size 4, their 2x2 block means.
void write_dataset(const std::string& path, int64_t size) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  at::Tensor images = at::rand({kImages, 8, 8, 1}, gen, at::kFloat) * 255.0;  // (N, 8, 8, 1)
  if (size == 4) images = images.view({kImages, 4, 2, 4, 2, 1}).mean({2, 4});
  data::DatasetInfo info;
  info.count = kImages, info.height = size, info.width = size, info.channels = 1;
  info.source = "random (tests/trainer/superres)";
  data::DatasetWriter w(path, info);
  w.write_images(0, images.round().to(at::kByte));
  w.finish();
}

// Zero-initialised layers (outputs, aug_embed's last) would hide the inputs: fill them.
void fill_zeros(torch::nn::Module& net) {
  torch::NoGradGuard g;
  for (auto& p : net.named_parameters()) {
    if (p.value().abs().max().item<double>() == 0.0) p.value().normal_(0.0, 0.05);
  }
}

// A run dir with one checkpoint (step 3) of `weights`, EMA 0.9 holding the same weights.
void save_run(const TrainConfig& c, const model::TensorDict& weights) {
  TrainState s;
  s.step = 3, s.images_seen = 12;
  s.model = weights;
  s.emas = {{0.9, weights}};
  s.config = to_json(c);
  CheckpointStore(c.run_dir).save(s);
}

TrainConfig tiny(const std::string& data, const std::string& run_dir) {
  TrainConfig c;
  c.data = data, c.run_dir = run_dir, c.model = "tiny";
  c.model_overrides = Json{{"in_channels", 1}, {"out_channels", 1}};
  c.schedule = "cosine", c.diffusion_steps = 20, c.var_type = "learned-range", c.loss_type = "rescaled-mse";
  c.ema_rates = {0.9}, c.global_batch = 4, c.max_steps = 3, c.metrics_addr = "none", c.sample_respacing = "5";
  return c;
}

class Cascade : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = ddpm::testing::temp_dir("superres");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_dataset(dir_ + "/d8.h5", 8);
    write_dataset(dir_ + "/d4.h5", 4);
    for (const auto& [name, data] : {std::pair<std::string, std::string>{"base4", "d4.h5"}, {"base8", "d8.h5"}}) {
      TrainConfig c = tiny(dir_ + "/" + data, dir_ + "/" + name);
      validate(c);
      torch::manual_seed(5);
      model::UNet net = make_unet(c);
      fill_zeros(*net);
      save_run(c, model::state_dict(*net));
    }
    TrainConfig c = tiny(dir_ + "/d8.h5", dir_ + "/sr");
    c.task = "superres", c.low_res = 4, c.cond_aug_max = 6, c.cond_aug_level = 3;
    validate(c);
    torch::manual_seed(6);
    model::SuperResUNet net = make_superres_unet(c);
    fill_zeros(*net);
    save_run(c, model::state_dict(*net));
    TrainConfig k = tiny(dir_ + "/d4.h5", dir_ + "/clf4");  // a noise classifier for the 4 px base
    k.task = "classifier", k.num_classes = 3, k.var_type = "fixed-small", k.loss_type = "mse";
    k.model_overrides = Json{{"in_channels", 1}, {"pool", "adaptive"}};
    validate(k);
    torch::manual_seed(7);
    model::EncoderUNet clf(make_encoder_unet_options(k));
    fill_zeros(*clf);
    save_run(k, model::state_dict(*clf));
  }
  static std::string dir_;
};
std::string Cascade::dir_;

TEST_F(Cascade, BaseThenSuperResolutionTheSameBytesOnOneAndTwoRanks) {
  const std::string flags = " --cascade " + dir_ + "/base4," + dir_ + "/sr --num-samples 12 --batch-size 4 "
                            "--respacing 5 --seed 9";
  ASSERT_EQ(run(mpirun(1) + bin("ddpm_sample") + flags + " --out " + dir_ + "/c1.npz --grid " + dir_ + "/c1.png",
                dir_ + "/c1.txt"), 0) << read_text(dir_ + "/c1.txt");
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_sample") + flags + " --out " + dir_ + "/c2.npz", dir_ + "/c2.txt"), 0)
      << read_text(dir_ + "/c2.txt");
  EXPECT_EQ(file_bytes(dir_ + "/c1.npz"), file_bytes(dir_ + "/c2.npz")) << "high resolution, 1 vs 2 ranks";
  EXPECT_EQ(file_bytes(dir_ + "/c1_low.npz"), file_bytes(dir_ + "/c2_low.npz")) << "low resolution, 1 vs 2 ranks";
  EXPECT_TRUE(fs::exists(dir_ + "/c1.png") && fs::exists(dir_ + "/c1_low.png"));
  const at::Tensor high = data::read_npz(dir_ + "/c1.npz").at("arr_0"), low = data::read_npz(dir_ + "/c1_low.npz").at("arr_0");
  ASSERT_EQ(high.sizes(), (std::vector<int64_t>{12, 8, 8, 1}));
  ASSERT_EQ(low.sizes(), (std::vector<int64_t>{12, 4, 4, 1}));

  // The low resolution is the base model alone, sampled as ddpm_sample samples it.
  ASSERT_EQ(run(bin("ddpm_sample") + " --checkpoint " + dir_ + "/base4 --num-samples 12 --batch-size 4 --respacing 5 "
                "--seed 9 --out " + dir_ + "/b.npz", dir_ + "/b.txt"), 0) << read_text(dir_ + "/b.txt");
  EXPECT_TRUE(at::equal(data::read_npz(dir_ + "/b.npz").at("arr_0"), low)) << "cascade low-res vs the base alone";

  // The high resolution: super_resolve of the stored low-res samples, seed + 1, the run's level 3.
  LoadedSuperRes sr = load_superres_model(dir_ + "/sr", "", at::kCPU);
  const auto spaced = make_diffusion(sr.config, "5");
  SampleRequest req;
  req.channels = 1, req.height = req.width = 8, req.respacing = "5", req.seed = 10;
  const auto direct = [&](int64_t level) {
    std::vector<at::Tensor> parts;
    for (int64_t b = 0; b < 12; b += 4) {
      const at::Tensor cond = to_model_input(low.slice(0, b, b + 4));
      parts.push_back(data::to_uint8_nhwc(super_resolve(sr.net, sr.config, spaced, req, cond, b, level, at::kCPU)));
    }
    return at::cat(parts);  // (12, 8, 8, 1)
  };
  const at::Tensor want = direct(3);
  std::printf("[maxdiff] cascade npz vs in-process super_resolve: %d\n",
              (want.to(at::kInt) - high.to(at::kInt)).abs().max().item<int>());
  EXPECT_TRUE(at::equal(want, high));
  // Stored base samples (improved-diffusion's --base_samples) give the same high resolution.
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_sample") + " --cascade " + dir_ + "/c1_low.npz," + dir_ + "/sr --num-samples 12 "
                "--batch-size 4 --respacing 5 --seed 9 --out " + dir_ + "/n.npz", dir_ + "/n.txt"), 0)
      << read_text(dir_ + "/n.txt");
  EXPECT_EQ(file_bytes(dir_ + "/n.npz"), file_bytes(dir_ + "/c1.npz")) << "--cascade LOW.npz,SR vs --cascade BASE,SR";
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/c1_low.npz," + dir_ + "/sr --num-samples 13 --out " +
                dir_ + "/x.npz", dir_ + "/n13.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/n13.txt").find("holds 12 images; give at most that many"), std::string::npos)
      << read_text(dir_ + "/n13.txt");
  // The level is used: 0 gives other samples, as ddpm_sample --cond-aug-level 0 does.
  ASSERT_EQ(run(bin("ddpm_sample") + flags + " --cond-aug-level 0 --out " + dir_ + "/l0.npz", dir_ + "/l0.txt"), 0)
      << read_text(dir_ + "/l0.txt");
  const at::Tensor level0 = data::read_npz(dir_ + "/l0.npz").at("arr_0");
  EXPECT_FALSE(at::equal(level0, high));
  EXPECT_TRUE(at::equal(level0, direct(0)));
}

// A classifier-guided base (an unconditional model): the cascade's base stage is ddpm_sample's
// guided sampler, and its labels (the classes the classifier guided to) are kept in both npz.
TEST_F(Cascade, ClassifierGuidedBaseKeepsItsLabels) {
  const std::string common = " --num-samples 4 --batch-size 4 --respacing 5 --seed 9 --classifier-scale 5 --classifier " +
                             dir_ + "/clf4";
  ASSERT_EQ(run(bin("ddpm_sample") + " --checkpoint " + dir_ + "/base4" + common + " --out " + dir_ + "/g.npz",
                dir_ + "/g.txt"), 0) << read_text(dir_ + "/g.txt");
  ASSERT_EQ(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4," + dir_ + "/sr" + common + " --out " + dir_ +
                "/gc.npz", dir_ + "/gc.txt"), 0) << read_text(dir_ + "/gc.txt");
  const auto plain = data::read_npz(dir_ + "/g.npz"), high = data::read_npz(dir_ + "/gc.npz"),
             low = data::read_npz(dir_ + "/gc_low.npz");
  EXPECT_TRUE(at::equal(low.at("arr_0"), plain.at("arr_0"))) << "the base stage is the guided sampler";
  ASSERT_EQ(plain.count("arr_1"), 1u);
  ASSERT_EQ(high.count("arr_1"), 1u) << "the cascade dropped the guided samples' labels";
  ASSERT_EQ(low.count("arr_1"), 1u) << "the cascade dropped the guided samples' labels";
  EXPECT_TRUE(at::equal(high.at("arr_1"), plain.at("arr_1")));
  EXPECT_TRUE(at::equal(low.at("arr_1"), plain.at("arr_1")));
}

TEST_F(Cascade, RunsThatDoNotFitAreRefused) {
  const std::string out = " --num-samples 2 --respacing 2 --out " + dir_ + "/x.npz";
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base8," + dir_ + "/sr" + out, dir_ + "/e1.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e1.txt").find("the base model makes 1x8x8 images (C x H x W) but the super-resolution "
                                              "model upsamples 1x4x4 (its --low-res 4); train the base at 4 px "
                                              "(ddpm_prepare --resolution 4)"), std::string::npos)
      << read_text(dir_ + "/e1.txt");
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4," + dir_ + "/base8" + out, dir_ + "/e2.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e2.txt").find("a --task diffusion run, not a super-resolution model"), std::string::npos)
      << read_text(dir_ + "/e2.txt");
  EXPECT_NE(run(bin("ddpm_sample") + " --checkpoint " + dir_ + "/sr" + out, dir_ + "/e3.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e3.txt").find("sample it after a base model with ddpm_sample --cascade BASE_RUN,"),
            std::string::npos) << read_text(dir_ + "/e3.txt");
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4," + dir_ + "/sr --cond-aug-level 20" + out,
                dir_ + "/e4.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e4.txt").find("--cond-aug-level 20: levels are timesteps"), std::string::npos)
      << read_text(dir_ + "/e4.txt");
  // Within T but above the trained levels (cond_aug_max 6): refused as ddpm_train's config check refuses it.
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4," + dir_ + "/sr --cond-aug-level 7" + out,
                dir_ + "/e4b.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e4b.txt").find("trained on levels 0..6 (its --cond-aug-max); give at most 6"),
            std::string::npos) << read_text(dir_ + "/e4b.txt");
  // --sr-respacing is checked against --sampler as --respacing is (it was ignored by the SDE samplers).
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4," + dir_ + "/sr --sampler pf-ode-heun --steps 3 "
                "--sr-respacing 5 --num-samples 2 --out " + dir_ + "/x.npz", dir_ + "/e4c.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e4c.txt").find("--sr-respacing 5: --sampler pf-ode-heun chooses its own steps"),
            std::string::npos) << read_text(dir_ + "/e4c.txt");
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir_ + "/base4" + out, dir_ + "/e5.txt"), 0);
  EXPECT_NE(read_text(dir_ + "/e5.txt").find("give BASE_RUN,SR_RUN"), std::string::npos) << read_text(dir_ + "/e5.txt");
}

// ddpm_eval --fid-npz against numpy float64, for images of the reference size and for images
// upsampled from 4x4 (the reference computed on the bilinear upsampling rounded to bytes).
TEST_F(Cascade, FidOfStoredImagesMatchesNumpy) {
  const std::string extractor = ddpm::testing::binary_dir() + "/golden/fid_train_extractor.pt";
  const char* py = std::getenv("DDPM_PYTHON");
  ASSERT_TRUE(py && *py) << "DDPM_PYTHON is not set";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor small = (at::rand({16, 4, 4, 1}, gen, at::kFloat) * 255).to(at::kByte);  // (16, 4, 4, 1)
  // The bilinear upsampling of the byte values (float64, exact for these weights), rounded half up.
  const at::Tensor up = at::floor(model::upsample_bilinear(small.permute({0, 3, 1, 2}).to(at::kDouble), 8, 8) + 0.5)
                            .clamp(0, 255).to(at::kByte).permute({0, 2, 3, 1}).contiguous();
  data::write_npz(dir_ + "/small.npz", {{"arr_0", small}});
  data::write_npz(dir_ + "/up.npz", {{"arr_0", up}});
  const auto fid_npz = [&](const std::string& npz, const std::string& tag) {
    EXPECT_EQ(run(mpirun(2) + bin("ddpm_eval") + " --fid-npz " + npz + " --data " + dir_ + "/d8.h5 --fid-extractor "
                  "torchscript:" + extractor + " --fid-stats " + dir_ + "/stats.h5 --fid-batch 5 --out-json " +
                  dir_ + "/" + tag + ".json", dir_ + "/" + tag + ".txt"), 0) << read_text(dir_ + "/" + tag + ".txt");
    return nlohmann::json::parse(read_text(dir_ + "/" + tag + ".json"));
  };
  const auto numpy = [&](const std::string& npz, const std::string& tag) {
    EXPECT_EQ(run(std::string(py) + " " + ddpm::testing::source_dir() + "/tests/reference/fid_train_reference.py --fid"
                  " --samples " + npz + " --data " + dir_ + "/d8.h5 --golden " + ddpm::testing::binary_dir() +
                  "/golden/fid_train.h5 --json " + dir_ + "/" + tag + "_np.json", dir_ + "/" + tag + "_np.txt"), 0)
        << read_text(dir_ + "/" + tag + "_np.txt");
    return nlohmann::json::parse(read_text(dir_ + "/" + tag + "_np.json"))["fid"].get<double>();
  };
  const nlohmann::json same = fid_npz(dir_ + "/up.npz", "same"), resized = fid_npz(dir_ + "/small.npz", "resized");
  const double ref = numpy(dir_ + "/up.npz", "up");
  EXPECT_EQ(same["fid_images"], "as stored");
  EXPECT_EQ(resized["fid_images"], "resized bilinearly 4x4 -> 8x8");
  EXPECT_EQ(same["fid_samples"], 16);
  for (const auto& [j, tag] : {std::pair{same, "8x8 npz"}, std::pair{resized, "4x4 npz resized"}}) {
    const double fid = j["fid"].get<double>();
    std::printf("[maxdiff] --fid-npz %s: %.6f vs numpy %.6f (rel %.2e, rtol 1e-4)\n", tag, fid, ref,
                std::abs(fid - ref) / ref);
    EXPECT_NEAR(fid, ref, 1e-4 * ref) << tag;
  }
}

}  // namespace
}  // namespace ddpm::trainer
