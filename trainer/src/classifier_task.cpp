// --task classifier: the noise-conditional classifier of classifier guidance (Dhariwal & Nichol
// 2021), trained as guided-diffusion's classifier_train.py with noised=True: x_t = q_sample(x_0,
// t, noise) with t uniform over the config's diffusion, cross-entropy of the EncoderUNet's logits
// against the dataset's labels. Rows: t, loss, per-example accuracy (top-1), unused. It makes no
// images and has no likelihood: no grids, FID or bits/dim (the config check refuses them).
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/timestep_sampler.h"
#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/factory.h"
#include "tasks.h"

namespace ddpm::trainer::detail {

namespace {

class ClassifierTask final : public TrainTask {
 public:
  ClassifierTask(const TrainConfig& config, const data::DatasetInfo& info, const c10::Device& device)
      : config_(config), device_(device) {
    const model::EncoderUNetOptions o = make_encoder_unet_options(config_);
    check_classifier_data(o, info, config_.data);
    net_ = model::EncoderUNet(o);
    net_->to(device_);
    net_->train();
    diffusion_ = std::make_unique<diffusion::GaussianDiffusion>(make_diffusion(config_));
    timesteps_ = std::make_unique<diffusion::UniformSampler>(diffusion_->num_timesteps());
  }

  std::string name() const override { return "classifier"; }
  torch::nn::Module& network() override { return *net_; }
  void load_initial_weights(const std::string& path) override {
    model::load_state_dict(*net_, model::load_tensor_dict(path), path);
  }
  int64_t num_timesteps() const override { return diffusion_->num_timesteps(); }
  std::array<std::string, 2> term_names() const override { return {"accuracy", ""}; }

  MicrobatchLoss loss(const at::Tensor& x, const at::Tensor& y) override {
    if (!y.defined()) {
      throw std::invalid_argument("--task classifier: the microbatch has no labels; give --num-classes and a "
                                  "labelled --data (ddpm_prepare writes /labels)");
    }
    const int64_t n = x.size(0);
    const at::Tensor t = timesteps_->sample(n, std::nullopt, device_).t;      // (n) uniform
    const at::Tensor x_t = diffusion_->q_sample(x, t, at::randn_like(x));    // (n, C, H, W)
    const at::Tensor logits = net_->forward(x_t, diffusion_->model_timesteps(t));  // (n, K)
    const at::Tensor ce = at::cross_entropy_loss(logits.to(at::kFloat), y, {}, at::Reduction::None);  // (n)
    const at::Tensor correct = (logits.detach().argmax(1) == y).to(at::kDouble);                     // (n)
    MicrobatchLoss out;
    out.loss = ce.mean();
    out.rows = at::stack({t.to(at::kDouble), ce.detach().to(at::kDouble), correct,
                          at::full({n}, NAN, x.options().dtype(at::kDouble))},
                         1);  // (n, 4): t, loss, accuracy, unused
    return out;
  }

  IndexSampler image_sampler(const EvalRequest&) override { return {}; }

  BpdSummary bits_per_dim(const model::TensorDict&, const at::Tensor&, int64_t, int64_t, uint64_t,
                          dist::Communicator&) override {
    throw std::invalid_argument("--bpd-every: --task classifier has no likelihood; give --bpd-every 0");
  }

 private:
  TrainConfig config_;
  c10::Device device_;
  model::EncoderUNet net_{nullptr};
  std::unique_ptr<diffusion::GaussianDiffusion> diffusion_;
  std::unique_ptr<diffusion::TimestepSampler> timesteps_;
};

}  // namespace

std::unique_ptr<TrainTask> make_classifier_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                const c10::Device& device) {
  return std::make_unique<ClassifierTask>(config, info, device);
}

}  // namespace ddpm::trainer::detail
