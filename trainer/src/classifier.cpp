// The classifier of classifier guidance from a config or a checkpoint; see ddpm/trainer/classifier.h.
#include "ddpm/trainer/classifier.h"

#include <torch/torch.h>

#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

model::EncoderUNetOptions make_encoder_unet_options(const TrainConfig& config) {
  if (config.num_classes <= 0) {
    throw std::invalid_argument("--num-classes (key \"num_classes\"): is " + std::to_string(config.num_classes) +
                                "; the classifier needs the dataset's class count, e.g. --num-classes 10");
  }
  TrainConfig encoder = config;  // the U-Net keys, without "pool" and without label embedding
  encoder.num_classes = 0;
  model::EncoderUNetOptions o;
  if (encoder.model_overrides.contains("pool")) {
    const Json& pool = encoder.model_overrides["pool"];
    if (!pool.is_string()) {
      throw std::invalid_argument("--model-overrides (key \"model_overrides\"): \"pool\" is " + pool.dump() +
                                  "; give \"attention\" or \"adaptive\"");
    }
    o.pool = pool.get<std::string>();
    encoder.model_overrides.erase("pool");
  }
  o.unet = make_unet_options(encoder);
  o.out_channels = config.num_classes;
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--model-overrides (key \"model_overrides\"): ") + e.what());
  }
  return o;
}

void check_classifier_data(const model::EncoderUNetOptions& o, const data::DatasetInfo& info,
                           const std::string& data_path) {
  const model::UNetOptions& u = o.unet;
  if (info.channels != u.in_channels) {
    throw std::invalid_argument("--data " + data_path + ": images have " + std::to_string(info.channels) +
                                " channels but the classifier takes " + std::to_string(u.in_channels) +
                                "; override in_channels in --model-overrides");
  }
  const int64_t factor = int64_t{1} << (u.channel_mult.size() - 1);
  if (o.pool == "attention" && (info.height != u.image_size || info.width != u.image_size)) {
    throw std::invalid_argument(
        "--data " + data_path + ": images are " + std::to_string(info.height) + "x" + std::to_string(info.width) +
        " but the classifier's image_size is " + std::to_string(u.image_size) +
        " (attention pooling has one positional embedding per position of the image_size/" + std::to_string(factor) +
        " map); give --model-overrides image_size " + std::to_string(info.height) +
        " (with attention_resolutions that divide it) or \"pool\": \"adaptive\"");
  }
  if (info.height % factor || info.width % factor) {
    throw std::invalid_argument("--data " + data_path + ": " + std::to_string(info.height) + "x" +
                                std::to_string(info.width) + " images do not halve " +
                                std::to_string(u.channel_mult.size() - 1) + " times; use fewer levels (channel_mult)");
  }
  if (info.num_classes > o.out_channels) {
    throw std::invalid_argument("--num-classes " + std::to_string(o.out_channels) + ": " + data_path + " has " +
                                std::to_string(info.num_classes) + " classes; give --num-classes " +
                                std::to_string(info.num_classes));
  }
}

LoadedClassifier load_classifier(const std::string& spec, const std::string& ema, const c10::Device& device) {
  CheckpointWeights w = load_checkpoint_weights(spec, ema, "--classifier", "--classifier-ema");
  if (w.config.task != "classifier") {
    throw std::invalid_argument("--classifier " + spec + ": " + w.checkpoint + " was trained with --task " +
                                w.config.task + ", not a noise classifier; train one with ddpm_train_classifier");
  }
  LoadedClassifier c;
  c.config = std::move(w.config);
  c.checkpoint = w.checkpoint;
  c.step = w.step;
  c.ema_rate = w.ema_rate;
  c.net = model::EncoderUNet(make_encoder_unet_options(c.config));
  model::load_state_dict(*c.net, w.weights, w.source);
  c.net->to(device);
  c.net->eval();
  return c;
}

diffusion::LogitsFn classifier_logits_fn(model::EncoderUNet net, const TrainConfig& config) {
  const bool rescale = config.rescale_timesteps;
  const double factor = 1000.0 / static_cast<double>(config.diffusion_steps);
  return [net, rescale, factor](const at::Tensor& x_t, const at::Tensor& t) mutable {
    const at::Tensor seen = rescale ? t.to(at::kFloat) * static_cast<float>(factor) : t;  // as in training
    return net->forward(x_t, seen);  // (N, K)
  };
}

void check_classifier_fits(const LoadedClassifier& c, const TrainConfig& m, int64_t model_classes, int64_t channels) {
  const std::string where = "--classifier " + c.checkpoint + ": ";
  if (c.config.schedule != m.schedule || c.config.diffusion_steps != m.diffusion_steps) {
    throw std::invalid_argument(where + "trained on the " + c.config.schedule + " schedule with T = " +
                                std::to_string(c.config.diffusion_steps) + ", the model samples the " + m.schedule +
                                " schedule with T = " + std::to_string(m.diffusion_steps) +
                                "; train the classifier with the model's --schedule and --diffusion-steps");
  }
  if (model_classes > 0 && model_classes != c.num_classes()) {
    throw std::invalid_argument(where + "has " + std::to_string(c.num_classes()) +
                                " classes, the class-conditional model " + std::to_string(model_classes));
  }
  if (channels != c.net->options().unet.in_channels) {
    throw std::invalid_argument(where + "takes " + std::to_string(c.net->options().unet.in_channels) +
                                " channels, the samples have " + std::to_string(channels));
  }
}

}  // namespace ddpm::trainer
