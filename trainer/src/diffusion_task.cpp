// --task diffusion: the improved-diffusion training objective on images. The U-Net of --model,
// the GaussianDiffusion of the config, the timestep sampler (uniform or loss-second-moment
// importance sampling, its history in checkpoints), label dropout for classifier-free guidance;
// grids and FID sample as ddpm_sample does, bits/dim is the full variational bound.
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/factory.h"
#include "tasks.h"

namespace ddpm::trainer::detail {

namespace {

class DiffusionTask final : public TrainTask {
 public:
  DiffusionTask(const TrainConfig& config, const data::DatasetInfo& info, const c10::Device& device)
      : config_(config), device_(device) {
    check_unet_channels(config_, info);
    unet_ = make_unet(config_);
    unet_->to(device_);
    unet_->train();
    diffusion_ = std::make_unique<diffusion::GaussianDiffusion>(make_diffusion(config_));
    timestep_sampler_ = diffusion::create_named_schedule_sampler(config_.timestep_sampler, diffusion_->num_timesteps());
  }

  std::string name() const override { return "diffusion"; }
  torch::nn::Module& network() override { return *unet_; }
  void load_initial_weights(const std::string& path) override { model::load_unet_weights(unet_, path); }
  int64_t num_timesteps() const override { return diffusion_->num_timesteps(); }
  model::TensorDict state() const override { return timestep_sampler_->state(); }
  void load_state(const model::TensorDict& state) override { timestep_sampler_->load_state(state); }

  MicrobatchLoss loss(const at::Tensor& x, const at::Tensor& y) override {
    const int64_t n = x.size(0);
    const diffusion::TimestepSample ts = timestep_sampler_->sample(n, std::nullopt, device_);
    const at::Tensor noise = at::randn_like(x);  // (n, C, H, W)
    at::Tensor labels = y;
    if (labels.defined() && config_.label_dropout > 0) {
      // Classifier-free guidance: some labels become the null label num_classes.
      const at::Tensor drop = at::rand({n}, x.options()) < config_.label_dropout;
      labels = at::where(drop, at::full_like(labels, config_.num_classes), labels);
    }
    return diffusion_microbatch_loss(diffusion_->training_losses(model_fn(unet_, labels), x, ts.t, noise), ts);
  }

  void observe(const at::Tensor& rows) override {
    timestep_sampler_->update_with_all_losses(rows.select(1, 0).to(at::kLong), rows.select(1, 1));
  }

  IndexSampler image_sampler(const EvalRequest& req) override {
    model::UNet net = eval_network(req.weights);
    return index_sampler(net, config_, req.sample, device_);  // holds `net`
  }

  BpdSummary bits_per_dim(const model::TensorDict& weights, const at::Tensor& images, int64_t first,
                          int64_t batch_size, uint64_t seed, dist::Communicator& comm) override {
    model::UNet net = eval_network(weights);
    return evaluate_bpd(net, *diffusion_, images, first, batch_size, /*clip_denoised=*/true, seed, comm, device_);
  }

 private:
  model::UNet eval_network(const model::TensorDict& weights) const {
    model::UNet net = make_unet(config_);
    net->to(device_);
    copy_weights(*net, weights, *unet_);
    net->eval();
    return net;
  }

  TrainConfig config_;
  c10::Device device_;
  model::UNet unet_{nullptr};
  std::unique_ptr<diffusion::GaussianDiffusion> diffusion_;
  std::unique_ptr<diffusion::TimestepSampler> timestep_sampler_;
};

}  // namespace

void check_unet_channels(const TrainConfig& config, const data::DatasetInfo& info) {
  const model::UNetOptions unet = make_unet_options(config);
  if (unet.in_channels != info.channels) {
    throw std::invalid_argument("--data " + config.data + ": images have " + std::to_string(info.channels) +
                                " channels but U-Net preset '" + config.model + "' takes " +
                                std::to_string(unet.in_channels) + "; pick a --model for " +
                                std::to_string(info.channels) + " channels or override in_channels/out_channels");
  }
}

MicrobatchLoss diffusion_microbatch_loss(const diffusion::LossTerms& terms, const diffusion::TimestepSample& ts) {
  const int64_t n = ts.t.size(0);
  const auto col = [&](const at::Tensor& v) {  // (n) float64 on the device
    return v.defined() ? v.detach().to(at::kDouble) : at::full({n}, NAN, ts.t.options().dtype(at::kDouble));
  };
  MicrobatchLoss out;
  out.loss = (terms.loss.to(at::kFloat) * ts.weights).mean();
  out.rows = at::stack({ts.t.to(at::kDouble), col(terms.loss), col(terms.mse), col(terms.vb)}, 1);  // (n, 4)
  return out;
}

std::unique_ptr<TrainTask> make_diffusion_task(const TrainConfig& config, const data::DatasetInfo& info,
                                               const c10::Device& device) {
  return std::make_unique<DiffusionTask>(config, info, device);
}

}  // namespace ddpm::trainer::detail
