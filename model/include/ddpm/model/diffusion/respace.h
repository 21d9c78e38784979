// Respacing (Nichol & Dhariwal 2021, section 4.3): sample with a subset of the training steps,
// the betas recomputed over the kept steps, the network still seeing original timestep indices.
// Also the factory that builds a (possibly respaced) GaussianDiffusion from user-level options.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

// Sorted original indices to keep out of T:
//   "N" or "a,b,c": split 0..T-1 into as many equal sections as counts (the first T % k sections
//                   one longer) and take that many evenly strided steps from each (fractional
//                   stride, round half to even, first and last step of the section included);
//   "ddimN":        the stride s with exactly N steps in range(0, T, s);
//   "":             every step.
// Throws std::invalid_argument when a section is shorter than its count or no stride fits.
std::vector<int64_t> space_timesteps(int64_t T, const std::string& section_counts);

// beta'_i = 1 - abar[k_i] / abar[k_{i-1}] over the kept steps k (abar[k_{-1}] = 1).
std::vector<double> respaced_betas(const std::vector<double>& base_betas, const std::vector<int64_t>& use_timesteps);

// A GaussianDiffusion over the kept steps whose network calls see the original indices.
GaussianDiffusion make_spaced_diffusion(const std::vector<double>& base_betas,
                                        const std::vector<int64_t>& use_timesteps, ModelMeanType mean_type,
                                        ModelVarType var_type, LossType loss_type, bool rescale_timesteps = false);

// User-level options of a diffusion (improved-diffusion's create_gaussian_diffusion).
struct DiffusionConfig {
  std::string schedule = "linear";  // see get_named_beta_schedule
  int64_t steps = 1000;             // T of training
  std::string respacing;            // "" keeps every step; see space_timesteps
  ModelMeanType mean_type = ModelMeanType::kEpsilon;
  ModelVarType var_type = ModelVarType::kFixedLarge;
  LossType loss_type = LossType::kMse;
  bool rescale_timesteps = false;   // network sees t * 1000/T as float
};
GaussianDiffusion create_gaussian_diffusion(const DiffusionConfig& config);

}  // namespace ddpm::diffusion
