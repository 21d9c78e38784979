// NumPy .npy arrays and .npz archives, read and written: improved-diffusion's sample files
// (arr_0 uint8 (N, H, W, C), arr_1 int64 labels), image/label sources of ddpm_prepare. numpy.load
// reads what write_npz writes. Errors throw std::runtime_error naming the file (and the entry).
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ddpm::data {

// .npy (version 1-3, C order; dtypes u1 i1 i2 u2 i4 u4 i8 u8 f4 f8 b1 -> the torch type, unsigned
// 16-64 bit as int64) and .npz (zip, stored or deflated entries, zip64 sizes, CRC-32 checked) as
// name -> tensor (names without ".npy").
at::Tensor read_npy(const std::string& path);
std::map<std::string, at::Tensor> read_npz(const std::string& path);

// .npy bytes (format 1.0, C order) of a tensor of dtype uint8, int64, int32, float32 or float64
// (copied to the CPU).
std::string npy_bytes(const at::Tensor& tensor);

// Writes `arrays` (name without ".npy" -> tensor) as a zip of stored entries through
// write_file_atomic (files.h). Throws std::runtime_error naming the file (unwritable, an entry
// of 4 GiB or more: zip64 is not written).
void write_npz(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& arrays);

}  // namespace ddpm::data
