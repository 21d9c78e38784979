// The CUDA multi-tensor EMA update behind ddpm::ops::ema_update_ (compiled when
// DDPM_CUDA_ENABLED). Private to ddpm::ops; callers use ddpm/ops/ema.h.
#pragma once
#include <ATen/core/Tensor.h>

namespace ddpm::ops::cuda {

// True when every pair is a contiguous CUDA float32 or bfloat16 tensor on one device, same
// dtype, same numel: the cases the kernel handles.
bool ema_kernel_supports(at::TensorList ema, at::TensorList params);

// ema[i] <- rate * ema[i] + (1 - rate) * params[i] in float32 arithmetic, one launch per
// up to kMaxTensors tensors / kMaxBlocks chunks, on the current stream.
void ema_update_cuda_(at::TensorList ema, at::TensorList params, double rate);

}  // namespace ddpm::ops::cuda
