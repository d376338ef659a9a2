// The kernel cache: warm compiles (memory and disk) reuse tuned kernels without LLVM or measuring
// and compute the same outputs; keys are stable and sensitive; one build per key across threads;
// the disk level's size bound evicts least recently used entries.

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::cold_cache_options;
using loom::testing::random_array;
using loom::testing::run_ok;
using loom::testing::require_close;
using loom::testing::TempDir;
namespace fs = std::filesystem;
namespace disk_cache = loom::runtime::disk_cache;

namespace {

// A small tuned matmul with a constant (packed) weight, a templated softmax, and a
// default-schedule kernel (softmax over the first axis).
Graph small_graph(const NDArray& w, int64_t m = 37) {
  Graph g;
  Tensor x = g.input("x", {m, w.shape()[0]});
  g.output(x.matmul(g.constant("w", w)).softmax(-1));
  g.output(x.softmax(0));
  return g;
}

bool same_bits(const NDArray& a, const NDArray& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.nbytes())) == 0;
}

}  // namespace

TEST_CASE("cold, memory-warm and disk-warm compiles agree, and warm ones run no LLVM and no tuning",
          "[cache]") {
  TempDir dir;
  NDArray w = random_array(DType::f32(), {48, 40});
  Graph g = small_graph(w);
  CompileOptions options = cold_cache_options(dir.path(), TuneLevel::kFast);

  Stats s0 = stats();
  auto cold = Compiler().compile(g, options);
  INFO(cold.status().ToString());
  REQUIRE(cold.ok());
  Stats d_cold = stats() - s0;
  INFO("cold: " << d_cold.to_string());
  CHECK(d_cold.llvm_compiles > 0);
  CHECK(d_cold.tune_measurements > 0);
  // Tuning compiled and timed candidates (on the CPU, nothing is loaded onto a device).
  CHECK(d_cold.tune_compile_us > 0);
  CHECK(d_cold.tune_measure_us > 0);
  CHECK(d_cold.tune_load_us == 0);
  CHECK(d_cold.cache_misses == 3);  // matmul, softmax, the default module
  CHECK(d_cold.cache_memory_hits == 0);
  CHECK(d_cold.cache_disk_hits == 0);
  bool has_default = false, has_template = false;
  for (const KernelInfo& k : cold->kernels())
    (k.schedule == "default" ? has_default : has_template) = true;
  CHECK(has_default);
  CHECK(has_template);

  // A second Compiler in the same process: the memory level.
  Stats s1 = stats();
  auto memory = Compiler().compile(g, options);
  REQUIRE(memory.ok());
  Stats d_memory = stats() - s1;
  INFO("memory-warm: " << d_memory.to_string());
  CHECK(d_memory.llvm_compiles == 0);
  CHECK(d_memory.tune_measurements == 0);
  CHECK(d_memory.tune_compile_us + d_memory.tune_load_us + d_memory.tune_measure_us == 0);
  CHECK(d_memory.cache_misses == 0);
  CHECK(d_memory.cache_memory_hits == 3);

  // A fresh memory level, as in a new process: the disk level.
  runtime::KernelCache::global().clear_memory();
  Stats s2 = stats();
  auto disk = Compiler().compile(g, options);
  REQUIRE(disk.ok());
  Stats d_disk = stats() - s2;
  INFO("disk-warm: " << d_disk.to_string());
  CHECK(d_disk.llvm_compiles == 0);
  CHECK(d_disk.tune_measurements == 0);
  CHECK(d_disk.cache_misses == 0);
  CHECK(d_disk.cache_disk_hits == 3);

  for (size_t k = 0; k < cold->kernels().size(); ++k) {
    CHECK(memory->kernels()[k].schedule == cold->kernels()[k].schedule);
    CHECK(disk->kernels()[k].schedule == cold->kernels()[k].schedule);
  }
  for (int trial = 0; trial < 2; ++trial) {
    NDArray x = random_array(DType::f32(), {37, 48});
    std::vector<NDArray> a = run_ok(*cold, {x}), b = run_ok(*memory, {x}), c = run_ok(*disk, {x});
    std::vector<NDArray> expected = loom::testing::reference_run(g, {x});
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(same_bits(a[i], b[i]));
      CHECK(same_bits(a[i], c[i]));
      require_close(c[i], expected[i], 1e-4, 1e-5);
    }
  }

  // Each entry is readable by people: its task, config, timings and source.
  std::vector<disk_cache::EntryInfo> entries = disk_cache::list(dir.path());
  REQUIRE(entries.size() == 3);
  for (const disk_cache::EntryInfo& e : entries) {
    auto text = disk_cache::describe(dir.path(), e.key);
    REQUIRE(text.ok());
    CHECK(text->find("\"task\"") != std::string::npos);
    CHECK(text->find("\"loom_version\": \"" LOOM_CACHE_VERSION_STRING "\"") != std::string::npos);
    CHECK(text->find("for (") != std::string::npos);  // the loop IR
    if (e.schedule.find("gemm") != std::string::npos)
      CHECK(text->find("\"median_ms\"") != std::string::npos);
  }
}

