// ddpm_eval: bits/dim of a checkpoint's model (raw or EMA weights) on a test HDF5 set (the full
// T-step bound, calc_bpd_loop, split across ranks and all-reduced; or with --ode-bpd the exact
// likelihood of the probability-flow ODE), or with --fid the FID of its samples against a reference
// set (evaluation/fid_eval.h through trainer/fid_sampling.h, as in training; --sampler/--steps as
// ddpm_sample's), or with --fid-npz the FID of stored images (fid_npz.cpp); rank 0 prints and
// writes a JSON summary. Of an autoencoder run (ddpm_train_autoencoder): its reconstruction error
// (MSE, L1, PSNR) on --data.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/data/npy.h"
#include "ddpm/evaluation/domain_net.h"
#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/fid_sampling.h"
#include "ddpm/trainer/latent.h"
#include "ddpm/trainer/inference.h"
#include "fid_npz.h"

namespace {

struct Args {
  std::string checkpoint, ema, data, out_json;
  int64_t num_samples = 0, batch_size = 8;
  bool clip_denoised = true;
  int64_t seed = -1;  // -1: 0 for bits/dim, the run's sample_seed for FID
  // FID (--fid); empty / 0 = the checkpoint's training settings, which reproduce its training FID.
  bool fid = false, bpd = false, ode_bpd = false;
  int64_t ode_steps = 100;
  std::string ode_probe = "rademacher";
  std::string fid_extractor, fid_sampling, fid_stats;
  int64_t fid_samples = 0, fid_batch = 0;
  std::string sampler;  // --sampler / --steps (FID): resolve_sampler (inference.h), as ddpm_sample
  int64_t steps = 0;
  double dpm_lambda_min = ddpm::diffusion::kDpmSolverLambdaMin;
  std::string fid_npz;  // --fid-npz: the FID of stored images instead of a checkpoint's samples
};

// What every summary starts with: the checkpoint, its step, the weights used and --data.
nlohmann::ordered_json checkpoint_json(const Args& a, const ddpm::trainer::LoadedModel& m) {
  nlohmann::ordered_json j;
  j["checkpoint"] = m.checkpoint;
  j["step"] = m.step;
  j["weights"] = m.ema_rate ? "ema_" + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model");
  j["data"] = a.data;
  return j;
}

nlohmann::ordered_json summary_json(const Args& a, const ddpm::trainer::LoadedModel& m,
                                    const ddpm::trainer::BpdSummary& s, double seconds, int ranks) {
  nlohmann::ordered_json j = checkpoint_json(a, m);
  j["count"] = s.count;
  j["num_timesteps"] = s.num_timesteps;
  j["clip_denoised"] = a.clip_denoised;
  j["seed"] = std::max<int64_t>(a.seed, 0);
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

// This rank's share of the first --num-samples images of --data: uint8 (n, H, W, C), first index.
struct TestShare {
  at::Tensor images;
  int64_t begin = 0, count = 0;
};
TestShare read_test_share(const Args& a, const ddpm::trainer::LoadedModel& m, ddpm::dist::Communicator& comm,
                          const std::string& what) {
  if (a.data.empty()) throw std::invalid_argument("--data is required for " + what + " (the test set to evaluate)");
  if (!m.config.latent.empty()) {
    throw std::invalid_argument("--checkpoint " + m.checkpoint + " is a latent diffusion run: its bound would be of "
                                "the latents, not the images; use --fid");
  }
  const auto ds = ddpm::data::ImageDataset::open(a.data);
  const auto& info = ds.info();
  if (info.channels != m.unet->options().in_channels) {
    throw std::invalid_argument("--data " + a.data + ": images have " + std::to_string(info.channels) +
                                " channels, the model takes " + std::to_string(m.unet->options().in_channels));
  }
  TestShare t;
  t.count = a.num_samples > 0 ? std::min(a.num_samples, info.count) : info.count;
  const auto [begin, end] = ddpm::trainer::rank_range(t.count, comm.rank(), comm.world_size());
  t.begin = begin;
  t.images = end > begin ? ds.read_images(begin, end - begin)  // (n, H, W, C) uint8
                         : at::empty({0, info.height, info.width, info.channels}, at::kByte);
  return t;
}

std::string weights_text(const ddpm::trainer::LoadedModel& m) {
  return m.ema_rate ? "EMA " + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model.pt");
}

// Rank 0 prints "batch d/n on rank 0, S s" after each batch.
std::function<void(int64_t, int64_t)> batch_progress(ddpm::dist::Communicator& comm,
                                                     std::chrono::steady_clock::time_point t0) {
  return [&comm, t0](int64_t done, int64_t total) {
    if (comm.rank() != 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("batch %lld/%lld on rank 0, %.1f s\n", static_cast<long long>(done), static_cast<long long>(total), s);
    std::fflush(stdout);
  };
}

// Bits/dim on --data; returns rank 0's summary JSON.
nlohmann::ordered_json run_bpd(const Args& a, ddpm::trainer::LoadedModel& m, ddpm::dist::Communicator& comm,
                               const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto diffusion = ddpm::trainer::make_diffusion(m.config);
  const TestShare share = read_test_share(a, m, comm, "bits/dim");
  if (comm.rank() == 0) {
    std::cout << "ddpm_eval: " << m.checkpoint << " (step " << m.step << ", weights " << weights_text(m) << "), "
              << share.count << " images of " << a.data << ", T = " << diffusion.num_timesteps() << ", "
              << comm.world_size() << " rank(s)" << std::endl;
  }
  const auto s = ddpm::trainer::evaluate_bpd(m.unet, diffusion, share.images, share.begin, a.batch_size,
                                             a.clip_denoised, static_cast<uint64_t>(std::max<int64_t>(a.seed, 0)),
                                             comm, ctx.device(), batch_progress(comm, t0));
  if (comm.rank() != 0) return {};
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("bits/dim: total %.6f  prior %.6f  (%lld images, T = %lld, %.1f s)\n", s.total_bpd, s.prior_bpd,
              static_cast<long long>(s.count), static_cast<long long>(s.num_timesteps), seconds);
  for (int q = 0; q < 4; ++q) {
    std::printf("  t quartile %d: vb %.6f  mse %.6f  xstart_mse %.6f\n", q, s.vb_q[q], s.mse_q[q], s.xstart_mse_q[q]);
  }
  return summary_json(a, m, s, seconds, comm.world_size());
}

// Bits/dim of the probability-flow ODE on --data (--ode-bpd); returns rank 0's summary JSON.
nlohmann::ordered_json run_ode_bpd(const Args& a, ddpm::trainer::LoadedModel& m, ddpm::dist::Communicator& comm,
                                   const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  if (a.ode_probe != "rademacher" && a.ode_probe != "gaussian") {
    throw std::invalid_argument("--ode-probe " + a.ode_probe + ": give rademacher or gaussian");
  }
  const auto diffusion = ddpm::trainer::make_diffusion(m.config);
  const TestShare share = read_test_share(a, m, comm, "--ode-bpd");
  const uint64_t seed = static_cast<uint64_t>(std::max<int64_t>(a.seed, 0));
  if (comm.rank() == 0) {
    std::cout << "ddpm_eval --ode-bpd: " << m.checkpoint << " (step " << m.step << ", weights " << weights_text(m)
              << "), " << share.count << " images of " << a.data << ", " << a.ode_steps << " Heun steps (T = "
              << diffusion.num_timesteps() << "), " << a.ode_probe << " probes, seed " << seed << ", "
              << comm.world_size() << " rank(s)" << std::endl;
  }
  const auto s = ddpm::trainer::evaluate_ode_bpd(m.unet, diffusion, share.images, share.begin, a.batch_size,
                                                 a.ode_steps, a.ode_probe == "gaussian", seed, comm, ctx.device(),
                                                 batch_progress(comm, t0));
  if (comm.rank() != 0) return {};
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ode bits/dim: %.6f +- %.6f (standard error)  prior term %.6f  (%lld images, %lld Heun steps, %s probes, "
              "%.1f s)\n", s.bpd, s.bpd_std_error, s.prior_bpd, static_cast<long long>(s.count),
              static_cast<long long>(s.steps), a.ode_probe.c_str(), seconds);
  nlohmann::ordered_json j = checkpoint_json(a, m);
  j["ode_count"] = s.count;
  j["ode_bpd"] = s.bpd;
  j["ode_bpd_std_error"] = s.bpd_std_error;
  j["ode_prior_bpd"] = s.prior_bpd;
  j["ode_steps"] = s.steps;
  j["ode_probe"] = a.ode_probe;
  j["ode_seed"] = seed;
  j["ode_seconds"] = seconds;
  j["ranks"] = comm.world_size();
  return j;
}

// FID of the model's samples against the reference statistics of --data (default: the run's
// training set); the defaults are the run's own, so it reproduces the FID logged in training.
nlohmann::ordered_json run_fid(const Args& a, ddpm::trainer::LoadedModel& m, ddpm::dist::Communicator& comm,
                               const ddpm::dist::Context& ctx) {
  const ddpm::trainer::TrainConfig& c = m.config;
  ddpm::evaluation::FidSettings s;
  s.extractor = a.fid_extractor.empty() ? c.fid_extractor : a.fid_extractor;
  if (s.extractor.empty()) {
    throw std::invalid_argument("--fid needs --fid-extractor (domain:PATH, inception:PATH or torchscript:PATH); the "
                                "checkpoint's run was trained without one");
  }
  s.data = a.data.empty() ? c.data : a.data;
  s.samples = a.fid_samples > 0 ? a.fid_samples : c.fid_samples;
  // --sampler ancestral|ddim --steps N is --fid-sampling N|ddimN; a score-SDE sampler runs --steps
  // over the unrespaced diffusion (the FID's sampling names it: "dpm-solver++2m:20").
  std::string respacing = a.fid_sampling;
  ddpm::trainer::resolve_sampler(a.sampler, a.steps, respacing, "--fid-sampling");
  const bool sde = ddpm::trainer::is_sde_sampler(a.sampler);
  const int64_t sde_steps = a.steps > 0 ? a.steps : ddpm::trainer::make_diffusion(c).num_timesteps();
  s.sampling = sde ? a.sampler + ":" + std::to_string(sde_steps) : respacing.empty() ? c.fid_sampling : respacing;
  s.stats_path = !a.fid_stats.empty() ? a.fid_stats
                 : !c.fid_stats.empty() ? c.fid_stats
                                        : ddpm::evaluation::default_fid_stats_path(s.data, c.run_dir);
  s.seed = static_cast<uint64_t>(a.seed >= 0 ? a.seed : c.sample_seed);
  s.batch_size = a.fid_batch > 0 ? a.fid_batch : ddpm::trainer::fid_batch_size(c);
  s.clip_denoised = a.clip_denoised;
  const auto print = [](const std::string& line) { std::cout << line << std::endl; };
  ddpm::evaluation::FidEvaluation fid(s, comm, ctx.device(), print);
  const std::string weights =
      m.ema_rate ? "ema_" + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model");
  if (comm.rank() == 0) {
    std::cout << "ddpm_eval --fid: " << m.checkpoint << " (step " << m.step << ", " << weights << "), "
              << s.samples << " samples (" << s.sampling << ", seed " << s.seed << "), extractor "
              << fid.extractor_name() << ", reference " << s.data << ", " << comm.world_size() << " rank(s)"
              << std::endl;
  }
  ddpm::evaluation::FidReport r;
  if (!c.latent.empty()) {  // a latent run samples latents and decodes them with its checkpoint's autoencoder
    if (sde) throw std::invalid_argument("--sampler " + a.sampler + ": a latent run's FID samples as it trained; drop --sampler");
    r = fid.evaluate(ddpm::trainer::latent_index_sampler(m, ddpm::trainer::fid_sample_request(fid), fid.device()));
  } else if (sde) {  // evaluate_model_fid's request, with the sampler and its steps over the unrespaced diffusion
    ddpm::trainer::SampleRequest req = ddpm::trainer::fid_sample_request(fid);
    req.respacing.clear();
    req.sampler = a.sampler, req.sde_steps = sde_steps, req.dpm_lambda_min = a.dpm_lambda_min;
    r = fid.evaluate(ddpm::trainer::index_sampler(m.unet, c, req, ctx.device()));
  } else {
    r = ddpm::trainer::evaluate_model_fid(fid, m.unet, c);
  }
  if (comm.rank() != 0) return {};
  std::printf("fid %.6f  extractor=%s samples=%lld sampling=%s seconds=%.1f\n", r.fid, r.extractor.c_str(),
              static_cast<long long>(r.samples), s.sampling.c_str(), r.seconds);
  nlohmann::ordered_json j;
  j["checkpoint"] = m.checkpoint;
  j["step"] = m.step;
  j["weights"] = weights;
  j["fid"] = r.fid;
  j["fid_extractor"] = r.extractor;
  j["fid_samples"] = r.samples;
  j["fid_sampling"] = s.sampling;
  j["fid_sampler"] = sde ? a.sampler : ddpm::trainer::uses_ddim(s.sampling) ? "ddim" : "ancestral";
  j["fid_seed"] = s.seed;
  j["fid_batch"] = s.batch_size;
  j["fid_data"] = s.data;
  j["fid_stats"] = s.stats_path;
  j["fid_reference_count"] = fid.reference_count();
  j["fid_seconds"] = r.seconds;
  j["ranks"] = comm.world_size();
  return j;
}

int write_json(const Args& a, const nlohmann::ordered_json& j, int rank) {
  if (rank != 0 || a.out_json.empty()) return 0;
  std::ofstream f(a.out_json);
  f << j.dump(2) << "\n";
  if (!f) throw std::runtime_error("--out-json " + a.out_json + ": cannot write it");
  std::cout << "wrote " << a.out_json << std::endl;
  return 0;
}

// An autoencoder run: the reconstruction error of its first EMA on --data; rank 0's summary JSON.
nlohmann::ordered_json run_reconstruction(const Args& a, ddpm::dist::Communicator& comm,
                                          const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  if (a.fid || a.bpd || a.ode_bpd || !a.ema.empty()) {
    throw std::invalid_argument("--checkpoint " + a.checkpoint + " is an autoencoder: ddpm_eval gives its "
                                "reconstruction error with its first EMA (drop --fid/--bpd/--ode-bpd/--ema; "
                                "ddpm_train_autoencoder --fid-every gives the FID of its reconstructions)");
  }
  if (a.data.empty()) throw std::invalid_argument("--data is required: the images to reconstruct");
  ddpm::trainer::LatentCodec codec = ddpm::trainer::load_autoencoder_checkpoint(a.checkpoint, ctx.device());
  const auto ds = ddpm::data::ImageDataset::open(a.data);
  const int64_t count = a.num_samples > 0 ? std::min(a.num_samples, ds.info().count) : ds.info().count;
  const auto [begin, end] = ddpm::trainer::rank_range(count, comm.rank(), comm.world_size());
  const at::Tensor images = ds.read_images(begin, end - begin);  // (n, H, W, C) uint8
  const auto s = ddpm::trainer::evaluate_reconstruction(codec.ae, images, a.batch_size, comm, ctx.device());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (comm.rank() != 0) return {};
  std::printf("reconstruction of %lld images (%s): mse %.6g  l1 %.6g  psnr %.3f dB  (on [0, 1]; posterior mean; "
              "%.1f s)\n", static_cast<long long>(s.count), codec.source.c_str(), s.mse, s.l1, s.psnr, seconds);
  return {{"checkpoint", a.checkpoint}, {"weights", codec.source}, {"data", a.data}, {"count", s.count},
          {"mse", s.mse}, {"l1", s.l1}, {"psnr", s.psnr}, {"seconds", seconds}, {"ranks", comm.world_size()}};
}

// From the run dir's config.json or the checkpoint folder's state.json (not loading the weights).
bool is_autoencoder_run(const std::string& spec) {
  namespace fs = std::filesystem;
  const fs::path dir(spec);
  const fs::path file = fs::exists(dir / "MANIFEST.json") ? dir / "state.json" : dir / "config.json";
  if (!fs::exists(file)) return false;  // load_model explains what is missing
  const nlohmann::ordered_json j = ddpm::trainer::read_json_file(file.string());
  const nlohmann::ordered_json& config = j.contains("config") ? j.at("config") : j;
  return config.is_object() && config.value("task", "") == "autoencoder";
}

int run(const Args& a, ddpm::dist::Communicator& comm, const ddpm::dist::Context& ctx) {
  if (!a.fid && (!a.sampler.empty() || a.steps != 0)) {
    throw std::invalid_argument("--sampler and --steps choose the FID's sampler: give --fid too");
  }
  if (!a.fid_npz.empty()) {
    const ddpm::eval::FidNpzArgs n{a.fid_npz, a.data, a.fid_extractor, a.fid_stats, a.fid_samples, a.fid_batch};
    return write_json(a, ddpm::eval::run_fid_npz(n, comm, ctx.device()), comm.rank());
  }
  if (is_autoencoder_run(a.checkpoint)) return write_json(a, run_reconstruction(a, comm, ctx), comm.rank());
  ddpm::trainer::LoadedModel m = ddpm::trainer::load_model(a.checkpoint, a.ema, ctx.device());
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  const auto merge = [&j](const nlohmann::ordered_json& part) {
    for (const auto& [key, value] : part.items()) j[key] = value;
  };
  if (a.bpd || (!a.fid && !a.ode_bpd)) j = run_bpd(a, m, comm, ctx);
  if (a.ode_bpd) merge(run_ode_bpd(a, m, comm, ctx));
  if (a.fid) merge(run_fid(a, m, comm, ctx));
  return write_json(a, j, comm.rank());
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  Args a;
  CLI::App app{"ddpm_eval: bits/dim of a ddpm checkpoint on a test HDF5 set (full T-step bound, or with --ode-bpd the "
               "probability-flow ODE's exact likelihood), or with --fid the FID of its samples (--fid-npz: of stored "
               "images); of an autoencoder run (ddpm_train_autoencoder), its reconstruction error on --data"};
  auto* checkpoint = app.add_option("--checkpoint", a.checkpoint, "run dir (its newest valid checkpoint) or checkpoint folder");
  app.add_option("--fid-npz", a.fid_npz, "FID of the images of an .npz (arr_0, e.g. ddpm_sample's) against --data, "
                 "resized bilinearly when their size differs (needs --fid-extractor; --fid-samples: the first N)")
      ->excludes(checkpoint);
  app.add_option("--ema", a.ema, "EMA rate, or none for model.pt (default: the first EMA)");
  app.add_option("--data", a.data,
                 "test set (HDF5 written by ddpm_prepare); with --fid the reference set (default: the run's "
                 "training data)");
  app.add_option("--num-samples", a.num_samples, "evaluate the first N images (0 = all)")->capture_default_str();
  app.add_option("--batch-size", a.batch_size, "images per calc_bpd_loop on one rank (noise is T x batch images)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--clip-denoised", a.clip_denoised, "clip predicted x_0 to [-1, 1]: on|off")->capture_default_str();
  app.add_option("--seed", a.seed, "noise seed (image i uses (seed, i) on any rank count); default 0, for FID the "
                 "run's sample_seed")->check(CLI::NonNegativeNumber);
  app.add_flag("--fid", a.fid, "compute the FID of the model's samples instead of bits/dim");
  app.add_flag("--bpd", a.bpd, "with --fid or --ode-bpd: compute bits/dim (the T-step bound) on --data as well");
  app.add_flag("--ode-bpd", a.ode_bpd,
               "bits/dim of the probability-flow ODE on --data (exact likelihood, Hutchinson trace, Heun) instead "
               "of the T-step bound; uniformly dequantized images, --batch-size images per call");
  app.add_option("--ode-steps", a.ode_steps, "--ode-bpd: Heun steps on the uniform-in-t grid (1..T-1; 2 network "
                 "calls with a backward pass each)")->capture_default_str();
  app.add_option("--ode-probe", a.ode_probe, "--ode-bpd: Hutchinson probes, rademacher or gaussian")
      ->capture_default_str();
  app.add_option("--fid-extractor", a.fid_extractor,
                 "domain:PATH (ddpm_fid_net), inception:PATH (pytorch-fid .pth) or torchscript:PATH "
                 "(default: the run's --fid-extractor)");
  app.add_option("--fid-samples", a.fid_samples, "samples, split over the ranks (default: the run's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fid-sampling", a.fid_sampling, "respacing: \"N\", \"a,b,c\" or \"ddimN\" (default: the run's)");
  app.add_option("--sampler", a.sampler,
                 "FID sampler: ancestral|ddim|euler-maruyama|pf-ode-euler|pf-ode-heun|dpm-solver++2m (default: "
                 "the --fid-sampling respacing, ddimN = DDIM)");
  app.add_option("--steps", a.steps,
                 "FID sampling steps N with --sampler (ancestral/ddim: --fid-sampling N/ddimN; the score-SDE "
                 "samplers: N steps over the unrespaced schedule, default T)");
  app.add_option("--dpm-lambda-min", a.dpm_lambda_min,
                 "dpm-solver++2m starts at the last step whose half log-SNR is >= this (-5.1, as DPM-Solver's "
                 "authors for the cosine schedule; --dpm-lambda-min=-1e9: always step T-1)")->capture_default_str();
  app.add_option("--fid-stats", a.fid_stats,
                 "reference-statistics HDF5 cache (default: the run's, else fid_stats.h5 beside the data)");
  app.add_option("--fid-batch", a.fid_batch,
                 "samples per sampling batch (default: the run's global batch, as in training; the FID is "
                 "the same on any rank count for a given batch)")->check(CLI::NonNegativeNumber);
  app.add_option("--out-json", a.out_json, "write the summary (totals, quartiles, per-t terms) as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ctx.rank == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
  }
  if (a.checkpoint.empty() && a.fid_npz.empty()) {
    if (ctx.rank == 0) std::cerr << "give --checkpoint RUN (or --fid-npz FILE); see --help" << std::endl;
    return 1;
  }
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx);
    const int rc = run(a, *comm, ctx);
    comm.reset();
    return rc;
  });
}
