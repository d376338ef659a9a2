// Loop primitives end to end: te tasks (matmul, elementwise chain, row sum, softmax) scheduled
// with LoopSchedule, lowered (flatten, unroll, vectorize, simplify), JIT-compiled and compared
// with te::evaluate on fresh random inputs of odd and prime sizes, outputs poisoned first.

#include <string>
#include <vector>

#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/schedule/loop_schedule.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/te/lower.hpp"
#include "loom/te/task.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::schedule::LoopSchedule;
using loom::schedule::TailStrategy;
using loom::testing::random_array;
using loom::testing::require_close;

namespace {

te::Task matmul_task(int64_t m, int64_t n, int64_t k) {
  te::Tensor a = te::placeholder("A", DType::f32(), {m, k});
  te::Tensor b = te::placeholder("B", DType::f32(), {k, n});
  ir::IterVar r = te::reduce_axis(k, "k");
  te::Tensor c = te::compute("C", {m, n}, [&](const std::vector<ir::Var>& i) {
    return te::sum(a(i[0], r.var) * b(r.var, i[1]), {r});
  });
  return *te::Task::make("matmul", {a, b}, {c});
}

// B = 2x + 1 (an intermediate), C = exp(B) - B / 2.
te::Task chain_task(ir::Expr rows, int64_t cols) {
  te::Tensor x = te::placeholder("x", DType::f32(), {rows, cols});
  te::Tensor b = te::compute("B", {rows, cols}, [&](const std::vector<ir::Var>& i) {
    return x(i[0], i[1]) * 2.0f + 1.0f;
  });
  te::Tensor c = te::compute("C", {rows, cols}, [&](const std::vector<ir::Var>& i) {
    return ir::exp(b(i[0], i[1])) - b(i[0], i[1]) * 0.5f;
  });
  return *te::Task::make("chain", {x}, {c});
}

te::Task row_sum_task(int64_t rows, int64_t cols) {
  te::Tensor x = te::placeholder("x", DType::f32(), {rows, cols});
  ir::IterVar r = te::reduce_axis(cols, "k");
  te::Tensor s = te::compute(
      "S", {rows}, [&](const std::vector<ir::Var>& i) { return te::sum(x(i[0], r.var), {r}); });
  return *te::Task::make("row_sum", {x}, {s});
}

// mx = max(x), e = exp(x - mx), s = sum(e), out = e / s, row by row.
te::Task softmax_task(int64_t rows, int64_t cols) {
  te::Tensor x = te::placeholder("x", DType::f32(), {rows, cols});
  ir::IterVar r = te::reduce_axis(cols, "r");
  te::Tensor mx = te::compute(
      "mx", {rows}, [&](const std::vector<ir::Var>& i) { return te::max(x(i[0], r.var), {r}); });
  te::Tensor e = te::compute("e", {rows, cols}, [&](const std::vector<ir::Var>& i) {
    return ir::exp(x(i[0], i[1]) - mx(i[0]));
  });
  ir::IterVar r2 = te::reduce_axis(cols, "r2");
  te::Tensor s = te::compute(
      "s", {rows}, [&](const std::vector<ir::Var>& i) { return te::sum(e(i[0], r2.var), {r2}); });
  te::Tensor out = te::compute(
      "out", {rows, cols}, [&](const std::vector<ir::Var>& i) { return e(i[0], i[1]) / s(i[0]); });
  return *te::Task::make("softmax", {x}, {out});
}

ir::Var loop(const LoopSchedule& s, const std::string& name) {
  auto v = s.loop(name);
  INFO(v.status().ToString() << "\n" << ir::to_string(s.func()));
  REQUIRE(v.ok());
  return *v;
}

ir::Buffer buffer(const LoopSchedule& s, const std::string& name) {
  auto b = s.buffer(name);
  INFO(b.status().ToString());
  REQUIRE(b.ok());
  return *b;
}

void require_ok(const absl::Status& status, const LoopSchedule& s) {
  INFO(status.ToString() << "\n" << ir::to_string(s.func()));
  REQUIRE(status.ok());
}

// The lowering a scheduled func goes through before code generation.
ir::Func finish(const ir::Func& scheduled) {
  ir::Func f = passes::flatten_layouts(scheduled);
  f = passes::unroll_loops(f);
  absl::StatusOr<ir::Func> v = passes::vectorize_loops(f);
  INFO(v.status().ToString() << "\n" << ir::to_string(f));
  REQUIRE(v.ok());
  return ir::simplify(*v);
}

// Compiles the scheduled func, runs it on fresh random inputs and compares with the evaluator.
ir::Func check_against_reference(const te::Task& task, const LoopSchedule& s,
                                 const std::vector<std::vector<int64_t>>& input_shapes,
                                 const std::vector<int64_t>& scalars = {}) {
  static int counter = 0;
  ir::Func f = finish(s.func());
  f.name = "sched_" + task.name() + std::to_string(counter++);
  INFO(ir::to_string(f));
  auto jit = runtime::CpuJit::create();
  REQUIRE(jit.ok());
  auto fns = (*jit)->compile(ir::Module{f.name, Target::host_cpu(), {f}});
  INFO(fns.status().ToString());
  REQUIRE(fns.ok());
  std::vector<NDArray> inputs;
  for (const auto& shape : input_shapes) inputs.push_back(random_array(DType::f32(), shape));
  auto expected = te::evaluate(task, inputs);
  REQUIRE(expected.ok());
  std::vector<NDArray> outs;
  std::vector<void*> ptrs;
  for (const NDArray& a : inputs) ptrs.push_back(a.data());
  for (const NDArray& want : *expected) {
    outs.emplace_back(want.dtype(), want.shape());
    outs.back().poison();
    ptrs.push_back(outs.back().data());
  }
  (*fns)[0](ptrs.data(), scalars.data());
  for (size_t i = 0; i < outs.size(); ++i) require_close(outs[i], (*expected)[i], 1e-5, 1e-5);
  return f;
}

int count_ifs(const ir::Stmt& s) {
  struct Counter : ir::IRVisitor {
    int n = 0;
    void visit_if(const ir::IfThenElse* op) override {
      ++n;
      ir::IRVisitor::visit_if(op);
    }
  } c;
  c.visit(s);
  return c.n;
}

// Vector stores whose index is a dense ramp: real vector stores after flattening.
int count_dense_vector_stores(const ir::Stmt& s) {
  struct Counter : ir::IRVisitor {
    int n = 0;
    void visit_store(const ir::Store* op) override {
      if (op->indices.size() == 1) {
        const ir::Ramp* r = op->indices[0].as<ir::Ramp>();
        n += r && ir::is_const_int(r->stride, 1);
      }
      ir::IRVisitor::visit_store(op);
    }
  } c;
  c.visit(s);
  return c.n;
}

}  // namespace

