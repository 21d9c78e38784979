// build/bin/ddpm_train as users run it: --help, a clear error with exit status 1, a real SIGTERM
// to a running process (checkpoint, exit status 75, the same command resumes), and a resume on a
// different world size (mpirun -np 2, then 1 rank: global batch kept, data cursor continues).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ddpm/trainer/checkpoint.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

namespace fs = std::filesystem;

std::string train_bin() { return ddpm::testing::bin("ddpm_train"); }

using ddpm::testing::read_text;

int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, /*cpu_only=*/false); }

std::string tiny_flags(const std::string& data, const std::string& run_dir, int64_t max_steps) {
  return " --data " + data + " --run-dir " + run_dir + " --model tiny --model-overrides '{\"in_channels\":1,"
         "\"out_channels\":1}' --schedule cosine --diffusion-steps 4 --global-batch 16 --max-steps " +
         std::to_string(max_steps) + " --lr 1e-3 --log-every 1 --save-every 1000 --metrics-addr none --seed 5 --sample-respacing 2";
}

std::string fresh_dir(const std::string& name) {
  const std::string dir = ddpm::testing::temp_dir("train_cli_" + name);
  fs::create_directories(dir);
  return dir;
}

TEST(TrainCli, HelpListsFlagsWithDefaultsAndExitCodes) {
  const std::string dir = fresh_dir("help");
  ASSERT_EQ(run(train_bin() + " --help", dir + "/out.txt"), 0);
  const std::string out = read_text(dir + "/out.txt");
  for (const char* s : {"--global-batch", "--max-steps", "--resume", "--metrics-addr", "--preset", "75"}) {
    EXPECT_NE(out.find(s), std::string::npos) << "--help lacks " << s;
  }
}

TEST(TrainCli, ErrorExitsWithStatusOneAndNamesTheRank) {
  const std::string dir = fresh_dir("error");
  const int rc = run(train_bin() + " --data " + dir + "/missing.h5 --run-dir " + dir + "/run --max-steps 2", dir + "/out.txt");
  const std::string out = read_text(dir + "/out.txt");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("rank 0 on "), std::string::npos) << out;
  EXPECT_NE(out.find("missing.h5"), std::string::npos) << out;
}

// A real SIGTERM to the process while it trains: it finishes the step, checkpoints, exits 75;
// the same command (with a bound just above) resumes from that checkpoint.
TEST(TrainCli, SigtermCheckpointsExits75AndResumes) {
  const std::string dir = fresh_dir("sigterm");
  const std::string data = dir + "/bars.h5";
  write_tiny_dataset(data);
  const std::string run_dir = dir + "/run";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + train_bin() + tiny_flags(data, run_dir, 100000) + " > " + dir + "/first.txt 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until it has logged a few steps (the log is flushed per line).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string log = read_text(run_dir + "/log.jsonl");
    if (log.find("\"step\":3,") != std::string::npos) break;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(exited) << "ddpm_train ended before SIGTERM: " << read_text(dir + "/first.txt");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string first = read_text(dir + "/first.txt");
  ASSERT_TRUE(WIFEXITED(status)) << first;
  EXPECT_EQ(WEXITSTATUS(status), 75) << first;
  EXPECT_NE(first.find("stop signal (SIGTERM"), std::string::npos) << first;
  CheckpointStore store(run_dir);
  ASSERT_TRUE(store.latest_pointer().has_value()) << first;
  const int64_t stopped = *store.latest_pointer();
  EXPECT_GE(stopped, 3);
  EXPECT_EQ(load_checkpoint(store.path_for(stopped)).step, stopped);

  const int rc = run(train_bin() + tiny_flags(data, run_dir, stopped + 2), dir + "/second.txt");
  const std::string second = read_text(dir + "/second.txt");
  EXPECT_EQ(rc, 0) << second;
  EXPECT_NE(second.find("resumed from " + store.path_for(stopped)), std::string::npos) << second;
  EXPECT_EQ(load_checkpoint(store.path_for(stopped + 2)).step, stopped + 2);
}

// 2 ranks for 4 steps, then 1 rank for 4 more: the global batch and the data order are kept, so
// the data cursor and images seen equal those of 8 steps on one rank.
TEST(TrainCli, ResumeOnADifferentWorldSize) {
  const std::string dir = fresh_dir("world");
  const std::string data = dir + "/bars.h5";
  write_tiny_dataset(data, 80);
  const std::string mpirun = ddpm::testing::mpirun(2);
  ASSERT_EQ(run(mpirun + train_bin() + tiny_flags(data, dir + "/a", 4), dir + "/a1.txt"), 0) << read_text(dir + "/a1.txt");
  ASSERT_EQ(run(train_bin() + tiny_flags(data, dir + "/a", 8), dir + "/a2.txt"), 0) << read_text(dir + "/a2.txt");
  const std::string resumed = read_text(dir + "/a2.txt");
  EXPECT_NE(resumed.find("written by 2 ranks, this run has 1"), std::string::npos) << resumed;
  ASSERT_EQ(run(train_bin() + tiny_flags(data, dir + "/b", 8), dir + "/b.txt"), 0) << read_text(dir + "/b.txt");

  const TrainState a = load_checkpoint(dir + "/a/checkpoints/000008");
  const TrainState b = load_checkpoint(dir + "/b/checkpoints/000008");
  EXPECT_EQ(a.world_size, 1);
  EXPECT_EQ(a.images_seen, 8 * 16);
  EXPECT_EQ(a.data_cursor, b.data_cursor);
  EXPECT_EQ(a.data_cursor, (std::vector<int64_t>{1, 48}));  // 80 images: 5 steps per epoch
  const TrainState a4 = load_checkpoint(dir + "/a/checkpoints/000004");
  EXPECT_EQ(a4.world_size, 2);
  EXPECT_EQ(a4.rng.size(), 2u);
}

}  // namespace
}  // namespace ddpm::trainer::testing
