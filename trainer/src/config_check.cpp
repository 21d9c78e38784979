// Checks of a resolved TrainConfig: ranges and names, the batch layout for a world size, the
// run's length, and the comparison with a saved config on resume; see ddpm/trainer/config.h.
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "config_fields.h"
#include "ddpm/data/files.h"
#include "ddpm/evaluation/fid_eval.h"

namespace ddpm::trainer {

namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string flag_of(const std::string& key) {
  const detail::Field* f = detail::find_field(key);
  return (f ? f->key.flag : "--" + key) + " (key \"" + key + "\")";
}

[[noreturn]] void bad(const std::string& key, const std::string& msg) {
  throw std::invalid_argument(flag_of(key) + ": " + msg);
}

void one_of(const std::string& key, const std::string& value, const std::vector<std::string>& allowed) {
  for (const auto& a : allowed) {
    if (value == a) return;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : " | ") + a;
  bad(key, "'" + value + "' is not one of " + list);
}

void at_least(const std::string& key, double value, double min, const std::string& why = "") {
  if (!(value >= min)) {
    std::ostringstream s;
    s << "is " << value << ", must be >= " << min << (why.empty() ? "" : " (" + why + ")");
    bad(key, s.str());
  }
}

bool is_count(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
  }
  return std::stol(s) > 0;
}

void check_respacing(const std::string& r, int64_t T, const std::string& key = "sample_respacing") {
  const std::string fix = "use \"N\" (e.g. \"100\"), per-section counts \"10,15,20\" or \"ddimN\" (e.g. \"ddim50\")";
  if (r.rfind("ddim", 0) == 0) {
    const std::string n = r.substr(4);
    if (!is_count(n)) bad(key, "'" + r + "' is not ddim followed by a step count; " + fix);
    if (std::stol(n) > T) bad(key, "'" + r + "' asks for more steps than diffusion_steps " + std::to_string(T));
    return;
  }
  std::stringstream ss(r);
  std::string part;
  int64_t sections = 0;
  while (std::getline(ss, part, ',')) {
    if (!is_count(part)) bad(key, "'" + r + "' has '" + part + "', not a positive count; " + fix);
    ++sections;
  }
  if (sections == 0) bad(key, "is empty; " + fix);
  // Section i covers T / sections steps (the first T % sections get one more).
  std::stringstream again(r);
  for (int64_t i = 0; std::getline(again, part, ','); ++i) {
    const int64_t size = T / sections + (i < T % sections ? 1 : 0);
    if (std::stol(part) > size) {
      bad(key, "'" + r + "': section " + std::to_string(i) + " asks for " + part + " steps but holds " +
                   std::to_string(size) + " of diffusion_steps " + std::to_string(T));
    }
  }
}

void check_host_port(const std::string& key, const std::string& v) {
  const auto colon = v.rfind(':');
  const std::string port = colon == std::string::npos ? "" : v.substr(colon + 1);
  const bool ok = colon != std::string::npos && colon > 0 && !port.empty() && port.size() <= 5 &&
                  port.find_first_not_of("0123456789") == std::string::npos && std::stol(port) <= 65535;
  if (!ok) bad(key, "'" + v + "' is not HOST:PORT (e.g. 127.0.0.1:9100)");
}

void check_required(const TrainConfig& c) {
  if (c.data.empty()) bad("data", "missing: give the HDF5 training set, e.g. --data fmnist.h5 (ddpm_prepare makes one)");
  if (c.run_dir.empty()) bad("run_dir", "missing: give a folder for checkpoints and logs, e.g. --run-dir runs/demo");
  if (c.max_steps <= 0 && c.max_images <= 0) {
    bad("max_steps", "neither --max-steps nor --max-images is set; ddpm never trains without a bound: "
                     "give --max-steps N, --max-images N, or a --preset that sets one");
  }
}

