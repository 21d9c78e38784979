// OptimizerStep: everything between the all-reduced gradients and the updated weights, with the
// state it owns: fp16 loss-scale unscaling, the global gradient norm and clipping, the non-finite
// guard (skip, count, stop after N in a row), the learning-rate schedule and fused AdamW. Its
// state goes into and comes back from a checkpoint's TrainState.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "ddpm/model/tensor_dict.h"
#include "ddpm/trainer/adamw.h"
#include "ddpm/trainer/lr_schedule.h"
#include "ddpm/trainer/step_guard.h"

namespace ddpm::trainer {

struct TrainConfig;
struct TrainState;

class OptimizerStep {
 public:
  // `params` (name -> parameter, all requiring gradients); fp16 turns on dynamic loss scaling.
  OptimizerStep(const TrainConfig& config, model::TensorDict params, bool fp16);

  // The factor the loss is multiplied by before backward (1 unless fp16).
  double loss_scale() const { return loss_scale_.scale(); }
  bool scaling() const { return fp16_; }
  void zero_grad() { adamw_.zero_grad(); }

  // After backward and the gradient all-reduce (every .grad defined, the same on every rank):
  // unscale, norm, clip; a finite step is taken at learning_rate(schedule, step) and returns
  // true; a non-finite one drops the gradients and returns false. Throws std::runtime_error
  // (naming --max-nonfinite-steps) at max_nonfinite_steps non-finite steps in a row.
  bool step(int64_t step);

  double lr() const { return lr_; }                 // of the last step taken
  double grad_norm() const { return grad_norm_; }   // of the last step (NaN/inf when skipped)
  int64_t nonfinite_in_row() const { return guard_.in_row(); }

  void save(TrainState& state) const;  // lr, loss scale, guard counters, AdamW moments (on the CPU)
  void restore(const TrainState& state, const std::string& checkpoint);  // errors name the folder

 private:
  model::TensorDict params_;
  bool fp16_;
  double grad_clip_;
  LrSchedule schedule_;
  FusedAdamW adamw_;
  DynamicLossScale loss_scale_;
  NonfiniteGuard guard_;
  double lr_ = 0.0, grad_norm_ = 0.0;
};

}  // namespace ddpm::trainer
