// GaussianDiffusion: the forward process q, the model's reverse process p, the training losses
// (simple MSE, hybrid, full VLB), bits/dim and the samplers (ancestral, DDIM, DDIM inversion) of
// Ho et al. 2020 and Nichol & Dhariwal 2021 with classifier guidance (Dhariwal & Nichol 2021), with improved-diffusion's decomposition (the network is
// a callable argument). Not the network (unet/) nor the training loop (trainer/).
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ddpm::diffusion {

// What the network predicts: x_{t-1}'s mean, x_0, eps, or v = sqrt(abar) eps - sqrt(1 - abar) x_0.
enum class ModelMeanType { kPreviousX, kStartX, kEpsilon, kVelocity };
// Sigma_t: posterior variance (fixed small), beta_t (fixed large), log Sigma output directly
// (learned), or an interpolation between the two fixed ones in the log domain (learned range).
enum class ModelVarType { kFixedSmall, kFixedLarge, kLearned, kLearnedRange };
// Simple MSE, MSE + vb (rescaled: vb * T/1000, the hybrid loss), L_vlb, and L_vlb * T.
enum class LossType { kMse, kRescaledMse, kKl, kRescaledKl };

// CLI spellings: eps|x0|prev|v, fixed-small|fixed-large|learned|learned-range,
// mse|rescaled-mse|kl|rescaled-kl. parse_* throw std::invalid_argument listing the known names.
ModelMeanType parse_mean_type(const std::string& s);
ModelVarType parse_var_type(const std::string& s);
LossType parse_loss_type(const std::string& s);
std::string to_string(ModelMeanType m);
std::string to_string(ModelVarType v);
std::string to_string(LossType l);
bool is_learned(ModelVarType v);  // the network outputs 2C channels
bool is_vb(LossType l);           // kKl or kRescaledKl

// The network: x_t (N, C, H, W) and timesteps t (N) -> output (N, C or 2C, H, W). t holds original
// (unrespaced) int64 indices, or float32 values in [0, 1000) when rescale_timesteps is on. Labels
// and other conditioning are bound by the caller in a lambda.
using ModelFn = std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t)>;

// Classifier guidance (Dhariwal & Nichol 2021). A CondFn returns s * grad_x log p(y | x_t, t)
// (N, C, H, W) like x_t, for x_t and the ORIGINAL (unrespaced) int64 timestep indices t, so a
// classifier trained on the full schedule sees the t it was trained on whatever the respacing;
// the labels y and the scale s are bound by the caller. A LogitsFn is a classifier: x_t and
// original int64 t -> logits (N, K).
using CondFn = std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t)>;
using LogitsFn = std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t)>;
// guided-diffusion's cond_fn: scale * grad_x log_softmax(logits_fn(x_t, t))[y] by autograd
// (turned on inside, so it works under the samplers' no_grad). labels (N) int64.
CondFn classifier_cond_fn(LogitsFn logits_fn, at::Tensor labels, double scale);

// Every array of the schedule, float64 (T) on the CPU, with the papers' names.
struct ScheduleArrays {
  at::Tensor betas, alphas_cumprod, alphas_cumprod_prev, alphas_cumprod_next;
  at::Tensor sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, log_one_minus_alphas_cumprod;
  at::Tensor sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod;
  at::Tensor posterior_variance;              // beta (1 - abar_prev) / (1 - abar); 0 at t = 0
  at::Tensor posterior_log_variance_clipped;  // log of it with entry 0 replaced by entry 1
  at::Tensor posterior_mean_coef1, posterior_mean_coef2;
  // Derived for p: fixed-large variance (beta_t, posterior_variance[1] at t = 0) and its log,
  // log(beta_t), and the coefficients that invert the posterior mean for x_0.
  at::Tensor fixed_large_variance, fixed_large_log_variance, log_betas;
  at::Tensor recip_posterior_mean_coef1, posterior_mean_coef2_over_coef1;
};
ScheduleArrays make_schedule_arrays(const std::vector<double>& betas);

