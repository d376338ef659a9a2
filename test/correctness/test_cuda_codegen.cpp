// The CUDA back end without a GPU: default-scheduled te tasks and hand-built GPU loop IR become
// CUDA C++ that NVRTC compiles to cubins for sm_80 and sm_90. The kernels then run and must match
// the te reference evaluator: on the GPU where there is one, else in the CUDA emulator
// (test/cuda_emulator.hpp), which runs the source on the host.

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cache_test_util.hpp"
#include "cuda_emulated_module.hpp"
#include "loom/core/ndarray.hpp"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/te/lower.hpp"
#include "loom/te/tensor.hpp"
#include "test_util.hpp"

namespace {

using loom::DType;
using loom::NDArray;
using loom::Target;
namespace ir = loom::ir;
namespace te = loom::te;
namespace cuda = loom::runtime::cuda;
namespace passes = loom::passes;

// A task with concrete inputs (and values of its symbolic dims, in shape_vars order).
struct Case {
  te::Task task;
  std::vector<NDArray> inputs;
  std::vector<int64_t> scalars;
  double rtol = 1e-5, atol = 1e-6;
};

te::Task make_task(const std::string& name, std::vector<te::Tensor> in,
                   std::vector<te::Tensor> out) {
  auto task = te::Task::make(name, std::move(in), std::move(out));
  INFO(task.status().ToString());
  REQUIRE(task.ok());
  return *task;
}

std::vector<Case> make_cases() {
  using loom::testing::random_array;
  std::vector<Case> cases;
  {  // elementwise add over a symbolic length
    ir::Var n("n");
    te::Tensor a = te::placeholder("A", DType::f32(), {n});
    te::Tensor b = te::placeholder("B", DType::f32(), {n});
    te::Tensor c =
        te::compute("C", {n}, [&](const std::vector<ir::Var>& i) { return a(i[0]) + b(i[0]); });
    cases.push_back({make_task("add", {a, b}, {c}),
                     {random_array(DType::f32(), {1031}), random_array(DType::f32(), {1031})},
                     {1031}});
  }
  {  // row reduction: max and sum of each row
    te::Tensor x = te::placeholder("x", DType::f32(), {37, 129});
    ir::IterVar r = te::reduce_axis(129, "r");
    te::Tensor s = te::compute("rowsum", {37}, [&](const std::vector<ir::Var>& i) {
      return te::sum(x(i[0], r.var), {r});
    });
    ir::IterVar r2 = te::reduce_axis(129, "r2");
    te::Tensor m = te::compute("rowmax", {37}, [&](const std::vector<ir::Var>& i) {
      return te::max(x(i[0], r2.var), {r2});
    });
    cases.push_back(
        {make_task("rows", {x}, {s, m}), {random_array(DType::f32(), {37, 129})}, {}, 1e-4, 1e-4});
  }
  {  // matmul of odd sizes
    te::Tensor a = te::placeholder("A", DType::f32(), {19, 67});
    te::Tensor b = te::placeholder("B", DType::f32(), {67, 23});
    ir::IterVar k = te::reduce_axis(67, "k");
    te::Tensor c = te::compute("C", {19, 23}, [&](const std::vector<ir::Var>& i) {
      return te::sum(a(i[0], k.var) * b(k.var, i[1]), {k});
    });
    cases.push_back({make_task("matmul", {a, b}, {c}),
                     {random_array(DType::f32(), {19, 67}), random_array(DType::f32(), {67, 23})},
                     {},
                     1e-4,
                     1e-4});
  }
  {  // math intrinsics, f32 -> f16 output through cuda_fp16.h
    te::Tensor x = te::placeholder("x", DType::f32(), {251});
    te::Tensor y = te::compute("y", {251}, [&](const std::vector<ir::Var>& i) {
      ir::Expr v = x(i[0]);
      ir::Expr p = ir::abs(v) + 0.5f;
      ir::Expr e = ir::exp(v) + ir::log(p) + ir::sqrt(p) + ir::rsqrt(p) + ir::tanh(v) + ir::erf(v) +
                   ir::floor(v) + ir::ceil(v) + ir::round(v * 3.0f) + ir::pow(p, v) +
                   ir::fma(v, v, v) + ir::max(v, 0.0f) + ir::min(v, 0.25f) +
                   ir::select(v > 0.0f, v, -v);
      return ir::cast(DType::f16(), e);
    });
    cases.push_back(
        {make_task("math_f16", {x}, {y}), {random_array(DType::f32(), {251})}, {}, 2e-3, 2e-3});
  }
  {  // bf16 input, a two-stage task (an intermediate tensor), integer casts
    te::Tensor x = te::placeholder("x", DType::bf16(), {13, 17});
    te::Tensor sq = te::compute("sq", {13, 17}, [&](const std::vector<ir::Var>& i) {
      return ir::cast(DType::f32(), x(i[0], i[1])) * ir::cast(DType::f32(), x(i[0], i[1]));
    });
    ir::IterVar r = te::reduce_axis(17, "r");
    te::Tensor norm = te::compute("norm", {13}, [&](const std::vector<ir::Var>& i) {
      return ir::sqrt(te::sum(sq(i[0], r.var), {r}) + 1e-3f);
    });
    te::Tensor idx = te::compute("idx", {13}, [&](const std::vector<ir::Var>& i) {
      return ir::cast(DType::i32(), ir::cast(DType::f32(), x(i[0], 0)) * 10.0f) +
             ir::cast(DType::i32(), i[0]);
    });
    cases.push_back({make_task("norms_bf16", {x}, {norm, idx}),
                     {random_array(DType::bf16(), {13, 17})},
                     {},
                     1e-3,
                     1e-3});
  }
  return cases;
}

// The default GPU mapping: parallel outer loops (proved independent) bound to blocks x threads.
ir::Func lower_for_gpu(const te::Task& task, const Target& target) {
  ir::Func f = te::lower_default(task);
  f = passes::parallelize_outer_loops(f, 1);
  f = passes::bind_gpu_loops(f, 256);
  return passes::lower_scheduled(f, target);
}

ir::Module module_of(const std::string& name, std::vector<Case>& cases, bool bind) {
  ir::Module m{name, Target::cuda(90), {}};
  for (const Case& c : cases)
    m.funcs.push_back(bind ? lower_for_gpu(c.task, m.target) : passes::lower(c.task, m.target));
  return m;
}

// Whether NVRTC can run here; prints why not otherwise (a build without the CUDA toolkit).
bool have_nvrtc() {
  auto version = cuda::nvrtc_version();
  if (version.ok()) return true;
  REQUIRE(!cuda::built_with_cuda());
  REQUIRE_THAT(std::string(version.status().message()), Catch::Contains("built without CUDA"));
  std::printf("[cuda] %s; NVRTC tests skipped\n", version.status().ToString().c_str());
  return false;
}

cuda::CompiledModule compile(const ir::Module& m, int sm_arch) {
  auto compiled = cuda::compile_module(m, sm_arch);
  if (!compiled.ok()) {
    auto source = cuda::emit_cuda_source(m);
    INFO((source.ok() ? *source : source.status().ToString()));
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
  }
  return *compiled;
}

// Runs every kernel of m on device 0 and compares with the te reference; false without a GPU.
bool run_on_gpu(const ir::Module& m, std::vector<Case>& cases) {
  auto driver = cuda::Driver::get();
  if (!driver.ok() || !(*driver)->device_count().ok() || *(*driver)->device_count() == 0) {
    std::printf("[cuda] no GPU here (%s): kernels compiled, and emulated on the host\n",
                driver.ok() ? "no device" : driver.status().ToString().c_str());
    return false;
  }
  auto props = (*driver)->device_properties(0);
  REQUIRE(props.ok());
  auto loaded = cuda::LoadedModule::load(m, compile(m, props->sm_arch));
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());
  cuda::Driver* d = *driver;
  for (size_t k = 0; k < cases.size(); ++k) {
    Case& c = cases[k];
    INFO("kernel " << c.task.name());
    auto expected = te::evaluate(c.task, c.inputs);
    REQUIRE(expected.ok());
    std::vector<cuda::DevicePtr> buffers;
    for (const NDArray& in : c.inputs) {
      auto p = d->allocate(static_cast<size_t>(in.nbytes()));
      REQUIRE(p.ok());
      REQUIRE(d->copy_to_device(*p, in.data(), static_cast<size_t>(in.nbytes())).ok());
      buffers.push_back(*p);
    }
    std::vector<NDArray> outputs;
    for (const NDArray& e : *expected) {
      NDArray out(e.dtype(), e.shape());
      out.poison();
      auto p = d->allocate(static_cast<size_t>(out.nbytes()));
      REQUIRE(p.ok());
      REQUIRE(d->copy_to_device(*p, out.data(), static_cast<size_t>(out.nbytes())).ok());
      buffers.push_back(*p);
      outputs.push_back(std::move(out));
    }
    absl::Status launched = (*loaded)->launch(k, buffers, c.scalars);
    INFO(launched.ToString());
    REQUIRE(launched.ok());
    REQUIRE(d->synchronize(nullptr).ok());
    for (size_t o = 0; o < outputs.size(); ++o) {
      size_t at = c.inputs.size() + o;
      REQUIRE(
          d->copy_to_host(outputs[o].data(), buffers[at], static_cast<size_t>(outputs[o].nbytes()))
              .ok());
      loom::testing::require_close(outputs[o], (*expected)[o], c.rtol, c.atol);
    }
    for (cuda::DevicePtr p : buffers) REQUIRE(d->free(p).ok());
  }
  return true;
}

