// ddpm_train --latent AE_CHECKPOINT: latent diffusion (Rombach et al. 2022). The diffusion task
// (diffusion_task.cpp: U-Net, timestep sampler, loss) runs on latents: each microbatch is encoded
// on the fly by the frozen autoencoder of an autoencoder run (its first EMA's weights), as a
// sample of the posterior q(z | x) times the scale factor (latent-diffusion's scale_by_std:
// 1 / std of the latents of the first global batch, the first images of --data, computed once on
// rank 0 at a fresh start and broadcast). Grids and FID decode the sampled latents. The scale
// factor and the autoencoder are part of the task's state in every checkpoint.
#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/latent.h"
#include "tasks.h"

namespace ddpm::trainer::detail {

namespace {

std::string shape_text(int64_t c, int64_t h, int64_t w) {
  return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

// The latent shape of `info`'s images under `codec`, checked against the U-Net of the config.
data::DatasetInfo latent_info(const TrainConfig& config, const data::DatasetInfo& info, const LatentCodec& codec) {
  const model::AutoencoderOptions& ae = codec.ae->options();
  const int64_t f = ae.factor();
  if (info.channels != ae.in_channels || info.height % f != 0 || info.width % f != 0) {
    throw std::invalid_argument("--latent " + config.latent + ": the autoencoder takes " +
                                std::to_string(ae.in_channels) + "-channel images with sides multiple of " +
                                std::to_string(f) + ", --data " + config.data + " has " +
                                shape_text(info.channels, info.height, info.width) +
                                "; give the data the autoencoder was trained on");
  }
  data::DatasetInfo z = info;
  z.channels = ae.z_channels, z.height = info.height / f, z.width = info.width / f;
  const model::UNetOptions unet = make_unet_options(config);
  const std::string zs = shape_text(z.channels, z.height, z.width);
  if (unet.in_channels != z.channels || unet.out_channels != z.channels) {
    throw std::invalid_argument(
        "--latent " + config.latent + ": the latents are " + zs + " (C x H x W) but the U-Net of --model " +
        config.model + " takes " + std::to_string(unet.in_channels) + " and predicts " +
        std::to_string(unet.out_channels) + " channels; give --model-overrides '{\"in_channels\": " +
        std::to_string(z.channels) + ", \"out_channels\": " + std::to_string(z.channels) + "}'");
  }
  const int64_t div = int64_t{1} << (unet.channel_mult.size() - 1);
  if (z.height % div != 0 || z.width % div != 0) {
    std::string mult;  // the longest prefix of channel_mult whose downsamplings divide the sides
    for (size_t l = 0; l < unet.channel_mult.size() && z.height % (int64_t{1} << l) == 0 &&
                       z.width % (int64_t{1} << l) == 0; ++l) {
      mult += (l ? "," : "") + std::to_string(unet.channel_mult[l]);
    }
    throw std::invalid_argument("--latent " + config.latent + ": the latents are " + zs + ", but the U-Net of --model " +
                                config.model + " has " + std::to_string(unet.channel_mult.size()) +
                                " levels and needs sides divisible by " + std::to_string(div) +
                                "; give --model-overrides '{\"channel_mult\": \"" + mult +
                                "\"}' (fewer levels) or an autoencoder with a smaller factor");
  }
  return z;
}

// The --latent run's codec; a run that cannot be loaded is an error that says what to do when it
// has moved since this run started (resume takes the codec saved in the checkpoint anyway).
LatentCodec load_latent_codec(const TrainConfig& config, const c10::Device& device) {
  try {
    return load_autoencoder_checkpoint(config.latent, device);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string(e.what()) + " (resuming a run whose autoencoder run has moved? give "
                                "--latent its new path: the checkpoint carries the autoencoder it trained with)");
  }
}

class LatentDiffusionTask final : public TrainTask {
 public:
  LatentDiffusionTask(const TrainConfig& config, const data::DatasetInfo& info, const c10::Device& device)
      : config_(config), device_(device), codec_(load_latent_codec(config, device)) {
    const data::DatasetInfo z = latent_info(config_, info, codec_);
    latent_chw_ = {z.channels, z.height, z.width};
    diffusion_ = make_diffusion_task(config_, z, device_);
  }

