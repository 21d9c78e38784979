// Reading NumPy .npy arrays (header parsed here) and .npz archives (a small zip reader: stored
// and deflated entries, zip64 sizes, CRC-32 checked with zlib); see ddpm/data/npy.h (the writer
// is npz_writer.cpp).
#include <ATen/ATen.h>
#include <zlib.h>

#include <cstring>
#include <fstream>
#include <stdexcept>

#include "ddpm/data/files.h"
#include "ddpm/data/npy.h"

namespace ddpm::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& hint = "") {
  throw std::runtime_error(path + ": " + what + (hint.empty() ? "" : " (" + hint + ")"));
}

// The value text after 'key': in the header dict.
std::string dict_value(const std::string& header, const std::string& key, const std::string& where) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) fail(where, "npy header lacks '" + key + "': " + header, "not a valid .npy file");
  size_t p = header.find(':', k);
  if (p == std::string::npos) fail(where, "malformed npy header: " + header);
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  if (p < header.size() && (header[p] == '(' || header[p] == '\'')) {
    const size_t e = header.find(header[p] == '(' ? ')' : '\'', p + 1);
    if (e == std::string::npos) fail(where, "malformed npy header: " + header);
    return header[p] == '(' ? header.substr(p, e - p + 1) : header.substr(p + 1, e - p - 1);
  }
  size_t e = p;
  while (e < header.size() && header[e] != ',' && header[e] != '}') ++e;
  return header.substr(p, e - p);
}

at::ScalarType npy_type(const std::string& descr, const std::string& where, bool* needs_widen) {
  *needs_widen = false;
  if (descr.size() < 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '='))
    fail(where, "unsupported dtype '" + descr + "'", "expected little-endian u1 i1 i2 i4 i8 u2 u4 u8 f4 f8 or b1");
  const std::string t = descr.substr(1);
  if (t == "u1") return at::kByte;
  if (t == "i1") return at::kChar;
  if (t == "b1") return at::kBool;
  if (t == "i2") return at::kShort;
  if (t == "i4") return at::kInt;
  if (t == "i8") return at::kLong;
  if (t == "f4") return at::kFloat;
  if (t == "f8") return at::kDouble;
  if (t == "u2") { *needs_widen = true; return at::kShort; }
  if (t == "u4") { *needs_widen = true; return at::kInt; }
  if (t == "u8") { *needs_widen = true; return at::kLong; }
  fail(where, "unsupported dtype '" + descr + "'", "expected u1 i1 i2 i4 i8 u2 u4 u8 f4 f8 or b1");
}

at::Tensor parse_npy(const std::string& bytes, const std::string& where) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    fail(where, "not a .npy array (magic \\x93NUMPY missing)", "write it with numpy.save");
  const int major = uint8_t(bytes[6]);
  size_t hlen, hstart;
  if (major == 1) hlen = uint8_t(bytes[8]) | (uint8_t(bytes[9]) << 8), hstart = 10;
  else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(where, "truncated npy header");
    hlen = uint32_t(uint8_t(bytes[8])) | (uint32_t(uint8_t(bytes[9])) << 8) |
           (uint32_t(uint8_t(bytes[10])) << 16) | (uint32_t(uint8_t(bytes[11])) << 24);
    hstart = 12;
  } else fail(where, "npy format version " + std::to_string(major) + " unknown", "expected 1, 2 or 3");
  if (bytes.size() < hstart + hlen) fail(where, "truncated npy header", "the file is incomplete");
  const std::string header = bytes.substr(hstart, hlen);
  const std::string descr = dict_value(header, "descr", where);
  if (dict_value(header, "fortran_order", where).find("True") != std::string::npos)
    fail(where, "array in Fortran order", "save a C-ordered array (numpy.ascontiguousarray)");
  std::vector<int64_t> shape;
  const std::string s = dict_value(header, "shape", where);
  for (size_t p = 1; p < s.size();) {
    while (p < s.size() && !std::isdigit(uint8_t(s[p]))) ++p;
    if (p >= s.size()) break;
    size_t e = p;
    while (e < s.size() && std::isdigit(uint8_t(s[e]))) ++e;
    shape.push_back(std::stoll(s.substr(p, e - p)));
    p = e;
  }
  bool widen = false;
  const at::ScalarType type = npy_type(descr, where, &widen);
  at::Tensor t = at::empty(shape, type);
  const size_t nbytes = size_t(t.numel()) * t.element_size();
  if (bytes.size() - hstart - hlen < nbytes)
    fail(where, "truncated npy data: " + std::to_string(bytes.size() - hstart - hlen) + " of " +
                    std::to_string(nbytes) + " bytes for dtype " + descr + " shape " + s, "the file is incomplete");
  std::memcpy(t.data_ptr(), bytes.data() + hstart + hlen, nbytes);
  if (widen) {  // reinterpret the unsigned bits into int64
    at::Tensor w = at::empty(shape, at::kLong);
    int64_t* d = w.data_ptr<int64_t>();
    const char* src = bytes.data() + hstart + hlen;
    const int es = int(t.element_size());
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint64_t v = 0;
      std::memcpy(&v, src + i * es, es);
      d[i] = int64_t(v);
    }
    return w;
  }
  return t;
}

