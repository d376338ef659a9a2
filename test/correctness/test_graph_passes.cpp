// Graph passes: each removes what it promises (counted in the rewritten graph), keeps inputs and
// outputs, and the rewritten graph computes what the original did (the reference interpreter on
// the original graph, and plain C++ where the pass computes values itself).

#include <cmath>
#include <tuple>

#include "graph_reference.hpp"
#include "loom/graph/passes.hpp"
#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

int count_ops(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& node : g.nodes()) n += node.kind == Node::Kind::kOp && node.op == op;
  return n;
}

int count_kind(const Graph& g, Node::Kind kind) {
  int n = 0;
  for (const Node& node : g.nodes()) n += node.kind == kind;
  return n;
}

// Compiles `rewritten` without passes and checks it against the reference run of `original`.
void require_same_results(const Graph& original, const Graph& rewritten,
                          const std::vector<NDArray>& inputs, double tol = 1e-5) {
  CompileOptions options;
  options.graph_passes = false;
  options.poison_buffers = true;
  auto compiled = Compiler().compile(rewritten, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  auto got = compiled->run(inputs);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  std::vector<NDArray> want = reference_run(original, inputs);
  REQUIRE(got->size() == want.size());
  for (size_t k = 0; k < want.size(); ++k) require_close((*got)[k], want[k], tol, tol);
}

NDArray filled(std::vector<int64_t> shape, double v) {
  NDArray a(DType::f32(), std::move(shape));
  for (int64_t i = 0; i < a.numel(); ++i) a.set(i, v);
  return a;
}

}  // namespace

TEST_CASE("graph passes: identities go, inputs and outputs stay", "[graph_passes]") {
  Graph g;
  Tensor x = g.input("x", {7, 13});
  Tensor unused = g.input("unused", {3});
  Tensor y = x.reshape({7, 13}).transpose({0, 1}) + g.constant("zero", filled({13}, 0));
  y = y * g.constant("one", filled({7, 13}, 1));
  y = y.add(0.0).mul(1.0).relu();
  g.output(y);
  g.output(x.reshape({13, 7}));  // a real reshape stays
  auto r = passes::remove_identities(g);
  REQUIRE(r.ok());
  CHECK(count_ops(*r, "reshape") == 1);
  CHECK(count_ops(*r, "transpose") == 0);
  CHECK(count_ops(*r, "add") + count_ops(*r, "mul") + count_ops(*r, "add_scalar") +
            count_ops(*r, "mul_scalar") == 0);
  CHECK(count_ops(*r, "relu") == 1);
  REQUIRE(r->inputs().size() == 2);
  CHECK(r->nodes()[r->inputs()[1]].name == "unused");
  require_same_results(g, *r, {random_array(DType::f32(), {7, 13}), random_array(DType::f32(), {3})});

  // A broadcasting add of zeros changes the shape: it stays.
  Graph b;
  Tensor v = b.input("v", {5});
  b.output(v + b.constant("zeros", filled({3, 5}, 0)));
  auto rb = passes::remove_identities(b);
  REQUIRE(rb.ok());
  CHECK(count_ops(*rb, "add") == 1);
}

TEST_CASE("graph passes: common subexpressions are computed once", "[graph_passes]") {
  Graph g;
  Tensor x = g.input("x", {5, 11});
  NDArray w = random_array(DType::f32(), {11, 3});
  Tensor a = x.matmul(g.constant("w1", w)).relu();
  Tensor b = x.matmul(g.constant("w2", w)).relu();  // same array: the same constant
  Tensor c = x.matmul(g.constant("w3", random_array(DType::f32(), {11, 3}))).relu();
  g.output(a + b);
  g.output(a * c);
  auto r = passes::eliminate_common_subexpressions(g);
  REQUIRE(r.ok());
  CHECK(count_ops(*r, "matmul") == 2);
  CHECK(count_ops(*r, "relu") == 2);
  CHECK(count_kind(*r, Node::Kind::kConstant) == 2);
  require_same_results(g, *r, {random_array(DType::f32(), {5, 11})});
}

