// GroupNorm + scale/shift + SiLU: argument checks, the plain ATen reference, the custom autograd
// function over the fused kernels (group_norm_silu_kernel.h) and the dispatch between them.
// See ddpm/ops/group_norm_silu.h.
#include "ddpm/ops/group_norm_silu.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

#include "group_norm_silu_kernel.h"

namespace ddpm::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_args(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& scale,
                const at::Tensor& shift, const GroupNormSiluArgs& args) {
  TORCH_CHECK(x.dim() == 4, "group_norm_silu: x must be (N, C, H, W), got ", x.sizes());
  const int64_t n = x.size(0), c = x.size(1);
  TORCH_CHECK(args.groups > 0 && c % args.groups == 0, "group_norm_silu: ", c, " channels do not split into ",
              args.groups, " groups");
  TORCH_CHECK(gamma.dim() == 1 && gamma.size(0) == c && beta.dim() == 1 && beta.size(0) == c,
              "group_norm_silu: gamma and beta must be (", c, "), got ", gamma.sizes(), " and ", beta.sizes());
  TORCH_CHECK(scale.defined() == shift.defined(), "group_norm_silu: give scale and shift together, or neither");
  if (scale.defined()) {
    TORCH_CHECK(scale.dim() == 2 && scale.size(0) == n && scale.size(1) == c && shift.sizes() == scale.sizes(),
                "group_norm_silu: scale and shift must be (", n, ", ", c, "), got ", scale.sizes(), " and ",
                shift.sizes());
  }
}

at::ScalarType acc_dtype(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// x in a layout the kernels take: NCHW-contiguous or channels-last (copied to NCHW otherwise).
at::Tensor kernel_layout(const at::Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

gns::Shape shape_of(const at::Tensor& x, int64_t groups) {
  // A tensor with H = W = 1 (or C = 1) is both; the NCHW reading is then the right one.
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return {x.size(0), x.size(1), x.size(2) * x.size(3), groups, cl};
}

at::Tensor to_acc(const at::Tensor& t, at::ScalarType acc) {
  return t.defined() ? t.to(acc).contiguous() : at::Tensor();
}

class GroupNormSiluFunction : public torch::autograd::Function<GroupNormSiluFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& gamma,
                            const at::Tensor& beta, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift, int64_t groups, double eps) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const at::Tensor x = kernel_layout(x_in);
    const auto acc = acc_dtype(x);
    gns::Forward f{x, to_acc(gamma, acc), to_acc(beta, acc), to_acc(scale.value_or(at::Tensor()), acc),
                   to_acc(shift.value_or(at::Tensor()), acc), shape_of(x, groups), eps,
                   at::empty_like(x) /* y: x's layout */, at::empty({x.size(0), groups}, x.options().dtype(acc)),
                   at::empty({x.size(0), groups}, x.options().dtype(acc))};
    if (x.is_cuda()) {
#if DDPM_WITH_CUDA
      gns::forward_cuda(f);
#endif
    } else {
      gns::forward_cpu(f);
    }
    ctx->save_for_backward({x, f.gamma, f.beta, f.scale, f.shift, f.mean, f.rstd});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["param_dtype"] = static_cast<int64_t>(gamma.scalar_type());
    ctx->saved_data["scale_dtype"] = static_cast<int64_t>(scale ? scale->scalar_type() : acc);
    return f.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    gns::Backward b{at::Tensor(), x, saved[1], saved[2], saved[3], saved[4], saved[5], saved[6],
                    shape_of(x, ctx->saved_data["groups"].toInt()), {}, {}, {}, {}, {}};
    const auto mf = b.shape.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    b.dy = grads[0].to(x.scalar_type()).contiguous(mf);
    b.dx = at::empty_like(x);
    const at::Tensor per_image = at::empty({b.shape.n, b.shape.c}, b.gamma.options());
    b.dgamma_n = per_image;
    b.dbeta_n = at::empty_like(per_image);
    if (b.scale.defined()) {
      b.dscale = at::empty_like(per_image);
      b.dshift = at::empty_like(per_image);
    }
    if (x.is_cuda()) {
#if DDPM_WITH_CUDA
      gns::backward_cuda(b);
#endif
    } else {
      gns::backward_cpu(b);
    }
    const auto param_dtype = static_cast<at::ScalarType>(ctx->saved_data["param_dtype"].toInt());
    const auto scale_dtype = static_cast<at::ScalarType>(ctx->saved_data["scale_dtype"].toInt());
    const auto cast = [](const at::Tensor& t, at::ScalarType d) { return t.defined() ? t.to(d) : at::Tensor(); };
    return {b.dx,
            b.dgamma_n.sum(0).to(param_dtype),
            b.dbeta_n.sum(0).to(param_dtype),
            cast(b.dscale, scale_dtype),
            cast(b.dshift, scale_dtype),
            at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor group_norm_silu_reference(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                     const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args) {
  check_args(x, gamma, beta, scale, shift, args);
  at::Tensor h;
  {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // as autocast(enabled=False)
    const auto compute = acc_dtype(x);
    h = at::group_norm(x.to(compute), args.groups, gamma.to(compute), beta.to(compute), args.eps)
            .to(x.scalar_type());  // (N, C, H, W)
  }
  if (scale.defined()) {
    h = h * (1 + scale.unsqueeze(-1).unsqueeze(-1)) + shift.unsqueeze(-1).unsqueeze(-1);
  }
  return at::silu(h);
}

bool group_norm_silu_fused_supports(const at::Tensor& x, int64_t groups, bool allow_cpu) {
  if (x.dim() != 4 || x.numel() == 0 || groups <= 0 || x.size(1) % groups != 0) return false;
  if (x.size(1) / groups > 256) return false;  // one CUDA block of <= 256 threads per group
  const auto d = x.scalar_type();
  if (d != at::kFloat && d != at::kBFloat16 && d != at::kHalf && d != at::kDouble) return false;
  if (x.is_cuda()) return DDPM_WITH_CUDA != 0;
  return allow_cpu && x.is_cpu();
}

at::Tensor group_norm_silu_fused(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                 const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args) {
  check_args(x, gamma, beta, scale, shift, args);
  TORCH_CHECK(group_norm_silu_fused_supports(x, args.groups, /*allow_cpu=*/true),
              "group_norm_silu_fused: no fused kernel for x ", x.sizes(), " ", x.scalar_type(), " on ", x.device(),
              " with ", args.groups, " groups (it takes float32/bf16/fp16/float64, <= 256 channels per group, "
              "CPU or CUDA in a build with DDPM_WITH_CUDA); use group_norm_silu, which falls back to the reference");
  TORCH_CHECK(gamma.device() == x.device() && (!scale.defined() || scale.device() == x.device()),
              "group_norm_silu_fused: x, gamma, beta, scale and shift must be on one device");
  std::optional<at::Tensor> s, t;
  if (scale.defined()) {
    s = scale;
    t = shift;
  }
  return GroupNormSiluFunction::apply(x, gamma, beta, s, t, args.groups, args.eps);
}

at::Tensor group_norm_silu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           const at::Tensor& scale, const at::Tensor& shift, GroupNormSiluArgs args) {
  if (x.is_cuda() && group_norm_silu_fused_supports(x, args.groups)) {
    return group_norm_silu_fused(x, gamma, beta, scale, shift, args);
  }
  return group_norm_silu_reference(x, gamma, beta, scale, shift, args);
}

}  // namespace ddpm::ops
