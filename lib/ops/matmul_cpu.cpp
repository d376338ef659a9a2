// matmul on the CPU: GEMM over B packed into panels of NR columns, a register-tiled micro-kernel
// (broadcast A, vector FMA with a B panel row), blocking over K/M/N, and tiles run in parallel.

#include <algorithm>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/gemm_problem.hpp"
#include "ops/matmul_cpu.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// How many k steps ahead a micro-kernel that streams its B panel asks for the panel's rows
// (prefetcht0). The panel advances 4 lines per step with 6x4 tiles, about 12 cycles: 8 steps
// cover an L2 hit's latency with room to spare. 1024^3 at one thread, 6x4 tiles, 35-block row
// tiles, interleaved with oneDNN: 2 steps ahead 0.969 of oneDNN, 4 0.971, 8 0.980.
constexpr int64_t kStreamAhead = 8;

// f32 values per 64-byte cache line.
constexpr int64_t kFloatsPerLine = 16;

// One GEMM kernel for one config: the names below follow the classic blocked GEMM
// (mr x NR register tile, kc-deep panels, mc x nc tiles of C per parallel task). With
// "stream_b" 0, a kc-deep slice of a B panel stays in L1 while the tile's row blocks pass over
// it; with 1, each row block streams the slice from L2 (prefetched into L1 kStreamAhead steps
// ahead) while its mr rows of A stay in L1, so kc can span all of K and each C element is
// loaded and stored once.
class GemmKernel {
 public:
  GemmKernel(const TemplateContext& ctx, const GemmProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), lanes_(ctx.target.vector_lanes_f32()) {
    mr_ = c["mr"];
    nv_ = c["nv"];
    nr_ = nv_ * lanes_;
    kc_ = std::min<int64_t>(c["kc"], p.K);
    prefetch_ = c.has("prefetch") && c["prefetch"] == 1;
    stream_b_ = c.has("stream_b") && c["stream_b"] == 1;
    panels_ = ceil_div(p.N, nr_);
    const TileSplit split = balance_tiles(p.G, ceil_div(p.M, mr_), panels_, c["mc_tiles"],
                                          c["nc_panels"], num_threads());
    mc_ = split.rows_per_tile * mr_;
    nc_ = split.panels_per_tile * nr_;
    int64_t gb = p.b_batched ? p.G : 1;
    a_ = Buffer::make(ctx.name + "_A", DType::f32(), {Expr(p.G), Expr(p.M), Expr(p.K)});
    b_ = Buffer::make(ctx.name + "_B", DType::f32(), {Expr(gb), Expr(p.K), Expr(p.N)});
    packed_b_ = Buffer::make(ctx.name + "_Bp", DType::f32(),
                             {Expr(gb), Expr(panels_), Expr(p.K), Expr(nr_)});
    c_ = Buffer::make(ctx.name + "_C", DType::f32(), {Expr(p.G), Expr(p.M), Expr(p.N)});
  }

  std::vector<int64_t> packed_shape() const {
    return {p_.b_batched ? p_.G : 1, panels_, p_.K, nr_};
  }

  // Stage "pack B": Bp[g, p, k, v] = B[g, k, p * NR + v], zero past column N.
  Stmt pack_b() const {
    Var g("g"), panel("panel"), k("k"), v("v");
    int64_t gb = p_.b_batched ? p_.G : 1;
    Expr col = panel * nr_ + v;
    Stmt copy = ir::Store::make(
        packed_b_, ir::select(col < p_.N, b_.load({g, k, ir::min(col, Expr(p_.N - 1))}), Expr(0.0f)),
        {g, panel, k, v});
    Stmt inner = ir::For::make(v, 0, nr_, ir::ForKind::kSerial, copy);
    return ir::For::make(
        g, 0, gb, ir::ForKind::kSerial,
        ir::For::make(panel, 0, panels_, ir::ForKind::kParallel,
                      ir::For::make(k, 0, p_.K, ir::ForKind::kSerial, inner)));
  }

