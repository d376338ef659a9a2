// Task mappings against Hidet's definition: tasks_of() against an independent recursive model,
// and on() JIT-compiled on the CPU, recording who ran each task and when, against tasks_of().

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/stmt.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "test_util.hpp"

namespace {

namespace ir = loom::ir;
namespace runtime = loom::runtime;
using loom::DType;
using loom::schedule::auto_map;
using loom::schedule::MappingKind;
using loom::schedule::MappingLevel;
using loom::schedule::repeat;
using loom::schedule::spatial;
using loom::schedule::TaskMapping;
using loom::testing::rng;
using loom::testing::test_seed;

using Index = std::vector<int64_t>;
using Tasks = std::vector<Index>;

int64_t product(const Index& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

Index unravel(int64_t k, const Index& shape) {
  Index idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    idx[i] = k % shape[i];
    k /= shape[i];
  }
  return idx;
}

int64_t ravel(const Index& idx, const Index& shape) {
  int64_t k = 0;
  for (size_t i = 0; i < shape.size(); ++i) k = k * shape[i] + idx[i];
  return k;
}

// The paper's definition, written as directly as possible and independently of TaskMapping:
// leaves enumerate their tasks, a composition combines its two operands' workers and tasks.
struct Model {
  Index shape;
  int64_t workers;
  std::function<Tasks(int64_t)> tasks;
};

Model model_spatial(const Index& d) {
  return {d, product(d), [d](int64_t w) { return Tasks{unravel(w, d)}; }};
}

Model model_repeat(const Index& d) {
  return {d, 1, [d](int64_t) {
            Tasks all;
            for (int64_t k = 0; k < product(d); ++k) all.push_back(unravel(k, d));
            return all;
          }};
}

Model model_compose(const Model& a, const Model& b) {
  Index shape(a.shape.size());
  for (size_t i = 0; i < shape.size(); ++i) shape[i] = a.shape[i] * b.shape[i];
  return {shape, a.workers * b.workers, [a, b](int64_t w) {
            Tasks out;
            for (const Index& ta : a.tasks(w / b.workers)) {
              for (const Index& tb : b.tasks(w % b.workers)) {
                Index t(ta.size());
                for (size_t i = 0; i < t.size(); ++i) t[i] = ta[i] * b.shape[i] + tb[i];
                out.push_back(t);
              }
            }
            return out;
          }};
}

Model model_leaf(const MappingLevel& level) {
  return level.kind == MappingKind::kSpatial ? model_spatial(level.shape)
                                             : model_repeat(level.shape);
}

// Left-nested ((l0 * l1) * l2) and right-nested (l0 * (l1 * l2)): both must agree with the mapping.
Model model_left(const std::vector<MappingLevel>& levels) {
  Model m = model_leaf(levels[0]);
  for (size_t l = 1; l < levels.size(); ++l) m = model_compose(m, model_leaf(levels[l]));
  return m;
}
Model model_right(const std::vector<MappingLevel>& levels) {
  Model m = model_leaf(levels.back());
  for (size_t l = levels.size() - 1; l-- > 0;) m = model_compose(model_leaf(levels[l]), m);
  return m;
}

MappingLevel sp(Index d) {
  return {MappingKind::kSpatial, std::move(d)};
}
MappingLevel rp(Index d) {
  return {MappingKind::kRepeat, std::move(d)};
}

struct Case {
  std::vector<MappingLevel> levels;
  std::string text;
};

// Hand-picked mappings: ranks 1-3, one to three levels, extents 1 and odd primes.
std::vector<Case> fixed_cases() {
  return {
      {{sp({1})}, "spatial(1)"},
      {{rp({1})}, "repeat(1)"},
      {{sp({7})}, "spatial(7)"},
      {{rp({31})}, "repeat(31)"},
      {{sp({3}), rp({7})}, "spatial(3) * repeat(7)"},
      {{rp({3}), sp({7})}, "repeat(3) * spatial(7)"},
      {{sp({2}), rp({3}), sp({5})}, "spatial(2) * repeat(3) * spatial(5)"},
      {{rp({1}), sp({31}), rp({1})}, "repeat(1) * spatial(31) * repeat(1)"},
      {{sp({4, 8})}, "spatial(4, 8)"},
      {{rp({2, 2})}, "repeat(2, 2)"},
      {{sp({4, 8}), rp({2, 2})}, "spatial(4, 8) * repeat(2, 2)"},
      {{rp({3, 1}), sp({1, 7})}, "repeat(3, 1) * spatial(1, 7)"},
      {{sp({3, 7}), rp({1, 2}), sp({2, 3})}, "spatial(3, 7) * repeat(1, 2) * spatial(2, 3)"},
      {{sp({1, 1})}, "spatial(1, 1)"},
      {{rp({7, 3}), sp({2, 2})}, "repeat(7, 3) * spatial(2, 2)"},
      {{rp({2, 3}), rp({3, 2})}, "repeat(2, 3) * repeat(3, 2)"},
      {{sp({3, 1}), sp({1, 2})}, "spatial(3, 1) * spatial(1, 2)"},
      {{sp({2, 3, 5})}, "spatial(2, 3, 5)"},
      {{rp({3, 1, 2}), sp({1, 7, 1})}, "repeat(3, 1, 2) * spatial(1, 7, 1)"},
      {{sp({2, 1, 3}), rp({1, 3, 1}), sp({3, 2, 1})},
       "spatial(2, 1, 3) * repeat(1, 3, 1) * spatial(3, 2, 1)"},
      {{rp({1, 1, 1}), sp({1, 1, 1})}, "repeat(1, 1, 1) * spatial(1, 1, 1)"},
  };
}

// Random mappings from the test seed: rank 1-3, 1-3 levels, small prime and unit extents.
std::vector<std::vector<MappingLevel>> random_cases(int count) {
  const int64_t extents[] = {1, 1, 2, 3, 5, 7};
  std::uniform_int_distribution<int> pick_rank(1, 3), pick_levels(1, 3), pick_extent(0, 5),
      pick_kind(0, 1);
  std::vector<std::vector<MappingLevel>> cases;
  while (static_cast<int>(cases.size()) < count) {
    int rank = pick_rank(rng()), num_levels = pick_levels(rng());
    std::vector<MappingLevel> levels;
    int64_t tasks = 1;
    for (int l = 0; l < num_levels; ++l) {
      Index shape;
      for (int i = 0; i < rank; ++i) shape.push_back(extents[pick_extent(rng())]);
      tasks *= product(shape);
      levels.push_back({pick_kind(rng()) ? MappingKind::kSpatial : MappingKind::kRepeat, shape});
    }
    if (tasks <= 4096) cases.push_back(levels);
  }
  return cases;
}

TaskMapping build(const std::vector<MappingLevel>& levels) {
  // Through the operators a template would use, so they are exercised too.
  absl::StatusOr<TaskMapping> m =
      levels[0].kind == MappingKind::kSpatial ? spatial(levels[0].shape) : repeat(levels[0].shape);
  for (size_t l = 1; l < levels.size(); ++l) {
    const MappingLevel& level = levels[l];
    m = m * (level.kind == MappingKind::kSpatial ? spatial(level.shape) : repeat(level.shape));
  }
  INFO(m.status().ToString());
  REQUIRE(m.ok());
  return *m;
}

// Everything tasks_of() promises, against the model.
void check_against_definition(const TaskMapping& m, const std::vector<MappingLevel>& levels) {
  INFO("mapping " << m.to_string() << ", seed " << test_seed());
  Model left = model_left(levels), right = model_right(levels);
  REQUIRE(m.task_shape() == left.shape);
  REQUIRE(m.rank() == static_cast<int>(left.shape.size()));
  REQUIRE(m.num_workers() == left.workers);
  REQUIRE(m.num_tasks() == product(left.shape));
  REQUIRE(m.levels() == levels);
  std::vector<int> covered(static_cast<size_t>(product(m.task_shape())), 0);
  for (int64_t w = 0; w < m.num_workers(); ++w) {
    INFO("worker " << w);
    Tasks tasks = m.tasks_of(w);
    REQUIRE(tasks == left.tasks(w));
    REQUIRE(tasks == right.tasks(w));
    REQUIRE(static_cast<int64_t>(tasks.size()) == m.tasks_per_worker());
    for (const Index& t : tasks) {
      REQUIRE(t.size() == m.task_shape().size());
      for (size_t i = 0; i < t.size(); ++i) REQUIRE((t[i] >= 0 && t[i] < m.task_shape()[i]));
      ++covered[static_cast<size_t>(ravel(t, m.task_shape()))];
    }
  }
  for (int c : covered) REQUIRE(c == 1);
}

// ---- on(): JIT a kernel that runs every worker and records what each one did. ----

std::vector<ir::Expr> shape_exprs(const Index& shape) {
  return {shape.begin(), shape.end()};
}

struct Recorder {
  ir::Buffer who, order, visits;
};

Recorder make_recorder(const Index& shape) {
  return {ir::Buffer::make("who", DType::i64(), shape_exprs(shape)),
          ir::Buffer::make("order", DType::i64(), shape_exprs(shape)),
          ir::Buffer::make("visits", DType::i64(), shape_exprs(shape))};
}

// For one worker: who[task] = worker, order[task] = its sequence number (a local counter),
// visits[task] += 1, for the tasks on() emits.
ir::Stmt record_worker(const TaskMapping& m, const Recorder& r, const ir::Expr& worker,
                       ir::ForKind kind) {
  ir::Buffer count =
      ir::Buffer::make("count", DType::i64(), {ir::Expr(1)}, ir::MemoryScope::kLocal);
  ir::Stmt tasks = m.on(
      worker,
      [&](const std::vector<ir::Expr>& task) {
        REQUIRE(static_cast<int>(task.size()) == m.rank());
        return ir::Seq::make({
            ir::Store::make(r.who, worker, task),
            ir::Store::make(r.order, count(0), task),
            ir::Store::make(r.visits, r.visits.load(task) + 1, task),
            ir::Store::make(count, count(0) + 1, {ir::Expr(0)}),
        });
      },
      kind);
  return ir::Allocate::make(
      count, ir::Seq::make({ir::Store::make(count, ir::Expr(int64_t{0}), {ir::Expr(0)}), tasks}));
}

ir::Func lower_for_cpu(const ir::Func& f) {
  return ir::simplify(loom::passes::flatten_layouts(f));
}

// Checks the recorded buffers of one run against tasks_of().
void check_recorded(const TaskMapping& m, const std::vector<int64_t>& who,
                    const std::vector<int64_t>& order, const std::vector<int64_t>& visits) {
  INFO("mapping " << m.to_string());
  for (int64_t v : visits) REQUIRE(v == 1);
  for (int64_t w = 0; w < m.num_workers(); ++w) {
    Tasks tasks = m.tasks_of(w);
    for (size_t k = 0; k < tasks.size(); ++k) {
      size_t at = static_cast<size_t>(ravel(tasks[k], m.task_shape()));
      INFO("worker " << w << ", task number " << k);
      REQUIRE(who[at] == w);
      REQUIRE(order[at] == static_cast<int64_t>(k));
    }
  }
}

std::unique_ptr<runtime::CpuJit> make_jit() {
  auto jit = runtime::CpuJit::create();
  INFO(jit.status().ToString());
  REQUIRE(jit.ok());
  return std::move(*jit);
}

std::vector<runtime::KernelFn> compile(runtime::CpuJit& jit, const std::string& name,
                                       std::vector<ir::Func> funcs) {
  ir::Module module{name, jit.target(), std::move(funcs)};
  auto kernels = jit.compile(module);
  INFO(kernels.status().ToString());
  REQUIRE(kernels.ok());
  REQUIRE(kernels->size() == module.funcs.size());
  return *kernels;
}

// Runs kernel on fresh poisoned who/order/visits (visits starts at 0) and checks them.
void run_and_check(runtime::KernelFn kernel, const TaskMapping& m) {
  size_t n = static_cast<size_t>(m.num_tasks());
  std::vector<int64_t> who(n, -7), order(n, -7), visits(n, 0);
  void* buffers[] = {who.data(), order.data(), visits.data()};
  kernel(buffers, nullptr);
  check_recorded(m, who, order, visits);
}

// The For loops in s, outermost first.
void collect_loops(const ir::Stmt& s, std::vector<const ir::For*>* loops) {
  if (!s.defined()) return;
  switch (s.kind()) {
    case ir::StmtKind::kFor:
      loops->push_back(s.as<ir::For>());
      collect_loops(s.as<ir::For>()->body, loops);
      return;
    case ir::StmtKind::kSeq:
      for (const ir::Stmt& c : s.as<ir::Seq>()->stmts) collect_loops(c, loops);
      return;
    case ir::StmtKind::kAllocate:
      collect_loops(s.as<ir::Allocate>()->body, loops);
      return;
    case ir::StmtKind::kLetStmt:
      collect_loops(s.as<ir::LetStmt>()->body, loops);
      return;
    case ir::StmtKind::kIfThenElse:
      collect_loops(s.as<ir::IfThenElse>()->then_case, loops);
      collect_loops(s.as<ir::IfThenElse>()->else_case, loops);
      return;
    default:
      return;
  }
}

}  // namespace

