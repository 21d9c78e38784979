// Super-resolution models of a cascade (Ho et al. 2021; improved-diffusion's SuperResModel) outside
// the training loop: the network of a --task superres config, its checkpoints, the low-resolution
// inputs (area downsampling, as improved-diffusion's super_res_train.py) and super-resolving with
// noise per global sample index. The task (src/superres_task.cpp) and ddpm_sample --cascade use
// them. Conditioning augmentation: model/diffusion/cond_aug.h.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/unet/superres.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

// The super-resolution U-Net of a config: make_unet_options(config) describe the high-resolution
// images; aug_embed when cond_aug_max > 0 (the level is an input).
model::SuperResUNet make_superres_unet(const TrainConfig& config);

// images (N, C, H, W) float -> (N, C, n, n): the mean of each (H/n x W/n) block (F.interpolate
// mode="area"). Throws std::invalid_argument naming --low-res when n does not divide H and W or is
// not smaller.
at::Tensor area_downsample(const at::Tensor& images, int64_t n);

// The network as the diffusion calls it, conditioned on low_res (N, C, h, w) (augmented already)
// and, for a network with aug_embed, the levels s (N) int64, which it sees as train_diffusion shows
// timesteps (model_timesteps: t * 1000 / T under rescale_timesteps). `net` is held by reference.
diffusion::ModelFn superres_model_fn(model::SuperResUNet& net, const diffusion::GaussianDiffusion& train_diffusion,
                                     at::Tensor low_res, at::Tensor levels);

// Super-resolves low_res (n, C, h, w) in [-1, 1], the conditioning of global sample indices
// [first, first + n), with `spaced` (req's respacing of the run's diffusion) and req's sampler.
// Sample i draws from sample_generator(req.seed, i): first the augmentation noise (C, h, w) (at
// every level, so the rest does not depend on it), then x_T and each step's noise as
// sample_indices. The low-res images are augmented to `level` (0: used as they are).
// -> (n, C, req.height, req.width) float in [-1, 1] on the CPU.
at::Tensor super_resolve(model::SuperResUNet& net, const TrainConfig& config,
                         const diffusion::GaussianDiffusion& spaced, const SampleRequest& req,
                         const at::Tensor& low_res, int64_t first, int64_t level, const c10::Device& device);

// A --task superres checkpoint ready for sampling (eval mode). spec and ema as load_model's;
// throws std::invalid_argument when the run is not a superres run.
struct LoadedSuperRes {
  TrainConfig config;
  model::SuperResUNet net{nullptr};
  std::string checkpoint;
  int64_t step = 0;
  std::optional<double> ema_rate;
};
LoadedSuperRes load_superres_model(const std::string& spec, const std::string& ema, const c10::Device& device);

// Images of global indices [begin, end) of a dataset, wrapping around its end (index i is image
// i mod count): uint8 (end - begin, H, W, C). The grids and FIDs of a superres run condition on them.
at::Tensor dataset_images_by_index(const std::string& path, int64_t begin, int64_t end);

}  // namespace ddpm::trainer
