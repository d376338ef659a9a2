// The elementwise operator library (activations, math functions, clip, comparisons, minimum and
// maximum, where, cast, log_softmax), compiled for the host CPU and run on random data with odd
// shapes and broadcasting, against plain C++ written from each op's spec in double precision.

#include <cmath>
#include <functional>
#include <limits>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::compile_and_run;
using loom::testing::reference_run;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Element-wise match: NaN where the other is NaN, infinities equal, otherwise
// |a - e| <= atol + rtol * |e| (exact for integer and bool results with the default 0, 0).
void require_match(const NDArray& actual, const NDArray& expected, double rtol = 0,
                   double atol = 0) {
  REQUIRE(actual.dtype() == expected.dtype());
  REQUIRE(actual.shape() == expected.shape());
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.get(i), e = expected.get(i);
    bool ok;
    if (std::isnan(e) || std::isnan(a))
      ok = std::isnan(e) && std::isnan(a);
    else if (std::isinf(e) || std::isinf(a))
      ok = a == e;
    else
      ok = std::fabs(a - e) <= atol + rtol * std::fabs(e);
    if (!ok) {
      INFO("element " << i << " of " << actual.numel() << ": got " << a << ", expected " << e);
      REQUIRE(ok);
    }
  }
}

std::vector<int64_t> broadcast_extents(const std::vector<NDArray>& ins) {
  size_t n = 0;
  for (const NDArray& a : ins) n = std::max(n, static_cast<size_t>(a.rank()));
  std::vector<int64_t> out(n, 1);
  for (const NDArray& a : ins)
    for (int d = 0; d < a.rank(); ++d) {
      int64_t& o = out[n - a.rank() + d];
      if (a.shape()[d] != 1) o = a.shape()[d];
    }
  return out;
}

// The expected result of an elementwise op: f over the (numpy-broadcast) inputs' values in
// double, rounded to out_dtype.
NDArray expected_map(DType out_dtype, const std::vector<NDArray>& ins,
                     const std::function<double(const std::vector<double>&)>& f) {
  std::vector<int64_t> shape = broadcast_extents(ins);
  NDArray r(out_dtype, shape);
  std::vector<int64_t> idx(shape.size(), 0);
  std::vector<double> args(ins.size());
  for (int64_t flat = 0; flat < r.numel(); ++flat) {
    for (size_t k = 0; k < ins.size(); ++k) {
      const NDArray& a = ins[k];
      int64_t offset = 0;
      for (int d = 0; d < a.rank(); ++d) {
        int64_t i = a.shape()[d] == 1 ? 0 : idx[shape.size() - a.rank() + d];
        offset = offset * a.shape()[d] + i;
      }
      args[k] = a.get(offset);
    }
    r.set(flat, f(args));
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0 && ++idx[d] == shape[d]; --d)
      idx[d] = 0;
  }
  return r;
}

Shape to_shape(const std::vector<int64_t>& v) {
  return Shape(v.begin(), v.end());
}

// Overwrites the first elements of a with the given values (edge cases among random data).
void plant(NDArray& a, const std::vector<double>& values) {
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < a.numel(); ++i)
    a.set(static_cast<int64_t>(i), values[i]);
}

double sigmoid(double x) {
  return 1 / (1 + std::exp(-x));
}
double hard_sigmoid(double x, double alpha, double beta) {
  return std::max(0.0, std::min(1.0, alpha * x + beta));
}

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> build;
  std::function<double(double)> expect;
  double lo, hi;              // range of the random input
  std::vector<double> edges;  // planted inputs
};

