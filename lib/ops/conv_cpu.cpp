// conv2d on the CPU. Four templates, tried in order:
//  - conv2d_1x1_gemm: out[n] (O x P) = W (O x C) x x[n] (C x P), a GEMM whose register tile is
//    mr output channels x nv vectors of pixels, weights packed at compile time into mr-row panels;
//  - conv2d_depthwise: one channel per group, vectorized over output width from a zero-padded
//    (and, for strides > 1, de-interleaved) copy of the input rows;
//  - conv2d_winograd: 3x3 stride-1 convs in NCHW{v}c in and out (v the vector width), by
//    Winograd's F(2x2, 3x3): 16 GEMMs over transformed input tiles and weights (transformed
//    and packed at compile time), 2.25x fewer multiplies than the direct method; the layout
//    assignment offers it the blocked layouts, where the transforms work on vectors of channels;
//  - conv2d_direct: the general case, a register tile of ow_block output pixels x oc_vectors
//    vectors of output channels, weights packed into oc blocks (the NCHWc weight layout), input
//    read through its layout (through a zero-padded copy when the conv pads). It also takes its
//    input and output in other layouts (NCHW8c, NCHW16c, NHWC, ...): the layout assignment offers
//    it channel-blocked ones, where output channels are contiguous and the stores dense.

#include "ops/conv_cpu.hpp"
#include "ops/template_util.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "loom/schedule/task_mapping.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::ForKind;
using ir::Stmt;
using ir::Var;

// One conv2d node with static shapes, in the names of the op's definition.
struct ConvProblem {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  int64_t sh, sw, dh, dw, pt, pl, pb, pr, groups;
  int64_t Cg() const { return C / groups; }
  int64_t Og() const { return O / groups; }
  int64_t P() const { return OH * OW; }  // output pixels per plane
  bool padded() const { return pt || pl || pb || pr; }
};

std::optional<ConvProblem> conv_problem(const TemplateContext& ctx) {
  if (!ctx.target.is_cpu() || ctx.inputs.size() != 2 || !ctx.attrs) return std::nullopt;
  const auto* attrs = dynamic_cast<const Conv2dAttrs*>(ctx.attrs);
  if (!attrs) return std::nullopt;
  for (const TensorType* t : {&ctx.inputs[0], &ctx.inputs[1], &ctx.output})
    if (t->dtype != DType::f32() || t->shape.size() != 4 || !is_static(t->shape))
      return std::nullopt;
  const Shape &x = ctx.inputs[0].shape, &w = ctx.inputs[1].shape, &y = ctx.output.shape;
  ConvProblem p;
  p.N = x[0].value();
  p.C = x[1].value();
  p.H = x[2].value();
  p.W = x[3].value();
  p.O = w[0].value();
  p.KH = w[2].value();
  p.KW = w[3].value();
  p.OH = y[2].value();
  p.OW = y[3].value();
  p.sh = attrs->stride_h;
  p.sw = attrs->stride_w;
  p.dh = attrs->dilation_h;
  p.dw = attrs->dilation_w;
  p.pt = attrs->pad_top;
  p.pl = attrs->pad_left;
  p.pb = attrs->pad_bottom;
  p.pr = attrs->pad_right;
  p.groups = attrs->groups;
  if (p.N <= 0 || p.O <= 0 || p.OH <= 0 || p.OW <= 0 || p.C <= 0) return std::nullopt;
  return p;
}

Expr vec(const Expr& base, int64_t lanes) {
  return ir::Ramp::make(base, Expr(1), static_cast<int>(lanes));
}
Expr splat(const Expr& v, int64_t lanes) {
  return ir::Broadcast::make(v, static_cast<int>(lanes));
}

// v clamped into [0, extent): an index that stays inside its dimension.
Expr clamp_index(const Expr& v, int64_t extent) {
  return ir::max(ir::min(v, Expr(extent - 1)), Expr(0));
}

// count f32 vector variables of `lanes` lanes, named prefix0, prefix1, ...
std::vector<Var> vector_vars(const std::string& prefix, int64_t count, int64_t lanes) {
  std::vector<Var> out;
  for (int64_t i = 0; i < count; ++i)
    out.push_back(Var(prefix + std::to_string(i), DType::f32().with_lanes(static_cast<int>(lanes))));
  return out;
}

Stmt loop(const Var& v, Expr min, Expr extent, Stmt body, ForKind kind = ForKind::kSerial) {
  if (ir::is_const_int(extent, 1) && kind != ForKind::kParallel)
    return ir::LetStmt::make(v, min, body);
  return ir::For::make(v, std::move(min), std::move(extent), kind, std::move(body));
}

// The cells of a rows x vectors register tile, in the order its task mapping repeat(rows,
// vectors) runs them; the accumulator buffer's layout (row-major rows x vectors x lanes) mirrors
// it.
std::vector<std::vector<int64_t>> tile_cells(int64_t rows, int64_t vectors) {
  auto tile = schedule::repeat(rows, vectors);
  LOOM_CHECK(tile.ok(), tile.status().ToString());
  return tile->tasks_of(0);
}

// Loop kind for the short constant loops over the kernel window: unrolled while small.
ForKind window_kind(int64_t extent, int64_t limit) {
  return extent <= limit ? ForKind::kUnrolled : ForKind::kSerial;
}

// Zeroes buf[base + lo, base + hi) (constant bounds; nothing when empty).
Stmt zero_range(const Buffer& buf, const Expr& base, int64_t lo, int64_t hi, const std::string& v) {
  if (hi <= lo) return Stmt();
  Var i(v);
  return ir::For::make(i, Expr(lo), Expr(hi - lo), ForKind::kVectorized,
                       ir::Store::make(buf, Expr(0.0f), {base + i}));
}

// ---- 1x1 convolution as a GEMM ------------------------------------------------------------

// out[n] (O x P) = W (O x C) x X[n] (C x P), X[n] = x[n] for stride 1, else the strided pixels of
// x[n] gathered into a scratch buffer. Classic blocked GEMM names: mr x NR register tile, kc-deep
// K blocks, mc x nc tiles of the output per parallel task. The config's "pack" says how the
// micro-kernels read a panel of pixels (kc rows of NR, a plane apart in X): packed per task before
// the blocks (1), in place (0), or in place by the first row block, which packs it for the others
// (2); "prefetch" makes every k step also ask for a line of the panel read next.
class Conv1x1Kernel {
 public:
  Conv1x1Kernel(const TemplateContext& ctx, const ConvProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), lanes_(ctx.target.vector_lanes_f32()) {
    mr_ = c["mr"];
    nv_ = c["nv"];
    nr_ = nv_ * lanes_;
    kc_ = std::min<int64_t>(c["kc"], p.C);
    const TileSplit split = balance_tiles(p.N, ceil_div(p.O, mr_), ceil_div(p.P(), nr_),
                                          c["mc_tiles"], c["nc_panels"], num_threads());
    mc_ = split.rows_per_tile * mr_;
    nc_ = split.panels_per_tile * nr_;
    const int64_t pack = c.has("pack") ? c["pack"] : 1;
    direct_ = pack == 0;
    pack_in_first_block_ = pack == 2;
    prefetch_ = c.has("prefetch") && c["prefetch"] == 1;
    row_blocks_ = ceil_div(p.O, mr_);
    strided_ = p.sh != 1 || p.sw != 1;
    x_ = Buffer::make(ctx.name + "_x", DType::f32(), {Expr(p.N * p.C * p.H * p.W)});
    w_ = Buffer::make(ctx.name + "_w", DType::f32(), {Expr(p.O), Expr(p.C)});
    packed_w_ =
        Buffer::make(ctx.name + "_wp", DType::f32(), {Expr(row_blocks_), Expr(p.C), Expr(mr_)});
    pixels_ =
        strided_ ? Buffer::make(ctx.name + "_xs", DType::f32(), {Expr(p.N * p.C * p.P())}) : x_;
    out_ = Buffer::make(ctx.name + "_y", DType::f32(), {Expr(p.N), Expr(p.O), Expr(p.P())});
  }

  std::vector<int64_t> packed_shape() const { return {row_blocks_, p_.C, mr_}; }
  const Buffer& x() const { return x_; }
  const Buffer& w() const { return w_; }
  const Buffer& packed_w() const { return packed_w_; }
  const Buffer& out() const { return out_; }

  // Stage "pack W": Wp[b, k, i] = W[b * mr + i, k], zero past row O, so that the mr weights one
  // step of the micro-kernel broadcasts are adjacent.
  Stmt pack_w() const {
    Var b("b"), k("k"), i("i");
    Expr row = b * mr_ + i;
    Stmt copy = ir::Store::make(
        packed_w_, ir::select(row < p_.O, w_.load({ir::min(row, Expr(p_.O - 1)), k}), Expr(0.0f)),
        {b, k, i});
    return ir::For::make(b, 0, row_blocks_, ForKind::kParallel,
                         loop(k, 0, p_.C, loop(i, 0, mr_, copy)));
  }

  // The whole kernel body (W already packed).
  Stmt body() const {
    if (!strided_) return multiply();
    return ir::Allocate::make(pixels_, ir::Seq::make({gather_pixels(), multiply()}));
  }

 private:
  // Stage "gather strided pixels": Xs[n, c, oh * OW + ow] = x[n, c, oh * sh, ow * sw].
  Stmt gather_pixels() const {
    Var plane("plane"), oh("oh"), ow("ow");
    Stmt copy = ir::Store::make(pixels_, x_.load({(plane * p_.H + oh * p_.sh) * p_.W + ow * p_.sw}),
                                {(plane * p_.OH + oh) * p_.OW + ow});
    return ir::For::make(plane, 0, p_.N * p_.C, ForKind::kParallel,
                         loop(oh, 0, p_.OH, loop(ow, 0, p_.OW, copy)));
  }

