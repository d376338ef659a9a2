// The CPU back end end to end: hand-built flattened loop IR -> emit_llvm -> ORC JIT -> run,
// checked against naive C++ on fresh random data of odd and prime sizes, outputs poisoned first.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "loom/core/ndarray.hpp"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/stmt.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/runtime/guard_pages.hpp"
#include "test_util.hpp"

namespace {

using loom::DType;
using loom::testing::rng;
using loom::testing::test_seed;
namespace ir = loom::ir;
namespace runtime = loom::runtime;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::unique_ptr<runtime::CpuJit> make_jit(const loom::Target& target = loom::Target::host_cpu()) {
  auto jit = runtime::CpuJit::create(target);
  INFO(jit.status().ToString());
  REQUIRE(jit.ok());
  return std::move(*jit);
}

std::vector<runtime::KernelFn> compile(runtime::CpuJit& jit, const std::string& name,
                                       std::vector<ir::Func> funcs) {
  ir::Module m{name, jit.target(), std::move(funcs)};
  auto kernels = jit.compile(m);
  INFO(kernels.status().ToString());
  REQUIRE(kernels.ok());
  REQUIRE(kernels->size() == m.funcs.size());
  for (runtime::KernelFn k : *kernels) REQUIRE(k != nullptr);
  return *kernels;
}

void run(runtime::KernelFn kernel, std::vector<void*> buffers, std::vector<int64_t> scalars = {}) {
  kernel(buffers.data(), scalars.data());
}

// A 1-D buffer of n elements (the codegen only sees flat offsets anyway).
ir::Buffer buffer(const std::string& name, DType t, ir::Expr n,
                  ir::MemoryScope scope = ir::MemoryScope::kGlobal) {
  return ir::Buffer::make(name, t, {std::move(n)}, scope);
}

ir::Stmt loop(const ir::Var& v, ir::Expr extent, ir::Stmt body,
              ir::ForKind kind = ir::ForKind::kSerial, ir::Expr min = ir::Expr(0)) {
  return ir::For::make(v, std::move(min), std::move(extent), kind, std::move(body));
}

ir::Stmt store(const ir::Buffer& b, ir::Expr value, ir::Expr index) {
  return ir::Store::make(b, std::move(value), {std::move(index)});
}

// Offset of element i of a kernel working on `lanes` elements at a time.
ir::Expr lanes_index(const ir::Var& i, int lanes) {
  if (lanes == 1) return i;
  return ir::Ramp::make(i * lanes, ir::Expr(1), lanes);
}

std::vector<float> random_floats(size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(rng()));
  return v;
}

template <typename T>
std::vector<T> random_ints(size_t n, int64_t lo, int64_t hi) {
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(dist(rng()));
  return v;
}

bool close(double got, double want, double rtol = 1e-5, double atol = 1e-6) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

template <typename T, typename U>
void require_close(const std::vector<T>& got, const std::vector<U>& want, double rtol = 1e-5,
                   double atol = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (!close(static_cast<double>(got[i]), static_cast<double>(want[i]), rtol, atol)) {
      INFO("seed " << test_seed() << ", element " << i << " of " << got.size() << ": got " << got[i]
                   << ", expected " << want[i]);
      REQUIRE(false);
    }
  }
}

template <typename T, typename U>
void require_equal(const std::vector<T>& got, const std::vector<U>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (static_cast<int64_t>(got[i]) != static_cast<int64_t>(want[i])) {
      INFO("seed " << test_seed() << ", element " << i << " of " << got.size() << ": got "
                   << static_cast<int64_t>(got[i]) << ", expected "
                   << static_cast<int64_t>(want[i]));
      REQUIRE(false);
    }
  }
}

}  // namespace

TEST_CASE("codegen: host target reports cpu name and features", "[codegen]") {
  loom::Target host = loom::Target::host_cpu();
  CHECK(host.is_cpu());
  CHECK_FALSE(host.cpu_name().empty());
  CHECK_FALSE(host.triple().empty());
  for (const std::string& f : host.features()) CHECK(f.find('+') == std::string::npos);
#if defined(__x86_64__)
  CHECK(host.has_feature("sse2"));
#endif
  // Cached: the same answer every time.
  CHECK(loom::Target::host_cpu().fingerprint() == host.fingerprint());
  auto jit = make_jit();
  CHECK(jit->target().fingerprint() == host.fingerprint());
}

TEST_CASE("codegen: elementwise f32 add, scalar loop, constant sizes", "[codegen]") {
  auto jit = make_jit();
  for (int64_t n : {1, 7, 31, 257}) {
    ir::Buffer a = buffer("a", DType::f32(), n), b = buffer("b", DType::f32(), n),
               c = buffer("c", DType::f32(), n);
    ir::Var i("i");
    ir::Func f{"add", {a, b, c}, loop(i, n, store(c, a(i) + b(i), i))};
    auto kernels = compile(*jit, "add_" + std::to_string(n), {f});
    auto va = random_floats(n, -10, 10), vb = random_floats(n, -10, 10);
    std::vector<float> vc(n, kNaN), want(n);
    run(kernels[0], {va.data(), vb.data(), vc.data()});
    for (int64_t k = 0; k < n; ++k) want[k] = va[k] + vb[k];
    require_close(vc, want, 0, 0);
  }
}

