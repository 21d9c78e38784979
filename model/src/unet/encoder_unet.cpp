// The encoder-half classifier and its attention pooling; see ddpm/model/unet/encoder_unet.h. The
// layout follows guided-diffusion's EncoderUNetModel: input_blocks (conv, then per level
// num_res_blocks x [ResBlock, AttentionBlock?] and a downsampler), middle_block [ResBlock,
// AttentionBlock, ResBlock], out (GroupNorm, SiLU, pooling head).
#include "ddpm/model/unet/encoder_unet.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "ddpm/model/unet/unet.h"

namespace ddpm::model {

// ---- AttentionPool2d ------------------------------------------------------------------------

AttentionPool2dImpl::AttentionPool2dImpl(int64_t spatial, int64_t channels, int64_t head_channels,
                                         int64_t out_channels)
    : spatial_(spatial) {
  TORCH_CHECK(head_channels > 0 && channels % head_channels == 0, "AttentionPool2d: ", channels,
              " channels do not split into heads of ", head_channels);
  heads_ = channels / head_channels;
  positional_embedding = register_parameter(
      "positional_embedding", at::randn({channels, spatial * spatial + 1}) / std::sqrt(static_cast<double>(channels)));
  qkv_proj_ = register_module("qkv_proj", torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, 3 * channels, 1)));
  c_proj_ = register_module("c_proj", torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, out_channels, 1)));
}

at::Tensor AttentionPool2dImpl::forward(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  TORCH_CHECK(x.dim() == 4 && x.size(2) == spatial_ && x.size(3) == spatial_, "AttentionPool2d: x must be (N, C, ",
              spatial_, ", ", spatial_, ") (its positional embedding has ", spatial_ * spatial_ + 1,
              " positions), got ", x.sizes());
  at::Tensor h = x.reshape({n, c, -1});                                   // (N, C, S^2)
  h = at::cat({h.mean(-1, /*keepdim=*/true), h}, -1);                     // (N, C, L), L = S^2 + 1
  h = h + positional_embedding.unsqueeze(0).to(h.scalar_type());
  const at::Tensor qkv = qkv_proj_->forward(h);                           // (N, 3C, L)
  const int64_t len = qkv.size(2), d = c / heads_;
  auto parts = qkv.chunk(3, 1);                                           // q, k, v (N, C, L)
  const double scale = 1.0 / std::sqrt(std::sqrt(static_cast<double>(d)));
  const at::Tensor q = (parts[0] * scale).reshape({n * heads_, d, len});  // (N*H, d, L)
  const at::Tensor k = (parts[1] * scale).reshape({n * heads_, d, len});
  const at::Tensor v = parts[2].reshape({n * heads_, d, len});
  at::Tensor weight = at::bmm(q.transpose(1, 2), k);                      // (N*H, L, L)
  const auto sm = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // softmax in >= float32
  weight = at::softmax(weight.to(sm), -1).to(weight.scalar_type());
  const at::Tensor a = at::bmm(v, weight.transpose(1, 2)).reshape({n, c, len});  // (N, C, L)
  return c_proj_->forward(a).select(2, 0);                                // (N, K)
}

// ---- EncoderUNet ----------------------------------------------------------------------------

void EncoderUNetOptions::validate() const {
  unet.validate();
  if (out_channels <= 0) {
    throw std::invalid_argument("EncoderUNetOptions.out_channels = " + std::to_string(out_channels) +
                                ": expected > 0 (one logit per class)");
  }
  if (pool != "attention" && pool != "adaptive") {
    throw std::invalid_argument("EncoderUNetOptions.pool = " + pool + ": expected attention or adaptive");
  }
  // Attention pooling splits the middle block's width into heads as the middle block's attention
  // does (num_head_channels, or num_heads): unet.validate() has checked that they divide it.
}

