// ddpm_bench_step: the C++ side of the side-by-side benchmark against PyTorch eager
// (tests/bench/vs_eager.py starts it and talks to it; see tests/bench/README.md). It takes one
// training step the way ddpm::trainer's Trainer takes it at one rank (train_loop.cpp: run_step),
// from the trainer's public parts:
//   timestep sample (the config's sampler) and noise -> GaussianDiffusion::training_losses under
//   autocast (bf16/fp16 on CUDA) -> mean of the weighted per-image losses -> backward, whose hooks
//   fill the GradientReducer's buckets (a 1-rank SingleProcessCommunicator) -> finish -> the
//   OptimizerStep (grad norm, clipping, LR schedule, fused AdamW) -> EmaSet update.
// Not timed, on either side: reading the data (one fixed batch x is reused), the per-step gather
// of the loss rows for the log and the importance sampler's history (Trainer::record), logging.
//
// Start-up writes into --dir: config.json (the resolved TrainConfig, the U-Net options, the image
// size), weights.pt (the initial weights: the trainer's initialisation plus 0.02 N(0, 1) on every
// parameter, so the zero-initialised convolutions take part in the check) and inputs.pt (x, t,
// noise of the check step); then one JSON line {"ready": ...} on stdout. Then commands on stdin,
// one per line, each answered by one JSON line on stdout (everything else goes to stderr):
//   check    the check step in eval mode (no dropout) on inputs.pt: loss1 from the initial
//            weights, one full step, loss2 on the same inputs after it; grad_norm before clipping
//   time N   N training steps (train mode, fresh t and noise each), synchronised:
//            {"seconds": s, "cpu_seconds": CPU time of the process (all threads),
//             "minor_faults": page faults of the process during them}
//   profile N PATH   N such steps under torch's profiler (CPU ops, and CUDA kernels on a GPU),
//            written to PATH as a Chrome trace: {"trace": PATH}
//   quit
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <ATen/Context.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/gradient_reducer.h"
#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/autocast.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/host_memory.h"
#include "ddpm/trainer/optimizer_step.h"

namespace {

using Clock = std::chrono::steady_clock;
using ddpm::trainer::Json;

struct Args {
  std::string preset = "tiny", device = "cpu", precision = "fp32", dir, malloc = "retain", comm = "auto";
  std::vector<std::string> sets;
  int64_t batch = 32, threads = 2, size = 0, seed = 0;
};

// The training recipe of each U-Net preset: the trainer preset of the same name, or fmnist-demo's
// (the Improved-DDPM hybrid loss) for the small models.
ddpm::trainer::TrainConfig recipe(const Args& a) {
  std::string preset;
  if (a.preset == "ddpm-cifar10" || a.preset == "improved-cifar10") preset = a.preset;
  else if (a.preset == "fmnist-small" || a.preset == "tiny") preset = "fmnist-demo";
  else throw std::invalid_argument("--preset " + a.preset + ": known presets: tiny, fmnist-small, ddpm-cifar10, improved-cifar10");
  ddpm::trainer::TrainConfig c = ddpm::trainer::config_from_json(ddpm::trainer::preset_json(preset), "preset " + preset);
  c.model = a.preset;
  c.precision = a.precision;
  c.seed = a.seed;
  for (const auto& kv : a.sets) {  // --set key=value: value as JSON when it parses, else as a string
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("--set expects key=value (a TrainConfig key), got " + kv);
    const std::string value = kv.substr(eq + 1);
    Json v = Json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (v.is_discarded()) v = value;
    ddpm::trainer::apply_json(c, Json{{kv.substr(0, eq), v}}, "--set " + kv);
  }
  return c;
}

Json unet_json(const ddpm::model::UNetOptions& o) {
  return Json{{"in_channels", o.in_channels},
              {"model_channels", o.model_channels},
              {"out_channels", o.out_channels},
              {"num_res_blocks", o.num_res_blocks},
              {"attention_resolutions", o.attention_resolutions},
              {"dropout", o.dropout},
              {"channel_mult", o.channel_mult},
              {"conv_resample", o.conv_resample},
              {"num_classes", o.num_classes ? Json(*o.num_classes) : Json(nullptr)},
              {"num_heads", o.num_heads},
              {"num_head_channels", o.num_head_channels},
              {"use_scale_shift_norm", o.use_scale_shift_norm},
              {"resblock_updown", o.resblock_updown},
              {"learn_sigma", o.learn_sigma},
              {"image_size", o.image_size}};
}

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

class StepBench {
 public:
  StepBench(const Args& a, ddpm::dist::Communicator& comm) : config_(recipe(a)), device_(a.device), comm_(comm) {
    if (device_.is_cuda()) {
      at::globalContext().setBenchmarkCuDNN(true);  // as the trainer
      if (config_.precision == "bf16") autocast_ = at::kBFloat16;
      if (config_.precision == "fp16") throw std::invalid_argument("--precision fp16: not benchmarked (use fp32 or bf16)");
    } else if (config_.precision != "fp32") {
      throw std::invalid_argument("--precision " + config_.precision + ": bf16 autocast is a CUDA mode; use fp32 on the CPU");
    }
    torch::manual_seed(static_cast<uint64_t>(config_.seed));
    unet_ = ddpm::trainer::make_unet(config_);
    {
      at::NoGradGuard no_grad;
      for (auto& p : unet_->parameters()) p.add_(at::randn_like(p), 0.02);
    }
    size_ = a.size > 0 ? a.size : (a.preset == "fmnist-small" ? 28 : unet_->options().image_size);
    std::filesystem::create_directories(a.dir);
    ddpm::model::save_unet_weights(unet_, a.dir + "/weights.pt");
    unet_->to(device_);
    for (const auto& item : unet_->named_parameters()) {
      params_.emplace_back(item.key(), item.value());
      tensors_.push_back(item.value());
    }
    diffusion_ = std::make_unique<ddpm::diffusion::GaussianDiffusion>(ddpm::trainer::make_diffusion(config_));
    sampler_ = ddpm::diffusion::create_named_schedule_sampler(config_.timestep_sampler, diffusion_->num_timesteps());
    optimizer_ = std::make_unique<ddpm::trainer::OptimizerStep>(config_, params_, false);
    ema_ = std::make_unique<ddpm::trainer::EmaSet>(config_.ema_rates, config_.ema_warmup, params_);
    reducer_ = std::make_unique<ddpm::dist::GradientReducer>(comm_, params_);

    const int64_t C = unet_->options().in_channels, T = diffusion_->num_timesteps();
    x_ = (at::rand({a.batch, C, size_, size_}) * 2 - 1).to(device_);  // (B, C, H, W) in [-1, 1]
    check_t_ = at::randint(0, T, {a.batch}, at::kLong);                // (B)
    check_noise_ = at::randn({a.batch, C, size_, size_});              // (B, C, H, W)
    ddpm::model::save_tensor_dict(a.dir + "/inputs.pt", {{"x", x_.cpu()}, {"t", check_t_}, {"noise", check_noise_}});
    check_t_ = check_t_.to(device_);
    check_noise_ = check_noise_.to(device_);
    std::ofstream(a.dir + "/config.json") << Json{{"train", ddpm::trainer::to_json(config_)},
                                                  {"unet", unet_json(unet_->options())},
                                                  {"image_size", size_},
                                                  {"batch", a.batch}}.dump(2);
  }

