// The training loop, in improved-diffusion's shape: run_loop -> run_step -> forward_backward,
// finish (the gradient all-reduce), optimize, record; periodic work after each step. Setup:
// train_setup.cpp; checkpoints: train_state.cpp; evaluations: train_eval.cpp.
#include <ATen/ATen.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "ddpm/trainer/autocast.h"
#include "ddpm/trainer/signals.h"
#include "trainer.h"

namespace ddpm::trainer {
namespace detail {

namespace {

using monitoring::StepPhase;

}  // namespace

// --- the loop -------------------------------------------------------------------------------

TrainOutcome Trainer::run_loop() {
  if (resumed_from_ >= 0 && step_ >= total_steps_) {
    print("run complete: step " + std::to_string(step_) + " of " + std::to_string(total_steps_) + " in " +
          last_checkpoint_ + "; nothing to do (raise --max-steps or --max-images to train further)");
    logger_.finish(0);
    return outcome(0);
  }
  // Only now, after every check (flags, data, model, resume), is the run dir created: a run that
  // fails before this point leaves nothing behind. A refused config does not replace the saved one.
  if (rank_ == 0) create_run_dir(config_.run_dir);
  comm_.barrier();
  if (rank_ == 0) write_config_file((std::filesystem::path(config_.run_dir) / "config.json").string(), config_);
  logger_.open({{"event", resumed_from_ >= 0 ? "resume" : "start"}, {"step", step_}, {"world_size", world_},
                {"global_batch", plan_.global_batch}, {"total_steps", total_steps_}});
  setup_fid();
  bool stop = false;
  while (step_ < total_steps_ && !stop) {
    const int64_t before = step_;
    stop = run_step();
    logger_.progress(step_, total_steps_);
    if (step_ > before && step_ < total_steps_) periodic_.run_due(step_);  // the last step's: run_final
  }
  const bool completed = step_ >= total_steps_;
  if (!completed) {
    print("stop signal (" + std::string(signal_name(stop_signal())) + " on some rank): checkpointing at step " +
          std::to_string(step_) + ", exit code " + std::to_string(kRequeueExitCode) + " (requeue and resume)");
  }
  periodic_.run_final(step_, completed);
  comm_.barrier();  // every rank returns once rank 0's outputs (grid, log, checkpoint) are written
  const int exit_code = completed ? 0 : kRequeueExitCode;
  logger_.finish(exit_code);
  return outcome(exit_code);
}

// The run dir and a probe file in it: an unusable --run-dir is one clear error, not a failure in
// the middle of the first write.
void Trainer::create_run_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const auto fail = [&](const std::string& why) {
    throw std::runtime_error("--run-dir " + dir + ": " + why + "; pick a --run-dir in a writable folder");
  };
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create the folder (" + ec.message() + ")");
  const fs::path probe = fs::path(dir) / (".write-test-" + std::to_string(::getpid()));
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (!f) fail(std::string("cannot write in the folder (") + std::strerror(errno) + ")");
  std::fclose(f);
  fs::remove(probe, ec);
}

TrainOutcome Trainer::outcome(int exit_code) const {
  TrainOutcome out;
  out.exit_code = exit_code;
  out.step = step_;
  out.images_seen = images_seen_;
  out.resumed_from = resumed_from_;
  out.checkpoint = last_checkpoint_;
  return out;
}

bool Trainer::run_step() {
  ++attempts_;
  poison_step_ = (test_nonfinite_rank_ < 0 || test_nonfinite_rank_ == rank_) &&
                 std::find(test_nonfinite_attempts_.begin(), test_nonfinite_attempts_.end(), attempts_) !=
                     test_nonfinite_attempts_.end();  // test-only (DDPM_TEST_NONFINITE_STEPS)
  timer_.start();
  const data::Batch batch = batches_->next();  // the next one is read meanwhile
  timer_.lap(StepPhase::kData);
  const at::Tensor rows = forward_backward(batch);
  timer_.lap(StepPhase::kForwardBackward);
  reducer_->finish();  // mean-over-ranks gradients in .grad
  timer_.lap(StepPhase::kAllreduceWait);
  const bool stepped = optimize();
  timer_.lap(StepPhase::kOptimizer);
  if (stepped) ema_->update(param_tensors_, step_);
  timer_.lap(StepPhase::kEma);
  images_seen_ += plan_.global_batch;
  if (stepped && hooks_.after_step) hooks_.after_step(step_);
  return record(rows, stepped);
}

// Every microbatch of this rank's batch, the task's loss forward and backward; the last
// backward's hooks start the gradient all-reduce. Returns this rank's (B, 4) float64 rows t,
// loss, mse, vb on the device (MicrobatchLoss), read on the host only once per step, in record().
at::Tensor Trainer::forward_backward(const data::Batch& batch) {
  optimizer_->zero_grad();
  // Pinned on a GPU run (BatchPrefetcher): the copies overlap with the work queued before them.
  const at::Tensor x = batch.images.to(device_, /*non_blocking=*/true);  // (B, C, H, W) in [-1, 1]
  const at::Tensor y = config_.num_classes > 0 ? batch.labels.to(device_, /*non_blocking=*/true) : at::Tensor();
  const int64_t mb = plan_.microbatch, n = plan_.num_microbatches;
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < n; ++i) {
    // All but the last microbatch only accumulate locally; the last backward all-reduces.
    std::optional<dist::NoSyncGuard> no_sync;
    if (i + 1 < n) no_sync.emplace(*reducer_);
    const at::Tensor xi = x.narrow(0, i * mb, mb);
    const at::Tensor yi = y.defined() ? y.narrow(0, i * mb, mb) : y;
    MicrobatchLoss out;
    {
      AutocastScope autocast(autocast_);
      out = task_->loss(xi, yi);
    }
    if (poison_step_) {  // test-only fault injection (read_test_hooks)
      out.loss = out.loss * NAN;
      out.rows = out.rows.clone();
      out.rows.select(1, 1).fill_(NAN);
    }
    rows.push_back(out.rows);
    // Mean over the per-rank batch (not improved-diffusion's sum over microbatches), times the
    // fp16 loss scale.
    (out.loss * (optimizer_->loss_scale() / static_cast<double>(n))).backward();
  }
  return at::cat(rows, 0);
}