std::vector<UnaryCase> float_unary_cases() {
  return {
      {"leaky_relu",
       [](const Tensor& x) { return x.leaky_relu(); },
       [](double x) { return x < 0 ? 0.01 * x : x; },
       -3,
       3,
       {0.0, -0.0, kNaN, -kInf}},
      {"leaky_relu(0.3)",
       [](const Tensor& x) { return x.leaky_relu(0.3); },
       [](double x) { return x < 0 ? 0.3 * x : x; },
       -3,
       3,
       {}},
      {"elu",
       [](const Tensor& x) { return x.elu(); },
       [](double x) { return x < 0 ? std::expm1(x) : x; },
       -4,
       3,
       {0.0, -1e-4, -30, kNaN}},
      {"elu(0.5)",
       [](const Tensor& x) { return x.elu(0.5); },
       [](double x) { return x < 0 ? 0.5 * std::expm1(x) : x; },
       -4,
       3,
       {}},
      {"erf",
       [](const Tensor& x) { return x.erf(); },
       [](double x) { return std::erf(x); },
       -3,
       3,
       {0.0, 5, -5, kInf}},
      {"hard_sigmoid",
       [](const Tensor& x) { return x.hard_sigmoid(); },
       [](double x) { return std::isnan(x) ? x : hard_sigmoid(x, 0.2, 0.5); },
       -4,
       4,
       {-2.5, 2.5, kNaN, kInf}},
      {"hard_sigmoid(0.5, 0.25)",
       [](const Tensor& x) { return x.hard_sigmoid(0.5, 0.25); },
       [](double x) { return hard_sigmoid(x, 0.5, 0.25); },
       -4,
       4,
       {}},
      {"hard_swish",
       [](const Tensor& x) { return x.hard_swish(); },
       [](double x) { return x * hard_sigmoid(x, 1.0 / 6, 0.5); },
       -5,
       5,
       {-3, 3, 0}},
      {"swish",
       [](const Tensor& x) { return x.swish(); },
       [](double x) { return x * sigmoid(x); },
       -6,
       6,
       {0.0, -20, 20}},
      {"log",
       [](const Tensor& x) { return x.log(); },
       [](double x) { return std::log(x); },
       0.01,
       5,
       {0.0, -1, -0.5, 1, kInf}},
      {"sqrt",
       [](const Tensor& x) { return x.sqrt(); },
       [](double x) { return std::sqrt(x); },
       0,
       5,
       {0.0, -1, -0.25, 4, kInf}},
      {"reciprocal",
       [](const Tensor& x) { return x.reciprocal(); },
       [](double x) { return 1 / x; },
       0.1,
       4,
       {0.0, -0.0, -2, kInf}},
      {"floor",
       [](const Tensor& x) { return x.floor(); },
       [](double x) { return std::floor(x); },
       -5,
       5,
       {-0.5, -1, 2, -2.5, 2.5}},
      {"ceil",
       [](const Tensor& x) { return x.ceil(); },
       [](double x) { return std::ceil(x); },
       -5,
       5,
       {-0.5, -1, 2, -2.5, 2.5}},
      {"abs",
       [](const Tensor& x) { return x.abs(); },
       [](double x) { return std::fabs(x); },
       -5,
       5,
       {-0.0, -kInf, kNaN}},
      {"neg",
       [](const Tensor& x) { return x.neg(); },
       [](double x) { return -x; },
       -5,
       5,
       {0.0, kInf}},
      {"clip(-0.5, 0.75)",
       [](const Tensor& x) { return x.clip(-0.5, 0.75); },
       [](double x) { return std::isnan(x) ? x : std::min(std::max(x, -0.5), 0.75); },
       -2,
       2,
       {kNaN, -kInf, kInf, -0.5, 0.75}},
  };
}

}  // namespace