TEST_CASE("codegen: prefetch of elements far outside the buffer never faults", "[codegen]") {
  // Each step hints at the elements 2 pages past and 2 pages before its own: for the first and
  // last elements those lie in the inaccessible pages around a guarded buffer, and beyond. Both
  // hints: towards L2 (prefetch) and into L1 (prefetch_l1).
  auto jit = make_jit();
  for (runtime::GuardPages mode : {runtime::GuardPages::kAfter, runtime::GuardPages::kBefore})
    for (const char* intrinsic : {"prefetch", "prefetch_l1"}) {
      const int64_t n = 301, far = 2048;
      ir::Buffer a = buffer("a", DType::f32(), n), c = buffer("c", DType::f32(), n);
      ir::Var i("i");
      auto hint = [&](ir::Expr index) {
        return ir::Evaluate::make(ir::Call::make(intrinsic, {a(std::move(index))}));
      };
      ir::Func f{
          "hinted_copy",
          {a, c},
          loop(i, n, ir::Seq::make({hint(i + far), hint(i - far), store(c, a(i) * 2.0f, i)}))};
      auto kernels = compile(*jit, "hinted_copy", {f});
      std::shared_ptr<void> guarded = runtime::allocate_guarded(n * 4, mode);
      REQUIRE(guarded);
      std::vector<float> va = random_floats(n, -10, 10), vc(n, kNaN), want(n);
      std::memcpy(guarded.get(), va.data(), va.size() * sizeof(float));
      run(kernels[0], {guarded.get(), vc.data()});
      for (int64_t k = 0; k < n; ++k) want[k] = va[k] * 2;
      require_close(vc, want, 0, 0);
    }
}

TEST_CASE("codegen: scalar i64 parameter as loop extent, vector body and scalar tail",
          "[codegen]") {
  // c = a + 2 * b over n elements: ramps of 8 lanes over n / 8 blocks, then a scalar tail.
  auto jit = make_jit();
  constexpr int kLanes = 8;
  ir::Var n("n");
  ir::Buffer a = buffer("a", DType::f32(), n), b = buffer("b", DType::f32(), n),
             c = buffer("c", DType::f32(), n);
  ir::Var vo("vo"), t("t");
  ir::Expr vec = ir::Ramp::make(vo * kLanes, ir::Expr(1), kLanes);
  ir::Expr two = ir::Broadcast::make(ir::Expr(2.0f), kLanes);
  ir::Stmt body = ir::Seq::make({
      loop(vo, n / kLanes, store(c, a.load({vec}) + two * b.load({vec}), vec)),
      loop(t, n % kLanes, store(c, a(t) + 2.0f * b(t), t), ir::ForKind::kSerial,
           n / kLanes * kLanes),
  });
  // Scalar params may be listed between buffers: buffers and scalars are numbered separately.
  ir::Func f{"saxpy", {a, n, b, c}, body};
  auto kernels = compile(*jit, "saxpy", {f});
  for (int64_t size : {1, 7, 8, 31, 257}) {
    auto va = random_floats(size, -10, 10), vb = random_floats(size, -10, 10);
    std::vector<float> vc(size, kNaN), want(size);
    run(kernels[0], {va.data(), vb.data(), vc.data()}, {size});
    for (int64_t k = 0; k < size; ++k) want[k] = va[k] + 2.0f * vb[k];
    require_close(vc, want, 0, 0);
  }
}

TEST_CASE("codegen: gathers and scatters from strided ramps", "[codegen]") {
  // y (k x 8) = transpose of x (8 x k), read with stride-k gathers; z = x again via scatters.
  auto jit = make_jit();
  const int64_t k = 31;
  ir::Buffer x = buffer("x", DType::f32(), 8 * k), y = buffer("y", DType::f32(), 8 * k),
             z = buffer("z", DType::f32(), 8 * k);
  ir::Var j("j"), j2("j2");
  ir::Expr column = ir::Ramp::make(ir::Expr(j), ir::Expr(k), 8);
  ir::Expr row = ir::Ramp::make(j * 8, ir::Expr(1), 8);
  ir::Expr column2 = ir::Ramp::make(ir::Expr(j2), ir::Expr(k), 8);
  ir::Expr row2 = ir::Ramp::make(j2 * 8, ir::Expr(1), 8);
  ir::Stmt body = ir::Seq::make({
      loop(j, k, store(y, x.load({column}), row)),
      loop(j2, k, store(z, y.load({row2}) * 2.0f, column2)),
  });
  auto kernels = compile(*jit, "transpose", {ir::Func{"transpose", {x, y, z}, body}});
  auto vx = random_floats(8 * k, -1, 1);
  std::vector<float> vy(8 * k, kNaN), vz(8 * k, kNaN), want_y(8 * k), want_z(8 * k);
  run(kernels[0], {vx.data(), vy.data(), vz.data()});
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < k; ++c) {
      want_y[c * 8 + r] = vx[r * k + c];
      want_z[r * k + c] = vx[r * k + c] * 2.0f;
    }
  require_close(vy, want_y, 0, 0);
  require_close(vz, want_z, 0, 0);
}

TEST_CASE("codegen: 2-D row sum with a local accumulator", "[codegen]") {
  auto jit = make_jit();
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 31}, {31, 257}}) {
    ir::Buffer x = ir::Buffer::make("x", DType::f32(), {ir::Expr(rows), ir::Expr(cols)});
    ir::Buffer y = buffer("y", DType::f32(), rows);
    ir::Buffer acc = buffer("acc", DType::f32(), 1, ir::MemoryScope::kLocal);
    ir::Var i("i"), j("j");
    ir::Stmt body =
        loop(i, rows,
             ir::Allocate::make(acc, ir::Seq::make({
                                         store(acc, ir::Expr(0.0f), 0),
                                         loop(j, cols, store(acc, acc(0) + x(i * cols + j), 0)),
                                         store(y, acc(0), i),
                                     })));
    auto kernels = compile(*jit, "row_sum", {ir::Func{"row_sum", {x, y}, body}});
    auto vx = random_floats(rows * cols, -1, 1);
    std::vector<float> vy(rows, kNaN), want(rows);
    run(kernels[0], {vx.data(), vy.data()});
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += vx[r * cols + c];
      want[r] = static_cast<float>(s);
    }
    require_close(vy, want, 1e-5, 1e-5);
  }
}