TEST_CASE("graph passes: constant subgraphs are folded into constants", "[graph_passes]") {
  Graph g;
  Tensor x = g.input("x", {4, 9});
  NDArray c = random_array(DType::f32(), {9});
  Tensor folded = g.constant("c", c).exp() + g.constant("c2", c);  // exp(c) + c
  g.output(x * folded);
  g.output(folded.mul(2.0));  // an output that is entirely constant
  auto r = passes::fold_constants(g);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  CHECK(count_ops(*r, "exp") == 0);
  CHECK(count_ops(*r, "mul_scalar") == 0);
  CHECK(count_ops(*r, "mul") == 1);
  // The folded value, checked in plain C++.
  const Node& k = r->nodes()[r->outputs()[1]];
  REQUIRE(k.kind == Node::Kind::kConstant);
  for (int64_t i = 0; i < 9; ++i)
    CHECK(std::fabs(k.value.get(i) - 2 * (std::exp(c.get(i)) + c.get(i))) < 1e-4);
  require_same_results(g, *r, {random_array(DType::f32(), {4, 9})}, 1e-4);
}

TEST_CASE("graph passes: batch norm after a convolution folds into its weights", "[graph_passes]") {
  const int64_t o = 6;
  NDArray w = random_array(DType::f32(), {o, 5, 3, 3});
  NDArray scale = random_array(DType::f32(), {o, 1, 1}, 0.5, 2);
  NDArray shift = random_array(DType::f32(), {o, 1, 1});
  Graph g;
  Tensor x = g.input("x", {1, 5, 9, 11});
  Tensor conv = x.conv2d(g.constant("w", w), {.stride = 2, .padding = 1});
  g.output(conv * g.constant("scale", scale) + g.constant("shift", shift));
  auto r = passes::fold_batch_norm_into_conv(g);
  REQUIRE(r.ok());
  CHECK(count_ops(*r, "mul") == 0);
  CHECK(count_ops(*r, "conv2d") == 1);
  CHECK(count_ops(*r, "add") == 1);
  require_same_results(g, *r, {random_array(DType::f32(), {1, 5, 9, 11})}, 1e-4);

  // Not folded: the conv result is read elsewhere too, or the scale is not per channel.
  Graph shared;
  Tensor xs = shared.input("x", {1, 5, 9, 11});
  Tensor cs = xs.conv2d(shared.constant("w", w));
  shared.output(cs * shared.constant("scale", scale));
  shared.output(cs);
  auto rs = passes::fold_batch_norm_into_conv(shared);
  REQUIRE(rs.ok());
  CHECK(count_ops(*rs, "mul") == 1);
  Graph per_column;
  Tensor xp = per_column.input("x", {1, 5, 9, 11});
  per_column.output(xp.conv2d(per_column.constant("w", w)) *
                    per_column.constant("s", random_array(DType::f32(), {9})));
  auto rp = passes::fold_batch_norm_into_conv(per_column);
  REQUIRE(rp.ok());
  CHECK(count_ops(*rp, "mul") == 1);
}

