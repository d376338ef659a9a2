// layer_norm rejects bad input with a clear absl::Status: dtype, gamma/beta shape, axis, epsilon.

#include <catch2/catch.hpp>

#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"

using namespace loom;

namespace {

absl::Status compile_status(const Graph& g) {
  return Compiler().compile(g).status();
}

void require_error(const absl::Status& s, const std::string& fragment) {
  INFO("status: " << s.ToString());
  REQUIRE(s.code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(std::string(s.message()).find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("layer_norm: a non-float input is rejected", "[error][rows]") {
  Graph g;
  Tensor x = g.input("x", {3, 4}, DType::i32());
  g.output(x.layer_norm(g.input("g", {4}, DType::i32()), g.input("b", {4}, DType::i32())));
  require_error(compile_status(g), "layer_norm needs a floating-point tensor, got i32");
}

TEST_CASE("layer_norm: gamma and beta must match the normalized dims", "[error][rows]") {
  {
    Graph g;
    Tensor x = g.input("x", {3, 4, 5});
    g.output(x.layer_norm(g.input("g", {4}), g.input("b", {5})));
    require_error(compile_status(g),
                  "layer_norm gamma has shape [4], expected the normalized dims [5] of x "
                  "[3, 4, 5] (axis 2)");
  }
  {
    Graph g;
    Tensor x = g.input("x", {3, 4, 5});
    g.output(x.layer_norm(g.input("g", {4, 5}), g.input("b", {5}), 1));
    require_error(compile_status(g), "layer_norm beta has shape [5], expected the normalized dims");
  }
  {
    Graph g;
    Tensor x = g.input("x", {3, 4});
    g.output(x.layer_norm(g.input("g", {4}), g.input("b", {4}, DType::f16())));
    require_error(compile_status(g), "layer_norm beta has dtype f16, x has f32");
  }
}

TEST_CASE("layer_norm: bad axis and epsilon", "[error][rows]") {
  {
    Graph g;
    Tensor x = g.input("x", {3, 4});
    g.output(x.layer_norm(g.input("g", {4}), g.input("b", {4}), 2));
    require_error(compile_status(g), "axis 2 is out of range for rank 2");
  }
  {
    Graph g;
    Tensor x = g.input("x", {3, 4});
    g.output(x.layer_norm(g.input("g", {4}), g.input("b", {4}), -3));
    require_error(compile_status(g), "axis -3 is out of range for rank 2");
  }
  {
    Graph g;
    Tensor x = g.input("x", {3, 4});
    g.output(x.layer_norm(g.input("g", {4}), g.input("b", {4}), -1, -1.0));
    require_error(compile_status(g), "epsilon must be finite and >= 0");
  }
  {
    Graph g;
    g.output(g.apply("layer_norm", {g.input("x", {3}), g.input("g", {3})},
                     std::make_shared<ops::LayerNormAttrs>()));
    require_error(compile_status(g), "layer_norm takes 3 inputs, got 2");
  }
}
