// libFuzzer target: bytes as a program of fluent graph API calls (inputs with small shapes, then
// operators with shapes, axes and attributes taken from the bytes, most of them wrong some of the
// time). The builder must record an error that compile() returns, or the graph must compile
// (TuneLevel::kNone) and run on small inputs in guard-page mode, where any access outside a
// buffer by generated code faults. Never a crash, never a run() error on inputs of the promised
// types.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "loom/loom.hpp"
#include "loom/runtime/guard_pages.hpp"
#include "loom/runtime/thread_pool.hpp"

using namespace loom;

namespace {

// Reads the fuzz input front to back; zeros once it is used up.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool done() const { return pos_ >= size_; }
  // An int in [lo, hi].
  int in(int lo, int hi) { return lo + next() % (hi - lo + 1); }
  // Mostly valid axes for a rank-r tensor, sometimes out of range.
  int axis(int rank) { return in(-rank - 1, rank); }
  std::vector<int> axes(int rank) {
    std::vector<int> out;
    for (int k = in(0, 2); k > 0; --k) out.push_back(axis(rank));
    return out;
  }
  int64_t extent() { return in(0, 9) == 0 ? 0 : in(1, 7); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

constexpr int64_t kMaxElements = 1 << 14;  // larger graphs compile and run too slowly to fuzz

NDArray filled(DType dtype, const std::vector<int64_t>& shape, Bytes& b) {
  NDArray a(dtype, shape);
  // Integers in [-2, 5]: zero and -1 divisors among them.
  for (int64_t i = 0; i < a.numel(); ++i)
    a.set(i, dtype.is_float() ? (b.next() - 128) / 32.0 : b.next() % 8 - 2.0);
  return a;
}

Tensor pick(const std::vector<Tensor>& pool, Bytes& b) { return pool[b.next() % pool.size()]; }

// One operator applied to tensors of the pool; invalid choices are fine (they record errors).
Tensor apply_op(Graph& g, std::vector<Tensor>& pool, Bytes& b) {
  Tensor x = pick(pool, b);
  const int r = x.valid() ? x.rank() : 1;
  switch (b.next() % 27) {
    case 0: return x.add(pick(pool, b));
    case 1: return x.mul(pick(pool, b));
    case 2: return x.sub(pick(pool, b)).maximum(pick(pool, b));
    case 3: return x.div(pick(pool, b));  // integers too: x / 0 is defined (0)
    case 4: return x.relu();
    case 5: return x.exp().tanh();
    case 6: return x.gelu(b.next() & 1).sigmoid();
    case 7: return x.softmax(b.axis(r));
    case 8: return x.sum(b.axes(r), b.next() & 1);
    case 9: return x.mean(b.axes(r), b.next() & 1).max(b.axes(r));
    case 10: {
      std::vector<int> perm;
      for (int k = 0; k < r; ++k) perm.push_back(k);
      for (int k = r - 1; k > 0; --k) std::swap(perm[k], perm[b.next() % (k + 1)]);
      if (b.next() % 8 == 0) perm.push_back(0);  // a wrong permutation now and then
      return x.transpose(perm);
    }
    case 11: {
      Shape s;
      for (int k = b.in(1, 3); k > 0; --k) s.push_back(Dim(b.in(0, 5) == 0 ? -1 : b.extent()));
      return x.reshape(s);
    }
    case 12: return x.matmul(pick(pool, b));
    case 13: {
      const int64_t c = x.valid() && r == 4 && x.shape()[1].is_static() ? x.shape()[1].value() : 1;
      const int groups = b.next() % 3 == 0 ? static_cast<int>(c) : 1;
      NDArray w = filled(DType::f32(), {b.in(1, 4), c / std::max(groups, 1), b.in(1, 3), b.in(1, 3)}, b);
      return x.conv2d(g.constant("w", w), {.stride = {b.in(1, 3), b.in(1, 2)},
                                          .padding = {b.in(0, 2), b.in(0, 1), b.in(0, 2), b.in(0, 1)},
                                          .dilation = b.in(1, 2),
                                          .groups = groups});
    }
    case 14: return x.max_pool2d({.kernel = {b.in(1, 3), b.in(1, 3)}, .stride = b.in(1, 2), .padding = b.in(0, 1)});
    case 15: return x.avg_pool2d({.kernel = b.in(1, 3), .stride = {b.in(1, 2), b.in(1, 3)}, .padding = {0, b.in(0, 1)}});
    case 16: {
      std::vector<int64_t> norm;
      if (x.valid() && r > 0 && x.shape().back().is_static()) norm = {x.shape().back().value()};
      else norm = {b.extent()};
      return x.layer_norm(g.constant("gamma", filled(DType::f32(), norm, b)),
                          g.constant("beta", filled(DType::f32(), norm, b)));
    }
    case 17: return concat({x, pick(pool, b)}, b.axis(r));
    case 18: {
      std::vector<int64_t> starts = {b.in(-4, 4)}, ends = {b.in(-4, 8)}, steps = {b.in(-2, 2)};
      return x.slice(starts, ends, {b.axis(r)}, steps);
    }
    case 19: {
      std::vector<PadWidth> pads;
      for (int k = 0; k < r; ++k) pads.push_back({b.in(0, 2), b.in(0, 2)});
      return x.pad(pads, static_cast<PadMode>(b.next() % 3), 1.5);
    }
    case 20: {
      Shape s;
      for (int k = b.in(0, 4); k > 0; --k) s.push_back(Dim(b.in(1, 4)));
      return x.expand(s);
    }
    case 21: {
      const DType types[] = {DType::f32(), DType::i32(), DType::boolean(), DType::f16()};
      return x.cast(types[b.next() % 4]);
    }
    case 22: return pick(pool, b).greater(x).where(x, pick(pool, b));
    case 23: {
      NDArray idx(DType::i64(), {b.in(0, 4)});
      for (int64_t i = 0; i < idx.numel(); ++i) idx.set(i, b.in(-8, 8));
      return x.gather(g.constant("idx", idx), b.axis(r));
    }
    case 24: return x.unsqueeze({b.axis(r + 1)}).squeeze(b.axes(r + 1)).flatten(b.in(-r, r));
    case 25: {
      // Two products of x by constant matrices (merged into one by the graph passes), each with
      // a bias or not, added or joined.
      const int64_t k = x.valid() && r > 0 && x.shape().back().is_static()
                            ? x.shape().back().value()
                            : b.extent();
      auto dense = [&](int64_t n) {
        Tensor y =
            x.matmul(g.constant("w", filled(x.valid() ? x.dtype() : DType::f32(), {k, n}, b)));
        return b.next() & 1
                   ? y
                   : y.add(g.constant("b", filled(y.valid() ? y.dtype() : DType::f32(), {n}, b)));
      };
      const int64_t n = b.in(1, 5);
      Tensor first = dense(n);
      return b.next() & 1 ? first.add(dense(n)) : concat({first, dense(b.in(1, 5))}, -1);
    }
    default: return x.argmax(b.axis(r), b.next() & 1).cast(DType::f32());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Every buffer a kernel sees ends at an inaccessible page: JIT code is not instrumented by
  // ASan, so this is what catches its out-of-bounds accesses.
  runtime::set_guard_pages(runtime::GuardPages::kAfter);
  set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes b(data, size);
  Graph g;
  std::vector<Tensor> pool;
  std::vector<NDArray> inputs;
  for (int k = b.in(1, 3); k > 0; --k) {
    std::vector<int64_t> shape;
    for (int d = b.in(0, 4); d > 0; --d) shape.push_back(b.extent());
    const DType dtype = b.next() % 6 == 0 ? DType::i32() : DType::f32();
    pool.push_back(g.input("x" + std::to_string(k), Shape(shape.begin(), shape.end()), dtype));
    inputs.push_back(filled(dtype, shape, b));
  }
  for (int k = b.in(1, 6); k > 0 && !b.done(); --k) pool.push_back(apply_op(g, pool, b));
  g.output(pool.back());
  if (b.next() & 1) g.output(pool[pool.size() / 2]);

  CompileOptions options;
  options.use_disk_cache = false;
  options.report_progress = false;
  if (!g.status().ok()) {
    // The builder's first error is what compile() returns.
    absl::StatusOr<CompiledGraph> c = Compiler().compile(g, options);
    if (c.ok() || c.status() != g.status()) std::abort();
    return 0;
  }
  for (const Node& n : g.nodes()) {
    int64_t count = 1;
    for (const Dim& d : n.type.shape) count *= d.is_static() ? d.value() : 1;
    if (count > kMaxElements) return 0;
  }
  absl::StatusOr<CompiledGraph> c = Compiler().compile(g, options);
  if (!c.ok()) {
    if (c.status().message().empty()) std::abort();
    return 0;  // some valid graphs are refused (unsupported layouts or dtypes), with a status
  }
  absl::StatusOr<std::vector<NDArray>> out = c->run(inputs);
  if (!out.ok()) {
    std::fprintf(stderr, "run() failed on inputs of the compiled types: %s\n",
                 out.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
