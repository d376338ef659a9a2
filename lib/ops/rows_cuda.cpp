// Row-wise operators on CUDA GPUs. A block holds rows_per_block groups of warps_per_row warps,
// one group per row (one warp per row, or a whole block for long rows). The threads of a group
// take the row's columns by the task mapping repeat(cols_per_thread) * spatial(threads_per_row),
// so consecutive threads read consecutive columns, and reduce with warp shuffles, then through
// shared memory across the group's warps. A row short enough for each thread's columns to fit in
// registers is read from global memory once.

#include "ops/rows_cuda.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/common.hpp"
#include "ops/cuda_common.hpp"
#include "ops/rows.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::ForKind;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// Rows whose columns per thread are at most this many stay in registers between passes.
constexpr int64_t kMaxCachedColumns = 16;

// What one thread knows about its place in the kernel.
struct RowThread {
  Expr row;    // the group's row, clamped to the last row (loads stay in bounds)
  Expr valid;  // whether the group's row exists (stores are guarded by it)
  Expr group;  // the group (row) within the block
  Expr t;      // the thread within its group
  Expr warp;   // the warp within its group
  Expr lane;   // the lane within its warp
};

class GpuRowKernel {
 public:
  using ColumnFn = std::function<Stmt(const Expr& col, const Expr& slot)>;
  using ValueFn = std::function<Expr(const Expr& col, const Expr& slot)>;

  GpuRowKernel(const TemplateContext& ctx, Rows rows, const tune::Config& c)
      : name_(ctx.name), rows_(rows), props_(gpu_properties(ctx.target)) {
    warps_per_row_ = c["warps_per_row"];
    rows_per_block_ = c["rows_per_block"];
    threads_per_row_ = warps_per_row_ * props_.warp_size;
    cols_per_thread_ = ceil_div(rows.len, threads_per_row_);
    cached_ = cols_per_thread_ <= kMaxCachedColumns;
    // Per group, one partial result of each warp (reductions across a row's warps).
    partials_ = Buffer::make(name_ + "_partials", DType::f32(),
                             {Expr(rows_per_block_ * warps_per_row_)}, ir::MemoryScope::kShared);
  }

  int64_t len() const { return rows_.len; }
  bool cached() const { return cached_; }

