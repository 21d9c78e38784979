// The Trainer's constructor: the objects of a run from its config (the task: network, loss and
// evaluations; sharded reader, optimizer step, gradient reducer, checkpoint store), the resume or the
// fresh start, and the table of periodic work.
#include <torch/torch.h>

#include <ATen/Context.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "ddpm/data/dataset.h"
#include "trainer.h"

namespace ddpm::trainer::detail {

Trainer::Trainer(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device,
                 const TrainHooks& hooks)
    : config_(config),
      comm_(comm),
      device_(device),
      hooks_(hooks),
      rank_(comm.rank()),
      world_(comm.world_size()),
      logger_(config_, rank_, world_, device_, hooks.print) {
  build();
  read_test_hooks();
  resume_or_init();
  add_periodic_tasks();
}

Trainer::~Trainer() = default;

void Trainer::build() {
  plan_ = plan_batch(config_, world_);
  total_steps_ = total_steps(config_);
  const data::DatasetInfo info = data::ImageDataset::open(config_.data).info();
  image_chw_ = {info.channels, info.height, info.width};
  if (config_.num_classes > 0 && !info.has_labels) {
    throw std::invalid_argument("--num-classes " + std::to_string(config_.num_classes) + ": " + config_.data +
                                " has no /labels; convert a labelled dataset or use --num-classes 0");
  }
  if (device_.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);  // shapes are fixed for the run: let cuDNN pick the fastest
    if (config_.precision == "fp16") autocast_ = at::kHalf;
    if (config_.precision == "bf16") autocast_ = at::kBFloat16;
  } else if (config_.precision != "fp32") {
    print("warning: --precision " + config_.precision + " applies on GPU only; training in fp32 on the CPU");
  }

  torch::manual_seed(static_cast<uint64_t>(config_.seed));  // identical initial weights everywhere
  task_ = make_train_task(config_, info, device_);
  logger_.set_term_names(task_->term_names());
  for (const auto& item : task_->network().named_parameters()) {
    if (!item.value().requires_grad()) continue;
    params_.emplace_back(item.key(), item.value());
    param_tensors_.push_back(item.value());
  }

  data::ReaderOptions ro;
  ro.rank = rank_;
  ro.world_size = world_;
  ro.global_batch = plan_.global_batch;
  ro.seed = static_cast<uint64_t>(config_.seed);
  reader_ = std::make_unique<data::ShardedReader>(config_.data, ro);
  batches_ = std::make_unique<data::BatchPrefetcher>(
      *reader_, device_.is_cuda() ? std::optional<c10::Device>(device_) : std::nullopt);
  optimizer_ = std::make_unique<OptimizerStep>(config_, params_, autocast_ == at::kHalf);
  reducer_ = std::make_unique<dist::GradientReducer>(comm_, params_);
  store_ = std::make_unique<CheckpointStore>(config_.run_dir, RetentionPolicy{config_.keep_last, config_.keep_every});
}

// --- test-only fault injection -------------------------------------------------------------------
// Environment variables set by the tests in tests/fault/ only (never by users), read once here:
//   DDPM_TEST_CHECKPOINT_PAUSE=POINT[@STEP]  at the CheckpointStore fault point POINT
//       (files_written, before_rename, after_rename, latest_written) of the checkpoint of STEP (of
//       any step when omitted), rank 0 prints "DDPM_TEST_CHECKPOINT_PAUSE: paused at POINT of step S
//       (pid P)" and sleeps until it is killed: the test kill -9s the job exactly there.
//   DDPM_TEST_NONFINITE_STEPS=A,B,...  the loss (hence the gradients) is NaN in the step attempts
//       A, B, ... of this process (1-based; a skipped step is an attempt too, so "5,6" gives two
//       non-finite steps in a row).
//   DDPM_TEST_NONFINITE_RANK=R  ... on rank R only (default: every rank).
void Trainer::read_test_hooks() {
  if (const char* spec = std::getenv("DDPM_TEST_CHECKPOINT_PAUSE"); spec && *spec) {
    std::string point = spec;
    int64_t at_step = -1;
    if (const auto at = point.find('@'); at != std::string::npos) {
      at_step = std::stoll(point.substr(at + 1));
      point.resize(at);
    }
    store_->set_fault_hook([this, point, at_step](const std::string& where) {
      if (where != point || (at_step >= 0 && step_ != at_step)) return;
      print("DDPM_TEST_CHECKPOINT_PAUSE: paused at " + where + " of step " + std::to_string(step_) + " (pid " +
            std::to_string(::getpid()) + ")");
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    });
  }
  if (const char* steps = std::getenv("DDPM_TEST_NONFINITE_STEPS"); steps && *steps) {
    std::stringstream ss(steps);
    std::string part;
    while (std::getline(ss, part, ',')) test_nonfinite_attempts_.push_back(std::stoll(part));
  }
  if (const char* rank = std::getenv("DDPM_TEST_NONFINITE_RANK"); rank && *rank) test_nonfinite_rank_ = std::stoi(rank);
}

// After each step, in this order: the log line, the checkpoint, then the evaluations (which see
// the checkpointed weights). At the end, each runs once more unless it ran at the last step; a
// stopped run only checkpoints.
void Trainer::add_periodic_tasks() {
  periodic_.add("log", config_.log_every, AtEnd::kWhenCompleted, [this] { log_interval(); });
  periodic_.add("checkpoint", config_.save_every, AtEnd::kAlways, [this] { save_checkpoint(); });
  periodic_.add("samples", config_.sample_every, AtEnd::kWhenCompleted, [this] { write_sample_grid(); });
  periodic_.add("fid", config_.fid_every, AtEnd::kWhenCompleted, [this] { evaluate_fid(); });
  periodic_.add("bpd", config_.bpd_every, AtEnd::kWhenCompleted, [this] { evaluate_training_bpd(); });
}

}  // namespace ddpm::trainer::detail
