// Every first-graph operator, compiled for the host CPU and run, against two references: the te
// evaluator on the op's own definition and, for most ops, plain C++ written from the op's spec.

#include <cmath>

#include "graph_reference.hpp"
#include "loom/ir/op.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::compile_and_run;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

// Compiled result must match the te reference.
std::vector<NDArray> check_against_reference(const Graph& g, const std::vector<NDArray>& inputs,
                                             double rtol = 1e-5, double atol = 1e-6) {
  std::vector<NDArray> got = compile_and_run(g, inputs);
  std::vector<NDArray> want = reference_run(g, inputs);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) require_close(got[i], want[i], rtol, atol);
  return got;
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

// Plain C++ broadcasting binary op over row-major arrays.
NDArray naive_broadcast(const NDArray& a, const NDArray& b, const std::function<double(double, double)>& f) {
  size_t n = std::max(a.rank(), b.rank());
  std::vector<int64_t> out(n);
  for (size_t d = 0; d < n; ++d) {
    int64_t ea = d < n - a.rank() ? 1 : a.shape()[d - (n - a.rank())];
    int64_t eb = d < n - b.rank() ? 1 : b.shape()[d - (n - b.rank())];
    out[d] = std::max(ea, eb);
  }
  NDArray r(a.dtype(), out);
  auto so = strides_of(out), sa = strides_of(a.shape()), sb = strides_of(b.shape());
  for (int64_t i = 0; i < r.numel(); ++i) {
    int64_t ia = 0, ib = 0;
    for (size_t d = 0; d < n; ++d) {
      int64_t x = i / so[d] % out[d];
      if (d >= n - a.rank()) { size_t k = d - (n - a.rank()); if (a.shape()[k] != 1) ia += x * sa[k]; }
      if (d >= n - b.rank()) { size_t k = d - (n - b.rank()); if (b.shape()[k] != 1) ib += x * sb[k]; }
    }
    r.set(i, f(a.get(ia), b.get(ib)));
  }
  return r;
}

}  // namespace

TEST_CASE("elementwise binary ops broadcast", "[ops][correctness]") {
  struct Case { std::vector<int64_t> a, b; };
  for (Case c : {Case{{7}, {7}}, Case{{1}, {31}}, Case{{31, 7}, {7}}, Case{{3, 1, 257}, {5, 1}},
                 Case{{2, 1, 7}, {1, 31, 1}}, Case{{1}, {1}}}) {
    for (const char* op : {"add", "sub", "mul", "div"}) {
      Graph g;
      Shape sa(c.a.begin(), c.a.end()), sb(c.b.begin(), c.b.end());
      Tensor a = g.input("a", sa), b = g.input("b", sb);
      g.output(g.apply(op, {a, b}));
      NDArray x = random_array(DType::f32(), c.a), y = random_array(DType::f32(), c.b, 0.5, 2);
      INFO(op << " " << shape_to_string(c.a) << " x " << shape_to_string(c.b));
      auto got = check_against_reference(g, {x, y});
      std::function<double(double, double)> f;
      std::string o = op;
      if (o == "add") f = [](double p, double q) { return p + q; };
      if (o == "sub") f = [](double p, double q) { return p - q; };
      if (o == "mul") f = [](double p, double q) { return p * q; };
      if (o == "div") f = [](double p, double q) { return p / q; };
      require_close(got[0], naive_broadcast(x, y, f), 1e-6, 1e-7);
    }
  }
}

TEST_CASE("elementwise ops on integer and half tensors", "[ops][correctness]") {
  for (DType t : {DType::i32(), DType::i64(), DType::i8(), DType::f16(), DType::bf16()}) {
    Graph g;
    Tensor a = g.input("a", {7, 31}, t), b = g.input("b", {31}, t);
    g.output((a + b).relu());
    g.output(a * b - a);
    INFO(t.to_string());
    check_against_reference(g, {random_array(t, {7, 31}, -20, 20), random_array(t, {31}, -5, 5)},
                            1e-2, 1e-2);
  }
}