TEST_CASE("unary float ops match a double reference", "[elementwise]") {
  const std::vector<std::vector<int64_t>> shapes = {{7, 1, 13}, {257}, {1}, {3, 5, 11}};
  for (const UnaryCase& c : float_unary_cases()) {
    for (DType dtype : {DType::f32(), DType::f16(), DType::bf16()}) {
      for (const auto& shape : shapes) {
        INFO(c.name << " of " << dtype.to_string() << shape_to_string(to_shape(shape)));
        Graph g;
        Tensor x = g.input("x", to_shape(shape), dtype);
        g.output(c.build(x));
        NDArray in = random_array(dtype, shape, c.lo, c.hi);
        plant(in, c.edges);
        NDArray want = expected_map(dtype, {in}, [&](const auto& v) { return c.expect(v[0]); });
        std::vector<NDArray> got = compile_and_run(g, {in});
        // Half precision: the f32 result rounds once; the reference rounds from double, so
        // they may differ by an ulp of the half type.
        double rtol = dtype == DType::f32() ? 2e-6 : dtype == DType::f16() ? 1e-3 : 8e-3;
        double atol = dtype == DType::f32() ? 1e-6 : 1e-3;
        require_match(got[0], want, rtol, atol);
        if (shape.size() == 3 && dtype == DType::f32())
          require_match(reference_run(g, {in})[0], want, rtol, atol);
      }
    }
  }
}

TEST_CASE("sqrt and log give NaN below zero, infinities at the ends", "[elementwise]") {
  Graph g;
  Tensor x = g.input("x", {6});
  g.output(x.sqrt());
  g.output(x.log());
  g.output(x.reciprocal());
  NDArray in = NDArray::from_vector<float>(DType::f32(), {6}, {-1.f, -0.f, 0.f, 4.f, -1e-30f, 1.f});
  std::vector<NDArray> got = compile_and_run(g, {in});
  auto at = [&](int out, int i) { return got[out].get(i); };
  CHECK(std::isnan(at(0, 0)));
  CHECK(at(0, 1) == 0);
  CHECK(std::signbit(at(0, 1)));  // sqrt(-0) is -0
  CHECK(at(0, 3) == 2);
  CHECK(std::isnan(at(0, 4)));
  CHECK(std::isnan(at(1, 0)));
  CHECK(at(1, 1) == -kInf);
  CHECK(at(1, 2) == -kInf);
  CHECK(at(1, 5) == 0);
  CHECK(at(2, 1) == -kInf);
  CHECK(at(2, 2) == kInf);
  CHECK(at(2, 3) == 0.25);
}

TEST_CASE("abs, neg, clip and relu on integer tensors", "[elementwise]") {
  struct IntCase {
    const char* name;
    std::function<Tensor(const Tensor&)> build;
    std::function<double(double)> expect;
  };
  std::vector<IntCase> cases = {
      {"abs", [](const Tensor& x) { return x.abs(); }, [](double x) { return std::fabs(x); }},
      {"neg", [](const Tensor& x) { return x.neg(); }, [](double x) { return -x; }},
      {"clip(-7, 20)", [](const Tensor& x) { return x.clip(-7, 20); },
       [](double x) { return std::min(std::max(x, -7.0), 20.0); }},
      {"clip(-inf, 3)", [](const Tensor& x) { return x.clip(-kInf, 3); },
       [](double x) { return std::min(x, 3.0); }},
      // Bounds beyond the type's range: below never clips, above saturates to the type's end.
      {"clip(-1000, 1e30)", [](const Tensor& x) { return x.clip(-1000, 1e30); },
       [](double x) { return x; }},
      // min > max: everything becomes max (ONNX).
      {"clip(5, -5)", [](const Tensor& x) { return x.clip(5, -5); }, [](double) { return -5.0; }},
      {"relu", [](const Tensor& x) { return x.relu(); }, [](double x) { return std::max(x, 0.0); }},
  };
  for (const IntCase& c : cases) {
    for (DType dtype : {DType::i8(), DType::i32(), DType::i64()}) {
      std::vector<int64_t> shape = {5, 1, 23};
      INFO(c.name << " of " << dtype.to_string());
      Graph g;
      Tensor x = g.input("x", to_shape(shape), dtype);
      g.output(c.build(x));
      NDArray in = random_array(dtype, shape, -100, 100);
      plant(in, {0, -1, 127, -127});
      NDArray want = expected_map(dtype, {in}, [&](const auto& v) { return c.expect(v[0]); });
      require_match(compile_and_run(g, {in})[0], want);
    }
  }
}

