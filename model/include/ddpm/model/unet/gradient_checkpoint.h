// Gradient checkpointing: run a block without keeping its activations and recompute it in
// backward (with the forward's RNG and autocast state, so dropout masks and dtypes repeat).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace ddpm::model {

using GradientCheckpointFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// Returns fn(inputs). When grad mode is on, fn runs under no-grad and backward re-runs it with
// grad enabled, then differentiates its outputs with respect to `inputs` and `params` (the
// parameters fn reads; they receive their gradients through this node). Gradients equal those of
// calling fn directly.
std::vector<at::Tensor> gradient_checkpoint(GradientCheckpointFn fn, const std::vector<at::Tensor>& inputs,
                                            const std::vector<at::Tensor>& params);

}  // namespace ddpm::model
