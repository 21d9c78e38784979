// Tensor dictionaries in torch.save's format, as the model code names them (see
// ddpm/ops/tensor_dict.h for the implementation and its guarantees).
#pragma once
#include "ddpm/ops/tensor_dict.h"

namespace ddpm::model {

using ops::TensorDict;
using ops::load_tensor_dict;
using ops::save_tensor_dict;

}  // namespace ddpm::model
