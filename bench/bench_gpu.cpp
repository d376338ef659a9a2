// loom on one GPU, in one process, against the NVIDIA libraries where they are here:
//  1. matmul: f32 against cuBLAS SGEMM (no TF32), f16 and bf16 (f32 accumulation, loom's
//     tensor-core template) against cublasGemmEx, on 4096^3 and the BERT-base shapes at
//     batch x sequence 128. loom and cuBLAS are timed alike: CUDA events around ten calls
//     queued back to back (loom's enqueue_on_device on device memory), the median of rounds
//     (events_ms). loom's kernel time as CompiledGraph::profile reads it (events around each
//     launch, which for a kernel of a few microseconds also catch the launch's own latency) is
//     printed beside it. Both results are compared on the device's outputs. cuBLAS is opened with
//     dlopen (libcublas.so.13 or .12), so the program builds wherever the CUDA toolkit's headers
//     are. In f16 also the BERT-base matmuls with their epilogues (+ bias, GELU, + residual):
//     loom's one fused kernel against cuBLAS's GEMM plus the epilogue as a kernel of its own (both
//     timed as above).
//  2. the ResNet-50 convolution layers (with bias and relu as the model has them), f16, batch 1
//     and 32: loom's kernels (profile), NCHW (all kernels) and NHWC (LayoutPolicy::kFixed with
//     channels_last(): the conv's kernel, with its fused epilogue; the conversion of the graph's
//     NCHW input excluded, as PyTorch's channels-last time excludes it, while the conversion of
//     the output back to NCHW is fused into the conv's stores and counts). The faster counts as
//     loom_ms.
//  3. ResNet-50 and BERT-base (sequence 128, with an attention mask) end to end, f16, batch 1:
//     run_on_device with inputs and outputs in device memory, wall time per inference, median
//     of rounds (the runs replay one CUDA graph of the kernels; the time with the kernels
//     launched one by one, CompileOptions::cuda_graphs off, is printed beside it). ResNet-50
//     also with channels_last() fixed (conversions included); the faster counts.
// bench/gpu_torch_peers.py times 2 and 3 in PyTorch (cuDNN; eager and torch.compile) and prints
// the ratios against this program's JSON.
//
//   bench_gpu [--tune none|fast|full] [--quick] [--dtype f32|f16|bf16|all]
//             [--only gemm|models|convs] [--shapes MxNxK[,MxNxK...]] [--json PATH]
//             [--limit TEMPLATE:PARAM=V[/V...][,...]]
//
// --only gemm runs part 1, --only models parts 2 and 3, --only convs part 2; --quick runs two
// matmul shapes and the convolutions at batch 1 only. On sm_90, part 1 also times f16 4096^3
// with chosen warpgroup GEMM configs (each the only config its limits leave, so that the tuner's
// checked first run catches one that hangs), operands copied by cp.async or by TMA, with and
// without clusters of two blocks. --shapes times
// part 1 on the given matmul shapes instead (in f16 each also with + bias, GELU and + residual
// fused), without the chosen configs. --limit sets CompileOptions::template_limits, e.g.
// cuda_wgmma_gemm:tma=0,cuda_wgmma_gemm:cluster=1 keeps TMA and clusters out of every tuning
// (and leaves out the chosen configs that use them).
//
// Without a GPU it says so and exits 0 (it builds in CI, runs on a GPU machine).

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/cuda.hpp"
#include "models.hpp"

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
  // cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
  // Ctype, ldc, computeType, algo).
  int (*gemm_ex)(Handle, int, int, int, int, int, const void*, const void*, int, int, const void*,
                 int, int, const void*, void*, int, int, int, int) = nullptr;
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
    c.gemm_ex = reinterpret_cast<decltype(c.gemm_ex)>(dlsym(lib, "cublasGemmEx"));
    if (!c.create || !c.destroy || !c.set_math_mode || !c.sgemm || !c.gemm_ex) {
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

std::string shape_name(const Shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
}

// Appends the shapes of a list "MxNxK,MxNxK,..." (each extent positive) to *out; false (saying
// why) for anything else.
bool parse_shapes(const std::string& list, std::vector<Shape>* out) {
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, end - at);
    Shape s{};
    char x1 = 0, x2 = 0;
    int used = 0;
    if (std::sscanf(item.c_str(), "%" SCNd64 "%c%" SCNd64 "%c%" SCNd64 "%n", &s.m, &x1, &s.n, &x2,
                    &s.k, &used) != 5 ||
        x1 != 'x' || x2 != 'x' || used != static_cast<int>(item.size()) || s.m < 1 || s.n < 1 ||
        s.k < 1) {
      std::fprintf(stderr, "bench_gpu: --shapes: '%s' is not MxNxK\n", item.c_str());
      return false;
    }
    out->push_back(s);
    at = end + 1;
  }
  return true;
}

// "TEMPLATE:PARAM=V[/V...],..." into template_limits; false (and a message) when malformed.
bool parse_limits(const std::string& list,
                  std::map<std::string, std::map<std::string, std::vector<int64_t>>>* out) {
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, end - at);
    const size_t colon = item.find(':'), equals = item.find('=');
    bool ok = colon != std::string::npos && equals != std::string::npos && colon > 0 &&
              equals > colon + 1 && equals + 1 < item.size();
    std::vector<int64_t> values;
    for (size_t v = equals + 1; ok && v <= item.size();) {
      const size_t slash = std::min(item.find('/', v), item.size());
      char* stop = nullptr;
      const std::string value = item.substr(v, slash - v);
      values.push_back(std::strtoll(value.c_str(), &stop, 10));
      ok = !value.empty() && *stop == 0;
      v = slash + 1;
    }
    if (!ok) {
      std::fprintf(stderr, "bench_gpu: --limit: '%s' is not TEMPLATE:PARAM=V[/V...]\n",
                   item.c_str());
      return false;
    }
    (*out)[item.substr(0, colon)][item.substr(colon + 1, equals - colon - 1)] = values;
    at = end + 1;
  }
  return true;
}