TEST_CASE("task mappings: hand-picked mappings follow the definition", "[task_mapping]") {
  for (const Case& c : fixed_cases()) {
    TaskMapping m = build(c.levels);
    CHECK(m.to_string() == c.text);
    check_against_definition(m, c.levels);
  }
}

TEST_CASE("task mappings: random compositions follow the definition", "[task_mapping]") {
  for (const std::vector<MappingLevel>& levels : random_cases(60)) {
    TaskMapping m = build(levels);
    check_against_definition(m, levels);
  }
}

TEST_CASE("task mappings: spatial, repeat and composition basics", "[task_mapping]") {
  auto s = spatial(4, 8);
  REQUIRE(s.ok());
  CHECK(s->num_workers() == 32);
  CHECK(s->tasks_per_worker() == 1);
  CHECK(s->tasks_of(11) == Tasks{{1, 3}});
  auto r = repeat(2, 2);
  REQUIRE(r.ok());
  CHECK(r->num_workers() == 1);
  CHECK(r->tasks_of(0) == Tasks{{0, 0}, {0, 1}, {1, 0}, {1, 1}});
  auto m = s * r;
  REQUIRE(m.ok());
  CHECK(m->task_shape() == Index{8, 16});
  CHECK(m->num_workers() == 32);
  // Worker 11 owns the 2x2 block at (1, 3) * (2, 2), row by row.
  CHECK(m->tasks_of(11) == Tasks{{2, 6}, {2, 7}, {3, 6}, {3, 7}});
  // The vector and variadic spellings build equal mappings; composition is associative.
  CHECK(*spatial(Index{4, 8}) == *s);
  auto a = spatial(3), b = repeat(5), c = spatial(7);
  CHECK(*((a * b) * c) == *(a * (b * c)));
  CHECK(loom::schedule::compose(*a, *b)->to_string() == "spatial(3) * repeat(5)");
}

