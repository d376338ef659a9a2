// Tensor-core GEMMs on CUDA: f16 or bf16 operands, f32 accumulation, the output in the operands'
// type, for matmul and, as an implicit GEMM, for conv2d. The mma.sync GEMM (sm_80 and later) is
// described here; the warpgroup (wgmma) GEMM of sm_90 further down.
//
// A block computes a BM x BN tile of C; its warps split the tile with the task mapping
// spatial(warps_m, warps_n), and each warp covers its tile with repeat(mma_m, mma_n) of
// mma.sync m16n8k16 tiles, whose accumulators follow the instruction's fragment mapping
//   repeat(2, 1) * spatial(8, 4) * repeat(1, 2)
// from the warp's 32 lanes to the 16 x 8 tile (lane l holds rows l/4 and l/4 + 8, columns
// 2 (l%4) and 2 (l%4) + 1). K goes by block_k-deep slices through `stages` shared-memory buffers:
// the copies of slice kt + stages - 1 are in flight while slice kt is multiplied, and one barrier
// per slice orders them. Fragments come from shared memory with ldmatrix (A as it is, B
// transposed). The 8 rows one ldmatrix phase reads must fall in different banks; the shared
// tiles are stored in one of two loom layouts (a choice of the space) that do so:
//  - padded: rows padded by 8 elements (16 bytes), row_major(...).pad(2, cols + 8);
//  - swizzled: no padding; the 16-byte chunks of a row permuted by an XOR with the row,
//    row_major(...).split(2, 8).swizzle(2, 1, width, step) (see Layout::swizzle), which keeps
//    every chunk contiguous for cp.async and ldmatrix and saves the padding's shared memory.
//
// Split-K, for shapes with too few output tiles and a deep K: ops/split_k_cuda.hpp.
//
// An operand stored as a row-major [batch, rows, cols] tensor with cols a multiple of 8 is copied
// with cp.async, 16 bytes at a time (zero-filled past its rows and columns). Others are read
// element by element through registers with the same pipeline: unaligned shapes, and the NCHW
// implicit GEMM's B operand, whose element (k, pixel) is the input element under tap k of the
// pixel's window (zero in the padding).
//
// conv2d (groups 1) is an implicit GEMM in one of two layouts:
//  - NCHW: per image, C[o][pixel] = W[o][k] * X[k][pixel] over k = (c, r, s): the weights are A
//    as stored (OIHW is row-major O x C*KH*KW) and the NCHW output is C as stored;
//  - NHWC or NCHW{b}c (the channels innermost, b a multiple of 8), with the weights HWIO (the
//    layouts the template offers the layout assignment): over the batch's pixels,
//    C[pixel][o] = X[pixel][k] * W[k][o] over k = (r, s, c). A row of A is a pixel's window
//    with the channels innermost, so 8 channels of one tap are 16 contiguous bytes that cp.async
//    gathers (zero-filled in the padding) when C is a multiple of 8; an NHWC 1x1 stride-1 conv
//    reads the image as the [N*H*W, C] matrix. B is the weights as stored and C the output.

#include <algorithm>
#include <numeric>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/conv_cuda.hpp"
#include "ops/conv_problem.hpp"
#include "ops/cuda_common.hpp"
#include "ops/gemm_problem.hpp"
#include "ops/matmul_cuda.hpp"
#include "ops/split_k_cuda.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

constexpr int64_t kMmaM = 16, kMmaN = 8, kMmaK = 16;
// Elements of a 16-byte copy, and the padding of a shared row.
constexpr int64_t kChunk = 8, kPad = 8;

// The levels of a config, and what follows from them.
struct TcTiles {
  int64_t warps_m, warps_n, mma_m, mma_n, block_k, stages, split_k;
  bool swizzle;

  explicit TcTiles(const tune::Config& c)
      : warps_m(c["warps_m"]),
        warps_n(c["warps_n"]),
        mma_m(c["mma_m"]),
        mma_n(c["mma_n"]),
        block_k(c["block_k"]),
        stages(c["stages"]),
        split_k(c["split_k"]),
        swizzle(c["swizzle"] != 0) {}

  int64_t threads() const { return warps_m * warps_n * 32; }
  int64_t accumulators() const { return mma_m * mma_n * 4; }  // per thread
  int64_t warp_m() const { return mma_m * kMmaM; }
  int64_t warp_n() const { return mma_n * kMmaN; }
  int64_t bm() const { return warps_m * warp_m(); }
  int64_t bn() const { return warps_n * warp_n(); }
  int64_t a_stride() const { return block_k + (swizzle ? 0 : kPad); }
  int64_t b_stride() const { return bn() + (swizzle ? 0 : kPad); }
  // The layout of `stages` shared tiles of rows x cols.
  Layout shared_layout(int64_t rows, int64_t cols) const {
    Layout plain = Layout::row_major({Expr(stages), Expr(rows), Expr(cols)});
    if (!swizzle) return plain.pad(2, cols + kPad);
    // Chunk c of row r goes to c ^ ((r / step) % width): the 8 rows of a phase span
    // 8 * cols * 2 bytes; rows sharing a 128-byte line (step of them) are apart already.
    const int64_t chunks = cols / kChunk;
    return plain.split(2, kChunk).swizzle(2, 1, std::min<int64_t>(chunks, 8),
                                          std::max<int64_t>(1, 8 / chunks));
  }
  // The two tiles' bytes, with room for aligning the second to 1024 (swizzled tiles are).
  int64_t shared_bytes() const {
    return stages * (bm() * a_stride() + block_k * b_stride()) * 2 + (swizzle ? 1024 : 0);
  }
  // 32-bit registers a thread needs: accumulators, fragments, about 40 for addresses.
  int64_t registers() const { return accumulators() + mma_m * 4 + mma_n * 2 + 40; }
  // How the threads copy a rows x cols slice in 16-byte chunks: spatial(threads / lanes, lanes)
  // with lanes along a row's chunks, repeated over the rows.
  int64_t chunk_lanes(int64_t cols) const { return std::gcd(threads(), cols / kChunk); }
  bool copies_divide(int64_t rows, int64_t cols) const {
    const int64_t lanes = chunk_lanes(cols);
    return cols / kChunk == lanes && rows % (threads() / lanes) == 0;
  }
};

// One GEMM operand: a parameter of the kernel and how to read element (batch, row, col) of the
// operand matrix from it.
struct Operand {
  Buffer buffer;
  // The value at (batch, row, col), rows and cols in range; null: buffer is the row-major
  // [batch or 1, rows, cols] matrix itself.
  std::function<Expr(const Expr&, const Expr&, const Expr&)> element;
  bool batched = false;
  // For a gathered operand (element set) whose 8-element chunks along a row are contiguous in
  // memory, so that cp.async copies them: the chunk at (batch, row, col), col a multiple of 8,
  // rows and cols in range, as its first element's load and whether it holds the operand's
  // elements (else zeros: a convolution's padding). Null: none.
  struct Chunk {
    Expr first, inside;
  };
  std::function<Chunk(const Expr&, const Expr&, const Expr&)> chunk;

  // Whether cp.async can copy the operand: chunks of 16 bytes along rows of `cols` elements.
  bool async(int64_t cols) const { return (!element || chunk) && cols % kChunk == 0; }
  // The load of element (batch, row, col) of the plain matrix, or of the chunk there.
  Chunk at(const Expr& batch, const Expr& row, const Expr& col) const {
    if (chunk) return chunk(batch, row, col);
    return {buffer.load({batch, row, col}), Expr()};
  }
};

// The copy with cp.async of the slice_rows x slice_cols slice at (row0, col0) of operand src
// (a row-major [batch, rows, cols] matrix, or gathered in chunks) to dst[stage] by `threads`
// threads: the chunk mapping spatial(threads / lanes, lanes) * repeat(slice_rows / ..., 1) with a
// row's 16-byte chunks across lanes, one copy per chunk, the bytes past the matrix (where the tails
// say the slice can reach past rows or cols) zero-filled and the source address clamped in bounds
// (none of it is read).
Stmt async_copy_slice(const Var& tid, int64_t threads, const Buffer& dst, const Expr& stage,
                      const Operand& src, const Expr& batch, int64_t slice_rows, int64_t slice_cols,
                      const Expr& row0, int64_t rows, bool row_tail, const Expr& col0, int64_t cols,
                      bool col_tail) {
  const int64_t lanes = std::gcd(threads, slice_cols / kChunk), lane_rows = threads / lanes;
  auto spread = schedule::spatial(lane_rows, lanes);
  auto steps = schedule::repeat(slice_rows / lane_rows, int64_t{1});
  LOOM_CHECK(spread.ok() && steps.ok(), "tensor-core GEMM copy mappings");
  return spread->on(tid, [&](const std::vector<Expr>& w) {
    std::vector<Stmt> s;
    for (const std::vector<int64_t>& step : steps->tasks_of(0)) {
      const Expr r = w[0] + step[0] * lane_rows, c = w[1] * kChunk;
      const Expr row = row0 + r, col = col0 + c;
      Expr inside;
      auto also = [&inside](Expr e) { inside = inside.defined() ? (inside && e) : e; };
      if (row_tail) also(row < rows);
      if (col_tail) also(col < cols);
      const Expr src_row = row_tail ? ir::min(row, Expr(rows - 1)) : row;
      const Expr src_col = col_tail ? ir::min(col, Expr(cols - kChunk)) : col;
      const Operand::Chunk chunk = src.at(batch, src_row, src_col);
      if (chunk.inside.defined()) also(chunk.inside);
      Expr bytes = inside.defined() ? ir::select(inside, Expr(int64_t{16}), Expr(int64_t{0}))
                                    : Expr(int64_t{16});
      s.push_back(ir::Evaluate::make(
          ir::Call::make("cp_async_16", {dst.load({stage, r, c}), chunk.first, bytes})));
    }
    return ir::Seq::make(std::move(s));
  });
}

