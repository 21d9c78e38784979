// .npz writing: .npy headers (format 1.0) and a zip archive of stored entries, written through
// write_file_atomic; see ddpm/data/npy.h (the reader is npy.cpp).
#include <ATen/ATen.h>
#include <zlib.h>

#include <cstdint>
#include <stdexcept>

#include "ddpm/data/files.h"
#include "ddpm/data/npy.h"

namespace ddpm::data {

namespace {

std::string descr(at::ScalarType t) {
  switch (t) {
    case at::kByte: return "|u1";
    case at::kLong: return "<i8";
    case at::kInt: return "<i4";
    case at::kFloat: return "<f4";
    case at::kDouble: return "<f8";
    default: throw std::invalid_argument(std::string("npy_bytes: unsupported dtype ") + c10::toString(t));
  }
}

void put16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}

}  // namespace

std::string npy_bytes(const at::Tensor& tensor) {
  const at::Tensor t = tensor.cpu().contiguous();
  std::string shape = "(";  // numpy's repr: "(N, H, W, C)", "(N,)", "()"
  for (int64_t d = 0; d < t.dim(); ++d) shape += (d ? ", " : "") + std::to_string(t.size(d));
  shape += t.dim() == 1 ? ",)" : ")";
  std::string header = "{'descr': '" + descr(t.scalar_type()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;  // magic(6) version(2) len(2) header '\n'
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  put16(out, static_cast<uint32_t>(header.size()));
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  return out;
}

void write_npz(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& arrays) {
  std::string zip;  // local headers and data, then the central directory and its end record
  std::string central;
  for (const auto& [name, tensor] : arrays) {
    const std::string entry = name + ".npy";
    const std::string data = npy_bytes(tensor);
    const uint64_t offset = zip.size();
    if (data.size() >= 0xFFFFFFFFULL || offset >= 0xFFFFFFFFULL) {
      throw std::runtime_error(path + ": entry " + entry + " would pass 4 GiB (zip64 is not written); write fewer "
                               "samples per file (--num-samples)");
    }
    const uint32_t crc = static_cast<uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    std::string common;  // version needed, flags, method (stored), time, date (1980-01-01), crc, sizes, name length
    put16(common, 20), put16(common, 0), put16(common, 0), put16(common, 0), put16(common, 0x21);
    put32(common, crc), put32(common, static_cast<uint32_t>(data.size())), put32(common, static_cast<uint32_t>(data.size()));
    put16(common, static_cast<uint32_t>(entry.size()));
    put32(zip, 0x04034b50);
    zip += common;
    put16(zip, 0);  // extra length
    zip += entry;
    zip += data;
    put32(central, 0x02014b50);
    put16(central, 20);  // version made by
    central += common;
    put16(central, 0), put16(central, 0), put16(central, 0), put16(central, 0);  // extra, comment, disk, int attr
    put32(central, 0), put32(central, static_cast<uint32_t>(offset));           // ext attr, local header offset
    central += entry;
  }
  const uint64_t central_offset = zip.size();
  if (central_offset >= 0xFFFFFFFFULL) {
    throw std::runtime_error(path + ": the archive would pass 4 GiB (zip64 is not written); write fewer samples "
                             "per file (--num-samples)");
  }
  zip += central;
  put32(zip, 0x06054b50);
  put16(zip, 0), put16(zip, 0);
  put16(zip, static_cast<uint32_t>(arrays.size())), put16(zip, static_cast<uint32_t>(arrays.size()));
  put32(zip, static_cast<uint32_t>(central.size())), put32(zip, static_cast<uint32_t>(central_offset));
  put16(zip, 0);
  write_file_atomic(path, zip);
}

}  // namespace ddpm::data
