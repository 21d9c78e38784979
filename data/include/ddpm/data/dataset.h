// The image dataset file (schema version 1): /images uint8 (N, H, W, C), optional /labels int64
// (N), attributes height, width, channels, count, num_classes, class_names, source, random_flip,
// schema_version. ImageDataset opens and validates it; DatasetWriter creates it atomically.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ddpm::data {

inline constexpr int64_t kSchemaVersion = 1;

struct DatasetInfo {
  std::string path;
  int64_t count = 0, height = 0, width = 0, channels = 0;
  bool has_labels = false;
  int64_t num_classes = 0;               // 0 without labels
  std::vector<std::string> class_names;  // empty when unknown
  std::string source;                    // what it was converted from
  bool random_flip = false;              // the flip default: natural images yes, digits/garments no
  int64_t chunk_images = 0;              // images per HDF5 chunk of /images
  int64_t schema_version = kSchemaVersion;
  int64_t image_bytes() const { return height * width * channels; }
};

// Read side. Not thread-safe; open one per thread (HDF5 itself is built thread-safe).
class ImageDataset {
 public:
  // Throws std::runtime_error naming the file, the dataset, what was found and what was expected.
  static ImageDataset open(const std::string& path);
  ~ImageDataset();
  ImageDataset(ImageDataset&&) noexcept;
  ImageDataset& operator=(ImageDataset&&) noexcept;

  const DatasetInfo& info() const { return info_; }
  // Images [start, start + n) into `dst` (n * H * W * C bytes, NHWC).
  void read_images(int64_t start, int64_t n, uint8_t* dst) const;
  at::Tensor read_images(int64_t start, int64_t n) const;  // uint8 (n, H, W, C)
  at::Tensor read_all_images() const;                      // uint8 (N, H, W, C)
  at::Tensor labels() const;                               // int64 (N), undefined without labels

 private:
  struct Impl;
  ImageDataset(DatasetInfo info, std::unique_ptr<Impl> impl);
  DatasetInfo info_;
  std::unique_ptr<Impl> impl_;
};

struct WriterOptions {
  int compress = 0;           // gzip level 0 (none) .. 9
  int64_t chunk_bytes = 1 << 14;  // target chunk size: one random read costs about this much
};

// Writes OUT through "OUT.tmp-<pid>" and renames it at finish(); without finish() (an error, an
// exception) the temporary file is removed, so nothing half-written is left behind.
class DatasetWriter {
 public:
  // `info` gives count, height, width, channels, has_labels and the attributes.
  DatasetWriter(const std::string& path, const DatasetInfo& info, const WriterOptions& options = {});
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // images uint8 (n, H, W, C) at [start, start + n).
  void write_images(int64_t start, const at::Tensor& images);
  void write_labels(const at::Tensor& labels);  // integer (N), values >= 0
  void finish();                                 // attributes, close, rename
  const std::string& temp_path() const { return temp_path_; }

 private:
  struct Impl;
  std::string path_, temp_path_;
  DatasetInfo info_;
  std::unique_ptr<Impl> impl_;
  bool finished_ = false;
};

// Images per chunk for a target chunk size (at least 1, at most count).
int64_t chunk_images_for(int64_t image_bytes, int64_t count, int64_t chunk_bytes);

}  // namespace ddpm::data
