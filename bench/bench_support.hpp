// What loom's peer benchmarks share: the command line, switching libraries, checking results
// against a reference, running a compiled loom graph, and collecting Google Benchmark's times.
#pragma once

#include <cstdlib>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loom/loom.hpp"

namespace loom_bench {

// ---- Command line ------------------------------------------------------------------------------

struct Options {
  std::string json_path;  // --json PATH: where the records go
  bool quick = false;     // --quick: a small subset with short timings
  std::string tune;       // --tune none|fast|full, for programs that tune (empty: their default)
  bool profile = false;   // --profile: per-kernel times, for programs that print them
};

// Parses our flags and hands the rest, after our defaults (so the user's win), to Google
// Benchmark. Returns an exit code when the program should stop (--help, a bad flag), else nullopt.
inline std::optional<int> init(int argc, char** argv, int repetitions, const char* usage,
                               Options& options, double min_time_s = 0.2) {
  // OpenMP (Debian's oneDNN and OpenBLAS) keeps its default wait policy: its workers spin a
  // while after each parallel region (libgomp: 300000 iterations, milliseconds), and every switch
  // of library waits longer than that (settle_after_switch), so they never steal a core from
  // loom. Capping the spin instead (GOMP_SPINCOUNT=20000, as this program once did) handicapped
  // oneDNN: its 1x1 conv 64->256 at 56x56 on two threads ran 0.29 or 1.05 ms, by spells.
  std::string filter;
  std::vector<std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      options.json_path = argv[++i];
    } else if (arg == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--tune" && i + 1 < argc) {
      options.tune = argv[++i];
    } else if (arg == "--profile") {
      options.profile = true;
    } else if (arg == "--help" || arg == "-h") {
      std::printf("%s", usage);
      return 0;
    } else {
      flags.push_back(arg);
    }
  }
  std::vector<std::string> defaults{
      "--benchmark_repetitions=" + std::to_string(options.quick ? 3 : repetitions),
      "--benchmark_min_time=" + std::to_string(options.quick ? 0.05 : min_time_s),
      "--benchmark_display_aggregates_only=true",
      // Repetitions of all cases and peers in random order: drift of a shared machine (clock,
      // neighbours) spreads over every implementation instead of favouring whichever ran first.
      "--benchmark_enable_random_interleaving=true"};
  if (!filter.empty()) defaults.push_back("--benchmark_filter=" + filter);
  flags.insert(flags.begin(), defaults.begin(), defaults.end());
  static std::vector<std::string> kept;  // Google Benchmark keeps pointers into argv
  kept = std::move(flags);
  static std::vector<char*> bench_argv;
  bench_argv = {argv[0]};
  for (std::string& f : kept) bench_argv.push_back(f.data());
  int bench_argc = static_cast<int>(bench_argv.size());
  benchmark::Initialize(&bench_argc, bench_argv.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, bench_argv.data())) return 1;
  return std::nullopt;
}

// ---- Inputs and times ---------------------------------------------------------------------------

// f32 values in [-1, 1) from a 64-bit LCG: the same array for the same seed on every machine.
inline loom::NDArray seeded_array(std::vector<int64_t> shape, uint64_t seed) {
  loom::NDArray a(loom::DType::f32(), std::move(shape));
  float* p = a.data_as<float>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = static_cast<float>(static_cast<double>(seed >> 40) * 0x1p-23 - 1);
  }
  return a;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? std::nan("") : v[v.size() / 2];
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- The machine's arithmetic peak --------------------------------------------------------------

