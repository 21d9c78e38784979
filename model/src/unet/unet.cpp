// The ADM U-Net; see ddpm/model/unet/unet.h. The layout follows improved-diffusion's UNetModel:
// input_blocks (conv, then per level num_res_blocks x [ResBlock, AttentionBlock?] and a
// downsampler), middle_block [ResBlock, AttentionBlock, ResBlock], output_blocks (per level
// num_res_blocks + 1 x [ResBlock on the concatenated skip, AttentionBlock?, upsampler?]), out.
#include "ddpm/model/unet/unet.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace ddpm::model {

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, double max_period, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 1, "timestep_embedding: t must be (N), got ", t.sizes());
  const int64_t half = dim / 2;
  const auto opts = at::TensorOptions().dtype(dtype).device(t.device());
  const at::Tensor freqs = at::exp(-std::log(max_period) * at::arange(half, opts) / static_cast<double>(half));
  const at::Tensor args = t.to(dtype).unsqueeze(1) * freqs.unsqueeze(0);  // (N, half)
  at::Tensor emb = at::cat({at::cos(args), at::sin(args)}, 1);                 // (N, 2*half)
  if (dim % 2) emb = at::cat({emb, at::zeros({t.size(0), 1}, opts)}, 1);
  return emb;
}

std::shared_ptr<ResBlock> make_res_block(const UNetOptions& u, int64_t ch, int64_t out_ch, Resample r) {
  ResBlockOptions o{ch, 4 * u.model_channels, out_ch};
  o.dropout = u.dropout;
  o.use_scale_shift_norm = u.use_scale_shift_norm;
  o.resample = r;
  o.use_checkpoint = u.use_checkpoint;
  o.fused_group_norm = u.fused_group_norm;
  return std::make_shared<ResBlock>(o);
}

std::shared_ptr<AttentionBlock> make_attention_block(const UNetOptions& u, int64_t ch) {
  const int64_t heads = u.num_head_channels > 0 ? ch / u.num_head_channels : u.num_heads;
  AttentionOptions o{ch, heads};
  o.use_checkpoint = u.use_checkpoint;
  o.new_order = u.use_new_attention_order;
  o.sdpa = u.sdpa_attention;
  return std::make_shared<AttentionBlock>(o);
}

std::shared_ptr<ResBlock> UNetImpl::res_block(int64_t ch, int64_t out_ch, Resample r) const {
  return make_res_block(options_, ch, out_ch, r);
}

std::shared_ptr<AttentionBlock> UNetImpl::attention(int64_t ch) const { return make_attention_block(options_, ch); }

UNetImpl::UNetImpl(UNetOptions options) : options_(std::move(options)) {
  const UNetOptions& o = options_;
  o.validate();
  const int64_t mc = o.model_channels, ted = 4 * mc;
  std::set<int64_t> attn_ds;  // downsampling factors with attention
  for (int64_t r : o.attention_resolutions) attn_ds.insert(o.image_size / r);

  time_embed_ = register_module("time_embed", torch::nn::Sequential(torch::nn::Linear(mc, ted), torch::nn::SiLU(),
                                                                    torch::nn::Linear(ted, ted)));
  if (o.num_classes) label_emb_ = register_module("label_emb", torch::nn::Embedding(*o.num_classes + 1, ted));

  // Encoder: remember each block's width for the decoder's skip connections.
  input_blocks_ = register_module("input_blocks", torch::nn::ModuleList());
  auto add_input = [&](TimestepEmbedSequential b) {
    input_blocks_->push_back(b);
    inputs_.push_back(b);
  };
  // Width of level 0, of the input conv and of the output conv (guided-diffusion's input_ch;
  // improved-diffusion used model_channels, which breaks the output conv when channel_mult[0] != 1).
  const int64_t input_ch = o.channel_mult[0] * mc;
  TimestepEmbedSequential first;
  first->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, input_ch, 3).padding(1)));
  add_input(first);
  std::vector<int64_t> skip_chans{input_ch};
  int64_t ch = input_ch, ds = 1;
  const int64_t levels = static_cast<int64_t>(o.channel_mult.size());
  for (int64_t level = 0; level < levels; ++level) {
    for (int64_t i = 0; i < o.num_res_blocks; ++i) {
      TimestepEmbedSequential b;
      b->push_back(res_block(ch, o.channel_mult[level] * mc, Resample::kNone));
      ch = o.channel_mult[level] * mc;
      if (attn_ds.count(ds)) b->push_back(attention(ch));
      add_input(b);
      skip_chans.push_back(ch);
    }
    if (level != levels - 1) {
      TimestepEmbedSequential b;
      if (o.resblock_updown) {
        b->push_back(res_block(ch, ch, Resample::kDown));
      } else {
        b->push_back(std::make_shared<Downsample>(ch, o.conv_resample));
      }
      add_input(b);
      skip_chans.push_back(ch);
      ds *= 2;
    }
  }

  middle_block_ = register_module("middle_block", TimestepEmbedSequential());
  middle_block_->push_back(res_block(ch, ch, Resample::kNone));
  middle_block_->push_back(attention(ch));
  middle_block_->push_back(res_block(ch, ch, Resample::kNone));

  // Decoder: each block takes the previous output concatenated with one encoder output.
  output_blocks_ = register_module("output_blocks", torch::nn::ModuleList());
  for (int64_t level = levels - 1; level >= 0; --level) {
    for (int64_t i = 0; i <= o.num_res_blocks; ++i) {
      TimestepEmbedSequential b;
      const int64_t skip = skip_chans.back();
      skip_chans.pop_back();
      b->push_back(res_block(ch + skip, o.channel_mult[level] * mc, Resample::kNone));
      ch = o.channel_mult[level] * mc;
      if (attn_ds.count(ds)) b->push_back(attention(ch));
      if (level > 0 && i == o.num_res_blocks) {
        if (o.resblock_updown) {
          b->push_back(res_block(ch, ch, Resample::kUp));
        } else {
          b->push_back(std::make_shared<Upsample>(ch, o.conv_resample));
        }
        ds /= 2;
      }
      output_blocks_->push_back(b);
      outputs_.push_back(b);
    }
  }

  auto out_conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(input_ch, o.output_channels(), 3).padding(1));
  {
    at::NoGradGuard no_grad;
    out_conv->weight.zero_();
    out_conv->bias.zero_();
  }
  out_norm_ = GroupNorm32(ch);  // ch == input_ch: the decoder ends at level 0
  out_conv_ = out_conv;
  out_ = register_module("out", torch::nn::Sequential(out_norm_, torch::nn::SiLU(), out_conv));
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  TORCH_CHECK(x.dim() == 4, "UNet: x must be (N, ", options_.in_channels, ", H, W), got ", x.sizes());
  return forward_embedded(x, embed(t, y, x.size(0)));
}

