// Row-wise operators on the CPU. Each sees its input as R rows of L contiguous f32 elements and
// runs a few passes over each row: lanes-wide vectors feeding `accumulators` independent vector
// accumulators (so that the adds of consecutive vectors overlap instead of waiting on each
// other), a pairwise horizontal reduction, a scalar tail for L % lanes. Rows are grouped into
// tasks of rows_per_task rows, and the tasks run in parallel.

#include "ops/rows_cpu.hpp"

#include <algorithm>
#include <functional>
#include <optional>

#include "loom/ir/fast_math.hpp"
#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/common.hpp"
#include "ops/rows.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {

// x as rows of its dims from axis on; nullopt unless x is f32, static and not empty.
std::optional<Rows> rows_of(const TensorType& x, int axis, bool any_float) {
  if (x.dtype != DType::f32() && !(any_float && x.dtype.is_float())) return std::nullopt;
  auto r = static_product(x.shape, 0, static_cast<size_t>(axis));
  auto l = static_product(x.shape, static_cast<size_t>(axis), x.shape.size());
  if (!r || !l || *r < 1 || *l < 1) return std::nullopt;
  return Rows{*r, *l, x.dtype};
}

namespace {
// The first reduced axis when a reduction's axes are exactly the trailing dims, else nullopt.
std::optional<int> trailing_reduce_axis(const ReduceAttrs& attrs, int rank) {
  if (attrs.axes.empty()) return 0;
  std::vector<int> axes;
  for (int a : attrs.axes) {
    absl::StatusOr<int> n = normalize_axis(a, rank);
    if (!n.ok()) return std::nullopt;
    axes.push_back(*n);
  }
  std::sort(axes.begin(), axes.end());
  const int first = rank - static_cast<int>(axes.size());
  for (size_t k = 0; k < axes.size(); ++k)
    if (axes[k] != first + static_cast<int>(k)) return std::nullopt;
  return first;
}
}  // namespace

namespace {
// The output's type is the input's, f32 unless any_float.
bool same_float_type(const TemplateContext& ctx, bool any_float) {
  return !ctx.inputs.empty() && ctx.output.dtype == ctx.inputs[0].dtype &&
         (ctx.output.dtype == DType::f32() || (any_float && ctx.output.dtype.is_float()));
}
}  // namespace

std::optional<Rows> reduce_rows(const TemplateContext& ctx, bool any_float) {
  if (ctx.inputs.size() != 1 || !ctx.attrs || !same_float_type(ctx, any_float)) return std::nullopt;
  const auto* attrs = dynamic_cast<const ReduceAttrs*>(ctx.attrs);
  if (!attrs) return std::nullopt;
  std::optional<int> axis =
      trailing_reduce_axis(*attrs, static_cast<int>(ctx.inputs[0].shape.size()));
  if (!axis) return std::nullopt;
  return rows_of(ctx.inputs[0], *axis, any_float);
}

std::optional<Rows> softmax_rows(const TemplateContext& ctx, bool any_float) {
  if (ctx.inputs.size() != 1 || !ctx.attrs || !same_float_type(ctx, any_float)) return std::nullopt;
  const auto* attrs = dynamic_cast<const SoftmaxAttrs*>(ctx.attrs);
  const int rank = static_cast<int>(ctx.inputs[0].shape.size());
  if (!attrs || rank == 0) return std::nullopt;
  absl::StatusOr<int> axis = normalize_axis(attrs->axis, rank);
  if (!axis.ok() || *axis != rank - 1) return std::nullopt;
  return rows_of(ctx.inputs[0], *axis, any_float);
}

std::optional<Rows> layer_norm_rows(const TemplateContext& ctx, bool any_float) {
  if (ctx.inputs.size() != 3 || !ctx.attrs || !same_float_type(ctx, any_float)) return std::nullopt;
  const auto* attrs = dynamic_cast<const LayerNormAttrs*>(ctx.attrs);
  if (!attrs) return std::nullopt;
  absl::StatusOr<int> axis =
      normalize_axis(attrs->axis, static_cast<int>(ctx.inputs[0].shape.size()));
  if (!axis.ok()) return std::nullopt;
  std::optional<Rows> rows = rows_of(ctx.inputs[0], *axis, any_float);
  for (int k = 1; k <= 2 && rows; ++k) {
    std::optional<Rows> param = rows_of(ctx.inputs[k], 0, any_float);
    if (!param || param->len != rows->len || param->dtype != rows->dtype) return std::nullopt;
  }
  return rows;
}

namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// Below this many elements, waking the thread pool costs more than the work it would share.
constexpr int64_t kMinParallelElements = 32 * 1024;

// The passes of one kernel for one config. A pass calls element(col, a) for the columns of a row:
// col is a Ramp of lanes columns fed to vector accumulator a, or (a < 0) one scalar tail column.
class RowKernel {
 public:
  using ElementFn = std::function<Stmt(const Expr& col, int64_t a)>;
  using ValueFn = std::function<Expr(const Expr& col)>;
  using StoreFn = std::function<Stmt(const Expr& col, const Expr& value)>;

  RowKernel(const TemplateContext& ctx, Rows rows, const tune::Config& c)
      : name_(ctx.name),
        rows_(rows),
        lanes_(ctx.target.vector_lanes_f32()),
        use_fma_(ctx.target.has_feature("fma")),
        parallel_(c["parallel"] != 0) {
    rows_per_task_ = std::min(c["rows_per_task"], rows.rows);
    vectors_ = rows.len / lanes_;
    accumulators_ = std::clamp<int64_t>(c["accumulators"], 1, std::max<int64_t>(vectors_, 1));
  }

  int64_t len() const { return rows_.len; }
  bool use_fma() const { return use_fma_; }

  // Buffers of the kernel's parameters: R x L matrices, rows, or one row (gamma, beta).
  Buffer matrix(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, DType::f32(), {Expr(rows_.rows), Expr(rows_.len)});
  }
  Buffer per_row(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, DType::f32(), {Expr(rows_.rows)});
  }
  Buffer one_row(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, DType::f32(), {Expr(rows_.len)});
  }
  // Per-row scalars (max, sums) in a local buffer that LLVM keeps in registers.
  Buffer stats(int64_t n) const {
    return Buffer::make(name_ + "_stat", DType::f32(), {Expr(n)}, ir::MemoryScope::kLocal);
  }

  // Stage "rows over tasks": spatial(tasks) * repeat(rows_per_task) over the rows, the tasks a
  // parallel loop (serial when there is one task or the config says so).
  Stmt for_each_row(const std::function<Stmt(const Expr& row)>& body) const {
    const int64_t tasks = (rows_.rows + rows_per_task_ - 1) / rows_per_task_;
    auto mapping = schedule::spatial(tasks) * schedule::repeat(rows_per_task_);
    LOOM_CHECK(mapping.ok(), mapping.status().ToString());
    Var task("task");
    Stmt per_task = mapping->on(task, [&](const std::vector<Expr>& t) {
      Stmt s = body(t[0]);
      return rows_.rows % rows_per_task_ ? ir::IfThenElse::make(t[0] < rows_.rows, s) : s;
    });
    ir::ForKind kind = parallel_ && tasks > 1 ? ir::ForKind::kParallel : ir::ForKind::kSerial;
    return ir::For::make(task, 0, tasks, kind, per_task);
  }

  // stat[slot] = the kind-reduction of value(col) over the row. also(col, v), when given, runs for
  // every value v as well (softmax stores its exponentials this way). square (with kSum) sums
  // v * v instead, as fused multiply-adds where the target has them.
  Stmt reduce(ir::ReduceKind kind, const ValueFn& value, const Buffer& stat, int64_t slot,
              const StoreFn& also = nullptr, bool square = false) const {
    LOOM_CHECK(!square || kind == ir::ReduceKind::kSum, "a sum of squares is a sum");
    const Expr identity = ir::Reduce::identity(kind, DType::f32());
    // v = value(col); also(col, v); accumulator = combine(accumulator, v).
    auto update = [&](const Expr& col, const Buffer& into, const Expr& at) {
      auto accumulate = [&](const Expr& v) {
        Expr acc = into.load({at});
        Expr next = !square    ? ir::Reduce::combine(kind, acc, v)
                    : use_fma_ ? ir::fma(v, v, acc)
                               : acc + v * v;
        return ir::Store::make(into, next, {at});
      };
      Expr v = value(col);
      if (!also && !square) return accumulate(v);
      Var bound("v", v.type());
      Stmt use = also ? ir::Seq::make({also(col, bound), accumulate(bound)}) : accumulate(bound);
      return ir::LetStmt::make(bound, v, use);
    };
    Stmt vector_part = ir::Store::make(stat, identity, {Expr(slot)});
    if (vectors_ > 0) {
      // The accumulators: a block of accumulators x lanes columns, laid out like the block.
      Buffer acc = Buffer::make(name_ + "_acc", DType::f32(), {Expr(accumulators_ * lanes_)},
                                ir::MemoryScope::kLocal);
      auto acc_at = [&](int64_t a) { return vec(Expr(a * lanes_)); };
      std::vector<Stmt> s;
      for (int64_t a = 0; a < accumulators_; ++a)
        s.push_back(ir::Store::make(acc, ir::Broadcast::make(identity, lanes_), {acc_at(a)}));
      s.push_back(vectors([&](const Expr& col, int64_t a) { return update(col, acc, acc_at(a)); }));
      for (int64_t step = 1; step < accumulators_; step *= 2)
        for (int64_t a = 0; a + step < accumulators_; a += 2 * step)
          s.push_back(ir::Store::make(
              acc, ir::Reduce::combine(kind, acc.load({acc_at(a)}), acc.load({acc_at(a + step)})),
              {acc_at(a)}));
      // Horizontal: the lanes of accumulator 0, pairwise.
      std::vector<Expr> parts;
      for (int64_t l = 0; l < lanes_; ++l) parts.push_back(acc.load({Expr(l)}));
      while (parts.size() > 1) {
        std::vector<Expr> next;
        for (size_t i = 0; i + 1 < parts.size(); i += 2)
          next.push_back(ir::Reduce::combine(kind, parts[i], parts[i + 1]));
        if (parts.size() % 2) next.push_back(parts.back());
        parts = std::move(next);
      }
      s.push_back(ir::Store::make(stat, parts[0], {Expr(slot)}));
      vector_part = ir::Allocate::make(acc, ir::Seq::make(std::move(s)));
    }
    Stmt tail = this->tail([&](const Expr& col, int64_t) { return update(col, stat, Expr(slot)); });
    return ir::Seq::make({vector_part, tail});
  }

  // store(col) over the row, vectors then the scalar tail.
  Stmt map(const std::function<Stmt(const Expr& col)>& store) const {
    auto element = [&](const Expr& col, int64_t) { return store(col); };
    return ir::Seq::make({vectors(element), tail(element)});
  }

 private:
  Expr vec(const Expr& base) const { return ir::Ramp::make(base, Expr(int64_t{1}), lanes_); }

  // The whole vectors of a row: a loop over blocks of `accumulators` vectors, unrolled within a
  // block by the mapping repeat(accumulators) * spatial(lanes) (lane 0's tasks are the first
  // column of each vector), then the vectors left over, one per accumulator.
  Stmt vectors(const ElementFn& element) const {
    if (vectors_ == 0) return Stmt();
    auto block = schedule::repeat(accumulators_) * schedule::spatial(lanes_);
    LOOM_CHECK(block.ok(), block.status().ToString());
    const int64_t block_len = block->num_tasks();
    const int64_t blocks = vectors_ / accumulators_;
    std::vector<Stmt> out;
    if (blocks > 0) {
      Var k("k");
      std::vector<Stmt> step;
      for (const std::vector<int64_t>& first_col : block->tasks_of(0))
        step.push_back(element(vec(k * block_len + first_col[0]), first_col[0] / lanes_));
      out.push_back(
          ir::For::make(k, 0, blocks, ir::ForKind::kSerial, ir::Seq::make(std::move(step))));
    }
    for (int64_t j = blocks * accumulators_; j < vectors_; ++j)
      out.push_back(element(vec(Expr(j * lanes_)), j - blocks * accumulators_));
    return ir::Seq::make(std::move(out));
  }

  // The last L % lanes columns, one scalar each.
  Stmt tail(const ElementFn& element) const {
    std::vector<Stmt> out;
    for (int64_t j = vectors_ * lanes_; j < rows_.len; ++j) out.push_back(element(Expr(j), -1));
    return ir::Seq::make(std::move(out));
  }

  std::string name_;
  Rows rows_;
  int64_t lanes_;
  bool use_fma_, parallel_;
  int64_t rows_per_task_ = 1, vectors_ = 0, accumulators_ = 1;
};

