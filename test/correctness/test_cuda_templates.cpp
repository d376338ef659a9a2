// The CUDA schedule templates without a GPU: for every template (row reductions, softmax,
// layer_norm, SIMT and tensor-core matmul, direct conv2d) and the injective lowering, configs sampled from the
// space (all of a small space; else a fixed sample plus the default) on odd and prime shapes become
// CUDA C++ that NVRTC compiles for sm_80 and sm_90. The kernels then run and must match the te
// reference evaluator: on the GPU where there is one, else (the first two sampled configs and the
// default) in the CUDA emulator, test/cuda_emulator.hpp, which runs the source on the host.

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_emulated_module.hpp"
#include "loom/core/ndarray.hpp"
#include "loom/core/target.hpp"
#include "loom/graph/op.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/ops/injective_cuda.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/te/tensor.hpp"
#include "test_util.hpp"

namespace {

using loom::DType;
using loom::NDArray;
using loom::OpDef;
using loom::OpRegistry;
using loom::ScheduleTemplate;
using loom::Target;
using loom::TemplateContext;
using loom::TensorType;
using loom::testing::wgmma_config;
namespace ir = loom::ir;
namespace te = loom::te;
namespace tune = loom::tune;
namespace cuda = loom::runtime::cuda;
namespace ops = loom::ops;

// One kernel of a module with what it computes: the te task (the reference) and its inputs.
struct Kernel {
  te::Task task;
  std::vector<NDArray> inputs;
  double rtol = 1e-5, atol = 1e-5;
};

// The configs a test compiles: the whole space when small, else a fixed sample and the default.
std::vector<tune::Config> sample_configs(const tune::Space& space, size_t sample = 10) {
  std::vector<tune::Config> all = space.all();
  REQUIRE(!all.empty());
  if (all.size() <= sample + 2) return all;
  std::vector<tune::Config> out;
  std::mt19937 pick(20261201);
  std::shuffle(all.begin(), all.end(), pick);
  out.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(sample));
  if (std::find(out.begin(), out.end(), space.default_config()) == out.end())
    out.push_back(space.default_config());
  return out;
}

// Whether NVRTC can run here; prints why not otherwise (a build without the CUDA toolkit).
bool have_nvrtc() {
  auto version = cuda::nvrtc_version();
  if (version.ok()) return true;
  REQUIRE(!cuda::built_with_cuda());
  REQUIRE_THAT(std::string(version.status().message()), Catch::Contains("built without CUDA"));
  std::printf("[cuda] %s; NVRTC compilation skipped\n", version.status().ToString().c_str());
  return false;
}

// The driver with a device, or null after saying why the kernels are not run.
cuda::Driver* gpu_or_null(const std::string& what) {
  auto driver = cuda::Driver::get();
  if (!driver.ok() || !(*driver)->device_count().ok() || *(*driver)->device_count() == 0) {
    std::printf("[cuda] no GPU here (%s): %s compiled, and emulated on the host\n",
                driver.ok() ? "no device" : driver.status().ToString().c_str(), what.c_str());
    return nullptr;
  }
  return *driver;
}

// The driver with an sm_90 device first (sm_90a kernels run on no other), or null after saying
// why the kernels are not run.
cuda::Driver* sm90_or_null(const std::string& what) {
  cuda::Driver* gpu = gpu_or_null(what);
  if (!gpu) return nullptr;
  auto props = gpu->device_properties(0);
  if (props.ok() && props->sm_arch == 90) return gpu;
  std::printf("[cuda] the GPU is not sm_90: %s compiled, and emulated on the host\n", what.c_str());
  return nullptr;
}

// Emits m, compiles it for sm_<sm>, and checks a cubin with every kernel's entry symbol.
void compile_and_check(const ir::Module& m, int sm) {
  auto compiled = cuda::compile_module(m, sm);
  if (!compiled.ok()) {
    auto source = cuda::emit_cuda_source(m);
    INFO((source.ok() ? *source : source.status().ToString()));
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
  }
  CHECK(compiled->sm_arch == sm);
  REQUIRE(compiled->cubin.size() > 64);
  CHECK(compiled->cubin.compare(0, 4,
                                "\x7f"
                                "ELF") == 0);
  REQUIRE(compiled->kernels.size() == m.funcs.size());
  for (const cuda::KernelInfo& k : compiled->kernels)
    CHECK_THAT(compiled->ptx, Catch::Contains(".entry " + k.symbol + "("));
  CHECK_THAT(compiled->ptx, Catch::Contains(".target sm_" + std::to_string(sm)));
}

// Runs every kernel of m on device 0 (`launches` times, outputs poisoned before each) and
// compares its outputs with the te reference.
void run_and_compare(cuda::Driver* d, const ir::Module& m, std::vector<Kernel>& kernels,
                     int launches = 1) {
  auto props = d->device_properties(0);
  REQUIRE(props.ok());
  auto compiled = cuda::compile_module(m, props->sm_arch);
  REQUIRE(compiled.ok());
  auto loaded = cuda::LoadedModule::load(m, *compiled);
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());
  for (size_t k = 0; k < kernels.size(); ++k) {
    Kernel& c = kernels[k];
    INFO("kernel " << m.funcs[k].name);
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
    for (int launch = 0; launch < launches; ++launch) {
      for (size_t o = 0; o < outputs.size(); ++o) {
        outputs[o].poison();
        REQUIRE(d->copy_to_device(buffers[c.inputs.size() + o], outputs[o].data(),
                                  static_cast<size_t>(outputs[o].nbytes()))
                    .ok());
      }
      absl::Status launched = (*loaded)->launch(k, buffers, {});
      INFO(launched.ToString());
      REQUIRE(launched.ok());
      REQUIRE(d->synchronize(nullptr).ok());
      for (size_t o = 0; o < outputs.size(); ++o) {
        const size_t at = c.inputs.size() + o;
        REQUIRE(d->copy_to_host(outputs[o].data(), buffers[at],
                                static_cast<size_t>(outputs[o].nbytes()))
                    .ok());
        loom::testing::require_close(outputs[o], (*expected)[o], c.rtol, c.atol);
        // Nor would the tuner refuse it (see check_emulated).
        absl::Status agree = tune::outputs_agree((*expected)[o], outputs[o]);
        INFO(agree.ToString());
        CHECK(agree.ok());
      }
    }
    for (cuda::DevicePtr p : buffers) REQUIRE(d->free(p).ok());
  }
}

// Without a GPU: runs kernels of m in the CUDA emulator (the generated source compiled for the
// host, test/cuda_emulator.hpp) and compares their outputs with the te reference. Host threads
// standing in for CUDA threads are slow: the first two sampled configs and the last one (the
// default when it was not sampled) run.
void emulate_and_compare(const ir::Module& m, std::vector<Kernel>& kernels) {
  std::unique_ptr<loom::testing::EmulatedModule> emulated = loom::testing::emulated_or_null(m);
  if (!emulated) return;
  for (size_t k = 0; k < kernels.size(); ++k)
    if (k < 2 || k + 1 == kernels.size())
      loom::testing::check_emulated(*emulated, k, kernels[k].task, kernels[k].inputs, {},
                                    kernels[k].rtol, kernels[k].atol);
}

// An operator node to schedule with its CUDA template.
struct OpCase {
  std::string op;
  std::vector<TensorType> inputs;
  TensorType output;
  std::shared_ptr<const loom::OpAttrs> attrs;
  double rtol = 1e-5, atol = 1e-5;
  size_t sample = 10;  // configs sampled from a large space (and the default)
};

std::vector<ir::Expr> shape_exprs(const loom::Shape& s) {
  std::vector<ir::Expr> out;
  for (const loom::Dim& d : s) out.push_back(ir::Expr(d.value()));
  return out;
}

// The node's te task (its compute definition over placeholders), the reference.
te::Task reference_task(const OpDef& def, const OpCase& c, const std::string& name) {
  std::vector<te::Tensor> in;
  for (size_t i = 0; i < c.inputs.size(); ++i)
    in.push_back(te::placeholder(name + "_in" + std::to_string(i), c.inputs[i].dtype,
                                 shape_exprs(c.inputs[i].shape)));
  te::Tensor out = def.compute(in, *c.attrs, shape_exprs(c.output.shape), name);
  auto task = te::Task::make(name, in, {out});
  REQUIRE(task.ok());
  return *task;
}

