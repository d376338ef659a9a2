// Layouts: ALT's primitives (split, reorder, fuse, pad, unfold, swizzle) checked over every index
// of small tensors for random chains, and kernels written against logical indices storing
// through them.

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "loom/ir/op.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/layout/layout.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "graph_reference.hpp"
#include "loom/compiler.hpp"
#include "loom/graph/passes.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::rng;

namespace {

std::vector<ir::Expr> consts(const std::vector<int64_t>& v) {
  std::vector<ir::Expr> out;
  for (int64_t x : v) out.push_back(ir::Expr(x));
  return out;
}

std::vector<int64_t> values(const std::vector<ir::Expr>& v) {
  std::vector<int64_t> out;
  for (const ir::Expr& e : v) {
    std::optional<int64_t> c = ir::as_const_int(ir::simplify(e));
    REQUIRE(c.has_value());
    out.push_back(*c);
  }
  return out;
}

// Every index of a shape, row-major.
std::vector<std::vector<int64_t>> all_indices(const std::vector<int64_t>& shape) {
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> idx(shape.size(), 0);
  int64_t n = 1;
  for (int64_t e : shape) n *= e;
  for (int64_t k = 0; k < n; ++k) {
    out.push_back(idx);
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < shape[static_cast<size_t>(d)]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return out;
}

// Compiles f (params: an input, an output) for the host CPU and runs it on in and out.
void run_on_host(const ir::Func& f, std::vector<float>& in, std::vector<float>& out) {
  auto jit = runtime::CpuJit::create(Target::host_cpu());
  REQUIRE(jit.ok());
  ir::Module m{f.name, Target::host_cpu(), {passes::lower_scheduled(f, Target::host_cpu())}};
  auto fns = (*jit)->compile(m);
  INFO(fns.status().ToString());
  REQUIRE(fns.ok());
  void* buffers[] = {in.data(), out.data()};
  (*fns)[0](buffers, nullptr);
}

// A random primitive applied to l (always a valid one).
Layout random_step(const Layout& l) {
  std::mt19937_64& g = rng();
  const int r = static_cast<int>(l.physical_shape().size());
  std::vector<int64_t> ext = values(l.physical_shape());
  auto pick = [&](int n) { return static_cast<int>(g() % static_cast<uint64_t>(n)); };
  switch (pick(6)) {
    case 0:
      return l.split(pick(r), 1 + pick(4));
    case 1: {
      std::vector<int> perm(static_cast<size_t>(r));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), g);
      return l.reorder(perm);
    }
    case 2:
      if (r >= 2) return l.fuse(pick(r - 1));
      return l.pad(0, 1 + pick(3));
    case 3:
      return l.pad(pick(r), 1 + pick(4));
    case 4: {
      if (r < 2) return l.split(0, 1 + pick(3));
      const int d = pick(r), by = (d + 1 + pick(r - 1)) % r;
      int64_t width = 1;  // a random power of two dividing the extent
      while (ext[static_cast<size_t>(d)] % (width * 2) == 0 && pick(3) != 0) width *= 2;
      return l.swizzle(d, by, width, 1 + pick(3));
    }
    default: {
      int d = pick(r);
      int64_t tile = 1 + pick(static_cast<int>(ext[static_cast<size_t>(d)]));
      int64_t stride = 1 + pick(static_cast<int>(tile));
      return l.unfold(d, tile, stride);
    }
  }
}

}  // namespace

TEST_CASE("layout: NCHW16c from split and reorder, with its canonical text", "[layout]") {
  Layout l = Layout::row_major(consts({2, 35, 3, 4})).split(1, 16).reorder({0, 1, 3, 4, 2});
  REQUIRE(l.ok());
  CHECK(values(l.physical_shape()) == std::vector<int64_t>{2, 3, 3, 4, 16});  // 35 pads to 48
  CHECK(l.to_string() == "row_major(2, 35, 3, 4).split(1, 16).reorder(0, 1, 3, 4, 2)");
  CHECK(values({l.physical_size()})[0] == 2 * 3 * 3 * 4 * 16);
  // Element (1, 20, 2, 3): block 1, lane 4 -> physical (1, 1, 2, 3, 4).
  CHECK(values(l.physical_index(consts({1, 20, 2, 3}))) == std::vector<int64_t>{1, 1, 2, 3, 4});
  CHECK(values({l.offset(consts({1, 20, 2, 3}))})[0] == (((1 * 3 + 1) * 3 + 2) * 4 + 3) * 16 + 4);
  CHECK(values(l.logical_index(consts({1, 1, 2, 3, 4}))) == std::vector<int64_t>{1, 20, 2, 3});
  CHECK(!l.is_row_major());
  CHECK(Layout::row_major(consts({2, 3})).is_row_major());
}

