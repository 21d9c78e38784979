// The training loop: setup, run_loop -> run_step -> forward_backward -> optimize, the stop poll.
// Checkpoint state: train_state.cpp; logging and metrics: train_log.cpp; grids and FID:
// train_sample.cpp.
#include <torch/torch.h>

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/dist/module_sync.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/signals.h"
#include "trainer_impl.h"

namespace ddpm::trainer {
namespace detail {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// --- precision ------------------------------------------------------------------------------

AutocastScope::AutocastScope(std::optional<at::ScalarType> dtype) {
  if (!dtype) return;
  on_ = true;
  prev_ = at::autocast::is_autocast_enabled(at::kCUDA);
  prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, *dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!on_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, prev_);
  at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
}

// --- setup ----------------------------------------------------------------------------------

Trainer::Trainer(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device,
                 const TrainHooks& hooks)
    : config_(config), comm_(comm), device_(device), hooks_(hooks) {
  rank_ = comm_.rank();
  world_ = comm_.world_size();
  start_metrics();
  build();
  resume_or_init();
  // After the resume check: a config that was refused does not replace the saved one.
  if (rank_ == 0) write_config_file((std::filesystem::path(config_.run_dir) / "config.json").string(), config_);
}

Trainer::~Trainer() = default;

void Trainer::build() {
  plan_ = plan_batch(config_, world_);
  total_steps_ = total_steps(config_);
  const data::DatasetInfo info = data::ImageDataset::open(config_.data).info();
  image_channels_ = info.channels;
  image_height_ = info.height;
  image_width_ = info.width;
  has_labels_ = info.has_labels;
  const model::UNetOptions unet = make_unet_options(config_);
  if (unet.in_channels != info.channels) {
    throw std::invalid_argument("--data " + config_.data + ": images have " + std::to_string(info.channels) +
                                " channels but U-Net preset '" + config_.model + "' takes " +
                                std::to_string(unet.in_channels) + "; pick a --model for " +
                                std::to_string(info.channels) + " channels or override in_channels/out_channels");
  }
  if (config_.num_classes > 0 && !info.has_labels) {
    throw std::invalid_argument("--num-classes " + std::to_string(config_.num_classes) + ": " + config_.data +
                                " has no /labels; convert a labelled dataset or use --num-classes 0");
  }
  if (device_.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);  // shapes are fixed for the run: let cuDNN pick the fastest
    use_fp16_ = config_.precision == "fp16";
    use_bf16_ = config_.precision == "bf16";
  } else if (config_.precision != "fp32") {
    print("warning: --precision " + config_.precision + " applies on GPU only; training in fp32 on the CPU");
  }
  loss_scale_ = std::make_unique<DynamicLossScale>(use_fp16_, config_.loss_scale_init, config_.loss_scale_growth,
                                                   config_.loss_scale_backoff, config_.loss_scale_window);
  guard_ = std::make_unique<NonfiniteGuard>(config_.max_nonfinite_steps);
  lr_schedule_ = LrSchedule{config_.lr, config_.warmup_steps, parse_lr_decay(config_.lr_decay),
                            config_.lr_decay_steps > 0 ? config_.lr_decay_steps : total_steps_, config_.lr_min};

  torch::manual_seed(static_cast<uint64_t>(config_.seed));  // identical initial weights everywhere
  model_ = make_unet(config_);
  model_->to(device_);
  model_->train();
  for (const auto& item : model_->named_parameters()) {
    if (item.value().requires_grad()) params_.emplace_back(item.key(), item.value());
  }
  diffusion_ = std::make_unique<diffusion::GaussianDiffusion>(make_diffusion(config_));
  sampler_ = diffusion::create_named_schedule_sampler(config_.timestep_sampler, diffusion_->num_timesteps());

  data::ReaderOptions ro;
  ro.rank = rank_;
  ro.world_size = world_;
  ro.global_batch = plan_.global_batch;
  ro.seed = static_cast<uint64_t>(config_.seed);
  reader_ = std::make_unique<data::ShardedReader>(config_.data, ro);

  AdamWOptions adam;
  adam.lr = config_.lr;
  adam.beta1 = config_.adam_beta1;
  adam.beta2 = config_.adam_beta2;
  adam.eps = config_.adam_eps;
  adam.weight_decay = config_.weight_decay;
  optimizer_ = std::make_unique<FusedAdamW>(params_, adam);
  reducer_ = std::make_unique<dist::GradientReducer>(comm_, params_);
  store_ = std::make_unique<CheckpointStore>(config_.run_dir, RetentionPolicy{config_.keep_last, config_.keep_every});
}

