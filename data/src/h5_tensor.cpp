// Named tensors in an HDF5 file; see ddpm/data/h5_tensor.h.
#include "ddpm/data/h5_tensor.h"

#include <ATen/ATen.h>
#include <H5Cpp.h>

#include <filesystem>
#include <stdexcept>

namespace ddpm::data {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint) {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

H5::PredType h5_type_of(at::ScalarType t, const std::string& path, const std::string& name) {
  switch (t) {
    case at::kByte: return H5::PredType::NATIVE_UINT8;
    case at::kInt: return H5::PredType::NATIVE_INT32;
    case at::kLong: return H5::PredType::NATIVE_INT64;
    case at::kFloat: return H5::PredType::NATIVE_FLOAT;
    case at::kDouble: return H5::PredType::NATIVE_DOUBLE;
    default:
      fail(path, "dataset '" + name + "': cannot store tensors of type " + std::string(c10::toString(t)),
           "use uint8, int32, int64, float32 or float64");
  }
}

at::ScalarType torch_type_of(const H5::DataType& dt, const std::string& path, const std::string& name) {
  const H5T_class_t cls = dt.getClass();
  const size_t size = dt.getSize();
  if (cls == H5T_FLOAT && size == 4) return at::kFloat;
  if (cls == H5T_FLOAT && size == 8) return at::kDouble;
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5::IntType(dt.getId()).getSign() != H5T_SGN_NONE;
    if (size == 1 && !is_signed) return at::kByte;
    if (size == 4 && is_signed) return at::kInt;
    if (size == 8 && is_signed) return at::kLong;
  }
  fail(path, "dataset '" + name + "' has an unsupported type (class " + std::to_string(int(cls)) +
               ", " + std::to_string(size) + " bytes)",
       "store it as uint8, int32, int64, float32 or float64");
}

}  // namespace

struct H5TensorFile::Impl {
  H5::H5File file;
};

H5TensorFile::H5TensorFile(std::string path, std::unique_ptr<Impl> impl)
    : path_(std::move(path)), impl_(std::move(impl)) {}
H5TensorFile::~H5TensorFile() = default;
H5TensorFile::H5TensorFile(H5TensorFile&&) noexcept = default;
H5TensorFile& H5TensorFile::operator=(H5TensorFile&&) noexcept = default;

H5TensorFile H5TensorFile::open_read(const std::string& path) {
  H5::Exception::dontPrint();
  try {
    return H5TensorFile(path, std::make_unique<Impl>(Impl{H5::H5File(path, H5F_ACC_RDONLY)}));
  } catch (const H5::Exception& e) {
    fail(path, "cannot open as HDF5: " + e.getDetailMsg(), "check that the file exists and is HDF5");
  }
}

H5TensorFile H5TensorFile::create(const std::string& path) {
  H5::Exception::dontPrint();
  try {
    return H5TensorFile(path, std::make_unique<Impl>(Impl{H5::H5File(path, H5F_ACC_TRUNC)}));
  } catch (const H5::Exception& e) {
    fail(path, "cannot create: " + e.getDetailMsg(), "check that the folder exists and is writable");
  }
}

H5TensorFile H5TensorFile::open_rw(const std::string& path) {
  H5::Exception::dontPrint();
  const bool exists = std::filesystem::exists(path);
  try {
    return H5TensorFile(path, std::make_unique<Impl>(Impl{H5::H5File(path, exists ? H5F_ACC_RDWR : H5F_ACC_TRUNC)}));
  } catch (const H5::Exception& e) {
    fail(path, std::string(exists ? "cannot open for writing: " : "cannot create: ") + e.getDetailMsg(),
         exists ? "check that it is an HDF5 file you may write, or delete it" : "check that the folder exists and is writable");
  }
}

bool H5TensorFile::has(const std::string& dataset) const {
  // H5Lexists fails (rather than answering no) when a group on the path is missing: walk it.
  for (size_t end = dataset.find('/', 1);; end = dataset.find('/', end + 1)) {
    const std::string prefix = dataset.substr(0, end);
    if (!prefix.empty() && prefix != "/" && H5Lexists(impl_->file.getId(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (end == std::string::npos) return !prefix.empty();
  }
}

std::vector<std::string> H5TensorFile::names() const {
  std::vector<std::string> out;
  for (hsize_t i = 0; i < impl_->file.getNumObjs(); ++i) out.push_back(impl_->file.getObjnameByIdx(i));
  return out;
}

at::Tensor H5TensorFile::read(const std::string& dataset) const {
  if (!has(dataset)) {
    fail(path_, "dataset '" + dataset + "' not found", "the file holds: " + [&] {
      std::string s;
      for (const auto& n : names()) s += (s.empty() ? "" : ", ") + n;
      return s.empty() ? std::string("nothing") : s;
    }());
  }
  try {
    H5::DataSet ds = impl_->file.openDataSet(dataset);
    H5::DataSpace space = ds.getSpace();
    std::vector<hsize_t> dims(space.getSimpleExtentNdims());
    space.getSimpleExtentDims(dims.data());
    const at::ScalarType type = torch_type_of(ds.getDataType(), path_, dataset);
    std::vector<int64_t> sizes(dims.begin(), dims.end());
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
    if (t.numel() > 0) ds.read(t.data_ptr(), h5_type_of(type, path_, dataset));
    return t;
  } catch (const H5::Exception& e) {
    fail(path_, "reading dataset '" + dataset + "' failed: " + e.getDetailMsg(), "");
  }
}

void H5TensorFile::write(const std::string& dataset, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  if (c.scalar_type() == at::kBool) c = c.to(at::kByte);
  const H5::PredType type = h5_type_of(c.scalar_type(), path_, dataset);
  std::vector<hsize_t> dims(c.sizes().begin(), c.sizes().end());
  const hid_t file = impl_->file.getId();
  if (has(dataset) && H5Ldelete(file, dataset.c_str(), H5P_DEFAULT) < 0) {
    fail(path_, "cannot replace dataset '" + dataset + "'", "check that the file is writable");
  }
  try {
    H5::DataSpace space(static_cast<int>(dims.size()), dims.data());
    const hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);  // groups on the path are created
    H5Pset_create_intermediate_group(lcpl, 1);
    const hid_t ds = H5Dcreate2(file, dataset.c_str(), type.getId(), space.getId(), lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (ds < 0) fail(path_, "cannot create dataset '" + dataset + "'", "check that the file is writable");
    const herr_t rc = c.numel() > 0 ? H5Dwrite(ds, type.getId(), H5S_ALL, H5S_ALL, H5P_DEFAULT, c.data_ptr()) : 0;
    H5Dclose(ds);
    if (rc < 0) fail(path_, "writing dataset '" + dataset + "' failed", "check the free disk space");
  } catch (const H5::Exception& e) {
    fail(path_, "writing dataset '" + dataset + "' failed: " + e.getDetailMsg(), "");
  }
}

}  // namespace ddpm::data
