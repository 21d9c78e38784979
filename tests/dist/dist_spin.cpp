// Helper of test_dist_kill: every rank writes its pid to <dir>/rank<R>.pid, then all-reduces a
// 1 MiB tensor in a loop for at most <seconds> (exit 0 when the time is up, which the test counts
// as a failure to notice a dead peer). Errors take the fatal path (abort_job -> MPI_Abort).
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
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
      x.fill_(1.0);
      comm->all_reduce(x, ddpm::dist::ReduceOp::kAvg);
    }
  } catch (const std::exception& e) {
    ddpm::dist::abort_job(e.what(), comm.get());
  }
  return 0;
}