  // Stage "multiply": parallel over (image, mc-row tile, nc-pixel tile), blocked over K. Each
  // task packs its kc x nc block of pixels into contiguous NR-wide panels first: the rows of the
  // input planes lie P floats apart, which would map a panel's rows onto few cache sets.
  Stmt multiply() const {
    const int64_t tiles_m = ceil_div(p_.O, mc_), tiles_n = ceil_div(p_.P(), nc_);
    const int64_t panels_per_tile = nc_ / nr_, full_panels = p_.P() / nr_;
    const int64_t col_tail = p_.P() % nr_, row_tail = p_.O % mr_;
    auto work = schedule::spatial(p_.N, tiles_m, tiles_n);
    LOOM_CHECK(work.ok(), work.status().ToString());
    Var t("task");
    Stmt body = work->on(t, [&](const std::vector<Expr>& task) {
      Expr n = task[0], tm = task[1], tn = task[2];
      Expr row0 = tm * mc_;
      Buffer panels =
          Buffer::make(ctx_.name + "_xp", DType::f32(), {Expr(panels_per_tile * kc_ * nr_)});
      Var kb("kb"), ib("ib"), jp("jp");
      Expr k0 = kb * kc_;
      Expr klen = ir::min(Expr(kc_), p_.C - k0);
      Expr first = kb == 0;
      Expr last = kb == ceil_div(p_.C, kc_) - 1;
      Expr panel_begin = tn * panels_per_tile;
      Expr panel_count =
          ir::max(ir::min(Expr(full_panels), panel_begin + panels_per_tile) - panel_begin, Expr(0));
      // direct: full panels are read in place, rows P floats apart (only the partial last panel
      // is packed).
      auto rows_of_panel = [&](Expr panel, int64_t cols) {
        Expr full_blocks = (ir::min(Expr(p_.O), row0 + mc_) - row0) / mr_;
        const bool in_place = direct_ && cols == nr_;
        Expr at = in_place ? (n * p_.C + k0) * p_.P() + panel * nr_
                           : (panel - panel_begin) * (kc_ * nr_);
        const Buffer& src = in_place ? pixels_ : panels;
        const int64_t stride = in_place ? p_.P() : nr_;
        std::vector<Stmt> s;
        // One micro-kernel on this panel. With prefetch, its k step also asks for one line of
        // row k of the pixels the task reads next, into L2: in place (pack 0, or pack 2's first
        // block), those of the next panel (next_panel), the line chosen by the row block's
        // index.
        auto block = [&](int64_t rows, Expr b, Expr r0, const Copy* copy, Expr ib_value = Expr(0)) {
          std::optional<Expr> fetch;
          if (prefetch_ && (pack_in_first_block_ || direct_)) {
            NextPanel next = next_panel(panel + 1 < panel_begin + panel_count, last, panel,
                                        panel_begin, panels_per_tile, k0, kc_);
            fetch = (n * p_.C + next.k0) * p_.P() + next.panel * nr_ + (ib_value % nv_) * lanes_;
          } else if (prefetch_) {
            // pack 1: the rows of the task's next K block, or the next task's first; each
            // micro-kernel fetches one line of every row, spread over the task's lines.
            Expr next_row = n * p_.C + ir::select(last, Expr(0), k0 + kc_);
            Expr next_col = (panel_begin + ir::select(last, Expr(panels_per_tile), Expr(0))) * nr_;
            Expr line = ((panel - panel_begin) * (mc_ / mr_) + ib_value) % (panels_per_tile * nv_);
            fetch = next_row * p_.P() + next_col + line * lanes_;
          }
          return micro_kernel(rows, cols, n, b, r0, panel * nr_, copy ? pixels_ : src,
                              copy ? (n * p_.C + k0) * p_.P() + panel * nr_ : at,
                              copy ? p_.P() : stride, k0, klen, first, last, copy, fetch);
        };
        // pack 2: the first row block reads the full panel in place and packs it as it goes
        // (the loads of the input overlap that block's FMAs); the other blocks read the copy.
        if (pack_in_first_block_ && cols == nr_) {
          Copy copy{&panels, at};
          // Every tile but the last has at least one full row block; the last may have only
          // the row tail, which then packs.
          const int64_t last_full_blocks = (p_.O - (tiles_m - 1) * mc_) / mr_;
          s.push_back(ir::IfThenElse::make(
              full_blocks > 0,
              ir::Seq::make({block(mr_, tm * (mc_ / mr_), row0, &copy),
                             ir::For::make(ib, 1, full_blocks - 1, ForKind::kSerial,
                                           block(mr_, tm * (mc_ / mr_) + ib, row0 + ib * mr_,
                                                 nullptr, ib))})));
          if (row_tail)
            s.push_back(ir::IfThenElse::make(
                tm == tiles_m - 1, block(row_tail, Expr(row_blocks_ - 1), Expr(p_.O - row_tail),
                                         last_full_blocks == 0 ? &copy : nullptr, full_blocks)));
          return ir::Seq::make(std::move(s));
        }
        s.push_back(ir::For::make(ib, 0, full_blocks, ForKind::kSerial,
                                  block(mr_, tm * (mc_ / mr_) + ib, row0 + ib * mr_, nullptr, ib)));
        if (row_tail)
          s.push_back(ir::IfThenElse::make(
              tm == tiles_m - 1,
              block(row_tail, Expr(row_blocks_ - 1), Expr(p_.O - row_tail), nullptr, full_blocks)));
        return ir::Seq::make(std::move(s));
      };
      std::vector<Stmt> per_k;
      // Pixel rows outermost, so that each of the task's input rows is read as one contiguous
      // run of nc pixels.
      Var pack_jp("pack_jp"), pack_k("pack_k");
      std::vector<Stmt> pack_row;
      if (!direct_ && !pack_in_first_block_)
        pack_row.push_back(ir::For::make(
            pack_jp, panel_begin, panel_count, ForKind::kSerial,
            pack_panel_row(panels, pack_jp - panel_begin, n, pack_jp, k0, pack_k, nr_)));
      if (col_tail)
        pack_row.push_back(ir::IfThenElse::make(
            tn == tiles_n - 1, pack_panel_row(panels, Expr(full_panels) - panel_begin, n,
                                              Expr(full_panels), k0, pack_k, col_tail)));
      if (!pack_row.empty())
        per_k.push_back(
            ir::For::make(pack_k, 0, klen, ForKind::kSerial, ir::Seq::make(std::move(pack_row))));
      per_k.push_back(
          ir::For::make(jp, panel_begin, panel_count, ForKind::kSerial, rows_of_panel(jp, nr_)));
      if (col_tail)
        per_k.push_back(
            ir::IfThenElse::make(tn == tiles_n - 1, rows_of_panel(Expr(full_panels), col_tail)));
      return ir::Allocate::make(panels, ir::For::make(kb, 0, ceil_div(p_.C, kc_), ForKind::kSerial,
                                                      ir::Seq::make(std::move(per_k))));
    });
    return ir::For::make(t, 0, work->num_workers(), ForKind::kParallel, body);
  }

  // Where a micro-kernel that reads its pixel panel in place also writes it, packed (pack 2).
  struct Copy {
    const Buffer* to;
    Expr at;
  };

  // Stage "pack pixels", row k of one panel: panels[local, k, :] = X[n, k0 + k, panel * NR :
  // +NR], zero past the plane's last pixel (cols < NR only in the plane's last panel).
  Stmt pack_panel_row(const Buffer& panels, Expr local, Expr n, Expr panel, Expr k0, Expr k,
                      int64_t cols) const {
    Expr src = (n * p_.C + k0 + k) * p_.P() + panel * nr_;
    Expr dst = (local * kc_ + k) * nr_;
    std::vector<Stmt> copy;
    for (int64_t v = 0; v < nv_; ++v) {
      int64_t valid = std::clamp<int64_t>(cols - v * lanes_, 0, lanes_);
      if (valid == lanes_) {
        copy.push_back(ir::Store::make(panels, pixels_.load({vec(src + v * lanes_, lanes_)}),
                                       {vec(dst + v * lanes_, lanes_)}));
        continue;
      }
      for (int64_t l = 0; l < lanes_; ++l)
        copy.push_back(
            ir::Store::make(panels, l < valid ? pixels_.load({src + v * lanes_ + l}) : Expr(0.0f),
                            {dst + v * lanes_ + l}));
    }
    return ir::Seq::make(std::move(copy));
  }

  // out[n, r0 : r0+rows, col0 : col0+cols] (+)= Wp[b, k0 : k0+klen, :rows] x the packed pixel
  // panel at `at`. The accumulator tile is a local buffer with constant offsets only (kept in
  // vector registers); its layout mirrors the mapping repeat(rows, vectors). A tile of few rows
  // (a row tail) keeps several such sets, one per k step in turn, as the GEMM's micro-kernel.
  Stmt micro_kernel(int64_t rows, int64_t cols, Expr n, Expr b, Expr r0, Expr col0,
                    const Buffer& panels, Expr at, int64_t stride, Expr k0, Expr klen,
                    Expr first, Expr last, const Copy* copy = nullptr,
                    std::optional<Expr> prefetch = std::nullopt) const {
    const int64_t nvec = ceil_div(cols, lanes_);
    const int64_t sets = accumulator_sets(rows * nvec, nvec, ctx_.target.vector_registers());
    Buffer acc = Buffer::make(ctx_.name + "_acc", DType::f32(), {Expr(sets * rows * nvec * lanes_)},
                              ir::MemoryScope::kLocal);
    auto acc_at = [&](int64_t i, int64_t v, int64_t set = 0) {
      return vec(Expr(((set * rows + i) * nvec + v) * lanes_), lanes_);
    };
    auto valid = [&](int64_t v) { return std::clamp<int64_t>(cols - v * lanes_, 0, lanes_); };
    std::vector<std::vector<int64_t>> cells = tile_cells(rows, nvec);
    // The last channel block stores final values (marked for fusion), the others partial sums.
    ExtraSets extra = extra_sets(acc, rows * nvec, lanes_, sets);
    std::vector<Stmt> zero = extra.zero, load = extra.zero, store, store_final;
    for (const auto& cell : cells) {
      int64_t i = cell[0], v = cell[1];
      Expr col = col0 + v * lanes_;
      zero.push_back(ir::Store::make(acc, splat(Expr(0.0f), lanes_), {acc_at(i, v)}));
      if (valid(v) == lanes_) {
        load.push_back(
            ir::Store::make(acc, out_.load({n, r0 + i, vec(col, lanes_)}), {acc_at(i, v)}));
        store.push_back(
            ir::Store::make(out_, acc.load({acc_at(i, v)}), {n, r0 + i, vec(col, lanes_)}));
        store_final.push_back(ir::Store::make(out_, ir::final_value(acc.load({acc_at(i, v)})),
                                              {n, r0 + i, vec(col, lanes_)}));
      } else {
        for (int64_t l = 0; l < lanes_; ++l) {
          Expr a = Expr((i * nvec + v) * lanes_ + l);
          load.push_back(ir::Store::make(
              acc, l < valid(v) ? out_.load({n, r0 + i, col + l}) : Expr(0.0f), {a}));
          if (l < valid(v)) {
            store.push_back(ir::Store::make(out_, acc.load({a}), {n, r0 + i, col + l}));
            store_final.push_back(
                ir::Store::make(out_, ir::final_value(acc.load({a})), {n, r0 + i, col + l}));
          }
        }
      }
    }
    // One k step into accumulator set `set`: nvec vectors of the packed pixel panel, one
    // broadcast weight per row, rows x nvec FMAs.
    auto step = [&](Expr k, int64_t set) {
      const std::vector<Var> x_rows = vector_vars("x", nvec, lanes_);
      std::vector<Stmt> fma;
      for (const auto& cell : cells) {
        int64_t i = cell[0], v = cell[1];
        Expr wv = splat(packed_w_.load({b, k0 + k, Expr(i)}), lanes_);
        fma.push_back(ir::Store::make(acc, ir::fma(wv, x_rows[v], acc.load({acc_at(i, v, set)})),
                                      {acc_at(i, v, set)}));
      }
      // Unclamped: the last panel's prefetch points past the input, which a prefetch may.
      if (prefetch) fma.insert(fma.begin(), ops::prefetch(pixels_, {*prefetch + k * p_.P()}));
      if (copy) {
        std::vector<Stmt> stores;
        for (int64_t v = 0; v < nvec; ++v)
          stores.push_back(ir::Store::make(*copy->to, x_rows[v],
                                           {vec(copy->at + k * nr_ + v * lanes_, lanes_)}));
        fma.insert(fma.begin(), stores.begin(), stores.end());
      }
      Stmt body = ir::Seq::make(std::move(fma));
      for (int64_t v = nvec - 1; v >= 0; --v)
        body = ir::LetStmt::make(x_rows[v],
                                 panels.load({vec(at + k * stride + v * lanes_, lanes_)}), body);
      return body;
    };
    Stmt k_loop = k_loop_over_sets("k", klen, sets, step);
    if (sets > 1) k_loop = ir::Seq::make({k_loop, ir::Seq::make(std::move(extra.sum))});
    return ir::Allocate::make(
        acc, ir::Seq::make({ir::IfThenElse::make(first, ir::Seq::make(std::move(zero)),
                                                 ir::Seq::make(std::move(load))),
                            k_loop,
                            ir::IfThenElse::make(last, ir::Seq::make(std::move(store_final)),
                                                 ir::Seq::make(std::move(store)))}));
  }

