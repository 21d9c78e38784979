// ImageDataset (open + schema validation) and DatasetWriter (atomic creation); see dataset.h.
#include "ddpm/data/dataset.h"

#include <ATen/ATen.h>
#include <H5Cpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace ddpm::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint = "") {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

std::string dims_str(const std::vector<hsize_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

std::string type_str(const H5::DataType& t) {
  const H5T_class_t c = t.getClass();
  std::string sz = std::to_string(t.getSize() * 8);
  if (c == H5T_INTEGER) {
    const bool sgn = H5::IntType(t.getId()).getSign() != H5T_SGN_NONE;
    return (sgn ? "int" : "uint") + sz;
  }
  if (c == H5T_FLOAT) return "float" + sz;
  if (c == H5T_STRING) return "string";
  return "HDF5 class " + std::to_string(int(c));
}

bool is_int(const H5::DataType& t, size_t bytes, bool is_signed) {
  return t.getClass() == H5T_INTEGER && t.getSize() == bytes &&
         (H5::IntType(t.getId()).getSign() != H5T_SGN_NONE) == is_signed;
}

// The innermost message of HDF5's error stack ("truncated file: eof = 6852, ..."), or "". Called
// right after a failed call, before the next one clears the stack.
std::string hdf5_cause() {
  std::string out;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(data) = e->desc;
        return 0;
      },
      &out);
  return out;
}

bool has_attr(const H5::H5Object& o, const char* name) { return o.attrExists(name); }

int64_t read_int_attr(const H5::H5Object& o, const char* name, const std::string& path, bool required,
                      int64_t dflt = 0) {
  if (!has_attr(o, name)) {
    if (required) fail(path, std::string("attribute '") + name + "' missing on /images",
                       "convert the data again with ddpm_prepare");
    return dflt;
  }
  H5::Attribute a = o.openAttribute(name);
  if (a.getTypeClass() != H5T_INTEGER)
    fail(path, std::string("attribute '") + name + "' has type " + type_str(a.getDataType()), "expected an integer");
  int64_t v = 0;
  a.read(H5::PredType::NATIVE_INT64, &v);
  return v;
}

std::string read_str_attr(const H5::H5Object& o, const char* name) {
  if (!has_attr(o, name)) return "";
  H5::Attribute a = o.openAttribute(name);
  std::string s;
  a.read(a.getStrType(), s);
  return s;
}

std::vector<std::string> read_str_list_attr(const H5::H5Object& o, const char* name) {
  std::vector<std::string> out;
  if (!has_attr(o, name)) return out;
  H5::Attribute a = o.openAttribute(name);
  H5::DataSpace sp = a.getSpace();
  const hssize_t n = sp.getSimpleExtentNpoints();
  if (n <= 0) return out;
  const H5::StrType stored = a.getStrType();
  if (!stored.isVariableStr()) {  // fixed-length strings (numpy 'S' arrays from h5py)
    const size_t len = stored.getSize();
    std::vector<char> buf(n * len);
    a.read(stored, buf.data());
    for (hssize_t i = 0; i < n; ++i) {
      std::string s(buf.data() + i * len, len);
      out.push_back(s.substr(0, s.find('\0')));
    }
    return out;
  }
  H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
  std::vector<char*> raw(n, nullptr);
  a.read(st, raw.data());
  for (char* p : raw) out.emplace_back(p ? p : "");
  H5Dvlen_reclaim(st.getId(), sp.getId(), H5P_DEFAULT, raw.data());
  return out;
}

void write_int_attr(H5::H5Object& o, const char* name, int64_t v) {
  H5::Attribute a = o.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR));
  a.write(H5::PredType::NATIVE_INT64, &v);
}

void write_str_attr(H5::H5Object& o, const char* name, const std::string& v) {
  H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
  H5::Attribute a = o.createAttribute(name, st, H5::DataSpace(H5S_SCALAR));
  a.write(st, v);
}

void write_str_list_attr(H5::H5Object& o, const char* name, const std::vector<std::string>& v) {
  H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
  hsize_t n = v.size();
  H5::Attribute a = o.createAttribute(name, st, H5::DataSpace(1, &n));
  std::vector<const char*> raw;
  for (const auto& s : v) raw.push_back(s.c_str());
  a.write(st, raw.data());
}

}  // namespace

