// Helpers shared by the schedule templates: static extents, kernels of one func, and (CPU) kernels
// that take one input in a packed layout.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/graph/op.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"

namespace loom::ops {

// A scheduled kernel of one func that packs no inputs.
inline ScheduledKernel kernel_of(const std::string& name, std::vector<ir::Param> params,
                                 ir::Stmt body) {
  ScheduledKernel k;
  k.func.name = name;
  k.func.params = std::move(params);
  k.func.body = std::move(body);
  return k;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How a GEMM-like output of batches x row_blocks x panels register tiles splits into the parallel
// tasks of `threads`: tiles of about mc_tiles x nc_panels register tiles, as even as the register
// tile allows (a 128-row output in 96-row tiles would leave one thread a third of the work), and
// a tile count that the thread count divides, splitting columns finer: into up to 4x as many
// tiles when there are few, else up to a third more. With 33 tiles on two threads, one thread
// runs 17 while the other waits out the last (a 1x1 conv 256->64 at 56x56 in 4x3 tiles of 4
// panels); 44 tiles of 3 panels split evenly.
struct TileSplit {
  int64_t rows_per_tile, panels_per_tile;  // in register tiles
};
inline TileSplit balance_tiles(int64_t batches, int64_t row_blocks, int64_t panels,
                               int64_t mc_tiles, int64_t nc_panels, int threads) {
  const int64_t tiles_m = ceil_div(row_blocks, mc_tiles);
  int64_t tiles_n = ceil_div(panels, nc_panels);
  if (threads > 1 && batches * tiles_m * tiles_n % threads != 0) {
    const int64_t most =
        batches * tiles_m * tiles_n < 8 * threads ? 4 * tiles_n : tiles_n + tiles_n / 3;
    // A count of tiles of even width (the last one at most one panel narrower per tile).
    for (int64_t tn = tiles_n + 1; tn <= std::min(panels, most); ++tn)
      if (ceil_div(panels, ceil_div(panels, tn)) == tn && batches * tiles_m * tn % threads == 0) {
        tiles_n = tn;
        break;
      }
  }
  return {ceil_div(row_blocks, tiles_m), ceil_div(panels, tiles_n)};
}

// How many independent sets of accumulators a micro-kernel with `accumulators` vector
// accumulators keeps over alternating k steps (summed before C is stored). A tile with few
// accumulators (the one row of a matrix-vector product, a row tail) otherwise has too few FMA
// chains to cover the FMA latency on every FMA port: about 5 cycles x 2 ports on Zen 2, 4 x 2
// on Intel cores, so 12 chains with margin. The sets, the `loads` vectors one k step loads and
// one broadcast value fit the `regs` vector registers; at most 4 sets.
inline int64_t accumulator_sets(int64_t accumulators, int64_t loads, int64_t regs) {
  constexpr int64_t kFmaChains = 12;
  int64_t sets =
      std::clamp<int64_t>(ceil_div(kFmaChains, std::max<int64_t>(accumulators, 1)), 1, 4);
  while (sets > 1 && sets * accumulators + loads + 1 > regs) --sets;
  return sets;
}

// The accumulator sets after the first of a micro-kernel whose set holds `vectors` vectors of
// `lanes` lanes (set s's vector j at acc[(s * vectors + j) * lanes]): the statements that zero
// them before a K block, and those that add them into the first set after it.
struct ExtraSets {
  std::vector<ir::Stmt> zero, sum;
};
inline ExtraSets extra_sets(const ir::Buffer& acc, int64_t vectors, int64_t lanes, int64_t sets) {
  ExtraSets out;
  auto at = [&](int64_t set, int64_t j) {
    return ir::Ramp::make(ir::Expr((set * vectors + j) * lanes), ir::Expr(1),
                          static_cast<int>(lanes));
  };
  for (int64_t set = 1; set < sets; ++set)
    for (int64_t j = 0; j < vectors; ++j) {
      out.zero.push_back(ir::Store::make(
          acc, ir::Broadcast::make(ir::Expr(0.0f), static_cast<int>(lanes)), {at(set, j)}));
      out.sum.push_back(
          ir::Store::make(acc, acc.load({at(0, j)}) + acc.load({at(set, j)}), {at(0, j)}));
    }
  return out;
}

// A micro-kernel's k loop over [0, klen) with `sets` accumulator sets: step(k, set) is one k
// step into set `set`. One set: a plain loop. More: each iteration takes `sets` steps, one into
// each set, and the steps left over (klen % sets) go into set 0; the caller then adds the sets up.
inline ir::Stmt k_loop_over_sets(const std::string& name, const ir::Expr& klen, int64_t sets,
                                 const std::function<ir::Stmt(ir::Expr, int64_t)>& step) {
  ir::Var k(name);
  if (sets == 1) return ir::For::make(k, 0, klen, ir::ForKind::kSerial, step(k, 0));
  std::vector<ir::Stmt> unrolled;
  for (int64_t set = 0; set < sets; ++set) unrolled.push_back(step(k * sets + set, set));
  ir::Var rest(name + "_rest");
  return ir::Seq::make(
      {ir::For::make(k, 0, klen / sets, ir::ForKind::kSerial, ir::Seq::make(std::move(unrolled))),
       ir::For::make(rest, klen / sets * sets, klen % sets, ir::ForKind::kSerial, step(rest, 0))});
}

// What a blocked GEMM-like task reads after panel `panel` of the K block at k0 (a software
// prefetch's target): the next panel of this K block when there is one (has_next), else the
// task's first panel (panel_begin) in its next K block or, after the last K block, the first
// panel of the next task, the one this thread most often runs next (tasks of panels_per_tile
// panels in a row). Past the last task the panel lies past the data, which a prefetch may read.
struct NextPanel {
  ir::Expr panel, k0;
};
inline NextPanel next_panel(const ir::Expr& has_next, const ir::Expr& last_k_block,
                            const ir::Expr& panel, const ir::Expr& panel_begin,
                            int64_t panels_per_tile, const ir::Expr& k0, int64_t kc) {
  return {ir::select(has_next, panel + 1,
                     ir::select(last_k_block, panel_begin + panels_per_tile, panel_begin)),
          ir::select(has_next, k0, ir::select(last_k_block, ir::Expr(0), k0 + kc))};
}

// The statement prefetch(buf[indices]): a hint to bring that element's line towards the core,
// into L2 or (into_l1) into L1.
inline ir::Stmt prefetch(const ir::Buffer& buf, std::vector<ir::Expr> indices,
                         bool into_l1 = false) {
  return ir::Evaluate::make(
      ir::Call::make(into_l1 ? "prefetch_l1" : "prefetch", {buf.load(std::move(indices))}));
}

// The product of the static extents s[begin, end), or nullopt when any is symbolic.
inline std::optional<int64_t> static_product(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) {
    if (!s[i].is_static()) return std::nullopt;
    p *= s[i].value();
  }
  return p;
}

// A kernel whose input `input` is read in a packed layout. params lists the kernel's buffers
// with the unpacked input at position `input`; pack fills `packed` from it. A constant input is
// packed once at compile time (the compiler runs the pack func) and the kernel takes the packed
// buffer; any other input is packed into scratch at the start of every run.
inline ScheduledKernel kernel_with_packed_input(const TemplateContext& ctx, int input,
                                                std::vector<ir::Buffer> params,
                                                const ir::Buffer& packed, ir::Stmt pack,
                                                ir::Stmt body, std::vector<int64_t> packed_shape) {
  ScheduledKernel out;
  out.func.name = ctx.name;
  const size_t i = static_cast<size_t>(input);
  if (i < ctx.constant_inputs.size() && ctx.constant_inputs[i]) {
    out.packed.push_back(ScheduledKernel::Packed{
        input,
        ir::Func{ctx.name + "_pack_" + std::to_string(input), {params[i], packed}, std::move(pack)},
        std::move(packed_shape)});
    params[i] = packed;
    out.func.body = std::move(body);
  } else {
    out.func.body = ir::Allocate::make(packed, ir::Seq::make({std::move(pack), std::move(body)}));
  }
  out.func.params.assign(params.begin(), params.end());
  return out;
}

}  // namespace loom::ops
