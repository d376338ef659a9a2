// matmul on CUDA GPUs: f32 SIMT GEMM after Hidet's matmul template. A block computes a BM x BN
// tile of C with the task mapping
//   spatial(warps_m, warps_n) * repeat(outer_m, outer_n) * spatial(lanes_m, lanes_n)
//     * repeat(inner_m, inner_n)
// from its threads to the tile's elements (warps, then each warp's lanes, then each lane's
// register tile), over K in block_k-deep slices that go global -> registers -> shared memory,
// two shared buffers deep so that one barrier per slice suffices and the global loads of the
// next slice are in flight while the current one is multiplied. Where the output tiles are too
// few to fill the SMs and K is deep (BERT's 128-row products), split_k blocks share each tile's K
// slices and sum their partials (ops/split_k_cuda.hpp).

#include "ops/matmul_cuda.hpp"

#include <algorithm>
#include <numeric>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/cuda_common.hpp"
#include "ops/gemm_problem.hpp"
#include "ops/split_k_cuda.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// The levels of a config, and what follows from them.
struct SimtTiles {
  int64_t warps_m, warps_n, lanes_m, lanes_n, outer_m, outer_n, inner_m, inner_n, block_k, split_k;
  int warp_size;

  SimtTiles(const tune::Config& c, int warp)
      : warps_m(c["warps_m"]),
        warps_n(c["warps_n"]),
        lanes_m(c["lanes_m"]),
        lanes_n(warp / c["lanes_m"]),
        outer_m(c["outer_m"]),
        outer_n(c["outer_n"]),
        inner_m(c["inner_m"]),
        inner_n(c["inner_n"]),
        block_k(c["block_k"]),
        split_k(c["split_k"]),
        warp_size(warp) {}

  int64_t threads() const { return warps_m * warps_n * warp_size; }
  // The register tile of one thread.
  int64_t tm() const { return outer_m * inner_m; }
  int64_t tn() const { return outer_n * inner_n; }
  // The tiles of one warp and one block.
  int64_t warp_m() const { return outer_m * lanes_m * inner_m; }
  int64_t warp_n() const { return outer_n * lanes_n * inner_n; }
  int64_t bm() const { return warps_m * warp_m(); }
  int64_t bn() const { return warps_n * warp_n(); }
  // A's slice is stored k-major with rows padded by 4 elements: the threads that store one
  // column of the slice (consecutive k) then hit different banks.
  int64_t a_stride() const { return bm() + 4; }
  int64_t shared_bytes() const { return 2 * block_k * (a_stride() + bn()) * 4; }
  // How the threads load a rows x cols slice of a row-major operand: spatial(threads / lanes,
  // lanes) with lanes along the contiguous cols (coalesced), repeated over the rest.
  int64_t load_lanes(int64_t cols) const { return std::gcd(threads(), cols); }
  bool loads_divide(int64_t rows, int64_t cols) const {
    return rows * cols >= threads() && rows % (threads() / load_lanes(cols)) == 0;
  }
  int64_t staged(int64_t rows, int64_t cols) const { return rows * cols / threads(); }
  // Registers a thread needs: accumulators, fragments, staged loads, about 24 for addresses.
  int64_t registers() const {
    return tm() * tn() + tm() + tn() + staged(bm(), block_k) + staged(block_k, bn()) + 24;
  }
};

