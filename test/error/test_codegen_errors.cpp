// IR the CPU back end cannot compile gives an absl::Status naming the node, never a crash,
// and the JIT keeps working afterwards. Bad targets are refused by CpuJit::create.

#include <catch2/catch.hpp>
#include <string>

#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/stmt.hpp"
#include "loom/runtime/cpu_jit.hpp"

namespace {

using loom::DType;
namespace ir = loom::ir;
namespace runtime = loom::runtime;

runtime::CpuJit& shared_jit() {
  static std::unique_ptr<runtime::CpuJit> jit = [] {
    auto j = runtime::CpuJit::create();
    REQUIRE(j.ok());
    return std::move(*j);
  }();
  return *jit;
}

absl::Status compile_status(ir::Func f) {
  ir::Module m{"bad", loom::Target::host_cpu(), {std::move(f)}};
  return shared_jit().compile(m).status();
}

void require_error(const absl::Status& s, absl::StatusCode code, const std::string& fragment) {
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == code);
  CHECK(std::string(s.message()).find(fragment) != std::string::npos);
}

ir::Buffer buffer(const std::string& name, std::vector<ir::Expr> shape,
                  ir::MemoryScope scope = ir::MemoryScope::kGlobal) {
  return ir::Buffer::make(name, DType::f32(), std::move(shape), scope);
}

// The JIT still compiles and runs good code after a refused module.
void require_jit_still_works() {
  ir::Buffer a = buffer("a", {4});
  ir::Var i("i");
  ir::Func f{"ok",
             {a},
             ir::For::make(i, 0, 4, ir::ForKind::kSerial,
                           ir::Store::make(a, ir::cast(DType::f32(), i), {i}))};
  auto kernels = shared_jit().compile(ir::Module{"good", loom::Target::host_cpu(), {f}});
  REQUIRE(kernels.ok());
  float out[4] = {-1, -1, -1, -1};
  void* buffers[] = {out};
  (*kernels)[0](buffers, nullptr);
  CHECK(out[3] == 3.0f);
}

}  // namespace

TEST_CASE("codegen error: un-flattened two-index Load", "[codegen][error]") {
  ir::Buffer a = buffer("a", {3, 4}), b = buffer("b", {12});
  ir::Var i("i");
  ir::Stmt body =
      ir::For::make(i, 0, 3, ir::ForKind::kSerial, ir::Store::make(b, a(i, ir::Expr(0)), {i}));
  require_error(compile_status({"two_index_load", {a, b}, body}),
                absl::StatusCode::kInvalidArgument, "flattened");
  require_jit_still_works();
}

TEST_CASE("codegen error: un-flattened two-index Store", "[codegen][error]") {
  ir::Buffer a = buffer("a", {3, 4});
  ir::Var i("i");
  ir::Stmt body = ir::For::make(i, 0, 3, ir::ForKind::kSerial,
                                ir::Store::make(a, ir::Expr(1.0f), {i, ir::Expr(0)}));
  require_error(compile_status({"two_index_store", {a}, body}), absl::StatusCode::kInvalidArgument,
                "flattened");
}

TEST_CASE("codegen error: GPU loop kinds", "[codegen][error]") {
  for (ir::ForKind kind : {ir::ForKind::kGpuBlock, ir::ForKind::kGpuThread}) {
    ir::Buffer a = buffer("a", {8});
    ir::Var i("i");
    ir::Stmt body = ir::For::make(i, 0, 8, kind, ir::Store::make(a, ir::Expr(1.0f), {i}));
    require_error(compile_status({"gpu_loop", {a}, body}), absl::StatusCode::kUnimplemented,
                  ir::for_kind_name(kind));
  }
  require_jit_still_works();
}

TEST_CASE("codegen error: Reduce node", "[codegen][error]") {
  ir::Buffer a = buffer("a", {8}), out = buffer("out", {1});
  ir::Var k("k");
  ir::Expr sum =
      ir::Reduce::make(ir::ReduceKind::kSum, a(k), {ir::IterVar{k, ir::Expr(8)}}, DType::f32());
  require_error(compile_status({"reduce", {a, out}, ir::Store::make(out, sum, {ir::Expr(0)})}),
                absl::StatusCode::kInvalidArgument, "Reduce");
}

