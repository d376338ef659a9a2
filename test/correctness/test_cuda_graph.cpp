// Whole graphs compiled for CUDA targets by Compiler (Target::cuda): every operator family goes
// through the CUDA templates, the injective kernel or the default GPU schedule into one module,
// and NVRTC compiles it for sm_80 and sm_90 (CI, no GPU). With a GPU the outputs must match the
// reference interpreter's (test/graph_reference.hpp); without one, run() says why it cannot run.
// The cases tagged [.fake_cuda] run only under the stand-in driver (test/fake_cuda; ctest's
// fake_cuda_driver), which lets the GPU runtime's memory, copies and launches run on any machine,
// injects device faults, and runs registered modules' kernels in the CUDA emulator, so that
// whole graphs are checked against the reference interpreter without a GPU.

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/ir/op.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/runtime/cuda.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::wgmma_config;
namespace cuda = loom::runtime::cuda;
namespace fs = std::filesystem;

namespace {

struct GraphCase {
  std::string name;
  std::function<Graph()> build;
  std::vector<NDArray> inputs;
  double tol = 1e-4;
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
                     // The bias's arithmetic folds at compile time (through the reference
                     // evaluator in a build without LLVM).
                     Tensor bias = weights(g, "cb", {1, 8, 1, 1}).mul(0.5).add(1.0);
                     Tensor c = x.conv2d(weights(g, "w", {8, 6, 3, 3}), {.padding = 1})
                                    .add(bias)
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
  cases.push_back({"attention block: batched matmuls, heads, softmax, residual layer norm", [] {
                     // BERT's shape in small: 2 sequences of 13 tokens, 3 heads of 8.
                     Graph g;
                     Tensor x = g.input("x", {2, 13, 24});
                     auto heads = [&](const std::string& name) {
                       Tensor p = x.matmul(weights(g, name, {24, 24}))
                                      .add(weights(g, name + "_b", {24}));
                       return p.reshape({2, 13, 3, 8}).transpose({0, 2, 1, 3});
                     };
                     Tensor q = heads("wq"), k = heads("wk"), v = heads("wv");
                     Tensor scores = q.matmul(k.transpose({0, 1, 3, 2})).mul(0.35355);
                     Tensor context = scores.softmax(-1).matmul(v).transpose({0, 2, 1, 3})
                                          .reshape({2, 13, 24});
                     Tensor out = context.matmul(weights(g, "wo", {24, 24})).add(x);
                     g.output(out.layer_norm(weights(g, "gamma", {24}), weights(g, "beta", {24})));
                     return g;
                   },
                   {random_array(DType::f32(), {2, 13, 24})}});
  cases.push_back({"half precision: f16 matmul, relu, softmax, cast to f32", [] {
                     Graph g;
                     Tensor x = g.input("x", {17, 33}, DType::f16());
                     Tensor w = g.input("w", {33, 29}, DType::f16());
                     g.output(x.matmul(w).relu().softmax(-1).cast(DType::f32()));
                     return g;
                   },
                   {random_array(DType::f16(), {17, 33}), random_array(DType::f16(), {33, 29})},
                   2e-2});
  // The mask hides the last 4 keys (-10000), weights the others a little, and broadcasts over
  // heads and queries.
  NDArray padding = random_array(DType::f16(), {1, 13}, -0.5, 0.5);
  for (int64_t key = 9; key < 13; ++key) padding.set(key, -10000.0);
  cases.push_back({"fused attention: f16 projections, 2 heads, softmax(q kt / sqrt(32) + mask) v "
                   "in one kernel",
                   [] {
                     Graph g;
                     Tensor x = g.input("x", {13, 64}, DType::f16());
                     auto project = [&](const char* name, std::vector<int> perm) {
                       Tensor w = g.input(name, {64, 64}, DType::f16());
                       return x.matmul(w).reshape({13, 2, 32}).transpose(std::move(perm));
                     };
                     Tensor q = project("wq", {1, 0, 2}), kt = project("wk", {1, 2, 0}),
                            v = project("wv", {1, 0, 2});
                     Tensor mask = g.input("mask", {1, 13}, DType::f16());
                     Tensor context =
                         q.matmul(kt).mul(0.1767767).add(mask).softmax(-1).matmul(v);
                     g.output(context.transpose({1, 0, 2}).reshape({13, 64}).add(x));
                     return g;
                   },
                   {random_array(DType::f16(), {13, 64}), random_array(DType::f16(), {64, 64}, -0.3, 0.3),
                    random_array(DType::f16(), {64, 64}, -0.3, 0.3),
                    random_array(DType::f16(), {64, 64}, -0.3, 0.3), padding},
                   2e-2});
  cases.push_back({"tensor cores: f16 linear layer with fused bias and gelu, bf16 batched matmul, "
                   "f16 convolutions with bias, relu and residual",
                   [] {
                     Graph g;
                     Tensor x = g.input("x", {37, 64}, DType::f16());
                     Tensor w = g.input("w", {64, 48}, DType::f16());
                     Tensor b = g.input("b", {48}, DType::f16());
                     g.output(x.matmul(w).add(b).gelu());
                     Tensor p = g.input("p", {3, 21, 40}, DType::bf16());
                     Tensor q = g.input("q", {3, 40, 16}, DType::bf16());
                     g.output(p.matmul(q).relu());
                     Tensor img = g.input("img", {2, 8, 9, 7}, DType::f16());
                     Tensor cw = g.input("cw", {16, 8, 3, 3}, DType::f16());
                     Tensor cb = g.input("cb", {1, 16, 1, 1}, DType::f16());
                     Tensor c1 = img.conv2d(cw, {.padding = 1}).add(cb).relu();
                     Tensor pw = g.input("pw", {16, 16, 1, 1}, DType::f16());
                     g.output(c1.conv2d(pw).add(c1));
                     return g;
                   },
                   {random_array(DType::f16(), {37, 64}), random_array(DType::f16(), {64, 48}),
                    random_array(DType::f16(), {48}), random_array(DType::bf16(), {3, 21, 40}),
                    random_array(DType::bf16(), {3, 40, 16}),
                    random_array(DType::f16(), {2, 8, 9, 7}),
                    random_array(DType::f16(), {16, 8, 3, 3}),
                    random_array(DType::f16(), {1, 16, 1, 1}),
                    random_array(DType::f16(), {16, 16, 1, 1})},
                   2e-2});
  cases.push_back(
      {"BERT layer in small: f16 q, k and v projections of constant weights (one "
       "matmul), masked attention, output projection, residual layer norm",
       [padding] {
         Graph g;
         Tensor x = g.input("x", {13, 64}, DType::f16());
         auto constant = [&](const std::string& name, std::vector<int64_t> shape) {
           return g.constant(name, random_array(DType::f16(), std::move(shape), -0.3, 0.3));
         };
         auto dense = [&](const std::string& name, const Tensor& in) {
           return in.matmul(constant(name, {64, 64})).add(constant(name + "_b", {64}));
         };
         auto heads = [&](const char* name, std::vector<int> perm) {
           return dense(name, x).reshape({13, 2, 32}).transpose(std::move(perm));
         };
         Tensor q = heads("wq", {1, 0, 2}), kt = heads("wk", {1, 2, 0}), v = heads("wv", {1, 0, 2});
         Tensor context = q.matmul(kt)
                              .mul(0.1767767)
                              .add(g.constant("mask", padding))
                              .softmax(-1)
                              .matmul(v)
                              .transpose({1, 0, 2})
                              .reshape({13, 64});
         g.output(dense("wo", context)
                      .add(x)
                      .layer_norm(constant("gamma", {64}), constant("beta", {64})));
         return g;
       },
       {random_array(DType::f16(), {13, 64})},
       2e-2});
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

// Within tol of the CPU's values, relative to 1 + |want|; a NaN where the CPU has a number (or
// the other way round) is never close.
void require_close(const NDArray& got, const NDArray& want, double tol) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  for (int64_t k = 0; k < got.numel(); ++k) {
    const double a = got.get(k), e = want.get(k);
    const bool close = std::fabs(a - e) <= tol * (1 + std::fabs(e));
    if (!close) {
      INFO("element " << k << " of " << got.numel() << ": GPU " << a << ", CPU " << e);
      REQUIRE(close);
    }
  }
}

// The stand-in driver's controls, when it is the libcuda.so.1 loom loaded.
struct FakeDriver {
  void (*configure)(int fault_after_launches, int out_of_memory) = nullptr;
  int (*launches)() = nullptr;
  int (*live_allocations)() = nullptr;
  size_t (*live_bytes)() = nullptr;
  int (*host_copies)() = nullptr;
  int (*stream_waits)() = nullptr;
  int (*max_shared_carveouts)() = nullptr;
  void (*emulate)(const void* cubin, size_t bytes, const char* source, const char* cxx) = nullptr;
  void (*scribble)(const char* prefix, int param, int byte) = nullptr;
  void (*hang)(const char* prefix) = nullptr;
  int (*graph_launches)() = nullptr;
  void (*no_graphs)(int fail) = nullptr;
  void (*occupancy)(int sms, int blocks_per_sm, int clusters) = nullptr;
  int (*last_grid)(const char* kernel) = nullptr;
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
  f.live_bytes = reinterpret_cast<decltype(f.live_bytes)>(dlsym(lib, "loom_fake_cuda_live_bytes"));
  f.host_copies = reinterpret_cast<decltype(f.host_copies)>(dlsym(lib, "loom_fake_cuda_host_copies"));
  f.stream_waits =
      reinterpret_cast<decltype(f.stream_waits)>(dlsym(lib, "loom_fake_cuda_stream_waits"));
  f.max_shared_carveouts = reinterpret_cast<decltype(f.max_shared_carveouts)>(
      dlsym(lib, "loom_fake_cuda_max_shared_carveouts"));
  f.emulate = reinterpret_cast<decltype(f.emulate)>(dlsym(lib, "loom_fake_cuda_emulate"));
  f.scribble = reinterpret_cast<decltype(f.scribble)>(dlsym(lib, "loom_fake_cuda_scribble"));
  f.hang = reinterpret_cast<decltype(f.hang)>(dlsym(lib, "loom_fake_cuda_hang"));
  f.graph_launches =
      reinterpret_cast<decltype(f.graph_launches)>(dlsym(lib, "loom_fake_cuda_graph_launches"));
  f.no_graphs = reinterpret_cast<decltype(f.no_graphs)>(dlsym(lib, "loom_fake_cuda_no_graphs"));
  f.occupancy = reinterpret_cast<decltype(f.occupancy)>(dlsym(lib, "loom_fake_cuda_occupancy"));
  f.last_grid = reinterpret_cast<decltype(f.last_grid)>(dlsym(lib, "loom_fake_cuda_last_grid"));
  INFO("libcuda.so.1 is not the stand-in driver: run these cases through ctest's fake_cuda_driver");
  REQUIRE(f.configure);
  REQUIRE(f.launches);
  REQUIRE(f.live_allocations);
  REQUIRE(f.live_bytes);
  REQUIRE(f.host_copies);
  REQUIRE(f.stream_waits);
  REQUIRE(f.max_shared_carveouts);
  REQUIRE(f.emulate);
  REQUIRE(f.scribble);
  REQUIRE(f.hang);
  REQUIRE(f.graph_launches);
  REQUIRE(f.no_graphs);
  REQUIRE(f.occupancy);
  REQUIRE(f.last_grid);
  f.configure(-1, 0);
  return f;
}

// A graph whose outputs take every path of a run on device memory: computed outputs (written in
// place by their kernels), an input, a constant and a repeated output (copied on the device).
Graph device_io_graph() {
  Graph g;
  Tensor x = g.input("x", {5, 7});
  Tensor y = g.input("y", {7});
  Tensor h = x.add(y).relu();
  g.output(h);
  g.output(x);
  g.output(h.sum({1}));
  g.output(g.constant("c", NDArray::from_vector<float>(DType::f32(), {3}, {1.5f, -2.0f, 0.25f})));
  g.output(h);
  return g;
}

// Device memory for a test, freed at the end of the scope.
struct DeviceArrays {
  cuda::Driver* driver = nullptr;
  std::vector<cuda::DevicePtr> blocks;

