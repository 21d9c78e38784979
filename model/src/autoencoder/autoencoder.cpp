// The KL autoencoder; see ddpm/model/autoencoder/autoencoder.h. Names follow latent-diffusion's
// ldm/modules/diffusionmodules/model.py (Encoder, Decoder) and ldm/models/autoencoder.py.
#include "ddpm/model/autoencoder/autoencoder.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <numeric>
#include <stdexcept>

namespace ddpm::model {

namespace {

torch::nn::Conv2d conv(int64_t cin, int64_t cout, int64_t k, int64_t stride = 1, int64_t padding = -1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(cin, cout, k).stride(stride).padding(padding < 0 ? k / 2 : padding));
}

torch::nn::GroupNorm norm(int64_t ch, int64_t groups) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, ch).eps(1e-6));
}

at::Tensor swish(const at::Tensor& x) { return x * at::sigmoid(x); }

}  // namespace

// ---- options --------------------------------------------------------------------------------

void AutoencoderOptions::validate() const {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("autoencoder: " + what); };
  if (in_channels < 1) fail("in_channels is " + std::to_string(in_channels) + ", must be >= 1");
  if (z_channels < 1) fail("z_channels is " + std::to_string(z_channels) + ", must be >= 1");
  if (num_res_blocks < 1) fail("num_res_blocks is " + std::to_string(num_res_blocks) + ", must be >= 1");
  if (channel_mult.empty() || channel_mult.size() > 6) fail("channel_mult needs 1..6 levels");
  if (norm_groups < 1) fail("norm_groups is " + std::to_string(norm_groups) + ", must be >= 1");
  for (int64_t m : channel_mult) {
    const int64_t width = channels * m;
    if (m < 1 || channels < 1 || width % norm_groups != 0) {
      fail("level width " + std::to_string(width) + " (channels " + std::to_string(channels) + " x " +
           std::to_string(m) + ") is not a positive multiple of the " + std::to_string(norm_groups) +
           " GroupNorm groups; give channels a multiple of " + std::to_string(norm_groups));
    }
  }
}

std::vector<int64_t> autoencoder_channel_mult(int64_t factor) {
  if (factor < 1 || (factor & (factor - 1)) != 0 || factor > 32) {
    throw std::invalid_argument("autoencoder: downsampling factor " + std::to_string(factor) +
                                " is not a power of two in 1..32 (e.g. 2 or 4)");
  }
  std::vector<int64_t> mult = {1};
  for (int64_t f = factor; f > 1; f /= 2) mult.push_back(2);
  return mult;
}

// ---- the posterior --------------------------------------------------------------------------

at::Tensor DiagonalGaussian::sample(const at::Tensor& noise) const { return mean + at::exp(0.5 * logvar) * noise; }

at::Tensor DiagonalGaussian::kl() const {
  return 0.5 * (mean.pow(2) + at::exp(logvar) - 1.0 - logvar).sum({1, 2, 3});  // (N)
}

// ---- blocks ---------------------------------------------------------------------------------

class AeResnetBlockImpl : public torch::nn::Module {
 public:
  AeResnetBlockImpl(int64_t in_ch, int64_t out_ch, int64_t groups) {
    norm1_ = register_module("norm1", norm(in_ch, groups));
    conv1_ = register_module("conv1", conv(in_ch, out_ch, 3));
    norm2_ = register_module("norm2", norm(out_ch, groups));
    conv2_ = register_module("conv2", conv(out_ch, out_ch, 3));
    if (in_ch != out_ch) nin_shortcut_ = register_module("nin_shortcut", conv(in_ch, out_ch, 1));
  }
  at::Tensor forward(const at::Tensor& x) {  // (N, in, H, W) -> (N, out, H, W)
    at::Tensor h = conv1_->forward(swish(norm1_->forward(x)));
    h = conv2_->forward(swish(norm2_->forward(h)));
    return (nin_shortcut_ ? nin_shortcut_->forward(x) : x) + h;
  }

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, nin_shortcut_{nullptr};
};
TORCH_MODULE(AeResnetBlock);

