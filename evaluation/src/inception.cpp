// InceptionV3 FID network (pytorch-fid layout); see ddpm/evaluation/inception.h.
#include "ddpm/evaluation/inception.h"

#include "ddpm/ops/tensor_dict.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/functional/upsampling.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <vector>

namespace ddpm::evaluation {
namespace {

using E2 = torch::ExpandingArray<2>;

at::Tensor avg_pool_3x3(const at::Tensor& x) {  // pytorch-fid: count_include_pad=False
  return at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, /*ceil_mode=*/false, /*count_include_pad=*/false);
}
at::Tensor max_pool_3x3_s2(const at::Tensor& x) { return at::max_pool2d(x, {3, 3}, {2, 2}); }

// FIDInceptionA (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.
struct InceptionAImpl : torch::nn::Module {
  InceptionAImpl(int64_t in, int64_t pool_features)
      : branch1x1(register_module("branch1x1", BasicConv2d(in, 64, 1))),
        branch5x5_1(register_module("branch5x5_1", BasicConv2d(in, 48, 1))),
        branch5x5_2(register_module("branch5x5_2", BasicConv2d(48, 64, 5, 1, 2))),
        branch3x3dbl_1(register_module("branch3x3dbl_1", BasicConv2d(in, 64, 1))),
        branch3x3dbl_2(register_module("branch3x3dbl_2", BasicConv2d(64, 96, 3, 1, 1))),
        branch3x3dbl_3(register_module("branch3x3dbl_3", BasicConv2d(96, 96, 3, 1, 1))),
        branch_pool(register_module("branch_pool", BasicConv2d(in, pool_features, 1))) {}
  at::Tensor forward(const at::Tensor& x) {
    return at::cat({branch1x1(x), branch5x5_2(branch5x5_1(x)),
                    branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))), branch_pool(avg_pool_3x3(x))}, 1);
  }
  BasicConv2d branch1x1, branch5x5_1, branch5x5_2, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3, branch_pool;
};
TORCH_MODULE(InceptionA);

// InceptionB (Mixed_6a): grid reduction 35 -> 17.
struct InceptionBImpl : torch::nn::Module {
  explicit InceptionBImpl(int64_t in)
      : branch3x3(register_module("branch3x3", BasicConv2d(in, 384, 3, 2))),
        branch3x3dbl_1(register_module("branch3x3dbl_1", BasicConv2d(in, 64, 1))),
        branch3x3dbl_2(register_module("branch3x3dbl_2", BasicConv2d(64, 96, 3, 1, 1))),
        branch3x3dbl_3(register_module("branch3x3dbl_3", BasicConv2d(96, 96, 3, 2))) {}
  at::Tensor forward(const at::Tensor& x) {
    return at::cat({branch3x3(x), branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))), max_pool_3x3_s2(x)}, 1);
  }
  BasicConv2d branch3x3, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3;
};
TORCH_MODULE(InceptionB);

// FIDInceptionC (Mixed_6b..e): factorised 7x7 convolutions.
struct InceptionCImpl : torch::nn::Module {
  InceptionCImpl(int64_t in, int64_t c7)
      : branch1x1(register_module("branch1x1", BasicConv2d(in, 192, 1))),
        branch7x7_1(register_module("branch7x7_1", BasicConv2d(in, c7, 1))),
        branch7x7_2(register_module("branch7x7_2", BasicConv2d(c7, c7, E2({1, 7}), 1, E2({0, 3})))),
        branch7x7_3(register_module("branch7x7_3", BasicConv2d(c7, 192, E2({7, 1}), 1, E2({3, 0})))),
        branch7x7dbl_1(register_module("branch7x7dbl_1", BasicConv2d(in, c7, 1))),
        branch7x7dbl_2(register_module("branch7x7dbl_2", BasicConv2d(c7, c7, E2({7, 1}), 1, E2({3, 0})))),
        branch7x7dbl_3(register_module("branch7x7dbl_3", BasicConv2d(c7, c7, E2({1, 7}), 1, E2({0, 3})))),
        branch7x7dbl_4(register_module("branch7x7dbl_4", BasicConv2d(c7, c7, E2({7, 1}), 1, E2({3, 0})))),
        branch7x7dbl_5(register_module("branch7x7dbl_5", BasicConv2d(c7, 192, E2({1, 7}), 1, E2({0, 3})))),
        branch_pool(register_module("branch_pool", BasicConv2d(in, 192, 1))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor b7 = branch7x7_3(branch7x7_2(branch7x7_1(x)));
    const at::Tensor b7dbl =
        branch7x7dbl_5(branch7x7dbl_4(branch7x7dbl_3(branch7x7dbl_2(branch7x7dbl_1(x)))));
    return at::cat({branch1x1(x), b7, b7dbl, branch_pool(avg_pool_3x3(x))}, 1);
  }
  BasicConv2d branch1x1, branch7x7_1, branch7x7_2, branch7x7_3, branch7x7dbl_1, branch7x7dbl_2, branch7x7dbl_3,
      branch7x7dbl_4, branch7x7dbl_5, branch_pool;
};
TORCH_MODULE(InceptionC);