  const TemplateContext& ctx_;
  ConvProblem p_;
  int64_t lanes_, mr_, nv_, nr_, kc_, mc_, nc_, row_blocks_;
  bool strided_, direct_, pack_in_first_block_, prefetch_;
  Buffer x_, w_, packed_w_, pixels_, out_;
};

tune::Space gemm_1x1_space(const TemplateContext& ctx) {
  const Target& t = ctx.target;
  const int64_t lanes = t.vector_lanes_f32(), regs = t.vector_registers();
  const int64_t l1 = t.l1d_bytes(), l2 = t.l2_bytes();
  std::vector<int64_t> mr = {1, 2, 3, 4, 5, 6, 7, 8};
  if (regs >= 32) mr.insert(mr.end(), {10, 12, 14});
  tune::Space s;
  s.param("mr", mr)
      .param("nv", {1, 2, 3, 4})
      .param("kc", {64, 128, 256, 512})
      .param("mc_tiles", {1, 2, 4, 8, 16, 32, 64})
      .param("nc_panels", {1, 2, 4, 8, 16, 32})
      .param("pack", {1, 0, 2})
      .param("prefetch", {0, 1});
  // Accumulators, the pixel vectors of one step and one broadcast weight live in registers.
  s.rule("register tile fits the vector registers",
         [=](const tune::Config& c) { return c["mr"] * c["nv"] + c["nv"] + 1 <= regs; });
  // A kc-deep slice of the pixel panel and of the weight rows stay in L1 across the k loop.
  s.rule("panel slice fits L1", [=](const tune::Config& c) {
    return (c["kc"] * c["nv"] * lanes + c["kc"] * c["mr"]) * 4 <= l1;
  });
  // The weight block (mc x kc) and the pixel block (kc x nc) of one task stay in L2.
  s.rule("tile blocks fit L2", [=](const tune::Config& c) {
    int64_t mc = c["mc_tiles"] * c["mr"], nc = c["nc_panels"] * c["nv"] * lanes;
    return (mc * c["kc"] + c["kc"] * nc) * 4 <= l2;
  });
  // kFast: register tiles of at least 3/4 of the registers' worth of accumulators, two or more
  // pixel vectors wide (on AVX-512: 12x2, 14x2, 7x3, 8x3 and 6x4; which one wins depends on how
  // the output channels split into rows).
  s.prefer("register tile uses most registers", [=](const tune::Config& c) {
    return c["nv"] >= 2 && c["mr"] * c["nv"] >= (regs - 4) * 3 / 4;
  });
  // Pixel panels read in place with K blocks of 64, or packed per task with K blocks of 128.
  // Which wins depends on the machine and the shape, measured interleaved (8x3 tiles, one
  // thread): on a Zen 4 core, packing was never clearly faster (64->256 at 56x56: 1.26 ms
  // against 0.94 ms in place); on a Xeon core (48 KiB L1), 256->64 at 56x56 ran 1.13-1.25 ms
  // packed against 1.47 ms in place, while 64->256 ran 1.63 ms packed against 1.13 ms. In
  // place, the panel's rows lie a plane apart, and 64 of them beat 128 with every register
  // tile on 256->64 at 56x56 and 512->128 at 28x28 (Zen 4).
  //
  // Packing by the first row block (pack 2) beat packing before the blocks (pack 1) on every
  // shape measured on the Xeon (64->256 at 56x56, one thread: 1.23 ms against 1.57), as it
  // overlaps the reads of the input with that block's FMAs. Prefetching the next panel's rows
  // while computing this one hides the reads of an input that does not fit L2, most of all in
  // place: 256->64 at 56x56 with 8x3 tiles in place, two threads, 0.75 ms against 1.02 (oneDNN
  // 0.51-0.65 in the same runs), 512->128 at 28x28 0.61 against 0.76; packed by the first
  // block 0.95 against 1.01. Where it lost, it lost at most 4%, within the noise.
  //
  // Packed by the first block, K blocks of 256 (all of C = 256) in tasks of one panel won once
  // the last K block's prefetch went to the next task's panel (Zen 2, 256->64 at 56x56, 4x3
  // tiles: 1.07 ms at one thread and 0.533 at two, against 1.07 and 0.567 in place with K
  // blocks of 64; before, the first block read a task's panel from L3 row by row, 1.98 ms).
  const std::optional<ConvProblem> prob = conv_problem(ctx);
  const int64_t in_channels = prob ? prob->C : 0;
  s.prefer("pixel panels in place with short K blocks, or packed", [=](const tune::Config& c) {
    if (c["prefetch"] != 1) return false;
    if (c["pack"] == 0) return c["kc"] == 64;
    // K blocks of 256 only where C has more than 128 channels (else they equal those of 128).
    return c["pack"] == 2 && (c["kc"] == 128 || (c["kc"] == 256 && in_channels > 128));
  });
  // Row tiles of 2 register tiles, or the fewest that cover all output channels. Few rows win
  // when the channel count C is small: every output row is then stored after a short k loop,
  // and a tile's rows lie a whole plane apart, one page each (64->256 at 56x56, one thread:
  // 1.14 ms with 16-row tiles, 1.93 ms with all 256 rows). All rows win when C is large and
  // O small (256->64: 1.27 ms against 2.18 ms with 16 rows, in one tuning). Packed panels
  // also in tasks of one panel, the finest split over threads (256->64 above, K blocks of 256:
  // 0.533 ms at two threads with 1 panel a task, 0.537 with 2, 1.07 and 1.08 at one thread with
  // 1 and 4).
  const int64_t channels = prob ? prob->O : 0;
  s.prefer("blocking near the cache sizes", [=](const tune::Config& c) {
    int64_t mt = c["mc_tiles"], mr = c["mr"], nc = c["nc_panels"];
    bool covers_o = mt * mr >= channels && (mt / 2) * mr < channels;
    return (mt == 2 || covers_o) && (nc == 4 || nc == 16 || (nc == 1 && c["pack"] == 2));
  });
  // Default: 8x3 vectors (4x3 with 16 registers), the tile that came within 10% of the best in
  // each of the tunings above.
  tune::Config best;
  best.set("mr", regs >= 32 ? 8 : 4);
  best.set("nv", 3);
  best.set("kc", 64);
  best.set("mc_tiles", 8);
  best.set("nc_panels", 16);
  best.set("pack", 0);
  best.set("prefetch", 1);
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_1x1(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  if (!p) return absl::InvalidArgumentError("conv2d_1x1_gemm does not apply to " + ctx.name);
  Conv1x1Kernel k(ctx, *p, c);
  return kernel_with_packed_input(ctx, 1, {k.x(), k.w(), k.out()}, k.packed_w(), k.pack_w(),
                                  k.body(), k.packed_shape());
}

bool applies_1x1(const TemplateContext& ctx) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  return p && p->KH == 1 && p->KW == 1 && !p->padded() && p->groups == 1;
}

// ---- depthwise convolution ----------------------------------------------------------------

// groups == C == O: out[n, c] = x[n, c] (*) w[c]. Vectors run along the output width; each task
// (image and channel, block of output rows) copies the input rows it reads into a zero-padded
// scratch, de-interleaved by stride phase so that every tap is a dense vector load.
class DepthwiseKernel {
 public:
  DepthwiseKernel(const TemplateContext& ctx, const ConvProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), lanes_(ctx.target.vector_lanes_f32()) {
    ovec_ = c["ow_vectors"];
    rows_ = std::min<int64_t>(c["rows"], p.OH);
    rb_ = std::min<int64_t>(c.has("row_block") ? c["row_block"] : 1, rows_);
    row_blocks_ = ceil_div(p.OH, rows_);
    in_rows_ = (rows_ - 1) * p.sh + (p.KH - 1) * p.dh + 1;
    full_vectors_ = p.OW / lanes_;
    rem_ = p.OW % lanes_;
    const int64_t vectors = ceil_div(p.OW, lanes_);
    in_cols_ = (vectors * lanes_ - 1) * p.sw + (p.KW - 1) * p.dw + 1;
    phase_cols_ = ceil_div(in_cols_, p.sw);
    // Stride 1: rows start on a vector boundary and the image part of each row does too (after
    // `lead_` unused columns), so that the copy's vector stores are aligned.
    lead_ = p.sw == 1 ? (lanes_ - p.pl % lanes_) % lanes_ : 0;
    row_stride_ = p.sw == 1 ? ceil_div(lead_ + in_cols_, lanes_) * lanes_ : p.sw * phase_cols_;
    x_ = Buffer::make(ctx.name + "_x", DType::f32(), {Expr(p.N * p.C * p.H * p.W)});
    w_ = Buffer::make(ctx.name + "_w", DType::f32(), {Expr(p.C * p.KH * p.KW)});
    out_ = Buffer::make(ctx.name + "_y", DType::f32(), {Expr(p.N * p.C * p.OH * p.OW)});
  }

