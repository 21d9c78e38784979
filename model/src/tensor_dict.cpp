// torch.save-compatible tensor dictionaries; see ddpm/model/tensor_dict.h.
#include "ddpm/model/tensor_dict.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace ddpm::model {

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
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot write tensor dict (check the folder exists and is writable)");
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* b, size_t n) -> size_t {
    out.write(static_cast<const char*>(b), static_cast<std::streamsize>(n));
    return out ? n : 0;
  });
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  out.close();
  if (!out) throw std::runtime_error(path + ": write failed (disk full?)");
}

TensorDict load_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open (check the path)");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": not a torch.save file: " + e.what_without_backtrace());
  }
  if (!value.isGenericDict()) {
    throw std::runtime_error(path + ": holds a " + value.tagKind() +
                             ", expected a dict of tensors (torch.save({name: tensor}))");
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

}  // namespace ddpm::model
