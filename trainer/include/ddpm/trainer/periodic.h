// PeriodicTasks: the training loop's every-N-steps work (logging, checkpoints, sample grids, FID,
// bits/dim) as one table of {name, every, last_at, fn}, with the rule for the end of a run in one
// place: a task runs after each step that is a multiple of `every`; when the run ends, a task
// that has not run at the final step runs once more (evaluations only when the run completed,
// checkpoints also when it was stopped). The last step's round is run_final's, so the order of
// the tasks holds there too.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ddpm::trainer {

enum class AtEnd {
  kNever,           // only at multiples of `every`
  kWhenCompleted,   // also at the end of a run that reached its last step (step > 0)
  kAlways,          // also at the end of a stopped run (a checkpoint to resume from)
};

struct PeriodicTask {
  std::string name;
  int64_t every = 0;  // <= 0: the task is off
  AtEnd at_end = AtEnd::kWhenCompleted;
  std::function<void()> fn;
  int64_t last_at = -1;  // step it last ran at
};

class PeriodicTasks {
 public:
  void add(std::string name, int64_t every, AtEnd at_end, std::function<void()> fn) {
    tasks_.push_back(PeriodicTask{std::move(name), every, at_end, std::move(fn)});
  }
  // After optimizer step `step`: the tasks with step % every == 0, in the order they were added.
  void run_due(int64_t step) {
    for (PeriodicTask& t : tasks_) {
      if (t.every > 0 && step % t.every == 0) run(t, step);
    }
  }
  // At the end of the run, after the last step (completed) or at a stop: in the order they were
  // added, the tasks that did not run at `step` yet and are due there or whose AtEnd asks for it.
  void run_final(int64_t step, bool completed) {
    for (PeriodicTask& t : tasks_) {
      if (t.every <= 0 || t.last_at == step) continue;
      const bool due = step > 0 && step % t.every == 0;
      const bool at_end = t.at_end == AtEnd::kAlways ? (step > 0 || !completed)
                                                     : t.at_end == AtEnd::kWhenCompleted && completed && step > 0;
      if (due || at_end) run(t, step);
    }
  }
  const std::vector<PeriodicTask>& tasks() const { return tasks_; }

 private:
  static void run(PeriodicTask& t, int64_t step) {
    t.fn();
    t.last_at = step;
  }
  std::vector<PeriodicTask> tasks_;
};

}  // namespace ddpm::trainer