// cudaDataType_t of a loom dtype (library_types.h).
int cuda_data_type(loom::DType t) {
  if (t == loom::DType::f16()) return 2;    // CUDA_R_16F
  if (t == loom::DType::bf16()) return 14;  // CUDA_R_16BF
  return 0;                                 // CUDA_R_32F
}

loom::NDArray as_type(const loom::NDArray& a, loom::DType t) {
  if (a.dtype() == t) return a;
  loom::NDArray out(t, a.shape());
  for (int64_t i = 0; i < a.numel(); ++i) out.set(i, a.get(i));
  return out;
}

struct Result {
  // loom_ms: runs queued back to back (events_ms, as cuBLAS is timed); kernel_ms: the kernels'
  // time as CompiledGraph::profile reads it (events around each launch).
  double loom_ms = 0, kernel_ms = 0, peer_ms = std::nan(""), rel_err = std::nan(""), tune_s = 0;
  std::string schedule;  // the kernels' templates and configs
};

// The largest difference between got and want relative to want's largest magnitude; NaN when a
// value is not finite (std::max would skip it).
double relative_error(const loom::NDArray& got, const loom::NDArray& want) {
  double max_ref = 0, max_diff = 0;
  bool finite = true;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double w = want.get(i), g = got.get(i);
    finite = finite && std::isfinite(w) && std::isfinite(g);
    max_ref = std::max(max_ref, std::fabs(w));
    max_diff = std::max(max_diff, std::fabs(g - w));
  }
  return finite ? max_diff / std::max(max_ref, 1e-30) : std::nan("");
}

// Milliseconds per call of `call` (which queues GPU work on the legacy default stream): CUDA
// events around 10 calls, the median of 7 rounds, after one call. loom and cuBLAS are timed
// alike by it: back to back, so each launch's host cost overlaps the work queued before it.
template <typename Call>
absl::StatusOr<double> events_ms(cuda::Driver& d, Call&& call) {
  LOOM_RETURN_IF_ERROR(call());
  auto e0 = d.create_event(), e1 = d.create_event();
  if (!e0.ok() || !e1.ok()) return absl::InternalError("cuEventCreate failed");
  std::vector<double> rounds;
  absl::Status s;
  for (int round = 0; round < 7 && s.ok(); ++round) {
    s = d.record_event(*e0, nullptr);
    for (int i = 0; i < 10 && s.ok(); ++i) s = call();
    if (s.ok()) s = d.record_event(*e1, nullptr);
    if (s.ok()) s = d.synchronize_event(*e1);
    if (!s.ok()) break;
    absl::StatusOr<float> ms = d.elapsed_ms(*e0, *e1);
    if (ms.ok()) rounds.push_back(*ms / 10.0);
    s = ms.status();
  }
  (void)d.destroy_event(*e0);
  (void)d.destroy_event(*e1);
  if (!s.ok()) return s;
  return median(rounds);
}

// A graph's inputs copied to device memory and room for its outputs there, freed at the end.
class DeviceRun {
 public:
  static absl::StatusOr<DeviceRun> place(const loom::CompiledGraph& compiled,
                                         const std::vector<loom::NDArray>& inputs,
                                         cuda::Driver& d) {
    DeviceRun run(d);
    for (const loom::NDArray& a : inputs) {
      absl::StatusOr<loom::DeviceTensor> t =
          run.allocate(a.dtype(), a.shape(), static_cast<size_t>(a.nbytes()), a.data());
      if (!t.ok()) return t.status();
      run.in_.push_back(*t);
    }
    for (const loom::TensorType& t : compiled.output_types()) {
      std::vector<int64_t> shape;
      int64_t n = 1;
      for (const loom::Dim& dim : t.shape) {
        shape.push_back(dim.value());
        n *= dim.value();
      }
      absl::StatusOr<loom::DeviceTensor> o =
          run.allocate(t.dtype, shape, static_cast<size_t>(n * t.dtype.bytes()), nullptr);
      if (!o.ok()) return o.status();
      run.out_.push_back(*o);
    }
    return run;
  }
  DeviceRun(DeviceRun&& o) noexcept
      : d_(o.d_), owned_(std::move(o.owned_)), in_(std::move(o.in_)), out_(std::move(o.out_)) {
    o.owned_.clear();
  }
  DeviceRun& operator=(DeviceRun&&) = delete;
  ~DeviceRun() {
    for (cuda::DevicePtr p : owned_) (void)d_->free(p);
  }

  const std::vector<loom::DeviceTensor>& in() const { return in_; }
  const std::vector<loom::DeviceTensor>& out() const { return out_; }

 private:
  explicit DeviceRun(cuda::Driver& d) : d_(&d) {}
  absl::StatusOr<loom::DeviceTensor> allocate(loom::DType t, const std::vector<int64_t>& shape,
                                              size_t bytes, const void* host) {
    absl::StatusOr<cuda::DevicePtr> p = d_->allocate(std::max<size_t>(bytes, 16));
    if (!p.ok()) return p.status();
    owned_.push_back(*p);
    if (host) LOOM_RETURN_IF_ERROR(d_->copy_to_device(*p, host, bytes));
    return loom::DeviceTensor{static_cast<uint64_t>(*p), t, shape};
  }