  Json ready() const {
    return Json{{"ready", true},
                {"params", unet_->num_parameters()},
                {"fwd_flop_per_image", unet_->forward_flops(size_, size_)},
                {"loss_type", config_.loss_type},
                {"var_type", config_.var_type},
                {"timesteps", diffusion_->num_timesteps()}};
  }

  Json check() {
    unet_->eval();  // no dropout: both sides must see the same network
    const double loss1 = step(check_t_, check_noise_, at::ones({x_.size(0)}, x_.options()));
    double loss2 = 0;
    {
      at::NoGradGuard no_grad;
      loss2 = loss(check_t_, check_noise_, at::ones({x_.size(0)}, x_.options())).item<double>();
    }
    unet_->train();
    return Json{{"loss1", loss1}, {"loss2", loss2}, {"grad_norm", optimizer_->grad_norm()}, {"lr", optimizer_->lr()}};
  }

  Json time(int64_t n) {
    unet_->train();
    sync();
    const long faults0 = minor_faults();
    const double cpu0 = cpu_seconds();
    const auto t0 = Clock::now();
    steps(n);
    sync();
    return Json{{"seconds", std::chrono::duration<double>(Clock::now() - t0).count()},
                {"cpu_seconds", cpu_seconds() - cpu0},
                {"steps", n},
                {"minor_faults", minor_faults() - faults0}};
  }

  Json profile(int64_t n, const std::string& path) {
    namespace prof = torch::profiler::impl;
    unet_->train();
    sync();
    const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
    std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
    if (device_.is_cuda()) activities.insert(prof::ActivityType::CUDA);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    steps(n);
    sync();
    torch::autograd::profiler::disableProfiler()->save(path);
    return Json{{"trace", path}};
  }

 private:
  // The mean over the batch of the weighted per-image losses, (); as Trainer::microbatch_loss.
  at::Tensor loss(const at::Tensor& t, const at::Tensor& noise, const at::Tensor& weights) {
    ddpm::diffusion::LossTerms terms;
    {
      ddpm::trainer::AutocastScope autocast(autocast_);
      terms = diffusion_->training_losses(ddpm::trainer::model_fn(unet_), x_, t, noise);
    }
    return (terms.loss.to(at::kFloat) * weights).mean();
  }