  // Tensors of the rows' type; values are computed in f32 (value() and store()).
  Buffer matrix(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, rows_.dtype, {Expr(rows_.rows), Expr(rows_.len)});
  }
  Buffer per_row(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, rows_.dtype, {Expr(rows_.rows)});
  }
  Buffer one_row(const std::string& what) const {
    return Buffer::make(name_ + "_" + what, rows_.dtype, {Expr(rows_.len)});
  }
  static Expr value(const Buffer& b, std::vector<Expr> at) {
    return ir::cast(DType::f32(), b.load(std::move(at)));
  }
  static Stmt store(const Buffer& b, const Expr& v, std::vector<Expr> at) {
    return ir::Store::make(b, ir::cast(b.dtype(), v), std::move(at));
  }
  // A thread's columns of its row, in registers (slot s holds column s * threads_per_row + t).
  Buffer row_cache() const {
    return Buffer::make(name_ + "_cols", DType::f32(), {Expr(cols_per_thread_)},
                        ir::MemoryScope::kLocal);
  }

  // Stage "threads over rows": blocks of rows_per_block rows; thread tid of a block is thread t
  // of group g by spatial(rows_per_block, threads_per_row). The body runs in every thread, also
  // in groups past the last row (on the last row, storing nothing), so that barriers are reached
  // by the whole block.
  Stmt launch(const std::function<Stmt(const RowThread&)>& body) const {
    const int64_t blocks = ceil_div(rows_.rows, rows_per_block_);
    auto threads = schedule::spatial(rows_per_block_, threads_per_row_);
    LOOM_CHECK(threads.ok(), threads.status().ToString());
    Var block("block"), tid("tid");
    Stmt per_thread = threads->on(tid, [&](const std::vector<Expr>& task) {
      RowThread th;
      Expr row = block * rows_per_block_ + task[0];
      th.row = rows_.rows % rows_per_block_ ? ir::min(row, Expr(rows_.rows - 1)) : row;
      th.valid =
          rows_.rows % rows_per_block_ ? row < rows_.rows : ir::IntImm::make(DType::boolean(), 1);
      th.group = task[0];
      th.t = task[1];
      th.warp = task[1] / Expr(int64_t{props_.warp_size});
      th.lane = task[1] % Expr(int64_t{props_.warp_size});
      return body(th);
    });
    if (warps_per_row_ > 1) per_thread = ir::Allocate::make(partials_, per_thread);
    return gpu_launch(block, blocks, tid, threads->num_workers(), per_thread);
  }

  // Stage "columns over threads": fn(col, slot) for the thread's columns, by the mapping
  // repeat(cols_per_thread) * spatial(threads_per_row) (its repeat level gives the slot); unrolled
  // when the columns are cached in registers, guarded when threads_per_row does not divide L.
  Stmt columns(const RowThread& th, const ColumnFn& fn) const {
    auto steps = schedule::repeat(cols_per_thread_);
    LOOM_CHECK(steps.ok(), steps.status().ToString());
    return steps->on(
        Expr(int64_t{0}),
        [&](const std::vector<Expr>& slot) {
          Expr col = slot[0] * threads_per_row_ + th.t;
          Stmt s = fn(col, slot[0]);
          return rows_.len % threads_per_row_ ? ir::IfThenElse::make(col < rows_.len, s) : s;
        },
        cached_ ? ir::ForKind::kUnrolled : ir::ForKind::kSerial);
  }

  // Stage "reduce": the kind-reduction of value(col, slot) over the row, in every thread of the
  // group, bound to `result` around then.
  Stmt reduce(const RowThread& th, ir::ReduceKind kind, const ValueFn& value, const Var& result,
              Stmt then) const {
    Buffer acc =
        Buffer::make(name_ + "_acc", DType::f32(), {Expr(int64_t{1})}, ir::MemoryScope::kLocal);
    const Expr at(int64_t{0});
    Stmt init = ir::Store::make(acc, ir::Reduce::identity(kind, DType::f32()), {at});
    Stmt accumulate = columns(th, [&](const Expr& col, const Expr& slot) {
      return ir::Store::make(acc, ir::Reduce::combine(kind, acc.load({at}), value(col, slot)),
                             {at});
    });
    Stmt all = group_all_reduce(kind, acc, 0, partials_, th.group, th.warp, th.lane, warps_per_row_,
                                props_.warp_size);
    return ir::Allocate::make(
        acc, ir::Seq::make({init, accumulate, all,
                            ir::LetStmt::make(result, acc.load({at}), std::move(then))}));
  }

 private:
  std::string name_;
  Rows rows_;
  GpuProperties props_;
  int64_t warps_per_row_ = 1, rows_per_block_ = 1, threads_per_row_ = 32, cols_per_thread_ = 1;
  bool cached_ = false;
  Buffer partials_;
};