// Stage "main loop" of a GEMM block with `stages` shared buffers: the accumulators zeroed, the
// first stages - 1 slices of the block's range (of `slices`, split by `split`) started, then per
// slice: wait for this thread's copies, `publish` (a barrier, after whatever the instruction
// reading the slice needs), start the slice stages - 1 ahead (into the buffer every thread has
// finished with), multiply. load(slice, stage) copies a slice; async: whether some copy is a
// cp.async (else no commits and waits).
Stmt main_loop(const Buffer& acc, int64_t accumulators, int64_t slices, int64_t stages,
               const SplitK& split, const Expr& split_index, bool async,
               const std::function<Stmt(const Expr&, const Expr&)>& load,
               const std::function<Stmt(const Expr&)>& multiply, const Stmt& publish) {
  auto cp_async = [async](const std::string& name, std::vector<Expr> args = {}) {
    return async ? ir::Evaluate::make(ir::Call::make(name, std::move(args)))
                 : ir::Evaluate::make(Expr(int64_t{0}));
  };
  const int64_t ahead = stages - 1;
  const auto [first, count] = split.slices_of(split_index, slices);
  std::vector<Stmt> s;
  for (int64_t i = 0; i < accumulators; ++i)
    s.push_back(ir::Store::make(acc, Expr(0.0f), {Expr(i)}));
  for (int64_t k = 0; k < ahead; ++k) {
    if (split.splits() > 1)
      s.push_back(ir::IfThenElse::make(Expr(k) < count, load(first + k, Expr(k))));
    else if (k < slices)
      s.push_back(load(Expr(k), Expr(k)));
    s.push_back(cp_async("cp_async_commit"));
  }
  Var kt("kt");
  Stmt step = ir::Seq::make({
      cp_async("cp_async_wait", {Expr(ahead - 1)}),
      publish,
      ir::IfThenElse::make(kt + ahead < count, load(first + kt + ahead, (kt + ahead) % stages)),
      cp_async("cp_async_commit"),
      multiply(kt % stages),
  });
  s.push_back(ir::For::make(kt, Expr(int64_t{0}), count, ir::ForKind::kSerial, step));
  return ir::Seq::make(std::move(s));
}

// The copy of the slice_rows x slice_cols slice at (row0, col0) of operand `op` (rows x cols,
// batch g where it is batched) to dst[stage] by `threads` threads. The tails say whether the
// slice can reach past `rows` or `cols`; what lies past them is zero.
//  - async: async_copy_slice (op.async(cols));
//  - else element by element: repeat(...) * spatial(threads / lanes, lanes) over the elements,
//    consecutive threads on consecutive columns, through registers.
Stmt copy_slice(const Var& tid, int64_t threads, const Buffer& dst, const Expr& stage,
                const Operand& op, const Expr& g, bool async, int64_t slice_rows,
                int64_t slice_cols, const Expr& row0, int64_t rows, bool row_tail,
                const Expr& col0, int64_t cols, bool col_tail) {
  const Expr batch = op.batched ? g : Expr(int64_t{0});
  if (async)
    return async_copy_slice(tid, threads, dst, stage, op, batch, slice_rows, slice_cols, row0, rows,
                            row_tail, col0, cols, col_tail);
  const int64_t lanes = std::gcd(threads, slice_cols), lane_rows = threads / lanes;
  LOOM_CHECK(slice_rows % lane_rows == 0, "the threads divide the slice's rows");
  auto elements = schedule::repeat(slice_rows / lane_rows, slice_cols / lanes) *
                  schedule::spatial(lane_rows, lanes);
  LOOM_CHECK(elements.ok(), "tensor-core GEMM copy mappings");
  return elements->on(tid, [&](const std::vector<Expr>& e) {
    const Expr row = row0 + e[0], col = col0 + e[1];
    Expr inside;
    auto also = [&inside](Expr x) { inside = inside.defined() ? (inside && x) : x; };
    if (row_tail) also(row < rows);
    if (col_tail) also(col < cols);
    const Expr src_row = row_tail ? ir::min(row, Expr(rows - 1)) : row;
    const Expr src_col = col_tail ? ir::min(col, Expr(cols - 1)) : col;
    Expr v = op.element ? op.element(batch, src_row, src_col)
                        : op.buffer.load({batch, src_row, src_col});
    if (inside.defined()) v = ir::select(inside, v, ir::cast(dst.dtype(), Expr(0.0f)));
    return ir::Store::make(dst, v, {stage, e[0], e[1]});
  });
}

// G GEMMs C[g] (M x N) = A (M x K) * B (K x N); c is [G, M, N] row-major, or c_at gives the
// index of C[g][row][col] in c (an NHWC convolution's output, in logical indices for the fused
// epilogue).
struct TcProblem {
  int64_t G = 1, M = 0, N = 0, K = 0;
  Operand a, b;
  Buffer c;
  std::function<std::vector<Expr>(const Expr&, const Expr&, const Expr&)> c_at;
  bool c_columns_contiguous = false;  // see GemmOutput::at_columns_contiguous
  std::vector<ir::Param> params;  // the kernel's, in the node's order

  GemmOutput output() const { return {c, M, N, c_at, c_columns_contiguous}; }
};

class TensorCoreGemm {
 public:
  TensorCoreGemm(const TemplateContext& ctx, TcProblem p, const tune::Config& c)
      : ctx_(ctx), p_(std::move(p)), t_(c), in_(ctx.inputs[0].dtype) {
    a_async_ = p_.a.async(p_.K);
    b_async_ = p_.b.async(p_.N);
    a_shared_ = Buffer::make(ctx.name + "_As", in_, t_.shared_layout(t_.bm(), t_.block_k),
                             ir::MemoryScope::kShared);
    b_shared_ = Buffer::make(ctx.name + "_Bs", in_, t_.shared_layout(t_.block_k, t_.bn()),
                             ir::MemoryScope::kShared);
    acc_ = local("acc", DType::f32(), t_.accumulators());
    a_frag_ = local("a_frag", in_, t_.mma_m * 8);
    b_frag_ = local("b_frag", in_, t_.mma_n * 4);
    split_ = SplitK(ctx.name, p_.G * ceil_div(p_.M, t_.bm()) * ceil_div(p_.N, t_.bn()),
                    t_.split_k, t_.accumulators(), t_.threads());
  }

  const std::vector<ir::Param>& params() const { return p_.params; }

  // Stage "blocks over tiles": spatial(G, tiles_m, tiles_n, split_k) over the blocks.
  Stmt kernel() {
    const int64_t tiles_m = ceil_div(p_.M, t_.bm()), tiles_n = ceil_div(p_.N, t_.bn());
    auto blocks = schedule::spatial(p_.G, tiles_m, tiles_n, t_.split_k);
    LOOM_CHECK(blocks.ok(), blocks.status().ToString());
    Var block("block"), tid("tid");
    Stmt body = blocks->on(block, [&](const std::vector<Expr>& tile) {
      g_ = tile[0];
      m0_ = tile[1] * t_.bm();
      n0_ = tile[2] * t_.bn();
      tile_id_ = (tile[0] * tiles_m + tile[1]) * tiles_n + tile[2];
      split_index_ = tile[3];
      return block_tile(tid);
    });
    return split_.around_launch(gpu_launch(block, blocks->num_workers(), tid, t_.threads(), body));
  }

 private:
  Buffer local(const std::string& what, DType t, int64_t n) const {
    return Buffer::make(ctx_.name + "_" + what, t, {Expr(n)}, ir::MemoryScope::kLocal);
  }

  // The thread's place: spatial(warps_m, warps_n) over the warps gives the warp's tile; the lane
  // within the warp is what the instructions' fragment mappings read.
  void place_thread(const Var& tid) {
    auto warps = schedule::spatial(t_.warps_m, t_.warps_n);
    LOOM_CHECK(warps.ok(), "tensor-core GEMM warp mapping");
    lane_ = tid % Expr(int64_t{32});
    warps->on(tid / Expr(int64_t{32}), [&](const std::vector<Expr>& w) {
      warp_row0_ = w[0] * t_.warp_m();
      warp_col0_ = w[1] * t_.warp_n();
      return ir::Evaluate::make(Expr(int64_t{0}));
    });
  }

