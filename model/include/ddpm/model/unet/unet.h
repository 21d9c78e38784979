// The ADM U-Net (Ho et al. 2020; Nichol & Dhariwal 2021; Dhariwal & Nichol 2021) as a LibTorch
// module whose state_dict keys are improved-diffusion's: time_embed, label_emb, input_blocks,
// middle_block, output_blocks, out. Options and presets: options.h; weights I/O: state_dict.h.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include "ddpm/model/unet/blocks.h"
#include "ddpm/model/unet/options.h"

namespace ddpm::model {

// Sinusoidal embedding [cos(t f_i), sin(t f_i)], f_i = max_period^(-i/half), i < half = dim/2,
// zero-padded when dim is odd. t (N) int64 or floating -> (N, dim) of `dtype` (computed in it;
// the U-Net uses its weights' dtype: float32 as improved-diffusion, float64 for checks).
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, double max_period = 10000.0,
                              at::ScalarType dtype = at::kFloat);

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(UNetOptions options);
  // x (N, in_channels, H, W) with H, W divisible by 2^(levels-1); t (N) timesteps, int64 or
  // float; y (N) int64 labels in [0, num_classes] (num_classes = null label), only when
  // class-conditional (absent: null label). -> (N, output_channels(), H, W)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y = {});
  // forward() in its two parts, for networks built on this one (SuperResUNet, superres.h): the
  // embedding of t and y -> (N, 4 model_channels), and the layers on x with an embedding.
  at::Tensor embed(const at::Tensor& t, const at::Tensor& y, int64_t n);
  at::Tensor forward_embedded(const at::Tensor& x, const at::Tensor& emb);

  const UNetOptions& options() const { return options_; }
  int64_t num_parameters() const;
  // Forward FLOP for one image of size (h, w): 2 x multiply-adds of every convolution, linear
  // layer and attention matmul (QK^T and AV), the same count as torch.utils.flop_counter.
  double forward_flops(int64_t h, int64_t w) const;

 private:
  std::shared_ptr<ResBlock> res_block(int64_t ch, int64_t out_ch, Resample r) const;
  std::shared_ptr<AttentionBlock> attention(int64_t ch) const;

  UNetOptions options_;
  torch::nn::Sequential time_embed_{nullptr}, out_{nullptr};  // out = [out_norm_, SiLU, out_conv_]
  GroupNorm32 out_norm_{nullptr};
  torch::nn::Conv2d out_conv_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};
  torch::nn::ModuleList input_blocks_{nullptr}, output_blocks_{nullptr};
  TimestepEmbedSequential middle_block_{nullptr};
  std::vector<TimestepEmbedSequential> inputs_, outputs_;  // typed views of the lists
};
TORCH_MODULE(UNet);

// The ADM U-Net's blocks for options `o`, shared by UNet and EncoderUNet: a ResBlock (time
// embedding 4 model_channels, dropout, scale-shift norm, checkpointing, fused GroupNorm) and an
// attention block (heads from num_head_channels, else num_heads; qkv order; SDPA).
std::shared_ptr<ResBlock> make_res_block(const UNetOptions& o, int64_t ch, int64_t out_ch, Resample r);
std::shared_ptr<AttentionBlock> make_attention_block(const UNetOptions& o, int64_t ch);

}  // namespace ddpm::model