  const Buffer& x() const { return x_; }
  const Buffer& w() const { return w_; }
  const Buffer& out() const { return out_; }

  Stmt body() const {
    auto work = schedule::spatial(p_.N * p_.C, row_blocks_);
    LOOM_CHECK(work.ok(), work.status().ToString());
    Var t("task");
    Stmt body = work->on(t, [&](const std::vector<Expr>& task) {
      Expr plane = task[0], oh0 = task[1] * rows_;
      Buffer rows = Buffer::make(ctx_.name + "_rows", DType::f32(), {Expr(in_rows_ * row_stride_)});
      return ir::Allocate::make(
          rows, ir::Seq::make({copy_rows(rows, plane, oh0), compute_rows(rows, plane, oh0)}));
    });
    return ir::For::make(t, 0, work->num_workers(), ForKind::kParallel, body);
  }

 private:
  // Stage "copy input rows": rows[r, phase, q] = x[plane, oh0 * sh - pt + r, q * sw + phase - pl],
  // zero outside the image.
  Stmt copy_rows(const Buffer& rows, const Expr& plane, const Expr& oh0) const {
    Var r("r");
    Expr ih = oh0 * p_.sh - p_.pt + r;
    Expr src = (plane * p_.H + ih) * p_.W;
    Expr row = r * row_stride_, dst = row + lead_;
    Stmt fill;
    if (p_.sw == 1) {
      // Left pad, the image row, right pad: plain loops that LLVM vectorizes.
      int64_t copy_end = std::min(p_.pl + p_.W, in_cols_);
      Var col("col");
      Stmt copy;
      if (copy_end > p_.pl)
        copy = ir::For::make(col, Expr(p_.pl), Expr(copy_end - p_.pl), ForKind::kVectorized,
                             ir::Store::make(rows, x_.load({src + col - p_.pl}), {dst + col}));
      fill = ir::Seq::make({zero_range(rows, dst, 0, std::min(p_.pl, in_cols_), "col"), copy,
                            zero_range(rows, dst, std::max(copy_end, p_.pl), in_cols_, "col")});
    } else {
      Var phase("phase"), q("q");
      Expr iw = q * p_.sw + phase - p_.pl;
      Expr value =
          ir::select(iw >= 0 && iw < p_.W,
                     x_.load({src + ir::min(ir::max(iw, Expr(0)), Expr(p_.W - 1))}), Expr(0.0f));
      fill = loop(
          phase, 0, p_.sw,
          loop(q, 0, phase_cols_, ir::Store::make(rows, value, {dst + phase * phase_cols_ + q})));
    }
    Stmt zero = zero_range(rows, row, 0, row_stride_, "col");
    return ir::For::make(r, 0, in_rows_, ForKind::kSerial,
                         ir::IfThenElse::make(ih >= 0 && ih < p_.H, fill, zero));
  }

  // Stage "multiply": each output row of the block, ovec vectors at a time; rb rows at a time
  // (each loaded input vector then serves every row of the group that reads it), the rows past
  // the last full group one at a time.
  Stmt compute_rows(const Buffer& rows, const Expr& plane, const Expr& oh0) const {
    Expr channel = plane % p_.C;
    const int64_t groups = full_vectors_ / ovec_, left = full_vectors_ % ovec_;
    auto row_pass = [&](const Expr& r, int64_t nrows_here) {
      Var g("g");
      std::vector<Stmt> s;
      if (groups > 0)
        s.push_back(loop(g, 0, groups,
                         micro_kernel(rows, plane, channel, oh0, r, nrows_here,
                                      g * (ovec_ * lanes_), ovec_, 0)));
      if (left > 0)
        s.push_back(micro_kernel(rows, plane, channel, oh0, r, nrows_here,
                                 Expr(groups * ovec_ * lanes_), left, 0));
      if (rem_ > 0)
        s.push_back(micro_kernel(rows, plane, channel, oh0, r, nrows_here,
                                 Expr(full_vectors_ * lanes_), 1, rem_));
      return ir::Seq::make(std::move(s));
    };
    Expr nrows = ir::min(Expr(rows_), p_.OH - oh0);
    Var r("r");
    if (rb_ <= 1) return ir::For::make(r, 0, nrows, ForKind::kSerial, row_pass(r, 1));
    Var rg("rg"), rt("rt");
    Expr full = nrows / rb_;
    return ir::Seq::make(
        {ir::For::make(rg, 0, full, ForKind::kSerial, row_pass(rg * rb_, rb_)),
         ir::For::make(rt, full * rb_, nrows - full * rb_, ForKind::kSerial, row_pass(rt, 1))});
  }

  // out[plane, oh0 + r + i, ow0 : ow0 + nvec * lanes] for i < nr = sum over taps of
  // w[channel, kh, kw] x the input vector of that tap. The taps of all nr rows are grouped by the
  // scratch row they read, so that each input vector is loaded once. partial > 0: only the
  // first `partial` lanes of the last vector are stored (the scratch is wide enough that reading
  // the rest is harmless).
  Stmt micro_kernel(const Buffer& rows, const Expr& plane, const Expr& channel, const Expr& oh0,
                    const Expr& r, int64_t nr, const Expr& ow0, int64_t nvec,
                    int64_t partial) const {
    Buffer acc = Buffer::make(ctx_.name + "_acc", DType::f32(), {Expr(nr * nvec * lanes_)},
                              ir::MemoryScope::kLocal);
    auto acc_at = [&](int64_t i, int64_t v) { return vec(Expr((i * nvec + v) * lanes_), lanes_); };
    std::vector<Stmt> zero, fma, store;
    for (int64_t i = 0; i < nr; ++i) {
      Expr out_row = (plane * p_.OH + oh0 + r + i) * p_.OW + ow0;
      for (int64_t v = 0; v < nvec; ++v) {
        zero.push_back(ir::Store::make(acc, splat(Expr(0.0f), lanes_), {acc_at(i, v)}));
        if (partial == 0) {
          store.push_back(
              ir::Store::make(out_, acc.load({acc_at(i, v)}), {vec(out_row + v * lanes_, lanes_)}));
        } else {
          for (int64_t l = 0; l < partial; ++l)
            store.push_back(ir::Store::make(out_, acc.load({Expr((i * nvec + v) * lanes_ + l)}),
                                            {out_row + v * lanes_ + l}));
        }
      }
    }
    // Scratch row (relative to r * sh) of row i, tap kh: i * sh + kh * dh.
    const int64_t span = (nr - 1) * p_.sh + (p_.KH - 1) * p_.dh + 1;
    Expr base = r * (p_.sh * row_stride_) + lead_ + ow0;
    for (int64_t q = 0; q < span; ++q) {
      std::vector<std::pair<int64_t, int64_t>> users;  // (i, kh)
      for (int64_t i = 0; i < nr; ++i)
        for (int64_t kh = 0; kh < p_.KH; ++kh)
          if (i * p_.sh + kh * p_.dh == q) users.push_back({i, kh});
      if (users.empty()) continue;
      for (int64_t kw = 0; kw < p_.KW; ++kw) {
        int64_t col = (kw * p_.dw) % p_.sw * phase_cols_ + (kw * p_.dw) / p_.sw;
        for (int64_t v = 0; v < nvec; ++v) {
          Var xv("x" + std::to_string(q) + "_" + std::to_string(kw) + "_" + std::to_string(v),
                 DType::f32().with_lanes(static_cast<int>(lanes_)));
          std::vector<Stmt> uses;
          for (auto [i, kh] : users) {
            Expr wv = splat(w_.load({channel * (p_.KH * p_.KW) + (kh * p_.KW + kw)}), lanes_);
            uses.push_back(ir::Store::make(acc, ir::fma(xv, wv, acc.load({acc_at(i, v)})),
                                           {acc_at(i, v)}));
          }
          Expr in = rows.load({vec(base + (q * row_stride_ + col + v * lanes_), lanes_)});
          fma.push_back(ir::LetStmt::make(xv, in, ir::Seq::make(std::move(uses))));
        }
      }
    }
    return ir::Allocate::make(acc, ir::Seq::make({ir::Seq::make(std::move(zero)),
                                                  ir::Seq::make(std::move(fma)),
                                                  ir::Seq::make(std::move(store))}));
  }

  const TemplateContext& ctx_;
  ConvProblem p_;
  int64_t lanes_, ovec_, rows_, rb_, row_blocks_, in_rows_, full_vectors_, rem_, in_cols_,
      phase_cols_;
  int64_t lead_, row_stride_;
  Buffer x_, w_, out_;
};

tune::Space depthwise_space(const TemplateContext& ctx) {
  const int64_t regs = ctx.target.vector_registers();
  tune::Space s;
  s.param("ow_vectors", {1, 2, 3, 4, 6, 8})
      .param("rows", {1, 2, 4, 8, 16, 32})
      .param("row_block", {1, 2, 3, 4});
  // The accumulators (row_block rows of ow_vectors), one input vector and one broadcast weight
  // live in registers.
  s.rule("accumulators fit the vector registers", [=](const tune::Config& c) {
    return c["row_block"] * c["ow_vectors"] + 2 <= regs;
  });
  s.rule("row groups fit the row block",
         [](const tune::Config& c) { return c["row_block"] <= c["rows"]; });
  // kFast: a few accumulators per row group, row groups that divide the block.
  s.prefer("several independent accumulators", [](const tune::Config& c) {
    int64_t acc = c["row_block"] * c["ow_vectors"];
    return c["row_block"] >= 2 && acc >= 4 && acc <= 8 && c["ow_vectors"] != 6;
  });
  // Each block copies (rows - 1) * stride + KH input rows: deeper blocks copy less per output row.
  s.prefer("row blocks of several rows", [](const tune::Config& c) {
    return c["rows"] >= 8 && c["rows"] <= 32 && c["rows"] % c["row_block"] == 0;
  });
  tune::Config best;
  best.set("ow_vectors", 2);
  best.set("rows", 8);
  best.set("row_block", 2);
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_depthwise(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  if (!p) return absl::InvalidArgumentError("conv2d_depthwise does not apply to " + ctx.name);
  DepthwiseKernel k(ctx, *p, c);
  ScheduledKernel out;
  out.func.name = ctx.name;
  out.func.params = {k.x(), k.w(), k.out()};
  out.func.body = k.body();
  return out;
}

bool applies_depthwise(const TemplateContext& ctx) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  return p && p->groups == p->C && p->O == p->C;
}

