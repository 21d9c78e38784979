// FusedAdamW (adamw.h): moments and step counters kept as tensor lists and updated by ATen's
// _fused_adamw_ (CUDA and CPU kernels) in one call per step.
#include "ddpm/trainer/adamw.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <map>

#include "ddpm/trainer/checkpoint.h"

namespace ddpm::trainer {

FusedAdamW::FusedAdamW(model::TensorDict params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  TORCH_CHECK(!params_.empty(), "FusedAdamW: no parameters");
  const auto& first = params_.front().second;
  for (const auto& [name, p] : params_) {
    TORCH_CHECK(p.device() == first.device() && p.scalar_type() == first.scalar_type(),
                "FusedAdamW: parameter '", name, "' is ", p.scalar_type(), " on ", p.device(), ", the first is ",
                first.scalar_type(), " on ", first.device(), " (one device and dtype for all)");
  }
}

void FusedAdamW::zero_grad() {
  for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();
}

void FusedAdamW::init_moments() {
  exp_avg_.clear();
  exp_avg_sq_.clear();
  state_steps_.clear();
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    state_steps_.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void FusedAdamW::step() {
  at::NoGradGuard no_grad;
  if (exp_avg_.empty()) init_moments();
  std::vector<at::Tensor> ps, grads;
  for (auto& [name, p] : params_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    ps.push_back(p);
    grads.push_back(p.grad());
  }
  at::_foreach_add_(state_steps_, at::Scalar(1.0));  // the kernel reads the step after the increment
  at::_fused_adamw_(ps, grads, exp_avg_, exp_avg_sq_, /*max_exp_avg_sqs=*/{}, state_steps_, options_.lr,
                    options_.beta1, options_.beta2, options_.weight_decay, options_.eps, /*amsgrad=*/false,
                    /*maximize=*/false);
  ++steps_;
}

model::TensorDict FusedAdamW::state() const {
  model::TensorDict out;
  if (exp_avg_.empty()) return out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    out.emplace_back(name + "/exp_avg", exp_avg_[i]);
    out.emplace_back(name + "/exp_avg_sq", exp_avg_sq_[i]);
    out.emplace_back(name + "/step", at::scalar_tensor(steps_, at::kLong));
  }
  return out;
}

void FusedAdamW::load_state(const model::TensorDict& saved, const std::string& source) {
  const std::map<std::string, at::Tensor> by_name(saved.begin(), saved.end());
  std::vector<at::Tensor> m_list, v_list;
  int64_t steps = -1;
  size_t found = 0;
  for (const auto& [name, p] : params_) {
    const auto m = by_name.find(name + "/exp_avg"), v = by_name.find(name + "/exp_avg_sq"),
               k = by_name.find(name + "/step");
    const int present = (m != by_name.end()) + (v != by_name.end()) + (k != by_name.end());
    if (present == 0) continue;
    if (present != 3) {
      throw CheckpointError(source + ": incomplete AdamW state for parameter '" + name +
                               "' (needs exp_avg, exp_avg_sq and step); the checkpoint is damaged");
    }
    if (m->second.sizes() != p.sizes() || v->second.sizes() != p.sizes()) {
      throw CheckpointError(source + ": AdamW state of '" + name + "' has shape " + c10::str(m->second.sizes()) +
                               ", the parameter " + c10::str(p.sizes()) + " (a checkpoint of another model?)");
    }
    const int64_t k_value = k->second.item<int64_t>();
    if (steps >= 0 && k_value != steps) {
      throw CheckpointError(source + ": AdamW step of '" + name + "' is " + std::to_string(k_value) +
                               ", other parameters have " + std::to_string(steps));
    }
    steps = k_value;
    m_list.push_back(m->second.to(p.options()).clone());
    v_list.push_back(v->second.to(p.options()).clone());
    ++found;
  }
  if (found == 0) return;  // saved before the first step
  if (found != params_.size()) {
    throw CheckpointError(source + ": AdamW state covers " + std::to_string(found) + " of " +
                             std::to_string(params_.size()) + " parameters (a checkpoint of another model?)");
  }
  exp_avg_ = std::move(m_list);
  exp_avg_sq_ = std::move(v_list);
  steps_ = steps;
  state_steps_.clear();
  for (const auto& [name, p] : params_)
    state_steps_.push_back(at::full({}, static_cast<double>(steps), p.options().dtype(at::kFloat)));
}

}  // namespace ddpm::trainer