  // Stage "multiply": the G x tiles_m x tiles_n tiles of C are the workers of a spatial task
  // mapping, run by a parallel loop; each tile is blocked over K.
  Stmt multiply() const {
    int64_t tiles_m = ceil_div(p_.M, mc_), tiles_n = ceil_div(p_.N, nc_);
    auto tiles = schedule::spatial(p_.G, tiles_m, tiles_n);
    LOOM_CHECK(tiles.ok(), tiles.status().ToString());
    Var t("tile");
    Stmt body = tiles->on(t, [&](const std::vector<Expr>& tile) {
      return multiply_tile(tile[0], tile[1], tile[2], tiles_m, tiles_n);
    });
    return ir::For::make(t, 0, tiles->num_workers(), ir::ForKind::kParallel, body);
  }

  const Buffer& a() const { return a_; }
  const Buffer& b() const { return b_; }
  const Buffer& packed_b() const { return packed_b_; }
  const Buffer& c() const { return c_; }

 private:
  Expr vec(const Expr& base) const { return ir::Ramp::make(base, Expr(1), lanes_); }

  // Where a micro-kernel's k step prefetches: column col of row k0 + k of a B panel.
  struct BSlice {
    Expr panel, k0, col;
  };

  // C[g, i0 : i0+rows, panel*NR : +cols] (+)= A[g, i0 : i0+rows, k0 : k0+klen] x Bp[gb, panel,
  // k0 : k0+klen, :]. The accumulator tile is a local buffer with constant offsets only, which
  // LLVM keeps in vector registers; its layout mirrors the task mapping repeat(rows, nv). A tile
  // of few rows keeps several such sets, one per k step in turn (accumulator_sets), and adds
  // them up before C: a matrix-vector product's one row of 3 vectors has 12 FMA chains then, not
  // 3, each waiting out the FMA latency.
  Stmt micro_kernel(int64_t rows, int64_t cols, Expr g, Expr gb, Expr i0, Expr panel, Expr k0,
                    Expr klen, Expr first, Expr last,
                    std::optional<BSlice> prefetch = std::nullopt) const {
    const int64_t sets = accumulator_sets(rows * nv_, nv_, ctx_.target.vector_registers());
    Buffer acc = Buffer::make(ctx_.name + "_acc", DType::f32(), {Expr(sets * rows * nr_)},
                              ir::MemoryScope::kLocal);
    auto tile = schedule::repeat(rows, nv_);
    LOOM_CHECK(tile.ok(), tile.status().ToString());
    std::vector<std::vector<int64_t>> cells = tile->tasks_of(0);
    auto acc_at = [&](int64_t i, int64_t v, int64_t set = 0) {
      return vec(Expr((set * rows + i) * nr_ + v * lanes_));
    };
    Expr col0 = panel * nr_;

    // The last K block stores final values (marked for fusion), the others partial sums.
    ExtraSets extra = extra_sets(acc, rows * nv_, lanes_, sets);
    std::vector<Stmt> zero = extra.zero, load = extra.zero, store, store_final;
    for (const auto& cell : cells) {
      int64_t i = cell[0], v = cell[1];
      zero.push_back(ir::Store::make(acc, ir::Broadcast::make(Expr(0.0f), lanes_), {acc_at(i, v)}));
      // Whole vectors of C move as vectors; a partial last panel moves element by element.
      int64_t valid = std::clamp<int64_t>(cols - v * lanes_, 0, lanes_);
      if (valid == lanes_) {
        load.push_back(ir::Store::make(acc, c_.load({g, i0 + i, vec(col0 + v * lanes_)}),
                                       {acc_at(i, v)}));
        store.push_back(ir::Store::make(c_, acc.load({acc_at(i, v)}),
                                        {g, i0 + i, vec(col0 + v * lanes_)}));
        store_final.push_back(ir::Store::make(c_, ir::final_value(acc.load({acc_at(i, v)})),
                                              {g, i0 + i, vec(col0 + v * lanes_)}));
      } else {
        for (int64_t l = 0; l < lanes_; ++l) {
          Expr at = Expr(i * nr_ + v * lanes_ + l);
          load.push_back(ir::Store::make(
              acc, l < valid ? c_.load({g, i0 + i, col0 + v * lanes_ + l}) : Expr(0.0f), {at}));
          if (l < valid) {
            store.push_back(ir::Store::make(c_, acc.load({at}), {g, i0 + i, col0 + v * lanes_ + l}));
            store_final.push_back(ir::Store::make(c_, ir::final_value(acc.load({at})),
                                                  {g, i0 + i, col0 + v * lanes_ + l}));
          }
        }
      }
    }
    // One k step into accumulator set `set`: NR/lanes vectors of the B panel row, one broadcast
    // of A per row, rows x nv FMAs.
    auto step = [&](Expr k, int64_t set) {
      std::vector<Var> b_rows;
      for (int64_t v = 0; v < nv_; ++v)
        b_rows.push_back(Var("b" + std::to_string(v), DType::f32().with_lanes(lanes_)));
      std::vector<Stmt> fma;
      for (const auto& cell : cells) {
        int64_t i = cell[0], v = cell[1];
        Expr a = ir::Broadcast::make(a_.load({g, i0 + i, k0 + k}), lanes_);
        fma.push_back(ir::Store::make(acc, ir::fma(a, b_rows[v], acc.load({acc_at(i, v, set)})),
                                      {acc_at(i, v, set)}));
      }
      // Streaming B: the panel's row kStreamAhead steps ahead into L1, one prefetch per 64-byte
      // line of the row (a row of 3 AVX2 vectors spans at most 2 lines), before the first rows'
      // FMAs. One per vector cost a 3-vector AVX2 row 3 load-port slots per step where 2
      // suffice: a 1-row tile (1x1000x2048, one thread, Zen 2) ran 0.79-0.80 of oneDNN's
      // sgemm with one per vector, 0.90-0.92 with one per line.
      if (stream_b_) {
        // Unclamped: past K the prefetch reaches into the next panel or past the buffer,
        // which a prefetch may (a clamp cost 5 integer instructions per step).
        Expr row = k0 + k + kStreamAhead;
        const int64_t lines = ceil_div(nr_, kFloatsPerLine);
        for (int64_t l = lines - 1; l >= 0; --l)
          fma.insert(fma.begin() + std::min<int64_t>(l, rows - 1) * nv_,
                     ops::prefetch(packed_b_, {gb, panel, row, Expr(l * kFloatsPerLine)}, true));
      }
      if (prefetch) {
        // Unclamped as well: a next K block shorter than this one ends before k does.
        fma.insert(fma.begin(), ops::prefetch(packed_b_, {gb, prefetch->panel, prefetch->k0 + k,
                                                          prefetch->col}));
      }
      Stmt body = ir::Seq::make(std::move(fma));
      for (int64_t v = nv_ - 1; v >= 0; --v)
        body = ir::LetStmt::make(b_rows[v],
                                 packed_b_.load({gb, panel, k0 + k, vec(Expr(v * lanes_))}), body);
      return body;
    };
    Stmt k_loop = k_loop_over_sets("k", klen, sets, step);
    if (sets > 1) k_loop = ir::Seq::make({k_loop, ir::Seq::make(std::move(extra.sum))});
    return ir::Allocate::make(acc,
                              ir::Seq::make({
                                  ir::IfThenElse::make(first, ir::Seq::make(std::move(zero)),
                                                       ir::Seq::make(std::move(load))),
                                  k_loop,
                                  ir::IfThenElse::make(last, ir::Seq::make(std::move(store_final)),
                                                       ir::Seq::make(std::move(store))),
                              }));
  }

