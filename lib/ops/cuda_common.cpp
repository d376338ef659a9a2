// GPU properties for schedule spaces, and the launch and reduction stages the CUDA templates share.

#include "ops/cuda_common.hpp"

#include <map>
#include <mutex>

#include "loom/ir/op.hpp"
#include "loom/runtime/cuda.hpp"

namespace loom::ops {

GpuProperties GpuProperties::defaults_for(int sm_arch) {
  GpuProperties p;
  p.sm_arch = sm_arch;
  if (sm_arch >= 90) {  // H100 SXM
    p.sm_count = 132;
    p.shared_memory_per_sm = 228 * 1024;
    p.shared_memory_per_block_optin = 227 * 1024;
  } else if (sm_arch >= 86 && sm_arch != 87) {  // RTX 30xx/40xx class
    p.sm_count = 84;
    p.shared_memory_per_sm = 100 * 1024;
    p.shared_memory_per_block_optin = 99 * 1024;
    p.max_threads_per_block = 1024;
  } else {  // A100 and older
    p.sm_count = 108;
    p.shared_memory_per_sm = 164 * 1024;
    p.shared_memory_per_block_optin = sm_arch >= 80 ? 163 * 1024 : 48 * 1024;
  }
  return p;
}

GpuProperties gpu_properties(const Target& target) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, GpuProperties> known;
  std::lock_guard<std::mutex> lock(mu);
  // A count the target sets replaces the device's or the default.
  auto with_target = [&target](GpuProperties p) {
    if (target.sm_count() > 0) p.sm_count = target.sm_count();
    return p;
  };
  const std::pair<int, int> key{target.device(), target.sm_arch()};
  auto it = known.find(key);
  if (it != known.end()) return with_target(it->second);
  GpuProperties p = GpuProperties::defaults_for(target.sm_arch());
  // Only a present device of the very arch replaces the defaults: a space for sm_80 built on an
  // sm_90 machine stays an sm_80 space.
  absl::StatusOr<runtime::cuda::Driver*> driver = runtime::cuda::Driver::get();
  if (driver.ok()) {
    absl::StatusOr<int> count = (*driver)->device_count();
    if (count.ok() && target.device() < *count) {
      absl::StatusOr<runtime::cuda::DeviceProperties> d =
          (*driver)->device_properties(target.device());
      if (d.ok() && d->sm_arch == target.sm_arch()) {
        p.sm_count = d->sm_count;
        p.warp_size = d->warp_size;
        p.max_threads_per_block = d->max_threads_per_block;
        p.shared_memory_per_block = std::min<int64_t>(d->shared_memory_per_block, 48 * 1024);
        p.shared_memory_per_sm = d->shared_memory_per_sm;
        p.shared_memory_per_block_optin =
            std::max<int64_t>(p.shared_memory_per_block, d->shared_memory_per_block_optin);
        p.registers_per_block = d->registers_per_block;
        p.registers_per_sm = d->registers_per_sm;
        p.from_device = true;
      }
    }
  }
  known[key] = p;
  return with_target(p);
}

tune::Config first_filling_config(const tune::Space& s, const std::vector<tune::Config>& by_size,
                                  int sm_count,
                                  const std::function<int64_t(const tune::Config&)>& blocks) {
  for (const tune::Config& c : by_size)
    if (blocks(c) >= sm_count && s.broken_rules(c).empty()) return c;
  return by_size.back();
}

ScheduleTemplate cuda_template(std::string name, std::function<bool(const TemplateContext&)> applies,
                               std::function<tune::Space(const TemplateContext&)> space,
                               decltype(ScheduleTemplate::build) build) {
  ScheduleTemplate t;
  t.name = std::move(name);
  t.target_kind = Target::Kind::kCuda;
  t.applies = std::move(applies);
  t.space = std::move(space);
  t.build = std::move(build);
  return t;
}

