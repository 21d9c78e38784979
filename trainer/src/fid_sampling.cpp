// The diffusion model's sampler for FidEvaluation (per-index seeded samples, sample_indices);
// see ddpm/trainer/fid_sampling.h.
#include "ddpm/trainer/fid_sampling.h"

#include <ATen/ATen.h>

#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

evaluation::FidReport evaluate_model_fid(evaluation::FidEvaluation& fid, model::UNet& unet,
                                         const TrainConfig& model_config) {
  at::NoGradGuard no_grad;
  const evaluation::FidSettings& s = fid.settings();
  const diffusion::GaussianDiffusion spaced = make_diffusion(model_config, s.sampling);
  LoadedModel m;  // sample_indices' view of the network
  m.config = model_config;
  m.unet = unet;
  const std::vector<int64_t> shape = fid.image_shape();  // (C, H, W)
  SampleRequest req;
  req.channels = shape[0];
  req.height = shape[1];
  req.width = shape[2];
  req.respacing = s.sampling;
  req.clip_denoised = s.clip_denoised;
  req.seed = s.seed;
  const c10::Device device = fid.device();
  return fid.evaluate([&](int64_t begin, int64_t end) {
    return sample_indices(m, spaced, req, begin, end, device).images;  // (n, C, H, W) in [-1, 1]
  });
}

}  // namespace ddpm::trainer