  // C tile (tm, tn) of GEMM g, blocked over K: full mr-row blocks of each full panel, then the
  // last tile's partial panel and remaining rows.
  Stmt multiply_tile(Expr g, Expr tm, Expr tn, int64_t tiles_m, int64_t tiles_n) const {
    int64_t panels_per_tile = nc_ / nr_;
    int64_t full_panels = p_.N / nr_;
    int64_t col_tail = p_.N % nr_;
    int64_t row_tail = p_.M % mr_;
    Var kb("kb"), ib("ib"), jp("jp");
    Expr gb = p_.b_batched ? g : Expr(0);
    Expr row0 = tm * mc_;
    Expr k0 = kb * kc_;
    Expr klen = ir::min(Expr(kc_), p_.K - k0);
    Expr first = kb == 0;
    Expr last = kb == ceil_div(p_.K, kc_) - 1;

    Expr panel_begin = tn * panels_per_tile;
    Expr panel_end = ir::min(Expr(full_panels), panel_begin + panels_per_tile);
    auto rows_of_panel = [&](Expr panel, int64_t cols) {
      Expr rows_end = ir::min(Expr(p_.M), row0 + mc_);
      Expr full_blocks = (rows_end - row0) / mr_;
      // With prefetch, row block ib asks for line ib % nv of every k row of the B panel slice
      // the tile multiplies next (next_panel).
      auto fetch = [&](Expr ib_value) -> std::optional<BSlice> {
        if (!prefetch_) return std::nullopt;
        NextPanel next =
            next_panel(panel + 1 < panel_end, last, panel, panel_begin, panels_per_tile, k0, kc_);
        return BSlice{next.panel, next.k0, (ib_value % nv_) * lanes_};
      };
      std::vector<Stmt> s;
      s.push_back(ir::For::make(
          ib, 0, full_blocks, ir::ForKind::kSerial,
          micro_kernel(mr_, cols, g, gb, row0 + ib * mr_, panel, k0, klen, first, last, fetch(ib))));
      if (row_tail)
        s.push_back(ir::IfThenElse::make(
            tm == tiles_m - 1, micro_kernel(row_tail, cols, g, gb, Expr(p_.M - row_tail), panel, k0,
                                            klen, first, last, fetch(full_blocks))));
      return ir::Seq::make(std::move(s));
    };
    std::vector<Stmt> per_k;
    per_k.push_back(ir::For::make(jp, panel_begin, ir::max(panel_end - panel_begin, Expr(0)),
                                  ir::ForKind::kSerial, rows_of_panel(jp, nr_)));
    if (col_tail)
      per_k.push_back(ir::IfThenElse::make(tn == tiles_n - 1,
                                           rows_of_panel(Expr(full_panels), col_tail)));
    return ir::For::make(kb, 0, ceil_div(p_.K, kc_), ir::ForKind::kSerial,
                         ir::Seq::make(std::move(per_k)));
  }

