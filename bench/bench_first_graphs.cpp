// First-graph benchmark: loom's default-schedule kernels against the same computations written
// as plain C++ loops and compiled by the host compiler at -O3, timed in the same run.
// Prints loom/peer time ratios (lower is better for loom); --benchmark_out=<file> writes JSON.
//
// The peer here is a baseline, not a state-of-the-art library: oneDNN and OpenBLAS comparisons
// come with the scheduled CPU templates.

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "loom/loom.hpp"

namespace {

loom::NDArray random_array(std::vector<int64_t> shape) {
  static std::mt19937 rng(7);
  loom::NDArray a(loom::DType::f32(), std::move(shape));
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int64_t i = 0; i < a.numel(); ++i) a.data_as<float>()[i] = dist(rng);
  return a;
}

loom::CompiledGraph compile_or_die(const loom::Graph& g) {
  auto c = loom::Compiler().compile(g);
  if (!c.ok()) {
    std::fprintf(stderr, "compile failed: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(c);
}

constexpr int64_t kM = 128, kK = 256, kN = 128;

void BM_matmul_loom(benchmark::State& state) {
  loom::Graph g;
  g.output(g.input("a", {kM, kK}).matmul(g.input("b", {kK, kN})));
  loom::CompiledGraph c = compile_or_die(g);
  loom::NDArray a = random_array({kM, kK}), b = random_array({kK, kN});
  for (auto _ : state) benchmark::DoNotOptimize(c.run({a, b}));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * kM * kN * kK, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_matmul_cpp(benchmark::State& state) {
  loom::NDArray a = random_array({kM, kK}), b = random_array({kK, kN});
  for (auto _ : state) {
    loom::NDArray c(loom::DType::f32(), {kM, kN});
    const float *A = a.data_as<float>(), *B = b.data_as<float>();
    float* C = c.data_as<float>();
    for (int64_t i = 0; i < kM; ++i)
      for (int64_t j = 0; j < kN; ++j) {
        float acc = 0;
        for (int64_t k = 0; k < kK; ++k) acc += A[i * kK + k] * B[k * kN + j];
        C[i * kN + j] = acc;
      }
    benchmark::DoNotOptimize(C);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * kM * kN * kK, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

constexpr int64_t kRows = 512, kCols = 1024;

void BM_softmax_loom(benchmark::State& state) {
  loom::Graph g;
  g.output(g.input("x", {kRows, kCols}).softmax(-1));
  loom::CompiledGraph c = compile_or_die(g);
  loom::NDArray x = random_array({kRows, kCols});
  for (auto _ : state) benchmark::DoNotOptimize(c.run({x}));
}

void BM_softmax_cpp(benchmark::State& state) {
  loom::NDArray x = random_array({kRows, kCols});
  for (auto _ : state) {
    loom::NDArray y(loom::DType::f32(), {kRows, kCols});
    const float* X = x.data_as<float>();
    float* Y = y.data_as<float>();
    for (int64_t r = 0; r < kRows; ++r) {
      float mx = -INFINITY, sum = 0;
      for (int64_t c = 0; c < kCols; ++c) mx = std::max(mx, X[r * kCols + c]);
      for (int64_t c = 0; c < kCols; ++c) sum += std::exp(X[r * kCols + c] - mx);
      for (int64_t c = 0; c < kCols; ++c) Y[r * kCols + c] = std::exp(X[r * kCols + c] - mx) / sum;
    }
    benchmark::DoNotOptimize(Y);
  }
}

BENCHMARK(BM_matmul_loom)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_matmul_cpp)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax_loom)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax_cpp)->Unit(benchmark::kMicrosecond);

// Console output as usual, plus the real time of each benchmark for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> times;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs)
      if (r.run_type == Run::RT_Iteration || r.aggregate_name == "median")
        times[r.run_name.function_name] = r.GetAdjustedRealTime();
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\nloom / plain C++ -O3 (time ratio, < 1 means loom is faster):\n");
  for (const char* op : {"matmul", "softmax"}) {
    auto l = reporter.times.find(std::string("BM_") + op + "_loom");
    auto p = reporter.times.find(std::string("BM_") + op + "_cpp");
    if (l != reporter.times.end() && p != reporter.times.end())
      std::printf("  %-8s %.2f\n", op, l->second / p->second);
  }
  benchmark::Shutdown();
  return 0;
}