// Without a GPU: every kernel of m in the CUDA emulator (test/cuda_emulator.hpp), against the te
// reference.
void emulate(const ir::Module& m, std::vector<Case>& cases) {
  std::unique_ptr<loom::testing::EmulatedModule> emulated = loom::testing::emulated_or_null(m);
  if (!emulated) return;
  for (size_t k = 0; k < cases.size(); ++k)
    loom::testing::check_emulated(*emulated, k, cases[k].task, cases[k].inputs, cases[k].scalars,
                                  cases[k].rtol, cases[k].atol);
}

}  // namespace

TEST_CASE("CUDA codegen: default-scheduled tasks compile with NVRTC for sm_80 and sm_90",
          "[cuda]") {
  std::vector<Case> cases = make_cases();
  for (bool bind : {false, true}) {
    DYNAMIC_SECTION((bind ? "one thread per outer iteration" : "one thread per kernel")) {
      ir::Module m = module_of(bind ? "gpu_default" : "serial_default", cases, bind);
      std::vector<cuda::KernelInfo> kernels;
      auto source = cuda::emit_cuda_source(m, &kernels);
      INFO(source.status().ToString());
      REQUIRE(source.ok());
      REQUIRE(kernels.size() == cases.size());
      CHECK_THAT(*source, Catch::Contains("extern \"C\" __global__ void __launch_bounds__(" +
                                          std::string(bind ? "256" : "1") + ") add("));
      CHECK_THAT(*source, Catch::Contains("#include <cuda_fp16.h>"));
      CHECK_THAT(*source, Catch::Contains("#include <cuda_bf16.h>"));
      if (bind) {
        CHECK_THAT(*source, Catch::Contains("blockIdx.x"));
        CHECK_THAT(*source, Catch::Contains("threadIdx.x"));
        // add: ceil(n / 256) blocks of 256 threads for the symbolic n.
        auto shape = cuda::launch_shape(m.funcs[0], kernels[0], {1031});
        REQUIRE(shape.ok());
        CHECK(shape->first.x == 5);
        CHECK(shape->second.x == 256);
        // matmul: one thread per row of C (19 rows).
        auto mm = cuda::launch_shape(m.funcs[2], kernels[2], {});
        REQUIRE(mm.ok());
        CHECK(mm->first.x * mm->second.x >= 19);
      } else {
        CHECK_THAT(*source, !Catch::Contains("blockIdx"));
        auto shape = cuda::launch_shape(m.funcs[0], kernels[0], {1031});
        REQUIRE(shape.ok());
        CHECK((shape->first.x == 1 && shape->second.x == 1));
      }
      if (!have_nvrtc()) return;
      for (int sm : {80, 90}) {
        cuda::CompiledModule compiled = compile(m, sm);
        CHECK(compiled.sm_arch == sm);
        CHECK(compiled.cubin.size() > 64);
        CHECK(compiled.cubin.compare(0, 4,
                                     "\x7f"
                                     "ELF") == 0);
        for (const cuda::KernelInfo& k : compiled.kernels)
          CHECK_THAT(compiled.ptx, Catch::Contains(".entry " + k.symbol));
        CHECK_THAT(compiled.ptx, Catch::Contains(".target sm_" + std::to_string(sm)));
      }
      if (!run_on_gpu(m, cases)) emulate(m, cases);
    }
  }
}

