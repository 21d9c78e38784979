// The noise-conditional classifier of classifier guidance (Dhariwal & Nichol 2021): the U-Net's
// encoder half (time_embed, input_blocks, middle_block) and a pooled head `out` giving class
// logits, with guided-diffusion's EncoderUNetModel state_dict names. Pool "attention":
// GroupNorm, SiLU, AttentionPool2d (CLIP's attention pooling: the mean position attends over all
// positions); "adaptive": GroupNorm, SiLU, global average pooling, a zero-initialised 1x1 conv.
// Not the training task (trainer/) nor the guidance itself (GaussianDiffusion's cond_fn).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ddpm/model/unet/blocks.h"
#include "ddpm/model/unet/options.h"

namespace ddpm::model {

struct EncoderUNetOptions {
  // The encoder's settings, the U-Net's fields: in_channels, model_channels, channel_mult,
  // num_res_blocks, attention_resolutions, dropout, conv_resample, num_heads, num_head_channels,
  // use_scale_shift_norm, resblock_updown, use_checkpoint and image_size (the input must be
  // image_size x image_size with attention pooling: its positional embedding has one entry per
  // position). out_channels, learn_sigma and num_classes of `unet` are not used.
  UNetOptions unet;
  int64_t out_channels = 10;       // K logits (classes)
  std::string pool = "attention";  // attention | adaptive
  // Throws std::invalid_argument naming the field, the value and what is expected.
  void validate() const;
};

// CLIP's attention pooling as guided-diffusion's AttentionPool2d: x (N, C, S, S) -> flatten to
// (N, C, S^2), prepend the mean over positions, add positional_embedding (C, S^2 + 1), qkv_proj
// (1x1 Conv1d, C -> 3C), multi-head attention with the qkv split first into q, k, v and then into
// heads (QKVAttention's order), c_proj (1x1 Conv1d, C -> K); the output at the mean's position
// (N, K). heads = C / head_channels.
class AttentionPool2dImpl : public torch::nn::Module {
 public:
  AttentionPool2dImpl(int64_t spatial, int64_t channels, int64_t head_channels, int64_t out_channels);
  at::Tensor forward(const at::Tensor& x);  // (N, C, S, S) -> (N, K)
  at::Tensor positional_embedding;          // (C, S^2 + 1)

 private:
  int64_t spatial_, heads_;
  torch::nn::Conv1d qkv_proj_{nullptr}, c_proj_{nullptr};
};
TORCH_MODULE(AttentionPool2d);

class EncoderUNetImpl : public torch::nn::Module {
 public:
  explicit EncoderUNetImpl(EncoderUNetOptions options);
  // x (N, C, H, W) (H = W = image_size with attention pooling), t (N) timesteps int64 or float
  // -> logits (N, out_channels).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t);

  const EncoderUNetOptions& options() const { return options_; }
  int64_t num_parameters() const;

 private:
  EncoderUNetOptions options_;
  torch::nn::Sequential time_embed_{nullptr}, out_{nullptr};
  torch::nn::ModuleList input_blocks_{nullptr};
  TimestepEmbedSequential middle_block_{nullptr};
  std::vector<TimestepEmbedSequential> inputs_;  // typed view of input_blocks
};
TORCH_MODULE(EncoderUNet);

}  // namespace ddpm::model
