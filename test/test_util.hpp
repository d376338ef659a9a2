// Shared helpers for loom's tests: random inputs with a reported seed, and tolerant comparison.
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "loom/core/ndarray.hpp"
#include "loom/tune/space.hpp"

namespace loom::testing {

// A forced config of the warpgroup GEMM templates (cuda_wgmma_gemm, cuda_wgmma_conv2d), every
// parameter named, as a forced config must.
inline tune::Config wgmma_config(int64_t warpgroups, int64_t block_n, int64_t stages,
                                 int64_t split_k = 1, int64_t tma = 0, int64_t cluster = 1,
                                 int64_t persistent = 0) {
  return tune::Config({{"warpgroups", warpgroups},
                       {"block_n", block_n},
                       {"stages", stages},
                       {"split_k", split_k},
                       {"tma", tma},
                       {"cluster", cluster},
                       {"persistent", persistent}});
}

// A fresh seed per process, printed so a failure can be replayed with LOOM_TEST_SEED.
inline uint64_t test_seed() {
  static uint64_t seed = [] {
    const char* env = std::getenv("LOOM_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::fprintf(stderr, "loom tests: LOOM_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

inline std::mt19937_64& rng() {
  static std::mt19937_64 gen(test_seed());
  return gen;
}

// Uniform values in [lo, hi) (integers for integer dtypes).
inline NDArray random_array(DType dtype, std::vector<int64_t> shape, double lo = -1, double hi = 1) {
  NDArray a(dtype, std::move(shape));
  std::uniform_real_distribution<double> dist(lo, hi);
  for (int64_t i = 0; i < a.numel(); ++i) {
    double v = dist(rng());
    a.set(i, dtype.is_float() ? v : std::floor(v));
  }
  return a;
}

// Element-wise |a - b| <= atol + rtol * |b|; NaN anywhere fails. Reports the first mismatch.
inline void require_close(const NDArray& actual, const NDArray& expected, double rtol = 1e-5,
                          double atol = 1e-6) {
  REQUIRE(actual.dtype() == expected.dtype());
  REQUIRE(actual.shape() == expected.shape());
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.get(i), e = expected.get(i);
    bool ok = !std::isnan(a) && !std::isnan(e) && std::fabs(a - e) <= atol + rtol * std::fabs(e);
    if (!ok) {
      INFO("element " << i << " of " << actual.numel() << ": got " << a << ", expected " << e);
      REQUIRE(ok);
    }
  }
}

}  // namespace loom::testing