  DeviceArrays() {
    absl::StatusOr<cuda::Driver*> d = cuda::Driver::get();
    REQUIRE(d.ok());
    driver = *d;
    absl::StatusOr<cuda::Context> context = driver->retain_primary_context(0);
    REQUIRE(context.ok());
    REQUIRE(driver->set_current(*context).ok());
  }
  ~DeviceArrays() {
    for (cuda::DevicePtr p : blocks) (void)driver->free(p);
    (void)driver->release_primary_context(0);
  }
  DeviceTensor empty(DType dtype, std::vector<int64_t> shape) {
    absl::StatusOr<cuda::DevicePtr> p = driver->allocate(static_cast<size_t>(
        std::max<int64_t>(1, num_elements(shape) * dtype.bytes())));
    REQUIRE(p.ok());
    blocks.push_back(*p);
    return {*p, dtype, std::move(shape)};
  }
  DeviceTensor upload(const NDArray& a) {
    DeviceTensor t = empty(a.dtype(), a.shape());
    REQUIRE(driver->copy_to_device(t.address, a.data(), static_cast<size_t>(a.numel() * a.dtype().bytes())).ok());
    return t;
  }
  NDArray download(const DeviceTensor& t) {
    absl::StatusOr<NDArray> a = NDArray::allocate(t.dtype, t.shape);
    REQUIRE(a.ok());
    REQUIRE(driver->copy_to_host(a->data(), t.address, static_cast<size_t>(a->numel() * t.dtype.bytes())).ok());
    return *std::move(a);
  }
};

// Device memory for each of the compiled graph's outputs, poisoned (NaN bytes).
std::vector<DeviceTensor> poisoned_outputs(DeviceArrays& mem, const CompiledGraph& compiled) {
  std::vector<DeviceTensor> outs;
  for (const TensorType& t : compiled.output_types()) {
    std::vector<int64_t> shape;
    for (const Dim& d : t.shape) shape.push_back(d.value());
    absl::StatusOr<NDArray> poison = NDArray::allocate(t.dtype, shape);
    REQUIRE(poison.ok());
    std::memset(poison->data(), 0xff, static_cast<size_t>(poison->numel() * t.dtype.bytes()));
    outs.push_back(mem.upload(*poison));
  }
  return outs;
}

// Fresh inputs of device_io_graph.
std::vector<NDArray> device_io_inputs() {
  return {random_array(DType::f32(), {5, 7}), random_array(DType::f32(), {7})};
}

// A warpgroup GEMM that reads x through a tensor map (encoded over x's buffer: a captured launch
// keeps the map of its capture), and a reduction of its output; its fresh inputs.
Graph tma_gemm_graph() {
  Graph g;
  const NDArray w = random_array(DType::f16(), {64, 48});
  Tensor y = g.input("x", {40, 64}, DType::f16()).matmul(g.constant("w", w));
  g.output(y);
  g.output(y.sum({1}));
  return g;
}
std::vector<NDArray> tma_gemm_inputs() {
  return {random_array(DType::f16(), {40, 64})};
}

// Runs of `compiled` (of g) on two sets of device buffers: set 0 twice, set 1, set 0, then the two
// taking turns four times, on fresh input values (make_inputs) each run, every output checked
// against the reference (within tol), and each set's outputs left alone by the other's runs.
// Where `replays` counts the CUDA graph launches (the stand-in driver), each run is checked to
// replay a captured graph from its set's second run on, and where `launches` counts kernel
// launches, to run every kernel once.
void runs_on_two_buffer_sets(const Graph& g, const CompiledGraph& compiled,
                             const std::function<std::vector<NDArray>()>& make_inputs, double tol,
                             const std::function<int()>& replays = {},
                             const std::function<int()>& launches = {}) {
  DeviceArrays mem;
  std::vector<std::vector<DeviceTensor>> in(2), out(2);
  std::vector<std::vector<NDArray>> want(2);
  for (int set = 0; set < 2; ++set) {
    for (const NDArray& a : make_inputs()) in[set].push_back(mem.upload(a));
    out[set] = poisoned_outputs(mem, compiled);
  }
  const int sets[] = {0, 0, 1, 0, 1, 0, 1, 0};
  const bool replay[] = {false, true, false, true, true, true, true, true};
  for (size_t run = 0; run < std::size(sets); ++run) {
    INFO("run " << run << " on buffer set " << sets[run]);
    const int set = sets[run];
    const std::vector<NDArray> values = make_inputs();
    for (size_t k = 0; k < values.size(); ++k)
      REQUIRE(mem.driver
                  ->copy_to_device(in[set][k].address, values[k].data(),
                                   static_cast<size_t>(values[k].nbytes()))
                  .ok());
    want[set] = loom::testing::reference_run(g, values);
    const int replayed = replays ? replays() : 0, launched = launches ? launches() : 0;
    absl::Status s = compiled.run_on_device(in[set], out[set]);
    INFO(s.ToString());
    REQUIRE(s.ok());
    if (replays) CHECK(replays() - replayed == (replay[run] ? 1 : 0));
    if (launches) CHECK(launches() - launched == static_cast<int>(compiled.kernels().size()));
    for (int other = 0; other < 2; ++other)
      for (size_t o = 0; o < want[other].size(); ++o) {
        INFO("outputs of set " << other << ", output " << o);
        require_close(mem.download(out[other][o]), want[other][o], tol);
      }
  }
}

// An engine capturing its own stream into a CUDA graph around a run of `compiled` (of
// device_io_graph, never run before): refused before the graph's first run, the caller's capture
// left valid; after it, the run's launches and copies become nodes of the caller's graph, which
// each of three replays runs on fresh inputs, every output checked against the reference. Between
// replays, runs outside the capture on a second set of buffers, queued on the caller's stream (the
// first right after the capture) or on the graph's own, checked too. Where `fake` is the stand-in
// driver, it counts: no launch at capture, every kernel once a replay, and the run queued on the
// caller's stream right after the capture waiting for the captured run's end.
void captured_by_the_caller(const Graph& g, const CompiledGraph& compiled,
                            const FakeDriver* fake = nullptr) {
  DeviceArrays mem;
  cuda::Driver& driver = *mem.driver;
  absl::StatusOr<cuda::Stream> engine = driver.create_stream();
  REQUIRE(engine.ok());
  std::vector<std::vector<DeviceTensor>> in(2), out(2);
  for (int set = 0; set < 2; ++set) {
    for (const NDArray& a : device_io_inputs()) in[set].push_back(mem.upload(a));
    out[set] = poisoned_outputs(mem, compiled);
  }
  // A capture of the engine's stream around a run of buffer set 0 queued on it.
  absl::Status queued;
  auto capture = [&] {
    return driver.capture(*engine, [&] {
      queued = compiled.enqueue_on_device(in[0], out[0], *engine);
      return absl::OkStatus();  // the capture ends as the run left it
    });
  };
  {
    absl::StatusOr<cuda::GraphExec> early = capture();
    CHECK(queued.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(queued.message()), Catch::Contains("run it once before capturing"));
    INFO(early.status().ToString());
    REQUIRE(early.ok());  // the caller's capture was left valid
    REQUIRE(driver.destroy_graph(*early).ok());
  }
  REQUIRE(compiled.run_on_device(in[0], out[0]).ok());
  const int launched = fake ? fake->launches() : 0;
  absl::StatusOr<cuda::GraphExec> exec = capture();
  INFO(queued.ToString());
  REQUIRE(queued.ok());
  INFO(exec.status().ToString());
  REQUIRE(exec.ok());
  if (fake) CHECK(fake->launches() == launched);  // captured, not run

  // Fresh inputs in buffer set `set`, its outputs poisoned (NaN bytes) in place; the reference's
  // outputs for them.
  auto refill = [&](int set) {
    const std::vector<NDArray> values = device_io_inputs();
    for (size_t k = 0; k < values.size(); ++k)
      REQUIRE(driver
                  .copy_to_device(in[set][k].address, values[k].data(),
                                  static_cast<size_t>(values[k].nbytes()))
                  .ok());
    for (const DeviceTensor& t : out[set]) {
      const std::vector<char> poison(static_cast<size_t>(num_elements(t.shape) * t.dtype.bytes()),
                                     static_cast<char>(0xff));
      REQUIRE(driver.copy_to_device(t.address, poison.data(), poison.size()).ok());
    }
    return loom::testing::reference_run(g, values);
  };
  auto check = [&](int set, const std::vector<NDArray>& want) {
    REQUIRE(want.size() == out[set].size());
    for (size_t o = 0; o < want.size(); ++o) {
      INFO("buffer set " << set << ", output " << o);
      require_close(mem.download(out[set][o]), want[o], 1e-5);
    }
  };
  const int kernels = static_cast<int>(compiled.kernels().size());
  for (int round = 0; round < 3; ++round) {
    INFO("replay " << round);
    const std::vector<NDArray> want = refill(0);
    const int launches = fake ? fake->launches() : 0, replays = fake ? fake->graph_launches() : 0;
    REQUIRE(driver.launch_graph(*exec, *engine).ok());
    REQUIRE(driver.synchronize(*engine).ok());
    if (fake) {
      CHECK(fake->launches() - launches == kernels);
      CHECK(fake->graph_launches() - replays == 1);
    }
    check(0, want);
    // A run outside the capture, on the other buffers, sharing the graph's intermediates.
    const std::vector<NDArray> other = refill(1);
    if (round % 2 == 0) {
      const int waits = fake ? fake->stream_waits() : 0;
      REQUIRE(compiled.enqueue_on_device(in[1], out[1], *engine).ok());
      if (fake) CHECK(fake->stream_waits() - waits == 1);
      REQUIRE(driver.synchronize(*engine).ok());
    } else {
      REQUIRE(compiled.run_on_device(in[1], out[1]).ok());
    }
    check(1, other);
    check(0, want);  // left alone
  }
  REQUIRE(driver.destroy_graph(*exec).ok());
  REQUIRE(driver.destroy_stream(*engine).ok());
}

// The stand-in driver runs the kernels of compiled (made with a kernel cache in cache_dir) in the
// CUDA emulator: the module's cache entry holds its cubin and its CUDA source.
void emulate_kernels(const FakeDriver& fake, const CompiledGraph& compiled,
                     const fs::path& cache_dir) {
  std::set<std::string> keys;
  for (const KernelInfo& k : compiled.kernels()) keys.insert(k.cache_key);
  REQUIRE(!keys.empty());
  for (const std::string& key : keys) {
    REQUIRE(!key.empty());
    std::ifstream object(cache_dir / key / "kernel.o", std::ios::binary);
    std::ifstream source(cache_dir / key / "source.txt");
    const std::string cubin((std::istreambuf_iterator<char>(object)),
                            std::istreambuf_iterator<char>());
    const std::string text((std::istreambuf_iterator<char>(source)),
                           std::istreambuf_iterator<char>());
    REQUIRE(!cubin.empty());
    REQUIRE_THAT(text, Catch::Contains("__global__"));
    fake.emulate(cubin.data(), cubin.size(), text.c_str(), LOOM_TEST_CXX);
  }
}

// device_io_graph compiled for sm_90 with a cold kernel cache in cache_dir, its kernels run in
// the emulator.
CompiledGraph emulated_device_io(const FakeDriver& fake, const fs::path& cache_dir) {
  CompiledGraph compiled = compile_for(device_io_graph(), Target::cuda(90),
                                       loom::testing::cold_cache_options(cache_dir));
  REQUIRE(compiled.kernels().size() >= 2);
  emulate_kernels(fake, compiled, cache_dir);
  return compiled;
}

// Two runs of compiled on device memory: each launches every kernel once, and the second (the
// first also prepares the device) copies nothing through the host.
void run_twice_on_device(const FakeDriver& fake, const CompiledGraph& compiled,
                         const std::vector<DeviceTensor>& in, std::vector<DeviceTensor>& outs) {
  for (int run = 0; run < 2; ++run) {
    INFO("run " << run);
    const int copies = fake.host_copies(), launched = fake.launches();
    absl::Status s = compiled.run_on_device(in, outs);
    INFO(s.ToString());
    REQUIRE(s.ok());
    if (run == 1) CHECK(fake.host_copies() == copies);
    CHECK(fake.launches() - launched == static_cast<int>(compiled.kernels().size()));
  }
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
      int tensor_core = 0;
      for (const KernelInfo& k : compiled.kernels()) {
        INFO("kernel " << k.name);
        CHECK(!k.schedule.empty());
        CHECK(!k.ops.empty());
        tensor_core += k.schedule.rfind("cuda_tensor_core_", 0) == 0 ||
                       k.schedule.rfind("cuda_wgmma_", 0) == 0;
        // sm_90 multiplies aligned matmuls with wgmma, sm_80 with mma.sync.
        if (k.schedule.rfind("cuda_wgmma_", 0) == 0) CHECK(sm == 90);
      }
      // Both matmuls and both convolutions, with their epilogues fused.
      if (c.name.rfind("tensor cores", 0) == 0) CHECK(tensor_core == 4);
      // The three projections, and the attention in one kernel; where the projections' weights
      // are constants, one matmul for the three, and the heads split as the attention loads them
      // (then the output projection, and the layer norm).
      int attention = 0;
      for (const KernelInfo& k : compiled.kernels())
        attention += k.schedule.rfind("cuda_tensor_core_attention[", 0) == 0;
      if (c.name.rfind("fused attention", 0) == 0) {
        CHECK(tensor_core == 4);
        CHECK(attention == 1);
      }
      if (c.name.rfind("BERT layer", 0) == 0) {
        CHECK(compiled.kernels().size() == 4);
        CHECK(tensor_core == 3);
        CHECK(attention == 1);
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
      std::vector<NDArray> want = loom::testing::reference_run(g, c.inputs);
      std::vector<NDArray> got = loom::testing::run_ok(compiled, c.inputs);
      REQUIRE(got.size() == want.size());
      for (size_t o = 0; o < got.size(); ++o) {
        INFO("output " << o);
        require_close(got[o], want[o], c.tol);
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
  // The joint layout search times layouts on a device of the target's arch.
  CompileOptions laid;
  laid.layouts = LayoutPolicy::kJoint;
  Graph s;
  s.output(s.input("x", {4, 8}).relu());
  const Target other = Target::cuda(gpu_sm_arch() == 80 ? 90 : 80);
  c = Compiler(other).compile(s, laid);
  REQUIRE(!c.ok());
  CHECK(c.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(c.status().message()), Catch::Contains("LayoutPolicy::kFixed"));
}

TEST_CASE("CUDA graphs: inputs and outputs in device memory are checked before the device is used",
          "[cuda][cuda_graph]") {
  if (!have_nvrtc()) return;
  CompiledGraph compiled = compile_for(device_io_graph(), Target::cuda(90));
  const DeviceTensor x{0x1000, DType::f32(), {5, 7}}, y{0x2000, DType::f32(), {7}};
  std::vector<DeviceTensor> outs;
  for (const TensorType& t : compiled.output_types()) {
    std::vector<int64_t> shape;
    for (const Dim& d : t.shape) shape.push_back(d.value());
    outs.push_back({0x3000, t.dtype, shape});
  }
  auto expect_invalid = [&](const std::vector<DeviceTensor>& in, const std::vector<DeviceTensor>& out,
                            const std::string& says) {
    absl::Status s = compiled.run_on_device(in, out);
    INFO(s.ToString());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains(says));
  };
  expect_invalid({x}, outs, "takes 2 inputs, got 1");
  expect_invalid({x, {0x2000, DType::i32(), {7}}}, outs, "input 1 (y) has dtype i32");
  expect_invalid({{0x1000, DType::f32(), {7, 5}}, y}, outs, "input 0 (x) has shape [7, 5]");
  expect_invalid({x, {0, DType::f32(), {7}}}, outs, "input 1 (y) has no data");
  expect_invalid({x, y}, {outs.begin(), outs.end() - 1}, "has 5 outputs, got 4");
  std::vector<DeviceTensor> bad = outs;
  bad[2].shape = {5, 1};
  expect_invalid({x, y}, bad, "output 2");
  bad = outs;
  bad[3].dtype = DType::f16();
  expect_invalid({x, y}, bad, "has dtype f16");
  bad = outs;
  bad[0].address = 0;
  expect_invalid({x, y}, bad, "null device address");
  bad = outs;
  bad[1].address = 0x3004;
  expect_invalid({x, y}, bad, "output 1 has device address 12292, not a multiple of 16 bytes");
  expect_invalid({x, {0x2008, DType::f32(), {7}}}, outs, "input 1 has device address 8200");
  if (gpu_sm_arch() == 0) {
    // Valid arguments, no GPU: the run says why it cannot start.
    absl::Status s = compiled.run_on_device({x, y}, outs);
    CHECK_THAT(std::string(s.message()), Catch::Contains("preparing the graph on the GPU"));
  }
  if (runtime::CpuJit::available()) {
    CompiledGraph cpu = *Compiler(Target::host_cpu()).compile(device_io_graph());
    absl::Status s = cpu.enqueue_on_device({x, y}, outs, nullptr);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.message()), Catch::Contains("CUDA target"));
  }
}

