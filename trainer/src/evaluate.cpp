// Distributed bits/dim: each rank runs calc_bpd_loop (or, for the probability-flow ODE,
// ode_log_likelihood) over its share in batches with noise per global image index, then the
// per-image sums are all-reduced in float64; see inference.h.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "ddpm/dist/communicator.h"
#include "ddpm/model/diffusion/ode_likelihood.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

namespace {

// Images per network call of the bits/dim loop (timesteps batched): T calls of `batch_size`
// images leave a GPU idle; on the CPU larger batches help a little too.
constexpr int64_t kBpdImagesPerCall = 256;

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous().cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// This rank's float64 sums [count, ...] added over every rank, on the host, with the count of
// images; throws naming `what` when no rank had any.
std::pair<at::Tensor, int64_t> sum_over_ranks(const at::Tensor& sums, dist::Communicator& comm, const char* what) {
  at::Tensor reduced = sums.to(comm.device());
  comm.all_reduce(reduced, dist::ReduceOp::kSum);
  reduced = reduced.cpu();
  const auto count = static_cast<int64_t>(reduced[0].item<double>() + 0.5);
  TORCH_CHECK(count > 0, what, ": no images on any rank");
  return {reduced, count};
}

}  // namespace

BpdSummary evaluate_bpd(model::UNet& unet, const diffusion::GaussianDiffusion& diffusion, const at::Tensor& images,
                        int64_t first, int64_t batch_size, bool clip_denoised, uint64_t seed,
                        dist::Communicator& comm, const c10::Device& device,
                        const std::function<void(int64_t, int64_t)>& progress) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "evaluate_bpd: images must be uint8 (N, H, W, C)");
  TORCH_CHECK(batch_size > 0, "evaluate_bpd: batch_size must be > 0");
  torch::NoGradGuard no_grad;
  const int64_t T = diffusion.num_timesteps(), n = images.size(0);
  const int64_t C = images.size(3), H = images.size(1), W = images.size(2);
  // Sums over this rank's images: [count, total, prior, vb (T), mse (T), xstart_mse (T)], float64.
  at::Tensor sums = at::zeros({3 + 3 * T}, at::kDouble);
  const int64_t batches = (n + batch_size - 1) / batch_size;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t lo = b * batch_size, hi = std::min(n, lo + batch_size);
    const at::Tensor x = to_model_input(images.slice(0, lo, hi)).to(device);  // (B, C, H, W)
    std::vector<int64_t> idx;
    for (int64_t i = first + lo; i < first + hi; ++i) idx.push_back(i);
    // (T, B, C, H, W), drawn on the evaluation's device
    const at::Tensor noise = per_sample_normal(seed, idx, {T, C, H, W}, device).transpose(0, 1).contiguous();
    // Several timesteps per network call: about kBpdImagesPerCall images a forward pass.
    const int64_t t_batch = std::clamp<int64_t>(kBpdImagesPerCall / (hi - lo), 1, T);
    const diffusion::BpdTerms terms =
        diffusion.calc_bpd_loop(model_fn(unet), x, clip_denoised, std::nullopt, noise, t_batch);
    sums[0].add_(static_cast<double>(hi - lo));
    sums[1].add_(terms.total_bpd.to(at::kDouble).sum().cpu());
    sums[2].add_(terms.prior_bpd.to(at::kDouble).sum().cpu());
    sums.slice(0, 3, 3 + T).add_(terms.vb.to(at::kDouble).sum(0).cpu());
    sums.slice(0, 3 + T, 3 + 2 * T).add_(terms.mse.to(at::kDouble).sum(0).cpu());
    sums.slice(0, 3 + 2 * T, 3 + 3 * T).add_(terms.xstart_mse.to(at::kDouble).sum(0).cpu());
    if (progress) progress(b + 1, batches);
  }
  const auto [reduced, count] = sum_over_ranks(sums, comm, "evaluate_bpd");
  BpdSummary s;
  s.num_timesteps = T;
  s.count = count;
  const at::Tensor mean = reduced / static_cast<double>(s.count);
  s.total_bpd = mean[1].item<double>();
  s.prior_bpd = mean[2].item<double>();
  s.vb = to_vector(mean.slice(0, 3, 3 + T));
  s.mse = to_vector(mean.slice(0, 3 + T, 3 + 2 * T));
  s.xstart_mse = to_vector(mean.slice(0, 3 + 2 * T, 3 + 3 * T));
  int64_t in_q[4] = {0, 0, 0, 0};
  for (int64_t t = 0; t < T; ++t) {
    const int64_t q = 4 * t / T;
    ++in_q[q];
    s.vb_q[q] += s.vb[t];
    s.mse_q[q] += s.mse[t];
    s.xstart_mse_q[q] += s.xstart_mse[t];
  }
  for (int q = 0; q < 4; ++q) {
    if (in_q[q] == 0) continue;
    s.mse_q[q] /= static_cast<double>(in_q[q]);
    s.xstart_mse_q[q] /= static_cast<double>(in_q[q]);
  }
  return s;
}