TEST_CASE("CUDA codegen: index arithmetic is int where every step fits int32, 64-bit elsewhere",
          "[cuda]") {
  using loom::testing::random_array;
  std::vector<Case> cases;
  {  // small static shapes: int all the way
    te::Tensor a = te::placeholder("A", DType::f32(), {37, 41});
    te::Tensor c = te::compute("C", {41, 37}, [&](const std::vector<ir::Var>& i) {
      return a(i[1], i[0]) * 2.0f;
    });
    cases.push_back({make_task("small", {a}, {c}), {random_array(DType::f32(), {37, 41})}, {}});
  }
  {  // i * 1000003 passes int32 for i >= 2148: the product is 64-bit
    te::Tensor a = te::placeholder("A", DType::i64(), {4099});
    te::Tensor c = te::compute("C", {4099}, [&](const std::vector<ir::Var>& i) {
      return a(i[0]) + ir::Expr(i[0]) * ir::Expr(int64_t{1000003});
    });
    cases.push_back({make_task("wide_product", {a}, {c}), {random_array(DType::i64(), {4099}, -9, 9)},
                     {}});
  }
  {  // a constant past int32 in data arithmetic
    te::Tensor c = te::compute("C", {1031}, [&](const std::vector<ir::Var>& i) {
      return ir::Expr(i[0]) * ir::Expr(int64_t{3000000007}) - ir::Expr(int64_t{5});
    });
    cases.push_back({make_task("wide_constant", {}, {c}), {}, {}});
  }
  ir::Module m = module_of("narrow", cases, true);
  auto source = cuda::emit_cuda_source(m);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  const std::string& text = *source;
  auto kernel = [&](const std::string& name) {
    const size_t at = text.find(") " + name + "(");
    REQUIRE(at != std::string::npos);
    const size_t end = text.find("\n}\n", at);
    return text.substr(at, end - at);
  };
  INFO(text);
  CHECK_THAT(kernel("small"), !Catch::Contains("long long"));
  CHECK_THAT(kernel("small"), Catch::Contains("const int"));
  CHECK_THAT(kernel("wide_product"), Catch::Contains("((long long)1000003)"));
  CHECK_THAT(kernel("wide_constant"), Catch::Contains("3000000007LL"));
  if (!have_nvrtc()) return;
  compile(m, 90);
  if (!run_on_gpu(m, cases)) emulate(m, cases);
}

