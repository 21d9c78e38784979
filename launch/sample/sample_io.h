// ddpm_sample's outputs: every rank's samples gathered to rank 0, which writes improved-diffusion's
// .npz (arr_0 uint8 (N, H, W, C), arr_1 int64 labels when there are any) and a PNG grid.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::sample {

// mine: this rank's images uint8 (n, H, W, C); labels: int64 (n) or undefined (then on every rank).
// Collective. Rank 0 writes `out` and, when `grid` is not empty, the grid (ceil(sqrt(N)) columns)
// and prints what it wrote. Returns N on rank 0, 0 elsewhere.
int64_t gather_and_write(dist::Communicator& comm, const at::Tensor& mine, const at::Tensor& labels,
                         const std::string& out, const std::string& grid);

// "a/b.npz" + "_low" -> "a/b_low.npz" (the suffix goes before the extension).
std::string with_suffix(const std::string& path, const std::string& suffix);

}  // namespace ddpm::sample
