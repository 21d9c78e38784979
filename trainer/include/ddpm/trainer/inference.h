// Sampling and evaluation from a checkpoint (ddpm_sample, ddpm_eval): the model with raw or EMA
// weights and its config, classifier-free guidance as a ModelFn, noise drawn per global sample
// index (results do not depend on the rank count or batch size split), and a distributed
// bits/dim evaluation returning terms already reduced over ranks. Not the training loop.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/sde_samplers.h"
#include "ddpm/model/tensor_dict.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::trainer {

struct LoadedClassifier;  // classifier.h

// A checkpoint's weights for inference, whatever network they belong to: the run's config, the
// chosen weights (model.pt, or model.pt with an EMA's parameters swapped in) and where they came
// from. spec and ema as load_model's; `flag` / `ema_flag` name the options in errors.
struct CheckpointWeights {
  TrainConfig config;                 // the run's resolved config (state.json)
  model::TensorDict weights;
  std::string checkpoint, source;     // the folder loaded; the weights file (model.pt or ema_<rate>.pt)
  int64_t step = 0;
  std::optional<double> ema_rate;     // the EMA whose weights were chosen; empty = model.pt
  std::vector<double> available_ema_rates;
  model::TensorDict task_state;       // the task's checkpointed state (state.pt; latent runs: the autoencoder)
};
CheckpointWeights load_checkpoint_weights(const std::string& spec, const std::string& ema,
                                          const std::string& flag = "--checkpoint", const std::string& ema_flag = "--ema");

// A checkpoint's network, ready for inference (eval mode, no gradients needed).
struct LoadedModel {
  TrainConfig config;                 // the run's resolved config (state.json)
  model::UNet unet{nullptr};
  std::string checkpoint;             // the folder loaded
  int64_t step = 0;
  std::optional<double> ema_rate;     // the EMA whose weights were loaded; empty = model.pt
  std::vector<double> available_ema_rates;
  model::TensorDict task_state;       // the task's checkpointed state (state.pt; latent runs: the autoencoder)
};

// The checkpoint a spec names (a checkpoint folder, or a run dir's newest checkpoint that
// verifies), loaded and verified, and its folder. Throws CheckpointError naming `flag` and spec.
std::pair<TrainState, std::string> resolve_checkpoint(const std::string& spec, const std::string& flag = "--checkpoint");

// spec: a checkpoint folder (holding MANIFEST.json) or a run dir (its newest checkpoint that
// verifies). ema: "" = the checkpoint's first EMA rate (model.pt when it has none), "none" =
// model.pt, else a rate ("0.9999") that must be in the checkpoint. Throws CheckpointError /
// std::invalid_argument naming --checkpoint or --ema, what was found and the available rates, and
// for a checkpoint of a task without a U-Net to sample (a --task classifier run).
LoadedModel load_model(const std::string& spec, const std::string& ema, const c10::Device& device);

// Classifier-free guidance: with eps_c = net(x, t, labels) and eps_u = net(x, t, null label),
// the first `channels` output channels become eps_u + scale (eps_c - eps_u); the remaining
// (learned variance) channels are the conditional output's. One forward pass of 2N images.
// Throws std::invalid_argument when the network is not class-conditional.
diffusion::ModelFn guided_model_fn(model::UNet& unet, at::Tensor labels, double scale);

// Standard normal values of `shape` from a CPU generator seeded by (seed, index): the same
// numbers for a sample whatever rank or batch it lands in. (len(indices), *shape) float32.
// With a GPU `device` the generator is that device's (Philox), seeded alike, and the values are
// drawn there (no host draw and copy: T x C x H x W values an image for bits/dim): the same
// numbers for an index on every rank and in every batch on that kind of device, not the CPU's.
at::Generator sample_generator(uint64_t seed, int64_t index);
at::Generator sample_generator(uint64_t seed, int64_t index, const c10::Device& device);
at::Tensor per_sample_normal(uint64_t seed, const std::vector<int64_t>& indices, at::IntArrayRef shape,
                             const c10::Device& device = c10::kCPU);

