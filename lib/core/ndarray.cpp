// NDArray storage, element access in double precision, and f16/bf16 conversions.

#include "loom/core/ndarray.hpp"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "loom/core/status.hpp"

namespace loom {

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into the exponent
  return static_cast<uint16_t>(half);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      x = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000 | (mant << 13);
  } else {
    x = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((x >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float bf16_to_f32(uint16_t h) {
  uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

NDArray::NDArray(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  LOOM_CHECK(dtype.is_scalar(), "NDArray of vector dtype");
  for (int64_t e : shape_) LOOM_CHECK(e >= 0, "negative extent");
  size_t bytes = static_cast<size_t>(nbytes());
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  LOOM_CHECK(p || rounded == 0, "out of memory allocating ", bytes, " bytes");
  storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  data_ = p;
}

absl::StatusOr<NDArray> NDArray::allocate(DType dtype, std::vector<int64_t> shape) {
  if (!dtype.is_scalar()) return absl::InvalidArgumentError("NDArray of vector dtype");
  int64_t bytes = dtype.bytes();
  for (int64_t e : shape) {
    if (e < 0) return absl::InvalidArgumentError("negative extent in " + shape_to_string(shape));
    if (e > 0 && bytes > (std::numeric_limits<int64_t>::max() - 63) / e)
      return absl::InvalidArgumentError("the size of " + shape_to_string(shape) + " overflows");
    bytes = e == 0 ? 0 : bytes * e;
  }
  const size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
  void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (!p && rounded)
    return absl::ResourceExhaustedError(
        str_cat("cannot allocate ", bytes, " bytes for ", dtype.to_string(), shape_to_string(shape)));
  NDArray a;
  a.dtype_ = dtype;
  a.shape_ = std::move(shape);
  a.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  a.data_ = p;
  return a;
}

NDArray NDArray::adopt(std::shared_ptr<void> storage, DType dtype, std::vector<int64_t> shape) {
  NDArray a;
  a.dtype_ = dtype;
  a.shape_ = std::move(shape);
  a.data_ = storage.get();
  a.storage_ = std::move(storage);
  return a;
}

NDArray NDArray::borrow(void* data, DType dtype, std::vector<int64_t> shape) {
  NDArray a;
  a.dtype_ = dtype;
  a.shape_ = std::move(shape);
  a.data_ = data;
  return a;
}

double NDArray::get(int64_t i) const {
  const char* p = static_cast<const char*>(data_);
  switch (dtype_.code()) {
    case DTypeCode::kF32: return reinterpret_cast<const float*>(p)[i];
    case DTypeCode::kF16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DTypeCode::kBF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DTypeCode::kI8: return reinterpret_cast<const int8_t*>(p)[i];
    case DTypeCode::kI32: return reinterpret_cast<const int32_t*>(p)[i];
    case DTypeCode::kI64: return static_cast<double>(reinterpret_cast<const int64_t*>(p)[i]);
    case DTypeCode::kBool: return reinterpret_cast<const uint8_t*>(p)[i] ? 1.0 : 0.0;
  }
  return 0;
}

namespace {
// v as an integer of type T: truncated toward zero, saturated at T's range, NaN as 0 (a plain
// cast of an out-of-range double is undefined behaviour).
template <typename T>
T saturate(double v) {
  if (std::isnan(v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}
}  // namespace

void NDArray::set(int64_t i, double v) {
  char* p = static_cast<char*>(data_);
  switch (dtype_.code()) {
    case DTypeCode::kF32: reinterpret_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DTypeCode::kF16:
      reinterpret_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v));
      break;
    case DTypeCode::kBF16:
      reinterpret_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v));
      break;
    case DTypeCode::kI8: reinterpret_cast<int8_t*>(p)[i] = saturate<int8_t>(v); break;
    case DTypeCode::kI32: reinterpret_cast<int32_t*>(p)[i] = saturate<int32_t>(v); break;
    case DTypeCode::kI64: reinterpret_cast<int64_t*>(p)[i] = saturate<int64_t>(v); break;
    case DTypeCode::kBool: reinterpret_cast<uint8_t*>(p)[i] = v != 0; break;
  }
}

void NDArray::poison() {
  if (dtype_.is_float()) {
    for (int64_t i = 0; i < numel(); ++i) set(i, std::numeric_limits<double>::quiet_NaN());
  } else {
    std::memset(data_, 0x5a, static_cast<size_t>(nbytes()));
  }
}

NDArray NDArray::copy() const {
  NDArray out(dtype_, shape_);
  if (nbytes()) std::memcpy(out.data(), data_, static_cast<size_t>(nbytes()));
  return out;
}

}  // namespace loom
