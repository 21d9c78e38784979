// GaussianDiffusion: schedule arrays, the forward process q and the reverse process p; see
// ddpm/model/diffusion/gaussian_diffusion.h. Losses are in losses.cpp, samplers in sampling.cpp.
#include "ddpm/model/diffusion/gaussian_diffusion.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "ddpm/model/diffusion/schedule.h"

namespace ddpm::diffusion {

// --- enums ------------------------------------------------------------------------------------

namespace {
template <typename E, size_t K>
E parse_enum(const std::string& s, const char* what, const std::pair<const char*, E> (&names)[K]) {
  std::ostringstream msg;
  msg << "unknown " << what << " '" << s << "'; expected one of ";
  for (size_t i = 0; i < K; ++i) {
    if (s == names[i].first) return names[i].second;
    msg << (i ? "|" : "") << names[i].first;
  }
  throw std::invalid_argument(msg.str());
}

template <typename E, size_t K>
std::string enum_name(E e, const std::pair<const char*, E> (&names)[K]) {
  for (const auto& [name, value] : names)
    if (value == e) return name;
  return "?";
}

const std::pair<const char*, ModelMeanType> kMeanNames[] = {{"eps", ModelMeanType::kEpsilon},
    {"x0", ModelMeanType::kStartX}, {"prev", ModelMeanType::kPreviousX}, {"v", ModelMeanType::kVelocity}};
const std::pair<const char*, ModelVarType> kVarNames[] = {{"fixed-small", ModelVarType::kFixedSmall},
    {"fixed-large", ModelVarType::kFixedLarge}, {"learned", ModelVarType::kLearned},
    {"learned-range", ModelVarType::kLearnedRange}};
const std::pair<const char*, LossType> kLossNames[] = {{"mse", LossType::kMse},
    {"rescaled-mse", LossType::kRescaledMse}, {"kl", LossType::kKl}, {"rescaled-kl", LossType::kRescaledKl}};
}  // namespace

ModelMeanType parse_mean_type(const std::string& s) { return parse_enum(s, "mean type", kMeanNames); }
ModelVarType parse_var_type(const std::string& s) { return parse_enum(s, "variance type", kVarNames); }
LossType parse_loss_type(const std::string& s) { return parse_enum(s, "loss type", kLossNames); }
std::string to_string(ModelMeanType m) { return enum_name(m, kMeanNames); }
std::string to_string(ModelVarType v) { return enum_name(v, kVarNames); }
std::string to_string(LossType l) { return enum_name(l, kLossNames); }
bool is_learned(ModelVarType v) { return v == ModelVarType::kLearned || v == ModelVarType::kLearnedRange; }
bool is_vb(LossType l) { return l == LossType::kKl || l == LossType::kRescaledKl; }

// --- schedule arrays --------------------------------------------------------------------------

ScheduleArrays make_schedule_arrays(const std::vector<double>& betas) {
  check_betas(betas, "GaussianDiffusion");
  const size_t T = betas.size();
  std::vector<double> ac(T), acp(T), acn(T), pv(T);
  double prod = 1.0;
  for (size_t i = 0; i < T; ++i) {
    acp[i] = prod;
    prod *= 1.0 - betas[i];
    ac[i] = prod;
  }
  for (size_t i = 0; i < T; ++i) acn[i] = i + 1 < T ? ac[i + 1] : 0.0;
  for (size_t i = 0; i < T; ++i) pv[i] = betas[i] * (1.0 - acp[i]) / (1.0 - ac[i]);

  auto make = [T](auto f) {
    at::Tensor out = at::empty({static_cast<int64_t>(T)}, at::kDouble);
    double* p = out.data_ptr<double>();
    for (size_t i = 0; i < T; ++i) p[i] = f(i);
    return out;
  };
  ScheduleArrays a;
  a.betas = make([&](size_t i) { return betas[i]; });
  a.alphas_cumprod = make([&](size_t i) { return ac[i]; });
  a.alphas_cumprod_prev = make([&](size_t i) { return acp[i]; });
  a.alphas_cumprod_next = make([&](size_t i) { return acn[i]; });
  a.sqrt_alphas_cumprod = make([&](size_t i) { return std::sqrt(ac[i]); });
  a.sqrt_one_minus_alphas_cumprod = make([&](size_t i) { return std::sqrt(1.0 - ac[i]); });
  a.log_one_minus_alphas_cumprod = make([&](size_t i) { return std::log(1.0 - ac[i]); });
  a.sqrt_recip_alphas_cumprod = make([&](size_t i) { return std::sqrt(1.0 / ac[i]); });
  a.sqrt_recipm1_alphas_cumprod = make([&](size_t i) { return std::sqrt(1.0 / ac[i] - 1.0); });
  a.posterior_variance = make([&](size_t i) { return pv[i]; });
  a.posterior_log_variance_clipped = make([&](size_t i) { return std::log(i == 0 ? pv[1] : pv[i]); });
  a.posterior_mean_coef1 = make([&](size_t i) { return betas[i] * std::sqrt(acp[i]) / (1.0 - ac[i]); });
  a.posterior_mean_coef2 =
      make([&](size_t i) { return (1.0 - acp[i]) * std::sqrt(1.0 - betas[i]) / (1.0 - ac[i]); });
  a.fixed_large_variance = make([&](size_t i) { return i == 0 ? pv[1] : betas[i]; });
  a.fixed_large_log_variance = make([&](size_t i) { return std::log(i == 0 ? pv[1] : betas[i]); });
  a.log_betas = make([&](size_t i) { return std::log(betas[i]); });
  const double* c1 = a.posterior_mean_coef1.data_ptr<double>();
  const double* c2 = a.posterior_mean_coef2.data_ptr<double>();
  a.recip_posterior_mean_coef1 = make([&](size_t i) { return 1.0 / c1[i]; });
  a.posterior_mean_coef2_over_coef1 = make([&](size_t i) { return c2[i] / c1[i]; });
  return a;
}

// --- construction, gathering, the network call ------------------------------------------------

// Device copies of the float64 arrays, keyed by (array storage, device); shared by copies.
struct GaussianDiffusion::DeviceCache {
  std::mutex mutex;
  std::map<std::pair<const void*, std::string>, at::Tensor> tensors;

