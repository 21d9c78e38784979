// Internals of the training loop (train_loop.cpp, train_state.cpp, train_log.cpp,
// train_sample.cpp): the Trainer object, the per-interval statistics and the precision helpers.
// Not installed: nothing outside trainer/src includes it.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/data/reader.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/gradient_reducer.h"
#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/monitoring/exporter.h"
#include "ddpm/monitoring/metrics.h"
#include "ddpm/trainer/adamw.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/fid_sampling.h"
#include "ddpm/trainer/lr_schedule.h"
#include "ddpm/trainer/run_log.h"
#include "ddpm/trainer/step_guard.h"
#include "ddpm/trainer/train_loop.h"

namespace ddpm::trainer::detail {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0);
// Process resident memory and, on a CUDA device only, the caching allocator's allocated /
// reserved / peak bytes into `metrics` (train_memory.cpp). Never touches CUDA for a CPU device.
void export_memory(monitoring::Metrics& metrics, const c10::Device& device);

// Phases of a step, in the order of monitoring::StepPhase.
enum Phase { kData, kForwardBackward, kAllreduceWait, kOptimizer, kEma, kNumPhases };

// Sums over a logging interval (rank 0 logs their means). Per-sample terms come from every rank.
struct IntervalStats {
  int64_t steps = 0, images = 0, samples = 0, skipped = 0;
  double loss = 0, mse = 0, vb = 0;
  std::array<double, 4> q_loss{}, q_mse{}, q_vb{};
  std::array<int64_t, 4> q_count{};
  double grad_norm = 0;
  std::array<double, kNumPhases> phase{};  // this rank's seconds
  double paused = 0;  // seconds of FID and sample grids: not training, left out of images/s
  Clock::time_point start = Clock::now();
  void add_terms(const at::Tensor& rows, int64_t T);  // rows (M, 4) float64: t, loss, mse, vb
};

// Result of one forward/backward over the per-rank batch.
struct StepTerms {
  at::Tensor rows;  // (B, 4) float64 on CPU: t, loss, mse, vb (NaN where a term is absent)
};

class Trainer {
 public:
  Trainer(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device, const TrainHooks& hooks);
  ~Trainer();
  TrainOutcome run_loop();

 private:
  // --- setup (train_loop.cpp / train_state.cpp) ---
  void build();
  void seed_rank(int64_t step);
  void resume_or_init();
  void restore(const TrainState& s, const std::string& path);
  // --- the step (train_loop.cpp) ---
  void run_step();
  StepTerms forward_backward(const data::Batch& batch);
  at::Tensor microbatch_loss(const at::Tensor& x, const at::Tensor& y, std::vector<at::Tensor>& rows);
  bool optimize();  // false when the step was skipped (non-finite gradients)
  double grad_norm_and_clip(const std::vector<at::Tensor>& grads);
  bool stop_agreed();
  // --- state (train_state.cpp) ---
  std::string save_checkpoint();
  model::TensorDict optimizer_state() const;
  void load_optimizer_state(const model::TensorDict& saved, const std::string& source);
  std::vector<RngState> gather_rng_states();
  at::Tensor to_comm(const at::Tensor& t) const;  // onto the communicator's device
  // --- logging and metrics (train_log.cpp) ---
  void start_metrics();  // constructor, before build(): metrics, Pushgateway, exporter
  void setup_monitoring();
  void log_step();
  void evaluate_training_bpd();  // bits/dim of the first EMA on bpd_samples images (train_bpd.cpp)
  void print(const std::string& line) const;
  void progress_bar() const;
  // --- sample grids and FID (train_sample.cpp) ---
  void write_sample_grid();
  void setup_fid();     // every rank: extractor and reference statistics (cached)
  void evaluate_fid();  // every rank at the same step; rank 0 logs and exports

  TrainConfig config_;
  dist::Communicator& comm_;
  c10::Device device_;
  TrainHooks hooks_;
  int rank_ = 0, world_ = 1;
  BatchPlan plan_;
  int64_t total_steps_ = 0;
  int64_t image_channels_ = 0, image_height_ = 0, image_width_ = 0;
  bool has_labels_ = false;
  bool use_fp16_ = false, use_bf16_ = false;
  LrSchedule lr_schedule_;

  model::UNet model_{nullptr};
  std::vector<std::pair<std::string, at::Tensor>> params_;  // trainable, registration order
  std::unique_ptr<diffusion::GaussianDiffusion> diffusion_;
  std::unique_ptr<diffusion::TimestepSampler> sampler_;
  std::unique_ptr<data::ShardedReader> reader_;
  std::unique_ptr<FusedAdamW> optimizer_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  std::unique_ptr<EmaSet> ema_;
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<evaluation::FidEvaluation> fid_;  // when fid_every > 0

  // Progress (all saved in checkpoints).
  int64_t step_ = 0, images_seen_ = 0;
  double lr_ = 0.0;
  std::unique_ptr<DynamicLossScale> loss_scale_;  // fp16 on GPU; scale 1 otherwise
  std::unique_ptr<NonfiniteGuard> guard_;
  int64_t resumed_from_ = -1;
  std::string last_checkpoint_;
  double last_grad_norm_ = 0.0;

  // Rank 0's outputs.
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<monitoring::Metrics> metrics_;
  std::unique_ptr<monitoring::MetricsExporter> exporter_;
  std::unique_ptr<monitoring::Pushgateway> push_;
  IntervalStats interval_;
  Clock::time_point run_start_ = Clock::now();
  bool tty_ = false;
};

// A U-Net with the EMA weights `ema` (parameters by name; the rest as in `live`), in eval mode.
model::UNet ema_model(const TrainConfig& config, const model::UNet& live, const model::TensorDict& ema,
                      const c10::Device& device);

// RAII autocast on CUDA for bf16/fp16 (no-op when `dtype` is nullopt).
class AutocastScope {
 public:
  explicit AutocastScope(std::optional<at::ScalarType> dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_ = false, prev_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

}  // namespace ddpm::trainer::detail
