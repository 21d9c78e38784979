// Checkpoint store: round trip of the full state, Python reads the weights, a crash between the
// temporary write and the rename leaves the store valid, corruption is detected and resume falls
// back, retention keeps the last K plus every M-th.
#include <ATen/ATen.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ddpm/trainer/checkpoint.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::trainer;
using ddpm::model::TensorDict;
using ddpm::testing::tensors_near;
namespace fs = std::filesystem;

TensorDict weights(float offset) {
  return {{"input_blocks.0.0.weight", at::arange(12, at::kFloat).view({3, 4}) + offset},
          {"out.2.bias", at::full({3}, offset, at::kFloat)}};
}

TrainState make_state(int64_t step) {
  TrainState s;
  s.step = step;
  s.images_seen = step * 32;
  s.lr = 1e-4 * static_cast<double>(step % 7 + 1);
  s.loss_scale = 1024.0;
  s.loss_scale_good_steps = 17;
  s.nonfinite_in_row = 1;
  s.nonfinite_total = 3;
  s.world_size = 2;
  s.model = weights(static_cast<float>(step));
  s.emas = {{0.9999, weights(0.5f * static_cast<float>(step))}, {0.999, weights(0.25f)}};
  s.optimizer = {{"0.exp_avg", at::randn({3, 4})}, {"0.exp_avg_sq", at::rand({3, 4})}, {"0.step", at::tensor(step)}};
  s.sampler = {{"loss_history", at::randn({10, 4}, at::kDouble)}, {"loss_counts", at::arange(10, at::kLong)}};
  s.data_cursor = {2, 17, step};
  s.rng.push_back(capture_rng_state());
  (void)at::randn({3});
  s.rng.push_back(capture_rng_state());
  s.config = nlohmann::ordered_json{{"lr", 1e-4}, {"preset", "fmnist-demo"}};
  s.extra = nlohmann::ordered_json{{"note", "test"}};
  return s;
}

void expect_same_dict(const TensorDict& a, const TensorDict& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first) << what;
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << what;
    EXPECT_TRUE(tensors_near(a[i].second, b[i].second, 0, 0, what + " " + a[i].first));
  }
}

void flip_byte(const std::string& path, std::streamoff at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(at);
  f.write(&c, 1);
}

TEST(Checkpoint, RoundTripKeepsEveryPiece) {
  const std::string run = ddpm::testing::temp_dir("ckpt_roundtrip");
  CheckpointStore store(run);
  const TrainState s = make_state(500);
  const std::string path = store.save(s);
  EXPECT_EQ(path, run + "/checkpoints/000500");
  for (const char* f : {"model.pt", "ema_0.9999.pt", "ema_0.999.pt", "optimizer.pt", "state.pt", "state.json", "MANIFEST.json"}) {
    EXPECT_TRUE(fs::exists(path + "/" + f)) << f;
  }
  EXPECT_EQ(store.latest_pointer(), std::optional<int64_t>(500));
  const TrainState l = load_checkpoint(path);
  EXPECT_EQ(l.step, 500);
  EXPECT_EQ(l.images_seen, s.images_seen);
  EXPECT_EQ(l.lr, s.lr);
  EXPECT_EQ(l.loss_scale, 1024.0);
  EXPECT_EQ(l.loss_scale_good_steps, 17);
  EXPECT_EQ(l.nonfinite_in_row, 1);
  EXPECT_EQ(l.nonfinite_total, 3);
  EXPECT_EQ(l.world_size, 2);
  expect_same_dict(l.model, s.model, "model");
  ASSERT_EQ(l.emas.size(), 2u);
  EXPECT_EQ(l.emas[0].first, 0.9999);
  EXPECT_EQ(l.emas[1].first, 0.999);
  expect_same_dict(l.emas[0].second, s.emas[0].second, "ema 0.9999");
  expect_same_dict(l.emas[1].second, s.emas[1].second, "ema 0.999");
  expect_same_dict(l.optimizer, s.optimizer, "optimizer");
  expect_same_dict(l.sampler, s.sampler, "sampler");
  EXPECT_EQ(l.data_cursor, s.data_cursor);
  ASSERT_EQ(l.rng.size(), 2u);
  for (size_t r = 0; r < 2; ++r) EXPECT_TRUE(at::equal(l.rng[r].cpu, s.rng[r].cpu)) << "rng rank " << r;
  EXPECT_FALSE(at::equal(l.rng[0].cpu, l.rng[1].cpu));
  EXPECT_EQ(l.config, s.config);
  EXPECT_EQ(l.extra, s.extra);
  // Restoring rank 1's generator reproduces its draws.
  restore_rng_state(l.rng[1]);
  const at::Tensor a = at::randn({8});
  restore_rng_state(l.rng[1]);
  EXPECT_TRUE(at::equal(at::randn({8}), a));
}