TEST_CASE("CUDA graphs: a run on device memory matches the reference, on the graph's stream and "
          "on the caller's",
          "[cuda][cuda_graph]") {
  const int sm = gpu_sm_arch();
  if (sm == 0) {
    std::printf("[cuda] no GPU here: device-memory runs not checked\n");
    return;
  }
  const Graph g = device_io_graph();
  CompiledGraph compiled = compile_for(g, Target::cuda(sm));
  const std::vector<NDArray> inputs = {random_array(DType::f32(), {5, 7}, -2, 2),
                                       random_array(DType::f32(), {7}, -2, 2)};
  const std::vector<NDArray> want = loom::testing::reference_run(g, inputs);
  DeviceArrays mem;
  const std::vector<DeviceTensor> in = {mem.upload(inputs[0]), mem.upload(inputs[1])};
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  absl::Status s = compiled.run_on_device(in, outs);
  INFO(s.ToString());
  REQUIRE(s.ok());
  for (size_t o = 0; o < want.size(); ++o) {
    INFO("output " << o);
    require_close(mem.download(outs[o]), want[o], 1e-5);
  }
  // Queued on a stream of the caller's, twice; the host waits for that stream alone.
  absl::StatusOr<cuda::Stream> stream = mem.driver->create_stream();
  REQUIRE(stream.ok());
  for (int run = 0; run < 2; ++run) {
    outs = poisoned_outputs(mem, compiled);
    s = compiled.enqueue_on_device(in, outs, *stream);
    REQUIRE(s.ok());
    REQUIRE(mem.driver->synchronize(*stream).ok());
    for (size_t o = 0; o < want.size(); ++o) {
      INFO("run " << run << ", output " << o);
      require_close(mem.download(outs[o]), want[o], 1e-5);
    }
  }
  std::vector<NDArray> host = loom::testing::run_ok(compiled, inputs);
  for (size_t o = 0; o < want.size(); ++o) require_close(host[o], want[o], 1e-5);
  (void)mem.driver->destroy_stream(*stream);
}

TEST_CASE(
    "CUDA graphs: runs replaying their captured launches (TMA tensor maps included) match "
    "the reference on two sets of device buffers taking turns",
    "[cuda][cuda_graph]") {
  const int sm = gpu_sm_arch();
  if (sm == 0) {
    std::printf("[cuda] no GPU here: replayed runs not checked\n");
    return;
  }
  runs_on_two_buffer_sets(device_io_graph(), compile_for(device_io_graph(), Target::cuda(sm)),
                          device_io_inputs, 1e-5);
  if (sm != 90) return;
  const Graph g = tma_gemm_graph();
  CompileOptions options;
  options.template_configs = {{"cuda_wgmma_gemm", wgmma_config(1, 128, 3, 1, 1)}};
  CompiledGraph compiled = compile_for(g, Target::cuda(sm), options);
  REQUIRE(compiled.kernels().size() >= 2);
  runs_on_two_buffer_sets(g, compiled, tma_gemm_inputs, 2e-2);
}

TEST_CASE(
    "CUDA graphs: a run queued inside the caller's stream capture replays in the caller's graph "
    "and matches the reference",
    "[cuda][cuda_graph]") {
  const int sm = gpu_sm_arch();
  if (sm == 0) {
    std::printf("[cuda] no GPU here: runs inside a caller's capture not checked\n");
    return;
  }
  const Graph g = device_io_graph();
  captured_by_the_caller(g, compile_for(g, Target::cuda(sm)));
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

TEST_CASE("fake GPU: values fused into their readers get no device memory", "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // x (64 x 96) times the constant w (96 x 128), then gelu: one kernel, whose product never
  // reaches memory. The device holds x, w and the output, nothing else.
  Graph g;
  NDArray w = random_array(DType::f32(), {96, 128});
  g.output(g.input("x", {64, 96}).matmul(g.constant("w", w)).gelu());
  CompiledGraph compiled = compile_for(g, Target::cuda(90));
  REQUIRE(compiled.kernels().size() == 1);
  const size_t before = fake.live_bytes();
  loom::testing::run_ok(compiled, {random_array(DType::f32(), {64, 96})});
  const size_t x_bytes = 64 * 96 * 4, w_bytes = 96 * 128 * 4, out_bytes = 64 * 128 * 4;
  CHECK(fake.live_bytes() - before == x_bytes + w_bytes + out_bytes);
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

TEST_CASE("fake GPU: a kernel launched on a buffer off 16-byte alignment is an error",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // y[i] = x[i] + x[i] over 64 f16 elements, two at a time (4-byte stores).
  ir::Var i("i");
  ir::Buffer x = ir::Buffer::make("x", DType::f16(), {ir::Expr(int64_t{64})});
  ir::Buffer y = ir::Buffer::make("y", DType::f16(), {ir::Expr(int64_t{64})});
  const ir::Expr pair = ir::Ramp::make(i * int64_t{2}, ir::Expr(int64_t{1}), 2);
  ir::Func f{"twice",
             {x, y},
             ir::For::make(i, ir::Expr(int64_t{0}), ir::Expr(int64_t{32}), ir::ForKind::kGpuThread,
                           ir::Store::make(y, x(pair) + x(pair), {pair}))};
  ir::Module m{"aligned", Target::cuda(90), {f}};
  absl::StatusOr<cuda::CompiledModule> compiled = cuda::compile_module(m, 90);
  REQUIRE(compiled.ok());
  absl::StatusOr<std::unique_ptr<cuda::LoadedModule>> loaded =
      cuda::LoadedModule::load(m, *std::move(compiled));
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());
  cuda::Driver* d = *cuda::Driver::get();
  absl::StatusOr<cuda::DevicePtr> a = d->allocate(256), b = d->allocate(256);
  REQUIRE((a.ok() && b.ok()));
  const int launched = fake.launches();
  for (cuda::DevicePtr off : {cuda::DevicePtr{2}, cuda::DevicePtr{8}}) {
    absl::Status s = (*loaded)->launch(0, {*a, *b + off}, {});
    INFO(s.ToString());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("buffer 1 of kernel") &&
                                             Catch::Contains("not a multiple of 16 bytes"));
  }
  CHECK(fake.launches() == launched);  // refused before the device is touched
  CHECK((*loaded)->launch(0, {*a + 16, *b}, {}).ok());
  CHECK(fake.launches() == launched + 1);
  for (cuda::DevicePtr p : {*a, *b}) CHECK(d->free(p).ok());
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
  CHECK(tuned.tune_compile_us > 0);  // NVRTC
  CHECK(tuned.tune_load_us > 0);     // modules and buffers on the device
  CHECK(tuned.tune_measure_us > 0);
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
  CHECK((stats() - before).tune_compile_us == 0);
  CHECK((stats() - before).nvrtc_compiles == 0);
  REQUIRE(warm.kernels().size() == cold.kernels().size());
  for (size_t k = 0; k < warm.kernels().size(); ++k) {
    CHECK(warm.kernels()[k].schedule == cold.kernels()[k].schedule);
    CHECK(warm.kernels()[k].candidates.size() == cold.kernels()[k].candidates.size());
  }
}

// One softmax over [24, 40]: one tuning of a row template, of a few candidates.
Graph one_softmax() {
  Graph g;
  g.output(g.input("x", {24, 40}).softmax(-1));
  return g;
}

// The tuned kernel of a compiled graph of one tuning.
const KernelInfo& tuned_kernel(const CompiledGraph& compiled) {
  for (const KernelInfo& k : compiled.kernels())
    if (!k.candidates.empty()) return k;
  FAIL("no kernel was tuned");
  return compiled.kernels().front();
}

