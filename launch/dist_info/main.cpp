// ddpm_dist_info: checks a distributed launch before a long job. Every rank prints its context
// (rank, local rank, host, device), then one all-reduce on the chosen communicator is verified.
//   mpirun -np 4 build/bin/ddpm_dist_info        srun -n 8 --gpus-per-task=1 build/bin/ddpm_dist_info
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <cstdio>

#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  std::string backend = "auto";
  CLI::App app{"Print each rank's distributed context and verify one all-reduce"};
  app.add_option("--backend", backend, "auto | mpi | nccl | single")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0) ddpm::dist::abort_job("bad command line (see above)", nullptr, rc);
    return 0;
  }
  const ddpm::dist::Context& ctx = mpi.context();
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx, ddpm::dist::parse_backend(backend));
    const at::Device device = comm->device();
    // Rank r contributes r + 1 in every element: the sum is n (n + 1) / 2.
    at::Tensor x = at::full({1 << 20}, static_cast<float>(ctx.rank + 1), at::TensorOptions(device));
    comm->all_reduce(x);
    const double n = ctx.world_size, want = n * (n + 1) / 2;
    const double err = (x - static_cast<float>(want)).abs().max().item<double>();
    std::printf("[ddpm_dist_info] %s; backend %s; all-reduce of 4 MiB %s (max error %g)\n",
                ctx.describe().c_str(), comm->backend().c_str(), err == 0 ? "ok" : "WRONG", err);
    comm->barrier();
    return err == 0 ? 0 : 1;
  });
}
