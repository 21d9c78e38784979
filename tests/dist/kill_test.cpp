// kill -9 of one rank in the middle of a run: mpirun must end the other ranks, with a non-zero
// exit status, within 60 s (no hang). Launches `mpirun -np 3 ddpm_dist_spin` itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

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

TEST(DistFailure, KillOneRankEndsTheJobWithin60Seconds) {
  const fs::path dir = ddpm::testing::temp_dir("dist_kill");
  for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_btl=self,vader,tcp",
                         "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_pml=ob1",
                         "OMPI_MCA_mca_base_component_show_load_errors=0"})
    putenv(const_cast<char*>(kv));
  const int np = 3;
  std::string dir_s = dir.string();
  std::vector<std::string> args = {DDPM_MPIEXEC, "-np", std::to_string(np), "--oversubscribe", DDPM_DIST_SPIN, dir_s, "150"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t mpirun = 0;
  ASSERT_EQ(posix_spawn(&mpirun, argv[0], nullptr, nullptr, argv.data(), environ), 0) << "cannot start " << argv[0];

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

}  // namespace
