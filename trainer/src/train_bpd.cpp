// Bits/dim during training (--bpd-every): the full variational bound (every t plus the prior
// term) of the first EMA's weights on the first --bpd-samples images of --bpd-data (default the
// training set), split over the ranks with noise per image index (evaluate_bpd, the same numbers
// ddpm_eval gives for the checkpoint). Rank 0 logs it and exports ddpm_bpd{ema_rate, samples}.
#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"
#include "ddpm/trainer/rng_state.h"
#include "trainer_impl.h"

namespace ddpm::trainer::detail {

namespace {

// This rank's share of the first `count` images of `path`: uint8 (n, H, W, C) and the index of
// its first image. Throws when the images are not the training images' shape.
std::pair<at::Tensor, int64_t> bpd_images(const std::string& path, int64_t count, int rank, int world,
                                          const std::array<int64_t, 3>& chw) {
  const data::ImageDataset ds = data::ImageDataset::open(path);
  const data::DatasetInfo& info = ds.info();
  if (info.channels != chw[0] || info.height != chw[1] || info.width != chw[2]) {
    throw std::invalid_argument("--bpd-data " + path + ": images are " + std::to_string(info.channels) + "x" +
                                std::to_string(info.height) + "x" + std::to_string(info.width) +
                                " (C x H x W), the model trains on " + std::to_string(chw[0]) + "x" +
                                std::to_string(chw[1]) + "x" + std::to_string(chw[2]) +
                                "; give images of the training set's shape");
  }
  const auto [begin, end] = rank_range(std::min(count, info.count), rank, world);
  at::Tensor images = end > begin ? ds.read_images(begin, end - begin)
                                  : at::empty({0, info.height, info.width, info.channels}, at::kByte);
  return {images, begin};
}

}  // namespace

void Trainer::evaluate_training_bpd() {
  const auto t0 = Clock::now();
  const RngState saved = capture_rng_state();  // evaluation must not shift training's randomness
  const std::string path = config_.bpd_data.empty() ? config_.data : config_.bpd_data;
  const auto [images, first] =
      bpd_images(path, config_.bpd_samples, rank_, world_, {image_channels_, image_height_, image_width_});
  model::UNet net = ema_model(config_, model_, ema_->state(0), device_);
  const BpdSummary s = evaluate_bpd(net, *diffusion_, images, first, std::max<int64_t>(1, plan_.microbatch),
                                    /*clip_denoised=*/true, static_cast<uint64_t>(config_.sample_seed), comm_, device_);
  restore_rng_state(saved);
  const double seconds = seconds_since(t0);
  interval_.paused += seconds;  // evaluation is not training: left out of images/s
  if (rank_ != 0) return;
  const std::string rate = EmaSet::rate_name(ema_->rates()[0]);
  char line[256];
  std::snprintf(line, sizeof line, "bpd step=%lld value=%.6f prior=%.6f samples=%lld ema=%s seconds=%.2f",
                static_cast<long long>(step_), s.total_bpd, s.prior_bpd, static_cast<long long>(s.count),
                rate.c_str(), seconds);
  print(line);
  log_->write({{"event", "bpd"}, {"step", step_}, {"bpd", s.total_bpd}, {"prior_bpd", s.prior_bpd},
               {"samples", s.count}, {"ema_rate", rate}, {"data", path}, {"seed", config_.sample_seed},
               {"seconds", seconds}});
  if (metrics_) metrics_->set_bits_per_dim(rate, s.count, s.total_bpd);
}

}  // namespace ddpm::trainer::detail
