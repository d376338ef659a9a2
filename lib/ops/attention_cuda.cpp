// attention on CUDA tensor cores (sm_80 and later, f16 or bf16): the online-softmax algorithm of
// FlashAttention-2. A block takes `warps` x 16 query rows of one batch-head; its warps split the
// rows with spatial(warps) and each runs over the keys in kv_tile-wide tiles:
//   S = Q Kt (mma.sync m16n8k16, the Q and Kt fragments by ldmatrix from shared memory),
//   scaled, the mask added (read where it broadcasts from), keys past T masked;
//   per row the running max m and the rescale exp(m_old - m_new) of the output accumulators and
//   of the running sum l;
//   P = exp(S - m), whose accumulator fragments are, pair by pair of 8-key tiles, the A
//   fragments of the next product (lane l holds rows l/4 and l/4 + 8 in both);
//   O += P V (the V fragments by ldmatrix.trans).
// Scores live in registers only; each row's max and sum are combined across the 4 lanes holding
// it with two warp shuffles. O / l is rounded to the output type once. The Kt and V tiles are
// staged in shared memory (rows padded by 16 bytes) by all the block's threads between barriers.

#include <algorithm>
#include <numeric>
#include <optional>

#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "ops/attention_cuda.hpp"
#include "ops/cuda_common.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {
namespace {

using ir::Buffer;
using ir::Expr;
using ir::Stmt;
using ir::Var;

constexpr int64_t kPad = 8;
// The running max starts here rather than at -inf, so that exp(m_old - m_new) is never NaN.
constexpr float kNoScore = -1e30f;

// q [BH, S, D], kt [BH, D, T], v [BH, T, E]: the batch dims flattened. An optional mask of
// `mask_numel` elements broadcasts to the scores [batch..., S, T]: element (b..., i, j) of the
// scores adds mask[sum b_k mask_strides[k] + i mask_strides[-2] + j mask_strides[-1]], strides
// 0 along the mask's dims of 1.
struct AttentionProblem {
  int64_t bh = 1, s = 0, d = 0, t = 0, e = 0;
  float scale = 1;
  std::vector<int64_t> batch;  // the batch dims of the scores
  bool masked = false;
  int64_t mask_numel = 0;
  std::vector<int64_t> mask_strides;  // per dim of the scores
};

std::optional<AttentionProblem> attention_problem(const TemplateContext& ctx) {
  if (!ctx.target.is_cuda() || ctx.target.sm_arch() < 80 || ctx.inputs.size() < 3 ||
      ctx.inputs.size() > 4 || !ctx.attrs)
    return std::nullopt;
  const auto* attrs = dynamic_cast<const AttentionAttrs*>(ctx.attrs);
  const DType type = ctx.output.dtype;
  if (!attrs || (type != DType::f16() && type != DType::bf16())) return std::nullopt;
  for (const TensorType& in : ctx.inputs)
    if (in.dtype != type || !is_static(in.shape) || in.shape.size() < 2) return std::nullopt;
  const Shape &q = ctx.inputs[0].shape, &v = ctx.inputs[2].shape;
  const size_t rank = q.size();
  AttentionProblem p;
  p.bh = static_product(q, 0, rank - 2).value_or(0);
  p.s = q[rank - 2].value();
  p.d = q[rank - 1].value();
  p.t = v[rank - 2].value();
  p.e = v[rank - 1].value();
  p.scale = static_cast<float>(attrs->scale);
  for (size_t k = 0; k + 2 < rank; ++k) p.batch.push_back(q[k].value());
  if (ctx.inputs.size() == 4) {
    // The mask's dims aligned with the scores' last ones; row-major strides, 0 where it is 1.
    const Shape& m = ctx.inputs[3].shape;
    if (m.size() > rank) return std::nullopt;
    p.masked = true;
    p.mask_strides.assign(rank, 0);
    int64_t stride = 1;
    for (size_t k = m.size(); k-- > 0;) {
      const size_t at = rank - m.size() + k;
      if (m[k].value() != 1) p.mask_strides[at] = stride;
      stride *= m[k].value();
    }
    p.mask_numel = stride;
  }
  // Whole 16-deep steps of D and 16-wide pairs of output tiles, kept in registers.
  if (p.bh < 1 || p.s < 1 || p.t < 1 || p.d % 16 || p.e % 16 || p.d > 256 || p.e > 256)
    return std::nullopt;
  return p;
}

class FlashAttention {
 public:
  FlashAttention(const TemplateContext& ctx, const AttentionProblem& p, const tune::Config& c)
      : ctx_(ctx), p_(p), warps_(c["warps"]), kv_(c["kv_tile"]), type_(ctx.output.dtype) {
    q_ = Buffer::make(ctx.name + "_q", type_, {Expr(p.bh), Expr(p.s), Expr(p.d)});
    kt_ = Buffer::make(ctx.name + "_kt", type_, {Expr(p.bh), Expr(p.d), Expr(p.t)});
    v_ = Buffer::make(ctx.name + "_v", type_, {Expr(p.bh), Expr(p.t), Expr(p.e)});
    out_ = Buffer::make(ctx.name + "_out", type_, {Expr(p.bh), Expr(p.s), Expr(p.e)});
    if (p.masked) mask_ = Buffer::make(ctx.name + "_mask", type_, {Expr(p.mask_numel)});
    q_shared_ = shared("qs", rows(), p.d + kPad);
    kt_shared_ = shared("kts", p.d, kv_ + kPad);
    v_shared_ = shared("vs", kv_, p.e + kPad);
    s_acc_ = local("s_acc", DType::f32(), kv_ / 8 * 4);
    o_acc_ = local("o_acc", DType::f32(), p.e / 8 * 4);
    q_frag_ = local("q_frag", type_, 8);
    kt_frag_ = local("kt_frag", type_, kv_ / 2);
    p_frag_ = local("p_frag", type_, kv_ / 2);
    v_frag_ = local("v_frag", type_, p.e / 2);
    max_ = local("max", DType::f32(), 2);
    sum_ = local("sum", DType::f32(), 2);
  }

