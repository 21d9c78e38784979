// The sharded, resumable training reader. Each epoch e has one global permutation of the N
// samples, epoch_permutation(N, seed, e); global step k takes the G samples at permuted positions
// [p, p + G) and rank r of W takes the B = G / W positions [p + r B, p + (r + 1) B), so the
// concatenation over ranks is the same global batch for every world size. The cursor counts GLOBAL
// samples consumed in the epoch, hence a run can resume on a different world size.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ddpm::data {

class ImageDataset;

// Where the reader stands: epoch, and global samples consumed in that epoch. Save the two
// integers in a checkpoint; set_cursor() resumes exactly there.
struct Cursor {
  int64_t epoch = 0;
  int64_t position = 0;
  bool operator==(const Cursor&) const = default;
};

enum class ReaderMode { kAuto, kInMemory, kStreaming };
ReaderMode parse_reader_mode(const std::string& s);  // "auto", "in_memory"/"memory", "streaming"

struct ReaderOptions {
  int rank = 0;
  int world_size = 1;
  int64_t global_batch = 0;    // G; give this or batch_per_rank (then G = batch_per_rank * world_size)
  int64_t batch_per_rank = 0;
  uint64_t seed = 0;
  std::optional<bool> random_flip;  // unset: the dataset's default (attribute random_flip)
  ReaderMode mode = ReaderMode::kAuto;
  int64_t memory_limit_bytes = 0;   // kAuto loads in memory up to this; 0: physical RAM / 8
  bool drop_last = true;            // false: the last global batch of an epoch is smaller
  int prefetch = 4;                 // streaming: batches read ahead by the prefetch thread
  int64_t cache_bytes = 64 << 20;   // streaming: chunk cache (at least one batch worth of chunks)
};

struct Batch {
  at::Tensor images;   // float32 (B, C, H, W) in [-1, 1]: uint8 / 127.5 - 1, flipped where chosen
  at::Tensor labels;   // int64 (B), undefined when the dataset has none
  at::Tensor indices;  // int64 (B), sample indices in the file
  Cursor cursor;       // the cursor before this batch (epoch and global position)
};

// The global order of epoch `epoch`: a Fisher-Yates shuffle of 0..n-1 (for i = n-1 down to 1, swap
// i with j = uniform[0, i] drawn by rejection from a splitmix64 stream seeded with
// splitmix64(seed * 1000003 + epoch)). Identical on every rank and every world size.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);
// Whether sample `index` is flipped in epoch `epoch`: the top bit of
// mix(mix(seed * 1000003 + epoch) ^ index), mix = one splitmix64 output for that state.
bool flip_decision(uint64_t seed, int64_t epoch, int64_t index);

class ShardedReader {
 public:
  ShardedReader(const std::string& path, const ReaderOptions& options);
  ~ShardedReader();
  ShardedReader(const ShardedReader&) = delete;
  ShardedReader& operator=(const ShardedReader&) = delete;

  // The next batch of this rank; rolls over to the next epoch after the last one (never ends).
  Batch next();
  // The next batch of the current epoch, or nullopt once it is done (the following call starts
  // the next epoch). All ranks get the same number of batches per epoch; with drop_last = false
  // the last one may be smaller, or even empty on some ranks.
  std::optional<Batch> next_in_epoch();

  Cursor cursor() const { return cursor_; }
  void set_cursor(const Cursor& c);  // position in [0, N]

  int64_t size() const;              // N, samples in the file
  int64_t global_batch() const { return global_batch_; }
  int64_t batch_per_rank() const { return global_batch_ / options_.world_size; }
  int64_t steps_per_epoch() const;
  bool in_memory() const;
  bool random_flip() const { return flip_; }
  const ReaderOptions& options() const { return options_; }
  const std::string& path() const { return path_; }

  class Source;  // in-memory images or the streaming prefetcher

 private:
  bool epoch_done(const Cursor& c) const;

  std::string path_;
  ReaderOptions options_;
  int64_t global_batch_ = 0, size_ = 0;
  bool flip_ = false;
  Cursor cursor_;
  std::unique_ptr<Source> source_;
};

}  // namespace ddpm::data