TEST_CASE("unary activations", "[ops][correctness]") {
  for (int64_t n : {1, 7, 257}) {
    Graph g;
    Tensor x = g.input("x", {n, 3});
    g.output(x.relu());
    g.output(x.gelu());
    g.output(x.gelu(/*approximate=*/true));
    g.output(x.tanh());
    g.output(x.exp());
    g.output(x.sigmoid());
    g.output(x.add(0.5).mul(-3));
    NDArray in = random_array(DType::f32(), {n, 3}, -4, 4);
    auto got = check_against_reference(g, {in});
    for (int64_t i = 0; i < in.numel(); ++i) {
      double v = in.get(i);
      CHECK(got[0].get(i) == Approx(std::max(v, 0.0)));
      CHECK(got[1].get(i) == Approx(0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))).margin(1e-6));
      CHECK(got[2].get(i) ==
            Approx(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))).margin(1e-6));
      CHECK(got[3].get(i) == Approx(std::tanh(v)).margin(1e-6));
      CHECK(got[4].get(i) == Approx(std::exp(v)).epsilon(1e-5));
      CHECK(got[5].get(i) == Approx(1 / (1 + std::exp(-v))).margin(1e-6));
      CHECK(got[6].get(i) == Approx((v + 0.5) * -3).epsilon(1e-5));
    }
  }
}

TEST_CASE("batched matmul", "[ops][correctness]") {
  struct Case { std::vector<int64_t> a, b; };
  for (Case c : {Case{{1, 1}, {1, 1}}, Case{{7, 257}, {257, 31}}, Case{{3, 31, 7}, {3, 7, 1}},
                 Case{{2, 1, 5, 7}, {3, 7, 4}}, Case{{13, 1}, {1, 17}}}) {
    Graph g;
    Tensor a = g.input("a", Shape(c.a.begin(), c.a.end()));
    Tensor b = g.input("b", Shape(c.b.begin(), c.b.end()));
    g.output(a.matmul(b));
    NDArray x = random_array(DType::f32(), c.a), y = random_array(DType::f32(), c.b);
    INFO(shape_to_string(c.a) << " x " << shape_to_string(c.b));
    auto got = check_against_reference(g, {x, y}, 1e-5, 1e-5);
    // Plain C++ reference in double for the batch element 0..n with broadcasting.
    const auto& os = got[0].shape();
    int64_t M = os[os.size() - 2], N = os.back(), K = c.a.back();
    int64_t batches = got[0].numel() / (M * N);
    for (int64_t bi = 0; bi < batches; ++bi) {
      // Map the flat batch index to each operand's batch (broadcast dims of size 1 repeat).
      std::vector<int64_t> bshape(os.begin(), os.end() - 2);
      auto operand_batch = [&](const std::vector<int64_t>& s) {
        std::vector<int64_t> opb(s.begin(), s.end() - 2);
        int64_t flat = 0, rem = bi;
        std::vector<int64_t> idx(bshape.size());
        for (int d = static_cast<int>(bshape.size()) - 1; d >= 0; --d) { idx[d] = rem % bshape[d]; rem /= bshape[d]; }
        size_t off = bshape.size() - opb.size();
        for (size_t d = 0; d < opb.size(); ++d) flat = flat * opb[d] + (opb[d] == 1 ? 0 : idx[off + d]);
        return flat;
      };
      int64_t xa = operand_batch(c.a), yb = operand_batch(c.b);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += x.get(xa * M * K + i * K + k) * y.get(yb * K * N + k * N + j);
          CHECK(got[0].get(bi * M * N + i * N + j) == Approx(acc).epsilon(1e-4).margin(1e-5));
        }
    }
  }
}

