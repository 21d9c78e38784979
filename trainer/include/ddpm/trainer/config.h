// TrainConfig: every setting of a ddpm_train run, resolved from a named preset, then an optional
// JSON config file, then command-line flags (later wins). The resolved config is JSON (printed on
// rank 0, saved in the run dir, compared on resume). Every bad input throws
// std::invalid_argument naming the flag / key, what was found and the fix.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ddpm::trainer {

using Json = nlohmann::ordered_json;

// Field names are the JSON keys; the flag of key `foo_bar` is `--foo-bar`.
struct TrainConfig {
  // --- run ---
  std::string data;                  // HDF5 training set (required)
  std::string run_dir;               // checkpoints/, config.json, log.jsonl, samples/ (required)
  std::string preset;                // named preset applied first ("" = built-in defaults)
  std::string config_file;           // JSON file applied after the preset
  std::string resume = "auto";       // auto (newest valid checkpoint, else fresh) | none | PATH
  std::string init_from;             // initial weights (.pt dict of tensors), "" = random init
  // --- batch and length ---
  int64_t global_batch = 128;        // images per optimizer step over all ranks
  int64_t microbatch = 0;            // images per forward/backward on one rank, 0 = per-rank batch
  int64_t max_steps = 0;             // stop after this many optimizer steps (0 = no step bound)
  int64_t max_images = 0;            // stop once this many images were seen (0 = no image bound)
  // --- optimizer (AdamW) and learning rate ---
  double lr = 1e-4;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  int64_t warmup_steps = 0;          // linear warmup from lr/warmup_steps to lr
  std::string lr_decay = "constant"; // constant | linear | cosine
  double lr_min = 0.0;               // floor of the decay
  int64_t lr_decay_steps = 0;        // step where the decay reaches lr_min, 0 = the run's length
  double grad_clip = 0.0;            // max global grad norm, 0 = off
  // --- EMA ---
  std::vector<double> ema_rates = {0.9999};
  bool ema_warmup = false;           // rate_k = min(rate, (1 + k) / (10 + k))
  // --- precision ---
  std::string precision = "fp32";    // fp32 | bf16 (autocast, GPU) | fp16 (dynamic loss scaling)
  double loss_scale_init = 65536.0;
  double loss_scale_growth = 2.0;    // factor after loss_scale_window finite steps in a row
  double loss_scale_backoff = 0.5;   // factor after a non-finite step
  int64_t loss_scale_window = 2000;
  int64_t max_nonfinite_steps = 10;  // stop after this many non-finite steps in a row
  // --- diffusion (names of docs/DESIGN.md section 2) ---
  std::string schedule = "linear";   // linear | cosine
  int64_t diffusion_steps = 1000;    // T
  std::string mean_type = "eps";     // eps | x0 | prev | v
  std::string var_type = "fixed-large";  // fixed-small | fixed-large | learned | learned-range
  std::string loss_type = "mse";     // mse | rescaled-mse | kl | rescaled-kl (hybrid = rescaled-mse
                                     // with learned-range)
  bool rescale_timesteps = false;    // network sees t * 1000 / T
  std::string timestep_sampler = "uniform";  // uniform | loss-second-moment
  // --- model ---
  std::string task = "diffusion";    // what the run trains (trainer/task.h): diffusion | superres |
                                     // classifier | autoencoder
  std::string model = "ddpm-cifar10";  // U-Net preset name (model/unet)
  Json model_overrides = Json::object();  // U-Net option overrides, e.g. {"model_channels": 64}
  int64_t num_classes = 0;           // > 0: class-conditional
  double label_dropout = 0.0;        // probability a label is dropped (classifier-free guidance)
  // --- super-resolution (--task superres; Ho et al. 2021 cascaded diffusion) ---
  int64_t low_res = 0;               // N: the conditioning image is the training image area-downsampled to N x N
  int64_t cond_aug_max = 0;          // conditioning augmentation: training levels s uniform in {0..max}, 0 = off
  int64_t cond_aug_level = 0;        // the fixed level s of the conditioning image when sampling
  // --- latent diffusion: the autoencoder (--task autoencoder) and diffusion in its latent space ---
  int64_t ae_channels = 32;          // autoencoder width of the first level (a multiple of 32)
  int64_t ae_factor = 4;             // downsampling factor f: latents are (z_channels, H/f, W/f)
  int64_t ae_res_blocks = 1;         // residual blocks per level (the decoder has one more)
  int64_t z_channels = 4;            // latent channels
  std::string ae_loss = "l1";        // reconstruction loss: l1 | l2
  double kl_weight = 1e-6;           // weight of KL(q(z|x) || N(0, I)) per image dim (as latent-diffusion)
  std::string latent;                // --task diffusion on the latents of this autoencoder run ("" = pixels)
  // --- reproducibility ---
  int64_t seed = 0;
  double collective_timeout = 1800.0;  // seconds in one collective before the job is ended (0 = none)
  // --- checkpoints ---
  int64_t save_every = 5000;         // steps between checkpoints (one is also written at the end)
  int64_t keep_last = 3;             // keep the newest K checkpoints (0 = keep all)
  int64_t keep_every = 0;            // and every checkpoint whose step is a multiple of M (0 = none)
  // --- sampling and evaluation ---
  int64_t sample_every = 0;          // steps between sample grids, 0 = off
  std::string sample_respacing = "100";  // "N", "a,b,c" (per-section counts) or "ddimN"
  int64_t sample_count = 64;
  int64_t sample_seed = 1234;        // sample i of a grid from (seed, i): grids are comparable over time
  int64_t fid_every = 0;             // steps between FID evaluations, 0 = off
  int64_t fid_samples = 10000;       // samples per FID evaluation, total over all ranks
  std::string fid_extractor;         // domain:PATH | inception:PATH | torchscript:PATH (required
                                     // when fid_every > 0)
  std::string fid_sampling = "ddim50";  // respacing of the FID samples ("N", "a,b,c" or "ddimN")
  std::string fid_stats;             // reference-stats HDF5 cache ("" = fid_stats.h5 beside --data)
  int64_t fid_batch = 0;             // samples per FID sampling batch (0 = global_batch)
  // --- logging and metrics ---
  int64_t log_every = 100;
  std::string metrics_addr = "none"; // HOST:PORT of the Prometheus exporter, or none
  std::string pushgateway;           // HOST:PORT of a Pushgateway, "" = off
  // --- bits/dim during training (ddpm_bpd; the full bound: bpd_samples x T forward passes) ---
  int64_t bpd_every = 0;             // steps between bits/dim evaluations with the first EMA, 0 = off
  int64_t bpd_samples = 64;          // the first N images of bpd_data, split over the ranks
  std::string bpd_data;              // HDF5 images to evaluate ("" = the training set, --data)
};