TEST_CASE(
    "fake GPU: tuning times each candidate's repeated launches replayed as one CUDA graph, or "
    "one by one where graphs fail",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.use_cache = false;
  for (const bool graphs : {true, false}) {
    INFO((graphs ? "with graphs" : "without"));
    fake.no_graphs(graphs ? 0 : 1);
    const int replays = fake.graph_launches(), launches = fake.launches();
    const KernelInfo k = tuned_kernel(compile_for(one_softmax(), Target::cuda(90), options));
    const int timed = static_cast<int>(k.candidates.size());
    REQUIRE(timed > 1);
    // Each candidate: one checked run, then 5 rounds of 10 launches (a replay each round).
    CHECK(fake.graph_launches() - replays == (graphs ? 5 * timed : 0));
    CHECK(fake.launches() - launches == timed * (1 + 5 * 10));
  }
  fake.configure(-1, 0);
}

TEST_CASE(
    "fake GPU: tuning refuses a candidate whose output disagrees with the default config's, and "
    "the kernel cache keeps why",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = one_softmax();
  // Without a wrong kernel: every candidate agrees (none runs: each leaves the poisoned output
  // as it found it), and the untuned compile names the default config.
  CompileOptions uncached;
  uncached.tune = TuneLevel::kFast;
  uncached.use_cache = false;
  const std::vector<CandidateTime> all =
      tuned_kernel(compile_for(g, Target::cuda(90), uncached)).candidates;
  REQUIRE(all.size() >= 3);
  CHECK(tuned_kernel(compile_for(g, Target::cuda(90), uncached)).refused.empty());
  const std::string untuned = compile_for(g, Target::cuda(90)).kernels()[0].schedule;
  size_t reference = all.size();
  for (size_t i = 0; i < all.size(); ++i)
    if (untuned.find("[" + all[i].config.to_string() + "]") != std::string::npos) reference = i;
  REQUIRE(reference < all.size());
  // Candidate `wrong` (the tuner names candidate i's kernel c<i>_...) writes 0x3c bytes over its
  // output (parameter 1, after x): not the default's poison.
  const size_t wrong = reference == 1 ? 2 : 1;
  fake.scribble(("c" + std::to_string(wrong) + "_").c_str(), 1, 0x3c);
  CompileOptions options = loom::testing::cold_cache_options(dir.path(), TuneLevel::kFast);
  const KernelInfo cold = tuned_kernel(compile_for(g, Target::cuda(90), options));
  REQUIRE(cold.refused.size() == 1);
  CHECK(cold.refused[0].config == all[wrong].config);
  CHECK_THAT(cold.refused[0].reason,
             Catch::Contains("its output disagrees with that of") &&
                 Catch::Contains("[" + all[reference].config.to_string() + "]") &&
                 Catch::Contains(std::to_string(24 * 40) + " of " + std::to_string(24 * 40) +
                                 " elements differ"));
  CHECK(cold.candidates.size() == all.size() - 1);
  for (const CandidateTime& t : cold.candidates) CHECK(!(t.config == all[wrong].config));
  CHECK(cold.schedule.find("[" + all[wrong].config.to_string() + "]") == std::string::npos);
  // A warm compile reads the refusal from the cache, and tunes nothing.
  fake.configure(-1, 0);
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  const KernelInfo warm = tuned_kernel(compile_for(g, Target::cuda(90), options));
  CHECK((stats() - before).tune_measurements == 0);
  REQUIRE(warm.refused.size() == 1);
  CHECK(warm.refused[0].config == cold.refused[0].config);
  CHECK(warm.refused[0].reason == cold.refused[0].reason);
  CHECK(warm.schedule == cold.schedule);
}

// The error of tuning one_softmax at kFast (a cold cache in a directory of its own, `timeout_s`
// for each candidate's first run) on a device the caller made misbehave; then `after` (on the
// same device); then, on a fresh device (a new process), the same compile tunes again, from
// nothing cached, and succeeds.
absl::Status failed_tuning(
    FakeDriver& fake, double timeout_s = 20, const std::function<void()>& after = [] {}) {
  loom::testing::TempDir dir;
  const Graph g = one_softmax();
  CompileOptions options = loom::testing::cold_cache_options(dir.path(), TuneLevel::kFast);
  options.tune_candidate_timeout_s = timeout_s;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<CompiledGraph> failed = Compiler(Target::cuda(90)).compile(g, options);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 60);
  REQUIRE(!failed.ok());
  after();
  fake.configure(-1, 0);
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  const KernelInfo tuned = tuned_kernel(compile_for(g, Target::cuda(90), options));
  CHECK((stats() - before).tune_measurements > 0);
  CHECK(tuned.candidates.size() > 1);
  CHECK(tuned.refused.empty());
  return failed.status();
}

TEST_CASE(
    "fake GPU: a candidate that hangs while tuned is an error naming it, within the "
    "timeout; later tunings on the device fail at once while it runs",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  fake.hang("c1_");  // candidate 1 never finishes
  // While the hung kernel runs, another tuning (without the cache, with a timeout far longer
  // than the hang's) fails at once with the hang's error, launching nothing.
  auto behind_the_hang = [&fake] {
    CompileOptions options;
    options.tune = TuneLevel::kFast;
    options.use_cache = false;
    options.tune_candidate_timeout_s = 60;
    const int launches = fake.launches();
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<CompiledGraph> behind =
        Compiler(Target::cuda(90)).compile(one_softmax(), options);
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 30);
    REQUIRE(!behind.ok());
    CHECK(behind.status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK_THAT(std::string(behind.status().message()),
               Catch::Contains("the device still runs a kernel that hung: candidate "
                               "cuda_rows_softmax[") &&
                   Catch::Contains("did not finish within 0.25 s"));
    CHECK(fake.launches() == launches);
  };
  const absl::Status failed = failed_tuning(fake, 0.25, behind_the_hang);
  CHECK(failed.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(failed.message()),
             Catch::Contains("candidate cuda_rows_softmax[") &&
                 Catch::Contains("did not finish within 0.25 s on the device"));
}

TEST_CASE(
    "fake GPU: a candidate that faults while tuned is an error naming it, and nothing of that "
    "tuning is cached",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  fake.configure(1, 0);  // the second launch faults: the second candidate's check run
  const absl::Status failed = failed_tuning(fake);
  CHECK_THAT(std::string(failed.message()), Catch::Contains("candidate cuda_rows_softmax[") &&
                                                Catch::Contains("failed on the device") &&
                                                Catch::Contains("CUDA_ERROR_ILLEGAL_ADDRESS") &&
                                                Catch::Contains("the device context is lost"));
}

TEST_CASE(
    "fake GPU: a run past run_timeout_s is a DeadlineExceeded error, not a stuck process; "
    "later runs and tunings on the device fail at once while its kernels run",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const Graph g = device_io_graph();
  CompileOptions options;
  options.use_cache = false;
  options.run_timeout_s = -1;
  absl::StatusOr<CompiledGraph> negative = Compiler(Target::cuda(90)).compile(g, options);
  REQUIRE(!negative.ok());
  CHECK(negative.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(negative.status().message()), Catch::Contains("run_timeout_s (-1)"));
  options.run_timeout_s = 0.25;
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  CompiledGraph other = compile_for(g, Target::cuda(90));  // no time limit of its own
  REQUIRE(compiled.run(device_io_inputs()).ok());
  REQUIRE(other.run(device_io_inputs()).ok());
  fake.hang(compiled.kernels()[0].name.c_str());  // the graph's first kernel never finishes
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<NDArray>> hung = compiled.run(device_io_inputs());
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 30);
  REQUIRE(!hung.ok());
  CHECK(hung.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(hung.status().message()),
             Catch::Contains("kernels did not finish within 0.25 s on the device"));
  // Behind it: this graph's runs (host or queued), another graph's, a tuning: each fails at
  // once with the hang's error, launching nothing.
  DeviceArrays mem;
  std::vector<DeviceTensor> in;
  for (const NDArray& a : device_io_inputs()) in.push_back(mem.upload(a));
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  absl::StatusOr<cuda::Stream> stream = mem.driver->create_stream();
  REQUIRE(stream.ok());
  const int launches = fake.launches();
  t0 = std::chrono::steady_clock::now();
  CompileOptions tuned;
  tuned.tune = TuneLevel::kFast;
  tuned.use_cache = false;
  for (const absl::Status& behind :
       {compiled.run(device_io_inputs()).status(), other.run(device_io_inputs()).status(),
        compiled.run_on_device(in, outs), other.enqueue_on_device(in, outs, *stream),
        Compiler(Target::cuda(90)).compile(one_softmax(), tuned).status()}) {
    CHECK(behind.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK_THAT(std::string(behind.message()),
               Catch::Contains("the device still runs a kernel that hung: the graph's") &&
                   Catch::Contains("did not finish within 0.25 s"));
  }
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 30);
  CHECK(fake.launches() == launches);
  // On a fresh device the graph sets itself up again and runs.
  fake.configure(-1, 0);
  REQUIRE(compiled.run(device_io_inputs()).ok());
  REQUIRE(compiled.run_on_device(in, outs).ok());
  REQUIRE(other.enqueue_on_device(in, outs, *stream).ok());
  REQUIRE(mem.driver->synchronize(*stream).ok());
  (void)mem.driver->destroy_stream(*stream);
}

TEST_CASE(
    "fake GPU: a tuning under template_limits times only configs that keep them, and is "
    "cached apart from the unlimited one",
    "[.fake_cuda]") {
  fake_driver();
  loom::testing::TempDir dir;
  const Graph g = one_softmax();
  CompileOptions options = loom::testing::cold_cache_options(dir.path(), TuneLevel::kFast);
  const KernelInfo free = tuned_kernel(compile_for(g, Target::cuda(90), options));
  std::set<int64_t> rows;
  for (const CandidateTime& c : free.candidates) rows.insert(c.config["rows_per_block"]);
  REQUIRE(rows.size() > 1);
  const int64_t kept = *rows.rbegin();
  options.template_limits["cuda_rows_softmax"] = {{"rows_per_block", {kept}}};
  const Stats before = stats();
  const KernelInfo limited = tuned_kernel(compile_for(g, Target::cuda(90), options));
  CHECK((stats() - before).tune_measurements > 0);  // not the cached unlimited tuning
  REQUIRE(!limited.candidates.empty());
  for (const CandidateTime& c : limited.candidates) CHECK(c.config["rows_per_block"] == kept);
  CHECK(limited.candidates.size() < free.candidates.size());
  CHECK_THAT(limited.schedule, Catch::Contains("rows_per_block=" + std::to_string(kept)));
}

TEST_CASE(
    "fake GPU: a graph's identical anchors are tuned once, ahead of its kernels, even "
    "without the kernel cache",
    "[.fake_cuda]") {
  fake_driver();
  // Three softmaxes over [24, 40] rows (the second and third take a scaled input as prologue,
  // which their tuning does not see) and one over 12 columns of x: two distinct tunings.
  Graph g;
  Tensor x = g.input("x", {24, 40});
  Tensor a = x.softmax(-1).mul(2.0).softmax(-1);
  g.output(a.mul(0.5).softmax(-1));
  g.output(x.slice({1}, {13}, {1}).softmax(-1));
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.use_cache = false;
  Stats before = stats();
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  const Stats tuned = stats() - before;
  // Each distinct tuning timed its candidates once: as many measurements as the two tunings'
  // candidates (three tunings of the [24, 40] rows would count theirs three times).
  size_t kernels_40 = 0, kernels_13 = 0, candidates_40 = 0, candidates_13 = 0;
  for (const KernelInfo& k : compiled.kernels()) {
    if (k.candidates.empty()) continue;
    bool narrow = false;
    for (const std::string& op : k.ops)
      for (const Node& n : g.nodes())
        if (n.name == op && n.op == "softmax" && n.type.shape.back() != Dim(40)) narrow = true;
    (narrow ? kernels_13 : kernels_40) += 1;
    (narrow ? candidates_13 : candidates_40) = k.candidates.size();
  }
  CHECK(kernels_40 == 3);
  CHECK(kernels_13 == 1);
  CHECK(candidates_40 > 1);
  CHECK(candidates_13 > 1);
  CHECK(tuned.tune_measurements == candidates_40 + candidates_13);
  loom::testing::run_ok(compiled, {random_array(DType::f32(), {24, 40})});
}