class SimtGemm {
 public:
  SimtGemm(const TemplateContext& ctx, const GemmProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), tiles_(c, gpu_properties(ctx.target).warp_size) {
    const int64_t gb = p.b_batched ? p.G : 1;
    a_ = Buffer::make(ctx.name + "_A", DType::f32(), {Expr(p.G), Expr(p.M), Expr(p.K)});
    b_ = Buffer::make(ctx.name + "_B", DType::f32(), {Expr(gb), Expr(p.K), Expr(p.N)});
    c_ = Buffer::make(ctx.name + "_C", DType::f32(), {Expr(p.G), Expr(p.M), Expr(p.N)});
    const SimtTiles& t = tiles_;
    // A slice is stored transposed (k-major), so that a lane reads its rows of A for one k
    // as consecutive elements, as it reads B's columns.
    a_shared_ = Buffer::make(ctx.name + "_As", DType::f32(),
                             {Expr(int64_t{2}), Expr(t.block_k), Expr(t.a_stride())},
                             ir::MemoryScope::kShared);
    b_shared_ =
        Buffer::make(ctx.name + "_Bs", DType::f32(),
                     {Expr(int64_t{2}), Expr(t.block_k), Expr(t.bn())}, ir::MemoryScope::kShared);
    a_stage_ = local("a_stage", t.staged(t.bm(), t.block_k));
    b_stage_ = local("b_stage", t.staged(t.block_k, t.bn()));
    acc_ = local("acc", t.tm() * t.tn());
    a_frag_ = local("a_frag", t.tm());
    b_frag_ = local("b_frag", t.tn());
    split_ = SplitK(ctx.name, p.G * ceil_div(p.M, t.bm()) * ceil_div(p.N, t.bn()), t.split_k,
                    t.tm() * t.tn(), t.threads());
  }

  std::vector<ir::Param> params() const { return {a_, b_, c_}; }

  // Stage "blocks over tiles": spatial(G, tiles_m, tiles_n, split_k) over the blocks, then the
  // block's threads.
  Stmt kernel() {
    const SimtTiles& t = tiles_;
    const int64_t tiles_m = ceil_div(p_.M, t.bm()), tiles_n = ceil_div(p_.N, t.bn());
    auto blocks = schedule::spatial(p_.G, tiles_m, tiles_n, t.split_k);
    LOOM_CHECK(blocks.ok(), blocks.status().ToString());
    Var block("block"), tid("tid");
    Stmt body = blocks->on(block, [&](const std::vector<Expr>& tile) {
      g_ = tile[0];
      gb_ = p_.b_batched ? tile[0] : Expr(int64_t{0});
      m0_ = tile[1] * t.bm();
      n0_ = tile[2] * t.bn();
      tile_id_ = (tile[0] * tiles_m + tile[1]) * tiles_n + tile[2];
      split_index_ = tile[3];
      return block_tile(tid);
    });
    return split_.around_launch(gpu_launch(block, blocks->num_workers(), tid, t.threads(), body));
  }

 private:
  Buffer local(const std::string& what, int64_t n) const {
    return Buffer::make(ctx_.name + "_" + what, DType::f32(), {Expr(n)}, ir::MemoryScope::kLocal);
  }

  // The thread's place: spatial(warps_m, warps_n) over the warps, spatial(lanes_m, lanes_n) over
  // a warp's lanes; its register tile's first row and column within the block tile.
  void place_thread(const Var& tid) {
    const SimtTiles& t = tiles_;
    auto warps = schedule::spatial(t.warps_m, t.warps_n);
    auto lanes = schedule::spatial(t.lanes_m, t.lanes_n);
    LOOM_CHECK(warps.ok() && lanes.ok(), "SIMT GEMM thread mappings");
    const Expr warp = tid / Expr(int64_t{t.warp_size}), lane = tid % Expr(int64_t{t.warp_size});
    Expr wm, wn, lm, ln;
    warps->on(warp, [&](const std::vector<Expr>& w) {
      wm = w[0];
      wn = w[1];
      return ir::Evaluate::make(Expr(int64_t{0}));
    });
    lanes->on(lane, [&](const std::vector<Expr>& l) {
      lm = l[0];
      ln = l[1];
      return ir::Evaluate::make(Expr(int64_t{0}));
    });
    row0_ = wm * t.warp_m() + lm * t.inner_m;
    col0_ = wn * t.warp_n() + ln * t.inner_n;
  }

