// The job's Prometheus metrics (prometheus-cpp): one registry with every ddpm_* family, typed
// setters the trainer calls with values it has already reduced across ranks. Names follow
// Prometheus conventions (ddpm_ prefix, base units, _total counters); every series has run_id.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ddpm/monitoring/step_phase.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace ddpm::monitoring {


// The CUDA caching allocator's counters for one device (c10::cuda::CUDACachingAllocator::
// getDeviceStats, aggregate pool): bytes handed to tensors now, held from the driver now, and the
// most handed to tensors since the process started (or the allocator's peak was last reset).
struct GpuMemory {
  double allocated_bytes = 0;
  double reserved_bytes = 0;
  double peak_allocated_bytes = 0;
};

struct BuildInfo {
  std::string version;        // ddpm version (DDPM_VERSION)
  std::string torch_version;  // LibTorch version
  std::string device;         // "cuda" or "cpu"
};

class Metrics {
 public:
  explicit Metrics(std::string run_id);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  const std::string& run_id() const { return run_id_; }
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // The exposition text (Prometheus text format 0.0.4) of the current values.
  std::string serialize() const;

  // Loss terms of the last logged step (improved-diffusion's loss/mse/vb); quartile q in 0..3 is
  // the quartile of t (t * 4 / T) the terms were averaged over.
  void set_loss_terms(double loss, double mse, double vb);
  void set_loss_quartile(int q, double loss, double mse, double vb);
  // A training task's own per-example term (trainer's TrainTask::term_names, e.g. the noise
  // classifier's "accuracy"), mean of the last logged interval: ddpm_task_term{term} over all t
  // (q = -1) or {term, quartile="q<q>"} for q in 0..3. The family appears on first use.
  void set_task_term(const std::string& term, int q, double value);
  void add_steps(std::uint64_t n);   // ddpm_steps_total
  void add_images(std::uint64_t n);  // ddpm_images_total (global batch per step)
  void set_images_per_second(double v);
  void observe_phase(StepPhase phase, double seconds);  // histogram ddpm_step_phase_seconds
  // Per-rank waiting (all-gathered by the trainer): counters with a rank label.
  void add_rank_wait(int rank, double data_wait_seconds, double allreduce_wait_seconds);
  void set_grad_norm(double v);
  void set_learning_rate(double v);
  void set_loss_scale(double v);
  void add_nonfinite_steps_skipped(std::uint64_t n);
  void set_checkpoint(double unix_time_seconds, double write_seconds);
  // FID with the extractor that produced the features ("inception-v3", "torchscript:<file>", ...).
  void set_fid(const std::string& ema_rate, const std::string& extractor, std::int64_t samples, double fid);
  // ddpm_bpd: bits/dim (promtool's lint rejects a metric name with "_bits").
  void set_bits_per_dim(const std::string& ema_rate, std::int64_t samples, double bpd);
  void set_world_size(int n);
  void set_build_info(const BuildInfo& info);
  void set_gpu_memory_bytes(int device, double allocated_bytes);  // ddpm_gpu_memory_allocated_bytes only
  // ddpm_gpu_memory_{allocated,reserved,peak_allocated}_bytes{device="<index>"}.
  void set_gpu_memory(int device, const GpuMemory& memory);
  // Reads the resident set size of this process from /proc/self/statm (0 where unavailable).
  void update_process_memory();
  void set_exit_status(int status);  // ddpm_exit_status, set before the final push

 private:
  std::string run_id_;
  std::shared_ptr<prometheus::Registry> registry_;
  struct Families;
  std::unique_ptr<Families> f_;
};

// The histogram bucket upper bounds of ddpm_step_phase_seconds (100 us .. 60 s, ~x2.5 apart).
std::vector<double> phase_buckets();

}  // namespace ddpm::monitoring
