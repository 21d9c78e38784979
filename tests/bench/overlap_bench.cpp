// ddpm_bench_overlap: the share of a data-parallel training step that is exposed (not overlapped)
// gradient communication, per U-Net preset. Each timed step is forward + backward (diffusion
// training loss) + GradientReducer::finish(); steps alternate with compute-only steps (backward
// under no_sync, no communication) so machine load drifts cancel. Figures, max over ranks:
//   exposed (finish) = time inside finish() waiting for buckets still in flight / synced step time
//   exposed (diff)   = (synced step - compute-only step) / synced step (also counts the hooks' copies)
//   comm > skew      = end of finish() - the latest backward end over ranks: exposed communication
//                      without the wait for a slower rank (one host: ranks share the steady clock)
//   serial all-reduce = one blocking all-reduce of all gradients: what no overlap at all would cost
//   mpirun -np 2 --oversubscribe build/bin/ddpm_bench_overlap --preset tiny --preset ddpm-cifar10 --batch 1
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/gradient_reducer.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/unet/unet.h"

namespace {
using Clock = std::chrono::steady_clock;
using ddpm::dist::ReducerEvent;

struct Options {
  std::vector<std::string> presets{"tiny", "ddpm-cifar10"};
  std::string backend = "auto";
  int64_t batch = 2, steps = 3, warmup = 1, threads = 1, size = 0;
  double bucket_mb = 25, first_bucket_mb = 1;
};

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void sync_device(const at::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

double max_over_ranks(double v) {
  DDPM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
                 "every rank times the same steps; a peer rank may have failed");
  return v;
}

// The preset's training loss: hybrid (learned-range variance) when it learns sigma, else L_simple.
ddpm::diffusion::GaussianDiffusion diffusion_for(const ddpm::model::UNetOptions& o) {
  namespace df = ddpm::diffusion;
  df::DiffusionConfig c;
  c.schedule = o.learn_sigma ? "cosine" : "linear";
  c.var_type = o.learn_sigma ? df::ModelVarType::kLearnedRange : df::ModelVarType::kFixedLarge;
  c.loss_type = o.learn_sigma ? df::LossType::kRescaledMse : df::LossType::kMse;
  return df::create_gaussian_diffusion(c);
}

struct Times {
  double compute = 0, synced = 0, backward_end_to_finish = 0, finish = 0, launch_lead = 0, after_slowest = 0;
};

// Seconds on the steady clock (CLOCK_MONOTONIC: one clock for all ranks of a host).
double stamp(Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

// No overlap at all: seconds of one blocking all-reduce of every gradient (max over ranks).
double serial_all_reduce(ddpm::dist::Communicator& comm, const at::Device& dev, int64_t bytes, int64_t steps) {
  at::Tensor flat = at::zeros({bytes / 4}, at::TensorOptions(at::kFloat).device(dev));
  comm.all_reduce(flat, ddpm::dist::ReduceOp::kAvg);  // warm-up
  double total = 0;
  for (int64_t i = 0; i < steps; ++i) {
    comm.barrier();
    const auto t0 = Clock::now();
    comm.all_reduce(flat, ddpm::dist::ReduceOp::kAvg);
    sync_device(dev);
    total += since(t0);
  }
  return max_over_ranks(total / static_cast<double>(steps));
}

void print_row(const std::string& preset, int64_t batch, int64_t size, int64_t grad_bytes, int64_t buckets,
               const Times& m, double serial) {
  const auto ll = [](int64_t v) { return static_cast<long long>(v); };
  std::printf("%-14s %6lld %5lld %8.1f %4lld ", preset.c_str(), ll(batch), ll(size), grad_bytes / 1e6, ll(buckets));
  std::printf("%10.1f %10.1f %10.1f %6.1f%% ", m.compute * 1e3, m.synced * 1e3, m.finish * 1e3,
              100 * m.finish / m.synced);
  std::printf("%10.1f %6.1f%% %10.1f %6.1f%% %11.1f %10.1f\n", (m.synced - m.compute) * 1e3,
              100 * (m.synced - m.compute) / m.synced, m.after_slowest * 1e3, 100 * m.after_slowest / m.synced,
              m.launch_lead * 1e3, serial * 1e3);
  std::fflush(stdout);
}

void bench(ddpm::dist::Communicator& comm, const at::Device& dev, const std::string& preset, const Options& a) {
  ddpm::model::UNetOptions o = ddpm::model::unet_preset(preset);
  if (preset == "tiny") o.learn_sigma = true;  // the end-to-end test's configuration
  const int64_t size = a.size > 0 ? a.size : o.image_size;
  torch::manual_seed(1);
  ddpm::model::UNet net(o);
  net->to(dev);
  const auto diffusion = diffusion_for(o);
  ddpm::dist::ReducerOptions ro;
  ro.bucket_cap_bytes = static_cast<int64_t>(a.bucket_mb * (1 << 20));
  ro.first_bucket_cap_bytes = static_cast<int64_t>(a.first_bucket_mb * (1 << 20));
  ro.record_trace = true;
  ddpm::dist::GradientReducer reducer(comm, *net, ro);
  int64_t grad_bytes = 0;
  for (int64_t b = 0; b < reducer.num_buckets(); ++b) grad_bytes += reducer.bucket_bytes(b);

  const auto f = at::TensorOptions(at::kFloat).device(dev);
  const at::Tensor x_start = at::rand({a.batch, o.in_channels, size, size}, f) * 2 - 1;  // (N, C, H, W)
  const at::Tensor noise = at::randn_like(x_start);
  const at::Tensor t = at::randint(0, diffusion.num_timesteps(), {a.batch}, f.dtype(at::kLong));  // (N)
  const auto model = [&net](const at::Tensor& x_t, const at::Tensor& ts) { return net->forward(x_t, ts); };

  // One step; returns (step seconds, finish seconds, backward end, finish end); fills the trace
  // when synced.
  struct StepTimes {
    double step = 0, finish = 0;
    Clock::time_point backward_end, finish_end;
  };
  auto step = [&](bool synced) {
    net->zero_grad();
    reducer.clear_trace();
    comm.barrier();
    const auto t0 = Clock::now();
    const at::Tensor loss = diffusion.training_losses(model, x_start, t, noise).loss.mean();
    if (synced) {
      loss.backward();
      sync_device(dev);
      const auto t1 = Clock::now();
      reducer.finish();
      sync_device(dev);
      return StepTimes{since(t0), since(t1), t1, Clock::now()};
    }
    ddpm::dist::NoSyncGuard no_sync(reducer);
    loss.backward();
    sync_device(dev);
    return StepTimes{since(t0), 0.0, {}, {}};
  };
  for (int64_t i = 0; i < a.warmup; ++i) {
    step(false);
    step(true);
  }
  Times sum;
  for (int64_t i = 0; i < a.steps; ++i) {
    sum.compute += step(false).step;
    const StepTimes st = step(true);
    sum.synced += st.step;
    sum.finish += st.finish;
    // finish() also waits for the slowest rank's backward (skew); the communication exposed
    // beyond that is the time from the last backward end over all ranks to the end of finish().
    sum.after_slowest += stamp(st.finish_end) - max_over_ranks(stamp(st.backward_end));
    // From the trace: the first launch's lead over the last gradient (overlap window) and the
    // time from the last gradient to the end of finish() (exposed communication + copy-back).
    double first_launch = -1, last_grad = 0, finished = 0;
    for (const auto& e : reducer.trace()) {
      if (e.kind == ReducerEvent::Kind::kBucketLaunched && first_launch < 0) first_launch = e.seconds;
      if (e.kind == ReducerEvent::Kind::kGradReady) last_grad = e.seconds;
      if (e.kind == ReducerEvent::Kind::kFinished) finished = e.seconds;
    }
    sum.launch_lead += last_grad - first_launch;
    sum.backward_end_to_finish += finished - last_grad;
  }
  const double n = static_cast<double>(a.steps);
  Times m{max_over_ranks(sum.compute / n), max_over_ranks(sum.synced / n),
          max_over_ranks(sum.backward_end_to_finish / n), max_over_ranks(sum.finish / n),
          max_over_ranks(sum.launch_lead / n), max_over_ranks(sum.after_slowest / n)};

  const double serial = serial_all_reduce(comm, dev, grad_bytes, a.steps);
  if (comm.rank() == 0) print_row(preset, a.batch, size, grad_bytes, reducer.num_buckets(), m, serial);
}

int run(const ddpm::dist::Context& ctx, const Options& a, std::unique_ptr<ddpm::dist::Communicator>& comm) {
  at::set_num_threads(static_cast<int>(a.threads));
  comm = ddpm::dist::make_communicator(ctx, ddpm::dist::parse_backend(a.backend));
  const at::Device dev = comm->device();
  if (ctx.rank == 0) {
    std::printf("# ddpm_bench_overlap: backend %s, %d ranks, device %s, %lld intra-op threads/rank, %lld steps "
                "(+%lld warm-up), buckets %.1f MiB (first %.1f MiB); times in ms, max over ranks\n",
                comm->backend().c_str(), comm->world_size(), dev.str().c_str(), static_cast<long long>(a.threads),
                static_cast<long long>(a.steps), static_cast<long long>(a.warmup), a.bucket_mb, a.first_bucket_mb);
    std::printf("# %-12s %6s %5s %8s %4s %10s %10s %10s %7s %10s %7s %10s %7s %11s %10s\n", "preset", "batch", "size",
                "grad(MB)", "bkts", "compute", "synced", "finish", "share", "synced-cmp", "share", "comm>skew",
                "share", "launch-lead", "serial-ar");
  }
  for (const auto& p : a.presets) bench(*comm, dev, p, a);
  if (ctx.rank == 0) {
    std::printf("# finish = time in finish() (waits for buckets in flight, incl. the slowest rank's backward); "
                "synced-cmp = synced - compute-only step; comm>skew = end of finish() - last backward end over "
                "ranks (same host); launch-lead = first bucket launched this long before the last gradient; "
                "serial-ar = one blocking all-reduce of all gradients (no overlap)\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  Options a;
  CLI::App app{"Exposed (not overlapped) gradient communication per training step, per U-Net preset"};
  app.add_option("--preset", a.presets, "U-Net presets")->capture_default_str();
  app.add_option("--backend", a.backend, "auto | mpi | nccl | single")->capture_default_str();
  app.add_option("--batch", a.batch, "images per rank")->capture_default_str();
  app.add_option("--size", a.size, "image size (0: the preset's)")->capture_default_str();
  app.add_option("--steps", a.steps, "timed steps of each kind")->capture_default_str();
  app.add_option("--warmup", a.warmup, "untimed steps of each kind")->capture_default_str();
  app.add_option("--threads", a.threads, "intra-op threads per rank")->capture_default_str();
  app.add_option("--bucket-mb", a.bucket_mb, "bucket cap in MiB")->capture_default_str();
  app.add_option("--first-bucket-mb", a.first_bucket_mb, "first bucket cap in MiB")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0) ddpm::dist::abort_job("bad command line (see above)", nullptr, rc);
    return 0;
  }
  const ddpm::dist::Context& ctx = mpi.context();
  return ddpm::dist::run_rank_main(
      ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) { return run(ctx, a, comm); });
}