// Schedules the case with its CUDA template for every sampled config, for sm_80 and sm_90:
// NVRTC compiles each arch's module of all configs; with a GPU, the device arch's module runs.
// `expect` lists text every emitted source contains. Returns the number of kernels compiled.
size_t check_op(const OpCase& c, const std::vector<std::string>& expect = {}) {
  const OpDef* def = OpRegistry::global().find(c.op);
  REQUIRE(def);
  const bool nvrtc = have_nvrtc();
  cuda::Driver* gpu = nullptr;
  size_t count = 0;
  for (int sm : {80, 90}) {
    TemplateContext ctx;
    ctx.target = Target::cuda(sm);
    ctx.inputs = c.inputs;
    ctx.output = c.output;
    ctx.attrs = c.attrs.get();
    ctx.constant_inputs.assign(c.inputs.size(), false);
    const ScheduleTemplate* t = nullptr;
    for (const ScheduleTemplate& candidate : def->templates) {
      if (candidate.target_kind == Target::Kind::kCuda && candidate.applies(ctx)) t = &candidate;
    }
    INFO(c.op << " on sm_" << sm);
    REQUIRE(t);
    tune::Space space = t->space(ctx);
    CHECK(space.broken_rules(space.default_config()).empty());
    CHECK(!space.pruned().empty());  // every prefer rule reads only the space's parameters
    ir::Module m{c.op + "_sm" + std::to_string(sm), ctx.target, {}};
    std::vector<Kernel> kernels;
    for (const tune::Config& config : sample_configs(space, c.sample)) {
      ctx.name = c.op + "_" + std::to_string(m.funcs.size());
      INFO("config " << config.to_string());
      auto scheduled = t->build(ctx, config);
      INFO(scheduled.status().ToString());
      REQUIRE(scheduled.ok());
      m.funcs.push_back(loom::passes::lower_scheduled(scheduled->func, ctx.target));
      Kernel k{reference_task(*def, c, ctx.name), {}, c.rtol, c.atol};
      for (const TensorType& in : c.inputs) {
        std::vector<int64_t> shape;
        for (const loom::Dim& d : in.shape) shape.push_back(d.value());
        k.inputs.push_back(loom::testing::random_array(in.dtype, shape));
      }
      kernels.push_back(std::move(k));
    }
    auto source = cuda::emit_cuda_source(m);
    INFO(source.status().ToString());
    REQUIRE(source.ok());
    for (const std::string& text : expect) CHECK_THAT(*source, Catch::Contains(text));
    count += m.funcs.size();
    if (!nvrtc) continue;
    compile_and_check(m, sm);
    if (sm != 90) continue;
    if ((gpu = gpu_or_null(c.op + " kernels")))
      run_and_compare(gpu, m, kernels);
    else
      emulate_and_compare(m, kernels);
  }
  return count;
}

TensorType typed(DType t, std::vector<int64_t> shape) {
  loom::Shape s;
  for (int64_t n : shape) s.push_back(loom::Dim(n));
  return TensorType{s, t};
}
TensorType f32(std::vector<int64_t> shape) { return typed(DType::f32(), std::move(shape)); }

// The template `name` of operator `op`.
const ScheduleTemplate& template_named(const std::string& op, const std::string& name) {
  const OpDef* def = OpRegistry::global().find(op);
  REQUIRE(def);
  for (const ScheduleTemplate& t : def->templates)
    if (t.name == name) return t;
  FAIL("no template " << name << " for " << op);
  return def->templates.front();
}

// A node of c's types for target, its inputs not constant.
TemplateContext context_of(const OpCase& c, const Target& target, const std::string& name) {
  TemplateContext ctx;
  ctx.target = target;
  ctx.inputs = c.inputs;
  ctx.output = c.output;
  ctx.attrs = c.attrs.get();
  ctx.constant_inputs.assign(c.inputs.size(), false);
  ctx.name = name;
  return ctx;
}

}  // namespace

TEST_CASE("CUDA templates: row reductions (warp shuffles) compile for sm_80 and sm_90",
          "[cuda][cuda_templates]") {
  auto attrs = std::make_shared<ops::ReduceAttrs>();
  attrs->axes = {-1};
  // Rows short enough to stay in registers, and long rows that are streamed.
  for (auto [rows, len] : {std::pair<int64_t, int64_t>{37, 129}, {3, 2053}}) {
    for (const char* op : {"sum", "mean", "max", "min"}) {
      DYNAMIC_SECTION(op << " " << rows << "x" << len) {
        OpCase c{op, {f32({rows, len})}, f32({rows}), attrs, 1e-4, 1e-4};
        CHECK(check_op(c, {"__shfl_xor_sync(0xffffffffu, "}) > 1);
      }
    }
  }
}

TEST_CASE("CUDA templates: argmax and argmin (two warp-shuffle reductions) compile for sm_80 and "
          "sm_90",
          "[cuda][cuda_templates]") {
  auto attrs = std::make_shared<ops::ArgReduceAttrs>();
  attrs->axis = -1;
  for (auto [rows, len] : {std::pair<int64_t, int64_t>{37, 129}, {3, 2053}}) {
    for (const char* op : {"argmax", "argmin"}) {
      DYNAMIC_SECTION(op << " " << rows << "x" << len) {
        OpCase c{op, {f32({rows, len})}, TensorType{{rows, 1}, DType::i64()}, attrs, 0, 0};
        CHECK(check_op(c, {"__shfl_xor_sync(0xffffffffu, "}) > 1);
      }
    }
  }
}

TEST_CASE("CUDA templates: softmax, log_softmax, argmax and argmin over an axis not the last "
          "(a thread per column) compile for sm_80 and sm_90",
          "[cuda][cuda_templates]") {
  auto softmax = std::make_shared<ops::SoftmaxAttrs>();
  auto arg = std::make_shared<ops::ArgReduceAttrs>();
  for (int axis : {0, 1}) {
    softmax->axis = axis;
    arg->axis = axis;
    const std::vector<int64_t> in = {5, 37, 3};
    std::vector<int64_t> reduced = in;
    reduced[static_cast<size_t>(axis)] = 1;
    for (const char* op : {"softmax", "log_softmax"}) {
      DYNAMIC_SECTION(op << " over axis " << axis) {
        check_op({op, {f32(in)}, f32(in), softmax, 1e-4, 1e-5}, {"expf("});
      }
    }
    for (const char* op : {"argmax", "argmin"}) {
      DYNAMIC_SECTION(op << " over axis " << axis) {
        TensorType out = f32(reduced);
        out.dtype = DType::i64();
        check_op({op, {f32(in)}, out, arg, 0, 0});
      }
    }
  }
}

TEST_CASE("CUDA templates: softmax, log_softmax and layer_norm compile for sm_80 and sm_90",
          "[cuda][cuda_templates]") {
  for (auto [rows, len] : {std::pair<int64_t, int64_t>{37, 129}, {3, 2053}}) {
    DYNAMIC_SECTION("softmax " << rows << "x" << len) {
      OpCase c{"softmax",
               {f32({rows, len})},
               f32({rows, len}),
               std::make_shared<ops::SoftmaxAttrs>(),
               1e-4,
               1e-6};
      check_op(c, {"__shfl_xor_sync", "expf("});
    }
    DYNAMIC_SECTION("log_softmax " << rows << "x" << len) {
      OpCase c{"log_softmax",
               {f32({rows, len})},
               f32({rows, len}),
               std::make_shared<ops::SoftmaxAttrs>(),
               1e-4,
               1e-5};
      check_op(c, {"__shfl_xor_sync", "expf(", "logf("});
    }
    DYNAMIC_SECTION("layer_norm " << rows << "x" << len) {
      OpCase c{"layer_norm",
               {f32({rows, len}), f32({len}), f32({len})},
               f32({rows, len}),
               std::make_shared<ops::LayerNormAttrs>(),
               1e-4,
               1e-4};
      check_op(c, {"__shfl_xor_sync", "rsqrtf("});
    }
  }
}

// f16 and bf16 rows are read into f32, computed in f32 and rounded once when stored; the
// reference rounds at its own steps, so results agree to a few units of the 16-bit type.
TEST_CASE("CUDA templates: f16 and bf16 rows (softmax, layer_norm, mean, max) are computed in f32",
          "[cuda][cuda_templates]") {
  for (DType t : {DType::f16(), DType::bf16()}) {
    const double tol = t == DType::f16() ? 1e-2 : 4e-2;
    const int64_t rows = 23, len = 197;
    DYNAMIC_SECTION("softmax " << t) {
      check_op({"softmax", {typed(t, {rows, len})}, typed(t, {rows, len}),
                std::make_shared<ops::SoftmaxAttrs>(), tol, tol, 4},
               {"__shfl_xor_sync", "expf("});
    }
    DYNAMIC_SECTION("layer_norm " << t) {
      check_op({"layer_norm", {typed(t, {rows, len}), typed(t, {len}), typed(t, {len})},
                typed(t, {rows, len}), std::make_shared<ops::LayerNormAttrs>(), tol, tol, 4},
               {"__shfl_xor_sync", "rsqrtf("});
    }
    auto attrs = std::make_shared<ops::ReduceAttrs>();
    attrs->axes = {-1};
    for (const char* op : {"mean", "max"}) {
      DYNAMIC_SECTION(op << " " << t) {
        check_op({op, {typed(t, {rows, len})}, typed(t, {rows}), attrs, tol, tol, 4},
                 {"__shfl_xor_sync"});
      }
    }
  }
}

TEST_CASE("CUDA templates: SIMT matmul compiles for sm_80 and sm_90", "[cuda][cuda_templates]") {
  auto none = std::make_shared<loom::NoAttrs>();
  SECTION("one GEMM, odd sizes, K not a multiple of the K slice") {
    check_op({"matmul", {f32({61, 67}), f32({67, 53})}, f32({61, 53}), none, 1e-4, 1e-4},
             {"__shared__", "__syncthreads();", "fmaf("});
  }
  SECTION("batched A and B") {
    check_op({"matmul", {f32({3, 19, 37}), f32({3, 37, 29})}, f32({3, 19, 29}), none, 1e-4, 1e-4});
  }
  SECTION("batch dims of A folded into M") {
    check_op({"matmul", {f32({2, 33, 41}), f32({41, 131})}, f32({2, 33, 131}), none, 1e-4, 1e-4});
  }
  SECTION("few output tiles and a deep, prime K: split-K blocks sum their partials") {
    // The default splits K (too few tiles to fill the SMs), so at least it counts arrivals.
    check_op({"matmul", {f32({23, 1009}), f32({1009, 37})}, f32({23, 37}), none, 1e-4, 1e-4},
             {"atomicAdd(", "__threadfence()"});
  }
  SECTION("N a multiple of 4, or of 2 only: a register row's adjacent columns as one store") {
    // inner_n 2 and 4 both store vectors where N is a multiple of 4; where it is a multiple of 2
    // only, inner_n 2 does and inner_n 4 stores lane by lane.
    check_op(
        {"matmul", {f32({37, 64}), f32({64, 44})}, f32({37, 44}), none, 1e-4, 1e-4},
        {"*reinterpret_cast<loom_vec<float, 2>*>(", "*reinterpret_cast<loom_vec<float, 4>*>("});
    check_op({"matmul", {f32({2, 19, 40}), f32({2, 40, 30})}, f32({2, 19, 30}), none, 1e-4, 1e-4},
             {"*reinterpret_cast<loom_vec<float, 2>*>("});
    check_op({"matmul", {f32({23, 1009}), f32({1009, 36})}, f32({23, 36}), none, 1e-4, 1e-4},
             {"atomicAdd(", "*reinterpret_cast<loom_vec<float, "});
  }
}

