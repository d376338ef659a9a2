// A small reader and writer of the .npy format: a magic string, a version, a Python dict literal
// header ({'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }) and the raw elements.

#include "npy.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <vector>

#include "loom/core/status.hpp"

namespace loom::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct Descr {
  const char* text;
  DType dtype;
};
const Descr kDescrs[] = {{"<f4", DType::f32()}, {"<f2", DType::f16()}, {"|i1", DType::i8()},
                         {"<i4", DType::i32()}, {"<i8", DType::i64()}, {"|b1", DType::boolean()}};

// The text after `'key':` in the header dict, up to its end (what the value starts with).
std::optional<std::string> value_of(const std::string& header, const std::string& key) {
  const size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return std::nullopt;
  const size_t colon = header.find(':', at);
  if (colon == std::string::npos) return std::nullopt;
  const size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) return std::nullopt;
  return header.substr(start);
}

absl::StatusOr<DType> parse_dtype(const std::string& header, const std::string& path) {
  std::optional<std::string> v = value_of(header, "descr");
  if (v && v->size() > 1 && (*v)[0] == '\'') {
    const std::string descr = v->substr(1, v->find('\'', 1) - 1);
    for (const Descr& d : kDescrs)
      if (descr == d.text) return d.dtype;
    return absl::UnimplementedError(path + ": dtype " + descr +
                                    " is not supported (f32, f16, i8, i32, i64, bool)");
  }
  return absl::DataLossError(path + ": header has no 'descr'");
}

absl::StatusOr<std::vector<int64_t>> parse_shape(const std::string& header,
                                                 const std::string& path) {
  std::optional<std::string> v = value_of(header, "shape");
  if (!v || v->empty() || (*v)[0] != '(')
    return absl::DataLossError(path + ": header has no 'shape' tuple");
  std::vector<int64_t> shape;
  size_t i = 1;
  while (i < v->size() && (*v)[i] != ')') {
    if ((*v)[i] == ' ' || (*v)[i] == ',') {
      ++i;
      continue;
    }
    int64_t d = 0;
    size_t digits = 0;
    while (i < v->size() && (*v)[i] >= '0' && (*v)[i] <= '9' && digits < 18) {
      d = d * 10 + ((*v)[i++] - '0');
      ++digits;
    }
    if (digits == 0) return absl::DataLossError(path + ": bad 'shape' in header");
    shape.push_back(d);
  }
  if (i == v->size()) return absl::DataLossError(path + ": unterminated 'shape' in header");
  return shape;
}

uint32_t little_endian(const std::string& bytes, size_t at, size_t width) {
  uint32_t v = 0;
  for (size_t b = 0; b < width; ++b)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + b])) << (8 * b);
  return v;
}

}  // namespace

absl::StatusOr<NDArray> read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError("cannot open " + path);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < kMagicSize + 4 || bytes.compare(0, kMagicSize, kMagic) != 0)
    return absl::DataLossError(path + ": not a .npy file");
  const int major = bytes[kMagicSize];
  const size_t len_width = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || bytes.size() < kMagicSize + 2 + len_width)
    return absl::DataLossError(str_cat(path, ": unsupported .npy version ", major));
  const size_t header_start = kMagicSize + 2 + len_width;
  const size_t header_len = little_endian(bytes, kMagicSize + 2, len_width);
  if (header_len > bytes.size() - header_start)
    return absl::DataLossError(path + ": truncated header");
  const std::string header = bytes.substr(header_start, header_len);
  LOOM_ASSIGN_OR_RETURN(DType dtype, parse_dtype(header, path));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> shape, parse_shape(header, path));
  std::optional<std::string> fortran = value_of(header, "fortran_order");
  if (!fortran || fortran->rfind("False", 0) != 0)
    return absl::UnimplementedError(path + ": only C-order arrays are supported");
  // Guard the element count before allocating: a hostile header may declare anything.
  const size_t data_bytes = bytes.size() - header_start - header_len;
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d != 0 && numel > static_cast<int64_t>(data_bytes) / d)
      return absl::DataLossError(str_cat(path, ": shape ", shape_to_string(shape),
                                         " needs more than its ", data_bytes, " data bytes"));
    numel *= d;
  }
  if (static_cast<size_t>(numel * dtype.bytes()) != data_bytes)
    return absl::DataLossError(str_cat(path, ": ", data_bytes, " data bytes for shape ",
                                       shape_to_string(shape), " of ", dtype.to_string()));
  NDArray a(dtype, shape);
  if (data_bytes > 0) std::memcpy(a.data(), bytes.data() + header_start + header_len, data_bytes);
  return a;
}

absl::Status write(const std::string& path, const NDArray& array) {
  const char* descr = nullptr;
  for (const Descr& d : kDescrs)
    if (d.dtype == array.dtype()) descr = d.text;
  if (!descr)
    return absl::UnimplementedError(path + ": .npy cannot hold " + array.dtype().to_string());
  std::string shape;  // a Python tuple's contents: "2, 3", or "2," for one dim
  for (int64_t d : array.shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
  if (array.shape().size() == 1) shape += ",";
  std::string header =
      str_cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", shape, "), }");
  // Version 1: magic, 2 version bytes, a 2-byte length; the whole preamble padded to 64 bytes.
  const size_t preamble = kMagicSize + 4;
  header.append(63 - (preamble + header.size()) % 64, ' ');
  header += '\n';
  std::string out(kMagic, kMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(array.data()), static_cast<size_t>(array.nbytes()));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f || !f.write(out.data(), static_cast<std::streamsize>(out.size())))
    return absl::InternalError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace loom::npy