TEST_CASE("codegen: naive matmul triple loop", "[codegen]") {
  auto jit = make_jit();
  const int64_t m = 7, n = 31, k = 257;
  ir::Buffer a = buffer("a", DType::f32(), m * k), b = buffer("b", DType::f32(), k * n),
             c = buffer("c", DType::f32(), m * n);
  ir::Buffer acc = buffer("acc", DType::f32(), 1, ir::MemoryScope::kLocal);
  ir::Var i("i"), j("j"), r("r");
  ir::Stmt body =
      loop(i, m,
           loop(j, n,
                ir::Allocate::make(
                    acc, ir::Seq::make({
                             store(acc, ir::Expr(0.0f), 0),
                             loop(r, k, store(acc, acc(0) + a(i * k + r) * b(r * n + j), 0)),
                             store(c, acc(0), i * n + j),
                         }))));
  auto kernels = compile(*jit, "matmul", {ir::Func{"matmul", {a, b, c}, body}});
  auto va = random_floats(m * k, -1, 1), vb = random_floats(k * n, -1, 1);
  std::vector<float> vc(m * n, kNaN), want(m * n);
  run(kernels[0], {va.data(), vb.data(), vc.data()});
  for (int64_t x = 0; x < m; ++x)
    for (int64_t y = 0; y < n; ++y) {
      double s = 0;
      for (int64_t z = 0; z < k; ++z) s += static_cast<double>(va[x * k + z]) * vb[z * n + y];
      want[x * n + y] = static_cast<float>(s);
    }
  require_close(vc, want, 1e-4, 1e-4);
}

TEST_CASE("codegen: select, comparisons, min and max", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 257;
  for (int lanes : {1, 8}) {
    const int64_t size = lanes == 1 ? n : 33 * 8;
    ir::Buffer a = buffer("a", DType::f32(), size), b = buffer("b", DType::f32(), size);
    ir::Buffer ia = buffer("ia", DType::i32(), size), ib = buffer("ib", DType::i32(), size);
    ir::Buffer fo = buffer("fo", DType::f32(), size), fflags = buffer("fflags", DType::i32(), size);
    ir::Buffer iflags = buffer("iflags", DType::i32(), size), io = buffer("io", DType::i32(), size);
    ir::Buffer so = buffer("so", DType::f32(), size);
    ir::Var i("i"), s("s");
    ir::Expr idx = lanes_index(i, lanes);
    ir::Expr x = a.load({idx}), y = b.load({idx}), p = ia.load({idx}), q = ib.load({idx});
    DType flag_t = DType::i32(lanes);
    auto flags = [&](ir::Expr u, ir::Expr v) {
      return ir::cast(flag_t, u == v) + ir::cast(flag_t, u != v) * 2 + ir::cast(flag_t, u < v) * 4 +
             ir::cast(flag_t, u <= v) * 8 + ir::cast(flag_t, u > v) * 16 +
             ir::cast(flag_t, u >= v) * 32;
    };
    ir::Stmt body = loop(i, size / lanes,
                         ir::Seq::make({
                             store(fo,
                                   ir::select(x < y, ir::min(x, y) * 2.0f, ir::max(x, y)) +
                                       ir::select(x >= 0.0f, ir::make_const(DType::f32(lanes), 1),
                                                  ir::make_const(DType::f32(lanes), -1)),
                                   idx),
                             store(fflags, flags(x, y), idx),
                             store(iflags, flags(p, q), idx),
                             store(io, ir::min(p, q) * 100 + ir::max(p, q), idx),
                             // A scalar condition choosing between vectors.
                             store(so, ir::select(s > 5, x, y), idx),
                         }));
    auto kernels = compile(
        *jit, "select", {ir::Func{"select", {a, b, ia, ib, fo, fflags, iflags, io, so, s}, body}});
    auto va = random_floats(size, -2, 2), vb = random_floats(size, -2, 2);
    for (int64_t e = 0; e < size; e += 5) vb[e] = va[e];  // equal pairs
    va[3] = kNaN;                                         // unordered comparisons
    auto via = random_ints<int32_t>(size, -3, 3), vib = random_ints<int32_t>(size, -3, 3);
    for (int64_t sv : {3, 9}) {
      std::vector<float> vfo(size, kNaN), vso(size, kNaN);
      std::vector<int32_t> vff(size, -1), vif(size, -1), vio(size, -1);
      run(kernels[0],
          {va.data(), vb.data(), via.data(), vib.data(), vfo.data(), vff.data(), vif.data(),
           vio.data(), vso.data()},
          {sv});
      std::vector<float> want_fo(size), want_so(size);
      std::vector<int32_t> want_ff(size), want_if(size), want_io(size);
      auto ref_flags = [](auto u, auto v) {
        return (u == v) + (u != v) * 2 + (u < v) * 4 + (u <= v) * 8 + (u > v) * 16 + (u >= v) * 32;
      };
      for (int64_t e = 0; e < size; ++e) {
        float u = va[e], v = vb[e];
        want_fo[e] =
            (u < v ? std::fmin(u, v) * 2.0f : std::fmax(u, v)) + (u >= 0.0f ? 1.0f : -1.0f);
        want_ff[e] = ref_flags(u, v);
        want_if[e] = ref_flags(via[e], vib[e]);
        want_io[e] = std::min(via[e], vib[e]) * 100 + std::max(via[e], vib[e]);
        want_so[e] = sv > 5 ? u : v;
      }
      require_close(vfo, want_fo, 0, 0);
      require_equal(vff, want_ff);
      require_equal(vif, want_if);
      require_equal(vio, want_io);
      require_close(vso, want_so, 0, 0);
    }
  }
}

