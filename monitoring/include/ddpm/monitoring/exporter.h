// Serving and pushing the job's metrics: MetricsExporter serves GET /metrics on --metrics-addr
// (nothing but reading), Pushgateway pushes the registry to a Prometheus Pushgateway at an
// interval and once more at exit with ddpm_exit_status.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ddpm/monitoring/metrics.h"

namespace ddpm::monitoring {

struct HostPort {
  std::string host;
  int port = 0;
};
// Parses "host:port" ("[v6]:port" too); "none" (or "") gives nullopt. `flag` names the option
// in error messages. Throws std::invalid_argument on anything else.
std::optional<HostPort> parse_host_port(const std::string& value, const std::string& flag);

// Where warnings go (default: one line on stderr). Never throws.
using WarnFn = std::function<void(const std::string&)>;
WarnFn stderr_warn();

// A minimal HTTP/1.0 server on its own thread: GET (or HEAD) /metrics answers the exposition
// text, another method on /metrics gets 405, any other path 404. Not prometheus-cpp's Exposer:
// civetweb starts its threads with a fixed 100 KiB stack, below the static TLS of a process that
// links torch with CUDA (cublasLt alone has 92 KiB), so pthread_create fails with EINVAL there.
class MetricsExporter {
 public:
  // addr per --metrics-addr: "host:port", port 0 picks a free port (see port()), "none" serves
  // nothing. Throws std::runtime_error when the address cannot be bound. Each scrape refreshes
  // ddpm_process_resident_memory_bytes first.
  MetricsExporter(const std::string& addr, Metrics& metrics);
  ~MetricsExporter();
  MetricsExporter(const MetricsExporter&) = delete;
  MetricsExporter& operator=(const MetricsExporter&) = delete;
  bool enabled() const { return fd_ >= 0; }
  int port() const { return port_; }  // the bound port (0 when disabled)
  std::string url() const;             // http://host:port/metrics ("" when disabled)

 private:
  void serve();
  void answer(int client);

  Metrics& metrics_;
  std::string host_;
  int port_ = 0;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct PushgatewayOptions {
  std::string address;                          // --pushgateway host:port ("none"/"" = off)
  std::string job = "ddpm";                     // grouping key job/<job>/run_id/<run id>
  std::chrono::milliseconds interval{15000};    // background push period
  std::chrono::milliseconds timeout{5000};      // per-push HTTP timeout (connect + transfer)
  WarnFn warn = stderr_warn();
};

// Pushes every `interval` from a background thread (PUT: the group holds exactly the current
// registry) and a final push from finish(status) or, when the owner never called finish (an
// exception unwinding), from the destructor with status 1. Failures are warnings.
class Pushgateway {
 public:
  Pushgateway(PushgatewayOptions options, Metrics& metrics);
  ~Pushgateway();
  Pushgateway(const Pushgateway&) = delete;
  Pushgateway& operator=(const Pushgateway&) = delete;

  bool enabled() const { return enabled_; }
  std::string url() const { return url_; }  // http://host:port/metrics/job/<job>/run_id/<id>
  // One synchronous push now; returns the HTTP status, or a negative curl code when the
  // gateway could not be reached (a warning is logged). Never throws.
  int push_now();
  // Sets ddpm_exit_status, stops the background thread and pushes a last time. Idempotent.
  int finish(int exit_status);
  int pushes_ok() const;     // successful pushes so far
  int pushes_failed() const;

 private:
  void loop();

  PushgatewayOptions opt_;
  Metrics& metrics_;
  bool enabled_ = false;
  std::string url_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool finished_ = false;
  int ok_ = 0, failed_ = 0;
  std::mutex push_mu_;  // one HTTP request at a time
  std::thread thread_;
};

}  // namespace ddpm::monitoring
