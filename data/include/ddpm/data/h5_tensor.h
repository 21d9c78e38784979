// Named tensors in an HDF5 file: the exchange format of ddpm_inspect, the golden files of the
// tests, and small side files (the FID reference-statistics cache). Not the training dataset
// reader (see dataset.h): this reads and writes whole datasets. A dataset name may be a path
// ("group/sub/name"): writing creates the groups on the way. Errors throw std::runtime_error
// naming the file and the dataset.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace ddpm::data {

class H5TensorFile {
 public:
  static H5TensorFile open_read(const std::string& path);   // must exist
  static H5TensorFile create(const std::string& path);      // truncates
  static H5TensorFile open_rw(const std::string& path);     // read-write; created when absent
  ~H5TensorFile();
  H5TensorFile(H5TensorFile&&) noexcept;
  H5TensorFile& operator=(H5TensorFile&&) noexcept;

  const std::string& path() const { return path_; }
  bool has(const std::string& dataset) const;  // a path: false when any group on the way is absent
  std::vector<std::string> names() const;  // datasets in the root group
  // The whole dataset as a contiguous CPU tensor of its stored type (uint8, int32, int64,
  // float32, float64).
  at::Tensor read(const std::string& dataset) const;
  // Writes a CPU copy of `t` (any of the types above; bool is stored as uint8), creating the
  // groups of a path and replacing a dataset already there.
  void write(const std::string& dataset, const at::Tensor& t);

 private:
  struct Impl;
  H5TensorFile(std::string path, std::unique_ptr<Impl> impl);
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ddpm::data