// The space shared by the row templates: one warp per row up to a whole block per row, and how
// many rows a block takes; the same for every row length.
tune::Space rows_space(const TemplateContext& ctx, Rows rows) {
  const GpuProperties p = gpu_properties(ctx.target);
  const int64_t max_warps = p.max_threads_per_block / p.warp_size;
  std::vector<int64_t> warps;
  for (int64_t w = 1; w <= max_warps; w *= 2) warps.push_back(w);
  tune::Space s;
  s.param("warps_per_row", warps).param("rows_per_block", {1, 2, 4, 8});
  s.rule("threads per block within the device limit", [=](const tune::Config& c) {
    return c["warps_per_row"] * c["rows_per_block"] <= max_warps;
  });
  // kFast: blocks of 4 to 16 warps, which keep an SM's schedulers busy with few blocks.
  s.prefer("4 to 16 warps per block", [](const tune::Config& c) {
    int64_t w = c["warps_per_row"] * c["rows_per_block"];
    return w >= 4 && w <= 16;
  });

  // Default: the fewest warps per row that keep a thread's columns in registers (at most 8
  // warps), 4 rows per block with one warp per row, fewer while that leaves SMs idle.
  tune::Config best;
  int64_t w = 1;
  while (w < std::min<int64_t>(8, max_warps) &&
         ceil_div(rows.len, w * p.warp_size) > kMaxCachedColumns)
    w *= 2;
  int64_t per_block = w == 1 ? 4 : 1;
  while (per_block > 1 && ceil_div(rows.rows, per_block) < p.sm_count) per_block /= 2;
  best.set("warps_per_row", w);
  best.set("rows_per_block", per_block);
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_reduce(const TemplateContext& ctx, const tune::Config& c,
                                             ir::ReduceKind kind, bool mean) {
  std::optional<Rows> rows = reduce_rows(ctx, /*any_float=*/true);
  if (!rows)
    return absl::InvalidArgumentError("CUDA row reduction template does not apply to " + ctx.name);
  GpuRowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), out = k.per_row("out");
  Stmt body = k.launch([&](const RowThread& th) {
    Var total("total", DType::f32());
    Expr value = total;
    if (mean) value = value / ir::make_const(DType::f32(), static_cast<double>(k.len()));
    Stmt store =
        ir::IfThenElse::make(th.valid && th.t == int64_t{0}, k.store(out, value, {th.row}));
    return k.reduce(
        th, kind, [&](const Expr& col, const Expr&) { return k.value(x, {th.row, col}); }, total,
        store);
  });
  return kernel_of(ctx.name, {x, out}, body);
}

// The axis (normalized) of a softmax or log_softmax node with an f32 output, or of an argmax or
// argmin node (i64 output), with one input.
std::optional<int> softmax_or_arg_axis(const TemplateContext& ctx) {
  if (ctx.inputs.size() != 1 || !ctx.attrs || ctx.inputs[0].shape.empty()) return std::nullopt;
  int axis = 0;
  if (const auto* a = dynamic_cast<const SoftmaxAttrs*>(ctx.attrs);
      a && ctx.output.dtype == DType::f32()) {
    axis = a->axis;
  } else if (const auto* b = dynamic_cast<const ArgReduceAttrs*>(ctx.attrs);
             b && ctx.output.dtype == DType::i64()) {
    axis = b->axis;
  } else {
    return std::nullopt;
  }
  absl::StatusOr<int> normalized = normalize_axis(axis, static_cast<int>(ctx.inputs[0].shape.size()));
  if (!normalized.ok()) return std::nullopt;
  return *normalized;
}

// Indices along a reduced axis are carried in f32, exact below 2^24.
constexpr int64_t kMaxIndexedLength = int64_t{1} << 24;

// The rows of an argmax/argmin node over its last axis.
std::optional<Rows> arg_reduce_rows(const TemplateContext& ctx) {
  if (!dynamic_cast<const ArgReduceAttrs*>(ctx.attrs)) return std::nullopt;
  std::optional<int> axis = softmax_or_arg_axis(ctx);
  if (!axis || *axis != static_cast<int>(ctx.inputs[0].shape.size()) - 1) return std::nullopt;
  std::optional<Rows> rows = rows_of(ctx.inputs[0], *axis);
  if (!rows || rows->len >= kMaxIndexedLength) return std::nullopt;
  return rows;
}

