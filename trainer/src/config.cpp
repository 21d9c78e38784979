// TrainConfig <-> JSON, the field table and the named presets; see ddpm/trainer/config.h.
#include <algorithm>
#include <stdexcept>

#include "config_fields.h"

namespace ddpm::trainer {

namespace detail {
namespace {

template <typename T>
Field make(const char* key, const char* group, const char* help, T TrainConfig::*m, bool safe = false) {
  std::string flag = std::string("--") + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  static const char* kTypes[] = {"INT", "FLOAT", "BOOL", "TEXT", "FLOATS", "JSON"};
  const Member member = m;
  return Field{ConfigKey{key, flag, group, help, safe}, member, kTypes[member.index()]};
}

std::vector<Field> build_fields() {
  using C = TrainConfig;
  const char* run = "Run";
  const char* batch = "Batch and length";
  const char* opt = "Optimizer and learning rate";
  const char* ema = "EMA";
  const char* prec = "Precision";
  const char* diff = "Diffusion";
  const char* model = "Model";
  const char* sr = "Super-resolution";
  const char* latent = "Latent diffusion (autoencoder)";
  const char* ckpt = "Checkpoints";
  const char* smp = "Sampling and evaluation";
  const char* log = "Logging and metrics";
  const char* bpd = "Bits/dim during training";
  std::vector<Field> all = {
      make("data", run, "HDF5 training set (required; ddpm_prepare writes one)", &C::data, true),
      make("run_dir", run, "run folder: checkpoints/, config.json, log.jsonl, samples/ (required)",
           &C::run_dir, true),
      make("preset", run, "named preset applied first: ddpm-cifar10, improved-cifar10, fmnist-demo",
           &C::preset, true),
      make("config_file", run, "JSON file of settings applied after the preset, before flags",
           &C::config_file, true),
      make("resume", run, "auto (newest checkpoint that verifies, else a fresh start) | none | PATH",
           &C::resume, true),
      make("init_from", run, "initial weights: a .pt dict of tensors (e.g. improved-diffusion's)",
           &C::init_from, true),
      make("global_batch", batch, "images per optimizer step over all ranks", &C::global_batch),
      make("microbatch", batch, "images per forward/backward on one rank (0 = the per-rank batch)",
           &C::microbatch, true),
      make("max_steps", batch, "stop after this many optimizer steps (0 = no step bound)",
           &C::max_steps, true),
      make("max_images", batch, "stop once this many images were seen (0 = no image bound)",
           &C::max_images, true),
      make("lr", opt, "AdamW learning rate after warmup", &C::lr),
      make("weight_decay", opt, "AdamW decoupled weight decay", &C::weight_decay),
      make("adam_beta1", opt, "AdamW beta1", &C::adam_beta1),
      make("adam_beta2", opt, "AdamW beta2", &C::adam_beta2),
      make("adam_eps", opt, "AdamW epsilon", &C::adam_eps),
      make("warmup_steps", opt, "linear learning-rate warmup steps", &C::warmup_steps),
      make("lr_decay", opt, "after warmup: constant | linear | cosine", &C::lr_decay),
      make("lr_min", opt, "learning rate the decay ends at", &C::lr_min),
      make("lr_decay_steps", opt, "step where the decay reaches lr_min (0 = the run's length)",
           &C::lr_decay_steps),
      make("grad_clip", opt, "clip the global gradient norm to this (0 = off)", &C::grad_clip),
      make("ema_rates", ema, "EMA rates, comma-separated (e.g. 0.9999,0.999)", &C::ema_rates),
      make("ema_warmup", ema, "use min(rate, (1+step)/(10+step)) early on", &C::ema_warmup),
      make("precision", prec, "fp32 | bf16 (autocast on GPU) | fp16 (dynamic loss scaling)",
           &C::precision),
      make("loss_scale_init", prec, "fp16: initial loss scale", &C::loss_scale_init),
      make("loss_scale_growth", prec, "fp16: scale factor after loss_scale_window finite steps",
           &C::loss_scale_growth),
      make("loss_scale_backoff", prec, "fp16: scale factor after a non-finite step",
           &C::loss_scale_backoff),
      make("loss_scale_window", prec, "fp16: finite steps in a row before the scale grows",
           &C::loss_scale_window),
      make("max_nonfinite_steps", prec, "stop after this many non-finite (skipped) steps in a row",
           &C::max_nonfinite_steps),
      make("schedule", diff, "noise schedule: linear | cosine", &C::schedule),
      make("diffusion_steps", diff, "number of diffusion steps T", &C::diffusion_steps),
      make("mean_type", diff, "network predicts: eps | x0 | prev | v", &C::mean_type),
      make("var_type", diff, "fixed-small | fixed-large | learned | learned-range", &C::var_type),
      make("loss_type", diff, "mse | rescaled-mse | kl | rescaled-kl (hybrid: rescaled-mse + learned-range)",
           &C::loss_type),
      make("rescale_timesteps", diff, "network sees t * 1000 / T", &C::rescale_timesteps),
      make("timestep_sampler", diff, "uniform | loss-second-moment (importance sampling)",
           &C::timestep_sampler),
      make("task", model, "what the run trains: diffusion (image diffusion) | superres (a cascade's "
           "super-resolution model, see --low-res) | classifier (noise classifier for classifier guidance: the "
           "encoder half of --model, --num-classes logits) | autoencoder (latent diffusion's KL autoencoder; "
           "ddpm_train_autoencoder)", &C::task),
      make("model", model, "U-Net preset name (see model/unet)", &C::model),
      make("model_overrides", model, "U-Net option overrides as a JSON object, e.g. '{\"model_channels\":64}'",
           &C::model_overrides),
      make("num_classes", model, "classes for a class-conditional model (0 = unconditional)",
           &C::num_classes),
      make("label_dropout", model, "probability a label is dropped (classifier-free guidance)",
           &C::label_dropout),
      make("low_res", sr, "--task superres: the low resolution N; the model is conditioned on the training "
           "image area-downsampled to N x N (N < the image size and dividing it)", &C::low_res),
      make("cond_aug_max", sr, "--task superres: Gaussian conditioning augmentation, the low-res input noised "
           "by the forward process to a level s uniform in {0..S} (a timestep; s is given to the network); "
           "0 = off (improved-diffusion's SuperResModel)", &C::cond_aug_max),
      make("cond_aug_level", sr, "--task superres: the level s of the low-res input when sampling (grids, FID, "
           "ddpm_sample --cascade), in [0, cond_aug_max]", &C::cond_aug_level, true),
      make("ae_channels", latent, "autoencoder width of the first level (a multiple of 32)", &C::ae_channels),
      make("ae_factor", latent, "autoencoder downsampling factor f (1, 2, 4 or 8): latents are z x H/f x W/f",
           &C::ae_factor),
      make("ae_res_blocks", latent, "autoencoder residual blocks per level", &C::ae_res_blocks),
      make("z_channels", latent, "autoencoder latent channels", &C::z_channels),
      make("ae_loss", latent, "autoencoder reconstruction loss: l1 | l2", &C::ae_loss),
      make("kl_weight", latent, "autoencoder loss: rec + kl_weight * KL(q(z|x) || N(0, I)) / (C H W)",
           &C::kl_weight),
      make("latent", latent, "train the diffusion on the latents of this autoencoder run (run dir or checkpoint "
           "folder of ddpm_train_autoencoder; its first EMA); the U-Net's in/out channels must be z_channels; "
           "may name another path on resume (a moved run): the checkpoint carries the autoencoder it trained with",
           &C::latent),
      make("seed", run, "seed of parameters, noise, timesteps and data order", &C::seed),
      make("collective_timeout", run, "seconds a rank may wait inside one collective before every rank is "
           "ended (a peer hung or died; 0 = wait forever)", &C::collective_timeout, true),
      make("save_every", ckpt, "steps between checkpoints (one is also written at the end)",
           &C::save_every, true),
      make("keep_last", ckpt, "keep the newest K checkpoints (0 = keep all)", &C::keep_last, true),
      make("keep_every", ckpt, "also keep every checkpoint whose step is a multiple of M (0 = none)",
           &C::keep_every, true),
      make("sample_every", smp, "steps between sample grids from an EMA model (0 = off)",
           &C::sample_every, true),
      make("sample_respacing", smp, "sampling steps: \"N\", \"a,b,c\" per section, or \"ddimN\"",
           &C::sample_respacing, true),
      make("sample_count", smp, "images per sample grid", &C::sample_count, true),
      make("sample_seed", smp, "seed of the grid's samples (sample i drawn from (seed, i), as ddpm_sample --seed)", &C::sample_seed, true),
      make("fid_every", smp, "steps between FID evaluations (0 = off)", &C::fid_every, true),
      make("fid_samples", smp, "samples per FID evaluation, total over all ranks (seeded by sample_seed "
           "and index)", &C::fid_samples, true),
      make("fid_extractor", smp, "FID features: domain:PATH (ddpm_fid_net), inception:PATH (pytorch-fid "
           ".pth) or torchscript:PATH; required with --fid-every", &C::fid_extractor, true),
      make("fid_sampling", smp, "respacing of the FID samples: \"N\", \"a,b,c\" or \"ddimN\"",
           &C::fid_sampling, true),
      make("fid_stats", smp, "reference-statistics HDF5 cache (\"\" = fid_stats.h5 beside --data, or in "
           "the run dir when that folder is read-only)", &C::fid_stats, true),
      make("fid_batch", smp, "samples per FID sampling batch (0 = --global-batch; larger is faster on a GPU)",
           &C::fid_batch, true),
      make("log_every", log, "steps between log lines", &C::log_every, true),
      make("metrics_addr", log, "HOST:PORT of the Prometheus exporter on rank 0, or none",
           &C::metrics_addr, true),
      make("pushgateway", log, "HOST:PORT of a Pushgateway to push to (\"\" = off)", &C::pushgateway,
           true),
      make("bpd_every", bpd, "steps between bits/dim evaluations of the first EMA (0 = off; costs bpd_samples x T "
           "forward passes)", &C::bpd_every, true),
      make("bpd_samples", bpd, "images per bits/dim evaluation (the first N of bpd_data, split over ranks)",
           &C::bpd_samples, true),
      make("bpd_data", bpd, "HDF5 images for bits/dim (\"\" = the training set, --data)", &C::bpd_data, true),
  };
  for (Field& f : all) {
    if (f.key.key == "config_file") f.key.flag = "--config";  // the contract spells it so
  }
  return all;
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

const std::vector<Field>& fields() {
  static const std::vector<Field> all = build_fields();
  return all;
}

bool retired_key(const std::string& key) { return key == "fid_weights"; }

const Field* find_field(const std::string& key) {
  for (const Field& f : fields()) {
    if (f.key.key == key) return &f;
  }
  return nullptr;
}

Json get_value(const TrainConfig& c, const Field& f) {
  return std::visit([&](auto m) { return Json(c.*m); }, f.member);
}

void set_value(TrainConfig& c, const Field& f, const Json& v, const std::string& where) {
  auto bad = [&](const std::string& expected) {
    return std::invalid_argument(where + ": expected " + expected + ", found " + v.dump() +
                                 " (" + f.key.help + ")");
  };
  std::visit(Overloaded{
                 [&](int64_t TrainConfig::*m) {
                   if (v.is_number_integer()) {
                     c.*m = v.get<int64_t>();
                   } else if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>()))) {
                     c.*m = static_cast<int64_t>(v.get<double>());
                   } else {
                     throw bad("an integer");
                   }
                 },
                 [&](double TrainConfig::*m) {
                   if (!v.is_number()) throw bad("a number");
                   c.*m = v.get<double>();
                 },
                 [&](bool TrainConfig::*m) {
                   if (!v.is_boolean()) throw bad("true or false");
                   c.*m = v.get<bool>();
                 },
                 [&](std::string TrainConfig::*m) {
                   if (!v.is_string()) throw bad("a string");
                   c.*m = v.get<std::string>();
                 },
                 [&](std::vector<double> TrainConfig::*m) {
                   if (v.is_number()) {
                     c.*m = {v.get<double>()};
                     return;
                   }
                   if (!v.is_array()) throw bad("a list of numbers");
                   std::vector<double> out;
                   for (const auto& x : v) {
                     if (!x.is_number()) throw bad("a list of numbers");
                     out.push_back(x.get<double>());
                   }
                   c.*m = out;
                 },
                 [&](Json TrainConfig::*m) {
                   if (!v.is_object()) throw bad("a JSON object");
                   c.*m = v;
                 },
             },
             f.member);
}

}  // namespace detail

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const auto& f : detail::fields()) out.push_back(f.key);
    return out;
  }();
  return keys;
}