struct MeanVariance {
  at::Tensor mean, variance, log_variance;  // (N, C, H, W) each
};
struct PMeanVariance {
  at::Tensor mean, variance, log_variance, pred_xstart;  // (N, C, H, W) each
};
// Per-sample loss terms (N); `mse` and `vb` are undefined tensors where the loss type has none
// (mse: MSE types; vb: MSE types with a learned variance).
struct LossTerms {
  at::Tensor loss, mse, vb;
};
// One L_t term in bits/dim (N) and what produced it.
struct VbTerms {
  at::Tensor output, pred_xstart, model_mean, model_log_variance;
};
struct SampleStep {
  at::Tensor sample, pred_xstart;  // (N, C, H, W)
};
// Bits/dim of x_start over all T steps. Columns of the (N, T) terms are indexed by t.
struct BpdTerms {
  at::Tensor total_bpd, prior_bpd;  // (N)
  at::Tensor vb, xstart_mse, mse;   // (N, T)
};

struct SampleOptions {
  bool clip_denoised = true;                  // clip predicted x_0 to [-1, 1]
  double eta = 0.0;                           // DDIM only: 0 deterministic, 1 ancestral-like
  std::optional<at::Generator> generator;     // on the samples' device; the default one if unset
  at::Tensor noise;                           // the starting x_T; drawn when undefined
  std::function<void(int64_t done, int64_t total)> progress;  // after each step, done = 1..total
  CondFn cond_fn;  // classifier guidance when set: condition_mean (ancestral), condition_score (DDIM)
};

class GaussianDiffusion {
 public:
  // betas (T) in (0, 1). timestep_map[i] is the original index of step i (identity when empty;
  // set by respacing) and original_num_steps the original T (used by rescale_timesteps).
  GaussianDiffusion(std::vector<double> betas, ModelMeanType mean_type, ModelVarType var_type,
                    LossType loss_type, bool rescale_timesteps = false,
                    std::vector<int64_t> timestep_map = {}, int64_t original_num_steps = 0);

  int64_t num_timesteps() const { return static_cast<int64_t>(betas_.size()); }
  ModelMeanType mean_type() const { return mean_type_; }
  ModelVarType var_type() const { return var_type_; }
  LossType loss_type() const { return loss_type_; }
  bool rescale_timesteps() const { return rescale_timesteps_; }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<int64_t>& timestep_map() const { return timestep_map_; }
  const ScheduleArrays& arrays() const { return arrays_; }

  // arr[t] in like's dtype and device, shaped (N, 1, ..., 1) to broadcast against like.
  at::Tensor extract(const at::Tensor& arr, const at::Tensor& t, const at::Tensor& like) const;
  // What the network sees for steps t (N): original indices, as float32 * 1000/T0 if rescaling.
  at::Tensor model_timesteps(const at::Tensor& t) const;
  // The original (unrespaced) int64 indices of steps t (N): what a CondFn receives.
  at::Tensor original_timesteps(const at::Tensor& t) const;
  at::Tensor call_model(const ModelFn& model, const at::Tensor& x_t, const at::Tensor& t) const;

  // --- forward process q ---
  MeanVariance q_mean_variance(const at::Tensor& x_start, const at::Tensor& t) const;
  at::Tensor q_sample(const at::Tensor& x_start, const at::Tensor& t, const at::Tensor& noise) const;
  MeanVariance q_posterior_mean_variance(const at::Tensor& x_start, const at::Tensor& x_t,
                                         const at::Tensor& t) const;

  // --- reverse process p ---
  PMeanVariance p_mean_variance(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                bool clip_denoised) const;
  // The same from a network output already computed on (x, t); (N, C or 2C, H, W).
  PMeanVariance p_mean_variance_from_output(const at::Tensor& model_output, const at::Tensor& x,
                                            const at::Tensor& t, bool clip_denoised) const;
  at::Tensor predict_xstart_from_eps(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& eps) const;
  at::Tensor predict_xstart_from_v(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& v) const;
  at::Tensor predict_xstart_from_xprev(const at::Tensor& x_t, const at::Tensor& t,
                                       const at::Tensor& xprev) const;
  at::Tensor predict_eps_from_xstart(const at::Tensor& x_t, const at::Tensor& t,
                                     const at::Tensor& pred_xstart) const;
  // v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_start (Salimans & Ho 2022).
  at::Tensor v_target(const at::Tensor& x_start, const at::Tensor& t, const at::Tensor& noise) const;

