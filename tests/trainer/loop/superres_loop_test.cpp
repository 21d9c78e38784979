// --task superres through the one training loop, in-process on every rank of mpirun (np 1 and 2):
// bit-exact resume with conditioning augmentation and importance sampling; the sample grid is
// low-res input | super-resolved sample | original for dataset images 0.. (the samples exactly
// those super_resolve makes from the checkpoint's EMA); --init-from a SuperResModel's weights;
// area downsampling is the block mean; the
// errors of bad --low-res / --cond-aug-* values name the flag and the fix.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/superres.h"
#include "ddpm/trainer/train_loop.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

std::unique_ptr<dist::Communicator> g_comm;
dist::Communicator& comm() { return *g_comm; }

std::string shared_dir(const std::string& name) { return shared_test_dir(comm(), "train_superres", name); }

std::string dataset(const std::string& dir) { return shared_tiny_dataset(comm(), dir); }


// 8x8 bars super-resolved from 4x4, T = 4, levels 0..3 in training, level 2 in grids.
TrainConfig superres_config(const std::string& data, const std::string& run_dir, int64_t steps) {
  TrainConfig c = tiny_config(data, run_dir, steps);
  c.task = "superres";
  c.low_res = 4;
  c.cond_aug_max = 3;
  c.cond_aug_level = 2;
  validate(c);
  return c;
}

TEST(SuperResLoop, BitExactResumeAfterSigterm) {
  const std::string dir = shared_dir("bitexact");
  const std::string data = dataset(dir);
  auto config = [&](const std::string& run) {
    TrainConfig c = superres_config(data, dir + "/" + run, 12);
    c.timestep_sampler = "loss-second-moment";
    c.sample_every = 5;  // grids in between must not shift the random streams
    return c;
  };
  std::pair<TrainState, TrainState> states;
  ASSERT_NO_FATAL_FAILURE(check_bit_exact_resume(comm(), config, 12, 6, "superres", states));
  const TrainState& a = states.first;
  ASSERT_EQ(a.emas.size(), 2u);
  // The network is the SuperResUNet with the level embedding: 2C input channels, aug_embed last.
  EXPECT_EQ(a.model.front().first, "time_embed.0.weight");
  EXPECT_EQ(a.model.back().first, "aug_embed.2.bias");
  for (const auto& [name, t] : a.model) {
    if (name == "input_blocks.0.0.weight") EXPECT_EQ(t.size(1), 2);
  }
}

// The grid of the last step: per sample i, the nearest-upsampled low-res input, the sample and
// the original image i; samples as super_resolve draws them from the checkpoint's first EMA with
// the run's respacing, seed and level (in the rank slices the loop used).
TEST(SuperResLoop, GridIsLowResSampleOriginal) {
  const std::string dir = shared_dir("grid");
  const std::string data = dataset(dir);
  TrainConfig c = superres_config(data, dir + "/run", 3);
  c.sample_every = 3;
  c.sample_count = 5;
  const TrainOutcome out = train(c, comm(), at::kCPU, quiet_hooks());
  ASSERT_EQ(out.step, 3);
  LoadedSuperRes sr = load_superres_model(dir + "/run", "", at::kCPU);
  ASSERT_EQ(*sr.ema_rate, 0.9);
  const auto spaced = make_diffusion(sr.config, c.sample_respacing);
  SampleRequest req;
  req.channels = 1, req.height = req.width = 8, req.respacing = c.sample_respacing;
  req.seed = static_cast<uint64_t>(c.sample_seed);
  const at::Tensor original = to_model_input(dataset_images_by_index(data, 0, 5));  // (5, 1, 8, 8)
  const at::Tensor low = area_downsample(original, 4);
  std::vector<at::Tensor> samples;
  for (int r = 0; r < comm().world_size(); ++r) {
    const auto [b, e] = rank_range(5, r, comm().world_size());
    samples.push_back(super_resolve(sr.net, sr.config, spaced, req, low.slice(0, b, e), b, 2, at::kCPU));
  }
  const at::Tensor tiles = at::stack({at::upsample_nearest2d(low, {8, 8}), at::cat(samples), original}, 1).flatten(0, 1);
  const at::Tensor want = data::make_grid(tiles, 3 * 3);  // ceil(sqrt(5)) = 3 triples a row
  const at::Tensor got = data::read_image(dir + "/run/samples/step_000003.png", 1);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(ddpm::testing::tensors_near(got, want, 0, 0, "grid vs low | super_resolve | original"));
  EXPECT_GT((at::cat(samples) - original).abs().max().item<double>(), 0.01) << "samples are not the originals";
}

