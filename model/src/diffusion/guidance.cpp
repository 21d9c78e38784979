// Classifier guidance (Dhariwal & Nichol 2021): the gradient of a classifier's log p(y | x_t, t)
// and the two ways the samplers use it, condition_mean (ancestral) and condition_score (DDIM);
// see ddpm/model/diffusion/gaussian_diffusion.h.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "ddpm/model/diffusion/gaussian_diffusion.h"

namespace ddpm::diffusion {

at::Tensor GaussianDiffusion::call_cond_fn(const CondFn& cond_fn, const at::Tensor& x, const at::Tensor& t) const {
  const at::Tensor g = cond_fn(x, original_timesteps(t));  // (N, C, H, W)
  TORCH_CHECK(g.sizes() == x.sizes(), "cond_fn: the gradient has shape ", g.sizes(), ", x has ", x.sizes());
  return g;
}

at::Tensor GaussianDiffusion::condition_mean(const CondFn& cond_fn, const PMeanVariance& out, const at::Tensor& x,
                                             const at::Tensor& t) const {
  // mu + Sigma * s grad_x log p(y | x_t): the mean of the Gaussian p(x_{t-1} | x_t) shifted by the
  // gradient, scaled by the step's variance (Sohl-Dickstein et al. 2015).
  return out.mean + out.variance * call_cond_fn(cond_fn, x, t).to(out.mean.scalar_type());
}

PMeanVariance GaussianDiffusion::condition_score(const CondFn& cond_fn, const PMeanVariance& out, const at::Tensor& x,
                                                 const at::Tensor& t) const {
  // The score of p(x_t | y) = score of p(x_t) + grad log p(y | x_t); with score = -eps / sqrt(1 - abar):
  // eps' = eps - sqrt(1 - abar_t) s grad (Song et al. 2021). x_0 and the mean are re-derived from eps'.
  const at::Tensor alpha_bar = extract(arrays_.alphas_cumprod, t, x);
  const at::Tensor eps = predict_eps_from_xstart(x, t, out.pred_xstart) -
                         at::sqrt(1.0 - alpha_bar) * call_cond_fn(cond_fn, x, t).to(x.scalar_type());
  PMeanVariance guided = out;
  guided.pred_xstart = predict_xstart_from_eps(x, t, eps);
  guided.mean = q_posterior_mean_variance(guided.pred_xstart, x, t).mean;
  return guided;
}

CondFn classifier_cond_fn(LogitsFn logits_fn, at::Tensor labels, double scale) {
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "classifier_cond_fn: labels must be (N) int64");
  return [logits_fn = std::move(logits_fn), labels, scale](const at::Tensor& x_t, const at::Tensor& t) {
    at::AutoGradMode grad_on(true);  // samplers run under no_grad
    const at::Tensor x_in = x_t.detach().requires_grad_(true);
    const at::Tensor logits = logits_fn(x_in, t);  // (N, K)
    TORCH_CHECK(logits.dim() == 2 && logits.size(0) == x_t.size(0), "classifier_cond_fn: logits must be (N, K), got ",
                logits.sizes());
    const at::Tensor y = labels.to(x_t.device(), at::kLong).unsqueeze(1);                 // (N, 1)
    const at::Tensor l = logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);
    const at::Tensor selected = at::log_softmax(l, 1).gather(1, y);                      // (N, 1) log p(y | x_t)
    return torch::autograd::grad({selected.sum()}, {x_in})[0] * scale;                   // (N, C, H, W)
  };
}

}  // namespace ddpm::diffusion
