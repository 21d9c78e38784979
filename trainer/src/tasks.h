// The tasks make_train_task() chooses from (trainer/task.h), internal to trainer/src: one factory
// per task, each in its own file.
#pragma once
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/trainer/task.h"

namespace ddpm::trainer::detail {

// --task diffusion (diffusion_task.cpp): image diffusion, class-conditional when num_classes > 0.
std::unique_ptr<TrainTask> make_diffusion_task(const TrainConfig& config, const data::DatasetInfo& info,
                                               const c10::Device& device);

// The diffusion objective's parts that the diffusion and superres tasks share (diffusion_task.cpp).
// The U-Net of --model takes the dataset's channels; throws naming --data and --model.
void check_unet_channels(const TrainConfig& config, const data::DatasetInfo& info);
// One microbatch's loss from its terms: the mean of loss x the timestep sampler's weights, and the
// rows (n, 4) float64 t, loss, mse, vb (NaN for a term the loss type lacks).
MicrobatchLoss diffusion_microbatch_loss(const diffusion::LossTerms& terms, const diffusion::TimestepSample& ts);

// --task superres (superres_task.cpp): a cascade's super-resolution model, conditioned on the
// training image area-downsampled to --low-res, with conditioning augmentation.
std::unique_ptr<TrainTask> make_superres_task(const TrainConfig& config, const data::DatasetInfo& info,
                                              const c10::Device& device);
// --task classifier (classifier_task.cpp): the noise-conditional classifier of classifier guidance.
std::unique_ptr<TrainTask> make_classifier_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                const c10::Device& device);
// --task autoencoder (autoencoder_task.cpp): latent diffusion's KL autoencoder.
std::unique_ptr<TrainTask> make_autoencoder_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                 const c10::Device& device);

// --task diffusion --latent AE (latent_task.cpp): the diffusion task on the autoencoder's latents.
std::unique_ptr<TrainTask> make_latent_diffusion_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                      const c10::Device& device);

}  // namespace ddpm::trainer::detail
