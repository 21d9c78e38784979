// ddpm_eval: bits/dim of a checkpoint's model (raw or EMA weights) on a test HDF5 set, the full
// T-step variational bound (calc_bpd_loop) split across ranks and all-reduced; rank 0 prints the
// total, the prior term and vb / mse per quartile of t, and writes a JSON summary.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"

namespace {

struct Args {
  std::string checkpoint, ema, data, out_json;
  int64_t num_samples = 0, batch_size = 8;
  bool clip_denoised = true;
  uint64_t seed = 0;
};

nlohmann::ordered_json summary_json(const Args& a, const ddpm::trainer::LoadedModel& m,
                                    const ddpm::trainer::BpdSummary& s, double seconds, int ranks) {
  nlohmann::ordered_json j;
  j["checkpoint"] = m.checkpoint;
  j["step"] = m.step;
  j["weights"] = m.ema_rate ? "ema_" + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model");
  j["data"] = a.data;
  j["count"] = s.count;
  j["num_timesteps"] = s.num_timesteps;
  j["clip_denoised"] = a.clip_denoised;
  j["seed"] = a.seed;
  j["total_bpd"] = s.total_bpd;
  j["prior_bpd"] = s.prior_bpd;
  j["vb_q"] = std::vector<double>(s.vb_q, s.vb_q + 4);
  j["mse_q"] = std::vector<double>(s.mse_q, s.mse_q + 4);
  j["xstart_mse_q"] = std::vector<double>(s.xstart_mse_q, s.xstart_mse_q + 4);
  j["vb"] = s.vb;
  j["mse"] = s.mse;
  j["xstart_mse"] = s.xstart_mse;
  j["ranks"] = ranks;
  j["seconds"] = seconds;
  return j;
}

int run(const Args& a, ddpm::dist::Communicator& comm, const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  ddpm::trainer::LoadedModel m = ddpm::trainer::load_model(a.checkpoint, a.ema, ctx.device());
  const auto diffusion = ddpm::trainer::make_diffusion(m.config);
  const auto ds = ddpm::data::ImageDataset::open(a.data);
  const auto& info = ds.info();
  if (info.channels != m.unet->options().in_channels) {
    throw std::invalid_argument("--data " + a.data + ": images have " + std::to_string(info.channels) +
                                " channels, the model takes " + std::to_string(m.unet->options().in_channels));
  }
  const int64_t count = a.num_samples > 0 ? std::min(a.num_samples, info.count) : info.count;
  const auto [begin, end] = ddpm::trainer::rank_range(count, comm.rank(), comm.world_size());
  if (comm.rank() == 0) {
    std::cout << "ddpm_eval: " << m.checkpoint << " (step " << m.step << ", weights "
              << (m.ema_rate ? "EMA " + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model.pt")) << "), " << count
              << " images of " << a.data << ", T = " << diffusion.num_timesteps() << ", " << comm.world_size()
              << " rank(s)" << std::endl;
  }
  const at::Tensor images = end > begin ? ds.read_images(begin, end - begin)  // (n, H, W, C) uint8
                                        : at::empty({0, info.height, info.width, info.channels}, at::kByte);
  const auto progress = [&](int64_t done, int64_t total) {
    if (comm.rank() != 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("batch %lld/%lld on rank 0, %.1f s\n", static_cast<long long>(done), static_cast<long long>(total), s);
    std::fflush(stdout);
  };
  const auto s = ddpm::trainer::evaluate_bpd(m.unet, diffusion, images, begin, a.batch_size, a.clip_denoised, a.seed,
                                             comm, ctx.device(), progress);
  if (comm.rank() != 0) return 0;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("bits/dim: total %.6f  prior %.6f  (%lld images, T = %lld, %.1f s)\n", s.total_bpd, s.prior_bpd,
              static_cast<long long>(s.count), static_cast<long long>(s.num_timesteps), seconds);
  for (int q = 0; q < 4; ++q) {
    std::printf("  t quartile %d: vb %.6f  mse %.6f  xstart_mse %.6f\n", q, s.vb_q[q], s.mse_q[q], s.xstart_mse_q[q]);
  }
  if (!a.out_json.empty()) {
    std::ofstream f(a.out_json);
    f << summary_json(a, m, s, seconds, comm.world_size()).dump(2) << "\n";
    if (!f) throw std::runtime_error("--out-json " + a.out_json + ": cannot write it");
    std::cout << "wrote " << a.out_json << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  Args a;
  CLI::App app{"ddpm_eval: bits/dim of a ddpm checkpoint on a test HDF5 set (full T-step bound)"};
  app.add_option("--checkpoint", a.checkpoint, "run dir (its newest valid checkpoint) or checkpoint folder")->required();
  app.add_option("--ema", a.ema, "EMA rate, or none for model.pt (default: the first EMA)");
  app.add_option("--data", a.data, "test set (HDF5 written by ddpm_prepare)")->required();
  app.add_option("--num-samples", a.num_samples, "evaluate the first N images (0 = all)")->capture_default_str();
  app.add_option("--batch-size", a.batch_size, "images per calc_bpd_loop on one rank (noise is T x batch images)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--clip-denoised", a.clip_denoised, "clip predicted x_0 to [-1, 1]: on|off")->capture_default_str();
  app.add_option("--seed", a.seed, "noise seed (image i uses (seed, i) on any rank count)")->capture_default_str();
  app.add_option("--out-json", a.out_json, "write the summary (totals, quartiles, per-t terms) as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ctx.rank == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
  }
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx);
    const int rc = run(a, *comm, ctx);
    comm.reset();
    return rc;
  });
}