TEST_CASE("fake GPU: a run on device memory copies nothing through the host, and runs on "
          "another stream wait for the last one",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = device_io_graph();
  CompiledGraph compiled = emulated_device_io(fake, dir.path());
  const NDArray x = random_array(DType::f32(), {5, 7}), y = random_array(DType::f32(), {7});
  const std::vector<NDArray> want = loom::testing::reference_run(g, {x, y});
  DeviceArrays mem;
  const std::vector<DeviceTensor> in = {mem.upload(x), mem.upload(y)};
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  const size_t before = fake.live_bytes();
  run_twice_on_device(fake, compiled, in, outs);
  const size_t device_runs = fake.live_bytes() - before;
  // Kernels (in the emulator) wrote the computed outputs in place; the others were copied.
  for (size_t o = 0; o < want.size(); ++o) {
    INFO("output " << o);
    require_close(mem.download(outs[o]), want[o], 1e-5);
  }

  // Another stream waits for the graph's once; the same stream again needs no wait; a host run
  // (the graph's own stream) waits again.
  absl::StatusOr<cuda::Stream> stream = mem.driver->create_stream();
  REQUIRE(stream.ok());
  int waits = fake.stream_waits();
  REQUIRE(compiled.enqueue_on_device(in, outs, *stream).ok());
  CHECK(fake.stream_waits() == waits + 1);
  REQUIRE(compiled.enqueue_on_device(in, outs, *stream).ok());
  CHECK(fake.stream_waits() == waits + 1);
  loom::testing::run_ok(compiled, {x, y});
  CHECK(fake.stream_waits() == waits + 2);
  CHECK(mem.driver->synchronize(*stream).ok());
  (void)mem.driver->destroy_stream(*stream);
  // Runs on device memory set up no device memory for the inputs and outputs (the caller's
  // buffers take their place); the first host run does: x, y and the two computed outputs (h
  // and its row sums), 256 bytes each (the device alignment).
  CHECK(fake.live_bytes() - before == device_runs + 4 * 256);
}

// Runs `compiled` (of device_io_graph) on host inputs `runs` times, fresh inputs each time, each
// against the reference; returns the CUDA graph launches (cuGraphLaunch) the runs made.
int host_runs(const FakeDriver& fake, const Graph& g, const CompiledGraph& compiled, int runs) {
  const int graphs = fake.graph_launches();
  for (int run = 0; run < runs; ++run) {
    INFO("host run " << run);
    const std::vector<NDArray> in = device_io_inputs();
    const int launched = fake.launches();
    const std::vector<NDArray> got = loom::testing::run_ok(compiled, in);
    // Replayed or not, every kernel runs once a run.
    CHECK(fake.launches() - launched == static_cast<int>(compiled.kernels().size()));
    const std::vector<NDArray> want = loom::testing::reference_run(g, in);
    REQUIRE(got.size() == want.size());
    for (size_t o = 0; o < want.size(); ++o) require_close(got[o], want[o], 1e-5);
  }
  return fake.graph_launches() - graphs;
}

TEST_CASE(
    "fake GPU: repeated runs replay their kernel launches as one CUDA graph, only on the "
    "device buffers it was captured with",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = device_io_graph();
  CompiledGraph compiled = emulated_device_io(fake, dir.path());
  // Host runs use the graph's own buffers: the first launches kernel by kernel, the second
  // captures the launches and replays them, as do the ones after.
  CHECK(host_runs(fake, g, compiled, 4) == 3);
  auto replays = [&fake] { return fake.graph_launches(); };
  auto launches = [&fake] { return fake.launches(); };
  runs_on_two_buffer_sets(g, compiled, device_io_inputs, 1e-5, replays, launches);
  {
    // Kernels with TMA tensor maps among their parameters.
    const Graph tma = tma_gemm_graph();
    CompileOptions options = loom::testing::cold_cache_options(dir.path());
    options.template_configs = {{"cuda_wgmma_gemm", wgmma_config(1, 128, 3, 1, 1)}};
    CompiledGraph gemm = compile_for(tma, Target::cuda(90), options);
    REQUIRE(gemm.kernels().size() >= 2);
    CHECK_THAT(gemm.kernels()[0].schedule, Catch::Contains("tma=1"));
    emulate_kernels(fake, gemm, dir.path());
    runs_on_two_buffer_sets(tma, gemm, tma_gemm_inputs, 2e-2, replays, launches);
  }
  // Queued on another stream, a replay waits for the last run as launches do.
  DeviceArrays mem;
  std::vector<DeviceTensor> in;
  for (const NDArray& a : device_io_inputs()) in.push_back(mem.upload(a));
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  for (int run = 0; run < 2; ++run) REQUIRE(compiled.run_on_device(in, outs).ok());
  absl::StatusOr<cuda::Stream> stream = mem.driver->create_stream();
  REQUIRE(stream.ok());
  const int graphs = fake.graph_launches(), waits = fake.stream_waits();
  REQUIRE(compiled.enqueue_on_device(in, outs, *stream).ok());
  REQUIRE(mem.driver->synchronize(*stream).ok());
  CHECK(fake.graph_launches() == graphs + 1);
  CHECK(fake.stream_waits() == waits + 1);
  (void)mem.driver->destroy_stream(*stream);
  // profile() times each kernel: one by one, between events (its warm-up run may replay).
  const int replayed = fake.graph_launches(), launched = fake.launches();
  absl::StatusOr<std::vector<double>> profiled = compiled.profile(device_io_inputs(), 2);
  REQUIRE(profiled.ok());
  CHECK(profiled->size() == compiled.kernels().size());
  CHECK(fake.graph_launches() <= replayed + 1);
  CHECK(fake.launches() - launched == 3 * static_cast<int>(compiled.kernels().size()));
}

TEST_CASE(
    "fake GPU: without CUDA graphs (switched off, or failing to instantiate) runs launch "
    "kernel by kernel",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = device_io_graph();
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  options.cuda_graphs = false;
  CompiledGraph off = compile_for(g, Target::cuda(90), options);
  emulate_kernels(fake, off, dir.path());
  CHECK(host_runs(fake, g, off, 3) == 0);
  // A driver that cannot instantiate the graph: the capture fails once, and the runs go on.
  fake.no_graphs(1);
  options.cuda_graphs = true;
  CompiledGraph failing = compile_for(g, Target::cuda(90), options);
  CHECK(host_runs(fake, g, failing, 3) == 0);
  fake.configure(-1, 0);
}

TEST_CASE(
    "fake GPU: a run queued inside the caller's stream capture becomes nodes of the caller's "
    "CUDA graph, whose replays match the reference",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const CompiledGraph compiled = emulated_device_io(fake, dir.path());
  captured_by_the_caller(device_io_graph(), compiled, &fake);
  // A capture the caller already broke (a synchronization inside it): the run says so and
  // queues nothing.
  DeviceArrays mem;
  std::vector<DeviceTensor> in;
  for (const NDArray& a : device_io_inputs()) in.push_back(mem.upload(a));
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  absl::StatusOr<cuda::Stream> engine = mem.driver->create_stream();
  REQUIRE(engine.ok());
  absl::Status queued;
  const int launches = fake.launches();
  absl::StatusOr<cuda::GraphExec> broken = mem.driver->capture(*engine, [&] {
    CHECK_FALSE(mem.driver->synchronize(*engine).ok());
    queued = compiled.enqueue_on_device(in, outs, *engine);
    return absl::OkStatus();
  });
  CHECK_FALSE(broken.ok());
  CHECK(queued.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(queued.message()), Catch::Contains("capture was invalidated"));
  CHECK(fake.launches() == launches);
  REQUIRE(mem.driver->destroy_stream(*engine).ok());
}

TEST_CASE(
    "fake GPU: instances of a compiled graph run on device memory and streams of their own, "
    "never waiting for each other, and share the constants",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = device_io_graph();
  const size_t live = fake.live_bytes();
  const size_t constants = 256;  // device_io_graph's one constant (3 floats), device-aligned
  {
    std::vector<CompiledGraph> instances = {emulated_device_io(fake, dir.path())};
    absl::StatusOr<CompiledGraph> second = instances[0].instance();
    REQUIRE(second.ok());
    instances.push_back(*std::move(second));
    CHECK(instances[1].kernels().size() == instances[0].kernels().size());
    // Each instance's first run sets up device memory of its own, as much as the other's; the
    // constants the first uploaded serve the second.
    const int copies = fake.host_copies();
    REQUIRE(instances[0].run(device_io_inputs()).ok());
    const int uploads = fake.host_copies() - copies;
    const size_t one = fake.live_bytes() - live;
    CHECK(one > constants);
    REQUIRE(instances[1].run(device_io_inputs()).ok());
    CHECK(fake.live_bytes() - live == 2 * one - constants);
    CHECK(fake.host_copies() - copies == 2 * uploads - 1);  // one constant uploaded once
    // Queued in turns, each instance on a stream of its own, on buffers of its own: after each
    // one's first run there, no run waits for the other's; every output matches the reference.
    // One instance taking the two streams in turns waits at every switch.
    DeviceArrays mem;
    std::vector<cuda::Stream> streams;
    std::vector<std::vector<DeviceTensor>> in(2), out(2);
    for (int k = 0; k < 2; ++k) {
      absl::StatusOr<cuda::Stream> s = mem.driver->create_stream();
      REQUIRE(s.ok());
      streams.push_back(*s);
      for (const NDArray& a : device_io_inputs()) in[k].push_back(mem.upload(a));
      out[k] = poisoned_outputs(mem, instances[0]);
    }
    for (const bool shared : {false, true}) {
      INFO((shared ? "one instance on both streams" : "an instance a stream"));
      int waits = 0;
      for (int run = 0; run < 8; ++run) {
        const int k = run % 2;
        const CompiledGraph& compiled = instances[shared ? 0 : k];
        std::vector<NDArray> values = device_io_inputs();
        for (size_t i = 0; i < values.size(); ++i)
          REQUIRE(mem.driver
                      ->copy_to_device(in[k][i].address, values[i].data(),
                                       static_cast<size_t>(values[i].nbytes()))
                      .ok());
        const int before = fake.stream_waits();
        REQUIRE(compiled.enqueue_on_device(in[k], out[k], streams[k]).ok());
        if (run >= 2) waits += fake.stream_waits() - before;
        REQUIRE(mem.driver->synchronize(streams[k]).ok());
        const std::vector<NDArray> want = loom::testing::reference_run(g, values);
        for (size_t o = 0; o < want.size(); ++o) {
          INFO("run " << run << ", output " << o);
          require_close(mem.download(out[k][o]), want[o], 1e-5);
        }
      }
      CHECK(waits == (shared ? 6 : 0));
    }
    for (cuda::Stream s : streams) REQUIRE(mem.driver->destroy_stream(s).ok());
    // The first instance gone, its memory goes but the constants stay with the second, which
    // still runs right, as does a third made from it (which uploads nothing again).
    const size_t both = fake.live_bytes();
    instances.erase(instances.begin());
    CHECK(both - fake.live_bytes() == one - constants);
    absl::StatusOr<CompiledGraph> third = instances[0].instance();
    REQUIRE(third.ok());
    instances.push_back(*std::move(third));
    const std::vector<NDArray> values = device_io_inputs();
    const std::vector<NDArray> want = loom::testing::reference_run(g, values);
    for (const CompiledGraph& compiled : instances) {
      absl::StatusOr<std::vector<NDArray>> got = compiled.run(values);
      REQUIRE(got.ok());
      for (size_t o = 0; o < want.size(); ++o) require_close((*got)[o], want[o], 1e-5);
    }
    CHECK(fake.live_bytes() == both);
  }
  CHECK(fake.live_bytes() == live);  // the instances' device memory and constants went with them
}

