// All-reduce benchmark in the manner of nccl-tests: for message sizes from --min-bytes to
// --max-bytes (doubling), the time of one in-place float32 all-reduce (max over ranks) and
//   algbw = bytes / time,  busbw = algbw * 2 (n - 1) / n
// for the MPI path on CPU tensors or the NCCL path on CUDA tensors. Run under mpirun:
//   mpirun -np 4 --oversubscribe build/bin/ddpm_bench_allreduce --backend mpi
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"

namespace {

struct Options {
  std::string backend = "auto";
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 256LL << 20;
  int64_t budget_bytes = 64LL << 20;  // iterations per size = clamp(budget / size, 3, 50)
  int warmup = 2;
  bool async = false;  // all_reduce_async + wait (the gradient reducer's path)
};

void reduce(ddpm::dist::Communicator& comm, const at::Tensor& x, bool async) {
  if (async) comm.all_reduce_async(x, ddpm::dist::ReduceOp::kSum)->wait();
  else comm.all_reduce(x);
}

void sync_device(const at::Tensor& t) {
  if (t.is_cuda()) torch::cuda::synchronize(t.device().index());
}

// Seconds per all-reduce, max over ranks; and the worst error of a verified sum.
std::pair<double, double> measure(ddpm::dist::Communicator& comm, const at::Device& device, int64_t bytes,
                                  const Options& o) {
  const int64_t count = bytes / 4;
  at::Tensor x = at::ones({count}, at::TensorOptions(at::kFloat).device(device));
  const int iters = static_cast<int>(std::clamp<int64_t>(o.budget_bytes / bytes, 3, 50));
  for (int i = 0; i < o.warmup; ++i) reduce(comm, x, o.async);
  sync_device(x);
  comm.barrier();
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) reduce(comm, x, o.async);
  sync_device(x);
  double dt = (MPI_Wtime() - t0) / iters;
  DDPM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
                 "every rank times the same sizes; a peer rank may have failed");
  // Check: rank r contributes r + 1; the sum is n (n + 1) / 2 everywhere.
  x.fill_(static_cast<float>(comm.rank() + 1));
  reduce(comm, x, o.async);
  const double n = comm.world_size();
  double err = count ? (x - static_cast<float>(n * (n + 1) / 2)).abs().max().item<double>() : 0.0;
  DDPM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
                 "every rank checks the same sizes; a peer rank may have failed");
  return {dt, err};
}

int run(const ddpm::dist::Context& ctx, const Options& o, std::unique_ptr<ddpm::dist::Communicator>& comm) {
  comm = ddpm::dist::make_communicator(ctx, ddpm::dist::parse_backend(o.backend));
  const at::Device device = comm->device();
  const int n = comm->world_size();
  if (ctx.rank == 0) {
    std::printf("# ddpm_bench_allreduce: backend %s%s, %d ranks, device %s, float32 in place, sum\n",
                comm->backend().c_str(), o.async ? " (async + wait)" : "", n, device.str().c_str());
    std::printf("# %12s %12s %12s %12s %12s %10s\n", "size(B)", "count", "time(us)", "algbw(GB/s)",
                "busbw(GB/s)", "maxerr");
  }
  double busbw_sum = 0;
  int sizes = 0;
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const auto [dt, err] = measure(*comm, device, bytes, o);
    const double algbw = bytes / dt / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    busbw_sum += busbw;
    ++sizes;
    if (ctx.rank == 0)
      std::printf("  %12lld %12lld %12.1f %12.3f %12.3f %10.2g\n", static_cast<long long>(bytes),
                  static_cast<long long>(bytes / 4), dt * 1e6, algbw, busbw, err);
    std::fflush(stdout);
  }
  if (ctx.rank == 0 && sizes) std::printf("# Avg bus bandwidth: %.3f GB/s\n", busbw_sum / sizes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  Options o;
  CLI::App app{"All-reduce time and bus bandwidth against message size (like nccl-tests)"};
  app.add_option("--backend", o.backend, "auto | mpi | nccl | single")->capture_default_str();
  app.add_option("--min-bytes", o.min_bytes, "smallest message in bytes")->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "largest message in bytes")->capture_default_str();
  app.add_option("--budget-bytes", o.budget_bytes, "iterations per size = clamp(budget / size, 3, 50)")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed all-reduces per size")->capture_default_str();
  app.add_flag("--async", o.async, "time all_reduce_async + wait (MPI_Iallreduce: the reducer's path)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0) ddpm::dist::abort_job("bad command line (see above)", nullptr, rc);
    return 0;
  }
  const ddpm::dist::Context& ctx = mpi.context();
  return ddpm::dist::run_rank_main(
      ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) { return run(ctx, o, comm); });
}
