// Rank 0's view of the run: one log line per interval (step, images, loss/mse/vb and their
// quartiles of t, grad norm, lr, images/s, time per phase), the JSON-lines log, the Prometheus
// metrics (exporter, Pushgateway) and a progress bar when stdout is a terminal.
#include <ATen/ATen.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "trainer_impl.h"

namespace ddpm::trainer::detail {

namespace {

const char* kPhaseKeys[kNumPhases] = {"data", "forward_backward", "allreduce_wait", "optimizer", "ema"};
const char* kPhaseShort[kNumPhases] = {"data", "fb", "ar", "opt", "ema"};

std::string fmt(const char* spec, double v) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

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

}  // namespace

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

void Trainer::print(const std::string& line) const {
  if (rank_ != 0) return;
  if (hooks_.print) return hooks_.print(line);
  std::cout << (tty_ ? "\r\033[K" : "") << line << std::endl;
}

void Trainer::progress_bar() const {
  const int width = 30;
  const double frac = total_steps_ > 0 ? static_cast<double>(step_) / static_cast<double>(total_steps_) : 1.0;
  const int filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  std::cout << "\r[" << bar << "] " << step_ << "/" << total_steps_ << std::flush;
}

// First thing the Trainer does (rank 0): the metrics, then the Pushgateway (so a run that fails
// from here on, even while building the model or resuming, still pushes ddpm_exit_status 1 from
// the Pushgateway's destructor), then the exporter.
void Trainer::start_metrics() {
  if (rank_ != 0) return;
  metrics_ = std::make_unique<monitoring::Metrics>(run_id_of(config_.run_dir));
  metrics_->set_world_size(world_);
  metrics_->set_build_info({DDPM_VERSION, DDPM_TORCH_VERSION, device_.is_cuda() ? "cuda" : "cpu"});
  if (!config_.pushgateway.empty()) {
    monitoring::PushgatewayOptions po;
    po.address = config_.pushgateway;
    push_ = std::make_unique<monitoring::Pushgateway>(po, *metrics_);
    if (push_->enabled()) print("pushgateway: " + push_->url());
  }
  exporter_ = std::make_unique<monitoring::MetricsExporter>(config_.metrics_addr, *metrics_);
  if (exporter_->enabled()) print("metrics: " + exporter_->url());
}

void Trainer::setup_monitoring() {
  run_start_ = Clock::now();
  if (rank_ != 0) return;
  tty_ = !hooks_.print && wants_progress_bar();
  log_ = std::make_unique<RunLog>((std::filesystem::path(config_.run_dir) / "log.jsonl").string());
  log_->write({{"event", resumed_from_ >= 0 ? "resume" : "start"}, {"step", step_}, {"world_size", world_},
               {"global_batch", plan_.global_batch}, {"total_steps", total_steps_}});
}

void Trainer::log_step() {
  // Per-rank waiting (data, all-reduce), gathered so rank 0 can export stragglers.
  const at::Tensor mine = at::tensor({interval_.phase[kData], interval_.phase[kAllreduceWait]}, at::kDouble);
  const at::Tensor waits = comm_.all_gather(to_comm(mine)).cpu();  // (W, 2)
  const IntervalStats s = interval_;
  interval_ = IntervalStats{};
  if (rank_ != 0) return;

  const double wall = seconds_since(s.start) - s.paused;  // FID and grids are not training
  const double ips = wall > 0 ? static_cast<double>(s.images) / wall : 0.0;
  const int64_t nsteps = std::max<int64_t>(1, s.steps + s.skipped);
  const double loss = mean_or_nan(s.loss, s.samples), mse = mean_or_nan(s.mse, s.samples);
  const double vb = mean_or_nan(s.vb, s.samples), gnorm = mean_or_nan(s.grad_norm, std::max<int64_t>(1, s.steps));

  std::string line = "step " + std::to_string(step_) + "/" + std::to_string(total_steps_) + " | img " +
                     std::to_string(images_seen_) + " | loss " + fmt("%.4f", loss) + " mse " + fmt("%.4f", mse) +
                     " vb " + fmt("%.4f", vb) + " |";
  nlohmann::ordered_json rec = {{"event", "train"}, {"step", step_}, {"images", images_seen_},
                                {"loss", loss}, {"mse", mse}, {"vb", vb}};
  for (int q = 0; q < 4; ++q) {
    const double lq = mean_or_nan(s.q_loss[q], s.q_count[q]);
    line += " q" + std::to_string(q) + " " + fmt("%.4f", lq);
    rec["loss_q" + std::to_string(q)] = lq;
    rec["mse_q" + std::to_string(q)] = std::isfinite(mse) ? mean_or_nan(s.q_mse[q], s.q_count[q]) : NAN;
    rec["vb_q" + std::to_string(q)] = std::isfinite(vb) ? mean_or_nan(s.q_vb[q], s.q_count[q]) : NAN;
    if (metrics_) {
      metrics_->set_loss_quartile(q, lq, rec["mse_q" + std::to_string(q)].get<double>(),
                                  rec["vb_q" + std::to_string(q)].get<double>());
    }
  }
  line += " | grad " + fmt("%.3f", gnorm) + " | lr " + fmt("%.2e", lr_) + " | " + fmt("%.1f", ips) + " img/s |";
  rec["grad_norm"] = gnorm;
  rec["lr"] = lr_;
  rec["images_per_second"] = ips;
  rec["loss_scale"] = loss_scale_->scale();
  rec["nonfinite_skipped"] = s.skipped;
  for (int i = 0; i < kNumPhases; ++i) {
    const double per_step = s.phase[i] / static_cast<double>(nsteps);
    line += std::string(" ") + kPhaseShort[i] + " " + fmt("%.3f", per_step) + "s";
    rec[std::string("time_") + kPhaseKeys[i] + "_s"] = per_step;
  }
  if (use_fp16_) line += " | scale " + fmt("%.0f", loss_scale_->scale());
  if (s.skipped > 0) line += " | skipped " + std::to_string(s.skipped);
  print(line);
  log_->write(rec);

  if (!metrics_) return;
  metrics_->set_loss_terms(loss, mse, vb);
  metrics_->add_steps(static_cast<uint64_t>(s.steps));
  metrics_->add_images(static_cast<uint64_t>(s.images));
  metrics_->set_images_per_second(ips);
  metrics_->set_grad_norm(gnorm);
  metrics_->set_learning_rate(lr_);
  metrics_->set_loss_scale(loss_scale_->scale());
  metrics_->add_nonfinite_steps_skipped(static_cast<uint64_t>(s.skipped));
  for (int r = 0; r < world_; ++r) {
    metrics_->add_rank_wait(r, waits[r][0].item<double>(), waits[r][1].item<double>());
  }
  export_memory(*metrics_, device_);
}

}  // namespace ddpm::trainer::detail