void check_optimizer(const TrainConfig& c) {
  at_least("max_steps", c.max_steps, 0);
  at_least("max_images", c.max_images, 0);
  at_least("global_batch", c.global_batch, 1);
  at_least("microbatch", c.microbatch, 0, "0 means the whole per-rank batch");
  if (!(c.lr > 0 && std::isfinite(c.lr))) bad("lr", "is " + num(c.lr) + ", must be a positive number like 1e-4");
  at_least("weight_decay", c.weight_decay, 0);
  if (!(c.adam_beta1 >= 0 && c.adam_beta1 < 1)) bad("adam_beta1", "must be in [0, 1), e.g. 0.9");
  if (!(c.adam_beta2 >= 0 && c.adam_beta2 < 1)) bad("adam_beta2", "must be in [0, 1), e.g. 0.999");
  if (!(c.adam_eps > 0)) bad("adam_eps", "must be > 0, e.g. 1e-8");
  at_least("warmup_steps", c.warmup_steps, 0);
  one_of("lr_decay", c.lr_decay, {"constant", "linear", "cosine"});
  if (!(c.lr_min >= 0 && c.lr_min <= c.lr)) bad("lr_min", "must be in [0, lr]");
  at_least("lr_decay_steps", c.lr_decay_steps, 0, "0 means the run's length");
  at_least("grad_clip", c.grad_clip, 0, "0 turns clipping off");
  at_least("collective_timeout", c.collective_timeout, 0, "0 waits forever; give a few minutes more than rank 0 "
           "ever works alone (checkpoint writes, FID statistics)");
  if (c.ema_rates.empty()) bad("ema_rates", "is empty; give at least one rate, e.g. --ema-rates 0.9999");
  std::set<double> seen;
  for (double r : c.ema_rates) {
    if (!(r > 0 && r < 1)) bad("ema_rates", "rate " + num(r) + " must be in (0, 1), e.g. 0.9999");
    if (!seen.insert(r).second) bad("ema_rates", "lists rate " + num(r) + " twice");
  }
}

void check_precision(const TrainConfig& c) {
  one_of("precision", c.precision, {"fp32", "bf16", "fp16"});
  if (!(c.loss_scale_init > 0)) bad("loss_scale_init", "must be > 0, e.g. 65536");
  if (!(c.loss_scale_growth >= 1)) bad("loss_scale_growth", "must be >= 1, e.g. 2");
  if (!(c.loss_scale_backoff > 0 && c.loss_scale_backoff < 1)) bad("loss_scale_backoff", "must be in (0, 1), e.g. 0.5");
  at_least("loss_scale_window", c.loss_scale_window, 1);
  at_least("max_nonfinite_steps", c.max_nonfinite_steps, 1);
}

void check_diffusion_and_model(const TrainConfig& c) {
  one_of("schedule", c.schedule, {"linear", "cosine"});
  at_least("diffusion_steps", c.diffusion_steps, 2);
  one_of("mean_type", c.mean_type, {"eps", "x0", "prev", "v"});
  one_of("var_type", c.var_type, {"fixed-small", "fixed-large", "learned", "learned-range"});
  one_of("loss_type", c.loss_type, {"mse", "rescaled-mse", "kl", "rescaled-kl"});
  one_of("timestep_sampler", c.timestep_sampler, {"uniform", "loss-second-moment"});
  one_of("task", c.task, {"diffusion", "superres", "classifier", "autoencoder"});
  if (c.model.empty()) bad("model", "is empty; name a U-Net preset, e.g. --model ddpm-cifar10");
  at_least("num_classes", c.num_classes, 0, "0 means unconditional");
  if (!(c.label_dropout >= 0 && c.label_dropout < 1)) bad("label_dropout", "must be in [0, 1)");
  if (c.label_dropout > 0 && c.num_classes == 0) {
    bad("label_dropout", "is set but --num-classes is 0; label dropout needs a class-conditional model");
  }
}

