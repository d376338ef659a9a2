// Illegal loop-schedule primitives: each gives its promised error, naming the loop or buffer,
// and leaves the func exactly as it was.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/passes/passes.hpp"
#include "loom/schedule/loop_schedule.hpp"
#include "loom/te/lower.hpp"
#include "loom/te/task.hpp"

using namespace loom;
using loom::schedule::LoopSchedule;
using loom::schedule::TailStrategy;

namespace {

te::Task matmul_task() {
  te::Tensor a = te::placeholder("A", DType::f32(), {8, 6});
  te::Tensor b = te::placeholder("B", DType::f32(), {6, 16});
  ir::IterVar k = te::reduce_axis(6, "k");
  te::Tensor c = te::compute("C", {8, 16}, [&](const std::vector<ir::Var>& i) {
    return te::sum(a(i[0], k.var) * b(k.var, i[1]), {k});
  });
  return *te::Task::make("matmul", {a, b}, {c});
}

te::Task chain_task(ir::Expr rows) {
  te::Tensor x = te::placeholder("x", DType::f32(), {rows, 13});
  te::Tensor b = te::compute("B", {rows, 13},
                             [&](const std::vector<ir::Var>& i) { return x(i[0], i[1]) + 1.0f; });
  te::Tensor c = te::compute("C", {rows, 13},
                             [&](const std::vector<ir::Var>& i) { return b(i[0], i[1]) * 3.0f; });
  return *te::Task::make("chain", {x}, {c});
}

te::Task softmax_task() {
  te::Tensor x = te::placeholder("x", DType::f32(), {4, 9});
  ir::IterVar r = te::reduce_axis(9, "r");
  te::Tensor mx = te::compute(
      "mx", {4}, [&](const std::vector<ir::Var>& i) { return te::max(x(i[0], r.var), {r}); });
  te::Tensor e = te::compute("e", {4, 9}, [&](const std::vector<ir::Var>& i) {
    return ir::exp(x(i[0], i[1]) - mx(i[0]));
  });
  ir::IterVar r2 = te::reduce_axis(9, "r2");
  te::Tensor s = te::compute(
      "s", {4}, [&](const std::vector<ir::Var>& i) { return te::sum(e(i[0], r2.var), {r2}); });
  te::Tensor out = te::compute(
      "out", {4, 9}, [&](const std::vector<ir::Var>& i) { return e(i[0], i[1]) / s(i[0]); });
  return *te::Task::make("softmax", {x}, {out});
}

ir::Var loop(const LoopSchedule& s, const std::string& name) {
  auto v = s.loop(name);
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  return *v;
}

ir::Buffer buffer(const LoopSchedule& s, const std::string& name) {
  auto b = s.buffer(name);
  INFO(b.status().ToString());
  REQUIRE(b.ok());
  return *b;
}

// Runs a primitive that must fail: its message contains every fragment and the func is unchanged.
template <typename F>
void require_error(LoopSchedule& s, F&& primitive, const std::vector<std::string>& fragments) {
  std::string before = ir::to_string(s.func());
  absl::Status status = primitive();
  INFO(status.ToString());
  REQUIRE(!status.ok());
  for (const std::string& f : fragments)
    CHECK(std::string(status.message()).find(f) != std::string::npos);
  CHECK(ir::to_string(s.func()) == before);
}

}  // namespace

TEST_CASE("schedule errors: unknown and ambiguous loop names, bad split factors",
          "[schedule][error]") {
  LoopSchedule s(te::lower_default(matmul_task()));
  auto missing = s.loop("nope");
  REQUIRE(!missing.ok());
  CHECK(std::string(missing.status().message()).find("'nope'") != std::string::npos);

  // Two reductions over distinct axes that share the name "k".
  te::Tensor x = te::placeholder("x", DType::f32(), {4, 4});
  ir::IterVar k1 = te::reduce_axis(4, "k"), k2 = te::reduce_axis(4, "k");
  te::Tensor s1 = te::compute(
      "s1", {4}, [&](const std::vector<ir::Var>& i) { return te::sum(x(i[0], k1.var), {k1}); });
  te::Tensor s2 = te::compute(
      "s2", {4}, [&](const std::vector<ir::Var>& i) { return te::max(x(i[0], k2.var), {k2}); });
  LoopSchedule two(te::lower_default(*te::Task::make("two", {x}, {s1, s2})));
  auto ambiguous = two.loop("k");
  REQUIRE(!ambiguous.ok());
  CHECK(std::string(ambiguous.status().message()).find("ambiguous") != std::string::npos);

  require_error(s, [&] { return s.split(loop(s, "C_i0"), 0).status(); }, {"C_i0", "factor"});
  require_error(s, [&] { return s.split(ir::Var("C_i0"), 2).status(); }, {"no loop", "C_i0"});
  require_error(s, [&] { return s.unroll(ir::Var()); }, {"undefined"});
}

