// Whole graphs compiled for CUDA targets by Compiler (Target::cuda): every operator family goes
// through the CUDA templates, the injective kernel or the default GPU schedule into one module,
// and NVRTC compiles it for sm_80 and sm_90 (CI, no GPU). With a GPU the outputs must match the
// host CPU's; without one, run() says why it cannot run. The cases tagged [.fake_cuda] run only
// under the stand-in driver (test/fake_cuda; ctest's fake_cuda_driver), which lets the GPU
// runtime's memory, copies and launches run on any machine and injects device faults.

#include <dlfcn.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "cache_test_util.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/cuda.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
namespace cuda = loom::runtime::cuda;
namespace fs = std::filesystem;

namespace {

struct GraphCase {
  std::string name;
  std::function<Graph()> build;
  std::vector<NDArray> inputs;
};

Tensor weights(Graph& g, const std::string& name, std::vector<int64_t> shape) {
  return g.constant(name, random_array(DType::f32(), std::move(shape), -0.5, 0.5));
}

// Graphs covering the operator families, with odd and prime extents.
std::vector<GraphCase> graph_cases() {
  std::vector<GraphCase> cases;
  cases.push_back({"matmul, bias, gelu, softmax", [] {
                     Graph g;
                     Tensor x = g.input("x", {17, 33});
                     Tensor h = x.matmul(weights(g, "w", {33, 29})).add(weights(g, "b", {29}));
                     g.output(h.gelu().softmax(-1));
                     return g;
                   },
                   {random_array(DType::f32(), {17, 33})}});
  cases.push_back({"layer norm, residual, reductions", [] {
                     Graph g;
                     Tensor x = g.input("x", {5, 7, 48});
                     Tensor y = x.layer_norm(weights(g, "gamma", {48}), weights(g, "beta", {48}));
                     Tensor r = y.add(x);
                     g.output(r.mean({1}));
                     g.output(r.max({2}, true).sum({0}));
                     g.output(x.log_softmax(1));
                     return g;
                   },
                   {random_array(DType::f32(), {5, 7, 48})}});
  cases.push_back({"convolutions and pooling", [] {
                     Graph g;
                     Tensor x = g.input("x", {1, 6, 13, 11});
                     Tensor c = x.conv2d(weights(g, "w", {8, 6, 3, 3}), {.padding = 1})
                                    .add(weights(g, "cb", {1, 8, 1, 1}))
                                    .relu();
                     Tensor p = c.max_pool2d({.kernel = 2, .stride = 2});
                     Tensor d = p.conv2d(weights(g, "dw", {8, 1, 3, 3}), {.padding = 1, .groups = 8});
                     Tensor s = d.conv2d(weights(g, "w2", {5, 8, 1, 1}), {.stride = {2, 1}});
                     g.output(s.avg_pool2d({.kernel = 2, .padding = {0, 1}}));
                     g.output(c.mean({2, 3}));
                     return g;
                   },
                   {random_array(DType::f32(), {1, 6, 13, 11})}});
  cases.push_back({"data movement and integers", [] {
                     Graph g;
                     Tensor x = g.input("x", {3, 7, 5});
                     Tensor i = g.input("i", {3, 7, 5}, DType::i32());
                     Tensor t = x.transpose({2, 0, 1});
                     Tensor c = concat({t, t.mul(2.0)}, 1).slice({1}, {5}, {1});
                     g.output(c.pad({{0, 1}, {2, 0}, {1, 1}}, PadMode::kConstant, 1.5));
                     NDArray idx = NDArray::from_vector<int64_t>(DType::i64(), {4}, {4, 0, -1, 2});
                     g.output(x.gather(g.constant("idx", idx), 2));
                     g.output(x.greater(x.mul(-1.0)).where(x, x.exp()));
                     g.output(x.argmax(1, false));
                     g.output(i.div(i.add(i.mul(i)).cast(DType::i32())));
                     g.output(x.cast(DType::i32()).cast(DType::f32()).expand({2, 3, 7, 5}));
                     return g;
                   },
                   {random_array(DType::f32(), {3, 7, 5}, -3, 3),
                    random_array(DType::i32(), {3, 7, 5}, -4, 4)}});
  cases.push_back({"transposed conv, resize, instance norm, conv1d, pow", [] {
                     Graph g;
                     Tensor x = g.input("x", {1, 4, 7, 9});
                     Tensor t = x.conv_transpose2d(weights(g, "tw", {4, 3, 3, 3}),
                                                   {.stride = 2, .padding = 1});
                     g.output(t.resize({.sizes = {1, 3, 11, 19}, .mode = ResizeMode::kLinear}));
                     g.output(x.instance_norm(weights(g, "s", {4}), weights(g, "b", {4})));
                     Tensor v = g.input("v", {2, 5, 13});
                     g.output(v.conv1d(weights(g, "w1", {3, 5, 3}), {.padding = 1})
                                  .abs()
                                  .pow(weights(g, "e", {1})));
                     return g;
                   },
                   {random_array(DType::f32(), {1, 4, 7, 9}),
                    random_array(DType::f32(), {2, 5, 13})}});
  return cases;
}

// Compiles g for target; the compile must succeed (it needs NVRTC, not a GPU).
CompiledGraph compile_for(const Graph& g, const Target& target, CompileOptions options = {}) {
  absl::StatusOr<CompiledGraph> compiled = Compiler(target).compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  return *std::move(compiled);
}

bool have_nvrtc() {
  absl::StatusOr<std::string> version = cuda::nvrtc_version();
  if (version.ok()) return true;
  std::printf("[cuda] %s; CUDA graphs not compiled\n", version.status().ToString().c_str());
  return false;
}

// A real GPU's sm arch, or 0 (no driver, no device, or the stand-in driver).
int gpu_sm_arch() {
  absl::StatusOr<cuda::Driver*> driver = cuda::Driver::get();
  if (!driver.ok()) return 0;
  absl::StatusOr<cuda::DeviceProperties> p = (*driver)->device_properties(0);
  if (!p.ok() || p->name == "loom fake GPU") return 0;
  return p->sm_arch;
}

void require_close(const NDArray& got, const NDArray& want, double tol) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  for (int64_t k = 0; k < got.numel(); ++k) {
    const double a = got.get(k), e = want.get(k);
    if (std::fabs(a - e) > tol * (1 + std::fabs(e))) {
      INFO("element " << k << " of " << got.numel() << ": GPU " << a << ", CPU " << e);
      REQUIRE(std::fabs(a - e) <= tol * (1 + std::fabs(e)));
    }
  }
}

