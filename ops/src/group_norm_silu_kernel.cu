// CUDA kernels of the fused GroupNorm + scale/shift + SiLU (formulas in group_norm_silu_kernel.h).
// One CUDA block per group (n, g). Each thread keeps one channel c of the group and walks the
// pixels p, p + P, p + 2P, ... of it, so per-channel sums stay in registers:
//   NCHW: thread t -> (c = t / P, p = t % P)   (a warp reads consecutive pixels of one channel)
//   NHWC: thread t -> (c = t % cpg, p = t / cpg) (a warp reads the group's channels of pixels)
// with cpg * P <= 256 threads, P <= H*W. Forward: 3 reads of x (mean, centred squares, output),
// 1 write. Backward: 2 reads of x and dy, 1 write of dx, per-(n, c) sums to small buffers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "group_norm_silu_kernel.h"

namespace ddpm::ops::gns {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kWarps = kMaxThreads / 32;

// The pixels per channel P walked in parallel and the block size (a multiple of 32).
struct Launch {
  int pixels, threads;
};
Launch launch_for(const Shape& s) {
  const int64_t cpg = s.cpg();
  const int64_t p = std::max<int64_t>(1, std::min<int64_t>(kMaxThreads / cpg, s.hw));
  return {static_cast<int>(p), static_cast<int>((cpg * p + 31) / 32 * 32)};
}

template <typename acc_t>
__device__ acc_t warp_sum(acc_t v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum of v over the block; every thread gets the total. blockDim.x is a multiple of 32, <= 256.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v, acc_t* scratch /* kWarps + 1 */) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // an earlier call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    acc_t t = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : acc_t(0);
    t = warp_sum(t);
    if (lane == 0) scratch[kWarps] = t;
  }
  __syncthreads();
  return scratch[kWarps];
}

// This thread's channel (within the group) and first pixel; inactive threads of the last warp
// take part in the block sums only.
struct Slot {
  int c, p;
  bool active;
};
__device__ Slot slot_of(const Shape& s, int pixels) {
  const int cpg = static_cast<int>(s.cpg()), t = static_cast<int>(threadIdx.x);
  if (t >= cpg * pixels) return {0, 0, false};
  return s.channels_last ? Slot{t % cpg, t / cpg, true} : Slot{t / pixels, t % pixels, true};
}