  cuda::Driver* d_;
  std::vector<cuda::DevicePtr> owned_;
  std::vector<loom::DeviceTensor> in_, out_;
};

// Milliseconds per run of `compiled` queued back to back on the default stream (inputs and
// outputs in device memory), by events_ms: the method cuBLAS is timed with.
absl::StatusOr<double> queued_ms(const loom::CompiledGraph& compiled,
                                 const std::vector<loom::NDArray>& inputs, cuda::Driver& d) {
  LOOM_ASSIGN_OR_RETURN(DeviceRun run, DeviceRun::place(compiled, inputs, d));
  return events_ms(d, [&] { return compiled.enqueue_on_device(run.in(), run.out(), nullptr); });
}

// The summed kernel milliseconds of one run of `compiled` (median of 20 profiled runs each).
absl::StatusOr<double> kernels_ms(const loom::CompiledGraph& compiled,
                                  const std::vector<loom::NDArray>& inputs) {
  absl::StatusOr<std::vector<double>> kernel_ms = compiled.profile(inputs, 20);
  if (!kernel_ms.ok()) return kernel_ms.status();
  double sum = 0;
  for (double ms : *kernel_ms) sum += ms;
  return sum;
}

// Prints the candidates that the tuning of a graph's kernels refused (a module the device did not
// load, a launch it refused, an output that disagreed with the default config's), to stderr.
void report_refused(const loom::CompiledGraph& compiled) {
  for (const loom::KernelInfo& k : compiled.kernels())
    for (const loom::tune::Refusal& r : k.refused)
      std::fprintf(stderr, "  tuning %s refused [%s]: %s\n", k.name.c_str(),
                   r.config.to_string().c_str(), r.reason.c_str());
}

// The graph's kernels' schedules, "; " between them; its refused candidates reported.
std::string schedules(const loom::CompiledGraph& compiled) {
  report_refused(compiled);
  std::string s;
  for (const loom::KernelInfo& k : compiled.kernels()) s += (s.empty() ? "" : "; ") + k.schedule;
  return s;
}

// y = x w in cuBLAS (GemmEx, f32 accumulation; Sgemm without TF32 for f32): the milliseconds per
// call (median of 7 rounds of 10 calls, CUDA events) and y.
absl::StatusOr<std::pair<double, loom::NDArray>> cublas_gemm(const Shape& s, loom::DType t,
                                                             cuda::Driver& d, Cublas& cublas,
                                                             const loom::NDArray& x,
                                                             const loom::NDArray& w) {
  const size_t xb = static_cast<size_t>(x.nbytes()), wb = static_cast<size_t>(w.nbytes());
  loom::NDArray ref(t, {s.m, s.n});
  const size_t yb = static_cast<size_t>(ref.nbytes());
  auto dx = d.allocate(xb), dw = d.allocate(wb), dy = d.allocate(yb);
  for (const auto* p : {&dx, &dw, &dy})
    if (!p->ok()) return p->status();
  LOOM_RETURN_IF_ERROR(d.copy_to_device(*dx, x.data(), xb));
  LOOM_RETURN_IF_ERROR(d.copy_to_device(*dw, w.data(), wb));
  const float one = 1, zero = 0;
  const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
  // Row-major y = x w is column-major y^T = w^T x^T.
  auto gemm = [&] {
    if (t == loom::DType::f32())
      return cublas.sgemm(cublas.handle, 0, 0, n, m, k, &one, reinterpret_cast<const float*>(*dw),
                          n, reinterpret_cast<const float*>(*dx), k, &zero,
                          reinterpret_cast<float*>(*dy), n);
    const int type = cuda_data_type(t);
    return cublas.gemm_ex(cublas.handle, 0, 0, n, m, k, &one, reinterpret_cast<const void*>(*dw),
                          type, n, reinterpret_cast<const void*>(*dx), type, k, &zero,
                          reinterpret_cast<void*>(*dy), type, n, /*CUBLAS_COMPUTE_32F*/ 68,
                          /*CUBLAS_GEMM_DEFAULT*/ -1);
  };
  absl::StatusOr<double> ms = events_ms(d, [&] {
    return gemm() == 0 ? absl::OkStatus() : absl::InternalError("the cuBLAS GEMM failed");
  });
  absl::Status copied = ms.ok() ? d.copy_to_host(ref.data(), *dy, yb) : ms.status();
  for (cuda::DevicePtr p : {*dx, *dw, *dy}) (void)d.free(p);
  if (!copied.ok()) return copied;
  return std::make_pair(*ms, std::move(ref));
}

// Times y = x w (w a constant) in loom and in cuBLAS and compares the two results.
absl::StatusOr<Result> run_case(const Shape& s, loom::DType t, const loom::Target& target,
                                const loom::CompileOptions& options, cuda::Driver& d,
                                Cublas& cublas) {
  Result r;
  const loom::NDArray x = as_type(seeded_array({s.m, s.k}, 1), t),
                      w = as_type(seeded_array({s.k, s.n}, 2), t);
  loom::Graph g;
  g.output(g.input("x", {s.m, s.k}, t).matmul(g.constant("w", w)));
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler(target).compile(g, options);
  if (!compiled.ok()) return compiled.status();
  r.tune_s = seconds_since(t0);
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run({x});
  if (!out.ok()) return out.status();
  LOOM_ASSIGN_OR_RETURN(r.kernel_ms, kernels_ms(*compiled, {x}));
  LOOM_ASSIGN_OR_RETURN(r.loom_ms, queued_ms(*compiled, {x}, d));
  r.schedule = schedules(*compiled);
  if (!cublas.ok()) return r;
  LOOM_ASSIGN_OR_RETURN(auto peer, cublas_gemm(s, t, d, cublas, x, w));
  r.peer_ms = peer.first;
  r.rel_err = relative_error((*out)[0], peer.second);
  return r;
}

