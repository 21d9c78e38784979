// Conversion sources: whole arrays (IDX, .npy, .npz) and folders of PNG/JPEG images, recognised
// from their content by open_source(); see convert.h.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "ddpm/data/convert.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"

namespace ddpm::data {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint = "") {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + ")";
}

at::Tensor resize_all(const at::Tensor& images, int64_t r) {  // (n, H, W, C) -> (n, R, R, C)
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); ++i) out.push_back(resize_center_crop(images[i], r));
  return at::stack(out);
}

// A whole array of images in memory (IDX, .npy, .npz).
class ArraySource : public ImageSource {
 public:
  ArraySource(std::string kind, at::Tensor images) : kind_(std::move(kind)), images_(std::move(images)) {}
  std::string kind() const override { return kind_; }
  int64_t count() const override { return images_.size(0); }
  int64_t channels() const override { return images_.size(3); }
  std::pair<int64_t, int64_t> native_size() const override { return {images_.size(1), images_.size(2)}; }
  at::Tensor read(int64_t start, int64_t n, int64_t r) override {
    at::Tensor x = images_.slice(0, start, start + n).contiguous();
    return r > 0 && (x.size(1) != r || x.size(2) != r) ? resize_all(x, r) : x;
  }

 private:
  std::string kind_;
  at::Tensor images_;  // (N, H, W, C) uint8
};

// uint8 images in NHWC from an array of rank 3 (N, H, W) or 4 (NHWC, or NCHW as a fallback).
at::Tensor images_from_array(const at::Tensor& a, const std::string& where) {
  if (a.scalar_type() != at::kByte)
    fail(where, "images have dtype " + std::string(c10::toString(a.scalar_type())) + " shape " + shape_str(a),
         "expected uint8 values 0-255; convert with (x * 255).round().astype(numpy.uint8)");
  at::Tensor x;
  if (a.dim() == 3) x = a.unsqueeze(3);
  else if (a.dim() == 4 && (a.size(3) == 1 || a.size(3) == 3)) x = a;
  else if (a.dim() == 4 && (a.size(1) == 1 || a.size(1) == 3)) x = a.permute({0, 2, 3, 1});
  else if (a.dim() == 4)
    fail(where, "images of shape " + shape_str(a) + " have neither 1 nor 3 channels",
         "expected (N, H, W, C) or (N, C, H, W) with C = 1 or 3");
  else
    fail(where, "images of rank " + std::to_string(a.dim()) + " shape " + shape_str(a),
         "expected rank 3 (N, H, W) or 4 (N, H, W, C) / (N, C, H, W)");
  if (x.size(0) == 0 || x.size(1) == 0 || x.size(2) == 0) fail(where, "no images: shape " + shape_str(a));
  return x.contiguous();
}

at::Tensor labels_from_array(const at::Tensor& a, const std::string& where) {
  if (a.dim() != 1 || a.is_floating_point() || a.scalar_type() == at::kBool)
    fail(where, "labels have dtype " + std::string(c10::toString(a.scalar_type())) + " shape " + shape_str(a),
         "expected a 1-D integer array, one label per image");
  at::Tensor l = a.to(at::kLong);
  if (l.numel() > 0 && l.min().item<int64_t>() < 0)
    fail(where, "negative label " + std::to_string(l.min().item<int64_t>()), "labels must be class indices >= 0");
  return l;
}

at::Tensor read_labels_file(const std::string& path) {
  if (!fs::exists(path)) fail(path, "labels file not found", "check --labels");
  std::ifstream in(path, std::ios::binary);
  char m[6] = {0};
  in.read(m, 6);
  if (in.gcount() == 6 && std::string(m, 6) == "\x93NUMPY") return labels_from_array(read_npy(path), path);
  return read_idx_labels(path);
}

// The IDX labels next to an IDX image file ("train-images-idx3-ubyte.gz" -> "train-labels-idx1-ubyte.gz").
std::string sibling_idx_labels(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  const size_t p = name.find("images-idx3");
  if (p == std::string::npos) return "";
  name.replace(p, 11, "labels-idx1");
  const fs::path cand = fs::path(path).parent_path() / name;
  return fs::exists(cand) ? cand.string() : "";
}

at::Tensor pick(std::map<std::string, at::Tensor>& arrays, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    auto it = arrays.find(n);
    if (it != arrays.end()) return it->second;
  }
  return {};
}

