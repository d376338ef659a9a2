// The README's code fragments, compiled and checked: each sits between snippet markers that
// test/package/check_readme_snippets.cmake compares with the README's block, so the README
// shows code that builds and does what its text says.

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "graph_reference.hpp"
#include "loom/ir/op.hpp"
#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

// A graph over Dim("seq"), prepared for three lengths the way README.md shows.
absl::StatusOr<CompiledGraph> prepare(const Compiler& compiler, const Graph& graph) {
  // snippet-begin: specialize (shown in README.md)
  LOOM_ASSIGN_OR_RETURN(loom::CompiledGraph bert, compiler.compile(graph));  // over Dim("seq")
  for (int64_t seq : {32, 128, 384})
    if (auto s = bert.specialize({{"seq", seq}}); !s.ok()) return s.status();
  // snippet-end: specialize
  return bert;
}

// README's first example, as an engine's function.
absl::StatusOr<std::vector<NDArray>> build_and_run(const NDArray& weights, const NDArray& bias,
                                                   const NDArray& input) {
  // snippet-begin: using (shown in README.md)
  loom::Graph g;
  loom::Tensor x = g.input("x", {loom::Dim("batch"), 64});
  loom::Tensor w = g.constant("w", weights);  // a loom::NDArray
  g.output(x.matmul(w).add(g.constant("b", bias)).gelu().softmax(-1));

  // Shape, dtype and rank errors arrive here as an absl::Status.
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g);
  if (!compiled.ok()) return compiled.status();
  return compiled->run({input});  // absl::StatusOr<std::vector<loom::NDArray>>
  // snippet-end: using
}

}  // namespace

TEST_CASE("README: build, compile and run a graph", "[readme]") {
  const NDArray weights = random_array(DType::f32(), {64, 24});
  const NDArray bias = random_array(DType::f32(), {24});
  const NDArray input = random_array(DType::f32(), {3, 64});
  auto out = build_and_run(weights, bias, input);
  REQUIRE(out.ok());
  // softmax(gelu(x w + b)) row by row, in double precision.
  NDArray want(DType::f32(), {3, 24});
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<double> row(24);
    double max = -INFINITY, sum = 0;
    for (int64_t j = 0; j < 24; ++j) {
      double acc = bias.get(j);
      for (int64_t k = 0; k < 64; ++k) acc += input.get(i * 64 + k) * weights.get(k * 24 + j);
      row[j] = 0.5 * acc * (1 + std::erf(acc / std::sqrt(2.0)));
      max = std::max(max, row[j]);
    }
    for (double& v : row) sum += v = std::exp(v - max);
    for (int64_t j = 0; j < 24; ++j) want.set(i * 24 + j, row[j] / sum);
  }
  require_close((*out)[0], want);
}

TEST_CASE("README: prepare the shapes an engine serves", "[readme]") {
  Graph graph;
  Tensor x = graph.input("x", {Dim("seq"), 16});
  graph.output(x.mul(2.0).softmax(-1));
  auto bert = prepare(Compiler(), graph);
  REQUIRE(bert.ok());
  CHECK(bert->num_specializations() == 3);
  NDArray in = random_array(DType::f32(), {128, 16});
  auto got = bert->run({in});
  REQUIRE(got.ok());
  auto bound = graph.bind_dims({{"seq", 128}});
  REQUIRE(bound.ok());
  require_close((*got)[0], reference_run(*bound, {in})[0]);
}

TEST_CASE("README: list the kernels and time each", "[readme]") {
  Graph g;
  Tensor x = g.input("x", {5, 32});
  g.output(x.matmul(g.constant("w", random_array(DType::f32(), {32, 8}))).relu().softmax(-1));
  const std::vector<NDArray> inputs = {random_array(DType::f32(), {5, 32})};
  // snippet-begin: kernels (shown in README.md)
  auto compiled = loom::Compiler().compile(g);
  for (const loom::KernelInfo& k : compiled->kernels())  // kernel, operators it computes
    std::printf("%s: %zu ops, %s\n", k.name.c_str(), k.ops.size(), k.schedule.c_str());
  auto ms = compiled->profile(inputs, /*runs=*/10);  // median ms per kernel, same order
  // snippet-end: kernels
  REQUIRE(ms.ok());
  REQUIRE(ms->size() == compiled->kernels().size());
  size_t ops = 0;
  for (const KernelInfo& k : compiled->kernels()) ops += k.ops.size();
  CHECK(ops == 3);  // matmul, relu and softmax, each in one kernel
}

TEST_CASE("README: store a tensor NCHW16c", "[readme]") {
  Graph g;
  Tensor x = g.input("x", {1, 64, 56, 56});
  // snippet-begin: layout (shown in README.md)
  loom::Layout nchw16c =
      loom::Layout::row_major({ir::Expr(1), ir::Expr(64), ir::Expr(56), ir::Expr(56)})
          .split(1, 16)
          .reorder({0, 1, 3, 4, 2});             // physical [1, 4, 56, 56, 16]
  Tensor blocked = x.layout_transform(nchw16c);  // the same values, stored NCHW16c
  // snippet-end: layout
  std::vector<int64_t> physical;
  for (const ir::Expr& e : nchw16c.physical_shape()) physical.push_back(*ir::as_const_int(e));
  CHECK(physical == std::vector<int64_t>{1, 4, 56, 56, 16});
  g.output(blocked.relu());
  NDArray in = random_array(DType::f32(), {1, 64, 56, 56});
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  auto got = compiled->run({in});
  REQUIRE(got.ok());
  require_close((*got)[0], reference_run(g, {in})[0]);
}

TEST_CASE("README: choose layouts jointly", "[readme][layout]") {
  Graph g;
  Tensor x = g.input("x", {1, 8, 9, 9});
  Tensor w = g.constant("w", random_array(DType::f32(), {32, 8, 3, 3}));
  g.output(x.conv2d(w, {.padding = 1}).relu());
  // snippet-begin: joint (shown in README.md)
  loom::CompileOptions o{.tune = loom::TuneLevel::kNone};
  o.layouts = loom::LayoutPolicy::kJoint;  // or kFixed with o.fixed_layout, or kRowMajor
  // snippet-end: joint
  o.use_cache = false;
  NDArray in = random_array(DType::f32(), {1, 8, 9, 9});
  auto compiled = Compiler().compile(g, o);
  REQUIRE(compiled.ok());
  auto got = compiled->run({in});
  REQUIRE(got.ok());
  require_close((*got)[0], reference_run(g, {in})[0], 1e-4, 1e-5);
}

TEST_CASE("README: import an ONNX model", "[readme][onnx]") {
  // snippet-begin: onnx (shown in README.md)
  absl::StatusOr<loom::Graph> g = loom::onnx::import("model.onnx");  // or import_from_memory(bytes)
  // snippet-end: onnx
  // No model.onnx where tests run: the promised error, naming the file.
  REQUIRE(!g.ok());
  CHECK(g.status().code() == absl::StatusCode::kNotFound);
  CHECK(g.status().message().find("model.onnx") != std::string::npos);
}