TEST_CASE("codegen: every math intrinsic against std::", "[codegen]") {
  struct Case {
    const char* name;
    std::function<ir::Expr(ir::Expr, ir::Expr, ir::Expr)> build;
    std::function<double(float, float, float)> reference;
    double lo, hi;
  };
  const std::vector<Case> cases = {
      {"exp", [](auto x, auto, auto) { return ir::exp(x); },
       [](float x, float, float) { return std::exp(x); }, -5, 5},
      {"log", [](auto x, auto, auto) { return ir::log(x); },
       [](float x, float, float) { return std::log(x); }, 0.01, 10},
      {"sqrt", [](auto x, auto, auto) { return ir::sqrt(x); },
       [](float x, float, float) { return std::sqrt(x); }, 0, 10},
      {"rsqrt", [](auto x, auto, auto) { return ir::rsqrt(x); },
       [](float x, float, float) { return 1.0f / std::sqrt(x); }, 0.01, 10},
      {"tanh", [](auto x, auto, auto) { return ir::tanh(x); },
       [](float x, float, float) { return std::tanh(x); }, -5, 5},
      {"erf", [](auto x, auto, auto) { return ir::erf(x); },
       [](float x, float, float) { return std::erf(x); }, -3, 3},
      {"abs", [](auto x, auto, auto) { return ir::abs(x); },
       [](float x, float, float) { return std::fabs(x); }, -5, 5},
      {"floor", [](auto x, auto, auto) { return ir::floor(x); },
       [](float x, float, float) { return std::floor(x); }, -5, 5},
      {"ceil", [](auto x, auto, auto) { return ir::ceil(x); },
       [](float x, float, float) { return std::ceil(x); }, -5, 5},
      {"round", [](auto x, auto, auto) { return ir::round(x); },
       [](float x, float, float) { return std::round(x); }, -5, 5},
      {"pow", [](auto x, auto y, auto) { return ir::pow(x, y); },
       [](float x, float y, float) { return std::pow(x, y); }, 0.1, 3},
      {"fma", [](auto x, auto y, auto z) { return ir::fma(x, y, z); },
       [](float x, float y, float z) { return std::fma(x, y, z); }, -3, 3},
  };
  auto jit = make_jit();
  const int64_t n = 33 * 8;
  for (const Case& c : cases) {
    INFO("intrinsic " << c.name);
    // One scalar and one 8-lane func per intrinsic, compiled as one module.
    std::vector<ir::Func> funcs;
    ir::Buffer x = buffer("x", DType::f32(), n), y = buffer("y", DType::f32(), n),
               z = buffer("z", DType::f32(), n), out = buffer("out", DType::f32(), n);
    for (int lanes : {1, 8}) {
      ir::Var i("i");
      ir::Expr idx = lanes_index(i, lanes);
      ir::Stmt body =
          loop(i, n / lanes, store(out, c.build(x.load({idx}), y.load({idx}), z.load({idx})), idx));
      funcs.push_back(
          ir::Func{std::string(c.name) + "_x" + std::to_string(lanes), {x, y, z, out}, body});
    }
    auto kernels = compile(*jit, c.name, funcs);
    auto vx = random_floats(n, c.lo, c.hi), vy = random_floats(n, -2, 2),
         vz = random_floats(n, -2, 2);
    // Halfway cases for round (away from zero) and exact integers for floor/ceil.
    for (float special : {-2.5f, -0.5f, 0.5f, 1.5f, 2.5f, -3.0f, 0.0f}) vx[rng()() % n] = special;
    if (std::string(c.name) == "log" || std::string(c.name) == "rsqrt" ||
        std::string(c.name) == "pow")
      for (float& v : vx) v = std::fabs(v) + 0.01f;
    std::vector<float> want(n);
    for (int64_t e = 0; e < n; ++e) want[e] = static_cast<float>(c.reference(vx[e], vy[e], vz[e]));
    for (runtime::KernelFn kernel : kernels) {
      std::vector<float> got(n, kNaN);
      run(kernel, {vx.data(), vy.data(), vz.data(), got.data()});
      require_close(got, want, 1e-5, 1e-6);
    }
  }
}

TEST_CASE("codegen: half-precision arithmetic and intrinsics compute in f32", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 31;
  for (DType t : {DType::f16(), DType::bf16()}) {
    INFO("dtype " << t);
    auto to_bits = [&](float f) {
      return t == DType::f16() ? loom::f32_to_f16(f) : loom::f32_to_bf16(f);
    };
    auto from_bits = [&](uint16_t h) {
      return t == DType::f16() ? loom::f16_to_f32(h) : loom::bf16_to_f32(h);
    };
    auto round_to_t = [&](float f) { return from_bits(to_bits(f)); };
    ir::Buffer a = buffer("a", t, n), b = buffer("b", t, n), c = buffer("c", t, n),
               d = buffer("d", t, n);
    ir::Var i("i");
    ir::Stmt body = loop(i, n,
                         ir::Seq::make({
                             store(c, a(i) * b(i) + a(i), i),
                             store(d, ir::exp(ir::max(a(i), b(i))) - ir::Expr(1.0f), i),
                         }));
    auto kernels = compile(*jit, "half", {ir::Func{"half", {a, b, c, d}, body}});
    std::vector<uint16_t> va(n), vb(n), vc(n, 0xffff), vd(n, 0xffff);
    for (int64_t e = 0; e < n; ++e) {
      va[e] = to_bits(random_floats(1, -4, 4)[0]);
      vb[e] = to_bits(random_floats(1, -4, 4)[0]);
    }
    run(kernels[0], {va.data(), vb.data(), vc.data(), vd.data()});
    for (int64_t e = 0; e < n; ++e) {
      float x = from_bits(va[e]), y = from_bits(vb[e]);
      // Each operation rounds to the half type, exactly as the f32 computation does.
      float want_c = round_to_t(round_to_t(x * y) + x);
      float want_d = round_to_t(round_to_t(std::exp(std::fmax(x, y))) - 1.0f);
      INFO("element " << e << ": a=" << x << " b=" << y);
      CHECK(from_bits(vc[e]) == want_c);
      CHECK(close(from_bits(vd[e]), want_d, 1e-2, 1e-3));
    }
  }
}