// A folder of PNG/JPEG images, decoded on demand.
class FolderSource : public ImageSource {
 public:
  FolderSource(const std::string& root, const std::string& label_mode) : root_(root) {
    for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {  // hidden files and folders
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) files_.push_back(fs::relative(it->path(), root).string());
    }
    std::sort(files_.begin(), files_.end());
    if (files_.empty()) fail(root, "empty folder: no image files found", "expected PNG or JPEG files, in class sub-folders or not");
    for (const auto& f : files_) {
      const ImageHeader h = read_image_header(path_of(f));  // throws on unknown formats
      channels_ = std::max(channels_, h.channels);
      sizes_.insert({h.height, h.width});
      if (first_.empty()) first_ = f;
    }
    assign_labels(label_mode);
  }
  std::string kind() const override { return "folder"; }
  int64_t count() const override { return int64_t(files_.size()); }
  int64_t channels() const override { return channels_; }
  int64_t block_size() const override { return 64; }
  std::pair<int64_t, int64_t> native_size() const override {
    if (sizes_.size() != 1)
      fail(root_, "images differ in size (" + std::to_string(sizes_.size()) + " sizes, e.g. " +
                      std::to_string(sizes_.begin()->first) + "x" + std::to_string(sizes_.begin()->second) + " and " +
                      std::to_string(sizes_.rbegin()->first) + "x" + std::to_string(sizes_.rbegin()->second) + ")",
           "pass --resolution R to resize them");
    return *sizes_.begin();
  }
  at::Tensor read(int64_t start, int64_t n, int64_t r) override {
    std::vector<at::Tensor> out;
    for (int64_t i = start; i < start + n; ++i) {
      at::Tensor im = read_image(path_of(files_[i]), channels_);
      out.push_back(r > 0 && (im.size(0) != r || im.size(1) != r) ? resize_center_crop(im, r) : im);
    }
    return at::stack(out);
  }

 private:
  std::string path_of(const std::string& rel) const { return (fs::path(root_) / rel).string(); }
  void assign_labels(const std::string& mode) {
    std::vector<std::string> keys;
    bool all_nested = true, all_prefixed = true;
    for (const auto& f : files_) {
      const fs::path p(f);
      all_nested = all_nested && p.has_parent_path();
      all_prefixed = all_prefixed && p.filename().string().find('_') != std::string::npos;
    }
    std::string m = mode;
    if (m == "auto") {
      m = all_nested ? "folder" : "none";
      if (m == "none" && all_prefixed) {
        std::set<std::string> prefixes;
        for (const auto& f : files_) prefixes.insert(fs::path(f).filename().string().substr(0, fs::path(f).filename().string().find('_')));
        if (prefixes.size() >= 2) m = "prefix";
      }
    }
    if (m == "none") return;
    if (m != "folder" && m != "prefix") fail(root_, "label mode '" + mode + "' unknown", "expected auto, folder, prefix or none");
    for (const auto& f : files_) {
      const fs::path p(f);
      if (m == "folder") {
        if (!p.has_parent_path()) fail(path_of(f), "image is not in a class sub-folder", "labels come from sub-folders (--label-mode folder)");
        keys.push_back(p.begin()->string());
      } else {
        const std::string n = p.filename().string();
        if (n.find('_') == std::string::npos) fail(path_of(f), "file name has no '_' prefix", "labels come from the prefix before '_' (--label-mode prefix)");
        keys.push_back(n.substr(0, n.find('_')));
      }
    }
    std::set<std::string> names(keys.begin(), keys.end());
    class_names.assign(names.begin(), names.end());
    labels = at::empty({int64_t(keys.size())}, at::kLong);
    int64_t* dst = labels.data_ptr<int64_t>();
    for (size_t i = 0; i < keys.size(); ++i)
      dst[i] = int64_t(std::lower_bound(class_names.begin(), class_names.end(), keys[i]) - class_names.begin());
  }

  std::string root_, first_;
  std::vector<std::string> files_;
  int64_t channels_ = 1;
  std::set<std::pair<int64_t, int64_t>> sizes_;
};

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  return names;
}

std::unique_ptr<ImageSource> open_source(const std::string& path, const ConvertOptions& o) {
  if (!fs::exists(path)) fail(path, "no such file or folder", "check the SOURCE path");
  if (fs::is_directory(path)) {
    if (!o.labels_path.empty()) fail(path, "--labels is not used with folders", "labels come from sub-folders or file-name prefixes");
    return std::make_unique<FolderSource>(path, o.label_mode);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading", "check the permissions");
  unsigned char m[8] = {0};
  in.read(reinterpret_cast<char*>(m), 8);
  const int64_t got = in.gcount();
  if (got == 0) fail(path, "empty file", "expected an IDX, .npy or .npz file, or a folder of images");
  std::unique_ptr<ImageSource> src;
  if ((m[0] == 0x1f && m[1] == 0x8b) || (got >= 4 && m[0] == 0 && m[1] == 0)) {
    src = std::make_unique<ArraySource>("idx", read_idx_images(path));
    const std::string lp = o.labels_path.empty() ? sibling_idx_labels(path) : o.labels_path;
    if (!lp.empty()) src->labels = read_labels_file(lp);
  } else if (got >= 6 && std::string(reinterpret_cast<char*>(m), 6) == "\x93NUMPY") {
    src = std::make_unique<ArraySource>("npy", images_from_array(read_npy(path), path));
    if (!o.labels_path.empty()) src->labels = read_labels_file(o.labels_path);
  } else if (got >= 4 && m[0] == 'P' && m[1] == 'K' && m[2] == 3 && m[3] == 4) {
    auto arrays = read_npz(path);
    at::Tensor im = pick(arrays, {"arr_0", "images", "x"});
    if (!im.defined()) {
      std::string keys;
      for (const auto& [k, v] : arrays) keys += (keys.empty() ? "" : ", ") + k;
      fail(path, "no image array in the archive (keys: " + keys + ")", "expected arr_0, images or x");
    }
    src = std::make_unique<ArraySource>("npz", images_from_array(im, path));
    at::Tensor lab = pick(arrays, {"arr_1", "labels", "y"});
    if (!o.labels_path.empty()) src->labels = read_labels_file(o.labels_path);
    else if (lab.defined()) src->labels = labels_from_array(lab, path + ":labels");
  } else if (m[0] == 0x89 && m[1] == 'P') {
    fail(path, "a single PNG image", "give the folder that holds the images");
  } else {
    fail(path, "unknown format", "expected an IDX file (gzipped or not), a .npy or .npz array, or a folder of images");
  }
  if (src->labels.defined() && src->labels.size(0) != src->count()) {
    const std::string lp = o.labels_path.empty() ? sibling_idx_labels(path) : o.labels_path;
    fail(lp.empty() ? path : lp, std::to_string(src->labels.size(0)) + " labels for " + std::to_string(src->count()) +
                                     " images in " + path, "the label count must equal the image count");
  }
  return src;
}

}  // namespace ddpm::data
