// Dynamic loss scaling and the non-finite step guard; see ddpm/trainer/step_guard.h.
#include "ddpm/trainer/step_guard.h"

#include <stdexcept>

namespace ddpm::trainer {

DynamicLossScale::DynamicLossScale(bool enabled, double init, double growth, double backoff, int64_t window)
    : enabled_(enabled), scale_(enabled ? init : 1.0), growth_(growth), backoff_(backoff), window_(window) {}

void DynamicLossScale::restore(double scale, int64_t good_steps) {
  if (!enabled_) return;
  scale_ = scale;
  good_steps_ = good_steps;
}

void DynamicLossScale::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ *= backoff_;
    good_steps_ = 0;
    return;
  }
  if (++good_steps_ >= window_) {
    scale_ *= growth_;
    good_steps_ = 0;
  }
}

bool NonfiniteGuard::record(bool finite, int64_t step) {
  if (finite) {
    in_row_ = 0;
    return false;
  }
  ++in_row_;
  ++total_;
  if (in_row_ >= limit_) {
    throw std::runtime_error("step " + std::to_string(step) + ": " + std::to_string(in_row_) +
                             " non-finite steps in a row (loss or gradients NaN/inf; " + std::to_string(total_) +
                             " in total): stopping. Lower --lr, set --grad-clip, use --precision fp32 or "
                             "bf16, or raise --max-nonfinite-steps");
  }
  return true;
}

}  // namespace ddpm::trainer
