// PeriodicTasks: the every-N rule and the end-of-run rule of the training loop's periodic work
// (log, checkpoint, grids, FID, bits/dim), checked step by step against the expected runs.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ddpm/trainer/periodic.h"

namespace ddpm::trainer {
namespace {

// Runs a loop of `steps` steps (stopped after `stop_at` when > 0) and returns "name@step" for
// every task run, in order.
std::vector<std::string> simulate(int64_t steps, int64_t stop_at, int64_t log_every, int64_t save_every,
                                  int64_t sample_every) {
  std::vector<std::string> runs;
  PeriodicTasks tasks;
  int64_t step = 0;
  const auto note = [&](const std::string& name) { return [&runs, &step, name] { runs.push_back(name + "@" + std::to_string(step)); }; };
  tasks.add("log", log_every, AtEnd::kWhenCompleted, note("log"));
  tasks.add("save", save_every, AtEnd::kAlways, note("save"));
  tasks.add("grid", sample_every, AtEnd::kWhenCompleted, note("grid"));
  bool stopped = false;
  while (step < steps && !stopped) {
    ++step;
    stopped = stop_at > 0 && step == stop_at;
    if (step < steps) tasks.run_due(step);
  }
  tasks.run_final(step, step >= steps);
  return runs;
}

TEST(PeriodicTasks, EveryNThenOnceAtTheEndInTableOrder) {
  const std::vector<std::string> got = simulate(7, 0, 2, 3, 0);
  const std::vector<std::string> want = {"log@2", "save@3", "log@4", "log@6", "save@6", "log@7", "save@7"};
  EXPECT_EQ(got, want);
}

TEST(PeriodicTasks, LastStepOnAMultipleRunsEachTaskOnce) {
  const std::vector<std::string> got = simulate(6, 0, 3, 6, 6);
  const std::vector<std::string> want = {"log@3", "log@6", "save@6", "grid@6"};
  EXPECT_EQ(got, want);
}

TEST(PeriodicTasks, AStoppedRunOnlyCheckpoints) {
  const std::vector<std::string> got = simulate(10, 5, 2, 4, 2);
  // Step 5 is no multiple of anything: only the checkpoint runs at the stop, no log, no grid.
  const std::vector<std::string> want = {"log@2", "grid@2", "log@4", "save@4", "grid@4", "save@5"};
  EXPECT_EQ(got, want);
}

TEST(PeriodicTasks, AStopOnAMultipleDoesNotRepeatTheCheckpoint) {
  const std::vector<std::string> got = simulate(10, 4, 0, 4, 0);
  EXPECT_EQ(got, (std::vector<std::string>{"save@4"}));
}

TEST(PeriodicTasks, NothingAtStepZero) {
  EXPECT_TRUE(simulate(0, 0, 1, 1, 1).empty());
}

}  // namespace
}  // namespace ddpm::trainer