// ---- Winograd convolution F(2x2, 3x3), channel-blocked --------------------------------------

// 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016):
// each 2x2 block of output pixels (a tile) of output channel o is
//   Y = A^T [ sum_c (G g[o, c] G^T) .* (B^T d[c] B) ] A,
// d[c] the 4x4 input patch under the tile, so 16 multiplies per tile and channel pair stand for
// the direct method's 36. The transforms B^T d B and A^T m A are additions only, done a vector
// of channels at a time: the template takes NCHW{v}c in and out (v the vector width), where a
// pixel's v channels are one vector. The 16 element-wise products summed over c are 16 GEMMs,
// [tiles x C] x [C x O], whose B operands, the transformed weights U = G g G^T, are packed at
// compile time into NR-wide panels: Up[pos, panel, c, NR].
//
// A parallel task is (image, block of `tile_rows` x mr tiles, block of `o_panels` panels of
// output channels). It transforms its tiles' input patches into V[16][tiles][C] (zero outside
// the image; tiles past the plane's last read clamped pixels and are never stored), multiplies
// M[pos] = V[pos] x Up[pos] with an mr x nv register tile, and transforms each tile's 16
// vectors of M back into its 2x2 outputs (those past the output's edge skipped).
class WinogradKernel {
 public:
  WinogradKernel(const TemplateContext& ctx, const ConvProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), lanes_(ctx.target.vector_lanes_f32()) {
    mr_ = c["mr"];
    nv_ = c["nv"];
    nr_ = nv_ * lanes_;
    tiles_ = c["tile_rows"] * mr_;
    o_panels_ = c["o_panels"];
    th_ = ceil_div(p.OH, 2);
    tw_ = ceil_div(p.OW, 2);
    tile_blocks_ = ceil_div(th_ * tw_, tiles_);
    panels_ = p.O / nr_;
    o_blocks_ = panels_ / o_panels_;
    x_layout_ = Layout::of({Expr(p.N), Expr(p.C), Expr(p.H), Expr(p.W)}, ctx.inputs[0].layout);
    x_ = Buffer::make(ctx.name + "_x", DType::f32(), {x_layout_.physical_size()});
    w_ = Buffer::make(ctx.name + "_w", DType::f32(), {Expr(p.O), Expr(p.C), Expr(3), Expr(3)});
    packed_w_ = Buffer::make(ctx.name + "_wp", DType::f32(),
                             {Expr(16), Expr(panels_), Expr(p.C), Expr(nr_)});
    out_ = Buffer::make(ctx.name + "_y", DType::f32(),
                        Layout::of({Expr(p.N), Expr(p.O), Expr(p.OH), Expr(p.OW)}, ctx.output.layout));
  }

  std::vector<int64_t> packed_shape() const { return {16, panels_, p_.C, nr_}; }
  const Buffer& x() const { return x_; }
  const Buffer& w() const { return w_; }
  const Buffer& packed_w() const { return packed_w_; }
  const Buffer& out() const { return out_; }

  // Stage "pack W": Up[a * 4 + b, panel, c, l] = (G g G^T)[a, b], g = W[panel * NR + l, c].
  Stmt pack_w() const {
    static constexpr float kG[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
    Var panel("panel"), c("c"), l("l");
    Expr o = panel * nr_ + l;
    std::vector<Stmt> stores;
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b) {
        Expr sum;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            const float coef = kG[a][i] * kG[b][j];
            if (coef == 0) continue;
            Expr term = w_.load({o, c, Expr(i), Expr(j)});
            if (coef != 1) term = term * Expr(coef);
            sum = sum.defined() ? sum + term : term;
          }
        stores.push_back(ir::Store::make(packed_w_, sum, {Expr(a * 4 + b), panel, c, l}));
      }
    return ir::For::make(panel, 0, panels_, ForKind::kParallel,
                         loop(c, 0, p_.C, loop(l, 0, nr_, ir::Seq::make(std::move(stores)))));
  }

  Stmt body() const {
    auto work = schedule::spatial(p_.N, tile_blocks_, o_blocks_);
    LOOM_CHECK(work.ok(), work.status().ToString());
    Var t("task");
    Stmt body = work->on(t, [&](const std::vector<Expr>& task) {
      Expr n = task[0], block = task[1], ob = task[2];
      Buffer v = Buffer::make(ctx_.name + "_v", DType::f32(), {Expr(16 * tiles_ * p_.C)});
      Buffer m = Buffer::make(ctx_.name + "_m", DType::f32(), {Expr(16 * tiles_ * o_panels_ * nr_)});
      return ir::Allocate::make(
          v, ir::Allocate::make(m, ir::Seq::make({transform_input(v, n, block), multiply(v, m, ob),
                                                  transform_output(m, n, block, ob)})));
    });
    return ir::For::make(t, 0, work->num_workers(), ForKind::kParallel, body);
  }

 private:
  // Stage "transform input": V[pos, t, c] = (B^T d B)[pos] for the 4x4 patch d of the block's
  // tile t, a vector of channels at a time. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
  Stmt transform_input(const Buffer& v, Expr n, Expr block) const {
    Var t("t"), cb("cb");
    Expr tile = block * tiles_ + t;
    Expr h0 = tile / tw_ * 2 - p_.pt, w0 = tile % tw_ * 2 - p_.pl;
    const std::vector<Var> d = vector_vars("d", 16, lanes_);
    auto bt = [](const std::array<Expr, 4>& x) -> std::array<Expr, 4> {
      return {x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]};
    };
    std::array<std::array<Expr, 4>, 4> rows;  // (B^T d)[i][j]
    for (int j = 0; j < 4; ++j) {
      std::array<Expr, 4> r = bt({d[j], d[4 + j], d[8 + j], d[12 + j]});
      for (int i = 0; i < 4; ++i) rows[i][j] = r[i];
    }
    std::vector<Stmt> stores;
    for (int i = 0; i < 4; ++i) {
      std::array<Expr, 4> r = bt(rows[i]);
      for (int j = 0; j < 4; ++j)
        stores.push_back(ir::Store::make(
            v, r[j], {vec(((i * 4 + j) * tiles_ + t) * p_.C + cb * lanes_, lanes_)}));
    }
    Stmt step = ir::Seq::make(std::move(stores));
    for (int k = 15; k >= 0; --k) {
      Expr h = h0 + k / 4, w = w0 + k % 4;
      Expr at = x_layout_.offset({n, cb * lanes_, clamp_index(h, p_.H), clamp_index(w, p_.W)});
      Expr inside = h >= 0 && h < p_.H && w >= 0 && w < p_.W;
      step = ir::LetStmt::make(
          d[static_cast<size_t>(k)],
          ir::select(inside, x_.load({vec(at, lanes_)}), splat(Expr(0.0f), lanes_)), step);
    }
    return loop(t, 0, tiles_, loop(cb, 0, p_.C / lanes_, step));
  }

  // Stage "multiply": M[pos, t, :] = V[pos, t, :] x Up[pos, panel] for the task's panels, an
  // mr x nv register tile (mr tiles, nv vectors of output channels) over all C.
  Stmt multiply(const Buffer& v, const Buffer& m, Expr ob) const {
    Var pos("pos"), jp("jp"), ib("ib"), k("k");
    Buffer acc = Buffer::make(ctx_.name + "_acc", DType::f32(), {Expr(mr_ * nr_)},
                              ir::MemoryScope::kLocal);
    auto acc_at = [&](int64_t i, int64_t u) { return vec(Expr(i * nr_ + u * lanes_), lanes_); };
    const int64_t m_row = o_panels_ * nr_;
    Expr t0 = ib * mr_, panel = ob * o_panels_ + jp;
    std::vector<Stmt> zero, fma, store;
    const std::vector<Var> b_vec = vector_vars("b", nv_, lanes_);
    for (const auto& cell : tile_cells(mr_, nv_)) {
      const int64_t i = cell[0], u = cell[1];
      zero.push_back(ir::Store::make(acc, splat(Expr(0.0f), lanes_), {acc_at(i, u)}));
      Expr a = splat(v.load({(pos * tiles_ + t0 + i) * p_.C + k}), lanes_);
      fma.push_back(ir::Store::make(acc, ir::fma(a, b_vec[u], acc.load({acc_at(i, u)})),
                                    {acc_at(i, u)}));
      store.push_back(ir::Store::make(
          m, acc.load({acc_at(i, u)}),
          {vec((pos * tiles_ + t0 + i) * m_row + jp * nr_ + u * lanes_, lanes_)}));
    }
    Stmt step = ir::Seq::make(std::move(fma));
    for (int64_t u = nv_ - 1; u >= 0; --u)
      step = ir::LetStmt::make(b_vec[u], packed_w_.load({pos, panel, k, vec(Expr(u * lanes_), lanes_)}),
                               step);
    Stmt tile = ir::Allocate::make(
        acc, ir::Seq::make({ir::Seq::make(std::move(zero)),
                            ir::For::make(k, 0, p_.C, ForKind::kSerial, step),
                            ir::Seq::make(std::move(store))}));
    return loop(pos, 0, 16, loop(jp, 0, o_panels_, loop(ib, 0, tiles_ / mr_, tile)));
  }

  // Stage "transform output": the 2x2 outputs A^T m A of each of the block's tiles (those of
  // the plane), a vector of output channels at a time. A^T = [1 1 1 0; 0 1 -1 -1].
  Stmt transform_output(const Buffer& m, Expr n, Expr block, Expr ob) const {
    Var t("t"), ov("ov");
    Expr tile = block * tiles_ + t;
    Expr oh = tile / tw_ * 2, ow = tile % tw_ * 2;
    const int64_t m_row = o_panels_ * nr_;
    const std::vector<Var> mv = vector_vars("m", 16, lanes_);
    auto at = [](const std::array<Expr, 4>& x) -> std::array<Expr, 2> {
      return {x[0] + x[1] + x[2], x[1] - x[2] - x[3]};
    };
    std::array<std::array<Expr, 4>, 2> rows;  // (A^T m)[a][j]
    for (int j = 0; j < 4; ++j) {
      std::array<Expr, 2> r = at({mv[j], mv[4 + j], mv[8 + j], mv[12 + j]});
      rows[0][j] = r[0];
      rows[1][j] = r[1];
    }
    Expr oc = ob * m_row + ov * lanes_;
    std::vector<Stmt> stores;
    for (int a = 0; a < 2; ++a) {
      std::array<Expr, 2> y = at(rows[a]);
      for (int b = 0; b < 2; ++b) {
        Stmt s = ir::Store::make(out_, ir::final_value(y[b]), {n, vec(oc, lanes_), oh + a, ow + b});
        // Odd output extents: the last tile row or column has one pixel.
        Expr inside;
        if (a && p_.OH % 2) inside = oh + a < p_.OH;
        if (b && p_.OW % 2) inside = inside.defined() ? (inside && ow + b < p_.OW) : (ow + b < p_.OW);
        stores.push_back(inside.defined() ? ir::IfThenElse::make(inside, s) : s);
      }
    }
    Stmt step = ir::Seq::make(std::move(stores));
    for (int k = 15; k >= 0; --k)
      step = ir::LetStmt::make(mv[static_cast<size_t>(k)],
                               m.load({vec((k * tiles_ + t) * m_row + ov * lanes_, lanes_)}), step);
    Expr count = ir::min(Expr(tiles_), th_ * tw_ - block * tiles_);
    return ir::For::make(t, 0, count, ForKind::kSerial,
                         loop(ov, 0, o_panels_ * nv_, step));
  }

  const TemplateContext& ctx_;
  ConvProblem p_;
  int64_t lanes_, mr_, nv_, nr_, tiles_, o_panels_, th_, tw_, tile_blocks_, panels_, o_blocks_;
  Layout x_layout_;
  Buffer x_, w_, packed_w_, out_;
};