struct SampleRequest {
  int64_t channels = 1, height = 8, width = 8;
  std::string respacing;      // "" = every step; "N", "a,b,c" or "ddimN"
  // "" = ancestral, or DDIM when respacing is "ddimN"; "ancestral", "ddim", or a score-SDE sampler
  // (diffusion::parse_sde_sampler: euler-maruyama, pf-ode-euler, pf-ode-heun, dpm-solver++2m),
  // which runs sde_steps steps over the diffusion it is given (pass the unrespaced one).
  std::string sampler;
  int64_t sde_steps = 0;      // SDE samplers: 1..T, 0 = T
  double dpm_lambda_min = diffusion::kDpmSolverLambdaMin;  // dpm-solver++2m's first step (sde_samplers.h)
  double eta = 0.0;           // DDIM only
  bool clip_denoised = true;
  uint64_t seed = 0;
  double guidance_scale = 1.0;  // used only with guidance
  bool guidance = false;        // classifier-free guidance (class-conditional models)
  int64_t class_label = -1;     // >= 0 a fixed class; -1 = random per sample (from seed, index)
  // Classifier guidance (ancestral and DDIM only) when set: scale * grad log p(y | x_t, t) of this
  // classifier (classifier.h); labels in [0, its classes) also for an unconditional model. Scale 0
  // draws the labels but leaves the sampler unguided.
  std::shared_ptr<LoadedClassifier> classifier;
  double classifier_scale = 1.0;
};

// Samples with global indices [begin, end) as one batch: x_T and every step's noise from each
// index's own generator (sample_generator(seed, index): label first (class-conditional model or
// classifier guidance), then x_T, then one draw per step that adds noise; the ODE samplers and
// DPM-Solver++ draw none after x_T). Returns images float (n, C, H, W) in [-1, 1] and labels int64 (n) (undefined for
// unconditional models).
struct SampleBatch {
  at::Tensor images, labels;
};
// The loop of sample_indices for any network: x_T and then every step's noise (req's C, H, W)
// drawn from gens[k] for the k-th sample (one generator per sample, advanced in place; draws made
// from them before are kept), ancestral, DDIM or a score-SDE sampler as req says. -> (n, C, H, W)
// float on the CPU, n = gens.size(). cond_fn: classifier guidance of the ancestral and DDIM steps
// (empty: none; the score-SDE samplers take none).
at::Tensor sample_with_generators(const diffusion::ModelFn& fn, const diffusion::GaussianDiffusion& diffusion,
                                  const SampleRequest& req, std::vector<at::Generator>& gens,
                                  const c10::Device& device, const diffusion::CondFn& cond_fn = {});
// (n, *shape) standard normal on `device`, one draw from each generator.
at::Tensor draw_per_sample(std::vector<at::Generator>& gens, at::IntArrayRef shape, const c10::Device& device);

SampleBatch sample_indices(LoadedModel& m, const diffusion::GaussianDiffusion& diffusion, const SampleRequest& req,
                           int64_t begin, int64_t end, const c10::Device& device);

// A network and its run's config as a function of global sample indices: [begin, end) ->
// images float (n, C, H, W) in [-1, 1] on the CPU, drawn by sample_indices with `req` (its
// respacing builds the diffusion once). The grids of training and every FID of a model use it.
// `unet` is held by reference.
using IndexSampler = std::function<at::Tensor(int64_t begin, int64_t end)>;
IndexSampler index_sampler(model::UNet& unet, const TrainConfig& config, const SampleRequest& req,
                           const c10::Device& device);

// True for a SampleRequest::sampler other than "", "ancestral" and "ddim".
bool is_sde_sampler(const std::string& sampler);

