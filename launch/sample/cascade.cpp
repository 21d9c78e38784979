// ddpm_sample --cascade; see cascade.h.
#include "cascade.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/trainer/ema.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/superres.h"
#include "sample_io.h"

namespace ddpm::sample {

namespace {

using trainer::SampleRequest;

std::string shape_text(int64_t c, int64_t h, int64_t w) {
  return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

// The SR stage's request: the SR run's image size (its training set's, else the U-Net's), the
// base's sampler settings, seed + 1.
SampleRequest sr_request(const trainer::LoadedSuperRes& sr, const SampleRequest& base_req, const CascadeArgs& a) {
  SampleRequest req = base_req;
  req.channels = sr.net->image_channels();
  req.height = req.width = sr.net->options().image_size;
  try {
    const auto info = data::ImageDataset::open(sr.config.data).info();
    req.height = info.height, req.width = info.width;
  } catch (const std::exception&) {  // the training set may live elsewhere: fall back
  }
  if (!a.respacing.empty()) req.respacing = a.respacing;
  req.seed = base_req.seed + 1;
  req.guidance = false, req.class_label = -1;
  return req;
}

void check_fit(const std::string& base_spec, const SampleRequest& base_req, const trainer::LoadedSuperRes& sr,
               const CascadeArgs& a) {
  const int64_t n = sr.config.low_res;
  if (base_req.height != n || base_req.width != n || base_req.channels != sr.net->image_channels()) {
    throw std::invalid_argument(
        "--cascade " + base_spec + "," + a.sr + ": the base model makes " +
        shape_text(base_req.channels, base_req.height, base_req.width) + " images (C x H x W) but the "
        "super-resolution model upsamples " + shape_text(sr.net->image_channels(), n, n) + " (its --low-res " +
        std::to_string(n) + "); train the base at " + std::to_string(n) + " px (ddpm_prepare --resolution " +
        std::to_string(n) + ") or give the SR run made for the base's size");
  }
}

}  // namespace

int run_cascade(trainer::LoadedModel& base, const diffusion::GaussianDiffusion& base_diffusion,
                const SampleRequest& base_req, const CascadeArgs& a, dist::Communicator& comm,
                const c10::Device& device) {
  const auto t0 = std::chrono::steady_clock::now();
  trainer::LoadedSuperRes sr = trainer::load_superres_model(a.sr, a.ema, device);
  check_fit(base.checkpoint, base_req, sr, a);
  const SampleRequest req = sr_request(sr, base_req, a);
  const int64_t level = a.level >= 0 ? a.level : sr.config.cond_aug_level;
  if (level >= sr.config.diffusion_steps) {
    throw std::invalid_argument("--cond-aug-level " + std::to_string(level) + ": levels are timesteps of the SR "
                                "model's schedule; give at most " + std::to_string(sr.config.diffusion_steps - 1));
  }
  const auto sr_diffusion = trainer::make_diffusion(sr.config, trainer::is_sde_sampler(req.sampler) ? "" : req.respacing);
  const auto [begin, end] = trainer::rank_range(a.num_samples, comm.rank(), comm.world_size());
  if (comm.rank() == 0) {
    std::cout << "ddpm_sample --cascade: base " << base.checkpoint << " (step " << base.step << ") "
              << shape_text(base_req.channels, base_req.height, base_req.width) << ", super-resolution "
              << sr.checkpoint << " (step " << sr.step << ", weights "
              << (sr.ema_rate ? "EMA " + trainer::EmaSet::rate_name(*sr.ema_rate) : std::string("model.pt")) << ") "
              << shape_text(req.channels, req.height, req.width) << ", " << sr_diffusion.num_timesteps()
              << " SR steps, conditioning level " << level << ", " << a.num_samples << " samples, "
              << comm.world_size() << " rank(s)" << std::endl;
  }
  std::vector<at::Tensor> lows, highs, labels;
  const int64_t mine = end - begin, batches = (mine + a.batch_size - 1) / a.batch_size;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t lo = begin + b * a.batch_size, hi = std::min(end, lo + a.batch_size);
    const trainer::SampleBatch batch = trainer::sample_indices(base, base_diffusion, base_req, lo, hi, device);
    const at::Tensor low_u8 = data::to_uint8_nhwc(batch.images);  // (n, h, w, C), as stored samples
    const at::Tensor high = trainer::super_resolve(sr.net, sr.config, sr_diffusion, req,
                                                   trainer::to_model_input(low_u8), lo, level, device);
    lows.push_back(low_u8);
    highs.push_back(data::to_uint8_nhwc(high));
    if (batch.labels.defined()) labels.push_back(batch.labels);
    if (comm.rank() == 0) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("batch %lld/%lld on rank 0: samples [%lld, %lld), %.1f s\n", static_cast<long long>(b + 1),
                  static_cast<long long>(batches), static_cast<long long>(lo), static_cast<long long>(hi), s);
      std::fflush(stdout);
    }
  }
  const auto cat_or_empty = [](const std::vector<at::Tensor>& parts, std::vector<int64_t> shape) {
    return parts.empty() ? at::empty(shape, at::kByte) : at::cat(parts, 0);
  };
  at::Tensor mine_labels;
  if (base.unet->options().num_classes.value_or(0) > 0) {
    mine_labels = labels.empty() ? at::empty({0}, at::kLong) : at::cat(labels, 0);
  }
  const std::string low_out = with_suffix(a.out, "_low"), low_grid = a.grid.empty() ? "" : with_suffix(a.grid, "_low");
  gather_and_write(comm, cat_or_empty(lows, {0, base_req.height, base_req.width, base_req.channels}), mine_labels,
                   low_out, low_grid);
  const int64_t n = gather_and_write(comm, cat_or_empty(highs, {0, req.height, req.width, req.channels}), mine_labels,
                                     a.out, a.grid);
  if (comm.rank() == 0) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("done: %lld cascade samples in %.1f s\n", static_cast<long long>(n), s);
  }
  return 0;
}

}  // namespace ddpm::sample
