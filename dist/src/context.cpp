// MPI bootstrap: rank, world size, local rank (shared-memory split), host, device (context.h).
#include "ddpm/dist/context.h"

#include <torch/cuda.h>

#include <sstream>

#include "ddpm/dist/check.h"

namespace ddpm::dist {

c10::Device Context::device() const {
  return cuda_device >= 0 ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(cuda_device))
                          : c10::Device(c10::kCPU);
}

std::string Context::describe() const {
  std::ostringstream s;
  s << "rank " << rank << "/" << world_size << " local " << local_rank << "/" << local_size
    << " host " << host << " device " << device().str() << " (" << visible_gpus << " visible GPUs"
    << (shares_gpu ? ", shared by several local ranks" : "") << ")";
  return s.str();
}

int choose_cuda_device(int local_rank, int visible_gpus) {
  if (visible_gpus <= 0) return -1;
  return local_rank % visible_gpus;
}

Context make_context(MPI_Comm world, int visible_gpus) {
  Context c;
  DDPM_MPI_CHECK(MPI_Comm_rank(world, &c.rank), "is MPI initialized?");
  DDPM_MPI_CHECK(MPI_Comm_size(world, &c.world_size), "is MPI initialized?");
  MPI_Comm local = MPI_COMM_NULL;
  DDPM_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, c.rank, MPI_INFO_NULL, &local),
                 "the shared-memory split finds the ranks of this host");
  DDPM_MPI_CHECK(MPI_Comm_rank(local, &c.local_rank), "the host-local communicator of the split is invalid");
  DDPM_MPI_CHECK(MPI_Comm_size(local, &c.local_size), "the host-local communicator of the split is invalid");
  MPI_Comm_free(&local);
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  DDPM_MPI_CHECK(MPI_Get_processor_name(name, &len), "MPI could not name this host: check `hostname`");
  c.host.assign(name, len);
  c.visible_gpus = visible_gpus;
  c.cuda_device = choose_cuda_device(c.local_rank, visible_gpus);
  c.shares_gpu = visible_gpus > 0 && c.local_size > visible_gpus;
  return c;
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    DDPM_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &thread_level_),
                   "run under mpirun/srun, or check the OpenMPI installation");
    owns_ = true;
  } else {
    MPI_Query_thread(&thread_level_);
  }
  // Errors on the world communicator come back as codes (then DistError), not MPI's own abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  context_ = make_context(MPI_COMM_WORLD, static_cast<int>(torch::cuda::device_count()));
}

MpiRuntime::~MpiRuntime() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (owns_ && !fin) MPI_Finalize();
}

}  // namespace ddpm::dist
