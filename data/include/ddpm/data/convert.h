// Converters into the dataset file (dataset.h): IDX (MNIST, Fashion-MNIST; gzipped or not),
// NumPy .npy/.npz (uint8 NHWC or NCHW; improved-diffusion's arr_0/arr_1), folders of PNG/JPEG
// (label from the sub-folder or the file-name prefix before '_'). The kind is recognised from the
// content. Errors throw std::runtime_error naming the file, what was found and what was expected.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ddpm::data {

// IDX: magic 0x00 0x00 0x08 (uint8) and the rank, big-endian int32 sizes, then the data. gzip is
// recognised by its magic. Returns uint8 with the stored shape.
at::Tensor read_idx(const std::string& path);
at::Tensor read_idx_images(const std::string& path);  // uint8 (N, H, W, 1) from an IDX3 file
at::Tensor read_idx_labels(const std::string& path);  // int64 (N) from an IDX1 file

const std::vector<std::string>& fashion_mnist_class_names();

// One conversion source. read() gives images at `resolution` (0: native size, which must be
// uniform) as uint8 (n, H, W, C).
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual std::string kind() const = 0;  // "idx", "npy", "npz", "folder"
  virtual int64_t count() const = 0;
  virtual int64_t channels() const = 0;
  virtual std::pair<int64_t, int64_t> native_size() const = 0;  // (H, W); throws if not uniform
  virtual at::Tensor read(int64_t start, int64_t n, int64_t resolution) = 0;
  virtual int64_t block_size() const { return 1024; }  // images per read() during conversion
  at::Tensor labels;                                    // int64 (N) or undefined
  std::vector<std::string> class_names;                 // from folder names, when known
};

struct ConvertOptions {
  std::string labels_path;               // IDX1 or .npy labels; IDX: found next to the images if unset
  int64_t resolution = 0;                // 0: keep the native size
  int compress = 0;                      // gzip level 0..9
  std::vector<std::string> class_names;  // overrides the recognised names
  std::optional<bool> random_flip;       // unset: no for IDX and gray images, yes for colour
  std::string label_mode = "auto";       // folders: auto, folder, prefix, none
};

std::unique_ptr<ImageSource> open_source(const std::string& path, const ConvertOptions& options);

struct ConvertSummary {
  std::string source_kind, source_path, out_path, labels_path;
  int64_t count = 0, height = 0, width = 0, channels = 0, num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<int64_t> class_counts;
  bool random_flip = false;
  int64_t bytes = 0;
  double seconds = 0;
};

using ProgressFn = std::function<void(int64_t done, int64_t total)>;
// Converts `source` into `out` (through a temporary name; nothing is left behind on error).
ConvertSummary convert(const std::string& source, const std::string& out, const ConvertOptions& options,
                       const ProgressFn& progress = {});

}  // namespace ddpm::data
