// Exponential moving average of parameters (Polyak averaging, as in Ho et al. 2020 and
// improved-diffusion): ema <- rate * ema + (1 - rate) * param, in place, over many tensors at once.
// CPU and other devices use torch's foreach lerp; CUDA float32/bf16 uses one multi-tensor kernel.
#pragma once
#include <ATen/core/Tensor.h>

namespace ddpm::ops {

// ema[i] <- rate * ema[i] + (1 - rate) * params[i] for every i, in place; rate in [0, 1].
// Pairs must match in shape, dtype and device. On CUDA, contiguous float32 or bfloat16 pairs go
// through the multi-tensor kernel (ema_kernel.cu, math in float32); everything else through
// at::_foreach_lerp_ (ema + (1 - rate)(param - ema), one pass; equal to the reference up to
// rounding, exact at rate 0 and 1). No autograd: call it outside the graph (params are read, not tracked).
void ema_update_(at::TensorList ema, at::TensorList params, double rate);

// The LibTorch reference: at::_foreach_mul_(ema, rate); at::_foreach_add_(ema, params, 1 - rate).
void ema_update_reference_(at::TensorList ema, at::TensorList params, double rate);

}  // namespace ddpm::ops
