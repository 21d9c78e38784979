// The diffusion model's sampler for FidEvaluation (per-index seeded samples, sample_indices);
// see ddpm/trainer/fid_sampling.h.
#include "ddpm/trainer/fid_sampling.h"

#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

SampleRequest fid_sample_request(const evaluation::FidEvaluation& fid) {
  const evaluation::FidSettings& s = fid.settings();
  const std::vector<int64_t> shape = fid.image_shape();  // (C, H, W)
  SampleRequest req;
  req.channels = shape[0];
  req.height = shape[1];
  req.width = shape[2];
  req.respacing = s.sampling;
  req.clip_denoised = s.clip_denoised;
  req.seed = s.seed;
  return req;
}

evaluation::FidReport evaluate_model_fid(evaluation::FidEvaluation& fid, model::UNet& unet,
                                         const TrainConfig& model_config) {
  return fid.evaluate(index_sampler(unet, model_config, fid_sample_request(fid), fid.device()));
}

}  // namespace ddpm::trainer