TEST_CASE(
    "fake GPU: compiled graphs holding the same constant bytes share them on the device, "
    "others do not",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  // 8448 bytes; element 528 (byte 2112) lies outside the bytes the pool samples (the first,
  // middle and last 64), so the third weight differs from the first only where a byte-for-byte
  // comparison sees it.
  const NDArray w = random_array(DType::f32(), {64, 33});
  NDArray off = w.copy();
  off.set(528, off.get(528) + 1.0);
  auto graph_with = [](const NDArray& c) {
    Graph g;
    g.output(g.input("x", {64, 33}).add(g.constant("w", c)).relu());
    return g;
  };
  const std::vector<NDArray> in = {random_array(DType::f32(), {64, 33})};
  const size_t live = fake.live_bytes(), weight = static_cast<size_t>(w.nbytes());
  // Graphs compiled one after another, each with weight c, run once: what each first run added
  // to device memory and how many host copies it made, its output checked.
  struct Compiled {
    std::vector<CompiledGraph> graphs;
    std::vector<size_t> added;
    std::vector<int> copies;
  };
  auto compile_and_run = [&](Compiled& all, const NDArray& c) {
    const Graph g = graph_with(c);
    all.graphs.push_back(
        compile_for(g, Target::cuda(90), loom::testing::cold_cache_options(dir.path())));
    emulate_kernels(fake, all.graphs.back(), dir.path());
    const size_t before = fake.live_bytes();
    const int copies_before = fake.host_copies();
    absl::StatusOr<std::vector<NDArray>> got = all.graphs.back().run(in);
    REQUIRE(got.ok());
    all.added.push_back(fake.live_bytes() - before);
    all.copies.push_back(fake.host_copies() - copies_before);
    require_close((*got)[0], loom::testing::reference_run(g, in)[0], 1e-6);
  };
  // A graph's output after its first run, against the reference with weight w.
  auto runs_with_w = [&](const CompiledGraph& compiled) {
    absl::StatusOr<std::vector<NDArray>> again = compiled.run(in);
    REQUIRE(again.ok());
    require_close((*again)[0], loom::testing::reference_run(graph_with(w), in)[0], 1e-6);
  };
  {
    Compiled all;
    for (const NDArray& c : {w, w.copy(), off}) compile_and_run(all, c);
    // The second (the same bytes in other storage) uploads no weight; the third (one element
    // off) its own.
    CHECK(all.added[0] > weight);
    CHECK(all.added[1] == all.added[0] - weight);
    CHECK(all.added[2] == all.added[0]);
    // The first gone, the second still reads the weight it shares.
    all.graphs.erase(all.graphs.begin());
    CHECK(fake.live_bytes() - live == all.added[1] + weight + all.added[2]);
    runs_with_w(all.graphs[0]);
  }
  CHECK(fake.live_bytes() == live);
  // Sharing keeps no host data alive: the graph that uploaded the weight gone, its host bytes go
  // too while another graph still reads the device copy. A graph compiled next with the same
  // bytes finds that copy (compared on a copy back from the device: one more copy on its first
  // run) and stands for its host bytes from then on (the one after needs no copy back).
  {
    bool freed = false;
    Compiled all;
    {
      auto* bytes = new float[w.numel()];
      std::memcpy(bytes, w.data(), static_cast<size_t>(w.nbytes()));
      compile_and_run(all, NDArray::adopt(std::shared_ptr<void>(bytes,
                                                                [&freed](void* p) {
                                                                  delete[] static_cast<float*>(p);
                                                                  freed = true;
                                                                }),
                                          DType::f32(), {64, 33}));
    }
    compile_and_run(all, w.copy());
    CHECK(all.added[1] == all.added[0] - weight);
    CHECK_FALSE(freed);
    all.graphs.erase(all.graphs.begin());
    CHECK(freed);
    compile_and_run(all, w.copy());
    compile_and_run(all, w.copy());
    CHECK(all.added[2] == all.added[1]);
    CHECK(all.added[3] == all.added[1]);
    // With no graph holding the host bytes left but the one that shares the device copy, bytes
    // one element off compare unequal on the device: uploaded (4 copies: back, up, in, out).
    all.graphs.erase(all.graphs.begin() + 1, all.graphs.end());
    compile_and_run(all, off);
    CHECK(all.added[4] == all.added[0]);
    CHECK(all.copies == std::vector<int>{3, 2, 3, 2, 4});  // the first uploads the weight
    runs_with_w(all.graphs[0]);
  }
  CHECK(fake.live_bytes() == live);
  // The bindings of a graph compiled per binding of its dims read one upload of the weight: the
  // second binding's first run copies the input in and the output out, nothing else.
  {
    Graph g;
    g.output(g.input("x", {Dim("n"), Dim(33)})
                 .add(g.constant("w", random_array(DType::f32(), {33})))
                 .relu());
    CompiledGraph family =
        compile_for(g, Target::cuda(90), loom::testing::cold_cache_options(dir.path()));
    std::vector<int> copies;
    for (const int64_t n : {3, 5}) {
      INFO("n = " << n);
      absl::StatusOr<CompiledGraph> bound = family.specialize({{"n", n}});
      REQUIRE(bound.ok());
      emulate_kernels(fake, *bound, dir.path());
      const std::vector<NDArray> x = {random_array(DType::f32(), {n, 33})};
      const int before = fake.host_copies();
      absl::StatusOr<std::vector<NDArray>> got = bound->run(x);
      REQUIRE(got.ok());
      copies.push_back(fake.host_copies() - before);
      require_close((*got)[0], loom::testing::reference_run(g, x)[0], 1e-6);
    }
    CHECK(copies[0] == 3);
    CHECK(copies[1] == 2);
  }
  CHECK(fake.live_bytes() == live);
}

TEST_CASE("fake GPU: memory_use() tells the device memory a graph's runs set up", "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  // x + c, exp, relu, a kernel each: two intermediates of 7 x 13 floats (364 bytes, 384 in the
  // plan), both alive while exp runs; the input and the output, 512 bytes each in the block of
  // runs from the host (the device alignment).
  Graph g;
  g.output(
      g.input("x", {7, 13}).add(g.constant("c", random_array(DType::f32(), {13}))).exp().relu());
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  options.fuse = false;
  options.graph_passes = false;
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  REQUIRE(compiled.kernels().size() == 3);
  absl::StatusOr<MemoryUse> use = compiled.memory_use();
  REQUIRE(use.ok());
  CHECK(use->constants == 256);  // 13 floats, device-aligned
  CHECK(use->intermediates == 768);
  CHECK(use->host_inputs_outputs == 1024);
  // A run on device memory sets up the constants and the intermediates; the first from the host
  // adds its block. (The kernels do not run here: only the memory is looked at.)
  DeviceArrays mem;
  const std::vector<DeviceTensor> in = {mem.upload(random_array(DType::f32(), {7, 13}))};
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  const size_t live = fake.live_bytes();
  REQUIRE(compiled.run_on_device(in, outs).ok());
  CHECK(fake.live_bytes() - live == static_cast<size_t>(use->constants + use->intermediates));
  REQUIRE(compiled.run({random_array(DType::f32(), {7, 13})}).ok());
  CHECK(fake.live_bytes() - live ==
        static_cast<size_t>(use->constants + use->intermediates + use->host_inputs_outputs));
}

TEST_CASE("fake GPU: TMA tensor maps follow a run's device buffers", "[.fake_cuda]") {
  // A warpgroup GEMM with TMA copies reads x through a tensor map encoded at launch over x's
  // address: runs on other device buffers (other data) must not reuse the last map.
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  Graph g;
  const NDArray w = random_array(DType::f16(), {64, 48});
  g.output(g.input("x", {40, 64}, DType::f16()).matmul(g.constant("w", w)));
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  options.template_configs = {{"cuda_wgmma_gemm", wgmma_config(1, 128, 3, 1, 1)}};
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  REQUIRE(compiled.kernels().size() == 1);
  CHECK_THAT(compiled.kernels()[0].schedule, Catch::Contains("tma=1"));
  emulate_kernels(fake, compiled, dir.path());
  DeviceArrays mem;
  std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
  for (int run = 0; run < 3; ++run) {  // a fresh input buffer each time (the last one kept)
    INFO("run " << run);
    const NDArray x = random_array(DType::f16(), {40, 64});
    const std::vector<DeviceTensor> in = {mem.upload(x)};
    absl::Status s = compiled.run_on_device(in, outs);
    INFO(s.ToString());
    REQUIRE(s.ok());
    require_close(mem.download(outs[0]), loom::testing::reference_run(g, {x})[0], 1e-2);
  }
}

TEST_CASE("fake GPU: every operator family runs in the CUDA emulator and matches the reference",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  for (const GraphCase& c : graph_cases()) {
    INFO(c.name);
    loom::testing::TempDir dir;
    const Graph g = c.build();
    CompiledGraph compiled = compile_for(g, Target::cuda(90),
                                         loom::testing::cold_cache_options(dir.path()));
    emulate_kernels(fake, compiled, dir.path());
    const std::vector<NDArray> want = loom::testing::reference_run(g, c.inputs);
    const std::vector<NDArray> got = loom::testing::run_ok(compiled, c.inputs);
    REQUIRE(got.size() == want.size());
    for (size_t o = 0; o < got.size(); ++o) {
      INFO("output " << o);
      require_close(got[o], want[o], c.tol);
    }
  }
}

// The tensor-core GEMMs store a lane's two adjacent output columns as one pair. In an NCHW conv
// the pair is two adjacent pixels of a channel's plane, stored at once through the fused
// epilogue: in one row of the image (W even), or straddling two rows (W odd), still adjacent in
// memory. Both, emulated.
TEST_CASE(
    "fake GPU: f16 convolutions store pixel pairs through their fused epilogue, also pairs "
    "that straddle two rows",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  for (int64_t width : {8, 7}) {
    INFO("6 x " << width << " pixels");
    Graph g;
    Tensor x = g.input("x", {2, 8, 6, width}, DType::f16());
    g.output(x.conv2d(g.constant("w", random_array(DType::f16(), {16, 8, 3, 3}, -0.3, 0.3)),
                      {.padding = 1})
                 .add(g.constant("b", random_array(DType::f16(), {1, 16, 1, 1})))
                 .relu());
    loom::testing::TempDir dir;
    CompiledGraph compiled =
        compile_for(g, Target::cuda(90), loom::testing::cold_cache_options(dir.path()));
    REQUIRE(compiled.kernels().size() == 1);
    CHECK_THAT(compiled.kernels()[0].schedule, Catch::StartsWith("cuda_wgmma_conv2d") ||
                                                   Catch::StartsWith("cuda_tensor_core_conv2d"));
    emulate_kernels(fake, compiled, dir.path());
    const std::vector<NDArray> in = {random_array(DType::f16(), {2, 8, 6, width})};
    require_close(loom::testing::run_ok(compiled, in)[0], loom::testing::reference_run(g, in)[0],
                  2e-2);
  }
}

// Three layers of one shape (their own weights, their own names): NVRTC compiles one kernel for
// the three matmuls, whose launches still read each layer's weights and write its output; the
// layer-norm kernels differ (by their eps: 0.2, 0.8, 1.8, far apart in the results) and stay
// apart.
TEST_CASE("fake GPU: identical layers share one kernel of the module and each computes its own",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const GraphCase c{"three linear layers",
                    [] {
                      Graph g;
                      Tensor h = g.input("x", {19, 40});
                      for (int layer = 0; layer < 3; ++layer) {
                        const std::string l = std::to_string(layer);
                        h = h.matmul(weights(g, "w" + l, {40, 40}))
                                .add(weights(g, "b" + l, {40}))
                                .relu()
                                .add(h)
                                .layer_norm(weights(g, "gamma" + l, {40}),
                                            weights(g, "beta" + l, {40}), -1, 0.2 * (layer + 1) * (layer + 1));
                      }
                      g.output(h.softmax(-1));
                      return g;
                    },
                    {random_array(DType::f32(), {19, 40})}};
  loom::testing::TempDir dir;
  const Graph g = c.build();
  CompiledGraph compiled =
      compile_for(g, Target::cuda(90), loom::testing::cold_cache_options(dir.path()));
  size_t matmuls = 0;
  for (const KernelInfo& k : compiled.kernels())
    matmuls += std::count_if(k.ops.begin(), k.ops.end(),
                             [](const std::string& op) { return op.rfind("matmul", 0) == 0; });
  REQUIRE(matmuls == 3);
  const size_t kernels = compiled.kernels().size();
  REQUIRE(kernels >= 6);
  // The module's parts, each compiled apart, hold every definition once.
  std::set<std::string> parts;
  for (const KernelInfo& k : compiled.kernels()) parts.insert(k.cache_key);
  size_t defined = 0;
  for (const std::string& key : parts) {
    std::ifstream source(dir.path() / key / "source.txt");
    const std::string text((std::istreambuf_iterator<char>(source)),
                           std::istreambuf_iterator<char>());
    for (size_t at = text.find("__global__"); at != std::string::npos;
         at = text.find("__global__", at + 1))
      ++defined;
  }
  // Two matmul kernels fewer; the three layer norms stay three. The five or more definitions
  // are more than one part takes (four), so launches go to several loaded modules.
  CHECK(defined == kernels - 2);
  CHECK(parts.size() >= 2);
  emulate_kernels(fake, compiled, dir.path());
  const std::vector<NDArray> want = loom::testing::reference_run(g, c.inputs);
  const std::vector<NDArray> got = loom::testing::run_ok(compiled, c.inputs);
  REQUIRE(got.size() == 1);
  require_close(got[0], want[0], c.tol);
}