// One entry per TrainConfig field, in declaration order.
struct ConfigKey {
  std::string key;      // JSON key, e.g. "global_batch"
  std::string flag;     // "--global-batch"
  std::string group;    // help section
  std::string help;
  bool safe_on_resume;  // may differ from the checkpoint's config when resuming
};
const std::vector<ConfigKey>& config_keys();

// Named presets: ddpm-cifar10, improved-cifar10, fmnist-demo.
std::vector<std::string> preset_names();
Json preset_json(const std::string& name);  // the keys it sets; throws listing the known names

Json to_json(const TrainConfig& config);
// Applies the keys present in `j` on top of `config`. `source` names where they came from
// ("config file run.json", "preset fmnist-demo") in errors. Unknown keys and wrong types throw.
void apply_json(TrainConfig& config, const Json& j, const std::string& source);
TrainConfig config_from_json(const Json& j, const std::string& source);  // defaults + j

// Ranges, enums, required keys; throws std::invalid_argument naming the flag and the fix.
void validate(const TrainConfig& config);

// Command line: preset < --config file < flags, then validate(). `--help` returns the help text
// (every flag with its default) instead of a config. Errors throw std::invalid_argument.
struct CliResult {
  std::optional<TrainConfig> config;  // empty when help was requested
  std::string help;
};
// The executable that parses: its name and line in --help, and its own built-in defaults (keys
// applied before the preset, shown as the defaults in --help): ddpm_train_classifier sets
// {"task": "classifier"}.
struct CliProgram {
  std::string name = "ddpm_train";
  std::string about = "trains a denoising diffusion model; run it with mpirun -np N.";
  Json defaults = Json::object();
};
CliResult parse_train_args(int argc, const char* const* argv, const CliProgram& program = {});

// Batch layout for a world size: global = world_size * per_rank, per_rank = n * microbatch.
struct BatchPlan {
  int64_t global_batch = 0;
  int world_size = 0;
  int64_t per_rank_batch = 0;
  int64_t microbatch = 0;
  int64_t num_microbatches = 0;
};
BatchPlan plan_batch(const TrainConfig& config, int world_size);

// Samples per FID sampling batch: fid_batch, or global_batch when it is 0. Samples are seeded by
// global index, so this changes the cost, not which samples are drawn.
int64_t fid_batch_size(const TrainConfig& config);

// Optimizer steps the run lasts: max_steps, or the steps to see max_images, whichever is smaller.
int64_t total_steps(const TrainConfig& config);

// Keys whose values differ between a saved and a current config, ignoring safe_on_resume keys;
// each entry reads "lr (saved 0.0002, now 0.0001)".
std::vector<std::string> resume_differences(const Json& saved, const Json& now);
// Throws std::invalid_argument listing resume_differences() when there are any.
void check_resume_config(const Json& saved, const Json& now, const std::string& saved_from);

// config.json in a run dir: written atomically (temp file, fsync, rename), read back as JSON.
void write_config_file(const std::string& path, const TrainConfig& config);
Json read_json_file(const std::string& path);

}  // namespace ddpm::trainer