// --- presets ---------------------------------------------------------------------------------

std::vector<std::string> preset_names() { return {"ddpm-cifar10", "improved-cifar10", "fmnist-demo"}; }

Json preset_json(const std::string& name) {
  if (name == "ddpm-cifar10") {
    // Ho et al. 2020, CIFAR-10: linear betas, eps prediction, MSE, fixed-large variance.
    return Json{{"model", "ddpm-cifar10"},       {"schedule", "linear"},     {"diffusion_steps", 1000},
                {"mean_type", "eps"},            {"var_type", "fixed-large"}, {"loss_type", "mse"},
                {"rescale_timesteps", false},    {"timestep_sampler", "uniform"},
                {"lr", 2e-4},                    {"warmup_steps", 5000},     {"grad_clip", 1.0},
                {"ema_rates", {0.9999}},         {"global_batch", 128},      {"max_steps", 800000},
                {"save_every", 10000},           {"keep_every", 100000},     {"sample_every", 10000},
                {"sample_respacing", "100"}};
  }
  if (name == "improved-cifar10") {
    // Nichol & Dhariwal 2021, CIFAR-10 hybrid: cosine, learned-range sigmas, L_simple + 0.001 L_vlb.
    return Json{{"model", "improved-cifar10"},   {"schedule", "cosine"},     {"diffusion_steps", 4000},
                {"mean_type", "eps"},            {"var_type", "learned-range"},
                {"loss_type", "rescaled-mse"},   {"rescale_timesteps", true},
                {"timestep_sampler", "loss-second-moment"},
                {"lr", 1e-4},                    {"ema_rates", {0.9999}},    {"global_batch", 128},
                {"max_steps", 500000},           {"save_every", 10000},      {"keep_every", 100000},
                {"sample_every", 10000},         {"sample_respacing", "100"}};
  }
  if (name == "fmnist-demo") {
    // A small model that trains in about ten minutes on two CPU cores (launch/demo.sh), with the
    // Improved-DDPM hybrid recipe: cosine schedule, learned-range sigmas, L_simple + 0.001 L_vlb
    // (rescaled-mse with T = 1000), sampled with 25 ancestral steps (learned sigmas make few
    // ancestral steps good). t stays uniform: importance sampling helps L_vlb alone, not the
    // hybrid loss (Nichol & Dhariwal 2021, section 3.3), and with 10 losses per t, T = 1000 and
    // 32 images a step its history would fill only after about 700 of the demo's 1000 steps.
    return Json{{"model", "fmnist-small"},       {"schedule", "cosine"},     {"diffusion_steps", 1000},
                {"mean_type", "eps"},            {"var_type", "learned-range"},
                {"loss_type", "rescaled-mse"},   {"rescale_timesteps", false},
                {"timestep_sampler", "uniform"},
                {"lr", 5e-4},                    {"warmup_steps", 100},      {"grad_clip", 1.0},
                {"ema_rates", {0.999}},          {"ema_warmup", true},       {"global_batch", 32},
                {"max_steps", 1000},             {"save_every", 500},        {"keep_last", 2},
                {"sample_every", 500},           {"sample_respacing", "25"}, {"fid_sampling", "25"},
                {"sample_count", 64},            {"log_every", 50}};
  }
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("--preset: unknown preset '" + name + "'; known presets: " + known);
}