// --task superres: the low resolution and conditioning augmentation (the image size is checked
// against the data by the task, superres_task.cpp).
void check_superres(const TrainConfig& c) {
  at_least("low_res", c.low_res, 0);
  at_least("cond_aug_max", c.cond_aug_max, 0, "0 turns conditioning augmentation off");
  at_least("cond_aug_level", c.cond_aug_level, 0, "0 samples from the clean low-res image");
  if (c.task != "superres") {
    const std::pair<const char*, int64_t> keys[] = {
        {"low_res", c.low_res}, {"cond_aug_max", c.cond_aug_max}, {"cond_aug_level", c.cond_aug_level}};
    for (const auto& [key, value] : keys) {
      if (value != 0) bad(key, "applies to --task superres only; drop it or add --task superres");
    }
    return;
  }
  if (c.low_res == 0) bad("low_res", "is required with --task superres: give the resolution to super-resolve from, "
                                     "e.g. --low-res 14 for 28 px images");
  if (c.cond_aug_max >= c.diffusion_steps) {
    bad("cond_aug_max", "is " + std::to_string(c.cond_aug_max) + ": levels are timesteps of the schedule, give at "
                            "most diffusion_steps - 1 = " + std::to_string(c.diffusion_steps - 1));
  }
  if (c.cond_aug_level > c.cond_aug_max) {
    bad("cond_aug_level", "is " + std::to_string(c.cond_aug_level) + " but the model is trained on levels up to "
                              "--cond-aug-max " + std::to_string(c.cond_aug_max) +
                              (c.cond_aug_max == 0 ? " (no augmentation: it has no level input); give 0"
                                                   : "; give a level in [0, " + std::to_string(c.cond_aug_max) + "]"));
  }
  if (c.num_classes > 0) {
    bad("num_classes", "--task superres trains unconditional super-resolution models only; give --num-classes 0");
  }
  if (c.bpd_every > 0) {
    bad("bpd_every", "--task superres has no bits/dim evaluation (its likelihood is conditional on the low-res "
                     "image); give --bpd-every 0");
  }
}

// --task autoencoder's options, and --latent (diffusion only); neither has bits/dim.
void check_latent(const TrainConfig& c) {
  at_least("ae_channels", c.ae_channels, 32);
  if (c.ae_channels % 32 != 0) bad("ae_channels", "is " + std::to_string(c.ae_channels) + "; give a multiple of 32 (GroupNorm's 32 groups)");
  if (c.ae_factor != 1 && c.ae_factor != 2 && c.ae_factor != 4 && c.ae_factor != 8) {
    bad("ae_factor", "is " + std::to_string(c.ae_factor) + "; give 1, 2, 4 or 8");
  }
  at_least("ae_res_blocks", c.ae_res_blocks, 1);
  at_least("z_channels", c.z_channels, 1);
  one_of("ae_loss", c.ae_loss, {"l1", "l2"});
  at_least("kl_weight", c.kl_weight, 0.0);
  if (c.task == "autoencoder" && !c.model_overrides.empty()) {
    bad("model_overrides", "is " + c.model_overrides.dump() + ", but --task autoencoder trains no U-Net; its shape is "
                           "--ae-channels, --ae-factor, --ae-res-blocks and --z-channels: drop --model-overrides");
  }
  if (!c.latent.empty() && c.task != "diffusion") {
    bad("latent", "is for --task diffusion (diffusion in the autoencoder's latent space), not --task " + c.task);
  }
  if (c.bpd_every > 0 && (c.task == "autoencoder" || !c.latent.empty())) {
    bad("bpd_every", std::string(c.task == "autoencoder" ? "--task autoencoder has no likelihood"
                                                         : "a latent diffusion's bound would be of the latents, not the images") +
                         "; use --bpd-every 0");
  }
}