// --sampler and --steps of ddpm_sample and ddpm_eval --fid, checked together with the respacing
// flag (`respacing_flag`: --respacing or --fid-sampling): ancestral / ddim with steps N > 0 set
// `respacing` to "N" / "ddimN" (the same samples); a score-SDE sampler runs N steps (0 = T) over the
// unrespaced diffusion and takes no respacing; no sampler leaves `respacing` alone (ddimN = DDIM)
// and takes no steps. Throws std::invalid_argument naming the flags and the known samplers.
void resolve_sampler(const std::string& sampler, int64_t steps, std::string& respacing,
                     const std::string& respacing_flag = "--respacing");

// Contiguous share of `count` items for a rank: [count * r / W, count * (r + 1) / W).
std::pair<int64_t, int64_t> rank_range(int64_t count, int rank, int world_size);

// Bits/dim over a set of images, summed over every rank's share.
struct BpdSummary {
  int64_t count = 0;           // images evaluated
  int64_t num_timesteps = 0;   // T
  double total_bpd = 0.0;      // mean over images of the full bound (vb summed over t + prior)
  double prior_bpd = 0.0;      // mean over images of KL(q(x_T | x_0) || N(0, I))
  std::vector<double> vb, mse, xstart_mse;  // (T) means over images, indexed by t
  // Quartiles of t (q = floor(4 t / T)): vb summed over the quartile's t (they add up to
  // total - prior) and mse / xstart_mse averaged over them.
  double vb_q[4] = {0, 0, 0, 0}, mse_q[4] = {0, 0, 0, 0}, xstart_mse_q[4] = {0, 0, 0, 0};
};

// images uint8 (N, H, W, C) of this rank's share with their global indices [first, first + N),
// evaluated in batches of batch_size by calc_bpd_loop with per-index noise (seed, index) of
// shape (T, C, H, W); the sums are all-reduced over `comm`, so every rank returns the same.
// `progress(done, total)` is called after each batch on this rank.
BpdSummary evaluate_bpd(model::UNet& unet, const diffusion::GaussianDiffusion& diffusion, const at::Tensor& images,
                        int64_t first, int64_t batch_size, bool clip_denoised, uint64_t seed,
                        dist::Communicator& comm, const c10::Device& device,
                        const std::function<void(int64_t done, int64_t total)>& progress = {});

// Bits/dim of the probability-flow ODE (diffusion/ode_likelihood.h), summed over every rank's share.
struct OdeBpdSummary {
  int64_t count = 0, steps = 0;  // images, Heun steps
  double bpd = 0.0;              // mean over images
  double bpd_std_error = 0.0;    // standard error of that mean over the images (probes and data)
  double prior_bpd = 0.0;        // mean of -log N(x_T; 0, I) / (D log 2): the prior term's share
};

// images uint8 (N, H, W, C) of this rank's share, global indices [first, first + N), in batches of
// batch_size: each image u is dequantized uniformly inside its bin of the model's grid,
// x = (u - 1/2 + U) / 127.5 - 1 with U ~ U[0, 1)^D (bins of width 2/255, as the decoder's), and
// bpd = -log p_0(x) / (D log 2) + log2(127.5), a bound on the discrete data's bits/dim in
// expectation over U. U, then the Hutchinson probe (Rademacher, or standard normal when
// `gaussian_probe`) come from sample_generator(seed, index), so the figure does not depend on the
// rank count or batch split. The network's parameters are frozen (requires_grad off) meanwhile.
OdeBpdSummary evaluate_ode_bpd(model::UNet& unet, const diffusion::GaussianDiffusion& diffusion, const at::Tensor& images,
                               int64_t first, int64_t batch_size, int64_t steps, bool gaussian_probe, uint64_t seed,
                               dist::Communicator& comm, const c10::Device& device,
                               const std::function<void(int64_t done, int64_t total)>& progress = {});

// uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1] (x / 127.5 - 1).
at::Tensor to_model_input(const at::Tensor& images_u8);

}  // namespace ddpm::trainer
