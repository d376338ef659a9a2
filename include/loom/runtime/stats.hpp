// Process-wide counters of the expensive work a compile does (LLVM compilations, tuning
// measurements) and of kernel cache outcomes, so an engine can check that a warm start did none.
#pragma once

#include <cstdint>
#include <string>

namespace loom {

struct Stats {
  uint64_t llvm_compiles = 0;      // modules compiled to machine code by LLVM
  uint64_t tune_measurements = 0;  // candidate kernels timed by the tuner
  uint64_t cache_memory_hits = 0;  // kernels found in (or being built by) the memory level
  uint64_t cache_disk_hits = 0;    // kernels loaded from verified disk entries
  uint64_t cache_misses = 0;       // kernels built (tuned and compiled) because no level had them
  uint64_t nvrtc_compiles = 0;     // CUDA modules compiled to cubins by NVRTC
  // Where tuning's wall time went, in microseconds, summed over tunings: compiling candidates
  // (LLVM or NVRTC, all cores at once), loading them onto a device with its buffers (CUDA), and
  // timing them. A CUDA graph's tunings compile at the same time, so their compile times add up
  // to more than the wall time; their loads and timings take turns.
  uint64_t tune_compile_us = 0;
  uint64_t tune_load_us = 0;
  uint64_t tune_measure_us = 0;

  // "llvm_compiles=0 tune_measurements=0 cache_memory_hits=3 cache_disk_hits=12 cache_misses=0
  // nvrtc_compiles=0 tune_compile_us=0 tune_load_us=0 tune_measure_us=0"
  std::string to_string() const;
  // Counts since an earlier snapshot.
  Stats operator-(const Stats& earlier) const;
};

// A snapshot of the counters since the process started.
Stats stats();

enum class Counter {
  kLlvmCompiles,
  kTuneMeasurements,
  kCacheMemoryHits,
  kCacheDiskHits,
  kCacheMisses,
  kNvrtcCompiles,
  kTuneCompileMicros,
  kTuneLoadMicros,
  kTuneMeasureMicros
};
// Adds n to one counter (loom's compiler, JIT, tuner and cache do; thread-safe).
void count(Counter counter, uint64_t n = 1);

// Adds the wall time since it was made to a microsecond counter when it goes out of scope.
class CountTime {
 public:
  explicit CountTime(Counter counter);
  ~CountTime();
  CountTime(const CountTime&) = delete;
  CountTime& operator=(const CountTime&) = delete;

 private:
  Counter counter_;
  int64_t start_ns_;
};

}  // namespace loom
