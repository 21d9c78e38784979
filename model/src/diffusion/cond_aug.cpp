// Gaussian conditioning augmentation; see ddpm/model/diffusion/cond_aug.h.
#include "ddpm/model/diffusion/cond_aug.h"

#include <ATen/ATen.h>

#include <vector>

namespace ddpm::diffusion {

at::Tensor augment_condition(const GaussianDiffusion& d, const at::Tensor& low_res, const at::Tensor& s,
                             const at::Tensor& noise) {
  TORCH_CHECK(s.dim() == 1 && s.size(0) == low_res.size(0), "augment_condition: s must be (N) with N = ",
              low_res.size(0), ", got ", s.sizes());
  TORCH_CHECK(noise.sizes() == low_res.sizes(), "augment_condition: noise ", noise.sizes(), " must match low_res ",
              low_res.sizes());
  // abar'_s gathered on the CPU in float64, then cast: (N, 1, ..., 1)
  const at::Tensor abar = d.arrays().alphas_cumprod_prev.index_select(0, s.to(at::kCPU, at::kLong));  // (N)
  std::vector<int64_t> shape(low_res.dim(), 1);
  shape[0] = s.size(0);
  const auto like = [&](const at::Tensor& v) { return v.to(low_res.scalar_type()).to(low_res.device()).view(shape); };
  const at::Tensor coef_x = like(abar.sqrt()), coef_eps = like((1.0 - abar).sqrt());
  return coef_x * low_res + coef_eps * noise;  // (N, C, h, w)
}

at::Tensor sample_augmentation_levels(int64_t n, int64_t s_max, const c10::Device& device,
                                      std::optional<at::Generator> generator) {
  TORCH_CHECK(s_max >= 0, "sample_augmentation_levels: s_max must be >= 0, got ", s_max);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  return at::randint(0, s_max + 1, {n}, generator, opts);
}

}  // namespace ddpm::diffusion
