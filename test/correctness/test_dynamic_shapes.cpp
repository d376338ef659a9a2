// Dynamic shapes: a graph with symbolic dims compiles each binding of them on first sight, with
// schedule templates like a static graph, reuses it after (in memory, then from the disk cache in
// a new compile), checks the bound dims against every shape rule, and builds a binding once when
// threads race for it.

#include <thread>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/ir/op.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::cold_cache_options;
using loom::testing::random_array;
using loom::testing::run_ok;
using loom::testing::reference_run;
using loom::testing::require_close;
using loom::testing::TempDir;

namespace {

constexpr int64_t kFeatures = 48, kHidden = 40;

// [batch, 48] x [48, 40] (a constant, packed by the GEMM template), softmax over rows, and a
// reshape whose target names the symbolic dim.
Graph dense_softmax(const NDArray& w) {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), kFeatures});
  Tensor y = x.matmul(g.constant("w", w)).softmax(-1);
  g.output(y.reshape({Dim("batch"), 2, -1}));
  return g;
}

bool uses_template(const CompiledGraph& c) {
  for (const KernelInfo& k : c.kernels())
    if (k.schedule != "default") return true;
  return false;
}

void require_error(const absl::Status& s, const std::string& fragment) {
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.message().find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("dynamic shapes: each batch compiles once, with templates, then runs without compiling",
          "[dynamic]") {
  TempDir dir;
  NDArray w = random_array(DType::f32(), {kFeatures, kHidden});
  Graph g = dense_softmax(w);
  auto compiled = Compiler().compile(g, cold_cache_options(dir.path()));
  REQUIRE(compiled.ok());
  CHECK(compiled->num_specializations() == 0);
  CHECK(compiled->kernels().empty());  // nothing is built before a binding is seen

  for (int64_t batch : {3, 13, 1}) {
    INFO("batch " << batch);
    Stats before = stats();
    NDArray x = random_array(DType::f32(), {batch, kFeatures});
    std::vector<NDArray> got = run_ok(*compiled, {x});
    CHECK((stats() - before).llvm_compiles > 0);
    CHECK(got[0].shape() == std::vector<int64_t>{batch, 2, kHidden / 2});
    require_close(got[0], reference_run(g, {x})[0], 1e-5, 1e-6);
    auto bound = compiled->specialize({{"batch", batch}});
    REQUIRE(bound.ok());
    CHECK(uses_template(*bound));
  }
  CHECK(compiled->num_specializations() == 3);

  // A batch seen before: no LLVM, no measuring, not even a cache lookup.
  NDArray x = random_array(DType::f32(), {13, kFeatures});
  Stats before = stats();
  std::vector<NDArray> got = run_ok(*compiled, {x});
  Stats d = stats() - before;
  CHECK(d.llvm_compiles == 0);
  CHECK(d.tune_measurements == 0);
  CHECK(d.cache_memory_hits + d.cache_disk_hits + d.cache_misses == 0);
  require_close(got[0], reference_run(g, {x})[0], 1e-5, 1e-6);
  CHECK(compiled->num_specializations() == 3);

  // A new compile of the graph (as in a new process: the memory level emptied) loads every
  // kernel of a known batch from disk.
  runtime::KernelCache::global().clear_memory();
  CompileOptions options;
  options.cache_dir = dir.path().string();
  auto again = Compiler().compile(dense_softmax(w), options);
  REQUIRE(again.ok());
  before = stats();
  got = run_ok(*again, {x});
  d = stats() - before;
  CHECK(d.llvm_compiles == 0);
  CHECK(d.cache_misses == 0);
  CHECK(d.cache_disk_hits > 0);
  require_close(got[0], reference_run(g, {x})[0], 1e-5, 1e-6);
}

TEST_CASE("dynamic shapes: two symbolic dims, tuned, and a zero-sized batch", "[dynamic]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), Dim("seq"), 24});
  Tensor w = g.constant("w", random_array(DType::f32(), {24, 16}));
  Tensor gamma = g.constant("gamma", random_array(DType::f32(), {16}));
  Tensor beta = g.constant("beta", random_array(DType::f32(), {16}));
  Tensor h = x.matmul(w).layer_norm(gamma, beta).gelu();
  g.output(h.reshape({Dim("batch"), Dim("seq"), 4, 4}).transpose({0, 2, 1, 3}));
  g.output(x.sum({1}));
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.poison_buffers = true;
  options.report_progress = false;
  auto compiled = Compiler().compile(g, options);
  REQUIRE(compiled.ok());
  for (auto [b, s] : {std::pair<int64_t, int64_t>{2, 7}, {1, 1}, {3, 5}, {2, 7}}) {
    INFO("batch " << b << " seq " << s);
    NDArray in = random_array(DType::f32(), {b, s, 24});
    std::vector<NDArray> got = run_ok(*compiled, {in});
    std::vector<NDArray> want = reference_run(g, {in});
    CHECK(got[0].shape() == std::vector<int64_t>{b, 4, s, 4});
    require_close(got[0], want[0], 1e-4, 1e-5);
    require_close(got[1], want[1], 1e-5, 1e-5);
  }
  CHECK(compiled->num_specializations() == 3);

  // An empty batch runs on the generic kernels (one more entry, the empty binding).
  std::vector<NDArray> empty = run_ok(*compiled, {NDArray(DType::f32(), {0, 5, 24})});
  CHECK(empty[0].shape() == std::vector<int64_t>{0, 4, 5, 4});
  CHECK(empty[1].shape() == std::vector<int64_t>{0, 24});
  CHECK(compiled->num_specializations() == 4);
}

TEST_CASE("dynamic shapes: specialize() checks the binding, and generic mode still works",
          "[dynamic][error]") {
  NDArray w = random_array(DType::f32(), {kFeatures, kHidden});
  Graph g = dense_softmax(w);
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  require_error(compiled->specialize({}).status(), "symbolic dim batch is not bound");
  require_error(compiled->specialize({{"batch", 2}, {"seq", 3}}).status(),
                "no symbolic dim 'seq' (it has batch)");
  require_error(compiled->specialize({{"batch", -2}}).status(), "batch = -2 is negative");
  CHECK(compiled->num_specializations() == 0);

  // A batch prepared ahead of the first request is the one run() uses.
  auto prepared = compiled->specialize({{"batch", 6}});
  REQUIRE(prepared.ok());
  REQUIRE(prepared->input_types()[0].shape == Shape{6, kFeatures});
  NDArray x = random_array(DType::f32(), {6, kFeatures});
  Stats before = stats();
  require_close(run_ok(*compiled, {x})[0], run_ok(*prepared, {x})[0], 0, 0);
  CHECK((stats() - before).llvm_compiles == 0);

  // Instances: a binding's runs the same kernels, compiling nothing; the graph compiled per
  // binding, and an empty CompiledGraph, have none.
  require_error(compiled->instance().status(), "take the instance of specialize(dims)");
  require_error(CompiledGraph().instance().status(), "instance() of an empty CompiledGraph");
  auto twin = prepared->instance();
  REQUIRE(twin.ok());
  CHECK(twin->kernels().size() == prepared->kernels().size());
  before = stats();
  const NDArray x2 = random_array(DType::f32(), {6, kFeatures});
  require_close(run_ok(*twin, {x2})[0], reference_run(g, {x2})[0], 1e-5, 1e-6);
  require_close(run_ok(*twin, {x})[0], run_ok(*prepared, {x})[0], 0, 0);
  CHECK((stats() - before).llvm_compiles == 0);

  // Static graphs have no dims to bind.
  Graph s;
  s.output(s.input("a", {3}).relu());
  auto fixed = Compiler().compile(s);
  REQUIRE(fixed.ok());
  CHECK(fixed->specialize({}).ok());
  require_error(fixed->specialize({{"n", 1}}).status(), "its shapes are static");

  // Generic mode: one compile, default-schedule kernels, the batch a runtime argument.
  CompileOptions generic;
  generic.specialize_shapes = false;
  auto one = Compiler().compile(g, generic);
  REQUIRE(one.ok());
  REQUIRE(!one->kernels().empty());
  CHECK(!uses_template(*one));
  for (int64_t batch : {1, 5}) {
    NDArray xb = random_array(DType::f32(), {batch, kFeatures});
    require_close(run_ok(*one, {xb})[0], reference_run(g, {xb})[0], 1e-5, 1e-6);
  }
  CHECK(one->num_specializations() == 0);
}

TEST_CASE("dynamic shapes: a binding that breaks a shape rule is a clear error at run()",
          "[dynamic][error]") {
  // test_pair_rows: [n, k] -> [n / 2, 2 * k]; n must be even once it is known.
  if (!OpRegistry::global().find("test_pair_rows")) {
    OpDef def;
    def.name = "test_pair_rows";
    def.num_inputs = 1;
    def.infer = [](const std::vector<TensorType>& in,
                   const OpAttrs&) -> absl::StatusOr<TensorType> {
      const Shape& s = in[0].shape;
      if (s.size() != 2 || !s[1].is_static())
        return absl::InvalidArgumentError("needs a rank-2 input with static columns");
      if (s[0].is_symbolic()) return TensorType{{Dim(s[0].name() + "/2"), 2 * s[1].value()}, in[0].dtype};
      if (s[0].value() % 2 != 0)
        return absl::InvalidArgumentError("needs an even row count, got " +
                                          std::to_string(s[0].value()));
      return TensorType{{s[0].value() / 2, 2 * s[1].value()}, in[0].dtype};
    };
    def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs&,
                     const std::vector<ir::Expr>& shape, const std::string& name) {
      te::Tensor x = in[0];
      ir::Expr k = x.shape()[1];
      return te::compute(name, shape, [x, k](const std::vector<ir::Var>& i) {
        ir::Expr r = i[0], c = i[1];
        return x({r * ir::Expr(int64_t{2}) + c / k, c % k});
      });
    };
    REQUIRE(OpRegistry::global().add(std::move(def)).ok());
  }
  Graph g;
  g.output(g.input("x", {Dim("n"), 3}).apply("test_pair_rows").relu());
  // The symbolic rule names a dim the inputs do not bind: the generic compile cannot run it,
  // but every concrete binding gets static shapes.
  auto compiled = Compiler().compile(g);
  REQUIRE(compiled.ok());
  require_error(compiled->run({random_array(DType::f32(), {5, 3})}).status(),
                "with n=5: test_pair_rows node 'test_pair_rows_1' needs an even row count, got 5");
  NDArray x = random_array(DType::f32(), {4, 3});
  std::vector<NDArray> got = run_ok(*compiled, {x});
  REQUIRE(got[0].shape() == std::vector<int64_t>{2, 6});
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 6; ++c)
      CHECK(got[0].get(r * 6 + c) == std::max(0.0, x.get((2 * r + c / 3) * 3 + c % 3)));
  // The failed binding was not kept; asking again reports it again.
  CHECK(compiled->num_specializations() == 1);
  require_error(compiled->run({random_array(DType::f32(), {7, 3})}).status(), "got 7");
}

