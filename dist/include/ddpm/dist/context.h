// MPI bootstrap: who this process is (rank, world size, local rank from a shared-memory split of
// the world, host) and which device it uses. Works under mpirun and under Slurm's srun with
// OpenMPI (PMIx); no GPUs-per-node constant anywhere.
#pragma once
#include <mpi.h>

#include <c10/core/Device.h>

#include <functional>
#include <string>

namespace ddpm::dist {

struct Context {
  int rank = 0;            // in MPI_COMM_WORLD
  int world_size = 1;
  int local_rank = 0;      // among the ranks on this host (MPI_COMM_TYPE_SHARED split)
  int local_size = 1;
  std::string host;        // MPI_Get_processor_name
  int visible_gpus = 0;    // CUDA devices this process sees
  int cuda_device = -1;    // chosen device index, -1 = CPU
  bool shares_gpu = false; // another rank of this host uses the same GPU (see make_context)

  c10::Device device() const;
  std::string describe() const;  // one line for logs
};

// The device for a local rank: -1 without GPUs; local_rank itself when every local rank has its
// own GPU; local_rank % visible_gpus otherwise. With one visible GPU per task (srun
// --gpus-per-task, CUDA_VISIBLE_DEVICES set per rank) this is device 0.
int choose_cuda_device(int local_rank, int visible_gpus);

// The identity of a CUDA device (its PCI bus id, "0000:1b:00.0"), "" when unknown. Two ranks of a
// host share a GPU exactly when their chosen devices have the same identity.
using DeviceIdentity = std::function<std::string(int device)>;
DeviceIdentity cuda_pci_bus_id();  // cudaDeviceGetPCIBusId; "" on a build without CUDA

// Reads rank/size/local rank/host from `world` (collective over `world`). shares_gpu: another
// rank of this host chose a device of the same identity (each rank's identity of its chosen
// device, all-gathered on the host); when some identity is unknown, more local ranks than
// visible GPUs. So `srun --gpus-per-task=1` (one GPU visible per rank, a different one each) is
// not sharing, while two ranks that see the same single GPU are.
Context make_context(MPI_Comm world, int visible_gpus, const DeviceIdentity& identify = {});

// RAII owner of MPI: MPI_Init_thread (MPI_THREAD_SERIALIZED) unless MPI is already initialized,
// MPI_Finalize on destruction when it initialized MPI. Build one in main(), before anything else.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  const Context& context() const { return context_; }
  bool owns_mpi() const { return owns_; }
  int thread_level() const { return thread_level_; }

 private:
  Context context_;
  bool owns_ = false;
  int thread_level_ = 0;
};

}  // namespace ddpm::dist
