// Communicator over MPI (see mpi_communicator.h). CUDA tensors are staged through host copies
// (several ranks sharing one GPU, where NCCL refuses duplicate devices).
#include "ddpm/dist/mpi_communicator.h"

#include <ATen/ATen.h>

#include <climits>

#include "ddpm/dist/check.h"
#include "ddpm/dist/watchdog.h"

namespace ddpm::dist {

namespace {

// The MPI datatype for a reduction, or MPI_DATATYPE_NULL when it needs a float32 staging copy.
MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
  }
}

void check_defined(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.defined(), "MpiCommunicator::", op, ": undefined tensor");
}

int checked_count(int64_t n, const char* op) {
  TORCH_CHECK(n <= INT_MAX, "MpiCommunicator::", op, ": ", n,
              " elements exceed MPI's int count; split the tensor or use bigger buckets of fewer elements");
  return static_cast<int>(n);
}

// An MPI_Iallreduce in flight. `buffer` is what MPI works on; `target` receives it on wait() when
// it is a staging copy (non-contiguous input, half/bfloat16).
class MpiWork : public Work {
 public:
  MpiWork(MPI_Request req, at::Tensor buffer, at::Tensor target, bool average, int world,
          CollectiveWatchdog* watchdog)
      : req_(req),
        buffer_(std::move(buffer)),
        target_(std::move(target)),
        average_(average),
        world_(world),
        watchdog_(watchdog) {}
  ~MpiWork() override {
    if (req_ != MPI_REQUEST_NULL) {
      int fin = 0;
      MPI_Finalized(&fin);
      if (!fin) MPI_Wait(&req_, MPI_STATUS_IGNORE);  // never free a buffer MPI still writes
    }
  }
  bool test() override {
    if (req_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    DDPM_MPI_CHECK(MPI_Test(&req_, &done, MPI_STATUS_IGNORE), "a peer rank may have failed");
    return done != 0;
  }
  void wait() override {
    if (finished_) return;
    if (req_ != MPI_REQUEST_NULL) {
      CollectiveWatchdog::Scope watched(watchdog_, "MPI all_reduce (wait)");
      DDPM_MPI_CHECK(MPI_Wait(&req_, MPI_STATUS_IGNORE), "a peer rank may have failed");
    }
    if (average_) buffer_.div_(world_);
    if (target_.defined()) target_.copy_(buffer_);
    finished_ = true;
  }

 private:
  MPI_Request req_;
  at::Tensor buffer_, target_;
  bool average_;
  int world_;
  CollectiveWatchdog* watchdog_;
  bool finished_ = false;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  DDPM_MPI_CHECK(MPI_Comm_dup(comm, &comm_), "MpiCommunicator is built collectively by every rank");
  DDPM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
                 "the MPI library rejected MPI_ERRORS_RETURN: check the OpenMPI install (mpirun --version)");
  DDPM_MPI_CHECK(MPI_Comm_rank(comm_, &rank_), "the duplicated communicator is invalid: was MPI finalized?");
  DDPM_MPI_CHECK(MPI_Comm_size(comm_, &size_), "the duplicated communicator is invalid: was MPI finalized?");
}

MpiCommunicator::~MpiCommunicator() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

namespace {
// What MPI reduces: the tensor itself, or a contiguous (float32 for half/bfloat16) staging copy
// that is copied back into `target` afterwards.
struct ReduceBuffer {
  at::Tensor buffer, target;
  MPI_Datatype type;
};

ReduceBuffer reduce_buffer(const at::Tensor& tensor, ReduceOp op) {
  check_defined(tensor, "all_reduce");
  TORCH_CHECK(op != ReduceOp::kAvg || at::isFloatingType(tensor.scalar_type()),
              "ReduceOp::kAvg needs a floating tensor, got ", tensor.scalar_type());
  ReduceBuffer b{tensor, at::Tensor(), mpi_type(tensor.scalar_type())};
  if (!tensor.device().is_cpu()) {  // host staging copy, written back on completion
    const bool widen = b.type == MPI_DATATYPE_NULL;
    b = {tensor.to(at::kCPU, widen ? at::kFloat : tensor.scalar_type()).contiguous(), tensor,
         widen ? MPI_FLOAT : b.type};
    TORCH_CHECK(!widen || tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16,
                "MpiCommunicator::all_reduce: no MPI reduction for dtype ", tensor.scalar_type());
  } else if (b.type == MPI_DATATYPE_NULL) {
    TORCH_CHECK(tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16,
                "MpiCommunicator::all_reduce: no MPI reduction for dtype ", tensor.scalar_type());
    b = {tensor.to(at::kFloat).contiguous(), tensor, MPI_FLOAT};
  } else if (!tensor.is_contiguous()) {
    b = {tensor.contiguous(), tensor, b.type};
  }
  return b;
}
}  // namespace

