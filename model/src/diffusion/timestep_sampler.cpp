// Uniform and loss-second-moment timestep samplers; see ddpm/model/diffusion/timestep_sampler.h.
#include "ddpm/model/diffusion/timestep_sampler.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <stdexcept>

namespace ddpm::diffusion {

TimestepSampler::TimestepSampler(int64_t T) : T_(T) {
  if (T < 1) throw std::invalid_argument("timestep sampler: T = " + std::to_string(T) + "; it must be >= 1");
}

at::Tensor TimestepSampler::probabilities() const {
  const at::Tensor w = weights();
  return w / w.sum();
}

TimestepSample TimestepSampler::sample(int64_t batch_size, std::optional<at::Generator> generator,
                                       const c10::Device& device) const {
  const at::Tensor p = probabilities();                                        // (T)
  const at::Tensor t = at::multinomial(p, batch_size, /*replacement=*/true, generator);  // (N)
  const at::Tensor w = 1.0 / (static_cast<double>(T_) * p.index_select(0, t));
  return {t.to(device), w.to(at::kFloat).to(device)};
}

at::Tensor UniformSampler::weights() const { return at::ones({T_}, at::kDouble); }

LossSecondMomentResampler::LossSecondMomentResampler(int64_t T, int64_t history_per_term, double uniform_prob)
    : TimestepSampler(T),
      history_per_term_(history_per_term),
      uniform_prob_(uniform_prob),
      loss_history_(at::zeros({T, history_per_term}, at::kDouble)),
      loss_counts_(at::zeros({T}, at::kLong)) {
  if (history_per_term < 1 || !(uniform_prob >= 0.0 && uniform_prob <= 1.0)) {
    throw std::invalid_argument("loss-second-moment sampler: history_per_term " + std::to_string(history_per_term) +
                                " must be >= 1 and uniform_prob " + std::to_string(uniform_prob) +
                                " within [0, 1]");
  }
}

bool LossSecondMomentResampler::warmed_up() const {
  return (loss_counts_ == history_per_term_).all().item<bool>();
}

at::Tensor LossSecondMomentResampler::weights() const {
  if (!warmed_up()) return at::ones({T_}, at::kDouble);
  at::Tensor w = at::sqrt(loss_history_.pow(2).mean(-1));  // (T)
  w = w / w.sum();
  w = w * (1.0 - uniform_prob_);
  return w + uniform_prob_ / static_cast<double>(T_);
}

void LossSecondMomentResampler::update_with_all_losses(const at::Tensor& ts, const at::Tensor& losses) {
  TORCH_CHECK(ts.dim() == 1 && losses.dim() == 1 && ts.size(0) == losses.size(0),
              "update_with_all_losses: ts ", ts.sizes(), " and losses ", losses.sizes(), " must be 1-D of one length");
  const at::Tensor t_cpu = ts.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor l_cpu = losses.detach().to(at::kCPU, at::kDouble).contiguous();
  const int64_t* tp = t_cpu.data_ptr<int64_t>();
  const double* lp = l_cpu.data_ptr<double>();
  auto hist = loss_history_.accessor<double, 2>();
  int64_t* counts = loss_counts_.data_ptr<int64_t>();
  const int64_t H = history_per_term_;
  for (int64_t i = 0; i < t_cpu.size(0); ++i) {
    const int64_t t = tp[i];
    TORCH_CHECK(t >= 0 && t < T_, "update_with_all_losses: timestep ", t, " outside [0, ", T_, ")");
    if (counts[t] == H) {  // full: drop the oldest, append
      for (int64_t j = 0; j + 1 < H; ++j) hist[t][j] = hist[t][j + 1];
      hist[t][H - 1] = lp[i];
    } else {
      hist[t][counts[t]] = lp[i];
      ++counts[t];
    }
  }
}

model::TensorDict LossSecondMomentResampler::state() const {
  return {{"loss_history", loss_history_.clone()}, {"loss_counts", loss_counts_.clone()}};
}

void LossSecondMomentResampler::load_state(const model::TensorDict& state) {
  at::Tensor history, counts;
  for (const auto& [name, tensor] : state) {
    if (name == "loss_history") history = tensor;
    if (name == "loss_counts") counts = tensor;
  }
  if (!history.defined() || !counts.defined()) {
    throw std::invalid_argument("loss-second-moment sampler state: needs 'loss_history' and 'loss_counts'");
  }
  if (history.sizes() != loss_history_.sizes() || counts.sizes() != loss_counts_.sizes()) {
    throw std::invalid_argument("loss-second-moment sampler state: loss_history " + c10::str(history.sizes()) +
                                " and loss_counts " + c10::str(counts.sizes()) + " do not match T = " +
                                std::to_string(T_) + ", history " + std::to_string(history_per_term_) +
                                " (expected " + c10::str(loss_history_.sizes()) + " and " +
                                c10::str(loss_counts_.sizes()) + ")");
  }
  const at::Tensor c = counts.to(at::kLong);
  if ((c < 0).any().item<bool>() || (c > history_per_term_).any().item<bool>()) {
    throw std::invalid_argument("loss-second-moment sampler state: loss_counts outside [0, " +
                                std::to_string(history_per_term_) + "]");
  }
  loss_history_ = history.to(at::kCPU, at::kDouble).clone();
  loss_counts_ = c.to(at::kCPU).clone();
}

std::unique_ptr<TimestepSampler> create_named_schedule_sampler(const std::string& name, int64_t T) {
  if (name == "uniform") return std::make_unique<UniformSampler>(T);
  if (name == "loss-second-moment") return std::make_unique<LossSecondMomentResampler>(T);
  throw std::invalid_argument("unknown timestep sampler '" + name + "'; expected uniform|loss-second-moment");
}

}  // namespace ddpm::diffusion