// --- JSON ------------------------------------------------------------------------------------

Json to_json(const TrainConfig& config) {
  Json j = Json::object();
  for (const auto& f : detail::fields()) j[f.key.key] = detail::get_value(config, f);
  return j;
}

void apply_json(TrainConfig& config, const Json& j, const std::string& source) {
  if (!j.is_object()) {
    throw std::invalid_argument(source + ": expected a JSON object of settings, found " + j.dump());
  }
  for (const auto& [key, value] : j.items()) {
    const detail::Field* f = detail::find_field(key);
    if (!f && detail::retired_key(key)) continue;
    if (!f) {
      std::string known;
      for (const auto& g : detail::fields()) known += (known.empty() ? "" : ", ") + g.key.key;
      throw std::invalid_argument(source + ": unknown key \"" + key + "\"; known keys: " + known);
    }
    if (key == "model_overrides") {  // merged, so a file can refine a preset's overrides
      Json merged = config.model_overrides;
      if (!value.is_object()) detail::set_value(config, *f, value, source + ", key \"" + key + "\"");
      merged.update(value);
      config.model_overrides = merged;
      continue;
    }
    detail::set_value(config, *f, value, source + ", key \"" + key + "\"");
  }
}

TrainConfig config_from_json(const Json& j, const std::string& source) {
  TrainConfig c;
  apply_json(c, j, source);
  return c;
}

}  // namespace ddpm::trainer