TEST_CASE("CUDA codegen: a loop whose bounds have a known int32 range counts in int",
          "[cuda]") {
  // Split-K's shape: block b takes slices [5 (b % 2), 5 (b % 2) + min(9 - 5 (b % 2), 5)) of 9.
  // The count varies with the block but stays within [4, 5]; the loop and the index arithmetic
  // on it are int. A bound of unknown range (the scalar n) keeps a 64-bit counter.
  ir::Var b("b"), kt("kt"), i("i"), n("n");
  ir::Buffer y = ir::Buffer::make("y", DType::f32(), {ir::Expr(int64_t{18})});
  ir::Buffer z = ir::Buffer::make("z", DType::f32(), {n});
  const ir::Expr first = b % int64_t{2} * int64_t{5};
  ir::Stmt slices = ir::For::make(
      kt, ir::Expr(int64_t{0}), ir::min(ir::Expr(int64_t{9}) - first, ir::Expr(int64_t{5})),
      ir::ForKind::kSerial,
      ir::Store::make(y, ir::cast(DType::f32(), (first + kt) / int64_t{3}),
                      {b / int64_t{2} * int64_t{9} + first + kt}));
  ir::Stmt unknown = ir::For::make(i, ir::Expr(int64_t{0}), n, ir::ForKind::kSerial,
                                   ir::Store::make(z, ir::Expr(1.0f), {i}));
  ir::Func f{"slices",
             {y, z, n},
             ir::For::make(b, ir::Expr(int64_t{0}), ir::Expr(int64_t{4}), ir::ForKind::kGpuBlock,
                           ir::Seq::make({slices, unknown}))};
  ir::Module m{"loops", Target::cuda(90), {f}};
  auto source = cuda::emit_cuda_source(m);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  INFO(*source);
  CHECK_THAT(*source, Catch::Contains("for (int kt = 0, kt_end = loom_min<int>("));
  CHECK_THAT(*source, Catch::Contains("for (long long i = 0"));
  if (!have_nvrtc()) return;
  compile(m, 90);
}