// --init-from a SuperResModel's weights (no aug_embed) into a run with augmentation: those weights
// are where training starts (one step at lr 1e-10), aug_embed keeps its zero last layer.
TEST(SuperResLoop, InitFromSuperResModelWeights) {
  const std::string dir = shared_dir("initfrom");
  const std::string data = dataset(dir);
  TrainConfig plain = superres_config(data, dir + "/plain", 1);
  plain.cond_aug_max = 0, plain.cond_aug_level = 0;
  torch::manual_seed(9);
  model::SuperResUNet source = make_superres_unet(plain);
  const model::TensorDict weights = model::state_dict(*source);
  ASSERT_EQ(weights.back().first, "out.2.bias");
  if (comm().rank() == 0) model::save_tensor_dict(dir + "/superres_model.pt", weights);
  comm().barrier();
  TrainConfig c = superres_config(data, dir + "/run", 1);
  c.init_from = dir + "/superres_model.pt";
  c.lr = 1e-10;
  const TrainOutcome out = train(c, comm(), at::kCPU, quiet_hooks());
  const TrainState s = load_checkpoint(out.checkpoint);
  ASSERT_EQ(s.model.size(), weights.size() + 4);
  double worst = 0, aug_last = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    ASSERT_EQ(s.model[i].first, weights[i].first);
    worst = std::max(worst, (s.model[i].second - weights[i].second).abs().max().item<double>());
  }
  for (size_t i = weights.size() + 2; i < s.model.size(); ++i) aug_last = std::max(aug_last, s.model[i].second.abs().max().item<double>());
  std::printf("[maxdiff] init-from SuperResModel weights after one step at lr 1e-10: %.3g, aug_embed.2: %.3g (atol 1e-6)\n",
              worst, aug_last);
  EXPECT_LT(worst, 1e-6);
  EXPECT_LT(aug_last, 1e-6);
}

TEST(SuperResLoop, AreaDownsampleIsTheBlockMean) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({3, 2, 12, 12}, at::kDouble);
  for (int64_t n : {6, 4, 3, 1}) {
    const int64_t f = 12 / n;
    const at::Tensor want = x.view({3, 2, n, f, n, f}).mean({3, 5});
    EXPECT_TRUE(ddpm::testing::tensors_near(area_downsample(x, n), want, 1e-15, 1e-15,
                                            "area_downsample 12 -> " + std::to_string(n)));
  }
  try {
    area_downsample(x, 5);
    FAIL() << "12 -> 5 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--low-res 5: the images are 12x12; give a size below theirs that divides "
                                         "both (1, 2, 3, 4, 6)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(area_downsample(x, 12), std::invalid_argument);
}

void expect_error(const TrainConfig& c, const std::string& part) {
  try {
    validate(c);
    FAIL() << "no error; expected one containing: " << part;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(SuperResLoop, BadValuesNameTheFlag) {
  const std::string dir = shared_dir("errors");
  const std::string data = dataset(dir);
  const TrainConfig good = superres_config(data, dir + "/run", 1);
  TrainConfig c = good;
  c.low_res = 0;
  expect_error(c, "--low-res (key \"low_res\"): is required with --task superres");
  c = good, c.task = "diffusion";
  expect_error(c, "--low-res (key \"low_res\"): applies to --task superres only");
  c = good, c.cond_aug_max = 4;
  expect_error(c, "--cond-aug-max (key \"cond_aug_max\"): is 4: levels are timesteps of the schedule, give at most "
                  "diffusion_steps - 1 = 3");
  c = good, c.cond_aug_level = 5, c.cond_aug_max = 3;
  expect_error(c, "--cond-aug-level (key \"cond_aug_level\"): is 5 but the model is trained on levels up to");
  c = good, c.bpd_every = 10;
  expect_error(c, "--bpd-every (key \"bpd_every\"): --task superres has no bits/dim");
  c = good, c.num_classes = 4;
  expect_error(c, "--num-classes (key \"num_classes\"): --task superres trains unconditional");
  // The data: 8x8 images do not split into 3x3 blocks; nothing is written.
  c = good, c.low_res = 3;
  try {
    train(c, comm(), at::kCPU, quiet_hooks());
    FAIL() << "--low-res 3 on 8x8 images was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--low-res 3: the images are 8x8; give a size below theirs that divides "
                                         "both (1, 2, 4)"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/run"));
}

}  // namespace
}  // namespace ddpm::trainer::testing

int main(int argc, char** argv) {
  return ddpm::trainer::testing::run_tests_on_every_rank(argc, argv, ddpm::trainer::testing::g_comm);
}