// The optimizer step after the all-reduce; false when it was skipped (non-finite gradients).
bool Trainer::optimize() {
  if (!optimizer_->step(step_)) {
    print("warning: non-finite gradients at step " + std::to_string(step_ + 1) + " (" +
          std::to_string(optimizer_->nonfinite_in_row()) + " in a row); step skipped");
    return false;
  }
  ++step_;
  return true;
}

// Every rank's (t, loss, mse, vb) rows, all-gathered with each rank's stop request in a fifth
// column (one collective a step: the stop is agreed at the same step everywhere): they feed the
// task (the timestep sampler's history, identical on every rank) and the logged quartiles of t.
bool Trainer::record(const at::Tensor& rows, bool stepped) {
  const double stop_flag = stop_requested() ? 1.0 : 0.0;
  const at::Tensor mine = at::cat({rows, at::full({rows.size(0), 1}, stop_flag, rows.options())}, 1);  // (B, 5)
  const at::Tensor all = comm_.all_gather(to_comm(mine)).cpu().reshape({-1, 5});  // (W B, 5)
  const at::Tensor terms = all.narrow(1, 0, 4);  // (G, 4)
  const at::Tensor loss = terms.select(1, 1);
  if (at::isfinite(loss).all().item<bool>()) task_->observe(terms);
  logger_.record(terms, task_->num_timesteps(), stepped, optimizer_->grad_norm(), timer_.seconds());
  return all.select(1, 4).max().item<double>() > 0.0;
}

// Ends a logging interval: every rank's waits gathered (stragglers), rank 0 logs.
void Trainer::log_interval() {
  const std::array<double, 2> w = logger_.waits();
  const at::Tensor waits = comm_.all_gather(to_comm(at::tensor({w[0], w[1]}, at::kDouble))).cpu();  // (W, 2)
  logger_.log_interval({step_, total_steps_, images_seen_, optimizer_->lr(), optimizer_->loss_scale(),
                        optimizer_->scaling()},
                       waits);
}

}  // namespace detail

TrainOutcome train(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device,
                   const TrainHooks& hooks) {
  std::optional<StopSignalHandlers> handlers;
  if (hooks.install_signal_handlers) {
    clear_stop_request();
    handlers.emplace();
  }
  detail::Trainer trainer(config, comm, device, hooks);
  return trainer.run_loop();
}

}  // namespace ddpm::trainer
