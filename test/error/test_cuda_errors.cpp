// The CUDA code generator rejects IR it cannot translate with a status naming the problem.

#include <catch2/catch.hpp>
#include <string>

#include "loom/compiler.hpp"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/runtime/cuda.hpp"

namespace {

namespace ir = loom::ir;
namespace cuda = loom::runtime::cuda;
using loom::DType;

void require_error(const ir::Func& f, absl::StatusCode code, const std::string& part) {
  ir::Module m{"bad", loom::Target::cuda(90), {f}};
  auto source = cuda::emit_cuda_source(m);
  REQUIRE(!source.ok());
  INFO(source.status().ToString());
  CHECK(source.status().code() == code);
  CHECK_THAT(std::string(source.status().message()), Catch::Contains(part));
  CHECK_THAT(std::string(source.status().message()), Catch::Contains("func 'f'"));
}

}  // namespace

TEST_CASE("CUDA codegen errors: unflattened access, bad launch extents, dynamic shared memory",
          "[cuda]") {
  ir::Var n("n"), i("i"), j("j");
  ir::Buffer a = ir::Buffer::make("a", DType::f32(), {n, n});
  // Two indices: the code generator needs flattened IR.
  require_error({"f", {a, n}, ir::Store::make(a, ir::Expr(1.0f), {ir::Expr(0), ir::Expr(0)})},
                absl::StatusCode::kInvalidArgument, "flattened");
  // A thread extent that depends on a serial loop variable cannot be a launch shape.
  ir::Buffer b = ir::Buffer::make("b", DType::f32(), {n});
  ir::Stmt inner = ir::For::make(j, ir::Expr(0), i + 1, ir::ForKind::kGpuThread,
                                 ir::Store::make(b, ir::Expr(1.0f), {j}));
  require_error({"f", {b, n}, ir::For::make(i, ir::Expr(0), n, ir::ForKind::kSerial, inner)},
                absl::StatusCode::kInvalidArgument, "depends on 'i'");
  // More than 1024 threads per block.
  require_error({"f",
                 {b, n},
                 ir::For::make(i, ir::Expr(0), ir::Expr(2048), ir::ForKind::kGpuThread,
                               ir::Store::make(b, ir::Expr(1.0f), {i}))},
                absl::StatusCode::kInvalidArgument, "1024");
  // Shared memory of a symbolic size.
  ir::Buffer s = ir::Buffer::make("s", DType::f32(), {n}, ir::MemoryScope::kShared);
  require_error(
      {"f", {b, n}, ir::Allocate::make(s, ir::Store::make(s, ir::Expr(1.0f), {ir::Expr(0)}))},
      absl::StatusCode::kUnimplemented, "constant-size shared memory");
  // A buffer that is neither a parameter nor allocated.
  require_error({"f", {n}, ir::Store::make(b, ir::Expr(1.0f), {ir::Expr(0)})},
                absl::StatusCode::kInvalidArgument, "neither a parameter");
}

TEST_CASE("CUDA target: a graph compiled without a GPU cannot run, and says why", "[cuda][error]") {
  loom::Graph g;
  g.output(g.input("x", {5, 7}).relu());
  auto compiled = loom::Compiler(loom::Target::cuda(90)).compile(g);
  if (!cuda::built_with_cuda()) {
    REQUIRE(!compiled.ok());
    CHECK(compiled.status().code() == absl::StatusCode::kUnimplemented);
    CHECK_THAT(std::string(compiled.status().message()), Catch::Contains("no CUDA back end"));
    return;
  }
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());  // NVRTC needs no GPU
  if (cuda::Driver::get().ok()) {
    WARN("a CUDA driver is present: the driver-absent path is tested on machines without one");
    return;
  }
  auto out = compiled->run({loom::NDArray(loom::DType::f32(), {5, 7})});
  REQUIRE(!out.ok());
  CHECK(out.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("no CUDA driver"));
}

TEST_CASE("CUDA driver absent: loading a compiled module reports the missing driver",
          "[cuda][error]") {
  if (cuda::Driver::get().ok()) {
    WARN("a CUDA driver is present: the driver-absent path is tested on machines without one");
    return;
  }
  const std::string why(cuda::Driver::get().status().message());
  ir::Var i("i");
  ir::Buffer b = ir::Buffer::make("b", DType::f32(), {ir::Expr(32)});
  ir::Func f{"f", {b},
             ir::For::make(i, ir::Expr(0), ir::Expr(32), ir::ForKind::kGpuThread,
                           ir::Store::make(b, ir::Expr(1.0f), {i}))};
  ir::Module m{"absent", loom::Target::cuda(90), {f}};
  auto compiled = cuda::compile_module(m, 90);
  if (!compiled.ok()) {
    // No NVRTC either (or a build without CUDA): that is reported cleanly too.
    INFO(compiled.status().ToString());
    CHECK(!compiled.status().message().empty());
    return;
  }
  auto loaded = cuda::LoadedModule::load(m, *std::move(compiled));
  INFO(loaded.status().ToString());
  REQUIRE(!loaded.ok());
  CHECK(loaded.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(loaded.status().message()), Catch::Contains(why));
}
