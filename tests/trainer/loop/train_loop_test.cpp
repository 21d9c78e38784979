// The training loop in-process on every rank of mpirun (np 1 and 2): BIT-EXACT resume (N steps
// straight vs stopped by SIGTERM at N/2 and resumed: parameters, EMAs, optimizer and sampler
// state identical bit for bit), the checkpoint round trip through the loop, a loss that falls on
// a learnable dataset, sample grids, and the error for a config that differs on resume.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/train_loop.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

std::unique_ptr<dist::Communicator> g_comm;
dist::Communicator& comm() { return *g_comm; }

std::string shared_dir(const std::string& name) { return shared_test_dir(comm(), "train_loop", name); }

std::string dataset(const std::string& dir) { return shared_tiny_dataset(comm(), dir); }


std::vector<double> logged_losses(const std::string& run_dir) {
  std::vector<double> out;
  for (const Json& j : train_records(run_dir)) out.push_back(j.at("loss").get<double>());
  return out;
}

// The headline test: same parameters, EMAs, optimizer moments and sampler history, bit for bit.
TEST(TrainLoop, BitExactResumeAfterSigterm) {
  const std::string dir = shared_dir("bitexact");
  const std::string data = dataset(dir);
  auto config = [&](const std::string& run) {
    TrainConfig c = tiny_config(data, dir + "/" + run, 12);
    c.timestep_sampler = "loss-second-moment";  // warms up by step ~4: resumed steps use the history
    c.num_classes = 4;
    c.label_dropout = 0.25;
    c.sample_every = 5;  // grids in between must not shift the random streams
    return c;
  };
  std::pair<TrainState, TrainState> states;
  ASSERT_NO_FATAL_FAILURE(check_bit_exact_resume(comm(), config, 12, 6, "diffusion", states));
  const auto& [a, b] = states;
  ASSERT_EQ(a.emas.size(), 2u);
  EXPECT_EQ(a.images_seen, 12 * 16);
  EXPECT_EQ(b.images_seen, 12 * 16);
  EXPECT_EQ(b.world_size, comm().world_size());
  EXPECT_EQ(static_cast<int>(b.rng.size()), comm().world_size());
  // The sampler did warm up (else the test would not cover its saved history).
  const at::Tensor counts = b.sampler.at(1).second;
  EXPECT_GE(counts.min().item<int64_t>(), 10) << "loss-second-moment history not full after 12 steps";
  EXPECT_TRUE(std::filesystem::exists(dir + "/straight/samples/step_000010.png"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/stopped/samples/step_000012.png"));
}

// Resume round trip: the checkpoint's state is what the loop continues from.
TEST(TrainLoop, CheckpointRoundTrip) {
  const std::string dir = shared_dir("roundtrip");
  const std::string data = dataset(dir);
  TrainConfig c = tiny_config(data, dir + "/run", 3);
  c.save_every = 2;
  const TrainOutcome first = train(c, comm(), at::kCPU, quiet_hooks());
  ASSERT_EQ(first.step, 3);
  const TrainState s = load_checkpoint(dir + "/run/checkpoints/000003");
  EXPECT_EQ(s.step, 3);
  EXPECT_EQ(s.images_seen, 48);
  EXPECT_EQ(s.data_cursor, (std::vector<int64_t>{0, 48}));  // 64 images, global batch 16
  EXPECT_EQ(s.config.at("lr").get<double>(), 1e-3);
  EXPECT_TRUE(std::filesystem::exists(dir + "/run/checkpoints/000002/MANIFEST.json"));
  c.max_steps = 5;  // safe to change on resume
  const TrainOutcome second = train(c, comm(), at::kCPU, quiet_hooks());
  EXPECT_EQ(second.resumed_from, 3);
  EXPECT_EQ(second.step, 5);
  const TrainState t = load_checkpoint(second.checkpoint);
  EXPECT_EQ(t.images_seen, 80);
  EXPECT_EQ(t.data_cursor, (std::vector<int64_t>{1, 16}));
  // Already at the bound: the run says it is complete and does nothing (no checkpoint written,
  // no log line, no grid), exit 0.
  const auto log_size = std::filesystem::file_size(dir + "/run/log.jsonl");
  const auto model_time = std::filesystem::last_write_time(second.checkpoint + "/model.pt");
  std::vector<std::string> lines;
  TrainHooks record = quiet_hooks();
  record.print = [&](const std::string& line) { lines.push_back(line); };
  const TrainOutcome third = train(c, comm(), at::kCPU, record);
  EXPECT_EQ(third.step, 5);
  EXPECT_EQ(third.exit_code, 0);
  EXPECT_EQ(third.resumed_from, 5);
  EXPECT_EQ(third.checkpoint, second.checkpoint);
  EXPECT_EQ(std::filesystem::file_size(dir + "/run/log.jsonl"), log_size) << "a complete run wrote to log.jsonl";
  EXPECT_EQ(std::filesystem::last_write_time(second.checkpoint + "/model.pt"), model_time)
      << "a complete run rewrote its final checkpoint";
  if (comm().rank() == 0) {
    ASSERT_FALSE(lines.empty());
    std::printf("[message] %s\n", lines.back().c_str());
    EXPECT_NE(lines.back().find("run complete: step 5 of 5"), std::string::npos) << lines.back();
  }
}

TEST(TrainLoop, ConfigThatDiffersOnResumeIsAnErrorListingTheKeys) {
  const std::string dir = shared_dir("differs");
  const std::string data = dataset(dir);
  TrainConfig c = tiny_config(data, dir + "/run", 1);
  train(c, comm(), at::kCPU, quiet_hooks());
  c.max_steps = 2;
  c.lr = 5e-4;
  c.diffusion_steps = 8;
  try {
    train(c, comm(), at::kCPU, quiet_hooks());
    FAIL() << "resuming with a different lr and diffusion_steps did not throw";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    std::printf("[message] %s\n", msg.c_str());
    EXPECT_NE(msg.find("lr (saved 0.001, now 0.0005)"), std::string::npos);
    EXPECT_NE(msg.find("diffusion_steps (saved 4, now 8)"), std::string::npos);
    EXPECT_EQ(msg.find("max_steps"), msg.rfind("max_steps")) << "max_steps is safe: listed only among safe keys";
  }
}

// --init-from: the weights of another run's model.pt are where training starts (one step at
// lr 1e-10 moves no parameter by more than ~1e-10; a fresh initialisation differs by O(0.1)).
TEST(TrainLoop, InitFromWeights) {
  const std::string dir = shared_dir("initfrom");
  const std::string data = dataset(dir);
  TrainConfig source = tiny_config(data, dir + "/source", 3);
  source.seed = 11;
  const TrainOutcome src = train(source, comm(), at::kCPU, quiet_hooks());
  const model::TensorDict weights = model::load_tensor_dict(src.checkpoint + "/model.pt");
  TrainConfig c = tiny_config(data, dir + "/run", 1);
  c.init_from = src.checkpoint + "/model.pt";
  c.lr = 1e-10;
  const TrainOutcome out = train(c, comm(), at::kCPU, quiet_hooks());
  const TrainState s = load_checkpoint(out.checkpoint);
  ASSERT_EQ(s.model.size(), weights.size());
  double worst = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    worst = std::max(worst, (s.model[i].second - weights[i].second).abs().max().item<double>());
  }
  std::printf("[maxdiff] init-from weights after one step at lr 1e-10: %.3g (atol 1e-6)\n", worst);
  EXPECT_LT(worst, 1e-6);
}

// The non-finite guard: an absurd learning rate makes the weights overflow after one step; the
// following steps have non-finite gradients, are skipped, and the run stops after 2 in a row.
TEST(TrainLoop, NonfiniteStepsStopTheRun) {
  const std::string dir = shared_dir("nonfinite");
  const std::string data = dataset(dir);
  TrainConfig c = tiny_config(data, dir + "/run", 10);
  c.lr = 1e30;
  c.max_nonfinite_steps = 2;
  try {
    train(c, comm(), at::kCPU, quiet_hooks());
    FAIL() << "training with lr 1e30 did not stop";
  } catch (const std::runtime_error& e) {
    std::printf("[message] %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("2 non-finite steps in a row"), std::string::npos);
  }
}

// 40 steps on the bars: the mean loss of the last 5 steps is below 0.6x that of the first 5
// (the zero-initialised output layer starts every run at loss ~1 = E[eps^2]).
TEST(TrainLoop, LossFalls) {
  const std::string dir = shared_dir("lossfalls");
  const std::string data = dataset(dir);
  TrainConfig c = tiny_config(data, dir + "/run", 40);
  c.diffusion_steps = 50;
  c.lr = 2e-3;
  c.sample_every = 40;
  c.sample_respacing = "ddim5";
  c.sample_count = 16;
  const TrainOutcome out = train(c, comm(), at::kCPU, quiet_hooks());
  ASSERT_EQ(out.step, 40);
  const std::vector<double> loss = logged_losses(dir + "/run");
  ASSERT_EQ(loss.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += loss[i] / 5;
    last += loss[loss.size() - 1 - i] / 5;
  }
  std::printf("[loss] first 5 steps %.4f, last 5 steps %.4f (ratio %.3f, must be < 0.6)\n", first, last, last / first);
  EXPECT_LT(last, 0.6 * first);
  EXPECT_TRUE(std::filesystem::exists(dir + "/run/samples/step_000040.png"));
}

}  // namespace
}  // namespace ddpm::trainer::testing

int main(int argc, char** argv) {
  return ddpm::trainer::testing::run_tests_on_every_rank(argc, argv, ddpm::trainer::testing::g_comm);
}
