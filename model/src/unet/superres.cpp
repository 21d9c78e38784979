// The super-resolution U-Net; see ddpm/model/unet/superres.h.
#include "ddpm/model/unet/superres.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

namespace ddpm::model {

namespace {

UNetOptions doubled_input(UNetOptions o) {
  o.in_channels *= 2;
  return o;
}

}  // namespace

at::Tensor upsample_bilinear(const at::Tensor& low_res, int64_t height, int64_t width) {
  return at::upsample_bilinear2d(low_res, {height, width}, /*align_corners=*/false);  // (N, C, H, W)
}

SuperResUNetImpl::SuperResUNetImpl(UNetOptions options, bool aug_embedding)
    : UNetImpl(doubled_input(options)), image_channels_(options.in_channels) {
  if (!aug_embedding) return;
  const int64_t mc = options.model_channels, ted = 4 * mc;
  auto last = torch::nn::Linear(ted, ted);
  {
    at::NoGradGuard no_grad;  // a fresh model ignores the level: it starts as the plain SuperResModel
    last->weight.zero_();
    last->bias.zero_();
  }
  aug_embed_ = register_module("aug_embed", torch::nn::Sequential(torch::nn::Linear(mc, ted), torch::nn::SiLU(), last));
}

at::Tensor SuperResUNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& low_res,
                                     const at::Tensor& aug_level, const at::Tensor& y) {
  const int64_t c = image_channels_;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == c, "SuperResUNet: x must be (N, ", c, ", H, W), got ", x.sizes());
  TORCH_CHECK(low_res.defined() && low_res.dim() == 4 && low_res.size(0) == x.size(0) && low_res.size(1) == c,
              "SuperResUNet: low_res must be (N, ", c, ", h, w) with N = ", x.size(0), ", got ",
              low_res.defined() ? low_res.sizes() : at::IntArrayRef{});
  TORCH_CHECK(aug_level.defined() == has_aug_embedding(), "SuperResUNet: the augmentation level must be given ",
              has_aug_embedding() ? "(the network has aug_embed)" : "only to a network with aug_embed");
  const at::Tensor up = upsample_bilinear(low_res.to(x.scalar_type()), x.size(2), x.size(3));  // (N, C, H, W)
  at::Tensor emb = embed(t, y, x.size(0));  // (N, 4mc)
  if (has_aug_embedding()) {
    TORCH_CHECK(aug_level.dim() == 1 && aug_level.size(0) == x.size(0), "SuperResUNet: aug_level must be (N) with N = ",
                x.size(0), ", got ", aug_level.sizes());
    const at::Tensor w0 = aug_embed_->ptr<torch::nn::LinearImpl>(0)->weight;
    const auto dtype = w0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    emb = emb + aug_embed_->forward(timestep_embedding(aug_level, options().model_channels, 10000.0, dtype).to(w0.scalar_type()));
  }
  return forward_embedded(at::cat({x, up}, 1), emb);  // (N, output_channels, H, W)
}

}  // namespace ddpm::model