  // --- losses (losses.cpp) ---
  // x_t = q_sample(x_start, t, noise), one network call, then training_losses_from_output.
  LossTerms training_losses(const ModelFn& model, const at::Tensor& x_start, const at::Tensor& t,
                            const at::Tensor& noise) const;
  // The losses for a network output computed on (x_t, t). vb uses the output's mean part detached
  // (stop-gradient) under the MSE loss types, so it trains only the variance.
  LossTerms training_losses_from_output(const at::Tensor& model_output, const at::Tensor& x_start,
                                        const at::Tensor& x_t, const at::Tensor& t,
                                        const at::Tensor& noise) const;
  // L_t in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, the decoder NLL at t = 0.
  VbTerms vb_terms_bpd_from_output(const at::Tensor& model_output, const at::Tensor& x_start,
                                   const at::Tensor& x_t, const at::Tensor& t, bool clip_denoised) const;
  // KL(q(x_T | x_0) || N(0, I)) in bits/dim, (N).
  at::Tensor prior_bpd(const at::Tensor& x_start) const;
  // noise: (T, N, C, H, W) with noise[t] used at step t, or undefined to draw it from generator.
  // t_batch > 1 evaluates that many timesteps in one network call (a batch of t_batch * N): the
  // same terms up to the network's floating-point batch effects, T / t_batch calls instead of T.
  BpdTerms calc_bpd_loop(const ModelFn& model, const at::Tensor& x_start, bool clip_denoised,
                         std::optional<at::Generator> generator = std::nullopt,
                         const at::Tensor& noise = {}, int64_t t_batch = 1) const;

  // --- classifier guidance (guidance.cpp); out = p_mean_variance(model, x, t, ...) ---
  // Ancestral: the mean shifted by the step's variance times the gradient, mu + Sigma s grad.
  at::Tensor condition_mean(const CondFn& cond_fn, const PMeanVariance& out, const at::Tensor& x,
                            const at::Tensor& t) const;
  // DDIM: eps' = eps - sqrt(1 - alpha_bar_t) s grad, with eps re-derived from out.pred_xstart;
  // returns out with pred_xstart and mean re-derived from eps' (not clipped again).
  PMeanVariance condition_score(const CondFn& cond_fn, const PMeanVariance& out, const at::Tensor& x,
                                const at::Tensor& t) const;

  // --- sampling (sampling.cpp); noise undefined = drawn from the generator; cond_fn set =
  // classifier guidance (condition_mean for p_sample, condition_score for ddim_sample) ---
  // x_{t-1} ~ p(x_{t-1} | x_t), no noise added where t == 0.
  SampleStep p_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t, bool clip_denoised,
                      std::optional<at::Generator> generator = std::nullopt, const at::Tensor& noise = {},
                      const CondFn& cond_fn = {}) const;
  at::Tensor p_sample_loop(const ModelFn& model, at::IntArrayRef shape, const at::TensorOptions& options,
                           const SampleOptions& opts = {}) const;
  SampleStep ddim_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t, bool clip_denoised,
                         double eta, std::optional<at::Generator> generator = std::nullopt,
                         const at::Tensor& noise = {}, const CondFn& cond_fn = {}) const;
  at::Tensor ddim_sample_loop(const ModelFn& model, at::IntArrayRef shape, const at::TensorOptions& options,
                              const SampleOptions& opts = {}) const;
  // Deterministic DDIM step from x_t to x_{t+1} (inversion); eta must be 0.
  SampleStep ddim_reverse_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                 bool clip_denoised, double eta = 0.0) const;
  // x_0 -> x_T by T reverse steps (eta, noise and generator of opts are not used).
  at::Tensor ddim_reverse_sample_loop(const ModelFn& model, const at::Tensor& x_start,
                                      const SampleOptions& opts = {}) const;

 private:
  struct DeviceCache;
  at::Tensor initial_noise(at::IntArrayRef shape, const at::TensorOptions& options,
                           const SampleOptions& opts) const;
  at::Tensor call_cond_fn(const CondFn& cond_fn, const at::Tensor& x, const at::Tensor& t) const;

  std::vector<double> betas_;
  ModelMeanType mean_type_;
  ModelVarType var_type_;
  LossType loss_type_;
  bool rescale_timesteps_;
  std::vector<int64_t> timestep_map_;
  int64_t original_num_steps_;
  ScheduleArrays arrays_;
  at::Tensor timestep_map_tensor_;  // (T) int64, CPU
  std::shared_ptr<DeviceCache> cache_;  // device copies of the arrays, made on first use
};

}  // namespace ddpm::diffusion