  Stmt kernel() {
    const int64_t tiles = ceil_div(p_.s, rows());
    auto blocks = schedule::spatial(p_.bh, tiles);
    LOOM_CHECK(blocks.ok(), blocks.status().ToString());
    Var block("block"), tid("tid");
    Stmt body = blocks->on(block, [&](const std::vector<Expr>& b) {
      bh_ = b[0];
      q0_ = b[1] * rows();
      return block_tile(tid);
    });
    return gpu_launch(block, blocks->num_workers(), tid, warps_ * 32, body);
  }

  std::vector<ir::Param> params() const {
    if (p_.masked) return {q_, kt_, v_, mask_, out_};
    return {q_, kt_, v_, out_};
  }

 private:
  int64_t rows() const { return warps_ * 16; }
  Buffer shared(const std::string& what, int64_t r, int64_t c) const {
    return Buffer::make(ctx_.name + "_" + what, type_, {Expr(r), Expr(c)}, ir::MemoryScope::kShared);
  }
  Buffer local(const std::string& what, DType t, int64_t n) const {
    return Buffer::make(ctx_.name + "_" + what, t, {Expr(n)}, ir::MemoryScope::kLocal);
  }

  // Stage "stage a tile": dst[r, c] = value(r, c) for the rows x cols tile, the block's threads
  // over it by repeat(...) * spatial(threads / lanes, lanes), consecutive threads on consecutive
  // columns.
  Stmt stage(const Var& tid, const Buffer& dst, int64_t rows, int64_t cols,
             const std::function<Expr(const Expr&, const Expr&)>& value) const {
    const int64_t threads = warps_ * 32, lanes = std::gcd(threads, cols);
    const int64_t lane_rows = threads / lanes;
    auto spread = schedule::repeat(ceil_div(rows, lane_rows), cols / lanes) *
                  schedule::spatial(lane_rows, lanes);
    LOOM_CHECK(spread.ok(), spread.status().ToString());
    return spread->on(tid, [&](const std::vector<Expr>& e) {
      Stmt s = ir::Store::make(dst, value(e[0], e[1]), {e[0], e[1]});
      return rows % lane_rows ? ir::IfThenElse::make(e[0] < rows, s) : s;
    });
  }

  // x where inside holds, else a zero of the tensors' type.
  Expr or_zero(const Expr& inside, const Expr& x) const {
    return ir::select(inside, x, ir::cast(type_, Expr(0.0f)));
  }

  Stmt call(const std::string& name, std::vector<Expr> args) const {
    return ir::Evaluate::make(ir::Call::make(name, std::move(args)));
  }

