// Stop signals: SIGTERM / SIGUSR1 raised in-process set the flag without killing the process;
// a child process stopped by a real SIGTERM exits with the documented requeue code.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include "ddpm/trainer/signals.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::trainer;

TEST(Signals, RaisedSigtermAndSigusr1SetTheFlag) {
  StopSignalHandlers handlers;
  EXPECT_FALSE(stop_requested());
  ASSERT_EQ(std::raise(SIGTERM), 0);
  EXPECT_TRUE(stop_requested());
  EXPECT_EQ(stop_signal(), SIGTERM);
  EXPECT_STREQ(signal_name(stop_signal()), "SIGTERM");
  clear_stop_request();
  EXPECT_FALSE(stop_requested());
  ASSERT_EQ(std::raise(SIGUSR1), 0);
  EXPECT_TRUE(stop_requested());
  EXPECT_EQ(stop_signal(), SIGUSR1);
  EXPECT_THROW(StopSignalHandlers second, std::logic_error);
}

TEST(Signals, PreviousHandlersComeBack) {
  static volatile std::sig_atomic_t previous_called = 0;
  auto* old = std::signal(SIGUSR1, [](int) { previous_called = 1; });
  {
    StopSignalHandlers handlers;
    std::raise(SIGUSR1);
    EXPECT_EQ(previous_called, 0);
  }
  std::raise(SIGUSR1);
  EXPECT_EQ(previous_called, 1);
  std::signal(SIGUSR1, old);
}

// The loop's contract in miniature: poll the flag each "step", then exit with kRequeueExitCode.
TEST(Signals, ChildStoppedBySigtermExitsWithRequeueCode) {
  EXPECT_EQ(kRequeueExitCode, 75);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    StopSignalHandlers handlers;
    const char byte = 1;
    if (write(ready[1], &byte, 1) != 1) _exit(2);
    for (int step = 0; step < 100000; ++step) {
      if (stop_requested()) _exit(kRequeueExitCode);  // (the trainer checkpoints first)
      usleep(1000);
    }
    _exit(3);  // never stopped
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  ASSERT_EQ(kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed instead of stopping cleanly";
  EXPECT_EQ(WEXITSTATUS(status), kRequeueExitCode);
  close(ready[0]);
  close(ready[1]);
}
}  // namespace
