// conv2d on CUDA GPUs: direct convolution of NCHW f32 input and OIHW weights, any strides,
// padding, dilations and groups (depthwise is groups == channels). A block computes a tile of
// oc_tile output channels x px_tile output pixels of one image with the task mapping
//   repeat(oc_per_thread, px_per_thread) * spatial(oc_threads, px_threads)
// from its threads to the tile (consecutive threads take consecutive pixels: coalesced input
// reads and output stores); each thread accumulates its register tile over the input channels
// of its group and the kernel window. Loads of one input element shared by a thread's output
// channels (groups == 1) are one load after common-subexpression elimination.

#include "ops/conv_cuda.hpp"

#include <algorithm>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/conv_problem.hpp"
#include "ops/cuda_common.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

// Kernel windows up to this many taps per row are unrolled.
constexpr int64_t kMaxUnrolledTaps = 7;

struct ConvTiles {
  int64_t threads, oc_threads, px_threads, oc_per_thread, px_per_thread;
  explicit ConvTiles(const tune::Config& c)
      : threads(c["threads"]),
        oc_threads(c["oc_threads"]),
        px_threads(c["threads"] / c["oc_threads"]),
        oc_per_thread(c["oc_per_thread"]),
        px_per_thread(c["px_per_thread"]) {}
  int64_t oc_tile() const { return oc_threads * oc_per_thread; }
  int64_t px_tile() const { return px_threads * px_per_thread; }
  // Accumulators, the weights and inputs of one tap, about 24 for addresses.
  int64_t registers() const {
    return oc_per_thread * px_per_thread + oc_per_thread + px_per_thread + 24;
  }
};

absl::StatusOr<ScheduledKernel> build_direct_conv(const TemplateContext& ctx,
                                                  const tune::Config& config) {
  std::optional<ConvProblem> pr = conv_problem(ctx);
  if (!pr) return absl::InvalidArgumentError("CUDA conv2d template does not apply to " + ctx.name);
  const ConvProblem& p = *pr;
  const Conv2dAttrs& a = p.attrs;
  const ConvTiles t(config);
  const int64_t pixels = p.oh * p.ow, og = p.o / a.groups;
  Buffer x =
      Buffer::make(ctx.name + "_x", DType::f32(), {Expr(p.n), Expr(p.c), Expr(p.h), Expr(p.w)});
  Buffer w =
      Buffer::make(ctx.name + "_w", DType::f32(), {Expr(p.o), Expr(p.cg), Expr(p.kh), Expr(p.kw)});
  Buffer y = Buffer::make(ctx.name + "_y", DType::f32(), {Expr(p.n), Expr(p.o), Expr(pixels)});
  Buffer acc = Buffer::make(ctx.name + "_acc", DType::f32(),
                            {Expr(t.oc_per_thread * t.px_per_thread)}, ir::MemoryScope::kLocal);

  const int64_t oc_tiles = ceil_div(p.o, t.oc_tile()), px_tiles = ceil_div(pixels, t.px_tile());
  auto blocks = schedule::spatial(p.n, oc_tiles, px_tiles);
  auto threads = schedule::spatial(t.oc_threads, t.px_threads);
  auto registers = schedule::repeat(t.oc_per_thread, t.px_per_thread);
  LOOM_RETURN_IF_ERROR(blocks.status());
  LOOM_RETURN_IF_ERROR(threads.status());
  LOOM_RETURN_IF_ERROR(registers.status());
  const std::vector<std::vector<int64_t>> cells = registers->tasks_of(0);

  Var block("block"), tid("tid");
  Stmt body = blocks->on(block, [&](const std::vector<Expr>& tile) {
    return threads->on(tid, [&](const std::vector<Expr>& thread) {
      // Register (ro, rp): output channel and pixel, clamped for loads (stores are guarded).
      auto channel = [&](int64_t ro) {
        return tile[1] * t.oc_tile() + ro * t.oc_threads + thread[0];
      };
      auto pixel = [&](int64_t rp) {
        return tile[2] * t.px_tile() + rp * t.px_threads + thread[1];
      };
      auto clamp = [](const Expr& e, int64_t extent, bool needed) {
        return needed ? ir::min(e, Expr(extent - 1)) : e;
      };
      const bool oc_tail = p.o % t.oc_tile() != 0, px_tail = pixels % t.px_tile() != 0;
      Var c("c"), r("r"), s("s");
      std::vector<Stmt> zero, taps, store;
      for (const std::vector<int64_t>& cell : cells) {
        const int64_t ro = cell[0], rp = cell[1];
        Expr at(ro * t.px_per_thread + rp);
        zero.push_back(ir::Store::make(acc, Expr(0.0f), {at}));
        Expr o = clamp(channel(ro), p.o, oc_tail), px = clamp(pixel(rp), pixels, px_tail);
        Expr ih =
            px / Expr(p.ow) * int64_t{a.stride_h} + r * int64_t{a.dilation_h} - int64_t{a.pad_top};
        Expr iw =
            px % Expr(p.ow) * int64_t{a.stride_w} + s * int64_t{a.dilation_w} - int64_t{a.pad_left};
        Expr inside = ih >= int64_t{0} && ih < p.h && iw >= int64_t{0} && iw < p.w;
        Expr ih_c = ir::min(ir::max(ih, Expr(int64_t{0})), Expr(p.h - 1));
        Expr iw_c = ir::min(ir::max(iw, Expr(int64_t{0})), Expr(p.w - 1));
        Expr ic = og == p.o ? Expr(c) : o / Expr(og) * p.cg + c;
        Expr tap = ir::select(inside, x.load({tile[0], ic, ih_c, iw_c}), Expr(0.0f));
        taps.push_back(
            ir::Store::make(acc, ir::fma(tap, w.load({o, c, r, s}), acc.load({at})), {at}));
        Expr inside_tile;
        if (oc_tail) inside_tile = channel(ro) < p.o;
        if (px_tail)
          inside_tile =
              inside_tile.defined() ? (inside_tile && pixel(rp) < pixels) : pixel(rp) < pixels;
        Stmt st =
            ir::Store::make(y, ir::final_value(acc.load({at})), {tile[0], channel(ro), pixel(rp)});
        store.push_back(inside_tile.defined() ? ir::IfThenElse::make(inside_tile, st) : st);
      }
      // Stages: "zero", "accumulate over channels and window", "store".
      auto window_loop = [](const Var& v, int64_t extent, Stmt inner) {
        return ir::For::make(
            v, Expr(int64_t{0}), Expr(extent),
            extent <= kMaxUnrolledTaps ? ir::ForKind::kUnrolled : ir::ForKind::kSerial,
            std::move(inner));
      };
      Stmt accumulate =
          ir::For::make(c, Expr(int64_t{0}), Expr(p.cg), ir::ForKind::kSerial,
                        window_loop(r, p.kh, window_loop(s, p.kw, ir::Seq::make(std::move(taps)))));
      return ir::Allocate::make(acc, ir::Seq::make({ir::Seq::make(std::move(zero)), accumulate,
                                                    ir::Seq::make(std::move(store))}));
    });
  });
  return kernel_of(ctx.name, {x, w, y},
                   gpu_launch(block, blocks->num_workers(), tid, t.threads, body));
}