// The space shared by the row templates. regs_per_accumulator: vector registers one accumulator
// keeps busy (its value, the loaded vector and, for softmax, the exp temporaries).
tune::Space rows_space(const TemplateContext& ctx, Rows rows, int64_t regs_per_accumulator,
                       int64_t default_accumulators) {
  const Target& t = ctx.target;
  const int64_t regs = t.vector_registers();
  const int64_t cores = std::max(1, t.cores());
  tune::Space s;
  s.param("accumulators", {1, 2, 4, 8})
      .param("rows_per_task", {1, 2, 4, 8, 16, 32, 64})
      .param("parallel", {0, 1});
  s.rule("accumulators fit the vector registers",
         [=](const tune::Config& c) { return c["accumulators"] * regs_per_accumulator <= regs; });
  // kFast: enough accumulators to cover the add latency, two task sizes, serial and parallel.
  s.prefer("two or more accumulators",
           [](const tune::Config& c) { return c["accumulators"] >= 2; });
  s.prefer("small or large tasks", [](const tune::Config& c) {
    return c["rows_per_task"] == 1 || c["rows_per_task"] == 16;
  });

  // Default: the requested accumulators (fewer if registers are short); about 4 tasks per core
  // so that uneven chunks cost little; parallel when there are cores to share enough work.
  tune::Config best;
  int64_t acc = default_accumulators;
  while (acc > 1 && acc * regs_per_accumulator > regs) acc /= 2;
  best.set("accumulators", acc);
  int64_t per_task = 1;
  for (int64_t choice : {64, 32, 16, 8, 4, 2, 1})
    if (choice * 4 * cores <= rows.rows) {
      per_task = choice;
      break;
    }
  best.set("rows_per_task", per_task);
  best.set("parallel", cores > 1 && rows.rows > 1 && rows.rows * rows.len >= kMinParallelElements);
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_reduce(const TemplateContext& ctx, const tune::Config& c,
                                             ir::ReduceKind kind, bool mean) {
  std::optional<Rows> rows = reduce_rows(ctx);
  if (!rows)
    return absl::InvalidArgumentError("row reduction template does not apply to " + ctx.name);
  RowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), out = k.per_row("out");
  Stmt body = k.for_each_row([&](const Expr& row) {
    Buffer stat = k.stats(1);
    Stmt reduce = k.reduce(
        kind,
        [&](const Expr& col) {
          return x.load({row, col});
        },
        stat, 0);
    Expr total = stat.load({Expr(int64_t{0})});
    if (mean) total = total / ir::make_const(DType::f32(), static_cast<double>(k.len()));
    return ir::Allocate::make(stat, ir::Seq::make({reduce, ir::Store::make(out, total, {row})}));
  });
  return kernel_of(ctx.name, {x, out}, body);
}

