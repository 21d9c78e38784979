// The U-Net's blocks; see ddpm/model/unet/blocks.h. Names follow improved-diffusion's unet.py.
#include "ddpm/model/unet/blocks.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>

#include <cmath>

#include "ddpm/model/unet/gradient_checkpoint.h"
#include "ddpm/ops/group_norm_silu.h"

namespace ddpm::model {
namespace {

template <typename ConvHolder>
ConvHolder zero_init(ConvHolder conv) {
  at::NoGradGuard no_grad;
  conv->weight.zero_();
  if (conv->bias.defined()) conv->bias.zero_();
  return conv;
}

torch::nn::Conv2d conv3x3(int64_t cin, int64_t cout, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(cin, cout, 3).stride(stride).padding(1));
}

std::vector<at::Tensor> params_of(const torch::nn::Module& m) { return m.parameters(/*recurse=*/true); }

}  // namespace

double conv_flops(int64_t cin, int64_t cout, int64_t k, int64_t h, int64_t w) {
  return 2.0 * static_cast<double>(cin) * cout * k * k * h * w;
}

// ---- GroupNorm32 ----------------------------------------------------------------------------

GroupNorm32Impl::GroupNorm32Impl(int64_t channels, int64_t groups, double eps) : groups_(groups), eps_(eps) {
  TORCH_CHECK(channels % groups == 0, "GroupNorm32: ", channels, " channels are not divisible into ", groups,
              " groups; use widths that are multiples of ", groups);
  weight = register_parameter("weight", at::ones({channels}));
  bias = register_parameter("bias", at::zeros({channels}));
}

at::Tensor GroupNorm32Impl::forward(const at::Tensor& x) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // as autocast(enabled=False)
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor y = at::group_norm(x.to(compute), groups_, weight.to(compute), bias.to(compute), eps_);
  return y.to(x.scalar_type());
}

at::Tensor GroupNorm32Impl::forward_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                         bool fused) {
  const ops::GroupNormSiluArgs args{groups_, eps_};
  return fused ? ops::group_norm_silu(x, weight, bias, scale, shift, args)
               : ops::group_norm_silu_reference(x, weight, bias, scale, shift, args);
}

// ---- Downsample / Upsample ------------------------------------------------------------------

Downsample::Downsample(int64_t channels, bool use_conv) : channels_(channels) {
  if (use_conv) op_ = register_module("op", conv3x3(channels, channels, 2));
}

at::Tensor Downsample::forward(const at::Tensor& x, const at::Tensor&) {
  return op_ ? op_->forward(x) : at::avg_pool2d(x, {2, 2}, {2, 2});  // (N, C, H/2, W/2)
}

double Downsample::flops(int64_t& h, int64_t& w) const {
  h /= 2;
  w /= 2;
  return op_ ? conv_flops(channels_, channels_, 3, h, w) : 0.0;
}

Upsample::Upsample(int64_t channels, bool use_conv) : channels_(channels) {
  if (use_conv) conv_ = register_module("conv", conv3x3(channels, channels));
}

at::Tensor Upsample::forward(const at::Tensor& x, const at::Tensor&) {
  at::Tensor up = at::upsample_nearest2d(x, {2 * x.size(2), 2 * x.size(3)});  // (N, C, 2H, 2W)
  return conv_ ? conv_->forward(up) : up;
}

double Upsample::flops(int64_t& h, int64_t& w) const {
  h *= 2;
  w *= 2;
  return conv_ ? conv_flops(channels_, channels_, 3, h, w) : 0.0;
}

// ---- ResBlock -------------------------------------------------------------------------------

ResBlock::ResBlock(const ResBlockOptions& o) : o_(o) {
  const int64_t cout = o.out_channels;
  in_norm_ = GroupNorm32(o.channels);
  in_conv_ = conv3x3(o.channels, cout);
  in_layers_ = register_module("in_layers", torch::nn::Sequential(in_norm_, torch::nn::SiLU(), in_conv_));
  emb_linear_ = torch::nn::Linear(o.emb_channels, o.use_scale_shift_norm ? 2 * cout : cout);
  emb_layers_ = register_module("emb_layers", torch::nn::Sequential(torch::nn::SiLU(), emb_linear_));
  out_norm_ = GroupNorm32(cout);
  dropout_ = torch::nn::Dropout(o.dropout);
  out_conv_ = zero_init(conv3x3(cout, cout));
  out_layers_ = register_module("out_layers",
                                torch::nn::Sequential(out_norm_, torch::nn::SiLU(), dropout_, out_conv_));
  if (cout != o.channels) {
    skip_ = register_module("skip_connection", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.channels, cout, 1)));
  }
}

