// Writing NumPy .npz archives (a zip of stored .npy entries, CRC-32 from zlib), the format of
// improved-diffusion's sample files: arr_0 uint8 (N, H, W, C), arr_1 int64 labels. numpy.load reads
// them; ddpm::data::read_npz too.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace ddpm::trainer {

// .npy bytes (format 1.0, C order) of a CPU tensor of dtype uint8, int64, int32, float32 or float64.
std::string npy_bytes(const at::Tensor& tensor);

// Writes `arrays` (name without ".npy" -> tensor) to `path` through "path.tmp-<pid>" and a
// rename. Throws std::runtime_error naming the file (unwritable, an entry of 4 GiB or more).
void write_npz(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& arrays);

}  // namespace ddpm::trainer