tune::Space direct_conv_space(const TemplateContext& ctx) {
  const GpuProperties gp = gpu_properties(ctx.target);
  std::optional<ConvProblem> p = conv_problem(ctx);
  std::vector<int64_t> threads;
  for (int64_t warps : {2, 4, 8})
    if (warps * gp.warp_size <= gp.max_threads_per_block) threads.push_back(warps * gp.warp_size);
  tune::Space s;
  s.param("threads", threads)
      .param("oc_threads", {1, 2, 4, 8})
      .param("oc_per_thread", {1, 2, 4})
      .param("px_per_thread", {1, 2, 4});
  s.rule("registers per thread within the limits", [=](const tune::Config& c) {
    const ConvTiles t(c);
    return t.registers() <= gp.max_registers_per_thread &&
           t.registers() * t.threads <= gp.registers_per_block;
  });
  // Whole warps along the pixels, so that a warp's loads and stores are contiguous.
  s.rule("a warp's threads take consecutive pixels",
         [=](const tune::Config& c) { return c["threads"] / c["oc_threads"] >= gp.warp_size; });
  s.prefer("4 to 8 outputs per thread", [](const tune::Config& c) {
    const int64_t outputs = c["oc_per_thread"] * c["px_per_thread"];
    return outputs >= 4 && outputs <= 8;
  });

  // Default: 128 threads; one channel per thread when each output channel reads its own input
  // channel (depthwise), else 4 x 2 outputs per thread over 4 channel rows, fewer channels when
  // there are few.
  tune::Config best({{"threads", 4 * gp.warp_size},
                     {"oc_threads", 1},
                     {"oc_per_thread", 1},
                     {"px_per_thread", 4}});
  if (p && !p->depthwise()) {
    best.set("oc_threads", 4);
    best.set("oc_per_thread", 4);
    best.set("px_per_thread", 2);
    while (best["oc_per_thread"] > 1 && best["oc_threads"] * best["oc_per_thread"] > p->o)
      best.set("oc_per_thread", best["oc_per_thread"] / 2);
    while (best["oc_threads"] > 1 && best["oc_threads"] * best["oc_per_thread"] > p->o)
      best.set("oc_threads", best["oc_threads"] / 2);
  }
  s.default_config(best);
  return s;
}

}  // namespace

ScheduleTemplate conv2d_cuda_template() {
  return cuda_template(
      "cuda_direct_conv2d",
      [](const TemplateContext& ctx) {
        return ctx.target.is_cuda() && conv_problem(ctx).has_value();
      },
      direct_conv_space, build_direct_conv);
}

}  // namespace loom::ops
