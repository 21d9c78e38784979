// Read-ahead over a ShardedReader: while the caller trains on batch k, a background thread reads
// batch k + 1 (and, for a GPU run, copies its images into page-locked memory so that the copy to
// the device can be asynchronous). The batches, their order and the resumable cursor are exactly
// those of the reader alone: cursor() is where the batches handed out so far end, not where the
// read-ahead stands, so a checkpoint taken between steps resumes at the next unseen batch.
#pragma once
#include <c10/core/Device.h>

#include <future>
#include <optional>

#include "ddpm/data/reader.h"

namespace ddpm::data {

class BatchPrefetcher {
 public:
  // `reader` must outlive the prefetcher and is used only through it from now on (the reader is
  // not thread-safe). `pin_for` (a CUDA device): page-locked images and labels for copies to it;
  // the background thread works with that device current (no context on another GPU).
  BatchPrefetcher(ShardedReader& reader, std::optional<c10::Device> pin_for);
  ~BatchPrefetcher();  // waits for a read in flight; its batch is dropped
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The next batch of this rank (ShardedReader::next()); starts reading the one after it. An error
  // of a background read (a damaged file, ...) is thrown here, by the call that wanted its batch.
  Batch next();
  // The reader's cursor after the batches next() returned (a read ahead does not move it).
  Cursor cursor() const { return consumed_; }
  // Drops any read ahead and moves the reader (ShardedReader::set_cursor).
  void set_cursor(const Cursor& c);

 private:
  Batch read();    // on the background thread
  void settle();   // waits for the read in flight and drops it
  ShardedReader& reader_;
  std::optional<c10::Device> pin_for_;
  Cursor consumed_;
  std::optional<std::future<Batch>> ahead_;
};

}  // namespace ddpm::data