TEST_CASE("sum, mean and max over axes", "[ops][correctness]") {
  std::vector<int64_t> shape = {7, 31, 3};
  NDArray x = random_array(DType::f32(), shape);
  for (std::vector<int> axes : {std::vector<int>{}, {0}, {1}, {-1}, {0, 2}, {2, 0, 1}}) {
    for (bool keep : {false, true}) {
      Graph g;
      Tensor in = g.input("x", {7, 31, 3});
      g.output(in.sum(axes, keep));
      g.output(in.mean(axes, keep));
      g.output(in.max(axes, keep));
      auto got = check_against_reference(g, {x}, 1e-5, 1e-5);
      // Plain C++: accumulate per output cell in double.
      std::vector<bool> red(3, axes.empty());
      for (int a : axes) red[(a + 3) % 3] = true;
      int64_t cells = got[0].numel();
      std::vector<double> s(cells, 0), m(cells, -INFINITY), count(cells, 0);
      for (int64_t i = 0; i < 7; ++i)
        for (int64_t j = 0; j < 31; ++j)
          for (int64_t k = 0; k < 3; ++k) {
            int64_t idx[3] = {i, j, k}, ext[3] = {7, 31, 3}, o = 0;
            for (int d = 0; d < 3; ++d)
              if (!red[d]) o = o * ext[d] + idx[d];
            double v = x.get((i * 31 + j) * 3 + k);
            s[o] += v;
            m[o] = std::max(m[o], v);
            count[o] += 1;
          }
      for (int64_t o = 0; o < cells; ++o) {
        CHECK(got[0].get(o) == Approx(s[o]).margin(1e-4));
        CHECK(got[1].get(o) == Approx(s[o] / count[o]).margin(1e-5));
        CHECK(got[2].get(o) == m[o]);
      }
    }
  }
}

TEST_CASE("softmax over each axis", "[ops][correctness]") {
  NDArray x = random_array(DType::f32(), {5, 7, 31}, -8, 8);
  for (int axis : {0, 1, 2, -1}) {
    Graph g;
    g.output(g.input("x", {5, 7, 31}).softmax(axis));
    auto got = check_against_reference(g, {x}, 1e-5, 1e-7);
    int a = (axis + 3) % 3;
    int64_t ext[3] = {5, 7, 31};
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t idx[3] = {i / (7 * 31), i / 31 % 7, i % 31};
      double mx = -INFINITY, sum = 0;
      for (int64_t k = 0; k < ext[a]; ++k) {
        int64_t j[3] = {idx[0], idx[1], idx[2]};
        j[a] = k;
        mx = std::max(mx, x.get((j[0] * 7 + j[1]) * 31 + j[2]));
      }
      for (int64_t k = 0; k < ext[a]; ++k) {
        int64_t j[3] = {idx[0], idx[1], idx[2]};
        j[a] = k;
        sum += std::exp(x.get((j[0] * 7 + j[1]) * 31 + j[2]) - mx);
      }
      CHECK(got[0].get(i) == Approx(std::exp(x.get(i) - mx) / sum).epsilon(1e-5).margin(1e-7));
    }
  }
}

TEST_CASE("reshape and transpose", "[ops][correctness]") {
  NDArray x = random_array(DType::f32(), {2, 3, 35});
  Graph g;
  Tensor in = g.input("x", {2, 3, 35});
  g.output(in.reshape({6, 5, 7}));
  g.output(in.reshape({-1, 7}));
  g.output(in.transpose({2, 0, 1}));
  g.output(in.transpose());
  g.output(in.reshape({6, 35}).transpose().reshape({35, 2, 3}));
  auto got = check_against_reference(g, {x});
  for (int64_t i = 0; i < x.numel(); ++i) {
    CHECK(got[0].get(i) == x.get(i));  // reshape keeps row-major order
    CHECK(got[1].get(i) == x.get(i));
  }
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 35; ++c) {
        double v = x.get((a * 3 + b) * 35 + c);
        CHECK(got[2].get((c * 2 + a) * 3 + b) == v);
        CHECK(got[3].get((c * 3 + b) * 2 + a) == v);
        CHECK(got[4].get(c * 6 + a * 3 + b) == v);
      }
  CHECK(got[1].shape() == std::vector<int64_t>{30, 7});
}