// Stages per row: "extreme" (the max or min), then "first" (the least column holding it, so the
// first one wins ties; clamped to the last column, as in the operator's definition).
absl::StatusOr<ScheduledKernel> build_arg_reduce(const TemplateContext& ctx,
                                                 const tune::Config& c, bool is_max) {
  std::optional<Rows> rows = arg_reduce_rows(ctx);
  if (!rows)
    return absl::InvalidArgumentError("CUDA argmax/argmin template does not apply to " + ctx.name);
  GpuRowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x");
  Buffer out = Buffer::make(ctx.name + "_out", DType::i64(), {Expr(rows->rows)});
  const Expr none = ir::make_const(DType::f32(), static_cast<double>(rows->len));
  Stmt body = k.launch([&](const RowThread& th) {
    Var extreme("extreme", DType::f32()), first("first", DType::f32());
    Expr index = ir::min(ir::cast(DType::i64(), first), Expr(rows->len - 1));
    Stmt store = ir::IfThenElse::make(th.valid && th.t == int64_t{0},
                                      ir::Store::make(out, index, {th.row}));
    Stmt find = k.reduce(
        th, ir::ReduceKind::kMin,
        [&](const Expr& col, const Expr&) {
          return ir::select(x.load({th.row, col}) == extreme, ir::cast(DType::f32(), col), none);
        },
        first, store);
    return k.reduce(
        th, is_max ? ir::ReduceKind::kMax : ir::ReduceKind::kMin,
        [&](const Expr& col, const Expr&) { return x.load({th.row, col}); }, extreme, find);
  });
  return kernel_of(ctx.name, {x, out}, body);
}

// Stages per row: "load" (to registers, when cached), "max", "exp and sum", then "scale" (softmax,
// exp(x - max) / sum) or "shift" (log_softmax, x - max - log(sum)).
absl::StatusOr<ScheduledKernel> build_softmax(const TemplateContext& ctx, const tune::Config& c,
                                              bool log) {
  std::optional<Rows> rows = softmax_rows(ctx, /*any_float=*/true);
  if (!rows)
    return absl::InvalidArgumentError("CUDA softmax template does not apply to " + ctx.name);
  GpuRowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), y = k.matrix("y");
  Stmt body = k.launch([&](const RowThread& th) {
    Buffer cols = k.row_cache();
    auto input = [&](const Expr& col, const Expr& slot) {
      return k.cached() ? cols.load({slot}) : k.value(x, {th.row, col});
    };
    Var row_max("row_max", DType::f32()), sum("sum", DType::f32());
    Var inv_sum("inv_sum", DType::f32()), log_sum("log_sum", DType::f32());
    // softmax keeps the exponentials of a cached row in its registers; log_softmax keeps the
    // inputs, which its last stage reads.
    const bool cache_exps = k.cached() && !log;
    Stmt then;
    if (log) {
      Stmt shift = k.columns(th, [&](const Expr& col, const Expr& slot) {
        return ir::IfThenElse::make(
            th.valid, k.store(y, input(col, slot) - row_max - log_sum, {th.row, col}));
      });
      then = ir::LetStmt::make(log_sum, ir::log(sum), shift);
    } else {
      Stmt scale = k.columns(th, [&](const Expr& col, const Expr& slot) {
        Expr e = cache_exps ? cols.load({slot}) : ir::exp(k.value(x, {th.row, col}) - row_max);
        return ir::IfThenElse::make(th.valid, k.store(y, e * inv_sum, {th.row, col}));
      });
      then = ir::LetStmt::make(inv_sum, ir::make_const(DType::f32(), 1.0) / sum, scale);
    }
    Stmt exp_sum;
    if (cache_exps) {
      // The exponentials replace the inputs in registers, then are summed.
      Stmt exps = k.columns(th, [&](const Expr&, const Expr& slot) {
        return ir::Store::make(cols, ir::exp(cols.load({slot}) - row_max), {slot});
      });
      exp_sum = ir::Seq::make(
          {exps, k.reduce(
                     th, ir::ReduceKind::kSum,
                     [&](const Expr&, const Expr& slot) { return cols.load({slot}); }, sum, then)});
    } else {
      exp_sum = k.reduce(
          th, ir::ReduceKind::kSum,
          [&](const Expr& col, const Expr& slot) { return ir::exp(input(col, slot) - row_max); },
          sum, then);
    }
    Stmt passes = k.reduce(th, ir::ReduceKind::kMax, input, row_max, exp_sum);
    if (!k.cached()) return passes;
    Stmt load = k.columns(th, [&](const Expr& col, const Expr& slot) {
      return ir::Store::make(cols, k.value(x, {th.row, col}), {slot});
    });
    return ir::Allocate::make(cols, ir::Seq::make({load, passes}));
  });
  return kernel_of(ctx.name, {x, y}, body);
}

