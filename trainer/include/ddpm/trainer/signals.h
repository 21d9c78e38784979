// Preemption: SIGTERM and SIGUSR1 (what Slurm and other batch systems send before killing a job)
// set an atomic flag that the training loop polls once per step. The loop then finishes the step,
// writes a checkpoint and returns kRequeueExitCode, so a batch system can requeue the job and the
// same command resumes it (--resume auto). The flag is the one process-wide state of the trainer:
// a signal handler can reach nothing else. With several ranks the trainer gathers every rank's
// flag with each step's loss terms (one collective), so every rank stops at the same step.
#pragma once
#include <csignal>

namespace ddpm::trainer {

// Exit status after a signal-triggered stop with a checkpoint written: 75 = EX_TEMPFAIL
// (<sysexits.h>, "temporary failure; retry"). Slurm: `scontrol requeue` or --requeue scripts
// check for it; launch/ scripts document it.
inline constexpr int kRequeueExitCode = 75;

// Installs the handlers for SIGTERM and SIGUSR1 (sigaction, SA_RESTART); restores the previous
// ones when destroyed. A second instance while one is alive throws std::logic_error.
class StopSignalHandlers {
 public:
  StopSignalHandlers();
  ~StopSignalHandlers();
  StopSignalHandlers(const StopSignalHandlers&) = delete;
  StopSignalHandlers& operator=(const StopSignalHandlers&) = delete;
};

bool stop_requested();    // a stop signal arrived since the handlers were installed / cleared
int stop_signal();        // the last such signal number, 0 when none
void clear_stop_request();
const char* signal_name(int signo);  // "SIGTERM", "SIGUSR1", ...

}  // namespace ddpm::trainer
