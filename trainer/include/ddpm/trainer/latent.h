// Latent diffusion (Rombach et al. 2022) as the trainer and the samplers see it: the autoencoder
// options of a config (--task autoencoder), and the frozen autoencoder of a latent diffusion run
// (ddpm_train --latent AE_CHECKPOINT) with its latents' scale factor. A latent run's checkpoints
// carry the autoencoder (options and weights) and the scale factor among the task's state
// (state.pt), so resume and ddpm_sample decode with exactly what training encoded with.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "ddpm/model/autoencoder/autoencoder.h"
#include "ddpm/model/tensor_dict.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::trainer {

// --ae-channels, --ae-factor (channel_mult {1, 2, 2, ...}), --ae-res-blocks, --z-channels for
// images of `image_channels`. Throws std::invalid_argument naming the flag.
model::AutoencoderOptions autoencoder_options(const TrainConfig& config, int64_t image_channels);

// The frozen autoencoder of a latent run: eval mode, no gradients.
struct LatentCodec {
  model::AutoencoderKL ae{nullptr};
  double scale_factor = 0.0;  // latents are scale_factor * z; 0 until set (first batch or checkpoint)
  std::string source;         // where the weights came from, for messages

  // x (N, C, H, W) in [-1, 1] -> scale_factor * z (N, z, H/f, W/f) float32, z a sample of
  // q(z | x) (as latent-diffusion) with `noise` (N, z, H/f, W/f), or noise from the global
  // generator when it is undefined. No gradients.
  at::Tensor encode(const at::Tensor& x, const at::Tensor& noise = {}) const;
  // Scaled latents (N, z, h, w) -> images (N, C, h f, w f) clamped to [-1, 1]. No gradients.
  at::Tensor decode(const at::Tensor& latents) const;
  // Checkpoint entries: "latent/scale_factor" (float64 (1)), "latent/autoencoder_options" (int64:
  // in_channels, channels, num_res_blocks, z_channels, norm_groups, channel_mult...),
  // "latent/autoencoder.<name>" (the weights by state_dict name).
  model::TensorDict state() const;
};

// --latent SPEC: an autoencoder run dir (its newest checkpoint that verifies) or checkpoint
// folder; the weights of its first EMA rate (model.pt when it has none). scale_factor stays 0.
// Throws naming --latent: no checkpoint, or not a --task autoencoder run.
LatentCodec load_autoencoder_checkpoint(const std::string& spec, const c10::Device& device);

// From a latent run's task state (the LatentCodec::state() entries; others are ignored). Throws
// naming `source` when an entry is missing.
LatentCodec latent_codec_from_state(const model::TensorDict& state, const c10::Device& device,
                                    const std::string& source);
bool has_latent_state(const model::TensorDict& state);

// The request of a latent run's diffusion for images of `image`'s request: shape (z, H/f, W/f),
// no clipping of the predicted x_0 (latents are not in [-1, 1]); the rest unchanged. Throws
// std::invalid_argument when H or W is not a multiple of f.
SampleRequest latent_sample_request(const SampleRequest& image, const model::AutoencoderOptions& ae);

// A latent run's checkpoint as images of global sample indices (ddpm_eval --fid): the diffusion
// samples latents with index_sampler (latent_sample_request of `image`), the checkpoint's
// autoencoder decodes them. (n, C, H, W) in [-1, 1] on the CPU.
IndexSampler latent_index_sampler(LoadedModel& m, const SampleRequest& image, const c10::Device& device);

// Reconstruction error of an autoencoder (ddpm_eval on an autoencoder run): x_hat = decode(mean of
// q(z | x)) clamped to [-1, 1], errors on the [0, 1] scale of the images (x / 255).
struct ReconstructionSummary {
  int64_t count = 0;  // images, over every rank
  double mse = 0.0;   // mean over images and dims of (x - x_hat)^2
  double l1 = 0.0;    // mean of |x - x_hat|
  double psnr = 0.0;  // 10 log10(1 / mse) (of the mean MSE), dB
};
// images uint8 (N, H, W, C): this rank's share, in batches of batch_size; the sums are
// all-reduced over `comm`, so every rank returns the same.
ReconstructionSummary evaluate_reconstruction(model::AutoencoderKL& ae, const at::Tensor& images, int64_t batch_size,
                                              dist::Communicator& comm, const c10::Device& device);

// latent-diffusion's scale_by_std: 1 / std of every element of `latents` (unbiased, in float64).
double latent_scale_factor(const at::Tensor& latents);

// The scale factor of a latent run, as its fresh start computes it: `codec`'s posterior samples of
// images (N, C, H, W) in [-1, 1] (the first global batch of --data) with noise drawn on the CPU
// from a generator seeded by `seed`, then latent_scale_factor.
double first_batch_scale_factor(const LatentCodec& codec, const at::Tensor& images, uint64_t seed);

}  // namespace ddpm::trainer