TEST_CASE("dynamic shapes: threads racing for one batch build it once, and capacity is kept",
          "[dynamic]") {
  NDArray w = random_array(DType::f32(), {kFeatures, kHidden});
  Graph g = dense_softmax(w);
  CompileOptions options;
  options.use_cache = false;  // every build compiles: a second build would show in the counters
  options.max_specializations = 2;
  auto compiled = Compiler().compile(g, options);
  REQUIRE(compiled.ok());

  NDArray x = random_array(DType::f32(), {11, kFeatures});
  std::vector<NDArray> want = reference_run(g, {x});
  Stats before = stats();
  // One build of one batch compiles this many modules; four racing threads must not exceed it.
  REQUIRE(compiled->specialize({{"batch", 9}}).ok());
  uint64_t per_build = (stats() - before).llvm_compiles;
  REQUIRE(per_build > 0);

  before = stats();
  std::vector<absl::StatusOr<std::vector<NDArray>>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = compiled->run({x}); });
  for (std::thread& t : threads) t.join();
  for (const auto& r : results) {
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    require_close((*r)[0], want[0], 1e-5, 1e-6);
  }
  CHECK((stats() - before).llvm_compiles == per_build);
  CHECK(compiled->num_specializations() == 2);

  // A third batch evicts the least recently used (9); 11 stays and runs without compiling.
  run_ok(*compiled, {random_array(DType::f32(), {2, kFeatures})});
  CHECK(compiled->num_specializations() == 2);
  before = stats();
  run_ok(*compiled, {x});
  CHECK((stats() - before).llvm_compiles == 0);
  before = stats();
  run_ok(*compiled, {random_array(DType::f32(), {9, kFeatures})});
  CHECK((stats() - before).llvm_compiles == per_build);
}

