// Learning-rate schedule: linear warmup, then constant, linear or cosine decay to a floor.
// A pure function of the step, so a resumed run needs no schedule state beyond the step.
#pragma once
#include <cstdint>
#include <string>

namespace ddpm::trainer {

enum class LrDecay { kConstant, kLinear, kCosine };
LrDecay parse_lr_decay(const std::string& name);  // constant | linear | cosine; throws otherwise

struct LrSchedule {
  double base_lr = 1e-4;        // lr after warmup
  int64_t warmup_steps = 0;     // W
  LrDecay decay = LrDecay::kConstant;
  int64_t decay_steps = 0;      // D: step at which the decay reaches min_lr (D > W, or no decay)
  double min_lr = 0.0;
};

// The learning rate of optimizer step `step` (0-based: the first update uses step 0):
//   s < W:  base * (s + 1) / W
//   else:   p = clamp((s - W) / (D - W), 0, 1)
//           constant: base;  linear: min + (base - min) (1 - p);
//           cosine:   min + (base - min) (1 + cos(pi p)) / 2
double learning_rate(const LrSchedule& schedule, int64_t step);

struct TrainConfig;
// lr, warmup_steps, lr_decay, lr_min; decay_steps = lr_decay_steps, or the run's total_steps.
LrSchedule make_lr_schedule(const TrainConfig& config);

}  // namespace ddpm::trainer
