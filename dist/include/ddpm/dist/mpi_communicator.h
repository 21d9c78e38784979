// Communicator over MPI for CPU tensors (the path CI runs): MPI datatypes per dtype, in place
// with MPI_IN_PLACE, non-blocking MPI_Iallreduce behind Work handles for the gradient reducer.
// half/bfloat16 have no MPI datatype: they are reduced in float32 staging buffers. CUDA tensors
// are staged through host copies (ranks sharing one GPU, which NCCL refuses).
#pragma once
#include <mpi.h>

#include "ddpm/dist/communicator.h"

namespace ddpm::dist {

class MpiCommunicator : public Communicator {
 public:
  // Duplicates `comm` (our traffic never mixes with the caller's) and sets MPI_ERRORS_RETURN on
  // the duplicate so failures become DistError with MPI_Error_string.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, ReduceOp op) override;
  using Communicator::all_reduce;
  void all_reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum) override;  // MPI_Allreduce
  void broadcast(const at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  void barrier() override;

  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace ddpm::dist