std::shared_ptr<Work> MpiCommunicator::all_reduce_async(const at::Tensor& tensor, ReduceOp op) {
  ReduceBuffer b = reduce_buffer(tensor, op);
  MPI_Request req = MPI_REQUEST_NULL;
  DDPM_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, b.buffer.data_ptr(), checked_count(b.buffer.numel(), "all_reduce"),
                                b.type, MPI_SUM, comm_, &req),
                 "every rank must call the same collectives in the same order");
  return std::make_shared<MpiWork>(req, b.buffer, b.target, op == ReduceOp::kAvg, size_, watchdog());
}

void MpiCommunicator::all_reduce(const at::Tensor& tensor, ReduceOp op) {
  ReduceBuffer b = reduce_buffer(tensor, op);
  CollectiveWatchdog::Scope watched(watchdog(), "MPI all_reduce");
  DDPM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.buffer.data_ptr(), checked_count(b.buffer.numel(), "all_reduce"),
                               b.type, MPI_SUM, comm_),
                 "every rank must call the same collectives in the same order");
  if (op == ReduceOp::kAvg) b.buffer.div_(size_);
  if (b.target.defined()) b.target.copy_(b.buffer);
}

void MpiCommunicator::broadcast(const at::Tensor& tensor, int root) {
  check_defined(tensor, "broadcast");
  TORCH_CHECK(root >= 0 && root < size_, "broadcast root ", root, " out of range [0, ", size_, ")");
  const bool staged = !tensor.device().is_cpu() || !tensor.is_contiguous();
  at::Tensor buffer = staged ? tensor.to(at::kCPU).contiguous() : tensor;
  // Bytes, in chunks below INT_MAX: any dtype, any size.
  auto* bytes = static_cast<char*>(buffer.data_ptr());
  int64_t left = buffer.nbytes();
  constexpr int64_t kChunk = 1LL << 30;
  CollectiveWatchdog::Scope watched(watchdog(), "MPI broadcast");
  do {
    const int n = static_cast<int>(std::min(left, kChunk));
    DDPM_MPI_CHECK(MPI_Bcast(bytes, n, MPI_BYTE, root, comm_), "every rank must broadcast the same shape");
    bytes += n;
    left -= n;
  } while (left > 0);
  if (staged) tensor.copy_(buffer);
}

at::Tensor MpiCommunicator::all_gather(const at::Tensor& tensor) {
  check_defined(tensor, "all_gather");
  const at::Tensor src = tensor.to(at::kCPU).contiguous();
  std::vector<int64_t> shape{size_};
  for (int64_t s : tensor.sizes()) shape.push_back(s);
  at::Tensor out = at::empty(shape, src.options());  // (world, *shape)
  const int n = checked_count(static_cast<int64_t>(src.nbytes()), "all_gather");
  CollectiveWatchdog::Scope watched(watchdog(), "MPI all_gather");
  DDPM_MPI_CHECK(MPI_Allgather(src.data_ptr(), n, MPI_BYTE, out.data_ptr(), n, MPI_BYTE, comm_),
                 "all_gather needs equal shapes on every rank; use all_gather_v for variable sizes");
  return out.to(tensor.device());
}

void MpiCommunicator::barrier() {
  CollectiveWatchdog::Scope watched(watchdog(), "MPI barrier");
  DDPM_MPI_CHECK(MPI_Barrier(comm_), "a peer rank may have failed");
}

}  // namespace ddpm::dist
