// Capture and restore of torch's default random generators (the CPU one and, when CUDA devices
// exist, one per device) as uint8 tensors, so a resumed run draws the same noise, timesteps and
// dropout masks as an uninterrupted one. Each rank captures its own; checkpoints keep them all.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "ddpm/model/tensor_dict.h"

namespace ddpm::trainer {

struct RngState {
  at::Tensor cpu;                 // (B) uint8: at::detail::getDefaultCPUGenerator().get_state()
  std::vector<at::Tensor> cuda;   // one (B) uint8 per CUDA device; empty without CUDA
};

RngState capture_rng_state();
// Restores every generator; throws std::invalid_argument when the saved CUDA device count
// differs from this process's (resume on another machine shape: reseed instead).
void restore_rng_state(const RngState& state);

// As TensorDict entries "PREFIX/cpu", "PREFIX/cuda0", ... and back (for checkpoints).
void append_rng_state(model::TensorDict& out, const std::string& prefix, const RngState& state);
RngState extract_rng_state(const model::TensorDict& in, const std::string& prefix);

}  // namespace ddpm::trainer
