// Split-K for the CUDA GEMM templates (private to lib/ops): for shapes with too few output tiles
// to fill the SMs and a deep K, spatial(..., split_k) more blocks, each multiplying a contiguous
// range of the K slices. Every block writes its f32 partial tile to module memory (one slot per
// split, each thread its accumulators side by side with its neighbours'), fences, and counts
// itself in the tile's arrival counter; the block that arrives last sums the partials of all
// splits in split order (the same result whichever block is last), resets the counter for the
// next launch and stores C, epilogue included. Partials and counters are module-scope arrays (see
// emit_cuda.hpp), so the node needs no workspace. The SIMT (f32), mma.sync and wgmma GEMMs use it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "loom/ir/buffer.hpp"
#include "loom/ir/expr.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/stmt.hpp"
#include "loom/tune/space.hpp"
#include "ops/cuda_common.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace split_k {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// Split-K's state and stages, for a GEMM whose threads each hold `regs` f32
// accumulators: the partials and arrival counters in module memory, and per block the flag that
// it arrived last.
class SplitK {
 public:
  SplitK() = default;
  SplitK(const std::string& name, int64_t tiles, int64_t splits, int64_t regs, int64_t threads)
      : splits_(splits), regs_(regs), threads_(threads) {
    if (splits == 1) return;
    partials_ = Buffer::make(name + "_partials", DType::f32(),
                             {Expr(tiles * splits * regs * threads)});
    arrivals_ = Buffer::make(name + "_arrivals", DType::i32(), {Expr(tiles)});
    last_ = Buffer::make(name + "_last", DType::i32(), {Expr(int64_t{1})},
                         ir::MemoryScope::kShared);
    arrived_ = Buffer::make(name + "_arrived", DType::i32(), {Expr(int64_t{1})},
                            ir::MemoryScope::kLocal);
  }

  int64_t splits() const { return splits_; }

  // The K slices of split `split` of `slices`: [first, first + count); count may be 0 or less
  // past the end.
  std::pair<Expr, Expr> slices_of(const Expr& split, int64_t slices) const {
    if (splits_ == 1) return {Expr(int64_t{0}), Expr(slices)};
    const int64_t per_split = ceil_div(slices, splits_);
    const Expr first = split * per_split;
    return {first, ir::min(Expr(per_split), Expr(slices) - first)};
  }

  // The module memory around the launch, the block's flags around its body.
  Stmt around_launch(Stmt launch) const {
    if (splits_ == 1) return launch;
    return ir::Allocate::make(partials_, ir::Allocate::make(arrivals_, std::move(launch)));
  }
  Stmt around_block(Stmt body) const {
    if (splits_ == 1) return body;
    return ir::Allocate::make(last_, ir::Allocate::make(arrived_, std::move(body)));
  }

  // Stage "split-K reduction", then `store` (the stage storing acc as C): partials out, arrival
  // counted, and in the block that arrives last the sum of every split's partials (in split
  // order) into the accumulators. Accumulator r of thread tid of split s of tile t is
  // partials[((t * splits + s) * regs + r) * threads + tid]. Without a split, just `store`.
  Stmt reduce(const Var& tid, const Expr& tile, const Expr& split, const Buffer& acc,
              Stmt store) const {
    if (splits_ == 1) return store;
    return ir::Seq::make({publish(tid, tile, split, acc), gather(tid, tile, acc, std::move(store))});
  }