  // Stage "copy slice kt to shared buffer `stage`".
  Stmt load_slice(const Var& tid, const Expr& kt, const Expr& stage) const {
    const Expr k0 = kt * t_.block_k;
    const bool m_tail = p_.M % t_.bm() != 0, n_tail = p_.N % t_.bn() != 0,
               k_tail = p_.K % t_.block_k != 0;
    return ir::Seq::make({
        copy_slice(tid, t_.threads(), a_shared_, stage, p_.a, g_, a_async_, t_.bm(), t_.block_k,
                   m0_, p_.M, m_tail, k0, p_.K, k_tail),
        copy_slice(tid, t_.threads(), b_shared_, stage, p_.b, g_, b_async_, t_.block_k, t_.bn(),
                   k0, p_.K, k_tail, n0_, p_.N, n_tail),
    });
  }

  // Stage "multiply": per 16-deep step of the slice in shared buffer `stage`, A's fragments
  // (ldmatrix: lane l gives row l % 16, columns 8 (l / 16) .. of the 16 x 16 tile), B's in
  // pairs of 8-wide tiles (ldmatrix.trans: lane l gives k row l % 16, columns 8 (l / 16) .. of
  // the 16 x 16 pair), then the warp tile's mma_m x mma_n products.
  Stmt multiply(const Expr& stage) const {
    Var kk("kk");
    const Expr row = lane_ % Expr(int64_t{16}), half = lane_ / Expr(int64_t{16}) * kChunk;
    std::vector<Stmt> s;
    for (int64_t mi = 0; mi < t_.mma_m; ++mi)
      s.push_back(ir::Evaluate::make(ir::Call::make(
          "ldmatrix_x4", {a_frag_.load({Expr(mi * 8)}),
                          a_shared_.load({stage, warp_row0_ + mi * kMmaM + row,
                                          kk * kMmaK + half})})));
    for (int64_t pair = 0; pair < t_.mma_n / 2; ++pair)
      s.push_back(ir::Evaluate::make(ir::Call::make(
          "ldmatrix_x4_trans", {b_frag_.load({Expr(pair * 8)}),
                                b_shared_.load({stage, kk * kMmaK + row,
                                                warp_col0_ + pair * 2 * kMmaN + half})})));
    for (int64_t mi = 0; mi < t_.mma_m; ++mi)
      for (int64_t nj = 0; nj < t_.mma_n; ++nj)
        s.push_back(ir::Evaluate::make(ir::Call::make(
            "mma_m16n8k16", {acc_.load({Expr((mi * t_.mma_n + nj) * 4)}),
                             a_frag_.load({Expr(mi * 8)}), b_frag_.load({Expr(nj * 4)})})));
    return ir::For::make(kk, Expr(int64_t{0}), Expr(t_.block_k / kMmaK), ir::ForKind::kUnrolled,
                         ir::Seq::make(std::move(s)));
  }

  // Stage "store C": each accumulator through the fragment mapping to its element of C, final
  // values, guarded past M and N. The mapping's innermost repeat(1, 2), the two adjacent columns
  // a lane holds, is stored as one pair.
  Stmt store_c() const {
    auto lanes = schedule::spatial(8, 4);
    auto rows = schedule::repeat(2, 1);
    LOOM_CHECK(lanes.ok() && rows.ok(), "mma fragment mapping");
    return lanes->on(lane_, [&](const std::vector<Expr>& l) {
      std::vector<Stmt> s;
      for (int64_t mi = 0; mi < t_.mma_m; ++mi)
        for (int64_t nj = 0; nj < t_.mma_n; ++nj)
          for (const std::vector<int64_t>& reg : rows->tasks_of(0)) {
            // repeat(2, 1) scales by spatial(8, 4)'s rows.
            Expr row = m0_ + warp_row0_ + mi * kMmaM + reg[0] * 8 + l[0];
            Expr col = n0_ + warp_col0_ + nj * kMmaN + l[1] * 2;
            s.push_back(store_accumulators(p_.output(), g_, row, col, acc_,
                                           (mi * t_.mma_n + nj) * 4 + reg[0] * 2, 2,
                                           p_.M % t_.bm() != 0, p_.N % t_.bn() != 0));
          }
      return ir::Seq::make(std::move(s));
    });
  }

  // One block's tile: the main loop over its K range (publishing each slice with a barrier),
  // then store C, or reduce the splits first.
  Stmt block_tile(const Var& tid) {
    place_thread(tid);
    Stmt body = ir::Seq::make({
        main_loop(
            acc_, t_.accumulators(), ceil_div(p_.K, t_.block_k), t_.stages, split_, split_index_,
            a_async_ || b_async_,
            [&](const Expr& kt, const Expr& stage) { return load_slice(tid, kt, stage); },
            [&](const Expr& stage) { return multiply(stage); }, ir::Barrier::make()),
        split_.reduce(tid, tile_id_, split_index_, acc_, store_c()),
    });
    for (const Buffer& b : {b_frag_, a_frag_, acc_, b_shared_, a_shared_})
      body = ir::Allocate::make(b, body);
    return split_.around_block(body);
  }

  const TemplateContext& ctx_;
  TcProblem p_;
  TcTiles t_;
  DType in_;
  bool a_async_ = false, b_async_ = false;
  Buffer a_shared_, b_shared_, acc_, a_frag_, b_frag_;
  SplitK split_;
  Expr g_, m0_, n0_, tile_id_, split_index_, lane_, warp_row0_, warp_col0_;
};

bool tensor_core_type(const TemplateContext& ctx) {
  if (!ctx.target.is_cuda() || ctx.target.sm_arch() < 80 || ctx.inputs.size() != 2) return false;
  const DType t = ctx.inputs[0].dtype;
  return (t == DType::f16() || t == DType::bf16()) && ctx.output.dtype == t;
}

std::optional<GemmProblem> matmul_problem(const TemplateContext& ctx) {
  if (!tensor_core_type(ctx)) return std::nullopt;
  return gemm_problem(ctx, ctx.inputs[0].dtype);
}

// The layouts an implicit GEMM takes a convolution in: all row-major (NCHW image and output,
// OIHW weights), or the image and the output in one layout with the channels innermost, NHWC or
// NCHW{b}c with b a multiple of 8, and the weights HWIO ("channels last").
enum class ConvLayouts { kNchw, kChannelsLast };

// b when steps is NCHW{b}c, else 0.
int64_t channel_block(const std::vector<LayoutStep>& steps) {
  if (steps.empty() || steps[0].kind != LayoutStep::Kind::kSplit) return 0;
  return steps == channels_blocked(steps[0].a) ? steps[0].a : 0;
}

std::optional<ConvLayouts> conv_layouts(const TemplateContext& ctx) {
  const std::vector<LayoutStep>& x = ctx.inputs[0].layout;
  const std::vector<LayoutStep>& w = ctx.inputs[1].layout;
  const std::vector<LayoutStep>& y = ctx.output.layout;
  if (x.empty() && w.empty() && y.empty()) return ConvLayouts::kNchw;
  const int64_t block = channel_block(x);
  if (x == y && w == weights_hwio() && (x == channels_last() || (block > 0 && block % kChunk == 0)))
    return ConvLayouts::kChannelsLast;
  return std::nullopt;
}

// Implicit GEMM: groups 1 only (grouped and depthwise convs keep the direct template), in the
// layouts above; NCHW{b}c where b divides the channels and output channels (no padding lanes).
std::optional<ConvProblem> implicit_gemm_problem(const TemplateContext& ctx) {
  if (!tensor_core_type(ctx) || !conv_layouts(ctx)) return std::nullopt;
  std::optional<ConvProblem> p = conv_problem(ctx, ctx.inputs[0].dtype);
  if (!p || p->attrs.groups != 1) return std::nullopt;
  const int64_t block = channel_block(ctx.inputs[0].layout);
  if (block > 0 && (p->c % block != 0 || p->o % block != 0)) return std::nullopt;
  return p;
}

// The layouts offered for a convolution the implicit GEMM takes row-major: NHWC and NCHW8c with
// HWIO weights, where the channels and output channels are multiples of 8, so that cp.async
// copies 16-byte chunks of the image's windows (8 channels of one tap) and of the weights' rows.
LayoutOptions implicit_gemm_layouts(const TemplateContext& ctx) {
  std::optional<ConvProblem> p = implicit_gemm_problem(ctx);
  if (!p || p->c % kChunk != 0 || p->o % kChunk != 0) return {};
  const std::vector<std::vector<LayoutStep>> images = {channels_last(), channels_blocked(kChunk)};
  return {{images, {weights_hwio()}}, images};
}

