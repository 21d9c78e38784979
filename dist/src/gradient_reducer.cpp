// Bucketed gradient all-reduce overlapped with backward (see gradient_reducer.h). Hooks are
// torch's post-accumulate-grad hooks: they run after AccumulateGrad wrote .grad, once per leaf
// and backward, on the thread that runs that part of backward.
#include "ddpm/dist/gradient_reducer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>

#include <chrono>
#include <sstream>

#include "ddpm/dist/check.h"

namespace ddpm::dist {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct ReducerHook : torch::autograd::PostAccumulateGradHook {
  ReducerHook(GradientReducer* r, int64_t i) : reducer(r), index(i) {}
  void operator()(const torch::autograd::Variable&) override { reducer->on_grad_ready(index); }
  GradientReducer* reducer;
  int64_t index;
};

}  // namespace

GradientReducer::GradientReducer(Communicator& comm, NamedTensors parameters, ReducerOptions options)
    : comm_(comm), options_(options), identity_(comm.backend() == "single"), t0_ns_(now_ns()) {
  TORCH_CHECK(options_.bucket_cap_bytes > 0 && options_.first_bucket_cap_bytes > 0,
              "GradientReducer: bucket caps must be positive, got ", options_.first_bucket_cap_bytes,
              " and ", options_.bucket_cap_bytes);
  for (auto& [name, p] : parameters) {
    if (!p.requires_grad()) continue;
    TORCH_CHECK(p.is_leaf(), "GradientReducer: parameter ", name, " is not a leaf tensor");
    slots_.push_back(Slot{name, p});
  }
  build_buckets();
  install_hooks();
}

GradientReducer::GradientReducer(Communicator& comm, const torch::nn::Module& module, ReducerOptions options)
    : GradientReducer(comm, [&] {
        NamedTensors named;
        for (const auto& item : module.named_parameters(true)) named.emplace_back(item.key(), item.value());
        return named;
      }(), options) {}

GradientReducer::~GradientReducer() {
  for (auto& s : slots_) torch::autograd::impl::set_post_acc_grad_hooks(s.param, nullptr);
  try {
    for (auto& b : buckets_)
      if (b.work) b.work->wait();  // MPI must not write into freed buckets
  } catch (...) {
    // Destructors do not throw; the job is failing anyway.
  }
}

// Reverse registration order (the order backward produces gradients); a new bucket starts when
// the cap would be exceeded or the dtype/device changes. Bucket 0 uses the small first cap.
void GradientReducer::build_buckets() {
  std::vector<int64_t> current;
  int64_t bytes = 0;
  auto close = [&] {
    if (current.empty()) return;
    Bucket b;
    int64_t numel = 0;
    for (int64_t i : current) {
      slots_[i].bucket = static_cast<int64_t>(buckets_.size());
      slots_[i].offset = numel;
      numel += slots_[i].param.numel();
    }
    b.flat = at::zeros({numel}, slots_[current.front()].param.options().requires_grad(false));
    b.slots = current;
    buckets_.push_back(std::move(b));
    current.clear();
    bytes = 0;
  };
  for (int64_t i = static_cast<int64_t>(slots_.size()) - 1; i >= 0; --i) {
    const at::Tensor& p = slots_[i].param;
    const int64_t cap = buckets_.empty() ? options_.first_bucket_cap_bytes : options_.bucket_cap_bytes;
    const int64_t pbytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (!current.empty()) {
      const at::Tensor& q = slots_[current.front()].param;
      if (bytes + pbytes > cap || q.scalar_type() != p.scalar_type() || q.device() != p.device()) close();
    }
    current.push_back(i);
    bytes += pbytes;
  }
  close();
  reset_iteration();
}

void GradientReducer::install_hooks() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    auto& hooks = torch::autograd::impl::post_acc_grad_hooks(slots_[i].param);
    TORCH_CHECK(hooks == nullptr, "GradientReducer: parameter ", slots_[i].name,
                " already has a post-accumulate-grad hook (two reducers on one model?)");
    torch::autograd::impl::set_post_acc_grad_hooks(
        slots_[i].param, std::make_unique<ReducerHook>(this, static_cast<int64_t>(i)));
  }
}

