// Latent diffusion through the one training loop, in-process on every rank of mpirun (np 1 and 2):
// --task autoencoder (bit-exact resume, its loss falls, the log's term names, reconstructions as
// its images) and --task diffusion --latent (the scale factor against a recomputation and the
// same on every rank, bit-exact resume with the autoencoder and scale in the task state, grids
// decoded as the checkpoint's sampler decodes) and the errors for settings that do not fit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/latent.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/task.h"
#include "ddpm/trainer/train_loop.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

std::unique_ptr<dist::Communicator> g_comm;
dist::Communicator& comm() { return *g_comm; }

std::string shared_dir(const std::string& name) { return shared_test_dir(comm(), "latent", name); }

std::string dataset(const std::string& dir) { return shared_tiny_dataset(comm(), dir); }


// The tiny config as an autoencoder: f = 2, 2 latent channels (8x8 -> 2x4x4).
TrainConfig ae_config(const std::string& data, const std::string& run, int64_t steps) {
  TrainConfig c = tiny_config(data, run, steps);
  c.task = "autoencoder";
  c.model_overrides = Json::object();  // the tiny U-Net's channels: no U-Net here (refused)
  c.ae_factor = 2;
  c.z_channels = 2;
  c.kl_weight = 1e-3;
  validate(c);
  return c;
}

// The tiny U-Net on the latents of the autoencoder run `ae` (2x4x4: in/out channels 2).
TrainConfig latent_config(const std::string& data, const std::string& run, const std::string& ae, int64_t steps) {
  TrainConfig c = tiny_config(data, run, steps);
  c.latent = ae;
  c.model_overrides = Json{{"in_channels", 2}, {"out_channels", 2}};
  c.timestep_sampler = "loss-second-moment";
  validate(c);
  return c;
}

// A short autoencoder run shared by the latent tests.
std::string trained_autoencoder(const std::string& dir, const std::string& data) {
  TrainConfig c = ae_config(data, dir + "/ae", 4);
  EXPECT_EQ(train(c, comm(), at::kCPU, quiet_hooks()).exit_code, 0);
  return c.run_dir;
}


// ---- --task autoencoder ---------------------------------------------------------------------

TEST(AutoencoderTask, BitExactResumeAfterSigterm) {
  const std::string dir = shared_dir("ae_bitexact");
  const std::string data = dataset(dir);
  auto config = [&](const std::string& run) {
    TrainConfig c = ae_config(data, dir + "/" + run, 12);
    c.sample_every = 5;  // reconstruction grids in between must not shift the random streams
    return c;
  };
  std::pair<TrainState, TrainState> states;
  ASSERT_NO_FATAL_FAILURE(check_bit_exact_resume(comm(), config, 12, 6, "autoencoder", states));
}

TEST(AutoencoderTask, ReconstructionErrorFallsAndTheLogNamesItsTerms) {
  const std::string dir = shared_dir("ae_falls");
  const std::string data = dataset(dir);
  TrainConfig c = ae_config(data, dir + "/run", 40);
  c.lr = 3e-3;
  c.sample_every = 40;
  ASSERT_EQ(train(c, comm(), at::kCPU, quiet_hooks()).step, 40);
  const std::vector<Json> rows = train_records(c.run_dir);
  ASSERT_EQ(rows.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += rows[i].at("rec").get<double>() / 5;
    last += rows[rows.size() - 1 - i].at("rec").get<double>() / 5;
  }
  std::printf("[rec] L1 first 5 steps %.4f, last 5 steps %.4f (ratio %.3f, must be < 0.5)\n", first, last, last / first);
  EXPECT_LT(last, 0.5 * first);
  // loss = rec + kl_weight * kl / (C H W), as the terms are logged (means over the same images;
  // each term a float32 per image: agreement to float32 rounding).
  const Json& r = rows.back();
  const double expect = r.at("rec").get<double>() + c.kl_weight * r.at("kl").get<double>() / 64.0;
  std::printf("[maxdiff] logged loss vs rec + w kl / D: %.3g\n", std::abs(r.at("loss").get<double>() - expect));
  EXPECT_NEAR(r.at("loss").get<double>(), expect, 1e-6 * expect);
  EXPECT_FALSE(r.contains("mse"));
  EXPECT_TRUE(r.contains("kl_q0"));
  EXPECT_TRUE(std::filesystem::exists(c.run_dir + "/samples/step_000040.png"));
}

