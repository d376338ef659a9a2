// Shapes whose byte size overflows 64 bits: graph inputs, operator outputs that multiply sizes
// (matmul, expand, pad, reshape) and symbolic dims bound later are clear errors, never a wrapped
// element count that sizes a buffer too small.

#include <catch2/catch.hpp>
#include <string>

#include "loom/loom.hpp"

using namespace loom;

namespace {

constexpr int64_t k2p32 = int64_t{1} << 32;
constexpr int64_t k2p31 = int64_t{1} << 31;

void require_overflow(const absl::Status& s, const std::string& fragment) {
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains(fragment));
  CHECK_THAT(std::string(s.message()), Catch::Contains("its size overflows 64 bits"));
}

absl::Status compile_status(const Graph& g) { return Compiler().compile(g).status(); }

}  // namespace

TEST_CASE("size overflow: a graph input of more than 2^63 bytes", "[error][overflow]") {
  Graph g;
  g.output(g.input("x", {k2p32, k2p32}).relu());  // 2^64 floats
  require_overflow(compile_status(g), "input x has shape [4294967296, 4294967296]");
  // Elements fit (2^62) but bytes (2^64) do not.
  Graph h;
  h.output(h.input("x", {k2p31, k2p31}, DType::f32()).relu());
  require_overflow(compile_status(h), "input x");
  // The same count of bytes fits: the graph is fine until something tries to run it.
  Graph ok;
  ok.output(ok.input("x", {k2p31, k2p31 / 2}, DType::boolean()).cast(DType::boolean()));
  CHECK(ok.status().ok());
}

TEST_CASE("size overflow: operator outputs that multiply sizes", "[error][overflow]") {
  {
    Graph g;  // [2^31, 1] x [1, 2^31]: each input 8 GiB, the product 2^64 bytes
    g.output(g.input("a", {k2p31, 1}).matmul(g.input("b", {1, k2p31})));
    require_overflow(compile_status(g), "the output of matmul has shape [2147483648, 2147483648]");
  }
  {
    Graph g;
    g.output(g.input("a", {k2p32, 1}).expand({k2p32, k2p32}));
    require_overflow(compile_status(g), "the output of");
  }
  {
    Graph g;
    g.output(g.input("a", {k2p32, 1}).pad({{0, 0}, {0, k2p32}}));
    require_overflow(compile_status(g), "the output of");
  }
}

TEST_CASE("size overflow: symbolic dims bound to huge values", "[error][overflow]") {
  Graph g;
  Tensor x = g.input("x", {Dim("n"), Dim("n")});
  g.output(x.relu());
  absl::StatusOr<Graph> bound = g.bind_dims({{"n", k2p32}});
  require_overflow(bound.status(), "with n=4294967296");
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  require_overflow(compiled->specialize({{"n", k2p32}}).status(), "n=4294967296");
  CHECK(compiled->specialize({{"n", 3}}).ok());
}

TEST_CASE("size overflow: an output too large to allocate is a run() error", "[error][overflow]") {
  // 2^50 floats (4 PiB): the shape is valid, the memory does not exist.
  Graph g;
  g.output(g.input("x", {1}).expand({int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 10}));
  auto compiled = Compiler().compile(g);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  NDArray x(DType::f32(), {1});
  x.set(0, 1);
  absl::Status s = compiled->run({x}).status();
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(s.message()), Catch::Contains("cannot allocate 4503599627370496 bytes"));
}