// f32 multiply-add throughput of `threads` threads at once, in GFLOP/s: each runs independent
// vector FMAs on registers alone (12 chains, enough to cover the FMA latency on both ports) for
// about 35 ms, best of three; the threads' rates add up. It is the ceiling of a kernel bound by
// arithmetic at the clock the machine runs now, what the benchmarks' "% of peak" divides by.
// NaN where no measurement is built in (other than x86-64 with AVX2 + FMA or AVX-512).
inline double fma_peak_gflops(int threads) {
#if defined(__x86_64__) && defined(__GNUC__)
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
    return std::nan("");
  auto one_thread = [avx512] {
    constexpr long kIterations = 1 << 24;  // x 12 FMAs: about 35 ms at 3 GHz
    double best = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {
      long n = kIterations;
      auto t0 = std::chrono::steady_clock::now();
      // Twelve accumulators 0-11 gain 12 x 13 each step; all are zero, so no denormal ever
      // reaches the multipliers. R is the register name: zmm (AVX-512) or ymm (AVX2).
#define LOOM_ZERO(I) "vxorps %%xmm" #I ", %%xmm" #I ", %%xmm" #I "\n\t"
#define LOOM_FMA(R, I) "vfmadd231ps %%" R "12, %%" R "13, %%" R #I "\n\t"
#define LOOM_PEAK_LOOP(R)                                                                      \
  LOOM_ZERO(0) LOOM_ZERO(1) LOOM_ZERO(2) LOOM_ZERO(3) LOOM_ZERO(4) LOOM_ZERO(5) LOOM_ZERO(6)    \
  LOOM_ZERO(7) LOOM_ZERO(8) LOOM_ZERO(9) LOOM_ZERO(10) LOOM_ZERO(11) LOOM_ZERO(12)            \
  LOOM_ZERO(13) "1:\n\t" LOOM_FMA(R, 0) LOOM_FMA(R, 1) LOOM_FMA(R, 2) LOOM_FMA(R, 3)         \
  LOOM_FMA(R, 4) LOOM_FMA(R, 5) LOOM_FMA(R, 6) LOOM_FMA(R, 7) LOOM_FMA(R, 8) LOOM_FMA(R, 9)   \
  LOOM_FMA(R, 10) LOOM_FMA(R, 11) "dec %0\n\tjnz 1b\n\t"
      if (avx512)
        __asm__ volatile(LOOM_PEAK_LOOP("zmm")
                         : "+r"(n)
                         :
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                           "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "cc");
      else
        __asm__ volatile(LOOM_PEAK_LOOP("ymm")
                         : "+r"(n)
                         :
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                           "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "cc");
#undef LOOM_PEAK_LOOP
#undef LOOM_FMA
#undef LOOM_ZERO
      const double s = seconds_since(t0);
      best = std::max(best, kIterations * 12.0 * (avx512 ? 32 : 16) / s * 1e-9);
    }
    return best;
  };
  std::vector<double> rates(static_cast<size_t>(std::max(threads, 1)));
  std::vector<std::thread> workers;
  for (size_t t = 1; t < rates.size(); ++t) workers.emplace_back([&, t] { rates[t] = one_thread(); });
  rates[0] = one_thread();
  for (std::thread& w : workers) w.join();
  double total = 0;
  for (double r : rates) total += r;
  return total;
#else
  (void)threads;
  return std::nan("");
#endif
}

// Idle OpenMP (and OpenBLAS) workers spin for a while after their last call (up to ~0.1 s) and
// would steal a core from the next library: wait them out whenever the library changes.
inline void settle_after_switch(const std::string& library) {
  static std::string last;
  if (!last.empty() && last != library) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  last = library;
}

// ---- Checking ----------------------------------------------------------------------------------

// Max |out - reference| over max |reference|. Every implementation is checked against the same
// reference on the same inputs, so any two of them agree to within the sum of their errors.
constexpr double kTolerance = 1e-4;

inline double relative_error(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double err = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = std::fabs(out[i] - ref[i]);
    if (!(d <= err)) err = d;  // NaN propagates as a failure
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return err / std::max(scale, 1e-30);
}

inline std::string mismatch_message(double rel_err) {
  char msg[96];
  std::snprintf(msg, sizeof msg, "MISMATCH: max relative error %.3g exceeds %.0e", rel_err,
                kTolerance);
  return msg;
}

// ---- Implementations ---------------------------------------------------------------------------

// One implementation of one case, set up (weights converted, code compiled) and ready to time.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual void run() = 0;                   // the timed call
  virtual std::vector<float> output() = 0;  // the last result, row-major
  virtual absl::Status status() const { return absl::OkStatus(); }
};

class LoomRunner final : public Runner {
 public:
  LoomRunner(loom::CompiledGraph compiled, loom::NDArray input)
      : compiled_(std::move(compiled)), inputs_{std::move(input)} {}
  // The last output goes before the next run, as each peer writes one output buffer run after
  // run: the graph then reuses its buffer (CompiledGraph::run's pool) instead of alternating
  // between two, which cost up to a tenth of a 1x1 conv's time (3.2 MB output, two threads).
  void run() override {
    out_ = loom::NDArray();
    absl::StatusOr<std::vector<loom::NDArray>> out = compiled_.run(inputs_);
    if (out.ok())
      out_ = std::move(out->front());
    else
      status_ = out.status();
  }
  std::vector<float> output() override {
    const float* p = out_.data_as<float>();
    return p ? std::vector<float>(p, p + out_.numel()) : std::vector<float>{};
  }
  absl::Status status() const override { return status_; }

 private:
  loom::CompiledGraph compiled_;
  std::vector<loom::NDArray> inputs_;
  loom::NDArray out_;
  absl::Status status_;
};

// The index in kernels() of the (last) kernel a conv2d template scheduled; 0 if none did.
inline size_t conv_kernel_index(const loom::CompiledGraph& c) {
  size_t index = 0;
  for (size_t k = 0; k < c.kernels().size(); ++k)
    if (c.kernels()[k].schedule.rfind("conv2d", 0) == 0) index = k;
  return index;
}

// ---- Results -----------------------------------------------------------------------------------

// Console output as usual; keeps each benchmark's median and minimum real time (ms).
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> median_ms, min_ms;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const std::string& name = r.run_name.function_name;
      bool aggregate = r.run_type == Run::RT_Aggregate;
      bool single = !aggregate && r.repetitions <= 1;
      if (single || (aggregate && r.aggregate_name == "median"))
        median_ms[name] = r.GetAdjustedRealTime();
      if (single || (aggregate && r.aggregate_name == "min")) min_ms[name] = r.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

inline std::string fmt(std::optional<double> v, const char* format) {
  if (!v) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, *v);
  return buf;
}

inline nlohmann::ordered_json optional_json(std::optional<double> v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
}

inline nlohmann::ordered_json error_json(double rel_err) {
  return std::isnan(rel_err) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(rel_err);
}

// Writes the records; false (with a message) when the file cannot be written.
inline bool write_records(const nlohmann::ordered_json& records, const std::string& path) {
  std::ofstream out(path);
  out << records.dump(2) << "\n";
  if (!out) {
    std::fprintf(stderr, "could not write %s\n", path.c_str());
    return false;
  }
  std::printf("\nwrote %s\n", path.c_str());
  return true;
}

}  // namespace loom_bench