TEST_CASE("layout: random primitive chains round-trip every index of small tensors", "[layout]") {
  std::mt19937_64& g = rng();
  for (int trial = 0; trial < 200; ++trial) {
    const int rank = 1 + static_cast<int>(g() % 3);
    std::vector<int64_t> shape;
    for (int d = 0; d < rank; ++d) shape.push_back(1 + static_cast<int64_t>(g() % 7));
    Layout l = Layout::row_major(consts(shape));
    const int steps = 1 + static_cast<int>(g() % 4);
    for (int s = 0; s < steps; ++s) l = random_step(l);
    INFO(l.to_string());
    REQUIRE(l.ok());
    const std::vector<int64_t> phys = values(l.physical_shape());
    const int64_t size = values({l.physical_size()})[0];
    std::set<int64_t> offsets;
    for (const std::vector<int64_t>& idx : all_indices(shape)) {
      std::vector<int64_t> p = values(l.physical_index(consts(idx)));
      REQUIRE(p.size() == phys.size());
      for (size_t d = 0; d < p.size(); ++d) REQUIRE((p[d] >= 0 && p[d] < phys[d]));
      REQUIRE(values(l.logical_index(consts(p))) == idx);
      int64_t off = values({l.offset(consts(idx))})[0];
      REQUIRE((off >= 0 && off < size));
      REQUIRE(offsets.insert(off).second);  // distinct elements, distinct places
    }
    if (!l.is_injective()) continue;
    // Without unfold, exactly as many physical elements as logical ones map back to themselves
    // (the others are padding).
    int64_t held = 0;
    for (const std::vector<int64_t>& p : all_indices(phys)) {
      std::vector<int64_t> idx = values(l.logical_index(consts(p)));
      bool inside = true;
      for (size_t d = 0; d < idx.size(); ++d) inside = inside && idx[d] >= 0 && idx[d] < shape[d];
      if (inside && values(l.physical_index(consts(idx))) == p) ++held;
    }
    int64_t numel = 1;
    for (int64_t e : shape) numel *= e;
    REQUIRE(held == numel);
  }
}

TEST_CASE("layout: stride_of steps a dim by one addition wherever no primitive splits it",
          "[layout]") {
  std::mt19937_64& g = rng();
  int affine = 0, not_affine = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int rank = 1 + static_cast<int>(g() % 3);
    std::vector<int64_t> shape;
    for (int d = 0; d < rank; ++d) shape.push_back(1 + static_cast<int64_t>(g() % 7));
    Layout l = Layout::row_major(consts(shape));
    const int steps = static_cast<int>(g() % 4);
    for (int s = 0; s < steps; ++s) l = random_step(l);
    INFO(l.to_string());
    for (int d = 0; d < rank; ++d) {
      std::optional<ir::Expr> stride = l.stride_of(d);
      if (!stride) {
        ++not_affine;
        continue;
      }
      ++affine;
      const int64_t step = values({*stride})[0];
      for (std::vector<int64_t> idx : all_indices(shape)) {
        if (idx[static_cast<size_t>(d)] + 1 >= shape[static_cast<size_t>(d)]) continue;
        const int64_t here = values({l.offset(consts(idx))})[0];
        ++idx[static_cast<size_t>(d)];
        REQUIRE(values({l.offset(consts(idx))})[0] == here + step);
      }
    }
  }
  CHECK(affine > 50);
  CHECK(not_affine > 50);
  // NCHW16c and NHWC keep rows and columns affine, not channels.
  Layout blocked = Layout::of(consts({1, 32, 5, 7}), channels_blocked(16));
  CHECK(values({*blocked.stride_of(2)})[0] == 7 * 16);
  CHECK(values({*blocked.stride_of(3)})[0] == 16);
  CHECK_FALSE(blocked.stride_of(1).has_value());
  Layout last = Layout::of(consts({1, 3, 5, 7}), channels_last());
  CHECK(values({*last.stride_of(1)})[0] == 1);
  CHECK(values({*last.stride_of(2)})[0] == 21);
}

