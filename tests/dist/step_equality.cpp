// Distributed step versus single-process step (see step_equality.h).
#include "dist/step_equality.h"

#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include "testing/testing.h"

namespace ddpm::dist::testing {

namespace {
std::vector<at::Tensor> params_of(torch::nn::Module& m) { return m.parameters(true); }
}  // namespace

int64_t expect_step_matches_single_process(Communicator& comm, const StepCase& c, double rtol, double atol) {
  const int64_t B = c.per_rank_batch, M = c.microbatches, W = comm.world_size();
  // Data parallel: rank r owns samples [r*M*B, (r+1)*M*B), fed as M microbatches of B.
  auto dist_model = c.make_model();
  GradientReducer reducer(comm, *dist_model, c.reducer);
  torch::optim::SGD dist_opt(params_of(*dist_model), torch::optim::SGDOptions(c.lr));
  dist_opt.zero_grad();
  for (int64_t m = 0; m < M; ++m) {
    const int64_t begin = (comm.rank() * M + m) * B;
    const at::Tensor loss = c.loss(*dist_model, begin, begin + B) / static_cast<double>(M);
    if (m + 1 < M) {
      NoSyncGuard no_sync(reducer);
      loss.backward();
    } else {
      loss.backward();
    }
  }
  reducer.finish();
  dist_opt.step();

  // Reference: one replica, the whole global batch of W*M*B samples in one backward.
  auto single_model = c.make_model();
  torch::optim::SGD single_opt(params_of(*single_model), torch::optim::SGDOptions(c.lr));
  single_opt.zero_grad();
  c.loss(*single_model, 0, W * M * B).backward();
  single_opt.step();

  const auto d = dist_model->named_parameters(true);
  const auto s = single_model->named_parameters(true);
  EXPECT_EQ(d.size(), s.size());
  for (size_t i = 0; i < d.size() && i < s.size(); ++i) {
    const std::string name = d[i].key();
    EXPECT_TRUE(ddpm::testing::tensors_near(d[i].value().grad(), s[i].value().grad(), 1e-4, 1e-6,
                                            "grad " + name));
    EXPECT_TRUE(ddpm::testing::tensors_near(d[i].value(), s[i].value(), rtol, atol, "param " + name));
  }
  return reducer.num_buckets();
}

}  // namespace ddpm::dist::testing
