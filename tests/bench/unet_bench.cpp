// ddpm_bench_unet: U-Net training throughput (forward + backward + Adam step, images/s) and
// inference throughput per preset, with the analytic forward GFLOP per image. Prints, asserts nothing.
//   ddpm_bench_unet [--preset tiny --preset fmnist-small] [--batch 32] [--steps 5] [--threads 2]
//                   [--size 28] [--set key=value ...] [--channels-last] [--bf16] [--device cuda]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <CLI/CLI.hpp>
#include <ATen/Context.h>

#include <chrono>
#include <cstdio>

#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/adamw.h"

namespace {
using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<std::string> presets{"tiny", "fmnist-small"};
  std::vector<std::string> sets;
  int64_t batch = 32, steps = 5, threads = 2, size = 0;
  bool channels_last = false, bf16 = false;
  std::string device = "cpu";
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void bench(const std::string& preset, const Args& a) {
  ddpm::model::UNetOptions o = ddpm::model::unet_preset(preset);
  for (const auto& kv : a.sets) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("--set expects key=value, got " + kv);
    ddpm::model::set_unet_option(o, kv.substr(0, eq), kv.substr(eq + 1));
  }
  const at::Device dev(a.device);
  const int64_t size = a.size > 0 ? a.size : o.image_size;
  const auto mf = a.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  ddpm::model::UNet net(o);
  net->to(dev);
  if (a.channels_last) {
    for (auto& p : net->parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(mf));
    }
  }
  if (dev.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);  // as ddpm_train does
  ddpm::model::TensorDict named;
  for (const auto& kv : net->named_parameters()) named.emplace_back(kv.key(), kv.value());
  ddpm::trainer::FusedAdamW opt(named, ddpm::trainer::AdamWOptions{});  // the trainer's optimizer
  const auto fopt = at::TensorOptions().device(dev);
  const at::Tensor x = at::randn({a.batch, o.in_channels, size, size}, fopt).contiguous(mf);
  const at::Tensor t = at::randint(0, 1000, {a.batch}, fopt.dtype(at::kLong));
  const at::Tensor target = at::randn({a.batch, o.output_channels(), size, size}, fopt);
  const auto type = dev.type();
  auto step = [&] {
    at::autocast::set_autocast_enabled(type, a.bf16);
    if (a.bf16) at::autocast::set_autocast_dtype(type, at::kBFloat16);
    const at::Tensor loss = (net->forward(x, t).to(at::kFloat) - target).pow(2).mean();
    at::autocast::set_autocast_enabled(type, false);
    at::autocast::clear_cache();
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  auto sync = [&] { (void)net->parameters()[0].sum().item<float>(); };
  net->train();
  for (int i = 0; i < (dev.is_cuda() ? 3 : 1); ++i) step();  // warm-up (cuDNN picks algorithms on CUDA)
  sync();
  auto t0 = Clock::now();
  for (int64_t i = 0; i < a.steps; ++i) step();
  sync();
  const double train_ips = a.batch * a.steps / seconds_since(t0);
  net->eval();
  double infer_ips = 0;
  {
    at::NoGradGuard no_grad;
    at::autocast::set_autocast_enabled(type, a.bf16);
    net->forward(x, t);
    sync();
    t0 = Clock::now();
    for (int64_t i = 0; i < a.steps; ++i) net->forward(x, t);
    sync();
    infer_ips = a.batch * a.steps / seconds_since(t0);
    at::autocast::set_autocast_enabled(type, false);
  }
  const double gflop = net->forward_flops(size, size) / 1e9;
  std::printf("%-20s %3lldpx batch %3lld params %11lld fwd GFLOP/img %8.4f | train %9.1f img/s (%7.1f GFLOP/s at "
              "3x fwd) | forward %9.1f img/s\n",
              preset.c_str(), static_cast<long long>(size), static_cast<long long>(a.batch),
              static_cast<long long>(net->num_parameters()), gflop, train_ips, 3 * gflop * train_ips, infer_ips);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"ddpm_bench_unet: U-Net training and inference images/s per preset"};
  app.add_option("--preset", a.presets, "presets to measure (repeat)")->capture_default_str();
  app.add_option("--set", a.sets, "override an option of every preset: key=value (repeat)");
  app.add_option("--batch", a.batch, "images per step")->capture_default_str();
  app.add_option("--steps", a.steps, "timed steps after the warm-up steps (1 on CPU, 3 on CUDA)")->capture_default_str();
  app.add_option("--threads", a.threads, "intra-op CPU threads")->capture_default_str();
  app.add_option("--size", a.size, "image size (default: the preset's image_size)");
  app.add_flag("--channels-last", a.channels_last, "channels_last memory format");
  app.add_flag("--bf16", a.bf16, "bf16 autocast");
  app.add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(static_cast<int>(a.threads));
  std::printf("threads %d device %s%s%s\n", at::get_num_threads(), a.device.c_str(),
              a.channels_last ? " channels_last" : "", a.bf16 ? " bf16-autocast" : "");
  try {
    for (const auto& p : a.presets) bench(p, a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_bench_unet: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
