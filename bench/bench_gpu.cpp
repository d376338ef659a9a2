// loom's CUDA f32 matmul against cuBLAS SGEMM (no TF32) on one GPU, in one process: 4096^3 and
// the BERT-base shapes at batch x sequence 128. loom's kernel is timed by CompiledGraph::profile
// (CUDA events around each launch); cuBLAS by events around ten calls, the median of rounds.
// Both results are compared on the device's outputs. cuBLAS is opened with dlopen
// (libcublas.so.13 or .12), so the program builds wherever the CUDA toolkit's headers are.
//
//   bench_gpu [--tune none|fast|full] [--quick] [--json PATH]
//
// Without a GPU it says so and exits 0 (it builds in CI, runs on a GPU machine).

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/cuda.hpp"

namespace cuda = loom::runtime::cuda;
using loom_bench::median;
using loom_bench::seconds_since;
using loom_bench::seeded_array;

namespace {

// The few cuBLAS entry points used, with their C signatures (cublas_v2.h).
struct Cublas {
  using Handle = void*;
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*set_math_mode)(Handle, int) = nullptr;
  int (*sgemm)(Handle, int, int, int, int, int, const float*, const float*, int, const float*,
               int, const float*, float*, int) = nullptr;
  Handle handle = nullptr;
  std::string error;

  static Cublas open() {
    Cublas c;
    void* lib = nullptr;
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib) {
      c.error = "cuBLAS not found (libcublas.so.13/.12)";
      return c;
    }
    c.create = reinterpret_cast<decltype(c.create)>(dlsym(lib, "cublasCreate_v2"));
    c.destroy = reinterpret_cast<decltype(c.destroy)>(dlsym(lib, "cublasDestroy_v2"));
    c.set_math_mode = reinterpret_cast<decltype(c.set_math_mode)>(dlsym(lib, "cublasSetMathMode"));
    c.sgemm = reinterpret_cast<decltype(c.sgemm)>(dlsym(lib, "cublasSgemm_v2"));
    if (!c.create || !c.destroy || !c.set_math_mode || !c.sgemm) {
      c.error = "cuBLAS lacks an entry point";
      return c;
    }
    if (c.create(&c.handle) != 0) {
      c.error = "cublasCreate failed";
      return c;
    }
    c.set_math_mode(c.handle, 0);  // CUBLAS_DEFAULT_MATH: full f32, no TF32
    return c;
  }
  bool ok() const { return error.empty(); }
};

struct Shape {
  int64_t m, n, k;
};

