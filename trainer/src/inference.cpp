// Loading a checkpoint's model for inference, classifier-free guidance and sampling with noise
// per global sample index (classifier guidance through SampleRequest::classifier); see ddpm/trainer/inference.h.
#include "ddpm/trainer/inference.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "ddpm/model/diffusion/sde_samplers.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"

namespace ddpm::trainer {

namespace fs = std::filesystem;

namespace {

std::string rates_text(const std::vector<double>& rates) {
  if (rates.empty()) return "none (the checkpoint has no EMA; use --ema none)";
  std::string s;
  for (double r : rates) s += (s.empty() ? "" : ", ") + EmaSet::rate_name(r);
  return s;
}

}  // namespace

// The checkpoint folder a --checkpoint (`flag`) spec names, loaded and verified (inference.h).
std::pair<TrainState, std::string> resolve_checkpoint(const std::string& spec, const std::string& flag) {
  if (spec.empty() || !fs::exists(spec)) {
    throw CheckpointError(flag + " " + spec + ": no such run directory or checkpoint folder; give RUN_DIR or "
                          "RUN_DIR/checkpoints/<step>");
  }
  try {
    if (fs::exists(fs::path(spec) / "MANIFEST.json")) return {load_checkpoint(spec), spec};
    if (!fs::is_directory(fs::path(spec) / "checkpoints")) {
      throw CheckpointError(spec + " holds neither MANIFEST.json (a checkpoint folder) nor checkpoints/ (a run dir)");
    }
    CheckpointStore::Resumed r = CheckpointStore(spec).resume("auto");
    if (!r.state) throw CheckpointError(spec + "/checkpoints holds no checkpoint yet");
    return {std::move(*r.state), r.path};
  } catch (const CheckpointError& e) {
    throw CheckpointError(flag + " " + spec + ": " + e.what());
  }
}

namespace {

// model.pt with the parameters of `ema` swapped in (EMAs hold parameters only, by name).
model::TensorDict merge_ema(model::TensorDict weights, const model::TensorDict& ema, const std::string& source) {
  std::map<std::string, size_t> at_index;
  for (size_t i = 0; i < weights.size(); ++i) at_index[weights[i].first] = i;
  for (const auto& [name, t] : ema) {
    const auto it = at_index.find(name);
    if (it == at_index.end()) throw std::runtime_error(source + ": EMA tensor '" + name + "' is not in model.pt");
    weights[it->second].second = t;
  }
  return weights;
}

at::Tensor stack_or_empty(std::vector<at::Tensor> parts, at::IntArrayRef shape, at::ScalarType dtype) {
  if (!parts.empty()) return at::stack(parts, 0);
  std::vector<int64_t> s = {0};
  s.insert(s.end(), shape.begin(), shape.end());
  return at::empty(s, at::TensorOptions().dtype(dtype));
}

}  // namespace

CheckpointWeights load_checkpoint_weights(const std::string& spec, const std::string& ema, const std::string& flag,
                                          const std::string& ema_flag) {
  auto [state, path] = resolve_checkpoint(spec, flag);
  CheckpointWeights m;
  m.checkpoint = path;
  m.step = state.step;
  m.config = config_from_json(state.config, path + "/state.json (config)");
  for (const auto& [rate, dict] : state.emas) m.available_ema_rates.push_back(rate);
  m.task_state = state.sampler;
  m.weights = std::move(state.model);
  m.source = path + "/model.pt";
  if (ema != "none" && !(ema.empty() && state.emas.empty())) {
    const model::TensorDict* chosen = nullptr;
    if (ema.empty()) {
      chosen = &state.emas.front().second;
      m.ema_rate = state.emas.front().first;
    } else {
      double rate = 0.0;
      try {
        size_t used = 0;
        rate = std::stod(ema, &used);
        if (used != ema.size()) throw std::invalid_argument(ema);
      } catch (const std::exception&) {
        throw std::invalid_argument(ema_flag + " " + ema + ": not a number; give one of the checkpoint's rates (" +
                                    rates_text(m.available_ema_rates) + ") or none");
      }
      for (const auto& [r, dict] : state.emas) {
        if (std::abs(r - rate) <= 1e-12 * std::max(1.0, std::abs(r)) || EmaSet::rate_name(r) == ema) {
          chosen = &dict;
          m.ema_rate = r;
        }
      }
      if (!chosen) {
        throw std::invalid_argument(ema_flag + " " + ema + ": checkpoint " + path + " has no EMA of that rate; available: " +
                                    rates_text(m.available_ema_rates) + ", or none for the raw weights");
      }
    }
    m.source = path + "/" + ema_file_name(*m.ema_rate);
    m.weights = merge_ema(std::move(m.weights), *chosen, m.source);
  }
  return m;
}

LoadedModel load_model(const std::string& spec, const std::string& ema, const c10::Device& device) {
  CheckpointWeights w = load_checkpoint_weights(spec, ema);
  if (w.config.task == "superres") {
    throw std::invalid_argument("--checkpoint " + spec + ": a super-resolution run (--task superres, low-res " +
                                std::to_string(w.config.low_res) + "); sample it after a base model with "
                                "ddpm_sample --cascade BASE_RUN," + spec);
  }
  if (w.config.task == "autoencoder") {
    throw std::invalid_argument("--checkpoint " + spec + ": " + w.checkpoint + " is an autoencoder "
                                "(ddpm_train_autoencoder), not a diffusion model; give a ddpm_train run (ddpm_train "
                                "--latent trains on its latents)");
  }
  if (w.config.task == "classifier") {
    throw std::invalid_argument("--checkpoint " + spec + ": " + w.checkpoint +
                                " holds a noise classifier (--task classifier), not a diffusion model; give it to "
                                "ddpm_sample as --classifier, with a diffusion model as --checkpoint");
  }
  LoadedModel m;
  m.config = std::move(w.config);
  m.checkpoint = w.checkpoint;
  m.step = w.step;
  m.ema_rate = w.ema_rate;
  m.available_ema_rates = std::move(w.available_ema_rates);
  m.task_state = std::move(w.task_state);
  m.unet = make_unet(m.config);
  model::load_unet_state_dict(m.unet, std::move(w.weights), w.source);
  m.unet->to(device);
  m.unet->eval();
  return m;
}

diffusion::ModelFn guided_model_fn(model::UNet& unet, at::Tensor labels, double scale) {
  const int64_t classes = unet->options().num_classes.value_or(0);
  if (classes <= 0) {
    throw std::invalid_argument("--guidance-scale: the model is not class-conditional (num_classes = 0); "
                                "classifier-free guidance needs a model trained with --num-classes and "
                                "--label-dropout; drop --guidance-scale");
  }
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "guided_model_fn: labels must be (N) int64");
  const int64_t channels = unet->options().in_channels;
  return [&unet, labels, scale, classes, channels](const at::Tensor& x_t, const at::Tensor& t) {
    const int64_t n = x_t.size(0);
    const at::Tensor y = labels.to(x_t.device(), at::kLong);
    const at::Tensor y_null = at::full_like(y, classes);
    const at::Tensor out = unet->forward(at::cat({x_t, x_t}, 0), at::cat({t, t}, 0), at::cat({y, y_null}, 0));
    const at::Tensor cond = out.slice(0, 0, n), uncond = out.slice(0, n, 2 * n);  // (N, C or 2C, H, W)
    const at::Tensor eps_c = cond.slice(1, 0, channels), eps_u = uncond.slice(1, 0, channels);
    const at::Tensor eps = eps_u + scale * (eps_c - eps_u);
    return cond.size(1) > channels ? at::cat({eps, cond.slice(1, channels)}, 1) : eps;
  };
}

