// ddpm::data reader: schema validation errors, the epoch permutation and flips against
// tests/reference/data_reference.py, shard disjointness and coverage for world sizes 1..8, the
// same global batches for every world size, cursor save/restore (also onto another world size),
// identical batches from the in-memory and streaming sources, and the read-ahead BatchPrefetcher.
#include <ATen/ATen.h>
#include <H5Cpp.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "ddpm/data/dataset.h"
#include "ddpm/data/h5_tensor.h"
#include "ddpm/data/prefetch.h"
#include "ddpm/data/reader.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::data;
using ddpm::testing::tensors_near;

// A dataset whose pixels differ from sample to sample: uint8 (N, H, W, C) and labels i % 10.
at::Tensor make_dataset(const std::string& path, int64_t n, int64_t h, int64_t w, int64_t c,
                        int64_t chunk_bytes = 1 << 16, bool labels = true) {
  const at::Tensor images = at::randint(0, 256, {n, h, w, c}, at::kByte);
  DatasetInfo info;
  info.count = n, info.height = h, info.width = w, info.channels = c, info.num_classes = 10;
  info.source = "test";
  DatasetWriter wr(path, info, WriterOptions{0, chunk_bytes});
  wr.write_images(0, images);
  if (labels) wr.write_labels(at::arange(n, at::kLong) % 10);
  wr.finish();
  return images;
}

// Batch images computed independently: uint8 -> CHW float / 127.5 - 1, flipped along W.
at::Tensor expected_images(const at::Tensor& all, const at::Tensor& idx, uint64_t seed, int64_t epoch, bool flip) {
  at::Tensor x = all.index_select(0, idx).permute({0, 3, 1, 2}).to(at::kFloat).div(127.5).sub(1);
  for (int64_t i = 0; i < idx.size(0); ++i)
    if (flip && flip_decision(seed, epoch, idx[i].item<int64_t>())) x[i] = x[i].flip({2});
  return x;
}

std::string expect_open_error(const std::string& path, std::vector<std::string> parts) {
  try {
    ImageDataset::open(path);
    ADD_FAILURE() << path << " opened";
    return "";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    std::printf("[error] %s\n", msg.c_str());
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return msg;
  }
}

TEST(DataSchema, OpenValidatesAndReportsWhatWasFound) {
  const std::string dir = ddpm::testing::temp_dir("data_schema");
  expect_open_error(dir + "/missing.h5", {"missing.h5", "no such file"});
  { std::ofstream(dir + "/text.h5") << "not hdf5"; }
  expect_open_error(dir + "/text.h5", {"text.h5", "cannot open as HDF5"});
  H5TensorFile::create(dir + "/none.h5").write("pictures", at::zeros({2}, at::kByte));
  expect_open_error(dir + "/none.h5", {"none.h5", "'/images' not found", "uint8 (N, H, W, C)"});
  H5TensorFile::create(dir + "/float.h5").write("images", at::zeros({2, 4, 4, 3}, at::kFloat));
  expect_open_error(dir + "/float.h5", {"float.h5", "'/images' is float32 (2, 4, 4, 3)", "expected uint8"});
  H5TensorFile::create(dir + "/rank3.h5").write("images", at::zeros({2, 4, 4}, at::kByte));
  expect_open_error(dir + "/rank3.h5", {"'/images' is uint8 (2, 4, 4)"});
  H5TensorFile::create(dir + "/chan.h5").write("images", at::zeros({2, 4, 4, 2}, at::kByte));
  expect_open_error(dir + "/chan.h5", {"shape (2, 4, 4, 2)", "C = 1 or 3"});
  H5TensorFile::create(dir + "/attrs.h5").write("images", at::zeros({2, 4, 4, 3}, at::kByte));
  expect_open_error(dir + "/attrs.h5", {"attribute 'schema_version' missing"});
  make_dataset(dir + "/labels.h5", 5, 2, 2, 1, 1 << 16, false);
  {
    H5::H5File f(dir + "/labels.h5", H5F_ACC_RDWR);
    hsize_t n = 4;
    f.createDataSet("labels", H5::PredType::STD_I32LE, H5::DataSpace(1, &n));
  }
  expect_open_error(dir + "/labels.h5", {"'/labels' is int32 (4)", "expected int64 (5)"});

  DatasetInfo info;
  info.count = 3, info.height = 2, info.width = 5, info.channels = 3, info.num_classes = 2;
  info.class_names = {"cat", "dog"}, info.source = "folder:/x", info.random_flip = true;
  DatasetWriter wr(dir + "/ok.h5", info);
  EXPECT_TRUE(std::filesystem::exists(wr.temp_path()));
  EXPECT_FALSE(std::filesystem::exists(dir + "/ok.h5"));
  wr.write_images(0, at::ones({3, 2, 5, 3}, at::kByte));
  wr.write_labels(at::tensor({1, 0, 1}));
  wr.finish();
  const DatasetInfo got = ImageDataset::open(dir + "/ok.h5").info();
  EXPECT_EQ(got.class_names, info.class_names);
  EXPECT_EQ(got.source, "folder:/x");
  EXPECT_EQ(got.num_classes, 2);
  EXPECT_TRUE(got.random_flip && got.has_labels);
  EXPECT_EQ(got.count * got.height * got.width * got.channels, 90);
  EXPECT_FALSE(std::filesystem::exists(wr.temp_path()));
  {
    DatasetWriter abandoned(dir + "/abandoned.h5", info);
    abandoned.write_images(0, at::ones({3, 2, 5, 3}, at::kByte));
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 8) << "abandoned writer left a file";
}