TEST_CASE("schedule errors: reorder", "[schedule][error]") {
  LoopSchedule s(te::lower_default(matmul_task()));
  require_error(s,
                [&] {
                  return s.reorder({loop(s, "C_i0"), loop(s, "k"), loop(s, "C_i1")});
                },
                {"reordering a reduction past its consumer", "'k'", "C_i1"});
  require_error(s, [&] { return s.reorder({loop(s, "C_i1"), loop(s, "C_i1")}); }, {"listed twice"});

  LoopSchedule chain(te::lower_default(chain_task(16)));
  require_error(chain,
                [&] {
                  return chain.reorder({loop(chain, "B_i0"), loop(chain, "C_i0")});
                },
                {"not nested"});
  REQUIRE(chain.compute_at(buffer(chain, "B"), loop(chain, "C_i0")).ok());
  require_error(chain,
                [&] {
                  return chain.reorder({loop(chain, "C_i1"), loop(chain, "C_i0")});
                },
                {"not perfectly nested", "C_i0"});
}

TEST_CASE("schedule errors: fuse, unroll, vectorize, parallel", "[schedule][error]") {
  LoopSchedule s(te::lower_default(matmul_task()));
  require_error(s, [&] { return s.fuse(loop(s, "C_i0"), loop(s, "k")).status(); },
                {"'k'", "not the whole body", "C_i0"});
  require_error(s, [&] { return s.vectorize(loop(s, "C_i1")); }, {"not innermost", "C_i1"});
  require_error(s, [&] { return s.vectorize(loop(s, "k")); }, {"'k'", "does not depend", "acc"});
  require_error(s, [&] { return s.parallel(loop(s, "k")); }, {"'k'", "reduction axis"});
  auto sp = s.split(loop(s, "k"), 3);
  REQUIRE(sp.ok());
  REQUIRE(s.unroll(sp->inner).ok());
  require_error(s, [&] { return s.split(sp->inner, 2).status(); }, {"already", "unrolled"});

  ir::Var n("n");
  LoopSchedule sym(te::lower_default(chain_task(n)));
  require_error(sym, [&] { return sym.unroll(loop(sym, "C_i0")); }, {"C_i0", "symbolic extent"});
  // A guarded split leaves a condition on the inner variable: lanes would branch.
  auto guarded = sym.split(loop(sym, "C_i1"), 4, TailStrategy::kGuard);
  REQUIRE(guarded.ok());
  require_error(sym, [&] { return sym.vectorize(guarded->inner); }, {"C_i1.inner", "condition"});
  auto rows = sym.split(loop(sym, "B_i0"), 4);
  REQUIRE(rows.ok());
  require_error(sym, [&] { return sym.vectorize(rows->outer); }, {"B_i0.outer", "constant extent"});
}

TEST_CASE("the vectorize pass rejects a hand-marked reduction loop", "[schedule][error]") {
  ir::Buffer acc = ir::Buffer::make("acc", DType::f32(), {1});
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), {8});
  ir::Var i("i");
  ir::Func f{"bad",
             {x, acc},
             ir::For::make(i, 0, 8, ir::ForKind::kVectorized,
                           ir::Store::make(acc, acc(0) + x(i), {ir::Expr(0)}))};
  auto out = passes::vectorize_loops(f);
  REQUIRE(!out.ok());
  CHECK(std::string(out.status().message()).find("'i'") != std::string::npos);
}

TEST_CASE("schedule errors: compute_inline, compute_at, cache_write", "[schedule][error]") {
  LoopSchedule s(te::lower_default(softmax_task()));
  require_error(s, [&] { return s.compute_inline(buffer(s, "mx")); }, {"'mx'", "reduction result"});
  require_error(s, [&] { return s.compute_inline(buffer(s, "out")); }, {"'out'", "output"});
  require_error(s, [&] { return s.compute_at(buffer(s, "e"), loop(s, "out_i0")); },
                {"'e'", "also read outside", "out_i0"});
  require_error(s, [&] { return s.compute_at(buffer(s, "mx"), loop(s, "mx_i0")); },
                {"part of the nest"});
  require_error(s, [&] { return s.cache_write(buffer(s, "out"), loop(s, "out_i0")).status(); },
                {"no reduction", "'out'"});
  require_error(s, [&] { return s.cache_write(buffer(s, "out"), loop(s, "s_i0")).status(); },
                {"writes 's'", "not 'out'"});

  // A consumer reading B at (i * j) % 16: no rectangular region is affine in j.
  te::Tensor x = te::placeholder("x", DType::f32(), {16});
  te::Tensor b =
      te::compute("B", {16}, [&](const std::vector<ir::Var>& i) { return x(i[0]) * 2.0f; });
  te::Tensor c = te::compute("C", {4, 4},
                             [&](const std::vector<ir::Var>& i) { return b((i[0] * i[1]) % 16); });
  LoopSchedule gather(te::lower_default(*te::Task::make("gather", {x}, {c})));
  require_error(gather,
                [&] { return gather.compute_at(buffer(gather, "B"), loop(gather, "C_i0")); },
                {"cannot infer", "'B'", "C_i0"});
  // Once B's nest is transformed it is no longer the default one.
  REQUIRE(gather.split(loop(gather, "B_i0"), 4).ok());
  require_error(gather, [&] { return gather.compute_inline(buffer(gather, "B")); },
                {"'B'", "not its default"});
}
