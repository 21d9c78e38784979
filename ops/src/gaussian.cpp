// Gaussian building blocks of the diffusion losses; see ddpm/ops/gaussian.h.
#include "ddpm/ops/gaussian.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <numbers>

namespace ddpm::ops {

at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1,
                     const at::Tensor& mean2, const at::Tensor& logvar2) {
  return 0.5 * (-1.0 + logvar2 - logvar1 + at::exp(logvar1 - logvar2) +
                (mean1 - mean2).pow(2) * at::exp(-logvar2));
}

at::Tensor approx_standard_normal_cdf(const at::Tensor& x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * (1.0 + at::tanh(k * (x + 0.044715 * x.pow(3))));
}

at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales) {
  TORCH_CHECK(x.sizes() == means.sizes() && x.sizes() == log_scales.sizes(),
              "discretized_gaussian_log_likelihood: shapes differ: x ", x.sizes(), ", means ",
              means.sizes(), ", log_scales ", log_scales.sizes());
  const double half_bin = 1.0 / 255.0;
  const at::Tensor centered_x = x - means;
  const at::Tensor inv_stdv = at::exp(-log_scales);
  const at::Tensor cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + half_bin));
  const at::Tensor cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - half_bin));
  const at::Tensor log_cdf_plus = at::log(cdf_plus.clamp_min(1e-12));
  const at::Tensor log_one_minus_cdf_min = at::log((1.0 - cdf_min).clamp_min(1e-12));
  const at::Tensor cdf_delta = cdf_plus - cdf_min;
  // Edge bins take the whole tail; 0.999 is improved-diffusion's threshold for "at the edge".
  return at::where(x < -0.999, log_cdf_plus,
                   at::where(x > 0.999, log_one_minus_cdf_min, at::log(cdf_delta.clamp_min(1e-12))));
}

at::Tensor mean_flat(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "mean_flat: expected a batched tensor, got a scalar");
  if (x.dim() == 1) return x.clone();
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  return x.mean(dims);
}

}  // namespace ddpm::ops
