// ddpm_prepare: converts IDX, .npy/.npz or a folder of PNG/JPEG images into the HDF5 dataset
// file the trainer reads (schema in data/include/ddpm/data/dataset.h), with progress, a summary
// and an optional preview grid. Nothing is left behind when it fails.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "ddpm/data/convert.h"
#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"

namespace {

std::vector<std::string> split_names(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// Prints a line when another 5% is done, at most two lines per second, and the last one.
ddpm::data::ProgressFn make_progress(bool quiet) {
  using clock = std::chrono::steady_clock;
  auto start = clock::now();
  auto last = start;
  int64_t last_pct = -1;
  return [=](int64_t done, int64_t total) mutable {
    if (quiet) return;
    const int64_t pct = done * 100 / total;
    const auto now = clock::now();
    if (done < total && (pct / 5 == last_pct / 5 || now - last < std::chrono::milliseconds(500))) return;
    last = now, last_pct = pct;
    std::fprintf(stderr, "[prepare] %lld/%lld images (%lld%%) %.1f s\n", (long long)done, (long long)total,
                 (long long)pct, std::chrono::duration<double>(now - start).count());
  };
}

void print_summary(const ddpm::data::ConvertSummary& s, const std::string& preview) {
  std::printf("converted %s (%s) -> %s\n", s.source_path.c_str(), s.source_kind.c_str(), s.out_path.c_str());
  std::printf("  images       %lld x %lldx%lldx%lld uint8 (N, H, W, C)\n", (long long)s.count, (long long)s.height,
              (long long)s.width, (long long)s.channels);
  if (s.num_classes > 0) {
    std::printf("  labels       %lld classes:", (long long)s.num_classes);
    for (int64_t c = 0; c < s.num_classes; ++c)
      std::printf(" %s%s=%lld", c ? "" : "", c < int64_t(s.class_names.size()) ? s.class_names[c].c_str()
                                                                               : std::to_string(c).c_str(),
                  (long long)s.class_counts[c]);
    std::printf("\n");
  } else {
    std::printf("  labels       none\n");
  }
  std::printf("  random flip  %s by default\n", s.random_flip ? "on" : "off");
  std::printf("  file         %.1f MiB in %.2f s\n", s.bytes / 1048576.0, s.seconds);
  if (!preview.empty()) std::printf("  preview      %s\n", preview.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Converts images (IDX, .npy/.npz, folders of PNG/JPEG) into a ddpm HDF5 dataset"};
  std::string source, out, preview, class_names, flip = "auto";
  ddpm::data::ConvertOptions o;
  bool quiet = false;
  app.add_option("SOURCE", source, "IDX file (gz or not), .npy/.npz array, or a folder of PNG/JPEG")->required();
  app.add_option("-o,--out", out, "output HDF5 file (written to a temporary name, renamed at the end)")->required();
  app.add_option("--labels", o.labels_path, "labels: IDX1 or .npy (IDX: found next to the images by default)");
  app.add_option("--resolution", o.resolution, "resize (area halving, bicubic, centre crop) to R x R")->check(CLI::PositiveNumber);
  app.add_option("--preview", preview, "write a PNG grid of the first 64 images");
  app.add_option("--compress", o.compress, "gzip level of /images, 0 (none) to 9")->check(CLI::Range(0, 9));
  app.add_option("--class-names", class_names, "comma-separated class names (Fashion-MNIST and MNIST are recognised)");
  app.add_option("--label-mode", o.label_mode, "folders: labels from auto, folder, prefix or none")
      ->check(CLI::IsMember({"auto", "folder", "prefix", "none"}));
  app.add_option("--flip", flip, "random horizontal flip default stored in the file: auto, on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_flag("-q,--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  if (!class_names.empty()) o.class_names = split_names(class_names);
  if (flip != "auto") o.random_flip = flip == "on";
  try {
    const ddpm::data::ConvertSummary s = ddpm::data::convert(source, out, o, make_progress(quiet));
    if (!preview.empty()) {
      const ddpm::data::ImageDataset ds = ddpm::data::ImageDataset::open(out);
      ddpm::data::write_png_grid(preview, ds.read_images(0, std::min<int64_t>(64, ds.info().count)), 8);
    }
    print_summary(s, preview);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_prepare: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
