// Inputs the fuzz targets (test/fuzz) found to crash loom, each reduced to its essence: they must
// now give a clear error, or the right answer.

#include <catch2/catch.hpp>
#include <string>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "onnx_bytes.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
namespace ob = loom::testing::onnx_bytes;

TEST_CASE("fuzz regression: a reshape to a shape whose size overflows int64 is an error",
          "[error][fuzz]") {
  // fuzz_onnx_import: a Reshape whose shape constant multiplies past 2^63 (signed overflow).
  ob::Model m;
  m.inputs = {ob::value_info("x", {2, 3})};
  std::string dims;
  for (int64_t d : {int64_t{73014444037}, int64_t{5497558138890}})
    dims.append(reinterpret_cast<const char*>(&d), sizeof(d));
  m.initializers = {ob::tensor("s", {2}, ob::kInt64, dims)};
  m.nodes = {ob::node("Reshape", {"x", "s"}, {"y"})};
  m.outputs = {ob::value_info("y", {})};
  absl::Status s = onnx::import_from_memory(m.bytes()).status();
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains("its size overflows 64 bits"));

  Graph g;
  g.output(g.input("x", {2, 3}).reshape({int64_t{1} << 40, int64_t{1} << 40}));
  CHECK_THAT(std::string(g.status().message()), Catch::Contains("cannot reshape [2, 3]"));
}

TEST_CASE("fuzz regression: reductions of a rank-0 tensor return its element", "[error][fuzz]") {
  // fuzz_graph_builder: sum() of a scalar input reduced over no axes and aborted in the IR.
  Graph g;
  Tensor x = g.input("x", {});
  g.output(x.sum());
  g.output(x.mean({}, true));
  g.output(x.max());
  NDArray v(DType::f32(), {});
  v.set(0, 2.5);
  std::vector<NDArray> out = loom::testing::compile_and_run(g, {v});
  REQUIRE(out.size() == 3);
  for (const NDArray& o : out) {
    CHECK(o.shape().empty());
    CHECK(o.get(0) == 2.5);
  }
}

TEST_CASE("fuzz regression: a batched matmul with an empty batch runs", "[error][fuzz]") {
  // fuzz_graph_builder: the GEMM template tiled a zero batch and aborted (spatial(0, 1, 1)).
  Graph g;
  Tensor a = g.input("a", {0, 3, 4});
  g.output(a.matmul(g.input("b", {0, 4, 5})));
  g.output(a.matmul(g.constant("w", loom::testing::random_array(DType::f32(), {4, 5}))));
  std::vector<NDArray> out =
      loom::testing::compile_and_run(g, {NDArray(DType::f32(), {0, 3, 4}), NDArray(DType::f32(), {0, 4, 5})});
  REQUIRE(out.size() == 2);
  CHECK(out[0].shape() == std::vector<int64_t>{0, 3, 5});
  CHECK(out[1].shape() == std::vector<int64_t>{0, 3, 5});
}

TEST_CASE("fuzz regression: a Slice end of INT64_MAX means to the end", "[error][fuzz]") {
  // fuzz_onnx_import: integer inputs were read through double, so INT64_MAX (what exporters
  // write for "to the end") became 2^63, outside int64 (undefined; INT64_MIN on x86: an empty
  // slice).
  ob::Model m;
  m.inputs = {ob::value_info("x", {2, 5})};
  auto i64 = [](int64_t v) { return std::string(reinterpret_cast<const char*>(&v), sizeof(v)); };
  m.initializers = {ob::tensor("starts", {1}, ob::kInt64, i64(1)),
                    ob::tensor("ends", {1}, ob::kInt64, i64(INT64_MAX)),
                    ob::tensor("axes", {1}, ob::kInt64, i64(1))};
  m.nodes = {ob::node("Slice", {"x", "starts", "ends", "axes"}, {"y"})};
  m.outputs = {ob::value_info("y", {})};
  absl::StatusOr<Graph> g = onnx::import_from_memory(m.bytes());
  INFO(g.status().ToString());
  REQUIRE(g.ok());
  NDArray x = loom::testing::random_array(DType::f32(), {2, 5});
  std::vector<NDArray> out = loom::testing::compile_and_run(*g, {x});
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].shape() == std::vector<int64_t>{2, 4});
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 4; ++c) CHECK(out[0].get(r * 4 + c) == x.get(r * 5 + c + 1));
}

TEST_CASE("fuzz regression: an INT8 tensor holding a value out of range is an error",
          "[error][fuzz]") {
  // fuzz_onnx_import: a TensorProto of INT8 whose int32_data holds about 1.85e9 (an undefined
  // float-to-int8 conversion before).
  const std::string bytes("\x28\xf8\xfe\x87\xf3\x16\xfa\x0a\x14\x08\x01\x0a\x02\xff\xff\xff"
                          "alue\x1e\x00\x00\x00t_gr\x01\x10\x03",
                          31);
  absl::Status s = onnx::tensor_from_memory(bytes).status();
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains("outside [-128, 127]"));
  // Arrays saturate out-of-range values instead of converting them with undefined behaviour.
  NDArray a(DType::i8(), {3});
  a.set(0, 1e10);
  a.set(1, -1e10);
  a.set(2, std::nan(""));
  CHECK(a.get(0) == 127);
  CHECK(a.get(1) == -128);
  CHECK(a.get(2) == 0);
}

TEST_CASE("fuzz regression: a matmul over an empty K gives zeros", "[error][fuzz]") {
  // fuzz_graph_builder: [m, 0] x [0, n] reached the GEMM template, whose K blocks divided by a
  // block depth of 0. An empty K has no block: the default schedule runs it (zeros out).
  for (bool constant_b : {true, false}) {
    Graph g;
    Tensor a = g.input("a", {5, 0});
    Tensor b = constant_b ? g.constant("b", NDArray(DType::f32(), {0, 7})) : g.input("b", {0, 7});
    g.output(a.matmul(b).add(1.0));
    std::vector<NDArray> inputs = {NDArray(DType::f32(), {5, 0})};
    if (!constant_b) inputs.push_back(NDArray(DType::f32(), {0, 7}));
    const std::vector<NDArray> out = loom::testing::compile_and_run(g, inputs);
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].numel() == 35);
    for (int64_t i = 0; i < 35; ++i) CHECK(out[0].get(i) == 1.0);
  }
}

TEST_CASE("fuzz regression: a 2-D Conv or ConvTranspose with a weight not of rank 4 is an error",
          "[error][fuzz]") {
  // fuzz_onnx_import: a Conv of a rank-4 input by a rank-3 weight read the weight's kernel size
  // past its dims.
  for (const char* op : {"Conv", "ConvTranspose"}) {
    INFO(op);
    ob::Model m;
    m.inputs = {ob::value_info("x", {1, 2, 5, 5})};
    m.initializers = {ob::float_tensor("w", {2, 2, 3}, std::vector<float>(12, 0.5f))};
    m.nodes = {ob::node(op, {"x", "w"}, {"y"})};
    m.outputs = {ob::value_info("y", {})};
    absl::Status s = onnx::import_from_memory(m.bytes()).status();
    INFO(s.ToString());
    REQUIRE(!s.ok());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("needs a weight of rank 4, not 3"));
  }
}