TEST_CASE("symbolic batch dimension compiles once and runs at several sizes", "[ops][correctness]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), Dim("seq"), 16});
  Tensor w = g.constant("w", random_array(DType::f32(), {16, 8}));
  Tensor y = x.matmul(w).gelu().softmax(-1).reshape({Dim("batch"), Dim("seq"), 2, -1});
  g.output(y);
  g.output(x.sum({1}));
  CompileOptions options;
  options.poison_buffers = true;
  auto compiled = Compiler().compile(g, options);
  REQUIRE(compiled.ok());
  for (auto [b, s] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {2, 31}}) {
    NDArray in = random_array(DType::f32(), {b, s, 16});
    auto got = compiled->run({in});
    REQUIRE(got.ok());
    auto want = reference_run(g, {in});
    CHECK((*got)[0].shape() == std::vector<int64_t>{b, s, 2, 4});
    require_close((*got)[0], want[0], 1e-5, 1e-6);
    require_close((*got)[1], want[1], 1e-5, 1e-5);
  }
}

TEST_CASE("constants, shared inputs and outputs that are inputs", "[ops][correctness]") {
  Graph g;
  Tensor x = g.input("x", {7});
  Tensor c = g.constant("c", random_array(DType::f32(), {7}));
  g.output(x * x + c);
  g.output(x);
  NDArray in = random_array(DType::f32(), {7});
  auto got = check_against_reference(g, {in});
  for (int64_t i = 0; i < 7; ++i) CHECK(got[1].get(i) == in.get(i));
  CHECK(got[1].data() != in.data());
}

TEST_CASE("a user-defined operator is registered and compiled like a built-in", "[ops][correctness]") {
  // scaled_diff(a, b) = (a - b) * scale, with typed attributes, defined outside loom.
  struct ScaleAttrs final : OpAttrs {
    double scale = 1;
    std::string to_string() const override { return "scale=" + std::to_string(scale); }
  };
  if (!OpRegistry::global().find("test_scaled_diff")) {
    OpDef def;
    def.name = "test_scaled_diff";
    def.injective = true;
    def.num_inputs = 2;
    def.attrs_type = &typeid(ScaleAttrs);
    def.infer = [](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
      if (in[0].shape != in[1].shape) return absl::InvalidArgumentError("shapes differ");
      return in[0];
    };
    def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs& a,
                     const std::vector<ir::Expr>& shape, const std::string& name) {
      double scale = attrs_as<ScaleAttrs>(a).scale;
      return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
        std::vector<ir::Expr> idx(i.begin(), i.end());
        return (in[0](idx) - in[1](idx)) * ir::make_const(in[0].dtype(), scale);
      });
    };
    REQUIRE(OpRegistry::global().add(def).ok());
    CHECK(OpRegistry::global().add(def).code() == absl::StatusCode::kAlreadyExists);
  }
  auto attrs = std::make_shared<ScaleAttrs>();
  attrs->scale = 2.5;
  Graph g;
  Tensor a = g.input("a", {7, 31}), b = g.input("b", {7, 31});
  g.output(g.apply("test_scaled_diff", {a, b}, attrs).relu());
  NDArray x = random_array(DType::f32(), {7, 31}), y = random_array(DType::f32(), {7, 31});
  auto got = check_against_reference(g, {x, y});
  for (int64_t i = 0; i < x.numel(); ++i)
    CHECK(got[0].get(i) == Approx(std::max(0.0, (x.get(i) - y.get(i)) * 2.5)).margin(1e-6));

  Graph bad;
  bad.output(bad.apply("test_scaled_diff", {bad.input("a", {3}), bad.input("b", {4})}, attrs));
  CHECK(std::string(bad.status().message()).find("shapes differ") != std::string::npos);
}