// Tap (r, s) of output pixel (oy, ox)'s window: the input row and column, clamped into the
// image (an address to read), and whether they lie inside it (else the padding's zero).
struct WindowTap {
  Expr ih, iw, inside;
};
WindowTap window_tap(const ConvProblem& c, const Expr& oy, const Expr& ox, const Expr& r,
                     const Expr& s) {
  const Conv2dAttrs& a = c.attrs;
  const Expr ih = oy * int64_t{a.stride_h} + r * int64_t{a.dilation_h} - int64_t{a.pad_top};
  const Expr iw = ox * int64_t{a.stride_w} + s * int64_t{a.dilation_w} - int64_t{a.pad_left};
  return {ir::min(ir::max(ih, Expr(int64_t{0})), Expr(c.h - 1)),
          ir::min(ir::max(iw, Expr(int64_t{0})), Expr(c.w - 1)),
          ih >= int64_t{0} && ih < c.h && iw >= int64_t{0} && iw < c.w};
}

// The convolution with the channels innermost (NHWC, NCHW{b}c) as one GEMM over the batch's
// pixels: C[pixel][o] = A[pixel][k] * B[k][o] over k = (r, s, c). A's row is the pixel's window,
// c innermost (chunks of 8 channels contiguous: cp.async gathers them); an NHWC 1x1 stride-1
// conv reads the image as it is, the [N * H * W, C] matrix. B is the HWIO weights as stored, C
// the output in its layout.
void channels_last_conv_problem(const TemplateContext& ctx, const ConvProblem& c, TcProblem& p) {
  const DType t = ctx.inputs[0].dtype;
  const std::vector<LayoutStep>& layout = ctx.output.layout;
  const int64_t pixels = c.oh * c.ow;
  p.G = 1;
  p.M = c.n * pixels;
  p.N = c.o;
  p.K = c.kh * c.kw * c.c;
  p.b = {Buffer::make(ctx.name + "_w", t, {Expr(int64_t{1}), Expr(p.K), Expr(c.o)}), nullptr,
         false};
  p.c = Buffer::make(ctx.name + "_y", t,
                     Layout::of({Expr(c.n), Expr(c.o), Expr(c.oh), Expr(c.ow)}, layout));
  p.c_at = [c, pixels](const Expr&, const Expr& row, const Expr& col) {
    return std::vector<Expr>{row / Expr(pixels), col, row / Expr(c.ow) % Expr(c.oh),
                             row % Expr(c.ow)};
  };
  // NHWC: a pixel's channels side by side, pixel p's first at p * o.
  p.c_columns_contiguous = layout == channels_last();
  if (c.pointwise() && layout == channels_last()) {
    p.a = {Buffer::make(ctx.name + "_x", t, {Expr(int64_t{1}), Expr(c.n * c.h * c.w), Expr(c.c)}),
           nullptr, false};
  } else {
    Buffer x = Buffer::make(ctx.name + "_x", t,
                            Layout::of({Expr(c.n), Expr(c.c), Expr(c.h), Expr(c.w)}, layout));
    // Tap k = (r, s, ch) of the pixel's window: its image element, clamped into the image, and
    // whether it lies inside (else the padding's zero).
    auto tap = [x, c, pixels](const Expr& px, const Expr& k) {
      const Expr r = k / Expr(c.kw * c.c), s = k / Expr(c.c) % Expr(c.kw), ch = k % Expr(c.c);
      const WindowTap w = window_tap(c, px / Expr(c.ow) % Expr(c.oh), px % Expr(c.ow), r, s);
      return Operand::Chunk{x.load({px / Expr(pixels), ch, w.ih, w.iw}), w.inside};
    };
    p.a = {x,
           [tap, x](const Expr&, const Expr& px, const Expr& k) {
             const Operand::Chunk e = tap(px, k);
             return ir::select(e.inside, e.first, ir::cast(x.dtype(), Expr(0.0f)));
           },
           false};
    if (c.c % kChunk == 0)
      p.a.chunk = [tap](const Expr&, const Expr& px, const Expr& k) { return tap(px, k); };
  }
  p.params = {p.a.buffer, p.b.buffer, p.c};
}

// The GEMMs of the node, with the kernel's parameters.
std::optional<TcProblem> tc_problem(const TemplateContext& ctx) {
  const DType t = ctx.inputs.empty() ? DType::f32() : ctx.inputs[0].dtype;
  TcProblem p;
  if (std::optional<GemmProblem> g = matmul_problem(ctx)) {
    p.G = g->G;
    p.M = g->M;
    p.N = g->N;
    p.K = g->K;
    p.a = {Buffer::make(ctx.name + "_A", t, {Expr(g->G), Expr(g->M), Expr(g->K)}), nullptr, true};
    p.b = {Buffer::make(ctx.name + "_B", t,
                        {Expr(g->b_batched ? g->G : 1), Expr(g->K), Expr(g->N)}),
           nullptr, g->b_batched};
    p.c = Buffer::make(ctx.name + "_C", t, {Expr(g->G), Expr(g->M), Expr(g->N)});
    p.params = {p.a.buffer, p.b.buffer, p.c};
    return p;
  }
  std::optional<ConvProblem> cv = implicit_gemm_problem(ctx);
  if (!cv) return std::nullopt;
  const ConvProblem c = *cv;
  if (conv_layouts(ctx) == ConvLayouts::kChannelsLast) {
    channels_last_conv_problem(ctx, c, p);
    return p;
  }
  const int64_t taps = c.kh * c.kw, pixels = c.oh * c.ow;
  p.G = c.n;
  p.M = c.o;
  p.N = pixels;
  p.K = c.c * taps;
  Buffer w = Buffer::make(ctx.name + "_w", t, {Expr(int64_t{1}), Expr(c.o), Expr(p.K)});
  p.c = Buffer::make(ctx.name + "_y", t, {Expr(c.n), Expr(c.o), Expr(pixels)});
  p.a = {w, nullptr, false};
  if (c.pointwise()) {
    // A 1x1 conv reads X as it is: [n, c, h * w].
    p.b = {Buffer::make(ctx.name + "_x", t, {Expr(c.n), Expr(c.c), Expr(pixels)}), nullptr, true};
  } else {
    Buffer x = Buffer::make(ctx.name + "_x", t, {Expr(c.n), Expr(c.c), Expr(c.h), Expr(c.w)});
    p.b = {x,
           [x, c, taps](const Expr& n, const Expr& k, const Expr& px) {
             const Expr ch = k / Expr(taps), r = k / Expr(c.kw) % Expr(c.kh), s = k % Expr(c.kw);
             const WindowTap w = window_tap(c, px / Expr(c.ow), px % Expr(c.ow), r, s);
             return ir::select(w.inside, x.load({n, ch, w.ih, w.iw}),
                               ir::cast(x.dtype(), Expr(0.0f)));
           },
           true};
  }
  p.params = {p.b.buffer, p.a.buffer, p.c};
  return p;
}

tune::Space tensor_core_space(const TemplateContext& ctx) {
  const GpuProperties p = gpu_properties(ctx.target);
  std::optional<TcProblem> problem = tc_problem(ctx);
  tune::Space s;
  s.param("warps_m", {1, 2, 4})
      .param("warps_n", {1, 2, 4})
      .param("mma_m", {1, 2, 4})
      .param("mma_n", {2, 4, 8})
      .param("block_k", {16, 32, 64})
      .param("stages", {2, 3, 4})
      .param("swizzle", {0, 1});
  s.rule("threads per block within the device limit", [=](const tune::Config& c) {
    return TcTiles(c).threads() <= p.max_threads_per_block;
  });
  s.rule("the stages of A and B fit the (opt-in) shared memory of a block",
         [=](const tune::Config& c) {
           return TcTiles(c).shared_bytes() <= p.shared_memory_per_block_optin;
         });
  s.rule("registers per thread within the limits", [=](const tune::Config& c) {
    const TcTiles t(c);
    return t.registers() <= p.max_registers_per_thread &&
           t.registers() * t.threads() <= p.registers_per_block;
  });
  s.rule("the threads divide the copies of a slice", [=](const tune::Config& c) {
    const TcTiles t(c);
    return t.copies_divide(t.bm(), t.block_k) && t.copies_divide(t.block_k, t.bn());
  });
  auto blocks = [problem](const tune::Config& c) {
    const TcTiles t(c);
    return problem ? problem->G * ceil_div(problem->M, t.bm()) * ceil_div(problem->N, t.bn())
                   : 0;
  };
  auto split_of = split_k_choices(s, p.sm_count, blocks, [problem](const tune::Config& c) {
    return problem ? ceil_div(problem->K, c["block_k"]) : 0;
  });
  // kFast: 4 to 8 warps, warp tiles of 32 x 32 and more, slices 32 deep, 3 or 4 stages.
  s.prefer("4 to 8 warps per block", [](const tune::Config& c) {
    const int64_t w = c["warps_m"] * c["warps_n"];
    return w >= 4 && w <= 8;
  });
  s.prefer("warp tile of 32 x 32 or more",
           [](const tune::Config& c) { return c["mma_m"] >= 2 && c["mma_n"] >= 4; });
  s.prefer("slices 32 deep", [](const tune::Config& c) { return c["block_k"] == 32; });
  s.prefer("3 or 4 stages", [](const tune::Config& c) { return c["stages"] >= 3; });
  s.prefer("swizzled shared tiles", [](const tune::Config& c) { return c["swizzle"] == 1; });

  // Default: the largest block tile of these (128 x 128, 128 x 64, 64 x 64, 32 x 32) that still
  // gives every SM a block, else the smallest.
  auto config = [](int64_t wm, int64_t wn, int64_t mm, int64_t mn, int64_t stages) {
    return tune::Config({{"warps_m", wm},
                         {"warps_n", wn},
                         {"mma_m", mm},
                         {"mma_n", mn},
                         {"block_k", 32},
                         {"stages", stages},
                         {"swizzle", 1},
                         {"split_k", 1}});
  };
  s.default_config(default_gemm_config(s,
                                       {config(2, 2, 4, 8, 3), config(2, 2, 4, 4, 3),
                                        config(2, 2, 2, 4, 3), config(2, 2, 1, 2, 3)},
                                       p.sm_count, blocks, split_of));
  return s;
}

