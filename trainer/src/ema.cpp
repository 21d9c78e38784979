// EMA of parameters over several rates; see ddpm/trainer/ema.h. The arithmetic is
// ddpm::ops::ema_update_ (foreach on CPU, one multi-tensor kernel on CUDA).
#include "ddpm/trainer/ema.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include "ddpm/ops/ema.h"

namespace ddpm::trainer {

EmaSet::EmaSet(std::vector<double> rates, bool warmup, const model::TensorDict& params)
    : rates_(std::move(rates)), warmup_(warmup) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params) names_.push_back(name);
  for (size_t i = 0; i < rates_.size(); ++i) {
    std::vector<at::Tensor> copy;
    for (const auto& [name, p] : params) copy.push_back(p.detach().clone());
    ema_.push_back(std::move(copy));
  }
}

double EmaSet::effective_rate(double rate, int64_t step) const {
  if (!warmup_) return rate;
  return std::min(rate, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
}

void EmaSet::update(const std::vector<at::Tensor>& params, int64_t step) {
  if (params.size() != names_.size()) {
    throw std::invalid_argument("EmaSet::update: " + std::to_string(params.size()) + " parameters, expected " +
                                std::to_string(names_.size()) + " (the model the EMA was made from)");
  }
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> detached;
  detached.reserve(params.size());
  for (const auto& p : params) detached.push_back(p.detach());
  for (size_t i = 0; i < rates_.size(); ++i) ops::ema_update_(ema_[i], detached, effective_rate(rates_[i], step));
}

model::TensorDict EmaSet::state(size_t i) const {
  model::TensorDict out;
  for (size_t k = 0; k < names_.size(); ++k) out.emplace_back(names_[k], ema_.at(i)[k]);
  return out;
}

void EmaSet::load_state(size_t i, const model::TensorDict& saved, const std::string& source) {
  if (saved.size() != names_.size()) {
    throw std::invalid_argument(source + ": " + std::to_string(saved.size()) + " tensors, the model has " +
                                std::to_string(names_.size()) + " parameters");
  }
  at::NoGradGuard no_grad;
  for (size_t k = 0; k < names_.size(); ++k) {
    const auto& [name, t] = saved[k];
    at::Tensor& dst = ema_.at(i)[k];
    if (name != names_[k] || t.sizes() != dst.sizes()) {
      throw std::invalid_argument(source + ": entry " + std::to_string(k) + " is '" + name + "' of shape " +
                                  c10::str(t.sizes()) + ", expected '" + names_[k] + "' of shape " +
                                  c10::str(dst.sizes()));
    }
    dst.copy_(t);
  }
}

std::string EmaSet::rate_name(double rate) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), rate);
  return std::string(buf, r.ptr);
}

}  // namespace ddpm::trainer
