// Building the U-Net and the diffusion from a TrainConfig; see ddpm/trainer/factory.h.
#include "ddpm/trainer/factory.h"

#include <stdexcept>

namespace ddpm::trainer {

namespace {

// A JSON override value as the text set_unet_option reads ("1,2,2" for lists, "true", "0.1").
std::string override_text(const std::string& key, const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return v.dump();
  if (v.is_null()) return "none";
  if (v.is_array()) {
    std::string s;
    for (const auto& e : v) {
      if (!e.is_number_integer()) break;
      s += (s.empty() ? "" : ",") + std::to_string(e.get<int64_t>());
    }
    if (!s.empty() || v.empty()) return s;
  }
  throw std::invalid_argument("--model-overrides (key \"model_overrides\"): \"" + key + "\" has value " + v.dump() +
                              "; give a number, a boolean, a string or a list of integers");
}

}  // namespace

model::UNetOptions make_unet_options(const TrainConfig& config) {
  model::UNetOptions o = model::unet_preset(config.model);
  for (const auto& [key, value] : config.model_overrides.items()) {
    try {
      model::set_unet_option(o, key, override_text(key, value));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--model-overrides (key \"model_overrides\"): ") + e.what());
    }
  }
  o.learn_sigma = diffusion::is_learned(diffusion::parse_var_type(config.var_type));
  if (config.num_classes > 0) o.num_classes = config.num_classes;
  o.validate();
  return o;
}

model::UNet make_unet(const TrainConfig& config) { return model::UNet(make_unet_options(config)); }

diffusion::DiffusionConfig make_diffusion_config(const TrainConfig& config, const std::string& respacing) {
  diffusion::DiffusionConfig d;
  d.schedule = config.schedule;
  d.steps = config.diffusion_steps;
  d.respacing = respacing;
  d.mean_type = diffusion::parse_mean_type(config.mean_type == "xprev" ? "prev" : config.mean_type);
  d.var_type = diffusion::parse_var_type(config.var_type);
  d.loss_type = diffusion::parse_loss_type(config.loss_type);
  d.rescale_timesteps = config.rescale_timesteps;
  return d;
}

diffusion::GaussianDiffusion make_diffusion(const TrainConfig& config, const std::string& respacing) {
  return diffusion::create_gaussian_diffusion(make_diffusion_config(config, respacing));
}

bool uses_ddim(const std::string& respacing) { return respacing.rfind("ddim", 0) == 0; }

diffusion::ModelFn model_fn(model::UNet& unet, at::Tensor labels) {
  return [&unet, labels](const at::Tensor& x_t, const at::Tensor& t) { return unet->forward(x_t, t, labels); };
}

}  // namespace ddpm::trainer