TEST_CASE("CUDA codegen: shared memory, barriers, unrolled and vector code compile", "[cuda]") {
  // One block per row of x (n rows of 128): the row goes to shared memory, thread t then writes
  // the sum of its element and its mirror, 4 lanes at a time as one vector store, as bf16.
  ir::Var n("n");
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), {n * 128});
  ir::Buffer y = ir::Buffer::make("y", DType::bf16(), {n * 128});
  ir::Buffer count = ir::Buffer::make("count", DType::i32(), {n});
  ir::Buffer tile =
      ir::Buffer::make("tile", DType::f32(), {ir::Expr(128)}, ir::MemoryScope::kShared);
  ir::Buffer acc = ir::Buffer::make("acc", DType::i32(), {ir::Expr(1)}, ir::MemoryScope::kLocal);
  ir::Var row("row"), t("t"), u("u"), j("j");
  ir::Stmt load = ir::Store::make(tile, x(row * 128 + t), {t});
  ir::Expr lanes = ir::Ramp::make(t * 4, ir::Expr(1), 4);
  ir::Expr mirror = ir::Ramp::make(ir::Expr(127) - t * 4, ir::Expr(-1), 4);
  ir::Stmt vec = ir::IfThenElse::make(
      t < 32, ir::Store::make(y, ir::cast(DType::bf16(4), tile(lanes) + tile(mirror)),
                              {ir::Broadcast::make(row * 128, 4) + lanes}));
  ir::Stmt counting = ir::IfThenElse::make(
      t == 0,
      ir::Allocate::make(
          acc,
          ir::Seq::make(
              {ir::Store::make(acc, ir::IntImm::make(DType::i32(), 0), {ir::Expr(0)}),
               ir::For::make(j, ir::Expr(0), ir::Expr(128), ir::ForKind::kUnrolled,
                             ir::Store::make(acc, acc(0) + ir::cast(DType::i32(), tile(j) > 0.0f),
                                             {ir::Expr(0)})),
               ir::Store::make(count, acc(0), {row})})));
  ir::Stmt body = ir::For::make(
      row, ir::Expr(0), n, ir::ForKind::kGpuBlock,
      ir::Allocate::make(
          tile, ir::Seq::make({
                    ir::For::make(t, ir::Expr(0), ir::Expr(128), ir::ForKind::kGpuThread, load),
                    ir::Barrier::make(),
                    ir::For::make(u, ir::Expr(0), ir::Expr(128), ir::ForKind::kGpuThread,
                                  ir::LetStmt::make(t, u, ir::Seq::make({vec, counting}))),
                })));
  ir::Func f{"mirror_rows", {x, y, count, n}, body};
  ir::Module m{"handwritten", Target::cuda(90), {f}};
  std::vector<cuda::KernelInfo> kernels;
  auto source = cuda::emit_cuda_source(m, &kernels);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  INFO(*source);
  CHECK_THAT(*source, Catch::Contains("__shared__ __align__(16) float tile[128];"));
  CHECK_THAT(*source, Catch::Contains("__syncthreads();"));
  CHECK_THAT(*source, Catch::Contains("#pragma unroll"));
  CHECK_THAT(*source, Catch::Contains("__launch_bounds__(128)"));
  CHECK_THAT(*source, Catch::Contains("const float* __restrict__ x"));
  auto shape = cuda::launch_shape(f, kernels[0], {7});
  REQUIRE(shape.ok());
  CHECK((shape->first.x == 7 && shape->second.x == 128 && shape->second.y == 1));
  if (!have_nvrtc()) return;
  for (int sm : {80, 90}) {
    cuda::CompiledModule compiled = compile(m, sm);
    CHECK(!compiled.cubin.empty());
  }

  // With a GPU: run it against a host computation of the same thing.
  auto driver = cuda::Driver::get();
  if (!driver.ok() || !(*driver)->device_count().ok() || *(*driver)->device_count() == 0) {
    std::printf("[cuda] no GPU here: handwritten kernel compiled, not run\n");
    return;
  }
  auto props = (*driver)->device_properties(0);
  REQUIRE(props.ok());
  auto loaded = cuda::LoadedModule::load(m, compile(m, props->sm_arch));
  REQUIRE(loaded.ok());
  const int64_t rows = 7;
  NDArray hx = loom::testing::random_array(DType::f32(), {rows * 128});
  NDArray hy(DType::bf16(), {rows * 128}), hc(DType::i32(), {rows});
  hy.poison();
  cuda::Driver* d = *driver;
  auto px = d->allocate(static_cast<size_t>(hx.nbytes()));
  auto py = d->allocate(static_cast<size_t>(hy.nbytes()));
  auto pc = d->allocate(static_cast<size_t>(hc.nbytes()));
  REQUIRE((px.ok() && py.ok() && pc.ok()));
  REQUIRE(d->copy_to_device(*px, hx.data(), static_cast<size_t>(hx.nbytes())).ok());
  REQUIRE(d->copy_to_device(*py, hy.data(), static_cast<size_t>(hy.nbytes())).ok());
  REQUIRE((*loaded)->launch(0, {*px, *py, *pc}, {rows}).ok());
  REQUIRE(d->synchronize(nullptr).ok());
  REQUIRE(d->copy_to_host(hy.data(), *py, static_cast<size_t>(hy.nbytes())).ok());
  REQUIRE(d->copy_to_host(hc.data(), *pc, static_cast<size_t>(hc.nbytes())).ok());
  for (int64_t r = 0; r < rows; ++r) {
    int positive = 0;
    for (int64_t i = 0; i < 128; ++i) {
      positive += hx.get(r * 128 + i) > 0;
      double expected = loom::bf16_to_f32(loom::f32_to_bf16(
          static_cast<float>(hx.get(r * 128 + i)) + static_cast<float>(hx.get(r * 128 + 127 - i))));
      REQUIRE(hy.get(r * 128 + i) == expected);
    }
    REQUIRE(hc.get(r) == positive);
  }
  for (auto p : {*px, *py, *pc}) REQUIRE(d->free(p).ok());
}

