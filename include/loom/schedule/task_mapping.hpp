// Task mappings (Hidet, ASPLOS'23): which tasks of a task grid each worker runs, and in what order.
// spatial() and repeat() levels compose with *; on() emits one worker's loops and indices into IR.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/core/status.hpp"
#include "loom/ir/expr.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::schedule {

// A spatial level gives one task to each of prod(shape) workers (worker w gets the row-major
// unravel of w); a repeat level gives all prod(shape) tasks, row-major, to a single worker.
enum class MappingKind : uint8_t { kSpatial, kRepeat };

inline const char* mapping_kind_name(MappingKind k) {
  return k == MappingKind::kSpatial ? "spatial" : "repeat";
}

// One atomic level of a mapping.
struct MappingLevel {
  MappingKind kind = MappingKind::kSpatial;
  std::vector<int64_t> shape;

  int64_t num_tasks() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
  int64_t num_workers() const { return kind == MappingKind::kSpatial ? num_tasks() : 1; }
  int64_t tasks_per_worker() const { return kind == MappingKind::kRepeat ? num_tasks() : 1; }

  // "spatial(4, 8)".
  std::string to_string() const {
    std::string s = str_cat(mapping_kind_name(kind), "(");
    for (size_t i = 0; i < shape.size(); ++i) s += str_cat(i ? ", " : "", shape[i]);
    return s + ")";
  }

  bool operator==(const MappingLevel&) const = default;
};

namespace mapping_detail {

// The text "(4, 8)" of a shape, for messages.
inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += str_cat(i ? ", " : "", shape[i]);
  return s + ")";
}

// Rank >= 1 and every extent >= 1; what names the shape in messages is `what`.
inline absl::Status check_task_shape(const std::vector<int64_t>& shape, const std::string& what) {
  if (shape.empty()) return absl::InvalidArgumentError(str_cat(what, " needs rank >= 1"));
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      return absl::InvalidArgumentError(
          str_cat(what, " has extent ", shape[i], " in dim ", i, "; every extent must be >= 1"));
    }
  }
  return absl::OkStatus();
}

// a * b into *out, false when it overflows int64 (extents here are all positive).
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

// Index arithmetic that folds constant operands as it builds, so extents of 1 leave no trace.
inline ir::Expr mul_const(const ir::Expr& e, int64_t c) {
  if (c == 1 || ir::is_const_int(e, 0)) return e;
  return e * ir::Expr(c);
}
inline ir::Expr add_terms(const ir::Expr& a, const ir::Expr& b) {
  if (ir::is_const_int(a, 0)) return b;
  if (ir::is_const_int(b, 0)) return a;
  return a + b;
}

}  // namespace mapping_detail

// A composition level_0 * level_1 * ... of spatial and repeat levels, all of one rank r.
// Composition is associative, so a mapping is kept as its flat list of levels, in the order
// written: worker w splits into one digit per level (the last level's digit varies fastest) and
// the task index of each level is scaled by the extents of the levels after it.
class TaskMapping {
 public:
  // The checking factory: at least one level, every level of the same rank >= 1, every extent
  // >= 1, and the task and worker counts fit in int64.
  static absl::StatusOr<TaskMapping> make(std::vector<MappingLevel> levels) {
    if (levels.empty())
      return absl::InvalidArgumentError("a task mapping needs at least one level");
    TaskMapping m;
    const size_t rank = levels[0].shape.size();
    m.task_shape_.assign(rank, 1);
    for (const MappingLevel& level : levels) {
      LOOM_RETURN_IF_ERROR(mapping_detail::check_task_shape(level.shape, level.to_string()));
      if (level.shape.size() != rank) {
        return absl::InvalidArgumentError(
            str_cat("cannot compose task mappings of different ranks: ", levels[0].to_string(),
                    " has rank ", rank, ", ", level.to_string(), " has rank ", level.shape.size()));
      }
      bool fits = true;
      for (size_t i = 0; i < rank; ++i)
        fits = fits &&
               mapping_detail::checked_mul(m.task_shape_[i], level.shape[i], &m.task_shape_[i]);
      int64_t total = 1;
      for (int64_t extent : m.task_shape_)
        fits = fits && mapping_detail::checked_mul(total, extent, &total);
      if (!fits) {
        return absl::InvalidArgumentError(str_cat("task mapping with levels up to ",
                                                  level.to_string(),
                                                  " has more tasks than int64 can count"));
      }
      // Both counts divide the task count, which fits, so these products cannot overflow.
      m.num_workers_ *= level.num_workers();
      m.tasks_per_worker_ *= level.tasks_per_worker();
    }
    m.levels_ = std::move(levels);
    return m;
  }