// Index i of the autoencoder's images is the reconstruction (posterior mean) of image i of --data.
TEST(AutoencoderTask, ImagesAreReconstructionsOfTheTrainingImages) {
  const std::string dir = shared_dir("ae_images");
  const std::string data = dataset(dir);
  TrainConfig c = ae_config(data, dir + "/run", 1);
  torch::manual_seed(5);
  const auto info = data::ImageDataset::open(data).info();
  std::unique_ptr<TrainTask> task = make_train_task(c, info, at::kCPU);
  model::TensorDict weights;
  for (const auto& p : task->network().named_parameters()) weights.emplace_back(p.key(), p.value().detach() * 1.1);
  const IndexSampler sampler = task->image_sampler(EvalRequest{weights, SampleRequest{}});
  const at::Tensor got = sampler(62, 66);  // indices 62..65: images 62, 63, 0, 1 of 64
  // A rank's empty share (--sample-count or --fid-samples below the rank count) is no error.
  EXPECT_EQ(sampler(5, 5).sizes().vec(), (std::vector<int64_t>{0, 1, 8, 8}));
  model::AutoencoderKL ae(autoencoder_options(c, 1));
  model::load_state_dict(*ae, weights, "scaled weights");
  ae->eval();
  at::NoGradGuard no_grad;
  const data::ImageDataset ds = data::ImageDataset::open(data);
  const at::Tensor x = to_model_input(at::cat({ds.read_images(62, 2), ds.read_images(0, 2)}, 0));
  const at::Tensor want = ae->decode(ae->encode(x).mean).clamp(-1, 1);
  EXPECT_TRUE(ddpm::testing::tensors_near(got, want, 0, 1e-6, "reconstructions of images 62, 63, 0, 1"));
}

// ddpm_eval's reconstruction error: each rank's share in batches, all-reduced, equals the error of
// the whole set at once.
TEST(AutoencoderTask, ReconstructionErrorOverTheRanksIsTheWholeSets) {
  const std::string dir = shared_dir("ae_rec");
  const std::string data = dataset(dir);
  const std::string ae = trained_autoencoder(dir, data);
  model::AutoencoderKL net = load_autoencoder_checkpoint(ae, at::kCPU).ae;
  const data::ImageDataset ds = data::ImageDataset::open(data);
  const auto [begin, end] = rank_range(ds.info().count, comm().rank(), comm().world_size());
  const ReconstructionSummary s = evaluate_reconstruction(net, ds.read_images(begin, end - begin), 5, comm(), at::kCPU);
  at::NoGradGuard no_grad;
  const at::Tensor x = to_model_input(ds.read_images(0, ds.info().count));  // (64, 1, 8, 8)
  const at::Tensor d = ((x - net->decode(net->encode(x).mean).clamp(-1, 1)) / 2).to(at::kDouble);
  const double mse = d.pow(2).mean().item<double>(), l1 = d.abs().mean().item<double>();
  std::printf("[maxdiff] reconstruction mse %.9g vs %.9g, l1 %.9g vs %.9g, psnr %.4f dB\n", s.mse, mse, s.l1, l1, s.psnr);
  EXPECT_EQ(s.count, 64);
  EXPECT_NEAR(s.mse, mse, 1e-6 * mse);
  EXPECT_NEAR(s.l1, l1, 1e-6 * l1);
  EXPECT_NEAR(s.psnr, 10 * std::log10(1 / mse), 1e-5);
}

// ---- --task diffusion --latent --------------------------------------------------------------

