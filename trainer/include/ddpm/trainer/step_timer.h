// StepTimer: wall time of each phase of a training step, taken as laps (`lap(phase)` charges the
// time since the previous lap to `phase`), in place of a pair of clock reads around every call.
#pragma once
#include <array>
#include <chrono>

#include "ddpm/monitoring/step_phase.h"

namespace ddpm::trainer {

class StepTimer {
 public:
  using Clock = std::chrono::steady_clock;
  using Seconds = std::array<double, monitoring::kNumStepPhases>;  // indexed by StepPhase

  // Starts a step: every phase at 0, the lap clock at now.
  void start() {
    seconds_ = {};
    last_ = Clock::now();
  }
  // Adds the time since the last start() or lap() to `phase`.
  void lap(monitoring::StepPhase phase) {
    const Clock::time_point now = Clock::now();
    seconds_[static_cast<size_t>(phase)] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  const Seconds& seconds() const { return seconds_; }

 private:
  Seconds seconds_{};
  Clock::time_point last_ = Clock::now();
};

// Seconds since `t0` on the steady clock.
inline double seconds_since(StepTimer::Clock::time_point t0) {
  return std::chrono::duration<double>(StepTimer::Clock::now() - t0).count();
}

}  // namespace ddpm::trainer
