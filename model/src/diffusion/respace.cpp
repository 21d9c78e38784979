// Respacing of the diffusion steps and the diffusion factory; see ddpm/model/diffusion/respace.h.
#include "ddpm/model/diffusion/respace.h"

#include <cmath>
#include <stdexcept>

#include "ddpm/model/diffusion/schedule.h"

namespace ddpm::diffusion {

namespace {
int64_t parse_count(const std::string& s, const std::string& spec) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || v < 1) {
    throw std::invalid_argument("timestep respacing '" + spec + "': '" + s +
                                "' is not a positive step count; expected \"N\", \"a,b,c\" or \"ddimN\"");
  }
  return v;
}

std::vector<int64_t> ddim_steps(int64_t T, const std::string& spec) {
  const int64_t desired = parse_count(spec.substr(4), spec);
  for (int64_t stride = 1; stride < T; ++stride) {
    if ((T + stride - 1) / stride == desired) {
      std::vector<int64_t> steps;
      for (int64_t i = 0; i < T; i += stride) steps.push_back(i);
      return steps;
    }
  }
  throw std::invalid_argument("timestep respacing '" + spec + "': no integer stride gives exactly " +
                              std::to_string(desired) + " of " + std::to_string(T) +
                              " steps; choose another count or use \"" + std::to_string(desired) + "\"");
}
}  // namespace

std::vector<int64_t> space_timesteps(int64_t T, const std::string& spec) {
  std::vector<int64_t> all;
  if (spec.empty()) {
    for (int64_t i = 0; i < T; ++i) all.push_back(i);
    return all;
  }
  if (spec.rfind("ddim", 0) == 0) return ddim_steps(T, spec);
  std::vector<int64_t> counts;
  for (size_t start = 0;;) {
    const size_t comma = spec.find(',', start);
    counts.push_back(parse_count(spec.substr(start, comma == std::string::npos ? comma : comma - start), spec));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const int64_t k = static_cast<int64_t>(counts.size());
  const int64_t size_per = T / k, extra = T % k;
  int64_t start_idx = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t size = size_per + (i < extra ? 1 : 0);
    if (size < counts[i]) {
      throw std::invalid_argument("timestep respacing '" + spec + "': section " + std::to_string(i) + " has " +
                                  std::to_string(size) + " of the " + std::to_string(T) + " steps and cannot give " +
                                  std::to_string(counts[i]) + "; use fewer steps or fewer sections");
    }
    const double frac_stride =
        counts[i] <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(counts[i] - 1);
    double cur = 0.0;
    for (int64_t j = 0; j < counts[i]; ++j) {
      all.push_back(start_idx + static_cast<int64_t>(std::nearbyint(cur)));  // half to even, like Python round
      cur += frac_stride;
    }
    start_idx += size;
  }
  return all;
}

std::vector<double> respaced_betas(const std::vector<double>& base_betas, const std::vector<int64_t>& use_timesteps) {
  std::vector<double> betas;
  double last = 1.0, prod = 1.0;
  size_t next = 0;
  for (size_t i = 0; i < base_betas.size() && next < use_timesteps.size(); ++i) {
    prod *= 1.0 - base_betas[i];
    if (static_cast<int64_t>(i) == use_timesteps[next]) {
      betas.push_back(1.0 - prod / last);
      last = prod;
      ++next;
    }
  }
  if (next != use_timesteps.size()) {
    throw std::invalid_argument("respaced_betas: kept steps must be sorted, unique and below T = " +
                                std::to_string(base_betas.size()));
  }
  return betas;
}

GaussianDiffusion make_spaced_diffusion(const std::vector<double>& base_betas,
                                        const std::vector<int64_t>& use_timesteps, ModelMeanType mean_type,
                                        ModelVarType var_type, LossType loss_type, bool rescale_timesteps) {
  return GaussianDiffusion(respaced_betas(base_betas, use_timesteps), mean_type, var_type, loss_type,
                           rescale_timesteps, use_timesteps, static_cast<int64_t>(base_betas.size()));
}

GaussianDiffusion create_gaussian_diffusion(const DiffusionConfig& c) {
  const std::vector<double> betas = get_named_beta_schedule(c.schedule, c.steps);
  const std::vector<int64_t> keep = space_timesteps(static_cast<int64_t>(betas.size()), c.respacing);
  return make_spaced_diffusion(betas, keep, c.mean_type, c.var_type, c.loss_type, c.rescale_timesteps);
}

}  // namespace ddpm::diffusion