TEST_CASE("clip of floats with min above max, one-sided and beyond the range", "[elementwise]") {
  std::vector<int64_t> shape = {3, 37};
  struct Bounds {
    double lo, hi;
  };
  for (Bounds b : {Bounds{0.5, -0.5}, Bounds{-kInf, 0.25}, Bounds{-0.25, kInf}, Bounds{-kInf, kInf},
                   Bounds{1e9, 2e9}}) {
    for (DType dtype : {DType::f32(), DType::f16()}) {
      INFO("clip(" << b.lo << ", " << b.hi << ") of " << dtype.to_string());
      Graph g;
      Tensor x = g.input("x", to_shape(shape), dtype);
      g.output(x.clip(b.lo, b.hi));
      NDArray in = random_array(dtype, shape, -1, 1);
      plant(in, {kNaN, kInf, -kInf});
      NDArray want = expected_map(dtype, {in}, [&](const auto& v) {
        if (std::isnan(v[0])) return v[0];
        return std::min(std::max(v[0], b.lo), b.hi);
      });
      require_match(compile_and_run(g, {in})[0], want);
    }
  }
}

namespace {

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> build;
  std::function<double(double, double)> expect;
  bool gives_bool;
};

std::vector<BinaryCase> comparison_cases() {
  return {
      {"equal", [](const Tensor& a, const Tensor& b) { return a.equal(b); },
       [](double a, double b) -> double { return a == b; }, true},
      {"less", [](const Tensor& a, const Tensor& b) { return a.less(b); },
       [](double a, double b) -> double { return a < b; }, true},
      {"less_equal", [](const Tensor& a, const Tensor& b) { return a.less_equal(b); },
       [](double a, double b) -> double { return a <= b; }, true},
      {"greater", [](const Tensor& a, const Tensor& b) { return a.greater(b); },
       [](double a, double b) -> double { return a > b; }, true},
      {"greater_equal", [](const Tensor& a, const Tensor& b) { return a.greater_equal(b); },
       [](double a, double b) -> double { return a >= b; }, true},
  };
}

std::vector<BinaryCase> min_max_cases() {
  auto nan_or = [](double a, double b, double r) {
    return std::isnan(a) || std::isnan(b) ? kNaN : r;
  };
  return {
      {"minimum", [](const Tensor& a, const Tensor& b) { return a.minimum(b); },
       [=](double a, double b) { return nan_or(a, b, std::min(a, b)); }, false},
      {"maximum", [](const Tensor& a, const Tensor& b) { return a.maximum(b); },
       [=](double a, double b) { return nan_or(a, b, std::max(a, b)); }, false},
  };
}

struct ShapePair {
  std::vector<int64_t> a, b;
};
const std::vector<ShapePair> kShapePairs = {
    {{7, 1, 13}, {5, 1}}, {{1}, {31}}, {{3, 11}, {3, 11}}, {{2, 1, 7}, {1, 17, 1}}, {{19}, {1}}};

// Random values on a coarse grid (multiples of 0.5), so equal pairs are common.
NDArray grid_array(DType dtype, const std::vector<int64_t>& shape) {
  NDArray a = random_array(dtype, shape, -4, 4);
  for (int64_t i = 0; i < a.numel(); ++i) a.set(i, std::round(a.get(i) * 2) / 2);
  return a;
}

