// Scalar and vector element types of tensors and IR expressions.
// A DType is an element code plus a lane count (1 for scalars, >1 for SIMD vectors).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace loom {

enum class DTypeCode : uint8_t { kF32, kF16, kBF16, kI8, kI32, kI64, kBool };

class DType {
 public:
  constexpr DType() = default;
  constexpr DType(DTypeCode code, int lanes = 1) : code_(code), lanes_(lanes) {}

  static constexpr DType f32(int lanes = 1) { return {DTypeCode::kF32, lanes}; }
  static constexpr DType f16(int lanes = 1) { return {DTypeCode::kF16, lanes}; }
  static constexpr DType bf16(int lanes = 1) { return {DTypeCode::kBF16, lanes}; }
  static constexpr DType i8(int lanes = 1) { return {DTypeCode::kI8, lanes}; }
  static constexpr DType i32(int lanes = 1) { return {DTypeCode::kI32, lanes}; }
  static constexpr DType i64(int lanes = 1) { return {DTypeCode::kI64, lanes}; }
  static constexpr DType boolean(int lanes = 1) { return {DTypeCode::kBool, lanes}; }

  constexpr DTypeCode code() const { return code_; }
  constexpr int lanes() const { return lanes_; }
  constexpr bool is_scalar() const { return lanes_ == 1; }
  constexpr bool is_vector() const { return lanes_ > 1; }
  constexpr bool is_float() const {
    return code_ == DTypeCode::kF32 || code_ == DTypeCode::kF16 || code_ == DTypeCode::kBF16;
  }
  constexpr bool is_int() const {
    return code_ == DTypeCode::kI8 || code_ == DTypeCode::kI32 || code_ == DTypeCode::kI64;
  }
  constexpr bool is_bool() const { return code_ == DTypeCode::kBool; }

  // Width of one element in bits (bool is stored as one byte).
  constexpr int bits() const {
    switch (code_) {
      case DTypeCode::kF32: return 32;
      case DTypeCode::kF16: return 16;
      case DTypeCode::kBF16: return 16;
      case DTypeCode::kI8: return 8;
      case DTypeCode::kI32: return 32;
      case DTypeCode::kI64: return 64;
      case DTypeCode::kBool: return 8;
    }
    return 0;
  }
  // Bytes of one element in memory (scalar).
  constexpr int64_t bytes() const { return bits() / 8; }

  constexpr DType element_of() const { return {code_, 1}; }
  constexpr DType with_lanes(int lanes) const { return {code_, lanes}; }
  constexpr DType with_code(DTypeCode code) const { return {code, lanes_}; }

  constexpr bool operator==(const DType& o) const { return code_ == o.code_ && lanes_ == o.lanes_; }
  constexpr bool operator!=(const DType& o) const { return !(*this == o); }

  // "f32", "f32x8", "bool", ...
  std::string to_string() const {
    std::string s = code_name(code_);
    if (lanes_ != 1) s += "x" + std::to_string(lanes_);
    return s;
  }

  static const char* code_name(DTypeCode code) {
    switch (code) {
      case DTypeCode::kF32: return "f32";
      case DTypeCode::kF16: return "f16";
      case DTypeCode::kBF16: return "bf16";
      case DTypeCode::kI8: return "i8";
      case DTypeCode::kI32: return "i32";
      case DTypeCode::kI64: return "i64";
      case DTypeCode::kBool: return "bool";
    }
    return "?";
  }

 private:
  DTypeCode code_ = DTypeCode::kF32;
  int lanes_ = 1;
};

inline std::ostream& operator<<(std::ostream& os, const DType& t) { return os << t.to_string(); }

}  // namespace loom