TEST_CASE("layout: swizzle permutes 16-byte chunks so that 8 rows fall in 8 bank groups",
          "[layout]") {
  // A shared tile of 64 rows of 32 f16 (4 chunks of 8, 64 bytes a row): chunk c of row r goes
  // to chunk c ^ ((r / 2) % 4).
  Layout l = Layout::row_major(consts({64, 32})).split(1, 8).swizzle(1, 0, 4, 2);
  REQUIRE(l.ok());
  CHECK(l.to_string() == "row_major(64, 32).split(1, 8).swizzle(1, 0, 4, 2)");
  CHECK(values(l.physical_shape()) == std::vector<int64_t>{64, 4, 8});
  CHECK(values(l.physical_index(consts({5, 9}))) == std::vector<int64_t>{5, 1 ^ 2, 1});
  CHECK(values(l.logical_index(consts({5, 3, 1}))) == std::vector<int64_t>{5, 9});
  CHECK_FALSE(l.stride_of(1).has_value());
  CHECK_FALSE(l.stride_of(0).has_value());
  // The 8 rows one ldmatrix phase reads (rows r0..r0+7, one chunk each) cover the 8 groups of
  // 4 banks of a 128-byte line once each, for every chunk and every start row.
  for (int64_t r0 = 0; r0 < 64; r0 += 8)
    for (int64_t chunk = 0; chunk < 4; ++chunk) {
      std::set<int64_t> groups;
      for (int64_t r = r0; r < r0 + 8; ++r)
        groups.insert(values({l.offset(consts({r, chunk * 8}))})[0] * 2 / 16 % 8);
      CHECK(groups.size() == 8);
    }
  // The rows of the plain layout collide: 2 rows per line, 4 ways.
  Layout plain = Layout::row_major(consts({64, 32}));
  std::set<int64_t> groups;
  for (int64_t r = 0; r < 8; ++r)
    groups.insert(values({plain.offset(consts({r, 0}))})[0] * 2 / 16 % 8);
  CHECK(groups.size() == 2);
}

TEST_CASE("layout: a CPU kernel stores through a swizzled layout", "[layout]") {
  const int64_t R = 7, C = 24;
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), consts({R, C}));
  Layout swizzled = Layout::row_major(consts({R, C})).split(1, 3).swizzle(1, 0, 8, 1);
  REQUIRE(swizzled.ok());
  ir::Buffer y = ir::Buffer::make("y", DType::f32(), swizzled);
  ir::Var r("r"), c("c");
  ir::Stmt body = ir::Store::make(y, x.load({r, c}) + ir::Expr(1.0f), {r, c});
  body = ir::For::make(c, ir::Expr(int64_t{0}), ir::Expr(C), ir::ForKind::kSerial, body);
  body = ir::For::make(r, ir::Expr(int64_t{0}), ir::Expr(R), ir::ForKind::kSerial, body);
  std::vector<float> in(static_cast<size_t>(R * C)), out(static_cast<size_t>(R * C), -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  run_on_host(ir::Func{"to_swizzled", {x, y}, body}, in, out);
  // Independent reference: element (i, j) at row i, group (j / 3) ^ (i % 8), place j % 3.
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j)
      REQUIRE(out[static_cast<size_t>(i * C + ((j / 3) ^ (i % 8)) * 3 + j % 3)] ==
              in[static_cast<size_t>(i * C + j)] + 1.0f);
}

