// ShardedReader: options, cursor, and its two sources - the whole file in memory, or a prefetch
// thread that reads whole HDF5 chunks (coalesced, LRU-cached) ahead of the consumer.
#include "ddpm/data/reader.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "ddpm/data/dataset.h"
#include "sharding.h"

namespace ddpm::data {

ReaderMode parse_reader_mode(const std::string& s) {
  if (s == "auto") return ReaderMode::kAuto;
  if (s == "in_memory" || s == "memory") return ReaderMode::kInMemory;
  if (s == "streaming") return ReaderMode::kStreaming;
  throw std::invalid_argument("reader mode '" + s + "' unknown (expected auto, in_memory or streaming)");
}

class ShardedReader::Source {
 public:
  virtual ~Source() = default;
  // The batch at cursor c (not done) and the cursor after it.
  virtual std::pair<Batch, Cursor> next(const Cursor& c) = 0;
  virtual bool in_memory() const = 0;
};

namespace {

using detail::Plan;
using detail::Planner;

class InMemorySource : public ShardedReader::Source {
 public:
  InMemorySource(const ImageDataset& ds, Planner planner) : planner_(std::move(planner)), info_(ds.info()) {
    images_ = ds.read_all_images();  // (N, H, W, C)
    labels_ = ds.labels();
  }
  std::pair<Batch, Cursor> next(const Cursor& c) override {
    const Plan p = planner_.plan(c);
    const uint8_t* base = images_.data_ptr<uint8_t>();
    std::vector<const uint8_t*> samples(p.indices.size());
    for (size_t i = 0; i < samples.size(); ++i) samples[i] = base + p.indices[i] * info_.image_bytes();
    at::Tensor x = detail::to_float_batch(samples, p.flips, info_.height, info_.width, info_.channels);
    return {detail::assemble(p, std::move(x), labels_), p.after};
  }
  bool in_memory() const override { return true; }

 private:
  Planner planner_;
  DatasetInfo info_;
  at::Tensor images_, labels_;
};

// Whole chunks of /images, least recently used evicted first.
class ChunkCache {
 public:
  ChunkCache(const ImageDataset& ds, int64_t capacity_chunks) : ds_(ds), capacity_(capacity_chunks) {}
  using Chunk = std::shared_ptr<std::vector<uint8_t>>;
  // The chunks holding `indices`, reading missing ones with one HDF5 read per run of neighbours.
  std::unordered_map<int64_t, Chunk> fetch(const std::vector<int64_t>& indices) {
    const DatasetInfo& in = ds_.info();
    std::vector<int64_t> ids;
    for (int64_t i : indices) ids.push_back(i / in.chunk_images);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::unordered_map<int64_t, Chunk> got;
    std::vector<int64_t> missing;
    for (int64_t id : ids) {
      auto it = map_.find(id);
      if (it == map_.end()) { missing.push_back(id); continue; }
      lru_.splice(lru_.begin(), lru_, it->second.second);
      got[id] = it->second.first;
    }
    for (size_t a = 0; a < missing.size();) {
      size_t b = a + 1;
      while (b < missing.size() && missing[b] == missing[b - 1] + 1) ++b;
      read_run(missing[a], missing[b - 1], got);
      a = b;
    }
    return got;
  }

 private:
  void read_run(int64_t first, int64_t last, std::unordered_map<int64_t, Chunk>& got) {
    const DatasetInfo& in = ds_.info();
    const int64_t start = first * in.chunk_images;
    const int64_t stop = std::min(in.count, (last + 1) * in.chunk_images);
    if (first == last) {  // the usual case under random access: straight into the cached chunk
      auto chunk = std::make_shared<std::vector<uint8_t>>((stop - start) * in.image_bytes());
      ds_.read_images(start, stop - start, chunk->data());
      insert(first, chunk, got);
      return;
    }
    buffer_.resize((stop - start) * in.image_bytes());
    ds_.read_images(start, stop - start, buffer_.data());
    for (int64_t id = first; id <= last; ++id) {
      const int64_t s = id * in.chunk_images, e = std::min(in.count, s + in.chunk_images);
      auto chunk = std::make_shared<std::vector<uint8_t>>(buffer_.begin() + (s - start) * in.image_bytes(),
                                                          buffer_.begin() + (e - start) * in.image_bytes());
      insert(id, std::move(chunk), got);
    }
  }
  void insert(int64_t id, Chunk chunk, std::unordered_map<int64_t, Chunk>& got) {
    got[id] = chunk;
    lru_.push_front(id);
    map_[id] = {std::move(chunk), lru_.begin()};
    while (int64_t(map_.size()) > capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  const ImageDataset& ds_;
  int64_t capacity_;
  std::list<int64_t> lru_;
  std::unordered_map<int64_t, std::pair<Chunk, std::list<int64_t>::iterator>> map_;
  std::vector<uint8_t> buffer_;
};

class StreamingSource : public ShardedReader::Source {
 public:
  StreamingSource(std::string path, const ImageDataset& ds, Planner planner, const ReaderOptions& o,
                  int64_t batch_per_rank)
      : path_(std::move(path)), info_(ds.info()), planner_(std::move(planner)), depth_(std::max(1, o.prefetch)) {
    labels_ = ds.labels();
    const int64_t chunk_bytes = info_.chunk_images * info_.image_bytes();
    capacity_ = std::max<int64_t>(o.cache_bytes / std::max<int64_t>(1, chunk_bytes), 2 * batch_per_rank + 2);
  }
  ~StreamingSource() override { stop(); }

  std::pair<Batch, Cursor> next(const Cursor& c) override {
    if (!thread_.joinable() || expected_ != c) restart(c);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    Item item = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    lock.unlock();
    if (item.error) {
      stop();
      std::rethrow_exception(item.error);
    }
    expected_ = planner_.normalized(item.after);
    return {std::move(item.batch), item.after};
  }
  bool in_memory() const override { return false; }

 private:
  struct Item {
    Batch batch;
    Cursor after;
    std::exception_ptr error;
  };

  void restart(const Cursor& c) {
    stop();
    queue_.clear();
    stop_ = false;
    expected_ = c;
    thread_ = std::thread([this, c] { produce(c); });
  }
  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void produce(Cursor c) {
    try {
      ImageDataset ds = ImageDataset::open(path_);  // this thread's own handle
      ChunkCache cache(ds, capacity_);
      Planner planner = planner_;
      while (true) {
        c = planner.normalized(c);
        const Plan p = planner.plan(c);
        auto chunks = cache.fetch(p.indices);
        std::vector<const uint8_t*> samples(p.indices.size());
        for (size_t i = 0; i < samples.size(); ++i) {
          const int64_t id = p.indices[i] / info_.chunk_images;
          samples[i] = chunks.at(id)->data() + (p.indices[i] - id * info_.chunk_images) * info_.image_bytes();
        }
        at::Tensor x = detail::to_float_batch(samples, p.flips, info_.height, info_.width, info_.channels);
        if (!push(Item{detail::assemble(p, std::move(x), labels_), p.after, nullptr})) return;
        c = p.after;
      }
    } catch (...) {
      push(Item{Batch{}, Cursor{}, std::current_exception()});
    }
  }
  bool push(Item item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_ || int(queue_.size()) < depth_; });
    if (stop_) return false;
    queue_.push_back(std::move(item));
    cv_.notify_all();
    return true;
  }