  at::Tensor on(const at::Tensor& arr, const c10::Device& device) {
    if (arr.device() == device) return arr;
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = tensors[{arr.data_ptr(), device.str()}];
    if (!slot.defined()) slot = arr.to(device);
    return slot;
  }
};

GaussianDiffusion::GaussianDiffusion(std::vector<double> betas, ModelMeanType mean_type,
                                     ModelVarType var_type, LossType loss_type, bool rescale_timesteps,
                                     std::vector<int64_t> timestep_map, int64_t original_num_steps)
    : betas_(std::move(betas)),
      mean_type_(mean_type),
      var_type_(var_type),
      loss_type_(loss_type),
      rescale_timesteps_(rescale_timesteps),
      timestep_map_(std::move(timestep_map)),
      original_num_steps_(original_num_steps),
      arrays_(make_schedule_arrays(betas_)),
      cache_(std::make_shared<DeviceCache>()) {
  const int64_t T = num_timesteps();
  if (timestep_map_.empty()) {
    for (int64_t i = 0; i < T; ++i) timestep_map_.push_back(i);
  }
  if (static_cast<int64_t>(timestep_map_.size()) != T) {
    throw std::invalid_argument("GaussianDiffusion: timestep_map has " + std::to_string(timestep_map_.size()) +
                                " entries for " + std::to_string(T) + " betas; they must match");
  }
  if (original_num_steps_ <= 0) original_num_steps_ = timestep_map_.back() + 1;
  timestep_map_tensor_ = at::tensor(timestep_map_, at::kLong);
}

at::Tensor GaussianDiffusion::extract(const at::Tensor& arr, const at::Tensor& t, const at::Tensor& like) const {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, "GaussianDiffusion: timesteps must be int64 (N), got ",
              t.scalar_type(), " ", t.sizes());
  TORCH_CHECK(like.dim() >= 1 && like.size(0) == t.size(0), "GaussianDiffusion: ", t.size(0),
              " timesteps for a batch of shape ", like.sizes());
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = t.size(0);
  return cache_->on(arr, t.device()).index_select(0, t).to(like.scalar_type()).to(like.device()).view(shape);
}

