// The domain feature network (small CNN classifier), its torch.save-format file and the FID
// extractor on its penultimate layer; see ddpm/evaluation/domain_net.h.
#include "ddpm/evaluation/domain_net.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <stdexcept>

#include "ddpm/ops/tensor_dict.h"

namespace ddpm::evaluation {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

int64_t option_from(const std::map<std::string, at::Tensor>& d, const std::string& path, const std::string& key) {
  auto it = d.find("options." + key);
  if (it == d.end() || it->second.numel() != 1) {
    throw std::runtime_error(path + ": no scalar 'options." + key +
                             "'; expected a domain network written by ddpm_fid_net (save_domain_net)");
  }
  return it->second.item<int64_t>();
}

class DomainExtractor : public FeatureExtractor {
 public:
  DomainExtractor(const std::string& path, c10::Device device)
      : net_(load_domain_net(path)), device_(device),
        name_("domain:" + std::filesystem::path(path).filename().string()) {
    net_->to(device_);
  }
  std::string name() const override { return name_; }
  at::Tensor features(const at::Tensor& images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == net_->options().in_channels, name_,
                ": expected images (N, ", net_->options().in_channels, ", H, W) in [0, 1], got shape ", images.sizes());
    at::NoGradGuard no_grad;
    return net_->features(images.to(device_, at::kFloat)).to(at::kCPU);  // (N, D)
  }

 private:
  DomainNet net_;
  c10::Device device_;
  std::string name_;
};

}  // namespace

DomainNetImpl::DomainNetImpl(const DomainNetOptions& o) : options_(o) {
  TORCH_CHECK(o.in_channels > 0 && o.num_classes > 1 && o.width > 0 && o.feature_dim > 0,
              "DomainNet: in_channels, width, feature_dim must be > 0 and num_classes > 1");
  conv1 = register_module("conv1", conv3x3(o.in_channels, o.width));
  conv2 = register_module("conv2", conv3x3(o.width, 2 * o.width));
  conv3 = register_module("conv3", conv3x3(2 * o.width, 4 * o.width));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(o.width));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(2 * o.width));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(4 * o.width));
  fc = register_module("fc", torch::nn::Linear(64 * o.width, o.feature_dim));
  head = register_module("head", torch::nn::Linear(o.feature_dim, o.num_classes));
}

at::Tensor DomainNetImpl::features(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels && x.size(2) >= 16 && x.size(3) >= 16,
              "DomainNet: expected x (N, ", options_.in_channels, ", H >= 16, W >= 16), got ", x.sizes());
  at::Tensor h = x * 2 - 1;                                   // (N, C, H, W) in [-1, 1]
  h = at::max_pool2d(at::relu(bn1(conv1(h))), {2, 2});             // (N, w, H/2, W/2)
  h = at::max_pool2d(at::relu(bn2(conv2(h))), {2, 2});             // (N, 2w, H/4, W/4)
  h = at::adaptive_avg_pool2d(at::relu(bn3(conv3(h))), {4, 4});    // (N, 4w, 4, 4)
  return at::relu(fc(h.flatten(1)));                          // (N, D)
}

at::Tensor DomainNetImpl::forward(const at::Tensor& x) { return head(features(x)); }  // (N, classes)

void save_domain_net(const std::string& path, DomainNetImpl& net, double test_accuracy) {
  ops::TensorDict d;
  for (const auto& p : net.named_parameters()) d.emplace_back(p.key(), p.value().detach().to(at::kCPU));
  for (const auto& b : net.named_buffers()) d.emplace_back(b.key(), b.value().to(at::kCPU));
  const DomainNetOptions& o = net.options();
  for (auto [k, v] : {std::pair<const char*, int64_t>{"in_channels", o.in_channels}, {"num_classes", o.num_classes},
                      {"width", o.width}, {"feature_dim", o.feature_dim}}) {
    d.emplace_back(std::string("options.") + k, at::scalar_tensor(v, at::kLong));
  }
  if (test_accuracy >= 0) d.emplace_back("meta.test_accuracy", at::scalar_tensor(test_accuracy, at::kDouble));
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    ops::save_tensor_dict(tmp, d);
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

DomainNet load_domain_net(const std::string& path, double* test_accuracy) {
  std::map<std::string, at::Tensor> d;
  for (auto& [k, v] : ops::load_tensor_dict(path)) d[k] = v;
  DomainNetOptions o;
  o.in_channels = option_from(d, path, "in_channels");
  o.num_classes = option_from(d, path, "num_classes");
  o.width = option_from(d, path, "width");
  o.feature_dim = option_from(d, path, "feature_dim");
  DomainNet net(o);
  at::NoGradGuard no_grad;
  auto tensors = net->named_parameters();
  for (const auto& b : net->named_buffers()) tensors.insert(b.key(), b.value());
  for (auto& p : tensors) {
    auto it = d.find(p.key());
    if (it == d.end() || !it->second.sizes().equals(p.value().sizes())) {
      throw std::runtime_error(path + ": tensor '" + p.key() + "' " +
                               (it == d.end() ? std::string("is missing") : "has the wrong shape") +
                               "; expected shape " + c10::str(p.value().sizes()) + " from the stored options");
    }
    p.value().copy_(it->second);
  }
  if (test_accuracy) {
    auto it = d.find("meta.test_accuracy");
    *test_accuracy = it == d.end() ? -1 : it->second.item<double>();
  }
  net->eval();
  return net;
}

std::unique_ptr<FeatureExtractor> make_domain_extractor(const std::string& weights_path, c10::Device device) {
  return std::make_unique<DomainExtractor>(weights_path, device);
}

}  // namespace ddpm::evaluation
