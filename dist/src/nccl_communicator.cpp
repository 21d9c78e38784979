// Communicator over NCCL (see nccl_communicator.h). Built only with CUDA (DDPM_WITH_NCCL); CPU
// tensors given to it go through an MPI communicator over the same ranks (small control data).
#include "ddpm/dist/nccl_communicator.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "ddpm/dist/check.h"
#include "ddpm/dist/mpi_communicator.h"
#include "ddpm/dist/watchdog.h"

namespace ddpm::dist {

std::string nccl_error_string(int code) {
  return std::string(ncclGetErrorString(static_cast<ncclResult_t>(code))) + " (code " +
         std::to_string(code) + ")";
}

std::string cuda_error_string(int code) {
  return std::string(cudaGetErrorString(static_cast<cudaError_t>(code))) + " (code " +
         std::to_string(code) + ")";
}

namespace {

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    default: TORCH_CHECK(false, "NcclCommunicator: no NCCL datatype for ", t);
  }
}

// Done when `done` (recorded on the NCCL stream) completes; wait() orders the caller's current
// stream after it and copies a staging buffer back.
class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<c10::cuda::CUDAEvent> done, int device, at::Tensor buffer, at::Tensor target)
      : done_(std::move(done)), device_(device), buffer_(std::move(buffer)), target_(std::move(target)) {}
  void wait() override {
    done_->block(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)));
    if (target_.defined()) target_.copy_(buffer_);
  }
  bool test() override { return done_->query(); }

 private:
  std::shared_ptr<c10::cuda::CUDAEvent> done_;
  int device_;
  at::Tensor buffer_, target_;
};

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  int device = 0;
  c10::cuda::CUDAStream stream;
  std::unique_ptr<MpiCommunicator> mpi;  // CPU tensors and the bootstrap

  Impl(int dev, c10::cuda::CUDAStream s) : device(dev), stream(s) {}

  // NCCL result check that aborts the communicator first so no peer waits on a dead kernel.
  void check(ncclResult_t rc, const char* call, const char* file, int line) {
    if (rc == ncclSuccess) return;
    std::string msg = nccl_error_string(rc);
    if (comm != nullptr) {
      if (const char* last = ncclGetLastError(comm); last != nullptr && *last) msg += "; " + std::string(last);
      ncclCommAbort(comm);
      comm = nullptr;
    }
    throw_dist_error("NCCL", call, msg, file, line,
                     "set NCCL_DEBUG=WARN for details; the communicator was aborted");
  }

  // The NCCL stream waits for work already queued on torch's current stream.
  void enter() {
    TORCH_CHECK(comm != nullptr, "NcclCommunicator used after abort()");
    c10::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)));
    ready.block(stream);
  }

  std::shared_ptr<c10::cuda::CUDAEvent> leave(const at::Tensor& used) {
    c10::cuda::CUDACachingAllocator::recordStream(used.storage().data_ptr(), stream);
    auto done = std::make_shared<c10::cuda::CUDAEvent>();
    done->record(stream);
    return done;
  }
};

#define DDPM_NCCL_CALL(call) impl_->check((call), #call, __FILE__, __LINE__)

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int cuda_device)
    : device_(c10::kCUDA, static_cast<c10::DeviceIndex>(cuda_device)) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(cuda_device));
  impl_ = std::make_unique<Impl>(cuda_device,
                                 c10::cuda::getStreamFromPool(true, static_cast<c10::DeviceIndex>(cuda_device)));
  impl_->mpi = std::make_unique<MpiCommunicator>(comm);
  rank_ = impl_->mpi->rank();
  size_ = impl_->mpi->world_size();
  ncclUniqueId id;
  if (rank_ == 0) DDPM_NCCL_CHECK(ncclGetUniqueId(&id), "is a GPU and its driver visible?");
  DDPM_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, impl_->mpi->comm()), "ncclUniqueId bootstrap");
  DDPM_NCCL_CALL(ncclCommInitRank(&impl_->comm, size_, id, rank_));
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_ && impl_->comm != nullptr) ncclCommDestroy(impl_->comm);
}

