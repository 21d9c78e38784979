// ddpm::data converters: IDX (small files made here, and the real Fashion-MNIST checked against
// its IDX bytes read independently), .npy/.npz and PNG/JPEG folders against
// tests/reference/data_reference.py, and every bad input (clear error, nothing left behind).
#include <ATen/ATen.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "ddpm/data/convert.h"
#include "ddpm/data/dataset.h"
#include "ddpm/data/h5_tensor.h"
#include "ddpm/data/images.h"
#include "testing/testing.h"

namespace {
namespace fs = std::filesystem;
using namespace ddpm::data;
using ddpm::testing::tensors_near;

std::string inputs() { return ddpm::testing::binary_dir() + "/golden/data_inputs"; }
at::Tensor golden(const char* name) { return ddpm::testing::golden("data").read(name); }
at::Tensor h5(const std::string& path, const char* name) { return H5TensorFile::open_read(path).read(name); }

std::string idx_bytes(const at::Tensor& t, uint8_t type = 0x08) {
  std::string s = {0, 0, char(type), char(t.dim())};
  for (int64_t d : t.sizes())
    for (int sh = 24; sh >= 0; sh -= 8) s += char((d >> sh) & 0xff);
  const at::Tensor c = t.contiguous();
  return s + std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
}

void write_file(const std::string& path, const std::string& bytes, bool gz = false) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), unsigned(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The whole decompressed content of a gzip file (an independent reader for the real data check).
std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  std::string out;
  char buf[1 << 16];
  for (int n; (n = gzread(f, buf, sizeof buf)) > 0;) out.append(buf, n);
  gzclose(f);
  return out;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// convert() must throw a message holding every `parts`, and leave `dir` empty.
void expect_failure(const std::string& source, std::vector<std::string> parts, ConvertOptions o = {}) {
  const std::string dir = ddpm::testing::temp_dir("data_convert_fail");
  try {
    convert(source, dir + "/out.h5", o);
    ADD_FAILURE() << source << ": converted without error";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    std::printf("[error] %s\n", msg.c_str());
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
  EXPECT_TRUE(files_in(dir).empty()) << "left behind: " << (files_in(dir).empty() ? "" : files_in(dir)[0]);
}

TEST(DataConvertIdx, SmallPlainAndGzippedWithSiblingLabels) {
  const std::string dir = ddpm::testing::temp_dir("data_idx_small");
  const at::Tensor images = at::randint(0, 256, {5, 4, 3}, at::kByte);
  const at::Tensor labels = at::tensor({2, 0, 1, 2, 6}, at::kByte);
  for (bool gz : {false, true}) {
    const std::string ext = gz ? ".gz" : "";
    write_file(dir + "/x-images-idx3-ubyte" + ext, idx_bytes(images), gz);
    write_file(dir + "/x-labels-idx1-ubyte" + ext, idx_bytes(labels), gz);
    const std::string out = dir + "/out" + ext + ".h5";
    const ConvertSummary s = convert(dir + "/x-images-idx3-ubyte" + ext, out, {});
    EXPECT_EQ(s.source_kind, "idx");
    EXPECT_TRUE(tensors_near(h5(out, "images"), images.unsqueeze(3), 0, 0, "idx images" + ext));
    EXPECT_TRUE(tensors_near(h5(out, "labels"), labels.to(at::kLong), 0, 0, "idx labels" + ext));
    const DatasetInfo info = ImageDataset::open(out).info();
    EXPECT_EQ(info.count, 5);
    EXPECT_EQ(info.height, 4);
    EXPECT_EQ(info.width, 3);
    EXPECT_EQ(info.channels, 1);
    EXPECT_EQ(info.num_classes, 7);
    EXPECT_TRUE(info.class_names.empty());
    EXPECT_FALSE(info.random_flip);
    EXPECT_EQ(info.source.rfind("idx:", 0), 0u);
    EXPECT_EQ(s.class_counts, (std::vector<int64_t>{1, 1, 2, 0, 0, 0, 1}));
  }
}

TEST(DataConvertIdx, RealFashionMnistMatchesIdxBytes) {
  const std::string root = "/usr/share/datasets/fashion-mnist/";
  if (!fs::exists(root + "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = ddpm::testing::temp_dir("data_fashion");
  for (const std::string split : {"t10k", "train"}) {
    const std::string out = dir + "/" + split + ".h5";
    const ConvertSummary s = convert(root + split + "-images-idx3-ubyte.gz", out, {});
    const std::string raw = gunzip(root + split + "-images-idx3-ubyte.gz");
    const std::string rawl = gunzip(root + split + "-labels-idx1-ubyte.gz");
    const int64_t n = split == "train" ? 60000 : 10000;
    ASSERT_EQ(int64_t(raw.size()), 16 + n * 784);
    const ImageDataset ds = ImageDataset::open(out);
    ASSERT_EQ(ds.info().count, n);
    const at::Tensor im = ds.read_all_images();  // (N, 28, 28, 1)
    EXPECT_EQ(std::memcmp(im.data_ptr<uint8_t>(), raw.data() + 16, 784), 0) << "first image";
    EXPECT_EQ(std::memcmp(im.data_ptr<uint8_t>() + (n - 1) * 784, raw.data() + 16 + (n - 1) * 784, 784), 0) << "last";
    int64_t want = 0;
    for (size_t i = 16; i < raw.size(); ++i) want += uint8_t(raw[i]) * int64_t(i % 251 + 1);
    const at::Tensor weights = (at::arange(16, int64_t(raw.size()), at::kLong) % 251) + 1;
    EXPECT_EQ((im.flatten().to(at::kLong) * weights).sum().item<int64_t>(), want) << "weighted checksum";
    const at::Tensor lab = ds.labels();
    for (int64_t i : {int64_t(0), n / 2, n - 1}) EXPECT_EQ(lab[i].item<int64_t>(), uint8_t(rawl[8 + i])) << i;
    EXPECT_EQ(lab.sum().item<int64_t>(), n * 9 / 2);  // 10 balanced classes 0..9
    EXPECT_EQ(ds.info().class_names, fashion_mnist_class_names());
    EXPECT_EQ(ds.info().num_classes, 10);
    EXPECT_EQ(s.class_counts, std::vector<int64_t>(10, n / 10));
  }
}

TEST(DataConvertNumpy, NhwcNchwGrayAndNpz) {
  const std::string dir = ddpm::testing::temp_dir("data_numpy");
  const at::Tensor images = golden("npy_images"), labels = golden("npy_labels");
  struct Case { std::string file, labels; at::Tensor want; bool has_labels; };
  const std::vector<Case> cases = {
      {"images.npy", "labels.npy", images, true},
      {"images.npy", "labels_u8.npy", images, true},
      {"images_nchw.npy", "", images, false},
      {"gray.npy", "", images.slice(3, 0, 1), false},
      {"samples.npz", "", images, true},
      {"samples_compressed.npz", "", images, true}};
  for (const Case& c : cases) {
    ConvertOptions o;
    if (!c.labels.empty()) o.labels_path = inputs() + "/" + c.labels;
    const std::string out = dir + "/" + c.file + ".h5";
    convert(inputs() + "/" + c.file, out, o);
    EXPECT_TRUE(tensors_near(h5(out, "images"), c.want, 0, 0, c.file + " images"));
    const ImageDataset ds = ImageDataset::open(out);
    EXPECT_EQ(ds.info().has_labels, c.has_labels) << c.file;
    if (c.has_labels) {
      EXPECT_TRUE(tensors_near(ds.labels(), labels, 0, 0, c.file + " labels"));
      EXPECT_EQ(ds.info().num_classes, 4);
    }
    EXPECT_EQ(ds.info().random_flip, c.want.size(3) == 3) << c.file;
  }
}

TEST(DataConvertFolder, ClassSubfoldersResizedLikeImprovedDiffusion) {
  const std::string out = ddpm::testing::temp_dir("data_folder") + "/f.h5";
  ConvertOptions o;
  o.resolution = 16;
  const ConvertSummary s = convert(inputs() + "/folder_classes", out, o);
  EXPECT_EQ(s.source_kind, "folder");
  const ImageDataset ds = ImageDataset::open(out);
  EXPECT_EQ(ds.info().class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_TRUE(tensors_near(ds.labels(), golden("folder_labels"), 0, 0, "folder labels"));
  // Our box + bicubic against Pillow's (fixed-point weights there): within a grey level.
  const at::Tensor got = ds.read_all_images().to(at::kDouble), want = golden("folder_resized").to(at::kDouble);
  EXPECT_TRUE(tensors_near(got, want, 0, 1, "folder resize vs Pillow"));
  const double mean = (got - want).abs().mean().item<double>();
  std::printf("[maxdiff] folder resize mean abs %.3f grey levels\n", mean);
  EXPECT_LT(mean, 0.05);
  EXPECT_TRUE(ds.info().random_flip);
}

TEST(DataConvertFolder, PrefixLabelsNativeSize) {
  const std::string out = ddpm::testing::temp_dir("data_prefix") + "/p.h5";
  convert(inputs() + "/folder_prefix", out, {});
  const ImageDataset ds = ImageDataset::open(out);
  EXPECT_EQ(ds.info().class_names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(tensors_near(ds.labels(), golden("prefix_labels"), 0, 0, "prefix labels"));
  // PNGs exactly; the JPEG (index 2, b_2.jpg) within one grey level of Pillow's libjpeg.
  const at::Tensor got = ds.read_all_images(), want = golden("prefix_images");
  EXPECT_TRUE(tensors_near(got.index_select(0, at::tensor({0, 1, 3})), want.index_select(0, at::tensor({0, 1, 3})), 0, 0, "png"));
  EXPECT_TRUE(tensors_near(got[2], want[2], 0, 1, "jpeg"));
}

TEST(DataConvertErrors, BadInputsGiveClearErrorsAndLeaveNothing) {
  const std::string dir = ddpm::testing::temp_dir("data_bad_inputs");
  const at::Tensor images = at::randint(0, 256, {6, 4, 4}, at::kByte);
  const std::string good = idx_bytes(images);
  write_file(dir + "/type.idx", idx_bytes(images.to(at::kByte), 0x0D));
  write_file(dir + "/magic.gz", "hello, not idx", true);
  write_file(dir + "/rank.idx", std::string({0, 0, 8, 9}) + good.substr(4));
  write_file(dir + "/trunc.idx", good.substr(0, good.size() - 5));
  write_file(dir + "/long.idx", good + "xx");
  write_file(dir + "/trunc.gz", good, true);
  const std::string gz = read_bytes(dir + "/trunc.gz");
  write_file(dir + "/trunc.gz", gz.substr(0, gz.size() / 2));
  write_file(dir + "/good.idx", good);
  write_file(dir + "/labels5.idx", idx_bytes(at::zeros({5}, at::kByte)));
  write_file(dir + "/empty", "");
  fs::create_directories(dir + "/corrupt");
  const std::string png = read_bytes(inputs() + "/folder_bad/a.png");
  write_file(dir + "/corrupt/a_0.png", png);
  write_file(dir + "/corrupt/b_1.png", png.substr(0, png.size() / 2));  // header fine, data cut
  ConvertOptions labels5;
  labels5.labels_path = dir + "/labels5.idx";
  ConvertOptions labels_short;
  labels_short.labels_path = inputs() + "/labels_short.npy";
  ConvertOptions bad_names;
  bad_names.labels_path = inputs() + "/labels.npy";
  bad_names.class_names = {"a", "b"};

  expect_failure(dir + "/missing.idx", {"missing.idx", "no such file"});
  expect_failure(dir + "/empty", {"empty file"});
  expect_failure(dir + "/type.idx", {"type.idx", "element type 0x0d", "expected 0x08"});
  expect_failure(dir + "/magic.gz", {"magic.gz", "not an IDX file", "68 65 6c 6c"});
  expect_failure(dir + "/rank.idx", {"not an IDX file", "00 00 08 09"});
  expect_failure(dir + "/trunc.idx", {"trunc.idx", "truncated IDX data", "91 of 96 bytes"});
  expect_failure(dir + "/long.idx", {"longer than its header"});
  expect_failure(dir + "/trunc.gz", {"trunc.gz"});
  expect_failure(dir + "/good.idx", {"labels5.idx", "5 labels for 6 images"}, labels5);
  expect_failure(inputs() + "/images.npy", {"labels_short.npy", "6 labels for 7 images"}, labels_short);
  expect_failure(inputs() + "/images.npy", {"labels go up to 3", "2 class names"}, bad_names);
  expect_failure(inputs() + "/float.npy", {"float.npy", "dtype Float", "expected uint8"});
  expect_failure(inputs() + "/rank2.npy", {"rank2.npy", "rank 2", "(7, 90)"});
  expect_failure(inputs() + "/fortran.npy", {"Fortran order"});
  expect_failure(inputs() + "/truncated.npy", {"truncated npy data"});
  expect_failure(inputs() + "/folder_empty", {"folder_empty", "empty folder"});
  expect_failure(inputs() + "/folder_bad", {"notes.txt", "unknown image format"});
  expect_failure(inputs() + "/folder_classes", {"differ in size", "--resolution"});
  expect_failure(dir + "/corrupt", {"b_1.png", "cannot decode PNG"});
  expect_failure(dir + "/magic.gz", {"magic.gz"}, labels5);
  try {
    convert(dir + "/good.idx", dir + "/no/such/folder/out.h5", {});
    ADD_FAILURE() << "wrote into a missing folder";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create"), std::string::npos) << e.what();
  }
}

TEST(DataImages, PngGridRoundTrip) {
  const std::string dir = ddpm::testing::temp_dir("data_png");
  const at::Tensor u8 = at::randint(0, 256, {5, 6, 7, 3}, at::kByte);
  write_png_grid(dir + "/u8.png", u8, 2);
  const at::Tensor grid = read_image(dir + "/u8.png", 3);
  EXPECT_EQ(grid.sizes(), (at::IntArrayRef{3 * 8 + 2, 2 * 9 + 2, 3}));
  EXPECT_TRUE(tensors_near(grid, make_grid(u8, 2), 0, 0, "png grid round trip"));
  EXPECT_TRUE(tensors_near(grid.slice(0, 2 + 8, 2 + 8 + 6).slice(1, 2 + 9, 2 + 9 + 7), u8[3], 0, 0, "cell 3"));
  // float (N, C, H, W) in [-1, 1] -> round((x + 1) * 127.5)
  const at::Tensor f = u8.permute({0, 3, 1, 2}).to(at::kFloat) / 127.5 - 1;
  EXPECT_TRUE(tensors_near(make_grid(f, 2), make_grid(u8, 2), 0, 0, "float grid"));
  const at::Tensor gray = at::randint(0, 256, {3, 5, 5, 1}, at::kByte);
  write_png_grid(dir + "/gray.png", gray, 8);
  EXPECT_TRUE(tensors_near(read_image(dir + "/gray.png", 1), make_grid(gray, 8), 0, 0, "gray grid"));
  EXPECT_THROW(write_png_grid(dir + "/bad.png", at::zeros({2, 4, 4, 2}, at::kByte), 2), c10::Error);
}

}  // namespace
