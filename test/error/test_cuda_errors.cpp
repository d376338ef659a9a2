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

TEST_CASE("CUDA codegen errors: TMA copies from buffers a tensor map cannot describe", "[cuda]") {
  const ir::Expr zero(int64_t{0}), one(int64_t{1});
  ir::Buffer dst = ir::Buffer::make("dst", DType::f16(), {ir::Expr(int64_t{4096})},
                                    ir::MemoryScope::kShared);
  ir::Buffer bar = ir::Buffer::make("bar", DType::i64(), {ir::Expr(int64_t{1})},
                                    ir::MemoryScope::kShared);
  auto copy = [&](const ir::Buffer& src, int64_t inner) {
    ir::Stmt s = ir::Evaluate::make(ir::Call::make(
        "tma_load_3d", {dst.load({zero}), bar.load({zero}), src.load({zero}), zero, zero, zero,
                        one, ir::Expr(int64_t{64}), ir::Expr(inner)}));
    return ir::Allocate::make(dst, ir::Allocate::make(bar, s));
  };
  ir::Buffer a = ir::Buffer::make("a", DType::f16(), {one, ir::Expr(int64_t{64}), ir::Expr(int64_t{64})});
  // Rows of 32 bytes: the 128-byte swizzle takes rows of 128.
  require_error({"f", {a}, copy(a, 16)}, absl::StatusCode::kInvalidArgument, "128-byte swizzle");
  // Rank 2: the 3-d copy needs a rank-3 tensor.
  ir::Buffer flat = ir::Buffer::make("flat", DType::f16(), {ir::Expr(int64_t{64}), ir::Expr(int64_t{64})});
  require_error({"f", {flat}, copy(flat, 64)}, absl::StatusCode::kInvalidArgument, "rank-3");
  // Not a parameter (a tensor map is made from a launch's argument).
  require_error({"f", {}, ir::Allocate::make(a, copy(a, 64))}, absl::StatusCode::kInvalidArgument,
                "not a parameter");
  // A valid copy: one tensor map over buffer 0, passed after the params.
  ir::Module m{"ok", loom::Target::cuda(90), {{"f", {a}, copy(a, 64)}}};
  std::vector<cuda::KernelInfo> kernels;
  auto source = cuda::emit_cuda_source(m, &kernels);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  CHECK_THAT(*source, Catch::Contains("LOOM_TENSOR_MAP_PARAM(a_map)"));
  REQUIRE(kernels.size() == 1);
  REQUIRE(kernels[0].tensor_maps.size() == 1);
  CHECK(kernels[0].tensor_maps[0].buffer == 0);
  CHECK(kernels[0].tensor_maps[0].box == std::vector<int64_t>{1, 64, 64});
}

TEST_CASE("CUDA codegen errors: a cluster kernel's grid is a constant multiple of its cluster",
          "[cuda]") {
  ir::Var block("block"), tid("tid"), n("n");
  ir::Buffer out = ir::Buffer::make("out", DType::f32(), {ir::Expr(int64_t{4 * 32})});
  ir::Buffer tile =
      ir::Buffer::make("tile", DType::f32(), {ir::Expr(int64_t{32})}, ir::MemoryScope::kShared);
  // Each block's threads write a shared tile, meet at the cluster's barrier, and copy it out.
  auto kernel = [&](const ir::Expr& blocks) {
    ir::Stmt body = ir::Seq::make({
        ir::Evaluate::make(ir::Call::make("cluster_dims", {ir::Expr(int64_t{2})})),
        ir::Store::make(tile, ir::cast(DType::f32(), tid), {tid}),
        ir::Evaluate::make(ir::Call::make("cluster_sync", {})),
        ir::Store::make(out, tile.load({tid}), {block * int64_t{32} + tid}),
    });
    body = ir::For::make(tid, ir::Expr(int64_t{0}), ir::Expr(int64_t{32}), ir::ForKind::kGpuThread,
                         ir::Allocate::make(tile, body));
    return ir::For::make(block, ir::Expr(int64_t{0}), blocks, ir::ForKind::kGpuBlock, body);
  };
  require_error({"f", {out}, kernel(ir::Expr(int64_t{3}))}, absl::StatusCode::kInvalidArgument,
                "runs in clusters of 2 blocks");
  require_error({"f", {out, n}, kernel(n)}, absl::StatusCode::kInvalidArgument,
                "must be a constant multiple");
  // Four blocks: the kernel declares its clusters, and its small shared tile is dynamic shared
  // memory (each block of a cluster has its own in the emulator).
  ir::Module m{"ok", loom::Target::cuda(90), {{"f", {out}, kernel(ir::Expr(int64_t{4}))}}};
  std::vector<cuda::KernelInfo> kernels;
  auto source = cuda::emit_cuda_source(m, &kernels);
  INFO(source.status().ToString());
  REQUIRE(source.ok());
  CHECK_THAT(*source, Catch::Contains("__cluster_dims__(2, 1, 1) __launch_bounds__(32) f("));
  CHECK_THAT(*source, Catch::Contains("LOOM_CLUSTER_SIZE(f, 2)"));
  CHECK_THAT(*source, Catch::Contains("LOOM_DYNAMIC_SHARED(loom_smem);"));
  CHECK_THAT(*source, Catch::Contains("(void)loom_cluster_sync();"));
  CHECK_THAT(*source, !Catch::Contains("loom_cluster_dims"));
  REQUIRE(kernels.size() == 1);
  CHECK(kernels[0].dynamic_shared_bytes == 128);
}

TEST_CASE("CUDA tensor maps: shapes innermost first, strides checked", "[cuda]") {
  ir::Var rows("rows");
  const ir::Expr cols(int64_t{200}), two(int64_t{2});
  ir::Buffer a = ir::Buffer::make("a", DType::f16(), {two, ir::Expr(rows), cols});
  ir::Func f{"f", {a, rows}, ir::Evaluate::make(ir::Expr(int64_t{0}))};
  cuda::TensorMapInfo info{0, DType::f16(), a.shape(), {1, 64, 64}};
  auto shape = cuda::tensor_map_shape(f, info, {37});
  INFO(shape.status().ToString());
  REQUIRE(shape.ok());
  CHECK(shape->rank == 3);
  CHECK(shape->data_type == 6);  // CU_TENSOR_MAP_DATA_TYPE_FLOAT16
  CHECK(shape->dims[0] == 200);
  CHECK(shape->dims[1] == 37);
  CHECK(shape->dims[2] == 2);
  CHECK(shape->strides[0] == 400);
  CHECK(shape->strides[1] == 400 * 37);
  CHECK(shape->box[0] == 64);
  CHECK(shape->box[2] == 1);
  // Rows of 202 bytes: not a multiple of 16.
  ir::Buffer odd = ir::Buffer::make("odd", DType::f16(), {two, ir::Expr(rows), ir::Expr(int64_t{101})});
  ir::Func g{"g", {odd, rows}, ir::Evaluate::make(ir::Expr(int64_t{0}))};
  auto bad = cuda::tensor_map_shape(g, {0, DType::f16(), odd.shape(), {1, 64, 64}}, {37});
  REQUIRE(!bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("multiples of 16"));
  // A symbolic extent needs its scalar.
  CHECK(!cuda::tensor_map_shape(f, info, {}).ok());
}
