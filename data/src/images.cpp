// PNG/JPEG decoding, PNG writing, sample grids, the uint8 conversion of samples and the
// improved-diffusion resize; see images.h.
#include "ddpm/data/images.h"

#include <ATen/ATen.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace ddpm::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint = "") {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File open_file(const std::string& path, const char* mode) {
  File f(std::fopen(path.c_str(), mode));
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  return f;
}

// ---- JPEG (libjpeg-turbo) -------------------------------------------------------------------
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Reads a JPEG: header only when `pixels` is null. Returns the header.
ImageHeader read_jpeg(const std::string& path, at::Tensor* pixels, int64_t channels) {
  File f = open_file(path, "rb");
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.message[0] = 0;
  std::string failure;
  ImageHeader h;
  h.format = ImageFormat::kJpeg;
  if (setjmp(err.jump)) {
    failure = err.message;
  } else {
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, f.get());
    jpeg_read_header(&cinfo, TRUE);
    h.height = cinfo.image_height, h.width = cinfo.image_width;
    h.channels = cinfo.num_components == 1 ? 1 : 3;
    if (pixels) {
      cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
      jpeg_start_decompress(&cinfo);
      *pixels = at::empty({h.height, h.width, channels}, at::kByte);
      uint8_t* base = pixels->data_ptr<uint8_t>();
      while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = base + int64_t(cinfo.output_scanline) * h.width * channels;
        jpeg_read_scanlines(&cinfo, &row, 1);
      }
      jpeg_finish_decompress(&cinfo);
    }
  }
  jpeg_destroy_decompress(&cinfo);
  if (!failure.empty()) fail(path, "cannot decode JPEG: " + failure, "the file may be truncated or corrupt");
  return h;
}

// ---- PNG (libpng simplified API) ------------------------------------------------------------
ImageHeader read_png(const std::string& path, at::Tensor* pixels, int64_t channels) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str()))
    fail(path, std::string("cannot read PNG: ") + img.message, "the file may be truncated or corrupt");
  ImageHeader h{ImageFormat::kPng, img.height, img.width, (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1};
  if (!pixels) {
    png_image_free(&img);
    return h;
  }
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  *pixels = at::empty({h.height, h.width, channels}, at::kByte);
  png_color white{255, 255, 255};  // background for transparent pixels
  if (!png_image_finish_read(&img, &white, pixels->data_ptr<uint8_t>(), 0, nullptr))
    fail(path, std::string("cannot decode PNG: ") + img.message, "the file may be truncated or corrupt");
  return h;
}

}  // namespace

ImageFormat sniff_image_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  unsigned char b[8] = {0};
  in.read(reinterpret_cast<char*>(b), 8);
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (in.gcount() == 8 && std::memcmp(b, png_sig, 8) == 0) return ImageFormat::kPng;
  if (in.gcount() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return ImageFormat::kJpeg;
  return ImageFormat::kUnknown;
}

ImageHeader read_image_header(const std::string& path) {
  switch (sniff_image_format(path)) {
    case ImageFormat::kPng: return read_png(path, nullptr, 0);
    case ImageFormat::kJpeg: return read_jpeg(path, nullptr, 0);
    default: fail(path, "unknown image format", "expected PNG or JPEG content; remove other files from the folder");
  }
}

at::Tensor read_image(const std::string& path, int64_t channels) {
  if (channels != 1 && channels != 3) fail(path, "cannot decode to " + std::to_string(channels) + " channels", "use 1 or 3");
  at::Tensor out;
  switch (sniff_image_format(path)) {
    case ImageFormat::kPng: read_png(path, &out, channels); break;
    case ImageFormat::kJpeg: read_jpeg(path, &out, channels); break;
    default: fail(path, "unknown image format", "expected PNG or JPEG content; remove other files from the folder");
  }
  return out;
}

void write_png(const std::string& path, const at::Tensor& image) {
  TORCH_CHECK(image.scalar_type() == at::kByte && image.dim() == 3 && (image.size(2) == 1 || image.size(2) == 3),
              path, ": write_png expects uint8 (H, W, 1 or 3), got ", image.scalar_type(), " ", image.sizes());
  const at::Tensor c = image.contiguous();
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = uint32_t(c.size(1));
  img.height = uint32_t(c.size(0));
  img.format = c.size(2) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&img, path.c_str(), 0, c.data_ptr<uint8_t>(), 0, nullptr))
    fail(path, std::string("cannot write PNG: ") + img.message, "check that the folder exists and is writable");
}

at::Tensor to_uint8_nhwc(const at::Tensor& images) {
  return ((images.to(at::kFloat) + 1) * 127.5).clamp(0, 255).to(at::kByte).permute({0, 2, 3, 1}).contiguous();
}