int64_t chunk_images_for(int64_t image_bytes, int64_t count, int64_t chunk_bytes) {
  const int64_t k = std::max<int64_t>(1, chunk_bytes / std::max<int64_t>(1, image_bytes));
  return std::max<int64_t>(1, std::min(k, count));
}

// ---- reading ------------------------------------------------------------------------------------

struct ImageDataset::Impl {
  H5::H5File file;
  H5::DataSet images;
  std::unique_ptr<H5::DataSet> labels;
};

ImageDataset::ImageDataset(DatasetInfo info, std::unique_ptr<Impl> impl)
    : info_(std::move(info)), impl_(std::move(impl)) {}
ImageDataset::~ImageDataset() = default;
ImageDataset::ImageDataset(ImageDataset&&) noexcept = default;
ImageDataset& ImageDataset::operator=(ImageDataset&&) noexcept = default;

ImageDataset ImageDataset::open(const std::string& path) {
  H5::Exception::dontPrint();
  if (!std::filesystem::exists(path)) fail(path, "no such file", "check the path, or create it with ddpm_prepare");
  auto impl = std::make_unique<Impl>();
  DatasetInfo info;
  info.path = path;
  try {
    impl->file = H5::H5File(path, H5F_ACC_RDONLY);
  } catch (const H5::Exception& e) {
    const std::string cause = hdf5_cause();
    if (cause.find("truncated") != std::string::npos)
      fail(path, "truncated HDF5 file (" + cause + ")", "an interrupted copy? copy it again or convert it again with ddpm_prepare");
    fail(path, "cannot open as HDF5: " + (cause.empty() ? e.getDetailMsg() : cause),
         "is it an HDF5 file written by ddpm_prepare?");
  }
  try {
    if (H5Lexists(impl->file.getId(), "images", H5P_DEFAULT) <= 0)
      fail(path, "dataset '/images' not found", "expected uint8 (N, H, W, C); convert the data with ddpm_prepare");
    // No HDF5 chunk cache: reads cover whole chunks (the streaming reader caches them itself) or
    // the whole dataset, and go straight into the caller's buffer.
    H5::DSetAccPropList access;
    access.setChunkCache(0, 0, 1.0);
    impl->images = impl->file.openDataSet("images", access);
    std::vector<hsize_t> d(impl->images.getSpace().getSimpleExtentNdims());
    impl->images.getSpace().getSimpleExtentDims(d.data());
    const H5::DataType t = impl->images.getDataType();
    if (d.size() != 4 || !is_int(t, 1, false))
      fail(path, "dataset '/images' is " + type_str(t) + " " + dims_str(d),
           "expected uint8 (N, H, W, C) with C = 1 or 3; convert the data with ddpm_prepare");
    if (!(d[3] == 1 || d[3] == 3) || d[1] == 0 || d[2] == 0)
      fail(path, "dataset '/images' has shape " + dims_str(d), "expected (N, H, W, C) with C = 1 or 3, H, W > 0");
    info.count = d[0], info.height = d[1], info.width = d[2], info.channels = d[3];
    const H5::DSetCreatPropList cp = impl->images.getCreatePlist();
    info.chunk_images = 1;
    if (cp.getLayout() == H5D_CHUNKED) {
      hsize_t cd[4];
      cp.getChunk(4, cd);
      info.chunk_images = cd[0];
    }
    const int64_t version = read_int_attr(impl->images, "schema_version", path, true);
    if (version != kSchemaVersion)
      fail(path, "schema_version " + std::to_string(version) + " on /images",
           "this build reads version " + std::to_string(kSchemaVersion) + "; convert the data again");
    info.schema_version = version;
    const std::pair<const char*, int64_t> dims[] = {{"count", info.count}, {"height", info.height},
                                                    {"width", info.width}, {"channels", info.channels}};
    for (const auto& [name, want] : dims) {
      const int64_t got = read_int_attr(impl->images, name, path, true);
      if (got != want)
        fail(path, std::string("attribute '") + name + "' is " + std::to_string(got) + " but /images has " +
                       std::to_string(want) + " " + dims_str(d), "the file is inconsistent; convert it again");
    }
    info.num_classes = read_int_attr(impl->images, "num_classes", path, false, 0);
    info.class_names = read_str_list_attr(impl->images, "class_names");
    info.source = read_str_attr(impl->images, "source");
    info.random_flip = read_int_attr(impl->images, "random_flip", path, false, info.channels == 3) != 0;
    if (H5Lexists(impl->file.getId(), "labels", H5P_DEFAULT) > 0) {
      impl->labels = std::make_unique<H5::DataSet>(impl->file.openDataSet("labels"));
      std::vector<hsize_t> ld(impl->labels->getSpace().getSimpleExtentNdims());
      impl->labels->getSpace().getSimpleExtentDims(ld.data());
      const H5::DataType lt = impl->labels->getDataType();
      if (ld.size() != 1 || !is_int(lt, 8, true) || int64_t(ld[0]) != info.count)
        fail(path, "dataset '/labels' is " + type_str(lt) + " " + dims_str(ld),
             "expected int64 (" + std::to_string(info.count) + "), one label per image");
      info.has_labels = true;
    }
    if (!info.class_names.empty() && int64_t(info.class_names.size()) != info.num_classes)
      fail(path, "attribute 'class_names' has " + std::to_string(info.class_names.size()) +
                     " names but num_classes is " + std::to_string(info.num_classes), "convert the data again");
  } catch (const H5::Exception& e) {
    fail(path, "reading the schema failed: " + e.getDetailMsg());
  }
  return ImageDataset(std::move(info), std::move(impl));
}