TEST_CASE("split with constant extents keeps the main body guard-free and adds a tail loop",
          "[schedule]") {
  for (int64_t rows : {1, 7, 31, 257}) {
    CAPTURE(rows);
    te::Task task = chain_task(rows, 13);
    LoopSchedule s(te::lower_default(task));
    auto cols_split = s.split(loop(s, "C_i1"), 4);
    REQUIRE(cols_split.ok());
    require_ok(s.vectorize(cols_split->inner), s);
    // The row tail copies the column loops, vectorized one included.
    auto rows_split = s.split(loop(s, "C_i0"), 8);
    REQUIRE(rows_split.ok());
    CHECK(count_ifs(s.func().body) == 0);
    CHECK(s.loop("C_i0.tail").ok() == (rows % 8 != 0));
    ir::Func f = check_against_reference(task, s, {{rows, 13}});
    CHECK(count_dense_vector_stores(f.body) > 0);
  }
}

TEST_CASE("split of a symbolic extent guards the body, or adds a symbolic tail loop",
          "[schedule]") {
  for (TailStrategy tail : {TailStrategy::kAuto, TailStrategy::kLoop}) {
    ir::Var n("n");
    te::Task task = chain_task(n, 7);
    LoopSchedule s(te::lower_default(task));
    REQUIRE(s.split(loop(s, "C_i0"), 4, tail).ok());
    REQUIRE(s.split(loop(s, "B_i0"), 8, tail).ok());
    CHECK((count_ifs(s.func().body) > 0) == (tail == TailStrategy::kAuto));
    for (int64_t rows : {1, 7, 31}) check_against_reference(task, s, {{rows, 7}}, {rows});
  }
}

