// Tensor expressions: the reference evaluator against plain C++, and the default lowering (run
// through the CPU JIT) against the evaluator, for tasks with intermediates and several outputs.

#include <cmath>

#include "loom/ir/op.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/te/lower.hpp"
#include "loom/te/task.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::require_close;

namespace {

// Lowers a task, compiles it and runs it on inputs (output buffers poisoned first).
std::vector<NDArray> jit_run(const te::Task& task, const std::vector<NDArray>& inputs,
                             const std::vector<int64_t>& scalars = {}) {
  ir::Module m{"test_" + task.name(), Target::host_cpu(), {passes::lower(task, Target::host_cpu())}};
  auto jit = runtime::CpuJit::create();
  REQUIRE(jit.ok());
  auto fns = (*jit)->compile(m);
  INFO(fns.status().ToString());
  REQUIRE(fns.ok());
  std::vector<NDArray> outs;
  std::vector<void*> ptrs;
  for (const NDArray& a : inputs) ptrs.push_back(a.data());
  auto evaluated = te::evaluate(task, inputs);  // for the output shapes
  REQUIRE(evaluated.ok());
  for (const NDArray& want : *evaluated) {
    outs.emplace_back(want.dtype(), want.shape());
    outs.back().poison();
    ptrs.push_back(outs.back().data());
  }
  (*fns)[0](ptrs.data(), scalars.data());
  for (size_t i = 0; i < outs.size(); ++i) require_close(outs[i], (*evaluated)[i], 1e-5, 1e-6);
  return outs;
}

}  // namespace

TEST_CASE("evaluator computes matmul and every reduction kind like plain C++", "[te]") {
  const int64_t M = 7, N = 31, K = 13;
  te::Tensor a = te::placeholder("A", DType::f32(), {M, K});
  te::Tensor b = te::placeholder("B", DType::f32(), {K, N});
  ir::IterVar k = te::reduce_axis(K, "k");
  te::Tensor c = te::compute("C", {M, N}, [&](const std::vector<ir::Var>& i) {
    return te::sum(a(i[0], k.var) * b(k.var, i[1]), {k});
  });
  ir::IterVar r = te::reduce_axis(K, "r");
  te::Tensor mx = te::compute("mx", {M}, [&](const std::vector<ir::Var>& i) { return te::max(a(i[0], r.var), {r}); });
  ir::IterVar r2 = te::reduce_axis(K, "r2");
  te::Tensor mn = te::compute("mn", {M}, [&](const std::vector<ir::Var>& i) { return te::min(a(i[0], r2.var), {r2}); });
  ir::IterVar r3 = te::reduce_axis(K, "r3");
  te::Tensor pr = te::compute("pr", {M}, [&](const std::vector<ir::Var>& i) { return te::prod(a(i[0], r3.var) + 1.0f, {r3}); });
  auto task = te::Task::make("reductions", {a, b}, {c, mx, mn, pr});
  REQUIRE(task.ok());
  NDArray x = random_array(DType::f32(), {M, K}), y = random_array(DType::f32(), {K, N});
  auto out = te::evaluate(*task, {x, y});
  REQUIRE(out.ok());
  for (int64_t i = 0; i < M; ++i) {
    double hi = -INFINITY, lo = INFINITY, p = 1;
    for (int64_t kk = 0; kk < K; ++kk) {
      hi = std::max(hi, x.get(i * K + kk));
      lo = std::min(lo, x.get(i * K + kk));
      p *= x.get(i * K + kk) + 1;
    }
    CHECK((*out)[1].get(i) == hi);
    CHECK((*out)[2].get(i) == lo);
    CHECK((*out)[3].get(i) == Approx(p).epsilon(1e-5));
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t kk = 0; kk < K; ++kk) acc += x.get(i * K + kk) * y.get(kk * N + j);
      CHECK((*out)[0].get(i * N + j) == Approx(acc).margin(1e-5));
    }
  }
  jit_run(*task, {x, y});
}