  // The mask's element for score (row, key) of the block's batch-head (both in range).
  Expr mask_at(const Expr& row, const Expr& key) const {
    const size_t rank = p_.mask_strides.size();
    Expr offset = row * p_.mask_strides[rank - 2] + key * p_.mask_strides[rank - 1];
    int64_t inner = 1;  // the batch dims' sizes after dim k
    for (size_t k = p_.batch.size(); k-- > 0;) {
      if (p_.mask_strides[k] != 0)
        offset = offset + bh_ / Expr(inner) % Expr(p_.batch[k]) * p_.mask_strides[k];
      inner *= p_.batch[k];
    }
    return ir::cast(DType::f32(), mask_.load({offset}));
  }

  // Stage "S = Q Kt" for the warp's 16 rows and the tile's keys, scaled, the mask added, and
  // masked past T.
  Stmt scores(const Expr& warp, const Expr& lane, const Expr& k0, const Expr& g4,
              const Expr& t4) const {
    std::vector<Stmt> s;
    const int64_t key_tiles = kv_ / 8;
    for (int64_t i = 0; i < key_tiles * 4; ++i)
      s.push_back(ir::Store::make(s_acc_, Expr(0.0f), {Expr(i)}));
    const Expr row = lane % Expr(int64_t{16}), half = lane / Expr(int64_t{16}) * 8;
    for (int64_t kk = 0; kk < p_.d / 16; ++kk) {
      s.push_back(call("ldmatrix_x4", {q_frag_.load({Expr(int64_t{0})}),
                                       q_shared_.load({warp * 16 + row, kk * 16 + half})}));
      for (int64_t pair = 0; pair < kv_ / 16; ++pair)
        s.push_back(call("ldmatrix_x4_trans", {kt_frag_.load({Expr(pair * 8)}),
                                               kt_shared_.load({kk * 16 + row, pair * 16 + half})}));
      for (int64_t nj = 0; nj < key_tiles; ++nj)
        s.push_back(call("mma_m16n8k16", {s_acc_.load({Expr(nj * 4)}), q_frag_.load({Expr(int64_t{0})}),
                                          kt_frag_.load({Expr(nj * 4)})}));
    }
    // Scale, add the mask (rows and keys clamped in range), and mask the keys past T (the last
    // tile's).
    for (int64_t nj = 0; nj < key_tiles; ++nj)
      for (int64_t r = 0; r < 4; ++r) {
        const Expr at(nj * 4 + r);
        const Expr key = k0 + nj * 8 + t4 * 2 + r % 2;
        Expr scaled = s_acc_.load({at}) * p_.scale;
        if (p_.masked) {
          const Expr row = q0_ + warp * 16 + g4 + r / 2 * 8;
          scaled = scaled + mask_at(ir::min(row, Expr(p_.s - 1)), ir::min(key, Expr(p_.t - 1)));
        }
        if (p_.t % kv_) scaled = ir::select(key < p_.t, scaled, Expr(kNoScore));
        s.push_back(ir::Store::make(s_acc_, scaled, {at}));
      }
    return ir::Seq::make(std::move(s));
  }

  // Stage "online softmax" for the lane's two rows (h = 0: row g, h = 1: row g + 8): the new max,
  // the rescale of the running sum and of the output, P = exp(S - max) summed into the running sum
  // and rounded into the A fragments of P V.
  Stmt softmax() const {
    std::vector<Stmt> s;
    const int64_t key_tiles = kv_ / 8;
    for (int64_t h = 0; h < 2; ++h) {
      Var tile_max("tile_max", DType::f32()), new_max("new_max", DType::f32()),
          alpha("alpha", DType::f32());
      Expr m = s_acc_.load({Expr(h * 2)});
      for (int64_t nj = 0; nj < key_tiles; ++nj)
        for (int64_t c = 0; c < 2; ++c)
          if (nj || c) m = ir::max(m, s_acc_.load({Expr(nj * 4 + h * 2 + c)}));
      std::vector<Stmt> update;
      update.push_back(ir::Store::make(max_, new_max, {Expr(h)}));
      update.push_back(ir::Store::make(sum_, sum_.load({Expr(h)}) * alpha, {Expr(h)}));
      for (int64_t nj = 0; nj < p_.e / 8; ++nj)
        for (int64_t c = 0; c < 2; ++c) {
          const Expr at(nj * 4 + h * 2 + c);
          update.push_back(ir::Store::make(o_acc_, o_acc_.load({at}) * alpha, {at}));
        }
      for (int64_t nj = 0; nj < key_tiles; ++nj)
        for (int64_t c = 0; c < 2; ++c) {
          const Expr at(nj * 4 + h * 2 + c);
          Expr prob = ir::exp(s_acc_.load({at}) - new_max);
          update.push_back(ir::Store::make(s_acc_, prob, {at}));
          update.push_back(ir::Store::make(sum_, sum_.load({Expr(h)}) + s_acc_.load({at}), {Expr(h)}));
          // Key tile nj is half nj % 2 of 16-key chunk nj / 2: A fragment halves 0-3 or 4-7.
          const int64_t frag = nj / 2 * 8 + nj % 2 * 4 + h * 2 + c;
          update.push_back(ir::Store::make(p_frag_, ir::cast(type_, s_acc_.load({at})), {Expr(frag)}));
        }
      Expr quad = ir::max(Expr(tile_max), ir::shfl_xor_sync(Expr(tile_max), 1));
      Var pair_max("pair_max", DType::f32());
      s.push_back(ir::LetStmt::make(
          tile_max, m,
          ir::LetStmt::make(
              pair_max, quad,
              ir::LetStmt::make(
                  new_max,
                  ir::max(max_.load({Expr(h)}),
                          ir::max(Expr(pair_max), ir::shfl_xor_sync(Expr(pair_max), 2))),
                  ir::LetStmt::make(alpha, ir::exp(max_.load({Expr(h)}) - new_max),
                                    ir::Seq::make(std::move(update)))))));
    }
    return ir::Seq::make(std::move(s));
  }

