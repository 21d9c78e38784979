// ddpm_sample: N samples from a checkpoint (raw or EMA weights), split across ranks, respaced
// ancestral or DDIM sampling or a score-SDE sampler (--sampler), classifier-free guidance for class-conditional models; rank 0
// writes improved-diffusion's .npz (arr_0 uint8 (N, H, W, C), arr_1 int64 labels) and a PNG grid.
// A latent diffusion run (ddpm_train --latent) samples latents and decodes them with the
// autoencoder its checkpoint carries.
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/model/diffusion/sde_samplers.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"
#include "ddpm/trainer/latent.h"

namespace {

using ddpm::trainer::LoadedModel;
using ddpm::trainer::SampleRequest;

struct Args {
  std::string checkpoint, ema, respacing, class_spec = "random", out, grid, sampler;
  int64_t num_samples = 16, batch_size = 16, image_size = 0, channels = 0, steps = 0;
  double eta = 0.0, guidance_scale = 1.0;
  bool guidance = false, clip_denoised = true;
  uint64_t seed = 0;
};

// Image shape: flags, else the run's training set when it is readable, else the U-Net's size
// (times f for a latent run, whose images have the autoencoder's channels).
void image_shape(const Args& a, const LoadedModel& m, const ddpm::trainer::LatentCodec* codec, SampleRequest& req) {
  const int64_t f = codec ? codec->ae->options().factor() : 1;
  const int64_t model_channels = codec ? codec->ae->options().in_channels : m.unet->options().in_channels;
  int64_t size = m.unet->options().image_size * f, channels = model_channels;
  try {
    if (!m.config.data.empty()) {
      const auto ds = ddpm::data::ImageDataset::open(m.config.data);
      size = ds.info().height, channels = ds.info().channels;
    }
  } catch (const std::exception&) {  // the training set may live elsewhere: fall back
  }
  req.height = req.width = a.image_size > 0 ? a.image_size : size;
  req.channels = a.channels > 0 ? a.channels : channels;
  if (req.channels != model_channels) {
    throw std::invalid_argument("--channels " + std::to_string(req.channels) + ": the model takes " +
                                std::to_string(model_channels) + " channels");
  }
}

// --sampler and --steps: ancestral/ddim with --steps N become respacing "N"/"ddimN"; the score-SDE
// samplers run N steps over the unrespaced diffusion. Without --sampler, --respacing alone decides
// (ddimN = DDIM), as before --sampler existed.
void resolve_sampler(Args& a) {
  const std::string known = "ancestral, ddim, " + ddpm::diffusion::known_sde_sampler_names();
  if (a.steps < 0) throw std::invalid_argument("--steps " + std::to_string(a.steps) + ": give a positive step count");
  if (a.sampler.empty()) {
    if (a.steps > 0) throw std::invalid_argument("--steps: give --sampler too (" + known + ")");
    return;
  }
  if (a.sampler == "ancestral" || a.sampler == "ddim") {
    if (a.steps > 0 && !a.respacing.empty()) {
      throw std::invalid_argument("--steps " + std::to_string(a.steps) + " and --respacing " + a.respacing +
                                  ": give one of them");
    }
    if (a.sampler == "ancestral" && ddpm::trainer::uses_ddim(a.respacing)) {
      throw std::invalid_argument("--sampler ancestral with --respacing " + a.respacing +
                                  ": ddimN means DDIM; give --respacing N or --sampler ddim");
    }
    if (a.steps > 0) a.respacing = (a.sampler == "ddim" ? "ddim" : "") + std::to_string(a.steps);
    return;
  }
  try {
    ddpm::diffusion::parse_sde_sampler(a.sampler);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("--sampler " + a.sampler + ": unknown; known: " + known);
  }
  if (!a.respacing.empty()) {
    throw std::invalid_argument("--respacing " + a.respacing + ": --sampler " + a.sampler +
                                " chooses its own steps; give --steps N instead");
  }
}

SampleRequest make_request(const Args& a, const LoadedModel& m, const ddpm::trainer::LatentCodec* codec) {
  SampleRequest req;
  image_shape(a, m, codec, req);
  req.respacing = a.respacing;
  req.sampler = a.sampler;
  req.sde_steps = a.steps;
  req.eta = a.eta;
  req.clip_denoised = a.clip_denoised;
  req.seed = a.seed;
  const int64_t classes = m.unet->options().num_classes.value_or(0);
  if (a.guidance && classes <= 0) {
    throw std::invalid_argument("--guidance-scale: checkpoint " + m.checkpoint +
                                " holds an unconditional model (num_classes 0); classifier-free guidance needs a "
                                "class-conditional one; drop --guidance-scale");
  }
  req.guidance = a.guidance;
  req.guidance_scale = a.guidance_scale;
  if (a.class_spec != "random") {
    if (classes <= 0) throw std::invalid_argument("--class " + a.class_spec + ": the model is unconditional");
    try {
      req.class_label = std::stoll(a.class_spec);
    } catch (const std::exception&) {
      req.class_label = -2;
    }
    if (req.class_label < 0 || req.class_label >= classes) {
      throw std::invalid_argument("--class " + a.class_spec + ": give a class in 0.." + std::to_string(classes - 1) +
                                  " or random");
    }
  }
  return req;
}

int run(Args a, ddpm::dist::Communicator& comm, const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  resolve_sampler(a);
  LoadedModel m = ddpm::trainer::load_model(a.checkpoint, a.ema, ctx.device());
  std::optional<ddpm::trainer::LatentCodec> codec;  // latent runs: the checkpoint's autoencoder
  if (!m.config.latent.empty()) {
    codec = ddpm::trainer::latent_codec_from_state(m.task_state, ctx.device(), m.checkpoint + "/state.pt");
  }
  const SampleRequest image_req = make_request(a, m, codec ? &*codec : nullptr);
  const SampleRequest req = codec ? ddpm::trainer::latent_sample_request(image_req, codec->ae->options()) : image_req;
  const auto diffusion = ddpm::trainer::make_diffusion(m.config, a.respacing);
  const auto [begin, end] = ddpm::trainer::rank_range(a.num_samples, comm.rank(), comm.world_size());
  if (comm.rank() == 0) {
    std::cout << "ddpm_sample: " << m.checkpoint << " (step " << m.step << ", weights "
              << (m.ema_rate ? "EMA " + ddpm::trainer::EmaSet::rate_name(*m.ema_rate) : std::string("model.pt")) << "), "
              << a.num_samples << " samples of " << image_req.channels << "x" << image_req.height << "x" << image_req.width << ", "
              << (ddpm::trainer::is_sde_sampler(a.sampler)
                      ? a.sampler + ", " + std::to_string(a.steps > 0 ? a.steps : diffusion.num_timesteps()) + " steps"
                      : std::to_string(diffusion.num_timesteps()) + " steps (" +
                            (a.respacing.empty() ? "all" : a.respacing) + ")")
              << ", "
              << comm.world_size() << " rank(s)" << std::endl;
    if (codec) {
      std::printf("latent diffusion: %lldx%lldx%lld latents decoded by the checkpoint's autoencoder (f %lld, scale "
                  "factor %.6f; no clipping in latent space)\n", static_cast<long long>(req.channels),
                  static_cast<long long>(req.height), static_cast<long long>(req.width),
                  static_cast<long long>(codec->ae->options().factor()), codec->scale_factor);
    }
  }
  std::vector<at::Tensor> images, labels;
  const int64_t mine = end - begin, batches = (mine + a.batch_size - 1) / a.batch_size;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t lo = begin + b * a.batch_size, hi = std::min(end, lo + a.batch_size);
    const auto batch = ddpm::trainer::sample_indices(m, diffusion, req, lo, hi, ctx.device());
    const at::Tensor decoded = codec ? codec->decode(batch.images.to(ctx.device())).cpu() : batch.images;
    images.push_back(ddpm::data::to_uint8_nhwc(decoded));
    if (batch.labels.defined()) labels.push_back(batch.labels);
    if (comm.rank() == 0) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("batch %lld/%lld on rank 0: samples [%lld, %lld), %.1f s\n", static_cast<long long>(b + 1),
                  static_cast<long long>(batches), static_cast<long long>(lo), static_cast<long long>(hi), s);
      std::fflush(stdout);
    }
  }
  const std::vector<int64_t> hwc = {0, image_req.height, image_req.width, image_req.channels};
  at::Tensor mine_images = images.empty() ? at::empty(hwc, at::kByte) : at::cat(images, 0);  // (n, H, W, C)
  // Gathered in uint8 where the communicator works (CPU for MPI, the GPU for NCCL).
  const c10::Device comm_device = comm.device();
  std::vector<at::Tensor> all = comm.all_gather_v(mine_images.to(comm_device));
  std::vector<at::Tensor> all_labels;
  if (m.unet->options().num_classes.value_or(0) > 0) {
    at::Tensor l = labels.empty() ? at::empty({0}, at::kLong) : at::cat(labels, 0);
    all_labels = comm.all_gather_v(l.to(comm_device));
  }
  if (comm.rank() != 0) return 0;
  for (auto& t : all) t = t.cpu();
  for (auto& t : all_labels) t = t.cpu();
  const at::Tensor arr0 = at::cat(all, 0);  // (N, H, W, C) uint8
  std::vector<std::pair<std::string, at::Tensor>> arrays = {{"arr_0", arr0}};
  if (!all_labels.empty()) arrays.emplace_back("arr_1", at::cat(all_labels, 0));
  ddpm::data::write_npz(a.out, arrays);
  std::cout << "wrote " << a.out << " (arr_0 " << arr0.sizes() << " uint8" << (all_labels.empty() ? "" : ", arr_1 labels")
            << ")" << std::endl;
  if (!a.grid.empty()) {
    const int64_t ncols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(arr0.size(0)))));
    ddpm::data::write_png_grid(a.grid, arr0, std::max<int64_t>(1, ncols));
    std::cout << "wrote " << a.grid << std::endl;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("done: %lld samples in %.1f s\n", static_cast<long long>(arr0.size(0)), s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  Args a;
  CLI::App app{"ddpm_sample: samples from a ddpm checkpoint into an .npz (improved-diffusion's format) and a PNG grid"};
  app.add_option("--checkpoint", a.checkpoint, "run dir (its newest valid checkpoint) or checkpoint folder")->required();
  app.add_option("--ema", a.ema, "EMA rate to sample from, or none for model.pt (default: the first EMA)");
  app.add_option("--num-samples", a.num_samples, "samples over all ranks")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", a.batch_size, "samples per forward on one rank")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--respacing", a.respacing, "\"\" = all T steps, N, a,b,c (per section) or ddimN");
  app.add_option("--sampler", a.sampler,
                 "ancestral|ddim|euler-maruyama|pf-ode-euler|pf-ode-heun|dpm-solver++2m (default: ancestral, or "
                 "DDIM for --respacing ddimN)");
  app.add_option("--steps", a.steps, "sampling steps N (ancestral/ddim: same as --respacing N/ddimN; default: all T)");
  app.add_option("--eta", a.eta, "DDIM eta (0 deterministic)")->capture_default_str();
  app.add_option("--guidance-scale", a.guidance_scale, "classifier-free guidance scale s: eps_u + s (eps_c - eps_u)");
  app.add_option("--class", a.class_spec, "class of every sample (0..K-1) or random")->capture_default_str();
  app.add_option("--seed", a.seed, "noise seed (sample i uses (seed, i) on any rank count)")->capture_default_str();
  app.add_option("--clip-denoised", a.clip_denoised,
                 "clip predicted x_0 to [-1, 1]: on|off (latent runs: never, latents are not in [-1, 1])")
      ->capture_default_str();
  app.add_option("--image-size", a.image_size, "H = W (default: the run's training set, else the U-Net's)");
  app.add_option("--channels", a.channels, "image channels (default: the model's)");
  app.add_option("--out", a.out, "output .npz")->required();
  app.add_option("--grid", a.grid, "also write a PNG grid of all samples");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ctx.rank == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
  }
  a.guidance = app.count("--guidance-scale") > 0;
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx);
    const int rc = run(a, *comm, ctx);
    comm.reset();
    return rc;
  });
}
