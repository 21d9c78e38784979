// The InceptionV3 network of the FID (Szegedy et al. 2016 as ported by pytorch-fid from the
// TensorFlow FID graph): module names follow torchvision's Inception3 with pytorch-fid's
// FIDInceptionA/C/E_1/E_2 blocks, so pytorch-fid's weights file loads by name. Up to pool3.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace ddpm::evaluation {

// conv (no bias) -> batch norm (eps 1e-3) -> ReLU; torchvision's BasicConv2d.
struct BasicConv2dImpl : torch::nn::Module {
  BasicConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> kernel, torch::ExpandingArray<2> stride = 1,
                  torch::ExpandingArray<2> padding = 0);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

// The 2048-d pool3 feature network. forward() takes images already resized to 299x299 and
// scaled to [-1, 1]; fid_features() does pytorch-fid's preprocessing first.
struct FidInceptionV3Impl : torch::nn::Module {
  FidInceptionV3Impl();
  at::Tensor forward(const at::Tensor& x);  // (N, 3, 299, 299) in [-1, 1] -> (N, 2048)
  // images (N, 3, H, W) in [0, 1]: bilinear resize to 299 (align_corners=False), 2x - 1, forward.
  at::Tensor fid_features(const at::Tensor& images);
};
TORCH_MODULE(FidInceptionV3);

// Loads a torch.save'd state_dict (pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or any
// file with the same names) into `net`. The classifier (fc.*) is ignored; a missing or
// misshapen parameter throws std::runtime_error naming the file and the tensor.
void load_fid_inception_weights(FidInceptionV3& net, const std::string& path);

}  // namespace ddpm::evaluation
