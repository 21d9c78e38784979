// The trainer's side of the FID (evaluation/fid_eval.h): the sampler of a diffusion model for
// FidEvaluation::evaluate, built from the network and the run's config. The one path used by the
// training loop (--fid-every) and by ddpm_eval --fid, so both give the same FID for the same
// weights and settings.
#pragma once
#include "ddpm/evaluation/fid_eval.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/inference.h"

namespace ddpm::trainer {

// The samples of a FID: the reference's image shape (C, H, W), fid.settings()' respacing,
// clip_denoised and seed. The training loop passes it to its task's image_sampler.
SampleRequest fid_sample_request(const evaluation::FidEvaluation& fid);

// Every rank, at the same point: FID of `unet` (eval mode) sampling with the diffusion of
// `model_config` respaced by fid.settings().sampling (DDIM for "ddimN"), clip_denoised and seed
// from fid.settings(); sample i is drawn from sample_generator(seed, i) (inference.h), images of
// the reference's shape on fid.device(). A collective over FidEvaluation's communicator.
evaluation::FidReport evaluate_model_fid(evaluation::FidEvaluation& fid, model::UNet& unet,
                                         const TrainConfig& model_config);

}  // namespace ddpm::trainer
