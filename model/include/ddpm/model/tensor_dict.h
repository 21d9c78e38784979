// Ordered name -> tensor dictionaries in the file format of Python's torch.save / torch.load
// (a zip archive holding a pickled dict): model and EMA weights that both ddpm and PyTorch read.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace ddpm::model {

using TensorDict = std::vector<std::pair<std::string, at::Tensor>>;  // insertion order kept

// Writes CPU copies of the tensors; `torch.load(path)` in Python returns a dict of tensors.
void save_tensor_dict(const std::string& path, const TensorDict& tensors);
// Reads a file written by torch.save({name: tensor, ...}) or by save_tensor_dict. Throws
// std::runtime_error naming the file when it is missing or not a dict of tensors.
TensorDict load_tensor_dict(const std::string& path);

}  // namespace ddpm::model