EncoderUNetImpl::EncoderUNetImpl(EncoderUNetOptions options) : options_(std::move(options)) {
  options_.validate();
  const UNetOptions& u = options_.unet;
  const int64_t mc = u.model_channels, ted = 4 * mc;
  std::set<int64_t> attn_ds;  // downsampling factors with attention
  for (int64_t r : u.attention_resolutions) attn_ds.insert(u.image_size / r);

  time_embed_ = register_module("time_embed", torch::nn::Sequential(torch::nn::Linear(mc, ted), torch::nn::SiLU(),
                                                                    torch::nn::Linear(ted, ted)));
  input_blocks_ = register_module("input_blocks", torch::nn::ModuleList());
  auto add_input = [&](TimestepEmbedSequential b) {
    input_blocks_->push_back(b);
    inputs_.push_back(b);
  };
  int64_t ch = u.channel_mult[0] * mc, ds = 1;
  TimestepEmbedSequential first;
  first->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(u.in_channels, ch, 3).padding(1)));
  add_input(first);
  const int64_t levels = static_cast<int64_t>(u.channel_mult.size());
  for (int64_t level = 0; level < levels; ++level) {
    for (int64_t i = 0; i < u.num_res_blocks; ++i) {
      TimestepEmbedSequential b;
      b->push_back(make_res_block(u, ch, u.channel_mult[level] * mc, Resample::kNone));
      ch = u.channel_mult[level] * mc;
      if (attn_ds.count(ds)) b->push_back(make_attention_block(u, ch));
      add_input(b);
    }
    if (level != levels - 1) {
      TimestepEmbedSequential b;
      if (u.resblock_updown) {
        b->push_back(make_res_block(u, ch, ch, Resample::kDown));
      } else {
        b->push_back(std::make_shared<Downsample>(ch, u.conv_resample));
      }
      add_input(b);
      ds *= 2;
    }
  }

  middle_block_ = register_module("middle_block", TimestepEmbedSequential());
  middle_block_->push_back(make_res_block(u, ch, ch, Resample::kNone));
  middle_block_->push_back(make_attention_block(u, ch));
  middle_block_->push_back(make_res_block(u, ch, ch, Resample::kNone));

  if (options_.pool == "attention") {
    const int64_t head_channels = u.num_head_channels > 0 ? u.num_head_channels : ch / u.num_heads;
    out_ = register_module("out", torch::nn::Sequential(GroupNorm32(ch), torch::nn::SiLU(),
                                                        AttentionPool2d(u.image_size / ds, ch, head_channels,
                                                                        options_.out_channels)));
  } else {
    auto head = torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, options_.out_channels, 1));
    {
      at::NoGradGuard no_grad;
      head->weight.zero_();
      head->bias.zero_();
    }
    out_ = register_module("out", torch::nn::Sequential(GroupNorm32(ch), torch::nn::SiLU(),
                                                        torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                                                        head, torch::nn::Flatten()));
  }
}

at::Tensor EncoderUNetImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  const UNetOptions& u = options_.unet;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == u.in_channels, "EncoderUNet: x must be (N, ", u.in_channels,
              ", H, W), got ", x.sizes());
  const int64_t factor = int64_t{1} << (u.channel_mult.size() - 1);
  TORCH_CHECK(x.size(2) % factor == 0 && x.size(3) % factor == 0, "EncoderUNet: H and W must be divisible by ",
              factor, " (", u.channel_mult.size(), " levels), got ", x.sizes());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "EncoderUNet: t must be (N) with N = ", x.size(0), ", got ",
              t.sizes());
  const at::Tensor w0 = time_embed_->ptr<torch::nn::LinearImpl>(0)->weight;
  const auto dtype = w0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor emb =
      time_embed_->forward(timestep_embedding(t, u.model_channels, 10000.0, dtype).to(w0.scalar_type()));  // (N, 4mc)
  at::Tensor h = input_conv_forward(inputs_.front(), x, emb, u.channels_last);  // (N, C, H, W)
  for (size_t i = 1; i < inputs_.size(); ++i) h = inputs_[i]->forward(h, emb);
  h = middle_block_->forward(h, emb);  // (N, C, H / 2^(levels-1), W / 2^(levels-1))
  return out_->forward(h);             // (N, K)
}

int64_t EncoderUNetImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace ddpm::model
