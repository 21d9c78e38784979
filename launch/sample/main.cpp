// ddpm_sample: N samples from a checkpoint (raw or EMA weights), split across ranks, respaced
// ancestral or DDIM sampling or a score-SDE sampler (--sampler), classifier-free guidance for
// class-conditional models, classifier guidance with a noise classifier (--classifier, ancestral
// and DDIM); rank 0 writes improved-diffusion's .npz (arr_0 uint8 (N, H, W, C), arr_1 int64
// labels) and a PNG grid. --cascade BASE,SR: a base model's samples super-resolved by a --task
// superres model (cascade.cpp). A latent diffusion run (ddpm_train --latent) samples latents and
// decodes them with the autoencoder its checkpoint carries.
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
#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"
#include "ddpm/trainer/latent.h"
#include "cascade.h"
#include "sample_io.h"

namespace {

using ddpm::trainer::LoadedModel;
using ddpm::trainer::SampleRequest;

struct Args {
  std::string checkpoint, ema, respacing, class_spec = "random", out, grid, sampler, cascade_spec;
  std::string classifier, classifier_ema;  // classifier guidance
  ddpm::sample::CascadeArgs cascade;
  int64_t num_samples = 16, batch_size = 16, image_size = 0, channels = 0, steps = 0;
  double eta = 0.0, guidance_scale = 1.0, dpm_lambda_min = ddpm::diffusion::kDpmSolverLambdaMin;
  double classifier_scale = 1.0;
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

SampleRequest make_request(const Args& a, const LoadedModel& m, const ddpm::trainer::LatentCodec* codec,
                           const c10::Device& device) {
  SampleRequest req;
  image_shape(a, m, codec, req);
  req.respacing = a.respacing;
  req.sampler = a.sampler;
  req.sde_steps = a.steps;
  req.dpm_lambda_min = a.dpm_lambda_min;
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
  if (!a.classifier.empty() && codec) {
    throw std::invalid_argument("--classifier " + a.classifier + ": checkpoint " + m.checkpoint + " is a latent "
                                "diffusion run (--latent): its samples are latents, the classifier takes images; "
                                "drop --classifier or guide an image-space model");
  }
  if (!a.classifier.empty()) {
    req.classifier = std::make_shared<ddpm::trainer::LoadedClassifier>(
        ddpm::trainer::load_classifier(a.classifier, a.classifier_ema, device));
    ddpm::trainer::check_classifier_fits(*req.classifier, m.config, classes, req.channels);
    const ddpm::model::EncoderUNetOptions& co = req.classifier->net->options();
    if (co.pool == "attention" && (req.height != co.unet.image_size || req.width != co.unet.image_size)) {
      throw std::invalid_argument("--image-size " + std::to_string(req.height) + ": the classifier " + a.classifier +
                                  " pools with attention over " + std::to_string(co.unet.image_size) + " px images "
                                  "only; sample at --image-size " + std::to_string(co.unet.image_size) +
                                  " or train a classifier with \"pool\": \"adaptive\"");
    }
    req.classifier_scale = a.classifier_scale;
  }
  const int64_t label_classes = classes > 0 ? classes : req.classifier ? req.classifier->num_classes() : 0;
  if (a.class_spec != "random") {
    if (label_classes <= 0) {
      throw std::invalid_argument("--class " + a.class_spec + ": the model is unconditional; give --classifier to "
                                  "guide it towards a class");
    }
    try {
      req.class_label = std::stoll(a.class_spec);
    } catch (const std::exception&) {
      req.class_label = -2;
    }
    if (req.class_label < 0 || req.class_label >= label_classes) {
      throw std::invalid_argument("--class " + a.class_spec + ": give a class in 0.." +
                                  std::to_string(label_classes - 1) + " or random");
    }
  }
  return req;
}

int run(Args a, ddpm::dist::Communicator& comm, const ddpm::dist::Context& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  ddpm::trainer::resolve_sampler(a.sampler, a.steps, a.respacing);
  // The SR stage runs the same sampler: --sr-respacing must fit it as --respacing does.
  if (!a.cascade.respacing.empty()) ddpm::trainer::resolve_sampler(a.sampler, 0, a.cascade.respacing, "--sr-respacing");
  const std::string& base = a.checkpoint;
  if (!a.cascade.sr.empty() && base.size() > 4 && base.compare(base.size() - 4, 4, ".npz") == 0) {
    SampleRequest req;  // the SR stage's sampler settings; its shape comes from the SR run
    req.respacing = a.respacing, req.sampler = a.sampler, req.sde_steps = a.steps, req.eta = a.eta;
    req.clip_denoised = a.clip_denoised, req.seed = a.seed, req.dpm_lambda_min = a.dpm_lambda_min;
    return ddpm::sample::run_cascade_from_npz(base, req, a.cascade, comm, ctx.device());
  }
  LoadedModel m = ddpm::trainer::load_model(a.checkpoint, a.ema, ctx.device());
  std::optional<ddpm::trainer::LatentCodec> codec;  // latent runs: the checkpoint's autoencoder
  if (!m.config.latent.empty()) {
    codec = ddpm::trainer::latent_codec_from_state(m.task_state, ctx.device(), m.checkpoint + "/state.pt");
  }
  const SampleRequest image_req = make_request(a, m, codec ? &*codec : nullptr, ctx.device());
  const SampleRequest req = codec ? ddpm::trainer::latent_sample_request(image_req, codec->ae->options()) : image_req;
  if (!a.classifier.empty() && ddpm::trainer::is_sde_sampler(a.sampler)) {
    throw std::invalid_argument("--classifier: classifier guidance works with --sampler ancestral or ddim, not " +
                                a.sampler);
  }
  const auto diffusion = ddpm::trainer::make_diffusion(m.config, a.respacing);
  if (!a.cascade.sr.empty() && codec) {  // the base stage would hand its latents to the SR model as images
    throw std::invalid_argument("--cascade " + a.checkpoint + "," + a.cascade.sr + ": the base is a latent diffusion "
                                "run (--latent); sample it first (ddpm_sample --checkpoint " + a.checkpoint +
                                " --out BASE.npz), then give --cascade BASE.npz," + a.cascade.sr);
  }
  if (!a.cascade.sr.empty()) return ddpm::sample::run_cascade(m, diffusion, req, a.cascade, comm, ctx.device());
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
    if (req.classifier) {
      const auto& c = *req.classifier;
      std::cout << "classifier guidance: " << c.checkpoint << " (step " << c.step << ", weights "
                << (c.ema_rate ? "EMA " + ddpm::trainer::EmaSet::rate_name(*c.ema_rate) : std::string("model.pt"))
                << "), scale " << req.classifier_scale << ", " << c.num_classes() << " classes" << std::endl;
    }
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
  const at::Tensor mine_images = images.empty() ? at::empty(hwc, at::kByte) : at::cat(images, 0);  // (n, H, W, C)
  at::Tensor mine_labels;
  if (m.unet->options().num_classes.value_or(0) > 0 || req.classifier) {
    mine_labels = labels.empty() ? at::empty({0}, at::kLong) : at::cat(labels, 0);
  }
  const int64_t written = ddpm::sample::gather_and_write(comm, mine_images, mine_labels, a.out, a.grid);
  if (comm.rank() != 0) return 0;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("done: %lld samples in %.1f s\n", static_cast<long long>(written), s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  Args a;
  CLI::App app{"ddpm_sample: samples from a ddpm checkpoint into an .npz (improved-diffusion's format) and a PNG grid"};
  auto* checkpoint = app.add_option("--checkpoint", a.checkpoint, "run dir (its newest valid checkpoint) or checkpoint folder");
  auto* cascade = app.add_option("--cascade", a.cascade_spec,
                                 "BASE_RUN,SR_RUN: sample BASE_RUN (at the low resolution), then super-resolve with "
                                 "SR_RUN (--task superres); --out/--grid get the high resolution, *_low.npz/png the "
                                 "base samples. BASE.npz,SR_RUN super-resolves stored samples (arr_0)")
                      ->excludes(checkpoint);
  checkpoint->excludes(cascade);
  auto* sr_respacing = app.add_option("--sr-respacing", a.cascade.respacing,
                                      "--cascade: respacing of the super-resolution stage (default: --respacing)");
  auto* cond_aug_level = app.add_option("--cond-aug-level", a.cascade.level,
                                        "--cascade: conditioning-augmentation level of the base samples (default: "
                                        "the SR run's cond_aug_level)");
  app.add_option("--ema", a.ema, "EMA rate to sample from, or none for model.pt (default: the first EMA)");
  app.add_option("--num-samples", a.num_samples, "samples over all ranks")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", a.batch_size, "samples per forward on one rank")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--respacing", a.respacing, "\"\" = all T steps, N, a,b,c (per section) or ddimN");
  app.add_option("--sampler", a.sampler,
                 "ancestral|ddim|euler-maruyama|pf-ode-euler|pf-ode-heun|dpm-solver++2m (default: ancestral, or "
                 "DDIM for --respacing ddimN)");
  app.add_option("--steps", a.steps, "sampling steps N (ancestral/ddim: same as --respacing N/ddimN; default: all T)");
  app.add_option("--dpm-lambda-min", a.dpm_lambda_min,
                 "dpm-solver++2m starts at the last step whose half log-SNR is >= this (-5.1, as DPM-Solver's "
                 "authors for the cosine schedule; --dpm-lambda-min=-1e9: always step T-1)")->capture_default_str();
  app.add_option("--eta", a.eta, "DDIM eta (0 deterministic)")->capture_default_str();
  app.add_option("--guidance-scale", a.guidance_scale, "classifier-free guidance scale s: eps_u + s (eps_c - eps_u)");
  app.add_option("--class,--class-label", a.class_spec,
                 "class of every sample (0..K-1) or random (drawn per sample from its seed); with --classifier also "
                 "for an unconditional model")
      ->capture_default_str();
  auto* classifier = app.add_option("--classifier", a.classifier,
                 "classifier guidance (Dhariwal & Nichol 2021): run dir or checkpoint of a noise classifier "
                 "(ddpm_train_classifier) trained on the model's schedule; ancestral: mean + s Sigma grad log p(y|x_t), "
                 "DDIM: eps - sqrt(1 - alpha_bar) s grad log p(y|x_t)");
  app.add_option("--classifier-scale", a.classifier_scale, "classifier guidance scale s")
      ->capture_default_str()
      ->needs(classifier);
  app.add_option("--classifier-ema", a.classifier_ema,
                 "the classifier's EMA rate, or none for its model.pt (default: its first EMA)")
      ->needs(classifier);
  sr_respacing->needs(cascade);  // flags of a stage that is not run are errors, not silently ignored
  cond_aug_level->needs(cascade)->check(CLI::NonNegativeNumber);
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
  if (!a.cascade_spec.empty()) {
    const auto comma = a.cascade_spec.find(',');
    if (comma == std::string::npos || comma == 0 || comma + 1 == a.cascade_spec.size()) {
      if (ctx.rank == 0) std::cerr << "--cascade " << a.cascade_spec << ": give BASE_RUN,SR_RUN" << std::endl;
      return 1;
    }
    a.checkpoint = a.cascade_spec.substr(0, comma);
    a.cascade.sr = a.cascade_spec.substr(comma + 1);
    a.cascade.out = a.out, a.cascade.grid = a.grid, a.cascade.ema = a.ema;
    a.cascade.num_samples = a.num_samples, a.cascade.batch_size = a.batch_size;
  } else if (a.checkpoint.empty()) {
    if (ctx.rank == 0) std::cerr << "give --checkpoint RUN (or --cascade BASE_RUN,SR_RUN); see --help" << std::endl;
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