TEST(Checkpoint, PythonTorchLoadReadsWeights) {
  const std::string run = ddpm::testing::temp_dir("ckpt_python");
  const std::string path = CheckpointStore(run).save(make_state(7));
  const char* py = std::getenv("DDPM_PYTHON");
  const std::string code =
      "import torch; d='" + path + "'\n"
      "m=torch.load(d+'/model.pt'); e=torch.load(d+'/ema_0.9999.pt'); s=torch.load(d+'/state.pt')\n"
      "assert list(m)==['input_blocks.0.0.weight','out.2.bias'], list(m)\n"
      "assert torch.equal(m['input_blocks.0.0.weight'], torch.arange(12.).view(3,4)+7)\n"
      "assert torch.equal(e['out.2.bias'], torch.full((3,), 3.5))\n"
      "assert s['data_cursor'].tolist()==[2,17,7] and s['rng/rank0/cpu'].dtype==torch.uint8\n";
  const std::string script = run + "/check.py";
  std::ofstream(script) << code;
  EXPECT_EQ(std::system(((py ? std::string(py) : "python3") + " " + script).c_str()), 0);
}

// A child process writes checkpoint 200 and dies (_exit) just before the rename.
TEST(Checkpoint, CrashBeforeRenameLeavesPreviousCheckpointIntact) {
  const std::string run = ddpm::testing::temp_dir("ckpt_crash");
  CheckpointStore store(run);
  store.save(make_state(100));
  const TrainState second = make_state(200);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    store.set_fault_hook([](const std::string& where) {
      if (where == "before_rename") _exit(3);
    });
    store.save(second);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 3) << "the child did not reach the rename";
  const std::string leftover = run + "/checkpoints/.tmp-000200-" + std::to_string(child);
  EXPECT_TRUE(fs::exists(leftover + "/MANIFEST.json")) << "files were written before the crash";
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{100}));
  EXPECT_EQ(store.latest_pointer(), std::optional<int64_t>(100));
  CheckpointStore::Resumed r = store.resume("auto");
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(r.state->step, 100);
  EXPECT_TRUE(r.warnings.empty());
  // The next save succeeds and removes the dead writer's temporary folder (and pointer file).
  const std::string stale_pointer = run + "/checkpoints/latest.tmp-" + std::to_string(child);
  std::ofstream(stale_pointer) << "000300\n";
  store.save(second);
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_FALSE(fs::exists(stale_pointer));
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{100, 200}));
  EXPECT_EQ(store.latest_pointer(), std::optional<int64_t>(200));
}

// Died after the rename but before `latest` moved: the new checkpoint is complete and is used.
TEST(Checkpoint, CrashBeforeLatestUpdateStillResumesNewest) {
  const std::string run = ddpm::testing::temp_dir("ckpt_crash_latest");
  CheckpointStore store(run);
  store.save(make_state(100));
  CheckpointStore crashing(run);
  crashing.set_fault_hook([](const std::string& where) {
    if (where == "after_rename") throw std::runtime_error("simulated crash");
  });
  EXPECT_THROW(crashing.save(make_state(200)), std::runtime_error);
  EXPECT_EQ(store.latest_pointer(), std::optional<int64_t>(100));
  const CheckpointStore::Resumed r = store.resume("auto");
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(r.state->step, 200);
}

