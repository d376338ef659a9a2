// NDArray: a dense, row-major host tensor with an owned (or borrowed) byte buffer.
// It is how an engine hands inputs to a CompiledGraph and receives outputs.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/dtype.hpp"
#include "loom/core/shape.hpp"

namespace loom {

class NDArray {
 public:
  NDArray() = default;
  // Allocates uninitialised storage (64-byte aligned).
  NDArray(DType dtype, std::vector<int64_t> shape);
  // The same, or ResourceExhausted when the system cannot provide the bytes (the constructor
  // aborts instead): for sizes that come from data, like a run's outputs.
  static absl::StatusOr<NDArray> allocate(DType dtype, std::vector<int64_t> shape);
  // Wraps memory owned by the caller; it must outlive the NDArray and every copy of it.
  static NDArray borrow(void* data, DType dtype, std::vector<int64_t> shape);
  // Shares `storage` (data at storage.get(), at least nbytes() of them): storage's deleter runs
  // when the last NDArray and the last other owner let go. A pool hands out buffers so.
  static NDArray adopt(std::shared_ptr<void> storage, DType dtype, std::vector<int64_t> shape);

  template <typename T>
  static NDArray from_vector(DType dtype, std::vector<int64_t> shape, const std::vector<T>& v) {
    NDArray a(dtype, std::move(shape));
    std::memcpy(a.data(), v.data(), a.nbytes());
    return a;
  }

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return num_elements(shape_); }
  int64_t nbytes() const { return numel() * dtype_.bytes(); }

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }

  // Element i (row-major) converted to double, for any dtype (f16/bf16 included).
  double get(int64_t i) const;
  // Sets element i from a double, rounding to the dtype.
  void set(int64_t i, double v);
  // Fills every byte with a recognisable pattern (NaN for floats) to catch unwritten outputs.
  void poison();
  NDArray copy() const;

 private:
  DType dtype_;
  std::vector<int64_t> shape_;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

// Half-precision conversions used by the reference evaluator and NDArray accessors.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);

}  // namespace loom