class AeAttnBlockImpl : public torch::nn::Module {
 public:
  AeAttnBlockImpl(int64_t ch, int64_t groups) {
    norm_ = register_module("norm", norm(ch, groups));
    q_ = register_module("q", conv(ch, ch, 1));
    k_ = register_module("k", conv(ch, ch, 1));
    v_ = register_module("v", conv(ch, ch, 1));
    proj_out_ = register_module("proj_out", conv(ch, ch, 1));
  }
  at::Tensor forward(const at::Tensor& x) {  // (N, C, H, W) -> same
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const at::Tensor hn = norm_->forward(x);
    const at::Tensor q = q_->forward(hn).reshape({n, c, h * w}).permute({0, 2, 1});  // (N, HW, C)
    const at::Tensor k = k_->forward(hn).reshape({n, c, h * w});                     // (N, C, HW)
    const at::Tensor v = v_->forward(hn).reshape({n, c, h * w});                     // (N, C, HW)
    const at::Tensor attn = at::softmax(at::bmm(q, k) / std::sqrt(static_cast<double>(c)), 2);  // (N, HWq, HWk)
    const at::Tensor out = at::bmm(v, attn.permute({0, 2, 1})).reshape({n, c, h, w});
    return x + proj_out_->forward(out);
  }

 private:
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d q_{nullptr}, k_{nullptr}, v_{nullptr}, proj_out_{nullptr};
};
TORCH_MODULE(AeAttnBlock);

// mid: block_1, attn_1, block_2 at the deepest width.
class AeMidImpl : public torch::nn::Module {
 public:
  AeMidImpl(int64_t ch, int64_t groups) {
    block_1_ = register_module("block_1", AeResnetBlock(ch, ch, groups));
    attn_1_ = register_module("attn_1", AeAttnBlock(ch, groups));
    block_2_ = register_module("block_2", AeResnetBlock(ch, ch, groups));
  }
  at::Tensor forward(const at::Tensor& x) { return block_2_->forward(attn_1_->forward(block_1_->forward(x))); }

 private:
  AeResnetBlock block_1_{nullptr}, block_2_{nullptr};
  AeAttnBlock attn_1_{nullptr};
};
TORCH_MODULE(AeMid);

// One level: `block` (a list of resnet blocks), then `downsample` or `upsample` (holding `conv`).
class AeLevelImpl : public torch::nn::Module {
 public:
  enum class Resample { kNone, kDown, kUp };
  AeLevelImpl(int64_t in_ch, int64_t out_ch, int64_t blocks, int64_t groups, Resample r) : resample_(r) {
    auto list = register_module("block", torch::nn::ModuleList());
    for (int64_t b = 0; b < blocks; ++b) {
      blocks_.push_back(AeResnetBlock(b == 0 ? in_ch : out_ch, out_ch, groups));
      list->push_back(blocks_.back());
    }
    if (r == Resample::kNone) return;
    auto holder = register_module(r == Resample::kDown ? "downsample" : "upsample", std::make_shared<torch::nn::Module>());
    // Down: no padding here; forward pads one zero row/column at the bottom/right (as latent-diffusion).
    resample_conv_ = holder->register_module("conv", conv(out_ch, out_ch, 3, r == Resample::kDown ? 2 : 1,
                                                          r == Resample::kDown ? 0 : 1));
  }
  at::Tensor forward(at::Tensor h) {
    for (auto& b : blocks_) h = b->forward(h);
    if (resample_ == Resample::kDown) return resample_conv_->forward(at::constant_pad_nd(h, {0, 1, 0, 1}, 0.0));
    if (resample_ == Resample::kUp) {
      return resample_conv_->forward(at::upsample_nearest2d(h, {2 * h.size(2), 2 * h.size(3)}));  // (N, C, 2H, 2W)
    }
    return h;
  }

 private:
  Resample resample_;
  std::vector<AeResnetBlock> blocks_;
  torch::nn::Conv2d resample_conv_{nullptr};
};
TORCH_MODULE(AeLevel);

// ---- encoder and decoder --------------------------------------------------------------------

class AeEncoderImpl : public torch::nn::Module {
 public:
  explicit AeEncoderImpl(const AutoencoderOptions& o) {
    const int64_t g = o.norm_groups, levels = static_cast<int64_t>(o.channel_mult.size());
    conv_in_ = register_module("conv_in", conv(o.in_channels, o.channels, 3));
    auto down = register_module("down", torch::nn::ModuleList());
    int64_t ch = o.channels;
    for (int64_t l = 0; l < levels; ++l) {
      const int64_t out = o.channels * o.channel_mult[l];
      levels_.push_back(AeLevel(ch, out, o.num_res_blocks, g,
                                l + 1 < levels ? AeLevelImpl::Resample::kDown : AeLevelImpl::Resample::kNone));
      down->push_back(levels_.back());
      ch = out;
    }
    mid_ = register_module("mid", AeMid(ch, g));
    norm_out_ = register_module("norm_out", norm(ch, g));
    conv_out_ = register_module("conv_out", conv(ch, 2 * o.z_channels, 3));
  }
  at::Tensor forward(const at::Tensor& x) {  // (N, C, H, W) -> (N, 2 z, H/f, W/f)
    at::Tensor h = conv_in_->forward(x);
    for (auto& level : levels_) h = level->forward(h);
    h = mid_->forward(h);
    return conv_out_->forward(swish(norm_out_->forward(h)));
  }

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<AeLevel> levels_;
  AeMid mid_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
};

