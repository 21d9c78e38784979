// Transport-independent parts of the Communicator: coalesced all-reduce of tensor lists,
// variable-size all-gather on top of equal-size all-gather, the single-process communicator and
// the factory.
#include "ddpm/dist/communicator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "ddpm/dist/context.h"
#include "ddpm/dist/mpi_communicator.h"
#include "ddpm/dist/nccl_communicator.h"
#include "ddpm/dist/watchdog.h"

namespace ddpm::dist {

void Communicator::set_collective_timeout(double seconds,
                                          std::function<void(const std::string& message)> on_timeout) {
  if (!(seconds > 0)) return set_watchdog(nullptr);
  set_watchdog(std::make_shared<CollectiveWatchdog>(seconds, std::move(on_timeout), [this] { return async_error(); }));
}

void Communicator::all_reduce(const at::Tensor& tensor, ReduceOp op) {
  all_reduce_async(tensor, op)->wait();
}

void Communicator::all_reduce(const std::vector<at::Tensor>& tensors, ReduceOp op) {
  // Group by (dtype, device) in first-seen order; the order is the same on every rank.
  std::vector<std::vector<int64_t>> groups;
  std::vector<std::pair<at::ScalarType, c10::Device>> keys;
  for (size_t i = 0; i < tensors.size(); ++i) {
    std::pair<at::ScalarType, c10::Device> key{tensors[i].scalar_type(), tensors[i].device()};
    auto it = std::find(keys.begin(), keys.end(), key);
    if (it == keys.end()) {
      keys.push_back(key);
      groups.emplace_back();
      it = keys.end() - 1;
    }
    groups[it - keys.begin()].push_back(static_cast<int64_t>(i));
  }
  for (const auto& group : groups) {
    std::vector<at::Tensor> flat;
    for (int64_t i : group) flat.push_back(tensors[i].reshape({-1}));
    at::Tensor packed = at::cat(flat);  // (sum numel,)
    all_reduce(packed, op);
    int64_t offset = 0;
    for (int64_t i : group) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(packed.narrow(0, offset, n).view(tensors[i].sizes()));
      offset += n;
    }
  }
}

std::vector<at::Tensor> Communicator::all_gather_v(const at::Tensor& tensor) {
  TORCH_CHECK(tensor.dim() >= 1, "all_gather_v needs a tensor with a leading dim, got a scalar");
  const at::Tensor rows = at::full({1}, tensor.size(0), tensor.options().dtype(at::kLong));
  const at::Tensor counts = all_gather(rows).cpu();  // (world, 1)
  const int64_t max_rows = counts.max().item<int64_t>();
  std::vector<int64_t> padded_shape = tensor.sizes().vec();
  padded_shape[0] = max_rows;
  at::Tensor padded = at::zeros(padded_shape, tensor.options());
  if (tensor.size(0) > 0) padded.narrow(0, 0, tensor.size(0)).copy_(tensor);
  const at::Tensor gathered = all_gather(padded);  // (world, max_rows, ...)
  std::vector<at::Tensor> out;
  for (int r = 0; r < world_size(); ++r)
    out.push_back(gathered[r].narrow(0, 0, counts[r][0].item<int64_t>()));
  return out;
}

// --- single process ---------------------------------------------------------------------------

std::shared_ptr<Work> SingleProcessCommunicator::all_reduce_async(const at::Tensor& tensor, ReduceOp op) {
  TORCH_CHECK(op != ReduceOp::kAvg || at::isFloatingType(tensor.scalar_type()) || tensor.numel() == 0,
              "ReduceOp::kAvg needs a floating tensor, got ", tensor.scalar_type());
  return std::make_shared<CompletedWork>();
}

void SingleProcessCommunicator::broadcast(const at::Tensor&, int root) {
  TORCH_CHECK(root == 0, "broadcast root ", root, " out of range for world size 1");
}

at::Tensor SingleProcessCommunicator::all_gather(const at::Tensor& tensor) {
  return tensor.unsqueeze(0).clone();
}

std::vector<at::Tensor> SingleProcessCommunicator::all_gather_v(const at::Tensor& tensor) {
  return {tensor.clone()};
}

// --- factory ----------------------------------------------------------------------------------

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "single") return Backend::kSingle;
  if (name == "mpi") return Backend::kMpi;
  if (name == "nccl") return Backend::kNccl;
  throw std::invalid_argument("unknown communicator backend '" + name +
                              "'; expected one of auto, single, mpi, nccl");
}

bool nccl_available() { return DDPM_WITH_NCCL != 0; }

std::unique_ptr<Communicator> make_communicator(const Context& ctx, Backend backend) {
  if (backend == Backend::kAuto) {
    // NCCL refuses two ranks on one GPU: ranks that share one talk MPI through host copies.
    if (ctx.cuda_device >= 0 && nccl_available() && !ctx.shares_gpu) backend = Backend::kNccl;
    else backend = ctx.world_size > 1 ? Backend::kMpi : Backend::kSingle;
  }
  switch (backend) {
    case Backend::kSingle:
      if (ctx.world_size != 1)
        throw std::invalid_argument("backend 'single' needs world size 1, got " +
                                    std::to_string(ctx.world_size) + "; use 'mpi' or 'nccl'");
      return std::make_unique<SingleProcessCommunicator>();
    case Backend::kMpi:
      return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
    case Backend::kNccl:
#if DDPM_WITH_NCCL
      if (ctx.cuda_device < 0)
        throw std::invalid_argument("backend 'nccl' needs a CUDA device, and this rank sees none; "
                                    "use 'mpi' on CPU");
      return std::make_unique<NcclCommunicator>(MPI_COMM_WORLD, ctx.cuda_device);
#else
      throw std::invalid_argument("backend 'nccl' requested but this build has no NCCL "
                                  "(configure with a CUDA torch and -DDDPM_WITH_CUDA=ON)");
#endif
    case Backend::kAuto:
      break;
  }
  throw std::logic_error("make_communicator: unhandled backend");
}

}  // namespace ddpm::dist
