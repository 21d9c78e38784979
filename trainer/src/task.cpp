// make_train_task (the task of --task) and copy_weights; see ddpm/trainer/task.h.
#include "ddpm/trainer/task.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <stdexcept>

#include "tasks.h"

namespace ddpm::trainer {

std::unique_ptr<TrainTask> make_train_task(const TrainConfig& config, const data::DatasetInfo& info,
                                           const c10::Device& device) {
  if (config.task == "diffusion" && !config.latent.empty()) return detail::make_latent_diffusion_task(config, info, device);
  if (config.task == "diffusion") return detail::make_diffusion_task(config, info, device);
  if (config.task == "superres") return detail::make_superres_task(config, info, device);
  if (config.task == "classifier") return detail::make_classifier_task(config, info, device);
  if (config.task == "autoencoder") return detail::make_autoencoder_task(config, info, device);
  throw std::invalid_argument("--task " + config.task + ": unknown task; known: diffusion, superres, classifier, "
                              "autoencoder");
}

std::pair<at::Tensor, int64_t> TrainTask::grid(const at::Tensor& samples) const {
  return {samples, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(samples.size(0)))))};
}

void copy_weights(torch::nn::Module& dst, const model::TensorDict& weights, const torch::nn::Module& src) {
  torch::NoGradGuard no_grad;
  const std::map<std::string, at::Tensor> given(weights.begin(), weights.end());
  const auto from_src_params = src.named_parameters();
  const auto from_src_buffers = src.named_buffers();
  const auto copy = [](at::Tensor& to, const at::Tensor& from, const std::string& name) {
    if (to.sizes() != from.sizes()) {
      throw std::invalid_argument("copy_weights: '" + name + "' has shape " + c10::str(from.sizes()) +
                                  ", the network's is " + c10::str(to.sizes()));
    }
    to.copy_(from);
  };
  for (auto& item : dst.named_parameters()) {
    const auto it = given.find(item.key());
    const at::Tensor* from = it != given.end() ? &it->second : from_src_params.find(item.key());
    if (!from) throw std::invalid_argument("copy_weights: no tensor for parameter '" + item.key() + "'");
    copy(item.value(), *from, item.key());
  }
  for (auto& item : dst.named_buffers()) {
    const at::Tensor* from = from_src_buffers.find(item.key());
    if (!from) throw std::invalid_argument("copy_weights: no tensor for buffer '" + item.key() + "'");
    copy(item.value(), *from, item.key());
  }
}

}  // namespace ddpm::trainer
