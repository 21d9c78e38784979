// Sample grids and FID during training: the first EMA's weights in a fresh U-Net, respaced (or
// DDIM) sampling from FIXED noise (sample_seed) split across ranks; grids are gathered and written
// by rank 0 to RUN/samples/step_<step>.png, FID features gathered by FidEvaluation (fid_eval.cpp).
// The training's random streams are saved and restored around both.
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "ddpm/data/images.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/rng_state.h"
#include "trainer_impl.h"

namespace ddpm::trainer::detail {

model::UNet ema_model(const TrainConfig& config, const model::UNet& live, const model::TensorDict& ema,
                      const c10::Device& device) {
  model::UNet net = make_unet(config);
  net->to(device);
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> by_name(ema.begin(), ema.end());
  for (auto& item : net->named_parameters()) {
    const auto it = by_name.find(item.key());
    item.value().copy_(it != by_name.end() ? it->second : live->named_parameters()[item.key()]);
  }
  net->eval();
  return net;
}

void Trainer::write_sample_grid() {
  const auto t0 = Clock::now();
  const RngState saved = capture_rng_state();  // sampling must not shift training's randomness
  model::UNet net = ema_model(config_, model_, ema_->state(0), device_);
  const diffusion::GaussianDiffusion spaced = make_diffusion(config_, config_.sample_respacing);

  // The same noise for every grid: all sample_count starting points from sample_seed; this
  // rank denoises its slice [begin, end).
  const int64_t count = config_.sample_count;
  const int64_t begin = count * rank_ / world_, end = count * (rank_ + 1) / world_;
  at::Generator noise_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_.sample_seed));
  const at::Tensor all_noise =
      at::randn({count, image_channels_, image_height_, image_width_}, noise_gen, at::kFloat);  // (S, C, H, W)
  diffusion::SampleOptions opts;
  opts.noise = all_noise.slice(0, begin, end).to(device_);
  at::Generator step_gen = at::globalContext().defaultGenerator(device_).clone();
  step_gen.set_current_seed(static_cast<uint64_t>(config_.sample_seed) * 1000003ULL + static_cast<uint64_t>(rank_));
  opts.generator = step_gen;
  at::Tensor labels;
  if (config_.num_classes > 0) labels = (at::arange(begin, end, at::kLong) % config_.num_classes).to(device_);

  at::Tensor out = at::empty({0, image_channels_, image_height_, image_width_}, at::kFloat);
  if (end > begin) {
    torch::NoGradGuard no_grad;
    const std::vector<int64_t> shape = {end - begin, image_channels_, image_height_, image_width_};
    const auto options = at::TensorOptions().dtype(at::kFloat).device(device_);
    out = uses_ddim(config_.sample_respacing) ? spaced.ddim_sample_loop(model_fn(net, labels), shape, options, opts)
                                              : spaced.p_sample_loop(model_fn(net, labels), shape, options, opts);
  }
  std::vector<at::Tensor> parts = comm_.all_gather_v(to_comm(out.to(at::kFloat)));
  restore_rng_state(saved);
  interval_.paused += seconds_since(t0);
  if (rank_ != 0) return;
  for (auto& p : parts) p = p.cpu();
  const at::Tensor images = at::cat(parts, 0);  // (S, C, H, W) in [-1, 1]
  char name[64];
  std::snprintf(name, sizeof name, "step_%06lld.png", static_cast<long long>(step_));
  const std::filesystem::path dir = std::filesystem::path(config_.run_dir) / "samples";
  std::filesystem::create_directories(dir);
  const int64_t ncols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(count))));
  data::write_png_grid((dir / name).string(), images, ncols);
  print("samples " + (dir / name).string() + " (" + std::to_string(count) + " images, EMA " +
        EmaSet::rate_name(ema_->rates()[0]) + ", " + config_.sample_respacing + ", " +
        std::to_string(seconds_since(t0)).substr(0, 5) + " s)");
}

void Trainer::setup_fid() {
  if (config_.fid_every <= 0) return;
  evaluation::FidSettings s;
  s.extractor = config_.fid_extractor;
  s.samples = config_.fid_samples;
  s.sampling = config_.fid_sampling;
  s.stats_path = config_.fid_stats.empty() ? evaluation::default_fid_stats_path(config_.data, config_.run_dir) : config_.fid_stats;
  s.data = config_.data;
  s.seed = static_cast<uint64_t>(config_.sample_seed);
  s.batch_size = fid_batch_size(config_);  // fixed batches of global indices: any world size samples alike
  const auto t0 = Clock::now();
  fid_ = std::make_unique<evaluation::FidEvaluation>(s, comm_, device_, [this](const std::string& line) { print(line); });
  if (rank_ != 0) return;
  log_->write({{"event", "fid_reference"}, {"step", step_}, {"extractor", fid_->extractor_name()},
               {"stats", s.stats_path}, {"cached", fid_->reference_from_cache()},
               {"count", fid_->reference_count()}, {"seconds", seconds_since(t0)}});
}

void Trainer::evaluate_fid() {
  const auto t0 = Clock::now();
  const RngState saved = capture_rng_state();  // FID must not shift training's randomness
  model::UNet net = ema_model(config_, model_, ema_->state(0), device_);
  const evaluation::FidReport r = evaluate_model_fid(*fid_, net, config_);
  restore_rng_state(saved);
  interval_.paused += seconds_since(t0);
  if (rank_ != 0) return;
  const std::string rate = EmaSet::rate_name(ema_->rates()[0]);
  char value[32], secs[32];
  std::snprintf(value, sizeof value, "%.4f", r.fid);
  std::snprintf(secs, sizeof secs, "%.1f", r.seconds);
  print("fid step=" + std::to_string(step_) + " value=" + value + " extractor=" + r.extractor +
        " samples=" + std::to_string(r.samples) + " seconds=" + secs + " (EMA " + rate + ", " +
        config_.fid_sampling + ")");
  log_->write({{"event", "fid"}, {"step", step_}, {"fid", r.fid}, {"extractor", r.extractor},
               {"samples", r.samples}, {"ema_rate", rate}, {"sampling", config_.fid_sampling},
               {"seed", config_.sample_seed}, {"seconds", r.seconds}});
  if (metrics_) metrics_->set_fid(rate, r.extractor, r.samples, r.fid);
}

}  // namespace ddpm::trainer::detail