TEST_CASE("CUDA codegen: a 16-bit element stored unchanged is copied without a float round trip",
          "[cuda]") {
  // Thread t of 37: b[t] = a[t] (f16 copy), b[t + 37] = a[t] * 2 (computed: rounded to f16 on
  // the way to memory), d[t] = c[t] (bf16 copy), b[t + 74] = c[t] (bf16 to f16: converted).
  ir::Var t("t");
  ir::Buffer a = ir::Buffer::make("a", DType::f16(), {ir::Expr(37)});
  ir::Buffer b = ir::Buffer::make("b", DType::f16(), {ir::Expr(111)});
  ir::Buffer c = ir::Buffer::make("c", DType::bf16(), {ir::Expr(37)});
  ir::Buffer d = ir::Buffer::make("d", DType::bf16(), {ir::Expr(37)});
  std::vector<ir::Stmt> stores = {
      ir::Store::make(b, a(t), {ir::Expr(t)}),
      ir::Store::make(b, ir::cast(DType::f16(), ir::cast(DType::f32(), a(t)) * 2.0f), {t + 37}),
      ir::Store::make(d, c(t), {ir::Expr(t)}),
      ir::Store::make(b, ir::cast(DType::f16(), c(t)), {t + 74})};
  ir::Func f{
      "copies",
      {a, b, c, d},
      ir::For::make(t, ir::Expr(0), ir::Expr(37), ir::ForKind::kGpuThread, ir::Seq::make(stores))};
  ir::Module m{"copies", Target::cuda(90), {f}};
  auto source = cuda::emit_cuda_source(m);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  INFO(*source);
  const std::string kernel = source->substr(source->find(") copies("));
  CHECK_THAT(kernel, Catch::Contains("b[t] = a[t];"));
  CHECK_THAT(kernel, Catch::Contains("d[t] = c[t];"));
  CHECK_THAT(kernel, Catch::Contains("b[(t + 37)] = __float2half_rn("));
  CHECK_THAT(kernel, Catch::Contains("b[(t + 74)] = __float2half_rn(__bfloat162float(c[t]))"));
  CHECK_THAT(kernel, !Catch::Contains("__float2half_rn(__half2float(") &&
                         !Catch::Contains("__float2bfloat16_rn(__bfloat162float("));
  if (!have_nvrtc()) return;
  for (int sm : {80, 90}) (void)compile(m, sm);  // NVRTC takes the copies
}