at::Tensor ResBlock::forward(const at::Tensor& x, const at::Tensor& emb) {
  if (!o_.use_checkpoint || !at::GradMode::is_enabled()) return forward_impl(x, emb);
  auto self = std::static_pointer_cast<ResBlock>(shared_from_this());
  auto fn = [self](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{self->forward_impl(in[0], in[1])}; };
  return gradient_checkpoint(fn, {x, emb}, params_of(*this))[0];
}

at::Tensor ResBlock::forward_impl(const at::Tensor& x_in, const at::Tensor& emb) {
  const bool fused = o_.fused_group_norm;
  at::Tensor x = x_in;                                       // (N, C, H, W)
  at::Tensor h = in_norm_->forward_silu(x, {}, {}, fused);  // in_layers' GroupNorm32 and SiLU
  if (o_.resample == Resample::kUp) {
    h = at::upsample_nearest2d(h, {2 * h.size(2), 2 * h.size(3)});
    x = at::upsample_nearest2d(x, {2 * x.size(2), 2 * x.size(3)});
  } else if (o_.resample == Resample::kDown) {
    h = at::avg_pool2d(h, {2, 2}, {2, 2});
    x = at::avg_pool2d(x, {2, 2}, {2, 2});
  }
  h = in_conv_->forward(h);                                                   // (N, C', H', W')
  const at::Tensor e = emb_linear_->forward(at::silu(emb)).to(h.scalar_type());  // (N, C' or 2C')
  if (o_.use_scale_shift_norm) {
    auto ss = e.chunk(2, 1);  // scale, shift (N, C')
    h = out_norm_->forward_silu(h, ss[0], ss[1], fused);
  } else {
    h = out_norm_->forward_silu(h + e.unsqueeze(-1).unsqueeze(-1), {}, {}, fused);
  }
  h = out_conv_->forward(dropout_->forward(h));
  return (skip_ ? skip_->forward(x) : x) + h;
}

double ResBlock::flops(int64_t& h, int64_t& w) const {
  if (o_.resample == Resample::kUp) {
    h *= 2;
    w *= 2;
  } else if (o_.resample == Resample::kDown) {
    h /= 2;
    w /= 2;
  }
  const int64_t c = o_.channels, co = o_.out_channels;
  double f = conv_flops(c, co, 3, h, w) + conv_flops(co, co, 3, h, w);
  f += 2.0 * o_.emb_channels * (o_.use_scale_shift_norm ? 2 * co : co);
  if (co != c) f += conv_flops(c, co, 1, h, w);
  return f;
}

// ---- AttentionBlock -------------------------------------------------------------------------

AttentionBlock::AttentionBlock(const AttentionOptions& o) : o_(o) {
  TORCH_CHECK(o.num_heads > 0 && o.channels % o.num_heads == 0, "AttentionBlock: ", o.channels,
              " channels do not split into ", o.num_heads, " heads");
  norm_ = register_module("norm", GroupNorm32(o.channels));
  qkv_ = register_module("qkv", torch::nn::Conv1d(torch::nn::Conv1dOptions(o.channels, 3 * o.channels, 1)));
  proj_out_ = register_module("proj_out",
                              zero_init(torch::nn::Conv1d(torch::nn::Conv1dOptions(o.channels, o.channels, 1))));
}

at::Tensor AttentionBlock::forward(const at::Tensor& x, const at::Tensor&) {
  if (!o_.use_checkpoint || !at::GradMode::is_enabled()) return forward_impl(x);
  auto self = std::static_pointer_cast<AttentionBlock>(shared_from_this());
  auto fn = [self](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{self->forward_impl(in[0])}; };
  return gradient_checkpoint(fn, {x}, params_of(*this))[0];
}

at::Tensor AttentionBlock::forward_impl(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3), len = hh * ww;
  const at::Tensor xs = x.reshape({n, c, len});                         // (N, C, T)
  const at::Tensor qkv5 = heads_of(qkv_->forward(norm_->forward(xs)));  // (N, H, 3, d, T)
  const at::Tensor a = o_.sdpa ? attend_sdpa(qkv5) : attend_explicit(qkv5);  // (N, C, T)
  return (xs + proj_out_->forward(a)).reshape({n, c, hh, ww});
}

