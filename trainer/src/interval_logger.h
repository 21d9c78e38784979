// IntervalLogger: rank 0's view of a training run, with the state it owns: the per-interval sums
// (loss terms by quartile of t, grad norm, phase times, time spent outside training), the
// JSON-lines run log, the Prometheus metrics with their exporter and Pushgateway, the user's
// output lines and the progress bar. Other ranks keep only their own interval sums (their phase
// waits are gathered by the trainer). Internal to trainer/src.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <memory>
#include <string>

#include "ddpm/monitoring/exporter.h"
#include "ddpm/monitoring/metrics.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/run_log.h"
#include "ddpm/trainer/step_timer.h"

namespace ddpm::trainer::detail {

// Sums over a logging interval (rank 0 logs their means). Per-sample terms come from every rank.
struct IntervalStats {
  int64_t steps = 0, images = 0, samples = 0, skipped = 0;
  double loss = 0, mse = 0, vb = 0;
  std::array<double, 4> q_loss{}, q_mse{}, q_vb{};
  std::array<int64_t, 4> q_count{};
  double grad_norm = 0;
  StepTimer::Seconds phase{};  // this rank's seconds
  double paused = 0;           // seconds of evaluations: not training, left out of images/s
  StepTimer::Clock::time_point start = StepTimer::Clock::now();
  void add_terms(const at::Tensor& rows, int64_t T);  // rows (M, 4) float64: t, loss, mse, vb
};

// Where the run stands when an interval is logged.
struct RunPosition {
  int64_t step = 0, total_steps = 0, images_seen = 0;
  double lr = 0.0, loss_scale = 1.0;
  bool fp16 = false;  // shows the loss scale in the log line
};

// "%.4f" of v, or "n/a" when v is not finite.
std::string format_number(const char* spec, double v);

class IntervalLogger {
 public:
  // Rank 0: the metrics, then the Pushgateway (so a run that fails from here on still pushes
  // ddpm_exit_status 1), then the exporter. `print` replaces stdout for the user's lines.
  IntervalLogger(const TrainConfig& config, int rank, int world_size, const c10::Device& device,
                 std::function<void(const std::string&)> print);
  ~IntervalLogger();

  // The names of the rows' columns 2 and 3 (TrainTask::term_names; default "mse", "vb"): the
  // log line, the log.jsonl keys NAME and NAME_q0..q3 and the metrics. A column named "" is not
  // shown; a column named other than mse or vb also shows its quartile means in the line and is
  // exported as ddpm_task_term{term=NAME} (quartile="q0".."q3" by quartile of t).
  void set_term_names(const std::array<std::string, 2>& names) { term_names_ = names; }
  // Rank 0: opens RUN/log.jsonl, writes `first` (the start or resume event), turns on the
  // progress bar when stdout is a terminal. Starts the first interval on every rank.
  void open(nlohmann::ordered_json first);
  void print(const std::string& line) const;                // rank 0 only; others ignore it
  void event(const nlohmann::ordered_json& record) const;  // a log.jsonl line (rank 0)
  monitoring::Metrics* metrics() const { return metrics_.get(); }  // nullptr except on rank 0

  // One step: every rank's (t, loss, term 2, term 3) rows (G, 4) float64 on the CPU, whether the
  // optimizer stepped, its grad norm and this rank's phase times.
  void record(const at::Tensor& rows, int64_t num_timesteps, bool stepped, double grad_norm,
              const StepTimer::Seconds& phases);
  void pause(double seconds) { interval_.paused += seconds; }  // time not spent training
  // This rank's data and all-reduce waits of the current interval (W gathers them).
  std::array<double, 2> waits() const;
  // Ends the interval: rank 0 prints the line, writes log.jsonl, sets the metrics; `waits` is
  // (W, 2) float64 on the CPU, every rank's waits().
  void log_interval(const RunPosition& at, const at::Tensor& waits);
  void progress(int64_t step, int64_t total_steps) const;  // the bar, rank 0 on a terminal
  void finish(int exit_code);  // the final push of ddpm_exit_status

 private:
  struct Means {  // of one interval; NaN where a loss type has no such term
    double loss, mse, vb, grad_norm, images_per_second;
    std::array<double, 4> loss_q, mse_q, vb_q;  // by quartile of t
  };
  void write_line(const IntervalStats& s, const Means& m, const RunPosition& at);
  void export_metrics(const IntervalStats& s, const Means& m, const RunPosition& at, const at::Tensor& waits);

  const TrainConfig& config_;
  std::array<std::string, 2> term_names_ = {"mse", "vb"};
  int rank_, world_;
  c10::Device device_;
  std::function<void(const std::string&)> print_;
  bool tty_ = false;
  IntervalStats interval_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<monitoring::Metrics> metrics_;
  std::unique_ptr<monitoring::Pushgateway> push_;
  std::unique_ptr<monitoring::MetricsExporter> exporter_;
};

}  // namespace ddpm::trainer::detail
