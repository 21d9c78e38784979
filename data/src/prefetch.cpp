// BatchPrefetcher (ddpm/data/prefetch.h): one std::async read in flight at a time.
#include "ddpm/data/prefetch.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

namespace ddpm::data {

BatchPrefetcher::BatchPrefetcher(ShardedReader& reader, std::optional<c10::Device> pin_for)
    : reader_(reader), pin_for_(pin_for), consumed_(reader.cursor()) {}

BatchPrefetcher::~BatchPrefetcher() {
  try {
    settle();
  } catch (...) {  // the error of a batch nobody asked for
  }
}

Batch BatchPrefetcher::read() {
  Batch b = reader_.next();
  if (pin_for_) {
    const c10::DeviceGuard on(*pin_for_);
    b.images = b.images.pin_memory();  // (B, C, H, W) float32, page-locked
    if (b.labels.defined()) b.labels = b.labels.pin_memory();
  }
  return b;
}

Batch BatchPrefetcher::next() {
  Batch b;
  if (ahead_) {
    std::future<Batch> f = std::move(*ahead_);
    ahead_.reset();
    b = f.get();  // rethrows the background read's error
  } else {
    b = read();
  }
  consumed_ = reader_.cursor();  // nothing in flight: the reader stands just after b
  ahead_ = std::async(std::launch::async, [this] { return read(); });
  return b;
}

void BatchPrefetcher::settle() {
  if (!ahead_) return;
  std::future<Batch> f = std::move(*ahead_);
  ahead_.reset();
  f.get();
}

void BatchPrefetcher::set_cursor(const Cursor& c) {
  try {
    settle();
  } catch (...) {  // the dropped batch's error: the new position is read afresh
  }
  reader_.set_cursor(c);
  consumed_ = reader_.cursor();
}

}  // namespace ddpm::data