  const TemplateContext& ctx_;
  GemmProblem p_;
  int64_t lanes_, mr_, nv_, nr_, kc_, mc_, nc_, panels_;
  bool prefetch_ = false, stream_b_ = false;
  Buffer a_, b_, packed_b_, c_;
};

tune::Space gemm_space(const TemplateContext& ctx) {
  const Target& t = ctx.target;
  const int64_t lanes = t.vector_lanes_f32();
  const int64_t regs = t.vector_registers();
  const int64_t l1 = t.l1d_bytes(), l2 = t.l2_bytes();
  std::vector<int64_t> mr = {1, 2, 3, 4, 5, 6, 7, 8};
  if (regs >= 32) mr.insert(mr.end(), {10, 12, 14});
  tune::Space s;
  s.param("mr", mr)
      .param("nv", {1, 2, 3, 4})
      .param("kc", {64, 128, 192, 256, 384, 512, 1024})
      .param("mc_tiles", {1, 2, 4, 8, 16, 32, 64})
      .param("nc_panels", {1, 2, 4, 8, 16, 32, 64})
      .param("prefetch", {0, 1})
      .param("stream_b", {0, 1});
  // Accumulators, the B row vectors and one broadcast A value live in vector registers.
  s.rule("register tile fits the vector registers",
         [=](const tune::Config& c) { return c["mr"] * c["nv"] + c["nv"] + 1 <= regs; });
  // A kc-deep slice of one B panel and of the A rows stay in L1 across the k loop; streaming B,
  // the A rows alone, in half of L1 (the other half holds the B lines in flight).
  s.rule("panel slice fits L1", [=](const tune::Config& c) {
    if (c["stream_b"] == 1) return c["kc"] * c["mr"] * 4 <= l1 / 2;
    return (c["kc"] * c["nv"] * lanes + c["kc"] * c["mr"]) * 4 <= l1;
  });
  // The A block (mc x kc) and the B block (kc x nc) of one tile stay in L2.
  s.rule("tile blocks fit L2", [=](const tune::Config& c) {
    int64_t mc = c["mc_tiles"] * c["mr"], nc = c["nc_panels"] * c["nv"] * lanes;
    return (mc * c["kc"] + c["kc"] * nc) * 4 <= l2;
  });
  // kFast: register tiles that use most of the registers, and a few blockings of each.
  s.prefer("register tile uses most registers",
           [=](const tune::Config& c) { return c["mr"] * c["nv"] >= (regs - 4) * 3 / 4; });
  // Row tiles of 8 and more register tiles keep a B panel busy, K blocks of 128. Over the
  // benchmark's 7 shapes at 1 and 2 threads on AVX-512 (14 tunings), kc = 256 and row tiles of
  // 2 register tiles won none (at best they tied within 1%), and measuring them too took 56
  // candidates and 14.4 s for 1024^3 at one thread.
  //
  // Streaming B: one panel per tile, K blocks as deep as the A rows allow in L1 (512 or 1024,
  // the one choice for K <= 512), and tall row tiles that pass over the panel while it is in
  // L2. Interleaved with oneDNN at one thread (medians of 7 rounds, the machine drifting 5%
  // between runs), 6x4 tiles: 1024^3 with kc 1024 and 35-block row tiles 0.97-0.98 of oneDNN,
  // against 0.93-0.94 with the L1 panel slice (kc 128); 128x768x3072 1.00 against 0.95; 512^3
  // 0.98 against 0.96.
  const std::optional<GemmProblem> prob = gemm_problem(ctx);
  const int64_t k_extent = prob ? prob->K : 0;
  s.prefer("blocking near the cache sizes", [=](const tune::Config& c) {
    if (c["stream_b"] == 1)
      return c["nc_panels"] == 1 && c["mc_tiles"] >= 32 &&
             (c["kc"] == 512 || (c["kc"] == 1024 && k_extent > 512));
    return c["kc"] == 128 && c["mc_tiles"] >= 8 && c["mc_tiles"] <= 32 &&
           (c["nc_panels"] == 4 || c["nc_panels"] == 16);
  });
  // Prefetching the next B panel's rows while multiplying this one pays when B does not stay in
  // L2 from one run to the next, and costs nothing measurable when it does (interleaved on the
  // Xeon, fastest of 20 rounds: 128x768x768 with 8x3 tiles, B 2.4 MB, one thread 1.75 ms against
  // 1.85, two threads 0.69 against 0.78; 1024^3 with 6x4 tiles 24.4 against 25.3; 512^3 and
  // 1x1000x2048 tied within 1%).
  // A streamed panel is the tile's only one: there is no next panel to ask for.
  s.prefer("prefetch the next B panel",
           [](const tune::Config& c) { return c["prefetch"] == 1 - c["stream_b"]; });

  // Default: a streamed B panel, one per tile, under 8x3 vector tiles (with 16 registers, the
  // largest tile: 6x2), the deepest kc whose A rows fit half of L1, and the tallest row tiles
  // that fit L2. Interleaved with oneDNN over the benchmark's 7 shapes (medians of 7 rounds), it
  // beat the former default (14x2 tiles holding a kc = 256 slice of the panel in L1) on all 7 at
  // one thread, 0.94-1.04 of oneDNN against 0.90-1.03, and on 6 of 7 at two, 0.86-1.02 against
  // 0.69-0.98 (257x129x511: 0.99 against 0.69; it lost 512^3, 0.86 against 0.90). The 16-register
  // choice is not measured: this machine has AVX-512.
  tune::Config best;
  if (regs >= 32) {
    best.set("mr", 8);
    best.set("nv", 3);
  } else {
    int64_t best_acc = -1;
    for (int64_t m : mr)
      for (int64_t nv : {2, 3, 1, 4})
        if (m * nv + nv + 1 <= regs && m * nv > best_acc) {
          best_acc = m * nv;
          best.set("mr", m);
          best.set("nv", nv);
        }
  }
  best.set("stream_b", 1);
  best.set("prefetch", 0);
  best.set("nc_panels", 1);
  best.set("mc_tiles", 1);
  for (int64_t kc : {1024, 512, 384, 256, 192, 128, 64}) {
    best.set("kc", kc);
    if (s.broken_rules(best).empty()) break;
  }
  for (int64_t mc : {32, 16, 8, 4, 2, 1}) {
    best.set("mc_tiles", mc);
    if (s.broken_rules(best).empty()) break;
  }
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_gemm(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<GemmProblem> p = gemm_problem(ctx);
  if (!p) return absl::InvalidArgumentError("gemm template does not apply to " + ctx.name);
  GemmKernel k(ctx, *p, c);
  return kernel_with_packed_input(ctx, 1, {k.a(), k.b(), k.c()}, k.packed_b(), k.pack_b(),
                                  k.multiply(), k.packed_shape());
}

}  // namespace

ScheduleTemplate matmul_cpu_template() {
  ScheduleTemplate t;
  t.name = "gemm_packed_b";
  t.target_kind = Target::Kind::kCpu;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && ctx.output.dtype == DType::f32() && gemm_problem(ctx).has_value();
  };
  t.space = gemm_space;
  t.build = build_gemm;
  return t;
}

}  // namespace loom::ops