// Stages per row: "load" (to registers, when cached), "mean", "variance" (of x - mean),
// "normalize" with gamma and beta.
absl::StatusOr<ScheduledKernel> build_layer_norm(const TemplateContext& ctx,
                                                 const tune::Config& c) {
  std::optional<Rows> rows = layer_norm_rows(ctx, /*any_float=*/true);
  if (!rows)
    return absl::InvalidArgumentError("CUDA layer_norm template does not apply to " + ctx.name);
  const auto& attrs = attrs_as<LayerNormAttrs>(*ctx.attrs);
  GpuRowKernel k(ctx, *rows, c);
  Buffer x = k.matrix("x"), gamma = k.one_row("gamma"), beta = k.one_row("beta"), y = k.matrix("y");
  const Expr len = ir::make_const(DType::f32(), static_cast<double>(k.len()));
  const Expr eps = ir::make_const(DType::f32(), attrs.epsilon);
  Stmt body = k.launch([&](const RowThread& th) {
    Buffer cols = k.row_cache();
    auto input = [&](const Expr& col, const Expr& slot) {
      return k.cached() ? cols.load({slot}) : k.value(x, {th.row, col});
    };
    Var sum("sum", DType::f32()), squares("squares", DType::f32());
    Var mean("mean", DType::f32()), rstd("rstd", DType::f32());
    Stmt normalize = k.columns(th, [&](const Expr& col, const Expr& slot) {
      Expr xhat = (input(col, slot) - mean) * rstd;
      return ir::IfThenElse::make(
          th.valid,
          k.store(y, ir::fma(xhat, k.value(gamma, {col}), k.value(beta, {col})), {th.row, col}));
    });
    Stmt variance = k.reduce(
        th, ir::ReduceKind::kSum,
        [&](const Expr& col, const Expr& slot) {
          Expr d = input(col, slot) - mean;
          return d * d;
        },
        squares, ir::LetStmt::make(rstd, ir::rsqrt(squares / len + eps), normalize));
    Stmt passes = k.reduce(th, ir::ReduceKind::kSum, input, sum,
                           ir::LetStmt::make(mean, sum / len, variance));
    if (!k.cached()) return passes;
    Stmt load = k.columns(th, [&](const Expr& col, const Expr& slot) {
      return ir::Store::make(cols, k.value(x, {th.row, col}), {slot});
    });
    return ir::Allocate::make(cols, ir::Seq::make({load, passes}));
  });
  return kernel_of(ctx.name, {x, gamma, beta, y}, body);
}

// ---- one axis that is not the last: a thread per column ------------------------------------

// x as [outer, len, inner] around `axis` (inner > 1: not the last axis), f32 and static.
struct Columns {
  int64_t outer = 0, len = 0, inner = 0;
};

std::optional<Columns> columns_of(const TensorType& x, int axis) {
  if (x.dtype != DType::f32()) return std::nullopt;
  const size_t a = static_cast<size_t>(axis);
  auto outer = static_product(x.shape, 0, a), len = static_product(x.shape, a, a + 1);
  auto inner = static_product(x.shape, a + 1, x.shape.size());
  if (!outer || !len || !inner || *outer < 1 || *len < 1 || *inner < 2) return std::nullopt;
  return Columns{*outer, *len, *inner};
}

// The columns of a softmax, log_softmax, argmax or argmin node over an axis not the last.
std::optional<Columns> axis_columns(const TemplateContext& ctx) {
  std::optional<int> axis = softmax_or_arg_axis(ctx);
  if (!axis || *axis == static_cast<int>(ctx.inputs[0].shape.size()) - 1) return std::nullopt;
  std::optional<Columns> c = columns_of(ctx.inputs[0], *axis);
  if (!c || c->len >= kMaxIndexedLength) return std::nullopt;
  return c;
}