void check_outputs(const TrainConfig& c) {
  if (c.resume != "auto" && c.resume != "none" && c.resume.empty()) {
    bad("resume", "is empty; use auto, none or a checkpoint folder");
  }
  at_least("save_every", c.save_every, 1);
  at_least("keep_last", c.keep_last, 0, "0 keeps every checkpoint");
  at_least("keep_every", c.keep_every, 0);
  at_least("sample_every", c.sample_every, 0, "0 turns sampling off");
  check_respacing(c.sample_respacing, c.diffusion_steps);
  at_least("sample_count", c.sample_count, 1);
  at_least("fid_every", c.fid_every, 0, "0 turns FID off");
  at_least("fid_samples", c.fid_samples, 2, "a covariance needs two samples");
  at_least("fid_batch", c.fid_batch, 0, "0 uses --global-batch");
  if (c.fid_every > 0) {
    if (c.fid_extractor.empty()) {
      bad("fid_extractor", "is required with --fid-every " + std::to_string(c.fid_every) +
                               "; give domain:PATH (train one with ddpm_fid_net), inception:PATH (pytorch-fid's "
                               "pt_inception-2015-12-05-6726825d.pth) or torchscript:PATH, or --fid-every 0");
    }
    evaluation::parse_extractor_spec(c.fid_extractor, flag_of("fid_extractor"));
    check_respacing(c.fid_sampling, c.diffusion_steps, "fid_sampling");
  }
  at_least("log_every", c.log_every, 1);
  if (c.metrics_addr != "none") check_host_port("metrics_addr", c.metrics_addr);
  if (!c.pushgateway.empty()) check_host_port("pushgateway", c.pushgateway);
  at_least("bpd_every", c.bpd_every, 0, "0 turns bits/dim off");
  at_least("bpd_samples", c.bpd_samples, 1);
}

// --task classifier: labels needed; no images and no likelihood, so no grids, FID or bits/dim.
void check_classifier(const TrainConfig& c) {
  if (c.task != "classifier") return;
  const std::string why = " but --task classifier trains a noise classifier, which makes no images";
  if (c.num_classes <= 0) {
    bad("num_classes", "is 0; --task classifier needs the dataset's class count (e.g. --num-classes 10) and a "
                       "labelled --data");
  }
  if (c.label_dropout > 0) bad("label_dropout", "is " + num(c.label_dropout) + "; the classifier sees every label: give 0");
  if (c.timestep_sampler != "uniform") {
    bad("timestep_sampler", "is " + c.timestep_sampler + "; the classifier is trained at t drawn uniformly: give uniform");
  }
  if (c.sample_every > 0) bad("sample_every", "is " + std::to_string(c.sample_every) + why + "; give --sample-every 0");
  if (c.fid_every > 0) bad("fid_every", "is " + std::to_string(c.fid_every) + why + "; give --fid-every 0");
  if (c.bpd_every > 0) {
    bad("bpd_every", "is " + std::to_string(c.bpd_every) +
                         " but --task classifier has no likelihood (bits/dim); give --bpd-every 0");
  }
}

}  // namespace

void validate(const TrainConfig& c) {
  check_required(c);
  check_optimizer(c);
  check_precision(c);
  check_diffusion_and_model(c);
  check_superres(c);
  check_classifier(c);
  check_latent(c);
  check_outputs(c);
}

