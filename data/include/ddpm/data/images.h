// Image files and image operations: PNG/JPEG decoding (libpng, libjpeg-turbo), PNG writing and
// sample grids, and the resize of improved-diffusion's data pipeline (area halving, bicubic,
// centre crop). Errors throw std::runtime_error naming the file.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace ddpm::data {

enum class ImageFormat { kUnknown, kPng, kJpeg };
ImageFormat sniff_image_format(const std::string& path);  // from the first bytes, not the name

struct ImageHeader {
  ImageFormat format = ImageFormat::kUnknown;
  int64_t height = 0, width = 0, channels = 0;  // channels as stored: 1 (gray) or 3 (colour)
};
ImageHeader read_image_header(const std::string& path);

// uint8 (H, W, channels) with channels 1 (gray) or 3 (RGB); alpha is dropped, gray expanded.
at::Tensor read_image(const std::string& path, int64_t channels);

// uint8 (H, W, C), C = 1 or 3.
void write_png(const std::string& path, const at::Tensor& image);

// A grid of ncols columns with a 2-pixel border: images uint8 (N, H, W, C) or float (N, C, H, W)
// in [-1, 1] (clamped, then round((x + 1) * 127.5)). Returns the grid uint8 (H', W', C).
at::Tensor make_grid(const at::Tensor& images, int64_t ncols);
void write_png_grid(const std::string& path, const at::Tensor& images, int64_t ncols = 8);

// improved-diffusion's conversion of samples to stored images: ((x + 1) * 127.5).clamp(0, 255)
// truncated to uint8, NCHW -> NHWC. (N, C, H, W) float in [-1, 1], any device -> (N, H, W, C) uint8
// on the same device.
at::Tensor to_uint8_nhwc(const at::Tensor& images);

// improved-diffusion's resize: while the short side >= 2R, halve both sides (box filter, area
// average); then bicubic (Keys a = -0.5, widened when shrinking, as Pillow) so the short side is R
// (sizes round(s * R / short)); then centre crop to R x R. uint8 (H, W, C) -> uint8 (R, R, C).
at::Tensor resize_center_crop(const at::Tensor& image, int64_t resolution);

}  // namespace ddpm::data