enum class ColumnOp { kSoftmax, kLogSoftmax, kArgMax, kArgMin };

// Each thread takes one column (o, i) of [outer, len, inner]: consecutive threads read
// consecutive i, so every pass over the column's len elements is coalesced across the warp.
// Stages per column: "extreme" (max, or min for argmin), then "exp and sum" and "scale" or
// "shift" (softmax, log_softmax), or "first" (the least index holding the extreme).
absl::StatusOr<ScheduledKernel> build_axis_columns(const TemplateContext& ctx,
                                                   const tune::Config& c, ColumnOp op) {
  std::optional<Columns> cols = axis_columns(ctx);
  if (!cols)
    return absl::InvalidArgumentError("CUDA axis template does not apply to " + ctx.name);
  const int64_t total = cols->outer * cols->inner, threads = c["threads"];
  const bool arg = op == ColumnOp::kArgMax || op == ColumnOp::kArgMin;
  Buffer x = Buffer::make(ctx.name + "_x", DType::f32(), {Expr(total * cols->len)});
  Buffer y = Buffer::make(ctx.name + "_y", arg ? DType::i64() : DType::f32(),
                          {Expr(arg ? total : total * cols->len)});
  Var block("block"), thread("thread"), column("column"), base("base"), l("l");
  auto at = [&](const Expr& k) { return base + k * cols->inner; };
  // for l in [0, len): the kind-reduction of value(l), bound to result around then.
  auto reduce = [&](ir::ReduceKind kind, const std::function<Expr(const Expr&)>& value,
                    const Var& result, Stmt then) {
    Buffer acc = Buffer::make(ctx.name + "_acc_" + result.name(), DType::f32(), {Expr(int64_t{1})},
                              ir::MemoryScope::kLocal);
    const Expr zero(int64_t{0});
    Stmt init = ir::Store::make(acc, ir::Reduce::identity(kind, DType::f32()), {zero});
    Stmt step = ir::Store::make(acc, ir::Reduce::combine(kind, acc.load({zero}), value(l)), {zero});
    return ir::Allocate::make(
        acc, ir::Seq::make({init, ir::For::make(l, 0, cols->len, ForKind::kSerial, step),
                            ir::LetStmt::make(result, acc.load({zero}), std::move(then))}));
  };
  Var extreme("extreme", DType::f32()), sum("sum", DType::f32()), first("first", DType::f32());
  Var norm("norm", DType::f32());
  Stmt per_column;
  if (arg) {
    const Expr none = ir::make_const(DType::f32(), static_cast<double>(cols->len));
    Expr index = ir::min(ir::cast(DType::i64(), first), Expr(cols->len - 1));
    Stmt find = reduce(
        ir::ReduceKind::kMin,
        [&](const Expr& k) {
          return ir::select(x.load({at(k)}) == extreme, ir::cast(DType::f32(), k), none);
        },
        first, ir::Store::make(y, index, {column}));
    per_column = reduce(op == ColumnOp::kArgMax ? ir::ReduceKind::kMax : ir::ReduceKind::kMin,
                        [&](const Expr& k) { return x.load({at(k)}); }, extreme, find);
  } else {
    const bool log = op == ColumnOp::kLogSoftmax;
    Expr shifted = x.load({at(l)}) - extreme;
    Stmt write = ir::For::make(
        l, 0, cols->len, ForKind::kSerial,
        ir::Store::make(y, log ? shifted - norm : ir::exp(shifted) * norm, {at(l)}));
    Stmt then = ir::LetStmt::make(
        norm, log ? ir::log(sum) : ir::make_const(DType::f32(), 1.0) / sum, write);
    Stmt exp_sum = reduce(
        ir::ReduceKind::kSum, [&](const Expr& k) { return ir::exp(x.load({at(k)}) - extreme); },
        sum, then);
    per_column = reduce(ir::ReduceKind::kMax, [&](const Expr& k) { return x.load({at(k)}); },
                        extreme, exp_sum);
  }
  per_column = ir::LetStmt::make(
      base, column / cols->inner * (cols->len * cols->inner) + column % cols->inner, per_column);
  Stmt body = ir::LetStmt::make(column, block * threads + thread,
                                total % threads ? ir::IfThenElse::make(column < total, per_column)
                                                : per_column);
  return kernel_of(ctx.name, {x, y}, gpu_launch(block, ceil_div(total, threads), thread, threads, body));
}