  // Stage "O += P V" for the tile's keys.
  Stmt accumulate(const Expr& lane) const {
    std::vector<Stmt> s;
    const Expr row = lane % Expr(int64_t{16}), half = lane / Expr(int64_t{16}) * 8;
    for (int64_t chunk = 0; chunk < kv_ / 16; ++chunk) {
      for (int64_t pair = 0; pair < p_.e / 16; ++pair)
        s.push_back(call("ldmatrix_x4_trans", {v_frag_.load({Expr(pair * 8)}),
                                               v_shared_.load({chunk * 16 + row, pair * 16 + half})}));
      for (int64_t nj = 0; nj < p_.e / 8; ++nj)
        s.push_back(call("mma_m16n8k16", {o_acc_.load({Expr(nj * 4)}), p_frag_.load({Expr(chunk * 8)}),
                                          v_frag_.load({Expr(nj * 4)})}));
    }
    return ir::Seq::make(std::move(s));
  }

  // Stage "store": each row's sum across its quad, O / sum through the accumulator mapping
  // repeat(2, 1) * spatial(8, 4) * repeat(1, 2), rows past S not stored.
  Stmt store(const Expr& warp, const Expr& g4, const Expr& t4) const {
    std::vector<Stmt> s;
    for (int64_t h = 0; h < 2; ++h) {
      Var quad("quad", DType::f32()), total("total", DType::f32());
      std::vector<Stmt> writes;
      const Expr row = q0_ + warp * 16 + g4 + h * 8;
      // repeat(1, 2), a lane's two adjacent columns, is one 2-lane store (E is a multiple of 8).
      for (int64_t nj = 0; nj < p_.e / 8; ++nj) {
        Expr value = o_acc_.load({ir::Ramp::make(Expr(nj * 4 + h * 2), Expr(int64_t{1}), 2)}) /
                     ir::Broadcast::make(total, 2);
        writes.push_back(ir::Store::make(
            out_, ir::cast(DType(type_.code(), 2), value),
            {bh_, row, ir::Ramp::make(Expr(nj * 8) + t4 * 2, Expr(int64_t{1}), 2)}));
      }
      Stmt w = ir::Seq::make(std::move(writes));
      if (p_.s % rows()) w = ir::IfThenElse::make(row < p_.s, w);
      Expr l = sum_.load({Expr(h)});
      s.push_back(ir::LetStmt::make(
          quad, l + ir::shfl_xor_sync(l, 1),
          ir::LetStmt::make(total, Expr(quad) + ir::shfl_xor_sync(Expr(quad), 2), w)));
    }
    return ir::Seq::make(std::move(s));
  }