// The kernel of GEMM class Gemm (TensorCoreGemm or WarpgroupGemm) for problem p.
template <typename Gemm>
absl::StatusOr<ScheduledKernel> build_gemm(const TemplateContext& ctx, const tune::Config& c,
                                           std::optional<TcProblem> p, const char* what) {
  if (!p)
    return absl::InvalidArgumentError(str_cat("the CUDA ", what, " does not apply to ", ctx.name));
  Gemm gemm(ctx, *std::move(p), c);
  Stmt body = gemm.kernel();
  return kernel_of(ctx.name, gemm.params(), body);
}

absl::StatusOr<ScheduledKernel> build_tensor_core_gemm(const TemplateContext& ctx,
                                                       const tune::Config& c) {
  return build_gemm<TensorCoreGemm>(ctx, c, tc_problem(ctx), "tensor-core GEMM templates");
}

// ---- Hopper: warpgroup GEMM (wgmma) --------------------------------------------------------
//
// On sm_90 (compiled for sm_90a), for matmuls and convolutions (groups 1), a block of 1 or 2
// warpgroups (128 threads each) computes a (64 * warpgroups) x block_n tile of C; warpgroup w
// owns rows 64 w .. 64 w + 63 and all block_n columns, which one wgmma.mma_async m64nNk16 per
// 16-deep step multiplies straight from shared memory (no fragments in registers but the
// accumulators). Its operands are shared tiles in the
// layouts wgmma reads, as loom layouts:
//   A, [stages, BM, 64]: K-major, 64 elements (128 bytes) a row, the 16-byte chunks of row r
//     XORed with r % 8: row_major(...).split(2, 8).swizzle(2, 1, 8, 1); 8-row groups are 1024
//     bytes apart (the descriptor's stride byte offset);
//   B, [stages, 64, block_n]: N-major in atoms of 64 columns: row_major(...).split(2, 64)
//     .reorder(0, 2, 1, 3).split(3, 8).swizzle(3, 2, 8, 1), k rows 128 bytes apart, 8-row
//     groups 1024 bytes apart, atoms 8192 bytes apart (the leading byte offset).
// Slices 64 deep go through `stages` buffers as in the mma.sync GEMM; before the barrier that
// publishes a slice each thread fences its copies for the asynchronous proxy that wgmma reads
// through. The accumulators follow wgmma's mapping (see ir::Call): within each warp
// the mma.sync fragment mapping repeat(2, 1) * spatial(8, 4) * repeat(1, 2) over 16 x 8 tiles,
// warps spatial(4) along M, the N/8 tiles along N in register order. Split-K, and copies of
// operands that cp.async cannot copy (rows not a multiple of 16 bytes, the gathered windows of
// a convolution), as in the mma.sync GEMM: whatever writes a slice, each thread fences its
// writes for the asynchronous proxy before the barrier.
//
// TMA path (tma_block_tile): a producer warpgroup, of which one thread copies each slice with
// TMA onto the stage's "full" mbarrier, and consumer warpgroups that release each stage on its
// "empty" one. Its blocks may run in thread-block clusters of two (cluster = 2) over consecutive
// M tiles of one N tile and K range: both read the same slices of B, so each copies half of B's
// 64-column atoms with one multicast copy into the shared memory of both, and B is read from L2
// once per pair instead of twice. A stage is then refilled only when the consumers of both
// blocks are done with it: each consumer warpgroup arrives on the stage's empty barrier in
// every block of the cluster, and each full barrier counts the bytes of both blocks' copies.
// Persistent blocks (persistent = 1, TMA path, unsplit): the grid holds as many blocks as the
// SMs hold at once (by the estimate below, and no more than the device's occupancy allows at
// load time), and each cluster (or block) walks the tiles from its own index in steps of the
// clusters launched (over_tiles). The stages' phases run on across tiles: a slice's stage and
// parity count the slices of the block's earlier tiles. Each consumer warpgroup releases its last
// slice's stage once its products are done, so the producer copies the next tile's first slices
// while the consumers store C.

constexpr int64_t kWgK = 64;  // a slice: one 128-byte swizzle atom of 16-bit elements
constexpr int64_t kAtomRowBytes = 128, kGroupBytes = 1024, kAtomBytes = 64 * kAtomRowBytes;

struct WgTiles {
  int64_t warpgroups, block_n, stages, split_k;
  bool tma;  // TMA copies by a producer warpgroup (below), else cp.async by every thread
  int64_t cluster;  // blocks per cluster (TMA path): pairs of M tiles share B (below)
  bool persistent;  // (TMA path) as many blocks as the SMs hold, each walking tiles (below)

  explicit WgTiles(const tune::Config& c)
      : warpgroups(c["warpgroups"]),
        block_n(c["block_n"]),
        stages(c["stages"]),
        split_k(c["split_k"]),
        tma(c.has("tma") && c["tma"] != 0),
        cluster(c.has("cluster") ? c["cluster"] : 1),
        persistent(c.has("persistent") && c["persistent"] != 0) {}

  int64_t consumers() const { return warpgroups * 128; }  // the threads that multiply
  int64_t threads() const { return consumers() + (tma ? 128 : 0); }
  int64_t bm() const { return warpgroups * 64; }
  int64_t accumulators() const { return block_n / 2; }  // per thread
  int64_t stage_bytes() const { return (bm() + block_n) * kWgK * 2; }
  // The stages, and the TMA path's two mbarriers per stage (past the 1024-aligned tiles).
  int64_t shared_bytes() const { return stages * stage_bytes() + (tma ? 1024 : 0); }
  int64_t registers() const { return accumulators() + 48; }
  // With a producer warpgroup and two that multiply (384 threads, 168 registers each at
  // launch), the producer gives registers up for the others (setmaxnreg): 40 against 232.
  // Not with split-K, whose reduction every thread takes part in.
  bool shifts_registers() const { return tma && warpgroups == 2 && split_k == 1; }
  int64_t register_limit(int64_t registers_per_block, int64_t max_per_thread) const {
    if (shifts_registers()) return kConsumerRegisters;
    return std::min(max_per_thread, registers_per_block / threads() / 8 * 8);
  }
  static constexpr int64_t kProducerRegisters = 40, kConsumerRegisters = 232;

  // The blocks an SM holds at once, by shared memory (of which the system takes 1 KiB a
  // block), threads (2048 an SM) and registers at launch (the estimate, or with shifted
  // registers all a block may have); at least one.
  int64_t blocks_per_sm(const GpuProperties& p) const {
    const int64_t regs = shifts_registers() ? p.registers_per_block / threads() / 8 * 8
                                            : ceil_div(registers(), 8) * 8;
    return std::max<int64_t>(
        1, std::min({p.shared_memory_per_sm / (shared_bytes() + 1024), 2048 / threads(),
                     p.registers_per_sm / (regs * threads())}));
  }
  // A persistent launch's blocks: as many as the SMs hold at once (a multiple of the cluster
  // size), no more than the `blocks` of the tiles.
  int64_t persistent_blocks(int64_t blocks, const GpuProperties& p) const {
    return std::min(blocks, std::max(cluster, p.sm_count * blocks_per_sm(p) / cluster * cluster));
  }
};

