// kill -9 of one rank in the middle of a run: mpirun must end the other ranks, with a non-zero
// exit status, within 60 s (no hang). Launches `mpirun -np 3 ddpm_dist_spin` itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <iterator>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "testing/testing.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

pid_t read_pid(const fs::path& p) {
  std::ifstream in(p);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// Running (a zombie left to a non-reaping pid 1 counts as ended).
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  if (!(stat >> pid_s >> comm >> state)) return false;
  return state != "Z" && state != "X";
}

// Starts mpirun -np `np` ddpm_dist_spin <dir> 150 [extra], output to <dir>/job.log. It inherits the
// OpenMPI settings from the test's environment (ddpm_add_test: launch/openmpi.env).
pid_t start_job(const fs::path& dir, int np, const std::string& extra) {
  std::vector<std::string> args = {DDPM_MPIEXEC, "-np", std::to_string(np), "--oversubscribe", DDPM_DIST_SPIN,
                                   dir.string(), "150"};
  if (!extra.empty()) args.push_back(extra);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string log = (dir / "job.log").string();
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// Waits up to 60 s for `pid`; true when it ended (status in *status).
bool wait_up_to_60s(pid_t pid, int* status) {
  const auto t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::seconds(60)) {
    if (waitpid(pid, status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, status, 0);
  return false;
}

TEST(DistFailure, KillOneRankEndsTheJobWithin60Seconds) {
  const fs::path dir = ddpm::testing::temp_dir("dist_kill");
  const int np = 3;
  const pid_t mpirun = start_job(dir, np, "");
  ASSERT_GT(mpirun, 0) << "cannot start " << DDPM_MPIEXEC;

  // Wait for every rank's pid (they appear once all ranks finished one all-reduce).
  std::vector<pid_t> pids(np, 0);
  const auto t_start = Clock::now();
  for (int r = 0; r < np; ++r) {
    while (!fs::exists(dir / ("rank" + std::to_string(r) + ".pid")) && Clock::now() - t_start < std::chrono::seconds(60))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pids[r] = read_pid(dir / ("rank" + std::to_string(r) + ".pid"));
    ASSERT_GT(pids[r], 0) << "rank " << r << " never started";
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // well inside the all-reduce loop
  const auto t_kill = Clock::now();
  ASSERT_EQ(kill(pids[1], SIGKILL), 0);

  int status = 0;
  bool exited = false;
  while (Clock::now() - t_kill < std::chrono::seconds(60)) {
    if (waitpid(mpirun, &status, WNOHANG) == mpirun) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // The surviving ranks must be gone too, not just mpirun.
  while (Clock::now() - t_kill < std::chrono::seconds(60) && (alive(pids[0]) || alive(pids[2])))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double seconds = std::chrono::duration<double>(Clock::now() - t_kill).count();
  std::printf("[kill] mpirun and ranks 0, 2 ended %.2f s after kill -9 of rank 1 (mpirun status %d)\n",
              seconds, status);
  if (!exited) {
    kill(mpirun, SIGKILL);
    waitpid(mpirun, &status, 0);
    for (pid_t p : pids) kill(p, SIGKILL);
  }
  ASSERT_TRUE(exited) << "the job still ran 60 s after one rank was killed";
  EXPECT_TRUE(!WIFEXITED(status) || WEXITSTATUS(status) != 0) << "mpirun exited with status 0";
  EXPECT_LT(seconds, 60.0);
  for (int r : {0, 2}) EXPECT_FALSE(alive(pids[r])) << "rank " << r << " (pid " << pids[r] << ") survived";
}

// An exception on one rank takes the fatal path (abort_job: MPI_Abort) and ends every rank, with
// a message naming the rank, the host and the cause.
TEST(DistFailure, ErrorOnOneRankAbortsTheJobWithItsRankHostAndCause) {
  const fs::path dir = ddpm::testing::temp_dir("dist_throw");
  const auto t0 = Clock::now();
  const pid_t mpirun = start_job(dir, 3, "throw");
  ASSERT_GT(mpirun, 0);
  int status = 0;
  const bool exited = wait_up_to_60s(mpirun, &status);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::ifstream in(dir / "job.log");
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::printf("[throw] job ended after %.2f s (status %d); log:\n%s\n", seconds, status, log.c_str());
  ASSERT_TRUE(exited) << "the job still ran 60 s after rank 1 failed";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_NE(log.find("injected failure on rank 1"), std::string::npos);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  EXPECT_NE(log.find("rank 1 of 3 on host " + std::string(host)), std::string::npos);
}

}  // namespace