// The stand-in driver's controls, when it is the libcuda.so.1 loom loaded.
struct FakeDriver {
  void (*configure)(int fault_after_launches, int out_of_memory) = nullptr;
  int (*launches)() = nullptr;
  int (*live_allocations)() = nullptr;
};

FakeDriver fake_driver() {
  REQUIRE(cuda::Driver::get().ok());  // loads libcuda.so.1
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  REQUIRE(lib);
  FakeDriver f;
  f.configure = reinterpret_cast<decltype(f.configure)>(dlsym(lib, "loom_fake_cuda_configure"));
  f.launches = reinterpret_cast<decltype(f.launches)>(dlsym(lib, "loom_fake_cuda_launches"));
  f.live_allocations =
      reinterpret_cast<decltype(f.live_allocations)>(dlsym(lib, "loom_fake_cuda_live_allocations"));
  INFO("libcuda.so.1 is not the stand-in driver: run these cases through ctest's fake_cuda_driver");
  REQUIRE(f.configure);
  REQUIRE(f.launches);
  REQUIRE(f.live_allocations);
  f.configure(-1, 0);
  return f;
}

}  // namespace

TEST_CASE("CUDA graphs: every operator family compiles for sm_80 and sm_90, and runs where a GPU is",
          "[cuda][cuda_graph]") {
  if (!have_nvrtc()) return;
  const int gpu = gpu_sm_arch();
  for (const GraphCase& c : graph_cases()) {
    for (int sm : {80, 90}) {
      INFO(c.name << " for sm_" << sm);
      const Graph g = c.build();
      CompiledGraph compiled = compile_for(g, Target::cuda(sm));
      REQUIRE(!compiled.kernels().empty());
      for (const KernelInfo& k : compiled.kernels()) {
        INFO("kernel " << k.name);
        CHECK(!k.schedule.empty());
        CHECK(!k.ops.empty());
      }
      if (sm != gpu) {
        if (gpu == 0 && sm == 90) {
          // No GPU: run() says so, after checking the inputs as on the CPU.
          absl::StatusOr<std::vector<NDArray>> out = compiled.run(c.inputs);
          REQUIRE(!out.ok());
          CHECK((out.status().code() == absl::StatusCode::kUnavailable ||
                 out.status().code() == absl::StatusCode::kUnimplemented));
          CHECK_THAT(std::string(out.status().message()),
                     Catch::Contains("preparing the graph on the GPU"));
        }
        continue;
      }
      std::vector<NDArray> want = loom::testing::compile_and_run(g, c.inputs);
      std::vector<NDArray> got = loom::testing::run_ok(compiled, c.inputs);
      REQUIRE(got.size() == want.size());
      for (size_t o = 0; o < got.size(); ++o) {
        INFO("output " << o);
        require_close(got[o], want[o], 1e-4);
      }
    }
  }
}