at::Tensor AttentionBlock::heads_of(const at::Tensor& qkv) const {
  const int64_t n = qkv.size(0), len = qkv.size(2), heads = o_.num_heads, d = o_.channels / heads;
  if (o_.new_order) return qkv.reshape({n, 3, heads, d, len}).transpose(1, 2);  // [q; k; v], then heads
  return qkv.reshape({n, heads, 3, d, len});                                      // [q_h; k_h; v_h] per head
}

// softmax((q d^-1/4)^T (k d^-1/4)) per head as (N*H, T, T) scores, then v weighted by them.
at::Tensor AttentionBlock::attend_explicit(const at::Tensor& qkv5) const {
  const int64_t n = qkv5.size(0), heads = qkv5.size(1), d = qkv5.size(3), len = qkv5.size(4);
  auto part = [&](int64_t i) { return qkv5.select(2, i).reshape({n * heads, d, len}); };  // (N*H, d, T)
  const double scale = 1.0 / std::sqrt(std::sqrt(static_cast<double>(d)));
  at::Tensor weight = at::bmm((part(0) * scale).transpose(1, 2), part(1) * scale);  // (N*H, T, T)
  const auto sm = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // softmax in >= float32
  weight = at::softmax(weight.to(sm), -1).to(weight.scalar_type());
  return at::bmm(part(2), weight.transpose(1, 2)).reshape({n, heads * d, len});  // (N, C, T)
}

// The same through at::scaled_dot_product_attention, which takes (N, H, T, d) with unit stride on d:
// one copy of qkv to (3, N, H, T, d); the result (N, H, T, d) back to (N, C, T).
at::Tensor AttentionBlock::attend_sdpa(const at::Tensor& qkv5) const {
  const int64_t n = qkv5.size(0), heads = qkv5.size(1), d = qkv5.size(3), len = qkv5.size(4);
  const at::Tensor qkv = qkv5.permute({2, 0, 1, 4, 3}).contiguous();  // (3, N, H, T, d)
  const at::Tensor a = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                        /*is_causal=*/false,
                                                        /*scale=*/1.0 / std::sqrt(static_cast<double>(d)));
  return a.transpose(2, 3).reshape({n, heads * d, len});  // (N, C, T)
}

double AttentionBlock::flops(int64_t& h, int64_t& w) const {
  const double len = static_cast<double>(h * w), c = static_cast<double>(o_.channels);
  return 2.0 * 3 * c * c * len       // qkv
         + 2.0 * 2 * len * len * c   // QK^T and AV over all heads
         + 2.0 * c * c * len;        // proj_out
}

// ---- TimestepEmbedSequential ----------------------------------------------------------------

void TimestepEmbedSequentialImpl::push_back(torch::nn::Conv2d conv) {
  register_module(std::to_string(layers_.size()), conv);
  layers_.push_back({conv, nullptr});
}

void TimestepEmbedSequentialImpl::push_back(std::shared_ptr<EmbedBlock> block) {
  register_module(std::to_string(layers_.size()), block);
  layers_.push_back({nullptr, std::move(block)});
}

at::Tensor TimestepEmbedSequentialImpl::forward(const at::Tensor& x, const at::Tensor& emb) {
  at::Tensor h = x;
  for (auto& l : layers_) h = l.block ? l.block->forward(h, emb) : l.conv->forward(h);
  return h;
}

at::Tensor input_conv_forward(TimestepEmbedSequential& first, const at::Tensor& x, const at::Tensor& emb,
                              bool channels_last) {
  if (!channels_last) return first->forward(x, emb);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  return first->forward(x.contiguous(nhwc), emb).contiguous(nhwc);  // (N, C, H, W) in NHWC memory
}

double TimestepEmbedSequentialImpl::flops(int64_t& h, int64_t& w) const {
  double f = 0;
  for (const auto& l : layers_) {
    if (l.block) {
      f += l.block->flops(h, w);
    } else {
      const auto& o = l.conv->options;
      f += conv_flops(o.in_channels(), o.out_channels(), (*o.kernel_size())[0], h, w);
    }
  }
  return f;
}

}  // namespace ddpm::model