// The problems the Winograd template computes, whatever the layouts: 3x3, stride and dilation
// 1, one group, whole vectors of input and output channels, and few enough input channels that
// the smallest task (one tile, one vector of output channels) keeps its scratch in L2.
bool winograd_problem(const TemplateContext& ctx) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  const int64_t v = ctx.target.vector_lanes_f32();
  return p && p->KH == 3 && p->KW == 3 && p->sh == 1 && p->sw == 1 && p->dh == 1 && p->dw == 1 &&
         p->groups == 1 && p->C % v == 0 && p->O % v == 0 && ctx.inputs[1].layout.empty() &&
         16 * (p->C + v) * 4 <= ctx.target.l2_bytes();
}

bool applies_winograd(const TemplateContext& ctx) {
  const std::vector<LayoutStep> blocked = channels_blocked(ctx.target.vector_lanes_f32());
  return winograd_problem(ctx) && ctx.inputs[0].layout == blocked && ctx.output.layout == blocked;
}

LayoutOptions winograd_layouts(const TemplateContext& ctx) {
  LayoutOptions o;
  if (!winograd_problem(ctx)) return o;
  const std::vector<LayoutStep> blocked = channels_blocked(ctx.target.vector_lanes_f32());
  o.inputs = {{blocked}, {}};
  o.output = {blocked};
  return o;
}