at::Tensor UNetImpl::embed(const at::Tensor& t, const at::Tensor& y, int64_t n) {
  const UNetOptions& o = options_;
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "UNet: t must be (N) with N = ", n, ", got ", t.sizes());
  const at::Tensor w0 = time_embed_->ptr<torch::nn::LinearImpl>(0)->weight;
  const auto dtype = w0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor emb = time_embed_->forward(timestep_embedding(t, o.model_channels, 10000.0, dtype).to(w0.scalar_type()));  // (N, 4mc)
  if (o.num_classes) {
    at::Tensor labels = y;
    if (!labels.defined()) labels = at::full({n}, *o.num_classes, t.options().dtype(at::kLong));
    TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n && labels.scalar_type() == at::kLong,
                "UNet: y must be int64 (N) with N = ", n, ", got ", labels.sizes(), " ", labels.scalar_type());
    TORCH_CHECK(!labels.is_cpu() || labels.numel() == 0 || (labels.min().item<int64_t>() >= 0 &&
                                        labels.max().item<int64_t>() <= *o.num_classes),
                "UNet: labels must lie in [0, ", *o.num_classes, "] (", *o.num_classes, " = null label)");
    emb = emb + label_emb_->forward(labels);
  } else {
    TORCH_CHECK(!y.defined(), "UNet: labels y given to a model without num_classes");
  }
  return emb;
}

at::Tensor UNetImpl::forward_embedded(const at::Tensor& x, const at::Tensor& emb) {
  const UNetOptions& o = options_;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_channels, "UNet: x must be (N, ", o.in_channels,
              ", H, W), got ", x.sizes());
  const int64_t factor = int64_t{1} << (o.channel_mult.size() - 1);
  TORCH_CHECK(x.size(2) % factor == 0 && x.size(3) % factor == 0, "UNet: H and W must be divisible by ", factor,
              " (", o.channel_mult.size(), " levels), got ", x.sizes(), "; pad the images");
  TORCH_CHECK(emb.dim() == 2 && emb.size(0) == x.size(0), "UNet: the embedding must be (N, ", 4 * o.model_channels,
              ") with N = ", x.size(0), ", got ", emb.sizes());
  std::vector<at::Tensor> hs;  // encoder outputs, consumed in reverse by the decoder
  at::Tensor h = x;  // (N, C, H, W); NHWC memory after the input conv with channels_last
  for (auto& b : inputs_) {
    h = hs.empty() ? input_conv_forward(b, h, emb, o.channels_last) : b->forward(h, emb);
    hs.push_back(h);
  }
  h = middle_block_->forward(h, emb);
  for (auto& b : outputs_) {
    h = b->forward(at::cat({h, hs.back()}, 1), emb);
    hs.pop_back();
  }
  const at::Tensor out = out_conv_->forward(out_norm_->forward_silu(h, {}, {}, o.fused_group_norm));
  return o.channels_last ? out.contiguous() : out;  // (N, output_channels, H, W)
}

int64_t UNetImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

double UNetImpl::forward_flops(int64_t h, int64_t w) const {
  const int64_t ted = 4 * options_.model_channels;
  double f = 2.0 * options_.model_channels * ted + 2.0 * ted * ted;  // time_embed
  for (const auto& b : inputs_) f += b->flops(h, w);
  f += middle_block_->flops(h, w);
  for (const auto& b : outputs_) f += b->flops(h, w);
  const int64_t input_ch = options_.channel_mult[0] * options_.model_channels;
  return f + conv_flops(input_ch, options_.output_channels(), 3, h, w);
}

}  // namespace ddpm::model