TEST(DataSchema, ReadsFilesWrittenByH5py) {
  for (const char* name : {"py_vlen.h5", "py_fixed.h5"}) {
    const ImageDataset ds = ImageDataset::open(ddpm::testing::binary_dir() + "/golden/data_inputs/" + name);
    EXPECT_EQ(ds.info().class_names, (std::vector<std::string>{"T-shirt/top", "b", "c", "d"})) << name;
    EXPECT_EQ(ds.info().source, "python") << name;
    EXPECT_EQ(ds.info().num_classes, 4);
    EXPECT_TRUE(ds.info().has_labels);
    EXPECT_TRUE(ds.info().random_flip);  // no attribute: colour images flip by default
    EXPECT_TRUE(ds.read_all_images().equal(ddpm::testing::golden("data").read("npy_images").slice(0, 0, 4))) << name;
  }
}

TEST(DataPermutation, MatchesReferenceAndIsAPermutation) {
  auto g = ddpm::testing::golden("data");
  auto as_tensor = [](const std::vector<int64_t>& v) { return at::tensor(at::ArrayRef<int64_t>(v)); };
  EXPECT_TRUE(tensors_near(as_tensor(epoch_permutation(1000, 0, 0)), g.read("perm_a"), 0, 0, "perm seed 0 epoch 0"));
  EXPECT_TRUE(tensors_near(as_tensor(epoch_permutation(1000, 12345, 7)), g.read("perm_b"), 0, 0, "perm 12345/7"));
  EXPECT_TRUE(tensors_near(as_tensor(epoch_permutation(37, (1ULL << 63) + 5, 3)), g.read("perm_c"), 0, 0, "perm big seed"));
  std::vector<int64_t> flips;
  for (int64_t i = 0; i < 1000; ++i) flips.push_back(flip_decision(12345, 7, i));
  EXPECT_TRUE(tensors_near(as_tensor(flips), g.read("flips_b"), 0, 0, "flips"));
  const int64_t ones = std::count(flips.begin(), flips.end(), 1);
  EXPECT_GT(ones, 430);
  EXPECT_LT(ones, 570);
  EXPECT_NE(epoch_permutation(100, 1, 0), epoch_permutation(100, 1, 1));
}