TEST_CASE("memory_use: the constants and the liveness plan's arena, for each binding of the dims",
          "[dynamic]") {
  // x + c, then exp, then relu, one kernel each: the sum and the exponentials are intermediates,
  // both alive while exp runs, so the arena holds both (each rounded up to 64 bytes); relu's
  // value is the output, not in the arena.
  const NDArray c = random_array(DType::f32(), {13});
  Graph g;
  g.output(g.input("x", {Dim("n"), Dim(13)}).add(g.constant("c", c)).exp().relu());
  auto arena = [](int64_t n) { return 2 * ((n * 13 * 4 + 63) / 64 * 64); };
  CompileOptions options;
  options.fuse = false;
  options.graph_passes = false;
  for (const bool per_binding : {false, true}) {
    INFO((per_binding ? "compiled per binding" : "generic kernels"));
    options.specialize_shapes = per_binding;
    absl::StatusOr<CompiledGraph> compiled = Compiler().compile(g, options);
    REQUIRE(compiled.ok());
    for (const int64_t n : {7, 2, 31}) {
      absl::StatusOr<MemoryUse> use = compiled->memory_use({{"n", n}});
      INFO("n = " << n << ": " << use.status().ToString());
      REQUIRE(use.ok());
      CHECK(use->constants == 13 * 4);
      CHECK(use->intermediates == arena(n));
      CHECK(use->host_inputs_outputs == 0);
      // What a run returns is what the reference computes.
      const NDArray x = random_array(DType::f32(), {n, 13});
      require_close(run_ok(*compiled, {x})[0], reference_run(g, {x})[0], 1e-5, 1e-6);
    }
    CHECK(compiled->num_specializations() == (per_binding ? 3u : 0u));
    CHECK(compiled->memory_use({}).status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(compiled->memory_use({{"n", 2}, {"m", 1}}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  // A static graph takes no binding; an empty CompiledGraph has no memory to tell.
  Graph s;
  s.output(s.input("a", {5, 16}).exp().relu());
  absl::StatusOr<CompiledGraph> fixed = Compiler().compile(s, options);
  REQUIRE(fixed.ok());
  absl::StatusOr<MemoryUse> use = fixed->memory_use();
  REQUIRE(use.ok());
  CHECK(use->constants == 0);
  CHECK(use->intermediates == 5 * 16 * 4);
  CHECK(fixed->memory_use({{"n", 1}}).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(CompiledGraph().memory_use().status().code() == absl::StatusCode::kFailedPrecondition);
}
