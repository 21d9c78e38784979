// The kernels behind ddpm::ops::group_norm_silu_fused (private to ddpm::ops): one pass per group
// (n, g) for forward and backward, on the CPU (group_norm_silu_cpu.cpp, a plain loop used by
// tests) and on CUDA (group_norm_silu_kernel.cu, compiled when DDPM_WITH_CUDA). Both use the
// element formulas below, so the CPU test checks the same algebra the CUDA kernel runs.
//
// Forward, per group of M = (C/G) * H * W elements:
//   mean, rstd = 1/sqrt(var + eps)   (two passes: the mean, then the centred squares)
//   xhat = (x - mean) rstd;  z = xhat k_c + b_c  with k_c = gamma_c (1 + s_nc), b_c = beta_c (1 + s_nc) + t_nc
//   y = z sigmoid(z)
// Backward, with dz = dy sigmoid(z) (1 + z (1 - sigmoid(z))), S1_c = sum_hw dz, S2_c = sum_hw dz xhat:
//   dshift_nc = S1_c, dscale_nc = gamma_c S2_c + beta_c S1_c,
//   dgamma_c = sum_n (1 + s_nc) S2_c, dbeta_c = sum_n (1 + s_nc) S1_c,
//   dx = rstd (k_c dz - m1 - xhat m2),  m1 = sum_c k_c S1_c / M,  m2 = sum_c k_c S2_c / M.
#pragma once
#include <ATen/core/Tensor.h>

#include <cmath>

#if defined(__CUDACC__)
#define DDPM_GNS_HD __host__ __device__ __forceinline__
#else
#define DDPM_GNS_HD inline
#endif

namespace ddpm::ops::gns {

// Shape and layout of x (N, C, H*W): NCHW-contiguous or channels-last (NHWC-contiguous).
struct Shape {
  int64_t n, c, hw, groups;
  bool channels_last;
  DDPM_GNS_HD int64_t cpg() const { return c / groups; }  // channels per group
  DDPM_GNS_HD int64_t stride_n() const { return c * hw; }
  DDPM_GNS_HD int64_t stride_c() const { return channels_last ? 1 : hw; }
  DDPM_GNS_HD int64_t stride_hw() const { return channels_last ? c : 1; }
};

DDPM_GNS_HD float exp_(float v) { return expf(v); }
DDPM_GNS_HD double exp_(double v) { return exp(v); }
DDPM_GNS_HD float sqrt_(float v) { return sqrtf(v); }
DDPM_GNS_HD double sqrt_(double v) { return sqrt(v); }

template <typename T>
DDPM_GNS_HD T sigmoid(T z) {
  return T(1) / (T(1) + exp_(-z));
}
// d SiLU(z) / dz = sigmoid(z) (1 + z (1 - sigmoid(z))).
template <typename T>
DDPM_GNS_HD T silu_grad(T z, T sig) {
  return sig * (T(1) + z * (T(1) - sig));
}

// Inputs and outputs of one forward call. Parameters are contiguous tensors in the accumulation
// dtype (float32; float64 for float64 x); scale/shift (N, C) are undefined when absent. x and y
// share the layout `shape` describes; mean, rstd are (N, G).
struct Forward {
  at::Tensor x, gamma, beta, scale, shift;
  Shape shape;
  double eps;
  at::Tensor y, mean, rstd;
};

// One backward call: dy in x's layout; dx likewise; dscale, dshift (N, C) (undefined when
// absent), dgamma_n, dbeta_n (N, C) per-image parts of dgamma, dbeta (summed over n by the caller).
struct Backward {
  at::Tensor dy, x, gamma, beta, scale, shift, mean, rstd;
  Shape shape;
  at::Tensor dx, dscale, dshift, dgamma_n, dbeta_n;
};

void forward_cpu(Forward& f);
void backward_cpu(Backward& b);
#if DDPM_WITH_CUDA
void forward_cuda(Forward& f);
void backward_cuda(Backward& b);
#endif

}  // namespace ddpm::ops::gns
