// The collective operations the trainer uses, independent of the transport: all-reduce (sum,
// average; in place; blocking or returning a Work handle), broadcast, all-gather of equal-size
// and of variable-size tensors (the timestep sampler's (t, loss) pairs), barrier.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ddpm::dist {

class CollectiveWatchdog;

struct Context;

enum class ReduceOp { kSum, kAvg };  // kAvg = sum / world_size (floating tensors only)

// An operation in flight. wait() makes its result visible to the caller: on CPU it blocks until
// done; for CUDA tensors it orders torch's current stream after the collective (no host sync).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Non-blocking progress poll; true when the operation has completed. (For MPI this is
  // MPI_Test, which also drives progress of non-blocking collectives.)
  virtual bool test() = 0;
};

// A Work that is already done (single process, empty ops).
class CompletedWork : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

// Every rank must call the same collectives in the same order with matching shapes/dtypes.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl", "single"
  // Where its collectives take tensors without staging copies: NCCL's CUDA device, else the CPU.
  virtual c10::Device device() const { return c10::Device(c10::kCPU); }

  // In place; any shape, contiguous or not.
  virtual std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, ReduceOp op) = 0;
  // Blocking; the default waits on all_reduce_async (MPI overrides it with MPI_Allreduce, whose
  // tuned algorithms beat the non-blocking ones for large messages).
  virtual void all_reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // Coalesced: tensors of one dtype are packed into one flat buffer, reduced once, unpacked.
  void all_reduce(const std::vector<at::Tensor>& tensors, ReduceOp op = ReduceOp::kSum);

  // In place: every rank ends with root's values.
  virtual void broadcast(const at::Tensor& tensor, int root = 0) = 0;
  // Equal shapes on every rank; returns (world_size, *tensor.shape) on tensor's device.
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  // dim 0 may differ between ranks (trailing dims must match): returns each rank's tensor,
  // indexed by rank. Empty tensors (0 rows) are fine.
  virtual std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor);
  virtual void barrier() = 0;
  // Tears the transport down without waiting for peers (NCCL: ncclCommAbort). For the fatal path.
  virtual void abort() {}

  // Bounds every collective from now on (watchdog.h): one that has not completed after `seconds`
  // (a peer stopped responding), or an asynchronous transport error, calls on_timeout(message)
  // on the watchdog's thread, which must end the process. seconds <= 0 removes the bound.
  void set_collective_timeout(double seconds, std::function<void(const std::string& message)> on_timeout);
  // Shares a watchdog (NCCL hands its own to the MPI communicator it uses for CPU tensors).
  virtual void set_watchdog(std::shared_ptr<CollectiveWatchdog> watchdog) { watchdog_ = std::move(watchdog); }
  // The transport's asynchronous error, "" when none; polled from the watchdog's thread.
  virtual std::string async_error() { return ""; }

 protected:
  CollectiveWatchdog* watchdog() const { return watchdog_.get(); }

 private:
  std::shared_ptr<CollectiveWatchdog> watchdog_;
};

// world size 1: every collective is the identity (all_gather adds the leading dim of 1).
class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "single"; }
  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, ReduceOp op) override;
  void broadcast(const at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor) override;
  void barrier() override {}
};

enum class Backend { kAuto, kSingle, kMpi, kNccl };
// "auto" | "single" | "mpi" | "nccl"; throws std::invalid_argument naming the known values.
Backend parse_backend(const std::string& name);
bool nccl_available();  // built with NCCL (DDPM_WITH_NCCL)

// kAuto: NCCL when the context has a CUDA device of its own (not shared with another local
// rank) and NCCL is built in; else MPI when
// world_size > 1; else single-process. Collective over MPI_COMM_WORLD for mpi/nccl.
std::unique_ptr<Communicator> make_communicator(const Context& ctx, Backend backend = Backend::kAuto);

}  // namespace ddpm::dist