// Threads per block; by default the most that still give every SM a block.
tune::Space axis_columns_space(const TemplateContext& ctx) {
  const GpuProperties p = gpu_properties(ctx.target);
  const Columns cols = *axis_columns(ctx);
  tune::Space s;
  s.param("threads", {32, 64, 128, 256, 512});
  s.rule("threads per block within the device limit",
         [=](const tune::Config& c) { return c["threads"] <= p.max_threads_per_block; });
  s.prefer("64 to 256 threads", [](const tune::Config& c) {
    return c["threads"] >= 64 && c["threads"] <= 256;
  });
  tune::Config best;
  int64_t threads = 256;
  while (threads > 32 && ceil_div(cols.outer * cols.inner, threads) < p.sm_count) threads /= 2;
  best.set("threads", threads);
  s.default_config(best);
  return s;
}

// A row template: it applies where rows(ctx) finds rows, over the rows space.
ScheduleTemplate row_template(std::string name, std::optional<Rows> (*rows)(const TemplateContext&),
                              decltype(ScheduleTemplate::build) build) {
  return cuda_template(
      std::move(name),
      [rows](const TemplateContext& ctx) { return ctx.target.is_cuda() && rows(ctx).has_value(); },
      [rows](const TemplateContext& ctx) { return rows_space(ctx, *rows(ctx)); },
      std::move(build));
}

}  // namespace

ScheduleTemplate axis_columns_cuda_template(const std::string& op) {
  const std::map<std::string, ColumnOp> kinds = {{"softmax", ColumnOp::kSoftmax},
                                                 {"log_softmax", ColumnOp::kLogSoftmax},
                                                 {"argmax", ColumnOp::kArgMax},
                                                 {"argmin", ColumnOp::kArgMin}};
  LOOM_CHECK(kinds.count(op) == 1, "no CUDA axis template for ", op);
  const ColumnOp kind = kinds.at(op);
  return cuda_template(
      "cuda_axis_" + op,
      [](const TemplateContext& ctx) {
        return ctx.target.is_cuda() && axis_columns(ctx).has_value();
      },
      axis_columns_space,
      [kind](const TemplateContext& ctx, const tune::Config& c) {
        return build_axis_columns(ctx, c, kind);
      });
}

ScheduleTemplate row_reduce_cuda_template(ir::ReduceKind kind, bool mean) {
  return row_template(
      mean ? std::string("cuda_rows_mean") : std::string("cuda_rows_") + ir::reduce_kind_name(kind),
      [](const TemplateContext& ctx) { return reduce_rows(ctx, true); },
      [kind, mean](const TemplateContext& ctx, const tune::Config& c) {
        return build_reduce(ctx, c, kind, mean);
      });
}

ScheduleTemplate softmax_cuda_template(bool log) {
  return row_template(log ? "cuda_rows_log_softmax" : "cuda_rows_softmax",
                      [](const TemplateContext& ctx) { return softmax_rows(ctx, true); },
                      [log](const TemplateContext& ctx, const tune::Config& c) {
                        return build_softmax(ctx, c, log);
                      });
}

ScheduleTemplate arg_reduce_cuda_template(bool is_max) {
  return row_template(is_max ? "cuda_rows_argmax" : "cuda_rows_argmin", arg_reduce_rows,
                      [is_max](const TemplateContext& ctx, const tune::Config& c) {
                        return build_arg_reduce(ctx, c, is_max);
                      });
}

ScheduleTemplate layer_norm_cuda_template() {
  return row_template("cuda_rows_layer_norm",
                      [](const TemplateContext& ctx) { return layer_norm_rows(ctx, true); },
                      build_layer_norm);
}

}  // namespace loom::ops