TEST_CASE(
    "CUDA codegen: consecutive lanes stored from an aligned index are one vector store; "
    "others are stored lane by lane",
    "[cuda]") {
  // Block `row` of n, thread t of 16, over rows of 64 elements: r = row * 64 + 4 t.
  //  - y (f16): lanes r, r + 1 and r + 2, r + 3 as 2-lane stores of 2 x, rounded to f16 (cast,
  //    then stored: one rounding);
  //  - z (f32): lanes r .. r + 3 as one 4-lane store of x + 1;
  //  - q (f32): lanes r, r + 1 as a 2-lane store of x where t < 8, else 0;
  //  - u (bf16), lane by lane: 2 lanes at r + s, s a scalar of unknown parity (run with s = 1);
  //    2 lanes at row * 66 + 3 t (3 t is odd for odd t); 2 lanes at stride 2 from r; and 2
  //    lanes into a local array, then stored one by one.
  ir::Var n("n"), s("s"), row("row"), t("t");
  const ir::Expr len = n * 66 + 64;
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), {n * 64});
  ir::Buffer y = ir::Buffer::make("y", DType::f16(), {n * 64});
  ir::Buffer z = ir::Buffer::make("z", DType::f32(), {n * 64});
  ir::Buffer q = ir::Buffer::make("q", DType::f32(), {n * 64});
  ir::Buffer u = ir::Buffer::make("u", DType::bf16(), {len});
  ir::Buffer v = ir::Buffer::make("v", DType::bf16(), {len});
  ir::Buffer w = ir::Buffer::make("w", DType::bf16(), {len});
  ir::Buffer local = ir::Buffer::make("pair", DType::f32(), {ir::Expr(2)}, ir::MemoryScope::kLocal);
  const ir::Expr r = row * 64 + t * 4;
  auto ramp = [](const ir::Expr& base, int64_t stride, int lanes) {
    return ir::Ramp::make(base, ir::Expr(stride), lanes);
  };
  auto twice = [&](const ir::Expr& at) { return x(ramp(at, 1, 2)) * ir::Broadcast::make(2.0f, 2); };
  std::vector<ir::Stmt> stores = {
      ir::Store::make(y, ir::cast(DType::f16(2), twice(r)), {ramp(r, 1, 2)}),
      ir::Store::make(y, ir::cast(DType::f16(2), twice(r + 2)), {ramp(r + 2, 1, 2)}),
      ir::Store::make(z, x(ramp(r, 1, 4)) + ir::Broadcast::make(1.0f, 4), {ramp(r, 1, 4)}),
      ir::Store::make(
          q,
          ir::select(ir::Broadcast::make(t < 8, 2), x(ramp(r, 1, 2)), ir::Broadcast::make(0.0f, 2)),
          {ramp(r, 1, 2)}),
      ir::Store::make(u, ir::cast(DType::bf16(2), twice(r)), {ramp(r + s, 1, 2)}),
      ir::Store::make(v, ir::cast(DType::bf16(2), twice(r)), {ramp(row * 66 + t * 3, 1, 2)}),
      ir::Store::make(w, ir::cast(DType::bf16(2), twice(r)), {ramp(r, 2, 2)}),
      ir::Allocate::make(
          local, ir::Seq::make({ir::Store::make(local, twice(r), {ramp(ir::Expr(0), 1, 2)}),
                                ir::Store::make(w, ir::cast(DType::bf16(), local(0)), {r + 1}),
                                ir::Store::make(w, ir::cast(DType::bf16(), local(1)), {r + 3})}))};
  ir::Func f{"lanes",
             {x, y, z, q, u, v, w, n, s},
             ir::For::make(row, ir::Expr(0), n, ir::ForKind::kGpuBlock,
                           ir::For::make(t, ir::Expr(0), ir::Expr(16), ir::ForKind::kGpuThread,
                                         ir::Seq::make(stores)))};
  ir::Module m{"vector_stores", Target::cuda(90), {f}};
  auto source = cuda::emit_cuda_source(m);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  INFO(*source);
  const std::string kernel = source->substr(source->find(") lanes("));
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = kernel.find(what); at != std::string::npos; at = kernel.find(what, at + 1))
      ++n;
    return n;
  };
  CHECK(count("*reinterpret_cast<loom_vec<__half, 2>*>(&y[") == 2);
  CHECK(count("*reinterpret_cast<loom_vec<float, 4>*>(&z[") == 1);
  CHECK(count("loom_vec<__nv_bfloat16") == 0);
  CHECK(count(" u[") == 2);
  CHECK(count(" v[") == 2);
  CHECK(count(" w[") == 4);
  // The loads of x each value reads in full, at r or r + 2, are vector loads too; the one under
  // a select (q's) goes lane by lane, as the select reads it only for the lanes that take it.
  CHECK(count("*reinterpret_cast<const loom_vec<float, 2>*>(&x[") == 6);
  CHECK(count("*reinterpret_cast<const loom_vec<float, 4>*>(&x[") == 1);
  CHECK(count(" ? x[") == 2);
  // f16 and bf16 values are rounded once, on their way to memory.
  CHECK(count("__float2half_rn(loom_round_f16(") == 0);
  CHECK(count("__float2bfloat16_rn(loom_round_bf16(") == 0);
  if (!have_nvrtc()) return;
  for (int sm : {80, 90}) {
    cuda::CompiledModule compiled = compile(m, sm);
    CHECK_THAT(compiled.ptx,
               Catch::Contains("st.global.v2.u16") || Catch::Contains("st.global.v2.b16") ||
                   Catch::Contains("st.global.b32") || Catch::Contains("st.global.u32"));
    CHECK_THAT(compiled.ptx, Catch::Contains("st.global.v4.f32") ||
                                 Catch::Contains("st.global.v4.b32") ||
                                 Catch::Contains("st.global.v4.u32"));
  }

  // Run it (emulated) with n = 3, s = 1 against the same arithmetic on the host.
  std::unique_ptr<loom::testing::EmulatedModule> emulated = loom::testing::emulated_or_null(m);
  if (!emulated) return;
  const int64_t rows = 3, shift = 1, size = rows * 66 + 64;
  NDArray hx = loom::testing::random_array(DType::f32(), {rows * 64});
  NDArray hy(DType::f16(), {rows * 64}), hz(DType::f32(), {rows * 64}),
      hq(DType::f32(), {rows * 64});
  NDArray hu(DType::bf16(), {size}), hv(DType::bf16(), {size}), hw(DType::bf16(), {size});
  for (NDArray* a : {&hy, &hz, &hq, &hu, &hv, &hw}) a->poison();
  REQUIRE(emulated
              ->run(0,
                    {hx.data(), hy.data(), hz.data(), hq.data(), hu.data(), hv.data(), hw.data()},
                    {rows, shift})
              .ok());
  auto f16 = [](float f) { return loom::f16_to_f32(loom::f32_to_f16(f)); };
  auto bf16 = [](float f) { return loom::bf16_to_f32(loom::f32_to_bf16(f)); };
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t at = b * 64 + i * 4;
      auto twice_at = [&](int64_t e) { return static_cast<float>(hx.get(e)) * 2.0f; };
      for (int64_t l = 0; l < 4; ++l) {
        CHECK(hy.get(at + l) == f16(twice_at(at + l)));
        CHECK(hz.get(at + l) == static_cast<float>(hx.get(at + l)) + 1.0f);
        if (l < 2) CHECK(hq.get(at + l) == (i < 8 ? hx.get(at + l) : 0.0));
        CHECK(hw.get(at + l) == bf16(twice_at(at + l / 2)));
      }
      for (int64_t l = 0; l < 2; ++l) {
        CHECK(hu.get(at + shift + l) == bf16(twice_at(at + l)));
        CHECK(hv.get(b * 66 + i * 3 + l) == bf16(twice_at(at + l)));
      }
    }
}