  void steps(int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const ddpm::diffusion::TimestepSample ts = sampler_->sample(x_.size(0), std::nullopt, device_);
      step(ts.t, at::randn_like(x_), ts.weights, /*read=*/false);
    }
  }

  // One full step; returns the loss only when asked (reading it is a host sync).
  double step(const at::Tensor& t, const at::Tensor& noise, const at::Tensor& weights, bool read = true) {
    optimizer_->zero_grad();
    const at::Tensor l = loss(t, noise, weights);
    l.backward();
    reducer_->finish();
    if (optimizer_->step(step_)) ++step_;
    ema_->update(tensors_, step_);
    return read ? l.item<double>() : 0.0;
  }

  void sync() const { (void)tensors_.front().sum().item<float>(); }

  ddpm::trainer::TrainConfig config_;
  c10::Device device_;
  ddpm::dist::Communicator& comm_;
  std::optional<at::ScalarType> autocast_;
  int64_t size_ = 0, step_ = 0;
  ddpm::model::UNet unet_{nullptr};
  ddpm::model::TensorDict params_;
  std::vector<at::Tensor> tensors_;
  std::unique_ptr<ddpm::diffusion::GaussianDiffusion> diffusion_;
  std::unique_ptr<ddpm::diffusion::TimestepSampler> sampler_;
  std::unique_ptr<ddpm::trainer::OptimizerStep> optimizer_;
  std::unique_ptr<ddpm::trainer::EmaSet> ema_;
  std::unique_ptr<ddpm::dist::GradientReducer> reducer_;
  at::Tensor x_, check_t_, check_noise_;
};

void answer(const Json& j) {
  std::cout << j.dump() << std::endl;  // one line, flushed: the driver waits for it
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"ddpm_bench_step: the C++ training step of tests/bench/vs_eager.py (commands on stdin: check, time N, profile N PATH, quit)"};
  app.add_option("--preset", a.preset, "U-Net preset: tiny, fmnist-small, ddpm-cifar10, improved-cifar10")->capture_default_str();
  app.add_option("--set", a.sets, "override a TrainConfig key of the recipe: key=value (repeat)");
  app.add_option("--batch", a.batch, "images per step")->capture_default_str();
  app.add_option("--size", a.size, "image size (default: 28 for fmnist-small, else the preset's)");
  app.add_option("--threads", a.threads, "intra-op CPU threads (at::set_num_threads)")->capture_default_str();
  app.add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  app.add_option("--precision", a.precision, "fp32, or bf16 (autocast, CUDA only)")->capture_default_str();
  app.add_option("--seed", a.seed, "seed of the weights and of the check step's inputs")->capture_default_str();
  app.add_option("--dir", a.dir, "folder for config.json, weights.pt, inputs.pt")->required();
  app.add_option("--comm", a.comm, "communicator of the 1-rank all-reduce: auto (as ddpm_train: NCCL on a GPU, "
                 "single-process on the CPU), single, nccl, mpi")->capture_default_str();
  app.add_option("--malloc", a.malloc, "retain: ddpm_train's host allocator setting (retain_freed_host_memory); "
                 "default: glibc's defaults")->check(CLI::IsMember({"retain", "default"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (a.malloc == "retain") ddpm::trainer::retain_freed_host_memory();  // as ddpm_train
    at::set_num_threads(static_cast<int>(a.threads));
    if (a.device.rfind("cuda", 0) == 0 && !at::hasCUDA()) {
      throw std::invalid_argument("--device " + a.device + ": no CUDA device on this machine (at::hasCUDA() is false); "
                                  "run the GPU mode on a GPU machine or use --device cpu");
    }
    ddpm::dist::MpiRuntime mpi(&argc, &argv);  // a singleton world of 1 rank, as a plain ddpm_train run
    const bool cpu = a.device.rfind("cuda", 0) != 0;
    const std::unique_ptr<ddpm::dist::Communicator> comm = ddpm::dist::make_communicator(
        mpi.context(), ddpm::dist::parse_backend(a.comm == "auto" && cpu ? "single" : a.comm));
    StepBench bench(a, *comm);
    Json ready = bench.ready();
    ready["comm"] = comm->backend();
    answer(ready);
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line == "quit") break;
      if (line == "check") answer(bench.check());
      else if (line.rfind("time ", 0) == 0) answer(bench.time(std::stoll(line.substr(5))));
      else if (line.rfind("profile ", 0) == 0) {
        const auto space = line.find(' ', 8);
        if (space == std::string::npos) throw std::invalid_argument("profile expects N PATH, got '" + line + "'");
        answer(bench.profile(std::stoll(line.substr(8, space - 8)), line.substr(space + 1)));
      } else {
        throw std::invalid_argument("unknown command '" + line + "' (check, time N, profile N PATH, quit)");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_bench_step: error: %s\n", e.what());
    answer(Json{{"error", e.what()}});
    return 1;
  }
  return 0;
}
