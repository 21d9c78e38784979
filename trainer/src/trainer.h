// The Trainer behind trainer::train(), internal to trainer/src. What it trains is its TrainTask
// (trainer/task.h: the network, the loss of a microbatch, how evaluations sample). Its parts own
// their state: the OptimizerStep (AdamW, loss scale, non-finite guard, LR schedule, clipping), the IntervalLogger
// (interval sums, run log, metrics, exporter, Pushgateway, progress bar), the StepTimer and the
// PeriodicTasks (logging, checkpoints, grids, FID, bits/dim). The Trainer wires them to the
// task, data reader, gradient reducer, EMA and checkpoint store. Its methods live in
//   train_loop.cpp   run_loop -> run_step -> forward_backward -> finish -> optimize -> record
//   train_setup.cpp  the constructor: the objects of the run and the periodic tasks
//   train_state.cpp  checkpoint save, resume, per-rank seeding
//   train_eval.cpp   sample grids, FID and bits/dim during training
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/data/prefetch.h"
#include "ddpm/data/reader.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/gradient_reducer.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/fid_sampling.h"
#include "ddpm/trainer/optimizer_step.h"
#include "ddpm/trainer/periodic.h"
#include "ddpm/trainer/step_timer.h"
#include "ddpm/trainer/task.h"
#include "ddpm/trainer/train_loop.h"
#include "interval_logger.h"

namespace ddpm::trainer::detail {

class Trainer {
 public:
  Trainer(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device, const TrainHooks& hooks);
  ~Trainer();
  TrainOutcome run_loop();

 private:
  // --- setup (train_setup.cpp) ---
  void build();
  void add_periodic_tasks();
  void read_test_hooks();  // DDPM_TEST_* fault injection, for tests/fault/ only
  // --- the step (train_loop.cpp) ---
  bool run_step();  // true when some rank asked to stop (the same answer on every rank)
  at::Tensor forward_backward(const data::Batch& batch);  // (B, 4) float64 on the device: t, loss, mse, vb
  bool optimize();
  bool record(const at::Tensor& rows, bool stepped);  // all-gathers the rows; true when some rank must stop
  void log_interval();
  TrainOutcome outcome(int exit_code) const;
  static void create_run_dir(const std::string& dir);  // rank 0, after every check: throws naming --run-dir
  // --- state (train_state.cpp) ---
  void seed_rank(int64_t step);
  void resume_or_init();
  void restore(const TrainState& s, const std::string& path);
  void save_checkpoint();
  std::vector<RngState> gather_rng_states();
  at::Tensor to_comm(const at::Tensor& t) const;  // onto the communicator's device
  // --- evaluations (train_eval.cpp) ---
  EvalRequest eval_request(const SampleRequest& sample) const;  // the first EMA's weights
  void write_sample_grid();
  void setup_fid();  // every rank: extractor and reference statistics (cached)
  void evaluate_fid();
  void evaluate_training_bpd();
  void print(const std::string& line) const { logger_.print(line); }

  TrainConfig config_;
  dist::Communicator& comm_;
  c10::Device device_;
  TrainHooks hooks_;
  int rank_ = 0, world_ = 1;
  IntervalLogger logger_;  // first: a run that fails while being built still pushes its status

  BatchPlan plan_;
  int64_t total_steps_ = 0;
  std::array<int64_t, 3> image_chw_{};      // the dataset's (C, H, W)
  std::optional<at::ScalarType> autocast_;  // bf16 / fp16 on CUDA
  std::unique_ptr<TrainTask> task_;
  model::TensorDict params_;  // trainable, registration order
  std::vector<at::Tensor> param_tensors_;  // the same tensors, for the EMA update
  std::unique_ptr<data::ShardedReader> reader_;
  std::unique_ptr<data::BatchPrefetcher> batches_;  // reader_ read one batch ahead: use only this
  std::unique_ptr<OptimizerStep> optimizer_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  std::unique_ptr<EmaSet> ema_;
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<evaluation::FidEvaluation> fid_;  // when fid_every > 0
  StepTimer timer_;
  PeriodicTasks periodic_;

  // Progress (saved in checkpoints).
  int64_t step_ = 0, images_seen_ = 0;
  int64_t resumed_from_ = -1;
  std::string last_checkpoint_;

  // Test-only fault injection (read_test_hooks(), train_setup.cpp): unset in real runs.
  std::vector<int64_t> test_nonfinite_attempts_;  // DDPM_TEST_NONFINITE_STEPS: step attempts with a NaN loss
  int test_nonfinite_rank_ = -1;                  // DDPM_TEST_NONFINITE_RANK (-1: every rank)
  int64_t attempts_ = 0;                          // step attempts of this process (skipped ones count)
  bool poison_step_ = false;                      // this attempt's loss is made NaN
};

}  // namespace ddpm::trainer::detail
