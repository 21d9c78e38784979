// AutocastScope: the training step's mixed precision on CUDA (bf16 or fp16 autocast for the
// forward and loss), restoring the previous autocast state when it ends. Used by the Trainer's
// step and by the benchmark that times that step (tests/bench/step_bench.cpp).
#pragma once
#include <ATen/autocast_mode.h>

#include <optional>

namespace ddpm::trainer {

// RAII autocast on CUDA for bf16/fp16 (no-op when `dtype` is nullopt).
class AutocastScope {
 public:
  explicit AutocastScope(std::optional<at::ScalarType> dtype) {
    if (!dtype) return;
    on_ = true;
    prev_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, prev_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_ = false, prev_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

}  // namespace ddpm::trainer