  // The register tile, repeat(outer_m, outer_n) * repeat(inner_m, inner_n) within the thread:
  // register (a, b)'s offset from the thread's first row and column. Its layout (a * tn + b)
  // mirrors the mapping.
  int64_t row_offset(int64_t a) const {
    return a / tiles_.inner_m * tiles_.lanes_m * tiles_.inner_m + a % tiles_.inner_m;
  }
  int64_t col_offset(int64_t b) const {
    return b / tiles_.inner_n * tiles_.lanes_n * tiles_.inner_n + b % tiles_.inner_n;
  }
  std::vector<std::vector<int64_t>> registers() const {
    auto regs = schedule::repeat(tiles_.outer_m, tiles_.outer_n) *
                schedule::repeat(tiles_.inner_m, tiles_.inner_n);
    LOOM_CHECK(regs.ok(), regs.status().ToString());
    return regs->tasks_of(0);
  }

  // The thread's elements of a rows x cols slice in the load mapping: fn(row, col, register).
  Stmt slice_elements(const Var& tid, int64_t rows, int64_t cols,
                      const std::function<Stmt(const Expr&, const Expr&, int64_t)>& fn) const {
    const int64_t lanes = tiles_.load_lanes(cols), lane_rows = tiles_.threads() / lanes;
    auto threads = schedule::spatial(lane_rows, lanes);
    auto steps = schedule::repeat(rows / lane_rows, cols / lanes);
    LOOM_CHECK(threads.ok() && steps.ok(), "SIMT GEMM load mappings");
    return threads->on(tid, [&](const std::vector<Expr>& w) {
      std::vector<Stmt> s;
      int64_t r = 0;
      for (const std::vector<int64_t>& step : steps->tasks_of(0))
        s.push_back(fn(w[0] + step[0] * lane_rows, w[1] + step[1] * lanes, r++));
      return ir::Seq::make(std::move(s));
    });
  }

  // Stage "load A and B to registers": the kt-th K slice; past K reads zero, past M or N reads
  // the last row or column (never stored).
  Stmt load_global(const Var& tid, const Expr& kt) const {
    const SimtTiles& t = tiles_;
    const Expr k0 = kt * t.block_k;
    auto clamp = [](const Expr& e, int64_t extent, bool needed) {
      return needed ? ir::min(e, Expr(extent - 1)) : e;
    };
    const bool k_tail = p_.K % t.block_k != 0;
    Stmt a = slice_elements(tid, t.bm(), t.block_k, [&](const Expr& i, const Expr& k, int64_t r) {
      Expr v = a_.load({g_, clamp(m0_ + i, p_.M, p_.M % t.bm() != 0), clamp(k0 + k, p_.K, k_tail)});
      if (k_tail) v = ir::select(k0 + k < p_.K, v, Expr(0.0f));
      return ir::Store::make(a_stage_, v, {Expr(r)});
    });
    Stmt b = slice_elements(tid, t.block_k, t.bn(), [&](const Expr& k, const Expr& j, int64_t r) {
      Expr v =
          b_.load({gb_, clamp(k0 + k, p_.K, k_tail), clamp(n0_ + j, p_.N, p_.N % t.bn() != 0)});
      if (k_tail) v = ir::select(k0 + k < p_.K, v, Expr(0.0f));
      return ir::Store::make(b_stage_, v, {Expr(r)});
    });
    return ir::Seq::make({a, b});
  }

  // Stage "store A and B to shared": the staged slice into shared buffer `buf`.
  Stmt store_shared(const Var& tid, const Expr& buf) const {
    const SimtTiles& t = tiles_;
    Stmt a = slice_elements(tid, t.bm(), t.block_k, [&](const Expr& i, const Expr& k, int64_t r) {
      return ir::Store::make(a_shared_, a_stage_.load({Expr(r)}), {buf, k, i});
    });
    Stmt b = slice_elements(tid, t.block_k, t.bn(), [&](const Expr& k, const Expr& j, int64_t r) {
      return ir::Store::make(b_shared_, b_stage_.load({Expr(r)}), {buf, k, j});
    });
    return ir::Seq::make({a, b});
  }

