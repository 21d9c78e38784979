// main() of the MPI test executables: MPI up, one MpiCommunicator for the tests, and an exit
// code that is non-zero on every rank when any rank failed.
#include <gtest/gtest.h>

#include <memory>

#include "ddpm/dist/mpi_communicator.h"
#include "dist/dist_test_env.h"

namespace ddpm::dist::testing {
namespace {
std::unique_ptr<MpiCommunicator> g_comm;
const Context* g_context = nullptr;
}  // namespace
Communicator& comm() { return *g_comm; }
const Context& context() { return *g_context; }
}  // namespace ddpm::dist::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  ddpm::dist::testing::g_context = &mpi.context();
  ddpm::dist::testing::g_comm = std::make_unique<ddpm::dist::MpiCommunicator>(MPI_COMM_WORLD);
  std::printf("[dist test] %s\n", mpi.context().describe().c_str());
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ddpm::dist::testing::g_comm.reset();
  return worst;
}