TEST_CASE("graph passes: attention chains become one attention node for CUDA targets",
          "[graph_passes]") {
  auto build = [](DType t, int64_t d, bool probs_out) {
    Graph g;
    Tensor q = g.input("q", {3, 11, d}, t), kt = g.input("kt", {3, d, 7}, t),
           v = g.input("v", {3, 7, 16}, t);
    Tensor probs = q.matmul(kt).mul(0.25).softmax(-1);
    g.output(probs.matmul(v));
    if (probs_out) g.output(probs);
    return g;
  };
  const Graph g = build(DType::f16(), 32, false);
  auto fused = passes::fuse_attention(g, Target::cuda(90));
  REQUIRE(fused.ok());
  CHECK(count_ops(*fused, "attention") == 1);
  CHECK(count_ops(*fused, "matmul") == 0);
  CHECK(count_ops(*fused, "softmax") == 0);
  // The attention node's definition (computed on the CPU here) matches the chain it replaced.
  require_same_results(g, *fused,
                       {random_array(DType::f16(), {3, 11, 32}), random_array(DType::f16(), {3, 32, 7}),
                        random_array(DType::f16(), {3, 7, 16})},
                       1e-2);
  // An additive mask after the scale (BERT's padding mask, [batch, 1, T]) becomes the node's
  // fourth input; a mask added before the scale does not match.
  for (const bool after_scale : {true, false}) {
    Graph m;
    const DType f16 = DType::f16();
    Tensor q = m.input("q", {3, 11, 32}, f16), kt = m.input("kt", {3, 32, 7}, f16),
           v = m.input("v", {3, 7, 16}, f16), mask = m.input("mask", {3, 1, 7}, f16);
    Tensor scores =
        after_scale ? q.matmul(kt).mul(0.25).add(mask) : q.matmul(kt).add(mask).mul(0.25);
    m.output(scores.softmax(-1).matmul(v));
    auto fused_mask = passes::fuse_attention(m, Target::cuda(90));
    REQUIRE(fused_mask.ok());
    CHECK(count_ops(*fused_mask, "attention") == (after_scale ? 1 : 0));
    if (!after_scale) continue;
    CHECK(count_ops(*fused_mask, "add") == 0);
    NDArray mask_values = random_array(DType::f16(), {3, 1, 7});
    for (int64_t i = 0; i < mask_values.numel(); i += 3) mask_values.set(i, -10000.0);
    require_same_results(m, *fused_mask,
                         {random_array(DType::f16(), {3, 11, 32}),
                          random_array(DType::f16(), {3, 32, 7}),
                          random_array(DType::f16(), {3, 7, 16}), mask_values},
                         1e-2);
  }
  // A symbolic sequence length fuses too: each binding compiles a static graph.
  Graph symbolic;
  const Dim seq("seq");
  Tensor sq = symbolic.input("q", {2, seq, 32}, DType::f16()),
         skt = symbolic.input("kt", {2, 32, seq}, DType::f16()),
         sv = symbolic.input("v", {2, seq, 32}, DType::f16());
  symbolic.output(sq.matmul(skt).softmax(-1).matmul(sv));
  auto fused_symbolic = passes::fuse_attention(symbolic, Target::cuda(80));
  REQUIRE(fused_symbolic.ok());
  CHECK(count_ops(*fused_symbolic, "attention") == 1);
  // Left alone: a CPU or pre-sm_80 target, f32, a head dim not a multiple of 16, the
  // probabilities read elsewhere.
  for (const auto& [graph, target] :
       std::vector<std::pair<Graph, Target>>{{g, Target::host_cpu()},
                                             {g, Target::cuda(75)},
                                             {build(DType::f32(), 32, false), Target::cuda(90)},
                                             {build(DType::f16(), 24, false), Target::cuda(90)},
                                             {build(DType::f16(), 32, true), Target::cuda(90)}}) {
    auto same = passes::fuse_attention(graph, target);
    REQUIRE(same.ok());
    CHECK(count_ops(*same, "attention") == 0);
    CHECK(count_ops(*same, "softmax") == 1);
  }
}

