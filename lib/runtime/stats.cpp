// The process-wide counters behind loom::stats(): relaxed atomics, one per Counter.

#include "loom/runtime/stats.hpp"

#include <atomic>
#include <chrono>

#include "loom/core/status.hpp"

namespace loom {
namespace {

constexpr int kCounters = 9;
static_assert(kCounters == static_cast<int>(Counter::kTuneMeasureMicros) + 1);
std::atomic<uint64_t> counters[kCounters];

uint64_t value(Counter c) {
  return counters[static_cast<int>(c)].load(std::memory_order_relaxed);
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void count(Counter counter, uint64_t n) {
  counters[static_cast<int>(counter)].fetch_add(n, std::memory_order_relaxed);
}

CountTime::CountTime(Counter counter) : counter_(counter), start_ns_(now_ns()) {}

CountTime::~CountTime() {
  count(counter_, static_cast<uint64_t>((now_ns() - start_ns_) / 1000));
}

Stats stats() {
  Stats s;
  s.llvm_compiles = value(Counter::kLlvmCompiles);
  s.tune_measurements = value(Counter::kTuneMeasurements);
  s.cache_memory_hits = value(Counter::kCacheMemoryHits);
  s.cache_disk_hits = value(Counter::kCacheDiskHits);
  s.cache_misses = value(Counter::kCacheMisses);
  s.nvrtc_compiles = value(Counter::kNvrtcCompiles);
  s.tune_compile_us = value(Counter::kTuneCompileMicros);
  s.tune_load_us = value(Counter::kTuneLoadMicros);
  s.tune_measure_us = value(Counter::kTuneMeasureMicros);
  return s;
}

Stats Stats::operator-(const Stats& earlier) const {
  Stats d;
  d.llvm_compiles = llvm_compiles - earlier.llvm_compiles;
  d.tune_measurements = tune_measurements - earlier.tune_measurements;
  d.cache_memory_hits = cache_memory_hits - earlier.cache_memory_hits;
  d.cache_disk_hits = cache_disk_hits - earlier.cache_disk_hits;
  d.cache_misses = cache_misses - earlier.cache_misses;
  d.nvrtc_compiles = nvrtc_compiles - earlier.nvrtc_compiles;
  d.tune_compile_us = tune_compile_us - earlier.tune_compile_us;
  d.tune_load_us = tune_load_us - earlier.tune_load_us;
  d.tune_measure_us = tune_measure_us - earlier.tune_measure_us;
  return d;
}

std::string Stats::to_string() const {
  return str_cat("llvm_compiles=", llvm_compiles, " tune_measurements=", tune_measurements,
                 " cache_memory_hits=", cache_memory_hits, " cache_disk_hits=", cache_disk_hits,
                 " cache_misses=", cache_misses, " nvrtc_compiles=", nvrtc_compiles,
                 " tune_compile_us=", tune_compile_us, " tune_load_us=", tune_load_us,
                 " tune_measure_us=", tune_measure_us);
}

}  // namespace loom
