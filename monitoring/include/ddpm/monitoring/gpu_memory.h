// GPU memory of this process as the CUDA caching allocator counts it (the numbers behind
// torch.cuda.memory_allocated / memory_reserved / max_memory_allocated), for the
// ddpm_gpu_memory_*_bytes metrics. Reading them creates no CUDA context on its own.
#pragma once
#include "ddpm/monitoring/metrics.h"

namespace ddpm::monitoring {

// The aggregate-pool counters of CUDA device `device`. Call it only for a CUDA device the process
// uses; throws std::runtime_error in a build without CUDA.
GpuMemory read_cuda_memory(int device);

}  // namespace ddpm::monitoring