BatchPlan plan_batch(const TrainConfig& c, int world_size) {
  if (world_size < 1) throw std::invalid_argument("plan_batch: world size " + std::to_string(world_size) + " < 1");
  const int64_t g = c.global_batch;
  if (g % world_size != 0) {
    const int64_t lo = g / world_size * world_size;
    std::string ranks;
    for (int64_t n = 1; n <= g && n <= 1024; ++n) {
      if (g % n == 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(n);
    }
    bad("global_batch", std::to_string(g) + " images do not split evenly over " + std::to_string(world_size) +
                            " ranks; use a multiple of " + std::to_string(world_size) + " (e.g. " +
                            (lo > 0 ? std::to_string(lo) + " or " : "") + std::to_string(lo + world_size) +
                            "), or run on " + ranks + " ranks");
  }
  BatchPlan p;
  p.global_batch = g;
  p.world_size = world_size;
  p.per_rank_batch = g / world_size;
  p.microbatch = c.microbatch == 0 ? p.per_rank_batch : std::min(c.microbatch, p.per_rank_batch);
  if (p.per_rank_batch % p.microbatch != 0) {
    std::string divisors;
    for (int64_t d = 1; d <= p.per_rank_batch; ++d) {
      if (p.per_rank_batch % d == 0) divisors += (divisors.empty() ? "" : ", ") + std::to_string(d);
    }
    bad("microbatch", std::to_string(c.microbatch) + " does not divide the per-rank batch " +
                          std::to_string(p.per_rank_batch) + " (global " + std::to_string(g) + " over " +
                          std::to_string(world_size) + " ranks); use one of " + divisors + ", or 0");
  }
  p.num_microbatches = p.per_rank_batch / p.microbatch;
  return p;
}

int64_t fid_batch_size(const TrainConfig& c) { return c.fid_batch > 0 ? c.fid_batch : c.global_batch; }

int64_t total_steps(const TrainConfig& c) {
  const int64_t by_images = c.max_images > 0 ? (c.max_images + c.global_batch - 1) / c.global_batch : 0;
  if (c.max_steps > 0 && by_images > 0) return std::min(c.max_steps, by_images);
  return c.max_steps > 0 ? c.max_steps : by_images;
}

std::vector<std::string> resume_differences(const Json& saved, const Json& now) {
  std::vector<std::string> out;
  auto safe = [](const std::string& key) {
    const detail::Field* f = detail::find_field(key);
    return (f && f->key.safe_on_resume) || detail::retired_key(key);
  };
  // --latent may name the autoencoder run's new place (the checkpoint carries the autoencoder),
  // not turn a pixel run into a latent one or back.
  const auto moved_latent = [](const std::string& key, const Json& a, const Json& b) {
    return key == "latent" && a.is_string() && b.is_string() && !a.get<std::string>().empty() &&
           !b.get<std::string>().empty();
  };
  for (const auto& [key, value] : saved.items()) {
    if (safe(key)) continue;
    if (!now.contains(key)) {
      out.push_back(key + " (saved " + value.dump() + ", now absent)");
    } else if (now.at(key) != value && !moved_latent(key, value, now.at(key))) {
      out.push_back(key + " (saved " + value.dump() + ", now " + now.at(key).dump() + ")");
    }
  }
  // A key newer than the saved config is no difference while it has its default value: runs of
  // earlier versions resume.
  const Json defaults = to_json(TrainConfig{});
  for (const auto& [key, value] : now.items()) {
    if (safe(key) || saved.contains(key)) continue;
    if (defaults.contains(key) && defaults.at(key) == value) continue;
    out.push_back(key + " (saved absent, now " + value.dump() + ")");
  }
  return out;
}

void check_resume_config(const Json& saved, const Json& now, const std::string& saved_from) {
  const std::vector<std::string> diffs = resume_differences(saved, now);
  if (diffs.empty()) return;
  std::string list, safe;  // one line: the error is one line on stderr
  for (const auto& d : diffs) list += (list.empty() ? " " : "; ") + d;
  for (const auto& f : detail::fields()) {
    if (f.key.safe_on_resume) safe += (safe.empty() ? "" : ", ") + f.key.key;
  }
  throw std::invalid_argument("resume: the configuration differs from the one saved in " + saved_from +
                              " in " + std::to_string(diffs.size()) + " key(s):" + list +
                              ". Resume with the saved values, or start a new --run-dir (or --resume none "
                              "with a fresh run dir); keys that may change on resume: " + safe);
}

void write_config_file(const std::string& path, const TrainConfig& config) {
  data::write_file_atomic(path, to_json(config).dump(2) + "\n");
}

Json read_json_file(const std::string& path) {
  const std::string text = data::read_file(path);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::invalid_argument(path + ": not valid JSON: " + e.what());
  }
}

}  // namespace ddpm::trainer
