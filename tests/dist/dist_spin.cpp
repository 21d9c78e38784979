// Helper of test_dist_kill: every rank writes its pid to <dir>/rank<R>.pid, then all-reduces a
// 1 MiB tensor in a loop for at most <seconds> (exit 0 when the time is up, which the test counts
// as a failure to notice a dead peer). Errors take the fatal path (abort_job -> MPI_Abort); with
// a third argument `throw`, rank 1 throws after 20 all-reduces to exercise that path.
#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "ddpm/dist/check.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/mpi_communicator.h"

int main(int argc, char** argv) {
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  std::unique_ptr<ddpm::dist::MpiCommunicator> comm;
  try {
    if (argc < 3) throw std::invalid_argument("usage: ddpm_dist_spin <pid dir> <seconds>");
    comm = std::make_unique<ddpm::dist::MpiCommunicator>(MPI_COMM_WORLD);
    const double seconds = std::stod(argv[2]);
    at::Tensor x = at::ones({1 << 18});  // 1 MiB of float32
    comm->all_reduce(x);                 // everyone is up before the pids appear
    {
      std::ofstream(std::string(argv[1]) + "/rank" + std::to_string(comm->rank()) + ".pid") << getpid() << "\n";
    }
    const bool throw_on_rank1 = argc > 3 && std::string(argv[3]) == "throw";
    const auto start = std::chrono::steady_clock::now();
    for (int iter = 0;; ++iter) {
      if (throw_on_rank1 && comm->rank() == 1 && iter == 20)
        throw ddpm::dist::DistError("injected failure on rank 1 (ddpm_dist_spin ... throw)");
      if (!(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds)) break;
      x.fill_(1.0);
      comm->all_reduce(x, ddpm::dist::ReduceOp::kAvg);
    }
  } catch (const std::exception& e) {
    ddpm::dist::abort_job(e.what(), comm.get());
  }
  return 0;
}
