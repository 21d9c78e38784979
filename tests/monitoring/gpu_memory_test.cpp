// The CUDA caching allocator's counters behind ddpm_gpu_memory_*_bytes (label gpu): a 64 MiB
// tensor moves `allocated` by exactly its size, `reserved` covers `allocated`, and `peak` keeps
// the high-water mark after the tensor is freed. Skips without a CUDA device.
#include <ATen/ATen.h>

#include <cstdio>

#include "ddpm/monitoring/gpu_memory.h"
#include "testing/testing.h"

namespace {

using ddpm::monitoring::GpuMemory;
using ddpm::monitoring::read_cuda_memory;

void print(const char* when, const GpuMemory& m) {
  std::printf("%-7s allocated %.0f reserved %.0f peak %.0f bytes\n", when, m.allocated_bytes, m.reserved_bytes,
              m.peak_allocated_bytes);
}

TEST(GpuMemory, AllocatorCountersFollowATensor) {
  DDPM_REQUIRE_CUDA();
  const at::Tensor warm = at::zeros({1}, at::device(at::kCUDA));  // the context and the allocator exist
  const GpuMemory before = read_cuda_memory(0);
  print("before", before);
  const double bytes = 64.0 * 1024 * 1024;  // a multiple of the allocator's 512-byte rounding
  {
    const at::Tensor t = at::empty({static_cast<int64_t>(bytes / 4)}, at::device(at::kCUDA).dtype(at::kFloat));
    const GpuMemory during = read_cuda_memory(0);
    print("during", during);
    EXPECT_EQ(during.allocated_bytes - before.allocated_bytes, bytes);
    EXPECT_GE(during.reserved_bytes, during.allocated_bytes);
    EXPECT_GE(during.peak_allocated_bytes, during.allocated_bytes);
  }
  const GpuMemory after = read_cuda_memory(0);
  print("after", after);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.reserved_bytes, bytes);  // the cache keeps the block
  EXPECT_GE(after.peak_allocated_bytes, before.allocated_bytes + bytes);
}

}  // namespace