// A matmul of BERT-base (sequence 128) with what follows it in the layer: + bias, then GELU (the
// first FFN matmul) or + the residual (the attention output and the second FFN matmul).
struct EpilogueCase {
  std::string name;
  Shape shape;
  bool gelu, residual;
};
const EpilogueCase kBertEpilogues[] = {
    {"qkv 128x2304x768 +bias", {128, 2304, 768}, false, false},
    {"attn_out 128x768x768 +bias+res", {128, 768, 768}, false, true},
    {"ffn1 128x3072x768 +bias+gelu", {128, 3072, 768}, true, false},
    {"ffn2 128x768x3072 +bias+res", {128, 768, 3072}, false, true}};

struct EpilogueResult {
  // Timed as Result's loom_ms (queued runs, events_ms); kernel_ms as its kernel_ms.
  double loom_ms = 0, kernel_ms = 0, cublas_ms = std::nan(""), epilogue_ms = std::nan(""),
         rel_err = std::nan("");
  double tune_s = 0;
  size_t kernels = 0;  // loom's kernels for the matmul and its epilogue (1: fused)
  std::string schedule;
};

// The matmul and its epilogue in loom (fused into the matmul's kernel) against cuBLAS's GEMM
// followed by the epilogue as a kernel of its own (what a framework without epilogue fusion
// launches; loom compiles that elementwise kernel, whose time is bound by memory), compared.
absl::StatusOr<EpilogueResult> run_epilogue_case(const EpilogueCase& c, loom::DType t,
                                                 const loom::Target& target,
                                                 const loom::CompileOptions& options,
                                                 cuda::Driver& d, Cublas& cublas) {
  const Shape& s = c.shape;
  const loom::NDArray x = as_type(seeded_array({s.m, s.k}, 1), t),
                      w = as_type(seeded_array({s.k, s.n}, 2), t),
                      b = as_type(seeded_array({s.n}, 3), t),
                      res = as_type(seeded_array({s.m, s.n}, 4), t);
  // y -> y + b [-> gelu] [-> + residual], on the graph of y.
  auto epilogue = [&](loom::Graph& g, loom::Tensor y) {
    y = y.add(g.constant("b", b));
    if (c.gelu) y = y.gelu();
    if (c.residual) y = y.add(g.input("r", {s.m, s.n}, t));
    g.output(y);
  };
  loom::Graph fused, alone;
  epilogue(fused, fused.input("x", {s.m, s.k}, t).matmul(fused.constant("w", w)));
  epilogue(alone, alone.input("y", {s.m, s.n}, t));
  std::vector<loom::NDArray> fused_in = {x};
  if (c.residual) fused_in.push_back(res);

  EpilogueResult r;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler(target).compile(fused, options);
  if (!compiled.ok()) return compiled.status();
  r.tune_s = seconds_since(t0);
  r.kernels = compiled->kernels().size();
  r.schedule = schedules(*compiled);
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run(fused_in);
  if (!out.ok()) return out.status();
  LOOM_ASSIGN_OR_RETURN(r.kernel_ms, kernels_ms(*compiled, fused_in));
  LOOM_ASSIGN_OR_RETURN(r.loom_ms, queued_ms(*compiled, fused_in, d));
  if (!cublas.ok()) return r;

  LOOM_ASSIGN_OR_RETURN(auto gemm, cublas_gemm(s, t, d, cublas, x, w));
  r.cublas_ms = gemm.first;
  absl::StatusOr<loom::CompiledGraph> epi = loom::Compiler(target).compile(alone, options);
  if (!epi.ok()) return epi.status();
  std::vector<loom::NDArray> epi_in = {gemm.second};
  if (c.residual) epi_in.push_back(res);
  LOOM_ASSIGN_OR_RETURN(r.epilogue_ms, queued_ms(*epi, epi_in, d));
  absl::StatusOr<std::vector<loom::NDArray>> want = epi->run(epi_in);
  if (!want.ok()) return want.status();
  r.rel_err = relative_error((*out)[0], (*want)[0]);
  return r;
}

// Wall milliseconds of one run_on_device of `compiled` (inputs on the device, outputs written to
// device memory), the median of 7 rounds of 10 runs after a warm-up.
absl::StatusOr<double> device_run_ms(const loom::CompiledGraph& compiled,
                                     const std::vector<loom::NDArray>& inputs, cuda::Driver& d) {
  LOOM_ASSIGN_OR_RETURN(DeviceRun run, DeviceRun::place(compiled, inputs, d));
  absl::Status s = compiled.run_on_device(run.in(), run.out());
  std::vector<double> rounds;
  for (int round = 0; round < 7 && s.ok(); ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 10 && s.ok(); ++i) s = compiled.run_on_device(run.in(), run.out());
    rounds.push_back(seconds_since(t0) * 1e3 / 10);
  }
  if (!s.ok()) return s;
  return median(rounds);
}