namespace {

// Compiles case c for sm_90 (or sm, and sm_count SMs) with the given template configs forced,
// runs it on the stand-in driver with its kernels emulated (on c's inputs, then on fresh ones),
// and checks the outputs against the reference; returns how many kernels took a forced config.
// before_runs (given the compiled graph and its cache directory) and after_run (after each run)
// check or set up more.
int check_forced_configs(
    FakeDriver& fake, const GraphCase& c, const std::map<std::string, tune::Config>& configs,
    int sm = 90, int sm_count = 0,
    const std::function<void(const CompiledGraph&, const fs::path&)>& before_runs = {},
    const std::function<void()>& after_run = {}) {
  loom::testing::TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  options.template_configs = configs;
  const Graph g = c.build();
  CompiledGraph compiled = compile_for(g, Target::cuda(sm).set_sm_count(sm_count), options);
  int forced = 0;
  for (const KernelInfo& kernel : compiled.kernels())
    for (const auto& [name, config] : configs)
      forced += kernel.schedule.find(name + "[" + config.to_string() + "]") != std::string::npos;
  emulate_kernels(fake, compiled, dir.path());
  if (before_runs) before_runs(compiled, dir.path());
  // The second run, on fresh inputs, reuses what the first left on the GPU.
  std::vector<NDArray> inputs = c.inputs;
  for (int run = 0; run < 2; ++run) {
    INFO("run " << run);
    if (run == 1)
      for (NDArray& in : inputs)
        if (in.dtype().is_float()) in = random_array(in.dtype(), in.shape());
    const std::vector<NDArray> want = loom::testing::reference_run(g, inputs);
    const std::vector<NDArray> got = loom::testing::run_ok(compiled, inputs);
    REQUIRE(got.size() == want.size());
    for (size_t o = 0; o < got.size(); ++o) {
      INFO("output " << o);
      require_close(got[o], want[o], c.tol);
    }
    if (after_run) after_run();
  }
  return forced;
}

// gelu(x w + b), x [M, K] and w [K, N] in dtype t (by default [37, K] and [K, 44]: a GEMM with
// too few tiles to fill the SMs, to split along K, and an epilogue for the block that sums the
// splits).
GraphCase linear_layer_case(int64_t K, DType t, double tol, int64_t M = 37, int64_t N = 44) {
  return {"linear layer",
          [K, t, M, N] {
            Graph g;
            Tensor x = g.input("x", {M, K}, t);
            Tensor w = g.input("w", {K, N}, t);
            Tensor b = g.input("b", {N}, t);
            g.output(x.matmul(w).add(b).gelu());
            return g;
          },
          {random_array(t, {M, K}), random_array(t, {K, N}), random_array(t, {N})},
          tol};
}

}  // namespace

TEST_CASE("fake GPU: tensor-core kernels of other configs, dynamic shared memory included, match "
          "the reference in the emulator",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  auto tc = [](int64_t wm, int64_t wn, int64_t mm, int64_t mn, int64_t bk, int64_t stages,
               int64_t swizzle, int64_t split_k = 1) {
    return tune::Config({{"warps_m", wm}, {"warps_n", wn}, {"mma_m", mm}, {"mma_n", mn},
                         {"block_k", bk}, {"stages", stages}, {"swizzle", swizzle},
                         {"split_k", split_k}});
  };
  // 128 x 128 tiles in 4 stages need 75 KiB of shared memory: the kernels opt in at load, and
  // the stand-in driver refuses launches past a function's limit as a GPU does.
  const std::vector<GraphCase> cases = graph_cases();
  const auto tensor_cores = std::find_if(cases.begin(), cases.end(), [](const GraphCase& g) {
    return g.name.rfind("tensor cores", 0) == 0;
  });
  REQUIRE(tensor_cores != cases.end());
  const GraphCase& c = *tensor_cores;
  auto wg = [](int64_t warpgroups, int64_t block_n, int64_t stages, int64_t tma = 0) {
    return wgmma_config(warpgroups, block_n, stages, 1, tma);
  };
  const std::vector<tune::Config> warpgroup_configs = {wg(1, 64, 2), wg(2, 128, 4),
                                                       wg(1, 256, 3), wg(2, 64, 3)};
  const std::vector<tune::Config> configs = {tc(2, 2, 4, 8, 32, 4, 0), tc(2, 2, 4, 8, 32, 4, 1),
                                             tc(2, 1, 1, 2, 32, 2, 1), tc(1, 2, 2, 2, 16, 3, 1)};
  // Both matmuls and both convolutions: wgmma on sm_90, mma.sync on sm_80 (the stand-in driver
  // runs either in the emulator).
  for (size_t k = 0; k < configs.size(); ++k) {
    INFO("configs " << configs[k].to_string() << "; " << warpgroup_configs[k].to_string());
    CHECK(check_forced_configs(fake, c,
                               {{"cuda_wgmma_gemm", warpgroup_configs[k]},
                                {"cuda_wgmma_conv2d", warpgroup_configs[k]}}) == 4);
    CHECK(check_forced_configs(fake, c,
                               {{"cuda_tensor_core_gemm", configs[k]},
                                {"cuda_tensor_core_conv2d", configs[k]}},
                               80) == 4);
  }
  // The two matmuls (rows of 16-byte multiples) copied by TMA, through tensor maps the stand-in
  // driver encodes at each launch; the convolutions as tuned.
  for (const tune::Config& tma : {wg(1, 64, 2, 1), wg(2, 256, 4, 1)}) {
    INFO("TMA config " << tma.to_string());
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", tma}}) == 2);
  }
}

TEST_CASE("fake GPU: a split-K tensor-core GEMM with a fused bias and gelu matches the reference "
          "in the emulator, run after run",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // K = 1031 (prime: copies through registers) or 1024 split 4 or 8 ways, the last block of a
  // tile applying the epilogue: the mma.sync GEMM (sm_80, 32 x 32 tiles) and the wgmma one
  // (sm_90, 64 x 64 tiles).
  for (const int64_t K : {int64_t{1031}, int64_t{1024}}) {
    const GraphCase c = linear_layer_case(K, DType::f16(), 2e-2);
    const int64_t split = K == 1024 ? 8 : 4;
    const tune::Config config({{"warps_m", 1}, {"warps_n", 2}, {"mma_m", 2}, {"mma_n", 2},
                               {"block_k", 32}, {"stages", 3}, {"swizzle", 1},
                               {"split_k", split}});
    const tune::Config warpgroup = wgmma_config(1, 64, 3, split);
    INFO("K " << K);
    CHECK(check_forced_configs(fake, c, {{"cuda_tensor_core_gemm", config}}, 80) == 1);
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", warpgroup}}) == 1);
  }
}

TEST_CASE("fake GPU: warpgroup GEMMs in clusters of two blocks sharing B, with a fused bias and "
          "gelu, match the reference in the emulator, run after run",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // 131 x 256 x 136: two M tiles of 128 rows (the second 3 rows deep) a cluster, 4 slices
  // through 2 stages (refilled), N past the second tile; then split in two along K.
  const GraphCase c = linear_layer_case(256, DType::f16(), 2e-2, 131, 136);
  for (const int64_t split : {int64_t{1}, int64_t{2}}) {
    const tune::Config config = wgmma_config(2, 128, 2, split, 1, 2);
    INFO("config " << config.to_string());
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", config}}) == 1);
  }
}

TEST_CASE(
    "fake GPU: persistent warpgroup GEMM blocks walking tiles, with a fused bias and gelu, "
    "match the reference in the emulator, run after run",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // 200 x 136 x 200 compiled for one SM: 12 tiles of 64 x 64 walked by the 3 blocks the SM
  // holds (4 slices each through 2 stages), or 2 items of two 128-row tiles walked by one
  // cluster; each tile's C through the fused epilogue.
  const GraphCase c = linear_layer_case(200, DType::f16(), 2e-2, 200, 136);
  for (const tune::Config& persistent :
       {wgmma_config(1, 64, 2, 1, 1, 1, 1), wgmma_config(2, 128, 2, 1, 1, 2, 1)}) {
    INFO("config " << persistent.to_string());
    // Loading the persistent kernel asks for the most shared memory (all of its blocks must fit
    // on the SMs at once); the graph's other kernels, and the same tiles not persistent, do not.
    const int hints = fake.max_shared_carveouts();
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", persistent}}, 90, 1) == 1);
    CHECK(fake.max_shared_carveouts() > hints);
    tune::Config not_persistent = persistent;
    not_persistent.set("persistent", 0);
    const int before = fake.max_shared_carveouts();
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", not_persistent}}, 90, 1) == 1);
    CHECK(fake.max_shared_carveouts() == before);
  }
}

TEST_CASE(
    "fake GPU: a persistent grid larger than the device holds at once launches as many blocks "
    "as it holds, which walk every tile and match the reference",
    "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // 200 x 136 x 200 compiled for two SMs: 64 x 64 tiles (12) in a grid of 6 blocks, 3 an SM by
  // the template's estimate; or pairs of 64 x 128 tiles (4 items) in a grid of two clusters.
  // The device (two SMs here) holds fewer: 2 blocks an SM, or one cluster.
  const GraphCase c = linear_layer_case(200, DType::f16(), 2e-2, 200, 136);
  struct Case {
    tune::Config config;
    int blocks_per_sm, clusters;  // what the device holds (-1: by threads and shared memory)
    int launched;                 // the grid (x)
  };
  // The third: the device holds all 6 blocks (by its threads and shared memory).
  for (const Case& k : {Case{wgmma_config(1, 64, 2, 1, 1, 1, 1), 2, -1, 4},
                        Case{wgmma_config(1, 128, 3, 1, 1, 2, 1), -1, 1, 2},
                        Case{wgmma_config(1, 64, 2, 1, 1, 1, 1), -1, -1, 6}}) {
    INFO("config " << k.config.to_string() << ", the device holding " << k.blocks_per_sm
                   << " blocks an SM, " << k.clusters << " clusters");
    std::string gemm;  // the persistent kernel's name
    auto persistent = [&](const CompiledGraph& compiled, const fs::path& dir) {
      for (const KernelInfo& kernel : compiled.kernels()) {
        if (kernel.schedule.find("persistent=1") == std::string::npos) continue;
        gemm = kernel.name;
        std::ifstream source(dir / kernel.cache_key / "source.txt");
        const std::string text((std::istreambuf_iterator<char>(source)),
                               std::istreambuf_iterator<char>());
        CHECK_THAT(text, Catch::Contains("gridDim.x"));  // the walk's step, counted at run time
      }
      REQUIRE(!gemm.empty());
      fake.occupancy(2, k.blocks_per_sm, k.clusters);
    };
    auto grid = [&] { CHECK(fake.last_grid(gemm.c_str()) == k.launched); };
    CHECK(check_forced_configs(fake, c, {{"cuda_wgmma_gemm", k.config}}, 90, 2, persistent, grid) ==
          1);
    fake.configure(-1, 0);
  }
}

