// Communicator over NCCL for CUDA tensors: one NCCL communicator per process, bootstrapped by
// broadcasting the ncclUniqueId over MPI; collectives run on the communicator's own stream,
// ordered after torch's current stream with events (and back again on wait()).
#pragma once
#include <mpi.h>

#include <memory>

#include "ddpm/dist/communicator.h"

namespace c10::cuda {
struct CUDAEvent;
}

namespace ddpm::dist {

#if DDPM_WITH_NCCL
class NcclCommunicator : public Communicator {
 public:
  // Collective over `comm`; `cuda_device` is this rank's device (Context::cuda_device).
  NcclCommunicator(MPI_Comm comm, int cuda_device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  c10::Device device() const override { return device_; }
  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, ReduceOp op) override;
  void broadcast(const at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  void barrier() override;
  void abort() override;
  void set_watchdog(std::shared_ptr<CollectiveWatchdog> watchdog) override;  // also for the CPU path
  std::string async_error() override;  // ncclCommGetAsyncError

  struct Impl;

 private:
  // The event recorded after a collective on the NCCL stream, watched until it completes.
  std::shared_ptr<c10::cuda::CUDAEvent> leave(const at::Tensor& used, const char* what);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int size_ = 1;
  c10::Device device_;
};
#endif

}  // namespace ddpm::dist
