// batch_norm, instance_norm and conv1d (compositions of other ops) against plain C++ references,
// and their shape errors.

#include <cmath>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::compile_and_run;
using loom::testing::require_close;

namespace {

void require_error(const Graph& g, const std::string& fragment) {
  absl::Status s = Compiler().compile(g).status();
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.message().find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("batch_norm and instance_norm match plain C++", "[norms]") {
  const int64_t n = 2, c = 5, h = 7, w = 3, plane = h * w;
  NDArray x = random_array(DType::f32(), {n, c, h, w}, -2, 2);
  NDArray scale = random_array(DType::f32(), {c}), bias = random_array(DType::f32(), {c});
  NDArray mean = random_array(DType::f32(), {c}), var = random_array(DType::f32(), {c}, 0.1, 2);
  Graph g;
  Tensor xt = g.input("x", {n, c, h, w});
  Tensor st = g.input("scale", {c}), bt = g.input("bias", {c});
  g.output(xt.batch_norm(st, bt, g.constant("mean", mean), g.constant("var", var), 1e-3));
  g.output(xt.instance_norm(st, bt, 1e-4));
  std::vector<NDArray> got = compile_and_run(g, {x, scale, bias});
  NDArray bn(DType::f32(), {n, c, h, w}), in(DType::f32(), {n, c, h, w});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < plane; ++i) sum += x.get((b * c + k) * plane + i);
      const double mu = sum / plane;
      for (int64_t i = 0; i < plane; ++i) sq += std::pow(x.get((b * c + k) * plane + i) - mu, 2);
      const double sd = std::sqrt(sq / plane + 1e-4);
      for (int64_t i = 0; i < plane; ++i) {
        const int64_t at = (b * c + k) * plane + i;
        bn.set(at, (x.get(at) - mean.get(k)) / std::sqrt(var.get(k) + 1e-3) * scale.get(k) + bias.get(k));
        in.set(at, (x.get(at) - mu) / sd * scale.get(k) + bias.get(k));
      }
    }
  require_close(got[0], bn, 1e-5, 1e-5);
  require_close(got[1], in, 1e-4, 1e-4);

  Graph bad;
  Tensor bx = bad.input("x", {2, 3, 4});
  bad.output(bx.batch_norm(bad.input("s", {3, 1}), bad.input("b", {3}), bad.input("m", {3}), bad.input("v", {3})));
  require_error(bad, "must be 1-D");
  Graph flat;
  flat.output(flat.input("x", {4, 3}).instance_norm(flat.input("s", {3}), flat.input("b", {3})));
  require_error(flat, "rank >= 3");
}

TEST_CASE("conv1d matches plain C++", "[conv1d]") {
  const int64_t n = 2, c = 4, l = 29, o = 6, k = 5, groups = 2;
  NDArray x = random_array(DType::f32(), {n, c, l});
  NDArray w = random_array(DType::f32(), {o, c / groups, k});
  Conv2dOptions opt;
  opt.stride = {1, 2};
  opt.dilation = {1, 2};
  opt.padding = Conv2dOptions::Padding(0, 3, 0, 1);
  opt.groups = static_cast<int>(groups);
  Graph g;
  g.output(g.input("x", {n, c, l}).conv1d(g.constant("w", w), opt));
  NDArray got = compile_and_run(g, {x})[0];
  const int64_t ol = (l + 3 + 1 - 2 * (k - 1) - 1) / 2 + 1;
  REQUIRE(got.shape() == std::vector<int64_t>{n, o, ol});
  NDArray want(DType::f32(), {n, o, ol});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t y = 0; y < ol; ++y) {
        double acc = 0;
        const int64_t g0 = oc / (o / groups) * (c / groups);
        for (int64_t ci = 0; ci < c / groups; ++ci)
          for (int64_t t = 0; t < k; ++t) {
            const int64_t at = y * 2 + t * 2 - 3;
            if (at >= 0 && at < l) acc += x.get((b * c + g0 + ci) * l + at) * w.get((oc * (c / groups) + ci) * k + t);
          }
        want.set((b * o + oc) * ol + y, acc);
      }
  require_close(got, want, 1e-5, 1e-5);
  Graph bad;
  bad.output(bad.input("x", {1, 4, 9, 9}).conv1d(bad.input("w", {2, 4, 3})));
  require_error(bad, "conv1d needs [N, C, L]");
}
