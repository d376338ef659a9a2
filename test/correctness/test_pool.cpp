// max_pool2d / avg_pool2d against a plain C++ reference on odd and prime shapes, strides and
// asymmetric padding, and their shape errors.

#include <algorithm>
#include <limits>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

// The pooling spec in plain C++: padded positions are skipped.
NDArray naive_pool(const NDArray& x, const Pool2dOptions& o, bool is_max) {
  const auto& s = x.shape();
  const int64_t n = s[0], c = s[1], h = s[2], w = s[3];
  const int64_t oh = (h + o.padding.top + o.padding.bottom - o.kernel.h) / o.stride.h + 1;
  const int64_t ow = (w + o.padding.left + o.padding.right - o.kernel.w) / o.stride.w + 1;
  NDArray out(DType::f32(), {n, c, oh, ow});
  for (int64_t b = 0; b < n * c; ++b)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t z = 0; z < ow; ++z) {
        double acc = is_max ? -std::numeric_limits<double>::infinity() : 0;
        int taps = 0;
        for (int i = 0; i < o.kernel.h; ++i)
          for (int j = 0; j < o.kernel.w; ++j) {
            int64_t iy = y * o.stride.h - o.padding.top + i, iz = z * o.stride.w - o.padding.left + j;
            if (iy < 0 || iy >= h || iz < 0 || iz >= w) continue;
            double v = x.get((b * h + iy) * w + iz);
            acc = is_max ? std::max(acc, v) : acc + v;
            ++taps;
          }
        out.set((b * oh + y) * ow + z, is_max ? acc : acc / taps);
      }
  return out;
}

absl::Status pool_status(Shape shape, Pool2dOptions o) {
  Graph g;
  g.output(g.input("x", std::move(shape)).max_pool2d(o));
  return Compiler().compile(g).status();
}

}  // namespace

TEST_CASE("pooling: max and average over odd shapes, strides and asymmetric padding", "[pool]") {
  struct Case {
    std::vector<int64_t> shape;
    Pool2dOptions options;
  };
  const Case cases[] = {
      {{1, 3, 13, 11}, {.kernel = 3, .stride = 2, .padding = 1}},    // ResNet's stem pool
      {{2, 5, 7, 9}, {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 0, 0, 2}}},
      {{1, 7, 17, 17}, {.kernel = 5, .stride = 3, .padding = {2, 1, 0, 4}}},
      {{3, 2, 5, 5}, {.kernel = 5}},                                   // one window: global
      {{1, 1, 1, 1}, {}},
  };
  for (const Case& c : cases) {
    for (bool is_max : {true, false}) {
      INFO((is_max ? "max " : "avg ") << shape_to_string(c.shape));
      Graph g;
      Tensor x = g.input("x", {c.shape[0], c.shape[1], c.shape[2], c.shape[3]});
      g.output(is_max ? x.max_pool2d(c.options) : x.avg_pool2d(c.options));
      CompileOptions options;
      options.poison_buffers = true;
      auto compiled = Compiler().compile(g, options);
      INFO(compiled.status().ToString());
      REQUIRE(compiled.ok());
      NDArray in = random_array(DType::f32(), c.shape, -3, 3);
      auto got = compiled->run({in});
      INFO(got.status().ToString());
      REQUIRE(got.ok());
      NDArray want = naive_pool(in, c.options, is_max);
      require_close((*got)[0], want, 1e-6, 1e-6);
      require_close(reference_run(g, {in})[0], want, 1e-6, 1e-6);
    }
  }
}

TEST_CASE("pooling: shape errors", "[pool][error]") {
  auto require_error = [](const absl::Status& s, const std::string& fragment) {
    INFO(s.ToString() << " (want: " << fragment << ")");
    REQUIRE(!s.ok());
    CHECK(s.message().find(fragment) != std::string::npos);
  };
  require_error(pool_status({3, 8, 8}, {.kernel = 2}), "must have rank 4");
  require_error(pool_status({1, 1, 8, 8}, {.kernel = 0}), "must be positive");
  require_error(pool_status({1, 1, 8, 8}, {.kernel = 2, .stride = {1, 0}}), "must be positive");
  require_error(pool_status({1, 1, 8, 8}, {.kernel = 2, .padding = {0, -1, 0, 0}}),
                "must be non-negative");
  require_error(pool_status({1, 1, 8, 8}, {.kernel = 2, .padding = 2}), "smaller than the window");
  require_error(pool_status({1, 1, 3, 8}, {.kernel = {5, 2}, .padding = {0, 1}}), "larger than the padded input");
  require_error(pool_status({1, 1, Dim("h"), 8}, {.kernel = 2}), "spatial dims must be static");
  Graph g;
  g.output(g.input("x", {1, 1, 4, 4}, DType::i32()).max_pool2d({.kernel = 2}));
  require_error(Compiler().compile(g).status(), "floating-point");
}
