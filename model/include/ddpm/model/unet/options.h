// Options of the ADM U-Net (improved-diffusion's UNetModel plus guided-diffusion's residual
// up/down-sampling and heads-by-width), the named presets, and string overrides of single fields
// (the flags of ddpm_inspect and the trainer's configuration use the same keys).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ddpm::model {

struct UNetOptions {
  int64_t in_channels = 3;       // C of the input image x (N, C, H, W)
  int64_t model_channels = 128;  // width of the first level; the time embedding has 4x this
  int64_t out_channels = 3;      // channels predicted per output (eps); doubled when learn_sigma
  int64_t num_res_blocks = 2;    // residual blocks per level in the encoder (the decoder has one more)
  // Feature-map sizes in pixels (improved-diffusion's --attention_resolutions) that get
  // self-attention after their residual blocks; level ds = image_size / resolution.
  std::vector<int64_t> attention_resolutions = {16};
  double dropout = 0.0;                           // in every residual block, before its last conv
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};  // width of level i = channel_mult[i] * model_channels
  bool conv_resample = true;     // 3x3 convolutions in Downsample (stride 2) / Upsample (after nearest x2)
  // Class-conditional when set: label_emb has num_classes + 1 rows; label num_classes is the
  // null label (unconditional) used for classifier-free guidance, and the default when y is absent.
  std::optional<int64_t> num_classes;
  int64_t num_heads = 1;           // attention heads (used when num_head_channels <= 0)
  int64_t num_head_channels = -1;  // > 0: heads = channels / num_head_channels at each attention block
  bool use_scale_shift_norm = false;  // AdaGN: GroupNorm(h) * (1 + scale) + shift from the embedding
  bool resblock_updown = false;       // residual blocks (with nearest/avg-pool) replace Up/Downsample
  bool learn_sigma = false;           // output 2 * out_channels (eps and the variance interpolation v)
  bool use_checkpoint = false;        // recompute each residual/attention block in backward
  int64_t image_size = 32;            // training resolution; sets the attention levels (see above)
  // qkv order: false = per head [q_h; k_h; v_h] (improved-diffusion; guided-diffusion's
  // QKVAttentionLegacy); true = [q; k; v] then heads (guided-diffusion's use_new_attention_order).
  bool use_new_attention_order = false;
  // Speed options (same numbers within rounding; the weights do not depend on them):
  // attention through at::scaled_dot_product_attention (flash / memory-efficient kernels on CUDA)
  // instead of the explicit softmax(QK^T / sqrt(d)) V.
  bool sdpa_attention = true;
  // GroupNorm + (scale, shift) + SiLU of every residual block and the output as one CUDA kernel
  // each way (ddpm::ops::group_norm_silu) for CUDA tensors; the CPU always takes the plain chain.
  bool fused_group_norm = true;
  // The activations in channels-last (NHWC) memory from the input conv to the output conv (the
  // input and the input conv's output are converted, the output returned NCHW; the weights keep their layout, so
  // gradients, optimizer, EMA and checkpoints are unchanged): cuDNN's tensor-core convolutions
  // take NHWC natively and the fused GroupNorm kernel reads it in place. Off by default: ATen's CPU
  // GroupNorm is much slower in channels-last.
  bool channels_last = false;

  int64_t output_channels() const { return learn_sigma ? 2 * out_channels : out_channels; }
  // Throws std::invalid_argument naming the field, the value found and what is expected.
  void validate() const;
};

// Presets: ddpm-cifar10, improved-cifar10, improved-imagenet64, fmnist-small, tiny.
// Throws std::invalid_argument listing the valid names.
UNetOptions unet_preset(const std::string& name);
std::vector<std::string> unet_preset_names();

// Field names accepted by set_unet_option (the struct's field names).
std::vector<std::string> unet_option_keys();
// Sets one field from text: integers, "0.1", "true"/"false"/"1"/"0", lists as "1,2,2,2",
// num_classes "none" or an integer. Throws std::invalid_argument naming the key and the value.
void set_unet_option(UNetOptions& options, const std::string& key, const std::string& value);
// All fields as "key=value" lines.
std::string describe(const UNetOptions& options);

}  // namespace ddpm::model
