// convert(): a source (convert.h) into the dataset file (dataset.h), block by block, with the
// class names, the flip default and a summary.
#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <stdexcept>

#include "ddpm/data/convert.h"
#include "ddpm/data/dataset.h"

namespace ddpm::data {
namespace fs = std::filesystem;
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(uint8_t(c)));
  return s;
}

std::vector<std::string> recognised_class_names(const std::string& source, const ImageSource& src, int64_t max_label) {
  if (!src.class_names.empty()) return src.class_names;
  const std::string p = lower(fs::absolute(source).string());
  if (max_label < 10 && p.find("fashion") != std::string::npos) return fashion_mnist_class_names();
  if (max_label < 10 && p.find("mnist") != std::string::npos)
    return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return {};
}

}  // namespace

ConvertSummary convert(const std::string& source, const std::string& out, const ConvertOptions& o,
                       const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.resolution < 0) throw std::invalid_argument("--resolution " + std::to_string(o.resolution) + ": expected > 0");
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(source, out, ec))
    throw std::invalid_argument(out + ": the output is the source itself; choose another -o path");
  std::unique_ptr<ImageSource> src = open_source(source, o);

  DatasetInfo info;
  const auto [h, w] = o.resolution > 0 ? std::pair<int64_t, int64_t>{o.resolution, o.resolution} : src->native_size();
  info.count = src->count(), info.height = h, info.width = w, info.channels = src->channels();
  info.source = src->kind() + ":" + fs::absolute(source).string();
  info.random_flip = o.random_flip.value_or(src->kind() != "idx" && info.channels == 3);
  ConvertSummary s;
  if (src->labels.defined()) {
    const int64_t max_label = src->labels.max().item<int64_t>();
    info.has_labels = true;
    info.class_names = o.class_names.empty() ? recognised_class_names(source, *src, max_label) : o.class_names;
    if (!info.class_names.empty() && max_label >= int64_t(info.class_names.size()))
      throw std::invalid_argument(source + ": labels go up to " + std::to_string(max_label) + " but " +
                                  std::to_string(info.class_names.size()) + " class names are given (--class-names)");
    info.num_classes = std::max<int64_t>(max_label + 1, int64_t(info.class_names.size()));
    at::Tensor counts = at::bincount(src->labels, {}, info.num_classes);
    s.class_counts.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
  } else if (!o.class_names.empty()) {
    throw std::invalid_argument(source + ": --class-names given but the source has no labels (use --labels FILE)");
  }

  DatasetWriter writer(out, info, WriterOptions{o.compress});
  const int64_t block = src->block_size();
  for (int64_t start = 0; start < info.count; start += block) {
    const int64_t n = std::min(block, info.count - start);
    writer.write_images(start, src->read(start, n, o.resolution));
    if (progress) progress(start + n, info.count);
  }
  if (info.has_labels) writer.write_labels(src->labels);
  writer.finish();

  s.source_kind = src->kind(), s.source_path = source, s.out_path = out, s.labels_path = o.labels_path;
  s.count = info.count, s.height = h, s.width = w, s.channels = info.channels, s.num_classes = info.num_classes;
  s.class_names = info.class_names, s.random_flip = info.random_flip;
  s.bytes = int64_t(fs::file_size(out));
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace ddpm::data