TEST_CASE("task mappings: auto_map covers the shape with exactly the workers", "[task_mapping]") {
  CHECK(auto_map({4, 8}, 8)->to_string() == "repeat(4, 1) * spatial(1, 8)");
  CHECK(auto_map({6, 4}, 12)->to_string() == "repeat(2, 1) * spatial(3, 4)");
  CHECK(auto_map({8}, 8)->to_string() == "spatial(8)");
  CHECK(auto_map({5, 7}, 1)->to_string() == "repeat(5, 7)");
  CHECK(auto_map({31}, 31)->to_string() == "spatial(31)");
  CHECK(auto_map({1, 1}, 1)->to_string() == "repeat(1, 1)");

  // Every (shape, workers) pair: it succeeds exactly when some s_i | shape_i has prod = workers.
  const std::vector<Index> shapes = {{1}, {7}, {12}, {31}, {4, 8}, {6, 9}, {3, 1, 10}, {2, 5, 7}};
  for (const Index& shape : shapes) {
    for (int64_t workers = 1; workers <= 80; ++workers) {
      INFO("auto_map over " << repeat(shape)->to_string() << " extents, workers " << workers);
      // Brute force over per-dim divisors.
      std::function<bool(size_t, int64_t)> fits = [&](size_t i, int64_t left) {
        if (i == shape.size()) return left == 1;
        for (int64_t d = 1; d <= shape[i]; ++d)
          if (shape[i] % d == 0 && left % d == 0 && fits(i + 1, left / d)) return true;
        return false;
      };
      auto m = auto_map(shape, workers);
      REQUIRE(m.ok() == fits(0, workers));
      if (!m.ok()) continue;
      CHECK(m->task_shape() == shape);
      CHECK(m->num_workers() == workers);
      CHECK(m->levels().size() <= 2);
      if (m->levels().size() == 2) {
        CHECK(m->levels()[0].kind == MappingKind::kRepeat);
        CHECK(m->levels()[1].kind == MappingKind::kSpatial);
      }
      check_against_definition(*m, m->levels());
      // Consecutive workers take consecutive innermost tasks at every step, except where the
      // worker index wraps into the next dim.
      const MappingLevel& lanes = m->levels().back();
      const int64_t inner = lanes.kind == MappingKind::kSpatial ? lanes.shape.back() : 1;
      for (int64_t w = 0; w + 1 < workers; ++w) {
        if ((w + 1) % inner == 0) continue;
        Tasks here = m->tasks_of(w), next = m->tasks_of(w + 1);
        REQUIRE(here.size() == next.size());
        for (size_t k = 0; k < here.size(); ++k) {
          Index want = here[k];
          ++want.back();
          REQUIRE(next[k] == want);
        }
      }
    }
  }
}

