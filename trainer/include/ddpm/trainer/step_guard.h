// Per-step bookkeeping for mixed precision: fp16 dynamic loss scaling (scale down after a
// non-finite gradient, up after `window` finite steps in a row) and the non-finite guard (skip
// such steps, count them, stop after `limit` in a row). Plain values, saved in TrainState.
#pragma once
#include <cstdint>
#include <string>

namespace ddpm::trainer {

class DynamicLossScale {
 public:
  // enabled=false (fp32, bf16): the scale stays 1 and update() changes nothing.
  DynamicLossScale(bool enabled, double init, double growth, double backoff, int64_t window);
  double scale() const { return scale_; }
  int64_t good_steps() const { return good_steps_; }
  void restore(double scale, int64_t good_steps);  // from a checkpoint
  // After each step: finite=false -> scale *= backoff; `window` finite steps in a row -> *= growth.
  void update(bool finite);

 private:
  bool enabled_;
  double scale_, growth_, backoff_;
  int64_t window_, good_steps_ = 0;
};

class NonfiniteGuard {
 public:
  explicit NonfiniteGuard(int64_t limit) : limit_(limit) {}
  // Records one step; returns true when the step must be skipped (non-finite loss or gradients).
  // Throws std::runtime_error (naming --max-nonfinite-steps) at `limit` non-finite steps in a row.
  bool record(bool finite, int64_t step);
  int64_t in_row() const { return in_row_; }
  int64_t total() const { return total_; }
  void restore(int64_t in_row, int64_t total) { in_row_ = in_row, total_ = total; }

 private:
  int64_t limit_, in_row_ = 0, total_ = 0;
};

}  // namespace ddpm::trainer
