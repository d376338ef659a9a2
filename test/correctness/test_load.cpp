// Load: many threads compile and run distinct and identical graphs at once, through one shared
// Compiler and through Compilers of their own, all on one kernel cache directory; every result is
// checked against the graph reference interpreter. Then a cold memory level must find every
// kernel on disk. Sizes stay small so that the ThreadSanitizer build runs it quickly.

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::TempDir;

namespace {

constexpr int kThreads = 12;
constexpr int kRounds = 3;

// Collects failures from worker threads (Catch2's assertions are not thread-safe); the test
// thread reports them.
class Failures {
 public:
  void add(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    list_.push_back(std::move(what));
  }
  std::vector<std::string> list() {
    std::lock_guard<std::mutex> lock(mu_);
    return list_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> list_;
};

// Random values without the shared test generator (it is not thread-safe).
NDArray random_values(std::vector<int64_t> shape, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(-1, 1);
  NDArray a(DType::f32(), std::move(shape));
  for (int64_t i = 0; i < a.numel(); ++i) a.set(i, dist(gen));
  return a;
}

// Graph `kind` at size n (distinct n: distinct kernels), with its inputs.
Graph make_graph(int kind, int64_t n, uint64_t seed, std::vector<NDArray>* inputs) {
  Graph g;
  switch (kind % 4) {
    case 0: {
      Tensor x = g.input("x", {n, 9});
      g.output(x.matmul(g.constant("w", random_values({9, n + 2}, seed))).gelu());
      *inputs = {random_values({n, 9}, seed + 1)};
      break;
    }
    case 1: {
      Tensor x = g.input("x", {3, n});
      g.output(x.softmax(-1).add(x.transpose().sum({0}).reshape({1, 3}).transpose()));
      *inputs = {random_values({3, n}, seed + 1)};
      break;
    }
    case 2: {
      Tensor x = g.input("x", {1, 2, n, 5});
      g.output(x.conv2d(g.constant("w", random_values({3, 2, 3, 3}, seed)), {.padding = 1}).relu());
      *inputs = {random_values({1, 2, n, 5}, seed + 1)};
      break;
    }
    default: {
      Tensor x = g.input("x", {n, 6});
      g.output(x.layer_norm(g.constant("gamma", random_values({6}, seed)),
                            g.constant("beta", random_values({6}, seed + 2))));
      *inputs = {random_values({n, 6}, seed + 1)};
      break;
    }
  }
  return g;
}

// Empty when every output matches the reference within tolerance.
std::string mismatch(const std::vector<NDArray>& got, const std::vector<NDArray>& want) {
  if (got.size() != want.size()) return "wrong number of outputs";
  for (size_t o = 0; o < got.size(); ++o) {
    if (got[o].shape() != want[o].shape()) return "wrong output shape";
    for (int64_t i = 0; i < got[o].numel(); ++i) {
      double a = got[o].get(i), e = want[o].get(i);
      if (!(std::fabs(a - e) <= 1e-5 + 1e-4 * std::fabs(e)))
        return str_cat("output ", o, " element ", i, ": ", a, " != ", e);
    }
  }
  return "";
}

// A graph with its inputs and reference outputs, made on the test thread: the reference
// interpreter uses Catch2's assertions, which are not thread-safe.
struct Job {
  int kind = 0;
  int64_t n = 0;
  Graph graph;
  std::vector<NDArray> inputs, want;
};

Job make_job(int kind, int64_t n, uint64_t seed) {
  Job j{kind % 4, n, {}, {}, {}};
  j.graph = make_graph(kind, n, seed, &j.inputs);
  j.want = loom::testing::reference_run(j.graph, j.inputs);
  return j;
}

// One thread's work: compile (with `compiler`, or one of its own when null), run, check.
void compile_run_check(const Compiler* compiler, const CompileOptions& options, const Job& job,
                       Failures& failures) {
  Compiler own;
  auto compiled = (compiler ? *compiler : own).compile(job.graph, options);
  const std::string what = str_cat("kind ", job.kind, " n ", job.n, ": ");
  if (!compiled.ok()) return failures.add(what + compiled.status().ToString());
  auto out = compiled->run(job.inputs);
  if (!out.ok()) return failures.add(what + out.status().ToString());
  if (std::string m = mismatch(*out, job.want); !m.empty()) failures.add(what + m);
}

}  // namespace

TEST_CASE("load: threads compile and run distinct and identical graphs on one cache",
          "[load][cache]") {
  TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  const Compiler shared;
  Failures failures;
  const uint64_t seed = loom::testing::test_seed();
  // Thread t, round r builds kind (t + r) % 4 at a size shared by pairs of threads: identical
  // graphs (with weights of their own) race for one key while distinct ones fill the directory
  // beside them.
  std::vector<std::vector<Job>> jobs(kThreads);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < kRounds; ++r)
      jobs[t].push_back(make_job(t + r, 5 + (t / 2) % 3, seed + static_cast<uint64_t>(t * 100 + r)));
  auto work = [&](int t) {
    for (const Job& job : jobs[t]) compile_run_check(t % 2 ? &shared : nullptr, options, job, failures);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  for (std::thread& th : threads) th.join();
  for (const std::string& f : failures.list()) FAIL_CHECK(f);
  REQUIRE(failures.list().empty());

  // A fresh memory level: every kernel is found on disk, nothing is compiled or tuned again.
  runtime::KernelCache::global().clear_memory();
  Stats before = stats();
  threads.clear();
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  for (std::thread& th : threads) th.join();
  Stats d = stats() - before;
  INFO(d.to_string());
  for (const std::string& f : failures.list()) FAIL_CHECK(f);
  CHECK(failures.list().empty());
  CHECK(d.llvm_compiles == 0);
  CHECK(d.cache_misses == 0);
  CHECK(d.cache_disk_hits > 0);
}

TEST_CASE("load: threads run one compiled graph at once, static and per-binding", "[load]") {
  TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), 7});
  NDArray w = random_values({7, 5}, 7);
  g.output(x.matmul(g.constant("w", w)).relu().softmax(-1));
  auto dynamic = Compiler().compile(g, options);
  REQUIRE(dynamic.ok());
  auto fixed = Compiler().compile(*g.bind_dims({{"batch", 3}}), options);
  REQUIRE(fixed.ok());

  // Odd threads run the static graph (they share its arenas); even ones run the dynamic one with
  // batches 1 to 4 (they race to build each binding once).
  struct Run {
    std::vector<NDArray> inputs, want;
  };
  std::vector<std::vector<Run>> runs(kThreads);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < kRounds; ++r) {
      const int64_t rows = t % 2 ? 3 : 1 + (t + r) % 4;
      Run run{{random_values({rows, 7}, static_cast<uint64_t>(t * 10 + r))}, {}};
      auto bound = g.bind_dims({{"batch", rows}});
      REQUIRE(bound.ok());
      run.want = loom::testing::reference_run(*bound, run.inputs);
      runs[t].push_back(std::move(run));
    }
  Failures failures;
  auto work = [&](int t) {
    const CompiledGraph& c = t % 2 ? *fixed : *dynamic;
    for (const Run& run : runs[t]) {
      auto out = c.run(run.inputs);
      if (!out.ok()) return failures.add(out.status().ToString());
      if (std::string m = mismatch(*out, run.want); !m.empty()) failures.add(m);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  for (std::thread& th : threads) th.join();
  for (const std::string& f : failures.list()) FAIL_CHECK(f);
  CHECK(failures.list().empty());
  CHECK(dynamic->num_specializations() == 4);
}

TEST_CASE("load: outputs the caller holds are never written again, dropped ones are reused",
          "[load]") {
  TempDir dir;
  CompileOptions options = loom::testing::cold_cache_options(dir.path());
  std::vector<NDArray> first_inputs;
  const Graph g = make_graph(0, 37, 11, &first_inputs);  // a [37, 39] output
  auto inputs_for = [&](uint64_t seed) {
    return std::vector<NDArray>{random_values({37, 9}, seed)};
  };
  absl::StatusOr<CompiledGraph> made = Compiler().compile(g, options);
  REQUIRE(made.ok());
  std::optional<CompiledGraph> compiled = *std::move(made);

  SECTION("one thread") {
    const std::vector<NDArray> in1 = inputs_for(1), in2 = inputs_for(2), in3 = inputs_for(3);
    std::vector<NDArray> out1 = *compiled->run(in1);
    std::vector<NDArray> out2 = *compiled->run(in2);
    CHECK(out2[0].data() != out1[0].data());
    CHECK(mismatch(out1, loom::testing::reference_run(g, in1)).empty());
    CHECK(mismatch(out2, loom::testing::reference_run(g, in2)).empty());
    // Dropped, out1's buffer serves the next run; a copy of out2 keeps out2's from it.
    const void* dropped = out1[0].data();
    out1.clear();
    const NDArray kept = out2[0];
    out2.clear();
    std::vector<NDArray> out3 = *compiled->run(in3);
    CHECK(out3[0].data() == dropped);
    CHECK(mismatch(out3, loom::testing::reference_run(g, in3)).empty());
    CHECK(mismatch({kept}, loom::testing::reference_run(g, in2)).empty());
    // Outputs outlive their graph, and are freed after it.
    compiled.reset();
    CHECK(mismatch(out3, loom::testing::reference_run(g, in3)).empty());
  }

  SECTION("threads holding their last two outputs while they run again") {
    struct Run {
      std::vector<NDArray> inputs, want, got;
    };
    std::vector<std::vector<Run>> runs(kThreads);
    for (int t = 0; t < kThreads; ++t)
      for (int r = 0; r < kRounds + 2; ++r) {
        Run run{inputs_for(static_cast<uint64_t>(100 + t * 10 + r)), {}, {}};
        run.want = loom::testing::reference_run(g, run.inputs);
        runs[t].push_back(std::move(run));
      }
    Failures failures;
    auto work = [&](int t) {
      for (size_t r = 0; r < runs[t].size(); ++r) {
        auto out = compiled->run(runs[t][r].inputs);
        if (!out.ok()) return failures.add(out.status().ToString());
        runs[t][r].got = *std::move(out);
        if (r >= 2) runs[t][r - 2].got.clear();  // the caller lets go of its oldest
        for (size_t held = r >= 1 ? r - 1 : 0; held <= r; ++held)
          if (std::string m = mismatch(runs[t][held].got, runs[t][held].want); !m.empty())
            failures.add(str_cat("thread ", t, " run ", held, " seen after run ", r, ": ", m));
      }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
    for (std::thread& th : threads) th.join();
    for (const std::string& f : failures.list()) FAIL_CHECK(f);
    CHECK(failures.list().empty());
  }
}