// 1 / std of the posterior samples of the first global batch, recomputed here from the
// autoencoder's posterior and the seeded noise, and the same on every rank.
TEST(LatentDiffusion, ScaleFactorIsOneOverTheStdOfTheFirstBatchOnEveryRank) {
  const std::string dir = shared_dir("scale");
  const std::string data = dataset(dir);
  const std::string ae = trained_autoencoder(dir, data);
  const TrainConfig c = latent_config(data, dir + "/run", ae, 1);
  std::unique_ptr<TrainTask> task = make_train_task(c, data::ImageDataset::open(data).info(), at::kCPU);
  task->start(comm());
  double scale = 0;
  for (const auto& [name, t] : task->state()) {
    if (name == "latent/scale_factor") scale = t.item<double>();
  }
  const at::Tensor all = comm().all_gather(at::tensor({scale}, at::kDouble)).cpu();  // (W)
  EXPECT_EQ(all.min().item<double>(), all.max().item<double>()) << "ranks disagree on the scale factor";

  model::AutoencoderKL net = load_autoencoder_checkpoint(ae, at::kCPU).ae;
  at::NoGradGuard no_grad;
  const at::Tensor x = to_model_input(data::ImageDataset::open(data).read_images(0, c.global_batch));
  const model::DiagonalGaussian q = net->encode(x);  // (16, 2, 4, 4) each
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(c.seed));
  const at::Tensor z = (q.mean + (0.5 * q.logvar).exp() * at::randn(q.mean.sizes(), gen)).to(at::kDouble);
  const double n = static_cast<double>(z.numel());
  const double var = ((z - z.mean()).pow(2).sum() / (n - 1)).item<double>();
  const double want = 1.0 / std::sqrt(var);
  std::printf("[maxdiff] scale factor %.9f vs recomputed %.9f: rel %.3g\n", scale, want, std::abs(scale / want - 1));
  EXPECT_NEAR(scale, want, 1e-6 * want);
}

// decode inverts encode's scaling: decode(encode(x) with zero noise) is the reconstruction of the
// posterior mean, for any scale factor.
TEST(LatentDiffusion, DecodeUndoesTheScaleOfEncode) {
  const std::string dir = shared_dir("roundtrip");
  const std::string data = dataset(dir);
  LatentCodec codec = load_autoencoder_checkpoint(trained_autoencoder(dir, data), at::kCPU);
  codec.scale_factor = 0.37;
  const at::Tensor x = to_model_input(data::ImageDataset::open(data).read_images(0, 8));  // (8, 1, 8, 8)
  const at::Tensor z = codec.encode(x, at::zeros({8, 2, 4, 4}));
  model::AutoencoderKL net = codec.ae;
  at::NoGradGuard no_grad;
  const at::Tensor mean = net->encode(x).mean;
  EXPECT_TRUE(ddpm::testing::tensors_near(z, mean * 0.37, 1e-6, 1e-7, "encode = scale x posterior mean (no noise)"));
  EXPECT_TRUE(ddpm::testing::tensors_near(codec.decode(z), net->decode(mean).clamp(-1, 1), 1e-5, 1e-6,
                                          "decode(encode(x)) = reconstruction"));
}

// The resumed leg finds the autoencoder run moved and is given its new path (--latent may change
// on resume: the checkpoint carries the autoencoder): still bit-exact.
TEST(LatentDiffusion, BitExactResumeAfterSigterm) {
  const std::string dir = shared_dir("bitexact");
  const std::string data = dataset(dir);
  const std::string ae = trained_autoencoder(dir, data), moved = ae + "-moved";
  int stopped_legs = 0;
  auto config = [&](const std::string& run) {
    TrainConfig c = latent_config(data, dir + "/" + run, ae, 12);
    c.sample_every = 5;
    if (run == "stopped" && ++stopped_legs == 2) {  // the resume
      if (comm().rank() == 0) std::filesystem::rename(ae, moved);
      comm().barrier();
      c.latent = moved;
    }
    return c;
  };
  std::pair<TrainState, TrainState> states;
  ASSERT_NO_FATAL_FAILURE(check_bit_exact_resume(comm(), config, 12, 6, "latent diffusion", states));
  // The checkpoint carries the scale factor and the autoencoder it was trained with.
  const TrainState& s = states.second;
  EXPECT_TRUE(has_latent_state(s.sampler));
  const LatentCodec saved = latent_codec_from_state(s.sampler, at::kCPU, "checkpoint");
  const LatentCodec source = load_autoencoder_checkpoint(moved, at::kCPU);
  EXPECT_TRUE(dicts_identical(model::state_dict(*saved.ae), model::state_dict(*source.ae), "autoencoder in checkpoint"));
  EXPECT_GT(saved.scale_factor, 0.0);
}

