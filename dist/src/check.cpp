// Error reports of the distributed layer and the fatal path (see check.h).
#include "ddpm/dist/check.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "ddpm/dist/communicator.h"

namespace ddpm::dist {

namespace {
bool mpi_usable() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}
}  // namespace

std::string where_am_i() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::ostringstream s;
  if (mpi_usable()) {
    int rank = -1, size = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    s << "rank " << rank << " of " << size;
  } else {
    s << "rank ?";
  }
  s << " on host " << host << " (pid " << getpid() << ")";
  return s.str();
}

std::string format_dist_error(const char* library, const char* call, const std::string& message,
                              const char* file, int line, const std::string& hint) {
  std::ostringstream s;
  s << library << " error in " << call << " at " << file << ":" << line << " (" << where_am_i()
    << "): " << message;
  if (!hint.empty()) s << ". Hint: " << hint;
  return s.str();
}

void throw_dist_error(const char* library, const char* call, const std::string& message,
                      const char* file, int line, const std::string& hint) {
  throw DistError(format_dist_error(library, call, message, file, line, hint));
}

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(buf, len) + " (code " + std::to_string(code) + ")";
}

#if !DDPM_WITH_NCCL
std::string nccl_error_string(int code) { return "NCCL error code " + std::to_string(code); }
std::string cuda_error_string(int code) { return "CUDA error code " + std::to_string(code); }
#endif  // else defined in nccl_communicator.cpp

void abort_job(const std::string& why, Communicator* comm, int exit_code) {
  std::fprintf(stderr, "[ddpm] fatal: %s (%s); aborting the whole job\n", why.c_str(),
               where_am_i().c_str());
  std::fflush(stderr);
  if (comm != nullptr) {
    try {
      comm->abort();
    } catch (...) {
      // Nothing more to do: MPI_Abort below ends the job anyway.
    }
  }
  if (mpi_usable()) MPI_Abort(MPI_COMM_WORLD, exit_code == 0 ? 1 : exit_code);
  std::_Exit(exit_code == 0 ? 1 : exit_code);
}

}  // namespace ddpm::dist
