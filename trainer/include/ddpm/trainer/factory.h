// From a TrainConfig to the objects of a run: the U-Net (preset + overrides, learn_sigma from the
// variance type, class-conditional when num_classes > 0) and the GaussianDiffusion (for training,
// or respaced for sampling). Shared by ddpm_train, ddpm_sample and ddpm_eval.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/unet/options.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/config.h"

namespace ddpm::trainer {

// unet_preset(config.model), then config.model_overrides ({"model_channels": 64, "dropout": 0.1,
// "channel_mult": "1,2,2"}: numbers, booleans, strings or lists), learn_sigma for learned
// variances and num_classes when > 0. Throws std::invalid_argument naming the key.
model::UNetOptions make_unet_options(const TrainConfig& config);
model::UNet make_unet(const TrainConfig& config);

// The diffusion of the config; respacing "" keeps every step, else "N", "a,b,c" or "ddimN".
diffusion::DiffusionConfig make_diffusion_config(const TrainConfig& config, const std::string& respacing = "");
diffusion::GaussianDiffusion make_diffusion(const TrainConfig& config, const std::string& respacing = "");
// "ddimN" samples with DDIM; anything else with ancestral sampling.
bool uses_ddim(const std::string& respacing);

// The network as the diffusion calls it, with class labels y (N) int64 bound (undefined: the
// null label for class-conditional models, nothing otherwise). The UNet is held by reference.
diffusion::ModelFn model_fn(model::UNet& unet, at::Tensor labels = {});

}  // namespace ddpm::trainer