// The ResNet-50 convolution layers: input channels, size, output channels, kernel, stride.
struct ConvLayer {
  int64_t c, hw, o;
  int kernel, stride;
};
const ConvLayer kResnetLayers[] = {{64, 56, 64, 3, 1},   {64, 56, 256, 1, 1}, {256, 56, 64, 1, 1},
                                   {128, 28, 128, 3, 1}, {256, 14, 256, 3, 1}, {512, 7, 512, 3, 1},
                                   {3, 224, 64, 7, 2}};

// options with every conv the NHWC implicit GEMM takes in channels_last().
loom::CompileOptions nhwc_options(loom::CompileOptions options) {
  options.layouts = loom::LayoutPolicy::kFixed;
  options.fixed_layout = loom::channels_last();
  return options;
}

// Part 2 and, with `models`, part 3, f16. Returns false when something failed (said on stderr).
bool bench_models(const loom::Target& target, const loom::CompileOptions& options, cuda::Driver& d,
                  const std::string& device, bool quick, bool models,
                  nlohmann::ordered_json& records) {
  const loom::DType t = loom::DType::f16();
  std::printf("\n%-34s %10s %10s %8s %8s\n", "conv2d f16 (+bias, relu)", "nchw ms", "nhwc ms",
              "tune s", "nhwc s");
  for (int64_t batch : {int64_t{1}, int64_t{32}}) {
    if (quick && batch > 1) break;
    for (const ConvLayer& l : kResnetLayers) {
      loom_models::Weights w;
      loom::Graph g;
      loom::Tensor x = g.input("x", {batch, l.c, l.hw, l.hw}, t);
      loom::Tensor wt = g.constant("w", w.make({l.o, l.c, l.kernel, l.kernel}, 0.1, t));
      g.output((x.conv2d(wt, {.stride = l.stride, .padding = l.kernel / 2}) +
                g.constant("b", w.make({l.o, 1, 1}, 0.05, t)))
                   .relu());
      const std::vector<loom::NDArray> inputs = {w.make({batch, l.c, l.hw, l.hw}, 1.0, t)};
      // Milliseconds of the graph's kernels (all, or those computing a conv2d), and seconds
      // compiling it.
      auto time = [&](const loom::CompileOptions& o, bool conv_only) -> std::pair<double, double> {
        const auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler(target).compile(g, o);
        if (!compiled.ok()) {
          std::fprintf(stderr, "conv2d: %s\n", compiled.status().ToString().c_str());
          return {-1, 0};
        }
        report_refused(*compiled);
        const double tune_s = seconds_since(t0);
        absl::StatusOr<std::vector<double>> ms = compiled->profile(inputs, 20);
        if (!ms.ok()) {
          std::fprintf(stderr, "conv2d: %s\n", ms.status().ToString().c_str());
          return {-1, 0};
        }
        double sum = 0;
        for (size_t k = 0; k < ms->size(); ++k) {
          const std::vector<std::string>& ops = compiled->kernels()[k].ops;
          if (!conv_only || std::any_of(ops.begin(), ops.end(), [](const std::string& op) {
                return op.rfind("conv2d", 0) == 0;
              }))
            sum += (*ms)[k];
        }
        return {sum, tune_s};
      };
      const auto [nchw_ms, tune_s] = time(options, false);
      const auto [nhwc_ms, nhwc_tune_s] = time(nhwc_options(options), true);
      if (nchw_ms < 0 || nhwc_ms < 0) return false;
      const double loom_ms = std::min(nchw_ms, nhwc_ms);
      const std::string name = "conv_b" + std::to_string(batch) + "_" + std::to_string(l.c) + "x" +
                               std::to_string(l.hw) + "x" + std::to_string(l.hw) + "_" +
                               std::to_string(l.o) + "_k" + std::to_string(l.kernel) + "s" +
                               std::to_string(l.stride);
      std::printf("%-34s %10.4f %10.4f %8.1f %8.1f\n", name.c_str(), nchw_ms, nhwc_ms, tune_s,
                  nhwc_tune_s);
      records.push_back({{"name", name},
                         {"op", "conv2d"},
                         {"dtype", "f16"},
                         {"batch", batch},
                         {"shape", {l.c, l.hw, l.o, l.kernel, l.stride}},
                         {"device", device},
                         {"loom_ms", loom_ms},
                         {"loom_nchw_ms", nchw_ms},
                         {"loom_nhwc_ms", nhwc_ms},
                         {"tune_s", tune_s},
                         {"nhwc_tune_s", nhwc_tune_s}});
    }
  }
  if (!models) return true;
  std::printf("\n%-34s %10s %8s %8s\n", "model f16, batch 1", "loom ms", "kernels", "tune s");
  for (const std::string model : {"resnet50", "resnet50_nhwc", "bert_base_seq128"}) {
    loom_models::Weights w;
    loom::Graph g;
    std::vector<loom::NDArray> inputs;
    if (model.rfind("resnet50", 0) == 0) {
      loom_models::ResNetConfig config;
      config.dtype = t;
      g = loom_models::build_resnet(config, w);
      inputs = {w.make({1, 3, 224, 224}, 1.0, t)};
    } else {
      loom_models::BertConfig config;
      config.dtype = t;
      config.attention_mask = true;
      g = loom_models::build_bert(config, w);
      // The last 16 of the 128 tokens are padding.
      loom::NDArray mask(t, {1, 1, 1, 128});
      for (int64_t i = 0; i < 128; ++i) mask.set(i, i < 112 ? 0.0 : -10000.0);
      inputs = {w.make({1, 128, 768}, 1.0, t), mask};
    }
    // BERT is compiled with a symbolic sequence length and tuned when specialize binds it.
    auto build = [&](loom::CompileOptions o) -> absl::StatusOr<loom::CompiledGraph> {
      LOOM_ASSIGN_OR_RETURN(
          loom::CompiledGraph compiled,
          loom::Compiler(target).compile(g, model == "resnet50_nhwc" ? nhwc_options(o) : o));
      if (model.rfind("bert", 0) != 0) return compiled;
      return compiled.specialize({{"seq", 128}});
    };
    const auto t0 = std::chrono::steady_clock::now();
    const loom::Stats before = loom::stats();
    absl::StatusOr<loom::CompiledGraph> bound = build(options);
    if (!bound.ok()) {
      std::fprintf(stderr, "%s: %s\n", model.c_str(), bound.status().ToString().c_str());
      return false;
    }
    const double tune_s = seconds_since(t0);
    const loom::Stats spent = loom::stats() - before;
    report_refused(*bound);
    absl::StatusOr<double> ms = device_run_ms(*bound, inputs, d);
    // The same kernels (from the kernel cache) launched one by one, without the CUDA graph that
    // replays a run's launches as one.
    loom::CompileOptions one_by_one = options;
    one_by_one.cuda_graphs = false;
    absl::StatusOr<loom::CompiledGraph> plain = build(one_by_one);
    absl::StatusOr<double> plain_ms =
        plain.ok() ? device_run_ms(*plain, inputs, d) : absl::StatusOr<double>(plain.status());
    for (const absl::Status& s : {ms.status(), plain_ms.status()})
      if (!s.ok()) {
        std::fprintf(stderr, "%s: %s\n", model.c_str(), s.ToString().c_str());
        return false;
      }
    // Where the compile's time went: the tuner's compiles (summed over tunings, which overlap),
    // loads and timings (which take turns); the rest of tune_s is the graph's own compile.
    const double compile_s = spent.tune_compile_us * 1e-6, load_s = spent.tune_load_us * 1e-6,
                 measure_s = spent.tune_measure_us * 1e-6;
    // The device memory its runs use (the one-by-one graph shares the weights).
    const absl::StatusOr<loom::MemoryUse> memory = bound->memory_use();
    const double mib = 1.0 / (1024 * 1024);
    const double weights_mib = memory.ok() ? memory->constants * mib : 0,
                 intermediates_mib = memory.ok() ? memory->intermediates * mib : 0;
    std::printf(
        "%-34s %10.3f %8zu %8.1f   (launched one by one %.3f ms; tuning: %llu "
        "candidates; compile %.1f s, load %.1f s, time %.1f s; device memory %.1f MiB weights, "
        "%.1f MiB intermediates)\n",
        model.c_str(), *ms, bound->kernels().size(), tune_s, *plain_ms,
        static_cast<unsigned long long>(spent.tune_measurements), compile_s, load_s, measure_s,
        weights_mib, intermediates_mib);
    records.push_back({{"name", model},
                       {"op", "model"},
                       {"dtype", "f16"},
                       {"batch", 1},
                       {"device", device},
                       {"loom_ms", *ms},
                       {"loom_one_by_one_ms", *plain_ms},
                       {"kernels", bound->kernels().size()},
                       {"tune_s", tune_s},
                       {"tune_candidates", spent.tune_measurements},
                       {"tune_compile_s", compile_s},
                       {"tune_load_s", load_s},
                       {"tune_measure_s", measure_s},
                       {"weights_mib", weights_mib},
                       {"intermediates_mib", intermediates_mib}});
  }
  return true;
}

