// The collective watchdog; see ddpm/dist/watchdog.h.
#include "ddpm/dist/watchdog.h"

#include <cstdio>
#include <stdexcept>

namespace ddpm::dist {

namespace {
constexpr auto kPollInterval = std::chrono::milliseconds(50);
}  // namespace

CollectiveWatchdog::CollectiveWatchdog(double timeout_seconds, OnTimeout on_timeout, Health health)
    : timeout_(timeout_seconds), on_timeout_(std::move(on_timeout)), health_(std::move(health)) {
  if (!(timeout_ > 0)) throw std::invalid_argument("CollectiveWatchdog: the timeout must be > 0 seconds");
  if (!on_timeout_) throw std::invalid_argument("CollectiveWatchdog: no on_timeout callback");
  thread_ = std::thread([this] { run(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void CollectiveWatchdog::watch(std::string what, Probe probe) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back(Entry{std::move(what), std::move(probe), std::chrono::steady_clock::now(), ++next_seq_});
}

CollectiveWatchdog::Scope::Scope(CollectiveWatchdog* watchdog, const char* what) {
  if (watchdog == nullptr) return;
  done_ = std::make_shared<std::atomic<bool>>(false);
  watchdog->watch(what, [done = done_] { return done->load(); });
}

CollectiveWatchdog::Scope::~Scope() {
  if (done_) done_->store(true);
}

bool CollectiveWatchdog::check(const Entry& e, std::chrono::steady_clock::time_point now) {
  if (e.probe()) return true;
  const double waited = std::chrono::duration<double>(now - e.start).count();
  if (waited <= timeout_) return false;
  char text[512];
  std::snprintf(text, sizeof text,
                "collective %s (#%llu) not complete after %.1f s (--collective-timeout %.0f): a peer rank "
                "stopped responding or died; ending every rank. Hint: look for the rank that failed or hung "
                "first; raise --collective-timeout if rank 0 legitimately works this long alone (checkpoints, FID)",
                e.what.c_str(), static_cast<unsigned long long>(e.seq), waited, timeout_);
  fired_ = true;
  on_timeout_(text);
  return false;  // not reached when on_timeout ends the process
}

void CollectiveWatchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, kPollInterval, [this] { return stop_; });
    if (stop_) break;
    if (fired_) continue;
    if (health_) {
      const std::string error = health_();
      if (!error.empty()) {
        fired_ = true;
        on_timeout_("asynchronous communicator error: " + error + "; ending every rank");
        continue;
      }
    }
    const auto now = std::chrono::steady_clock::now();
    for (auto it = entries_.begin(); it != entries_.end() && !fired_;) {
      it = check(*it, now) ? entries_.erase(it) : std::next(it);
    }
  }
}

}  // namespace ddpm::dist