namespace {

// Freezes a network's parameters for the lifetime of the guard (the ODE likelihood differentiates
// through the network with respect to its input only).
class FrozenParameters {
 public:
  explicit FrozenParameters(model::UNet& unet) {
    for (auto& p : unet->parameters()) {
      if (p.requires_grad()) frozen_.push_back(p), p.requires_grad_(false);
    }
  }
  ~FrozenParameters() {
    for (auto& p : frozen_) p.requires_grad_(true);
  }
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<at::Tensor> frozen_;
};

}  // namespace

OdeBpdSummary evaluate_ode_bpd(model::UNet& unet, const diffusion::GaussianDiffusion& diffusion, const at::Tensor& images,
                               int64_t first, int64_t batch_size, int64_t steps, bool gaussian_probe, uint64_t seed,
                               dist::Communicator& comm, const c10::Device& device,
                               const std::function<void(int64_t, int64_t)>& progress) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "evaluate_ode_bpd: images must be uint8 (N, H, W, C)");
  TORCH_CHECK(batch_size > 0, "evaluate_ode_bpd: batch_size must be > 0");
  const FrozenParameters frozen(unet);
  const int64_t n = images.size(0), C = images.size(3), H = images.size(1), W = images.size(2);
  const double dims = static_cast<double>(C * H * W), ln2 = std::log(2.0), offset = std::log2(127.5);
  at::Tensor sums = at::zeros({4}, at::kDouble);  // [count, sum bpd, sum bpd^2, sum prior bpd] on this rank
  const int64_t batches = (n + batch_size - 1) / batch_size;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t lo = b * batch_size, hi = std::min(n, lo + batch_size);
    std::vector<at::Tensor> u, v;  // per image: dequantization U, then the probe
    for (int64_t i = first + lo; i < first + hi; ++i) {
      at::Generator g = sample_generator(seed, i);
      u.push_back(at::rand({C, H, W}, g, at::kFloat));
      v.push_back(gaussian_probe ? at::randn({C, H, W}, g, at::kFloat)
                                 : at::randint(0, 2, {C, H, W}, g, at::kFloat) * 2.0 - 1.0);
    }
    const at::Tensor pixels = images.slice(0, lo, hi).permute({0, 3, 1, 2}).to(at::kFloat);  // (B, C, H, W) 0..255
    const at::Tensor x = ((pixels - 0.5 + at::stack(u)) / 127.5 - 1.0).to(device);
    const diffusion::OdeLikelihood r =
        diffusion::ode_log_likelihood(diffusion, model_fn(unet), x, at::stack(v).to(device), steps);
    const at::Tensor bpd = (-r.log_p.cpu() / (dims * ln2) + offset);  // (B) float64
    sums[0].add_(static_cast<double>(hi - lo));
    sums[1].add_(bpd.sum());
    sums[2].add_(bpd.pow(2).sum());
    sums[3].add_((-r.prior_log_p.cpu() / (dims * ln2)).sum());
    if (progress) progress(b + 1, batches);
  }
  const auto [reduced, count] = sum_over_ranks(sums, comm, "evaluate_ode_bpd");
  OdeBpdSummary s;
  s.steps = steps;
  s.count = count;
  const double c = static_cast<double>(s.count);
  s.bpd = reduced[1].item<double>() / c;
  s.prior_bpd = reduced[3].item<double>() / c;
  const double var = s.count > 1 ? std::max(0.0, (reduced[2].item<double>() - c * s.bpd * s.bpd) / (c - 1.0)) : 0.0;
  s.bpd_std_error = std::sqrt(var / c);
  return s;
}

}  // namespace ddpm::trainer
