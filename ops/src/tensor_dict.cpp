// torch.save-compatible tensor dictionaries; see ddpm/ops/tensor_dict.h.
#include "ddpm/ops/tensor_dict.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace ddpm::ops {

// torch::pickle_save tags the dict with its C++ type (torch.jit._pickle.restore_type_tag), which
// torch.load(weights_only=True), the default since PyTorch 2.6, refuses. We pickle without the
// tag and lay out the zip archive as torch.save does (data.pkl, data/<i>, version).
void save_tensor_dict(const std::string& path, const TensorDict& tensors) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().to(at::kCPU).contiguous());
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* b, size_t n) { pickled.insert(pickled.end(), b, b + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr,
                              /*memoized_class_types=*/nullptr, /*get_tensor_id=*/nullptr,
                              /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();
  // The sink never reports a failed write to PyTorchStreamWriter: its destructor finishes the
  // archive and would throw a second time, which terminates the process. The first error (ENOSPC,
  // EFBIG under `ulimit -f`, EIO) is kept, later writes are dropped, and it is thrown at the end.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw std::runtime_error(path + ": cannot create (" + std::strerror(errno) +
                             "; check the folder exists and is writable)");
  }
  int write_errno = 0;
  try {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* b, size_t n) -> size_t {
      const char* p = static_cast<const char*>(b);
      for (size_t left = n; left > 0 && write_errno == 0;) {
        const ssize_t w = ::write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          write_errno = errno;
          break;
        }
        p += w;
        left -= static_cast<size_t>(w);
      }
      return n;
    });
    torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0 && write_errno == 0) write_errno = errno;
  if (write_errno != 0) {
    const bool full = write_errno == ENOSPC || write_errno == EFBIG || write_errno == EDQUOT;
    throw std::runtime_error(path + ": write failed: " + std::strerror(write_errno) +
                             (full ? " (the disk is full, or a quota or file-size limit was reached)" : ""));
  }
}

namespace {

// torch's C++ unpickler turns every collections.OrderedDict into None (it only expects them as
// tensors' empty backward hooks) and knows no POP, but a state_dict is an OrderedDict carrying
// `_metadata`. Edits of data.pkl (protocol 2) make the top level a plain dict: the first
// OrderedDict global goes into a throw-away list ("]" .. "a", keeping its memo entry for later
// references), "OrderedDict()" becomes "{}", the trailing BUILD of {'_metadata': ...} is dropped,
// and the result is (list, dict) so the stack ends with one item. Returns false if not applicable.
bool plain_dict_pickle(std::string& pkl) {
  const std::string od = "ccollections\nOrderedDict\n";
  if (pkl.compare(0, 2, "\x80\x02") != 0 || pkl.compare(2, od.size(), od) != 0) return false;
  size_t at = 2 + od.size();
  at += pkl[at] == 'q' ? 2 : pkl[at] == 'r' ? 5 : 0;  // its memo put
  if (pkl.compare(at, 2, ")R") != 0 || pkl.back() != '.') return false;
  pkl.replace(at, 2, "a}");
  pkl.insert(pkl.begin() + 2, ']');
  pkl.pop_back();  // STOP
  const std::string meta("X\x09\x00\x00\x00_metadata", 14);
  const size_t m = pkl.rfind(meta);
  if (m != std::string::npos && pkl.back() == 'b') {
    for (size_t put : {size_t{2}, size_t{5}}) {  // "}", a memo put, then the key
      if (m >= put + 1 && pkl[m - put - 1] == '}') {
        pkl.resize(m - put - 1);
        break;
      }
    }
  }
  pkl += "\x86.";  // TUPLE2, STOP
  return true;
}

c10::IValue read_pickled_value(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": not a zip-format torch.save file (" + e.what_without_backtrace() +
                             "); a legacy-format file can be re-saved once with python: "
                             "torch.save(torch.load(f), f)");
  }
  auto [data, size] = reader->getRecord("data.pkl");
  std::string pkl(static_cast<const char*>(data.get()), size);
  const bool wrapped = plain_dict_pickle(pkl);
  size_t pos = 0;
  torch::jit::Unpickler unpickler(
      [&](char* buf, size_t n) {
        const size_t k = std::min(n, pkl.size() - pos);
        std::memcpy(buf, pkl.data() + pos, k);
        pos += k;
        return k;
      },
      nullptr, nullptr, [&](const std::string& name) { return std::get<0>(reader->getRecord("data/" + name)); },
      c10::Device(c10::kCPU));
  unpickler.set_version(reader->version());
  c10::IValue v = unpickler.parse_ivalue();
  return wrapped && v.isTuple() ? v.toTupleRef().elements().at(1) : v;
}

}  // namespace

TensorDict load_tensor_dict(const std::string& path) {
  if (!std::ifstream(path).good()) throw std::runtime_error(path + ": cannot open (check the path)");
  c10::IValue value;
  try {
    value = read_pickled_value(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": cannot read as torch.save data: " + e.what_without_backtrace());
  }
  if (!value.isGenericDict()) {
    throw std::runtime_error(path + ": holds a " + value.tagKind() +
                             ", expected a dict of tensors (torch.save({name: tensor}) or a state_dict)");
  }
  TensorDict out;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) {
      throw std::runtime_error(path + ": entry is not name -> tensor (found " + item.key().tagKind() +
                               " -> " + item.value().tagKind() + ")");
    }
    out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  }
  return out;
}

}  // namespace ddpm::ops
