// Full-state checkpoints of a training run: RUN/checkpoints/<zero-padded step>/ holding
//   model.pt, ema_<rate>.pt   weights as torch.save dicts (Python's torch.load reads them)
//   optimizer.pt              optimizer state (a tensor dict the trainer's optimizer code fills)
//   state.pt                  sampler history (sampler/...), data cursor, every rank's RNG states
//   state.json                step, images seen, learning rate, loss scale, counters, the
//                             resolved config and the format version
//   MANIFEST.json             SHA-256 and size of every file above, checked on load
// Written atomically: a temporary folder .tmp-<step>-<pid>, files and folder fsynced, renamed to
// the final name, parent fsynced; then the `latest` pointer file is replaced atomically and old
// checkpoints are pruned (keep the last K plus every M-th). Only rank 0 writes.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/model/tensor_dict.h"
#include "ddpm/trainer/rng_state.h"

namespace ddpm::trainer {

// Bumped when the layout changes; load() refuses newer formats.
inline constexpr int kCheckpointFormatVersion = 1;

// Everything needed to continue a run exactly. Pieces owned by other parts stay opaque here.
struct TrainState {
  int64_t step = 0;                    // optimizer steps completed
  int64_t images_seen = 0;
  double lr = 0.0;                     // learning rate of the last step (the schedule is a function of step)
  double loss_scale = 1.0;             // fp16 dynamic loss scale
  int64_t loss_scale_good_steps = 0;   // finite steps since the scale last changed
  int64_t nonfinite_in_row = 0;        // the non-finite guard's counters
  int64_t nonfinite_total = 0;
  int world_size = 1;                  // ranks of the run that wrote it
  model::TensorDict model;             // parameters (and buffers), improved-diffusion names
  std::vector<std::pair<double, model::TensorDict>> emas;  // rate -> EMA parameters
  model::TensorDict optimizer;         // AdamW moments and step counts
  model::TensorDict sampler;           // timestep sampler history (loss-second-moment)
  std::vector<int64_t> data_cursor;    // the data reader's position (epoch, offset, ...)
  std::vector<RngState> rng;           // index = rank
  nlohmann::ordered_json config;       // the resolved TrainConfig (to_json)
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // other small values
};

// A checkpoint that is missing, incomplete, corrupted or of an unknown format.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RetentionPolicy {
  int64_t keep_last = 3;   // newest K (0 = keep all)
  int64_t keep_every = 0;  // plus steps that are multiples of M (0 = none)
};
// Steps to delete from `steps` under `policy`; the newest is never deleted.
std::vector<int64_t> checkpoints_to_delete(std::vector<int64_t> steps, const RetentionPolicy& policy);

std::string checkpoint_name(int64_t step);  // "000500" (at least 6 digits)
std::string ema_file_name(double rate);     // "ema_0.9999.pt"

// Writes `state` into folder `dir` (which must exist) with its MANIFEST.json, fsyncing each file.
void write_checkpoint_files(const std::string& dir, const TrainState& state);
// Checks MANIFEST.json against every file (presence, size, SHA-256); throws CheckpointError
// naming the folder, the file and what differs.
void verify_checkpoint(const std::string& dir);
// verify_checkpoint, then reads every file.
TrainState load_checkpoint(const std::string& dir);

class CheckpointStore {
 public:
  explicit CheckpointStore(std::string run_dir, RetentionPolicy retention = {});

  const std::string& dir() const { return dir_; }  // RUN/checkpoints
  std::string path_for(int64_t step) const;        // RUN/checkpoints/000500

  // Atomic write of checkpoint state.step (replacing one of the same step), then `latest`, then
  // pruning. Removes temporary folders left by writers that died. Returns the final folder.
  std::string save(const TrainState& state);

  std::vector<int64_t> list_steps() const;      // step folders present, ascending (unverified)
  std::optional<int64_t> latest_pointer() const;  // the step named by RUN/checkpoints/latest

  // spec "none": nothing. "auto": the newest checkpoint that verifies, with a warning for each
  // newer one that did not; nothing when there are no checkpoints; throws CheckpointError when
  // some exist but none verifies. Else a checkpoint folder (or a run dir, taken as auto there),
  // which must verify.
  struct Resumed {
    std::optional<TrainState> state;
    std::string path;
    std::vector<std::string> warnings;
  };
  Resumed resume(const std::string& spec) const;

  // Test hook called at "files_written", "before_rename", "after_rename", "latest_written".
  void set_fault_hook(std::function<void(const std::string& point)> hook) { hook_ = std::move(hook); }

 private:
  void remove_stale_temporaries() const;
  void point(const std::string& where) const {
    if (hook_) hook_(where);
  }
  std::string dir_;
  RetentionPolicy retention_;
  std::function<void(const std::string&)> hook_;
};

}  // namespace ddpm::trainer