void check_binary(const BinaryCase& c, DType dtype, const ShapePair& s, NDArray x, NDArray y,
                  double rtol = 0, double atol = 0) {
  INFO(c.name << " of " << dtype.to_string() << shape_to_string(to_shape(s.a)) << " and "
              << shape_to_string(to_shape(s.b)));
  Graph g;
  Tensor a = g.input("a", to_shape(s.a), dtype), b = g.input("b", to_shape(s.b), dtype);
  Tensor r = c.build(a, b);
  g.output(r);
  DType out = c.gives_bool ? DType::boolean() : dtype;
  REQUIRE(r.dtype() == out);
  NDArray want = expected_map(out, {x, y}, [&](const auto& v) { return c.expect(v[0], v[1]); });
  require_match(compile_and_run(g, {x, y})[0], want, rtol, atol);
}

}  // namespace

TEST_CASE("comparisons broadcast and give bool tensors", "[elementwise]") {
  for (const BinaryCase& c : comparison_cases()) {
    for (const ShapePair& s : kShapePairs) {
      for (DType dtype : {DType::f32(), DType::f16(), DType::i32(), DType::i64()}) {
        NDArray x = grid_array(dtype, s.a), y = grid_array(dtype, s.b);
        if (dtype.is_float()) plant(x, {kNaN, kInf, -kInf, 0.0});
        if (dtype.is_float()) plant(y, {1.0, kInf, kNaN, -0.0});
        check_binary(c, dtype, s, x, y);
      }
      NDArray x = random_array(DType::boolean(), s.a, 0, 2);
      NDArray y = random_array(DType::boolean(), s.b, 0, 2);
      check_binary(c, DType::boolean(), s, x, y);
    }
  }
}

TEST_CASE("minimum and maximum broadcast, propagate NaN and take integers", "[elementwise]") {
  for (const BinaryCase& c : min_max_cases()) {
    for (const ShapePair& s : kShapePairs) {
      for (DType dtype : {DType::f32(), DType::f16(), DType::i8(), DType::i32(), DType::i64()}) {
        NDArray x = grid_array(dtype, s.a), y = grid_array(dtype, s.b);
        if (dtype.is_float()) plant(x, {kNaN, 1.0, -kInf, kNaN});
        if (dtype.is_float()) plant(y, {1.0, kNaN, 2.0, kNaN});
        check_binary(c, dtype, s, x, y);
      }
    }
  }
}

TEST_CASE("pow broadcasts", "[elementwise]") {
  BinaryCase c{"pow", [](const Tensor& a, const Tensor& b) { return a.pow(b); },
               [](double a, double b) { return std::pow(a, b); }, false};
  for (const ShapePair& s : kShapePairs) {
    NDArray x = random_array(DType::f32(), s.a, 0.1, 3), y = random_array(DType::f32(), s.b, -2, 2);
    check_binary(c, DType::f32(), s, x, y, 1e-5, 1e-6);
  }
  // Negative bases: integral exponents are defined, others are NaN.
  ShapePair s{{2, 3}, {3}};
  NDArray x = NDArray::from_vector<float>(DType::f32(), {2, 3}, {-2.f, -2.f, -2.f, 0.f, 4.f, -8.f});
  NDArray y = NDArray::from_vector<float>(DType::f32(), {3}, {3.f, 0.5f, -1.f});
  check_binary(c, DType::f32(), s, x, y, 1e-6, 0);
  NDArray xh = random_array(DType::f16(), s.a, 0.5, 2), yh = random_array(DType::f16(), s.b, -2, 2);
  check_binary(c, DType::f16(), s, xh, yh, 1e-3, 1e-3);
}

