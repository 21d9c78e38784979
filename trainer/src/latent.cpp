// The autoencoder of a config and the frozen autoencoder of a latent run; see ddpm/trainer/latent.h.
#include "ddpm/trainer/latent.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "ddpm/dist/communicator.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

namespace {

const std::string kScale = "latent/scale_factor";
const std::string kOptions = "latent/autoencoder_options";
const std::string kWeights = "latent/autoencoder.";

model::AutoencoderKL frozen(model::AutoencoderKL ae, const model::TensorDict& weights, const c10::Device& device,
                            const std::string& source) {
  model::load_state_dict(*ae, weights, source);
  ae->to(device);
  ae->eval();
  for (auto& p : ae->parameters()) p.set_requires_grad(false);
  return ae;
}

}  // namespace

model::AutoencoderOptions autoencoder_options(const TrainConfig& config, int64_t image_channels) {
  model::AutoencoderOptions o;
  o.in_channels = image_channels;
  o.channels = config.ae_channels;
  try {
    o.channel_mult = model::autoencoder_channel_mult(config.ae_factor);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--ae-factor " + std::to_string(config.ae_factor) + ": " + e.what());
  }
  o.num_res_blocks = config.ae_res_blocks;
  o.z_channels = config.z_channels;
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + " (--ae-channels, --ae-res-blocks, --z-channels)");
  }
  return o;
}

at::Tensor LatentCodec::encode(const at::Tensor& x, const at::Tensor& noise) const {
  TORCH_CHECK(scale_factor > 0, "latent: the scale factor is not set (", source, ")");
  at::NoGradGuard no_grad;
  model::AutoencoderKL net = ae;  // the holder's operator-> is const on a const holder
  const model::DiagonalGaussian q = net->encode(x);
  const at::Tensor eps = noise.defined() ? noise.to(q.mean.options()) : at::randn_like(q.mean);
  return (q.sample(eps) * scale_factor).to(at::kFloat);  // (N, z, H/f, W/f)
}

at::Tensor LatentCodec::decode(const at::Tensor& latents) const {
  TORCH_CHECK(scale_factor > 0, "latent: the scale factor is not set (", source, ")");
  at::NoGradGuard no_grad;
  model::AutoencoderKL net = ae;
  return net->decode(latents / scale_factor).clamp(-1.0, 1.0);  // (N, C, H, W)
}

model::TensorDict LatentCodec::state() const {
  const model::AutoencoderOptions& o = ae->options();
  std::vector<int64_t> opts = {o.in_channels, o.channels, o.num_res_blocks, o.z_channels, o.norm_groups};
  opts.insert(opts.end(), o.channel_mult.begin(), o.channel_mult.end());
  model::TensorDict out = {{kScale, at::tensor({scale_factor}, at::kDouble)},
                           {kOptions, at::tensor(opts, at::kLong)}};
  for (const auto& [name, t] : model::state_dict(*ae)) out.emplace_back(kWeights + name, t.detach().cpu());
  return out;
}

LatentCodec load_autoencoder_checkpoint(const std::string& spec, const c10::Device& device) {
  auto [state, path] = resolve_checkpoint(spec, "--latent");
  const TrainConfig config = config_from_json(state.config, path + "/state.json (config)");
  if (config.task != "autoencoder") {
    throw std::invalid_argument("--latent " + spec + ": " + path + " is a --task " + config.task +
                                " run; give a checkpoint of ddpm_train_autoencoder (--task autoencoder)");
  }
  // The first EMA's parameters over model.pt (buffers and anything the EMA lacks).
  model::TensorDict weights = state.model;
  std::string source = path + "/model.pt";
  if (!state.emas.empty()) {
    std::map<std::string, at::Tensor> ema(state.emas.front().second.begin(), state.emas.front().second.end());
    for (auto& [name, t] : weights) {
      if (const auto it = ema.find(name); it != ema.end()) t = it->second;
    }
    source = path + "/" + ema_file_name(state.emas.front().first);
  }
  int64_t image_channels = 0;
  for (const auto& [name, t] : weights) {
    if (name == "encoder.conv_in.weight") image_channels = t.size(1);
  }
  LatentCodec c;
  c.source = source;
  c.ae = frozen(model::AutoencoderKL(autoencoder_options(config, image_channels)), weights, device, source);
  return c;
}

bool has_latent_state(const model::TensorDict& state) {
  for (const auto& [name, t] : state) {
    if (name == kScale) return true;
  }
  return false;
}