  int rank() const { return static_cast<int>(task_shape_.size()); }
  // Extent of the whole task grid per dim: the product of the levels' extents.
  const std::vector<int64_t>& task_shape() const { return task_shape_; }
  int64_t num_workers() const { return num_workers_; }
  int64_t tasks_per_worker() const { return tasks_per_worker_; }
  int64_t num_tasks() const { return num_workers_ * tasks_per_worker_; }
  // The levels in the order written; a template reads per-level shapes here (register tiles,
  // lanes, threads).
  const std::vector<MappingLevel>& levels() const { return levels_; }

  // Canonical text, e.g. "spatial(4, 8) * repeat(2, 2)".
  std::string to_string() const {
    std::string s;
    for (size_t l = 0; l < levels_.size(); ++l)
      s += str_cat(l ? " * " : "", levels_[l].to_string());
    return s;
  }

  bool operator==(const TaskMapping& o) const { return levels_ == o.levels_; }

  // The tasks of worker (0 <= worker < num_workers()) in the order it runs them: a host-side
  // enumeration, the reference that on() must agree with.
  std::vector<std::vector<int64_t>> tasks_of(int64_t worker) const {
    LOOM_CHECK(worker >= 0 && worker < num_workers_, "worker ", worker, " of ", to_string(),
               ", which has ", num_workers_, " workers");
    std::vector<std::vector<int64_t>> tasks{std::vector<int64_t>(task_shape_.size(), 0)};
    int64_t workers_after = num_workers_;
    for (const MappingLevel& level : levels_) {
      workers_after /= level.num_workers();
      const int64_t digit = worker / workers_after % level.num_workers();
      std::vector<std::vector<int64_t>> next;
      next.reserve(tasks.size() * static_cast<size_t>(level.tasks_per_worker()));
      for (const std::vector<int64_t>& outer : tasks) {
        const int64_t first = level.kind == MappingKind::kSpatial ? digit : 0;
        for (int64_t k = first; k < first + level.tasks_per_worker(); ++k) {
          std::vector<int64_t> task = outer;
          int64_t rest = k;  // row-major unravel of k over the level's shape
          for (size_t i = task.size(); i-- > 0;) {
            task[i] = task[i] * level.shape[i] + rest % level.shape[i];
            rest /= level.shape[i];
          }
          next.push_back(std::move(task));
        }
      }
      tasks = std::move(next);
    }
    return tasks;
  }

  // Emits the tasks of one worker into loop IR: body(task) is called once, with the r task
  // indices as i64 expressions, and its statement is wrapped in the loops that make it run
  // exactly the tasks of tasks_of(worker), in that order. worker is any i64 expression whose
  // value lies in [0, num_workers()) (outside it the indices are unspecified). Spatial levels
  // become div/mod of worker by constants; repeat levels become For loops of repeat_kind, the
  // first level and dim outermost; extents of 1 give no loop and no arithmetic.
  ir::Stmt on(const ir::Expr& worker,
              const std::function<ir::Stmt(const std::vector<ir::Expr>& task)>& body,
              ir::ForKind repeat_kind = ir::ForKind::kSerial) const {
    LOOM_CHECK(worker.defined() && worker.type() == DType::i64(),
               "task mapping workers are scalar i64 expressions");
    const size_t rank = task_shape_.size();
    ir::BoundsMap bounds;
    if (const auto* var = worker.as<ir::VarNode>()) bounds[var] = {0, num_workers_ - 1};

    std::vector<ir::Expr> task(rank, ir::Expr(int64_t{0}));
    std::vector<std::pair<ir::Var, int64_t>> loops;  // outermost first
    // Extent per dim of the levels after the current one: the scale of its task index.
    std::vector<int64_t> scale = task_shape_;
    int64_t workers_after = num_workers_;
    int repeat_ordinal = 0;
    const int num_repeat_levels =
        static_cast<int>(std::count_if(levels_.begin(), levels_.end(), [](const MappingLevel& l) {
          return l.kind == MappingKind::kRepeat;
        }));
    for (const MappingLevel& level : levels_) {
      workers_after /= level.num_workers();
      for (size_t i = 0; i < rank; ++i) scale[i] /= level.shape[i];
      // Within a spatial level, dim i's digit of the worker has this place value.
      int64_t place = workers_after * level.num_workers();
      for (size_t i = 0; i < rank; ++i) {
        const int64_t extent = level.shape[i];
        place /= extent;
        if (extent == 1) continue;
        ir::Expr index;
        if (level.kind == MappingKind::kSpatial) {
          index = place == 1 ? worker : worker / ir::Expr(place);
          // The most significant digit needs no mod for workers in range.
          if (place * extent != num_workers_) index = index % ir::Expr(extent);
        } else {
          std::string name = str_cat("r", i);
          if (num_repeat_levels > 1) name += str_cat("_", repeat_ordinal);
          ir::Var v(name);
          loops.emplace_back(v, extent);
          bounds[v.node()] = {0, extent - 1};
          index = v;
        }
        task[i] = mapping_detail::add_terms(task[i], mapping_detail::mul_const(index, scale[i]));
      }
      if (level.kind == MappingKind::kRepeat) ++repeat_ordinal;
    }
    for (ir::Expr& index : task) index = ir::simplify(index, bounds);

    ir::Stmt stmt = body(task);
    LOOM_CHECK(stmt.defined(), "the body of a task mapping's on() returned no statement");
    for (size_t k = loops.size(); k-- > 0;) {
      stmt = ir::For::make(loops[k].first, ir::Expr(int64_t{0}), ir::Expr(loops[k].second),
                           repeat_kind, stmt);
    }
    return stmt;
  }

