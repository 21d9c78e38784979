// Keeping replicas identical: broadcast parameters and buffers from a root rank (at start and
// after a resume), and a check that all ranks hold bit-identical tensors, naming the first one
// that differs (64-bit content hashes, all-gathered).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/dist/communicator.h"

namespace torch::nn {
class Module;
}

namespace ddpm::dist {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Parameters then buffers, with their state_dict-style names.
NamedTensors module_state(const torch::nn::Module& module);

// Every tensor takes root's values (in place, no autograd); coalesced per dtype/device.
void broadcast_tensors(Communicator& comm, const NamedTensors& tensors, int root = 0);
void broadcast_module(Communicator& comm, const torch::nn::Module& module, int root = 0);

// Same answer on every rank: the name of the first tensor whose bytes differ between ranks,
// with the ranks that differ from rank 0 ("net.0.weight (ranks 1, 3 differ from rank 0)").
std::optional<std::string> first_differing_tensor(Communicator& comm, const NamedTensors& tensors);
// Throws DistError with that message when any tensor differs.
void check_identical(Communicator& comm, const NamedTensors& tensors);

// FNV-1a over the tensor's bytes (on CPU).
uint64_t content_hash(const at::Tensor& tensor);

}  // namespace ddpm::dist