void ImageDataset::read_images(int64_t start, int64_t n, uint8_t* dst) const {
  TORCH_CHECK(start >= 0 && n >= 0 && start + n <= info_.count, info_.path, ": images [", start, ", ",
              start + n, ") out of range [0, ", info_.count, ")");
  if (n == 0) return;
  try {
    H5::DataSpace fs = impl_->images.getSpace();
    hsize_t off[4] = {hsize_t(start), 0, 0, 0};
    hsize_t cnt[4] = {hsize_t(n), hsize_t(info_.height), hsize_t(info_.width), hsize_t(info_.channels)};
    fs.selectHyperslab(H5S_SELECT_SET, cnt, off);
    H5::DataSpace ms(4, cnt);
    impl_->images.read(dst, H5::PredType::NATIVE_UINT8, ms, fs);
  } catch (const H5::Exception& e) {
    fail(info_.path, "reading /images [" + std::to_string(start) + ", " + std::to_string(start + n) +
                         ") failed: " + e.getDetailMsg(), "the file may be truncated or corrupt");
  }
}

at::Tensor ImageDataset::read_images(int64_t start, int64_t n) const {
  at::Tensor t = at::empty({n, info_.height, info_.width, info_.channels}, at::kByte);
  read_images(start, n, t.data_ptr<uint8_t>());
  return t;
}

at::Tensor ImageDataset::read_all_images() const { return read_images(0, info_.count); }

at::Tensor ImageDataset::labels() const {
  if (!impl_->labels) return {};
  at::Tensor t = at::empty({info_.count}, at::kLong);
  try {
    if (info_.count > 0) impl_->labels->read(t.data_ptr<int64_t>(), H5::PredType::NATIVE_INT64);
  } catch (const H5::Exception& e) {
    fail(info_.path, "reading /labels failed: " + e.getDetailMsg());
  }
  return t;
}

// ---- writing ------------------------------------------------------------------------------------

struct DatasetWriter::Impl {
  H5::H5File file;
  H5::DataSet images;
};

DatasetWriter::DatasetWriter(const std::string& path, const DatasetInfo& info, const WriterOptions& options)
    : path_(path), temp_path_(path + ".tmp-" + std::to_string(::getpid())), info_(info) {
  H5::Exception::dontPrint();
  if (info.count <= 0 || info.height <= 0 || info.width <= 0 || !(info.channels == 1 || info.channels == 3))
    throw std::invalid_argument(path + ": cannot write " + std::to_string(info.count) + " images of " +
                                std::to_string(info.height) + "x" + std::to_string(info.width) + "x" +
                                std::to_string(info.channels) + " (expected N > 0 and 1 or 3 channels)");
  if (options.compress < 0 || options.compress > 9)
    throw std::invalid_argument(path + ": compression level " + std::to_string(options.compress) +
                                " (expected 0..9)");
  impl_ = std::make_unique<Impl>();
  try {
    impl_->file = H5::H5File(temp_path_, H5F_ACC_TRUNC);
    info_.chunk_images = chunk_images_for(info.image_bytes(), info.count, options.chunk_bytes);
    hsize_t dims[4] = {hsize_t(info.count), hsize_t(info.height), hsize_t(info.width), hsize_t(info.channels)};
    hsize_t chunk[4] = {hsize_t(info_.chunk_images), dims[1], dims[2], dims[3]};
    H5::DSetCreatPropList cp;
    cp.setChunk(4, chunk);
    if (options.compress > 0) cp.setDeflate(options.compress);
    impl_->images = impl_->file.createDataSet("images", H5::PredType::STD_U8LE, H5::DataSpace(4, dims), cp);
  } catch (const H5::Exception& e) {
    impl_.reset();
    std::remove(temp_path_.c_str());
    fail(temp_path_, "cannot create: " + e.getDetailMsg(), "check that the folder exists and is writable");
  }
}