ir::Stmt gpu_launch(const ir::Var& block, int64_t blocks, const ir::Var& thread, int64_t threads,
                    ir::Stmt body) {
  body = ir::For::make(thread, ir::Expr(int64_t{0}), ir::Expr(threads), ir::ForKind::kGpuThread,
                       std::move(body), 0);
  return ir::For::make(block, ir::Expr(int64_t{0}), ir::Expr(blocks), ir::ForKind::kGpuBlock,
                       std::move(body), 0);
}

ir::Stmt store_inside(ir::Stmt store, const ir::Expr& row, int64_t rows, bool row_tail,
                      const ir::Expr& col, int64_t cols, bool col_tail) {
  ir::Expr inside;
  if (row_tail) inside = row < rows;
  if (col_tail) inside = inside.defined() ? (inside && col < cols) : col < cols;
  return inside.defined() ? ir::IfThenElse::make(inside, std::move(store)) : store;
}

ir::Stmt store_accumulators(const GemmOutput& out, const ir::Expr& g, const ir::Expr& row,
                            const ir::Expr& col, const ir::Buffer& acc, int64_t slot, int lanes,
                            bool row_tail, bool col_tail) {
  const ir::Expr one(int64_t{1});
  auto inside = [&](ir::Stmt store, const ir::Expr& c) {
    return store_inside(std::move(store), row, out.M, row_tail, c, out.N, col_tail);
  };
  if (lanes > 1 && (!out.at || out.at_columns_contiguous) && out.N % lanes == 0) {
    ir::Expr v = acc.load({ir::Ramp::make(ir::Expr(slot), one, lanes)});
    const ir::Expr cols = ir::Ramp::make(col, one, lanes);
    return inside(
        ir::Store::make(out.c, ir::final_value(ir::cast(DType(out.c.dtype().code(), lanes), v)),
                        out.at ? out.at(g, row, cols) : std::vector<ir::Expr>{g, row, cols}),
        col);
  }
  std::vector<ir::Stmt> s;
  for (int64_t i = 0; i < lanes; ++i) {
    const ir::Expr c = col + i;
    s.push_back(inside(
        ir::Store::make(out.c,
                        ir::final_value(ir::cast(out.c.dtype(), acc.load({ir::Expr(slot + i)}))),
                        out.at ? out.at(g, row, c) : std::vector<ir::Expr>{g, row, c}),
        c));
  }
  return ir::Seq::make(std::move(s));
}

ir::Stmt warp_all_reduce(ir::ReduceKind kind, const ir::Buffer& acc, int64_t slot, int warp_size) {
  std::vector<ir::Stmt> steps;
  const ir::Expr at(slot);
  for (int mask = warp_size / 2; mask >= 1; mask /= 2) {
    ir::Expr v = acc.load({at});
    steps.push_back(
        ir::Store::make(acc, ir::Reduce::combine(kind, v, ir::shfl_xor_sync(v, mask)), {at}));
  }
  return ir::Seq::make(std::move(steps));
}

ir::Stmt group_all_reduce(ir::ReduceKind kind, const ir::Buffer& acc, int64_t slot,
                          const ir::Buffer& partials, const ir::Expr& group, const ir::Expr& warp,
                          const ir::Expr& lane, int64_t warps, int warp_size) {
  ir::Stmt in_warp = warp_all_reduce(kind, acc, slot, warp_size);
  if (warps == 1) return in_warp;
  const ir::Expr at(slot);
  const ir::Expr first = group * warps;
  ir::Var w("w");
  DType t = acc.dtype();
  return ir::Seq::make({
      in_warp,
      ir::IfThenElse::make(lane == int64_t{0},
                           ir::Store::make(partials, acc.load({at}), {first + warp})),
      ir::Barrier::make(),
      ir::Store::make(acc, ir::Reduce::identity(kind, t), {at}),
      ir::For::make(
          w, ir::Expr(int64_t{0}), ir::Expr(warps), ir::ForKind::kUnrolled,
          ir::Store::make(
              acc, ir::Reduce::combine(kind, acc.load({at}), partials.load({first + w})), {at})),
      ir::Barrier::make(),
  });
}

}  // namespace loom::ops