// Stages per row: "max", "exp and sum" (the exponentials go to the output), "scale".
absl::StatusOr<ScheduledKernel> build_softmax(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<Rows> rows = softmax_rows(ctx);
  if (!rows) return absl::InvalidArgumentError("softmax template does not apply to " + ctx.name);
  RowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), y = k.matrix("y");
  Stmt body = k.for_each_row([&](const Expr& row) {
    Buffer stat = k.stats(2);
    Var row_max("row_max", DType::f32()), inv_sum("inv_sum", DType::f32());
    Stmt max_pass = k.reduce(
        ir::ReduceKind::kMax,
        [&](const Expr& col) {
          return x.load({row, col});
        },
        stat, 0);
    Stmt exp_pass = k.reduce(
        ir::ReduceKind::kSum,
        [&](const Expr& col) {
          return ir::fast_exp(x.load({row, col}) - row_max, k.use_fma());
        },
        stat, 1,
        [&](const Expr& col, const Expr& e) {
          return ir::Store::make(y, e, {row, col});
        });
    Stmt scale_pass = k.map([&](const Expr& col) {
      return ir::Store::make(y, ir::final_value(y.load({row, col}) * inv_sum), {row, col});
    });
    Expr one = ir::make_const(DType::f32(), 1.0);
    return ir::Allocate::make(
        stat, ir::Seq::make(
                  {max_pass,
                   ir::LetStmt::make(
                       row_max, stat.load({Expr(int64_t{0})}),
                       ir::Seq::make({exp_pass, ir::LetStmt::make(
                                                    inv_sum, one / stat.load({Expr(int64_t{1})}),
                                                    scale_pass)}))}));
  });
  return kernel_of(ctx.name, {x, y}, body);
}

