// Shared pieces of the training-loop tests: a tiny labelled HDF5 dataset written with the data
// writer, a tiny-U-Net TrainConfig (8x8 grey images, a few diffusion steps), checkpoint
// comparisons that print the worst difference, the bit-exact resume check every task's loop test
// runs, the log's train records, and the MPI scaffolding of the in-process loop tests (a folder
// every rank agrees on, quiet hooks, a SIGTERM after step N, main).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/model/tensor_dict.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/train_loop.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::trainer::testing {

// N images (N, 8, 8, 1) uint8 with labels 0..classes-1: class k is a bright bar in row 2k (and
// 2k+1) over a dim, seeded noisy background, so the data has structure a model can learn.
void write_tiny_dataset(const std::string& path, int64_t n = 64, int64_t classes = 4, uint64_t seed = 7);

// The tiny U-Net preset, 1 channel, cosine schedule with `diffusion_steps`, global batch 16,
// log every step, no metrics server, checkpoints only at the end unless save_every is set.
TrainConfig tiny_config(const std::string& data, const std::string& run_dir, int64_t max_steps);

// Bit-for-bit equality of two tensor dicts (names, order, dtypes, values); prints
// "[maxdiff] label: ..." with the largest absolute difference found.
::testing::AssertionResult dicts_identical(const model::TensorDict& a, const model::TensorDict& b,
                                         const std::string& label);

// binary_dir()/tmp/<suite>_np<world size>/<name>, created empty by rank 0; every rank returns it
// after a barrier.
std::string shared_test_dir(dist::Communicator& comm, const std::string& suite, const std::string& name);
// write_tiny_dataset(dir/bars.h5) on rank 0; every rank returns the path after a barrier.
std::string shared_tiny_dataset(dist::Communicator& comm, const std::string& dir);
// TrainHooks whose print discards every line.
TrainHooks quiet_hooks();
// quiet_hooks() that SIGTERM the last rank after optimizer step `at`: every rank stops there with
// a checkpoint (exit kRequeueExitCode), as a preempted job does.
TrainHooks stop_after(dist::Communicator& comm, int64_t at);
// EXPECTs two checkpoint states identical bit for bit: model, every EMA (rate and tensors),
// optimizer, task state and data cursor; `label` prefixes the printed [maxdiff] lines.
void expect_states_identical(const TrainState& a, const TrainState& b, const std::string& label);
// The bit-exact resume check of every task: run config("straight") for `steps` steps; run
// config("stopped"), stopped by stop_after(stop_at), then config("stopped") again (a second call:
// it may differ in what resume allows), which resumes and finishes. Asserts the exit codes, steps
// and resume point, and the two final states identical; returns them in `states` (straight,
// resumed) for the task's own checks. Call it under ASSERT_NO_FATAL_FAILURE.
void check_bit_exact_resume(dist::Communicator& comm, const std::function<TrainConfig(const std::string&)>& config,
                            int64_t steps, int64_t stop_at, const std::string& label,
                            std::pair<TrainState, TrainState>& states);
// The "train" records of run_dir/log.jsonl, in order.
std::vector<Json> train_records(const std::string& run_dir);
// main() of an in-process MPI loop test: gtest on every rank with `comm` made from the MPI world
// (reset before MPI ends); returns the worst exit status over the ranks.
int run_tests_on_every_rank(int argc, char** argv, std::unique_ptr<dist::Communicator>& comm);

}  // namespace ddpm::trainer::testing