void GradientReducer::reset_iteration() {
  for (auto& s : slots_) s.ready = false;
  for (auto& b : buckets_) {
    b.pending = static_cast<int64_t>(b.slots.size());
    b.work.reset();
  }
  next_launch_ = 0;
  ready_count_ = 0;
}

void GradientReducer::record(ReducerEvent::Kind kind, int64_t index) {
  if (options_.record_trace) trace_.push_back({kind, index, (now_ns() - t0_ns_) * 1e-9});
}

void GradientReducer::on_grad_ready(int64_t index) {
  if (no_sync_) return;  // microbatch accumulation: .grad keeps the local sum
  Slot& s = slots_[index];
  TORCH_CHECK(!s.ready, "GradientReducer: the gradient of ", s.name,
              " became ready twice before finish(); call finish() after each synchronized backward "
              "and wrap accumulation-only backwards in NoSyncGuard");
  const at::Tensor grad = s.param.grad();
  TORCH_CHECK(grad.defined() && grad.layout() == at::kStrided, "GradientReducer: ", s.name,
              " has no dense gradient");
  record(ReducerEvent::Kind::kGradReady, index);
  Bucket& b = buckets_[s.bucket];
  if (!identity_) {
    at::NoGradGuard no_grad;
    b.flat.narrow(0, s.offset, s.param.numel()).copy_(grad.reshape({-1}));
  }
  s.ready = true;
  ++ready_count_;
  if (--b.pending == 0) launch_ready_buckets();
  // Drive progress of what is in flight (MPI progresses non-blocking collectives inside calls).
  for (int64_t i = 0; i < next_launch_; ++i) buckets_[i].work->test();
}

// Buckets start strictly in index order so every rank issues the same collective sequence even
// if hooks fire in a slightly different order.
void GradientReducer::launch_ready_buckets() {
  while (next_launch_ < num_buckets() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_];
    b.work = comm_.all_reduce_async(b.flat, ReduceOp::kAvg);
    record(ReducerEvent::Kind::kBucketLaunched, next_launch_);
    ++next_launch_;
  }
}

void GradientReducer::fail_unused() {
  for (int64_t i = 0; i < next_launch_; ++i) buckets_[i].work->wait();  // drain what is in flight
  std::ostringstream names;
  int64_t missing = 0;
  for (const auto& s : slots_) {
    if (s.ready) continue;
    if (missing < 10) names << (missing ? ", " : "") << s.name;
    ++missing;
  }
  if (missing > 10) names << ", ... (" << missing << " in all)";
  reset_iteration();
  throw DistError("GradientReducer::finish: " + std::to_string(missing) + " of " +
                  std::to_string(slots_.size()) + " parameters received no gradient in this backward: " +
                  names.str() + " (" + where_am_i() + "). Hint: every registered parameter must take part "
                  "in the loss; build the reducer over the parameters you train, or add them to the loss");
}

void GradientReducer::finish() {
  if (no_sync_) return;
  if (ready_count_ != static_cast<int64_t>(slots_.size())) fail_unused();
  at::NoGradGuard no_grad;
  for (int64_t bi = 0; bi < num_buckets(); ++bi) {
    Bucket& b = buckets_[bi];
    b.work->wait();
    record(ReducerEvent::Kind::kBucketDone, bi);
    if (identity_) continue;  // .grad already holds the mean over the one rank
    for (int64_t i : b.slots) {
      Slot& s = slots_[i];
      s.param.mutable_grad().copy_(b.flat.narrow(0, s.offset, s.param.numel()).view(s.param.sizes()));
    }
  }
  record(ReducerEvent::Kind::kFinished, -1);
  reset_iteration();
}

std::vector<int64_t> GradientReducer::bucket_parameters(int64_t bucket) const {
  return buckets_.at(bucket).slots;
}

int64_t GradientReducer::bucket_bytes(int64_t bucket) const {
  const at::Tensor& f = buckets_.at(bucket).flat;
  return f.numel() * static_cast<int64_t>(f.element_size());
}

}  // namespace ddpm::dist