uint32_t u16(const std::string& b, size_t p) { return uint8_t(b[p]) | (uint8_t(b[p + 1]) << 8); }
uint32_t u32(const std::string& b, size_t p) { return u16(b, p) | (u16(b, p + 2) << 16); }
uint64_t u64(const std::string& b, size_t p) { return u32(b, p) | (uint64_t(u32(b, p + 4)) << 32); }

std::string inflate_raw(const char* src, size_t n, size_t out_n, const std::string& where) {
  std::string out(out_n, '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(where, "zlib inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(src));
  z.avail_in = uInt(n);
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out_n);
  const int rc = inflate(&z, Z_FINISH);
  inflateEnd(&z);
  if (rc != Z_STREAM_END || z.total_out != out_n) fail(where, "corrupt deflate data", "the archive is damaged");
  return out;
}

}  // namespace

at::Tensor read_npy(const std::string& path) { return parse_npy(read_file(path), path); }

std::map<std::string, at::Tensor> read_npz(const std::string& path) {
  const std::string b = read_file(path);
  // End of central directory: the last "PK\5\6" record.
  size_t eocd = std::string::npos;
  for (size_t p = b.size() >= 22 ? b.size() - 22 : 0; p + 22 <= b.size(); --p) {
    if (u32(b, p) == 0x06054b50) { eocd = p; break; }
    if (p == 0 || b.size() - p > 65557) break;
  }
  if (b.size() < 22 || eocd == std::string::npos)
    fail(path, "not a zip/.npz archive (no end-of-central-directory record)", "write it with numpy.savez");
  uint64_t entries = u16(b, eocd + 10), cd = u32(b, eocd + 16);
  if ((entries == 0xFFFF || cd == 0xFFFFFFFF) && eocd >= 20 && u32(b, eocd - 20) == 0x07064b50) {
    const uint64_t z64 = u64(b, eocd - 20 + 8);
    if (z64 + 56 > b.size() || u32(b, z64) != 0x06064b50) fail(path, "corrupt zip64 record");
    entries = u64(b, z64 + 32), cd = u64(b, z64 + 48);
  }
  std::map<std::string, at::Tensor> out;
  size_t p = cd;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p + 46 > b.size() || u32(b, p) != 0x02014b50) fail(path, "corrupt zip central directory");
    const uint32_t method = u16(b, p + 10), crc = u32(b, p + 16);
    uint64_t csize = u32(b, p + 20), usize = u32(b, p + 24), local = u32(b, p + 42);
    const uint32_t nlen = u16(b, p + 28), xlen = u16(b, p + 30), clen = u16(b, p + 32);
    const std::string name = b.substr(p + 46, nlen);
    for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {  // zip64 extra field
      const uint32_t id = u16(b, x), len = u16(b, x + 2);
      if (id == 1) {
        size_t q = x + 4;
        if (usize == 0xFFFFFFFF) usize = u64(b, q), q += 8;
        if (csize == 0xFFFFFFFF) csize = u64(b, q), q += 8;
        if (local == 0xFFFFFFFF) local = u64(b, q);
      }
      x += 4 + len;
    }
    p += 46 + nlen + xlen + clen;
    const std::string where = path + ":" + name;
    if (local + 30 > b.size() || u32(b, local) != 0x04034b50) fail(where, "corrupt zip local header");
    const size_t data = local + 30 + u16(b, local + 26) + u16(b, local + 28);
    if (data + csize > b.size()) fail(where, "truncated zip entry", "the archive is incomplete");
    std::string bytes;
    if (method == 0) bytes = b.substr(data, csize);
    else if (method == 8) bytes = inflate_raw(b.data() + data, csize, usize, where);
    else fail(where, "zip compression method " + std::to_string(method), "expected stored (0) or deflated (8)");
    if (crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), uInt(bytes.size())) != crc)
      fail(where, "CRC mismatch", "the archive is damaged");
    std::string key = name.size() > 4 && name.substr(name.size() - 4) == ".npy" ? name.substr(0, name.size() - 4) : name;
    out[key] = parse_npy(bytes, where);
  }
  return out;
}

}  // namespace ddpm::data