// k_c, b_c of channel ch of image n (see the header), and 1 + s_nc.
template <typename acc_t>
struct Affine {
  acc_t k, b, one_plus_s;
};
template <typename acc_t>
__device__ Affine<acc_t> affine(const acc_t* gamma, const acc_t* beta, const acc_t* scale, const acc_t* shift,
                                int64_t n, int64_t ch, int64_t c) {
  const acc_t ops = scale ? acc_t(1) + scale[n * c + ch] : acc_t(1);
  const acc_t t = shift ? shift[n * c + ch] : acc_t(0);
  return {gamma[ch] * ops, beta[ch] * ops + t, ops};
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
                               const acc_t* __restrict__ beta, const acc_t* __restrict__ scale,
                               const acc_t* __restrict__ shift, Shape s, int pixels, acc_t eps,
                               scalar_t* __restrict__ y, acc_t* __restrict__ mean_out, acc_t* __restrict__ rstd_out) {
  __shared__ acc_t scratch[kWarps + 1];
  const int64_t ng = blockIdx.x, n = ng / s.groups, ch = (ng % s.groups) * s.cpg();
  const Slot me = slot_of(s, pixels);
  const int64_t off = n * s.stride_n() + (ch + me.c) * s.stride_c(), shw = s.stride_hw();
  const acc_t m = static_cast<acc_t>(s.cpg() * s.hw);
  acc_t sum = 0;
  if (me.active) {
    for (int64_t i = me.p; i < s.hw; i += pixels) sum += static_cast<acc_t>(x[off + i * shw]);
  }
  const acc_t mean = block_sum(sum, scratch) / m;
  acc_t sq = 0;
  if (me.active) {
    for (int64_t i = me.p; i < s.hw; i += pixels) {
      const acc_t d = static_cast<acc_t>(x[off + i * shw]) - mean;
      sq += d * d;
    }
  }
  const acc_t rstd = acc_t(1) / sqrt_(block_sum(sq, scratch) / m + eps);
  if (threadIdx.x == 0) {
    mean_out[ng] = mean;
    rstd_out[ng] = rstd;
  }
  if (!me.active) return;
  const Affine<acc_t> a = affine(gamma, beta, scale, shift, n, ch + me.c, s.c);
  for (int64_t i = me.p; i < s.hw; i += pixels) {
    const acc_t z = (static_cast<acc_t>(x[off + i * shw]) - mean) * rstd * a.k + a.b;
    y[off + i * shw] = static_cast<scalar_t>(z * sigmoid(z));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta,
                                const acc_t* __restrict__ scale, const acc_t* __restrict__ shift,
                                const acc_t* __restrict__ mean, const acc_t* __restrict__ rstd, Shape s, int pixels,
                                scalar_t* __restrict__ dx, acc_t* __restrict__ dscale, acc_t* __restrict__ dshift,
                                acc_t* __restrict__ dgamma_n, acc_t* __restrict__ dbeta_n) {
  __shared__ acc_t scratch[kWarps + 1];
  __shared__ acc_t s1[kMaxThreads], s2[kMaxThreads];  // per (channel, pixel slot): index c * P + p
  const int64_t ng = blockIdx.x, n = ng / s.groups, ch = (ng % s.groups) * s.cpg();
  const int cpg = static_cast<int>(s.cpg());
  const Slot me = slot_of(s, pixels);
  const int64_t off = n * s.stride_n() + (ch + me.c) * s.stride_c(), shw = s.stride_hw();
  const acc_t mu = mean[ng], r = rstd[ng];
  const Affine<acc_t> a = affine(gamma, beta, scale, shift, n, ch + me.c, s.c);
  // Pass 1: S1, S2 of this thread's pixels, then summed per channel by a tree over p.
  acc_t a1 = 0, a2 = 0;
  if (me.active) {
    for (int64_t i = me.p; i < s.hw; i += pixels) {
      const acc_t xh = (static_cast<acc_t>(x[off + i * shw]) - mu) * r, z = xh * a.k + a.b;
      const acc_t dz = static_cast<acc_t>(dy[off + i * shw]) * silu_grad(z, sigmoid(z));
      a1 += dz;
      a2 += dz * xh;
    }
    s1[me.c * pixels + me.p] = a1;
    s2[me.c * pixels + me.p] = a2;
  }
  __syncthreads();
  int p2 = 1;
  while (p2 < pixels) p2 <<= 1;
  const int t = static_cast<int>(threadIdx.x), tc = t / pixels, tp = t % pixels;  // tree slot of thread t
  for (int stride = p2 / 2; stride > 0; stride >>= 1) {
    if (t < cpg * pixels && tp < stride && tp + stride < pixels) {
      s1[tc * pixels + tp] += s1[tc * pixels + tp + stride];
      s2[tc * pixels + tp] += s2[tc * pixels + tp + stride];
    }
    __syncthreads();
  }
  // Per-channel outputs (threads t < cpg own channel t) and the group sums m1, m2.
  acc_t ks1 = 0, ks2 = 0;
  if (t < cpg) {
    const int64_t c = ch + t;
    const acc_t S1 = s1[t * pixels], S2 = s2[t * pixels];
    const Affine<acc_t> aff = affine(gamma, beta, scale, shift, n, c, s.c);
    if (dshift) dshift[n * s.c + c] = S1;
    if (dscale) dscale[n * s.c + c] = gamma[c] * S2 + beta[c] * S1;
    dgamma_n[n * s.c + c] = aff.one_plus_s * S2;
    dbeta_n[n * s.c + c] = aff.one_plus_s * S1;
    ks1 = aff.k * S1;
    ks2 = aff.k * S2;
  }
  const acc_t m = static_cast<acc_t>(s.cpg() * s.hw);
  const acc_t m1 = block_sum(ks1, scratch) / m;
  const acc_t m2 = block_sum(ks2, scratch) / m;
  if (!me.active) return;
  // Pass 2: dx.
  for (int64_t i = me.p; i < s.hw; i += pixels) {
    const acc_t xh = (static_cast<acc_t>(x[off + i * shw]) - mu) * r, z = xh * a.k + a.b;
    const acc_t dz = static_cast<acc_t>(dy[off + i * shw]) * silu_grad(z, sigmoid(z));
    dx[off + i * shw] = static_cast<scalar_t>(r * (a.k * dz - m1 - xh * m2));
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

void forward_cuda(Forward& f) {
  const c10::cuda::CUDAGuard guard(f.x.device());
  const Launch l = launch_for(f.shape);
  const dim3 grid(static_cast<unsigned>(f.shape.n * f.shape.groups));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, f.x.scalar_type(), "group_norm_silu_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<grid, l.threads, 0, stream>>>(
        f.x.data_ptr<scalar_t>(), f.gamma.data_ptr<acc_t>(), f.beta.data_ptr<acc_t>(), ptr_or_null<acc_t>(f.scale),
        ptr_or_null<acc_t>(f.shift), f.shape, l.pixels, static_cast<acc_t>(f.eps), f.y.data_ptr<scalar_t>(),
        f.mean.data_ptr<acc_t>(), f.rstd.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_cuda(Backward& b) {
  const c10::cuda::CUDAGuard guard(b.x.device());
  const Launch l = launch_for(b.shape);
  const dim3 grid(static_cast<unsigned>(b.shape.n * b.shape.groups));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, b.x.scalar_type(), "group_norm_silu_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t, acc_t><<<grid, l.threads, 0, stream>>>(
        b.dy.data_ptr<scalar_t>(), b.x.data_ptr<scalar_t>(), b.gamma.data_ptr<acc_t>(), b.beta.data_ptr<acc_t>(),
        ptr_or_null<acc_t>(b.scale), ptr_or_null<acc_t>(b.shift), b.mean.data_ptr<acc_t>(),
        b.rstd.data_ptr<acc_t>(), b.shape, l.pixels, b.dx.data_ptr<scalar_t>(), mut_ptr_or_null<acc_t>(b.dscale),
        mut_ptr_or_null<acc_t>(b.dshift), b.dgamma_n.data_ptr<acc_t>(), b.dbeta_n.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace ddpm::ops::gns