LatentCodec latent_codec_from_state(const model::TensorDict& state, const c10::Device& device,
                                    const std::string& source) {
  std::map<std::string, at::Tensor> by_name;
  model::TensorDict weights;
  for (const auto& [name, t] : state) {
    by_name[name] = t;
    if (name.rfind(kWeights, 0) == 0) weights.emplace_back(name.substr(kWeights.size()), t);
  }
  if (!by_name.count(kScale) || !by_name.count(kOptions) || weights.empty()) {
    throw std::runtime_error(source + ": no latent autoencoder state (" + kScale + ", " + kOptions + ", " + kWeights +
                             "*); is it a latent diffusion run (ddpm_train --latent)?");
  }
  const at::Tensor opts = by_name[kOptions].to(at::kLong).contiguous();
  TORCH_CHECK(opts.numel() >= 6, source, ": ", kOptions, " has ", opts.numel(), " entries, expected >= 6");
  const int64_t* v = opts.data_ptr<int64_t>();
  model::AutoencoderOptions o;
  o.in_channels = v[0], o.channels = v[1], o.num_res_blocks = v[2], o.z_channels = v[3], o.norm_groups = v[4];
  o.channel_mult.assign(v + 5, v + opts.numel());
  LatentCodec c;
  c.source = source;
  c.ae = frozen(model::AutoencoderKL(o), weights, device, source);
  c.scale_factor = by_name[kScale].item<double>();
  return c;
}

SampleRequest latent_sample_request(const SampleRequest& image, const model::AutoencoderOptions& ae) {
  const int64_t f = ae.factor();
  if (image.height % f != 0 || image.width % f != 0 || image.channels != ae.in_channels) {
    throw std::invalid_argument("latent sampling: images of " + std::to_string(image.channels) + "x" +
                                std::to_string(image.height) + "x" + std::to_string(image.width) +
                                " do not fit the autoencoder (" + std::to_string(ae.in_channels) +
                                " channels, sides multiple of " + std::to_string(f) + "); give --image-size a multiple of " +
                                std::to_string(f));
  }
  SampleRequest z = image;
  z.channels = ae.z_channels, z.height = image.height / f, z.width = image.width / f;
  z.clip_denoised = false;
  return z;
}

IndexSampler latent_index_sampler(LoadedModel& m, const SampleRequest& image, const c10::Device& device) {
  const LatentCodec codec = latent_codec_from_state(m.task_state, device, m.checkpoint + "/state.pt");
  IndexSampler sample = index_sampler(m.unet, m.config, latent_sample_request(image, codec.ae->options()), device);
  return [sample, codec, device](int64_t begin, int64_t end) {
    return codec.decode(sample(begin, end).to(device)).cpu();  // (n, C, H, W)
  };
}

ReconstructionSummary evaluate_reconstruction(model::AutoencoderKL& ae, const at::Tensor& images, int64_t batch_size,
                                              dist::Communicator& comm, const c10::Device& device) {
  at::NoGradGuard no_grad;
  ae->eval();
  double sums[3] = {0.0, 0.0, 0.0};  // squared errors, absolute errors, images
  const double dims = static_cast<double>(images.size(1) * images.size(2) * images.size(3));  // H W C
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    const int64_t n = std::min(batch_size, images.size(0) - i);
    const at::Tensor x = to_model_input(images.narrow(0, i, n)).to(device);  // (n, C, H, W)
    const at::Tensor x_hat = ae->decode(ae->encode(x).mode()).clamp(-1.0, 1.0);
    const at::Tensor d = ((x - x_hat) * 0.5).to(at::kDouble);  // on the [0, 1] scale
    sums[0] += d.pow(2).sum().item<double>();
    sums[1] += d.abs().sum().item<double>();
    sums[2] += static_cast<double>(n);
  }
  const at::Tensor total = at::tensor({sums[0], sums[1], sums[2]}, at::kDouble).to(comm.device());
  comm.all_reduce(total);
  const at::Tensor t = total.cpu();
  ReconstructionSummary s;
  s.count = static_cast<int64_t>(t[2].item<double>());
  const double values = std::max(1.0, t[2].item<double>() * dims);
  s.mse = t[0].item<double>() / values;
  s.l1 = t[1].item<double>() / values;
  s.psnr = 10.0 * std::log10(1.0 / s.mse);
  return s;
}

double latent_scale_factor(const at::Tensor& latents) {
  return 1.0 / latents.to(at::kDouble).flatten().std().item<double>();
}

double first_batch_scale_factor(const LatentCodec& codec, const at::Tensor& images, uint64_t seed) {
  const model::AutoencoderOptions& o = codec.ae->options();
  const int64_t f = o.factor();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor noise = at::randn({images.size(0), o.z_channels, images.size(2) / f, images.size(3) / f}, gen);
  LatentCodec unit = codec;
  unit.scale_factor = 1.0;
  return latent_scale_factor(unit.encode(images, noise));
}

}  // namespace ddpm::trainer
