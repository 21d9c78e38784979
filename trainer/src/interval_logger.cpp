// Rank 0's view of the run: one log line per interval (step, images, loss and the task's terms
// (mse/vb for diffusion) and their quartiles of t, grad norm, lr, images/s, time per phase), the
// JSON-lines log, the Prometheus metrics (exporter, Pushgateway, process and GPU memory) and a
// progress bar on a terminal.
#include "interval_logger.h"

#include <ATen/ATen.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#if DDPM_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "ddpm/monitoring/gpu_memory.h"

namespace ddpm::trainer::detail {

namespace {

using monitoring::StepPhase;

double mean_or_nan(double sum, int64_t n) { return n > 0 ? sum / static_cast<double>(n) : NAN; }

std::string run_id_of(const std::string& run_dir) {
  std::filesystem::path p(run_dir);
  if (p.filename().empty()) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() ? "ddpm" : name;
}

// A terminal on stdout, and not under a launcher (mpirun hands ranks a pseudo-terminal even when
// its own output is a pipe); DDPM_PROGRESS=1/0 forces it on/off.
bool wants_progress_bar() {
  if (const char* force = std::getenv("DDPM_PROGRESS")) return std::string(force) == "1";
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"}) {
    if (std::getenv(var)) return false;
  }
  return isatty(fileno(stdout)) != 0;
}

// Process resident memory and, on a CUDA device only, the caching allocator's allocated /
// reserved / peak bytes. A CPU run never calls into CUDA (no context is created).
void export_memory(monitoring::Metrics& metrics, const c10::Device& device) {
  metrics.update_process_memory();
  if (!device.is_cuda()) return;
#if DDPM_WITH_CUDA
  const int index = device.has_index() ? device.index() : c10::cuda::current_device();
  metrics.set_gpu_memory(index, monitoring::read_cuda_memory(index));
#endif
}

}  // namespace

std::string format_number(const char* spec, double v) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

void IntervalStats::add_terms(const at::Tensor& rows, int64_t T) {
  const at::Tensor r = rows.contiguous();
  const double* d = r.data_ptr<double>();
  for (int64_t i = 0; i < r.size(0); ++i) {
    const double t = d[4 * i], l = d[4 * i + 1], m = d[4 * i + 2], v = d[4 * i + 3];
    const int q = static_cast<int>(std::min<int64_t>(3, static_cast<int64_t>(t) * 4 / T));
    loss += l;
    mse += std::isfinite(m) ? m : 0.0;
    vb += std::isfinite(v) ? v : 0.0;
    q_loss[q] += l;
    q_mse[q] += std::isfinite(m) ? m : 0.0;
    q_vb[q] += std::isfinite(v) ? v : 0.0;
    ++q_count[q];
    ++samples;
  }
  if (r.size(0) > 0 && !std::isfinite(d[2])) mse = NAN;  // the loss type has no such term
  if (r.size(0) > 0 && !std::isfinite(d[3])) vb = NAN;
}

IntervalLogger::IntervalLogger(const TrainConfig& config, int rank, int world_size, const c10::Device& device,
                               std::function<void(const std::string&)> print)
    : config_(config), rank_(rank), world_(world_size), device_(device), print_(std::move(print)) {
  if (rank_ != 0) return;
  metrics_ = std::make_unique<monitoring::Metrics>(run_id_of(config_.run_dir));
  metrics_->set_world_size(world_);
  metrics_->set_build_info({DDPM_VERSION, DDPM_TORCH_VERSION, device_.is_cuda() ? "cuda" : "cpu"});
  if (!config_.pushgateway.empty()) {
    monitoring::PushgatewayOptions po;
    po.address = config_.pushgateway;
    push_ = std::make_unique<monitoring::Pushgateway>(po, *metrics_);
    if (push_->enabled()) this->print("pushgateway: " + push_->url());
  }
  exporter_ = std::make_unique<monitoring::MetricsExporter>(config_.metrics_addr, *metrics_);
  if (exporter_->enabled()) this->print("metrics: " + exporter_->url());
}

IntervalLogger::~IntervalLogger() = default;

