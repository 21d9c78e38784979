// ddpm_metrics_demo: registers every job metric through ddpm::monitoring, serves them on
// --metrics-addr, updates them with synthetic training-like values for --seconds, pushes to
// --pushgateway and exits with a final push. Used by the monitoring integration test and to try
// a Prometheus/Grafana set-up without a training run. Not a trainer.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "ddpm/monitoring/exporter.h"
#include "ddpm/monitoring/metrics.h"

namespace {
using namespace ddpm::monitoring;

struct Options {
  std::string metrics_addr = "127.0.0.1:0";
  std::string pushgateway = "none";
  std::string run_id = "demo";
  std::string port_file;
  double seconds = 10;
  double push_interval = 2;
  int world_size = 2;
  int exit_status = 0;
};

// One synthetic "step": values move like a short training run's would.
void update(Metrics& m, int step, const Options& o) {
  const double progress = 1.0 / (1.0 + 0.05 * step);
  m.add_steps(1);
  m.add_images(64);
  m.set_loss_terms(0.1 + progress, 0.08 + progress, 0.02);
  for (int q = 0; q < 4; ++q) m.set_loss_quartile(q, (0.1 + progress) * (4 - q) / 2.5, (0.08 + progress) * (4 - q) / 2.5, 0.005 * (q + 1));
  m.set_images_per_second(640 + 10 * std::sin(step));
  const double seconds[] = {0.002, 0.06, 0.01, 0.004, 0.001};
  for (size_t i = 0; i < kNumStepPhases; ++i) m.observe_phase(kStepPhases[i], seconds[i] * (1 + 0.1 * (step % 3)));
  for (int r = 0; r < o.world_size; ++r) m.add_rank_wait(r, 0.002 * (r + 1), 0.01 / (r + 1));
  m.set_grad_norm(2.0 * progress + 0.1);
  m.set_learning_rate(1e-4 * std::min(1.0, step / 20.0));
  m.set_loss_scale(65536);
  if (step % 25 == 24) m.add_nonfinite_steps_skipped(1);
  if (step % 10 == 0) {
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    m.set_checkpoint(now, 0.5);
    m.set_fid("0.9999", "torchscript:fmnist_net.pt", 1000, 50 * progress + 5);
    m.set_bits_per_dim("0.9999", 1000, 3 + progress);
  }
  m.set_gpu_memory(0, {1.5e9, 2.0e9, 1.8e9});  // allocated, reserved, peak allocated
  m.update_process_memory();
}

int run(const Options& o) {
  Metrics metrics(o.run_id);
  metrics.set_world_size(o.world_size);
  metrics.set_build_info({DDPM_VERSION, DDPM_TORCH_VERSION, "cpu"});
  MetricsExporter exporter(o.metrics_addr, metrics);
  if (exporter.enabled()) {
    std::printf("metrics: %s (port %d)\n", exporter.url().c_str(), exporter.port());
    if (!o.port_file.empty()) std::ofstream(o.port_file) << exporter.port() << "\n";
  }
  std::fflush(stdout);
  PushgatewayOptions po;
  po.address = o.pushgateway;
  po.job = "ddpm_metrics_demo";
  po.interval = std::chrono::milliseconds(static_cast<long>(o.push_interval * 1000));
  Pushgateway push(po, metrics);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.seconds);
  for (int step = 0; std::chrono::steady_clock::now() < end; ++step) {
    update(metrics, step, o);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const int status = push.finish(o.exit_status);
  if (push.enabled()) std::printf("final push: %s -> %d\n", push.url().c_str(), status);
  return o.exit_status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ddpm_metrics_demo: serve and push every ddpm_* metric with synthetic values"};
  Options o;
  app.add_option("--metrics-addr", o.metrics_addr, "host:port to serve /metrics on; port 0 picks one; none = off")->capture_default_str();
  app.add_option("--pushgateway", o.pushgateway, "Pushgateway host:port, or none")->capture_default_str();
  app.add_option("--run-id", o.run_id, "run_id label of every series")->capture_default_str();
  app.add_option("--seconds", o.seconds, "how long to update the metrics")->capture_default_str();
  app.add_option("--push-interval", o.push_interval, "seconds between pushes")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--world-size", o.world_size, "ranks to report per-rank metrics for")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--exit-status", o.exit_status, "exit status to report (and return)")->capture_default_str();
  app.add_option("--port-file", o.port_file, "write the chosen metrics port to this file");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_metrics_demo: error: %s\n", e.what());
    return 1;
  }
}
