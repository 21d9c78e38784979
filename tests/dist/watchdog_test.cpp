// CollectiveWatchdog: an operation past the timeout fires on_timeout once with a message naming it
// and the flag; completed operations and short scopes never fire; a transport error fires at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "ddpm/dist/watchdog.h"

namespace ddpm::dist {
namespace {

using namespace std::chrono_literals;

struct Fired {
  std::mutex m;
  std::vector<std::string> messages;
  void add(const std::string& s) {
    std::lock_guard<std::mutex> lock(m);
    messages.push_back(s);
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(m);
    return messages.size();
  }
};

TEST(CollectiveWatchdog, AHungOperationFiresOnceAfterTheTimeout) {
  Fired fired;
  const auto t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point when;
  CollectiveWatchdog w(0.3, [&](const std::string& m) {
    when = std::chrono::steady_clock::now();
    fired.add(m);
  });
  w.watch("MPI all_gather", [] { return false; });
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(fired.count(), 1u) << "fires exactly once";
  const double after = std::chrono::duration<double>(when - t0).count();
  std::printf("[figure] hung operation reported after %.3f s (timeout 0.3 s, poll 0.05 s)\n", after);
  EXPECT_GE(after, 0.3);
  EXPECT_LT(after, 0.6);
  EXPECT_NE(fired.messages[0].find("MPI all_gather"), std::string::npos) << fired.messages[0];
  EXPECT_NE(fired.messages[0].find("--collective-timeout"), std::string::npos) << fired.messages[0];
}

TEST(CollectiveWatchdog, CompletedOperationsAndShortScopesNeverFire) {
  Fired fired;
  CollectiveWatchdog w(0.2, [&](const std::string& m) { fired.add(m); });
  std::atomic<bool> done{false};
  w.watch("async", [&] { return done.load(); });
  std::this_thread::sleep_for(100ms);
  done = true;  // completes after 0.1 s, inside the 0.2 s bound
  for (int i = 0; i < 100; ++i) {
    CollectiveWatchdog::Scope s(&w, "blocking");
    std::this_thread::sleep_for(2ms);
  }
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(fired.count(), 0u) << (fired.messages.empty() ? "" : fired.messages[0]);
  CollectiveWatchdog::Scope off(nullptr, "no watchdog: a no-op");
}

TEST(CollectiveWatchdog, ATransportErrorFiresAtOnce) {
  Fired fired;
  std::atomic<bool> broken{false};
  CollectiveWatchdog w(100.0, [&](const std::string& m) { fired.add(m); },
                       [&] { return broken ? std::string("NCCL unhandled system error") : std::string(); });
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(fired.count(), 0u);
  broken = true;
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(fired.count(), 1u);
  EXPECT_NE(fired.messages[0].find("NCCL unhandled system error"), std::string::npos) << fired.messages[0];
}

TEST(CollectiveWatchdog, RejectsANonPositiveTimeout) {
  EXPECT_THROW(CollectiveWatchdog(0.0, [](const std::string&) {}), std::invalid_argument);
}

}  // namespace
}  // namespace ddpm::dist