  // Stage "multiply-accumulate": for each k of the slice, the fragments of A and B to registers
  // and the outer product into the accumulators.
  Stmt multiply(const Expr& buf) const {
    const SimtTiles& t = tiles_;
    Var kk("kk");
    std::vector<Stmt> s;
    for (int64_t a = 0; a < t.tm(); ++a)
      s.push_back(
          ir::Store::make(a_frag_, a_shared_.load({buf, kk, row0_ + row_offset(a)}), {Expr(a)}));
    for (int64_t b = 0; b < t.tn(); ++b)
      s.push_back(
          ir::Store::make(b_frag_, b_shared_.load({buf, kk, col0_ + col_offset(b)}), {Expr(b)}));
    for (const std::vector<int64_t>& r : registers()) {
      Expr at(r[0] * t.tn() + r[1]);
      s.push_back(ir::Store::make(
          acc_, ir::fma(a_frag_.load({Expr(r[0])}), b_frag_.load({Expr(r[1])}), acc_.load({at})),
          {at}));
    }
    return ir::For::make(kk, Expr(int64_t{0}), Expr(t.block_k), ir::ForKind::kUnrolled,
                         ir::Seq::make(std::move(s)));
  }

  // Stage "store C": the accumulators to C, final values, guarded past M and N; a register
  // row's inner_n adjacent columns (repeat(inner_m, inner_n)'s innermost) stored together, as
  // one vector where N allows (store_accumulators).
  Stmt store_c() const {
    const SimtTiles& t = tiles_;
    std::vector<Stmt> s;
    for (const std::vector<int64_t>& r : registers()) {
      if (r[1] % t.inner_n != 0) continue;  // stored with the first column of its run
      Expr row = m0_ + row0_ + row_offset(r[0]), col = n0_ + col0_ + col_offset(r[1]);
      s.push_back(store_accumulators({c_, p_.M, p_.N, nullptr}, g_, row, col, acc_,
                                     r[0] * t.tn() + r[1], static_cast<int>(t.inner_n),
                                     p_.M % t.bm() != 0, p_.N % t.bn() != 0));
    }
    return ir::Seq::make(std::move(s));
  }

  // One block's tile: zero the accumulators, fill shared buffer 0 with the first slice of the
  // block's range, then per K slice prefetch the next one to registers, multiply the current one,
  // store the next one to the other buffer. A split past the end of K (count 0 or less) loads
  // nothing and adds zeros to the tile.
  Stmt block_tile(const Var& tid) {
    const SimtTiles& t = tiles_;
    place_thread(tid);
    const int64_t slices = ceil_div(p_.K, t.block_k);
    const auto [first, count] = split_.slices_of(split_index_, slices);
    std::vector<Stmt> zero;
    for (int64_t i = 0; i < t.tm() * t.tn(); ++i)
      zero.push_back(ir::Store::make(acc_, Expr(0.0f), {Expr(i)}));
    Var kt("kt");
    Expr has_next = kt + 1 < count;
    Stmt step = ir::Seq::make({
        ir::IfThenElse::make(has_next, load_global(tid, first + kt + 1)),
        multiply(kt % 2),
        ir::IfThenElse::make(has_next, store_shared(tid, (kt + 1) % 2)),
        ir::Barrier::make(),
    });
    Stmt main_loop = ir::Seq::make({
        load_global(tid, first),
        store_shared(tid, Expr(int64_t{0})),
        ir::Barrier::make(),
        ir::For::make(kt, Expr(int64_t{0}), count, ir::ForKind::kSerial, step),
    });
    if (t.split_k > 1) main_loop = ir::IfThenElse::make(count > int64_t{0}, main_loop);
    Stmt body = ir::Seq::make({
        ir::Seq::make(std::move(zero)),
        main_loop,
        split_.reduce(tid, tile_id_, split_index_, acc_, store_c()),
    });
    for (const Buffer& b : {a_frag_, b_frag_, a_stage_, b_stage_, acc_, b_shared_, a_shared_})
      body = ir::Allocate::make(b, body);
    return split_.around_block(body);
  }

  const TemplateContext& ctx_;
  GemmProblem p_;
  SimtTiles tiles_;
  Buffer a_, b_, c_, a_shared_, b_shared_, a_stage_, b_stage_, acc_, a_frag_, b_frag_;
  SplitK split_;
  Expr g_, gb_, m0_, n0_, row0_, col0_, tile_id_, split_index_;
};