class WarpgroupGemm {
 public:
  WarpgroupGemm(const TemplateContext& ctx, TcProblem p, const tune::Config& c)
      : p_(std::move(p)), t_(c), in_(ctx.inputs[0].dtype), gpu_(gpu_properties(ctx.target)) {
    const Expr stages(t_.stages);
    a_shared_ = Buffer::make(
        ctx.name + "_As", in_,
        Layout::row_major({stages, Expr(t_.bm()), Expr(kWgK)}).split(2, kChunk).swizzle(2, 1, 8, 1),
        ir::MemoryScope::kShared);
    b_shared_ = Buffer::make(ctx.name + "_Bs", in_,
                             Layout::row_major({stages, Expr(kWgK), Expr(t_.block_n)})
                                 .split(2, 64)
                                 .reorder({0, 2, 1, 3})
                                 .split(3, kChunk)
                                 .swizzle(3, 2, 8, 1),
                             ir::MemoryScope::kShared);
    acc_ = Buffer::make(ctx.name + "_acc", DType::f32(), {Expr(t_.accumulators())},
                        ir::MemoryScope::kLocal);
    bars_ = Buffer::make(ctx.name + "_bars", DType::i64(), {Expr(2 * t_.stages)},
                         ir::MemoryScope::kShared);
    a_async_ = p_.a.async(p_.K);
    b_async_ = p_.b.async(p_.N);
    LOOM_CHECK(!t_.tma || tma_copies(p_), "TMA copies of operands it cannot copy");
    LOOM_CHECK(!t_.persistent || (t_.tma && t_.split_k == 1),
               "persistent blocks without TMA or with split-K");
    split_ = SplitK(ctx.name, p_.G * ceil_div(p_.M, t_.bm()) * ceil_div(p_.N, t_.block_n),
                    t_.split_k, t_.accumulators(), t_.threads());
  }

  // Whether TMA can copy both operands: row-major [batch, rows, cols] tensors whose rows are
  // multiples of 16 bytes (the tensor map's strides).
  static bool tma_copies(const TcProblem& p) {
    return !p.a.element && !p.b.element && p.a.buffer.shape().size() == 3 &&
           p.b.buffer.shape().size() == 3 && p.K % kChunk == 0 && p.N % kChunk == 0;
  }

  const std::vector<ir::Param>& params() const { return p_.params; }

  // Stage "blocks over tiles": spatial(G, tiles_m, tiles_n, split_k) over the blocks; in
  // clusters of c, spatial(G, tiles_m / c, tiles_n, split_k, c), so that the c blocks of a
  // cluster (consecutive) take consecutive M tiles of one N tile and one K range. Persistent:
  // the blocks the SMs hold at once, each cluster walking the items of spatial(G, tiles_m / c,
  // tiles_n) from its own index in steps of the clusters (over_tiles).
  Stmt kernel() {
    const int64_t tiles_m = ceil_div(p_.M, t_.bm()), tiles_n = ceil_div(p_.N, t_.block_n);
    const int64_t c = t_.cluster;
    LOOM_CHECK(c == 1 || tiles_m % c == 0, "clusters of ", c, " over ", tiles_m, " M tiles");
    Var block("block"), tid("tid");
    if (t_.persistent) {
      const int64_t grid = t_.persistent_blocks(p_.G * tiles_m * tiles_n, gpu_);
      auto items = schedule::spatial({p_.G, tiles_m / c, tiles_n});
      LOOM_CHECK(items.ok(), items.status().ToString());
      items_ = *std::move(items);
      // The grid is an upper bound: the runtime launches fewer blocks where the device holds
      // fewer at once (min_blocks_per_sm below), so the clusters are counted at run time.
      clusters_ = ir::Call::make("grid_blocks", {}) / c;
      rank_ = c == 1 ? Expr(int64_t{0}) : block % c;
      cluster_index_ = c == 1 ? Expr(block) : block / c;
      split_index_ = Expr(int64_t{0});
      return gpu_launch(block, grid, tid, t_.threads(), tma_block_tile(tid));
    }
    auto blocks = schedule::spatial(
        c == 1 ? std::vector<int64_t>{p_.G, tiles_m, tiles_n, t_.split_k}
               : std::vector<int64_t>{p_.G, tiles_m / c, tiles_n, t_.split_k, c});
    LOOM_CHECK(blocks.ok(), blocks.status().ToString());
    Stmt body = blocks->on(block, [&](const std::vector<Expr>& tile) {
      rank_ = c == 1 ? Expr(int64_t{0}) : tile[4];
      set_tile(tile[0], tile[1], tile[2]);
      split_index_ = tile[3];
      return block_tile(tid);
    });
    return split_.around_launch(gpu_launch(block, blocks->num_workers(), tid, t_.threads(), body));
  }

 private:
  Stmt call(const std::string& name, std::vector<Expr> args = {}) const {
    return ir::Evaluate::make(ir::Call::make(name, std::move(args)));
  }

  // The tile the following stages compute: GEMM g, N tile n, and M tile m, or in a cluster
  // M tile c m + rank of the pair (or c-tuple) m.
  void set_tile(const Expr& g, const Expr& m, const Expr& n) {
    const int64_t c = t_.cluster;
    const Expr m_tile = c == 1 ? m : m * c + rank_;
    g_ = g;
    m0_ = m_tile * t_.bm();
    n0_ = n * t_.block_n;
    tile_id_ = (g * ceil_div(p_.M, t_.bm()) + m_tile) * ceil_div(p_.N, t_.block_n) + n;
  }

  // Stage "copy slice kt to shared buffer `stage`", zero past M, N and K.
  Stmt load_slice(const Var& tid, const Expr& kt, const Expr& stage) const {
    const Expr k0 = kt * kWgK;
    const bool k_tail = p_.K % kWgK != 0;
    return ir::Seq::make({
        copy_slice(tid, t_.threads(), a_shared_, stage, p_.a, g_, a_async_, t_.bm(), kWgK, m0_,
                   p_.M, p_.M % t_.bm() != 0, k0, p_.K, k_tail),
        copy_slice(tid, t_.threads(), b_shared_, stage, p_.b, g_, b_async_, kWgK, t_.block_n, k0,
                   p_.K, k_tail, n0_, p_.N, p_.N % t_.block_n != 0),
    });
  }

  // The wgmma of 16-deep step kk of the slice in `stage`: the descriptors start at row 64 w of
  // A and k row 16 kk of B.
  Stmt wgmma(const Expr& stage, const Expr& warpgroup, int64_t kk) const {
    return call("wgmma_m64k16",
                {acc_.load({Expr(int64_t{0})}),
                 a_shared_.load({stage, warpgroup * 64, Expr(kk * kMmaK)}),
                 b_shared_.load({stage, Expr(kk * kMmaK), Expr(int64_t{0})}), Expr(t_.block_n),
                 Expr(kGroupBytes), Expr(kAtomBytes), Expr(kGroupBytes)});
  }

  // Stage "multiply": the warpgroup's 64 rows of A times B, one wgmma per 16-deep step, the
  // descriptors' start at row 64 w of A and k row 16 kk of B.
  Stmt multiply(const Expr& stage, const Expr& warpgroup) const {
    const Expr regs(t_.accumulators());
    std::vector<Stmt> s = {call("wgmma_fence", {acc_.load({Expr(int64_t{0})}), regs})};
    for (int64_t kk = 0; kk < kWgK / kMmaK; ++kk) s.push_back(wgmma(stage, warpgroup, kk));
    s.push_back(call("wgmma_commit"));
    s.push_back(call("wgmma_wait", {acc_.load({Expr(int64_t{0})}), regs, Expr(int64_t{0})}));
    return ir::Seq::make(std::move(s));
  }

  // Stage "store C": spatial(warpgroups, 4) over the warps, then the fragment mapping of each
  // 16 x 8 tile over the lanes; final values, guarded past M and N. The mapping's innermost
  // repeat(1, 2), the two adjacent columns a lane holds, is stored as one pair.
  Stmt store_c(const Var& tid) const {
    auto warps = schedule::spatial(t_.warpgroups, 4);
    auto lanes = schedule::spatial(8, 4);
    auto rows = schedule::repeat(2, 1);
    LOOM_CHECK(warps.ok() && lanes.ok() && rows.ok(), "wgmma accumulator mapping");
    return warps->on(tid / Expr(int64_t{32}), [&](const std::vector<Expr>& w) {
      return lanes->on(tid % Expr(int64_t{32}), [&](const std::vector<Expr>& l) {
        std::vector<Stmt> s;
        for (int64_t j = 0; j < t_.block_n / kMmaN; ++j)
          for (const std::vector<int64_t>& reg : rows->tasks_of(0)) {
            Expr row = m0_ + w[0] * 64 + w[1] * kMmaM + reg[0] * 8 + l[0];
            Expr col = n0_ + j * kMmaN + l[1] * 2;
            s.push_back(store_accumulators(p_.output(), g_, row, col, acc_, j * 4 + reg[0] * 2, 2,
                                           p_.M % t_.bm() != 0, p_.N % t_.block_n != 0));
          }
        return ir::Seq::make(std::move(s));
      });
    });
  }