TEST_CASE("tile of a symbolic extent sinks the guard into the innermost body", "[schedule]") {
  ir::Var n("n");
  te::Task task = chain_task(n, 13);
  LoopSchedule s(te::lower_default(task));
  auto t = s.tile(loop(s, "C_i0"), loop(s, "C_i1"), 4, 8);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  // The guard tests rows only, so the column lanes stay uniform and vectorize.
  require_ok(s.vectorize(t->y_inner), s);
  require_ok(s.parallel(t->x_outer), s);
  for (int64_t rows : {1, 7, 31}) {
    ir::Func f = check_against_reference(task, s, {{rows, 13}}, {rows});
    CHECK(count_dense_vector_stores(f.body) > 0);
  }
}

TEST_CASE("matmul: tile, cache_write, reorder, vectorize, unroll and parallel", "[schedule]") {
  struct Size {
    int64_t m, n, k;
  };
  for (Size size : {Size{16, 32, 16}, Size{7, 31, 13}, Size{1, 257, 7}, Size{31, 8, 1}}) {
    CAPTURE(size.m, size.n, size.k);
    te::Task task = matmul_task(size.m, size.n, size.k);
    LoopSchedule s(te::lower_default(task));
    auto t = s.tile(loop(s, "C_i0"), loop(s, "C_i1"), 4, 8);
    REQUIRE(t.ok());
    auto local = s.cache_write(buffer(s, "C"), t->y_outer);
    INFO(local.status().ToString());
    REQUIRE(local.ok());
    CHECK(local->shape().size() == 2);
    require_ok(s.reorder({loop(s, "k"), t->x_inner, t->y_inner}), s);
    require_ok(s.vectorize(t->y_inner), s);
    require_ok(s.vectorize(loop(s, "C_i1.inner.init")), s);
    require_ok(s.vectorize(loop(s, "C_i1.inner.write")), s);
    require_ok(s.unroll(t->x_inner), s);
    require_ok(s.parallel(t->x_outer), s);
    ir::Func f = check_against_reference(task, s, {{size.m, size.k}, {size.k, size.n}});
    if (size.m >= 4 && size.n >= 8) CHECK(count_dense_vector_stores(f.body) > 0);
  }
}

TEST_CASE("matmul: split the reduction axis with a tail, reorder within it, unroll, fuse",
          "[schedule]") {
  for (int64_t k : {1, 7, 31}) {
    CAPTURE(k);
    te::Task task = matmul_task(5, 9, k);
    LoopSchedule s(te::lower_default(task));
    auto ks = s.split(loop(s, "k"), 4);
    REQUIRE(ks.ok());
    // Both pieces reduce into the same accumulator; swapping them only reorders the sum.
    require_ok(s.reorder({ks->inner, ks->outer}), s);
    require_ok(s.unroll(ks->inner), s);
    auto fused = s.fuse(loop(s, "C_i0"), loop(s, "C_i1"));
    REQUIRE(fused.ok());
    require_ok(s.parallel(*fused), s);
    check_against_reference(task, s, {{5, k}, {k, 9}});
  }
}

TEST_CASE("row sum: parallel rows, split and unrolled reduction axis", "[schedule]") {
  for (int64_t cols : {1, 7, 31, 257}) {
    CAPTURE(cols);
    te::Task task = row_sum_task(31, cols);
    LoopSchedule s(te::lower_default(task));
    auto ks = s.split(loop(s, "k"), 8);
    REQUIRE(ks.ok());
    require_ok(s.unroll(ks->inner), s);
    require_ok(s.parallel(loop(s, "S_i0")), s);
    check_against_reference(task, s, {{31, cols}});
  }
}

TEST_CASE("row sum: cache_write lets the reduction vectorize across rows", "[schedule]") {
  for (int64_t rows : {7, 64, 257}) {
    CAPTURE(rows);
    te::Task task = row_sum_task(rows, 13);
    LoopSchedule s(te::lower_default(task));
    auto rs = s.split(loop(s, "S_i0"), 8);
    REQUIRE(rs.ok());
    REQUIRE(s.cache_write(buffer(s, "S"), rs->outer).ok());
    require_ok(s.reorder({loop(s, "k"), rs->inner}), s);
    require_ok(s.vectorize(rs->inner), s);
    require_ok(s.vectorize(loop(s, "S_i0.inner.write")), s);
    ir::Func f = check_against_reference(task, s, {{rows, 13}});
    if (rows >= 8) CHECK(count_dense_vector_stores(f.body) > 0);
  }
}

