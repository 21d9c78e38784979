// --task superres: a cascade's super-resolution model (Ho et al. 2021; improved-diffusion's
// SuperResModel and super_res_train.py). Each microbatch's conditioning is made on the fly: the
// training images area-downsampled to --low-res, noised to a level s uniform in {0..cond_aug_max}
// (Gaussian conditioning augmentation, s given to the network). The loss is the diffusion's on the
// high-resolution images (timestep sampler as --task diffusion). Grids and FID super-resolve the
// low-res versions of the dataset's images 0, 1, ... (index i mod count) at --cond-aug-level with
// per-index seeds; the grid shows low-res input | sample | original. No bits/dim.
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "ddpm/model/diffusion/cond_aug.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/superres.h"
#include "tasks.h"

namespace ddpm::trainer::detail {

namespace {

class SuperResTask final : public TrainTask {
 public:
  SuperResTask(const TrainConfig& config, const data::DatasetInfo& info, const c10::Device& device)
      : config_(config), device_(device) {
    check_data(info);
    net_ = make_superres_unet(config_);
    net_->to(device_);
    net_->train();
    diffusion_ = std::make_unique<diffusion::GaussianDiffusion>(make_diffusion(config_));
    timestep_sampler_ = diffusion::create_named_schedule_sampler(config_.timestep_sampler, diffusion_->num_timesteps());
  }

  std::string name() const override { return "superres"; }
  torch::nn::Module& network() override { return *net_; }
  // A SuperResModel's weights (improved-diffusion's, or a run without augmentation) start a run
  // with augmentation too: aug_embed keeps its initialisation (its zero last layer ignores s).
  void load_initial_weights(const std::string& path) override {
    model::TensorDict weights = model::load_tensor_dict(path);
    const auto has_aug = [&] {
      for (const auto& [name, t] : weights) {
        if (name.rfind("aug_embed.", 0) == 0) return true;
      }
      return false;
    };
    if (net_->has_aug_embedding() && !has_aug()) {
      for (const auto& item : net_->named_parameters()) {
        if (item.key().rfind("aug_embed.", 0) == 0) weights.emplace_back(item.key(), item.value().detach().clone());
      }
    }
    model::load_state_dict(*net_, weights, "--init-from " + path);
  }
  int64_t num_timesteps() const override { return diffusion_->num_timesteps(); }
  model::TensorDict state() const override { return timestep_sampler_->state(); }
  void load_state(const model::TensorDict& state) override { timestep_sampler_->load_state(state); }

  MicrobatchLoss loss(const at::Tensor& x, const at::Tensor& y) override {
    (void)y;  // unconditional (the config check refuses --num-classes)
    const int64_t n = x.size(0);
    const at::Tensor low = area_downsample(x, config_.low_res);  // (n, C, N, N)
    at::Tensor levels, cond = low;
    if (config_.cond_aug_max > 0) {
      levels = diffusion::sample_augmentation_levels(n, config_.cond_aug_max, device_);        // (n)
      cond = diffusion::augment_condition(*diffusion_, low, levels, at::randn_like(low));     // (n, C, N, N)
    }
    const diffusion::TimestepSample ts = timestep_sampler_->sample(n, std::nullopt, device_);
    const at::Tensor noise = at::randn_like(x);  // (n, C, H, W)
    return diffusion_microbatch_loss(
        diffusion_->training_losses(superres_model_fn(net_, *diffusion_, cond, levels), x, ts.t, noise), ts);
  }

  void observe(const at::Tensor& rows) override {
    timestep_sampler_->update_with_all_losses(rows.select(1, 0).to(at::kLong), rows.select(1, 1));
  }

  IndexSampler image_sampler(const EvalRequest& req) override {
    auto net = std::make_shared<model::SuperResUNet>(eval_network(req.weights));
    auto spaced = std::make_shared<const diffusion::GaussianDiffusion>(make_diffusion(config_, req.sample.respacing));
    return [this, net, spaced, sample = req.sample](int64_t begin, int64_t end) {
      const at::Tensor low = low_res_of(begin, end);  // (n, C, N, N)
      return super_resolve(*net, config_, *spaced, sample, low, begin, config_.cond_aug_level, device_);
    };
  }

  // Per sample i: its low-res input (nearest-upsampled), the sample, the original image i.
  std::pair<at::Tensor, int64_t> grid(const at::Tensor& samples) const override {
    const int64_t s = samples.size(0), h = samples.size(2), w = samples.size(3);
    const at::Tensor original = to_model_input(dataset_images_by_index(config_.data, 0, s));  // (S, C, H, W)
    const at::Tensor low = at::upsample_nearest2d(area_downsample(original, config_.low_res), {h, w});
    const at::Tensor tiles = at::stack({low, samples.to(at::kFloat), original}, 1).flatten(0, 1);  // (3S, C, H, W)
    return {tiles, 3 * static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(s))))};
  }

  BpdSummary bits_per_dim(const model::TensorDict&, const at::Tensor&, int64_t, int64_t, uint64_t,
                          dist::Communicator&) override {
    throw std::invalid_argument("--bpd-every: --task superres has no bits/dim evaluation; give --bpd-every 0");
  }

 private:
  void check_data(const data::DatasetInfo& info) const {
    check_unet_channels(config_, info);
    if (info.height != info.width) {
      throw std::invalid_argument("--data " + config_.data + ": --task superres needs square images, these are " +
                                  std::to_string(info.height) + "x" + std::to_string(info.width));
    }
    area_downsample(at::zeros({1, 1, info.height, info.width}), config_.low_res);  // throws naming --low-res
  }

  // The conditioning of samples [begin, end): dataset images i mod count, area-downsampled.
  at::Tensor low_res_of(int64_t begin, int64_t end) const {
    const at::Tensor images = to_model_input(dataset_images_by_index(config_.data, begin, end));  // (n, C, H, W)
    return area_downsample(images, config_.low_res);
  }

  model::SuperResUNet eval_network(const model::TensorDict& weights) const {
    model::SuperResUNet net = make_superres_unet(config_);
    net->to(device_);
    copy_weights(*net, weights, *net_);
    net->eval();
    return net;
  }

  TrainConfig config_;
  c10::Device device_;
  model::SuperResUNet net_{nullptr};
  std::unique_ptr<diffusion::GaussianDiffusion> diffusion_;
  std::unique_ptr<diffusion::TimestepSampler> timestep_sampler_;
};

}  // namespace

std::unique_ptr<TrainTask> make_superres_task(const TrainConfig& config, const data::DatasetInfo& info,
                                              const c10::Device& device) {
  return std::make_unique<SuperResTask>(config, info, device);
}

}  // namespace ddpm::trainer::detail
