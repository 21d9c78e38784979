// Classifier guidance from the trainer's side: the EncoderUNet of a --task classifier config,
// loading a classifier checkpoint (raw or EMA weights) for sampling, the classifier as the
// diffusion's LogitsFn, and the checks that a classifier fits a diffusion model and a dataset.
// The guidance arithmetic itself is GaussianDiffusion's (condition_mean / condition_score).
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/trainer/config.h"

namespace ddpm::data {
struct DatasetInfo;
}

namespace ddpm::trainer {

// The classifier of a config: the U-Net preset --model with --model-overrides (whose extra key
// "pool" picks attention | adaptive pooling, default attention), num_classes logits. Throws
// std::invalid_argument naming --model-overrides or --num-classes.
model::EncoderUNetOptions make_encoder_unet_options(const TrainConfig& config);

// Throws std::invalid_argument naming --data and the fix when the dataset's images or labels do
// not fit the classifier (channels, size: attention pooling needs H = W = image_size; labels
// beyond num_classes).
void check_classifier_data(const model::EncoderUNetOptions& options, const data::DatasetInfo& info,
                           const std::string& data_path);

// A --task classifier checkpoint, ready for guidance (eval mode).
struct LoadedClassifier {
  TrainConfig config;
  model::EncoderUNet net{nullptr};
  std::string checkpoint;          // the folder loaded
  int64_t step = 0;
  std::optional<double> ema_rate;  // empty = model.pt
  int64_t num_classes() const { return net->options().out_channels; }
};

// spec and ema as load_model's --checkpoint and --ema (inference.h), named --classifier and
// --classifier-ema in errors; throws when the checkpoint was not trained with --task classifier.
LoadedClassifier load_classifier(const std::string& spec, const std::string& ema, const c10::Device& device);

// The classifier's logits (N, K) for x_t and original int64 timestep indices t, which it sees
// as its own run saw them (t * 1000 / T as float when that run rescaled timesteps). Holds `net`.
diffusion::LogitsFn classifier_logits_fn(model::EncoderUNet net, const TrainConfig& config);

// Throws std::invalid_argument naming --classifier when the classifier was trained on another
// diffusion than the model samples with (schedule, T), or on another image shape or class count.
void check_classifier_fits(const LoadedClassifier& classifier, const TrainConfig& model_config,
                           int64_t model_classes, int64_t channels);

}  // namespace ddpm::trainer
