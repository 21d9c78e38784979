// EmaSet: exponential moving averages of the model's parameters for several rates at once
// (e.g. 0.9999 and 0.999), with optional warmup, saved and restored as named tensor dicts
// (ema_<rate>.pt in a checkpoint, the same names as the model's parameters).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "ddpm/model/tensor_dict.h"

namespace ddpm::trainer {

class EmaSet {
 public:
  // One EMA per rate, each starting as a detached copy of `params` (name -> parameter).
  EmaSet(std::vector<double> rates, bool warmup, const model::TensorDict& params);

  // The rate used for the update after optimizer step `step` (1-based count of steps done):
  // rate, or with warmup min(rate, (1 + step) / (10 + step)).
  double effective_rate(double rate, int64_t step) const;
  // ema <- r * ema + (1 - r) * param for every rate; `params` in the constructor's order.
  void update(const std::vector<at::Tensor>& params, int64_t step);

  const std::vector<double>& rates() const { return rates_; }
  bool warmup() const { return warmup_; }
  // EMA i as name -> tensor (the tensors themselves, not copies).
  model::TensorDict state(size_t i) const;
  // Copies a saved EMA into slot i; names, order and shapes must match (error names the key).
  void load_state(size_t i, const model::TensorDict& saved, const std::string& source);
  // "0.9999" for 0.9999: the shortest text that reads back as the same double.
  static std::string rate_name(double rate);

 private:
  std::vector<double> rates_;
  bool warmup_;
  std::vector<std::string> names_;
  std::vector<std::vector<at::Tensor>> ema_;  // [rate][param]
};

}  // namespace ddpm::trainer
