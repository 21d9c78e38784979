// The CUDA caching allocator's counters for the ddpm_gpu_memory_* metrics; see
// ddpm/monitoring/gpu_memory.h. Compiled without CUDA calls when DDPM_WITH_CUDA is 0.
#include "ddpm/monitoring/gpu_memory.h"

#include <stdexcept>
#include <string>

#if DDPM_WITH_CUDA
#include <c10/core/Allocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ddpm::monitoring {

GpuMemory read_cuda_memory(int device) {
#if DDPM_WITH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  GpuMemory m;
  m.allocated_bytes = static_cast<double>(stats.allocated_bytes[all].current);
  m.reserved_bytes = static_cast<double>(stats.reserved_bytes[all].current);
  m.peak_allocated_bytes = static_cast<double>(stats.allocated_bytes[all].peak);
  return m;
#else
  throw std::runtime_error("read_cuda_memory(" + std::to_string(device) +
                           "): this build has no CUDA (configure with -DDDPM_WITH_CUDA=ON and a CUDA torch)");
#endif
}

}  // namespace ddpm::monitoring
