// Module weights as name -> tensor dicts in Python's state_dict order, loaded strictly (a clear
// error lists missing, unexpected and mis-shaped keys) and saved in torch.save's format.
#pragma once
#include <torch/nn/module.h>

#include <string>

#include "ddpm/model/tensor_dict.h"
#include "ddpm/model/unet/unet.h"

namespace ddpm::model {

// Parameters and buffers by dotted name, module by module in registration order (as PyTorch).
TensorDict state_dict(const torch::nn::Module& module);
// Copies every tensor into the module (converting dtype and device). Throws std::runtime_error
// naming `source` and listing missing, unexpected and mis-shaped keys when they do not match.
void load_state_dict(torch::nn::Module& module, const TensorDict& tensors,
                     const std::string& source = "state_dict");

// U-Net weights files (torch.save format). load accepts improved-diffusion's class-conditional
// checkpoints whose label_emb has num_classes rows (the null label row is kept as initialised).
void save_unet_weights(const UNet& unet, const std::string& path);
void load_unet_weights(UNet& unet, const std::string& path);
void load_unet_state_dict(UNet& unet, TensorDict tensors, const std::string& source = "state_dict");

}  // namespace ddpm::model
