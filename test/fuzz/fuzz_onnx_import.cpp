// libFuzzer target: arbitrary bytes as an ONNX model and as a TensorProto. Import must return a
// graph or an error; never crash, never allocate what the file only declares.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "loom/onnx/onnx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<loom::Graph> g = loom::onnx::import_from_memory(bytes);
  // A graph that imports is a valid graph: the importer returns its builder's errors.
  if (g.ok() && !g->status().ok()) std::abort();
  if (!g.ok() && g.status().message().empty()) std::abort();
  absl::StatusOr<loom::NDArray> t = loom::onnx::tensor_from_memory(bytes);
  if (t.ok() && !t->defined()) std::abort();
  return 0;
}
