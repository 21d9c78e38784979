// Gaussian building blocks of the diffusion losses (Ho et al. 2020, Nichol & Dhariwal 2021):
// KL between diagonal Gaussians, the discretized Gaussian decoder likelihood, and mean_flat.
// Pure tensor functions, any dtype and device; they broadcast like torch's elementwise ops.
#pragma once
#include <ATen/core/Tensor.h>

namespace ddpm::ops {

// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.
at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1,
                     const at::Tensor& mean2, const at::Tensor& logvar2);

// Fast approximation of the standard normal CDF (Page 1977, the tanh form improved-diffusion uses):
// 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
at::Tensor approx_standard_normal_cdf(const at::Tensor& x);

// log p(x | means, exp(log_scales)) of data x in [-1, 1] quantised to 256 levels: bins of width
// 2/255, with the outermost bins extended to -inf and +inf. Shapes all equal; returns nats.
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales);

// Mean over every dimension except the first: (N, ...) -> (N).
at::Tensor mean_flat(const at::Tensor& x);

}  // namespace ddpm::ops