  std::string path_;
  DatasetInfo info_;
  Planner planner_;
  int depth_;
  int64_t capacity_ = 0;
  at::Tensor labels_;
  Cursor expected_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
};

int64_t default_memory_limit() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? int64_t(pages) * page / 8 : int64_t(1) << 30;
}

}  // namespace

ShardedReader::ShardedReader(const std::string& path, const ReaderOptions& o) : path_(path), options_(o) {
  const std::string where = path + ": reader";
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw std::invalid_argument(where + ": rank " + std::to_string(o.rank) + " of world size " +
                                std::to_string(o.world_size) + " (expected 0 <= rank < world_size)");
  if ((o.global_batch > 0) == (o.batch_per_rank > 0))
    throw std::invalid_argument(where + ": give exactly one of global_batch and batch_per_rank (got " +
                                std::to_string(o.global_batch) + " and " + std::to_string(o.batch_per_rank) + ")");
  global_batch_ = o.global_batch > 0 ? o.global_batch : o.batch_per_rank * o.world_size;
  if (global_batch_ % o.world_size != 0)
    throw std::invalid_argument(where + ": global batch " + std::to_string(global_batch_) +
                                " is not divisible by world size " + std::to_string(o.world_size) +
                                " (choose a multiple of the number of ranks)");
  ImageDataset ds = ImageDataset::open(path);
  const DatasetInfo& in = ds.info();
  if (o.drop_last && global_batch_ > in.count)
    throw std::invalid_argument(where + ": global batch " + std::to_string(global_batch_) + " exceeds the " +
                                std::to_string(in.count) + " samples (with drop_last every epoch would be empty)");
  flip_ = o.random_flip.value_or(in.random_flip);
  Planner planner(in.count, global_batch_, o.rank, o.world_size, o.seed, o.drop_last, flip_);
  bool memory = o.mode == ReaderMode::kInMemory;
  if (o.mode == ReaderMode::kAuto) {
    const int64_t limit = o.memory_limit_bytes > 0 ? o.memory_limit_bytes : default_memory_limit();
    memory = in.count * in.image_bytes() <= limit;
  }
  if (memory) source_ = std::make_unique<InMemorySource>(ds, planner);
  else source_ = std::make_unique<StreamingSource>(path, ds, planner, o, batch_per_rank());
  size_ = in.count;
}

ShardedReader::~ShardedReader() = default;

bool ShardedReader::epoch_done(const Cursor& c) const {
  return options_.drop_last ? size_ - c.position < global_batch_ : c.position >= size_;
}

Batch ShardedReader::next() {
  if (epoch_done(cursor_)) cursor_ = Cursor{cursor_.epoch + 1, 0};
  auto [batch, after] = source_->next(cursor_);
  cursor_ = after;
  return std::move(batch);
}

std::optional<Batch> ShardedReader::next_in_epoch() {
  if (epoch_done(cursor_)) {
    cursor_ = Cursor{cursor_.epoch + 1, 0};
    return std::nullopt;
  }
  return next();
}

void ShardedReader::set_cursor(const Cursor& c) {
  if (c.epoch < 0 || c.position < 0 || c.position > size_)
    throw std::invalid_argument(path_ + ": reader cursor (epoch " + std::to_string(c.epoch) + ", position " +
                                std::to_string(c.position) + ") out of range (position in [0, " +
                                std::to_string(size_) + "])");
  cursor_ = c;
}

int64_t ShardedReader::size() const { return size_; }
int64_t ShardedReader::steps_per_epoch() const {
  return options_.drop_last ? size_ / global_batch_ : (size_ + global_batch_ - 1) / global_batch_;
}
bool ShardedReader::in_memory() const { return source_->in_memory(); }

}  // namespace ddpm::data
