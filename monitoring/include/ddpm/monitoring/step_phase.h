// The phases of one training step: the one list the trainer's step timer, its log lines and
// log.jsonl keys, and the `phase` label of ddpm_step_phase_seconds all use. No dependencies.
#pragma once
#include <array>
#include <cstddef>

namespace ddpm::monitoring {

enum class StepPhase { kData, kForwardBackward, kAllreduceWait, kOptimizer, kEma };

inline constexpr std::size_t kNumStepPhases = 5;
inline constexpr std::array<StepPhase, kNumStepPhases> kStepPhases = {
    StepPhase::kData, StepPhase::kForwardBackward, StepPhase::kAllreduceWait, StepPhase::kOptimizer,
    StepPhase::kEma};

// "forward_backward": the Prometheus label and the log.jsonl key time_<name>_s.
constexpr const char* phase_name(StepPhase p) {
  constexpr const char* names[kNumStepPhases] = {"data", "forward_backward", "allreduce_wait", "optimizer", "ema"};
  return names[static_cast<std::size_t>(p)];
}
// "fb": the short name in the log line.
constexpr const char* phase_short_name(StepPhase p) {
  constexpr const char* names[kNumStepPhases] = {"data", "fb", "ar", "opt", "ema"};
  return names[static_cast<std::size_t>(p)];
}

}  // namespace ddpm::monitoring
