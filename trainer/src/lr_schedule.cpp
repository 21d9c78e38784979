// Warmup + decay learning-rate schedule; see ddpm/trainer/lr_schedule.h.
#include "ddpm/trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ddpm/trainer/config.h"

namespace ddpm::trainer {

LrDecay parse_lr_decay(const std::string& name) {
  if (name == "constant") return LrDecay::kConstant;
  if (name == "linear") return LrDecay::kLinear;
  if (name == "cosine") return LrDecay::kCosine;
  throw std::invalid_argument("--lr-decay: '" + name + "' is not one of constant | linear | cosine");
}

double learning_rate(const LrSchedule& s, int64_t step) {
  if (step < 0) throw std::invalid_argument("learning_rate: negative step " + std::to_string(step));
  if (step < s.warmup_steps) {
    return s.base_lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  if (s.decay == LrDecay::kConstant || s.decay_steps <= s.warmup_steps) return s.base_lr;
  const double p = std::clamp(static_cast<double>(step - s.warmup_steps) /
                                  static_cast<double>(s.decay_steps - s.warmup_steps),
                              0.0, 1.0);
  const double span = s.base_lr - s.min_lr;
  if (s.decay == LrDecay::kLinear) return s.min_lr + span * (1.0 - p);
  return s.min_lr + span * 0.5 * (1.0 + std::cos(M_PI * p));
}

LrSchedule make_lr_schedule(const TrainConfig& c) {
  LrSchedule s;
  s.base_lr = c.lr;
  s.warmup_steps = c.warmup_steps;
  s.decay = parse_lr_decay(c.lr_decay);
  s.decay_steps = c.lr_decay_steps > 0 ? c.lr_decay_steps : total_steps(c);
  s.min_lr = c.lr_min;
  return s;
}

}  // namespace ddpm::trainer
