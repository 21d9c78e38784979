// Memory metrics of the training process at each log interval (rank 0): resident set size from
// /proc/self/statm and, when the run is on a CUDA device, the CUDA caching allocator's counters.
// A CPU run never calls into CUDA (no context is created).
#include <c10/core/Device.h>

#if DDPM_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "ddpm/monitoring/gpu_memory.h"
#include "trainer_impl.h"

namespace ddpm::trainer::detail {

void export_memory(monitoring::Metrics& metrics, const c10::Device& device) {
  metrics.update_process_memory();
  if (!device.is_cuda()) return;
#if DDPM_WITH_CUDA
  const int index = device.has_index() ? device.index() : c10::cuda::current_device();
  metrics.set_gpu_memory(index, monitoring::read_cuda_memory(index));
#endif
}

}  // namespace ddpm::trainer::detail
