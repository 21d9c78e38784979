// Errors of the distributed layer: check macros for MPI, NCCL and CUDA calls that report file,
// line, host, rank, the library's own error string and a hint; the fatal path for main().
// Libraries throw DistError; only a main() calls abort_job, which ends every rank of the job.
#pragma once
#include <stdexcept>
#include <string>

namespace ddpm::dist {

class Communicator;

// Thrown by every check macro; what() holds the whole report.
class DistError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "rank R of N on host H" for this process (rank "?" before MPI_Init or after MPI_Finalize).
std::string where_am_i();

// Builds the report "<library> error in <call> at file:line (rank, host): <message>. Hint: <hint>".
std::string format_dist_error(const char* library, const char* call, const std::string& message,
                              const char* file, int line, const std::string& hint);

[[noreturn]] void throw_dist_error(const char* library, const char* call, const std::string& message,
                                   const char* file, int line, const std::string& hint);

std::string mpi_error_string(int code);   // MPI_Error_string
std::string nccl_error_string(int code);  // ncclGetErrorString (a plain code without NCCL)
std::string cuda_error_string(int code);  // cudaGetErrorString (a plain code without CUDA)

// The fatal path for main(): prints "[ddpm] fatal: <why> (rank R of N on host H)" to stderr,
// aborts `comm` (NCCL: ncclCommAbort, so no peer waits on a dead kernel), then MPI_Abort on
// MPI_COMM_WORLD so mpirun/srun end every rank. Never returns. Do not call from a library.
[[noreturn]] void abort_job(const std::string& why, Communicator* comm = nullptr, int exit_code = 1);

}  // namespace ddpm::dist

// MPI call returning an int error code; MPI_SUCCESS is 0. Needs the communicator's error handler
// set to MPI_ERRORS_RETURN (MpiCommunicator does) to see codes instead of MPI's own abort.
#define DDPM_MPI_CHECK(call, hint)                                                              \
  do {                                                                                          \
    const int ddpm_rc_ = (call);                                                                \
    if (ddpm_rc_ != 0)                                                                          \
      ::ddpm::dist::throw_dist_error("MPI", #call, ::ddpm::dist::mpi_error_string(ddpm_rc_),    \
                                     __FILE__, __LINE__, hint);                                 \
  } while (0)

#define DDPM_NCCL_CHECK(call, hint)                                                             \
  do {                                                                                          \
    const int ddpm_rc_ = static_cast<int>(call);                                                \
    if (ddpm_rc_ != 0)                                                                          \
      ::ddpm::dist::throw_dist_error("NCCL", #call, ::ddpm::dist::nccl_error_string(ddpm_rc_),  \
                                     __FILE__, __LINE__, hint);                                 \
  } while (0)

#define DDPM_CUDA_CHECK(call, hint)                                                             \
  do {                                                                                          \
    const int ddpm_rc_ = static_cast<int>(call);                                                \
    if (ddpm_rc_ != 0)                                                                          \
      ::ddpm::dist::throw_dist_error("CUDA", #call, ::ddpm::dist::cuda_error_string(ddpm_rc_),  \
                                     __FILE__, __LINE__, hint);                                 \
  } while (0)
