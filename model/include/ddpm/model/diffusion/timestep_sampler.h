// Timestep samplers for training: uniform, and importance sampling by the loss's second moment
// (Nichol & Dhariwal 2021, section 3.3). No communication here: the trainer all-gathers (t, loss)
// pairs and feeds every rank the same values, so every rank keeps the same history.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ddpm/model/tensor_dict.h"

namespace ddpm::diffusion {

struct TimestepSample {
  at::Tensor t;        // (N) int64
  at::Tensor weights;  // (N) float32, 1 / (T p_t): keeps the weighted loss an unbiased estimate
};

class TimestepSampler {
 public:
  explicit TimestepSampler(int64_t T);
  virtual ~TimestepSampler() = default;
  int64_t num_timesteps() const { return T_; }

  // Unnormalised sampling weights (T), float64; p_t = w_t / sum(w).
  virtual at::Tensor weights() const = 0;
  at::Tensor probabilities() const;  // (T) float64

  // batch_size steps drawn with replacement from p (CPU generator), moved to `device`.
  TimestepSample sample(int64_t batch_size, std::optional<at::Generator> generator = std::nullopt,
                        const c10::Device& device = c10::Device(c10::kCPU)) const;

  // Records (t, loss) pairs gathered from every rank (1-D, same length). Deterministic in its
  // inputs: the same pairs in the same order give the same state everywhere. Uniform: no-op.
  virtual void update_with_all_losses(const at::Tensor& ts, const at::Tensor& losses) {}

  // State for checkpoints (empty for the uniform sampler); load_state checks names and shapes.
  virtual model::TensorDict state() const { return {}; }
  virtual void load_state(const model::TensorDict& state) {}

 protected:
  int64_t T_;
};

class UniformSampler : public TimestepSampler {
 public:
  explicit UniformSampler(int64_t T) : TimestepSampler(T) {}
  at::Tensor weights() const override;
};

// p_t proportional to sqrt(E[L_t^2]) over the last history_per_term losses seen for t, mixed with
// uniform_prob of the uniform distribution; uniform until every t has history_per_term losses.
class LossSecondMomentResampler : public TimestepSampler {
 public:
  explicit LossSecondMomentResampler(int64_t T, int64_t history_per_term = 10, double uniform_prob = 0.001);
  at::Tensor weights() const override;
  void update_with_all_losses(const at::Tensor& ts, const at::Tensor& losses) override;
  bool warmed_up() const;
  // {"loss_history": (T, history_per_term) float64, oldest first; "loss_counts": (T) int64}.
  model::TensorDict state() const override;
  void load_state(const model::TensorDict& state) override;

 private:
  int64_t history_per_term_;
  double uniform_prob_;
  at::Tensor loss_history_;  // (T, history_per_term) float64
  at::Tensor loss_counts_;   // (T) int64
};

// "uniform" or "loss-second-moment"; std::invalid_argument for other names.
std::unique_ptr<TimestepSampler> create_named_schedule_sampler(const std::string& name, int64_t T);

}  // namespace ddpm::diffusion