TEST_CASE("task mappings: on() emits only the loops and arithmetic it needs", "[task_mapping]") {
  ir::Var w("w");
  auto emitted = [&](const absl::StatusOr<TaskMapping>& m, std::vector<ir::Expr>* task) {
    REQUIRE(m.ok());
    return m->on(w, [&](const std::vector<ir::Expr>& t) {
      *task = t;
      return ir::Evaluate::make(ir::Expr(0));
    });
  };
  std::vector<ir::Expr> task;
  std::vector<const ir::For*> loops;

  // Pure spatial: no loops; the most significant digit needs no mod for workers in range.
  ir::Stmt s = emitted(spatial(4, 8), &task);
  collect_loops(s, &loops);
  CHECK(loops.empty());
  CHECK(ir::to_string(task[0]) == ir::to_string(w / ir::Expr(8)));
  CHECK(ir::to_string(task[1]) == ir::to_string(w % ir::Expr(8)));

  // Extents of 1 vanish: no loop, no * 1, no / 1.
  s = emitted(spatial(1, 8) * repeat(3, 1), &task);
  loops.clear();
  collect_loops(s, &loops);
  REQUIRE(loops.size() == 1);
  CHECK(ir::as_const_int(loops[0]->extent) == 3);
  CHECK(ir::to_string(task[0]) == ir::to_string(loops[0]->var));
  CHECK(ir::to_string(task[1]) == ir::to_string(w));

  // A register tile: loops of the requested kind, outer level and dim outermost.
  {
    auto m = spatial(4, 8) * repeat(2, 3);
    REQUIRE(m.ok());
    s = m->on(
        w,
        [&](const std::vector<ir::Expr>& t) {
          task = t;
          return ir::Evaluate::make(ir::Expr(0));
        },
        ir::ForKind::kUnrolled);
    loops.clear();
    collect_loops(s, &loops);
    REQUIRE(loops.size() == 2);
    CHECK(ir::as_const_int(loops[0]->extent) == 2);
    CHECK(ir::as_const_int(loops[1]->extent) == 3);
    for (const ir::For* f : loops) CHECK(f->for_kind == ir::ForKind::kUnrolled);
    CHECK(ir::to_string(task[0]) == ir::to_string(w / ir::Expr(8) * ir::Expr(2) + loops[0]->var));
    CHECK(ir::to_string(task[1]) == ir::to_string(w % ir::Expr(8) * ir::Expr(3) + loops[1]->var));
  }

  // Repeat only: the worker is not used at all.
  s = emitted(repeat(1, 1, 1), &task);
  loops.clear();
  collect_loops(s, &loops);
  CHECK(loops.empty());
  for (const ir::Expr& t : task) CHECK(ir::is_const_int(t, 0));
}