TEST_CASE("layout: unfold stores overlapping windows", "[layout]") {
  // 10 elements in tiles of 4, stride 3: tiles start at 0, 3 and 6.
  Layout l = Layout::row_major(consts({10})).unfold(0, 4, 3);
  REQUIRE(l.ok());
  CHECK(values(l.physical_shape()) == std::vector<int64_t>{3, 4});
  CHECK(!l.is_injective());
  CHECK(values(l.logical_index(consts({1, 3}))) == std::vector<int64_t>{6});  // also (2, 0)
  CHECK(values(l.physical_index(consts({6}))) == std::vector<int64_t>{2, 0});
  CHECK(values(l.physical_index(consts({9}))) == std::vector<int64_t>{2, 3});
  // 11 elements: a fourth tile, starting at 9, padded past the end.
  Layout m = Layout::row_major(consts({11})).unfold(0, 4, 3);
  CHECK(values(m.physical_shape()) == std::vector<int64_t>{4, 4});
  CHECK(values(m.physical_index(consts({10}))) == std::vector<int64_t>{3, 1});
}

TEST_CASE("layout errors: bad primitive arguments are reported, the layout kept", "[layout]") {
  Layout base = Layout::row_major(consts({4, 6}));
  for (const Layout& bad : {base.split(2, 4), base.split(0, 0), base.reorder({0, 0}),
                            base.reorder({1}), base.fuse(1), base.pad(-1, 2), base.pad(0, 0),
                            base.unfold(0, 5, 1), base.unfold(1, 3, 4), base.unfold(1, 0, 1),
                            base.swizzle(1, 1, 2, 1), base.swizzle(1, 0, 3, 1),
                            base.swizzle(1, 0, 4, 1), base.swizzle(0, 1, 2, 0)}) {
    CHECK(!bad.ok());
    CHECK(bad.status().message().find("layout row_major(4, 6)") != std::string::npos);
    CHECK(values(bad.physical_shape()) == std::vector<int64_t>{4, 6});
  }
  // The first error sticks; later primitives are ignored.
  Layout chained = base.split(5, 2).reorder({1, 0});
  CHECK(!chained.ok());
  CHECK(chained.steps().empty());
  Layout strided = Layout::strided(consts({4, 6}), consts({1, 4}), ir::Expr(int64_t{24}));
  CHECK(!strided.split(0, 2).ok());
}

TEST_CASE("layout: a kernel written against logical indices stores NCHW8c through the layout",
          "[layout]") {
  const int64_t N = 2, C = 13, H = 3, W = 5;  // C pads to 16
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), consts({N, C, H, W}));
  Layout blocked = Layout::row_major(consts({N, C, H, W})).split(1, 8).reorder({0, 1, 3, 4, 2});
  ir::Buffer y = ir::Buffer::make("y", DType::f32(), blocked);
  ir::Var n("n"), c("c"), h("h"), w("w");
  ir::Stmt body = ir::Store::make(y, x.load({n, c, h, w}) * ir::Expr(2.0f), {n, c, h, w});
  for (auto [v, e] : {std::pair{w, W}, {h, H}, {c, C}, {n, N}})
    body = ir::For::make(v, ir::Expr(int64_t{0}), ir::Expr(e), ir::ForKind::kSerial, body);
  std::vector<float> in(static_cast<size_t>(N * C * H * W)),
      out(static_cast<size_t>(N * 2 * H * W * 8), -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  run_on_host(ir::Func{"to_nchw8c", {x, y}, body}, in, out);
  // Independent reference: NCHW8c offset of (n, c, h, w) written out by hand.
  for (int64_t a = 0; a < N; ++a)
    for (int64_t b = 0; b < C; ++b)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          int64_t at = (((a * 2 + b / 8) * H + i) * W + j) * 8 + b % 8;
          REQUIRE(out[static_cast<size_t>(at)] == 2.0f * in[static_cast<size_t>(((a * C + b) * H + i) * W + j)]);
        }
}

// ---- Graph tensors stored in layouts -----------------------------------------------------------

