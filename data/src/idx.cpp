// IDX files (MNIST, Fashion-MNIST), gzipped or not: magic 00 00 <type> <rank>, big-endian sizes.
#include <ATen/ATen.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "ddpm/data/convert.h"

namespace ddpm::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint = "") {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

struct GzCloser {
  void operator()(gzFile f) const { if (f) gzclose(f); }
};

std::string hex(const unsigned char* b, int n) {
  std::string s;
  char buf[4];
  for (int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    s += (i ? " " : "") + std::string(buf);
  }
  return s;
}

// Reads exactly n bytes (gzread handles plain files too); returns bytes read.
int64_t read_some(gzFile f, uint8_t* dst, int64_t n, const std::string& path) {
  int64_t got = 0;
  while (got < n) {
    const unsigned want = unsigned(std::min<int64_t>(n - got, int64_t(1) << 30));
    const int r = gzread(f, dst + got, want);
    if (r < 0) {
      int code = 0;
      fail(path, std::string("read error: ") + gzerror(f, &code), "the file may be truncated or corrupt");
    }
    if (r == 0) break;
    got += r;
  }
  return got;
}

}  // namespace

at::Tensor read_idx(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> f(gzopen(path.c_str(), "rb"));
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno), "check the path");
  unsigned char head[4] = {0};
  const int64_t got = read_some(f.get(), head, 4, path);
  if (got < 4 || head[0] != 0 || head[1] != 0 || head[3] < 1 || head[3] > 4)
    fail(path, "not an IDX file: first bytes " + hex(head, int(got)),
         "expected the magic 00 00 08 <rank 1-4> of an IDX file (gzipped or not)");
  if (head[2] != 0x08)
    fail(path, "IDX element type 0x" + hex(head + 2, 1) + " is not supported", "expected 0x08 (unsigned byte)");
  const int rank = head[3];
  std::vector<int64_t> sizes(rank);
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    if (read_some(f.get(), b, 4, path) != 4) fail(path, "truncated IDX header", "the file is incomplete");
    sizes[i] = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
  }
  at::Tensor t = at::empty(sizes, at::kByte);
  const int64_t n = read_some(f.get(), t.data_ptr<uint8_t>(), t.numel(), path);
  if (n != t.numel()) {
    std::string shape;
    for (int64_t s : sizes) shape += (shape.empty() ? "" : "x") + std::to_string(s);
    fail(path, "truncated IDX data: " + std::to_string(n) + " of " + std::to_string(t.numel()) +
                   " bytes for shape " + shape, "the file is incomplete; download it again");
  }
  unsigned char extra;
  if (read_some(f.get(), &extra, 1, path) != 0)
    fail(path, "IDX file is longer than its header says", "the header or the file is corrupt");
  return t;
}

at::Tensor read_idx_images(const std::string& path) {
  at::Tensor t = read_idx(path);
  if (t.dim() != 3 && t.dim() != 4)
    fail(path, "IDX of rank " + std::to_string(t.dim()) + " is not an image file",
         "expected rank 3 (N, H, W) or 4 (N, H, W, C), magic 00 00 08 03");
  if (t.dim() == 3) t = t.unsqueeze(3);
  if (t.size(3) != 1 && t.size(3) != 3) fail(path, "IDX images with " + std::to_string(t.size(3)) + " channels",
                                             "expected 1 or 3");
  if (t.size(0) == 0) fail(path, "IDX file holds no images");
  return t;
}

at::Tensor read_idx_labels(const std::string& path) {
  at::Tensor t = read_idx(path);
  if (t.dim() != 1)
    fail(path, "IDX of rank " + std::to_string(t.dim()) + " is not a label file",
         "expected an IDX1 file (magic 00 00 08 01)");
  return t.to(at::kLong);
}

}  // namespace ddpm::data
