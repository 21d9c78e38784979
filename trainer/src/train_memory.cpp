// Memory metrics of the training process at each log interval (rank 0): resident set size from
// /proc/self/statm and, when the run is on a CUDA device, the CUDA caching allocator's counters.
// A CPU run never calls into CUDA (no context is created).
#include <c10/core/Allocator.h>

#if DDPM_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "trainer_impl.h"

namespace ddpm::trainer::detail {

void export_memory(monitoring::Metrics& metrics, const c10::Device& device) {
  metrics.update_process_memory();
#if DDPM_WITH_CUDA
  if (!device.is_cuda()) return;
  const c10::DeviceIndex index = device.has_index() ? device.index() : c10::cuda::current_device();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  monitoring::GpuMemory m;
  m.allocated_bytes = static_cast<double>(stats.allocated_bytes[all].current);
  m.reserved_bytes = static_cast<double>(stats.reserved_bytes[all].current);
  m.peak_allocated_bytes = static_cast<double>(stats.allocated_bytes[all].peak);
  metrics.set_gpu_memory(index, m);
#else
  (void)device;
#endif
}

}  // namespace ddpm::trainer::detail
