// ddpm_sample --cascade; see cascade.h.
#include "cascade.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <utility>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
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

// The base samples of global indices [lo, hi): uint8 (n, h, w, C) and labels (n) or undefined.
using BaseFn = std::function<std::pair<at::Tensor, at::Tensor>(int64_t lo, int64_t hi)>;

struct Base {
  std::string name;           // for messages: the run's checkpoint or the .npz
  int64_t c = 0, h = 0, w = 0;
  bool labelled = false;
  BaseFn samples;
};

// The SR stage's request: the SR run's image size (its training set's, else the U-Net's), the
// given sampler settings, seed + 1.
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

void check_fit(const Base& base, const trainer::LoadedSuperRes& sr, const CascadeArgs& a) {
  const int64_t n = sr.config.low_res;
  if (base.h != n || base.w != n || base.c != sr.net->image_channels()) {
    throw std::invalid_argument(
        "--cascade " + base.name + "," + a.sr + ": the base model makes " + shape_text(base.c, base.h, base.w) +
        " images (C x H x W) but the super-resolution model upsamples " + shape_text(sr.net->image_channels(), n, n) +
        " (its --low-res " + std::to_string(n) + "); train the base at " + std::to_string(n) +
        " px (ddpm_prepare --resolution " + std::to_string(n) + ") or give the SR run made for the base's size");
  }
}

// Every rank: its share of [0, num_samples) in batches, each base batch super-resolved; rank 0
// writes both resolutions.
int cascade(const Base& base, const SampleRequest& base_req, const CascadeArgs& a, dist::Communicator& comm,
            const c10::Device& device) {
  const auto t0 = std::chrono::steady_clock::now();
  trainer::LoadedSuperRes sr = trainer::load_superres_model(a.sr, a.ema, device);
  check_fit(base, sr, a);
  const SampleRequest req = sr_request(sr, base_req, a);
  const int64_t level = a.level >= 0 ? a.level : sr.config.cond_aug_level;
  // The levels the SR model was trained on (its config check keeps cond_aug_max < T and the run's
  // own cond_aug_level within them): a higher one is a conditioning it never saw.
  if (level > sr.config.cond_aug_max) {
    throw std::invalid_argument("--cond-aug-level " + std::to_string(level) + ": levels are timesteps of the SR "
                                "model's schedule, and it was trained on levels 0.." +
                                std::to_string(sr.config.cond_aug_max) + " (its --cond-aug-max); give at most " +
                                std::to_string(sr.config.cond_aug_max));
  }
  const auto sr_diffusion = trainer::make_diffusion(sr.config, trainer::is_sde_sampler(req.sampler) ? "" : req.respacing);
  const auto [begin, end] = trainer::rank_range(a.num_samples, comm.rank(), comm.world_size());
  if (comm.rank() == 0) {
    std::cout << "ddpm_sample --cascade: base " << base.name << " " << shape_text(base.c, base.h, base.w)
              << ", super-resolution " << sr.checkpoint << " (step " << sr.step << ", weights "
              << (sr.ema_rate ? "EMA " + trainer::EmaSet::rate_name(*sr.ema_rate) : std::string("model.pt")) << ") "
              << shape_text(req.channels, req.height, req.width) << ", " << sr_diffusion.num_timesteps()
              << " SR steps, conditioning level " << level << ", " << a.num_samples << " samples, "
              << comm.world_size() << " rank(s)" << std::endl;
  }
  std::vector<at::Tensor> lows, highs, labels;
  const int64_t mine = end - begin, batches = (mine + a.batch_size - 1) / a.batch_size;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t lo = begin + b * a.batch_size, hi = std::min(end, lo + a.batch_size);
    const auto [low_u8, y] = base.samples(lo, hi);  // (n, h, w, C) uint8, as stored samples
    const at::Tensor high = trainer::super_resolve(sr.net, sr.config, sr_diffusion, req,
                                                   trainer::to_model_input(low_u8), lo, level, device);
    lows.push_back(low_u8);
    highs.push_back(data::to_uint8_nhwc(high));
    if (y.defined()) labels.push_back(y);
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
  if (base.labelled) mine_labels = labels.empty() ? at::empty({0}, at::kLong) : at::cat(labels, 0);
  const std::string low_out = with_suffix(a.out, "_low"), low_grid = a.grid.empty() ? "" : with_suffix(a.grid, "_low");
  gather_and_write(comm, cat_or_empty(lows, {0, base.h, base.w, base.c}), mine_labels, low_out, low_grid);
  const int64_t n = gather_and_write(comm, cat_or_empty(highs, {0, req.height, req.width, req.channels}), mine_labels,
                                     a.out, a.grid);
  if (comm.rank() == 0) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("done: %lld cascade samples in %.1f s\n", static_cast<long long>(n), s);
  }
  return 0;
}

}  // namespace

int run_cascade(trainer::LoadedModel& base_model, const diffusion::GaussianDiffusion& base_diffusion,
                const SampleRequest& base_req, const CascadeArgs& a, dist::Communicator& comm,
                const c10::Device& device) {
  Base base;
  base.name = base_model.checkpoint;
  base.c = base_req.channels, base.h = base_req.height, base.w = base_req.width;
  // Labels of a class-conditional model, or the classes a --classifier guided an unconditional one to.
  base.labelled = base_model.unet->options().num_classes.value_or(0) > 0 || base_req.classifier != nullptr;
  base.samples = [&](int64_t lo, int64_t hi) {
    const trainer::SampleBatch batch = trainer::sample_indices(base_model, base_diffusion, base_req, lo, hi, device);
    return std::make_pair(data::to_uint8_nhwc(batch.images), batch.labels);
  };
  return cascade(base, base_req, a, comm, device);
}

int run_cascade_from_npz(const std::string& npz, const SampleRequest& sr_settings, const CascadeArgs& a,
                         dist::Communicator& comm, const c10::Device& device) {
  const auto arrays = data::read_npz(npz);
  const auto it = arrays.find("arr_0");
  if (it == arrays.end() || it->second.dim() != 4 || it->second.scalar_type() != at::kByte) {
    throw std::invalid_argument("--cascade " + npz + ",...: expected arr_0 uint8 (N, H, W, C), as ddpm_sample writes");
  }
  const at::Tensor images = it->second;  // (N, h, w, C)
  if (a.num_samples > images.size(0)) {
    throw std::invalid_argument("--num-samples " + std::to_string(a.num_samples) + ": " + npz + " holds " +
                                std::to_string(images.size(0)) + " images; give at most that many");
  }
  const auto labels = arrays.find("arr_1");
  Base base;
  base.name = npz;
  base.h = images.size(1), base.w = images.size(2), base.c = images.size(3);
  base.labelled = labels != arrays.end();
  base.samples = [&](int64_t lo, int64_t hi) {
    return std::make_pair(images.slice(0, lo, hi).contiguous(),
                          base.labelled ? labels->second.slice(0, lo, hi).to(at::kLong) : at::Tensor());
  };
  return cascade(base, sr_settings, a, comm, device);
}

}  // namespace ddpm::sample
