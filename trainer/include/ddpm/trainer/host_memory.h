// Host memory of a training process: glibc's malloc returns large blocks (tensors of more than
// 128 KiB by default, raised dynamically) to the kernel when freed, so every training step maps
// its activations afresh and pays a page fault and a zeroing for each 4 KiB of them. Called once
// at the start of a process that trains, before the model is built.
#pragma once

namespace ddpm::trainer {

// Serve blocks up to 32 MiB (glibc's largest mmap threshold) from the heap and never trim it: the
// tensors of one step reuse the memory freed by the previous one. The resident size stays at its
// peak. Returns false when the C library refused (not glibc): nothing changed then.
bool retain_freed_host_memory();

}  // namespace ddpm::trainer