namespace {

Layout nchw8c(int64_t n, int64_t c, int64_t h, int64_t w) {
  return Layout::row_major(consts({n, c, h, w})).split(1, 8).reorder({0, 1, 3, 4, 2});
}

// Compiles g fused and not (poisoned buffers) and checks both against the reference interpreter.
void check_graph(const Graph& g, const std::vector<NDArray>& inputs) {
  std::vector<NDArray> want = loom::testing::reference_run(g, inputs);
  for (bool fuse : {true, false}) {
    CompileOptions o;
    o.fuse = fuse;
    o.poison_buffers = true;
    auto c = Compiler().compile(g, o);
    INFO("fuse " << fuse << ": " << c.status().ToString());
    REQUIRE(c.ok());
    std::vector<NDArray> got = loom::testing::run_ok(*c, inputs);
    for (size_t k = 0; k < got.size(); ++k) loom::testing::require_close(got[k], want[k], 1e-4, 1e-4);
  }
}

}  // namespace

TEST_CASE("layout_transform: operators read and write tensors stored NCHW8c", "[layout]") {
  using loom::testing::random_array;
  // 13 channels pad to 16: the padding is never read (poisoned buffers would show it).
  Graph g;
  Tensor x = g.input("x", {2, 13, 5, 6});
  Tensor blocked = x.layout_transform(nchw8c(2, 13, 5, 6));
  CHECK(blocked.valid());
  Tensor w = g.constant("w", random_array(DType::f32(), {7, 13, 3, 3}));
  Tensor r = g.input("r", {2, 7, 5, 6});
  // conv + relu + a stored layout (one epilogue), then an add reading it through its layout.
  Tensor y = blocked.relu().conv2d(w, {.padding = 1}).relu().layout_transform(nchw8c(2, 7, 5, 6));
  g.output(y.add(r));
  g.output(blocked.exp().sum({1}));  // a reduction over the blocked dim
  check_graph(g, {random_array(DType::f32(), {2, 13, 5, 6}), random_array(DType::f32(), {2, 7, 5, 6})});
}

TEST_CASE("layout_transform errors: wrong shape, symbolic dims, unfold, stored outputs",
          "[layout]") {
  {
    Graph g;
    Tensor x = g.input("x", {2, 13, 5, 6});
    g.output(x.layout_transform(nchw8c(2, 12, 5, 6)).relu());
    auto c = Compiler().compile(g);
    REQUIRE(!c.ok());
    CHECK(c.status().message().find("with a layout of row_major(2, 12, 5, 6)") != std::string::npos);
  }
  {
    Graph g;
    Tensor x = g.input("x", {Dim("n"), 8});
    g.output(x.layout_transform(Layout::row_major(consts({4, 8})).split(1, 4)).relu());
    auto c = Compiler().compile(g);
    REQUIRE(!c.ok());
    CHECK(c.status().message().find("needs static extents") != std::string::npos);
  }
  {
    Graph g;
    Tensor x = g.input("x", {10});
    g.output(x.layout_transform(Layout::row_major(consts({10})).unfold(0, 4, 3)).relu());
    auto c = Compiler().compile(g);
    REQUIRE(!c.ok());
    CHECK(c.status().message().find("hold each element once") != std::string::npos);
  }
  {
    Graph g;
    Tensor x = g.input("x", {4, 8});
    g.output(x.layout_transform(Layout::row_major(consts({4, 8})).split(1, 4)));
    auto c = Compiler().compile(g);
    REQUIRE(!c.ok());
    CHECK(c.status().message().find("outputs are row-major") != std::string::npos);
  }
}

TEST_CASE("layout_transform: a transform to the layout a tensor already has goes", "[layout]") {
  Graph g;
  Tensor x = g.input("x", {2, 16, 3, 3});
  Tensor a = x.layout_transform(nchw8c(2, 16, 3, 3));
  Tensor b = a.layout_transform(nchw8c(2, 16, 3, 3));  // already NCHW8c: an identity
  Tensor back = b.layout_transform(Layout::row_major(consts({2, 16, 3, 3})));
  g.output(back.relu());
  auto r = passes::remove_identities(g);
  REQUIRE(r.ok());
  int transforms = 0;
  for (const Node& n : r->nodes()) transforms += n.op == "layout_transform";
  CHECK(transforms == 2);
  check_graph(*r, {loom::testing::random_array(DType::f32(), {2, 16, 3, 3})});
}
