// MPI bootstrap: rank, world size, local rank (shared-memory split), host, device (context.h).
#include "ddpm/dist/context.h"

#include <torch/cuda.h>

#if DDPM_WITH_NCCL
#include <cuda_runtime_api.h>
#endif

#include <cstring>
#include <optional>
#include <sstream>
#include <vector>

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

DeviceIdentity cuda_pci_bus_id() {
  return [](int device) -> std::string {
#if DDPM_WITH_NCCL
    char id[64] = {0};
    if (device >= 0 && cudaDeviceGetPCIBusId(id, sizeof id, device) == cudaSuccess) return id;
#endif
    return "";
  };
}

namespace {

// Whether another rank of `local` has the same identity as this one; nullopt when some rank's
// identity is unknown (""). Collective over `local`.
std::optional<bool> same_identity_elsewhere(MPI_Comm local, int local_rank, int local_size, const std::string& mine) {
  constexpr int kLen = 64;
  char buffer[kLen] = {0};
  std::strncpy(buffer, mine.c_str(), kLen - 1);
  std::vector<char> all(static_cast<size_t>(kLen) * local_size);
  DDPM_MPI_CHECK(MPI_Allgather(buffer, kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, local),
                 "every rank of a host takes part in the GPU identity exchange");
  bool shared = false;
  for (int r = 0; r < local_size; ++r) {
    const std::string other(all.data() + static_cast<size_t>(r) * kLen);
    if (other.empty()) return std::nullopt;
    if (r != local_rank && other == mine) shared = true;
  }
  return shared;
}

}  // namespace

Context make_context(MPI_Comm world, int visible_gpus, const DeviceIdentity& identify) {
  Context c;
  DDPM_MPI_CHECK(MPI_Comm_rank(world, &c.rank), "is MPI initialized?");
  DDPM_MPI_CHECK(MPI_Comm_size(world, &c.world_size), "is MPI initialized?");
  MPI_Comm local = MPI_COMM_NULL;
  DDPM_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, c.rank, MPI_INFO_NULL, &local),
                 "the shared-memory split finds the ranks of this host");
  DDPM_MPI_CHECK(MPI_Comm_rank(local, &c.local_rank), "the host-local communicator of the split is invalid");
  DDPM_MPI_CHECK(MPI_Comm_size(local, &c.local_size), "the host-local communicator of the split is invalid");
  c.cuda_device = choose_cuda_device(c.local_rank, visible_gpus);
  c.shares_gpu = visible_gpus > 0 && c.local_size > visible_gpus;  // without identities
  if (identify) {  // every rank of the host takes part; a rank without a GPU sends "" (unknown)
    const std::optional<bool> shared = same_identity_elsewhere(
        local, c.local_rank, c.local_size, c.cuda_device >= 0 ? identify(c.cuda_device) : std::string());
    if (shared) c.shares_gpu = *shared;
  }
  MPI_Comm_free(&local);
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  DDPM_MPI_CHECK(MPI_Get_processor_name(name, &len), "MPI could not name this host: check `hostname`");
  c.host.assign(name, len);
  c.visible_gpus = visible_gpus;
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
  context_ = make_context(MPI_COMM_WORLD, static_cast<int>(torch::cuda::device_count()), cuda_pci_bus_id());
}

MpiRuntime::~MpiRuntime() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (owns_ && !fin) MPI_Finalize();
}

}  // namespace ddpm::dist