DatasetWriter::~DatasetWriter() {
  if (!finished_) {
    impl_.reset();  // close before removing
    std::remove(temp_path_.c_str());
  }
}

void DatasetWriter::write_images(int64_t start, const at::Tensor& images) {
  TORCH_CHECK(images.scalar_type() == at::kByte && images.dim() == 4 && images.size(1) == info_.height &&
                  images.size(2) == info_.width && images.size(3) == info_.channels,
              path_, ": images to write must be uint8 (n, ", info_.height, ", ", info_.width, ", ",
              info_.channels, "), got ", images.scalar_type(), " ", images.sizes());
  const int64_t n = images.size(0);
  TORCH_CHECK(start >= 0 && start + n <= info_.count, path_, ": images [", start, ", ", start + n,
              ") beyond the declared count ", info_.count);
  if (n == 0) return;
  const at::Tensor c = images.contiguous();
  try {
    H5::DataSpace fs = impl_->images.getSpace();
    hsize_t off[4] = {hsize_t(start), 0, 0, 0};
    hsize_t cnt[4] = {hsize_t(n), hsize_t(info_.height), hsize_t(info_.width), hsize_t(info_.channels)};
    fs.selectHyperslab(H5S_SELECT_SET, cnt, off);
    impl_->images.write(c.data_ptr<uint8_t>(), H5::PredType::NATIVE_UINT8, H5::DataSpace(4, cnt), fs);
  } catch (const H5::Exception& e) {
    fail(temp_path_, "writing images failed: " + e.getDetailMsg(), "is the disk full?");
  }
}

void DatasetWriter::write_labels(const at::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == info_.count && !labels.is_floating_point(), path_,
              ": labels must be integers (", info_.count, "), got ", labels.scalar_type(), " ", labels.sizes());
  const at::Tensor l = labels.to(at::kLong).contiguous();
  TORCH_CHECK(l.numel() == 0 || l.min().item<int64_t>() >= 0, path_, ": labels must be >= 0");
  try {
    hsize_t n = info_.count;
    H5::DataSet ds = impl_->file.createDataSet("labels", H5::PredType::STD_I64LE, H5::DataSpace(1, &n));
    ds.write(l.data_ptr<int64_t>(), H5::PredType::NATIVE_INT64);
  } catch (const H5::Exception& e) {
    fail(temp_path_, "writing labels failed: " + e.getDetailMsg());
  }
  info_.has_labels = true;
}

void DatasetWriter::finish() {
  try {
    H5::DataSet& im = impl_->images;
    write_int_attr(im, "schema_version", kSchemaVersion);
    write_int_attr(im, "count", info_.count);
    write_int_attr(im, "height", info_.height);
    write_int_attr(im, "width", info_.width);
    write_int_attr(im, "channels", info_.channels);
    write_int_attr(im, "num_classes", info_.has_labels ? info_.num_classes : 0);
    write_int_attr(im, "random_flip", info_.random_flip ? 1 : 0);
    write_str_attr(im, "source", info_.source);
    if (!info_.class_names.empty()) write_str_list_attr(im, "class_names", info_.class_names);
    impl_->images.close();
    impl_->file.close();
  } catch (const H5::Exception& e) {
    fail(temp_path_, "finishing failed: " + e.getDetailMsg());
  }
  impl_.reset();
  std::error_code ec;
  std::filesystem::rename(temp_path_, path_, ec);
  if (ec) {
    std::remove(temp_path_.c_str());
    fail(path_, "cannot rename " + temp_path_ + " to it: " + ec.message());
  }
  finished_ = true;
}

}  // namespace ddpm::data