TEST_CASE("where broadcasts its condition and both values", "[elementwise]") {
  struct Shapes {
    std::vector<int64_t> cond, a, b;
  };
  for (Shapes s : {Shapes{{7, 1, 13}, {5, 1}, {13}}, Shapes{{1}, {3, 11}, {1, 11}},
                   Shapes{{17}, {17}, {17}}, Shapes{{2, 3, 1}, {1}, {3, 5}}}) {
    for (DType dtype : {DType::f32(), DType::f16(), DType::i32(), DType::i8(), DType::boolean()}) {
      INFO("where of " << dtype.to_string() << shape_to_string(to_shape(s.cond)) << ", "
                       << shape_to_string(to_shape(s.a)) << ", " << shape_to_string(to_shape(s.b)));
      Graph g;
      Tensor cond = g.input("cond", to_shape(s.cond), DType::boolean());
      Tensor a = g.input("a", to_shape(s.a), dtype), b = g.input("b", to_shape(s.b), dtype);
      g.output(where(cond, a, b));
      NDArray c = random_array(DType::boolean(), s.cond, 0, 2);
      NDArray x = random_array(dtype, s.a, -50, 50), y = random_array(dtype, s.b, -50, 50);
      if (dtype.is_bool()) {
        x = random_array(dtype, s.a, 0, 2);
        y = random_array(dtype, s.b, 0, 2);
      }
      NDArray want =
          expected_map(dtype, {c, x, y}, [](const auto& v) { return v[0] ? v[1] : v[2]; });
      require_match(compile_and_run(g, {c, x, y})[0], want);
      require_match(reference_run(g, {c, x, y})[0], want);
    }
  }
}

TEST_CASE("where picks values from comparisons in one graph", "[elementwise]") {
  // relu-like where(x > y, x, y * 0.5) fused with the comparison that feeds it.
  Graph g;
  Tensor x = g.input("x", {9, 1, 5}), y = g.input("y", {4, 1});
  g.output(x.greater(y).where(x, y.mul(0.5)));
  NDArray a = random_array(DType::f32(), {9, 1, 5}), b = random_array(DType::f32(), {4, 1});
  NDArray want = expected_map(DType::f32(), {a, b},
                              [](const auto& v) { return v[0] > v[1] ? v[0] : v[1] * 0.5; });
  require_match(compile_and_run(g, {a, b})[0], want);
}

TEST_CASE("cast between every pair of dtypes", "[elementwise]") {
  const std::vector<DType> dtypes = {DType::f32(), DType::f16(), DType::bf16(),   DType::i8(),
                                     DType::i32(), DType::i64(), DType::boolean()};
  std::vector<int64_t> shape = {3, 41};
  for (DType from : dtypes) {
    for (DType to : dtypes) {
      INFO("cast " << from.to_string() << " -> " << to.to_string());
      Graph g;
      Tensor x = g.input("x", to_shape(shape), from);
      Tensor y = x.cast(to);
      REQUIRE(y.dtype() == to);
      g.output(y);
      // Values that fit every type: |x| < 100, with fractions and negatives for floats.
      NDArray in =
          from.is_bool() ? random_array(from, shape, 0, 2) : random_array(from, shape, -100, 100);
      if (from.is_float()) plant(in, {-2.75, 2.75, -0.5, 0.5, -0.0, 0.0, -99.5, 1e-3});
      if (from.is_int()) plant(in, {0, -1, 1, -100, 99});
      NDArray want = expected_map(to, {in}, [&](const auto& v) -> double {
        if (to.is_bool()) return v[0] != 0;
        if (to.is_int()) return std::trunc(v[0]);  // toward zero, as C and ONNX
        return v[0];
      });
      require_match(compile_and_run(g, {in})[0], want);
    }
  }
}

TEST_CASE("cast of negative floats truncates toward zero and NaN is true", "[elementwise]") {
  Graph g;
  Tensor x = g.input("x", {6});
  g.output(x.cast(DType::i32()));
  g.output(x.cast(DType::i8()));
  NDArray in =
      NDArray::from_vector<float>(DType::f32(), {6}, {-2.9f, -0.9f, 0.9f, 2.9f, -100.5f, 7.f});
  std::vector<NDArray> got = compile_and_run(g, {in});
  std::vector<double> want = {-2, 0, 0, 2, -100, 7};
  for (int i = 0; i < 6; ++i) {
    CHECK(got[0].get(i) == want[i]);
    CHECK(got[1].get(i) == want[i]);
  }
  Graph h;
  h.output(h.input("x", {4}).cast(DType::boolean()));
  NDArray nan_in = NDArray::from_vector<float>(DType::f32(), {4}, {0.f, -0.f, NAN, 1e-30f});
  NDArray b = compile_and_run(h, {nan_in})[0];
  CHECK(b.get(0) == 0);
  CHECK(b.get(1) == 0);
  CHECK(b.get(2) == 1);
  CHECK(b.get(3) == 1);
}