// --- the loop -------------------------------------------------------------------------------

TrainOutcome Trainer::run_loop() {
  setup_monitoring();
  setup_fid();
  int exit_code = 0;
  int64_t saved_at = -1, sampled_at = -1, fid_at = -1, bpd_at = -1;
  interval_ = IntervalStats{};
  while (step_ < total_steps_) {
    const int64_t before = step_;
    run_step();
    const bool advanced = step_ > before;
    if (advanced && hooks_.after_step) hooks_.after_step(step_);
    const bool stop = stop_agreed();
    if (advanced && (step_ % config_.log_every == 0 || step_ == total_steps_)) log_step();
    if (advanced && step_ % config_.save_every == 0) {
      save_checkpoint();
      saved_at = step_;
    }
    if (advanced && config_.sample_every > 0 && step_ % config_.sample_every == 0) {
      write_sample_grid();
      sampled_at = step_;
    }
    if (advanced && config_.fid_every > 0 && step_ % config_.fid_every == 0) {
      evaluate_fid();
      fid_at = step_;
    }
    if (advanced && config_.bpd_every > 0 && step_ % config_.bpd_every == 0) {
      evaluate_training_bpd();
      bpd_at = step_;
    }
    if (rank_ == 0 && tty_) progress_bar();
    if (stop && step_ < total_steps_) {
      print("stop signal (" + std::string(signal_name(stop_signal())) + " on some rank): checkpointing at step " +
            std::to_string(step_) + ", exit code " + std::to_string(kRequeueExitCode) + " (requeue and resume)");
      exit_code = kRequeueExitCode;
      break;
    }
  }
  if (saved_at != step_ && (step_ > 0 || exit_code != 0)) save_checkpoint();
  if (exit_code == 0 && config_.sample_every > 0 && sampled_at != step_ && step_ > 0) write_sample_grid();
  if (exit_code == 0 && config_.fid_every > 0 && fid_at != step_ && step_ > 0) evaluate_fid();
  if (exit_code == 0 && config_.bpd_every > 0 && bpd_at != step_ && step_ > 0) evaluate_training_bpd();
  if (push_) push_->finish(exit_code);
  TrainOutcome out;
  out.exit_code = exit_code;
  out.step = step_;
  out.images_seen = images_seen_;
  out.resumed_from = resumed_from_;
  out.checkpoint = last_checkpoint_;
  return out;
}

void Trainer::run_step() {
  auto t0 = Clock::now();
  data::Batch batch = reader_->next();
  const double t_data = seconds_since(t0);

  t0 = Clock::now();
  StepTerms terms = forward_backward(batch);
  const double t_fb = seconds_since(t0);

  t0 = Clock::now();
  reducer_->finish();  // mean-over-ranks gradients in .grad
  const double t_ar = seconds_since(t0);

  t0 = Clock::now();
  const bool stepped = optimize();
  const double t_opt = seconds_since(t0);

  t0 = Clock::now();
  if (stepped) {
    std::vector<at::Tensor> tensors;
    for (const auto& [name, p] : params_) tensors.push_back(p);
    ema_->update(tensors, step_);
  }
  const double t_ema = seconds_since(t0);
  images_seen_ += plan_.global_batch;

  // Every rank's (t, loss, mse, vb): the sampler's history and the logged quartiles.
  std::vector<at::Tensor> parts = comm_.all_gather_v(to_comm(terms.rows));
  for (auto& p : parts) p = p.cpu();
  const at::Tensor rows = at::cat(parts, 0);  // (G, 4) float64
  const at::Tensor loss_col = rows.select(1, 1);
  if (at::isfinite(loss_col).all().item<bool>()) {
    sampler_->update_with_all_losses(rows.select(1, 0).to(at::kLong), loss_col);
  }
  interval_.add_terms(rows, diffusion_->num_timesteps());
  interval_.steps += stepped ? 1 : 0;
  interval_.skipped += stepped ? 0 : 1;
  interval_.images += plan_.global_batch;
  interval_.grad_norm += std::isfinite(last_grad_norm_) ? last_grad_norm_ : 0.0;
  const std::array<double, kNumPhases> phases = {t_data, t_fb, t_ar, t_opt, t_ema};
  for (int i = 0; i < kNumPhases; ++i) interval_.phase[i] += phases[i];
  if (metrics_) {
    for (int i = 0; i < kNumPhases; ++i) metrics_->observe_phase(static_cast<monitoring::StepPhase>(i), phases[i]);
  }
}