TEST_CASE("CUDA graphs: a warm compile takes the module from the kernel cache", "[cuda][cuda_graph]") {
  if (!have_nvrtc()) return;
  loom::testing::TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  const GraphCase c = graph_cases()[0];
  const Graph g = c.build();
  Stats before = stats();
  CompiledGraph cold = compile_for(g, Target::cuda(90), options);
  CHECK((stats() - before).nvrtc_compiles == 1);
  runtime::KernelCache::global().clear_memory();
  before = stats();
  CompiledGraph warm = compile_for(g, Target::cuda(90), options);
  const Stats used = stats() - before;
  CHECK(used.nvrtc_compiles == 0);
  CHECK(used.cache_disk_hits == 1);
  REQUIRE(warm.kernels().size() == cold.kernels().size());
  for (size_t k = 0; k < warm.kernels().size(); ++k) {
    CHECK(warm.kernels()[k].cache_key == cold.kernels()[k].cache_key);
    CHECK(!warm.kernels()[k].cache_key.empty());
  }
}

TEST_CASE("CUDA graphs: unsupported requests are clear errors", "[cuda][cuda_graph]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), Dim(8)});
  g.output(x.relu());
  CompileOptions generic;
  generic.specialize_shapes = false;
  absl::StatusOr<CompiledGraph> c = Compiler(Target::cuda(90)).compile(g, generic);
  REQUIRE(!c.ok());
  CHECK(c.status().code() == absl::StatusCode::kUnimplemented);
  CompileOptions laid;
  laid.layouts = LayoutPolicy::kJoint;
  Graph s;
  s.output(s.input("x", {4, 8}).relu());
  c = Compiler(Target::cuda(90)).compile(s, laid);
  REQUIRE(!c.ok());
  CHECK(c.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(c.status().message()), Catch::Contains("row-major"));
}

TEST_CASE("fake GPU: a graph runs through device memory, copies and one launch per kernel",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const GraphCase c = graph_cases()[2];
  const int live = fake.live_allocations();
  {
    CompiledGraph compiled = compile_for(c.build(), Target::cuda(90));
    for (int run = 0; run < 2; ++run) {
      const int launched = fake.launches();
      std::vector<NDArray> out = loom::testing::run_ok(compiled, c.inputs);
      CHECK(fake.launches() - launched == static_cast<int>(compiled.kernels().size()));
      REQUIRE(out.size() == compiled.output_types().size());
      for (size_t o = 0; o < out.size(); ++o)
        CHECK(static_cast<size_t>(out[o].rank()) == compiled.output_types()[o].shape.size());
    }
    absl::StatusOr<std::vector<double>> times = compiled.profile(c.inputs, 2);
    REQUIRE(times.ok());
    CHECK(times->size() == compiled.kernels().size());
    // Bad input is caught before the device is touched.
    absl::StatusOr<std::vector<NDArray>> bad =
        compiled.run({random_array(DType::f32(), {1, 6, 13, 12})});
    REQUIRE(!bad.ok());
    CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  }
  // The graph's device memory goes with it.
  CHECK(fake.live_allocations() == live);
}