at::Tensor GaussianDiffusion::model_timesteps(const at::Tensor& t) const {
  at::Tensor mapped = cache_->on(timestep_map_tensor_, t.device()).index_select(0, t);
  if (!rescale_timesteps_) return mapped;
  return mapped.to(at::kFloat) * static_cast<float>(1000.0 / static_cast<double>(original_num_steps_));
}

at::Tensor GaussianDiffusion::original_timesteps(const at::Tensor& t) const {
  return cache_->on(timestep_map_tensor_, t.device()).index_select(0, t);
}

at::Tensor GaussianDiffusion::call_model(const ModelFn& model, const at::Tensor& x_t, const at::Tensor& t) const {
  return model(x_t, model_timesteps(t));
}

// --- forward process q ------------------------------------------------------------------------

MeanVariance GaussianDiffusion::q_mean_variance(const at::Tensor& x_start, const at::Tensor& t) const {
  const auto& a = arrays_;
  at::Tensor mean = extract(a.sqrt_alphas_cumprod, t, x_start) * x_start;
  at::Tensor variance = (1.0 - extract(a.alphas_cumprod, t, x_start)).expand(x_start.sizes());
  at::Tensor log_variance = extract(a.log_one_minus_alphas_cumprod, t, x_start).expand(x_start.sizes());
  return {mean, variance, log_variance};
}

at::Tensor GaussianDiffusion::q_sample(const at::Tensor& x_start, const at::Tensor& t, const at::Tensor& noise) const {
  TORCH_CHECK(noise.sizes() == x_start.sizes(), "q_sample: noise ", noise.sizes(), " vs x_start ", x_start.sizes());
  return extract(arrays_.sqrt_alphas_cumprod, t, x_start) * x_start +
         extract(arrays_.sqrt_one_minus_alphas_cumprod, t, x_start) * noise;
}

MeanVariance GaussianDiffusion::q_posterior_mean_variance(const at::Tensor& x_start, const at::Tensor& x_t,
                                                          const at::Tensor& t) const {
  TORCH_CHECK(x_start.sizes() == x_t.sizes(), "q_posterior: x_start ", x_start.sizes(), " vs x_t ", x_t.sizes());
  const auto& a = arrays_;
  at::Tensor mean = extract(a.posterior_mean_coef1, t, x_t) * x_start + extract(a.posterior_mean_coef2, t, x_t) * x_t;
  at::Tensor variance = extract(a.posterior_variance, t, x_t).expand(x_t.sizes());
  at::Tensor log_variance = extract(a.posterior_log_variance_clipped, t, x_t).expand(x_t.sizes());
  return {mean, variance, log_variance};
}

// --- reverse process p ------------------------------------------------------------------------

PMeanVariance GaussianDiffusion::p_mean_variance(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                                 bool clip_denoised) const {
  return p_mean_variance_from_output(call_model(model, x, t), x, t, clip_denoised);
}