TEST_CASE("default lowering handles intermediates, nested reductions and symbolic extents", "[te]") {
  ir::Var n("n");
  te::Tensor x = te::placeholder("x", DType::f32(), {n, 17});
  // Intermediate (not an output) feeding two outputs; a reduction inside arithmetic.
  te::Tensor sq = te::compute("sq", {n, 17}, [&](const std::vector<ir::Var>& i) { return x(i[0], i[1]) * x(i[0], i[1]); });
  ir::IterVar r = te::reduce_axis(17, "r");
  te::Tensor norm = te::compute("norm", {n}, [&](const std::vector<ir::Var>& i) {
    return ir::sqrt(te::sum(sq(i[0], r.var), {r}) + 1e-3f);
  });
  ir::IterVar r2 = te::reduce_axis(17, "r2");
  te::Tensor centered = te::compute("centered", {n, 17}, [&](const std::vector<ir::Var>& i) {
    return x(i[0], i[1]) - te::sum(x(i[0], r2.var), {r2}) / 17.0f;
  });
  auto task = te::Task::make("norms", {x}, {norm, centered});
  REQUIRE(task.ok());
  CHECK(task->shape_vars().size() == 1);
  for (int64_t rows : {1, 7, 31}) jit_run(*task, {random_array(DType::f32(), {rows, 17})}, {rows});
}

TEST_CASE("half-precision tensors accumulate in f32", "[te]") {
  te::Tensor x = te::placeholder("x", DType::f16(), {257});
  ir::IterVar r = te::reduce_axis(257, "r");
  te::Tensor s = te::compute("s", {1}, [&](const std::vector<ir::Var>&) { return ir::cast(DType::f16(), te::sum(x(r.var), {r})); });
  auto task = te::Task::make("hsum", {x}, {s});
  REQUIRE(task.ok());
  NDArray in = random_array(DType::f16(), {257});
  auto out = jit_run(*task, {in});
  double acc = 0;
  for (int64_t i = 0; i < 257; ++i) acc += in.get(i);
  CHECK(out[0].get(0) == Approx(acc).margin(0.05));
}

TEST_CASE("tasks reject tensors that are neither inputs nor computed", "[te][error]") {
  te::Tensor x = te::placeholder("x", DType::f32(), {4});
  te::Tensor y = te::placeholder("y", DType::f32(), {4});
  te::Tensor z = te::compute("z", {4}, [&](const std::vector<ir::Var>& i) { return x(i[0]) + y(i[0]); });
  auto task = te::Task::make("bad", {x}, {z});
  REQUIRE(!task.ok());
  CHECK(std::string(task.status().message()).find("reads tensor y") != std::string::npos);
  auto wrong = te::evaluate(*te::Task::make("ok", {x, y}, {z}), {NDArray(DType::f32(), {4})});
  CHECK(!wrong.ok());
}

TEST_CASE("a task's text names the layout an input is stored in", "[te][cache]") {
  // The text is part of the kernel cache's key (fused prologues and epilogues): two tasks that
  // read one input row-major and in blocks compile to different kernels. Without the layout in
  // the text, the joint layout search's candidate graphs once shared one kernel for both.
  auto text = [](const Layout& layout) {
    te::Tensor x = te::placeholder("x", DType::f32(), layout);
    te::Tensor y = te::compute("y", {ir::Expr(4), ir::Expr(16)},
                               [&](const std::vector<ir::Var>& i) { return x(i[0], i[1]) * 2.0f; });
    absl::StatusOr<te::Task> task = te::Task::make("t", {x}, {y});
    REQUIRE(task.ok());
    return task->to_string();
  };
  const Layout rows = Layout::row_major({ir::Expr(4), ir::Expr(16)});
  const Layout blocks = rows.split(1, 8).reorder({0, 2, 1});
  CHECK(text(rows).find("stored") == std::string::npos);
  CHECK(text(blocks).find("stored " + blocks.to_string()) != std::string::npos);
  CHECK(text(rows) != text(blocks));
}
