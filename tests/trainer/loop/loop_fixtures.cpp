// Tiny dataset, tiny config and dict comparisons for the training-loop tests.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ddpm/data/dataset.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/trainer/signals.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {

void write_tiny_dataset(const std::string& path, int64_t n, int64_t classes, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor labels = at::arange(n, at::kLong) % classes;                            // (N)
  at::Tensor images = at::rand({n, 8, 8, 1}, gen, at::kFloat) * 60.0;                 // (N, 8, 8, 1)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = 2 * labels[i].item<int64_t>();
    images[i].narrow(0, row, 2).fill_(230.0);
  }
  data::DatasetInfo info;
  info.count = n;
  info.height = 8;
  info.width = 8;
  info.channels = 1;
  info.has_labels = true;
  info.num_classes = classes;
  info.source = "synthetic bars (tests/trainer/loop)";
  data::DatasetWriter writer(path, info);
  writer.write_images(0, images.to(at::kByte));
  writer.write_labels(labels);
  writer.finish();
}

TrainConfig tiny_config(const std::string& data, const std::string& run_dir, int64_t max_steps) {
  TrainConfig c;
  c.data = data;
  c.run_dir = run_dir;
  c.model = "tiny";
  c.model_overrides = Json{{"in_channels", 1}, {"out_channels", 1}};
  c.schedule = "cosine";
  c.diffusion_steps = 4;
  c.global_batch = 16;
  c.microbatch = 4;
  c.max_steps = max_steps;
  c.lr = 1e-3;
  c.ema_rates = {0.9, 0.99};
  c.ema_warmup = true;
  c.save_every = 1000;
  c.log_every = 1;
  c.sample_every = 0;
  c.sample_respacing = "2";
  c.sample_count = 8;
  c.metrics_addr = "none";
  c.seed = 3;
  validate(c);
  return c;
}

::testing::AssertionResult dicts_identical(const model::TensorDict& a, const model::TensorDict& b,
                                         const std::string& label) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << label << ": " << a.size() << " vs " << b.size() << " tensors";
  }
  double worst = 0.0;
  std::string worst_name, first_bad;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first) return ::testing::AssertionFailure() << label << ": entry " << i << " is '"
                                                                       << a[i].first << "' vs '" << b[i].first << "'";
    const at::Tensor x = a[i].second, y = b[i].second;
    if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes()) {
      return ::testing::AssertionFailure() << label << ": '" << a[i].first << "' differs in dtype or shape";
    }
    const double d = x.numel() == 0 ? 0.0 : (x.to(at::kDouble) - y.to(at::kDouble)).abs().max().item<double>();
    if (d > worst || worst_name.empty()) {
      worst = std::max(worst, d);
      worst_name = a[i].first;
    }
    if (!at::equal(x, y) && first_bad.empty()) first_bad = a[i].first;
  }
  std::printf("[maxdiff] %s: %.3g (%s), %zu tensors, bit-exact required\n", label.c_str(), worst,
              worst_name.c_str(), a.size());
  if (!first_bad.empty()) return ::testing::AssertionFailure() << label << ": '" << first_bad << "' differs";
  return ::testing::AssertionSuccess();
}

std::string shared_test_dir(dist::Communicator& comm, const std::string& suite, const std::string& name) {
  const std::string dir = ddpm::testing::binary_dir() + "/tmp/" + suite + "_np" + std::to_string(comm.world_size()) +
                          "/" + name;
  if (comm.rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  comm.barrier();
  return dir;
}

std::string shared_tiny_dataset(dist::Communicator& comm, const std::string& dir) {
  const std::string path = dir + "/bars.h5";
  if (comm.rank() == 0) write_tiny_dataset(path);
  comm.barrier();
  return path;
}

TrainHooks quiet_hooks() {
  TrainHooks h;
  h.print = [](const std::string&) {};
  return h;
}

TrainHooks stop_after(dist::Communicator& comm, int64_t at) {
  TrainHooks h = quiet_hooks();
  h.after_step = [&comm, at](int64_t step) {
    if (step == at && comm.rank() == comm.world_size() - 1) std::raise(SIGTERM);  // one rank is enough
  };
  return h;
}

void expect_states_identical(const TrainState& a, const TrainState& b, const std::string& label) {
  EXPECT_TRUE(dicts_identical(a.model, b.model, label + " model"));
  ASSERT_EQ(a.emas.size(), b.emas.size());
  for (size_t i = 0; i < a.emas.size(); ++i) {
    EXPECT_EQ(a.emas[i].first, b.emas[i].first);
    EXPECT_TRUE(dicts_identical(a.emas[i].second, b.emas[i].second, label + " ema " + std::to_string(a.emas[i].first)));
  }
  EXPECT_TRUE(dicts_identical(a.optimizer, b.optimizer, label + " optimizer"));
  EXPECT_TRUE(dicts_identical(a.sampler, b.sampler, label + " task state"));
  EXPECT_EQ(a.data_cursor, b.data_cursor);
}

void check_bit_exact_resume(dist::Communicator& comm, const std::function<TrainConfig(const std::string&)>& config,
                            int64_t steps, int64_t stop_at, const std::string& label,
                            std::pair<TrainState, TrainState>& states) {
  const TrainOutcome straight = train(config("straight"), comm, at::kCPU, quiet_hooks());
  ASSERT_EQ(straight.exit_code, 0);
  ASSERT_EQ(straight.step, steps);
  const TrainOutcome first = train(config("stopped"), comm, at::kCPU, stop_after(comm, stop_at));
  EXPECT_EQ(first.exit_code, kRequeueExitCode);
  ASSERT_EQ(first.step, stop_at);
  ASSERT_TRUE(std::filesystem::exists(first.checkpoint + "/model.pt")) << first.checkpoint;
  const TrainOutcome second = train(config("stopped"), comm, at::kCPU, quiet_hooks());
  EXPECT_EQ(second.exit_code, 0);
  EXPECT_EQ(second.resumed_from, stop_at);
  ASSERT_EQ(second.step, steps);
  states = {load_checkpoint(straight.checkpoint), load_checkpoint(second.checkpoint)};
  expect_states_identical(states.first, states.second, label);
}

std::vector<Json> train_records(const std::string& run_dir) {
  std::ifstream in(run_dir + "/log.jsonl");
  std::vector<Json> out;
  for (std::string line; std::getline(in, line);) {
    Json j = Json::parse(line);
    if (j.value("event", "") == "train") out.push_back(std::move(j));
  }
  return out;
}

int run_tests_on_every_rank(int argc, char** argv, std::unique_ptr<dist::Communicator>& comm) {
  ::testing::InitGoogleTest(&argc, argv);
  dist::MpiRuntime mpi(&argc, &argv);
  comm = dist::make_communicator(mpi.context());
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  comm.reset();
  return worst;
}

}  // namespace ddpm::trainer::testing
