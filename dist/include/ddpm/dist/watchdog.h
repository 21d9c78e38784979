// CollectiveWatchdog: bounds how long a rank may wait inside a collective. A rank whose peer
// stopped responding (hung, stopped, dead without its launcher noticing) otherwise waits forever
// in MPI_Allreduce or in an NCCL kernel. A background thread checks, every ~50 ms, every watched
// operation (a blocking call on the caller's thread, or an asynchronous one with a completion
// probe) and the transport's asynchronous error; past the timeout, or on such an error, it calls
// on_timeout once with a message naming the operation. on_timeout runs on the watchdog thread and
// must end the process (ddpm_train's: abort the communicator, then the whole job).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace ddpm::dist {

class CollectiveWatchdog {
 public:
  using Probe = std::function<bool()>;                  // true once the operation completed (watchdog thread)
  using Health = std::function<std::string()>;          // "" while healthy, else the transport's error
  using OnTimeout = std::function<void(const std::string& message)>;  // must not return

  CollectiveWatchdog(double timeout_seconds, OnTimeout on_timeout, Health health = {});
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  double timeout_seconds() const { return timeout_; }
  // Watches `what` until probe() returns true (asynchronous work: an NCCL kernel's event).
  void watch(std::string what, Probe probe);

  // Watches a blocking call on this thread for the scope's lifetime; a null watchdog is a no-op.
  class Scope {
   public:
    Scope(CollectiveWatchdog* watchdog, const char* what);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    std::shared_ptr<std::atomic<bool>> done_;
  };

 private:
  struct Entry {
    std::string what;
    Probe probe;
    std::chrono::steady_clock::time_point start;
    uint64_t seq;
  };
  void run();
  bool check(const Entry& e, std::chrono::steady_clock::time_point now);  // true: completed

  double timeout_;
  OnTimeout on_timeout_;
  Health health_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::list<Entry> entries_;
  uint64_t next_seq_ = 0;
  bool stop_ = false;
  bool fired_ = false;  // on_timeout is called once
  std::thread thread_;
};

}  // namespace ddpm::dist
