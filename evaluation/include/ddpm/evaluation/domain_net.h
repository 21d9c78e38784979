// The domain feature network for FID on datasets without InceptionV3 weights: a small CNN
// classifier (trained by ddpm_fid_net on a labelled HDF5 dataset) whose penultimate activations
// are the FID features. Every FID it gives is labelled "domain:<file name>".
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "ddpm/evaluation/fid.h"

namespace ddpm::evaluation {

struct DomainNetOptions {
  int64_t in_channels = 1;   // image channels C
  int64_t num_classes = 10;  // classifier outputs
  int64_t width = 16;        // channels of the first conv; the next two have 2x and 4x
  int64_t feature_dim = 128; // D, the FID features (penultimate layer)
};

// x (N, C, H, W) in [0, 1], H, W >= 16 -> 2x - 1 -> conv3x3(w) BN ReLU maxpool2 -> conv3x3(2w) BN
// ReLU maxpool2 -> conv3x3(4w) BN ReLU -> adaptive average pool to 4x4 (any H, W) -> flatten (N, 64w)
// -> linear(D) ReLU = features (N, D) -> linear(num_classes) = logits.
class DomainNetImpl : public torch::nn::Module {
 public:
  explicit DomainNetImpl(const DomainNetOptions& options = {});
  at::Tensor features(const at::Tensor& x);  // (N, D)
  at::Tensor forward(const at::Tensor& x);   // (N, num_classes) logits
  const DomainNetOptions& options() const { return options_; }

 private:
  DomainNetOptions options_;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Linear fc{nullptr}, head{nullptr};
};
TORCH_MODULE(DomainNet);

// File format: a torch.save dict of tensors (ops::save_tensor_dict, Python's torch.load reads
// it): the parameters and BatchNorm buffers by name ("conv1.weight", "bn1.running_mean", ...,
// "head.bias") plus the options as int64
// scalars "options.in_channels", "options.num_classes", "options.width", "options.feature_dim",
// and, when given, "meta.test_accuracy" (float64 scalar). Written to "<path>.tmp-<pid>" and
// renamed, so a reader never sees half a file.
void save_domain_net(const std::string& path, DomainNetImpl& net, double test_accuracy = -1);
// Throws std::runtime_error naming the file when an option or a parameter is missing or has the
// wrong shape. The net is in eval mode on the CPU.
DomainNet load_domain_net(const std::string& path, double* test_accuracy = nullptr);

// Penultimate features (N, D) of a saved DomainNet, named "domain:<file name>".
std::unique_ptr<FeatureExtractor> make_domain_extractor(const std::string& weights_path,
                                                        c10::Device device = c10::kCPU);

}  // namespace ddpm::evaluation