// InceptionD (Mixed_7a): grid reduction 17 -> 8.
struct InceptionDImpl : torch::nn::Module {
  explicit InceptionDImpl(int64_t in)
      : branch3x3_1(register_module("branch3x3_1", BasicConv2d(in, 192, 1))),
        branch3x3_2(register_module("branch3x3_2", BasicConv2d(192, 320, 3, 2))),
        branch7x7x3_1(register_module("branch7x7x3_1", BasicConv2d(in, 192, 1))),
        branch7x7x3_2(register_module("branch7x7x3_2", BasicConv2d(192, 192, E2({1, 7}), 1, E2({0, 3})))),
        branch7x7x3_3(register_module("branch7x7x3_3", BasicConv2d(192, 192, E2({7, 1}), 1, E2({3, 0})))),
        branch7x7x3_4(register_module("branch7x7x3_4", BasicConv2d(192, 192, 3, 2))) {}
  at::Tensor forward(const at::Tensor& x) {
    return at::cat({branch3x3_2(branch3x3_1(x)),
                    branch7x7x3_4(branch7x7x3_3(branch7x7x3_2(branch7x7x3_1(x)))), max_pool_3x3_s2(x)}, 1);
  }
  BasicConv2d branch3x3_1, branch3x3_2, branch7x7x3_1, branch7x7x3_2, branch7x7x3_3, branch7x7x3_4;
};
TORCH_MODULE(InceptionD);

// FIDInceptionE_1 (Mixed_7b, average pool) and FIDInceptionE_2 (Mixed_7c, max pool).
struct InceptionEImpl : torch::nn::Module {
  InceptionEImpl(int64_t in, bool max_pool)
      : max_pool(max_pool),
        branch1x1(register_module("branch1x1", BasicConv2d(in, 320, 1))),
        branch3x3_1(register_module("branch3x3_1", BasicConv2d(in, 384, 1))),
        branch3x3_2a(register_module("branch3x3_2a", BasicConv2d(384, 384, E2({1, 3}), 1, E2({0, 1})))),
        branch3x3_2b(register_module("branch3x3_2b", BasicConv2d(384, 384, E2({3, 1}), 1, E2({1, 0})))),
        branch3x3dbl_1(register_module("branch3x3dbl_1", BasicConv2d(in, 448, 1))),
        branch3x3dbl_2(register_module("branch3x3dbl_2", BasicConv2d(448, 384, 3, 1, 1))),
        branch3x3dbl_3a(register_module("branch3x3dbl_3a", BasicConv2d(384, 384, E2({1, 3}), 1, E2({0, 1})))),
        branch3x3dbl_3b(register_module("branch3x3dbl_3b", BasicConv2d(384, 384, E2({3, 1}), 1, E2({1, 0})))),
        branch_pool(register_module("branch_pool", BasicConv2d(in, 192, 1))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor b3 = branch3x3_1(x);
    const at::Tensor bd = branch3x3dbl_2(branch3x3dbl_1(x));
    const at::Tensor pooled = max_pool ? at::max_pool2d(x, {3, 3}, {1, 1}, {1, 1}) : avg_pool_3x3(x);
    return at::cat({branch1x1(x), at::cat({branch3x3_2a(b3), branch3x3_2b(b3)}, 1),
                    at::cat({branch3x3dbl_3a(bd), branch3x3dbl_3b(bd)}, 1), branch_pool(pooled)}, 1);
  }
  bool max_pool;
  BasicConv2d branch1x1, branch3x3_1, branch3x3_2a, branch3x3_2b, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3a,
      branch3x3dbl_3b, branch_pool;
};
TORCH_MODULE(InceptionE);

}  // namespace

BasicConv2dImpl::BasicConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> kernel,
                                 torch::ExpandingArray<2> stride, torch::ExpandingArray<2> padding)
    : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                         .stride(stride).padding(padding).bias(false)))),
      bn(register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNormOptions(out).eps(0.001)))) {}

at::Tensor BasicConv2dImpl::forward(const at::Tensor& x) { return at::relu(bn(conv(x))); }

