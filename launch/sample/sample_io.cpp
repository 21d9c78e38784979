// ddpm_sample's outputs; see sample_io.h.
#include "sample_io.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <utility>
#include <vector>

#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/dist/communicator.h"

namespace ddpm::sample {

int64_t gather_and_write(dist::Communicator& comm, const at::Tensor& mine, const at::Tensor& labels,
                         const std::string& out, const std::string& grid) {
  // Gathered in uint8 where the communicator works (CPU for MPI, the GPU for NCCL).
  const c10::Device comm_device = comm.device();
  std::vector<at::Tensor> all = comm.all_gather_v(mine.to(comm_device));
  std::vector<at::Tensor> all_labels;
  if (labels.defined()) all_labels = comm.all_gather_v(labels.to(comm_device));
  if (comm.rank() != 0) return 0;
  for (auto& t : all) t = t.cpu();
  for (auto& t : all_labels) t = t.cpu();
  const at::Tensor arr0 = at::cat(all, 0);  // (N, H, W, C) uint8
  std::vector<std::pair<std::string, at::Tensor>> arrays = {{"arr_0", arr0}};
  if (!all_labels.empty()) arrays.emplace_back("arr_1", at::cat(all_labels, 0));
  data::write_npz(out, arrays);
  std::cout << "wrote " << out << " (arr_0 " << arr0.sizes() << " uint8" << (all_labels.empty() ? "" : ", arr_1 labels")
            << ")" << std::endl;
  if (!grid.empty()) {
    const int64_t ncols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(arr0.size(0)))));
    data::write_png_grid(grid, arr0, std::max<int64_t>(1, ncols));
    std::cout << "wrote " << grid << std::endl;
  }
  return arr0.size(0);
}

std::string with_suffix(const std::string& path, const std::string& suffix) {
  const std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + suffix + p.extension().string())).string();
}

}  // namespace ddpm::sample
