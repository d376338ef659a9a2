// Bad input to the elementwise operators (wrong dtypes, shapes that do not broadcast, bad
// attributes) gives an absl::Status from compile() that names the operator and the problem.

#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"
#include "test_util.hpp"

using namespace loom;

namespace {

void require_error(const Graph& g, const std::vector<std::string>& fragments) {
  absl::Status s = Compiler().compile(g).status();
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  for (const std::string& f : fragments) {
    INFO("missing: " << f);
    CHECK(std::string(s.message()).find(f) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("float-only elementwise ops reject integer and bool tensors", "[error][elementwise]") {
  using Build = Tensor (*)(const Tensor&);
  std::vector<std::pair<const char*, Build>> ops = {
      {"leaky_relu", [](const Tensor& x) { return x.leaky_relu(); }},
      {"elu", [](const Tensor& x) { return x.elu(); }},
      {"erf", [](const Tensor& x) { return x.erf(); }},
      {"hard_sigmoid", [](const Tensor& x) { return x.hard_sigmoid(); }},
      {"hard_swish", [](const Tensor& x) { return x.hard_swish(); }},
      {"swish", [](const Tensor& x) { return x.swish(); }},
      {"log", [](const Tensor& x) { return x.log(); }},
      {"sqrt", [](const Tensor& x) { return x.sqrt(); }},
      {"reciprocal", [](const Tensor& x) { return x.reciprocal(); }},
      {"floor", [](const Tensor& x) { return x.floor(); }},
      {"ceil", [](const Tensor& x) { return x.ceil(); }},
  };
  for (const auto& [name, build] : ops) {
    for (DType t : {DType::i32(), DType::boolean()}) {
      INFO(name << " of " << t.to_string());
      Graph g;
      Tensor y = build(g.input("x", {3, 5}, t));
      CHECK(!y.valid());
      g.output(y);
      require_error(g, {std::string(name) + "(x: " + t.to_string() + "[3, 5])",
                        "needs a floating-point tensor, got " + t.to_string()});
    }
  }
}

TEST_CASE("abs, neg, clip, minimum and maximum reject bool tensors", "[error][elementwise]") {
  {
    Graph g;
    g.output(g.input("x", {4}, DType::boolean()).abs());
    require_error(g, {"abs(", "arithmetic on bool tensors"});
  }
  {
    Graph g;
    g.output(g.input("x", {4}, DType::boolean()).neg());
    require_error(g, {"neg(", "arithmetic on bool tensors"});
  }
  {
    Graph g;
    g.output(g.input("x", {4}, DType::boolean()).clip(0, 1));
    require_error(g, {"clip(", "arithmetic on bool tensors"});
  }
  {
    Graph g;
    Tensor a = g.input("a", {4}, DType::boolean()), b = g.input("b", {4}, DType::boolean());
    g.output(a.maximum(b));
    require_error(g, {"maximum(", "arithmetic on bool tensors"});
  }
}

TEST_CASE("pow needs floating-point tensors", "[error][elementwise]") {
  Graph g;
  Tensor a = g.input("a", {4}, DType::i32()), b = g.input("b", {4}, DType::i32());
  g.output(a.pow(b));
  require_error(g, {"pow(a: i32[4], b: i32[4])", "needs a floating-point tensor, got i32"});
}

TEST_CASE("binary elementwise ops reject shapes that do not broadcast", "[error][elementwise]") {
  using Build = Tensor (*)(const Tensor&, const Tensor&);
  std::vector<std::pair<const char*, Build>> ops = {
      {"pow", [](const Tensor& a, const Tensor& b) { return a.pow(b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return a.minimum(b); }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return a.maximum(b); }},
      {"equal", [](const Tensor& a, const Tensor& b) { return a.equal(b); }},
      {"less", [](const Tensor& a, const Tensor& b) { return a.less(b); }},
      {"less_equal", [](const Tensor& a, const Tensor& b) { return a.less_equal(b); }},
      {"greater", [](const Tensor& a, const Tensor& b) { return a.greater(b); }},
      {"greater_equal", [](const Tensor& a, const Tensor& b) { return a.greater_equal(b); }},
  };
  for (const auto& [name, build] : ops) {
    INFO(name);
    Graph g;
    g.output(build(g.input("a", {7, 1, 13}), g.input("b", {5, 3})));
    require_error(g, {std::string(name) + "(a: f32[7, 1, 13], b: f32[5, 3])",
                      "shapes [7, 1, 13] and [5, 3] do not broadcast (dim 13 vs 3)"});
  }
}

TEST_CASE("comparisons need operands of one dtype", "[error][elementwise]") {
  Graph g;
  g.output(g.input("a", {3}, DType::f32()).less(g.input("b", {3}, DType::f16())));
  require_error(g, {"less(", "dtypes f32 and f16 differ"});
}

TEST_CASE("where checks its condition, value dtypes and shapes", "[error][elementwise]") {
  {
    Graph g;
    Tensor c = g.input("c", {3}), a = g.input("a", {3}), b = g.input("b", {3});
    g.output(where(c, a, b));
    require_error(g, {"where(c: f32[3], a: f32[3], b: f32[3])",
                      "the condition must be a bool tensor, got f32"});
  }
  {
    Graph g;
    Tensor c = g.input("c", {3}, DType::boolean());
    g.output(c.where(g.input("a", {3}), g.input("b", {3}, DType::i32())));
    require_error(g, {"the values' dtypes f32 and i32 differ"});
  }
  {
    Graph g;
    Tensor c = g.input("c", {4, 1}, DType::boolean());
    g.output(c.where(g.input("a", {3}), g.input("b", {5, 3})));
    require_error(g, {"shapes [4, 1] and [5, 3] do not broadcast (dim 4 vs 5)"});
  }
  {
    Graph g;
    Tensor c = g.input("c", {3}, DType::boolean());
    g.output(c.where(g.input("a", {3}), g.input("b", {4})));
    require_error(g, {"shapes [3] and [4] do not broadcast"});
  }
  {
    Graph g;
    Tensor c = g.input("c", {3}, DType::boolean());
    g.output(g.apply("where", {c, g.input("a", {3})}));
    require_error(g, {"where takes 3 inputs, got 2"});
  }
}

TEST_CASE("clip bounds must suit the tensor", "[error][elementwise]") {
  {
    Graph g;
    g.output(g.input("x", {3}, DType::i32()).clip(-1.5, 4));
    require_error(g, {"clip(x: i32[3])", "clip bound -1.5 of an i32 tensor is not a whole number"});
  }
  {
    Graph g;
    g.output(g.input("x", {3}).clip(std::nan(""), 4));
    require_error(g, {"clip bound is NaN"});
  }
}

TEST_CASE("cast needs a scalar dtype and typed attributes", "[error][elementwise]") {
  {
    Graph g;
    g.output(g.input("x", {3}).cast(DType::f32(8)));
    require_error(g, {"cast to f32x8: tensor elements are scalars, not vectors"});
  }
  {
    Graph g;
    g.output(g.input("x", {3}).apply("cast"));
    require_error(g, {"cast expects attributes of type"});
  }
}

TEST_CASE("log_softmax checks its dtype and axis", "[error][elementwise]") {
  {
    Graph g;
    g.output(g.input("x", {3, 4}, DType::i32()).log_softmax());
    require_error(g, {"log_softmax needs a floating-point tensor, got i32"});
  }
  {
    Graph g;
    g.output(g.input("x", {3, 4}).log_softmax(2));
    require_error(g, {"axis 2 is out of range for rank 2"});
  }
}