TEST_CASE("codegen error: GPU-only barrier and shared memory", "[codegen][error]") {
  ir::Buffer a = buffer("a", {8});
  require_error(compile_status({"barrier", {a}, ir::Barrier::make()}),
                absl::StatusCode::kUnimplemented, "Barrier");
  ir::Buffer shared = buffer("tile", {8}, ir::MemoryScope::kShared);
  ir::Stmt body =
      ir::Allocate::make(shared, ir::Store::make(shared, ir::Expr(1.0f), {ir::Expr(0)}));
  require_error(compile_status({"shared", {a}, body}), absl::StatusCode::kUnimplemented, "tile");
}

TEST_CASE("codegen error: unbound variables, buffers and bad parameters", "[codegen][error]") {
  ir::Buffer a = buffer("a", {8}), stray = buffer("stray", {8});
  ir::Var i("i"), free_var("free_var");
  require_error(compile_status({"free", {a}, ir::Store::make(a, ir::Expr(1.0f), {free_var})}),
                absl::StatusCode::kInvalidArgument, "free_var");
  require_error(
      compile_status({"stray", {a}, ir::Store::make(stray, ir::Expr(1.0f), {ir::Expr(0)})}),
      absl::StatusCode::kInvalidArgument, "stray");
  ir::Var f("f", DType::f32());
  require_error(compile_status({"float_scalar", {a, f}, ir::Store::make(a, f, {ir::Expr(0)})}),
                absl::StatusCode::kInvalidArgument, "scalar parameter 'f'");
  require_error(
      compile_status({"twice", {a, a}, ir::Store::make(a, ir::Expr(1.0f), {ir::Expr(0)})}),
      absl::StatusCode::kInvalidArgument, "twice");
  // A vector value stored at a scalar index is ambiguous after flattening.
  ir::Expr vec = ir::Broadcast::make(ir::Expr(1.0f), 4);
  require_error(compile_status({"lanes", {a}, ir::Store::make(a, vec, {ir::Expr(0)})}),
                absl::StatusCode::kInvalidArgument, "lanes");
  require_jit_still_works();
}

TEST_CASE("codegen error: targets CpuJit cannot run", "[codegen][error]") {
  ir::Buffer a = buffer("a", {4});
  ir::Module gpu_module{
      "gpu", loom::Target::cuda(90), {ir::Func{"f", {a}, ir::Evaluate::make(a(0))}}};
  require_error(shared_jit().compile(gpu_module).status(), absl::StatusCode::kInvalidArgument,
                "cuda");
  auto cuda = runtime::CpuJit::create(loom::Target::cuda(90));
  require_error(cuda.status(), absl::StatusCode::kInvalidArgument, "CPU");
#if defined(__x86_64__)
  auto arm = runtime::CpuJit::create(loom::Target::cpu("aarch64-unknown-linux-gnu", "generic", {}));
  require_error(arm.status(), absl::StatusCode::kInvalidArgument, "aarch64");
  auto unknown = runtime::CpuJit::create(
      loom::Target::cpu(loom::Target::host_cpu().triple(), "no-such-cpu", {}));
  require_error(unknown.status(), absl::StatusCode::kInvalidArgument, "no-such-cpu");
#endif
}

TEST_CASE("codegen error: a CUDA warp shuffle on the CPU", "[codegen][error][cuda]") {
  ir::Buffer a = buffer("a", {32});
  ir::Var i("i");
  ir::Stmt body = ir::For::make(i, 0, 32, ir::ForKind::kSerial,
                                ir::Store::make(a, ir::shfl_xor_sync(a(i), 16), {i}));
  require_error(compile_status({"warp_shuffle", {a}, body}), absl::StatusCode::kInvalidArgument,
                "shfl_xor_sync is a CUDA warp shuffle");
  require_jit_still_works();
}