  std::string name() const override { return "latent-diffusion"; }
  torch::nn::Module& network() override { return diffusion_->network(); }
  void load_initial_weights(const std::string& path) override { diffusion_->load_initial_weights(path); }
  int64_t num_timesteps() const override { return diffusion_->num_timesteps(); }
  void observe(const at::Tensor& rows) override { diffusion_->observe(rows); }

  // Fresh start: the scale factor from the first global batch (the first images of --data), on
  // rank 0, broadcast so that every rank trains on the same scale.
  std::string start(dist::Communicator& comm) override {
    at::Tensor s = at::zeros({1}, at::kDouble);
    int64_t n = 0;
    if (comm.rank() == 0) {
      const data::ImageDataset ds = data::ImageDataset::open(config_.data);
      n = std::min(config_.global_batch, ds.info().count);
      const at::Tensor x = to_model_input(ds.read_images(0, n)).to(device_);  // (n, C, H, W)
      s.fill_(first_batch_scale_factor(codec_, x, static_cast<uint64_t>(config_.seed)));
    }
    const at::Tensor t = s.to(comm.device());
    comm.broadcast(t, 0);
    codec_.scale_factor = t.cpu().item<double>();
    char line[256];
    std::snprintf(line, sizeof line, "latent: %s, f %lld, latents %lldx%lldx%lld, scale factor %.6f (1 / std of the "
                  "latents of the first %lld images)", codec_.source.c_str(),
                  static_cast<long long>(codec_.ae->options().factor()), static_cast<long long>(latent_chw_[0]),
                  static_cast<long long>(latent_chw_[1]), static_cast<long long>(latent_chw_[2]), codec_.scale_factor,
                  static_cast<long long>(n));
    return line;
  }

  model::TensorDict state() const override {
    model::TensorDict out = diffusion_->state();
    for (auto& entry : codec_.state()) out.push_back(std::move(entry));
    return out;
  }
  void load_state(const model::TensorDict& state) override {
    model::TensorDict rest;
    for (const auto& entry : state) {
      if (entry.first.rfind("latent/", 0) != 0) rest.push_back(entry);
    }
    codec_ = latent_codec_from_state(state, device_, "checkpoint task state");
    diffusion_->load_state(rest);
  }

  MicrobatchLoss loss(const at::Tensor& x, const at::Tensor& y) override {
    return diffusion_->loss(codec_.encode(x), y);  // (n, z, H/f, W/f)
  }

  // The diffusion samples latents (no clipping: latents are not in [-1, 1]), the decoder makes images.
  IndexSampler image_sampler(const EvalRequest& req) override {
    EvalRequest latent = req;
    latent.sample = latent_sample_request(req.sample, codec_.ae->options());
    IndexSampler sample = diffusion_->image_sampler(latent);
    if (!sample) return {};
    const LatentCodec codec = codec_;
    const c10::Device device = device_;
    return [sample, codec, device](int64_t begin, int64_t end) {
      return codec.decode(sample(begin, end).to(device)).cpu();  // (n, C, H, W)
    };
  }

  BpdSummary bits_per_dim(const model::TensorDict&, const at::Tensor&, int64_t, int64_t, uint64_t,
                          dist::Communicator&) override {
    throw std::invalid_argument("--latent: bits/dim of latent diffusion would be of the latents, not the images; "
                                "drop --bpd-every");
  }

 private:
  TrainConfig config_;
  c10::Device device_;
  LatentCodec codec_;
  std::array<int64_t, 3> latent_chw_{};
  std::unique_ptr<TrainTask> diffusion_;
};

}  // namespace

std::unique_ptr<TrainTask> make_latent_diffusion_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                      const c10::Device& device) {
  return std::make_unique<LatentDiffusionTask>(config, info, device);
}

}  // namespace ddpm::trainer::detail
