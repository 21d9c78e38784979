// One data-parallel training step versus the same step on one process: W ranks with batch B each
// (optionally in M microbatches under no_sync) must give the parameters of one SGD step on a
// single replica with batch W*M*B. Generic over the model and the loss, so the trainer's tests
// can run it with the U-Net and the hybrid loss.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>

#include "ddpm/dist/communicator.h"
#include "ddpm/dist/gradient_reducer.h"

namespace ddpm::dist::testing {

struct StepCase {
  // Builds the model with the same initial parameters on every call and every rank.
  std::function<std::shared_ptr<torch::nn::Module>()> make_model;
  // Mean loss of `model` over samples [begin, end) of a fixed global batch (the data must be a
  // function of the sample index, identical on every rank).
  std::function<at::Tensor(torch::nn::Module& model, int64_t begin, int64_t end)> loss;
  int64_t per_rank_batch = 4;  // B: samples per rank and microbatch
  int microbatches = 1;        // M: backward passes per step, all but the last under no_sync
  double lr = 0.1;             // plain SGD
  ReducerOptions reducer;
};

// Runs both steps on this rank and EXPECTs every parameter (and gradient) to match within
// |d - s| <= atol + rtol |s|. Returns the number of buckets the reducer used.
int64_t expect_step_matches_single_process(Communicator& comm, const StepCase& c, double rtol, double atol);

}  // namespace ddpm::dist::testing