#define CHECK_OK(expr)                                                     \
  do {                                                                     \
    auto _s = (expr);                                                      \
    if (!_s.ok()) {                                                        \
      std::fprintf(stderr, "%s: %s\n", #expr, _s.ToString().c_str());    \
      return 1;                                                            \
    }                                                                      \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  std::string tune = "fast", json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tune" && i + 1 < argc) tune = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--quick") quick = true;
    else {
      std::fprintf(stderr, "usage: bench_gpu [--tune none|fast|full] [--quick] [--json PATH]\n");
      return 2;
    }
  }
  absl::StatusOr<cuda::Driver*> driver = cuda::Driver::get();
  absl::StatusOr<cuda::DeviceProperties> props =
      driver.ok() ? (*driver)->device_properties(0)
                  : absl::StatusOr<cuda::DeviceProperties>(driver.status());
  if (!props.ok()) {
    std::printf("bench_gpu: no GPU here (%s); nothing to time\n", props.status().ToString().c_str());
    return 0;
  }
  Cublas cublas = Cublas::open();
  std::printf("device %s (sm_%d, %d SMs), tune %s, cuBLAS %s\n", props->name.c_str(),
              props->sm_arch, props->sm_count, tune.c_str(), cublas.ok() ? "found" : cublas.error.c_str());
  loom::CompileOptions options;
  options.tune = tune == "none" ? loom::TuneLevel::kNone
                 : tune == "full" ? loom::TuneLevel::kFull
                                  : loom::TuneLevel::kFast;
  std::vector<Shape> shapes = {{4096, 4096, 4096}, {128, 768, 768}, {128, 3072, 768},
                               {128, 768, 3072}, {128, 2304, 768}};
  if (quick) shapes = {{1024, 1024, 1024}, {128, 768, 768}};
  const loom::Target target = loom::Target::cuda(props->sm_arch, 0);
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  std::printf("\n%-20s %10s %10s %8s %10s %8s\n", "gemm (m,n,k)", "loom ms", "cublas ms",
              "ratio", "rel err", "tune s");
  double log_ratio = 0;
  int counted = 0;
  bool wrong = false;  // some loom result differs from cuBLAS's beyond f32 rounding
  for (const Shape& s : shapes) {
    loom::NDArray x = seeded_array({s.m, s.k}, 1), w = seeded_array({s.k, s.n}, 2);
    loom::Graph g;
    g.output(g.input("x", {s.m, s.k}).matmul(g.constant("w", w)));
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler(target).compile(g, options);
    CHECK_OK(compiled.status());
    const double tune_s = seconds_since(t0);
    absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run({x});
    CHECK_OK(out.status());
    absl::StatusOr<std::vector<double>> kernel_ms = compiled->profile({x}, 20);
    CHECK_OK(kernel_ms.status());
    double loom_ms = 0;
    for (double ms : *kernel_ms) loom_ms += ms;

    double peer_ms = std::nan(""), rel_err = std::nan("");
    if (cublas.ok()) {
      cuda::Driver& d = **driver;
      const size_t xb = static_cast<size_t>(s.m * s.k) * 4, wb = static_cast<size_t>(s.k * s.n) * 4,
                   yb = static_cast<size_t>(s.m * s.n) * 4;
      auto dx = d.allocate(xb), dw = d.allocate(wb), dy = d.allocate(yb);
      CHECK_OK(dx.status());
      CHECK_OK(dw.status());
      CHECK_OK(dy.status());
      CHECK_OK(d.copy_to_device(*dx, x.data(), xb));
      CHECK_OK(d.copy_to_device(*dw, w.data(), wb));
      const float one = 1, zero = 0;
      // Row-major y = x w is column-major y^T = w^T x^T.
      auto sgemm = [&] {
        return cublas.sgemm(cublas.handle, 0, 0, static_cast<int>(s.n), static_cast<int>(s.m),
                            static_cast<int>(s.k), &one, reinterpret_cast<const float*>(*dw),
                            static_cast<int>(s.n), reinterpret_cast<const float*>(*dx),
                            static_cast<int>(s.k), &zero, reinterpret_cast<float*>(*dy),
                            static_cast<int>(s.n));
      };
      if (sgemm() != 0) {
        std::fprintf(stderr, "cublasSgemm failed\n");
        return 1;
      }
      auto e0 = d.create_event(), e1 = d.create_event();
      CHECK_OK(e0.status());
      CHECK_OK(e1.status());
      std::vector<double> rounds;
      for (int r = 0; r < 7; ++r) {
        CHECK_OK(d.record_event(*e0, nullptr));
        for (int i = 0; i < 10; ++i) sgemm();
        CHECK_OK(d.record_event(*e1, nullptr));
        CHECK_OK(d.synchronize_event(*e1));
        auto ms = d.elapsed_ms(*e0, *e1);
        CHECK_OK(ms.status());
        rounds.push_back(*ms / 10);
      }
      peer_ms = median(rounds);
      std::vector<float> ref(static_cast<size_t>(s.m * s.n));
      CHECK_OK(d.copy_to_host(ref.data(), *dy, yb));
      const float* got = (*out)[0].data_as<float>();
      double max_ref = 0, max_diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - ref[i]));
      }
      rel_err = max_diff / std::max(max_ref, 1e-30);
      if (rel_err > 1e-3) wrong = true;
      (void)d.destroy_event(*e0);
      (void)d.destroy_event(*e1);
      (void)d.free(*dx);
      (void)d.free(*dw);
      (void)d.free(*dy);
      log_ratio += std::log(peer_ms / loom_ms);
      ++counted;
    }
    const std::string name = std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
    std::printf("%-20s %10.4f %10.4f %8.3f %10.2e %8.1f\n", name.c_str(), loom_ms, peer_ms,
                peer_ms / loom_ms, rel_err, tune_s);
    records.push_back({{"name", name}, {"op", "gemm"}, {"shape", {s.m, s.n, s.k}},
                       {"device", props->name}, {"loom_ms", loom_ms}, {"peer", "cublas"},
                       {"peer_ms", peer_ms}, {"rel_err", rel_err}, {"tune_s", tune_s}});
  }
  if (counted)
    std::printf("geometric mean cublas / loom: %.3f (goal 0.8 or better)\n",
                std::exp(log_ratio / counted));
  if (!json_path.empty() && !loom_bench::write_records(records, json_path)) return 1;
  if (wrong) std::printf("bench_gpu: loom's results differ from cuBLAS's (rel err > 1e-3)\n");
  return wrong ? 1 : 0;
}