void IntervalLogger::open(nlohmann::ordered_json first) {
  interval_ = IntervalStats{};
  if (rank_ != 0) return;
  tty_ = !print_ && wants_progress_bar();
  log_ = std::make_unique<RunLog>((std::filesystem::path(config_.run_dir) / "log.jsonl").string());
  log_->write(std::move(first));
}

void IntervalLogger::print(const std::string& line) const {
  if (rank_ != 0) return;
  if (print_) return print_(line);
  std::cout << (tty_ ? "\r\033[K" : "") << line << std::endl;
}

void IntervalLogger::event(const nlohmann::ordered_json& record) const {
  if (log_) log_->write(record);
}

void IntervalLogger::record(const at::Tensor& rows, int64_t num_timesteps, bool stepped, double grad_norm,
                            const StepTimer::Seconds& phases) {
  interval_.add_terms(rows, num_timesteps);
  interval_.steps += stepped ? 1 : 0;
  interval_.skipped += stepped ? 0 : 1;
  interval_.images += config_.global_batch;
  interval_.grad_norm += std::isfinite(grad_norm) ? grad_norm : 0.0;
  for (size_t i = 0; i < phases.size(); ++i) interval_.phase[i] += phases[i];
  if (!metrics_) return;
  for (StepPhase p : monitoring::kStepPhases) metrics_->observe_phase(p, phases[static_cast<size_t>(p)]);
}

std::array<double, 2> IntervalLogger::waits() const {
  return {interval_.phase[static_cast<size_t>(StepPhase::kData)],
          interval_.phase[static_cast<size_t>(StepPhase::kAllreduceWait)]};
}

void IntervalLogger::log_interval(const RunPosition& at, const at::Tensor& waits) {
  const IntervalStats s = interval_;
  interval_ = IntervalStats{};
  if (rank_ != 0) return;
  const double wall = seconds_since(s.start) - s.paused;  // evaluations are not training
  Means m{mean_or_nan(s.loss, s.samples), mean_or_nan(s.mse, s.samples), mean_or_nan(s.vb, s.samples),
          mean_or_nan(s.grad_norm, std::max<int64_t>(1, s.steps)),
          wall > 0 ? static_cast<double>(s.images) / wall : 0.0, {}, {}, {}};
  for (int q = 0; q < 4; ++q) {
    m.loss_q[q] = mean_or_nan(s.q_loss[q], s.q_count[q]);
    m.mse_q[q] = std::isfinite(m.mse) ? mean_or_nan(s.q_mse[q], s.q_count[q]) : NAN;
    m.vb_q[q] = std::isfinite(m.vb) ? mean_or_nan(s.q_vb[q], s.q_count[q]) : NAN;
  }
  write_line(s, m, at);
  if (metrics_) export_metrics(s, m, at, waits);
}

namespace {
// A task's own term (not improved-diffusion's mse / vb): quartiles in the line, ddpm_task_term.
bool is_task_term(const std::string& name) { return !name.empty() && name != "mse" && name != "vb"; }
}  // namespace

