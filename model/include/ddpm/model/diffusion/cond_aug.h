// Gaussian conditioning augmentation (Ho et al. 2021, "Cascaded Diffusion Models", section 4.1):
// the low-resolution image a super-resolution model is conditioned on is corrupted by the forward
// process of the diffusion's own schedule to a level s, and s is given to the network. Training
// draws s uniformly in {0, ..., s_max}; sampling uses one fixed s. Level s means
//   z_s = sqrt(abar'_s) x_low + sqrt(1 - abar'_s) eps,  abar'_s = prod_{i < s} (1 - beta_i),
// the schedule's alphas_cumprod_prev, so s = 0 is the clean image and s = t + 1 is q(x_t | x_0).
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

// z_s of low_res (N, C, h, w) at levels s (N) int64 in [0, T - 1] with noise (N, C, h, w); the
// coefficients are gathered from the float64 schedule of `d` (unrespaced: levels are indices of
// its own schedule). -> (N, C, h, w) in low_res' dtype.
at::Tensor augment_condition(const GaussianDiffusion& d, const at::Tensor& low_res, const at::Tensor& s,
                             const at::Tensor& noise);

// n levels drawn uniformly from {0, ..., s_max} (int64 (n) on `device`), from `generator` or the
// global one.
at::Tensor sample_augmentation_levels(int64_t n, int64_t s_max, const c10::Device& device,
                                      std::optional<at::Generator> generator = std::nullopt);

}  // namespace ddpm::diffusion
