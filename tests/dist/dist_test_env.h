// Shared state of the MPI test executables: the MPI runtime's context and an MpiCommunicator over
// MPI_COMM_WORLD, set up by mpi_test_main.cpp before RUN_ALL_TESTS.
#pragma once
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"

namespace ddpm::dist::testing {

Communicator& comm();
const Context& context();

}  // namespace ddpm::dist::testing