  Stmt block_tile(const Var& tid) {
    const Expr warp = tid / Expr(int64_t{32}), lane = tid % Expr(int64_t{32});
    Expr g4, t4;
    auto quads = schedule::spatial(8, 4);
    LOOM_CHECK(quads.ok(), quads.status().ToString());
    quads->on(lane, [&](const std::vector<Expr>& l) {
      g4 = l[0];
      t4 = l[1];
      return ir::Evaluate::make(Expr(int64_t{0}));
    });
    std::vector<Stmt> s;
    // Q's tile once; rows past S are zero.
    s.push_back(stage(tid, q_shared_, rows(), p_.d, [&](const Expr& r, const Expr& c) {
      const Expr row = q0_ + r;
      return or_zero(row < p_.s, q_.load({bh_, ir::min(row, Expr(p_.s - 1)), c}));
    }));
    for (int64_t i = 0; i < p_.e / 8 * 4; ++i)
      s.push_back(ir::Store::make(o_acc_, Expr(0.0f), {Expr(i)}));
    for (int64_t h = 0; h < 2; ++h) {
      s.push_back(ir::Store::make(max_, Expr(kNoScore), {Expr(h)}));
      s.push_back(ir::Store::make(sum_, Expr(0.0f), {Expr(h)}));
    }
    Var kv("kv");
    const Expr k0 = kv * kv_;
    Stmt load_kv = ir::Seq::make({
        stage(tid, kt_shared_, p_.d, kv_,
              [&](const Expr& r, const Expr& c) {
                const Expr key = k0 + c;
                return or_zero(key < p_.t, kt_.load({bh_, r, ir::min(key, Expr(p_.t - 1))}));
              }),
        stage(tid, v_shared_, kv_, p_.e,
              [&](const Expr& r, const Expr& c) {
                const Expr key = k0 + r;
                return or_zero(key < p_.t, v_.load({bh_, ir::min(key, Expr(p_.t - 1)), c}));
              }),
    });
    Stmt step = ir::Seq::make({ir::Barrier::make(), load_kv, ir::Barrier::make(),
                               scores(warp, lane, k0, g4, t4), softmax(), accumulate(lane)});
    s.push_back(ir::For::make(kv, Expr(int64_t{0}), Expr(ceil_div(p_.t, kv_)), ir::ForKind::kSerial,
                              step));
    s.push_back(store(warp, g4, t4));
    Stmt body = ir::Seq::make(std::move(s));
    for (const Buffer& b : {sum_, max_, v_frag_, p_frag_, kt_frag_, q_frag_, o_acc_, s_acc_,
                            v_shared_, kt_shared_, q_shared_})
      body = ir::Allocate::make(b, body);
    return body;
  }

  const TemplateContext& ctx_;
  AttentionProblem p_;
  int64_t warps_, kv_;
  DType type_;
  Buffer q_, kt_, v_, out_, mask_,  // mask_: only when masked
      q_shared_, kt_shared_, v_shared_, s_acc_, o_acc_, q_frag_, kt_frag_,
      p_frag_, v_frag_, max_, sum_;
  Expr bh_, q0_;
};

tune::Space attention_space(const TemplateContext& ctx) {
  const GpuProperties gp = gpu_properties(ctx.target);
  std::optional<AttentionProblem> p = attention_problem(ctx);
  const int64_t d = p ? p->d : 64, e = p ? p->e : 64;
  tune::Space s;
  s.param("warps", {2, 4, 8}).param("kv_tile", {32, 64});
  s.rule("the tiles fit the shared memory of a block", [=](const tune::Config& c) {
    const int64_t rows = c["warps"] * 16, kv = c["kv_tile"];
    return (rows * (d + kPad) + d * (kv + kPad) + kv * (e + kPad)) * 2 <=
           gp.shared_memory_per_block;
  });
  s.rule("registers per thread within the limits", [=](const tune::Config& c) {
    const int64_t regs = c["kv_tile"] / 2 + e / 2 + c["kv_tile"] / 2 + e / 4 + 48;
    return regs <= gp.max_registers_per_thread;
  });
  tune::Config best({{"warps", 4}, {"kv_tile", 64}});
  if (!s.broken_rules(best).empty()) best.set("kv_tile", 32);
  s.default_config(best);
  return s;
}

absl::StatusOr<ScheduledKernel> build_attention(const TemplateContext& ctx, const tune::Config& c) {
  std::optional<AttentionProblem> p = attention_problem(ctx);
  if (!p) return absl::InvalidArgumentError("CUDA attention template does not apply to " + ctx.name);
  FlashAttention a(ctx, *p, c);
  Stmt body = a.kernel();
  return kernel_of(ctx.name, a.params(), body);
}

}  // namespace

ScheduleTemplate attention_tensor_core_cuda_template() {
  return cuda_template(
      "cuda_tensor_core_attention",
      [](const TemplateContext& ctx) { return attention_problem(ctx).has_value(); },
      attention_space, build_attention);
}

}  // namespace loom::ops