tune::Space winograd_space(const TemplateContext& ctx) {
  const Target& t = ctx.target;
  const int64_t lanes = t.vector_lanes_f32(), regs = t.vector_registers(), l2 = t.l2_bytes();
  const std::optional<ConvProblem> p = conv_problem(ctx);
  const int64_t C = p ? p->C : lanes, O = p ? p->O : lanes;
  std::vector<int64_t> mr = {1, 2, 3, 4, 5, 6, 7, 8};
  if (regs >= 32) mr.insert(mr.end(), {10, 12, 14});
  tune::Space s;
  s.param("mr", mr)
      .param("nv", {1, 2, 3, 4})
      .param("tile_rows", {1, 2, 4, 8})
      .param("o_panels", {1, 2, 4, 8, 16, 32});
  s.rule("register tile fits the vector registers",
         [=](const tune::Config& c) { return c["mr"] * c["nv"] + c["nv"] + 1 <= regs; });
  s.rule("panels of the task divide the output channels",
         [=](const tune::Config& c) { return O % (c["o_panels"] * c["nv"] * lanes) == 0; });
  // V and M of one task, 16 rows of tiles each, stay in L2.
  s.rule("task scratch fits L2", [=](const tune::Config& c) {
    return 16 * c["tile_rows"] * c["mr"] * (C + c["o_panels"] * c["nv"] * lanes) * 4 <= l2;
  });
  // kFast: tasks of 64 or 128 output channels (all of them when fewer) and either register
  // tiles of most registers over 16 to 64 tiles, or, on a plane of few tiles, one block of
  // exactly its tiles (512x7x7 has 16: blocks of 24 would compute 8 in vain).
  const int64_t plane_tiles = p ? ceil_div(p->OH, 2) * ceil_div(p->OW, 2) : 0;
  s.prefer("register tiles and blocks near the registers and caches", [=](const tune::Config& c) {
    const int64_t tiles = c["tile_rows"] * c["mr"], channels = c["o_panels"] * c["nv"] * lanes;
    const int64_t accumulators = c["mr"] * c["nv"];
    const bool wide = c["nv"] >= 2 && accumulators >= (regs - 4) * 3 / 4 && tiles >= 16 &&
                      tiles <= 64;
    const bool exact = plane_tiles < 32 && tiles == plane_tiles && accumulators >= regs / 2;
    return (channels == std::min<int64_t>(O, 64) || channels == 128) && (wide || exact);
  });
  tune::Config best;
  best.set("mr", regs >= 32 ? 12 : 6);
  best.set("nv", 2);
  best.set("tile_rows", 2);
  for (int64_t ob : {4, 2, 1}) {
    best.set("o_panels", ob);
    if (O % (ob * 2 * lanes) == 0) break;
  }
  if (!s.broken_rules(best).empty()) {
    // Narrow outputs or very many channels: the valid config with the most accumulators, then
    // the most tiles per task (applies_winograd makes sure that one exists).
    std::vector<tune::Config> valid = s.all();
    auto rank = [](const tune::Config& c) {
      return std::pair{c["mr"] * c["nv"], c["tile_rows"] * c["mr"]};
    };
    if (!valid.empty())
      best = *std::max_element(valid.begin(), valid.end(),
                               [&](const tune::Config& a, const tune::Config& b) {
                                 return rank(a) < rank(b);
                               });
  }
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_winograd(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  if (!p || !applies_winograd(ctx))
    return absl::InvalidArgumentError("conv2d_winograd does not apply to " + ctx.name);
  WinogradKernel k(ctx, *p, c);
  return kernel_with_packed_input(ctx, 1, {k.x(), k.w(), k.out()}, k.packed_w(), k.pack_w(),
                                  k.body(), k.packed_shape());
}

// ---- direct convolution, channel-blocked --------------------------------------------------

// Output channels of each group are cut into blocks of OCB = oc_vectors x lanes; weights are
// packed as Wp[block, c, kh, kw, OCB] (zero past the group's last channel). A parallel task is
// (image, oc block, block of `tiles` x ow_block output pixels, pixels counted row-major over the
// output plane, so tiles run across row ends and only the plane's last tile is partial). The
// task accumulates into a [pixels, OCB] scratch over blocks of input channels (kc deep in
// (c, kh, kw) elements), then transposes it into the NCHW output.
class DirectConvKernel {
 public:
  DirectConvKernel(const TemplateContext& ctx, const ConvProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), lanes_(ctx.target.vector_lanes_f32()) {
    owb_ = c["ow_block"];
    ocv_ = c["oc_vectors"];
    ocb_ = ocv_ * lanes_;
    pix_block_ = c["tiles"] * owb_;
    pix_blocks_ = ceil_div(p.P(), pix_block_);
    blocks_per_group_ = ceil_div(p.Og(), ocb_);
    blocks_ = p.groups * blocks_per_group_;
    if (p.padded()) {
      // Only the rows and columns that some tap reads.
      hp_ = (p.OH - 1) * p.sh + (p.KH - 1) * p.dh + 1;
      wp_ = (p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1;
    } else {
      hp_ = p.H;
      wp_ = p.W;
    }
    const std::vector<LayoutStep>& x_steps = ctx.inputs[0].layout;
    x_layout_ = Layout::of({Expr(p.N), Expr(p.C), Expr(p.H), Expr(p.W)}, x_steps);
    // The padded copy keeps the input's layout, over the padded extents.
    in_layout_ = Layout::of({Expr(p.N), Expr(p.C), Expr(hp_), Expr(wp_)}, x_steps);
    row_stride_ = *ir::as_const_int(*in_layout_.stride_of(2));
    col_stride_ = *ir::as_const_int(*in_layout_.stride_of(3));
    // NCHW{v}c input whose groups start on block boundaries: chunks of whole blocks (below).
    if (!x_steps.empty() && x_steps == channels_blocked(col_stride_) &&
        (p.groups == 1 || p.Cg() % col_stride_ == 0))
      cblock_ = col_stride_;
    // Input channels per cache block: at most kc / (KH x KW), the blocks as even as possible; in
    // NCHW{v}c the nearest multiple of v.
    chunks_ = ceil_div(p.Cg(), std::clamp<int64_t>(c["kc"] / (p.KH * p.KW), 1, p.Cg()));
    ic_chunk_ = ceil_div(p.Cg(), chunks_);
    if (cblock_) ic_chunk_ = std::max(cblock_, (ic_chunk_ + cblock_ / 2) / cblock_ * cblock_);
    chunks_ = ceil_div(p.Cg(), ic_chunk_);
    x_ = Buffer::make(ctx.name + "_x", DType::f32(), {x_layout_.physical_size()});
    w_ = Buffer::make(ctx.name + "_w", DType::f32(),
                      {Expr(p.O), Expr(p.Cg()), Expr(p.KH), Expr(p.KW)});
    packed_w_ = Buffer::make(ctx.name + "_wp", DType::f32(),
                             {Expr(blocks_), Expr(p.Cg()), Expr(p.KH), Expr(p.KW), Expr(ocb_)});
    input_ = p.padded()
                 ? Buffer::make(ctx.name + "_xp", DType::f32(), {in_layout_.physical_size()})
                 : x_;
    in_place_ = !ctx.output.layout.empty() && p.Og() % ocb_ == 0;
    // Row-major: [N, O, pixels], stored from the tile transposed. Other layouts: the logical
    // [N, O, OH, OW] through the layout, a vector of output channels at a time.
    out_ = ctx.output.layout.empty()
               ? Buffer::make(ctx.name + "_y", DType::f32(), {Expr(p.N), Expr(p.O), Expr(p.P())})
               : Buffer::make(ctx.name + "_y", DType::f32(),
                              Layout::of({Expr(p.N), Expr(p.O), Expr(p.OH), Expr(p.OW)},
                                         ctx.output.layout));
  }

  std::vector<int64_t> packed_shape() const { return {blocks_, p_.Cg(), p_.KH, p_.KW, ocb_}; }
  const Buffer& x() const { return x_; }
  const Buffer& w() const { return w_; }
  const Buffer& packed_w() const { return packed_w_; }
  const Buffer& out() const { return out_; }

  // Stage "pack W": Wp[b, c, kh, kw, l] = W[g * Og + j * OCB + l, c, kh, kw] for block b = (g, j).
  Stmt pack_w() const {
    Var b("b"), c("c"), kh("kh"), kw("kw"), l("l");
    Expr oc_in_group = b % blocks_per_group_ * ocb_ + l;
    Expr oc = b / blocks_per_group_ * p_.Og() + ir::min(oc_in_group, Expr(p_.Og() - 1));
    Stmt copy = ir::Store::make(
        packed_w_, ir::select(oc_in_group < p_.Og(), w_.load({oc, c, kh, kw}), Expr(0.0f)),
        {b, c, kh, kw, l});
    return ir::For::make(
        b, 0, blocks_, ForKind::kParallel,
        loop(c, 0, p_.Cg(), loop(kh, 0, p_.KH, loop(kw, 0, p_.KW, loop(l, 0, ocb_, copy)))));
  }

  Stmt body() const {
    if (!p_.padded()) return multiply();
    return ir::Allocate::make(input_, ir::Seq::make({pad_input(), multiply()}));
  }

 private:
  // Stage "pad input": xp[n, c, hp, wp] = x[n, c, hp - pt, wp - pl], zero outside the image.
  // NCHW, NCHW{v}c and NHWC (NCHW{C}c in memory) copy whole rows (W x v contiguous floats; in
  // NCHW{v}c the lanes past the last channel are copied too and never read); other layouts go
  // element by element.
  Stmt pad_input() const {
    const std::vector<LayoutStep>& steps = ctx_.inputs[0].layout;
    const int64_t v = steps.empty() ? 1 : col_stride_;
    if (!steps.empty() && steps != channels_blocked(v) && steps != channels_last())
      return pad_input_any_layout();
    const int64_t row = wp_ * v, left = p_.pl * v;
    Var plane("plane"), hp("hp"), col("col");
    Expr ih = hp - p_.pt;
    Expr dst = (plane * hp_ + hp) * row;
    Expr src = (plane * p_.H + ih) * (p_.W * v);
    int64_t copy_end = std::min(p_.pl + p_.W, wp_) * v;
    Stmt copy;
    if (copy_end > left)
      copy = ir::For::make(col, Expr(left), Expr(copy_end - left), ForKind::kVectorized,
                           ir::Store::make(input_, x_.load({src + col - left}), {dst + col}));
    Stmt fill = ir::Seq::make({zero_range(input_, dst, 0, std::min(left, row), "col"), copy,
                               zero_range(input_, dst, std::max(copy_end, left), row, "col")});
    Stmt body =
        ir::IfThenElse::make(ih >= 0 && ih < p_.H, fill, zero_range(input_, dst, 0, row, "col"));
    return ir::For::make(plane, 0, p_.N * ceil_div(p_.C, v), ForKind::kParallel,
                         loop(hp, 0, hp_, body));
  }

  // The same in any layout: a loop over the copy's physical dims in memory order, each element
  // read from the input at its logical index (zero in the border and in padding channels).
  Stmt pad_input_any_layout() const {
    const std::vector<Expr>& extents = in_layout_.physical_shape();
    std::vector<Var> phys;
    for (size_t d = 0; d < extents.size(); ++d) phys.push_back(Var("p" + std::to_string(d)));
    std::vector<Expr> at = in_layout_.logical_index(std::vector<Expr>(phys.begin(), phys.end()));
    Expr c = at[1], ih = at[2] - p_.pt, iw = at[3] - p_.pl;
    Expr inside = c < p_.C && ih >= 0 && ih < p_.H && iw >= 0 && iw < p_.W;
    Expr value = x_.load({x_layout_.offset(
        {at[0], clamp_index(c, p_.C), clamp_index(ih, p_.H), clamp_index(iw, p_.W)})});
    Expr dst = Expr(0);
    for (size_t d = 0; d < phys.size(); ++d) dst = dst + phys[d] * in_layout_.strides()[d];
    Stmt body = ir::Store::make(input_, ir::select(inside, value, Expr(0.0f)), {dst});
    for (int d = static_cast<int>(phys.size()) - 1; d >= 0; --d) {
      const auto k = static_cast<size_t>(d);
      ForKind kind = d == 0 ? ForKind::kParallel
                     : k + 1 == phys.size() ? ForKind::kVectorized
                                            : ForKind::kSerial;
      body = ir::For::make(phys[k], 0, extents[k], kind, body);
    }
    return body;
  }

  // Stage "multiply": parallel over (image, oc block, pixel block).
  Stmt multiply() const {
    auto work = schedule::spatial(p_.N, blocks_, pix_blocks_);
    LOOM_CHECK(work.ok(), work.status().ToString());
    const int64_t tail = p_.P() % owb_;
    Var t("task");
    Stmt body = work->on(t, [&](const std::vector<Expr>& task) {
      Expr n = task[0], b = task[1], pblock = task[2];
      Expr group = b / blocks_per_group_, j = b % blocks_per_group_;
      Expr pix0 = pblock * pix_block_;
      Expr npix = ir::min(Expr(pix_block_), p_.P() - pix0);
      Buffer scratch = Buffer::make(ctx_.name + "_tile", DType::f32(), {Expr(pix_block_ * ocb_)});
      Var chunk("chunk"), tile("tile");
      Expr c0 = chunk * ic_chunk_;
      Expr clen = ir::min(Expr(ic_chunk_), p_.Cg() - c0);
      Expr first = chunk == 0, last = chunk == chunks_ - 1;
      std::vector<Stmt> per_chunk;
      per_chunk.push_back(ir::For::make(
          tile, 0, npix / owb_, ForKind::kSerial,
          micro_kernel(owb_, scratch, pix0 + tile * owb_, tile * owb_, n, b, group, c0, clen,
                       first, last)));
      if (tail)
        per_chunk.push_back(ir::IfThenElse::make(
            pblock == pix_blocks_ - 1,
            micro_kernel(tail, scratch, Expr(p_.P() - tail), p_.P() - tail - pix0, n, b, group,
                         c0, clen, first, last)));
      Stmt chunks = loop(chunk, 0, chunks_, ir::Seq::make(std::move(per_chunk)));
      if (in_place_) return chunks;
      Stmt store = store_tile(scratch, n, group, j, pix0, npix);
      return ir::Allocate::make(scratch, ir::Seq::make({chunks, store}));
    });
    return ir::For::make(t, 0, work->num_workers(), ForKind::kParallel, body);
  }

  // Stage "store": the [pixels, OCB] scratch into the output. Row-major, transposed into the
  // output planes; other layouts, a vector of output channels per pixel (dense where the layout
  // keeps channels contiguous), the channels past the group's last one by lanes.
  Stmt store_tile(const Buffer& scratch, Expr n, Expr group, Expr j, Expr pix0, Expr npix) const {
    Var l("l"), q("q");
    Expr oc0 = group * p_.Og() + j * ocb_;
    Expr valid = ir::min(Expr(ocb_), p_.Og() - j * ocb_);
    if (ctx_.output.layout.empty())
      return ir::For::make(
          l, 0, valid, ForKind::kSerial,
          ir::For::make(q, 0, npix, ForKind::kSerial,
                        ir::Store::make(out_, scratch.load({q * ocb_ + l}), {n, oc0 + l, pix0 + q})));
    Var v("v"), pix("pix");
    Expr oh = pix / p_.OW, ow = pix % p_.OW;
    Expr first = v * lanes_;
    Stmt vector = ir::Store::make(out_, scratch.load({vec(q * ocb_ + first, lanes_)}),
                                  {n, vec(oc0 + first, lanes_), oh, ow});
    Stmt lanes = ir::For::make(
        l, 0, valid - first, ForKind::kSerial,
        ir::Store::make(out_, scratch.load({q * ocb_ + first + l}), {n, oc0 + first + l, oh, ow}));
    Stmt each = ir::IfThenElse::make(first + lanes_ <= valid, vector, lanes);
    return ir::For::make(
        q, 0, npix, ForKind::kSerial,
        ir::LetStmt::make(pix, pix0 + q,
                          ir::For::make(v, 0, ocv_, ForKind::kUnrolled,
                                        ir::IfThenElse::make(first < valid, each))));
  }

  // scratch[s0 : s0 + npx, :] (+)= the conv of output pixels pix0 : pix0 + npx over input
  // channels c0 : c0 + clen of the group. One input value per pixel is broadcast and multiplied
  // with the OCB weights of the tap; pixel i reads the input at its own base offset (pixels may
  // lie on different rows), plus the tap's constant offset.
  Stmt micro_kernel(int64_t npx, const Buffer& scratch, Expr pix0, Expr s0, Expr n, Expr b,
                    Expr group, Expr c0, Expr clen, Expr first, Expr last) const {
    Buffer acc =
        Buffer::make(ctx_.name + "_acc", DType::f32(), {Expr(npx * ocb_)}, ir::MemoryScope::kLocal);
    auto acc_at = [&](int64_t i, int64_t v) { return vec(Expr(i * ocb_ + v * lanes_), lanes_); };
    std::vector<std::vector<int64_t>> cells = tile_cells(npx, ocv_);
    // In place: each pixel's row and column, for its output index.
    std::vector<Var> row, col;
    for (int64_t i = 0; i < npx; ++i) {
      row.push_back(Var("oh" + std::to_string(i)));
      col.push_back(Var("ow" + std::to_string(i)));
    }
    Expr oc0 = group * p_.Og() + b % blocks_per_group_ * ocb_;
    std::vector<Stmt> zero, load, fma, store, store_final;
    for (const auto& cell : cells) {
      int64_t i = cell[0], v = cell[1];
      zero.push_back(ir::Store::make(acc, splat(Expr(0.0f), lanes_), {acc_at(i, v)}));
      Expr value = acc.load({acc_at(i, v)});
      if (in_place_) {
        std::vector<Expr> at = {n, vec(oc0 + v * lanes_, lanes_), row[i], col[i]};
        load.push_back(ir::Store::make(acc, out_.load(at), {acc_at(i, v)}));
        store.push_back(ir::Store::make(out_, value, at));
        store_final.push_back(ir::Store::make(out_, ir::final_value(value), at));
      } else {
        Expr at = vec((s0 + i) * ocb_ + v * lanes_, lanes_);
        load.push_back(ir::Store::make(acc, scratch.load({at}), {acc_at(i, v)}));
        store.push_back(ir::Store::make(scratch, value, {at}));
      }
    }
    Var kh("kh"), kw("kw");
    std::vector<Var> base;
    for (int64_t i = 0; i < npx; ++i) base.push_back(Var("base" + std::to_string(i)));
    // Channel c of the group. In NCHW{v}c, chunks hold whole blocks and c = cb * v + ci, so the
    // channel's offset needs no division by v in the loop: the block's, plus ci.
    Var c("c"), cb("cb"), ci("ci");
    Expr chan = c, chan_offset;
    if (cblock_) {
      chan = cb * cblock_ + ci;
      chan_offset = in_layout_.offset({n, group * p_.Cg() + cb * cblock_, Expr(0), Expr(0)}) + ci;
    } else {
      chan_offset = in_layout_.offset({n, group * p_.Cg() + c, Expr(0), Expr(0)});
    }
    // The input's offset is affine in the row and column (stride_of), whatever its layout.
    Expr tap = chan_offset + kh * (p_.dh * row_stride_) + kw * (p_.dw * col_stride_);
    const std::vector<Var> w_vec = vector_vars("w", ocv_, lanes_);
    for (const auto& cell : cells) {
      int64_t i = cell[0], v = cell[1];
      Expr xv = splat(input_.load({tap + base[i]}), lanes_);
      fma.push_back(
          ir::Store::make(acc, ir::fma(xv, w_vec[v], acc.load({acc_at(i, v)})), {acc_at(i, v)}));
    }
    Stmt step = ir::Seq::make(std::move(fma));
    for (int64_t v = ocv_ - 1; v >= 0; --v)
      step = ir::LetStmt::make(
          w_vec[v], packed_w_.load({b, chan, kh, kw, vec(Expr(v * lanes_), lanes_)}), step);
    const int64_t fmas_per_row = npx * ocv_ * p_.KW;
    Stmt taps = ir::For::make(kh, 0, p_.KH, window_kind(fmas_per_row * p_.KH, 160),
                              ir::For::make(kw, 0, p_.KW, window_kind(fmas_per_row, 200), step));
    Stmt body = cblock_ ? ir::For::make(cb, c0 / cblock_, (clen + (cblock_ - 1)) / cblock_,
                                        ForKind::kSerial,
                                        ir::For::make(ci, 0, ir::min(Expr(cblock_),
                                                                     c0 + clen - cb * cblock_),
                                                      ForKind::kSerial, taps))
                        : ir::For::make(c, c0, clen, ForKind::kSerial, taps);
    Stmt stores = ir::Seq::make(std::move(store));
    if (in_place_)
      stores = ir::IfThenElse::make(last, ir::Seq::make(std::move(store_final)), stores);
    Stmt tile = ir::Allocate::make(
        acc, ir::Seq::make({ir::IfThenElse::make(first, ir::Seq::make(std::move(zero)),
                                                 ir::Seq::make(std::move(load))),
                            body, stores}));
    // Each pixel's input offset (and output row and column), computed once per tile.
    for (int64_t i = npx - 1; i >= 0; --i) {
      Expr pixel = pix0 + i;
      if (in_place_)
        tile = ir::LetStmt::make(row[i], pixel / p_.OW,
                                 ir::LetStmt::make(col[i], pixel % p_.OW, tile));
      tile = ir::LetStmt::make(
          base[i], pixel / p_.OW * (p_.sh * row_stride_) + pixel % p_.OW * (p_.sw * col_stride_),
          tile);
    }
    return tile;
  }

  const TemplateContext& ctx_;
  ConvProblem p_;
  int64_t lanes_, owb_, ocv_, ocb_, ic_chunk_, chunks_, pix_block_, pix_blocks_;
  int64_t blocks_per_group_, blocks_, hp_, wp_;
  // Output in another layout, every channel block whole: partial sums accumulate in the output
  // itself (final stores marked), a vector of channels per pixel, with no scratch tile.
  bool in_place_ = false;
  int64_t cblock_ = 0;                 // v of an NCHW{v}c input (0: another layout)
  Layout x_layout_, in_layout_;        // the input's and its padded copy's
  int64_t row_stride_, col_stride_;    // of the padded copy (x itself when unpadded)
  Buffer x_, w_, packed_w_, input_, out_;
};

tune::Space direct_space(const TemplateContext& ctx) {
  const Target& t = ctx.target;
  const int64_t lanes = t.vector_lanes_f32(), regs = t.vector_registers();
  const int64_t l1 = t.l1d_bytes(), l2 = t.l2_bytes();
  std::vector<int64_t> owb = {1, 2, 3, 4, 5, 6, 7, 8};
  if (regs >= 32) owb.insert(owb.end(), {10, 12, 14});
  tune::Space s;
  s.param("ow_block", owb)
      .param("oc_vectors", {1, 2, 3, 4})
      .param("kc", {64, 128, 256, 512, 1024, 2048})
      .param("tiles", {1, 2, 4, 8, 16, 32});
  // Accumulators, the weight vectors of one tap and one broadcast input live in registers.
  s.rule("register tile fits the vector registers", [=](const tune::Config& c) {
    return c["ow_block"] * c["oc_vectors"] + c["oc_vectors"] + 1 <= regs;
  });
  // The weights of one kc block of one oc block stay in L2 across the task's pixel tiles.
  s.rule("weight block fits L2",
         [=](const tune::Config& c) { return c["kc"] * c["oc_vectors"] * lanes * 4 <= l2 / 2; });
  // The task's accumulator scratch stays in L1.
  s.rule("task tile fits L1", [=](const tune::Config& c) {
    return c["tiles"] * c["ow_block"] * c["oc_vectors"] * lanes * 4 <= l1 / 2;
  });
  // kFast: every register tile that holds at least half the registers in accumulators (the
  // measured optimum moves among them from layer to layer and is flat near the top: on a
  // 32-register AVX-512 machine the best of 64x56x56, 512x7x7 and the 7x7 stem were 4x4, 8x2
  // and 4x4 ow_block x oc_vectors, within 2% of a dozen others), each with the deepest weight
  // block that fits L1 and two task sizes.
  s.prefer("register tile holds half the registers in accumulators", [=](const tune::Config& c) {
    return c["oc_vectors"] >= 2 && c["ow_block"] * c["oc_vectors"] >= regs / 2;
  });
  s.prefer("deepest weight block that fits L1", [=](const tune::Config& c) {
    int64_t bytes = c["kc"] * c["oc_vectors"] * lanes * 4;
    return bytes <= l1 && bytes * 2 > l1;
  });
  s.prefer("8 or 16 tiles per task",
           [](const tune::Config& c) { return c["tiles"] == 8 || c["tiles"] == 16; });
  tune::Config best;
  best.set("ow_block", regs >= 32 ? 8 : 6);
  best.set("oc_vectors", 2);
  best.set("tiles", 16);
  for (int64_t kc : {512, 256, 128, 64}) {
    best.set("kc", kc);
    if (kc * 2 * lanes * 4 <= l1) break;
  }
  for (int64_t tiles : {16, 8, 4, 2, 1}) {
    best.set("tiles", tiles);
    if (s.broken_rules(best).empty()) break;
  }
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_direct(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  if (!p) return absl::InvalidArgumentError("conv2d_direct does not apply to " + ctx.name);
  DirectConvKernel k(ctx, *p, c);
  return kernel_with_packed_input(ctx, 1, {k.x(), k.w(), k.out()}, k.packed_w(), k.pack_w(),
                                  k.body(), k.packed_shape());
}

// The direct kernel reads its input through any layout whose offset is affine in the row and
// column, and writes any layout that stores each element once. Channel blocks narrower than a
// vector would waste the tile's lanes: other layouts need a vector of channels per group.
bool applies_direct(const TemplateContext& ctx) {
  std::optional<ConvProblem> p = conv_problem(ctx);
  if (!p || !ctx.inputs[1].layout.empty()) return false;
  const std::vector<LayoutStep>& in = ctx.inputs[0].layout;
  const std::vector<LayoutStep>& out = ctx.output.layout;
  if (in.empty() && out.empty()) return true;
  if (p->Og() < ctx.target.vector_lanes_f32()) return false;
  Layout x = Layout::of({Expr(p->N), Expr(p->C), Expr(p->H), Expr(p->W)}, in);
  Layout y = Layout::of({Expr(p->N), Expr(p->O), Expr(p->OH), Expr(p->OW)}, out);
  return x.ok() && y.ok() && x.is_injective() && y.is_injective() && x.stride_of(2) &&
         x.stride_of(3) && ir::as_const_int(*x.stride_of(2)) && ir::as_const_int(*x.stride_of(3));
}

// NCHW and NCHW{v}c, v the vector width: each output vector one channel block.
LayoutOptions direct_layouts(const TemplateContext& ctx) {
  LayoutOptions o;
  const int64_t v = ctx.target.vector_lanes_f32();
  if (!applies_direct(ctx) || conv_problem(ctx)->Og() < v) return o;
  std::vector<std::vector<LayoutStep>> choices = {{}, channels_blocked(v)};
  o.inputs = {choices, {}};
  o.output = choices;
  return o;
}

}  // namespace

std::vector<ScheduleTemplate> conv2d_cpu_templates() {
  // A template; with `layouts`, one that reads and writes through the tensors' layouts.
  auto cpu_template = [](std::string name, bool (*applies)(const TemplateContext&),
                         tune::Space (*space)(const TemplateContext&),
                         absl::StatusOr<ScheduledKernel> (*build)(const TemplateContext&,
                                                                  const tune::Config&),
                         LayoutOptions (*layouts)(const TemplateContext&) = nullptr) {
    ScheduleTemplate t;
    t.name = std::move(name);
    t.target_kind = Target::Kind::kCpu;
    t.applies = applies;
    t.space = space;
    t.build = build;
    t.any_layout = layouts != nullptr;
    if (layouts) t.layouts = layouts;
    return t;
  };
  return {cpu_template("conv2d_1x1_gemm", applies_1x1, gemm_1x1_space, build_1x1),
          cpu_template("conv2d_depthwise", applies_depthwise, depthwise_space, build_depthwise),
          cpu_template("conv2d_winograd", applies_winograd, winograd_space, build_winograd,
                       winograd_layouts),
          cpu_template("conv2d_direct", applies_direct, direct_space, build_direct,
                       direct_layouts)};
}

}  // namespace loom::ops
