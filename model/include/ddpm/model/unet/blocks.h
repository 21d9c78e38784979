// The U-Net's blocks, with improved-diffusion's submodule names (so state_dict keys match):
// GroupNorm32, ResBlock (in_layers, emb_layers, out_layers, skip_connection), AttentionBlock
// (norm, qkv, proj_out), Downsample (op), Upsample (conv) and TimestepEmbedSequential.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <vector>

namespace ddpm::model {

// GroupNorm with 32 groups, computed in float32 (float64 stays float64) and cast back, so it is
// stable under bf16/fp16 autocast. Parameters `weight`, `bias` (C).
class GroupNorm32Impl : public torch::nn::Module {
 public:
  explicit GroupNorm32Impl(int64_t channels, int64_t groups = 32, double eps = 1e-5);
  at::Tensor forward(const at::Tensor& x);  // (N, C, ...) -> same
  // SiLU(forward(x) * (1 + scale) + shift), x (N, C, H, W), scale and shift (N, C) or undefined.
  // fused: ddpm::ops::group_norm_silu (one CUDA kernel each way for CUDA inputs it supports, the
  // plain ATen chain otherwise, the CPU included); else the plain chain.
  at::Tensor forward_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, bool fused);
  at::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm32);

// A block of the network body. forward takes the feature map and the embedding (N, 4*model_ch);
// flops() adds its forward multiply-adds x2 for one image of size (h, w) and updates h, w.
class EmbedBlock : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) = 0;
  virtual double flops(int64_t& h, int64_t& w) const = 0;
};

// Halves H and W: 3x3 stride-2 conv `op` (conv_resample) or 2x2 average pooling.
class Downsample : public EmbedBlock {
 public:
  Downsample(int64_t channels, bool use_conv);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) override;
  double flops(int64_t& h, int64_t& w) const override;

 private:
  int64_t channels_;
  torch::nn::Conv2d op_{nullptr};
};

// Doubles H and W: nearest-neighbour, then a 3x3 conv `conv` (conv_resample).
class Upsample : public EmbedBlock {
 public:
  Upsample(int64_t channels, bool use_conv);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) override;
  double flops(int64_t& h, int64_t& w) const override;

 private:
  int64_t channels_;
  torch::nn::Conv2d conv_{nullptr};
};

enum class Resample { kNone, kUp, kDown };

struct ResBlockOptions {
  int64_t channels, emb_channels, out_channels;
  double dropout = 0.0;
  bool use_scale_shift_norm = false;
  Resample resample = Resample::kNone;  // resblock_updown: resample h (before in_layers' conv) and x
  bool use_checkpoint = false;
  bool fused_group_norm = false;  // GroupNorm32::forward_silu's `fused` for both norms
};

// h = in_layers(x); h += emb_layers(emb) (or AdaGN scale/shift); out = skip(x) + out_layers(h).
// in_layers = [GroupNorm32, SiLU, Conv3x3], emb_layers = [SiLU, Linear],
// out_layers = [GroupNorm32, SiLU, Dropout, Conv3x3 (zero-initialised)].
class ResBlock : public EmbedBlock {
 public:
  explicit ResBlock(const ResBlockOptions& o);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) override;  // (N, C, H, W) -> (N, C', H', W')
  double flops(int64_t& h, int64_t& w) const override;

 private:
  at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& emb);
  ResBlockOptions o_;
  torch::nn::Sequential in_layers_, emb_layers_, out_layers_;
  GroupNorm32 in_norm_{nullptr}, out_norm_{nullptr};
  torch::nn::Conv2d in_conv_{nullptr}, out_conv_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_linear_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

struct AttentionOptions {
  int64_t channels, num_heads;
  bool use_checkpoint = false;
  // The qkv channel order: false = [q_h; k_h; v_h] per head (improved-diffusion's QKVAttention,
  // guided-diffusion's QKVAttentionLegacy); true = [q; k; v], each split in heads
  // (guided-diffusion's QKVAttention, use_new_attention_order).
  bool new_order = false;
  // true: at::scaled_dot_product_attention (flash / memory-efficient kernels on CUDA, the fused
  // CPU kernel); false: the explicit softmax(QK^T / sqrt(d)) V with (T, T) scores, softmax in float32.
  bool sdpa = true;
};

// Multi-head self-attention over the H*W positions with a residual connection; qkv is a 1x1
// Conv1d split in q, k, v per head (AttentionOptions::new_order), scores scaled by 1/sqrt(head
// channels), softmax in at least float32; proj_out is zero-initialised.
class AttentionBlock : public EmbedBlock {
 public:
  explicit AttentionBlock(const AttentionOptions& o);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) override;
  double flops(int64_t& h, int64_t& w) const override;

 private:
  at::Tensor forward_impl(const at::Tensor& x);
  at::Tensor heads_of(const at::Tensor& qkv) const;  // (N, 3C, T) -> (N, H, 3, d, T) view
  at::Tensor attend_explicit(const at::Tensor& qkv5) const;
  at::Tensor attend_sdpa(const at::Tensor& qkv5) const;
  AttentionOptions o_;
  GroupNorm32 norm_{nullptr};
  torch::nn::Conv1d qkv_{nullptr}, proj_out_{nullptr};
};

// A sequence of blocks registered as "0", "1", ...; the first layer of input_blocks.0 is a plain
// Conv2d (it takes no embedding).
class TimestepEmbedSequentialImpl : public torch::nn::Module {
 public:
  TimestepEmbedSequentialImpl() = default;
  void push_back(torch::nn::Conv2d conv);
  void push_back(std::shared_ptr<EmbedBlock> block);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb);
  double flops(int64_t& h, int64_t& w) const;

 private:
  struct Layer {
    torch::nn::Conv2d conv{nullptr};
    std::shared_ptr<EmbedBlock> block;
  };
  std::vector<Layer> layers_;
};
TORCH_MODULE(TimestepEmbedSequential);

// input_blocks.0 (the input conv) on x. With UNetOptions::channels_last, x and the output in
// channels-last memory, so every later activation is NHWC (a 1-channel x is NCHW and NHWC at once:
// the conv alone would keep NCHW); the plain forward otherwise.
at::Tensor input_conv_forward(TimestepEmbedSequential& first, const at::Tensor& x, const at::Tensor& emb,
                              bool channels_last);

// 2 * multiply-adds of a k x k convolution producing (cout, h, w) from cin channels.
double conv_flops(int64_t cin, int64_t cout, int64_t k, int64_t h, int64_t w);

}  // namespace ddpm::model
