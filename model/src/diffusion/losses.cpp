// GaussianDiffusion's training losses (MSE, hybrid with stop-gradient, VLB) and bits/dim; see
// ddpm/model/diffusion/gaussian_diffusion.h and docs/DESIGN.md section 2.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/ops/gaussian.h"

namespace ddpm::diffusion {

namespace {
const double kLn2 = std::numbers::ln2;

at::Tensor batch_of(int64_t t, int64_t n, const c10::Device& device) {
  return at::full({n}, t, at::TensorOptions().dtype(at::kLong).device(device));
}
}  // namespace

LossTerms GaussianDiffusion::training_losses(const ModelFn& model, const at::Tensor& x_start, const at::Tensor& t,
                                             const at::Tensor& noise) const {
  const at::Tensor x_t = q_sample(x_start, t, noise);  // (N, C, H, W)
  return training_losses_from_output(call_model(model, x_t, t), x_start, x_t, t, noise);
}

LossTerms GaussianDiffusion::training_losses_from_output(const at::Tensor& model_output, const at::Tensor& x_start,
                                                         const at::Tensor& x_t, const at::Tensor& t,
                                                         const at::Tensor& noise) const {
  TORCH_CHECK(noise.sizes() == x_start.sizes() && x_t.sizes() == x_start.sizes(), "training_losses: x_start ",
              x_start.sizes(), ", x_t ", x_t.sizes(), ", noise ", noise.sizes(), " must have one shape");
  LossTerms terms;
  const double T = static_cast<double>(num_timesteps());
  if (is_vb(loss_type_)) {
    terms.loss = vb_terms_bpd_from_output(model_output, x_start, x_t, t, /*clip_denoised=*/false).output;
    if (loss_type_ == LossType::kRescaledKl) terms.loss = terms.loss * T;
    return terms;
  }

  const int64_t C = x_t.size(1);
  at::Tensor out = model_output;  // (N, C, H, W) mean part
  if (is_learned(var_type_)) {
    TORCH_CHECK(model_output.dim() == x_t.dim() && model_output.size(1) == 2 * C, "training_losses: model output ",
                model_output.sizes(), " must have 2C = ", 2 * C, " channels for variance type ", to_string(var_type_));
    out = model_output.narrow(1, 0, C);
    // Stop-gradient: the vb term sees the mean part detached, so it trains only the variance.
    const at::Tensor frozen = at::cat({out.detach(), model_output.narrow(1, C, C)}, 1);
    terms.vb = vb_terms_bpd_from_output(frozen, x_start, x_t, t, /*clip_denoised=*/false).output;
    // lambda * L_vlb with lambda = 0.001: the vb sums T terms, the MSE is one of them.
    if (loss_type_ == LossType::kRescaledMse) terms.vb = terms.vb * (T / 1000.0);
  }
  at::Tensor target;
  switch (mean_type_) {
    case ModelMeanType::kPreviousX: target = q_posterior_mean_variance(x_start, x_t, t).mean; break;
    case ModelMeanType::kStartX: target = x_start; break;
    case ModelMeanType::kEpsilon: target = noise; break;
    case ModelMeanType::kVelocity: target = v_target(x_start, t, noise); break;
  }
  TORCH_CHECK(out.sizes() == target.sizes(), "training_losses: model output (mean part) ", out.sizes(),
              " vs target ", target.sizes());
  terms.mse = ops::mean_flat((target - out).pow(2));
  terms.loss = terms.vb.defined() ? terms.mse + terms.vb : terms.mse;
  return terms;
}

VbTerms GaussianDiffusion::vb_terms_bpd_from_output(const at::Tensor& model_output, const at::Tensor& x_start,
                                                    const at::Tensor& x_t, const at::Tensor& t,
                                                    bool clip_denoised) const {
  const MeanVariance q = q_posterior_mean_variance(x_start, x_t, t);
  const PMeanVariance p = p_mean_variance_from_output(model_output, x_t, t, clip_denoised);
  const at::Tensor kl = ops::mean_flat(ops::normal_kl(q.mean, q.log_variance, p.mean, p.log_variance)) / kLn2;
  const at::Tensor decoder_nll =
      -ops::mean_flat(ops::discretized_gaussian_log_likelihood(x_start, p.mean, 0.5 * p.log_variance)) / kLn2;
  // (N): the decoder NLL where t == 0, the KL elsewhere.
  const at::Tensor output = at::where(t.to(kl.device()) == 0, decoder_nll, kl);
  return {output, p.pred_xstart, p.mean, p.log_variance};
}

at::Tensor GaussianDiffusion::prior_bpd(const at::Tensor& x_start) const {
  const at::Tensor t = batch_of(num_timesteps() - 1, x_start.size(0), x_start.device());
  const MeanVariance q = q_mean_variance(x_start, t);
  const at::Tensor zero = at::zeros_like(x_start);
  return ops::mean_flat(ops::normal_kl(q.mean, q.log_variance, zero, zero)) / kLn2;
}

BpdTerms GaussianDiffusion::calc_bpd_loop(const ModelFn& model, const at::Tensor& x_start, bool clip_denoised,
                                          std::optional<at::Generator> generator, const at::Tensor& noise,
                                          int64_t t_batch) const {
  const int64_t T = num_timesteps(), N = x_start.size(0);
  TORCH_CHECK(t_batch >= 1, "calc_bpd_loop: t_batch must be >= 1, got ", t_batch);
  if (noise.defined()) {
    TORCH_CHECK(noise.dim() == x_start.dim() + 1 && noise.size(0) == T && noise.sizes().slice(1) == x_start.sizes(),
                "calc_bpd_loop: noise must be (T = ", T, ", ", x_start.sizes(), "), got ", noise.sizes());
  }
  std::vector<at::Tensor> vb(T), xstart_mse(T), mse(T);
  for (int64_t hi = T - 1; hi >= 0; hi -= t_batch) {
    const int64_t lo = std::max<int64_t>(0, hi - t_batch + 1), K = hi - lo + 1;  // steps hi, hi-1, ..., lo
    std::vector<at::Tensor> eps_k;
    for (int64_t i = hi; i >= lo; --i) {  // drawn in the order of the one-step loop: same generator stream
      eps_k.push_back(noise.defined() ? noise[i].to(x_start.options())
                                      : at::randn(x_start.sizes(), generator, x_start.options()));
    }
    const at::Tensor eps = at::cat(eps_k, 0);                          // (K N, C, H, W), step hi first
    std::vector<int64_t> reps(x_start.dim(), 1);
    reps[0] = K;
    const at::Tensor x0 = K == 1 ? x_start : x_start.repeat(reps);  // (K N, C, H, W)
    const at::Tensor t = at::arange(hi, lo - 1, -1, at::TensorOptions().dtype(at::kLong).device(x_start.device()))
                             .repeat_interleave(N);                   // (K N)
    const at::Tensor x_t = q_sample(x0, t, eps);
    const VbTerms out = vb_terms_bpd_from_output(call_model(model, x_t, t), x0, x_t, t, clip_denoised);
    const at::Tensor xs_mse = ops::mean_flat((out.pred_xstart - x0).pow(2));
    const at::Tensor e_mse = ops::mean_flat((predict_eps_from_xstart(x_t, t, out.pred_xstart) - eps).pow(2));
    for (int64_t k = 0; k < K; ++k) {
      vb[hi - k] = out.output.narrow(0, k * N, N);
      xstart_mse[hi - k] = xs_mse.narrow(0, k * N, N);
      mse[hi - k] = e_mse.narrow(0, k * N, N);
    }
  }
  BpdTerms r;
  r.vb = at::stack(vb, 1);  // (N, T)
  r.xstart_mse = at::stack(xstart_mse, 1);
  r.mse = at::stack(mse, 1);
  r.prior_bpd = prior_bpd(x_start);
  r.total_bpd = r.vb.sum(1) + r.prior_bpd;
  return r;
}

}  // namespace ddpm::diffusion