TEST_CASE("elementwise chain: compute_inline, then fuse, split, vectorize, parallel",
          "[schedule]") {
  for (int64_t rows : {1, 7, 31}) {
    te::Task task = chain_task(rows, 13);
    LoopSchedule s(te::lower_default(task));
    require_ok(s.compute_inline(buffer(s, "B")), s);
    CHECK(!s.buffer("B").ok());
    CHECK(!s.loop("B_i0").ok());
    auto fused = s.fuse(loop(s, "C_i0"), loop(s, "C_i1"));
    REQUIRE(fused.ok());
    auto sp = s.split(*fused, 8);
    REQUIRE(sp.ok());
    require_ok(s.vectorize(sp->inner), s);
    require_ok(s.parallel(sp->outer), s);
    check_against_reference(task, s, {{rows, 13}});
  }
}

TEST_CASE("elementwise chain: compute_at a row or a point, then tile the consumer", "[schedule]") {
  for (bool at_point : {false, true}) {
    CAPTURE(at_point);
    te::Task task = chain_task(31, 13);
    LoopSchedule s(te::lower_default(task));
    require_ok(s.compute_at(buffer(s, "B"), loop(s, at_point ? "C_i1" : "C_i0")), s);
    if (!at_point) {
      // One row of B per row of C: its column loop keeps the full, constant extent.
      auto bs = s.split(loop(s, "B_i1"), 4);
      REQUIRE(bs.ok());
      require_ok(s.vectorize(bs->inner), s);
      auto cs = s.split(loop(s, "C_i1"), 4);
      REQUIRE(cs.ok());
      require_ok(s.vectorize(cs->inner), s);
    } else {
      REQUIRE(s.tile(loop(s, "C_i0"), loop(s, "C_i1"), 8, 4).ok());
    }
    require_ok(s.parallel(loop(s, at_point ? "C_i0.outer" : "C_i0")), s);
    check_against_reference(task, s, {{31, 13}});
  }
}

TEST_CASE("softmax: compute_at the row statistics, vectorize the row loops", "[schedule]") {
  for (int64_t cols : {1, 8, 31}) {
    CAPTURE(cols);
    te::Task task = softmax_task(7, cols);
    LoopSchedule s(te::lower_default(task));
    require_ok(s.compute_at(buffer(s, "mx"), loop(s, "e_i0")), s);
    require_ok(s.compute_at(buffer(s, "s"), loop(s, "out_i0")), s);
    auto es = s.split(loop(s, "e_i1"), 8);
    REQUIRE(es.ok());
    require_ok(s.vectorize(es->inner), s);
    auto os = s.split(loop(s, "out_i1"), 8);
    REQUIRE(os.ok());
    require_ok(s.vectorize(os->inner), s);
    require_ok(s.parallel(loop(s, "out_i0")), s);
    require_ok(s.parallel(loop(s, "e_i0")), s);
    check_against_reference(task, s, {{7, cols}});
  }
}

TEST_CASE("softmax: inline the exponentials, compute the sums per output row", "[schedule]") {
  for (int64_t cols : {7, 31}) {
    CAPTURE(cols);
    te::Task task = softmax_task(5, cols);
    LoopSchedule s(te::lower_default(task));
    require_ok(s.compute_inline(buffer(s, "e")), s);
    require_ok(s.compute_at(buffer(s, "s"), loop(s, "out_i0")), s);
    auto rs = s.split(loop(s, "r2"), 4);
    REQUIRE(rs.ok());
    require_ok(s.unroll(rs->inner), s);
    check_against_reference(task, s, {{5, cols}});
  }
}

TEST_CASE("loops are found by name", "[schedule]") {
  LoopSchedule s(te::lower_default(matmul_task(4, 4, 4)));
  auto k = s.loop("k");
  REQUIRE(k.ok());
  CHECK(k->name() == "k");
  CHECK(s.loop("nope").status().code() == absl::StatusCode::kNotFound);
  // unroll/vectorize marks survive only as loop kinds until the passes run.
  auto sp = s.split(loop(s, "C_i1"), 2);
  REQUIRE(sp.ok());
  REQUIRE(s.unroll(sp->inner).ok());
  ir::Func unrolled = passes::unroll_loops(s.func());
  CHECK(ir::to_string(unrolled).find("unrolled") == std::string::npos);
}