TEST_CASE("task mappings: on() runs every worker's tasks in order (CPU JIT)", "[task_mapping]") {
  std::vector<std::vector<MappingLevel>> all;
  for (const Case& c : fixed_cases()) all.push_back(c.levels);
  for (const std::vector<MappingLevel>& levels : random_cases(24)) all.push_back(levels);

  std::vector<TaskMapping> mappings;
  std::vector<ir::Func> funcs;
  for (size_t k = 0; k < all.size(); ++k) {
    TaskMapping m = build(all[k]);
    Recorder r = make_recorder(m.task_shape());
    ir::Var w("w");
    // Alternate serial and unrolled repeat loops; both must keep the order.
    ir::ForKind kind = k % 2 ? ir::ForKind::kUnrolled : ir::ForKind::kSerial;
    ir::Stmt body = ir::For::make(w, ir::Expr(0), ir::Expr(m.num_workers()), ir::ForKind::kSerial,
                                  record_worker(m, r, w, kind));
    funcs.push_back(lower_for_cpu(
        ir::Func{"task_mapping_" + std::to_string(k), {r.who, r.order, r.visits}, body}));
    mappings.push_back(m);
  }
  auto jit = make_jit();
  std::vector<runtime::KernelFn> kernels = compile(*jit, "task_mappings", funcs);
  for (size_t k = 0; k < mappings.size(); ++k) run_and_check(kernels[k], mappings[k]);
}