 private:
  TaskMapping() = default;

  std::vector<MappingLevel> levels_;
  std::vector<int64_t> task_shape_;
  int64_t num_workers_ = 1;
  int64_t tasks_per_worker_ = 1;
};

// spatial(4, 8): 32 workers, one task each. Returns an error for a rank of 0 or an extent < 1.
inline absl::StatusOr<TaskMapping> spatial(std::vector<int64_t> shape) {
  return TaskMapping::make({MappingLevel{MappingKind::kSpatial, std::move(shape)}});
}
template <std::integral... Extent>
absl::StatusOr<TaskMapping> spatial(Extent... extents) {
  return spatial(std::vector<int64_t>{static_cast<int64_t>(extents)...});
}

// repeat(2, 2): one worker, 4 tasks in row-major order.
inline absl::StatusOr<TaskMapping> repeat(std::vector<int64_t> shape) {
  return TaskMapping::make({MappingLevel{MappingKind::kRepeat, std::move(shape)}});
}
template <std::integral... Extent>
absl::StatusOr<TaskMapping> repeat(Extent... extents) {
  return repeat(std::vector<int64_t>{static_cast<int64_t>(extents)...});
}

// a * b: worker w runs, for each task ta of worker w / b.W of a and each task tb of worker
// w % b.W of b, the task ta * b.task_shape() + tb. The ranks must match.
inline absl::StatusOr<TaskMapping> compose(const TaskMapping& a, const TaskMapping& b) {
  std::vector<MappingLevel> levels = a.levels();
  levels.insert(levels.end(), b.levels().begin(), b.levels().end());
  return TaskMapping::make(std::move(levels));
}

// spatial(4, 8) * repeat(2, 2) reads as written and carries the first error of either side, so a
// template writes LOOM_ASSIGN_OR_RETURN(TaskMapping m, spatial(4, 8) * repeat(2, 2)).
inline absl::StatusOr<TaskMapping> operator*(const absl::StatusOr<TaskMapping>& a,
                                             const absl::StatusOr<TaskMapping>& b) {
  if (!a.ok()) return a.status();
  if (!b.ok()) return b.status();
  return compose(*a, *b);
}

// Covers shape with exactly `workers` workers as repeat(shape / s) * spatial(s). Repeat is the
// outer level so that consecutive workers take consecutive innermost tasks at every step (vector
// lanes, coalesced GPU accesses); workers are given to the innermost dims first, each dim taking
// gcd(workers left, extent). A level with all extents 1 is left out (auto_map({8}, 8) is
// spatial(8)). Fails when workers does not factor into divisors of the extents.
inline absl::StatusOr<TaskMapping> auto_map(const std::vector<int64_t>& shape, int64_t workers) {
  LOOM_RETURN_IF_ERROR(mapping_detail::check_task_shape(
      shape, str_cat("auto_map task shape ", mapping_detail::shape_text(shape))));
  if (workers < 1) {
    return absl::InvalidArgumentError(str_cat("auto_map needs at least 1 worker, got ", workers));
  }
  // Greedy by innermost dim is complete: per prime it takes as much as each dim allows, so it
  // fails only when the extents together lack a prime power of workers.
  std::vector<int64_t> lanes(shape.size(), 1), steps = shape;
  int64_t left = workers;
  for (size_t i = shape.size(); i-- > 0;) {
    lanes[i] = std::gcd(left, shape[i]);
    steps[i] = shape[i] / lanes[i];
    left /= lanes[i];
  }
  if (left != 1) {
    return absl::InvalidArgumentError(str_cat("auto_map cannot distribute ", workers,
                                              " workers over task shape ",
                                              mapping_detail::shape_text(shape),
                                              ": the worker count must be a product of one "
                                              "divisor of each extent, and at most ",
                                              workers / left, " of them fit that way"));
  }
  const bool lanes_trivial = workers == 1;
  const bool steps_trivial =
      std::all_of(steps.begin(), steps.end(), [](int64_t s) { return s == 1; });
  if (lanes_trivial) return repeat(steps);
  if (steps_trivial) return spatial(lanes);
  return repeat(steps) * spatial(lanes);
}

}  // namespace loom::schedule