TEST_CASE("log_softmax matches a double reference and stays finite", "[elementwise]") {
  struct Case {
    std::vector<int64_t> shape;
    int axis;
    double scale;  // inputs in [-scale, scale)
  };
  for (Case c : {Case{{7, 13}, -1, 3}, Case{{5, 11, 3}, 1, 3}, Case{{5, 11, 3}, 0, 3},
                 Case{{1, 257}, -1, 1}, Case{{3, 31}, -1, 1000}, Case{{4, 1}, 1, 5}}) {
    for (DType dtype : {DType::f32(), DType::f16()}) {
      INFO("log_softmax(" << c.axis << ") of " << dtype.to_string()
                          << shape_to_string(to_shape(c.shape)) << ", scale " << c.scale);
      Graph g;
      Tensor x = g.input("x", to_shape(c.shape), dtype);
      g.output(x.log_softmax(c.axis));
      NDArray in = random_array(dtype, c.shape, -c.scale, c.scale);
      // Row-wise in double: log_softmax(x)_k = x_k - m - log(sum_j exp(x_j - m)).
      int rank = static_cast<int>(c.shape.size());
      int axis = c.axis < 0 ? c.axis + rank : c.axis;
      int64_t inner = 1, n = c.shape[axis];
      for (int d = axis + 1; d < rank; ++d) inner *= c.shape[d];
      int64_t outer = in.numel() / (inner * n);
      NDArray want(dtype, c.shape);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
          auto at = [&](int64_t k) { return (o * n + k) * inner + i; };
          double m = -kInf, sum = 0;
          for (int64_t k = 0; k < n; ++k) m = std::max(m, in.get(at(k)));
          for (int64_t k = 0; k < n; ++k) sum += std::exp(in.get(at(k)) - m);
          for (int64_t k = 0; k < n; ++k) want.set(at(k), in.get(at(k)) - m - std::log(sum));
        }
      }
      NDArray got = compile_and_run(g, {in})[0];
      if (dtype == DType::f32())
        require_match(got, want, 1e-5, 1e-5 * std::max(1.0, c.scale));
      else
        require_match(got, want, 2e-3, 2e-3 * std::max(1.0, c.scale));
      for (int64_t i = 0; i < got.numel(); ++i) REQUIRE(std::isfinite(got.get(i)));
    }
  }
}

TEST_CASE("elementwise ops chain and fuse with each other", "[elementwise]") {
  // clip(swish(x) - log(y), -1, 1) where x >= y, else -x: several injective ops in one kernel.
  Graph g;
  Tensor x = g.input("x", {3, 1, 29}), y = g.input("y", {7, 1});
  Tensor picked = x.greater_equal(y).where(x.swish().sub(y.log()).clip(-1, 1), x.neg());
  g.output(picked.cast(DType::f16()));
  NDArray a = random_array(DType::f32(), {3, 1, 29}, 0.1, 2);
  NDArray b = random_array(DType::f32(), {7, 1}, 0.1, 2);
  NDArray want = expected_map(DType::f16(), {a, b}, [](const auto& v) {
    double s = std::min(std::max(v[0] * sigmoid(v[0]) - std::log(v[1]), -1.0), 1.0);
    return v[0] >= v[1] ? s : -v[0];
  });
  require_match(compile_and_run(g, {a, b})[0], want, 1e-3, 1e-3);
}

