// retain_freed_host_memory (ddpm/trainer/host_memory.h): two mallopt settings.
#include "ddpm/trainer/host_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ddpm::trainer {

bool retain_freed_host_memory() {
#if defined(__GLIBC__)
  // mallopt returns 1 on success. M_MMAP_THRESHOLD above 32 MiB is refused on 64-bit glibc.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

}  // namespace ddpm::trainer
