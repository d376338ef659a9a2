// One process of the shared-cache test: compiles a small graph (a GEMM and a softmax, tuned at
// kFast, plus an elementwise op on the default schedule) against the cache directory given,
// checks the result against plain C++, and prints loom's counters.
//
//   cache_writer DIR cold   any outcome of the cache is fine (other processes race on DIR)
//   cache_writer DIR warm   everything must come from DIR: no LLVM compile, no measurement
//
// Exit status 0 when the result is right (and, warm, nothing was built).

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "loom/loom.hpp"
#include "loom/runtime/stats.hpp"

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[2]) != "cold" && std::string(argv[2]) != "warm")) {
    std::fprintf(stderr, "usage: cache_writer DIR cold|warm\n");
    return 2;
  }
  const bool warm = std::string(argv[2]) == "warm";
  const int64_t M = 7, K = 37, N = 19;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1, 1);
  loom::NDArray a(loom::DType::f32(), {M, K}), b(loom::DType::f32(), {K, N});
  for (int64_t i = 0; i < a.numel(); ++i) a.set(i, dist(rng));
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, dist(rng));

  loom::Graph g;
  loom::Tensor x = g.input("x", {M, K});
  g.output(x.matmul(g.constant("w", b)).softmax(-1).mul(2.0));
  loom::CompileOptions options;
  options.tune = loom::TuneLevel::kFast;
  options.cache_dir = argv[1];
  options.report_progress = false;
  loom::Stats before = loom::stats();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g, options);
  if (!compiled.ok()) {
    std::fprintf(stderr, "compile: %s\n", compiled.status().ToString().c_str());
    return 1;
  }
  loom::Stats used = loom::stats() - before;
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run({a});
  if (!out.ok()) {
    std::fprintf(stderr, "run: %s\n", out.status().ToString().c_str());
    return 1;
  }
  // 2 * softmax(a @ b) in double.
  double worst = 0;
  for (int64_t i = 0; i < M; ++i) {
    std::vector<double> row(N);
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < N; ++j) {
      for (int64_t k = 0; k < K; ++k) row[j] += a.get(i * K + k) * b.get(k * N + j);
      mx = std::max(mx, row[j]);
    }
    for (double& v : row) sum += (v = std::exp(v - mx));
    for (int64_t j = 0; j < N; ++j)
      worst = std::max(worst, std::fabs((*out)[0].get(i * N + j) - 2 * row[j] / sum));
  }
  std::printf("cache_writer %s: max error %.2e, %s\n", argv[2], worst, used.to_string().c_str());
  if (!(worst < 1e-5)) return 1;
  if (warm && (used.llvm_compiles != 0 || used.tune_measurements != 0 || used.cache_misses != 0 ||
               used.cache_disk_hits == 0)) {
    std::fprintf(stderr, "warm start built something\n");
    return 1;
  }
  return 0;
}
