// The ddpm_* metric families and their setters; see ddpm/monitoring/metrics.h.
#include "ddpm/monitoring/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <unistd.h>

#include <array>
#include <fstream>
#include <stdexcept>

namespace ddpm::monitoring {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

std::vector<double> phase_buckets() {
  return {1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

// Every family, registered once; each carries the constant label run_id.
struct Metrics::Families {
  Family<Gauge>* loss;
  Family<Gauge>* mse;
  Family<Gauge>* vb;
  Family<Counter>* steps;
  Family<Counter>* images;
  Family<Gauge>* images_per_second;
  Family<Histogram>* phase;
  Family<Counter>* rank_data_wait;
  Family<Counter>* rank_allreduce_wait;
  Family<Gauge>* grad_norm;
  Family<Gauge>* learning_rate;
  Family<Gauge>* loss_scale;
  Family<Counter>* nonfinite;
  Family<Gauge>* checkpoint_time;
  Family<Gauge>* checkpoint_write;
  Family<Gauge>* fid;
  Family<Gauge>* bpd;
  Family<Gauge>* world_size;
  Family<Gauge>* build_info;
  Family<Gauge>* gpu_memory;
  Family<Gauge>* gpu_reserved;
  Family<Gauge>* gpu_peak;
  Family<Gauge>* resident_memory;
  Family<Gauge>* exit_status;
  Family<Gauge>* start_time;
  Family<Gauge>* task_term = nullptr;  // registered on first use (tasks other than diffusion)
};

namespace {

template <typename Builder>
auto& reg(Builder b, const char* name, const char* help, const prometheus::Labels& constant,
          prometheus::Registry& r) {
  return b.Name(name).Help(help).Labels(constant).Register(r);
}

}  // namespace

Metrics::Metrics(std::string run_id)
    : run_id_(std::move(run_id)), registry_(std::make_shared<prometheus::Registry>()),
      f_(std::make_unique<Families>()) {
  if (run_id_.empty()) throw std::invalid_argument("Metrics: empty run id (give the job a --run-id)");
  const prometheus::Labels c{{"run_id", run_id_}};
  auto& r = *registry_;
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  f_->loss = &reg(BuildGauge(), "ddpm_loss", "Training loss of the last logged step (all t, or one quartile of t)", c, r);
  f_->mse = &reg(BuildGauge(), "ddpm_mse",
                 "MSE term of the loss (against the --mean-type target: eps, x_0, x_{t-1} or v), last logged step", c, r);
  f_->vb = &reg(BuildGauge(), "ddpm_vb", "Variational bound term L_t of the loss in bits/dim, last logged step", c, r);
  f_->steps = &reg(BuildCounter(), "ddpm_steps_total", "Optimizer steps taken", c, r);
  f_->images = &reg(BuildCounter(), "ddpm_images_total", "Training images seen, all ranks", c, r);
  f_->images_per_second = &reg(BuildGauge(), "ddpm_images_per_second", "Training throughput, all ranks", c, r);
  f_->phase = &reg(BuildHistogram(), "ddpm_step_phase_seconds", "Wall time of each phase of a training step", c, r);
  f_->rank_data_wait = &reg(BuildCounter(), "ddpm_rank_data_wait_seconds_total", "Time a rank waited for its data", c, r);
  f_->rank_allreduce_wait = &reg(BuildCounter(), "ddpm_rank_allreduce_wait_seconds_total",
                                 "Time a rank waited for the gradient all-reduce", c, r);
  f_->grad_norm = &reg(BuildGauge(), "ddpm_grad_norm", "L2 norm of the gradient, last step", c, r);
  f_->learning_rate = &reg(BuildGauge(), "ddpm_learning_rate", "Current learning rate", c, r);
  f_->loss_scale = &reg(BuildGauge(), "ddpm_loss_scale", "Current mixed-precision loss scale", c, r);
  f_->nonfinite = &reg(BuildCounter(), "ddpm_nonfinite_steps_skipped_total", "Steps skipped for non-finite gradients", c, r);
  f_->checkpoint_time = &reg(BuildGauge(), "ddpm_last_checkpoint_timestamp_seconds",
                             "Unix time of the last successful checkpoint", c, r);
  f_->checkpoint_write = &reg(BuildGauge(), "ddpm_checkpoint_write_seconds", "Write duration of the last checkpoint", c, r);
  f_->fid = &reg(BuildGauge(), "ddpm_fid", "Frechet distance of generated samples to the reference statistics", c, r);
  f_->bpd = &reg(BuildGauge(), "ddpm_bpd", "Negative log-likelihood bound in bits per dimension (bits/dim; promtool rejects a _bits name)", c, r);
  f_->world_size = &reg(BuildGauge(), "ddpm_world_size", "Number of ranks in the job", c, r);
  f_->build_info = &reg(BuildGauge(), "ddpm_build_info", "Build of the running binary (value 1)", c, r);
  f_->gpu_memory = &reg(BuildGauge(), "ddpm_gpu_memory_allocated_bytes", "GPU memory allocated by the caching allocator", c, r);
  f_->gpu_reserved = &reg(BuildGauge(), "ddpm_gpu_memory_reserved_bytes",
                          "GPU memory reserved from the driver by the caching allocator", c, r);
  f_->gpu_peak = &reg(BuildGauge(), "ddpm_gpu_memory_peak_allocated_bytes",
                      "Peak GPU memory allocated by the caching allocator since the process started", c, r);
  f_->resident_memory = &reg(BuildGauge(), "ddpm_process_resident_memory_bytes", "Resident memory of the process", c, r);
  f_->exit_status = &reg(BuildGauge(), "ddpm_exit_status", "Exit status of the job (0 success), set at exit", c, r);
  f_->start_time = &reg(BuildGauge(), "ddpm_start_time_seconds", "Unix time the metrics were created", c, r);
  f_->start_time->Add({}).SetToCurrentTime();
}

Metrics::~Metrics() = default;

std::string Metrics::serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void Metrics::set_loss_terms(double loss, double mse, double vb) {
  f_->loss->Add({}).Set(loss);
  f_->mse->Add({}).Set(mse);
  f_->vb->Add({}).Set(vb);
}

void Metrics::set_loss_quartile(int q, double loss, double mse, double vb) {
  if (q < 0 || q > 3) throw std::invalid_argument("Metrics::set_loss_quartile: quartile " + std::to_string(q) + " not in 0..3");
  const prometheus::Labels l{{"quartile", "q" + std::to_string(q)}};
  f_->loss->Add(l).Set(loss);
  f_->mse->Add(l).Set(mse);
  f_->vb->Add(l).Set(vb);
}

void Metrics::set_task_term(const std::string& term, int q, double value) {
  if (q < -1 || q > 3) throw std::invalid_argument("Metrics::set_task_term: quartile " + std::to_string(q) + " not in -1..3");
  if (!f_->task_term) {
    f_->task_term = &reg(prometheus::BuildGauge(), "ddpm_task_term",
                         "A training task's own per-example term (e.g. the noise classifier's accuracy), mean over "
                         "the last logged interval (all t, or one quartile of t)",
                         {{"run_id", run_id_}}, *registry_);
  }
  prometheus::Labels l{{"term", term}};
  if (q >= 0) l["quartile"] = "q" + std::to_string(q);
  f_->task_term->Add(l).Set(value);
}

void Metrics::add_steps(std::uint64_t n) { f_->steps->Add({}).Increment(static_cast<double>(n)); }
void Metrics::add_images(std::uint64_t n) { f_->images->Add({}).Increment(static_cast<double>(n)); }
void Metrics::set_images_per_second(double v) { f_->images_per_second->Add({}).Set(v); }

void Metrics::observe_phase(StepPhase phase, double seconds) {
  f_->phase->Add({{"phase", phase_name(phase)}}, phase_buckets()).Observe(seconds);
}

void Metrics::add_rank_wait(int rank, double data_wait_seconds, double allreduce_wait_seconds) {
  const prometheus::Labels l{{"rank", std::to_string(rank)}};
  f_->rank_data_wait->Add(l).Increment(data_wait_seconds);
  f_->rank_allreduce_wait->Add(l).Increment(allreduce_wait_seconds);
}

void Metrics::set_grad_norm(double v) { f_->grad_norm->Add({}).Set(v); }
void Metrics::set_learning_rate(double v) { f_->learning_rate->Add({}).Set(v); }
void Metrics::set_loss_scale(double v) { f_->loss_scale->Add({}).Set(v); }
void Metrics::add_nonfinite_steps_skipped(std::uint64_t n) { f_->nonfinite->Add({}).Increment(static_cast<double>(n)); }

void Metrics::set_checkpoint(double unix_time_seconds, double write_seconds) {
  f_->checkpoint_time->Add({}).Set(unix_time_seconds);
  f_->checkpoint_write->Add({}).Set(write_seconds);
}

void Metrics::set_fid(const std::string& ema_rate, const std::string& extractor, std::int64_t samples, double fid) {
  if (extractor.empty()) throw std::invalid_argument("Metrics::set_fid: every FID must name its feature extractor");
  f_->fid->Add({{"ema_rate", ema_rate}, {"extractor", extractor}, {"samples", std::to_string(samples)}}).Set(fid);
}

void Metrics::set_bits_per_dim(const std::string& ema_rate, std::int64_t samples, double bpd) {
  f_->bpd->Add({{"ema_rate", ema_rate}, {"samples", std::to_string(samples)}}).Set(bpd);
}

void Metrics::set_world_size(int n) { f_->world_size->Add({}).Set(n); }

void Metrics::set_build_info(const BuildInfo& info) {
  f_->build_info->Add({{"version", info.version}, {"torch_version", info.torch_version}, {"device", info.device}}).Set(1);
}

void Metrics::set_gpu_memory_bytes(int device, double allocated_bytes) {
  f_->gpu_memory->Add({{"device", std::to_string(device)}}).Set(allocated_bytes);
}

void Metrics::set_gpu_memory(int device, const GpuMemory& memory) {
  const prometheus::Labels l{{"device", std::to_string(device)}};
  f_->gpu_memory->Add(l).Set(memory.allocated_bytes);
  f_->gpu_reserved->Add(l).Set(memory.reserved_bytes);
  f_->gpu_peak->Add(l).Set(memory.peak_allocated_bytes);
}

void Metrics::update_process_memory() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  double bytes = 0;
  if (statm >> pages_total >> pages_resident) bytes = static_cast<double>(pages_resident) * sysconf(_SC_PAGESIZE);
  f_->resident_memory->Add({}).Set(bytes);
}

void Metrics::set_exit_status(int status) { f_->exit_status->Add({}).Set(status); }

}  // namespace ddpm::monitoring
