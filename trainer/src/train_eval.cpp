// Evaluations during training, each of the first EMA's weights through the task (images and
// bits/dim: TrainTask), each leaving the training's random streams as it found them (saved and
// restored around it) and its time out of images/s:
//   sample grids  RUN/samples/step_<step>.png: samples [0, sample_count) drawn exactly as
//                 ddpm_sample draws them (per-index seeds, rank_range slices), gathered by rank 0
//   FID           --fid-every: evaluation::FidEvaluation with the sampler of fid_sampling.h
//   bits/dim      --bpd-every: the full bound on the first --bpd-samples images (evaluate_bpd,
//                 the numbers ddpm_eval gives for the checkpoint)
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/trainer/inference.h"
#include "ddpm/trainer/rng_state.h"
#include "trainer.h"

namespace ddpm::trainer::detail {

namespace {

// Saves the training's random streams and restores them, and charges the time to `logger` as
// time not spent training.
class EvaluationScope {
 public:
  explicit EvaluationScope(IntervalLogger& logger) : logger_(logger), saved_(capture_rng_state()) {}
  ~EvaluationScope() {
    restore_rng_state(saved_);
    logger_.pause(seconds());
  }
  double seconds() const { return seconds_since(t0_); }

 private:
  IntervalLogger& logger_;
  RngState saved_;
  StepTimer::Clock::time_point t0_ = StepTimer::Clock::now();
};

// This rank's share of the first `count` images of `path`: uint8 (n, H, W, C) and the index of
// its first image. Throws when the images are not the training images' shape.
std::pair<at::Tensor, int64_t> bpd_images(const std::string& path, int64_t count, int rank, int world,
                                          const std::array<int64_t, 3>& chw) {
  const data::ImageDataset ds = data::ImageDataset::open(path);
  const data::DatasetInfo& info = ds.info();
  if (info.channels != chw[0] || info.height != chw[1] || info.width != chw[2]) {
    throw std::invalid_argument("--bpd-data " + path + ": images are " + std::to_string(info.channels) + "x" +
                                std::to_string(info.height) + "x" + std::to_string(info.width) +
                                " (C x H x W), the model trains on " + std::to_string(chw[0]) + "x" +
                                std::to_string(chw[1]) + "x" + std::to_string(chw[2]) +
                                "; give images of the training set's shape");
  }
  const auto [begin, end] = rank_range(std::min(count, info.count), rank, world);
  at::Tensor images = end > begin ? ds.read_images(begin, end - begin)
                                  : at::empty({0, info.height, info.width, info.channels}, at::kByte);
  return {images, begin};
}

}  // namespace

EvalRequest Trainer::eval_request(const SampleRequest& sample) const {
  return EvalRequest{ema_->state(0), sample};
}

void Trainer::write_sample_grid() {
  EvaluationScope scope(logger_);
  SampleRequest req;
  req.channels = image_chw_[0], req.height = image_chw_[1], req.width = image_chw_[2];
  req.respacing = config_.sample_respacing;
  req.seed = static_cast<uint64_t>(config_.sample_seed);
  const IndexSampler sampler = task_->image_sampler(eval_request(req));
  if (!sampler) return;  // a task without images (the config check refuses --sample-every for it)
  const int64_t count = config_.sample_count;
  const auto [begin, end] = rank_range(count, rank_, world_);
  const at::Tensor mine = sampler(begin, end);  // (n, C, H, W) in [-1, 1]
  std::vector<at::Tensor> parts = comm_.all_gather_v(to_comm(mine));
  if (rank_ != 0) return;
  for (auto& p : parts) p = p.cpu();
  char name[64];
  std::snprintf(name, sizeof name, "step_%06lld.png", static_cast<long long>(step_));
  const std::filesystem::path dir = std::filesystem::path(config_.run_dir) / "samples";
  std::filesystem::create_directories(dir);
  const auto [tiles, ncols] = task_->grid(at::cat(parts, 0));  // (S, C, H, W) samples -> the grid's tiles
  data::write_png_grid((dir / name).string(), tiles, ncols);
  print("samples " + (dir / name).string() + " (" + std::to_string(count) + " images, EMA " +
        EmaSet::rate_name(ema_->rates()[0]) + ", " + config_.sample_respacing + ", seed " +
        std::to_string(config_.sample_seed) + ", " + format_number("%.2f", scope.seconds()) + " s)");
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
  const auto t0 = StepTimer::Clock::now();
  fid_ = std::make_unique<evaluation::FidEvaluation>(s, comm_, device_, [this](const std::string& line) { print(line); });
  logger_.event({{"event", "fid_reference"}, {"step", step_}, {"extractor", fid_->extractor_name()},
                 {"stats", s.stats_path}, {"cached", fid_->reference_from_cache()},
                 {"count", fid_->reference_count()}, {"seconds", seconds_since(t0)}});
}

void Trainer::evaluate_fid() {
  evaluation::FidReport r;
  {
    EvaluationScope scope(logger_);
    r = fid_->evaluate(task_->image_sampler(eval_request(fid_sample_request(*fid_))));
  }
  if (rank_ != 0) return;
  const std::string rate = EmaSet::rate_name(ema_->rates()[0]);
  print("fid step=" + std::to_string(step_) + " value=" + format_number("%.4f", r.fid) + " extractor=" +
        r.extractor + " samples=" + std::to_string(r.samples) + " seconds=" + format_number("%.1f", r.seconds) +
        " (EMA " + rate + ", " + config_.fid_sampling + ")");
  logger_.event({{"event", "fid"}, {"step", step_}, {"fid", r.fid}, {"extractor", r.extractor},
                 {"samples", r.samples}, {"ema_rate", rate}, {"sampling", config_.fid_sampling},
                 {"seed", config_.sample_seed}, {"seconds", r.seconds}});
  if (logger_.metrics()) logger_.metrics()->set_fid(rate, r.extractor, r.samples, r.fid);
}

void Trainer::evaluate_training_bpd() {
  BpdSummary s;
  double seconds = 0;
  const std::string path = config_.bpd_data.empty() ? config_.data : config_.bpd_data;
  {
    EvaluationScope scope(logger_);
    const auto [images, first] = bpd_images(path, config_.bpd_samples, rank_, world_, image_chw_);
    s = task_->bits_per_dim(ema_->state(0), images, first, std::max<int64_t>(1, plan_.microbatch),
                            static_cast<uint64_t>(config_.sample_seed), comm_);
    seconds = scope.seconds();
  }
  if (rank_ != 0) return;
  const std::string rate = EmaSet::rate_name(ema_->rates()[0]);
  char line[256];
  std::snprintf(line, sizeof line, "bpd step=%lld value=%.6f prior=%.6f samples=%lld ema=%s seconds=%.2f",
                static_cast<long long>(step_), s.total_bpd, s.prior_bpd, static_cast<long long>(s.count),
                rate.c_str(), seconds);
  print(line);
  logger_.event({{"event", "bpd"}, {"step", step_}, {"bpd", s.total_bpd}, {"prior_bpd", s.prior_bpd},
                 {"samples", s.count}, {"ema_rate", rate}, {"data", path}, {"seed", config_.sample_seed},
                 {"seconds", seconds}});
  if (logger_.metrics()) logger_.metrics()->set_bits_per_dim(rate, s.count, s.total_bpd);
}

}  // namespace ddpm::trainer::detail