namespace {
// splitmix64 of (seed, index): distinct, well-mixed seeds for neighbouring indices.
uint64_t sample_seed(uint64_t seed, int64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(index) + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
}  // namespace

at::Generator sample_generator(uint64_t seed, int64_t index) {
  return at::make_generator<at::CPUGeneratorImpl>(sample_seed(seed, index));
}

at::Generator sample_generator(uint64_t seed, int64_t index, const c10::Device& device) {
  if (device.is_cpu()) return sample_generator(seed, index);
  at::Generator g = at::globalContext().getAcceleratorHooksInterface(device.type()).getNewGenerator(device.index());
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_current_seed(sample_seed(seed, index));
  return g;
}

at::Tensor per_sample_normal(uint64_t seed, const std::vector<int64_t>& indices, at::IntArrayRef shape,
                             const c10::Device& device) {
  std::vector<at::Tensor> parts;
  for (int64_t i : indices) {
    at::Generator g = sample_generator(seed, i, device);
    parts.push_back(at::randn(shape, g, at::TensorOptions().dtype(at::kFloat).device(device)));
  }
  return stack_or_empty(std::move(parts), shape, at::kFloat).to(device);
}

at::Tensor draw_per_sample(std::vector<at::Generator>& gens, at::IntArrayRef shape, const c10::Device& device) {
  std::vector<at::Tensor> parts;
  for (auto& g : gens) parts.push_back(at::randn(shape, g, at::kFloat));
  return stack_or_empty(std::move(parts), shape, at::kFloat).to(device);  // (n, *shape)
}

at::Tensor sample_with_generators(const diffusion::ModelFn& fn, const diffusion::GaussianDiffusion& diffusion,
                                  const SampleRequest& req, std::vector<at::Generator>& gens,
                                  const c10::Device& device, const diffusion::CondFn& cond_fn) {
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(gens.size());
  const std::vector<int64_t> chw = {req.channels, req.height, req.width};
  if (n == 0) return at::empty({0, req.channels, req.height, req.width}, at::kFloat);
  const auto draw = [&] { return draw_per_sample(gens, chw, device); };  // (n, C, H, W)
  at::Tensor x = draw();  // x_T, (n, C, H, W)
  if (is_sde_sampler(req.sampler)) {
    diffusion::SdeSampleOptions o;
    o.steps = req.sde_steps > 0 ? req.sde_steps : diffusion.num_timesteps();
    o.clip_denoised = req.clip_denoised;
    o.lambda_min = req.dpm_lambda_min;
    o.noise = draw;
    return diffusion::sde_sample_loop(diffusion, diffusion::parse_sde_sampler(req.sampler), fn, x, o).cpu();
  }
  const bool ddim = req.sampler == "ddim" || (req.sampler.empty() && uses_ddim(req.respacing));
  for (int64_t i = diffusion.num_timesteps() - 1; i >= 0; --i) {
    const at::Tensor t = at::full({n}, i, at::TensorOptions().dtype(at::kLong).device(device));
    const at::Tensor noise = draw();
    x = ddim ? diffusion.ddim_sample(fn, x, t, req.clip_denoised, req.eta, std::nullopt, noise, cond_fn).sample
             : diffusion.p_sample(fn, x, t, req.clip_denoised, std::nullopt, noise, cond_fn).sample;
  }
  return x.cpu();
}

SampleBatch sample_indices(LoadedModel& m, const diffusion::GaussianDiffusion& diffusion, const SampleRequest& req,
                           int64_t begin, int64_t end, const c10::Device& device) {
  torch::NoGradGuard no_grad;
  const int64_t model_classes = m.unet->options().num_classes.value_or(0);
  // Labels come from the model's classes, else (unconditional model) from the guiding classifier's.
  const int64_t classes = model_classes > 0 ? model_classes : req.classifier ? req.classifier->num_classes() : 0;
  std::vector<at::Generator> gens;
  std::vector<int64_t> labels_v;
  for (int64_t i = begin; i < end; ++i) {
    gens.push_back(sample_generator(req.seed, i));
    if (classes > 0) {  // the label draw comes first, so it is there whichever class option is used
      const int64_t drawn = at::randint(classes, {1}, gens.back(), at::kLong).item<int64_t>();
      labels_v.push_back(req.class_label >= 0 ? req.class_label : drawn);
    }
  }
  SampleBatch out;
  if (classes > 0) out.labels = at::tensor(labels_v, at::kLong);
  if (gens.empty()) {
    out.images = at::empty({0, req.channels, req.height, req.width}, at::kFloat);
    return out;
  }
  const at::Tensor y = out.labels.defined() ? out.labels.to(device) : at::Tensor();
  const at::Tensor y_model = model_classes > 0 ? y : at::Tensor();
  const diffusion::ModelFn fn =
      req.guidance ? guided_model_fn(m.unet, y_model, req.guidance_scale) : model_fn(m.unet, y_model);
  if (req.classifier && is_sde_sampler(req.sampler)) {
    throw std::invalid_argument("--classifier: guidance works with the ancestral and DDIM samplers, not --sampler " +
                                req.sampler);
  }
  diffusion::CondFn cond_fn;  // classifier guidance (none at scale 0: the same as the unguided sampler)
  if (req.classifier && req.classifier_scale != 0.0) {
    cond_fn = diffusion::classifier_cond_fn(classifier_logits_fn(req.classifier->net, req.classifier->config), y,
                                            req.classifier_scale);
  }
  out.images = sample_with_generators(fn, diffusion, req, gens, device, cond_fn);
  return out;
}

bool is_sde_sampler(const std::string& sampler) {
  return !sampler.empty() && sampler != "ancestral" && sampler != "ddim";
}

void resolve_sampler(const std::string& sampler, int64_t steps, std::string& respacing,
                     const std::string& respacing_flag) {
  const std::string known = "ancestral, ddim, " + diffusion::known_sde_sampler_names();
  if (steps < 0) throw std::invalid_argument("--steps " + std::to_string(steps) + ": give a positive step count");
  if (sampler.empty()) {
    if (steps > 0) throw std::invalid_argument("--steps: give --sampler too (" + known + ")");
    return;
  }
  if (sampler == "ancestral" || sampler == "ddim") {
    if (steps > 0 && !respacing.empty()) {
      throw std::invalid_argument("--steps " + std::to_string(steps) + " and " + respacing_flag + " " + respacing +
                                  ": give one of them");
    }
    if (sampler == "ancestral" && uses_ddim(respacing)) {
      throw std::invalid_argument("--sampler ancestral with " + respacing_flag + " " + respacing +
                                  ": ddimN means DDIM; give " + respacing_flag + " N or --sampler ddim");
    }
    if (steps > 0) respacing = (sampler == "ddim" ? "ddim" : "") + std::to_string(steps);
    return;
  }
  try {
    diffusion::parse_sde_sampler(sampler);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("--sampler " + sampler + ": unknown; known: " + known);
  }
  if (!respacing.empty()) {
    throw std::invalid_argument(respacing_flag + " " + respacing + ": --sampler " + sampler +
                                " chooses its own steps; give --steps N instead");
  }
}

IndexSampler index_sampler(model::UNet& unet, const TrainConfig& config, const SampleRequest& req,
                           const c10::Device& device) {
  auto m = std::make_shared<LoadedModel>();  // sample_indices' view of the network
  m->config = config;
  m->unet = unet;
  auto spaced = std::make_shared<const diffusion::GaussianDiffusion>(make_diffusion(config, req.respacing));
  return [m, spaced, req, device](int64_t begin, int64_t end) {
    return sample_indices(*m, *spaced, req, begin, end, device).images;
  };
}

std::pair<int64_t, int64_t> rank_range(int64_t count, int rank, int world_size) {
  return {count * rank / world_size, count * (rank + 1) / world_size};
}

at::Tensor to_model_input(const at::Tensor& images_u8) {
  return images_u8.permute({0, 3, 1, 2}).to(at::kFloat).div(127.5).sub(1.0).contiguous();  // (N, C, H, W)
}

}  // namespace ddpm::trainer
