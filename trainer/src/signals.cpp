// Async-signal-safe stop flag for SIGTERM / SIGUSR1; see ddpm/trainer/signals.h.
#include "ddpm/trainer/signals.h"

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ddpm::trainer {

namespace {
// Lock-free atomics are async-signal-safe; the handler only stores into them.
std::atomic<int> g_stop_signal{0};
std::atomic<bool> g_installed{false};
struct sigaction g_previous_term;
struct sigaction g_previous_usr1;
static_assert(std::atomic<int>::is_always_lock_free, "signal flag must be lock-free");

extern "C" void on_stop_signal(int signo) { g_stop_signal.store(signo, std::memory_order_relaxed); }

void install(int signo, struct sigaction* previous) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(signo, &sa, previous) != 0) {
    throw std::runtime_error(std::string("sigaction(") + signal_name(signo) + ") failed: " + std::strerror(errno));
  }
}
}  // namespace

StopSignalHandlers::StopSignalHandlers() {
  if (g_installed.exchange(true)) {
    throw std::logic_error("StopSignalHandlers: already installed; keep one instance per process");
  }
  g_stop_signal.store(0);
  install(SIGTERM, &g_previous_term);
  install(SIGUSR1, &g_previous_usr1);
}

StopSignalHandlers::~StopSignalHandlers() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGUSR1, &g_previous_usr1, nullptr);
  g_installed.store(false);
}

bool stop_requested() { return g_stop_signal.load(std::memory_order_relaxed) != 0; }
int stop_signal() { return g_stop_signal.load(std::memory_order_relaxed); }
void clear_stop_request() { g_stop_signal.store(0); }

const char* signal_name(int signo) {
  switch (signo) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    case 0: return "none";
    default: return "signal";
  }
}

}  // namespace ddpm::trainer
