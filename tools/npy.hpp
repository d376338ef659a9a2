// NumPy .npy files (format versions 1-3, little-endian, C order) as NDArrays, for loom_run's
// inputs and outputs: f32, f16, i8, i32, i64 and bool.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "loom/core/ndarray.hpp"

namespace loom::npy {

absl::StatusOr<NDArray> read(const std::string& path);
absl::Status write(const std::string& path, const NDArray& array);

}  // namespace loom::npy