StepTerms Trainer::forward_backward(const data::Batch& batch) {
  optimizer_->zero_grad();
  const at::Tensor x = batch.images.to(device_);  // (B, C, H, W) in [-1, 1]
  const at::Tensor y = config_.num_classes > 0 ? batch.labels.to(device_) : at::Tensor();
  const int64_t mb = plan_.microbatch, n = plan_.num_microbatches;
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < n; ++i) {
    // All but the last microbatch only accumulate locally; the last backward all-reduces.
    std::optional<dist::NoSyncGuard> no_sync;
    if (i + 1 < n) no_sync.emplace(*reducer_);
    const at::Tensor xi = x.narrow(0, i * mb, mb);
    const at::Tensor yi = y.defined() ? y.narrow(0, i * mb, mb) : y;
    const at::Tensor loss = microbatch_loss(xi, yi, rows);
    // Mean over the per-rank batch (not improved-diffusion's sum over microbatches), times the
    // fp16 loss scale.
    (loss * (loss_scale_->scale() / static_cast<double>(n))).backward();
  }
  return StepTerms{at::cat(rows, 0)};
}

at::Tensor Trainer::microbatch_loss(const at::Tensor& x, const at::Tensor& y, std::vector<at::Tensor>& rows) {
  const int64_t n = x.size(0);
  const diffusion::TimestepSample ts = sampler_->sample(n, std::nullopt, device_);
  const at::Tensor noise = at::randn_like(x);  // (n, C, H, W)
  at::Tensor labels = y;
  if (labels.defined() && config_.label_dropout > 0) {
    // Classifier-free guidance: some labels become the null label num_classes.
    const at::Tensor drop = at::rand({n}, x.options()) < config_.label_dropout;
    labels = at::where(drop, at::full_like(labels, config_.num_classes), labels);
  }
  diffusion::LossTerms terms;
  {
    std::optional<at::ScalarType> dtype;
    if (use_fp16_) dtype = at::kHalf;
    if (use_bf16_) dtype = at::kBFloat16;
    AutocastScope autocast(dtype);
    terms = diffusion_->training_losses(model_fn(model_, labels), x, ts.t, noise);
  }
  const at::Tensor loss = (terms.loss.to(at::kFloat) * ts.weights).mean();
  auto col = [&](const at::Tensor& v) {
    return v.defined() ? v.detach().to(at::kDouble).cpu() : at::full({n}, NAN, at::kDouble);
  };
  rows.push_back(at::stack({ts.t.to(at::kDouble).cpu(), col(terms.loss), col(terms.mse), col(terms.vb)}, 1));
  return loss;
}

bool Trainer::optimize() {
  std::vector<at::Tensor> grads;
  for (const auto& [name, p] : params_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  if (loss_scale_->scale() != 1.0) at::_foreach_div_(grads, at::Scalar(loss_scale_->scale()));
  last_grad_norm_ = grad_norm_and_clip(grads);
  const bool finite = std::isfinite(last_grad_norm_);  // the same on every rank: gradients are averaged
  loss_scale_->update(finite);
  if (guard_->record(finite, step_ + 1)) {  // throws after max_nonfinite_steps in a row
    optimizer_->zero_grad();
    print("warning: non-finite gradients at step " + std::to_string(step_ + 1) + " (" +
          std::to_string(guard_->in_row()) + " in a row); step skipped");
    return false;
  }
  lr_ = learning_rate(lr_schedule_, step_);
  optimizer_->set_lr(lr_);
  optimizer_->step();
  ++step_;
  return true;
}

double Trainer::grad_norm_and_clip(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  const double norm = at::stack(norms).to(at::kDouble).norm().item<double>();
  if (config_.grad_clip > 0 && std::isfinite(norm)) {
    const double coef = config_.grad_clip / (norm + 1e-6);  // as torch.nn.utils.clip_grad_norm_
    if (coef < 1.0) at::_foreach_mul_(grads, at::Scalar(coef));
  }
  return norm;
}

bool Trainer::stop_agreed() {
  at::Tensor flag = to_comm(at::full({1}, stop_requested() ? 1.0f : 0.0f));
  comm_.all_reduce(flag, dist::ReduceOp::kSum);
  return flag.item<float>() > 0.0f;
}

}  // namespace detail

TrainOutcome train(const TrainConfig& config, dist::Communicator& comm, const c10::Device& device,
                   const TrainHooks& hooks) {
  std::optional<StopSignalHandlers> handlers;
  if (hooks.install_signal_handlers) {
    clear_stop_request();
    handlers.emplace();
  }
  if (comm.rank() == 0) std::filesystem::create_directories(config.run_dir);
  comm.barrier();
  detail::Trainer trainer(config, comm, device, hooks);
  return trainer.run_loop();
}

}  // namespace ddpm::trainer