TEST_CASE("task mappings: on() accepts any worker expression (CPU JIT)", "[task_mapping]") {
  // Workers given as outer * 5 + inner over two loops, and in reverse order as W - 1 - v.
  auto m = repeat(3, 1) * spatial(2, 5) * repeat(1, 7);
  REQUIRE(m.ok());
  Recorder r = make_recorder(m->task_shape());
  ir::Var outer("outer"), inner("inner"), v("v");
  ir::Stmt split = ir::For::make(
      outer, ir::Expr(0), ir::Expr(2), ir::ForKind::kSerial,
      ir::For::make(inner, ir::Expr(0), ir::Expr(5), ir::ForKind::kSerial,
                    record_worker(*m, r, outer * ir::Expr(5) + inner, ir::ForKind::kSerial)));
  Recorder r2 = make_recorder(m->task_shape());
  ir::Stmt reversed = ir::For::make(
      v, ir::Expr(0), ir::Expr(m->num_workers()), ir::ForKind::kSerial,
      record_worker(*m, r2, ir::Expr(m->num_workers() - 1) - v, ir::ForKind::kUnrolled));
  auto jit = make_jit();
  auto kernels = compile(
      *jit, "task_mapping_workers",
      {lower_for_cpu(ir::Func{"split_worker", {r.who, r.order, r.visits}, split}),
       lower_for_cpu(ir::Func{"reversed_worker", {r2.who, r2.order, r2.visits}, reversed})});
  run_and_check(kernels[0], *m);
  run_and_check(kernels[1], *m);
}