PMeanVariance GaussianDiffusion::p_mean_variance_from_output(const at::Tensor& model_output, const at::Tensor& x,
                                                             const at::Tensor& t, bool clip_denoised) const {
  TORCH_CHECK(x.dim() >= 2, "p_mean_variance: x must be (N, C, ...), got ", x.sizes());
  const int64_t C = x.size(1);
  std::vector<int64_t> expected(x.sizes().begin(), x.sizes().end());
  if (is_learned(var_type_)) expected[1] = 2 * C;
  TORCH_CHECK(model_output.sizes() == at::IntArrayRef(expected), "p_mean_variance: model output has shape ",
              model_output.sizes(), ", expected ", at::IntArrayRef(expected), " for variance type ",
              to_string(var_type_), " (C = ", C, " channels of x)");
  const auto& a = arrays_;
  at::Tensor out = model_output, variance, log_variance;
  if (is_learned(var_type_)) {
    out = model_output.narrow(1, 0, C);
    const at::Tensor var_values = model_output.narrow(1, C, C);  // (N, C, H, W)
    if (var_type_ == ModelVarType::kLearned) {
      log_variance = var_values;
    } else {
      const at::Tensor min_log = extract(a.posterior_log_variance_clipped, t, x);
      const at::Tensor max_log = extract(a.log_betas, t, x);
      const at::Tensor frac = (var_values + 1.0) / 2.0;
      log_variance = frac * max_log + (1.0 - frac) * min_log;
    }
    variance = at::exp(log_variance);
  } else if (var_type_ == ModelVarType::kFixedLarge) {
    variance = extract(a.fixed_large_variance, t, x).expand(x.sizes());
    log_variance = extract(a.fixed_large_log_variance, t, x).expand(x.sizes());
  } else {
    variance = extract(a.posterior_variance, t, x).expand(x.sizes());
    log_variance = extract(a.posterior_log_variance_clipped, t, x).expand(x.sizes());
  }

  auto process = [clip_denoised](const at::Tensor& x0) { return clip_denoised ? x0.clamp(-1.0, 1.0) : x0; };
  at::Tensor pred_xstart, mean;
  switch (mean_type_) {
    case ModelMeanType::kPreviousX:
      pred_xstart = process(predict_xstart_from_xprev(x, t, out));
      mean = out;
      break;
    case ModelMeanType::kStartX:
      pred_xstart = process(out);
      break;
    case ModelMeanType::kEpsilon:
      pred_xstart = process(predict_xstart_from_eps(x, t, out));
      break;
    case ModelMeanType::kVelocity:
      pred_xstart = process(predict_xstart_from_v(x, t, out));
      break;
  }
  if (!mean.defined()) mean = q_posterior_mean_variance(pred_xstart, x, t).mean;
  return {mean, variance, log_variance, pred_xstart};
}

at::Tensor GaussianDiffusion::predict_xstart_from_eps(const at::Tensor& x_t, const at::Tensor& t,
                                                      const at::Tensor& eps) const {
  return extract(arrays_.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
         extract(arrays_.sqrt_recipm1_alphas_cumprod, t, x_t) * eps;
}

at::Tensor GaussianDiffusion::predict_xstart_from_v(const at::Tensor& x_t, const at::Tensor& t,
                                                    const at::Tensor& v) const {
  return extract(arrays_.sqrt_alphas_cumprod, t, x_t) * x_t -
         extract(arrays_.sqrt_one_minus_alphas_cumprod, t, x_t) * v;
}

at::Tensor GaussianDiffusion::predict_xstart_from_xprev(const at::Tensor& x_t, const at::Tensor& t,
                                                        const at::Tensor& xprev) const {
  return extract(arrays_.recip_posterior_mean_coef1, t, x_t) * xprev -
         extract(arrays_.posterior_mean_coef2_over_coef1, t, x_t) * x_t;
}

at::Tensor GaussianDiffusion::predict_eps_from_xstart(const at::Tensor& x_t, const at::Tensor& t,
                                                      const at::Tensor& pred_xstart) const {
  return (extract(arrays_.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) /
         extract(arrays_.sqrt_recipm1_alphas_cumprod, t, x_t);
}

at::Tensor GaussianDiffusion::v_target(const at::Tensor& x_start, const at::Tensor& t, const at::Tensor& noise) const {
  return extract(arrays_.sqrt_alphas_cumprod, t, x_start) * noise -
         extract(arrays_.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start;
}

}  // namespace ddpm::diffusion