TEST_CASE("fake GPU: a split-K SIMT GEMM (f32) with a fused bias and gelu matches the reference "
          "in the emulator, run after run",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  // 16 x 32 tiles, K = 1031 (prime: the last slice has a tail) split 4 ways, or K = 1024 split 8
  // ways: the last block of a tile sums the partials and applies the epilogue.
  for (const int64_t K : {int64_t{1031}, int64_t{1024}}) {
    const GraphCase c = linear_layer_case(K, DType::f32(), 1e-4);
    const tune::Config config({{"warps_m", 2}, {"warps_n", 2}, {"lanes_m", 4}, {"outer_m", 1},
                               {"outer_n", 1}, {"inner_m", 2}, {"inner_n", 2}, {"block_k", 8},
                               {"split_k", K == 1024 ? 8 : 4}});
    INFO("K " << K);
    CHECK(check_forced_configs(fake, c, {{"cuda_simt_gemm", config}}) == 1);
  }
}

TEST_CASE("fake GPU: fused template kernels of other configs match the reference in the emulator",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const std::vector<std::map<std::string, tune::Config>> choices = {
      {{"cuda_simt_gemm", tune::Config({{"warps_m", 2}, {"warps_n", 2}, {"lanes_m", 8},
                                        {"outer_m", 1}, {"outer_n", 2}, {"inner_m", 2},
                                        {"inner_n", 4}, {"block_k", 8}, {"split_k", 1}})},
       {"cuda_direct_conv2d", tune::Config({{"threads", 64}, {"oc_threads", 2},
                                            {"oc_per_thread", 2}, {"px_per_thread", 4}})}},
      {{"cuda_simt_gemm", tune::Config({{"warps_m", 1}, {"warps_n", 1}, {"lanes_m", 4},
                                        {"outer_m", 2}, {"outer_n", 1}, {"inner_m", 4},
                                        {"inner_n", 2}, {"block_k", 16}, {"split_k", 1}})},
       {"cuda_direct_conv2d", tune::Config({{"threads", 256}, {"oc_threads", 8},
                                            {"oc_per_thread", 1}, {"px_per_thread", 1}})}}};
  const std::vector<GraphCase> cases = graph_cases();
  for (size_t which : {size_t{2}, size_t{5}}) {  // convolutions; the attention block
    for (size_t k = 0; k < choices.size(); ++k) {
      INFO(cases[which].name << ", configs " << k);
      CHECK(check_forced_configs(fake, cases[which], choices[k]) > 0);
    }
  }
}

namespace {

// A small f16 ResNet piece: a stem of 3 channels (which the NHWC implicit GEMM does not take:
// 16-byte chunks need channels in eights), a 3x3 conv with bias and relu, a 1x1 conv with a
// residual, max pooling, a strided 3x3 conv; odd and prime extents.
Graph nhwc_block() {
  Graph g;
  auto w = [&](const std::string& name, std::vector<int64_t> shape) {
    return g.constant(name, random_array(DType::f16(), std::move(shape), -0.3, 0.3));
  };
  Tensor x = g.input("x", {2, 3, 11, 9}, DType::f16());
  Tensor stem = x.conv2d(w("w0", {16, 3, 3, 3}), {.padding = 1}).relu();
  Tensor c1 =
      stem.conv2d(w("w1", {24, 16, 3, 3}), {.padding = 1}).add(w("b1", {1, 24, 1, 1})).relu();
  Tensor c2 = c1.conv2d(w("w2", {24, 24, 1, 1})).add(c1);
  Tensor p = c2.max_pool2d({.kernel = 2, .stride = 2});
  g.output(p.conv2d(w("w3", {8, 24, 3, 3}), {.stride = 2, .padding = 1}).relu());
  g.output(c1.mean({2, 3}));
  return g;
}

CompileOptions nhwc_options(CompileOptions options,
                            std::vector<LayoutStep> layout = channels_last()) {
  options.layouts = LayoutPolicy::kFixed;
  options.fixed_layout = std::move(layout);
  return options;
}

// The kernels of compiled whose schedule starts with `prefix`.
int count_schedules(const CompiledGraph& compiled, const std::string& prefix) {
  return static_cast<int>(
      std::count_if(compiled.kernels().begin(), compiled.kernels().end(),
                    [&](const KernelInfo& k) { return k.schedule.rfind(prefix, 0) == 0; }));
}

}  // namespace

TEST_CASE(
    "CUDA graphs: with channels_last fixed, convolutions run as NHWC implicit GEMMs with "
    "HWIO weights folded at compile time",
    "[cuda][cuda_graph]") {
  if (!have_nvrtc()) return;
  for (int sm : {80, 90}) {
    INFO("sm_" << sm);
    const Graph g = nhwc_block();
    CompiledGraph compiled = compile_for(g, Target::cuda(sm), nhwc_options({}));
    // NCHW8c too: 8 channels of a pixel are 16 contiguous bytes as well.
    CompiledGraph blocked = compile_for(g, Target::cuda(sm), nhwc_options({}, channels_blocked(8)));
    CHECK(blocked.kernels().size() == 6);
    const std::string gemm = sm == 90 ? "cuda_wgmma_conv2d[" : "cuda_tensor_core_conv2d[";
    // The stem (3 channels) and the three others are implicit GEMMs; only the conversions of
    // the stem's output and of the graph's outputs run: the weights were converted once.
    CHECK(count_schedules(compiled, gemm) == 4);
    int conversions = 0;
    for (const KernelInfo& k : compiled.kernels())
      for (const std::string& op : k.ops) conversions += op.rfind("layout_transform", 0) == 0;
    CHECK(conversions == 3);
    std::string report;
    for (const KernelInfo& k : compiled.kernels()) report += k.name + ": " + k.schedule + "\n";
    INFO(report);
    // Bias, relu, residual and conversions fused: the four convs, the pooling, the mean.
    CHECK(compiled.kernels().size() == 6);
  }
  // A warm compile (the kernel cache on disk) compiles nothing, its weights stored HWIO again.
  loom::testing::TempDir dir;
  const CompileOptions options = nhwc_options(loom::testing::cold_cache_options(dir.path()));
  const Graph g = nhwc_block();
  CompiledGraph cold = compile_for(g, Target::cuda(90), options);
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  CompiledGraph warm = compile_for(g, Target::cuda(90), options);
  CHECK((stats() - before).nvrtc_compiles == 0);
  REQUIRE(warm.kernels().size() == cold.kernels().size());
  for (size_t k = 0; k < warm.kernels().size(); ++k)
    CHECK(warm.kernels()[k].cache_key == cold.kernels()[k].cache_key);
  int laid = 0;
  for (const Node& n : warm.graph().nodes())
    laid += n.kind == Node::Kind::kConstant && n.type.layout == weights_hwio();
  CHECK(laid == 3);
}

TEST_CASE("fake GPU: NHWC implicit-GEMM convolutions (fixed channels_last) match the reference",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  const NDArray x = random_array(DType::f16(), {2, 3, 11, 9});
  // relu(conv1x1(y) + b), 16 channels to 24, over an image [2, 16, h, w].
  auto pointwise_conv = [](int64_t h, int64_t w) {
    Graph g;
    g.output(g.input("y", {2, 16, h, w}, DType::f16())
                 .conv2d(g.constant("w", random_array(DType::f16(), {24, 16, 1, 1})))
                 .add(g.constant("b", random_array(DType::f16(), {1, 24, 1, 1})))
                 .relu());
    return g;
  };
  const NDArray y = random_array(DType::f16(), {2, 16, 5, 7});
  const Graph pointwise = pointwise_conv(5, 7);
  // 286 pixels: five M tiles of 64.
  const NDArray wide_y = random_array(DType::f16(), {2, 16, 13, 11});
  const Graph wide = pointwise_conv(13, 11);
  struct Case {
    std::string name;
    Graph graph;
    NDArray input;
    int gemms;
    std::map<std::string, tune::Config> configs;
    std::vector<LayoutStep> layout = channels_last();
    int sm_count = 0;  // the SMs the target assumes (0: the device's)
  };
  // One warpgroup, 3 stages, TMA, unsplit.
  auto tma_config = [](int64_t block_n, int64_t cluster, int64_t persistent) {
    return wgmma_config(1, block_n, 3, 1, 1, cluster, persistent);
  };
  const tune::Config tma = tma_config(64, 1, 0);
  const std::vector<Case> cases = {
      {"the block, default configs", nhwc_block(), x, 4, {}},
      // A 1x1 conv reads the image as the plain [pixels, channels] matrix: TMA copies it.
      {"a 1x1 conv with TMA", pointwise, y, 1, {{"cuda_wgmma_conv2d", tma}}},
      // 70 pixels: two M tiles of 64, one cluster; B (24 channels) in one tile of two atoms.
      {"a 1x1 conv with TMA in clusters of two",
       pointwise,
       y,
       1,
       {{"cuda_wgmma_conv2d", tma_config(128, 2, 0)}}},
      // Compiled for one SM, which holds 3 blocks: they walk the 5 tiles.
      {"a 1x1 conv with TMA, persistent blocks",
       wide,
       wide_y,
       1,
       {{"cuda_wgmma_conv2d", tma_config(64, 1, 1)}},
       channels_last(),
       1},
      {"a 1x1 conv with cp.async", pointwise, y, 1, {}},
      {"the block in NCHW8c", nhwc_block(), x, 4, {}, channels_blocked(8)},
      {"a 1x1 conv in NCHW8c (its windows gathered)", pointwise, y, 1, {}, channels_blocked(8)},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    loom::testing::TempDir dir;
    CompileOptions options = nhwc_options(loom::testing::cold_cache_options(dir.path()), c.layout);
    options.template_configs = c.configs;
    CompiledGraph compiled =
        compile_for(c.graph, Target::cuda(90).set_sm_count(c.sm_count), options);
    CHECK(count_schedules(compiled, "cuda_wgmma_conv2d[") == c.gemms);
    for (const auto& [name, config] : c.configs)
      CHECK(count_schedules(compiled, name + "[" + config.to_string() + "]") == c.gemms);
    // Every conv but a stem of 3 channels reads and writes the layout.
    int laid = 0;
    for (const Node& n : compiled.graph().nodes())
      laid += n.op == "conv2d" && n.type.layout == c.layout &&
              compiled.graph().nodes()[n.inputs[0]].type.layout == c.layout;
    CHECK(laid == (c.gemms == 4 ? 3 : 1));
    emulate_kernels(fake, compiled, dir.path());
    const std::vector<NDArray> want = loom::testing::reference_run(c.graph, {c.input});
    const std::vector<NDArray> got = loom::testing::run_ok(compiled, {c.input});
    REQUIRE(got.size() == want.size());
    for (size_t o = 0; o < got.size(); ++o) {
      INFO("output " << o);
      require_close(got[o], want[o], 2e-2);
    }
    // On device memory, a run after the first copies nothing through the host: the weights
    // were stored HWIO once.
    DeviceArrays mem;
    const std::vector<DeviceTensor> in = {mem.upload(c.input)};
    std::vector<DeviceTensor> outs = poisoned_outputs(mem, compiled);
    run_twice_on_device(fake, compiled, in, outs);
    require_close(mem.download(outs[0]), want[0], 2e-2);
  }
}

TEST_CASE("fake GPU: the joint layout search on CUDA times the conv layouts and its choice matches "
          "the reference",
          "[.fake_cuda]") {
  FakeDriver fake = fake_driver();
  loom::testing::TempDir dir;
  const Graph g = nhwc_block();
  const NDArray x = random_array(DType::f16(), {2, 3, 11, 9});
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  options.layouts = LayoutPolicy::kJoint;
  // The stand-in device's times are all alike: the choice is arbitrary, but whichever it is,
  // its weights are stored in their layouts at compile time and its outputs are right.
  CompiledGraph compiled = compile_for(g, Target::cuda(90), options);
  for (const Node& n : compiled.graph().nodes())
    if (n.op == "layout_transform")
      CHECK(compiled.graph().nodes()[n.inputs[0]].kind != Node::Kind::kConstant);
  CHECK(count_schedules(compiled, "cuda_wgmma_conv2d[") == 4);
  emulate_kernels(fake, compiled, dir.path());
  const std::vector<NDArray> want = loom::testing::reference_run(g, {x});
  const std::vector<NDArray> got = loom::testing::run_ok(compiled, {x});
  REQUIRE(got.size() == want.size());
  for (size_t o = 0; o < got.size(); ++o) {
    INFO("output " << o);
    require_close(got[o], want[o], 2e-2);
  }
}