TEST(Checkpoint, CorruptionIsDetectedAndAutoResumeFallsBack) {
  const std::string run = ddpm::testing::temp_dir("ckpt_corrupt");
  CheckpointStore store(run, RetentionPolicy{0, 0});
  for (int64_t s : {100, 200, 300}) store.save(make_state(s));
  flip_byte(store.path_for(300) + "/model.pt", 100);
  try {
    verify_checkpoint(store.path_for(300));
    FAIL() << "flipped byte not detected";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("model.pt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("SHA-256"), std::string::npos) << e.what();
  }
  std::filesystem::resize_file(store.path_for(200) + "/ema_0.999.pt", 10);
  CheckpointStore::Resumed r = store.resume("auto");
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(r.state->step, 100);
  EXPECT_EQ(r.path, store.path_for(100));
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_NE(r.warnings[0].find("000300"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[0].find("model.pt"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[1].find("ema_0.999.pt"), std::string::npos) << r.warnings[1];
  EXPECT_NE(r.warnings[1].find("truncated"), std::string::npos) << r.warnings[1];
  // An explicit path that does not verify is an error, not a fallback.
  EXPECT_THROW(store.resume(store.path_for(300)), CheckpointError);
  // Nothing verifies: an error listing each failure.
  fs::remove(store.path_for(100) + "/MANIFEST.json");
  try {
    store.resume("auto");
    FAIL() << "resumed from nothing valid";
  } catch (const CheckpointError& e) {
    const std::string m = e.what();
    for (const char* n : {"000100", "MANIFEST.json", "000200", "000300", "--run-dir"}) {
      EXPECT_NE(m.find(n), std::string::npos) << m << "\nmissing: " << n;
    }
  }
}

TEST(Checkpoint, ResumeSpecs) {
  const std::string run = ddpm::testing::temp_dir("ckpt_specs");
  CheckpointStore store(run);
  EXPECT_FALSE(store.resume("auto").state.has_value());  // empty run dir: a fresh start
  store.save(make_state(10));
  store.save(make_state(20));
  EXPECT_FALSE(store.resume("none").state.has_value());
  EXPECT_EQ(store.resume(store.path_for(10)).state->step, 10);
  EXPECT_EQ(store.resume(run).state->step, 20);  // a run dir means auto there
  EXPECT_THROW(store.resume(run + "/nope"), CheckpointError);
}

TEST(Checkpoint, RewritingAStepReplacesIt) {
  const std::string run = ddpm::testing::temp_dir("ckpt_rewrite");
  CheckpointStore store(run);
  store.save(make_state(10));
  TrainState again = make_state(10);
  again.images_seen = 12345;
  store.save(again);
  EXPECT_EQ(load_checkpoint(store.path_for(10)).images_seen, 12345);
  for (const auto& e : fs::directory_iterator(store.dir())) {
    EXPECT_EQ(e.path().filename().string().rfind(".", 0), std::string::npos) << e.path();
  }
}

TEST(Checkpoint, RetentionKeepsLastKAndEveryMth) {
  std::vector<int64_t> steps;
  for (int64_t s = 100; s <= 1000; s += 100) steps.push_back(s);
  EXPECT_EQ(checkpoints_to_delete(steps, {3, 500}), (std::vector<int64_t>{100, 200, 300, 400, 600, 700}));
  EXPECT_EQ(checkpoints_to_delete(steps, {0, 500}), std::vector<int64_t>{});
  EXPECT_EQ(checkpoints_to_delete({5}, {1, 0}), std::vector<int64_t>{});
  EXPECT_EQ(checkpoints_to_delete({1, 2, 3}, {1, 0}), (std::vector<int64_t>{1, 2}));

  const std::string run = ddpm::testing::temp_dir("ckpt_retention");
  CheckpointStore store(run, RetentionPolicy{2, 3});
  for (int64_t s = 1; s <= 7; ++s) store.save(make_state(s));
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{3, 6, 7}));
  EXPECT_EQ(store.latest_pointer(), std::optional<int64_t>(7));
}

TEST(Checkpoint, NamesArePaddedSteps) {
  EXPECT_EQ(checkpoint_name(500), "000500");
  EXPECT_EQ(checkpoint_name(0), "000000");
  EXPECT_EQ(checkpoint_name(12345678), "12345678");
  EXPECT_EQ(ema_file_name(0.9999), "ema_0.9999.pt");
}
}  // namespace

namespace {
// A figure, not a check (run with --gtest_also_run_disabled_tests): save + verify time of a
// checkpoint the size of ddpm-cifar10 (35.7M float32 parameters, one EMA, AdamW's two moments).
TEST(Checkpoint, DISABLED_TimeOfACifarSizedCheckpoint) {
  const std::string run = ddpm::testing::temp_dir("ckpt_timing");
  TrainState s = make_state(1000);
  const int64_t n = 35746307;
  s.model = {{"w", at::randn({n})}};
  s.emas = {{0.9999, {{"w", at::randn({n})}}}};
  s.optimizer = {{"exp_avg", at::randn({n})}, {"exp_avg_sq", at::rand({n})}};
  CheckpointStore store(run);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string path = store.save(s);
  const auto t1 = std::chrono::steady_clock::now();
  verify_checkpoint(path);
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("[figure] save %.2f s, verify %.2f s for %.0f MB\n", std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(t2 - t1).count(), 4.0 * 4 * n / 1e6);
}
}  // namespace