  // The two halves of the reduction, for kernels in which only some threads hold accumulators:
  // publish (those threads: their partials out, fenced), then gather (every thread of the
  // block: the arrival counted, and in the last block `store` after summing the partials, both
  // under `holds` when given, the predicate of the threads that published).
  Stmt publish(const Var& tid, const Expr& tile, const Expr& split, const Buffer& acc) const {
    Var r("r");
    return ir::Seq::make(
        {ir::For::make(r, Expr(int64_t{0}), Expr(regs_), ir::ForKind::kUnrolled,
                       ir::Store::make(partials_, acc.load({r}), {slot(tid, tile, split, r)})),
         ir::Evaluate::make(ir::Call::make("thread_fence", {}))});
  }
  Stmt gather(const Var& tid, const Expr& tile, const Buffer& acc, Stmt store,
              const Expr& holds = Expr()) const {
    auto slot = [&](const Expr& s, const Expr& r) { return this->slot(tid, tile, s, r); };
    auto fence = [] { return ir::Evaluate::make(ir::Call::make("thread_fence", {})); };
    Var r("r"), s("s");
    const Expr zero32 = ir::cast(DType::i32(), Expr(int64_t{0}));
    const Expr one32 = ir::cast(DType::i32(), Expr(int64_t{1}));
    const Expr was_last =
        arrived_.load({Expr(int64_t{0})}) == ir::cast(DType::i32(), Expr(splits_ - 1));
    Stmt count = ir::IfThenElse::make(
        tid == int64_t{0},
        ir::Seq::make({
            ir::Evaluate::make(ir::Call::make(
                "atomic_add_i32",
                {arrived_.load({Expr(int64_t{0})}), arrivals_.load({tile}), one32})),
            ir::Store::make(last_, ir::select(was_last, one32, zero32), {Expr(int64_t{0})}),
            ir::IfThenElse::make(was_last, ir::Store::make(arrivals_, zero32, {tile})),
        }));
    Stmt sum = ir::For::make(
        r, Expr(int64_t{0}), Expr(regs_), ir::ForKind::kUnrolled,
        ir::Seq::make({ir::Store::make(acc, Expr(0.0f), {r}),
                       ir::For::make(s, Expr(int64_t{0}), Expr(splits_), ir::ForKind::kSerial,
                                     ir::Store::make(acc, acc.load({r}) +
                                                              partials_.load({slot(s, r)}),
                                                     {r}))}));
    Expr last = last_.load({Expr(int64_t{0})}) == one32;
    if (holds.defined()) last = last && holds;
    return ir::Seq::make({
        ir::Barrier::make(),
        count,
        ir::Barrier::make(),
        ir::IfThenElse::make(last, ir::Seq::make({fence(), sum, std::move(store)})),
    });
  }

 private:
  Expr slot(const Var& tid, const Expr& tile, const Expr& s, const Expr& r) const {
    return ((tile * splits_ + s) * regs_ + r) * threads_ + tid;
  }

  int64_t splits_ = 1, regs_ = 0, threads_ = 0;
  Buffer partials_, arrivals_, last_, arrived_;
};

// Split-K in a GEMM space: the parameter split_k (1, 2, 4, 8), valid where the split tiles stay
// within 2 * fill blocks per SM and every split is 2 slices deep or more (which also bounds the
// partials' memory), and preferred (kFast) at 1 or at the split that fills the SMs with one block
// each (fill 1), or with 1, 2, 4 ... 2 * fill blocks each. blocks(c) and slices(c) are config c's
// output tiles and K slices (0 without a problem: no split). Returns the split that fills the
// SMs: the largest keeping the blocks within `fill` per SM and every split 4 slices deep, 1 where
// the tiles fill the SMs. A tensor-core block keeps its SM's matrix units busy alone (fill 1);
// the SIMT GEMM's smaller blocks want two per SM, and more of them spread more evenly.
inline std::function<int64_t(const tune::Config&)> split_k_choices(
    tune::Space& s, int64_t sm_count, std::function<int64_t(const tune::Config&)> blocks,
    std::function<int64_t(const tune::Config&)> slices, int64_t fill = 1) {
  s.param("split_k", {1, 2, 4, 8});
  auto fits = [=](const tune::Config& c, int64_t split, int64_t per_split, int64_t per_sm) {
    const int64_t n = blocks(c);
    return n > 0 && n * split <= per_sm * sm_count && slices(c) >= per_split * split;
  };
  auto split_filling = [=](const tune::Config& c, int64_t per_sm) {
    int64_t best = 1;
    for (int64_t k : {2, 4, 8})
      if (fits(c, k, 4, per_sm)) best = k;
    return best;
  };
  s.rule("split-K only where the split tiles stay within " + std::to_string(2 * fill) +
             " blocks per SM and each split is 2 slices deep or more",
         [=](const tune::Config& c) {
           return c["split_k"] == 1 || fits(c, c["split_k"], 2, 2 * fill);
         });
  s.prefer("no split, or a split that fills the SMs", [=](const tune::Config& c) {
    if (c["split_k"] == 1) return true;
    for (int64_t per_sm = 1; per_sm <= (fill > 1 ? 2 * fill : 1); per_sm *= 2)
      if (c["split_k"] == split_filling(c, per_sm)) return true;
    return false;
  });
  return [=](const tune::Config& c) { return split_filling(c, fill); };
}

// The default of a GEMM space: the largest tile of by_size (largest first) that still gives
// every SM a block, else the smallest, with the split that fills the SMs.
inline tune::Config default_gemm_config(
    const tune::Space& s, const std::vector<tune::Config>& by_size, int64_t sm_count,
    const std::function<int64_t(const tune::Config&)>& blocks,
    const std::function<int64_t(const tune::Config&)>& split_of) {
  tune::Config tile = first_filling_config(s, by_size, static_cast<int>(sm_count), blocks);
  tile.set("split_k", split_of(tile));
  return tile;
}

}  // namespace split_k

using split_k::default_gemm_config;
using split_k::split_k_choices;
using split_k::SplitK;

}  // namespace loom::ops