at::Tensor make_grid(const at::Tensor& images, int64_t ncols) {
  TORCH_CHECK(images.dim() == 4 && images.size(0) > 0, "make_grid: expected (N, H, W, C) uint8 or (N, C, H, W) "
              "float images, got ", images.sizes());
  TORCH_CHECK(ncols > 0, "make_grid: ncols must be > 0, got ", ncols);
  at::Tensor x;  // (N, H, W, C) uint8
  if (images.scalar_type() == at::kByte) {
    x = images.cpu();
  } else {
    TORCH_CHECK(images.is_floating_point(), "make_grid: images must be uint8 or float, got ", images.scalar_type());
    x = ((images.detach().cpu().to(at::kFloat).clamp(-1, 1) + 1) * 127.5).round().to(at::kByte).permute({0, 2, 3, 1});
  }
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  TORCH_CHECK(c == 1 || c == 3, "make_grid: images need 1 or 3 channels, got shape ", images.sizes());
  const int64_t cols = std::min(ncols, n), rows = (n + cols - 1) / cols, pad = 2;
  at::Tensor grid = at::zeros({rows * (h + pad) + pad, cols * (w + pad) + pad, c}, at::kByte);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y0 = pad + (i / cols) * (h + pad), x0 = pad + (i % cols) * (w + pad);
    grid.slice(0, y0, y0 + h).slice(1, x0, x0 + w).copy_(x[i]);
  }
  return grid;
}

void write_png_grid(const std::string& path, const at::Tensor& images, int64_t ncols) {
  write_png(path, make_grid(images, ncols));
}

namespace {

// Separable resampling with a convolution kernel widened by the scale when shrinking (what
// Pillow's resize does): box (support 1/2) and Keys' cubic with a = -0.5 (support 2). Each pass
// rounds to uint8, as 8-bit images do.
double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }  // (-1/2, 1/2]
double cubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Resamples axis 0 of a (len, inner) uint8 array to `out` entries.
std::vector<uint8_t> resample_axis(const std::vector<uint8_t>& src, int64_t len, int64_t inner, int64_t out, bool cubic) {
  const double scale = double(len) / double(out), fs = std::max(scale, 1.0);
  const double support = (cubic ? 2.0 : 0.5) * fs;
  std::vector<uint8_t> dst(out * inner);
  std::vector<double> acc(inner), w;
  for (int64_t o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), len);
    w.clear();
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) {
      w.push_back(cubic ? cubic_filter((j - center + 0.5) / fs) : box_filter((j - center + 0.5) / fs));
      total += w.back();
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = lo; j < hi; ++j) {
      const double wj = total != 0 ? w[j - lo] / total : 0;
      const uint8_t* row = src.data() + j * inner;
      for (int64_t i = 0; i < inner; ++i) acc[i] += wj * row[i];
    }
    for (int64_t i = 0; i < inner; ++i) dst[o * inner + i] = uint8_t(std::clamp(std::lround(acc[i]), 0L, 255L));
  }
  return dst;
}

// (h, w, c) -> (nh, nw, c): the width pass first, then the height pass.
std::vector<uint8_t> resize(const std::vector<uint8_t>& src, int64_t h, int64_t w, int64_t c, int64_t nh,
                            int64_t nw, bool cubic) {
  std::vector<uint8_t> t(h * w * c), x = src;
  if (nw != w) {  // transpose to (w, h, c), resample, transpose back
    for (int64_t y = 0; y < h; ++y)
      for (int64_t i = 0; i < w; ++i)
        for (int64_t k = 0; k < c; ++k) t[(i * h + y) * c + k] = x[(y * w + i) * c + k];
    const std::vector<uint8_t> r = resample_axis(t, w, h * c, nw, cubic);
    x.assign(h * nw * c, 0);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t i = 0; i < nw; ++i)
        for (int64_t k = 0; k < c; ++k) x[(y * nw + i) * c + k] = r[(i * h + y) * c + k];
  }
  if (nh != h) x = resample_axis(x, h, nw * c, nh, cubic);
  return x;
}

}  // namespace

at::Tensor resize_center_crop(const at::Tensor& image, int64_t r) {
  TORCH_CHECK(image.scalar_type() == at::kByte && image.dim() == 3, "resize_center_crop: expected uint8 (H, W, C), got ",
              image.scalar_type(), " ", image.sizes());
  TORCH_CHECK(r > 0, "resize_center_crop: resolution must be > 0, got ", r);
  const at::Tensor in = image.contiguous();
  int64_t h = in.size(0), w = in.size(1);
  const int64_t c = in.size(2);
  std::vector<uint8_t> x(in.data_ptr<uint8_t>(), in.data_ptr<uint8_t>() + in.numel());
  while (std::min(h, w) >= 2 * r) {  // area (box) halving
    x = resize(x, h, w, c, h / 2, w / 2, false);
    h /= 2, w /= 2;
  }
  const double scale = double(r) / double(std::min(h, w));
  const int64_t nh = std::llround(h * scale), nw = std::llround(w * scale);
  x = resize(x, h, w, c, nh, nw, true);
  const int64_t top = (nh - r) / 2, left = (nw - r) / 2;
  at::Tensor out = at::empty({r, r, c}, at::kByte);  // (R, R, C)
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t y = 0; y < r; ++y) std::memcpy(o + y * r * c, x.data() + ((top + y) * nw + left) * c, r * c);
  return out;
}

}  // namespace ddpm::data
