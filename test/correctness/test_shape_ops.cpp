// Data movement and index reductions (concat, split, slice, gather, pad, flatten, squeeze,
// unsqueeze, expand, min, prod, argmax, argmin), compiled for the host CPU and run, against
// plain C++ written from the ONNX spec and against the te reference evaluator.

#include <cstdint>
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
using loom::testing::require_close;

namespace {

using Index = std::vector<int64_t>;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// Compiled results, checked against the te reference evaluator too.
std::vector<NDArray> run_checked(const Graph& g, const std::vector<NDArray>& inputs) {
  std::vector<NDArray> got = compile_and_run(g, inputs);
  std::vector<NDArray> want = reference_run(g, inputs);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) require_close(got[i], want[i], 1e-5, 1e-6);
  return got;
}

Index unravel(int64_t flat, const Index& shape) {
  Index idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

int64_t ravel(const Index& idx, const Index& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

// An array of the given shape whose element at idx is f(idx).
NDArray build(DType t, const Index& shape, const std::function<double(const Index&)>& f) {
  NDArray out(t, shape);
  for (int64_t i = 0; i < out.numel(); ++i) out.set(i, f(unravel(i, shape)));
  return out;
}

double at(const NDArray& a, const Index& idx) {
  return a.get(ravel(idx, a.shape()));
}

Shape shape_of(const Index& s) {
  return Shape(s.begin(), s.end());
}

// The indices an ONNX slice of one dim of extent n visits, by walking the range.
Index slice_indices(int64_t n, int64_t start, int64_t end, int64_t step) {
  auto norm = [n](int64_t v) { return v < 0 ? v + n : v; };
  int64_t s = norm(start), e = norm(end);
  Index out;
  if (step > 0) {
    s = std::max<int64_t>(0, std::min(s, n));
    e = std::max<int64_t>(0, std::min(e, n));
    for (int64_t j = s; j < e; j += step) {
      out.push_back(j);
      if (step > n) break;  // no overflow for huge steps
    }
  } else {
    s = std::max<int64_t>(0, std::min(s, n - 1));
    e = std::max<int64_t>(-1, std::min(e, n - 1));
    for (int64_t j = s; j > e; j += step) {
      out.push_back(j);
      if (-step > n) break;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("concat joins tensors along any axis", "[shape_ops][correctness]") {
  struct Case {
    std::vector<Index> shapes;
    int axis;
  };
  for (const Case& c :
       {Case{{{3, 5, 7}, {3, 2, 7}, {3, 1, 7}}, 1}, Case{{{3, 5, 7}, {3, 2, 7}, {3, 1, 7}}, -2},
        Case{{{2, 3}, {5, 3}}, 0}, Case{{{13, 3}, {13, 1}, {13, 4}, {13, 2}}, -1},
        Case{{{4, 3}, {4, 0}, {4, 2}}, 1}, Case{{{11}}, 0}}) {
    for (DType t : {DType::f32(), DType::i32()}) {
      Graph g;
      std::vector<Tensor> ins;
      std::vector<NDArray> arrays;
      for (size_t k = 0; k < c.shapes.size(); ++k) {
        ins.push_back(g.input("x" + std::to_string(k), shape_of(c.shapes[k]), t));
        arrays.push_back(random_array(t, c.shapes[k], -50, 50));
      }
      g.output(g.concat(ins, c.axis));
      g.output(concat(ins, c.axis).add(1.0));  // the free function, one more op after it
      INFO("axis " << c.axis << " " << t.to_string());
      auto got = run_checked(g, arrays);
      const int rank = static_cast<int>(c.shapes[0].size());
      const int axis = c.axis < 0 ? c.axis + rank : c.axis;
      Index out_shape = c.shapes[0];
      out_shape[axis] = 0;
      for (const Index& s : c.shapes) out_shape[axis] += s[axis];
      NDArray want = build(t, out_shape, [&](Index idx) {
        size_t k = 0;
        while (idx[axis] >= c.shapes[k][axis]) idx[axis] -= c.shapes[k++][axis];
        return at(arrays[k], idx);
      });
      require_close(got[0], want);
      REQUIRE(got[1].shape() == want.shape());
      for (int64_t i = 0; i < want.numel(); ++i)
        REQUIRE(got[1].get(i) == static_cast<float>(want.get(i) + 1));  // exact for these ints
    }
  }
}

TEST_CASE("concat along a static axis passes a symbolic batch through",
          "[shape_ops][correctness]") {
  Graph g;
  Tensor a = g.input("a", {Dim("batch"), 3}), b = g.input("b", {Dim("batch"), 5});
  Tensor c = g.concat({a, b}, 1);
  REQUIRE(c.shape() == Shape{Dim("batch"), 8});
  g.output(c);
  for (int64_t batch : {1, 3, 5}) {
    NDArray x = random_array(DType::f32(), {batch, 3}), y = random_array(DType::f32(), {batch, 5});
    auto got = run_checked(g, {x, y});
    require_close(got[0], build(DType::f32(), {batch, 8}, [&](const Index& i) {
                    return i[1] < 3 ? at(x, {i[0], i[1]}) : at(y, {i[0], i[1] - 3});
                  }));
  }
}

TEST_CASE("split cuts a tensor into consecutive parts", "[shape_ops][correctness]") {
  struct Case {
    Index shape;
    int axis;
    Index sizes;
  };
  for (const Case& c : {Case{{7, 11}, -1, {2, 5, 4}}, Case{{7, 11}, 0, {3, 4}},
                        Case{{3, 13, 2}, 1, {1, 1, 11}}, Case{{5}, 0, {5}}}) {
    Graph g;
    Tensor x = g.input("x", shape_of(c.shape));
    std::vector<Tensor> parts = x.split(c.axis, c.sizes);
    REQUIRE(parts.size() == c.sizes.size());
    for (const Tensor& p : parts) g.output(p);
    NDArray in = random_array(DType::f32(), c.shape);
    auto got = run_checked(g, {in});
    const int axis = c.axis < 0 ? c.axis + static_cast<int>(c.shape.size()) : c.axis;
    int64_t offset = 0;
    for (size_t k = 0; k < c.sizes.size(); ++k) {
      Index s = c.shape;
      s[axis] = c.sizes[k];
      require_close(got[k], build(DType::f32(), s, [&](Index i) {
                      i[axis] += offset;
                      return at(in, i);
                    }));
      offset += c.sizes[k];
    }
  }
}

TEST_CASE("slice follows ONNX rules", "[shape_ops][correctness]") {
  {
    // A worked example: 0..9, from the last element backwards in steps of 3.
    Graph g;
    g.output(g.input("x", {10}).slice({-1}, {kMin}, {0}, {-3}));
    NDArray in =
        build(DType::f32(), {10}, [](const Index& i) { return static_cast<double>(i[0]); });
    auto got = run_checked(g, {in});
    require_close(got[0], NDArray::from_vector(DType::f32(), {4}, std::vector<float>{9, 6, 3, 0}));
  }
  struct Case {
    Index starts, ends;
    std::vector<int> axes;
    Index steps;
  };
  const Index shape = {5, 7, 11};
  for (const Case& c : {
           Case{{1, 2}, {4, 6}, {}, {}},                        // plain, axes default to 0, 1
           Case{{-3}, {-1}, {2}, {}},                           // negative start and end
           Case{{-100, 2}, {100, kMax}, {0, -1}, {1, 3}},       // clamped, to the end, step 3
           Case{{6, 10}, {0, kMin}, {1, -1}, {-2, -4}},         // negative steps
           Case{{kMax}, {-kMax}, {-2}, {-1}},                   // a whole dim backwards
           Case{{3, 0, 1}, {1, 5, 10}, {2, 0, -2}, {1, 2, 5}},  // an empty dim, mixed axes
           Case{{0}, {11}, {-1}, {20}},                         // a step past the end
       }) {
    Graph g;
    g.output(g.input("x", shape_of(shape)).slice(c.starts, c.ends, c.axes, c.steps));
    NDArray in = random_array(DType::f32(), shape);
    auto got = run_checked(g, {in});
    // Visited indices per dim; unsliced dims are visited whole.
    std::vector<Index> visit(3);
    for (int d = 0; d < 3; ++d) visit[d] = slice_indices(shape[d], 0, kMax, 1);
    for (size_t k = 0; k < c.starts.size(); ++k) {
      int axis = c.axes.empty() ? static_cast<int>(k) : c.axes[k];
      if (axis < 0) axis += 3;
      visit[axis] =
          slice_indices(shape[axis], c.starts[k], c.ends[k], c.steps.empty() ? 1 : c.steps[k]);
    }
    Index out_shape = {static_cast<int64_t>(visit[0].size()), static_cast<int64_t>(visit[1].size()),
                       static_cast<int64_t>(visit[2].size())};
    require_close(got[0], build(DType::f32(), out_shape, [&](const Index& i) {
                    return at(in, {visit[0][i[0]], visit[1][i[1]], visit[2][i[2]]});
                  }));
  }
}

TEST_CASE("slice keeps a symbolic batch", "[shape_ops][correctness]") {
  Graph g;
  Tensor y = g.input("x", {Dim("batch"), 9}).slice({-2}, {0}, {1}, {-2});
  REQUIRE(y.shape() == Shape{Dim("batch"), 4});
  g.output(y);
  NDArray in = random_array(DType::f32(), {3, 9});
  auto got = run_checked(g, {in});
  require_close(got[0], build(DType::f32(), {3, 4}, [&](const Index& i) {
                  return at(in, {i[0], 7 - 2 * i[1]});
                }));
}

TEST_CASE("gather picks entries along an axis, negative indices wrap", "[shape_ops][correctness]") {
  struct Case {
    Index data, indices;
    int axis;
    DType index_type;
    bool constant;
  };
  for (const Case& c : {Case{{5, 7, 3}, {2, 3}, 1, DType::i64(), false},
                        Case{{5, 7, 3}, {4}, 0, DType::i32(), true},
                        Case{{5, 7, 3}, {6, 1}, -1, DType::i32(), false},
                        Case{{13, 2}, {}, 0, DType::i64(), true},  // a scalar index drops the dim
                        Case{{11}, {3, 2, 2}, 0, DType::i64(), false}}) {
    Graph g;
    const int axis = c.axis < 0 ? c.axis + static_cast<int>(c.data.size()) : c.axis;
    const int64_t n = c.data[axis];
    NDArray data = random_array(DType::f32(), c.data);
    NDArray indices =
        random_array(c.index_type, c.indices, static_cast<double>(-n), static_cast<double>(n));
    Tensor x = g.input("data", shape_of(c.data));
    Tensor idx = c.constant ? g.constant("indices", indices)
                            : g.input("indices", shape_of(c.indices), c.index_type);
    g.output(x.gather(idx, c.axis));
    std::vector<NDArray> inputs = {data};
    if (!c.constant) inputs.push_back(indices);
    INFO("axis " << c.axis);
    auto got = run_checked(g, inputs);
    Index out_shape(c.data.begin(), c.data.begin() + axis);
    out_shape.insert(out_shape.end(), c.indices.begin(), c.indices.end());
    out_shape.insert(out_shape.end(), c.data.begin() + axis + 1, c.data.end());
    const size_t q = c.indices.size();
    require_close(got[0], build(DType::f32(), out_shape, [&](const Index& i) {
                    Index ind(i.begin() + axis, i.begin() + axis + q);
                    int64_t k = static_cast<int64_t>(at(indices, ind));
                    if (k < 0) k += n;
                    Index src(i.begin(), i.begin() + axis);
                    src.push_back(k);
                    src.insert(src.end(), i.begin() + axis + q, i.end());
                    return at(data, src);
                  }));
  }
}

TEST_CASE("gather clamps out-of-range indices", "[shape_ops][correctness]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), 6});
  Tensor idx = g.input("i", {5}, DType::i64());
  g.output(x.gather(idx, 1));
  g.output(x.gather(idx, 0));
  NDArray data = random_array(DType::f32(), {4, 6});
  NDArray ind = NDArray::from_vector(DType::i64(), {5}, std::vector<int64_t>{100, -100, -1, 6, -7});
  auto got = run_checked(g, {data, ind});
  // Along dim 1 (extent 6): 100 -> 5, -100 -> 0, -1 -> 5, 6 -> 5, -7 -> 0.
  const Index along1 = {5, 0, 5, 5, 0};
  require_close(got[0], build(DType::f32(), {4, 5}, [&](const Index& i) {
                  return at(data, {i[0], along1[i[1]]});
                }));
  // Along the symbolic dim 0 (extent 4 at run time): 100 -> 3, -100 -> 0, -1 -> 3, 6 -> 3, -7 -> 0.
  const Index along0 = {3, 0, 3, 3, 0};
  require_close(got[1], build(DType::f32(), {5, 6}, [&](const Index& i) {
                  return at(data, {along0[i[0]], i[1]});
                }));
}

TEST_CASE("pad in constant, reflect and edge modes", "[shape_ops][correctness]") {
  const Index shape = {3, 5, 4};
  const std::vector<PadWidth> pads = {{1, 2}, {0, 3}, {2, 0}};
  for (PadMode mode : {PadMode::kConstant, PadMode::kReflect, PadMode::kEdge}) {
    for (DType t : {DType::f32(), DType::i32()}) {
      Graph g;
      g.output(g.input("x", shape_of(shape), t).pad(pads, mode, 2.5));
      NDArray in = random_array(t, shape, -9, 9);
      INFO("mode " << static_cast<int>(mode) << " " << t.to_string());
      auto got = run_checked(g, {in});
      Index out_shape;
      for (size_t d = 0; d < shape.size(); ++d)
        out_shape.push_back(shape[d] + pads[d].begin + pads[d].end);
      const double fill = t.is_float() ? 2.5 : 2;
      require_close(got[0], build(t, out_shape, [&](const Index& i) {
                      Index src(i.size());
                      for (size_t d = 0; d < i.size(); ++d) {
                        int64_t j = i[d] - pads[d].begin, n = shape[d];
                        if (mode == PadMode::kConstant && (j < 0 || j >= n)) return fill;
                        if (mode == PadMode::kEdge) j = std::max<int64_t>(0, std::min(j, n - 1));
                        // Reflect: bounce off either border until inside.
                        while (j < 0 || j >= n) j = j < 0 ? -j : 2 * (n - 1) - j;
                        src[d] = j;
                      }
                      return at(in, src);
                    }));
    }
  }
  {
    // A worked reflect example: [1 2 3] padded (2, 2) -> [3 2 1 2 3 2 1].
    Graph g;
    g.output(g.input("x", {3}).pad({{2, 2}}, PadMode::kReflect));
    auto got =
        run_checked(g, {NDArray::from_vector(DType::f32(), {3}, std::vector<float>{1, 2, 3})});
    require_close(got[0],
                  NDArray::from_vector(DType::f32(), {7}, std::vector<float>{3, 2, 1, 2, 3, 2, 1}));
  }
}

TEST_CASE("flatten, squeeze and unsqueeze keep the data in row-major order",
          "[shape_ops][correctness]") {
  struct Case {
    Index in;
    std::function<Tensor(Tensor)> op;
    Index out;
  };
  for (const Case& c : {
           Case{{3, 5, 7}, [](Tensor x) { return x.flatten(); }, {3, 35}},
           Case{{3, 5, 7}, [](Tensor x) { return x.flatten(-1); }, {15, 7}},
           Case{{3, 5, 7}, [](Tensor x) { return x.flatten(0); }, {1, 105}},
           Case{{3, 5, 7}, [](Tensor x) { return x.flatten(3); }, {105, 1}},
           Case{{1, 5, 1, 3}, [](Tensor x) { return x.squeeze(); }, {5, 3}},
           Case{{1, 5, 1, 3}, [](Tensor x) { return x.squeeze({-2}); }, {1, 5, 3}},
           Case{{5, 3},
                [](Tensor x) {
                  return x.unsqueeze({0, -1});
                },
                {1, 5, 3, 1}},
           Case{{5, 3},
                [](Tensor x) {
                  return x.unsqueeze({1, 2});
                },
                {5, 1, 1, 3}},
       }) {
    Graph g;
    Tensor y = c.op(g.input("x", shape_of(c.in)));
    REQUIRE(y.shape() == shape_of(c.out));
    g.output(y.mul(2.0));  // an op after it reads the result through its own shape
    NDArray in = random_array(DType::f32(), c.in);
    auto got = run_checked(g, {in});
    REQUIRE(got[0].shape() == c.out);
    for (int64_t i = 0; i < in.numel(); ++i) REQUIRE(got[0].get(i) == 2 * in.get(i));
  }
  {
    Graph g;
    Tensor y = g.input("x", {Dim("batch"), 3, 4}).flatten(1);
    REQUIRE(y.shape() == Shape{Dim("batch"), 12});
    g.output(y.unsqueeze({1}).squeeze({1}));
    NDArray in = random_array(DType::f32(), {5, 3, 4});
    auto got = run_checked(g, {in});
    REQUIRE(got[0].shape() == Index{5, 12});
    for (int64_t i = 0; i < in.numel(); ++i) REQUIRE(got[0].get(i) == in.get(i));
  }
}

TEST_CASE("expand broadcasts to a shape", "[shape_ops][correctness]") {
  struct Case {
    Index in, to, out;
  };
  for (const Case& c : {Case{{3, 1}, {2, 3, 5}, {2, 3, 5}}, Case{{1}, {4}, {4}},
                        Case{{5, 1, 7}, {1, 3, 7}, {5, 3, 7}}, Case{{2, 3}, {1}, {2, 3}}}) {
    Graph g;
    g.output(g.input("x", shape_of(c.in)).expand(shape_of(c.to)));
    NDArray in = random_array(DType::f32(), c.in);
    auto got = run_checked(g, {in});
    require_close(got[0], build(DType::f32(), c.out, [&](const Index& i) {
                    Index src;
                    const size_t lead = c.out.size() - c.in.size();
                    for (size_t d = 0; d < c.in.size(); ++d)
                      src.push_back(c.in[d] == 1 ? 0 : i[lead + d]);
                    return at(in, src);
                  }));
  }
  {
    Graph g;
    Tensor y = g.input("x", {Dim("batch"), 1}).expand({Dim("batch"), 6});
    REQUIRE(y.shape() == Shape{Dim("batch"), 6});
    g.output(y);
    NDArray in = random_array(DType::f32(), {3, 1});
    auto got = run_checked(g, {in});
    require_close(got[0], build(DType::f32(), {3, 6}, [&](const Index& i) {
                    return at(in, {i[0], 0});
                  }));
  }
}

namespace {

// Plain reduction of x over axes (sorted, non-negative) with combine from init.
NDArray naive_reduce(const NDArray& x, const std::vector<int>& axes, bool keepdims, DType out_type,
                     double init, const std::function<double(double, double)>& combine) {
  Index out_shape;
  auto reduced = [&](int d) { return std::find(axes.begin(), axes.end(), d) != axes.end(); };
  for (int d = 0; d < x.rank(); ++d) {
    if (!reduced(d))
      out_shape.push_back(x.shape()[d]);
    else if (keepdims)
      out_shape.push_back(1);
  }
  NDArray out(out_type, out_shape);
  std::vector<double> acc(static_cast<size_t>(out.numel()), init);
  for (int64_t f = 0; f < x.numel(); ++f) {
    Index i = unravel(f, x.shape()), o;
    for (int d = 0; d < x.rank(); ++d) {
      if (!reduced(d))
        o.push_back(i[d]);
      else if (keepdims)
        o.push_back(0);
    }
    double& a = acc[static_cast<size_t>(ravel(o, out_shape))];
    a = combine(a, x.get(f));
  }
  for (int64_t k = 0; k < out.numel(); ++k) out.set(k, acc[static_cast<size_t>(k)]);
  return out;
}

// argmax over dim 0 of a matrix, first index on ties.
NDArray naive_argmax0(const NDArray& x) {
  return build(DType::i64(), {x.shape()[1]}, [&](const Index& o) {
    int64_t best = 0;
    for (int64_t k = 1; k < x.shape()[0]; ++k)
      if (at(x, {k, o[0]}) > at(x, {best, o[0]})) best = k;
    return static_cast<double>(best);
  });
}

}  // namespace

TEST_CASE("min and prod reduce over axes", "[shape_ops][correctness]") {
  struct Case {
    Index shape;
    std::vector<int> axes, sorted;
    bool keepdims;
  };
  for (const Case& c : {Case{{7, 13}, {-1}, {1}, false},  // trailing: the row template
                        Case{{5, 3, 7}, {1}, {1}, true},  // middle: the default schedule
                        Case{{5, 3, 7}, {0, -1}, {0, 2}, false}, Case{{3, 5}, {}, {0, 1}, true}}) {
    for (DType t : {DType::f32(), DType::i32()}) {
      Graph g;
      Tensor x = g.input("x", shape_of(c.shape), t);
      g.output(x.min(c.axes, c.keepdims));
      g.output(x.prod(c.axes, c.keepdims));
      NDArray in =
          t.is_float() ? random_array(t, c.shape, 0.6, 1.5) : random_array(t, c.shape, -2, 3);
      INFO(t.to_string() << " axes " << c.sorted.size());
      auto got = run_checked(g, {in});
      require_close(got[0], naive_reduce(in, c.sorted, c.keepdims, t, 1e30,
                                         [](double a, double b) { return std::min(a, b); }));
      require_close(
          got[1],
          naive_reduce(in, c.sorted, c.keepdims, t, 1, [](double a, double b) { return a * b; }),
          1e-4, 1e-6);
    }
  }
}

TEST_CASE("min and prod over the last axis use the row template", "[shape_ops][correctness]") {
  Graph g;
  Tensor x = g.input("x", {7, 13});
  g.output(x.min({-1}));
  g.output(x.prod({-1}));
  g.output(x.min({0}));
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  const auto& kernels = compiled->kernels();
  REQUIRE(kernels.size() == 3);
  CHECK(kernels[0].schedule.rfind("rows_min", 0) == 0);
  CHECK(kernels[1].schedule.rfind("rows_prod", 0) == 0);
  CHECK(kernels[2].schedule == "default");
}

TEST_CASE("argmax and argmin return the first index of the extreme", "[shape_ops][correctness]") {
  const Index shape = {7, 5, 13};
  for (DType t : {DType::f32(), DType::i32()}) {
    for (int axis : {0, 1, -1}) {
      for (bool keepdims : {true, false}) {
        Graph g;
        Tensor x = g.input("x", shape_of(shape), t);
        g.output(x.argmax(axis, keepdims));
        g.output(x.argmin(axis, keepdims));
        // Values in {-2, ..., 2}: many ties per row.
        NDArray in = random_array(t, shape, -2, 3);
        if (t.is_float())
          for (int64_t i = 0; i < in.numel(); ++i) in.set(i, std::floor(in.get(i)));
        INFO(t.to_string() << " axis " << axis << " keepdims " << keepdims);
        auto got = run_checked(g, {in});
        const int a = axis < 0 ? axis + 3 : axis;
        Index out_shape = shape;
        if (keepdims)
          out_shape[a] = 1;
        else
          out_shape.erase(out_shape.begin() + a);
        for (int which = 0; which < 2; ++which) {
          NDArray want = build(DType::i64(), out_shape, [&](const Index& o) {
            Index i = o;
            if (!keepdims) i.insert(i.begin() + a, 0);
            int64_t best = 0;
            for (int64_t k = 0; k < shape[a]; ++k) {
              i[a] = k;
              double v = at(in, i);
              Index b = i;
              b[a] = best;
              if (which == 0 ? v > at(in, b) : v < at(in, b)) best = k;  // strict: first wins
            }
            return static_cast<double>(best);
          });
          REQUIRE(got[which].dtype() == DType::i64());
          require_close(got[which], want, 0, 0);
        }
      }
    }
  }
  {
    // A worked example of ties: [1 3 3 0 0] -> argmax 1, argmin 3.
    Graph g;
    Tensor x = g.input("x", {Dim("batch"), 5});
    g.output(x.argmax(-1, false));
    g.output(x.argmin(1));
    auto got = run_checked(
        g, {NDArray::from_vector(DType::f32(), {1, 5}, std::vector<float>{1, 3, 3, 0, 0})});
    REQUIRE(got[0].shape() == Index{1});
    REQUIRE(got[0].get(0) == 1);
    REQUIRE(got[1].shape() == Index{1, 1});
    REQUIRE(got[1].get(0) == 3);
  }
}

TEST_CASE("symbolic dims through every op, specialised and generic", "[shape_ops][correctness]") {
  // n is the batch; ops leave it alone or (gather, argmax) work along it.
  Graph g;
  Tensor x = g.input("x", {Dim("n"), 4});
  Tensor idx = g.input("i", {3}, DType::i32());
  g.output(g.concat({x, x.slice({1}, {kMax}, {1}, {2})}, 1));
  g.output(x.gather(idx, 0));
  g.output(x.pad({{0, 0}, {2, 1}}, PadMode::kReflect));
  g.output(x.unsqueeze({1}).expand({Dim("n"), 3, 4}).flatten(1));
  g.output(x.argmax(0, false));
  g.output(x.min({0}));
  for (bool specialize : {true, false}) {
    CompileOptions options;
    options.poison_buffers = true;
    options.specialize_shapes = specialize;
    auto compiled = Compiler().compile(g, options);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    for (int64_t n : {1, 6}) {
      NDArray in = random_array(DType::f32(), {n, 4});
      NDArray ind = NDArray::from_vector(DType::i32(), {3}, std::vector<int32_t>{-1, 0, 7});
      auto out = compiled->run({in, ind});
      INFO(out.status().ToString() << " specialize " << specialize << " n " << n);
      REQUIRE(out.ok());
      auto want = reference_run(g, {in, ind});
      for (size_t k = 0; k < want.size(); ++k) require_close((*out)[k], want[k]);
      require_close((*out)[0], build(DType::f32(), {n, 6}, [&](const Index& i) {
                      return at(in, {i[0], i[1] < 4 ? i[1] : 1 + 2 * (i[1] - 4)});
                    }));
      const Index rows = {n - 1, 0, n - 1};  // -1 wraps, 7 clamps
      require_close((*out)[1], build(DType::f32(), {3, 4}, [&](const Index& i) {
                      return at(in, {rows[i[0]], i[1]});
                    }));
      const Index cols = {2, 1, 0, 1, 2, 3, 2};
      require_close((*out)[2], build(DType::f32(), {n, 7}, [&](const Index& i) {
                      return at(in, {i[0], cols[i[1]]});
                    }));
      require_close((*out)[3], build(DType::f32(), {n, 12}, [&](const Index& i) {
                      return at(in, {i[0], i[1] % 4});
                    }));
      require_close((*out)[4], naive_argmax0(in));
      require_close((*out)[5], naive_reduce(in, {0}, false, DType::f32(), 1e30,
                                            [](double a, double b) { return std::min(a, b); }));
    }
  }
}