TEST_CASE("graph passes: matmuls of one input by constant matrices merge into one",
          "[graph_passes]") {
  // An attention layer's projections: q, k and v of x [2, 13, 24] by [24, 24], [24, 24] and
  // [24, 8] matrices (prime and odd sizes), each with its bias (v's where bias_on_v), then split
  // into heads; where q_product_out, q's product before its bias is an output too.
  auto build = [](bool bias_on_v, bool q_product_out, bool symbolic) {
    Graph g;
    Tensor x = g.input("x", {Dim(2), symbolic ? Dim("seq") : Dim(13), Dim(24)});
    auto product = [&](const std::string& name, int64_t n) {
      return x.matmul(g.constant(name + ".w", random_array(DType::f32(), {24, n})));
    };
    auto bias = [&](const std::string& name, int64_t n) {
      return g.constant(name + ".b", random_array(DType::f32(), {n}));
    };
    Tensor q_product = product("q", 24);
    Tensor q = (q_product + bias("q", 24)).reshape({2, Dim(-1), 3, 8}).transpose({0, 2, 1, 3});
    Tensor k = (bias("k", 24) + product("k", 24))  // the bias first, as ONNX exports may have it
                   .reshape({2, Dim(-1), 3, 8})
                   .transpose({0, 2, 3, 1});
    Tensor v = bias_on_v ? product("v", 8) + bias("v", 8) : product("v", 8);
    g.output(q.matmul(k).softmax(-1));
    g.output(v.relu());
    if (q_product_out) g.output(q_product);
    // A matmul of x by an input does not join.
    g.output(x.matmul(g.input("w", {24, 5})));
    return g;
  };
  // The biases merge into one add where every product's only reader adds one; otherwise each
  // stays an add of its own.
  for (const auto& [bias_on_v, q_product_out, adds] : std::vector<std::tuple<bool, bool, int>>{
           {true, false, 1}, {false, false, 2}, {true, true, 3}}) {
    INFO("bias on v: " << bias_on_v << ", q's product an output: " << q_product_out);
    const Graph g = build(bias_on_v, q_product_out, false);
    auto merged = passes::merge_sibling_matmuls(g);
    REQUIRE(merged.ok());
    // q k v: one matmul by [24, 56].
    CHECK(count_ops(*merged, "matmul") == count_ops(g, "matmul") - 2);
    CHECK(count_ops(*merged, "add") == adds);
    CHECK(count_ops(*merged, "slice") == 3);
    bool wide = false;
    for (const Node& n : merged->nodes())
      wide |= n.kind == Node::Kind::kConstant && n.value.shape() == std::vector<int64_t>{24, 56};
    CHECK(wide);
    require_same_results(
        g, *merged, {random_array(DType::f32(), {2, 13, 24}), random_array(DType::f32(), {24, 5})});
  }
  // A symbolic sequence length merges too (the sliced dim is static).
  auto symbolic = passes::merge_sibling_matmuls(build(true, false, true));
  REQUIRE(symbolic.ok());
  CHECK(count_ops(*symbolic, "slice") == 3);
  CHECK(count_ops(*symbolic, "add") == 1);
  // Left alone: matmuls of other tensors (x, relu(x), a reshape of x), one each.
  Graph apart;
  Tensor x = apart.input("x", {5, 7});
  apart.output(x.matmul(apart.constant("w", random_array(DType::f32(), {7, 3}))));
  apart.output(x.relu().matmul(apart.constant("r", random_array(DType::f32(), {7, 3}))));
  apart.output(x.reshape({7, 5}).matmul(apart.constant("t", random_array(DType::f32(), {5, 3}))));
  auto same = passes::merge_sibling_matmuls(apart);
  REQUIRE(same.ok());
  CHECK(count_ops(*same, "matmul") == 3);
  CHECK(count_ops(*same, "slice") == 0);
}

TEST_CASE("graph passes: compile() runs them (and can skip them)", "[graph_passes]") {
  Graph g;
  Tensor x = g.input("x", {3, 8});
  Tensor k = g.constant("k", random_array(DType::f32(), {8})).sigmoid();
  g.output((x * k).reshape({3, 8}).relu());
  NDArray in = random_array(DType::f32(), {3, 8});
  CompileOptions on;
  on.fuse = false;  // one kernel per remaining node, so the removed nodes show
  auto with = Compiler().compile(g, on);
  CompileOptions off = on;
  off.graph_passes = false;
  auto without = Compiler().compile(g, off);
  REQUIRE((with.ok() && without.ok()));
  CHECK(with->kernels().size() < without->kernels().size());
  auto a = with->run({in});
  auto b = without->run({in});
  REQUIRE((a.ok() && b.ok()));
  require_close((*a)[0], (*b)[0], 1e-6, 1e-6);
  require_close((*a)[0], reference_run(g, {in})[0], 1e-5, 1e-6);
}

TEST_CASE("Graph::flops counts matmuls and convolutions", "[graph_passes]") {
  Graph g;
  Tensor x = g.input("x", {5, 11});
  Tensor y = x.matmul(g.constant("w", random_array(DType::f32(), {11, 3})));  // 2*5*3*11
  Tensor img = g.input("img", {1, 5, 9, 11});
  Tensor c = img.conv2d(g.constant("k", random_array(DType::f32(), {6, 5, 3, 3})),
                        {.stride = 2, .padding = 1});  // [1, 6, 5, 6]: 2*180*45
  Tensor t = img.conv_transpose2d(g.constant("kt", random_array(DType::f32(), {5, 2, 2, 2})),
                                  {.stride = 2});  // 2 * 495 input pixels * 8 taps
  g.output(y.relu());
  g.output(c);
  g.output(t);
  CHECK(g.flops() == 330.0 + 16200.0 + 7920.0);
  Graph s;
  s.output(s.input("x", {Dim("n"), 4}).matmul(s.constant("w", random_array(DType::f32(), {4, 2}))));
  CHECK(s.flops() == 0);
  auto bound = s.bind_dims({{"n", 7}});
  REQUIRE(bound.ok());
  CHECK(bound->flops() == 2.0 * 7 * 2 * 4);
}
