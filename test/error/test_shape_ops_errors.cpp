// Bad input to the data-movement operators and index reductions gives a clear absl::Status from
// the builder (kept by the graph and returned by compile()), never a crash.

#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;

namespace {

// The error a graph recorded: the builder status, which compile() returns as well.
void require_error(const Graph& g, const std::string& fragment) {
  absl::Status s = g.status();
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  REQUIRE(std::string(s.message()).find(fragment) != std::string::npos);
  auto compiled = Compiler().compile(g);
  REQUIRE(!compiled.ok());
  REQUIRE(compiled.status() == s);
}

}  // namespace

TEST_CASE("concat errors", "[shape_ops][error]") {
  {
    Graph g;
    Tensor c = g.concat({g.input("a", {3, 4}), g.input("b", {5, 4})}, 1);
    CHECK(!c.valid());
    require_error(g, "input 1 has 5 in dim 0 where input 0 has 3 (only dim 1 may differ)");
  }
  {
    Graph g;
    g.concat({g.input("a", {3, 4}), g.input("b", {3, 4})}, 2);
    require_error(g, "axis 2 is out of range for rank 2");
  }
  {
    Graph g;
    g.concat({g.input("a", {3, 4}), g.input("b", {3, 4}, DType::i32())}, 0);
    require_error(g, "input 1 is i32, input 0 is f32");
  }
  {
    Graph g;
    g.concat({g.input("a", {3, 4}), g.input("b", {3, 4, 1})}, 0);
    require_error(g, "input 1 has rank 3, input 0 has rank 2");
  }
  {
    Graph g;
    g.concat({g.input("a", {Dim("n"), 4}), g.input("b", {3, 4})}, 0);
    require_error(g, "symbolic dim n on the concat axis 0 (it must be static)");
  }
  {
    Graph g;
    g.concat({}, 0);
    require_error(g, "concat needs at least one input");
    CHECK(!concat({}, 0).valid());
  }
}

TEST_CASE("split and slice errors", "[shape_ops][error]") {
  {
    Graph g;
    std::vector<Tensor> parts = g.input("x", {7, 11}).split(-1, {2, 5});
    REQUIRE(parts.size() == 2);
    CHECK(!parts[0].valid());
    require_error(g, "sizes [2,5] sum to 7, not to dim 1 of extent 11");
  }
  {
    Graph g;
    g.input("x", {Dim("n"), 11}).split(0, {2, 5});
    require_error(g, "the split dim n is not static");
  }
  {
    Graph g;
    g.input("x", {7, 11}).split(0, {8, -1});
    require_error(g, "hold a negative size");
  }
  {
    Graph g;
    g.input("x", {7, 11}).slice({0}, {3}, {0}, {0});
    require_error(g, "slice step of axis 0 is 0");
  }
  {
    Graph g;
    g.input("x", {7, 11}).slice({0, 1}, {3});
    require_error(g, "slice has 2 starts but 1 ends");
  }
  {
    Graph g;
    g.input("x", {7, 11}).slice({0, 1}, {3, 4}, {1, -1});
    require_error(g, "slice axis -1 is repeated");
  }
  {
    Graph g;
    g.input("x", {7, 11}).slice({0}, {3}, {-3});
    require_error(g, "axis -3 is out of range for rank 2");
  }
  {
    Graph g;
    g.input("x", {Dim("n"), 11}).slice({0}, {3});
    require_error(g, "sliced dim 0 (n) must be static");
  }
}

TEST_CASE("gather errors", "[shape_ops][error]") {
  {
    Graph g;
    g.input("x", {5, 7}).gather(g.input("i", {3}), 0);  // f32 indices
    require_error(g, "gather indices must be i32 or i64, got f32");
  }
  {
    Graph g;
    g.input("x", {5, 7}).gather(g.input("i", {3}, DType::i64()), -3);
    require_error(g, "axis -3 is out of range for rank 2");
  }
  {
    Graph g;
    g.input("x", {5, 0}).gather(g.input("i", {3}, DType::i32()), 1);
    require_error(g, "gather along dim 1 of extent 0");
  }
}

TEST_CASE("pad errors", "[shape_ops][error]") {
  {
    Graph g;
    g.input("x", {3, 4}).pad({{1, 1}});
    require_error(g, "pad needs one {begin, end} per dim: 1 given for rank 2");
  }
  {
    Graph g;
    g.input("x", {3, 4}).pad({{0, 0}, {3, 4}}, PadMode::kReflect);
    require_error(g, "reflect pads of dim 1 (3, 4) must be smaller than its extent 4");
  }
  {
    Graph g;
    g.input("x", {3, 4}).pad({{0, -1}, {0, 0}});
    require_error(g, "pads of dim 0 are negative (0, -1); crop with slice instead");
  }
  {
    Graph g;
    g.input("x", {Dim("n"), 4}).pad({{1, 0}, {0, 0}}, PadMode::kEdge);
    require_error(g, "padded dim 0 (n) must be static");
  }
  {
    Graph g;
    g.input("x", {0, 4}).pad({{1, 0}, {0, 0}}, PadMode::kEdge);
    require_error(g, "edge padding of dim 0 of extent 0");
  }
}

TEST_CASE("flatten, squeeze, unsqueeze and expand errors", "[shape_ops][error]") {
  {
    Graph g;
    g.input("x", {3, 4}).flatten(3);
    require_error(g, "flatten axis 3 is out of range [-2, 2]");
  }
  {
    Graph g;
    g.input("x", {Dim("b"), Dim("s"), 4}).flatten(2);
    require_error(g, "flattened dims [b, s] multiply symbolic dims");
  }
  {
    Graph g;
    g.input("x", {1, 3}).squeeze({1});
    require_error(g, "squeezed dim 1 is 3, not 1");
  }
  {
    Graph g;
    g.input("x", {Dim("b"), 3}).squeeze({0});
    require_error(g, "squeezed dim 0 is b, not 1");
  }
  {
    Graph g;
    g.input("x", {1, 3}).unsqueeze({1, -3});  // both dim 1 of the rank-4 output
    require_error(g, "unsqueeze axis -3 is repeated");
  }
  {
    Graph g;
    g.input("x", {1, 3}).unsqueeze({3});
    require_error(g, "axis 3 is out of range for rank 3");
  }
  {
    Graph g;
    g.input("x", {2, 3}).expand({4, 3});
    require_error(g, "do not broadcast (dim 2 vs 4)");
  }
}

TEST_CASE("index reduction errors", "[shape_ops][error]") {
  {
    Graph g;
    g.input("x", {2, 3}).argmax(2);
    require_error(g, "axis 2 is out of range for rank 2");
  }
  {
    Graph g;
    g.input("x", {2, 0}).argmin(1);
    require_error(g, "argmin over dim 1 of extent 0");
  }
  {
    Graph g;
    g.input("x", {2, 3}, DType::boolean()).argmax(0);
    require_error(g, "argmax of a bool tensor");
  }
  {
    Graph g;
    g.input("x", {2, 3}).prod({1, -1});
    require_error(g, "axis -1 is repeated");
  }
  {
    Graph g;
    g.input("x", {2, 3}).min({5});
    require_error(g, "axis 5 is out of range for rank 2");
  }
}