TEST_CASE("cache keys are stable and change with each ingredient", "[cache]") {
  runtime::CacheKeyParts parts;
  parts.task = "template t\nop matmul()\n";
  parts.target = "cpu:x86_64-pc-linux-gnu:znver3:+avx2";
  parts.backend_version = "LLVM 19.1.7";
  parts.loom_version = "0.1.0";
  const std::string key = runtime::cache_key(parts);
  // The same in every process and build: no per-process salt (absl::Hash has one).
  CHECK(key == "46e42cea482880e3d059f032b6ed2314");
  CHECK(key.size() == 32);
  CHECK(runtime::cache_key(parts) == key);
  for (std::string runtime::CacheKeyParts::*part :
       {&runtime::CacheKeyParts::task, &runtime::CacheKeyParts::target,
        &runtime::CacheKeyParts::backend_version, &runtime::CacheKeyParts::loom_version}) {
    runtime::CacheKeyParts changed = parts;
    changed.*part += "x";
    CHECK(runtime::cache_key(changed) != key);
  }
  // Text moved from one part to the next is a different key too.
  runtime::CacheKeyParts shifted = parts;
  shifted.task += "c";
  shifted.target = parts.target.substr(1);
  CHECK(runtime::cache_key(shifted) != key);
}

TEST_CASE("compiles hit on equal tasks and miss on changed shapes, targets and tune levels",
          "[cache]") {
  TempDir dir;
  NDArray w = random_array(DType::f32(), {24, 16});
  CompileOptions options = cold_cache_options(dir.path());
  auto misses = [&](const Graph& g, const CompileOptions& o, const Target& target) {
    Stats s = stats();
    auto c = Compiler(target).compile(g, o);
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    return (stats() - s).cache_misses;
  };
  const Target host = Target::host_cpu();
  CHECK(misses(small_graph(w), options, host) == 3);
  CHECK(misses(small_graph(w), options, host) == 0);

  // Other weights: the same kernels (packing runs at load), still correct.
  NDArray w2 = random_array(DType::f32(), {24, 16});
  Graph g2 = small_graph(w2);
  CHECK(misses(g2, options, host) == 0);
  auto c2 = Compiler().compile(g2, options);
  REQUIRE(c2.ok());
  NDArray x = random_array(DType::f32(), {37, 24});
  std::vector<NDArray> out = run_ok(*c2, {x}), expected = loom::testing::reference_run(g2, {x});
  for (size_t i = 0; i < out.size(); ++i) require_close(out[i], expected[i], 1e-4, 1e-5);

  // Other node names: templated kernels are shared (identical layers compile once).
  Graph renamed;
  Tensor y = renamed.input("other_input", {37, 24});
  renamed.output(y.matmul(renamed.constant("other_weight", w)).softmax(-1));
  CHECK(misses(renamed, options, host) == 0);

  CHECK(misses(small_graph(w, 38), options, host) == 3);  // another shape
  CompileOptions fast = options;
  fast.tune = TuneLevel::kFast;
  CHECK(misses(small_graph(w), fast, host) == 2);  // the default module does not tune
  // Another CPU model (generic x86-64 code runs here too).
  if (host.triple().rfind("x86_64", 0) == 0)
    CHECK(misses(small_graph(w), options, Target::cpu(host.triple(), "x86-64", {"sse2"})) == 3);

  // Off: nothing is looked up or stored.
  CompileOptions off = options;
  off.use_cache = false;
  Stats s = stats();
  REQUIRE(Compiler().compile(small_graph(w, 39), off).ok());
  Stats d = stats() - s;
  CHECK(d.cache_misses + d.cache_memory_hits + d.cache_disk_hits == 0);
  CHECK(d.llvm_compiles > 0);
}

