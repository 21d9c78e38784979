// The optimizer step of the training loop; see ddpm/trainer/optimizer_step.h.
#include "ddpm/trainer/optimizer_step.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"

namespace ddpm::trainer {

namespace {

AdamWOptions adamw_options(const TrainConfig& c) {
  AdamWOptions o;
  o.lr = c.lr;
  o.beta1 = c.adam_beta1;
  o.beta2 = c.adam_beta2;
  o.eps = c.adam_eps;
  o.weight_decay = c.weight_decay;
  return o;
}

}  // namespace

OptimizerStep::OptimizerStep(const TrainConfig& config, model::TensorDict params, bool fp16)
    : params_(params),
      fp16_(fp16),
      grad_clip_(config.grad_clip),
      schedule_(make_lr_schedule(config)),
      adamw_(std::move(params), adamw_options(config)),
      loss_scale_(fp16, config.loss_scale_init, config.loss_scale_growth, config.loss_scale_backoff,
                  config.loss_scale_window),
      guard_(config.max_nonfinite_steps) {}

bool OptimizerStep::step(int64_t step) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  for (const auto& [name, p] : params_) grads.push_back(p.grad());  // defined: GradientReducer::finish checks
  if (loss_scale_.scale() != 1.0) at::_foreach_div_(grads, at::Scalar(loss_scale_.scale()));
  const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  grad_norm_ = at::stack(norms).to(at::kDouble).norm().item<double>();
  const bool finite = std::isfinite(grad_norm_);  // the same on every rank: gradients are averaged
  if (grad_clip_ > 0 && finite) {
    const double coef = grad_clip_ / (grad_norm_ + 1e-6);  // as torch.nn.utils.clip_grad_norm_
    if (coef < 1.0) at::_foreach_mul_(grads, at::Scalar(coef));
  }
  loss_scale_.update(finite);
  if (guard_.record(finite, step + 1)) {  // throws after max_nonfinite_steps in a row
    adamw_.zero_grad();
    return false;
  }
  lr_ = learning_rate(schedule_, step);
  adamw_.set_lr(lr_);
  adamw_.step();
  return true;
}

void OptimizerStep::save(TrainState& s) const {
  s.lr = lr_;
  s.loss_scale = loss_scale_.scale();
  s.loss_scale_good_steps = loss_scale_.good_steps();
  s.nonfinite_in_row = guard_.in_row();
  s.nonfinite_total = guard_.total();
  s.optimizer = adamw_.state();
  for (auto& [name, t] : s.optimizer) t = t.cpu();
}

void OptimizerStep::restore(const TrainState& s, const std::string& checkpoint) {
  adamw_.load_state(s.optimizer, checkpoint + "/optimizer.pt");
  lr_ = s.lr;
  loss_scale_.restore(s.loss_scale, s.loss_scale_good_steps);
  guard_.restore(s.nonfinite_in_row, s.nonfinite_total);
}

}  // namespace ddpm::trainer
