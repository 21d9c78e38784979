// GroupNorm + optional AdaGN scale/shift + SiLU in one pass, forward and backward:
//   y = SiLU(GroupNorm(x; gamma, beta) * (1 + scale) + shift)
// the chain every residual block of the U-Net runs twice. The fused path reads x once per
// statistic and writes y once (the plain ATen chain writes and re-reads three intermediates and
// saves them for backward); it is a custom autograd function over our own kernels (CUDA:
// group_norm_silu_kernel.cu; CPU: a loop with the same formulas, used by tests). The plain path
// (group_norm_silu_reference) is the U-Net's composition of ATen ops and the fallback everywhere.
#pragma once
#include <ATen/core/Tensor.h>

namespace ddpm::ops {

// The arguments of both paths. x (N, C, H, W) (contiguous or channels-last; other layouts are
// copied), C divisible by `groups`; gamma, beta (C) (float32 parameters); scale, shift (N, C)
// or undefined (both or neither). Statistics, affine, scale/shift and SiLU are computed in
// float32 (float64 for float64 x); y has x's dtype and memory format.
struct GroupNormSiluArgs {
  int64_t groups = 32;
  double eps = 1e-5;
};

// The plain path, as the U-Net computed it before fusion: GroupNorm in float32 (autocast off,
// cast back to x's dtype), then * (1 + scale) + shift and SiLU in x's dtype. Autograd by ATen.
at::Tensor group_norm_silu_reference(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                     const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args);

// True when the fused kernels take these inputs: float32/bfloat16/float16/float64 x, at most
// 256 channels per group, and on CUDA only when this build has our CUDA code (DDPM_WITH_CUDA).
// `allow_cpu` admits CPU tensors (the CPU loop; the U-Net never asks for it).
bool group_norm_silu_fused_supports(const at::Tensor& x, int64_t groups, bool allow_cpu = false);

// The fused path (custom autograd function; first derivatives only). Throws c10::Error naming
// the reason when group_norm_silu_fused_supports(x, groups, true) is false.
at::Tensor group_norm_silu_fused(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                 const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args);

// The fused path for CUDA tensors it supports, the reference otherwise (CPU included): what the
// U-Net calls when its fused_group_norm option is on.
at::Tensor group_norm_silu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args);

}  // namespace ddpm::ops