// Ends the program once the device was used: output flushed, without teardown. A candidate that
// hung while tuned (an error of its own, or of the tunings after it) still runs, and tearing
// down (cuBLAS's handle, modules) would wait for it until the caller's timeout.
[[noreturn]] void finish(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  std::string tune = "fast", json_path, dtype_name = "all", only;
  bool quick = false;
  std::vector<Shape> chosen;  // --shapes
  std::map<std::string, std::map<std::string, std::vector<int64_t>>> limits;  // --limit
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tune" && i + 1 < argc) tune = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--quick") quick = true;
    else if (a == "--dtype" && i + 1 < argc) dtype_name = argv[++i];
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--shapes" && i + 1 < argc && parse_shapes(argv[++i], &chosen))
      continue;
    else if (a == "--limit" && i + 1 < argc && parse_limits(argv[++i], &limits))
      continue;
    else {
      std::fprintf(stderr,
                   "usage: bench_gpu [--tune none|fast|full] [--quick] [--dtype f32|f16|bf16|all] "
                   "[--only gemm|models|convs] [--shapes MxNxK[,MxNxK...]] [--json PATH] "
                   "[--limit TEMPLATE:PARAM=V[/V...][,...]]\n");
      return 2;
    }
  }
  if (!only.empty() && only != "gemm" && only != "models" && only != "convs") {
    std::fprintf(stderr, "bench_gpu: --only %s (gemm, models or convs)\n", only.c_str());
    return 2;
  }
  std::vector<loom::DType> dtypes = {loom::DType::f32(), loom::DType::f16(), loom::DType::bf16()};
  if (dtype_name != "all") {
    auto named = std::find_if(dtypes.begin(), dtypes.end(),
                              [&](loom::DType t) { return t.to_string() == dtype_name; });
    if (named == dtypes.end()) {
      std::fprintf(stderr, "bench_gpu: --dtype %s (f32, f16, bf16 or all)\n", dtype_name.c_str());
      return 2;
    }
    dtypes = {*named};
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
  // NVRTC's version names the ptxas that compiled loom's kernels (register allocation, spills).
  absl::StatusOr<std::string> nvrtc = cuda::nvrtc_version();
  std::printf("device %s (sm_%d, %d SMs), tune %s, cuBLAS %s, %s\n", props->name.c_str(),
              props->sm_arch, props->sm_count, tune.c_str(),
              cublas.ok() ? "found" : cublas.error.c_str(),
              nvrtc.ok() ? nvrtc->c_str() : nvrtc.status().ToString().c_str());
  loom::CompileOptions options;
  options.tune = tune == "none" ? loom::TuneLevel::kNone
                 : tune == "full" ? loom::TuneLevel::kFull
                                  : loom::TuneLevel::kFast;
  options.template_limits = limits;
  // A run whose kernels hang (a TMA or cluster path the hardware disagrees with) fails naming
  // the time limit ("did not finish within", as a hung tuning candidate does: gpu_check.sh then
  // runs the part again under limits) instead of holding the part until its timeout.
  options.run_timeout_s = 60;
  std::vector<Shape> shapes = {{4096, 4096, 4096}, {128, 768, 768}, {128, 3072, 768},
                               {128, 768, 3072}, {128, 2304, 768}};
  if (quick) shapes = {{1024, 1024, 1024}, {128, 768, 768}};
  std::vector<EpilogueCase> epilogues(std::begin(kBertEpilogues), std::end(kBertEpilogues));
  if (!chosen.empty()) {
    shapes = chosen;
    epilogues.clear();
    for (const Shape& s : chosen)
      epilogues.push_back({shape_name(s) + " +bias+gelu+res", s, true, true});
  }
  const loom::Target target = loom::Target::cuda(props->sm_arch, 0);
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  bool wrong = false;  // some loom result differs from cuBLAS's beyond rounding
  auto gemm_record = [&](const std::string& name, const Shape& s, loom::DType t, const Result& r) {
    return nlohmann::ordered_json{{"name", name},
                                  {"op", "gemm"},
                                  {"dtype", t.to_string()},
                                  {"shape", {s.m, s.n, s.k}},
                                  {"device", props->name},
                                  {"loom_ms", r.loom_ms},
                                  {"loom_kernel_ms", r.kernel_ms},
                                  {"peer", "cublas"},
                                  {"peer_ms", r.peer_ms},
                                  {"rel_err", r.rel_err},
                                  {"tune_s", r.tune_s},
                                  {"schedule", r.schedule}};
  };
  if (only == "models" || only == "convs") dtypes.clear();
  for (loom::DType t : dtypes) {
    // Goals: f32 0.8x SGEMM; f16/bf16 0.9x cuBLAS on 4096^3 (and 1.0x on BERT with epilogues).
    const double goal = t == loom::DType::f32() ? 0.8 : 0.9;
    const double max_err = t == loom::DType::f32() ? 1e-3 : t == loom::DType::f16() ? 1e-2 : 3e-2;
    std::printf("\n%-26s %10s %10s %10s %8s %10s %8s  %s\n",
                ("gemm " + t.to_string() + " (m,n,k)").c_str(), "loom ms", "kernel ms", "cublas ms",
                "ratio", "rel err", "tune s", "schedule");
    double log_ratio = 0;
    int counted = 0;
    for (const Shape& s : shapes) {
      absl::StatusOr<Result> r = run_case(s, t, target, options, **driver, cublas);
      if (!r.ok()) {
        std::fprintf(stderr, "bench_gpu: %s: %s\n", t.to_string().c_str(),
                     r.status().ToString().c_str());
        finish(1);
      }
      if (!std::isnan(r->peer_ms)) {
        log_ratio += std::log(r->peer_ms / r->loom_ms);
        ++counted;
        if (!(r->rel_err <= max_err)) wrong = true;  // NaN too
      }
      const std::string name = shape_name(s);
      std::printf("%-26s %10.4f %10.4f %10.4f %8.3f %10.2e %8.1f  %s\n", name.c_str(), r->loom_ms,
                  r->kernel_ms, r->peer_ms, r->peer_ms / r->loom_ms, r->rel_err, r->tune_s,
                  r->schedule.c_str());
      records.push_back(gemm_record(name + "_" + t.to_string(), s, t, *r));
    }
    if (counted)
      std::printf("geometric mean cublas / loom, %s: %.3f (goal %.1f or better)\n",
                  t.to_string().c_str(), std::exp(log_ratio / counted), goal);
    // f16: the BERT-base matmuls with their epilogues, fused in loom, against cuBLAS's GEMM and
    // the epilogue's own kernel (goal: 1.0 or better).
    if (t == loom::DType::f16() && !quick) {
      std::printf("\n%-32s %9s %10s %10s %9s %8s %10s %8s %7s  %s\n",
                  chosen.empty() ? "f16 matmul + epilogue (BERT-base)" : "f16 matmul + epilogue",
                  "loom ms", "kernel ms", "cublas ms", "+ epi ms", "ratio", "rel err", "tune s",
                  "kernels", "schedule");
      double log_epi = 0;
      int timed = 0;
      for (const EpilogueCase& c : epilogues) {
        absl::StatusOr<EpilogueResult> r =
            run_epilogue_case(c, t, target, options, **driver, cublas);
        if (!r.ok()) {
          std::fprintf(stderr, "bench_gpu: %s: %s\n", c.name.c_str(),
                       r.status().ToString().c_str());
          finish(1);
        }
        const double peer_ms = r->cublas_ms + r->epilogue_ms;
        if (!std::isnan(peer_ms)) {
          log_epi += std::log(peer_ms / r->loom_ms);
          ++timed;
          if (!(r->rel_err <= max_err)) wrong = true;  // NaN too
        }
        std::printf("%-32s %9.4f %10.4f %10.4f %9.4f %8.3f %10.2e %8.1f %7zu  %s\n", c.name.c_str(),
                    r->loom_ms, r->kernel_ms, r->cublas_ms, r->epilogue_ms, peer_ms / r->loom_ms,
                    r->rel_err, r->tune_s, r->kernels, r->schedule.c_str());
        records.push_back({{"name", c.name},
                           {"op", "gemm_epilogue"},
                           {"dtype", t.to_string()},
                           {"shape", {c.shape.m, c.shape.n, c.shape.k}},
                           {"device", props->name},
                           {"loom_ms", r->loom_ms},
                           {"loom_kernel_ms", r->kernel_ms},
                           {"peer", "cublas+epilogue"},
                           {"peer_ms", peer_ms},
                           {"cublas_ms", r->cublas_ms},
                           {"epilogue_ms", r->epilogue_ms},
                           {"rel_err", r->rel_err},
                           {"tune_s", r->tune_s},
                           {"kernels", r->kernels},
                           {"schedule", r->schedule}});
      }
      if (timed)
        std::printf("geometric mean (cublas + epilogue) / loom: %.3f (goal 1.0 or better)\n",
                    std::exp(log_epi / timed));
    }
    // On sm_90, f16 4096^3 with chosen warpgroup GEMM configs: the operands copied by every
    // thread (cp.async) or by a producer warpgroup (TMA), alone or in clusters of two blocks
    // that share B, a block per tile or persistent blocks walking tiles, side by side.
    if (t != loom::DType::f16() || props->sm_arch != 90 || quick || !chosen.empty()) continue;
    // What the goals are judged by is written before these.
    if (!json_path.empty() && !loom_bench::write_records(records, json_path)) finish(1);
    std::printf("\n%-52s %10s %10s %8s\n", "wgmma configs, f16 4096^3", "loom ms", "cublas ms",
                "ratio");
    // warpgroups, block_n, stages, tma, cluster, persistent
    std::vector<std::array<int64_t, 6>> configs;
    for (const int64_t persistent : {0, 1})
      for (const int64_t cluster : {1, 2})
        for (const auto& [warpgroups, block_n, stages, tma] :
             std::vector<std::array<int64_t, 4>>{{2, 256, 3, 0},
                                                 {2, 128, 4, 0},
                                                 {2, 256, 3, 1},
                                                 {2, 256, 4, 1},
                                                 {2, 128, 4, 1},
                                                 {1, 256, 4, 1}})
          // Clusters and persistent blocks are the TMA path's.
          if (tma == 1 || (cluster == 1 && persistent == 0))
            configs.push_back({warpgroups, block_n, stages, tma, cluster, persistent});
    for (const auto& [warpgroups, block_n, stages, tma, cluster, persistent] : configs) {
      const loom::tune::Config config({{"warpgroups", warpgroups},
                                       {"block_n", block_n},
                                       {"stages", stages},
                                       {"split_k", 1},
                                       {"tma", tma},
                                       {"cluster", cluster},
                                       {"persistent", persistent}});
      // Pinned by limits to the one config, and tuned: the tuner's first run of a candidate
      // catches one that hangs (a part of the TMA path that never ran on a GPU before) where
      // a forced config would hang the program.
      // A config that --limit leaves out is not timed.
      loom::CompileOptions pinned = options;
      pinned.tune = loom::TuneLevel::kFast;
      auto& pins = pinned.template_limits["cuda_wgmma_gemm"];
      bool allowed = true;
      for (const auto& [param, value] : config.values()) {
        const auto given = pins.find(param);
        allowed =
            allowed && (given == pins.end() || std::find(given->second.begin(), given->second.end(),
                                                         value) != given->second.end());
        pins[param] = {value};
      }
      if (!allowed) {
        std::printf("%-52s left out by --limit\n", config.to_string().c_str());
        continue;
      }
      absl::StatusOr<Result> r = run_case({4096, 4096, 4096}, t, target, pinned, **driver, cublas);
      if (!r.ok()) {
        std::printf("%-52s %s\n", config.to_string().c_str(), r.status().ToString().c_str());
        continue;
      }
      if (!std::isnan(r->peer_ms) && !(r->rel_err <= max_err)) wrong = true;
      std::printf("%-52s %10.4f %10.4f %8.3f\n", config.to_string().c_str(), r->loom_ms, r->peer_ms,
                  r->peer_ms / r->loom_ms);
      records.push_back(gemm_record("4096x4096x4096_f16_" + config.to_string(),
                                    {4096, 4096, 4096}, t, *r));
    }
  }
  if (only != "gemm" && !bench_models(target, options, **driver, props->name, quick,
                                      only != "convs", records))
    finish(1);
  if (!json_path.empty() && !loom_bench::write_records(records, json_path)) finish(1);
  if (wrong) std::printf("bench_gpu: loom's results differ from cuBLAS's beyond rounding\n");
  finish(wrong ? 1 : 0);
}
