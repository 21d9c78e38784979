// ddpm_sample --cascade BASE,SR_RUN: samples of a base model (a run, or an .npz of its samples)
// super-resolved by a --task superres model (Ho et al. 2021, cascaded diffusion; improved-
// diffusion's super_res_sample.py on image_sample.py's output).
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "ddpm/trainer/inference.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::sample {

struct CascadeArgs {
  std::string sr;          // the super-resolution run (or checkpoint folder)
  std::string ema;         // as --ema, for both models
  std::string respacing;   // of the super-resolution stage; "" = the base's --respacing
  int64_t level = -1;      // conditioning-augmentation level; -1 = the SR run's cond_aug_level
  std::string out, grid;   // high resolution; the base samples go to *_low.npz / *_low.png
  int64_t num_samples = 16, batch_size = 16;
};

// Sample i: the base model's sample i exactly as ddpm_sample draws it alone (base_req, seed s),
// quantised to uint8 as stored samples are, then super-resolved from (s + 1, i) (super_resolve:
// the augmentation noise, x_T, each step's noise) with the base's sampler settings. Collective;
// returns the exit status. Throws std::invalid_argument when the base's images are not the SR
// model's low resolution or channels.
int run_cascade(trainer::LoadedModel& base, const diffusion::GaussianDiffusion& base_diffusion,
                const trainer::SampleRequest& base_req, const CascadeArgs& args, dist::Communicator& comm,
                const c10::Device& device);

// The same from stored base samples (improved-diffusion's super_res_sample.py --base_samples):
// arr_0 uint8 (N, h, w, C) of `npz` (arr_1 labels passed through), images [0, num_samples).
// sr_settings: the sampler settings and seed (the SR stage draws from (seed + 1, i)).
int run_cascade_from_npz(const std::string& npz, const trainer::SampleRequest& sr_settings, const CascadeArgs& args,
                         dist::Communicator& comm, const c10::Device& device);

}  // namespace ddpm::sample