// Stages per row: "mean", "variance" (of x - mean: two passes keep it accurate when the mean is
// large), "normalize" with gamma and beta.
absl::StatusOr<ScheduledKernel> build_layer_norm(const TemplateContext& ctx,
                                                 const tune::Config& c) {
  std::optional<Rows> rows = layer_norm_rows(ctx);
  if (!rows) return absl::InvalidArgumentError("layer_norm template does not apply to " + ctx.name);
  const auto& attrs = attrs_as<LayerNormAttrs>(*ctx.attrs);
  RowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), gamma = k.one_row("gamma"), beta = k.one_row("beta"), y = k.matrix("y");
  const Expr len = ir::make_const(DType::f32(), static_cast<double>(k.len()));
  const Expr eps = ir::make_const(DType::f32(), attrs.epsilon);
  Stmt body = k.for_each_row([&](const Expr& row) {
    Buffer stat = k.stats(2);
    Var mean("mean", DType::f32()), rstd("rstd", DType::f32());
    Stmt mean_pass = k.reduce(
        ir::ReduceKind::kSum,
        [&](const Expr& col) {
          return x.load({row, col});
        },
        stat, 0);
    Stmt var_pass = k.reduce(
        ir::ReduceKind::kSum,
        [&](const Expr& col) {
          return x.load({row, col}) - mean;
        },
        stat, 1, nullptr, /*square=*/true);
    Stmt normalize = k.map([&](const Expr& col) {
      Expr xhat = (x.load({row, col}) - mean) * rstd;
      Expr g = gamma.load({col}), b = beta.load({col});
      return ir::Store::make(y, k.use_fma() ? ir::fma(xhat, g, b) : xhat * g + b, {row, col});
    });
    Expr variance = stat.load({Expr(int64_t{1})}) / len;
    Expr inv_std = ir::make_const(DType::f32(), 1.0) / ir::sqrt(variance + eps);
    return ir::Allocate::make(
        stat, ir::Seq::make(
                  {mean_pass,
                   ir::LetStmt::make(
                       mean, stat.load({Expr(int64_t{0})}) / len,
                       ir::Seq::make({var_pass, ir::LetStmt::make(rstd, inv_std, normalize)}))}));
  });
  return kernel_of(ctx.name, {x, gamma, beta, y}, body);
}

}  // namespace

ScheduleTemplate row_reduce_cpu_template(ir::ReduceKind kind, bool mean) {
  ScheduleTemplate t;
  t.name = mean ? std::string("rows_mean") : std::string("rows_") + ir::reduce_kind_name(kind);
  t.target_kind = Target::Kind::kCpu;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && reduce_rows(ctx).has_value();
  };
  t.space = [](const TemplateContext& ctx) { return rows_space(ctx, *reduce_rows(ctx), 2, 4); };
  t.build = [kind, mean](const TemplateContext& ctx, const tune::Config& c) {
    return build_reduce(ctx, c, kind, mean);
  };
  return t;
}

ScheduleTemplate softmax_cpu_template() {
  ScheduleTemplate t;
  t.name = "rows_softmax";
  t.target_kind = Target::Kind::kCpu;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && softmax_rows(ctx).has_value();
  };
  t.space = [](const TemplateContext& ctx) { return rows_space(ctx, *softmax_rows(ctx), 4, 2); };
  t.build = build_softmax;
  return t;
}

ScheduleTemplate layer_norm_cpu_template() {
  ScheduleTemplate t;
  t.name = "rows_layer_norm";
  t.target_kind = Target::Kind::kCpu;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && layer_norm_rows(ctx).has_value();
  };
  t.space = [](const TemplateContext& ctx) { return rows_space(ctx, *layer_norm_rows(ctx), 2, 4); };
  t.build = build_layer_norm;
  return t;
}

}  // namespace loom::ops