TEST_CASE("codegen: casts between f32, f16, bf16 and integers", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 33 * 8;
  std::vector<float> vf = random_floats(n, -3, 3);
  std::uniform_real_distribution<double> log_scale(-30, 12);
  for (int64_t e = 0; e < n; e += 2)
    vf[e] = static_cast<float>(std::exp(log_scale(rng())) * (e % 4 ? 1 : -1));
  const float specials[] = {0.0f,     -0.0f,          1e-8f,
                            -6e-8f,   65504.0f,       65520.0f,
                            70000.0f, -1e30f,         std::numeric_limits<float>::infinity(),
                            kNaN,     1.00048828125f, 3.0e-5f};
  for (size_t e = 0; e < std::size(specials); ++e) vf[e * 7] = specials[e];
  std::vector<uint16_t> vh(n), vb(n);
  for (int64_t e = 0; e < n; ++e) {
    vh[e] = static_cast<uint16_t>(rng()());
    vb[e] = static_cast<uint16_t>(rng()());
  }
  std::vector<float> vg = random_floats(n, -1000, 1000);

  for (int lanes : {1, 8}) {
    INFO("lanes " << lanes);
    ir::Buffer f = buffer("f", DType::f32(), n), h = buffer("h", DType::f16(), n),
               bf = buffer("bf", DType::bf16(), n), g = buffer("g", DType::f32(), n);
    ir::Buffer f2h = buffer("f2h", DType::f16(), n), f2b = buffer("f2b", DType::bf16(), n),
               h2f = buffer("h2f", DType::f32(), n), b2f = buffer("b2f", DType::f32(), n),
               h2b = buffer("h2b", DType::bf16(), n), b2h = buffer("b2h", DType::f16(), n),
               g2i = buffer("g2i", DType::i32(), n), i2h = buffer("i2h", DType::f16(), n);
    ir::Var i("i");
    ir::Expr idx = lanes_index(i, lanes);
    auto cast = [&](loom::DTypeCode code, ir::Expr v) {
      return ir::cast(DType(code, lanes), std::move(v));
    };
    ir::Stmt body =
        loop(i, n / lanes,
             ir::Seq::make({
                 store(f2h, cast(loom::DTypeCode::kF16, f.load({idx})), idx),
                 store(f2b, cast(loom::DTypeCode::kBF16, f.load({idx})), idx),
                 store(h2f, cast(loom::DTypeCode::kF32, h.load({idx})), idx),
                 store(b2f, cast(loom::DTypeCode::kF32, bf.load({idx})), idx),
                 store(h2b, cast(loom::DTypeCode::kBF16, h.load({idx})), idx),
                 store(b2h, cast(loom::DTypeCode::kF16, bf.load({idx})), idx),
                 store(g2i, cast(loom::DTypeCode::kI32, g.load({idx})), idx),
                 store(i2h, cast(loom::DTypeCode::kF16, cast(loom::DTypeCode::kI32, g.load({idx}))),
                       idx),
             }));
    auto kernels =
        compile(*jit, "casts",
                {ir::Func{"casts", {f, h, bf, g, f2h, f2b, h2f, b2f, h2b, b2h, g2i, i2h}, body}});
    std::vector<uint16_t> o_f2h(n, 1), o_f2b(n, 1), o_h2b(n, 1), o_b2h(n, 1), o_i2h(n, 1);
    std::vector<float> o_h2f(n, kNaN), o_b2f(n, kNaN);
    std::vector<int32_t> o_g2i(n, -7);
    run(kernels[0],
        {vf.data(), vh.data(), vb.data(), vg.data(), o_f2h.data(), o_f2b.data(), o_h2f.data(),
         o_b2f.data(), o_h2b.data(), o_b2h.data(), o_g2i.data(), o_i2h.data()});
    // Bit-exact, except that NaNs only need to stay NaNs (payloads may differ).
    auto check_bits = [](const char* what, uint16_t got, uint16_t want, bool got_nan, bool want_nan,
                         int64_t e) {
      INFO(what << " element " << e << ": got 0x" << std::hex << got << ", expected 0x" << want);
      if (want_nan)
        CHECK(got_nan);
      else
        CHECK(got == want);
    };
    auto h_nan = [](uint16_t x) { return std::isnan(loom::f16_to_f32(x)); };
    auto b_nan = [](uint16_t x) { return std::isnan(loom::bf16_to_f32(x)); };
    for (int64_t e = 0; e < n; ++e) {
      uint16_t want_f2h = loom::f32_to_f16(vf[e]), want_f2b = loom::f32_to_bf16(vf[e]);
      check_bits("f32->f16", o_f2h[e], want_f2h, h_nan(o_f2h[e]), h_nan(want_f2h), e);
      check_bits("f32->bf16", o_f2b[e], want_f2b, b_nan(o_f2b[e]), b_nan(want_f2b), e);
      uint16_t want_h2b = loom::f32_to_bf16(loom::f16_to_f32(vh[e]));
      uint16_t want_b2h = loom::f32_to_f16(loom::bf16_to_f32(vb[e]));
      check_bits("f16->bf16", o_h2b[e], want_h2b, b_nan(o_h2b[e]), b_nan(want_h2b), e);
      check_bits("bf16->f16", o_b2h[e], want_b2h, h_nan(o_b2h[e]), h_nan(want_b2h), e);
      uint16_t want_i2h = loom::f32_to_f16(static_cast<float>(static_cast<int32_t>(vg[e])));
      check_bits("i32->f16", o_i2h[e], want_i2h, false, false, e);
      float want_h2f = loom::f16_to_f32(vh[e]), want_b2f = loom::bf16_to_f32(vb[e]);
      INFO("element " << e);
      CHECK(close(o_h2f[e], want_h2f, 0, 0));
      CHECK(close(o_b2f[e], want_b2f, 0, 0));
      CHECK(o_g2i[e] == static_cast<int32_t>(vg[e]));
    }
  }
}

