// --task autoencoder (ddpm_train_autoencoder): the KL-regularised autoencoder of latent diffusion
// (model/autoencoder) trained by the one Trainer. Loss per example: reconstruction (L1 or L2,
// --ae-loss) of the decoded posterior sample plus --kl-weight times the KL to N(0, I), both per
// image dim (autoencoder_loss). Rows: t = 0, loss, rec, kl (the log's columns loss, rec, kl).
// Grids and FID: reconstructions (posterior mean, clamped to [-1, 1]) of the training images with
// the sample indices (image i of --data for index i, modulo the image count). No bits/dim.
#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/model/autoencoder/autoencoder.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/latent.h"
#include "tasks.h"

namespace ddpm::trainer::detail {

namespace {

class AutoencoderTask final : public TrainTask {
 public:
  AutoencoderTask(const TrainConfig& config, const data::DatasetInfo& info, const c10::Device& device)
      : config_(config), device_(device), info_(info) {
    const model::AutoencoderOptions o = autoencoder_options(config_, info.channels);
    if (info.height % o.factor() != 0 || info.width % o.factor() != 0) {
      throw std::invalid_argument("--ae-factor " + std::to_string(o.factor()) + ": the images of --data " +
                                  config_.data + " are " + std::to_string(info.height) + "x" +
                                  std::to_string(info.width) + ", not multiples of it; pick a factor that divides both");
    }
    ae_ = model::AutoencoderKL(o);
    ae_->to(device_);
    ae_->train();
  }

  std::string name() const override { return "autoencoder"; }
  torch::nn::Module& network() override { return *ae_; }
  void load_initial_weights(const std::string& path) override {
    model::load_state_dict(*ae_, model::load_tensor_dict(path), path);
  }
  int64_t num_timesteps() const override { return 1; }
  std::array<std::string, 2> term_names() const override { return {"rec", "kl"}; }

  MicrobatchLoss loss(const at::Tensor& x, const at::Tensor&) override {
    const int64_t n = x.size(0), f = ae_->options().factor();
    const at::Tensor noise = at::randn({n, ae_->options().z_channels, x.size(2) / f, x.size(3) / f}, x.options());
    const model::AutoencoderLossTerms t = model::autoencoder_loss(ae_, x, noise, config_.ae_loss, config_.kl_weight);
    MicrobatchLoss out;
    out.loss = t.loss.to(at::kFloat).mean();
    const auto col = [](const at::Tensor& v) { return v.detach().to(at::kDouble); };
    out.rows = at::stack({at::zeros({n}, x.options().dtype(at::kDouble)), col(t.loss), col(t.rec), col(t.kl)}, 1);
    return out;  // rows (n, 4): t = 0, loss, rec, kl
  }

  IndexSampler image_sampler(const EvalRequest& req) override {
    model::AutoencoderKL net(ae_->options());
    net->to(device_);
    copy_weights(*net, req.weights, *ae_);
    net->eval();
    const std::string data = config_.data;
    const c10::Device device = device_;
    const data::DatasetInfo info = info_;
    return [net, data, device, info](int64_t begin, int64_t end) mutable {
      if (begin >= end) return at::empty({0, info.channels, info.height, info.width}, at::kFloat);  // a rank's empty share
      const data::ImageDataset ds = data::ImageDataset::open(data);
      const int64_t count = ds.info().count;
      std::vector<at::Tensor> images;  // image i mod count for index i, in contiguous runs
      for (int64_t i = begin; i < end;) {
        const int64_t n = std::min(end - i, count - i % count);
        images.push_back(ds.read_images(i % count, n));  // (n, H, W, C) uint8
        i += n;
      }
      at::NoGradGuard no_grad;
      const at::Tensor x = to_model_input(at::cat(images, 0)).to(device);  // (n, C, H, W)
      return net->decode(net->encode(x).mode()).clamp(-1.0, 1.0).cpu();
    };
  }

  BpdSummary bits_per_dim(const model::TensorDict&, const at::Tensor&, int64_t, int64_t, uint64_t,
                          dist::Communicator&) override {
    throw std::invalid_argument("--task autoencoder has no likelihood in bits/dim; drop --bpd-every");
  }

 private:
  TrainConfig config_;
  c10::Device device_;
  data::DatasetInfo info_;
  model::AutoencoderKL ae_{nullptr};
};

}  // namespace

std::unique_ptr<TrainTask> make_autoencoder_task(const TrainConfig& config, const data::DatasetInfo& info,
                                                 const c10::Device& device) {
  return std::make_unique<AutoencoderTask>(config, info, device);
}

}  // namespace ddpm::trainer::detail
