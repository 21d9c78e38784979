// GaussianDiffusion's samplers: ancestral p_sample, DDIM with eta (both optionally classifier-guided),
// DDIM inversion, and their loops;
// see ddpm/model/diffusion/gaussian_diffusion.h.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <stdexcept>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

namespace {
at::Tensor step_noise(const at::Tensor& x, std::optional<at::Generator> generator, const at::Tensor& noise) {
  if (noise.defined()) {
    TORCH_CHECK(noise.sizes() == x.sizes(), "sampling: noise ", noise.sizes(), " vs x ", x.sizes());
    return noise.to(x.options());
  }
  return at::randn(x.sizes(), generator, x.options());
}

// 1 where t != 0, shaped (N, 1, ..., 1) in x's dtype: no noise is added on the last step.
at::Tensor nonzero_mask(const at::Tensor& t, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  return (t != 0).to(x.options()).view(shape);
}

at::Tensor batch_of(int64_t t, int64_t n, const c10::Device& device) {
  return at::full({n}, t, at::TensorOptions().dtype(at::kLong).device(device));
}
}  // namespace

at::Tensor GaussianDiffusion::initial_noise(at::IntArrayRef shape, const at::TensorOptions& options,
                                            const SampleOptions& opts) const {
  if (opts.noise.defined()) {
    TORCH_CHECK(opts.noise.sizes() == shape, "sampling: initial noise ", opts.noise.sizes(), " vs shape ", shape);
    return opts.noise.to(options);
  }
  return at::randn(shape, opts.generator, options);
}

SampleStep GaussianDiffusion::p_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                       bool clip_denoised, std::optional<at::Generator> generator,
                                       const at::Tensor& noise, const CondFn& cond_fn) const {
  const PMeanVariance out = p_mean_variance(model, x, t, clip_denoised);
  const at::Tensor mean = cond_fn ? condition_mean(cond_fn, out, x, t) : out.mean;
  const at::Tensor z = step_noise(x, generator, noise);
  const at::Tensor sample = mean + nonzero_mask(t, x) * at::exp(0.5 * out.log_variance) * z;
  return {sample, out.pred_xstart};
}

at::Tensor GaussianDiffusion::p_sample_loop(const ModelFn& model, at::IntArrayRef shape,
                                            const at::TensorOptions& options, const SampleOptions& opts) const {
  at::Tensor img = initial_noise(shape, options, opts);  // x_T, (N, C, H, W)
  const int64_t T = num_timesteps();
  for (int64_t i = T - 1; i >= 0; --i) {
    img = p_sample(model, img, batch_of(i, img.size(0), img.device()), opts.clip_denoised, opts.generator, {},
                   opts.cond_fn)
              .sample;
    if (opts.progress) opts.progress(T - i, T);
  }
  return img;
}

SampleStep GaussianDiffusion::ddim_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                          bool clip_denoised, double eta, std::optional<at::Generator> generator,
                                          const at::Tensor& noise, const CondFn& cond_fn) const {
  PMeanVariance out = p_mean_variance(model, x, t, clip_denoised);
  if (cond_fn) out = condition_score(cond_fn, out, x, t);
  // Re-derive eps from the (possibly clipped) x_0 prediction, whatever the network predicts.
  const at::Tensor eps = predict_eps_from_xstart(x, t, out.pred_xstart);
  const at::Tensor alpha_bar = extract(arrays_.alphas_cumprod, t, x);
  const at::Tensor alpha_bar_prev = extract(arrays_.alphas_cumprod_prev, t, x);
  const at::Tensor sigma =
      eta * at::sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) * at::sqrt(1.0 - alpha_bar / alpha_bar_prev);
  const at::Tensor mean_pred =
      out.pred_xstart * at::sqrt(alpha_bar_prev) + at::sqrt(1.0 - alpha_bar_prev - sigma.pow(2)) * eps;
  const at::Tensor z = step_noise(x, generator, noise);
  return {mean_pred + nonzero_mask(t, x) * sigma * z, out.pred_xstart};
}

at::Tensor GaussianDiffusion::ddim_sample_loop(const ModelFn& model, at::IntArrayRef shape,
                                               const at::TensorOptions& options, const SampleOptions& opts) const {
  at::Tensor img = initial_noise(shape, options, opts);  // x_T, (N, C, H, W)
  const int64_t T = num_timesteps();
  for (int64_t i = T - 1; i >= 0; --i) {
    const at::Tensor t = batch_of(i, img.size(0), img.device());
    // With eta = 0 no noise is drawn, so the generator's state is untouched.
    const at::Tensor z = opts.eta == 0.0 ? at::zeros_like(img) : at::Tensor();
    img = ddim_sample(model, img, t, opts.clip_denoised, opts.eta, opts.generator, z, opts.cond_fn).sample;
    if (opts.progress) opts.progress(T - i, T);
  }
  return img;
}

SampleStep GaussianDiffusion::ddim_reverse_sample(const ModelFn& model, const at::Tensor& x, const at::Tensor& t,
                                                  bool clip_denoised, double eta) const {
  if (eta != 0.0) throw std::invalid_argument("ddim_reverse_sample: eta must be 0 (the inversion is deterministic)");
  const PMeanVariance out = p_mean_variance(model, x, t, clip_denoised);
  const at::Tensor eps = predict_eps_from_xstart(x, t, out.pred_xstart);
  const at::Tensor alpha_bar_next = extract(arrays_.alphas_cumprod_next, t, x);
  const at::Tensor mean_pred = out.pred_xstart * at::sqrt(alpha_bar_next) + at::sqrt(1.0 - alpha_bar_next) * eps;
  return {mean_pred, out.pred_xstart};
}

at::Tensor GaussianDiffusion::ddim_reverse_sample_loop(const ModelFn& model, const at::Tensor& x_start,
                                                       const SampleOptions& opts) const {
  at::Tensor img = x_start;
  const int64_t T = num_timesteps();
  for (int64_t i = 0; i < T; ++i) {
    img = ddim_reverse_sample(model, img, batch_of(i, img.size(0), img.device()), opts.clip_denoised).sample;
    if (opts.progress) opts.progress(i + 1, T);
  }
  return img;
}

}  // namespace ddpm::diffusion