TEST_CASE("codegen: integer and bool casts", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 257;
  ir::Buffer i8 = buffer("i8", DType::i8(), n), i64 = buffer("i64", DType::i64(), n),
             f = buffer("f", DType::f32(), n);
  ir::Buffer i8_to_f = buffer("i8_to_f", DType::f32(), n),
             i64_to_i8 = buffer("i64_to_i8", DType::i8(), n),
             i8_to_i64 = buffer("i8_to_i64", DType::i64(), n),
             f_to_b = buffer("f_to_b", DType::boolean(), n),
             b_to_f = buffer("b_to_f", DType::f32(), n),
             b_to_i32 = buffer("b_to_i32", DType::i32(), n),
             i_to_b = buffer("i_to_b", DType::boolean(), n);
  ir::Var i("i");
  ir::Expr as_bool = ir::cast(DType::boolean(), f(i));
  ir::Stmt body =
      loop(i, n,
           ir::Seq::make({
               store(i8_to_f, ir::cast(DType::f32(), i8(i)), i),
               store(i64_to_i8, ir::cast(DType::i8(), i64(i)), i),
               store(i8_to_i64, ir::cast(DType::i64(), i8(i)), i),
               store(f_to_b, as_bool, i),
               store(b_to_f, ir::cast(DType::f32(), as_bool), i),
               store(b_to_i32, ir::cast(DType::i32(), i8(i) > ir::IntImm::make(DType::i8(), 0)), i),
               store(i_to_b, ir::cast(DType::boolean(), i64(i)), i),
           }));
  auto kernels = compile(
      *jit, "int_casts",
      {ir::Func{"int_casts",
                {i8, i64, f, i8_to_f, i64_to_i8, i8_to_i64, f_to_b, b_to_f, b_to_i32, i_to_b},
                body}});
  auto v8 = random_ints<int8_t>(n, -128, 127);
  auto v64 = random_ints<int64_t>(n, -(int64_t{1} << 40), int64_t{1} << 40);
  v64[0] = 0;
  v64[1] = 256;  // truncates to 0
  auto vf = random_floats(n, -2, 2);
  vf[0] = 0.0f;
  vf[1] = -0.0f;
  vf[2] = kNaN;  // NaN != 0, so true
  std::vector<float> o_i8_to_f(n, kNaN), o_b_to_f(n, kNaN);
  std::vector<int8_t> o_i64_to_i8(n, 99);
  std::vector<int64_t> o_i8_to_i64(n, 99);
  std::vector<uint8_t> o_f_to_b(n, 99), o_i_to_b(n, 99);
  std::vector<int32_t> o_b_to_i32(n, 99);
  run(kernels[0],
      {v8.data(), v64.data(), vf.data(), o_i8_to_f.data(), o_i64_to_i8.data(), o_i8_to_i64.data(),
       o_f_to_b.data(), o_b_to_f.data(), o_b_to_i32.data(), o_i_to_b.data()});
  std::vector<float> w_i8_to_f(n), w_b_to_f(n);
  std::vector<int64_t> w_i64_to_i8(n), w_i8_to_i64(n), w_f_to_b(n), w_b_to_i32(n), w_i_to_b(n);
  for (int64_t e = 0; e < n; ++e) {
    w_i8_to_f[e] = v8[e];
    w_i64_to_i8[e] = static_cast<int8_t>(v64[e]);
    w_i8_to_i64[e] = v8[e];
    w_f_to_b[e] = vf[e] != 0.0f;
    w_b_to_f[e] = vf[e] != 0.0f ? 1.0f : 0.0f;
    w_b_to_i32[e] = v8[e] > 0;
    w_i_to_b[e] = v64[e] != 0;
  }
  require_close(o_i8_to_f, w_i8_to_f, 0, 0);
  require_equal(o_i64_to_i8, w_i64_to_i8);
  require_equal(o_i8_to_i64, w_i8_to_i64);
  require_equal(o_f_to_b, w_f_to_b);
  require_close(o_b_to_f, w_b_to_f, 0, 0);
  require_equal(o_b_to_i32, w_b_to_i32);
  require_equal(o_i_to_b, w_i_to_b);
}

TEST_CASE("codegen: integer Div and Mod truncate toward zero", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 33 * 8;
  for (DType t : {DType::i8(), DType::i32(), DType::i64()}) {
    for (int lanes : {1, 8}) {
      INFO("dtype " << t << ", lanes " << lanes);
      ir::Buffer a = buffer("a", t, n), b = buffer("b", t, n), q = buffer("q", t, n),
                 r = buffer("r", t, n);
      ir::Var i("i");
      ir::Expr idx = lanes_index(i, lanes);
      ir::Stmt body = loop(i, n / lanes,
                           ir::Seq::make({store(q, a.load({idx}) / b.load({idx}), idx),
                                          store(r, a.load({idx}) % b.load({idx}), idx)}));
      auto kernels = compile(*jit, "divmod", {ir::Func{"divmod", {a, b, q, r}, body}});
      auto check = [&](auto tag) {
        using T = decltype(tag);
        auto va = random_ints<T>(n, -100, 100), vb = random_ints<T>(n, -9, 9);
        for (T& v : vb)
          if (v == 0) v = -7;
        std::vector<T> vq(n, 55), vr(n, 55), wq(n), wr(n);
        run(kernels[0], {va.data(), vb.data(), vq.data(), vr.data()});
        for (int64_t e = 0; e < n; ++e) {
          wq[e] = static_cast<T>(va[e] / vb[e]);
          wr[e] = static_cast<T>(va[e] % vb[e]);
        }
        require_equal(vq, wq);
        require_equal(vr, wr);
      };
      if (t == DType::i8()) check(int8_t{});
      if (t == DType::i32()) check(int32_t{});
      if (t == DType::i64()) check(int64_t{});
    }
  }
}