tune::Space simt_gemm_space(const TemplateContext& ctx) {
  const GpuProperties p = gpu_properties(ctx.target);
  const int warp = p.warp_size;
  std::optional<GemmProblem> problem = gemm_problem(ctx);
  tune::Space s;
  s.param("warps_m", {1, 2, 4})
      .param("warps_n", {1, 2, 4})
      .param("lanes_m", {warp / 8, warp / 4})
      .param("outer_m", {1, 2})
      .param("outer_n", {1, 2})
      .param("inner_m", {2, 4})
      .param("inner_n", {2, 4})
      .param("block_k", {8, 16});
  auto tiles = [warp](const tune::Config& c) { return SimtTiles(c, warp); };
  s.rule("threads per block within the device limit",
         [=](const tune::Config& c) { return tiles(c).threads() <= p.max_threads_per_block; });
  s.rule("two K slices of A and B fit the (opt-in) shared memory of a block",
         [=](const tune::Config& c) {
           return tiles(c).shared_bytes() <= p.shared_memory_per_block_optin;
         });
  s.rule("registers per thread within the limits", [=](const tune::Config& c) {
    const SimtTiles t = tiles(c);
    return t.registers() <= p.max_registers_per_thread &&
           t.registers() * t.threads() <= p.registers_per_block;
  });
  s.rule("the threads divide the loads of a K slice", [=](const tune::Config& c) {
    const SimtTiles t = tiles(c);
    return t.loads_divide(t.bm(), t.block_k) && t.loads_divide(t.block_k, t.bn());
  });
  auto blocks = [=](const tune::Config& c) {
    const SimtTiles t = tiles(c);
    return problem ? problem->G * ceil_div(problem->M, t.bm()) * ceil_div(problem->N, t.bn()) : 0;
  };
  auto split_of = split_k_choices(
      s, p.sm_count, blocks,
      [=](const tune::Config& c) { return problem ? ceil_div(problem->K, c["block_k"]) : 0; },
      /*fill=*/2);
  // kFast: register tiles of 16 and more elements in blocks of 4 to 8 warps.
  s.prefer("register tile of 16+ elements",
           [=](const tune::Config& c) { return tiles(c).tm() * tiles(c).tn() >= 16; });
  s.prefer("4 to 8 warps per block", [](const tune::Config& c) {
    const int64_t w = c["warps_m"] * c["warps_n"];
    return w >= 4 && w <= 8;
  });

  // Default: the largest block tile of these (128x128, 64x64, 32x32) that still gives every SM
  // a block, else the smallest, with the split that fills the SMs two blocks each.
  auto config = [](int64_t wm, int64_t wn, int64_t lm, int64_t om, int64_t on, int64_t im,
                   int64_t in) {
    return tune::Config({{"warps_m", wm},
                         {"warps_n", wn},
                         {"lanes_m", lm},
                         {"outer_m", om},
                         {"outer_n", on},
                         {"inner_m", im},
                         {"inner_n", in},
                         {"block_k", 8},
                         {"split_k", 1}});
  };
  const std::vector<tune::Config> by_size = {config(4, 2, warp / 8, 2, 2, 4, 4),
                                             config(2, 2, warp / 8, 2, 1, 4, 4),
                                             config(2, 2, warp / 8, 1, 1, 4, 2)};
  s.default_config(default_gemm_config(s, by_size, p.sm_count, blocks, split_of));
  return s;
}

absl::StatusOr<ScheduledKernel> build_simt_gemm(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<GemmProblem> p = gemm_problem(ctx);
  if (!p)
    return absl::InvalidArgumentError("CUDA SIMT GEMM template does not apply to " + ctx.name);
  SimtGemm gemm(ctx, *p, c);
  Stmt body = gemm.kernel();
  return kernel_of(ctx.name, gemm.params(), body);
}

}  // namespace

ScheduleTemplate matmul_cuda_template() {
  return cuda_template(
      "cuda_simt_gemm",
      [](const TemplateContext& ctx) {
        return ctx.target.is_cuda() && ctx.output.dtype == DType::f32() &&
               gemm_problem(ctx).has_value();
      },
      simt_gemm_space, build_simt_gemm);
}

}  // namespace loom::ops
