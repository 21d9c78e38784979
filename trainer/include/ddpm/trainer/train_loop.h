// The training loop of ddpm_train (improved-diffusion's TrainLoop: run_loop -> run_step ->
// forward_backward -> optimize -> log_step) over a Communicator: sharded data, microbatches with
// no-sync, AdamW with the learning-rate schedule, EMA, timestep sampler fed with all-gathered
// losses, fp16/bf16 on GPU, full-state checkpoints, exact resume, stop signals, sample grids.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>

#include "ddpm/trainer/config.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::trainer {

struct TrainHooks {
  // Called on every rank after each optimizer step with the number of steps done (tests raise
  // SIGTERM here to stop a run at a known step).
  std::function<void(int64_t step)> after_step;
  // Lines for the user (rank 0 only); default: stdout.
  std::function<void(const std::string& line)> print;
  // Install the SIGTERM/SIGUSR1 handlers for the run (off when the caller owns them).
  bool install_signal_handlers = true;
};

struct TrainOutcome {
  int exit_code = 0;           // 0: the run reached total_steps; kRequeueExitCode: stopped by a signal
  int64_t step = 0;            // optimizer steps done
  int64_t images_seen = 0;
  int64_t resumed_from = -1;   // step of the checkpoint the run resumed from, -1 for a fresh start
  std::string checkpoint;      // the last checkpoint folder written ("" when none)
};

// Trains `config` (validated) on every rank of `comm`, each rank on `device`: resumes per
// config.resume, stops at total_steps(config) or at a stop signal (all ranks stop at the same
// step), writing a checkpoint at every save_every steps and at the end. Rank 0 writes the run dir
// (config.json, log.jsonl, checkpoints/, samples/) and serves the metrics. Throws on errors
// (callers on MPI abort the job: see dist::abort_job).
TrainOutcome train(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device,
                   const TrainHooks& hooks = {});

}  // namespace ddpm::trainer