TEST_CASE("codegen: i8, i64 and bool loads and stores", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 31 * 8;  // also exercised as 8-lane vectors below
  ir::Buffer x8 = buffer("x8", DType::i8(), n), x64 = buffer("x64", DType::i64(), n),
             xb = buffer("xb", DType::boolean(), n);
  ir::Buffer y8 = buffer("y8", DType::i8(), n), y64 = buffer("y64", DType::i64(), n),
             yb = buffer("yb", DType::boolean(), n), zb = buffer("zb", DType::boolean(), n);
  ir::Var i("i"), v("v");
  ir::Expr vec = ir::Ramp::make(v * 8, ir::Expr(1), 8);
  ir::Stmt body = ir::Seq::make({
      loop(
          i, n,
          ir::Seq::make({
              store(y8, x8(i) * ir::IntImm::make(DType::i8(), 3) + ir::IntImm::make(DType::i8(), 7),
                    i),
              store(y64, ir::max(x64(i) * 3 - 5, ir::Expr(int64_t{-1000})), i),
              store(yb, !xb(i) || x8(i) > ir::IntImm::make(DType::i8(), 0), i),
          })),
      loop(v, n / 8, store(zb, xb.load({vec}) && x64.load({vec}) > ir::Expr(int64_t{0}), vec)),
  });
  auto kernels = compile(*jit, "ints", {ir::Func{"ints", {x8, x64, xb, y8, y64, yb, zb}, body}});
  auto v8 = random_ints<int8_t>(n, -128, 127);
  auto v64 = random_ints<int64_t>(n, -(int64_t{1} << 50), int64_t{1} << 50);
  auto vb = random_ints<uint8_t>(n, 0, 1);
  std::vector<int8_t> o8(n, 0x5a);
  std::vector<int64_t> o64(n, 0x5a);
  std::vector<uint8_t> ob(n, 0x5a), oz(n, 0x5a);
  run(kernels[0], {v8.data(), v64.data(), vb.data(), o8.data(), o64.data(), ob.data(), oz.data()});
  std::vector<int64_t> w8(n), w64(n), wb(n), wz(n);
  for (int64_t e = 0; e < n; ++e) {
    w8[e] = static_cast<int8_t>(static_cast<uint8_t>(v8[e]) * 3u + 7u);  // i8 arithmetic wraps
    w64[e] = std::max<int64_t>(v64[e] * 3 - 5, -1000);
    wb[e] = !vb[e] || v8[e] > 0;
    wz[e] = vb[e] && v64[e] > 0;
  }
  require_equal(o8, w8);
  require_equal(o64, w64);
  require_equal(ob, wb);  // bools are stored as exactly 0 or 1
  require_equal(oz, wz);
}

TEST_CASE("codegen: unrolled, vectorized and parallel loop kinds", "[codegen]") {
  auto jit = make_jit();
  ir::Var n("n");
  ir::Buffer a = buffer("a", DType::f32(), n * 4), b = buffer("b", DType::f32(), n * 4),
             c = buffer("c", DType::f32(), n * 4), d = buffer("d", DType::f32(), n * 4),
             e = buffer("e", DType::f32(), n * 4);
  ir::Var i("i"), r("r"), j("j"), p("p");
  ir::Stmt body = ir::Seq::make({
      loop(i, n * 4, store(c, a(i) * 3.0f + b(i), i), ir::ForKind::kVectorized),
      loop(r, n,
           loop(j, 4, store(d, a(r * 4 + j) * ir::cast(DType::f32(), j), r * 4 + j),
                ir::ForKind::kUnrolled)),
      loop(p, n * 4, store(e, a(p) + 1.0f, p), ir::ForKind::kParallel),
  });
  auto kernels = compile(*jit, "kinds", {ir::Func{"kinds", {n, a, b, c, d, e}, body}});
  for (int64_t rows : {1, 7, 31, 65}) {
    const int64_t size = rows * 4;
    auto va = random_floats(size, -3, 3), vb = random_floats(size, -3, 3);
    std::vector<float> vc(size, kNaN), vd(size, kNaN), ve(size, kNaN), wc(size), wd(size), we(size);
    run(kernels[0], {va.data(), vb.data(), vc.data(), vd.data(), ve.data()}, {rows});
    for (int64_t k = 0; k < size; ++k) {
      wc[k] = va[k] * 3.0f + vb[k];
      wd[k] = va[k] * static_cast<float>(k % 4);
      we[k] = va[k] + 1.0f;
    }
    require_close(vc, wc, 1e-6, 1e-6);  // FMA contraction is not allowed, but be lenient
    require_close(vd, wd, 0, 0);
    require_close(ve, we, 0, 0);
  }
}

TEST_CASE("codegen: if-then-else, let, let-stmt and evaluate", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 31;
  ir::Buffer a = buffer("a", DType::f32(), n), c = buffer("c", DType::f32(), n);
  ir::Var i("i"), t("t", DType::f32()), u("u", DType::f32());
  ir::Stmt body = loop(
      i, n,
      ir::LetStmt::make(
          t, a(i) * 2.0f,
          ir::Seq::make({
              ir::Evaluate::make(a(i) + 1.0f),
              ir::IfThenElse::make(i % 3 == 0, store(c, t + ir::Let::make(u, t * t, u + 1.0f), i),
                                   ir::IfThenElse::make(i % 3 == 1, store(c, -t, i))),
              ir::IfThenElse::make(i % 3 == 2, store(c, ir::Expr(5.0f), i)),
          })));
  auto kernels = compile(*jit, "control", {ir::Func{"control", {a, c}, body}});
  auto va = random_floats(n, -3, 3);
  std::vector<float> vc(n, kNaN), want(n);
  run(kernels[0], {va.data(), vc.data()});
  for (int64_t k = 0; k < n; ++k) {
    float tv = va[k] * 2.0f;
    want[k] = k % 3 == 0 ? tv + (tv * tv + 1.0f) : k % 3 == 1 ? -tv : 5.0f;
  }
  require_close(vc, want, 0, 0);
}

