// Bucketed gradient all-reduce overlapped with backward, in the spirit of PyTorch DDP: gradients
// are packed into flat buckets (filled in reverse registration order, the order backward produces
// them); a post-accumulate autograd hook per parameter copies its gradient into its bucket, and a
// bucket's async all-reduce starts as soon as its last gradient is in. finish() waits for what is
// still in flight and writes the averaged gradients back to .grad, before the optimizer step.
// Over a SingleProcessCommunicator the mean over ranks is the gradient itself: the buckets are
// neither filled nor copied back (the bookkeeping, events and unused-parameter check remain).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/dist/communicator.h"

namespace torch::nn {
class Module;
}

namespace ddpm::dist {

struct ReducerOptions {
  // Bucket size cap in bytes (PyTorch DDP's default 25 MiB).
  int64_t bucket_cap_bytes = 25LL << 20;
  // The first bucket (the last layers, whose gradients come first) is small so the first
  // all-reduce starts early.
  int64_t first_bucket_cap_bytes = 1LL << 20;
  // Record GradReady/BucketLaunched/Finished events with timestamps (tests, profiling).
  bool record_trace = false;
};

struct ReducerEvent {
  enum class Kind { kGradReady, kBucketLaunched, kBucketDone, kFinished };
  Kind kind;
  int64_t index;   // parameter index (registration order) or bucket index
  double seconds;  // steady clock since the reducer was built
};

class GradientReducer {
 public:
  using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
  // Parameters with requires_grad; they must outlive the reducer. Identical lists on all ranks.
  GradientReducer(Communicator& comm, NamedTensors parameters, ReducerOptions options = {});
  GradientReducer(Communicator& comm, const torch::nn::Module& module, ReducerOptions options = {});
  ~GradientReducer();  // removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // no_sync: backward only accumulates into .grad locally (microbatches); the next backward
  // outside no_sync reduces the accumulated sum. finish() is a no-op while no_sync is on.
  void set_no_sync(bool on) { no_sync_ = on; }
  bool no_sync() const { return no_sync_; }

  // Waits for all buckets, writes mean-over-ranks gradients into .grad. Throws DistError naming
  // the parameters that got no gradient in this backward (after draining in-flight work).
  void finish();

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  std::vector<int64_t> bucket_parameters(int64_t bucket) const;  // parameter indices
  int64_t bucket_bytes(int64_t bucket) const;
  const std::vector<ReducerEvent>& trace() const { return trace_; }
  void clear_trace() { trace_.clear(); }

  // Called by the autograd hook of parameter `index` after its .grad was accumulated.
  void on_grad_ready(int64_t index);

 private:
  struct Slot {
    std::string name;
    at::Tensor param;
    int64_t bucket = -1;
    int64_t offset = 0;  // elements into the bucket's flat buffer
    bool ready = false;
  };
  struct Bucket {
    at::Tensor flat;  // (numel,) all gradients of the bucket, packed
    std::vector<int64_t> slots;
    int64_t pending = 0;
    std::shared_ptr<Work> work;
  };

  void build_buckets();
  void install_hooks();
  void launch_ready_buckets();
  void reset_iteration();
  void record(ReducerEvent::Kind kind, int64_t index);
  [[noreturn]] void fail_unused();

  Communicator& comm_;
  ReducerOptions options_;
  bool identity_;  // one process: .grad is already the mean, no copies
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  int64_t next_launch_ = 0;
  int64_t ready_count_ = 0;
  bool no_sync_ = false;
  std::vector<ReducerEvent> trace_;
  int64_t t0_ns_ = 0;
};

// RAII no_sync scope: { NoSyncGuard guard(reducer); ... backward of a microbatch; }
class NoSyncGuard {
 public:
  explicit NoSyncGuard(GradientReducer& r) : r_(r), prev_(r.no_sync()) { r_.set_no_sync(true); }
  ~NoSyncGuard() { r_.set_no_sync(prev_); }
  NoSyncGuard(const NoSyncGuard&) = delete;
  NoSyncGuard& operator=(const NoSyncGuard&) = delete;

 private:
  GradientReducer& r_;
  bool prev_;
};

}  // namespace ddpm::dist
