// The super-resolution U-Net of a cascade (improved-diffusion's SuperResModel; Ho et al. 2021,
// cascaded diffusion): the ADM U-Net on x_t concatenated with the low-resolution image upsampled
// bilinearly to x_t's size, so the first convolution takes 2C channels. Its state_dict is the
// UNet's of those options (in_channels = 2C), key for key: improved-diffusion's SuperResModel
// weights load as they are. Our extension, when built with an augmentation embedding: Gaussian
// conditioning augmentation's level s (a timestep, model/diffusion/cond_aug.h) enters through
// aug_embed (aug_embed.0 Linear(mc, 4mc), SiLU, aug_embed.2 Linear(4mc, 4mc), zero-initialised
// output, registered last) applied to timestep_embedding(s) and added to the time embedding.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include "ddpm/model/unet/unet.h"

namespace ddpm::model {

class SuperResUNetImpl : public UNetImpl {
 public:
  // `options` are those of the high-resolution images: in_channels = C of x_t (the network's first
  // convolution takes 2C). aug_embedding: the level of conditioning augmentation is an input.
  SuperResUNetImpl(UNetOptions options, bool aug_embedding);
  // x_t (N, C, H, W); t (N) timesteps; low_res (N, C, h, w), upsampled bilinearly (align_corners
  // false, as F.interpolate(mode="bilinear")) to (H, W); aug_level (N) the augmentation level,
  // int64 or float, given exactly when has_aug_embedding(); y (N) labels when class-conditional.
  // -> (N, output_channels(), H, W)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& low_res,
                     const at::Tensor& aug_level = {}, const at::Tensor& y = {});

  int64_t image_channels() const { return image_channels_; }  // C
  bool has_aug_embedding() const { return !aug_embed_.is_empty(); }

 private:
  int64_t image_channels_;
  torch::nn::Sequential aug_embed_{nullptr};
};
TORCH_MODULE(SuperResUNet);

// `low_res` (N, C, h, w) -> (N, C, H, W): bilinear, align_corners false (the SuperResModel's input).
at::Tensor upsample_bilinear(const at::Tensor& low_res, int64_t height, int64_t width);

}  // namespace ddpm::model