// f16 and bf16 products are exact in f32 and the sums differ from the reference only in order;
// the output's rounding to 16 bits can then differ by one unit in the last place: 2^-10 of the
// value for f16 (tolerance 2e-3), 2^-7 for bf16 (1e-2), with the same absolute tolerance for
// results near 0.
TEST_CASE("CUDA templates: tensor-core matmul (mma.sync, ldmatrix, cp.async) compiles for sm_80 "
          "and sm_90 and matches the reference",
          "[cuda][cuda_templates]") {
  auto none = std::make_shared<loom::NoAttrs>();
  const DType f16 = DType::f16(), bf16 = DType::bf16();
  SECTION("f16, K and N multiples of 8 (cp.async), M prime, K not a multiple of the slice") {
    check_op(
        {"matmul",
         {typed(f16, {61, 72}), typed(f16, {72, 40})},
         typed(f16, {61, 40}),
         none,
         2e-3,
         2e-3},
        {"loom_mma_m16n8k16_f16(", "loom_ldmatrix_x4(", "loom_ldmatrix_x4_trans(",
         "loom_cp_async_16(", "loom_cp_async_wait<", "*reinterpret_cast<loom_vec<__half, 2>*>("});
  }
  SECTION("f16, odd K and N (copies through registers)") {
    const size_t n = check_op({"matmul", {typed(f16, {37, 45}), typed(f16, {45, 29})},
                               typed(f16, {37, 29}), none, 2e-3, 2e-3},
                              {"loom_mma_m16n8k16_f16("});
    CHECK(n > 0);
  }
  SECTION("bf16, batched A and B") {
    check_op({"matmul",
              {typed(bf16, {2, 19, 64}), typed(bf16, {2, 64, 24})},
              typed(bf16, {2, 19, 24}),
              none,
              1e-2,
              1e-2},
             {"loom_mma_m16n8k16_bf16(", "*reinterpret_cast<loom_vec<__nv_bfloat16, 2>*>("});
  }
  SECTION("the PTX has the tensor-core instructions") {
    if (!have_nvrtc()) return;
    const ScheduleTemplate& t = template_named("matmul", "cuda_tensor_core_gemm");
    const OpCase c{"matmul", {typed(f16, {128, 64}), typed(f16, {64, 128})}, typed(f16, {128, 128}),
                   none};
    for (int sm : {80, 90}) {
      const TemplateContext ctx = context_of(c, Target::cuda(sm), "tc");
      REQUIRE(t.applies(ctx));
      auto scheduled = t.build(ctx, t.space(ctx).default_config());
      REQUIRE(scheduled.ok());
      ir::Module m{"tc", ctx.target, {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
      auto compiled = cuda::compile_module(m, sm);
      INFO(compiled.status().ToString());
      REQUIRE(compiled.ok());
      CHECK_THAT(compiled->ptx, Catch::Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"));
      CHECK_THAT(compiled->ptx, Catch::Contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16"));
      CHECK_THAT(compiled->ptx, Catch::Contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"));
      CHECK_THAT(compiled->ptx, Catch::Contains("cp.async.cg.shared.global"));
      CHECK_THAT(compiled->ptx, Catch::Contains("cp.async.wait_group"));
      CHECK_THAT(compiled->ptx, !Catch::Contains("ld.local") && !Catch::Contains("st.local"));
      // Each lane's two adjacent columns of C are one 4-byte store.
      CHECK_THAT(compiled->ptx,
                 Catch::Contains("st.global.v2.u16") && !Catch::Contains("st.global.u16"));
    }
  }
  SECTION("a 128 x 128 tile in 4 stages takes dynamic shared memory") {
    const OpDef* def = OpRegistry::global().find("matmul");
    const ScheduleTemplate* t = &template_named("matmul", "cuda_tensor_core_gemm");
    OpCase c{"matmul", {typed(f16, {131, 72}), typed(f16, {72, 136})}, typed(f16, {131, 136}),
             none, 2e-3, 2e-3};
    const TemplateContext ctx = context_of(c, Target::cuda(90), "big");
    const int swizzle = GENERATE(0, 1);
    INFO("swizzle " << swizzle);
    const tune::Config big({{"warps_m", 2}, {"warps_n", 2}, {"mma_m", 4}, {"mma_n", 8},
                            {"block_k", 32}, {"stages", 4}, {"swizzle", swizzle},
                            {"split_k", 1}});
    tune::Space space = t->space(ctx);
    CHECK(space.broken_rules(big).empty());
    auto scheduled = t->build(ctx, big);
    REQUIRE(scheduled.ok());
    ir::Module m{"big", ctx.target, {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
    std::vector<cuda::KernelInfo> infos;
    auto source = cuda::emit_cuda_source(m, &infos);
    REQUIRE(source.ok());
    // 4 stages of A (128 rows of 32) and B (32 rows of 128) in f16, rows padded by 8 elements
    // or swizzled in place (chunk indices XORed with the row).
    REQUIRE(infos.size() == 1);
    if (swizzle) {
      CHECK(infos[0].dynamic_shared_bytes == 4 * (128 * 32 + 32 * 128) * 2);
      CHECK_THAT(*source, Catch::Contains(" ^ "));
    } else {
      CHECK(infos[0].dynamic_shared_bytes == 4 * (128 * 40 + 32 * 136) * 2);
    }
    CHECK_THAT(*source, Catch::Contains("LOOM_DYNAMIC_SHARED(loom_smem);"));
    CHECK_THAT(*source, !Catch::Contains("__shared__ __align__(16) __half"));
    if (!have_nvrtc()) return;
    compile_and_check(m, 80);
    compile_and_check(m, 90);
    std::vector<Kernel> kernels{{reference_task(*def, c, "big"), {}, c.rtol, c.atol}};
    kernels[0].inputs = {loom::testing::random_array(f16, {131, 72}),
                         loom::testing::random_array(f16, {72, 136})};
    if (cuda::Driver* gpu = gpu_or_null("a dynamic-shared-memory kernel"))
      run_and_compare(gpu, m, kernels);
    else
      emulate_and_compare(m, kernels);
  }
  SECTION("split-K: a deep K over few tiles, summed by the block that arrives last") {
    const OpDef* def = OpRegistry::global().find("matmul");
    const ScheduleTemplate* t = &template_named("matmul", "cuda_tensor_core_gemm");
    // K = 1088 (cp.async) and the prime 1091 (copies through registers): the last split is
    // shorter than the others, and with 8 splits of 64-deep slices (17 or 18 slices, 3 a
    // split) the last splits get no slice at all.
    struct Split { int64_t K, block_k, split_k; };
    for (const Split& sp : {Split{1088, 32, 2}, Split{1088, 64, 8}, Split{1091, 64, 8},
                            Split{1091, 16, 4}}) {
      OpCase c{"matmul", {typed(f16, {37, sp.K}), typed(f16, {sp.K, 40})}, typed(f16, {37, 40}),
               none, 2e-3, 2e-3};
      const TemplateContext ctx = context_of(c, Target::cuda(90), "split");
      tune::Space space = t->space(ctx);
      // Few tiles: the default splits K.
      CHECK(space.default_config()["split_k"] > 1);
      const tune::Config config({{"warps_m", 1}, {"warps_n", 2}, {"mma_m", 2}, {"mma_n", 2},
                                 {"block_k", sp.block_k}, {"stages", 3}, {"swizzle", 1},
                                 {"split_k", sp.split_k}});
      INFO("K " << sp.K << ", config " << config.to_string());
      CHECK(space.broken_rules(config).empty());
      auto scheduled = t->build(ctx, config);
      REQUIRE(scheduled.ok());
      ir::Module m{"split", ctx.target,
                   {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
      auto source = cuda::emit_cuda_source(m);
      REQUIRE(source.ok());
      CHECK_THAT(*source, Catch::Contains("__device__ __align__(16) float split_split_partials["));
      CHECK_THAT(*source, Catch::Contains("atomicAdd("));
      CHECK_THAT(*source, Catch::Contains("__threadfence();"));
      if (have_nvrtc()) compile_and_check(m, 90);
      // Two launches of one loaded module on fresh inputs: the arrival counters the first
      // leaves must be zero again.
      const te::Task task = reference_task(*def, c, "split");
      auto inputs = [&] {
        return std::vector<NDArray>{loom::testing::random_array(f16, {37, sp.K}),
                                    loom::testing::random_array(f16, {sp.K, 40})};
      };
      if (cuda::Driver* gpu = gpu_or_null("a split-K kernel")) {
        std::vector<Kernel> kernels{{task, inputs(), c.rtol, c.atol}};
        run_and_compare(gpu, m, kernels, 2);
      } else if (auto emulated = loom::testing::emulated_or_null(m)) {
        for (int launch = 0; launch < 2; ++launch)
          loom::testing::check_emulated(*emulated, 0, task, inputs(), {}, c.rtol, c.atol);
      }
    }
    // Many tiles: no split is valid.
    const TemplateContext many = context_of(
        {"matmul", {typed(f16, {2048, 256}), typed(f16, {256, 2048})}, typed(f16, {2048, 2048}),
         none},
        Target::cuda(90), "many");
    tune::Space space = t->space(many);
    CHECK(space.default_config()["split_k"] == 1);
    tune::Config split = space.default_config();
    split.set("split_k", 2);
    CHECK_FALSE(space.broken_rules(split).empty());
  }
  SECTION("sm_75 and f32 take other templates") {
    const ScheduleTemplate* t = &template_named("matmul", "cuda_tensor_core_gemm");
    TemplateContext ctx = context_of(
        {"matmul", {typed(f16, {16, 16}), typed(f16, {16, 16})}, typed(f16, {16, 16}), none},
        Target::cuda(75), "tc");
    CHECK_FALSE(t->applies(ctx));
    ctx.target = Target::cuda(80);
    CHECK(t->applies(ctx));
    ctx.inputs = {f32({16, 16}), f32({16, 16})};
    ctx.output = f32({16, 16});
    CHECK_FALSE(t->applies(ctx));
  }
}

// wgmma (sm_90a) from shared tiles in the 128-byte swizzled layouts. The emulator reads the tiles
// through the hardware's address swizzle and the canonical layouts' byte strides, not through
// loom's Layout, so the two descriptions of the layouts are checked against each other.
TEST_CASE("CUDA templates: the sm_90 warpgroup GEMM (wgmma) compiles for sm_90a and matches the "
          "reference",
          "[cuda][cuda_templates]") {
  auto none = std::make_shared<loom::NoAttrs>();
  const DType f16 = DType::f16(), bf16 = DType::bf16();
  const OpDef* def = OpRegistry::global().find("matmul");
  const ScheduleTemplate* t = &template_named("matmul", "cuda_wgmma_gemm");
  struct Case {
    OpCase op;
    std::vector<int64_t> a, b;
  };
  // M prime, K a multiple of 8 but not of 64 (a zero-filled tail slice), N past a tile; bf16
  // with batched A and B; odd K and N.
  const std::vector<Case> cases = {
      {{"matmul", {typed(f16, {131, 200}), typed(f16, {200, 136})}, typed(f16, {131, 136}), none,
        2e-3, 2e-3},
       {131, 200},
       {200, 136}},
      {{"matmul", {typed(bf16, {2, 67, 72}), typed(bf16, {2, 72, 64})}, typed(bf16, {2, 67, 64}),
        none, 1e-2, 1e-2},
       {2, 67, 72},
       {2, 72, 64}},
      // Rows not a multiple of 16 bytes: both operands copied element by element.
      {{"matmul", {typed(f16, {37, 45}), typed(f16, {45, 29})}, typed(f16, {37, 29}), none, 2e-3,
        2e-3},
       {37, 45},
       {45, 29}},
      // Two M tiles of 64 rows and 9 slices: a cluster's stages are refilled.
      {{"matmul", {typed(f16, {127, 520}), typed(f16, {520, 136})}, typed(f16, {127, 136}), none,
        2e-3, 2e-3},
       {127, 520},
       {520, 136}},
  };
  // A deep K over one tile: 17 slices of 64, split 4 (5, 5, 5, 2 slices) or 8 (3 a split, the
  // last two splits empty).
  const Case deep{{"matmul", {typed(f16, {37, 1088}), typed(f16, {1088, 48})}, typed(f16, {37, 48}),
                   none, 2e-3, 2e-3},
                  {37, 1088},
                  {1088, 48}};
  for (const Case& c : {cases[0], cases[1], cases[2], cases[3], deep}) {
    const TemplateContext ctx = context_of(c.op, Target::cuda(90), "wg");
    REQUIRE(t->applies(ctx));
    tune::Space space = t->space(ctx);
    CHECK(space.broken_rules(space.default_config()).empty());
    const bool split = c.a[1] == 1088;
    if (split) CHECK(space.default_config()["split_k"] > 1);
    // TMA where the rows are multiples of 16 bytes: all cases but the odd one.
    const bool tma = c.a.back() % 8 == 0 && c.b.back() % 8 == 0;
    CHECK(space.broken_rules(wgmma_config(1, 64, 3, 1, 1)).empty() == tma);
    // kFast measures TMA where it applies, on tiles 128 columns wide or more.
    const std::vector<tune::Config> pruned = space.pruned();
    CHECK(std::any_of(pruned.begin(), pruned.end(),
                      [](const tune::Config& p) { return p["tma"] == 1; }) == tma);
    for (const tune::Config& p : pruned) CHECK((p["tma"] == 0 || p["block_n"] >= 128));
    // Clusters of two blocks: TMA tiles 128 columns wide or more over an even number of M
    // tiles, which kFast measures in pairs only.
    const int64_t M = c.a[c.a.size() - 2];
    const bool pairs_64 = tma && (M + 63) / 64 % 2 == 0;     // one warpgroup: 64-row tiles
    const bool pairs_128 = tma && (M + 127) / 128 % 2 == 0;  // two: 128-row tiles
    CHECK(space.broken_rules(wgmma_config(1, 128, 3, 1, 1, 2)).empty() == pairs_64);
    CHECK(space.broken_rules(wgmma_config(2, 256, 3, 1, 1, 2)).empty() == pairs_128);
    CHECK_FALSE(space.broken_rules(wgmma_config(1, 64, 3, 1, 1, 2)).empty());   // one atom of B
    CHECK_FALSE(space.broken_rules(wgmma_config(1, 128, 3, 1, 0, 2)).empty());  // cp.async
    for (const tune::Config& p : pruned)
      if (p["tma"] == 1)
        CHECK(p["cluster"] == ((p["warpgroups"] == 1 ? pairs_64 : pairs_128) ? 2 : 1));
    std::vector<tune::Config> configs =
        split ? std::vector<tune::Config>{wgmma_config(1, 64, 3, 4), wgmma_config(2, 64, 2, 8)}
              : std::vector<tune::Config>{wgmma_config(1, 64, 2), wgmma_config(2, 128, 3),
                                          wgmma_config(1, 256, 4)};
    if (tma && split) {
      configs.push_back(wgmma_config(1, 64, 3, 4, 1));
      configs.push_back(wgmma_config(2, 128, 2, 8, 1));
    } else if (tma) {
      configs.push_back(wgmma_config(1, 64, 2, 1, 1));
      configs.push_back(wgmma_config(2, 256, 4, 1, 1));  // registers shifted to the consumers
      configs.push_back(wgmma_config(1, 128, 3, 1, 1));
    }
    // Clusters: the f16 case over two M tiles of 128 rows, once split in two along K; the bf16
    // one over two M tiles of 64 rows and a B tile wider than N.
    if (pairs_128) {
      configs.push_back(wgmma_config(2, 256, 4, 1, 1, 2));
      configs.push_back(wgmma_config(2, 128, 2, 2, 1, 2));
    }
    if (pairs_64) configs.push_back(wgmma_config(1, 128, 3, 1, 1, 2));
    for (const tune::Config& cfg : configs) {
      INFO(c.op.inputs[0].dtype << ", config " << cfg.to_string());
      REQUIRE(space.broken_rules(cfg).empty());
      auto scheduled = t->build(ctx, cfg);
      REQUIRE(scheduled.ok());
      ir::Module m{"wg", ctx.target, {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
      auto source = cuda::emit_cuda_source(m);
      REQUIRE(source.ok());
      const std::string n = std::to_string(cfg["block_n"]);
      CHECK_THAT(*source, Catch::Contains("loom_wgmma_m64n" + n + "k16_"));
      CHECK_THAT(*source, Catch::Contains("loom_fence_proxy_async()"));
      const bool with_tma = cfg["tma"] == 1;
      if (with_tma) {
        CHECK_THAT(*source, Catch::Contains("LOOM_TENSOR_MAP_PARAM("));
        CHECK_THAT(*source, !Catch::Contains("loom_cp_async_16("));
      }
      if (have_nvrtc()) {
        auto compiled = cuda::compile_module(m, 90);
        INFO(compiled.status().ToString());
        REQUIRE(compiled.ok());
        CHECK_THAT(compiled->ptx, Catch::Contains(".target sm_90a"));
        CHECK_THAT(compiled->ptx,
                   Catch::Contains("wgmma.mma_async.sync.aligned.m64n" + n + "k16.f32"));
        CHECK_THAT(compiled->ptx, Catch::Contains("wgmma.fence.sync.aligned"));
        CHECK_THAT(compiled->ptx, Catch::Contains("wgmma.commit_group.sync.aligned"));
        CHECK_THAT(compiled->ptx, Catch::Contains("wgmma.wait_group.sync.aligned 0"));
        CHECK_THAT(compiled->ptx, Catch::Contains("fence.proxy.async.shared::cta"));
        // A cluster's blocks copy half of B each to both, release stages in both, and meet
        // once their barriers are initialised and before they exit.
        const bool clustered = cfg["cluster"] == 2;
        for (const char* cluster_ptx :
             {".reqnctapercluster 2, 1, 1", "multicast::cluster", "mapa.shared::cluster.u32",
              "mbarrier.arrive.release.cluster.shared::cluster.b64", "barrier.cluster.arrive",
              "barrier.cluster.wait", "fence.mbarrier_init.release.cluster"})
          CHECK((compiled->ptx.find(cluster_ptx) != std::string::npos) == clustered);
        if (with_tma) {
          CHECK(compiled->kernels[0].tensor_maps.size() == 2);  // A, and B's atoms
          CHECK_THAT(compiled->ptx, Catch::Contains("cp.async.bulk.tensor.3d.shared::cluster.global"));
          CHECK_THAT(compiled->ptx, Catch::Contains("mbarrier.try_wait.parity.shared::cta.b64"));
          CHECK_THAT(compiled->ptx, Catch::Contains("mbarrier.arrive.expect_tx.shared::cta.b64"));
          CHECK_THAT(compiled->ptx, Catch::Contains("wgmma.wait_group.sync.aligned 1"));
          const bool shifted = cfg["warpgroups"] == 2 && cfg["split_k"] == 1;
          CHECK((compiled->ptx.find("setmaxnreg.inc.sync.aligned.u32 232") != std::string::npos) ==
                shifted);
          // With registers shifted, the launch bounds also fix one block per SM, so that ptxas
          // knows the register count at entry and keeps the setmaxnreg instructions.
          CHECK((compiled->ptx.find(".minnctapersm 1") != std::string::npos) == shifted);
        }
        // The accumulators stay in registers: no local memory.
        CHECK_THAT(compiled->ptx, !Catch::Contains("ld.local") && !Catch::Contains("st.local"));
        // Each lane's two adjacent columns of C are one 4-byte store where N is even, else two.
        const bool pairs = c.b.back() % 2 == 0;
        CHECK((compiled->ptx.find("st.global.v2.u16") != std::string::npos) == pairs);
        CHECK((compiled->ptx.find("st.global.u16") != std::string::npos) == !pairs);
      }
      std::vector<Kernel> kernels{{reference_task(*def, c.op, "wg"),
                                   {loom::testing::random_array(c.op.inputs[0].dtype, c.a),
                                    loom::testing::random_array(c.op.inputs[1].dtype, c.b)},
                                   c.op.rtol,
                                   c.op.atol}};
      if (cuda::Driver* gpu = sm90_or_null("a wgmma kernel"))
        run_and_compare(gpu, m, kernels);
      else
        emulate_and_compare(m, kernels);
    }
  }
  // Not on sm_80.
  CHECK_FALSE(t->applies(context_of(cases[0].op, Target::cuda(80), "old")));

  // A convolution is the GEMM W[o][k] X[n][k][pixel] per image: the weights as A, the image's
  // windows as B (gathered element by element; a 1x1 stride-1 one reads the image as it is,
  // with cp.async).
  const OpDef* conv_def = OpRegistry::global().find("conv2d");
  const ScheduleTemplate* conv_t = &template_named("conv2d", "cuda_wgmma_conv2d");
  auto conv = [&](std::vector<int64_t> x, std::vector<int64_t> w, ops::Conv2dAttrs attrs) {
    auto out = conv_def->infer({typed(f16, x), typed(f16, w)}, attrs);
    REQUIRE(out.ok());
    return OpCase{"conv2d", {typed(f16, x), typed(f16, w)}, *out,
                  std::make_shared<ops::Conv2dAttrs>(attrs), 2e-3, 2e-3};
  };
  ops::Conv2dAttrs padded;
  padded.pad_top = padded.pad_bottom = padded.pad_left = padded.pad_right = 1;
  padded.stride_w = 2;
  struct ConvCase {
    OpCase op;
    std::vector<int64_t> x, w;
  };
  for (const ConvCase& cc : {ConvCase{conv({2, 40, 4, 6}, {72, 40, 1, 1}, {}), {2, 40, 4, 6},
                                      {72, 40, 1, 1}},
                             ConvCase{conv({2, 5, 9, 11}, {13, 5, 3, 3}, padded), {2, 5, 9, 11},
                                      {13, 5, 3, 3}}}) {
    const TemplateContext ctx = context_of(cc.op, Target::cuda(90), "conv");
    REQUIRE(conv_t->applies(ctx));
    // A 1x1 stride-1 conv reads the image as it is: TMA copies both operands (K = 40 channels
    // and 24 pixels, rows of 16-byte multiples); a gathered window cannot be copied by TMA.
    const bool pointwise = cc.w[2] == 1;
    const tune::Space conv_space = conv_t->space(ctx);
    CHECK(conv_space.broken_rules(wgmma_config(2, 128, 3, 1, 1)).empty() == pointwise);
    std::vector<tune::Config> conv_configs = {conv_space.default_config(), wgmma_config(2, 64, 3)};
    if (pointwise) conv_configs.push_back(wgmma_config(2, 128, 3, 1, 1));
    for (const tune::Config& cfg : conv_configs) {
      INFO("conv " << cc.w[2] << "x" << cc.w[3] << ", config " << cfg.to_string());
      auto scheduled = conv_t->build(ctx, cfg);
      REQUIRE(scheduled.ok());
      ir::Module m{"conv", ctx.target,
                   {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
      if (have_nvrtc()) compile_and_check(m, 90);
      std::vector<Kernel> kernels{{reference_task(*conv_def, cc.op, "conv"),
                                   {loom::testing::random_array(f16, cc.x),
                                    loom::testing::random_array(f16, cc.w)},
                                   2e-3,
                                   2e-3}};
      if (cuda::Driver* gpu = sm90_or_null("a wgmma conv kernel"))
        run_and_compare(gpu, m, kernels);
      else
        emulate_and_compare(m, kernels);
    }
  }
}

// Persistent blocks: as many as the SMs hold at once, each walking tiles, its stages' phases
// running on from tile to tile. Targets assuming 1 or 2 SMs make every block walk several
// tiles (tails in M, N and K, which TMA fills with zeros), with and without clusters and
// shifted registers.
TEST_CASE(
    "CUDA templates: persistent warpgroup GEMM blocks walk several tiles and match the "
    "reference",
    "[cuda][cuda_templates]") {
  auto none = std::make_shared<loom::NoAttrs>();
  const DType f16 = DType::f16();
  const OpDef* def = OpRegistry::global().find("matmul");
  const ScheduleTemplate* t = &template_named("matmul", "cuda_wgmma_gemm");
  // Unsplit, TMA by default.
  auto config = [](int64_t warpgroups, int64_t block_n, int64_t stages, int64_t cluster,
                   int64_t persistent, int64_t tma = 1) {
    return wgmma_config(warpgroups, block_n, stages, 1, tma, cluster, persistent);
  };
  const OpCase op{"matmul",
                  {typed(f16, {200, 200}), typed(f16, {200, 200})},
                  typed(f16, {200, 200}),
                  none,
                  2e-3,
                  2e-3};
  struct Run {
    tune::Config config;
    int sms;
    int64_t blocks;  // the persistent grid
    int per_sm;      // the blocks an SM holds, which the launch bounds promise
  };
  // 1 x 64 x 2: 16 tiles, 3 blocks an SM (registers), so 6, 5 and 5 tiles of 4 slices through
  // 2 stages. 1 x 128 x 3 in pairs: 4 items (2 of M, 2 of N), one cluster. 2 x 256 x 4 with
  // shifted registers: 2 tiles, one block. 2 x 128 x 2 in pairs: 2 items, one cluster.
  const std::vector<Run> runs = {{config(1, 64, 2, 1, 1), 1, 3, 3},
                                 {config(1, 128, 3, 2, 1), 1, 2, 2},
                                 {config(2, 256, 4, 1, 1), 1, 1, 1},
                                 {config(2, 128, 2, 2, 1), 1, 2, 1},
                                 {config(1, 64, 2, 1, 1), 2, 6, 3}};
  for (const Run& run : runs) {
    INFO("config " << run.config.to_string() << ", " << run.sms << " SMs");
    const TemplateContext ctx = context_of(op, Target::cuda(90).set_sm_count(run.sms), "pw");
    const tune::Space space = t->space(ctx);
    REQUIRE(space.broken_rules(run.config).empty());
    auto scheduled = t->build(ctx, run.config);
    REQUIRE(scheduled.ok());
    ir::Module m{"pw", ctx.target, {loom::passes::lower_scheduled(scheduled->func, ctx.target)}};
    std::vector<cuda::KernelInfo> infos;
    auto source = cuda::emit_cuda_source(m, &infos);
    REQUIRE(source.ok());
    REQUIRE(infos.size() == 1);
    const ir::IntImm* grid = infos[0].grid[0].as<ir::IntImm>();
    REQUIRE(grid);
    CHECK(grid->value == run.blocks);
    CHECK_THAT(*source, Catch::Contains("__launch_bounds__(" +
                                        std::to_string(run.config["warpgroups"] * 128 + 128) +
                                        ", " + std::to_string(run.per_sm) + ")"));
    if (have_nvrtc()) {
      auto compiled = cuda::compile_module(m, 90);
      INFO(compiled.status().ToString());
      REQUIRE(compiled.ok());
      CHECK_THAT(compiled->ptx, Catch::Contains(".minnctapersm " + std::to_string(run.per_sm)));
      CHECK_THAT(compiled->ptx, Catch::Contains("wgmma.wait_group.sync.aligned 1"));
      CHECK_THAT(compiled->ptx, !Catch::Contains("ld.local") && !Catch::Contains("st.local"));
    }
    std::vector<Kernel> kernels{{reference_task(*def, op, "pw"),
                                 {loom::testing::random_array(f16, {200, 200}),
                                  loom::testing::random_array(f16, {200, 200})},
                                 op.rtol,
                                 op.atol}};
    if (cuda::Driver* gpu = sm90_or_null("a persistent wgmma kernel"))
      run_and_compare(gpu, m, kernels);
    else
      emulate_and_compare(m, kernels);
  }
  // The rule: TMA, unsplit, and more tiles than the SMs hold at once.
  const TemplateContext one_sm = context_of(op, Target::cuda(90).set_sm_count(1), "pw");
  const tune::Space space = t->space(one_sm);
  CHECK_FALSE(space.broken_rules(config(1, 64, 2, 1, 1, 0)).empty());  // cp.async
  tune::Config split = config(1, 64, 2, 1, 1);
  split.set("split_k", 2);
  CHECK_FALSE(space.broken_rules(split).empty());
  // 2 x 256 x 4 in pairs: one item, as many as one cluster takes.
  CHECK_FALSE(space.broken_rules(config(2, 256, 4, 2, 1)).empty());
  // On 132 SMs every tile has a block of its own: no persistent launch.
  const tune::Space wide = t->space(context_of(op, Target::cuda(90), "pw"));
  CHECK_FALSE(wide.broken_rules(config(1, 64, 2, 1, 1)).empty());
  CHECK(wide.broken_rules(config(1, 64, 2, 1, 0)).empty());
  // kFast measures both where persistent blocks apply.
  auto persistent_measured = [](const tune::Space& sp) {
    const std::vector<tune::Config> pruned = sp.pruned();
    return std::count_if(pruned.begin(), pruned.end(),
                         [](const tune::Config& p) { return p["persistent"] == 1; });
  };
  CHECK(persistent_measured(space) > 0);
  // On 132 SMs: f16 4096^3 (512 tiles of 128 x 256) measures them; a BERT-base matmul at
  // sequence 128 (at most 96 tiles) does not, so its kFast tuning measures no more candidates.
  auto on_132 = [&](int64_t m, int64_t k, int64_t n) {
    const OpCase big{"matmul", {typed(f16, {m, k}), typed(f16, {k, n})}, typed(f16, {m, n}), none};
    return t->space(context_of(big, Target::cuda(90), "big"));
  };
  CHECK(persistent_measured(on_132(4096, 4096, 4096)) > 0);
  CHECK(persistent_measured(on_132(128, 768, 3072)) == 0);
  // kFast measures TMA tiles in clusters of two where they pair up, and alone where a limit
  // keeps clusters out (as gpu_check's first fallback does).
  auto tma_clusters = [](const tune::Space& sp) {
    std::map<int64_t, int> n;
    for (const tune::Config& c : sp.pruned())
      if (c["tma"] == 1) ++n[c["cluster"]];
    return n;
  };
  tune::Space big = on_132(4096, 4096, 4096);
  CHECK(tma_clusters(big)[2] > 0);
  CHECK(tma_clusters(big)[1] == 0);
  REQUIRE(big.limit("cluster", {1}).ok());
  CHECK(tma_clusters(big)[1] > 0);
}

TEST_CASE(
    "CUDA target: an SM count set on the target is part of its fingerprint, and the "
    "spaces assume it",
    "[cuda][cuda_templates]") {
  Target t = Target::cuda(90);
  CHECK(t.sm_count() == 0);
  CHECK(t.fingerprint() == "cuda:sm_90");
  t.set_sm_count(114);
  CHECK(t.sm_count() == 114);
  CHECK(t.fingerprint() == "cuda:sm_90:sms=114");
  CHECK_THAT(t.to_string(), Catch::Contains("114 SMs assumed"));
  t.set_sm_count(0);  // not a count: ignored
  CHECK(t.sm_count() == 114);
  // A BERT-base matmul (M 128, N 768, K 3072: 24 tiles of 64 x 64): on 132 SMs the default
  // takes the smallest tile split 4 ways to fill them; on 4, 128 x 128 tiles fill them unsplit.
  auto none = std::make_shared<loom::NoAttrs>();
  const DType f16 = DType::f16();
  const OpCase op{
      "matmul", {typed(f16, {128, 3072}), typed(f16, {3072, 768})}, typed(f16, {128, 768}), none};
  const ScheduleTemplate& wg = template_named("matmul", "cuda_wgmma_gemm");
  const tune::Config wide = wg.space(context_of(op, Target::cuda(90), "sms")).default_config();
  const tune::Config narrow =
      wg.space(context_of(op, Target::cuda(90).set_sm_count(4), "sms")).default_config();
  CHECK(wide["split_k"] == 4);
  CHECK(wide["warpgroups"] == 1);
  CHECK(narrow["split_k"] == 1);
  CHECK(narrow["warpgroups"] == 2);
  CHECK(narrow["block_n"] == 128);
}

// Probabilities are rounded to the 16-bit type before they weight V, and the output once.
TEST_CASE("CUDA templates: fused attention (online softmax on tensor cores) compiles for sm_80 and "
          "sm_90 and matches the reference",
          "[cuda][cuda_templates]") {
  auto attention = [](DType t, std::vector<int64_t> q, std::vector<int64_t> kt,
                      std::vector<int64_t> v, double scale) {
    auto attrs = std::make_shared<ops::AttentionAttrs>();
    attrs->scale = scale;
    const OpDef* def = OpRegistry::global().find("attention");
    REQUIRE(def);
    auto out = def->infer({typed(t, q), typed(t, kt), typed(t, v)}, *attrs);
    INFO(out.status().ToString());
    REQUIRE(out.ok());
    const double tol = t == DType::f16() ? 4e-3 : 2e-2;
    return OpCase{"attention", {typed(t, q), typed(t, kt), typed(t, v)}, *out, attrs, tol, tol};
  };
  SECTION("f16, keys and queries not multiples of the tiles, E != D") {
    check_op(attention(DType::f16(), {2, 37, 64}, {2, 64, 45}, {2, 45, 32}, 0.125),
             {"loom_mma_m16n8k16_f16(", "__shfl_xor_sync", "expf(",
              "*reinterpret_cast<loom_vec<__half, 2>*>("});
  }
  SECTION("bf16, heads as a second batch dim") {
    check_op(attention(DType::bf16(), {1, 3, 20, 32}, {1, 3, 32, 70}, {1, 3, 70, 16}, 0.3),
             {"loom_mma_m16n8k16_bf16(", "*reinterpret_cast<loom_vec<__nv_bfloat16, 2>*>("});
  }
  auto masked = [](DType t, std::vector<int64_t> q, std::vector<int64_t> kt, std::vector<int64_t> v,
                   std::vector<int64_t> mask, double scale) {
    auto attrs = std::make_shared<ops::AttentionAttrs>();
    attrs->scale = scale;
    const OpDef* def = OpRegistry::global().find("attention");
    auto out = def->infer({typed(t, q), typed(t, kt), typed(t, v), typed(t, mask)}, *attrs);
    INFO(out.status().ToString());
    REQUIRE(out.ok());
    const double tol = t == DType::f16() ? 4e-3 : 2e-2;
    return OpCase{"attention", {typed(t, q), typed(t, kt), typed(t, v), typed(t, mask)}, *out,
                  attrs, tol, tol, 4};
  };
  SECTION("f16 with a padding mask [B, 1, 1, T] (one value per batch and key)") {
    check_op(masked(DType::f16(), {2, 3, 37, 32}, {2, 3, 32, 45}, {2, 3, 45, 32}, {2, 1, 1, 45},
                    0.17),
             {"_mask["});
  }
  SECTION("bf16 with a mask [S, T] shared by every batch and head") {
    check_op(masked(DType::bf16(), {2, 19, 16}, {2, 16, 70}, {2, 70, 16}, {19, 70}, 0.25),
             {"_mask["});
  }
  SECTION("a mask that does not broadcast to the scores, or of another type, is refused") {
    const OpDef* def = OpRegistry::global().find("attention");
    const ops::AttentionAttrs attrs;
    const DType f16 = DType::f16();
    for (const TensorType& mask : {typed(f16, {2, 1, 9}), typed(f16, {3, 1, 8}),
                                   typed(DType::f32(), {2, 1, 8})}) {
      auto out = def->infer({typed(f16, {2, 5, 16}), typed(f16, {2, 16, 8}),
                             typed(f16, {2, 8, 16}), mask},
                            attrs);
      CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
    }
  }
  SECTION("f32 and head dims not multiples of 16 take no template") {
    const ScheduleTemplate& t = template_named("attention", "cuda_tensor_core_attention");
    auto f16 = attention(DType::f16(), {2, 8, 24}, {2, 24, 8}, {2, 8, 16}, 1.0);
    CHECK_FALSE(t.applies(context_of(f16, Target::cuda(90), "a")));
    auto f32 = attention(DType::f32(), {2, 8, 16}, {2, 16, 8}, {2, 8, 16}, 1.0);
    CHECK_FALSE(t.applies(context_of(f32, Target::cuda(90), "a")));
  }
}

TEST_CASE("CUDA templates: direct and depthwise conv2d compile for sm_80 and sm_90",
          "[cuda][cuda_templates]") {
  // The output type comes from the operator's own shape rule.
  auto conv = [](std::vector<int64_t> x, std::vector<int64_t> w, ops::Conv2dAttrs attrs) {
    const OpDef* def = OpRegistry::global().find("conv2d");
    REQUIRE(def);
    auto out = def->infer({f32(x), f32(w)}, attrs);
    REQUIRE(out.ok());
    return OpCase{"conv2d", {f32(x), f32(w)}, *out, std::make_shared<ops::Conv2dAttrs>(attrs), 1e-4,
                  1e-4};
  };
  SECTION("strided, asymmetric padding") {
    ops::Conv2dAttrs a;
    a.stride_h = 2;
    a.stride_w = 2;
    a.pad_top = 1;
    a.pad_left = 1;
    a.pad_right = 2;
    check_op(conv({2, 5, 13, 11}, {7, 5, 3, 3}, a), {"fmaf("});
  }
  SECTION("grouped and dilated") {
    ops::Conv2dAttrs a;
    a.groups = 2;
    a.dilation_h = 2;
    a.dilation_w = 2;
    a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 2;
    check_op(conv({1, 6, 9, 10}, {4, 3, 3, 2}, a));
  }
  SECTION("depthwise") {
    ops::Conv2dAttrs a;
    a.groups = 8;
    a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 2;
    check_op(conv({1, 8, 17, 19}, {8, 1, 5, 5}, a));
  }
}

TEST_CASE("CUDA templates: conv2d as an implicit GEMM on tensor cores compiles for sm_80 and "
          "sm_90 and matches the reference",
          "[cuda][cuda_templates]") {
  auto conv = [](DType t, std::vector<int64_t> x, std::vector<int64_t> w, ops::Conv2dAttrs attrs) {
    const OpDef* def = OpRegistry::global().find("conv2d");
    REQUIRE(def);
    auto out = def->infer({typed(t, x), typed(t, w)}, attrs);
    REQUIRE(out.ok());
    const double tol = t == DType::f16() ? 2e-3 : 1e-2;
    return OpCase{"conv2d", {typed(t, x), typed(t, w)}, *out,
                  std::make_shared<ops::Conv2dAttrs>(attrs), tol, tol, 5};
  };
  SECTION("f16 3x3, padding 1, odd channels and sizes") {
    ops::Conv2dAttrs a;
    a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 1;
    check_op(conv(DType::f16(), {2, 5, 9, 11}, {13, 5, 3, 3}, a),
             {"loom_mma_m16n8k16_f16(", "loom_cp_async_16("});
  }
  SECTION("f16 strided, asymmetric padding, dilated") {
    ops::Conv2dAttrs a;
    a.stride_h = 2;
    a.stride_w = 2;
    a.pad_top = 1;
    a.pad_left = 2;
    a.pad_right = 1;
    a.dilation_w = 2;
    check_op(conv(DType::f16(), {1, 16, 13, 12}, {24, 16, 3, 3}, a));
  }
  SECTION("f16 1x1 reads the input with cp.async") {
    check_op(conv(DType::f16(), {2, 24, 4, 6}, {40, 24, 1, 1}, {}),
             {"loom_cp_async_16(", "loom_mma_m16n8k16_f16("});
  }
  SECTION("bf16 7x7 stride 2, padding 3 (a stem)") {
    ops::Conv2dAttrs a;
    a.stride_h = a.stride_w = 2;
    a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 3;
    check_op(conv(DType::bf16(), {1, 3, 15, 17}, {16, 3, 7, 7}, a), {"loom_mma_m16n8k16_bf16("});
  }
}

TEST_CASE(
    "CUDA templates: NHWC convolutions with HWIO weights as implicit GEMMs (mma.sync and "
    "wgmma) compile and match the reference",
    "[cuda][cuda_templates]") {
  using loom::LayoutStep;
  const DType f16 = DType::f16();
  const OpDef* def = OpRegistry::global().find("conv2d");
  REQUIRE(def);
  struct ConvCase {
    std::string name;
    std::vector<int64_t> x, w;
    ops::Conv2dAttrs attrs;
    bool chunks;  // channels in eights: cp.async gathers the windows
  };
  ops::Conv2dAttrs padded;
  padded.pad_top = padded.pad_bottom = padded.pad_left = padded.pad_right = 1;
  ops::Conv2dAttrs strided;
  strided.stride_h = strided.stride_w = 2;
  strided.pad_top = 1;
  strided.pad_left = 2;
  strided.pad_right = 1;
  strided.dilation_w = 2;
  const std::vector<ConvCase> cases = {
      {"3x3, padding 1, odd sizes", {2, 16, 9, 11}, {32, 16, 3, 3}, padded, true},
      {"strided, asymmetric padding, dilated", {1, 8, 13, 12}, {40, 8, 3, 3}, strided, true},
      {"1x1 reads the image as a matrix", {2, 24, 5, 7}, {40, 24, 1, 1}, {}, true},
      {"5 channels, gathered element by element; 15 output channels",
       {1, 5, 7, 9},
       {15, 5, 3, 3},
       padded,
       false},
  };
  // The reference on the kernel's own buffers: the image [N, H, W, C], the weights
  // [KH, KW, C, O], the output [N, OH, OW, O].
  auto reference = [&](const ConvCase& c, const TensorType& out, const std::string& name) {
    const std::vector<int64_t>&x = c.x, &w = c.w;
    auto e = [](int64_t v) { return ir::Expr(v); };
    te::Tensor xp = te::placeholder(name + "_x", f16, {e(x[0]), e(x[2]), e(x[3]), e(x[1])});
    te::Tensor wp = te::placeholder(name + "_w", f16, {e(w[2]), e(w[3]), e(w[1]), e(w[0])});
    te::Tensor xl =
        te::compute(name + "_nchw", {e(x[0]), e(x[1]), e(x[2]), e(x[3])},
                    [&](const std::vector<ir::Var>& i) { return xp(i[0], i[2], i[3], i[1]); });
    te::Tensor wl =
        te::compute(name + "_oihw", {e(w[0]), e(w[1]), e(w[2]), e(w[3])},
                    [&](const std::vector<ir::Var>& i) { return wp(i[2], i[3], i[1], i[0]); });
    const std::vector<ir::Expr> shape = shape_exprs(out.shape);
    te::Tensor y = def->compute({xl, wl}, c.attrs, shape, name + "_conv");
    te::Tensor yp =
        te::compute(name, {shape[0], shape[2], shape[3], shape[1]},
                    [&](const std::vector<ir::Var>& i) { return y(i[0], i[3], i[1], i[2]); });
    auto task = te::Task::make(name, {xp, wp}, {yp});
    REQUIRE(task.ok());
    return *task;
  };
  for (const ConvCase& c : cases) {
    INFO(c.name);
    auto out = def->infer({typed(f16, c.x), typed(f16, c.w)}, c.attrs);
    REQUIRE(out.ok());
    OpCase op{"conv2d", {typed(f16, c.x), typed(f16, c.w)},
              *out,     std::make_shared<ops::Conv2dAttrs>(c.attrs),
              2e-3,     2e-3};
    for (int sm : {80, 90}) {
      INFO("sm_" << sm);
      const ScheduleTemplate& t =
          template_named("conv2d", sm == 90 ? "cuda_wgmma_conv2d" : "cuda_tensor_core_conv2d");
      TemplateContext ctx = context_of(op, Target::cuda(sm), "nhwc");
      // Offered for the layout assignment where the channels come in eights.
      const loom::LayoutOptions offered = t.layouts(ctx);
      if (c.chunks) {
        const std::vector<std::vector<LayoutStep>> images = {loom::channels_last(),
                                                             loom::channels_blocked(8)};
        REQUIRE(offered.inputs.size() == 2);
        CHECK(offered.inputs[0] == images);
        CHECK(offered.inputs[1] == std::vector<std::vector<LayoutStep>>{loom::weights_hwio()});
        CHECK(offered.output == images);
      } else {
        CHECK(offered.inputs.empty());
      }
      // NCHW16c where 16 divides the channels and the output channels (the first case) only.
      ctx.inputs[0].layout = ctx.output.layout = loom::channels_blocked(16);
      ctx.inputs[1].layout = loom::weights_hwio();
      CHECK(t.applies(ctx) == (c.x[1] % 16 == 0 && c.w[0] % 16 == 0));
      // Image and output in one layout, with the channels innermost.
      ctx.output.layout = loom::channels_last();
      CHECK_FALSE(t.applies(ctx));
      ctx.inputs[0].layout = ctx.output.layout = loom::channels_blocked(3);
      CHECK_FALSE(t.applies(ctx));
      ctx.inputs[0].layout = ctx.output.layout =
          loom::Layout::row_major({ir::Expr(int64_t{1}), ir::Expr(int64_t{1}), ir::Expr(int64_t{1}),
                                   ir::Expr(int64_t{1})})
              .reorder({0, 3, 2, 1})
              .steps();
      CHECK_FALSE(t.applies(ctx));
      ctx.inputs[1].layout.clear();
      ctx.inputs[0].layout = ctx.output.layout = loom::channels_last();
      // NHWC takes HWIO weights only.
      CHECK_FALSE(t.applies(ctx));
      ctx.inputs[1].layout = loom::weights_hwio();
      REQUIRE(t.applies(ctx));
      const tune::Space space = t.space(ctx);
      ir::Module m{"nhwc_sm" + std::to_string(sm), ctx.target, {}};
      std::vector<Kernel> kernels;
      for (const tune::Config& config : sample_configs(space, 4)) {
        INFO("config " << config.to_string());
        ctx.name = "nhwc_" + std::to_string(m.funcs.size());
        auto scheduled = t.build(ctx, config);
        INFO(scheduled.status().ToString());
        REQUIRE(scheduled.ok());
        m.funcs.push_back(loom::passes::lower_scheduled(scheduled->func, ctx.target));
        kernels.push_back({reference(c, *out, ctx.name),
                           {loom::testing::random_array(f16, {c.x[0], c.x[2], c.x[3], c.x[1]}),
                            loom::testing::random_array(f16, {c.w[2], c.w[3], c.w[1], c.w[0]})},
                           2e-3,
                           2e-3});
      }
      auto source = cuda::emit_cuda_source(m);
      REQUIRE(source.ok());
      // The image's windows in 16-byte chunks where the channels allow.
      if (c.chunks) CHECK_THAT(*source, Catch::Contains("loom_cp_async_16("));
      // A lane's two adjacent output channels are one 4-byte store where their count is even.
      CHECK((source->find("reinterpret_cast<loom_vec<__half, 2>*>(&nhwc_0_y[") !=
             std::string::npos) == (c.w[0] % 2 == 0));
      if (!have_nvrtc()) continue;
      compile_and_check(m, sm);
      cuda::Driver* gpu =
          sm == 90 ? sm90_or_null("NHWC wgmma convs") : gpu_or_null("NHWC mma.sync convs");
      if (gpu)
        run_and_compare(gpu, m, kernels);
      else
        emulate_and_compare(m, kernels);
    }
  }
}

TEST_CASE("CUDA templates: the SIMT matmul space derives from the device",
          "[cuda][cuda_templates]") {
  const OpDef* def = OpRegistry::global().find("matmul");
  REQUIRE(def);
  for (int sm : {80, 90}) {
    TemplateContext ctx;
    ctx.target = Target::cuda(sm);
    ctx.name = "space";
    ctx.inputs = {f32({4096, 4096}), f32({4096, 4096})};
    ctx.output = f32({4096, 4096});
    loom::NoAttrs none;
    ctx.attrs = &none;
    ctx.constant_inputs = {false, false};
    const ScheduleTemplate* t = nullptr;
    for (const ScheduleTemplate& candidate : def->templates) {
      if (candidate.name == "cuda_simt_gemm") t = &candidate;
      // Templates apply to their own kind of target only, the tensor-core one to f16/bf16 only.
      CHECK(candidate.applies(ctx) == (candidate.name == "cuda_simt_gemm"));
    }
    REQUIRE(t);
    tune::Space space = t->space(ctx);
    const size_t valid = space.all().size();
    INFO("valid configs: " << valid);
    // A few hundred candidates, the same for every size; the big default tile for a big GEMM.
    CHECK(valid >= 100);
    CHECK(valid <= 600);
    CHECK(space.default_config()["warps_m"] * space.default_config()["warps_n"] == 8);
    CHECK(!space.pruned().empty());
    // A big GEMM's tiles fill the SMs: no split of K is valid.
    for (const tune::Config& c : space.all()) CHECK(c["split_k"] == 1);
    // A small GEMM gets a smaller default tile (more blocks for the SMs), split along K. Its
    // space is the big one's (the same tiles from the same device), with split-K besides.
    ctx.inputs = {f32({64, 64}), f32({64, 64})};
    ctx.output = f32({64, 64});
    tune::Space small = t->space(ctx);
    std::vector<tune::Config> unsplit;
    for (tune::Config c : small.all())
      if (c["split_k"] == 1) unsplit.push_back(std::move(c));
    CHECK(unsplit == space.all());
    CHECK(small.all().size() > valid);
    CHECK(small.default_config()["inner_n"] == 2);
    CHECK(small.default_config()["split_k"] > 1);
  }
}

TEST_CASE("CUDA templates: injective tasks as grid-stride kernels compile for sm_80 and sm_90",
          "[cuda][cuda_templates]") {
  // y = a * transpose(t) + c (c broadcast over rows), z = max(a, 0) - 1: 17 x 31 elements.
  const bool nvrtc = have_nvrtc();
  for (int sm : {80, 90}) {
    const Target target = Target::cuda(sm);
    tune::Space space = ops::injective_cuda_space(target);
    ir::Module m{"injective_sm" + std::to_string(sm), target, {}};
    std::vector<Kernel> kernels;
    for (const tune::Config& config : sample_configs(space)) {
      INFO("config " << config.to_string());
      const std::string name = "injective_" + std::to_string(m.funcs.size());
      te::Tensor a = te::placeholder(name + "_a", DType::f32(), {17, 31});
      te::Tensor t = te::placeholder(name + "_t", DType::f32(), {31, 17});
      te::Tensor c = te::placeholder(name + "_c", DType::f32(), {1, 31});
      te::Tensor y = te::compute(name + "_y", {17, 31}, [&](const std::vector<ir::Var>& i) {
        return a(i[0], i[1]) * t(i[1], i[0]) + c(0, i[1]);
      });
      te::Tensor z = te::compute(name + "_z", {17, 31}, [&](const std::vector<ir::Var>& i) {
        return ir::max(a(i[0], i[1]), 0.0f) - 1.0f;
      });
      auto task = te::Task::make(name, {a, t, c}, {y, z});
      REQUIRE(task.ok());
      auto f = ops::injective_cuda_kernel(*task, target, config);
      INFO(f.status().ToString());
      REQUIRE(f.ok());
      m.funcs.push_back(loom::passes::lower_scheduled(*f, target));
      using loom::testing::random_array;
      kernels.push_back(
          {*task,
           {random_array(DType::f32(), {17, 31}), random_array(DType::f32(), {31, 17}),
            random_array(DType::f32(), {1, 31})}});
    }
    auto source = cuda::emit_cuda_source(m);
    INFO(source.status().ToString());
    REQUIRE(source.ok());
    CHECK_THAT(*source, Catch::Contains("#pragma unroll"));
    if (!nvrtc) continue;
    compile_and_check(m, sm);
    if (sm != 90) continue;
    if (cuda::Driver* gpu = gpu_or_null("injective kernels"))
      run_and_compare(gpu, m, kernels);
    else
      emulate_and_compare(m, kernels);
  }
}

TEST_CASE("CUDA templates: the injective lowering refuses reductions and symbolic shapes",
          "[cuda][cuda_templates]") {
  const Target target = Target::cuda(90);
  const tune::Config config = ops::injective_cuda_space(target).default_config();
  te::Tensor x = te::placeholder("x", DType::f32(), {5, 7});
  ir::IterVar r = te::reduce_axis(7, "r");
  te::Tensor s = te::compute(
      "s", {5}, [&](const std::vector<ir::Var>& i) { return te::sum(x(i[0], r.var), {r}); });
  auto reduction = te::Task::make("reduction", {x}, {s});
  REQUIRE(reduction.ok());
  auto f = ops::injective_cuda_kernel(*reduction, target, config);
  REQUIRE(!f.ok());
  CHECK_THAT(std::string(f.status().message()), Catch::Contains("not injective"));

  ir::Var n("n");
  te::Tensor v = te::placeholder("v", DType::f32(), {n});
  te::Tensor w =
      te::compute("w", {n}, [&](const std::vector<ir::Var>& i) { return v(i[0]) * 2.0f; });
  auto symbolic = te::Task::make("symbolic", {v}, {w});
  REQUIRE(symbolic.ok());
  auto g = ops::injective_cuda_kernel(*symbolic, target, config);
  REQUIRE(!g.ok());
  CHECK_THAT(std::string(g.status().message()), Catch::Contains("static shapes"));
}

TEST_CASE("CUDA templates: post-scheduling fusion puts an epilogue into the SIMT matmul",
          "[cuda][cuda_templates][fusion]") {
  // C = A [61, 67] x B [67, 53], then relu(C + bias[col]): the epilogue goes around the
  // template's output stores exactly as on the CPU (passes::fuse_epilogue is target-free).
  const OpDef* def = OpRegistry::global().find("matmul");
  REQUIRE(def);
  const bool nvrtc = have_nvrtc();
  for (int sm : {80, 90}) {
    TemplateContext ctx;
    ctx.target = Target::cuda(sm);
    ctx.inputs = {f32({61, 67}), f32({67, 53})};
    ctx.output = f32({61, 53});
    ctx.constant_inputs = {false, false};
    ctx.name = "fused_matmul";
    const ScheduleTemplate* t = nullptr;
    for (const ScheduleTemplate& c : def->templates)
      if (c.target_kind == Target::Kind::kCuda && c.applies(ctx)) t = &c;
    REQUIRE(t);
    auto scheduled = t->build(ctx, t->space(ctx).default_config());
    REQUIRE(scheduled.ok());
    loom::passes::EpilogueFusion e;
    e.anchor_shape = {ir::Expr(int64_t{61}), ir::Expr(int64_t{53})};
    ir::Buffer bias = ir::Buffer::make("bias", DType::f32(), {ir::Expr(int64_t{53})});
    e.inputs = {bias};
    e.output = ir::Buffer::make("out", DType::f32(), e.anchor_shape);
    e.flat_preserving = true;
    e.output_index = [](const std::vector<ir::Expr>& j) -> std::optional<std::vector<ir::Expr>> {
      return j;
    };
    e.value = [bias](const std::vector<ir::Expr>& i, const ir::Expr& v) {
      return ir::max(v + bias.load({i[1]}), ir::Expr(0.0f));
    };
    auto fused = loom::passes::fuse_epilogue(scheduled->func, e);
    INFO(fused.status().ToString());
    REQUIRE(fused.ok());
    // Inputs A and B, then the bias, the partial view of the output, the output.
    REQUIRE(fused->buffer_params().size() == 5);
    ir::Module m{"fused_sm" + std::to_string(sm), ctx.target,
                 {loom::passes::lower_scheduled(*fused, ctx.target)}};
    auto source = cuda::emit_cuda_source(m);
    INFO(source.status().ToString());
    REQUIRE(source.ok());
    CHECK_THAT(*source, Catch::Contains("bias"));
    if (nvrtc) compile_and_check(m, sm);
  }
}
