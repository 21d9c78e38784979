// The CPU loop of the fused GroupNorm + scale/shift + SiLU (formulas in group_norm_silu_kernel.h):
// one group (n, g) at a time, groups in parallel. It exists so that the CPU tests check the
// fused algebra (statistics, the closed-form backward) that the CUDA kernel runs; the U-Net
// uses the plain ATen path on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "group_norm_silu_kernel.h"

namespace ddpm::ops::gns {
namespace {

// Per-channel constants k_c = gamma_c (1 + s_nc), b_c = beta_c (1 + s_nc) + t_nc.
template <typename acc_t>
struct Affine {
  acc_t k, b, one_plus_s;
};

template <typename acc_t>
Affine<acc_t> affine(const acc_t* gamma, const acc_t* beta, const acc_t* scale, const acc_t* shift, int64_t n,
                     int64_t ch, int64_t c) {
  const acc_t ops = scale ? acc_t(1) + scale[n * c + ch] : acc_t(1);
  const acc_t t = shift ? shift[n * c + ch] : acc_t(0);
  return {gamma[ch] * ops, beta[ch] * ops + t, ops};
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename scalar_t>
void forward_impl(Forward& f) {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape s = f.shape;
  const int64_t cpg = s.cpg(), sc = s.stride_c(), shw = s.stride_hw();
  const acc_t m = static_cast<acc_t>(cpg * s.hw);
  const scalar_t* x = f.x.data_ptr<scalar_t>();
  scalar_t* y = f.y.data_ptr<scalar_t>();
  const acc_t *gamma = f.gamma.data_ptr<acc_t>(), *beta = f.beta.data_ptr<acc_t>();
  const acc_t *scale = ptr_or_null<acc_t>(f.scale), *shift = ptr_or_null<acc_t>(f.shift);
  acc_t *mean_out = f.mean.data_ptr<acc_t>(), *rstd_out = f.rstd.data_ptr<acc_t>();
  at::parallel_for(0, s.n * s.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / s.groups, c0 = (ng % s.groups) * cpg;
      const int64_t base = n * s.stride_n() + c0 * sc;
      acc_t sum = 0, sq = 0;
      for (int64_t c = 0; c < cpg; ++c)
        for (int64_t i = 0; i < s.hw; ++i) sum += static_cast<acc_t>(x[base + c * sc + i * shw]);
      const acc_t mean = sum / m;
      for (int64_t c = 0; c < cpg; ++c)
        for (int64_t i = 0; i < s.hw; ++i) {
          const acc_t d = static_cast<acc_t>(x[base + c * sc + i * shw]) - mean;
          sq += d * d;
        }
      const acc_t rstd = acc_t(1) / sqrt_(sq / m + static_cast<acc_t>(f.eps));
      mean_out[ng] = mean;
      rstd_out[ng] = rstd;
      for (int64_t c = 0; c < cpg; ++c) {
        const Affine<acc_t> a = affine(gamma, beta, scale, shift, n, c0 + c, s.c);
        for (int64_t i = 0; i < s.hw; ++i) {
          const int64_t j = base + c * sc + i * shw;
          const acc_t z = (static_cast<acc_t>(x[j]) - mean) * rstd * a.k + a.b;
          y[j] = static_cast<scalar_t>(z * sigmoid(z));
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(Backward& b) {
  using acc_t = at::opmath_type<scalar_t>;
  const Shape s = b.shape;
  const int64_t cpg = s.cpg(), sc = s.stride_c(), shw = s.stride_hw();
  const acc_t m = static_cast<acc_t>(cpg * s.hw);
  const scalar_t *x = b.x.data_ptr<scalar_t>(), *dy = b.dy.data_ptr<scalar_t>();
  scalar_t* dx = b.dx.data_ptr<scalar_t>();
  const acc_t *gamma = b.gamma.data_ptr<acc_t>(), *beta = b.beta.data_ptr<acc_t>();
  const acc_t *scale = ptr_or_null<acc_t>(b.scale), *shift = ptr_or_null<acc_t>(b.shift);
  const acc_t *mean = b.mean.data_ptr<acc_t>(), *rstd = b.rstd.data_ptr<acc_t>();
  acc_t* dscale = b.dscale.defined() ? b.dscale.data_ptr<acc_t>() : nullptr;
  acc_t* dshift = b.dshift.defined() ? b.dshift.data_ptr<acc_t>() : nullptr;
  acc_t *dgamma_n = b.dgamma_n.data_ptr<acc_t>(), *dbeta_n = b.dbeta_n.data_ptr<acc_t>();
  at::parallel_for(0, s.n * s.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / s.groups, c0 = (ng % s.groups) * cpg;
      const int64_t base = n * s.stride_n() + c0 * sc;
      const acc_t mu = mean[ng], r = rstd[ng];
      acc_t m1 = 0, m2 = 0;  // sum_c k_c S1_c, sum_c k_c S2_c
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = c0 + c;
        const Affine<acc_t> a = affine(gamma, beta, scale, shift, n, ch, s.c);
        acc_t s1 = 0, s2 = 0;
        for (int64_t i = 0; i < s.hw; ++i) {
          const int64_t j = base + c * sc + i * shw;
          const acc_t xh = (static_cast<acc_t>(x[j]) - mu) * r, z = xh * a.k + a.b;
          const acc_t dz = static_cast<acc_t>(dy[j]) * silu_grad(z, sigmoid(z));
          s1 += dz;
          s2 += dz * xh;
        }
        if (dshift) dshift[n * s.c + ch] = s1;
        if (dscale) dscale[n * s.c + ch] = gamma[ch] * s2 + beta[ch] * s1;
        dgamma_n[n * s.c + ch] = a.one_plus_s * s2;
        dbeta_n[n * s.c + ch] = a.one_plus_s * s1;
        m1 += a.k * s1;
        m2 += a.k * s2;
      }
      m1 /= m;
      m2 /= m;
      for (int64_t c = 0; c < cpg; ++c) {
        const Affine<acc_t> a = affine(gamma, beta, scale, shift, n, c0 + c, s.c);
        for (int64_t i = 0; i < s.hw; ++i) {
          const int64_t j = base + c * sc + i * shw;
          const acc_t xh = (static_cast<acc_t>(x[j]) - mu) * r, z = xh * a.k + a.b;
          const acc_t dz = static_cast<acc_t>(dy[j]) * silu_grad(z, sigmoid(z));
          dx[j] = static_cast<scalar_t>(r * (a.k * dz - m1 - xh * m2));
        }
      }
    }
  });
}

}  // namespace

void forward_cpu(Forward& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, f.x.scalar_type(), "group_norm_silu_forward_cpu",
                                  [&] { forward_impl<scalar_t>(f); });
}

void backward_cpu(Backward& b) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, b.x.scalar_type(), "group_norm_silu_backward_cpu",
                                  [&] { backward_impl<scalar_t>(b); });
}

}  // namespace ddpm::ops::gns