// The training grid is what the checkpoint's latent sampler (ddpm_sample, ddpm_eval --fid) decodes.
TEST(LatentDiffusion, GridsDecodeAsTheCheckpointsSampler) {
  const std::string dir = shared_dir("grid");
  const std::string data = dataset(dir);
  const std::string ae = trained_autoencoder(dir, data);
  TrainConfig c = latent_config(data, dir + "/run", ae, 3);
  c.sample_every = 3;
  ASSERT_EQ(train(c, comm(), at::kCPU, quiet_hooks()).exit_code, 0);
  if (comm().rank() != 0) return;
  LoadedModel m = load_model(c.run_dir, "", at::kCPU);
  SampleRequest req;
  req.channels = 1, req.height = 8, req.width = 8;
  req.respacing = c.sample_respacing;
  req.seed = static_cast<uint64_t>(c.sample_seed);
  const at::Tensor images = latent_index_sampler(m, req, at::kCPU)(0, c.sample_count);  // (8, 1, 8, 8)
  ASSERT_EQ(images.sizes().vec(), (std::vector<int64_t>{c.sample_count, 1, 8, 8}));
  const at::Tensor grid = data::read_image(c.run_dir + "/samples/step_000003.png", 1).to(at::kInt);
  const at::Tensor want = data::make_grid(images, 3).to(at::kInt);
  // Sampled in one batch here, in one per rank in training: at most one grey level apart.
  EXPECT_TRUE(ddpm::testing::tensors_near(grid, want, 0, 1.0, "training grid vs decoded checkpoint samples"));
}

TEST(LatentDiffusion, SettingsThatDoNotFitAreClearErrors) {
  const std::string dir = shared_dir("errors");
  const std::string data = dataset(dir);
  const std::string ae = trained_autoencoder(dir, data);
  const auto info = data::ImageDataset::open(data).info();
  const auto message = [&](TrainConfig c) -> std::string {
    try {
      validate(c);
      make_train_task(c, info, at::kCPU);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  TrainConfig c = latent_config(data, dir + "/run", ae, 1);
  c.model_overrides = Json{{"in_channels", 1}, {"out_channels", 1}};
  EXPECT_NE(message(c).find("--model-overrides '{\"in_channels\": 2, \"out_channels\": 2}'"), std::string::npos)
      << message(c);
  c = latent_config(data, dir + "/run", ae, 1);
  c.model_overrides["channel_mult"] = "1,2,2,2";  // 4x4 latents, 4 levels need sides divisible by 8
  EXPECT_NE(message(c).find("channel_mult\": \"1,2,2\""), std::string::npos) << message(c);
  c = latent_config(data, dir + "/run", ae, 1);
  c.bpd_every = 5;
  EXPECT_NE(message(c).find("--bpd-every"), std::string::npos) << message(c);
  c = latent_config(data, dir + "/run", ae, 1);
  c.latent = data;  // an HDF5 file, not a run
  EXPECT_NE(message(c).find("--latent"), std::string::npos) << message(c);
  c.latent = dir + "/no-such-run";  // e.g. moved since the run started: the error says what to do
  EXPECT_NE(message(c).find("give --latent its new path"), std::string::npos) << message(c);
  TrainConfig a = ae_config(data, dir + "/run", 1);
  a.latent = ae;
  EXPECT_NE(message(a).find("--latent (key \"latent\"): is for --task diffusion"), std::string::npos) << message(a);
  a = ae_config(data, dir + "/run", 1);
  a.ae_factor = 3;
  EXPECT_NE(message(a).find("--ae-factor"), std::string::npos) << message(a);
}

}  // namespace
}  // namespace ddpm::trainer::testing

int main(int argc, char** argv) {
  return ddpm::trainer::testing::run_tests_on_every_rank(argc, argv, ddpm::trainer::testing::g_comm);
}
