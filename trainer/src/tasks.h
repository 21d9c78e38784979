// The tasks make_train_task() chooses from (trainer/task.h), internal to trainer/src: one factory
// per task, each in its own file.
#pragma once
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/trainer/task.h"

namespace ddpm::trainer::detail {

// --task diffusion (diffusion_task.cpp): image diffusion, class-conditional when num_classes > 0.
std::unique_ptr<TrainTask> make_diffusion_task(const TrainConfig& config, const data::DatasetInfo& info,
                                               const c10::Device& device);

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