// Every world size 1..8 with G = 840: rank batches are disjoint, concatenate to the global slice
// of the epoch permutation, cover the epoch, and hold the same images for every world size.
TEST(DataSharding, DisjointCoverageAndSameGlobalBatchesForWorldSizes1To8) {
  const std::string path = ddpm::testing::temp_dir("data_shard") + "/d.h5";
  const int64_t n = 3000, g = 840;
  const at::Tensor all = make_dataset(path, n, 3, 2, 3, 200);
  for (bool drop_last : {true, false}) {
    std::vector<at::Tensor> reference;  // the global batches of world size 1, epochs 0 and 1
    for (int w = 1; w <= 8; ++w) {
      std::vector<std::vector<Batch>> per_rank(w);
      for (int r = 0; r < w; ++r) {
        ReaderOptions o;
        o.rank = r, o.world_size = w, o.global_batch = g, o.seed = 99, o.random_flip = true, o.drop_last = drop_last;
        ShardedReader reader(path, o);
        EXPECT_EQ(reader.batch_per_rank(), g / w);
        for (int e = 0; e < 2; ++e) {
          while (auto b = reader.next_in_epoch()) per_rank[r].push_back(std::move(*b));
        }
        EXPECT_EQ(reader.cursor(), (Cursor{2, 0}));
      }
      const size_t steps = per_rank[0].size();
      ASSERT_EQ(steps, drop_last ? 2 * 3u : 2 * 4u) << "w=" << w;
      for (int e = 0; e < 2; ++e) {
        const std::vector<int64_t> perm = epoch_permutation(n, 99, e);
        std::set<int64_t> seen;
        const size_t per_epoch = steps / 2;
        for (size_t s = e * per_epoch; s < (e + 1) * per_epoch; ++s) {
          std::vector<at::Tensor> idx, im;
          for (int r = 0; r < w; ++r) {
            ASSERT_EQ(per_rank[r].size(), steps);
            const Batch& b = per_rank[r][s];
            EXPECT_EQ(b.cursor.epoch, e);
            if (drop_last || s + 1 < (e + 1) * per_epoch) {
              EXPECT_EQ(b.indices.size(0), g / w);
            }
            EXPECT_TRUE(b.labels.equal(b.indices % 10));
            for (int64_t i = 0; i < b.indices.size(0); ++i) EXPECT_TRUE(seen.insert(b.indices[i].item<int64_t>()).second);
            idx.push_back(b.indices), im.push_back(b.images);
          }
          const at::Tensor gi = at::cat(idx), gim = at::cat(im);
          const int64_t p0 = int64_t(s - e * per_epoch) * g;
          const std::vector<int64_t> want(perm.begin() + p0, perm.begin() + std::min(n, p0 + g));
          ASSERT_TRUE(gi.equal(at::tensor(at::ArrayRef<int64_t>(want)))) << "w=" << w << " step " << s;
          if (w == 1) reference.push_back(gim);
          else ASSERT_TRUE(gim.equal(reference[s])) << "global batch differs, w=" << w << " step " << s;
          if (w == 3 && s == 0) {
            EXPECT_TRUE(tensors_near(gim, expected_images(all, gi, 99, e, true), 0, 0, "batch values"));
          }
        }
        EXPECT_EQ(int64_t(seen.size()), drop_last ? 3 * g : n) << "coverage w=" << w;
      }
    }
  }
}

// Saving the cursor mid-epoch and restoring it, on the same or another world size, continues
// with exactly the batches the uninterrupted run yields.
TEST(DataSharding, CursorSaveRestoreMidEpochAndOnAnotherWorldSize) {
  const std::string path = ddpm::testing::temp_dir("data_cursor") + "/d.h5";
  make_dataset(path, 250, 4, 4, 1, 100);
  auto run = [&](int w, Cursor start, int steps) {  // global batches from `start`
    std::vector<at::Tensor> out;
    std::vector<std::unique_ptr<ShardedReader>> readers;
    for (int r = 0; r < w; ++r) {
      ReaderOptions o;
      o.rank = r, o.world_size = w, o.global_batch = 24, o.seed = 5, o.random_flip = true;
      readers.push_back(std::make_unique<ShardedReader>(path, o));
      readers.back()->set_cursor(start);
    }
    for (int s = 0; s < steps; ++s) {
      std::vector<at::Tensor> im;
      for (auto& rd : readers) im.push_back(rd->next().images);
      out.push_back(at::cat(im));
    }
    return std::make_pair(out, readers[0]->cursor());
  };
  const auto [full, end] = run(2, Cursor{}, 25);  // 10 steps per epoch: crosses two epoch ends
  EXPECT_EQ(end, (Cursor{2, 5 * 24}));
  const Cursor mid{0, 7 * 24};
  for (int w : {1, 2, 3, 4, 6, 8}) {
    const auto [resumed, _] = run(w, mid, 18);
    for (int s = 0; s < 18; ++s) ASSERT_TRUE(resumed[s].equal(full[7 + s])) << "w=" << w << " step " << s;
  }
  // The cursor a reader reports after k batches resumes at batch k.
  ReaderOptions o;
  o.global_batch = 24, o.seed = 5;
  ShardedReader a(path, o), b(path, o);
  for (int s = 0; s < 13; ++s) a.next();
  const Cursor saved = a.cursor();
  EXPECT_EQ(saved, (Cursor{1, 3 * 24}));
  b.set_cursor(saved);
  for (int s = 0; s < 5; ++s) ASSERT_TRUE(a.next().indices.equal(b.next().indices));
  EXPECT_THROW(b.set_cursor(Cursor{0, 251}), std::invalid_argument);
}