void NcclCommunicator::set_watchdog(std::shared_ptr<CollectiveWatchdog> watchdog) {
  impl_->mpi->set_watchdog(watchdog);
  Communicator::set_watchdog(std::move(watchdog));
}

std::string NcclCommunicator::async_error() {
  ncclComm_t comm = impl_ ? impl_->comm : nullptr;
  if (comm == nullptr) return "";
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(comm, &async) != ncclSuccess || async == ncclSuccess) return "";
  return "NCCL " + nccl_error_string(async);
}

std::shared_ptr<c10::cuda::CUDAEvent> NcclCommunicator::leave(const at::Tensor& used, const char* what) {
  std::shared_ptr<c10::cuda::CUDAEvent> done = impl_->leave(used);
  if (CollectiveWatchdog* w = watchdog()) w->watch(what, [done] { return done->query(); });
  return done;
}

void NcclCommunicator::abort() {
  if (impl_ && impl_->comm != nullptr) {
    ncclCommAbort(impl_->comm);
    impl_->comm = nullptr;
  }
}

std::shared_ptr<Work> NcclCommunicator::all_reduce_async(const at::Tensor& tensor, ReduceOp op) {
  if (tensor.device().is_cpu()) return impl_->mpi->all_reduce_async(tensor, op);
  TORCH_CHECK(tensor.device().index() == impl_->device, "NcclCommunicator on cuda:", impl_->device,
              " got a tensor on ", tensor.device());
  TORCH_CHECK(op != ReduceOp::kAvg || at::isFloatingType(tensor.scalar_type()),
              "ReduceOp::kAvg needs a floating tensor, got ", tensor.scalar_type());
  c10::cuda::CUDAGuard guard(tensor.device());
  at::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  at::Tensor target = tensor.is_contiguous() ? at::Tensor() : tensor;
  impl_->enter();
  DDPM_NCCL_CALL(ncclAllReduce(buffer.data_ptr(), buffer.data_ptr(), buffer.numel(),
                               nccl_type(buffer.scalar_type()), op == ReduceOp::kAvg ? ncclAvg : ncclSum,
                               impl_->comm, impl_->stream.stream()));
  return std::make_shared<NcclWork>(leave(buffer, "NCCL all_reduce"), impl_->device, buffer, target);
}

void NcclCommunicator::broadcast(const at::Tensor& tensor, int root) {
  if (tensor.device().is_cpu()) return impl_->mpi->broadcast(tensor, root);
  c10::cuda::CUDAGuard guard(tensor.device());
  at::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  impl_->enter();
  DDPM_NCCL_CALL(ncclBroadcast(buffer.data_ptr(), buffer.data_ptr(), buffer.nbytes(), ncclUint8, root,
                               impl_->comm, impl_->stream.stream()));
  NcclWork(leave(buffer, "NCCL broadcast"), impl_->device, buffer, tensor.is_contiguous() ? at::Tensor() : tensor)
      .wait();
}

at::Tensor NcclCommunicator::all_gather(const at::Tensor& tensor) {
  if (tensor.device().is_cpu()) return impl_->mpi->all_gather(tensor);
  c10::cuda::CUDAGuard guard(tensor.device());
  const at::Tensor src = tensor.contiguous();
  std::vector<int64_t> shape{size_};
  for (int64_t s : tensor.sizes()) shape.push_back(s);
  at::Tensor out = at::empty(shape, tensor.options());  // (world, *shape)
  impl_->enter();
  DDPM_NCCL_CALL(ncclAllGather(src.data_ptr(), out.data_ptr(), src.nbytes(), ncclUint8, impl_->comm,
                               impl_->stream.stream()));
  c10::cuda::CUDACachingAllocator::recordStream(src.storage().data_ptr(), impl_->stream);
  NcclWork(leave(out, "NCCL all_gather"), impl_->device, out, at::Tensor()).wait();
  return out;
}

void NcclCommunicator::barrier() {
  // Every rank's queued GPU work and the host threads meet.
  at::Tensor one = at::ones({1}, at::TensorOptions().device(at::kCUDA, impl_->device));
  all_reduce_async(one, ReduceOp::kSum)->wait();
  c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(impl_->device)).synchronize();
  impl_->mpi->barrier();
}

}  // namespace ddpm::dist
