// ONNX import: an ONNX model (a file or bytes in memory) becomes a loom Graph. Graph inputs keep
// their names, dtypes and shapes (a dim_param becomes a symbolic Dim of that name), initializers
// and Constant nodes become constants, every node becomes loom operators. An unsupported
// operator, opset or attribute is an error naming the node and its op; a truncated or corrupt
// file is an error, never a crash. No protobuf or ONNX header is included here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "loom/core/ndarray.hpp"
#include "loom/graph/graph.hpp"

namespace loom::onnx {

// The ONNX opset versions of the default domain the importer accepts.
inline constexpr int64_t kMinOpset = 1;
inline constexpr int64_t kMaxOpset = 18;

absl::StatusOr<Graph> import(const std::string& path);
absl::StatusOr<Graph> import_from_memory(std::string_view bytes);

// A serialized TensorProto (the .pb files of ONNX test data) as an NDArray.
absl::StatusOr<NDArray> read_tensor(const std::string& path);
absl::StatusOr<NDArray> tensor_from_memory(std::string_view bytes);

}  // namespace loom::onnx