  // The TMA path's barriers: full[s] completes when stage s holds its slice (the producer's
  // arrival with the slice's bytes, then the copies), empty[s] when every consumer warpgroup is
  // done with it.
  Expr full(const Expr& s) const { return bars_.load({s}); }
  Expr empty(const Expr& s) const { return bars_.load({s + t_.stages}); }

  // Stage "produce" (TMA): one thread of the producer warpgroup, per slice of the tile's
  // range: wait until the stage is empty (its previous round's readers arrived; the first round
  // passes, as parity 1 of a fresh barrier does), announce the stage's bytes on full[s], copy A's
  // BM x 64 box and B's 64 x 64 atoms into it. `before` slices went through the stages before
  // this tile's (persistent blocks' earlier tiles).
  Stmt produce(const Expr& first, const Expr& count, const Expr& before) const {
    Var kt("kt");
    const Expr it = before + kt, s = it % t_.stages, round = it / t_.stages;
    const Expr k0 = (first + kt) * kWgK;
    const Expr zero(int64_t{0}), one(int64_t{1});
    auto batch = [&](const Operand& op) { return op.batched ? g_ : zero; };
    std::vector<Stmt> step = {
        call("mbarrier_wait", {empty(s), (round + one) % int64_t{2}}),
        call("mbarrier_expect_tx", {full(s), Expr(t_.stage_bytes())}),
        call("tma_load_3d", {a_shared_.load({s, zero, zero}), full(s), p_.a.buffer.load({zero, zero, zero}),
                             batch(p_.a), m0_, k0, one, Expr(t_.bm()), Expr(kWgK)}),
    };
    // In a cluster, block r copies its share of B's atoms to every block of the cluster.
    const int64_t atoms = t_.block_n / 64, own = atoms / t_.cluster;
    for (int64_t j = 0; j < own; ++j) {
      const Expr atom = t_.cluster == 1 ? Expr(j) : rank_ * own + j;
      std::vector<Expr> args = {b_shared_.load({s, zero, atom * int64_t{64}}), full(s),
                                p_.b.buffer.load({zero, zero, zero}), batch(p_.b), k0,
                                n0_ + atom * int64_t{64}, one, Expr(kWgK), Expr(int64_t{64})};
      if (t_.cluster > 1) args.push_back(Expr((int64_t{1} << t_.cluster) - 1));
      step.push_back(call(t_.cluster == 1 ? "tma_load_3d" : "tma_load_3d_multicast", args));
    }
    return ir::For::make(kt, zero, count, ir::ForKind::kSerial, ir::Seq::make(std::move(step)));
  }

  // The arrival of a warpgroup done with `stage` on its empty barrier, in every block of the
  // cluster (whose producers all write the stage).
  Stmt release(const Expr& stage) const {
    if (t_.cluster == 1) return call("mbarrier_arrive", {empty(stage)});
    std::vector<Stmt> s;
    for (int64_t r = 0; r < t_.cluster; ++r)
      s.push_back(call("mbarrier_arrive_cluster", {empty(stage), Expr(r)}));
    return ir::Seq::make(std::move(s));
  }

  // Stage "consume" (TMA): the accumulators zeroed, then per slice of the tile's range, wait
  // until its stage is full, multiply, and once the previous slice's products are done (one
  // group stays in flight) release that one's stage: one arrival per warpgroup, by its first
  // thread (the wait is the warpgroup's, so the warpgroup's reads of the stage are done when
  // any of its threads is past it). The last slice's stage is released once all products are
  // done. `before` slices went through the stages before this tile's.
  Stmt consume(const Var& tid, const Expr& count, const Expr& warpgroup, const Expr& before) const {
    Var kt("kt");
    const Expr it = before + kt, s = it % t_.stages, regs(t_.accumulators()), zero(int64_t{0});
    const Expr leader = tid % int64_t{128} == int64_t{0};
    std::vector<Stmt> step = {call("mbarrier_wait", {full(s), it / t_.stages % int64_t{2}}),
                              call("wgmma_fence", {acc_.load({zero}), regs})};
    for (int64_t kk = 0; kk < kWgK / kMmaK; ++kk) step.push_back(wgmma(s, warpgroup, kk));
    step.push_back(call("wgmma_commit"));
    step.push_back(call("wgmma_wait", {acc_.load({zero}), regs, Expr(int64_t{1})}));
    step.push_back(ir::IfThenElse::make(kt > int64_t{0} && leader,
                                        release((it + (t_.stages - 1)) % t_.stages)));
    std::vector<Stmt> out;
    for (int64_t i = 0; i < t_.accumulators(); ++i)
      out.push_back(ir::Store::make(acc_, Expr(0.0f), {Expr(i)}));
    out.push_back(
        ir::For::make(kt, zero, count, ir::ForKind::kSerial, ir::Seq::make(std::move(step))));
    out.push_back(call("wgmma_wait", {acc_.load({zero}), regs, zero}));
    out.push_back(ir::IfThenElse::make(count > int64_t{0} && leader,
                                       release((before + count - int64_t{1}) % t_.stages)));
    return ir::Seq::make(std::move(out));
  }

  // The block's tiles, each as `tile` builds it from the number of slices the block's earlier
  // tiles took through the stages: the one tile kernel() mapped the block to, or on the
  // persistent path items cluster_index, cluster_index + clusters, ... of spatial(G,
  // tiles_m / c, tiles_n), as many as are below the item count (at least one: the grid holds no
  // more clusters than items), block r of a cluster taking M tile c m + r of item (g, m, n).
  Stmt over_tiles(const std::function<Stmt(const Expr& before)>& tile) {
    if (!t_.persistent) return tile(Expr(int64_t{0}));
    const int64_t items = items_->num_workers(), slices = ceil_div(p_.K, kWgK);
    Var i("i");
    const Expr count = (Expr(items - 1) - cluster_index_) / clusters_ + int64_t{1};
    Stmt body = items_->on(cluster_index_ + i * clusters_, [&](const std::vector<Expr>& item) {
      set_tile(item[0], item[1], item[2]);
      return tile(i * slices);
    });
    return ir::For::make(i, Expr(int64_t{0}), count, ir::ForKind::kSerial, body);
  }

  // One block's tile on the TMA path: thread 0 sets up the barriers; the last warpgroup
  // produces (one thread copying), the others consume, then store C or reduce the splits.
  Stmt tma_block_tile(const Var& tid) {
    const Expr warpgroup = tid / Expr(int64_t{128}), zero(int64_t{0});
    // Named copies, not structured bindings: the lambdas below capture them, which clang before
    // 16 refuses (the sanitizer builds use clang).
    const std::pair<Expr, Expr> range = split_.slices_of(split_index_, ceil_div(p_.K, kWgK));
    const Expr first = range.first, count = range.second;
    const bool cluster = t_.cluster > 1;
    std::vector<Stmt> init;
    for (int64_t s = 0; s < t_.stages; ++s) {
      init.push_back(call("mbarrier_init", {full(Expr(s)), Expr(int64_t{1})}));
      init.push_back(call("mbarrier_init", {empty(Expr(s)), Expr(t_.warpgroups * t_.cluster)}));
    }
    init.push_back(call("fence_proxy_async"));
    if (cluster) init.push_back(call("fence_mbarrier_init"));
    std::vector<Stmt> s;
    if (cluster) s.push_back(call("cluster_dims", {Expr(t_.cluster)}));
    // The grid of persistent blocks counts on the blocks an SM holds: the launch bounds promise
    // them, so that the compiler keeps the registers to that share.
    if (t_.persistent) s.push_back(call("min_blocks_per_sm", {Expr(t_.blocks_per_sm(gpu_))}));
    s.push_back(ir::IfThenElse::make(tid == zero, ir::Seq::make(std::move(init))));
    // In a cluster, the other blocks' barriers are initialised before any arrival or copy.
    s.push_back(cluster ? call("cluster_sync") : ir::Barrier::make());
    const bool shift = t_.shifts_registers();
    auto registers = [&](int64_t n, int64_t raise) {
      return shift ? call("set_max_registers", {Expr(n), Expr(raise)})
                   : ir::Evaluate::make(Expr(int64_t{0}));
    };
    // The consumers store C, or publish their partials, in their own branch: the producer's
    // registers are few, and no accumulator stays live past the branches. The split's
    // reduction then counts every thread of the block at its barriers, and only consumers sum.
    // A persistent block's producer copies the slices of its next tile while the consumers
    // store the last one's C.
    const bool split = split_.splits() > 1;
    Stmt producer = over_tiles([&](const Expr& before) { return produce(first, count, before); });
    Stmt consumer = over_tiles([&](const Expr& before) {
      return ir::Seq::make(
          {consume(tid, count, warpgroup, before),
           split ? split_.publish(tid, tile_id_, split_index_, acc_) : store_c(tid)});
    });
    s.push_back(
        ir::IfThenElse::make(warpgroup == t_.warpgroups,
                             ir::Seq::make({registers(WgTiles::kProducerRegisters, 0),
                                            ir::IfThenElse::make(tid == t_.consumers(), producer)}),
                             ir::Seq::make({registers(WgTiles::kConsumerRegisters, 1), consumer})));
    if (split)
      s.push_back(split_.gather(tid, tile_id_, acc_, store_c(tid), tid < t_.consumers()));
    // No block of a cluster exits while another may still arrive on its barriers.
    if (cluster) s.push_back(call("cluster_sync"));
    Stmt body = ir::Seq::make(std::move(s));
    for (const Buffer& b : {acc_, bars_, b_shared_, a_shared_}) body = ir::Allocate::make(b, body);
    return split_.around_block(body);
  }