TEST_CASE("codegen: stack and heap allocations", "[codegen]") {
  // tmp of symbolic size n lives on the heap; big (3000 f32) too; small (16 f32) on the stack.
  auto jit = make_jit();
  ir::Var n("n");
  ir::Buffer a = buffer("a", DType::f32(), n), y = buffer("y", DType::f32(), n),
             z = buffer("z", DType::f32(), n);
  ir::Buffer tmp = buffer("tmp", DType::f32(), n);
  ir::Buffer big = buffer("big", DType::f32(), 3000);
  ir::Buffer small = buffer("small", DType::f32(), 16, ir::MemoryScope::kLocal);
  ir::Var i("i"), j("j"), k("k"), s("s");
  ir::Stmt body = ir::Allocate::make(
      tmp,
      ir::Allocate::make(
          big,
          ir::Seq::make({
              loop(i, n, store(tmp, a(i) * 2.0f, i)),
              loop(j, n, store(big, tmp(n - 1 - j), j % 3000)),
              loop(k, n,
                   ir::Allocate::make(
                       small,
                       ir::Seq::make({
                           loop(s, 16, store(small, big(k % 3000) + ir::cast(DType::f32(), s), s)),
                           store(y, big(k % 3000), k),
                           store(z, small(15) - small(0), k),
                       }))),
          })));
  auto kernels = compile(*jit, "alloc", {ir::Func{"alloc", {a, y, z, n}, body}});
  for (int64_t size : {1, 7, 257}) {
    auto va = random_floats(size, -3, 3);
    std::vector<float> vy(size, kNaN), vz(size, kNaN), wy(size), wz(size, 15.0f);
    run(kernels[0], {va.data(), vy.data(), vz.data()}, {size});
    for (int64_t q = 0; q < size; ++q) wy[q] = va[size - 1 - q] * 2.0f;
    require_close(vy, wy, 0, 0);
    require_close(vz, wz, 1e-6, 1e-5);
  }
}

TEST_CASE("codegen: two funcs in one module, same names across modules", "[codegen]") {
  auto jit = make_jit();
  const int64_t n = 7;
  auto make = [&](const std::string& name, float scale) {
    ir::Buffer a = buffer("a", DType::f32(), n), b = buffer("b", DType::f32(), n);
    ir::Var i("i");
    return ir::Func{name, {a, b}, loop(i, n, store(b, a(i) * scale, i))};
  };
  // Module 1 has "scale" and "shift"-like funcs, and also two funcs sharing the name "dup".
  auto first = compile(
      *jit, "m", {make("scale", 2.0f), make("triple", 3.0f), make("dup", 4.0f), make("dup", 5.0f)});
  // Module 2 (same module name, same func names) must not clash with module 1's symbols.
  auto second = compile(*jit, "m", {make("scale", -1.0f), make("triple", 10.0f)});
  auto va = random_floats(n, -3, 3);
  auto check = [&](runtime::KernelFn k, float scale) {
    std::vector<float> out(n, kNaN), want(n);
    run(k, {va.data(), out.data()});
    for (int64_t q = 0; q < n; ++q) want[q] = va[q] * scale;
    require_close(out, want, 0, 0);
  };
  check(first[0], 2.0f);
  check(first[1], 3.0f);
  check(first[2], 4.0f);
  check(first[3], 5.0f);
  check(second[0], -1.0f);
  check(second[1], 10.0f);
  // Earlier kernels stay valid after later compilations.
  check(first[0], 2.0f);
}

TEST_CASE("codegen: one JIT compiling from several threads", "[codegen]") {
  auto jit = make_jit();
  constexpr int kThreads = 4;
  const int64_t n = 31;
  std::vector<absl::StatusOr<std::vector<runtime::KernelFn>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ir::Buffer a = buffer("a", DType::f32(), n), b = buffer("b", DType::f32(), n);
      ir::Var i("i");
      ir::Func f{"scale", {a, b}, loop(i, n, store(b, a(i) * static_cast<float>(t + 1), i))};
      results[t] = jit->compile(ir::Module{"threaded", jit->target(), {f}});
    });
  }
  for (std::thread& th : threads) th.join();
  auto va = random_floats(n, -3, 3);
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t << ": " << results[t].status().ToString());
    REQUIRE(results[t].ok());
    std::vector<float> out(n, kNaN), want(n);
    run((*results[t])[0], {va.data(), out.data()});
    for (int64_t q = 0; q < n; ++q) want[q] = va[q] * static_cast<float>(t + 1);
    require_close(out, want, 0, 0);
  }
}

TEST_CASE("codegen: explicit baseline CPU target", "[codegen]") {
#if defined(__x86_64__)
  // A generic x86-64 (SSE2 only) target builds code this machine can run; without F16C its
  // half conversions are runtime-library calls resolved from this process.
  loom::Target baseline =
      loom::Target::cpu(loom::Target::host_cpu().triple(), "x86-64", {"sse2", "sse", "cmov"});
  auto jit = make_jit(baseline);
  CHECK(jit->target().cpu_name() == "x86-64");
  ir::Var n("n");
  ir::Buffer a = buffer("a", DType::f32(), n), b = buffer("b", DType::f32(), n),
             h = buffer("h", DType::f16(), n), bf = buffer("bf", DType::bf16(), n);
  ir::Var i("i");
  ir::Stmt body = loop(i, n,
                       ir::Seq::make({
                           store(b, ir::sqrt(a(i)) + 1.0f, i),
                           store(h, ir::cast(DType::f16(), a(i)) * ir::cast(DType::f16(), a(i)), i),
                           store(bf, ir::cast(DType::bf16(), a(i) * 3.0f), i),
                       }),
                       ir::ForKind::kVectorized);
  auto kernels = compile(*jit, "baseline", {ir::Func{"baseline", {a, b, h, bf, n}, body}});
  for (int64_t size : {1, 31, 257}) {
    auto va = random_floats(size, 0, 9);
    std::vector<float> vb(size, kNaN), want(size);
    std::vector<uint16_t> vh(size, 0xffff), vbf(size, 0xffff);
    run(kernels[0], {va.data(), vb.data(), vh.data(), vbf.data()}, {size});
    for (int64_t q = 0; q < size; ++q) {
      want[q] = std::sqrt(va[q]) + 1.0f;
      float half = loom::f16_to_f32(loom::f32_to_f16(va[q]));
      INFO("element " << q);
      CHECK(vh[q] == loom::f32_to_f16(half * half));
      CHECK(vbf[q] == loom::f32_to_bf16(va[q] * 3.0f));
    }
    require_close(vb, want, 0, 0);
  }
#else
  SUCCEED("baseline target test is x86-64 only");
#endif
}
