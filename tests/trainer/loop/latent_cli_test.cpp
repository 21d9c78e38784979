// Latent diffusion as users run it: build/bin/ddpm_train_autoencoder (ddpm_train with --task
// autoencoder; --task refused), ddpm_eval of its run (reconstruction error), ddpm_train --latent on
// its run, and ddpm_sample of the latent run, whose decoded samples are the training grid's images
// (same seed and respacing), within the one grey level by which the grid's rounding and the
// .npz's truncation differ.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/trainer/config.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

namespace fs = std::filesystem;
using ddpm::testing::read_text;

using ddpm::testing::bin;
int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, true); }

std::string common(const std::string& data, const std::string& run_dir, int64_t steps) {
  return " --data " + data + " --run-dir " + run_dir + " --global-batch 16 --max-steps " + std::to_string(steps) +
         " --lr 1e-3 --log-every 1 --metrics-addr none --seed 5";
}

TEST(LatentCli, AutoencoderThenLatentDiffusionThenDdpmSample) {
  const std::string dir = ddpm::testing::temp_dir("latent_cli");
  fs::create_directories(dir);
  const std::string data = dir + "/bars.h5";
  write_tiny_dataset(data);

  const std::string ae = dir + "/ae";
  ASSERT_EQ(run(bin("ddpm_train_autoencoder") + common(data, ae, 3) + " --ae-factor 2 --z-channels 2",
                dir + "/ae.txt"), 0) << read_text(dir + "/ae.txt");
  const Json cfg = read_json_file(ae + "/config.json");
  EXPECT_EQ(cfg.at("task"), "autoencoder");
  EXPECT_NE(read_text(dir + "/ae.txt").find(" rec "), std::string::npos) << "the log line names the terms";
  EXPECT_EQ(run(bin("ddpm_train_autoencoder") + common(data, dir + "/x", 1) + " --task diffusion", dir + "/x.txt"), 1);
  EXPECT_NE(read_text(dir + "/x.txt").find("trains --task autoencoder; use ddpm_train for --task diffusion"), std::string::npos) << read_text(dir + "/x.txt");

  // ddpm_eval of the autoencoder: its reconstruction error on the data.
  ASSERT_EQ(run(bin("ddpm_eval") + " --checkpoint " + ae + " --data " + data + " --out-json " + dir + "/rec.json",
                dir + "/rec.txt"), 0) << read_text(dir + "/rec.txt");
  const Json rec = read_json_file(dir + "/rec.json");
  EXPECT_EQ(rec.at("count"), 64);
  EXPECT_GT(rec.at("psnr").get<double>(), 0.0);
  EXPECT_NEAR(rec.at("psnr").get<double>(), 10 * std::log10(1 / rec.at("mse").get<double>()), 1e-9);
  // A likelihood or FID asked of an autoencoder is refused, not answered with the reconstruction error.
  for (const std::string flag : {" --ode-bpd", " --bpd --ode-bpd", " --fid"}) {
    EXPECT_NE(run(bin("ddpm_eval") + " --checkpoint " + ae + " --data " + data + flag, dir + "/rec_refused.txt"), 0)
        << flag;
    EXPECT_NE(read_text(dir + "/rec_refused.txt").find("is an autoencoder: ddpm_eval gives its reconstruction error"),
              std::string::npos) << read_text(dir + "/rec_refused.txt");
  }

  const std::string lat = dir + "/latent";
  const std::string latent_flags = common(data, lat, 3) + " --latent " + ae +
                                   " --model tiny --model-overrides '{\"in_channels\":2,\"out_channels\":2}' "
                                   "--diffusion-steps 4 --schedule cosine --sample-every 3 --sample-count 4 "
                                   "--sample-respacing 2 --sample-seed 9";
  ASSERT_EQ(run(bin("ddpm_train") + latent_flags, dir + "/latent.txt"), 0) << read_text(dir + "/latent.txt");
  EXPECT_NE(read_text(dir + "/latent.txt").find("scale factor"), std::string::npos) << read_text(dir + "/latent.txt");

  ASSERT_EQ(run(bin("ddpm_sample") + " --checkpoint " + lat + " --num-samples 4 --batch-size 3 --respacing 2 --seed 9 "
                "--out " + dir + "/s.npz", dir + "/sample.txt"), 0) << read_text(dir + "/sample.txt");
  const at::Tensor npz = data::read_npz(dir + "/s.npz").at("arr_0");  // (4, 8, 8, 1) uint8
  ASSERT_EQ(npz.sizes().vec(), (std::vector<int64_t>{4, 8, 8, 1}));
  const at::Tensor grid = data::read_image(lat + "/samples/step_000003.png", 1).to(at::kInt);
  const at::Tensor from_npz = data::make_grid(npz, 2).to(at::kInt);
  EXPECT_TRUE(ddpm::testing::tensors_near(from_npz, grid, 0, 1.0, "ddpm_sample (decoded) vs the training grid"));
  EXPECT_GT(npz.to(at::kFloat).std().item<double>(), 1.0) << "decoded samples are not blank";

  // Refused with the flag named (not a c10 error from the classifier's forward on latents, not
  // silently ignored): classifier guidance of a latent run; the flags of a guidance or cascade
  // stage that does not run.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {" --classifier " + dir + "/no-such-classifier", "is a latent diffusion run (--latent)"},
      {" --classifier-scale 3", "--classifier-scale requires --classifier"},
      {" --classifier-ema none", "--classifier-ema requires --classifier"},
      {" --cond-aug-level 3", "--cond-aug-level requires --cascade"},
      {" --sr-respacing 2", "--sr-respacing requires --cascade"}};
  for (const auto& [flag, message] : refused) {
    EXPECT_NE(run(bin("ddpm_sample") + " --checkpoint " + lat + flag + " --num-samples 2 --respacing 2 --out " + dir +
                      "/r.npz", dir + "/refused.txt"), 0) << flag;
    EXPECT_NE(read_text(dir + "/refused.txt").find(message), std::string::npos) << read_text(dir + "/refused.txt");
  }
  // A latent base in a cascade: its samples are latents (2x4x4 here), not images of the SR's low resolution.
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + lat + "," + dir + "/no-such-sr --num-samples 2 --out " + dir +
                    "/r.npz", dir + "/refused.txt"), 0);
  EXPECT_NE(read_text(dir + "/refused.txt").find("the base is a latent diffusion run (--latent); sample it first"),
            std::string::npos) << read_text(dir + "/refused.txt");
  // A missing SR run is named as the --cascade part it is (not as --checkpoint, which the command lacks).
  EXPECT_NE(run(bin("ddpm_sample") + " --cascade " + dir + "/s.npz," + dir + "/no-such-sr --num-samples 2 --out " + dir +
                    "/r.npz", dir + "/refused.txt"), 0);
  EXPECT_NE(read_text(dir + "/refused.txt").find("--cascade (the SR run) " + dir + "/no-such-sr: no such run"),
            std::string::npos) << read_text(dir + "/refused.txt");
}

}  // namespace
}  // namespace ddpm::trainer::testing