TEST_CASE("elementwise ops over a symbolic dim", "[elementwise]") {
  Graph g;
  Tensor x = g.input("x", {Dim("n"), 13}), y = g.input("y", {13});
  Tensor picked = x.less(y).where(x.maximum(y), x.elu(0.5));
  g.output(picked.log_softmax(-1));
  CompileOptions options;
  options.poison_buffers = true;
  auto compiled = Compiler(Target::host_cpu()).compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  for (int64_t n : {3, 8, 1}) {
    INFO("n = " << n);
    NDArray a = random_array(DType::f32(), {n, 13}, -2, 2), b = random_array(DType::f32(), {13});
    NDArray want = expected_map(DType::f32(), {a, b}, [](const auto& v) {
      return v[0] < v[1] ? std::max(v[0], v[1]) : (v[0] < 0 ? 0.5 * std::expm1(v[0]) : v[0]);
    });
    for (int64_t r = 0; r < n; ++r) {
      double m = -kInf, sum = 0;
      for (int64_t k = 0; k < 13; ++k) m = std::max(m, want.get(r * 13 + k));
      for (int64_t k = 0; k < 13; ++k) sum += std::exp(want.get(r * 13 + k) - m);
      for (int64_t k = 0; k < 13; ++k)
        want.set(r * 13 + k, want.get(r * 13 + k) - m - std::log(sum));
    }
    auto out = compiled->run({a, b});
    INFO(out.status().ToString());
    REQUIRE(out.ok());
    require_match((*out)[0], want, 1e-5, 1e-5);
  }
}

TEST_CASE("abs and neg map an integer type's lowest value to itself", "[elementwise]") {
  Graph g;
  Tensor x = g.input("x", {3}, DType::i8());
  g.output(x.abs());
  g.output(x.neg());
  NDArray in = NDArray::from_vector<int8_t>(DType::i8(), {3}, {-128, 127, -5});
  std::vector<NDArray> got = compile_and_run(g, {in});
  CHECK(got[0].get(0) == -128);
  CHECK(got[0].get(1) == 127);
  CHECK(got[0].get(2) == 5);
  CHECK(got[1].get(0) == -128);
  CHECK(got[1].get(1) == -127);
  CHECK(got[1].get(2) == 5);
}

TEST_CASE("integer division by zero gives 0 and by -1 wraps, never trapping", "[elementwise]") {
  // The divisors are mostly 0, -1 and 1; the numerators include the type's lowest value, whose
  // quotient by -1 overflows (x86's idiv traps on it as on a zero divisor).
  for (DType dtype : {DType::i8(), DType::i32(), DType::i64()}) {
    for (std::vector<int64_t> divisor_shape : {std::vector<int64_t>{7, 13}, {1, 13}}) {
      INFO(dtype.to_string() << " divisor of rank-2 shape " << divisor_shape[0] << "x13");
      const double lowest = dtype == DType::i8()    ? -128.0
                            : dtype == DType::i32() ? -2147483648.0
                                                    : -9223372036854775808.0;
      Graph g;
      Tensor a = g.input("a", {7, 13}, dtype);
      Tensor b = g.input("b", to_shape(divisor_shape), dtype);
      g.output(a / b);
      NDArray x = random_array(dtype, {7, 13}, -100, 100);
      NDArray y = random_array(dtype, divisor_shape, -3, 3);
      plant(x, {lowest, lowest, lowest, 7, -7, 0, lowest});
      plant(y, {0, -1, 1, 0, -1, 0, 3});
      NDArray want = expected_map(dtype, {x, y}, [&](const auto& v) {
        const double n = v[0], d = v[1];
        if (d == 0) return 0.0;
        if (d == -1) return n == lowest ? lowest : -n;  // wraps at the lowest value
        return std::trunc(n / d);
      });
      require_match(compile_and_run(g, {x, y})[0], want);
      // The reference interpreter defines it the same way.
      require_match(reference_run(g, {x, y})[0], want);
    }
  }
}