  // One block's tile: the main loop over its K range, each slice published by a proxy fence
  // (wgmma reads through the asynchronous proxy) and a barrier; the stage a slice is loaded into
  // is free, as the last wgmma_wait completed the products that read it. Then store C, or
  // reduce the splits first.
  Stmt block_tile(const Var& tid) {
    if (t_.tma) return tma_block_tile(tid);
    const Expr warpgroup = tid / Expr(int64_t{128});
    Stmt body = ir::Seq::make({
        main_loop(
            acc_, t_.accumulators(), ceil_div(p_.K, kWgK), t_.stages, split_, split_index_,
            a_async_ || b_async_,
            [&](const Expr& kt, const Expr& stage) { return load_slice(tid, kt, stage); },
            [&](const Expr& stage) { return multiply(stage, warpgroup); },
            ir::Seq::make({call("fence_proxy_async"), ir::Barrier::make()})),
        split_.reduce(tid, tile_id_, split_index_, acc_, store_c(tid)),
    });
    for (const Buffer& b : {acc_, b_shared_, a_shared_}) body = ir::Allocate::make(b, body);
    return split_.around_block(body);
  }

  TcProblem p_;
  WgTiles t_;
  DType in_;
  GpuProperties gpu_;
  bool a_async_ = false, b_async_ = false;
  Buffer a_shared_, b_shared_, acc_, bars_;
  SplitK split_;
  Expr g_, m0_, n0_, tile_id_, split_index_, rank_;
  // Persistent: the items the clusters walk, the clusters of the grid, this block's cluster.
  std::optional<schedule::TaskMapping> items_;
  Expr clusters_;
  Expr cluster_index_;
};

// wgmma is sm_90a's: the warpgroup GEMM runs on sm_90 exactly.
bool wgmma_target(const TemplateContext& ctx) {
  return ctx.target.is_cuda() && ctx.target.sm_arch() == 90;
}

// The GEMMs a warpgroup GEMM computes: those of the mma.sync GEMM, on sm_90.
std::optional<TcProblem> wgmma_problem(const TemplateContext& ctx) {
  return wgmma_target(ctx) ? tc_problem(ctx) : std::nullopt;
}

tune::Space wgmma_space(const TemplateContext& ctx) {
  const GpuProperties p = gpu_properties(ctx.target);
  std::optional<TcProblem> problem = wgmma_problem(ctx);
  tune::Space s;
  s.param("warpgroups", {1, 2}).param("block_n", {64, 128, 256}).param("stages", {2, 3, 4});
  s.param("tma", {0, 1}).param("cluster", {1, 2}).param("persistent", {0, 1});
  const bool tma_copies = problem && WarpgroupGemm::tma_copies(*problem);
  s.rule("TMA copies only operands stored as row-major tensors with rows of 16-byte multiples",
         [=](const tune::Config& c) { return c["tma"] == 0 || tma_copies; });
  // A pair of blocks on two M tiles, each copying half of B's atoms to both.
  auto pairs = [problem](const tune::Config& c) {
    const WgTiles t(c);
    return t.tma && t.block_n >= 128 && problem && ceil_div(problem->M, t.bm()) % 2 == 0;
  };
  s.rule("clusters of two blocks on the TMA path, over an even number of M tiles, with B tiles "
         "of 2 or more atoms",
         [=](const tune::Config& c) { return WgTiles(c).cluster == 1 || pairs(c); });
  s.rule("threads per block within the device limit", [=](const tune::Config& c) {
    return WgTiles(c).threads() <= p.max_threads_per_block;
  });
  s.rule("the stages of A and B fit the (opt-in) shared memory of a block",
         [=](const tune::Config& c) {
           return WgTiles(c).shared_bytes() <= p.shared_memory_per_block_optin;
         });
  s.rule("registers per thread within the limits", [=](const tune::Config& c) {
    const WgTiles t(c);
    return t.registers() <= t.register_limit(p.registers_per_block, p.max_registers_per_thread);
  });
  auto blocks = [problem](const tune::Config& c) {
    const WgTiles t(c);
    return problem ? problem->G * ceil_div(problem->M, t.bm()) * ceil_div(problem->N, t.block_n)
                   : 0;
  };
  // Persistent blocks (as many as the SMs hold at once, each walking tiles) save the launch,
  // barrier set-up and pipeline fill of every tile after a block's first, and copy a tile's
  // first slices while the last tile's C is stored. Only where the tiles outnumber the blocks
  // (otherwise it is the same launch), unsplit, on the TMA path (a producer that runs ahead).
  s.rule(
      "persistent blocks on the TMA path without split-K, where the tiles outnumber the "
      "blocks the SMs hold at once",
      [=](const tune::Config& c) {
        const WgTiles t(c);
        return !t.persistent ||
               (t.tma && t.split_k == 1 && blocks(c) > t.persistent_blocks(blocks(c), p));
      });
  s.prefer("3 or 4 stages", [](const tune::Config& c) { return c["stages"] >= 3; });
  // The TMA path saves the copies' instructions, which count most for wide tiles; measuring it
  // on narrow ones too would add a third of the candidates.
  s.prefer("TMA with tiles 128 columns wide or more",
           [](const tune::Config& c) { return c["tma"] == 0 || c["block_n"] >= 128; });
  // Two blocks that share B read it from L2 once (halving B's share of the L2 traffic, which
  // for wide tiles is most of it): kFast measures TMA tiles in pairs where they pair up (and
  // TMA tiles alone where a limit keeps clusters out).
  s.prefer_choice("TMA tiles in clusters of two where they pair up", "cluster", 2,
                  [](const tune::Config& c) { return WgTiles(c).tma; });
  auto split_of = split_k_choices(s, p.sm_count, blocks, [problem](const tune::Config&) {
    return problem ? ceil_div(problem->K, kWgK) : 0;
  });
  // Default: the largest tile of these that still gives every SM a block, else the smallest,
  // with the split that fills the SMs.
  auto config = [](int64_t warpgroups, int64_t block_n, int64_t stages) {
    return tune::Config({{"warpgroups", warpgroups},
                         {"block_n", block_n},
                         {"stages", stages},
                         {"split_k", 1},
                         {"tma", 0},
                         {"cluster", 1},
                         {"persistent", 0}});
  };
  s.default_config(default_gemm_config(
      s, {config(2, 256, 3), config(2, 128, 4), config(1, 128, 4), config(1, 64, 4)},
      p.sm_count, blocks, split_of));
  return s;
}

absl::StatusOr<ScheduledKernel> build_wgmma_gemm(const TemplateContext& ctx,
                                                 const tune::Config& c) {
  return build_gemm<WarpgroupGemm>(ctx, c, wgmma_problem(ctx), "warpgroup GEMM template");
}

}  // namespace

ScheduleTemplate matmul_wgmma_cuda_template() {
  return cuda_template(
      "cuda_wgmma_gemm",
      [](const TemplateContext& ctx) {
        return wgmma_target(ctx) && matmul_problem(ctx).has_value();
      },
      wgmma_space, build_wgmma_gemm);
}

ScheduleTemplate conv2d_wgmma_cuda_template() {
  ScheduleTemplate t = cuda_template(
      "cuda_wgmma_conv2d",
      [](const TemplateContext& ctx) {
        return wgmma_target(ctx) && implicit_gemm_problem(ctx).has_value();
      },
      wgmma_space, build_wgmma_gemm);
  t.any_layout = true;
  t.layouts = [](const TemplateContext& ctx) {
    return wgmma_target(ctx) ? implicit_gemm_layouts(ctx) : LayoutOptions{};
  };
  return t;
}

ScheduleTemplate matmul_tensor_core_cuda_template() {
  return cuda_template(
      "cuda_tensor_core_gemm",
      [](const TemplateContext& ctx) { return matmul_problem(ctx).has_value(); },
      tensor_core_space, build_tensor_core_gemm);
}

ScheduleTemplate conv2d_tensor_core_cuda_template() {
  ScheduleTemplate t = cuda_template(
      "cuda_tensor_core_conv2d",
      [](const TemplateContext& ctx) { return implicit_gemm_problem(ctx).has_value(); },
      tensor_core_space, build_tensor_core_gemm);
  t.any_layout = true;
  t.layouts = implicit_gemm_layouts;
  return t;
}

}  // namespace loom::ops
