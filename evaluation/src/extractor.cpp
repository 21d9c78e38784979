// Feature extractors for the FID: InceptionV3 (pytorch-fid weights) and TorchScript modules;
// see ddpm/evaluation/fid.h.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/script.h>

#include <filesystem>
#include <stdexcept>

#include "ddpm/evaluation/fid.h"
#include "ddpm/evaluation/inception.h"

namespace ddpm::evaluation {
namespace {

at::Tensor check_images(const at::Tensor& images, const std::string& who) {
  TORCH_CHECK(images.dim() == 4, who, ": expected images (N, C, H, W) in [0, 1], got shape ", images.sizes());
  return images;
}

class InceptionExtractor : public FeatureExtractor {
 public:
  InceptionExtractor(const std::string& weights, c10::Device device) : device_(device) {
    load_fid_inception_weights(net_, weights);
    net_->to(device_);
    net_->eval();
  }
  std::string name() const override { return "inception-v3"; }
  at::Tensor features(const at::Tensor& images) override {
    check_images(images, "inception-v3");
    at::NoGradGuard no_grad;
    at::Tensor x = images.to(device_, at::kFloat);  // (N, C, H, W)
    if (x.size(1) == 1) x = x.expand({-1, 3, -1, -1});
    return net_->fid_features(x).to(at::kCPU);  // (N, 2048)
  }

 private:
  FidInceptionV3 net_;
  c10::Device device_;
};

class TorchScriptExtractor : public FeatureExtractor {
 public:
  TorchScriptExtractor(const std::string& path, c10::Device device, std::string name) : device_(device), name_(std::move(name)) {
    try {
      module_ = torch::jit::load(path, device_);
    } catch (const c10::Error& e) {
      throw std::runtime_error(path + ": not a TorchScript module (" + e.what_without_backtrace() +
                               "); save one with torch.jit.save(torch.jit.script(model), path)");
    }
    module_.eval();
    if (name_.empty()) name_ = "torchscript:" + std::filesystem::path(path).filename().string();
  }
  std::string name() const override { return name_; }
  at::Tensor features(const at::Tensor& images) override {
    check_images(images, name_);
    at::NoGradGuard no_grad;
    const c10::IValue out = module_.forward({images.to(device_, at::kFloat)});
    TORCH_CHECK(out.isTensor(), name_, ": the module returned a ", out.tagKind(), ", expected a tensor (N, ...)");
    const at::Tensor f = out.toTensor();
    TORCH_CHECK(f.dim() >= 1 && f.size(0) == images.size(0), name_, ": output shape ", f.sizes(),
                " does not start with the batch size ", images.size(0));
    return f.reshape({f.size(0), -1}).to(at::kCPU, at::kFloat);  // (N, D)
  }

 private:
  torch::jit::Module module_;
  c10::Device device_;
  std::string name_;
};

}  // namespace

std::unique_ptr<FeatureExtractor> make_inception_extractor(const std::string& weights_path, c10::Device device) {
  return std::make_unique<InceptionExtractor>(weights_path, device);
}

std::unique_ptr<FeatureExtractor> make_torchscript_extractor(const std::string& module_path, c10::Device device,
                                                             const std::string& name) {
  return std::make_unique<TorchScriptExtractor>(module_path, device, name);
}

}  // namespace ddpm::evaluation
