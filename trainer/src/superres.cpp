// Super-resolution models outside the training loop; see ddpm/trainer/superres.h.
#include "ddpm/trainer/superres.h"

#include <torch/torch.h>

#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/model/diffusion/cond_aug.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/factory.h"

namespace ddpm::trainer {

model::SuperResUNet make_superres_unet(const TrainConfig& config) {
  return model::SuperResUNet(make_unet_options(config), config.cond_aug_max > 0);
}

at::Tensor area_downsample(const at::Tensor& images, int64_t n) {
  TORCH_CHECK(images.dim() == 4, "area_downsample: images must be (N, C, H, W), got ", images.sizes());
  const int64_t h = images.size(2), w = images.size(3);
  if (n <= 0 || n >= std::min(h, w) || h % n != 0 || w % n != 0) {
    std::string divisors;
    for (int64_t d = 1; d < std::min(h, w); ++d) {
      if (h % d == 0 && w % d == 0) divisors += (divisors.empty() ? "" : ", ") + std::to_string(d);
    }
    throw std::invalid_argument("--low-res " + std::to_string(n) + ": the images are " + std::to_string(h) + "x" +
                                std::to_string(w) + "; give a size below theirs that divides both (" + divisors + ")");
  }
  return at::adaptive_avg_pool2d(images, {n, n});  // (N, C, n, n): exact blocks of (H/n, W/n)
}

diffusion::ModelFn superres_model_fn(model::SuperResUNet& net, const diffusion::GaussianDiffusion& train_diffusion,
                                     at::Tensor low_res, at::Tensor levels) {
  const at::Tensor s = levels.defined() ? train_diffusion.model_timesteps(levels) : at::Tensor();
  return [&net, low_res, s](const at::Tensor& x_t, const at::Tensor& t) { return net->forward(x_t, t, low_res, s); };
}

at::Tensor super_resolve(model::SuperResUNet& net, const TrainConfig& config,
                         const diffusion::GaussianDiffusion& spaced, const SampleRequest& req,
                         const at::Tensor& low_res, int64_t first, int64_t level, const c10::Device& device) {
  torch::NoGradGuard no_grad;
  const int64_t n = low_res.size(0);
  if (level > 0 && !net->has_aug_embedding()) {
    throw std::invalid_argument("--cond-aug-level " + std::to_string(level) + ": the super-resolution model was "
                                "trained without conditioning augmentation (cond_aug_max 0); give 0");
  }
  std::vector<at::Generator> gens;
  for (int64_t i = first; i < first + n; ++i) gens.push_back(sample_generator(req.seed, i));
  const at::Tensor eps = draw_per_sample(gens, low_res.sizes().slice(1), device);  // (n, C, h, w)
  const at::Tensor low = low_res.to(device, at::kFloat);
  const diffusion::GaussianDiffusion train = make_diffusion(config);  // levels index its schedule
  at::Tensor levels, cond = low;
  if (net->has_aug_embedding()) {
    levels = at::full({n}, level, at::TensorOptions().dtype(at::kLong).device(device));
    cond = diffusion::augment_condition(train, low, levels, eps);  // (n, C, h, w)
  }
  return sample_with_generators(superres_model_fn(net, train, cond, levels), spaced, req, gens, device);
}

LoadedSuperRes load_superres_model(const std::string& spec, const std::string& ema, const c10::Device& device) {
  CheckpointWeights w = load_checkpoint_weights(spec, ema, "--cascade (the SR run)");
  if (w.config.task != "superres") {
    throw std::invalid_argument(spec + ": a --task " + w.config.task + " run, not a super-resolution model; give a "
                                "run trained with ddpm_train --task superres (the second run of --cascade)");
  }
  LoadedSuperRes m;
  m.config = std::move(w.config);
  m.checkpoint = std::move(w.checkpoint);
  m.step = w.step;
  m.ema_rate = w.ema_rate;
  m.net = make_superres_unet(m.config);
  model::load_state_dict(*m.net, w.weights, w.source);
  m.net->to(device);
  m.net->eval();
  return m;
}

at::Tensor dataset_images_by_index(const std::string& path, int64_t begin, int64_t end) {
  const data::ImageDataset ds = data::ImageDataset::open(path);
  const data::DatasetInfo& info = ds.info();
  std::vector<at::Tensor> parts;
  for (int64_t i = begin; i < end;) {
    const int64_t at = i % info.count, n = std::min(end - i, info.count - at);
    parts.push_back(ds.read_images(at, n));
    i += n;
  }
  if (parts.empty()) return at::empty({0, info.height, info.width, info.channels}, at::kByte);
  return at::cat(parts, 0);  // (end - begin, H, W, C)
}

}  // namespace ddpm::trainer
