// Gradient checkpointing as a custom autograd Function; see ddpm/model/unet/gradient_checkpoint.h.
#include "ddpm/model/unet/gradient_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <mutex>

namespace ddpm::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs to replay the forward: the function, which inputs want gradients, the
// generator state of the inputs' device and the autocast settings.
struct Replay : torch::CustomClassHolder {
  GradientCheckpointFn fn;
  std::vector<bool> input_requires_grad;
  std::vector<at::Tensor> params;  // the module's parameters (leaves), differentiated in backward
  at::Device device{at::kCPU};
  at::Tensor rng_state;
  bool autocast_cpu = false, autocast_cuda = false;
  at::ScalarType dtype_cpu = at::kBFloat16, dtype_cuda = at::kHalf;
};

at::Generator default_generator(at::Device d) {
  return d.is_cuda() ? at::globalContext().defaultGenerator(d) : at::detail::getDefaultCPUGenerator();
}

// Sets a generator's state and the autocast flags for a scope, then puts the previous ones back.
class ReplayGuard {
 public:
  explicit ReplayGuard(const Replay& r) : gen_(default_generator(r.device)) {
    {
      std::lock_guard<std::mutex> lock(gen_.mutex());
      saved_rng_ = gen_.get_state();
      gen_.set_state(r.rng_state);
    }
    cpu_ = at::autocast::is_autocast_enabled(at::kCPU);
    cuda_ = at::autocast::is_autocast_enabled(at::kCUDA);
    dcpu_ = at::autocast::get_autocast_dtype(at::kCPU);
    dcuda_ = at::autocast::get_autocast_dtype(at::kCUDA);
    set(r.autocast_cpu, r.autocast_cuda, r.dtype_cpu, r.dtype_cuda);
  }
  ~ReplayGuard() {
    set(cpu_, cuda_, dcpu_, dcuda_);
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_rng_);
  }

 private:
  static void set(bool cpu, bool cuda, at::ScalarType dcpu, at::ScalarType dcuda) {
    at::autocast::set_autocast_enabled(at::kCPU, cpu);
    at::autocast::set_autocast_enabled(at::kCUDA, cuda);
    at::autocast::set_autocast_dtype(at::kCPU, dcpu);
    at::autocast::set_autocast_dtype(at::kCUDA, dcuda);
  }
  at::Generator gen_;
  at::Tensor saved_rng_;
  bool cpu_, cuda_;
  at::ScalarType dcpu_, dcuda_;
};

struct GradientCheckpointFunction : public torch::autograd::Function<GradientCheckpointFunction> {
  // Tensors reach autograd as inputs only when passed as Tensor or TensorList (a vector would
  // count as one non-tensor argument).
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<Replay> replay,
                               at::TensorList inputs_list, at::TensorList params) {
    const variable_list inputs = inputs_list.vec();
    replay->device = inputs.at(0).device();
    {
      at::Generator gen = default_generator(replay->device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      replay->rng_state = gen.get_state();
    }
    replay->autocast_cpu = at::autocast::is_autocast_enabled(at::kCPU);
    replay->autocast_cuda = at::autocast::is_autocast_enabled(at::kCUDA);
    replay->dtype_cpu = at::autocast::get_autocast_dtype(at::kCPU);
    replay->dtype_cuda = at::autocast::get_autocast_dtype(at::kCUDA);
    for (const auto& x : inputs) replay->input_requires_grad.push_back(x.requires_grad());
    ctx->save_for_backward(inputs);
    ctx->saved_data["replay"] = at::IValue::make_capsule(replay);
    replay->params = params.vec();
    return replay->fn(inputs);  // grad mode is off inside a custom Function's forward
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data["replay"].toCapsule());
    variable_list inputs;
    for (const auto& s : ctx->get_saved_variables()) inputs.push_back(s.detach());
    variable_list outputs;
    {
      ReplayGuard guard(*replay);
      at::AutoGradMode grad(true);
      for (size_t i = 0; i < inputs.size(); ++i) inputs[i].requires_grad_(replay->input_requires_grad[i]);
      outputs = replay->fn(inputs);
    }
    // Differentiate with respect to the inputs that want gradients and the parameters; the
    // parameters are the module's own tensors, which fn read during the replay.
    variable_list targets, outs, grads_in;
    std::vector<int64_t> target_of;  // flat input index -> index in targets (-1: none)
    for (size_t i = 0; i < inputs.size(); ++i) {
      target_of.push_back(replay->input_requires_grad[i] ? static_cast<int64_t>(targets.size()) : -1);
      if (replay->input_requires_grad[i]) targets.push_back(inputs[i]);
    }
    for (const auto& p : replay->params) {
      target_of.push_back(p.requires_grad() ? static_cast<int64_t>(targets.size()) : -1);
      if (p.requires_grad()) targets.push_back(p);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (grad_outputs[i].defined() && outputs[i].requires_grad()) {
        outs.push_back(outputs[i]);
        grads_in.push_back(grad_outputs[i]);
      }
    }
    variable_list grads(targets.size());
    if (!outs.empty() && !targets.empty()) {
      grads = torch::autograd::grad(outs, targets, grads_in, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    }
    variable_list result{at::Tensor()};  // the Replay argument
    for (int64_t idx : target_of) result.push_back(idx >= 0 ? grads[idx] : at::Tensor());
    return result;
  }
};
}  // namespace

std::vector<at::Tensor> gradient_checkpoint(GradientCheckpointFn fn, const std::vector<at::Tensor>& inputs,
                                            const std::vector<at::Tensor>& params) {
  TORCH_CHECK(!inputs.empty() && inputs[0].defined(), "gradient_checkpoint: the first input must be a defined tensor");
  if (!at::GradMode::is_enabled()) return fn(inputs);
  auto replay = c10::make_intrusive<Replay>();
  replay->fn = std::move(fn);
  return GradientCheckpointFunction::apply(replay, at::TensorList(inputs), at::TensorList(params));
}

}  // namespace ddpm::model
