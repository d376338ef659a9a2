// Bad input gives a clear absl::Status naming the problem, never a crash: graph building errors
// surface from compile(), run() validates its inputs.

#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"
#include "test_util.hpp"

using namespace loom;

namespace {

// The compile() status of a graph whose last builder call went wrong.
absl::Status compile_status(const Graph& g) {
  auto r = Compiler().compile(g);
  return r.status();
}

void require_error(const absl::Status& s, const std::string& fragment) {
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  REQUIRE(std::string(s.message()).find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("mismatched shapes in add", "[error]") {
  Graph g;
  Tensor a = g.input("a", {3, 4}), b = g.input("b", {5});
  Tensor c = a + b;
  CHECK(!c.valid());
  g.output(c);
  require_error(compile_status(g), "do not broadcast");
  require_error(g.status(), "[3, 4]");
}

TEST_CASE("matmul with mismatched inner dims or low rank", "[error]") {
  {
    Graph g;
    g.output(g.input("a", {3, 4}).matmul(g.input("b", {5, 6})));
    require_error(compile_status(g), "inner dimensions differ: 4 vs 5");
  }
  {
    Graph g;
    g.output(g.input("a", {4}).matmul(g.input("b", {4, 6})));
    require_error(compile_status(g), "rank >= 2");
  }
  {
    Graph g;
    g.output(g.input("a", {2, 3, 4}).matmul(g.input("b", {3, 4, 6})));
    require_error(compile_status(g), "do not broadcast");
  }
}

TEST_CASE("attention with mismatched shapes, ranks or dtypes", "[error]") {
  auto attention = [](Shape q, Shape kt, Shape v, DType vt = DType::f16()) {
    Graph g;
    g.output(g.apply("attention",
                     {g.input("q", q, DType::f16()), g.input("kt", kt, DType::f16()),
                      g.input("v", v, vt)},
                     std::make_shared<ops::AttentionAttrs>()));
    return compile_status(g);
  };
  require_error(attention({2, 5, 8}, {2, 8, 7}, {2, 7, 4}, DType::f32()), "one floating-point type");
  require_error(attention({5, 8}, {2, 8, 7}, {2, 7, 4}), "one rank >= 2");
  require_error(attention({2, 5, 8}, {3, 8, 7}, {2, 7, 4}), "batch dims differ");
  require_error(attention({2, 5, 8}, {2, 9, 7}, {2, 7, 4}), "q [..., S, D], kt [..., D, T]");
  require_error(attention({2, 5, 8}, {2, 8, 7}, {2, 6, 4}), "q [..., S, D], kt [..., D, T]");
  Graph missing;
  missing.output(missing.apply("attention", {missing.input("q", {2, 5, 8}, DType::f16()),
                                             missing.input("kt", {2, 8, 7}, DType::f16()),
                                             missing.input("v", {2, 7, 4}, DType::f16())}));
  require_error(compile_status(missing), "attention");
}

TEST_CASE("mismatched dtypes", "[error]") {
  Graph g;
  g.output(g.input("a", {3}, DType::f32()) + g.input("b", {3}, DType::i32()));
  require_error(compile_status(g), "dtypes f32 and i32 differ");
  Graph h;
  h.output(h.input("a", {3}, DType::i32()).gelu());
  require_error(compile_status(h), "floating-point");
}

TEST_CASE("bad axes, reshapes and permutations", "[error]") {
  {
    Graph g;
    g.output(g.input("x", {3, 4}).softmax(2));
    require_error(compile_status(g), "axis 2 is out of range for rank 2");
  }
  {
    Graph g;
    g.output(g.input("x", {3, 4}).sum({0, -2}));
    require_error(compile_status(g), "repeated");
  }
  {
    Graph g;
    g.output(g.input("x", {3, 4}).reshape({5, -1}));
    require_error(compile_status(g), "cannot reshape [3, 4] to [5, -1]");
  }
  {
    Graph g;
    g.output(g.input("x", {3, 4}).reshape({-1, -1}));
    require_error(compile_status(g), "more than one -1");
  }
  {
    Graph g;
    g.output(g.input("x", {Dim("n"), 4}).reshape({Dim("m"), 4}));
    require_error(compile_status(g), "symbolic dim m");
  }
  {
    Graph g;
    g.output(g.input("x", {3, 4, 5}).transpose({0, 0, 1}));
    require_error(compile_status(g), "not a permutation");
  }
}

TEST_CASE("the first error wins and later calls do not crash", "[error]") {
  Graph g;
  Tensor bad = g.input("a", {2}) + g.input("b", {3});
  Tensor worse = bad.relu().matmul(bad).softmax(7).reshape({1});
  CHECK(!worse.valid());
  CHECK(worse.shape().empty());
  g.output(worse);
  require_error(compile_status(g), "do not broadcast");
}

TEST_CASE("graph-level mistakes", "[error]") {
  {
    Graph g;
    g.input("x", {3});
    require_error(compile_status(g), "no outputs");
  }
  {
    Graph g;
    g.output(g.apply("no_such_op", {g.input("x", {3})}));
    require_error(compile_status(g), "unknown operator no_such_op");
  }
  {
    Graph g;
    g.output(g.apply("softmax", {g.input("x", {3})}));  // missing SoftmaxAttrs
    require_error(compile_status(g), "expects attributes");
  }
  {
    Graph g, other;
    Tensor x = other.input("x", {3});
    g.output(g.input("y", {3}) + x);
    require_error(compile_status(g), "belongs to another graph");
  }
  {
    Graph g;
    g.output(g.input("x", {3}).apply("add"));  // add needs two inputs
    require_error(compile_status(g), "takes 2 inputs, got 1");
  }
}

TEST_CASE("run() validates its inputs", "[error]") {
  Graph g;
  Tensor a = g.input("a", {Dim("n"), 4});
  Tensor b = g.input("b", {Dim("n"), 4});
  g.output(a + b);
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  NDArray ok(DType::f32(), {2, 4});
  NDArray ok3(DType::f32(), {3, 4});
  require_error(compiled->run({ok}).status(), "graph takes 2 inputs, got 1");
  require_error(compiled->run({ok, NDArray(DType::f32(), {2, 5})}).status(),
                "input 1 (b) has shape [2, 5], expected [n, 4]");
  require_error(compiled->run({ok, NDArray(DType::f32(), {2, 4, 1})}).status(), "has rank 3");
  require_error(compiled->run({ok, NDArray(DType::i32(), {2, 4})}).status(),
                "has dtype i32, expected f32");
  require_error(compiled->run({ok, ok3}).status(), "n = 3 but an earlier input bound it to 2");
  CHECK(compiled->run({ok, ok}).ok());
  CompiledGraph empty;
  require_error(empty.run({}).status(), "empty CompiledGraph");
}