TEST_CASE("CUDA codegen: NVRTC errors carry NVRTC's log", "[cuda]") {
  if (!have_nvrtc()) return;
  auto bad = cuda::compile_cuda_source(
      "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_thing; }\n", 90,
      "broken.cu");
  REQUIRE(!bad.ok());
  REQUIRE(bad.status().code() == absl::StatusCode::kInvalidArgument);
  std::string message(bad.status().message());
  CHECK_THAT(message, Catch::Contains("broken.cu"));
  CHECK_THAT(message, Catch::Contains("undefined_thing"));
  CHECK_THAT(message, Catch::Contains("-arch=sm_90"));
  auto bad_arch = cuda::compile_cuda_source("__global__ void k() {}", 7);
  REQUIRE(!bad_arch.ok());
  CHECK_THAT(std::string(bad_arch.status().message()), Catch::Contains("sm arch 7"));
  auto version = cuda::nvrtc_version();
  REQUIRE(version.ok());
  CHECK_THAT(*version, Catch::StartsWith("NVRTC "));
}

TEST_CASE("CUDA codegen: under LOOM_DUMP_IR, ptxas reports registers and spills in the dump",
          "[cuda][dump]") {
  if (!have_nvrtc()) return;
  std::vector<Case> cases = make_cases();
  cases.resize(1);
  const ir::Module m = module_of("verbose", cases, true);
  // Off: NVRTC's log stays empty for a kernel that compiles cleanly.
  CHECK(compile(m, 90).log.find("ptxas info") == std::string::npos);
  loom::testing::TempDir dir;
  ::setenv("LOOM_DUMP_IR", dir.path().c_str(), 1);
  cuda::CompiledModule verbose = compile(m, 90);
  ::unsetenv("LOOM_DUMP_IR");
  CHECK_THAT(verbose.log, Catch::Contains("ptxas info"));
  CHECK_THAT(verbose.log, Catch::Contains("registers"));
  CHECK_THAT(verbose.log, Catch::Contains("spill"));
  std::string dumped;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() / "verbose"))
    if (e.path().filename().string().find("nvrtc-log") != std::string::npos) {
      std::ifstream in(e.path());
      dumped.assign(std::istreambuf_iterator<char>(in), {});
    }
  CHECK(dumped == verbose.log);
}
