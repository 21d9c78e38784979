// What a training run trains, as the Trainer sees it. The Trainer owns the loop, the gradient
// all-reduce, the optimizer step, the EMAs, checkpoints, metrics and the periodic work; a
// TrainTask owns the network it trains, how a microbatch of data becomes a loss, and how a
// network with given weights makes images (sample grids, FID) or bits/dim. One loop, many tasks:
//   diffusion   image diffusion, class-conditional or not (DiffusionTask, diffusion_task.cpp);
//               with --latent, in the latent space of a frozen autoencoder (latent_task.cpp)
//   superres    a cascade's super-resolution model (SuperResTask, superres_task.cpp)
//   classifier  the noise-conditional classifier of classifier guidance (ClassifierTask,
//               classifier_task.cpp; ddpm_train_classifier)
//   autoencoder latent diffusion's KL autoencoder (autoencoder_task.cpp; ddpm_train_autoencoder)
// make_train_task() picks the task of --task; a new task is a class and a line there.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "ddpm/model/tensor_dict.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/inference.h"

namespace torch::nn {
class Module;
}
namespace ddpm::data {
struct DatasetInfo;
}
namespace ddpm::dist {
class Communicator;
}

namespace ddpm::trainer {

// One microbatch's loss. `loss`: float scalar with gradients, the (weighted) mean over the
// microbatch. `rows`: (n, 4) float64 on the device, per example t, loss, mse, vb (NaN where the
// task has no such term). The rows are all-gathered every step for the log's quartiles of t and
// TrainTask::observe.
struct MicrobatchLoss {
  at::Tensor loss, rows;
};

// What an evaluation asks a task for: the first EMA's weights and how to sample.
struct EvalRequest {
  model::TensorDict weights;  // trainable parameters by name (buffers come from the training network)
  SampleRequest sample;       // shape of the dataset's images, respacing, seed, clip_denoised
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;

  // "diffusion", ...: the value of --task.
  virtual std::string name() const = 0;

  // The network being trained: on the device, in train mode, built from the config under
  // torch::manual_seed(config.seed) (identical on every rank). Its trainable parameters, in
  // registration order, are what the optimizer, the gradient all-reduce, the EMAs and model.pt hold.
  virtual torch::nn::Module& network() = 0;

  // --init-from: initial weights for network() (a .pt dict of tensors or a checkpoint's model.pt).
  virtual void load_initial_weights(const std::string& path) = 0;

  // The loss of one microbatch: x (n, C, H, W) float in [-1, 1] on the device, y (n) int64 class
  // labels on the device or undefined. Runs under the Trainer's autocast; draws its randomness
  // from the global generators (seeded per rank by the Trainer, saved in checkpoints).
  virtual MicrobatchLoss loss(const at::Tensor& x, const at::Tensor& y) = 0;

  // A fresh start (not a resume), on every rank, after the network is broadcast and before the
  // training's random streams are seeded: run constants every rank must agree on (latent
  // diffusion's scale factor). A collective over `comm`. Returns a line for the log, or "".
  virtual std::string start(dist::Communicator& comm) {
    (void)comm;
    return "";
  }

  // After every step (skipped ones too), on every rank with the same value: every rank's rows
  // (G, 4) float64 on the CPU, when all their losses are finite (the timestep sampler's history).
  virtual void observe(const at::Tensor& rows) { (void)rows; }

  // The number of timesteps T: the log groups rows by quartile of t (column 0) in [0, T).
  virtual int64_t num_timesteps() const = 0;

  // What the rows' columns 2 and 3 hold, named in the log line, log.jsonl (NAME, NAME_q0..q3) and
  // the metrics; "" = unused (NaN). A name other than mse and vb (e.g. the classifier's
  // "accuracy") also shows its quartile means in the log line and is the gauge
  // ddpm_task_term{term=NAME}.
  virtual std::array<std::string, 2> term_names() const { return {"mse", "vb"}; }

  // Task state carried in checkpoints (state.pt "sampler" entries), restored on resume.
  virtual model::TensorDict state() const { return {}; }
  virtual void load_state(const model::TensorDict& state) { (void)state; }

  // Images of global sample indices from a network with req.weights: [begin, end) -> float
  // (n, C, H, W) in [-1, 1] on the CPU, per-index seeded as ddpm_sample draws them. An empty
  // function when the task makes no images (then no grid and no FID; the config check refuses
  // --sample-every / --fid-every for it).
  virtual IndexSampler image_sampler(const EvalRequest& req) = 0;

  // A sample grid's tiles and column count from the samples [0, S) of image_sampler, (S, C, H, W)
  // in [-1, 1] on the CPU (rank 0). Default: the samples, ceil(sqrt(S)) columns; superres shows
  // each sample beside its low-res input and the original.
  virtual std::pair<at::Tensor, int64_t> grid(const at::Tensor& samples) const;

  // Bits/dim of images uint8 (N, H, W, C) (this rank's share, global indices from `first`) under a
  // network with `weights`; a collective over `comm`. Throws std::invalid_argument for a task
  // without a likelihood (the config check refuses --bpd-every for it).
  virtual BpdSummary bits_per_dim(const model::TensorDict& weights, const at::Tensor& images, int64_t first,
                                  int64_t batch_size, uint64_t seed, dist::Communicator& comm) = 0;
};

// The task of config.task for a dataset of `info`'s shape; its network is built on `device`.
// Throws std::invalid_argument naming --task, --data or --model when they do not fit together.
std::unique_ptr<TrainTask> make_train_task(const TrainConfig& config, const data::DatasetInfo& info,
                                           const c10::Device& device);

// Copies `weights` (by name) into `dst`'s parameters; parameters missing from `weights` and all
// buffers come from `src` (the training network). Throws naming the first tensor whose shape differs.
void copy_weights(torch::nn::Module& dst, const model::TensorDict& weights, const torch::nn::Module& src);

}  // namespace ddpm::trainer
