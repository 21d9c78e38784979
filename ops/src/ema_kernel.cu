// CUDA multi-tensor EMA update: ema <- rate * ema + (1 - rate) * param for many tensors in one
// launch. Tensor pointers and a (tensor, chunk) work list travel in the kernel's argument block
// (no device allocation, no host-to-device copy); each CUDA block handles one chunk.
#include "ema_kernel.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>

namespace ddpm::ops::cuda {

namespace {

constexpr int kMaxTensors = 36;     // argument block stays under the 4 KiB kernel-parameter limit
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;   // elements per CUDA block
constexpr int kThreads = 512;

struct EmaLaunch {
  void* ema[kMaxTensors];
  const void* param[kMaxTensors];
  int64_t numel[kMaxTensors];
  int block_tensor[kMaxBlocks];     // which tensor block b works on
  int block_chunk[kMaxBlocks];      // which kChunk-sized piece of it
};
static_assert(sizeof(EmaLaunch) <= 4096, "kernel argument block too large");

__device__ inline float load_f(const float* p, int64_t i) { return p[i]; }
__device__ inline float load_f(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ inline void store_f(float* p, int64_t i, float v) { p[i] = v; }
__device__ inline void store_f(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

template <typename T>
__global__ void ema_kernel(EmaLaunch args, float rate, float one_minus_rate) {
  const int t = args.block_tensor[blockIdx.x];
  T* ema = static_cast<T*>(args.ema[t]);
  const T* param = static_cast<const T*>(args.param[t]);
  const int64_t begin = static_cast<int64_t>(args.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(begin + kChunk, args.numel[t]);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float e = load_f(ema, i);
    const float p = load_f(param, i);
    store_f(ema, i, e * rate + p * one_minus_rate);
  }
}

template <typename T>
void launch_all(at::TensorList ema, at::TensorList params, double rate) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  EmaLaunch args{};
  int n_tensors = 0;  // tensors listed in args for the pending launch
  int n_blocks = 0;   // blocks listed for the pending launch
  int slot = -1;      // the current tensor's index in args, -1 when not listed yet
  auto flush = [&]() {
    if (n_blocks > 0) {
      ema_kernel<T><<<n_blocks, kThreads, 0, stream>>>(args, static_cast<float>(rate),
                                                       static_cast<float>(1.0 - rate));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    n_tensors = n_blocks = 0;
    slot = -1;
  };
  for (size_t i = 0; i < ema.size(); ++i) {
    const int64_t numel = ema[i].numel();
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    slot = -1;
    for (int64_t c = 0; c < chunks; ++c) {
      if (n_blocks == kMaxBlocks) flush();
      if (slot < 0) {
        if (n_tensors == kMaxTensors) flush();
        slot = n_tensors++;
        args.ema[slot] = ema[i].data_ptr();
        args.param[slot] = params[i].data_ptr();
        args.numel[slot] = numel;
      }
      args.block_tensor[n_blocks] = slot;
      args.block_chunk[n_blocks] = static_cast<int>(c);
      ++n_blocks;
    }
  }
  flush();
}

}  // namespace

bool ema_kernel_supports(at::TensorList ema, at::TensorList params) {
  if (ema.empty()) return false;
  const at::Device device = ema[0].device();
  const at::ScalarType dtype = ema[0].scalar_type();
  if (!device.is_cuda() || (dtype != at::kFloat && dtype != at::kBFloat16)) return false;
  for (size_t i = 0; i < ema.size(); ++i) {
    if (ema[i].device() != device || params[i].device() != device) return false;
    if (ema[i].scalar_type() != dtype || params[i].scalar_type() != dtype) return false;
    if (!ema[i].is_contiguous() || !params[i].is_contiguous()) return false;
    if (ema[i].numel() != params[i].numel()) return false;
    if (ema[i].numel() / kChunk >= INT32_MAX) return false;
  }
  return true;
}

void ema_update_cuda_(at::TensorList ema, at::TensorList params, double rate) {
  TORCH_CHECK(ema_kernel_supports(ema, params),
              "ema_update_cuda_: needs contiguous CUDA float32/bfloat16 pairs on one device");
  const c10::cuda::CUDAGuard guard(ema[0].device());
  if (ema[0].scalar_type() == at::kFloat) {
    launch_all<float>(ema, params, rate);
  } else {
    launch_all<__nv_bfloat16>(ema, params, rate);
  }
}

}  // namespace ddpm::ops::cuda