TEST_CASE("concurrent compiles of one graph build each kernel once", "[cache]") {
  NDArray w = random_array(DType::f32(), {40, 24});
  Graph g = small_graph(w, 29);

  TempDir single_dir;
  Stats s0 = stats();
  REQUIRE(Compiler().compile(g, cold_cache_options(single_dir.path())).ok());
  Stats single = stats() - s0;
  REQUIRE(single.cache_misses == 3);

  TempDir dir;
  CompileOptions options = cold_cache_options(dir.path());
  constexpr int kThreads = 4;
  std::vector<absl::StatusOr<CompiledGraph>> results(kThreads, absl::UnknownError("not run"));
  Stats s1 = stats();
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back(
        [&, i] { results[static_cast<size_t>(i)] = Compiler().compile(g, options); });
  for (std::thread& t : threads) t.join();
  Stats d = stats() - s1;
  INFO(d.to_string());
  CHECK(d.cache_misses == single.cache_misses);
  CHECK(d.llvm_compiles == single.llvm_compiles);
  CHECK(d.cache_memory_hits == (kThreads - 1) * single.cache_misses);
  CHECK(disk_cache::list(dir.path()).size() == 3);

  NDArray x = random_array(DType::f32(), {29, 40});
  std::vector<NDArray> expected = loom::testing::reference_run(g, {x});
  for (auto& r : results) {
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    std::vector<NDArray> out = run_ok(*r, {x});
    for (size_t i = 0; i < out.size(); ++i) require_close(out[i], expected[i], 1e-4, 1e-5);
  }
}

TEST_CASE("the disk level's size bound evicts least recently used entries", "[cache]") {
  auto graph = [](int64_t m) {
    Graph g;
    g.output(g.input("x", {m, 13}).exp());  // one default-schedule entry per shape
    return g;
  };
  auto only_key = [](const fs::path& d) {
    auto entries = disk_cache::list(d);
    REQUIRE(entries.size() == 1);
    return entries[0];
  };
  // Entry sizes, each learnt in a directory of its own.
  std::vector<disk_cache::EntryInfo> sized;
  for (int64_t m : {5, 6, 7}) {
    TempDir scratch;
    REQUIRE(Compiler().compile(graph(m), cold_cache_options(scratch.path())).ok());
    sized.push_back(only_key(scratch.path()));
  }
  TempDir dir;
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); };
  REQUIRE(Compiler().compile(graph(5), cold_cache_options(dir.path())).ok());
  pause();
  REQUIRE(Compiler().compile(graph(6), cold_cache_options(dir.path())).ok());
  pause();
  // A disk hit on the first makes the second the least recently used.
  Stats s = stats();
  REQUIRE(Compiler().compile(graph(5), cold_cache_options(dir.path())).ok());
  CHECK((stats() - s).cache_disk_hits == 1);
  pause();
  CompileOptions bounded = cold_cache_options(dir.path());
  // Room for two entries but not three (records differ by a few bytes between builds: timings).
  bounded.cache_max_bytes = sized[0].bytes + sized[2].bytes + sized[1].bytes / 2;
  REQUIRE(Compiler().compile(graph(7), bounded).ok());
  std::vector<std::string> keys;
  for (const auto& e : disk_cache::list(dir.path())) keys.push_back(e.key);
  std::sort(keys.begin(), keys.end());
  std::vector<std::string> expected = {sized[0].key, sized[2].key};
  std::sort(expected.begin(), expected.end());
  CHECK(keys == expected);
}

TEST_CASE("the memory level keeps at most its capacity, least recently used out first", "[cache]") {
  runtime::KernelCache cache(2);
  runtime::CacheSettings memory_only;
  int builds = 0;
  auto get = [&](const std::string& key) {
    auto r = cache.get(key, runtime::CacheKeyParts{key}, memory_only,
                       [&]() -> absl::StatusOr<runtime::CachedKernel> {
                         ++builds;
                         runtime::CachedKernel k;
                         k.kernel_name = key;
                         return k;
                       });
    REQUIRE(r.ok());
    CHECK((*r)->kernel_name == key);
  };
  get("a");
  get("b");
  get("a");  // b is now the least recently used
  get("c");
  CHECK(builds == 3);
  CHECK(cache.memory_entries() == 2);
  get("a");
  CHECK(builds == 3);
  get("b");
  CHECK(builds == 4);

  // A failed build reaches its caller and is not remembered.
  auto failed = cache.get(
      "d", runtime::CacheKeyParts{"d"}, memory_only,
      []() -> absl::StatusOr<runtime::CachedKernel> { return absl::InternalError("no"); });
  CHECK(!failed.ok());
  get("d");
  CHECK(builds == 5);
}