class AeDecoderImpl : public torch::nn::Module {
 public:
  explicit AeDecoderImpl(const AutoencoderOptions& o) {
    const int64_t g = o.norm_groups, levels = static_cast<int64_t>(o.channel_mult.size());
    int64_t ch = o.channels * o.channel_mult.back();
    conv_in_ = register_module("conv_in", conv(o.z_channels, ch, 3));
    mid_ = register_module("mid", AeMid(ch, g));
    // up.L is level L (up.0 the full resolution); they run from the deepest level.
    std::vector<AeLevel> by_level(levels, nullptr);
    for (int64_t l = levels - 1; l >= 0; --l) {
      const int64_t out = o.channels * o.channel_mult[l];
      by_level[l] = AeLevel(ch, out, o.num_res_blocks + 1, g, l > 0 ? AeLevelImpl::Resample::kUp : AeLevelImpl::Resample::kNone);
      ch = out;
    }
    auto up = register_module("up", torch::nn::ModuleList());
    for (auto& level : by_level) up->push_back(level);
    levels_.assign(by_level.rbegin(), by_level.rend());  // execution order
    norm_out_ = register_module("norm_out", norm(ch, g));
    conv_out_ = register_module("conv_out", conv(ch, o.in_channels, 3));
  }
  at::Tensor forward(const at::Tensor& z) {  // (N, z, h, w) -> (N, C, h f, w f)
    at::Tensor h = mid_->forward(conv_in_->forward(z));
    for (auto& level : levels_) h = level->forward(h);
    return conv_out_->forward(swish(norm_out_->forward(h)));
  }

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<AeLevel> levels_;  // deepest first
  AeMid mid_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
};

// ---- the autoencoder ------------------------------------------------------------------------

AutoencoderKLImpl::AutoencoderKLImpl(AutoencoderOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t z = options_.z_channels;
  encoder_ = register_module("encoder", std::make_shared<AeEncoderImpl>(options_));
  decoder_ = register_module("decoder", std::make_shared<AeDecoderImpl>(options_));
  quant_conv_ = register_module("quant_conv", conv(2 * z, 2 * z, 1));
  post_quant_conv_ = register_module("post_quant_conv", conv(z, z, 1));
}

DiagonalGaussian AutoencoderKLImpl::encode(const at::Tensor& x) {
  const int64_t f = options_.factor();
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels && x.size(2) % f == 0 && x.size(3) % f == 0,
              "autoencoder: input ", x.sizes(), " is not (N, ", options_.in_channels, ", H, W) with H and W multiples of ",
              f, " (the downsampling factor)");
  const at::Tensor moments = quant_conv_->forward(encoder_->forward(x));  // (N, 2 z, H/f, W/f)
  const auto parts = moments.chunk(2, 1);
  return DiagonalGaussian{parts[0], at::clamp(parts[1], -30.0, 20.0)};
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 4 && z.size(1) == options_.z_channels, "autoencoder: latent ", z.sizes(), " is not (N, ",
              options_.z_channels, ", h, w)");
  return decoder_->forward(post_quant_conv_->forward(z));
}

int64_t AutoencoderKLImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

AutoencoderLossTerms autoencoder_loss(AutoencoderKL& ae, const at::Tensor& x, const at::Tensor& noise,
                                      const std::string& rec_type, double kl_weight) {
  if (rec_type != "l1" && rec_type != "l2") {
    throw std::invalid_argument("autoencoder loss: reconstruction type '" + rec_type + "' is not l1 or l2");
  }
  const DiagonalGaussian q = ae->encode(x);
  AutoencoderLossTerms out;
  out.reconstruction = ae->decode(q.sample(noise));  // (N, C, H, W)
  const at::Tensor diff = x - out.reconstruction;
  const at::Tensor per_dim = rec_type == "l1" ? diff.abs() : diff.pow(2);
  out.rec = per_dim.flatten(1).mean(1);  // (N)
  out.kl = q.kl();                       // (N)
  const double dims = static_cast<double>(x[0].numel());
  out.loss = out.rec + (kl_weight / dims) * out.kl;
  return out;
}

}  // namespace ddpm::model