TEST(DataReader, InMemoryAndStreamingGiveIdenticalBatches) {
  const std::string path = ddpm::testing::temp_dir("data_stream") + "/d.h5";
  make_dataset(path, 1000, 5, 4, 3, 7 * 60);  // 7 images per chunk
  EXPECT_EQ(ImageDataset::open(path).info().chunk_images, 7);
  for (bool drop_last : {true, false}) {
    ReaderOptions o;
    o.rank = 1, o.world_size = 3, o.global_batch = 96, o.seed = 3, o.random_flip = true, o.drop_last = drop_last;
    o.mode = ReaderMode::kInMemory;
    ShardedReader mem(path, o);
    o.mode = ReaderMode::kStreaming;
    o.cache_bytes = 4000;  // a few chunks: forces evictions and re-reads
    o.prefetch = 2;
    ShardedReader str(path, o);
    EXPECT_TRUE(mem.in_memory());
    EXPECT_FALSE(str.in_memory());
    for (int s = 0; s < 30; ++s) {
      if (s == 17) {  // a restore in the middle restarts the prefetcher
        mem.set_cursor(Cursor{4, 96});
        str.set_cursor(Cursor{4, 96});
      }
      const Batch a = mem.next(), b = str.next();
      ASSERT_EQ(a.cursor, b.cursor);
      ASSERT_TRUE(a.indices.equal(b.indices)) << "step " << s;
      ASSERT_TRUE(a.labels.equal(b.labels));
      ASSERT_TRUE(a.images.equal(b.images)) << "step " << s;
      ASSERT_EQ(mem.cursor(), str.cursor());
    }
  }
}

// The read-ahead changes nothing: the same batches in the same order, and a cursor that names
// the next unseen batch (a reader restored from it continues exactly), also across epoch ends
// and after a restore in the middle; the read-ahead never runs past what set_cursor discards.
TEST(DataReader, PrefetcherGivesTheReadersBatchesAndCursor) {
  const std::string path = ddpm::testing::temp_dir("data_prefetch") + "/d.h5";
  make_dataset(path, 200, 4, 4, 1);
  for (ReaderMode mode : {ReaderMode::kInMemory, ReaderMode::kStreaming}) {
    ReaderOptions o;
    o.rank = 1, o.world_size = 2, o.global_batch = 48, o.seed = 5, o.random_flip = true, o.mode = mode;
    ShardedReader plain(path, o), ahead(path, o);
    BatchPrefetcher pre(ahead, /*pin_for=*/std::nullopt);
    for (int s = 0; s < 12; ++s) {  // 4 batches an epoch: three epoch ends
      if (s == 7) {
        plain.set_cursor(Cursor{1, 48});
        pre.set_cursor(Cursor{1, 48});
      }
      const Batch a = plain.next(), b = pre.next();
      ASSERT_EQ(a.cursor, b.cursor) << "step " << s;
      ASSERT_TRUE(a.indices.equal(b.indices)) << "step " << s;
      ASSERT_TRUE(a.images.equal(b.images)) << "step " << s;
      ASSERT_EQ(plain.cursor(), pre.cursor()) << "step " << s;
      ShardedReader resumed(path, o);  // what a checkpoint taken now resumes to
      resumed.set_cursor(pre.cursor());
      const Batch c = resumed.next(), d = plain.next();
      ASSERT_TRUE(c.indices.equal(d.indices)) << "step " << s;
      plain.set_cursor(a.cursor);  // back: plain re-reads d at the next step
      plain.next();
    }
  }
}

TEST(DataReader, OptionsAutoModeAndErrors) {
  const std::string path = ddpm::testing::temp_dir("data_options") + "/d.h5";
  make_dataset(path, 50, 2, 2, 1, 1 << 16, false);
  ReaderOptions o;
  o.batch_per_rank = 4, o.world_size = 2, o.rank = 1;
  o.memory_limit_bytes = 50 * 4;
  ShardedReader fits(path, o);
  EXPECT_TRUE(fits.in_memory());
  EXPECT_EQ(fits.global_batch(), 8);
  EXPECT_EQ(fits.steps_per_epoch(), 6);
  EXPECT_FALSE(fits.random_flip());  // 1 channel: the dataset default is no flip
  const Batch b = fits.next();
  EXPECT_FALSE(b.labels.defined());
  EXPECT_EQ(b.images.sizes(), (at::IntArrayRef{4, 1, 2, 2}));
  EXPECT_GE(b.images.min().item<float>(), -1.f);
  EXPECT_LE(b.images.max().item<float>(), 1.f);
  o.memory_limit_bytes = 50 * 4 - 1;
  EXPECT_FALSE(ShardedReader(path, o).in_memory());
  auto throws = [&](ReaderOptions bad, const std::string& part) {
    try {
      ShardedReader r(path, bad);
      ADD_FAILURE() << "accepted: " << part;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  ReaderOptions bad = o;
  bad.rank = 2;
  throws(bad, "rank 2 of world size 2");
  bad = o, bad.global_batch = 8;
  throws(bad, "exactly one of");
  bad = o, bad.batch_per_rank = 0, bad.global_batch = 9;
  throws(bad, "not divisible by world size 2");
  bad = o, bad.batch_per_rank = 26;
  throws(bad, "exceeds the 50 samples");
  EXPECT_EQ(parse_reader_mode("streaming"), ReaderMode::kStreaming);
  EXPECT_THROW(parse_reader_mode("disk"), std::invalid_argument);
}

}  // namespace
