// Ordered name -> tensor dictionaries in the file format of Python's torch.save / torch.load
// (a zip archive holding a pickled dict): model, EMA and feature-network weights that both ddpm
// and PyTorch read. Here in ops, the lowest layer, because model/ and monitoring/ both need it.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace ddpm::ops {

using TensorDict = std::vector<std::pair<std::string, at::Tensor>>;  // insertion order kept

// Writes CPU copies of the tensors; `torch.load(path)` in Python (weights_only too) returns a
// dict of tensors.
void save_tensor_dict(const std::string& path, const TensorDict& tensors);
// Reads a zip-format torch.save file of a dict of tensors: a plain dict, or a state_dict
// (collections.OrderedDict with _metadata, as model.state_dict() and improved-diffusion's
// checkpoints are). Throws std::runtime_error naming the file when it is missing, in the legacy
// (pre-1.6) format, or not a dict of tensors.
TensorDict load_tensor_dict(const std::string& path);

}  // namespace ddpm::ops