TEST_CASE("fake GPU: a kernel faulting mid-run is an error, never a crash, and spares the cache",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  const GraphCase c = graph_cases()[0];
  const Graph g = c.build();
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  REQUIRE(compiled.kernels().size() >= 2);
  loom::testing::run_ok(compiled, c.inputs);  // loads the module, uploads the constants

  fake.configure(1, 0);  // the second launch faults; the context is lost from then on
  absl::StatusOr<std::vector<NDArray>> out = compiled.run(c.inputs);
  REQUIRE(!out.ok());
  CHECK(out.status().code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("CUDA_ERROR_ILLEGAL_ADDRESS"));
  // Later runs report the lost device too.
  out = compiled.run(c.inputs);
  REQUIRE(!out.ok());
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("CUDA_ERROR_ILLEGAL_ADDRESS"));

  // A fresh device (a restarted process): the cache still serves the module, and it runs.
  fake.configure(-1, 0);
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  CompiledGraph again = compile_for(g, Target::cuda(90), options);
  CHECK((stats() - before).nvrtc_compiles == 0);
  CHECK((stats() - before).cache_disk_hits == 1);
  loom::testing::run_ok(again, c.inputs);
}

TEST_CASE("fake GPU: device memory running out is a ResourceExhausted error", "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const GraphCase c = graph_cases()[1];
  CompiledGraph compiled = compile_for(c.build(), Target::cuda(90));
  fake.configure(-1, 1);
  absl::StatusOr<std::vector<NDArray>> out = compiled.run(c.inputs);
  REQUIRE(!out.ok());
  CHECK(out.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("preparing the graph on the GPU"));
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("CUDA_ERROR_OUT_OF_MEMORY"));
  // Memory back: the same compiled graph runs.
  fake.configure(-1, 0);
  loom::testing::run_ok(compiled, c.inputs);
}

TEST_CASE("fake GPU: tuning times every candidate on the device, and a warm compile times none",
          "[.fake_cuda]") {
  fake_driver();  // a fresh device
  loom::testing::TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path(), TuneLevel::kFast);
  const GraphCase c = graph_cases()[1];  // row templates: small spaces, quick to compile
  const Graph g = c.build();
  Stats before = stats();
  CompiledGraph cold = compile_for(g, Target::cuda(90), options);
  const Stats tuned = stats() - before;
  CHECK(tuned.tune_measurements > 0);
  size_t candidates = 0;
  for (const KernelInfo& k : cold.kernels()) {
    candidates += k.candidates.size();
    for (const CandidateTime& t : k.candidates) CHECK(t.median_ms > 0);
  }
  CHECK(candidates > 1);
  CHECK(candidates <= tuned.tune_measurements);
  loom::testing::run_ok(cold, c.inputs);

  runtime::KernelCache::global().clear_memory();
  before = stats();
  CompiledGraph warm = compile_for(g, Target::cuda(90), options);
  CHECK((stats() - before).tune_measurements == 0);
  CHECK((stats() - before).nvrtc_compiles == 0);
  REQUIRE(warm.kernels().size() == cold.kernels().size());
  for (size_t k = 0; k < warm.kernels().size(); ++k) {
    CHECK(warm.kernels()[k].schedule == cold.kernels()[k].schedule);
    CHECK(warm.kernels()[k].candidates.size() == cold.kernels()[k].candidates.size());
  }
}