void IntervalLogger::write_line(const IntervalStats& s, const Means& m, const RunPosition& at) {
  const auto f4 = [](double v) { return format_number("%.4f", v); };
  const double value[2] = {m.mse, m.vb};
  const std::array<double, 4>* value_q[2] = {&m.mse_q, &m.vb_q};
  std::string line = "step " + std::to_string(at.step) + "/" + std::to_string(at.total_steps) + " | img " +
                     std::to_string(at.images_seen) + " | loss " + f4(m.loss);
  nlohmann::ordered_json rec = {{"event", "train"}, {"step", at.step}, {"images", at.images_seen}, {"loss", m.loss}};
  for (int i = 0; i < 2; ++i) {
    if (term_names_[i].empty()) continue;
    line += " " + term_names_[i] + " " + f4(value[i]);
    rec[term_names_[i]] = value[i];
  }
  line += " |";
  for (int q = 0; q < 4; ++q) {
    const std::string k = std::to_string(q);
    rec["loss_q" + k] = m.loss_q[q];
    for (int i = 0; i < 2; ++i) {
      if (!term_names_[i].empty()) rec[term_names_[i] + "_q" + k] = (*value_q[i])[q];
    }
    line += " q" + k + " " + f4(m.loss_q[q]);
  }
  for (int i = 0; i < 2; ++i) {
    if (!is_task_term(term_names_[i])) continue;
    line += " | " + term_names_[i];
    for (int q = 0; q < 4; ++q) line += " q" + std::to_string(q) + " " + f4((*value_q[i])[q]);
  }
  line += " | grad " + format_number("%.3f", m.grad_norm) + " | lr " + format_number("%.2e", at.lr) + " | " +
          format_number("%.1f", m.images_per_second) + " img/s |";
  rec["grad_norm"] = m.grad_norm;
  rec["lr"] = at.lr;
  rec["images_per_second"] = m.images_per_second;
  rec["loss_scale"] = at.loss_scale;
  rec["nonfinite_skipped"] = s.skipped;
  const double nsteps = static_cast<double>(std::max<int64_t>(1, s.steps + s.skipped));
  for (StepPhase p : monitoring::kStepPhases) {
    const double per_step = s.phase[static_cast<size_t>(p)] / nsteps;
    line += std::string(" ") + monitoring::phase_short_name(p) + " " + format_number("%.3f", per_step) + "s";
    rec[std::string("time_") + monitoring::phase_name(p) + "_s"] = per_step;
  }
  if (at.fp16) line += " | scale " + format_number("%.0f", at.loss_scale);
  if (s.skipped > 0) line += " | skipped " + std::to_string(s.skipped);
  print(line);
  log_->write(rec);
}

void IntervalLogger::export_metrics(const IntervalStats& s, const Means& m, const RunPosition& at,
                                    const at::Tensor& waits) {
  const double value[2] = {m.mse, m.vb};
  const std::array<double, 4>* value_q[2] = {&m.mse_q, &m.vb_q};
  for (int i = 0; i < 2; ++i) {  // a task's own terms; mse and vb have their own families
    if (!is_task_term(term_names_[i])) continue;
    metrics_->set_task_term(term_names_[i], -1, value[i]);
    for (int q = 0; q < 4; ++q) metrics_->set_task_term(term_names_[i], q, (*value_q[i])[q]);
  }
  const bool mse = term_names_[0] == "mse", vb = term_names_[1] == "vb";  // NaN for a task without them
  for (int q = 0; q < 4; ++q) metrics_->set_loss_quartile(q, m.loss_q[q], mse ? m.mse_q[q] : NAN, vb ? m.vb_q[q] : NAN);
  metrics_->set_loss_terms(m.loss, mse ? m.mse : NAN, vb ? m.vb : NAN);
  metrics_->add_steps(static_cast<uint64_t>(s.steps));
  metrics_->add_images(static_cast<uint64_t>(s.images));
  metrics_->set_images_per_second(m.images_per_second);
  metrics_->set_grad_norm(m.grad_norm);
  metrics_->set_learning_rate(at.lr);
  metrics_->set_loss_scale(at.loss_scale);
  metrics_->add_nonfinite_steps_skipped(static_cast<uint64_t>(s.skipped));
  const at::Tensor w = waits.to(at::kDouble).contiguous();  // (W, 2)
  for (int r = 0; r < world_; ++r) metrics_->add_rank_wait(r, w[r][0].item<double>(), w[r][1].item<double>());
  export_memory(*metrics_, device_);
}

void IntervalLogger::progress(int64_t step, int64_t total_steps) const {
  if (rank_ != 0 || !tty_) return;
  const int width = 30;
  const double frac = total_steps > 0 ? static_cast<double>(step) / static_cast<double>(total_steps) : 1.0;
  const int filled = static_cast<int>(frac * width);
  std::cout << "\r[" << std::string(filled, '#') << std::string(width - filled, '.') << "] " << step << "/"
            << total_steps << std::flush;
}

void IntervalLogger::finish(int exit_code) {
  if (push_) push_->finish(exit_code);
}

}  // namespace ddpm::trainer::detail
