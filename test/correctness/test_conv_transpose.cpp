// conv_transpose2d against a scatter-form reference in plain C++ (each input pixel adds its
// taps into the output), with strides, asymmetric padding, output padding, dilation and groups.

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

NDArray scatter_reference(const NDArray& x, const NDArray& w, const ConvTranspose2dOptions& o) {
  const int64_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], wd = x.shape()[3];
  const int64_t og = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3];
  const int64_t cg = c / o.groups, oc = og * o.groups;
  const int64_t oh = o.stride.h * (h - 1) + o.output_padding.h + o.dilation.h * (kh - 1) + 1 -
                     o.padding.top - o.padding.bottom;
  const int64_t ow = o.stride.w * (wd - 1) + o.output_padding.w + o.dilation.w * (kw - 1) + 1 -
                     o.padding.left - o.padding.right;
  std::vector<double> acc(static_cast<size_t>(n * oc * oh * ow), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t z = 0; z < wd; ++z)
          for (int64_t j = 0; j < og; ++j)
            for (int64_t p = 0; p < kh; ++p)
              for (int64_t q = 0; q < kw; ++q) {
                int64_t yy = y * o.stride.h + p * o.dilation.h - o.padding.top;
                int64_t zz = z * o.stride.w + q * o.dilation.w - o.padding.left;
                if (yy < 0 || yy >= oh || zz < 0 || zz >= ow) continue;
                int64_t out_c = ci / cg * og + j;
                acc[static_cast<size_t>(((b * oc + out_c) * oh + yy) * ow + zz)] +=
                    x.get(((b * c + ci) * h + y) * wd + z) * w.get(((ci * og + j) * kh + p) * kw + q);
              }
  NDArray out(DType::f32(), {n, oc, oh, ow});
  for (int64_t i = 0; i < out.numel(); ++i) out.set(i, acc[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

TEST_CASE("conv_transpose2d matches a scatter reference", "[conv_transpose]") {
  struct Case {
    std::vector<int64_t> x, w;
    ConvTranspose2dOptions o;
  };
  const Case cases[] = {
      {{1, 3, 5, 7}, {3, 4, 3, 3}, {}},
      {{2, 4, 5, 6}, {4, 3, 3, 2}, {.stride = 2, .padding = {1, 0, 0, 1}, .output_padding = 1}},
      {{1, 6, 7, 5}, {6, 2, 3, 3}, {.stride = {2, 3}, .padding = 1, .groups = 3}},
      {{1, 2, 4, 4}, {2, 5, 2, 3}, {.stride = 1, .padding = {0, 1, 1, 0}, .dilation = 2}},
  };
  for (const Case& c : cases) {
    INFO(shape_to_string(c.x) << " " << shape_to_string(c.w));
    Graph g;
    NDArray w = random_array(DType::f32(), c.w);
    g.output(g.input("x", {c.x[0], c.x[1], c.x[2], c.x[3]}).conv_transpose2d(g.constant("w", w), c.o));
    CompileOptions options;
    options.poison_buffers = true;
    auto compiled = Compiler().compile(g, options);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    NDArray x = random_array(DType::f32(), c.x);
    auto got = compiled->run({x});
    REQUIRE(got.ok());
    NDArray want = scatter_reference(x, w, c.o);
    require_close((*got)[0], want, 1e-5, 1e-5);
    require_close(reference_run(g, {x})[0], want, 1e-5, 1e-5);
  }
}

TEST_CASE("conv_transpose2d: shape errors", "[conv_transpose][error]") {
  auto status = [](std::vector<int64_t> xs, std::vector<int64_t> ws, ConvTranspose2dOptions o) {
    Graph g;
    Tensor x = g.input("x", {xs[0], xs[1], xs[2], xs[3]});
    g.output(x.conv_transpose2d(g.constant("w", NDArray(DType::f32(), ws)), o));
    return Compiler().compile(g).status();
  };
  auto require_error = [](const absl::Status& s, const std::string& fragment) {
    INFO(s.ToString());
    REQUIRE(!s.ok());
    CHECK(s.message().find(fragment) != std::string::npos);
  };
  require_error(status({1, 3, 4, 4}, {2, 2, 3, 3}, {}), "does not match input channels 3");
  require_error(status({1, 3, 4, 4}, {3, 2, 3, 3}, {.stride = 2, .output_padding = 2}),
                "output_padding must be smaller");
  require_error(status({1, 3, 4, 4}, {3, 2, 3, 3}, {.stride = 0}), "must be positive");
  require_error(status({1, 3, 2, 2}, {3, 2, 1, 1}, {.padding = 1}), "output would be empty");
}
