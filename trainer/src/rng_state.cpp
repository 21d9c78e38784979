// Generator state capture/restore; see ddpm/trainer/rng_state.h.
#include "ddpm/trainer/rng_state.h"

#include <ATen/Context.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <mutex>
#include <stdexcept>

namespace ddpm::trainer {

namespace {
int cuda_device_count() {
  return at::globalContext().hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().deviceCount()) : 0;
}

at::Tensor get_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_state(at::Generator gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}
}  // namespace

RngState capture_rng_state() {
  RngState s;
  s.cpu = get_state(at::detail::getDefaultCPUGenerator());
  const int n = cuda_device_count();
  for (int d = 0; d < n; ++d) {
    s.cuda.push_back(get_state(at::globalContext().defaultGenerator(at::Device(at::kCUDA, d))));
  }
  return s;
}

void restore_rng_state(const RngState& state) {
  if (!state.cpu.defined()) throw std::invalid_argument("restore_rng_state: no CPU generator state");
  const int n = cuda_device_count();
  if (!state.cuda.empty() && static_cast<int>(state.cuda.size()) != n) {
    throw std::invalid_argument("restore_rng_state: the state holds " + std::to_string(state.cuda.size()) +
                                " CUDA generators but this process sees " + std::to_string(n) +
                                " devices; resume with the same devices per rank");
  }
  set_state(at::detail::getDefaultCPUGenerator(), state.cpu);
  for (size_t d = 0; d < state.cuda.size(); ++d) {
    set_state(at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<int>(d))), state.cuda[d]);
  }
}

void append_rng_state(model::TensorDict& out, const std::string& prefix, const RngState& state) {
  out.emplace_back(prefix + "/cpu", state.cpu);
  for (size_t d = 0; d < state.cuda.size(); ++d) out.emplace_back(prefix + "/cuda" + std::to_string(d), state.cuda[d]);
}

RngState extract_rng_state(const model::TensorDict& in, const std::string& prefix) {
  RngState s;
  for (const auto& [name, t] : in) {
    if (name == prefix + "/cpu") s.cpu = t;
  }
  for (size_t d = 0;; ++d) {
    const std::string key = prefix + "/cuda" + std::to_string(d);
    bool found = false;
    for (const auto& [name, t] : in) {
      if (name == key) {
        s.cuda.push_back(t);
        found = true;
      }
    }
    if (!found) break;
  }
  if (!s.cpu.defined()) throw std::invalid_argument("RNG state: no entry " + prefix + "/cpu");
  return s;
}

}  // namespace ddpm::trainer
