// Hostile and malformed ONNX models, written byte by byte (test/onnx_bytes.hpp): huge declared
// tensor sizes, cycles, missing inputs, unknown operators and attributes of the wrong type each
// give a clear error naming what is wrong, never a crash, a huge allocation or a silent default.

#include <catch2/catch.hpp>
#include <string>

#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "onnx_bytes.hpp"

using namespace loom;
namespace ob = loom::testing::onnx_bytes;

namespace {

void require_error(const absl::Status& s, absl::StatusCode code, const std::string& fragment) {
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == code);
  CHECK_THAT(std::string(s.message()), Catch::Contains(fragment));
}

// x [2, 3] -> op -> y, with the node's attributes.
ob::Model one_node(const std::string& op, const std::vector<std::string>& attributes = {}) {
  ob::Model m;
  m.inputs = {ob::value_info("x", {2, 3})};
  m.nodes = {ob::node(op, {"x"}, {"y"}, attributes)};
  m.outputs = {ob::value_info("y", {})};
  return m;
}

}  // namespace

TEST_CASE("onnx: the hand-written model bytes import (the cases below differ by one fault)",
          "[onnx][error]") {
  absl::StatusOr<Graph> g = onnx::import_from_memory(one_node("Relu").bytes());
  INFO(g.status().ToString());
  REQUIRE(g.ok());
  CHECK(g->outputs().size() == 1);
  ob::Model m = one_node("Add");
  m.nodes = {ob::node("Add", {"x", "w"}, {"y"})};
  m.initializers = {ob::float_tensor("w", {3}, {1, 2, 3})};
  CHECK(onnx::import_from_memory(m.bytes()).ok());
}

TEST_CASE("onnx: an initializer declaring huge dims is rejected before allocating", "[onnx][error]") {
  // 2^40 x 2^40 floats: the element count overflows 64 bits.
  ob::Model m = one_node("Add");
  m.nodes = {ob::node("Add", {"x", "w"}, {"y"})};
  m.initializers = {ob::tensor("w", {int64_t{1} << 40, int64_t{1} << 40}, ob::kFloat, "abcd")};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kDataLoss,
                "declares dims [1099511627776, 1099511627776], more than 2^63 bytes");
  // 2^35 floats (128 GiB) declared, 4 bytes present: an error, not an allocation.
  m.initializers = {ob::tensor("w", {int64_t{1} << 35}, ob::kFloat, "abcd")};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kDataLoss,
                "'w' has 4 bytes of data for f32[34359738368]");
  // The same without raw_data: the typed field holds no values.
  std::string no_data = ob::int_field(1, int64_t{1} << 35) + ob::int_field(2, ob::kFloat) +
                        ob::bytes_field(8, "w");
  require_error(onnx::tensor_from_memory(no_data).status(), absl::StatusCode::kDataLoss,
                "'w' holds 0 values for shape [34359738368]");
  // A negative dim.
  require_error(onnx::tensor_from_memory(ob::tensor("w", {-3}, ob::kFloat, "")).status(),
                absl::StatusCode::kDataLoss, "negative dim");
}

TEST_CASE("onnx: a graph input whose size overflows 64 bits is an error", "[onnx][error]") {
  ob::Model m = one_node("Relu");
  m.inputs = {ob::value_info("x", {int64_t{1} << 32, int64_t{1} << 32, 4})};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "input x has shape [4294967296, 4294967296, 4]: its size overflows 64 bits");
}

TEST_CASE("onnx: a cycle between nodes is an error naming the node", "[onnx][error]") {
  ob::Model m = one_node("Add");
  // a = x + b; b = relu(a): node 0 reads b before anything defines it.
  m.nodes = {ob::node("Add", {"x", "b"}, {"a"}), ob::node("Relu", {"a"}, {"b"})};
  m.outputs = {ob::value_info("b", {})};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "node 0 'Add_node' (Add): input 'b' is not defined by any earlier node");
  // A node that reads its own output.
  m.nodes = {ob::node("Relu", {"r"}, {"r"})};
  m.outputs = {ob::value_info("r", {})};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "input 'r' is not defined by any earlier node");
}

TEST_CASE("onnx: missing node inputs and graph outputs are errors", "[onnx][error]") {
  ob::Model m = one_node("Add");
  m.nodes = {ob::node("Add", {"x"}, {"y"})};  // Add needs two inputs
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "node 0 'Add_node' (Add): input 1 is missing");
  m.nodes = {ob::node("Add", {"x", "ghost"}, {"y"})};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "input 'ghost' is not defined by any earlier node");
  m = one_node("Relu");
  m.outputs = {ob::value_info("nowhere", {})};
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "graph output 'nowhere' is not produced by any node");
  // A Constant node with no output to bind its value to.
  m = one_node("Relu");
  m.nodes.push_back(ob::node("Constant", {}, {}, {ob::attr_tensor("value", ob::float_tensor("", {1}, {2}))}));
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kInvalidArgument,
                "a Constant without an output");
}

TEST_CASE("onnx: an unknown operator is unimplemented, naming the node", "[onnx][error]") {
  require_error(onnx::import_from_memory(one_node("FrobnicateXyz").bytes()).status(),
                absl::StatusCode::kUnimplemented,
                "node 0 'FrobnicateXyz_node' (FrobnicateXyz): operator FrobnicateXyz is not supported");
}

TEST_CASE("onnx: attributes of the wrong type are errors, not silent defaults", "[onnx][error]") {
  // Softmax's axis as a float: read as an int it would be a silent 0 (a different softmax).
  require_error(onnx::import_from_memory(one_node("Softmax", {ob::attr_float("axis", 1.0f)}).bytes())
                    .status(),
                absl::StatusCode::kInvalidArgument,
                "node 0 'Softmax_node' (Softmax): attribute 'axis' is FLOAT, expected INT");
  require_error(
      onnx::import_from_memory(one_node("Transpose", {ob::attr_string("perm", "1,0")}).bytes())
          .status(),
      absl::StatusCode::kInvalidArgument, "attribute 'perm' is STRING, expected INTS");
  require_error(
      onnx::import_from_memory(one_node("LeakyRelu", {ob::attr_ints("alpha", {1})}).bytes()).status(),
      absl::StatusCode::kInvalidArgument, "attribute 'alpha' is INTS, expected FLOAT");
  // An int beyond int's range: 2^32 + 1 would truncate to axis 1.
  require_error(
      onnx::import_from_memory(one_node("Softmax", {ob::attr_int("axis", (int64_t{1} << 32) + 1)}).bytes())
          .status(),
      absl::StatusCode::kInvalidArgument, "attribute 'axis' = 4294967297 is out of range");
  require_error(
      onnx::import_from_memory(one_node("Transpose", {ob::attr_ints("perm", {int64_t{1} << 33, 0})}).bytes())
          .status(),
      absl::StatusCode::kInvalidArgument, "attribute 'perm' holds 8589934592, out of range");
  // The right types import.
  CHECK(onnx::import_from_memory(one_node("Softmax", {ob::attr_int("axis", 1)}).bytes()).ok());
  CHECK(onnx::import_from_memory(one_node("Transpose", {ob::attr_ints("perm", {1, 0})}).bytes()).ok());
}

TEST_CASE("onnx: an opset outside the supported range is unimplemented", "[onnx][error]") {
  ob::Model m = one_node("Relu");
  m.opset = 99;
  require_error(onnx::import_from_memory(m.bytes()).status(), absl::StatusCode::kUnimplemented,
                "ONNX opset 99 of the default domain is not supported");
}