FidInceptionV3Impl::FidInceptionV3Impl() {
  // Registration order = torchvision's Inception3 order, so named_parameters() lines up.
  register_module("Conv2d_1a_3x3", BasicConv2d(3, 32, 3, 2));
  register_module("Conv2d_2a_3x3", BasicConv2d(32, 32, 3));
  register_module("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, 1, 1));
  register_module("Conv2d_3b_1x1", BasicConv2d(64, 80, 1));
  register_module("Conv2d_4a_3x3", BasicConv2d(80, 192, 3));
  register_module("Mixed_5b", InceptionA(192, 32));
  register_module("Mixed_5c", InceptionA(256, 64));
  register_module("Mixed_5d", InceptionA(288, 64));
  register_module("Mixed_6a", InceptionB(288));
  register_module("Mixed_6b", InceptionC(768, 128));
  register_module("Mixed_6c", InceptionC(768, 160));
  register_module("Mixed_6d", InceptionC(768, 160));
  register_module("Mixed_6e", InceptionC(768, 192));
  register_module("Mixed_7a", InceptionD(768));
  register_module("Mixed_7b", InceptionE(1280, /*max_pool=*/false));
  register_module("Mixed_7c", InceptionE(2048, /*max_pool=*/true));
  eval();
}

at::Tensor FidInceptionV3Impl::forward(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "FidInceptionV3: expected (N, 3, H, W) images, got ", x.sizes());
  const auto conv = [this](const char* name, const at::Tensor& t) {
    return named_children()[name]->as<BasicConv2d>()->forward(t);
  };
  at::Tensor h = conv("Conv2d_2b_3x3", conv("Conv2d_2a_3x3", conv("Conv2d_1a_3x3", x)));  // (N, 64, 147, 147)
  h = max_pool_3x3_s2(h);                                                                   // (N, 64, 73, 73)
  h = max_pool_3x3_s2(conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", h)));                    // (N, 192, 35, 35)
  const auto children = named_children();
  for (const char* n : {"Mixed_5b", "Mixed_5c", "Mixed_5d"}) h = children[n]->as<InceptionA>()->forward(h);
  h = children["Mixed_6a"]->as<InceptionB>()->forward(h);                                    // (N, 768, 17, 17)
  for (const char* n : {"Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"}) h = children[n]->as<InceptionC>()->forward(h);
  h = children["Mixed_7a"]->as<InceptionD>()->forward(h);                                    // (N, 1280, 8, 8)
  h = children["Mixed_7b"]->as<InceptionE>()->forward(h);                                    // (N, 2048, 8, 8)
  h = children["Mixed_7c"]->as<InceptionE>()->forward(h);                                    // (N, 2048, 8, 8)
  return h.mean({2, 3});                                                                     // (N, 2048)
}

at::Tensor FidInceptionV3Impl::fid_features(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "FidInceptionV3: expected (N, 3, H, W) images in [0, 1], got ",
              images.sizes());
  const at::Tensor x = at::upsample_bilinear2d(images, {299, 299}, /*align_corners=*/false);  // (N, 3, 299, 299)
  return forward(2 * x - 1);
}

void load_fid_inception_weights(FidInceptionV3& net, const std::string& path) {
  if (!std::ifstream(path).good())
    throw std::runtime_error(path + ": cannot open the InceptionV3 FID weights (pytorch-fid's "
                             "pt_inception-2015-12-05-6726825d.pth; download it once and pass its path)");
  std::map<std::string, at::Tensor> sd;
  for (auto& [name, t] : ops::load_tensor_dict(path)) sd[name] = t;
  at::NoGradGuard no_grad;
  auto assign = [&](const std::string& name, at::Tensor& dst) {
    const auto it = sd.find(name);
    if (it == sd.end()) throw std::runtime_error(path + ": missing '" + name + "' (not an InceptionV3 FID state_dict?)");
    if (it->second.sizes() != dst.sizes())
      throw std::runtime_error(path + ": '" + name + "' has shape " + c10::str(it->second.sizes()) + ", expected " +
                               c10::str(dst.sizes()));
    dst.copy_(it->second);
    sd.erase(it);
  };
  for (auto& p : net->named_parameters()) assign(p.key(), p.value());
  for (auto& b : net->named_buffers()) assign(b.key(), b.value());
  for (const auto& [name, t] : sd) {
    if (name.rfind("fc.", 0) != 0 && name.rfind("AuxLogits.", 0) != 0)
      throw std::runtime_error(path + ": unexpected tensor '" + name + "' (not an InceptionV3 FID state_dict?)");
  }
}

}  // namespace ddpm::evaluation
