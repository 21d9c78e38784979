// A KL-regularised convolutional autoencoder (Rombach et al. 2022, latent diffusion's
// AutoencoderKL, without the adversarial and perceptual losses) as a LibTorch module whose
// state_dict keys are latent-diffusion's: encoder.{conv_in, down.L.block.B, down.L.downsample,
// mid.block_1, mid.attn_1, mid.block_2, norm_out, conv_out}, quant_conv, post_quant_conv,
// decoder.{conv_in, mid, up.L.block.B, up.L.upsample, norm_out, conv_out}.
//   encode: x (N, C, H, W) -> q(z | x) = N(mean, exp(logvar)), each (N, z, H/f, W/f)
//   decode: z (N, z, H/f, W/f) -> x_hat (N, C, H, W)
// f = 2^(levels - 1). Not here: the training loop (trainer/, --task autoencoder).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ddpm::model {

struct AutoencoderOptions {
  int64_t in_channels = 1;                   // C of the images (the decoder outputs C too)
  int64_t channels = 32;                     // ch: width of the first level
  std::vector<int64_t> channel_mult = {1, 2, 2};  // level widths ch * mult; f = 2^(levels - 1)
  int64_t num_res_blocks = 1;                // residual blocks per level (the decoder has one more)
  int64_t z_channels = 4;                    // latent channels
  int64_t norm_groups = 32;                  // GroupNorm groups (eps 1e-6); widths must divide

  int64_t factor() const { return int64_t{1} << (channel_mult.size() - 1); }  // f
  // Throws std::invalid_argument naming the field, the value and what is expected.
  void validate() const;
};

// The levels' multipliers for a downsampling factor f in {1, 2, 4, 8, ...}: {1, 2, 2, ...}
// (log2 f + 1 levels). Throws std::invalid_argument when f is not a power of two.
std::vector<int64_t> autoencoder_channel_mult(int64_t factor);

// The posterior q(z | x) = N(mean, exp(logvar)) per latent element (latent-diffusion's
// DiagonalGaussianDistribution: logvar clamped to [-30, 20]).
struct DiagonalGaussian {
  at::Tensor mean, logvar;  // (N, z, h, w)
  at::Tensor mode() const { return mean; }
  // mean + exp(logvar / 2) * noise, noise ~ N(0, I) of the mean's shape.
  at::Tensor sample(const at::Tensor& noise) const;
  // KL(q || N(0, I)) summed over the latent dims: 0.5 sum(mean^2 + var - 1 - logvar) -> (N)
  at::Tensor kl() const;
};

// The encoder and decoder (autoencoder.cpp): ResnetBlocks without a time embedding (norm1,
// swish, conv1, norm2, swish, conv2, plus x or its 1x1 nin_shortcut), single-head attention
// (norm, q, k, v, proj_out) in the middle.
//   encoder: conv_in; down.L (num_res_blocks blocks, then downsample.conv: a 3x3 stride-2 conv
//            after zero padding of one row/column at the bottom/right, except at the last level);
//            mid (block_1, attn_1, block_2); norm_out, swish, conv_out to 2 z channels
//   decoder: conv_in from z channels; mid; up.L from the deepest level (num_res_blocks + 1 blocks,
//            then upsample.conv after nearest x2, except at level 0); norm_out, swish, conv_out to C
class AeEncoderImpl;
class AeDecoderImpl;

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(AutoencoderOptions options);
  // x (N, C, H, W) in [-1, 1], H and W divisible by f -> the posterior over (N, z, H/f, W/f).
  DiagonalGaussian encode(const at::Tensor& x);
  at::Tensor decode(const at::Tensor& z);  // (N, z, h, w) -> (N, C, h f, w f), unclamped
  const AutoencoderOptions& options() const { return options_; }
  int64_t num_parameters() const;

 private:
  AutoencoderOptions options_;
  std::shared_ptr<AeEncoderImpl> encoder_;
  std::shared_ptr<AeDecoderImpl> decoder_;
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};  // 1x1: 2z -> 2z, z -> z
};
TORCH_MODULE(AutoencoderKL);

// The training objective of one batch (latent-diffusion's LPIPSWithDiscriminator without the
// perceptual, adversarial and learned-variance terms), per example, with every term a mean over the D = C H W
// image dims so that kl_weight means what latent-diffusion's does (its sums over the dims
// divided by D):
//   rec  = mean over D of |x - x_hat| (l1) or (x - x_hat)^2 (l2), x_hat = decode(sample of q)
//   kl   = KL(q(z | x) || N(0, I)) summed over the latent dims (nats)
//   loss = rec + kl_weight * kl / D
struct AutoencoderLossTerms {
  at::Tensor loss, rec, kl;  // (N) each
  at::Tensor reconstruction;  // x_hat (N, C, H, W)
};
// `noise` (N, z, H/f, W/f) draws the posterior sample (latent-diffusion samples it in training).
AutoencoderLossTerms autoencoder_loss(AutoencoderKL& ae, const at::Tensor& x, const at::Tensor& noise,
                                      const std::string& rec_type, double kl_weight);

}  // namespace ddpm::model
