// ddpm_bench_reader: images/s of the ShardedReader (in memory and streaming) for 28x28x1 and
// 32x32x3 data, per wall second and per CPU second (= per core). Prints figures, asserts nothing.
// Usage: ddpm_bench_reader [--n N] [--batch B] [--seconds S] [--dir DIR]
#include <ATen/ATen.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "ddpm/data/dataset.h"
#include "ddpm/data/reader.h"

namespace {
using namespace ddpm::data;

double cpu_seconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

void make(const std::string& path, int64_t n, int64_t h, int64_t w, int64_t c) {
  DatasetInfo info;
  info.count = n, info.height = h, info.width = w, info.channels = c, info.random_flip = c == 3;
  DatasetWriter wr(path, info);
  wr.write_images(0, at::randint(0, 256, {n, h, w, c}, at::kByte));
  wr.write_labels(at::arange(n, at::kLong) % 10);
  wr.finish();
}

void bench(const std::string& path, const char* label, ReaderMode mode, int64_t batch, double seconds) {
  ReaderOptions o;
  o.global_batch = batch, o.seed = 1, o.mode = mode;
  const auto t_open = std::chrono::steady_clock::now();
  ShardedReader reader(path, o);
  reader.next();  // warm-up (and, in memory, the load is done by now)
  const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_open).count();
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t images = 0;
  double wall = 0;
  while (wall < seconds) {
    images += reader.next().images.size(0);
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double cpu = cpu_seconds() - cpu0;
  std::printf("%-10s %-10s batch %4lld: %9.0f images/s wall, %9.0f images/s per core (%.2f CPU s / %.2f s; "
              "open+first batch %.2f s)\n", label, reader.in_memory() ? "in-memory" : "streaming", (long long)batch,
              images / wall, images / cpu, cpu, wall, open_s);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 50000, batch = 256;
  double seconds = 3;
  std::string dir = std::filesystem::temp_directory_path() / "ddpm_bench_reader";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) n = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::stod(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
  }
  at::set_num_threads(1);
  std::filesystem::create_directories(dir);
  const std::pair<const char*, std::array<int64_t, 3>> shapes[] = {{"28x28x1", {28, 28, 1}}, {"32x32x3", {32, 32, 3}}};
  for (const auto& [label, s] : shapes) {
    const std::string path = dir + "/" + label + ".h5";
    make(path, n, s[0], s[1], s[2]);
    bench(path, label, ReaderMode::kInMemory, batch, seconds);
    bench(path, label, ReaderMode::kStreaming, batch, seconds);
    std::filesystem::remove(path);
  }
  return 0;
}
