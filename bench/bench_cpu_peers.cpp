// CPU peer benchmark: loom's GEMM and conv2d against oneDNN and OpenBLAS on the same inputs, in
// one run, at 1 and 2 threads; every result is checked against a reference before it is timed.
//
//   bench_cpu_peers [--json out.json] [--quick] [--filter gemm|conv] [--benchmark_<flag>=...]
//
// Times are Google Benchmark's (real time, median of the repetitions). The table prints
// peer_ms / loom_ms: above 1 means loom is faster. oneDNN is timed on its best path: for GEMM the
// faster of its matmul primitive (weights reordered once, untimed, into the layout the primitive
// prefers) and dnnl_sgemm; for conv2d the layouts it prefers ("onednn", reorders untimed) and
// plain NCHW in and out ("onednn_nchw"). OpenBLAS (cblas_sgemm) is a peer for GEMM only.
//
// loom's conv2d runs two ways: "loom", the compiled graph NCHW in and out, and "loom_layouts",
// the conv in the layouts loom's joint tuning offers it (NCHW or NCHW{v}c for input and output,
// each tuned at kFast, the fastest kept), timed as oneDNN's preferred path is: the conv kernel
// alone (CompiledGraph::profile, Google Benchmark's manual time), the conversions into and out
// of the layouts untimed. Against oneDNN's preferred layouts the faster of the two counts
// (loom_variant in the JSON); against oneDNN in NCHW, "loom" alone.

#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "loom/graph/layouts.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "bench_support.hpp"
#include "onednn_conv.hpp"

#if DNNL_CPU_THREADING_RUNTIME != DNNL_RUNTIME_OMP
#error "bench_cpu_peers sets oneDNN's thread count through OpenMP; this oneDNN uses another runtime"
#endif

namespace {

using namespace loom_bench;

// ---- Threads ----------------------------------------------------------------------------------

// loom's thread count: the process-wide pool of include/loom/runtime/thread_pool.hpp.
void set_loom_threads(int n) {
  loom::set_num_threads(n);
}

// Every library gets the same count before each benchmark. Debian's oneDNN uses OpenMP (libgomp),
// so it follows omp_set_num_threads on the calling thread (primitives are created after it);
// OpenBLAS (pthreads build) has its own setter.
void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  set_loom_threads(n);
}

// ---- Cases ------------------------------------------------------------------------------------

// C = A (M x K) * B (K x N), B a constant weight.
struct GemmShape {
  int64_t m, n, k;
};

struct Case {
  std::string name;  // benchmark name prefix
  std::string op;    // "gemm" or "conv2d"
  std::string shape;
  GemmShape gemm{};
  ConvShape conv{};
  double flops = 0;

  // Made on first use and shared by every implementation and thread count. gemm: x = A, w = B;
  // conv2d: x = input (1, Cin, H, W), w = weights (Cout, Cin / groups, K, K).
  bool prepared = false;
  loom::NDArray x, w;
  std::vector<double> reference;  // computed in double precision
};

Case gemm_case(int64_t m, int64_t n, int64_t k) {
  Case c;
  c.op = "gemm";
  c.gemm = {m, n, k};
  std::string dims = std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
  c.name = "gemm_" + dims;
  c.shape = "MxNxK=" + dims;
  c.flops = 2.0 * m * n * k;
  return c;
}

Case conv_case(ConvShape s) {
  Case c;
  c.op = "conv2d";
  c.conv = s;
  auto str = [](int v) { return std::to_string(v); };
  bool depthwise = s.groups > 1 && s.groups == s.c_in && s.groups == s.c_out;
  c.name = std::string(depthwise ? "conv_dw_" : "conv_") + str(s.c_in) + "x" + str(s.h) + "x" +
           str(s.w) + "_" + str(s.c_out) + "_k" + str(s.kernel) + "s" + str(s.stride) + "p" +
           str(s.pad);
  c.shape = str(s.c_in) + "x" + str(s.h) + "x" + str(s.w) + "->" + str(s.c_out) + " k" +
            str(s.kernel) + "x" + str(s.kernel) + " s" + str(s.stride) + " p" + str(s.pad) +
            (s.groups > 1 ? " g" + str(s.groups) : "");
  c.flops = s.flops();
  return c;
}

std::vector<Case> all_cases(bool quick) {
  std::vector<Case> cases;
  if (quick) {
    cases.push_back(gemm_case(128, 768, 768));
    cases.push_back(gemm_case(257, 129, 511));
    cases.push_back(conv_case({256, 14, 14, 256, 3, 1, 1, 1}));
    cases.push_back(conv_case({32, 112, 112, 32, 3, 1, 1, 32}));
    return cases;
  }
  for (GemmShape g : std::vector<GemmShape>{{1024, 1024, 1024},
                                            {512, 512, 512},
                                            {128, 768, 768},
                                            {128, 3072, 768},
                                            {128, 768, 3072},
                                            {1, 1000, 2048},
                                            {257, 129, 511}})
    cases.push_back(gemm_case(g.m, g.n, g.k));
  // ResNet-50 layers, batch 1.
  for (ConvShape s : std::vector<ConvShape>{{64, 56, 56, 64, 3, 1, 1, 1},
                                            {64, 56, 56, 256, 1, 1, 0, 1},
                                            {256, 56, 56, 64, 1, 1, 0, 1},
                                            {128, 28, 28, 128, 3, 1, 1, 1},
                                            {256, 14, 14, 256, 3, 1, 1, 1},
                                            {512, 7, 7, 512, 3, 1, 1, 1},
                                            {3, 224, 224, 64, 7, 2, 3, 1},
                                            {32, 112, 112, 32, 3, 1, 1, 32}})
    cases.push_back(conv_case(s));
  return cases;
}

loom::NDArray random_array(std::vector<int64_t> shape, std::mt19937& rng) {
  loom::NDArray a(loom::DType::f32(), std::move(shape));
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int64_t i = 0; i < a.numel(); ++i) a.data_as<float>()[i] = dist(rng);
  return a;
}

std::vector<double> reference_gemm(const GemmShape& s, const float* a, const float* b) {
  std::vector<double> c(s.m * s.n, 0.0);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t k = 0; k < s.k; ++k) {
      double aik = a[i * s.k + k];
      for (int64_t j = 0; j < s.n; ++j) c[i * s.n + j] += aik * b[k * s.n + j];
    }
  return c;
}

std::vector<double> reference_conv(const ConvShape& s, const float* in, const float* wt) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  std::vector<double> out(static_cast<size_t>(s.c_out) * oh_n * ow_n, 0.0);
  for (int oc = 0; oc < s.c_out; ++oc)
    for (int icg = 0; icg < cin_g; ++icg) {
      const int ic = oc / cout_g * cin_g + icg;
      for (int kh = 0; kh < s.kernel; ++kh)
        for (int kw = 0; kw < s.kernel; ++kw) {
          const double wv =
              wt[((static_cast<int64_t>(oc) * cin_g + icg) * s.kernel + kh) * s.kernel + kw];
          // Output columns whose input column lies inside the image.
          int ow_lo = 0, ow_hi = ow_n;
          while (ow_lo < ow_n && ow_lo * s.stride - s.pad + kw < 0) ++ow_lo;
          while (ow_hi > ow_lo && (ow_hi - 1) * s.stride - s.pad + kw >= s.w) --ow_hi;
          for (int oh = 0; oh < oh_n; ++oh) {
            const int ih = oh * s.stride - s.pad + kh;
            if (ih < 0 || ih >= s.h) continue;
            const float* row = in + (static_cast<int64_t>(ic) * s.h + ih) * s.w;
            double* o = out.data() + (static_cast<int64_t>(oc) * oh_n + oh) * ow_n;
            for (int ow = ow_lo; ow < ow_hi; ++ow) o[ow] += wv * row[ow * s.stride - s.pad + kw];
          }
        }
    }
  return out;
}

void prepare(Case& c) {
  if (c.prepared) return;
  std::mt19937 rng(1234);
  if (c.op == "gemm") {
    c.x = random_array({c.gemm.m, c.gemm.k}, rng);
    c.w = random_array({c.gemm.k, c.gemm.n}, rng);
    c.reference = reference_gemm(c.gemm, c.x.data_as<float>(), c.w.data_as<float>());
  } else {
    const ConvShape& s = c.conv;
    c.x = random_array({1, s.c_in, s.h, s.w}, rng);
    c.w = random_array({s.c_out, s.c_in / s.groups, s.kernel, s.kernel}, rng);
    c.reference = reference_conv(s, c.x.data_as<float>(), c.w.data_as<float>());
  }
  c.prepared = true;
}

// ---- Implementations --------------------------------------------------------------------------

enum class Impl {
  kLoom,
  kLoomLayouts,
  kOnednnMatmul,
  kOnednnSgemm,
  kOpenblas,
  kOnednnConv,
  kOnednnConvNchw
};

struct ImplInfo {
  const char* name;     // in benchmark names
  const char* library;  // for settle_after_switch
  const char* peer;     // peer name in the table and JSON (nullptr for loom)
  const char* variant;  // which of a peer's paths this is
};

ImplInfo info(Impl impl) {
  switch (impl) {
    case Impl::kLoom:
      return {"loom", "loom", nullptr, "nchw"};
    case Impl::kLoomLayouts:
      return {"loom_layouts", "loom", nullptr, "layouts"};
    case Impl::kOnednnMatmul:
      return {"onednn_matmul", "onednn", "onednn", "matmul"};
    case Impl::kOnednnSgemm:
      return {"onednn_sgemm", "onednn", "onednn", "sgemm"};
    case Impl::kOpenblas:
      return {"openblas", "openblas", "openblas", "sgemm"};
    case Impl::kOnednnConv:
      return {"onednn", "onednn", "onednn", "preferred"};
    case Impl::kOnednnConvNchw:
      return {"onednn_nchw", "onednn", "onednn_nchw", "nchw"};
  }
  return {"?", "?", nullptr, ""};
}

// The conv kernel of a graph compiled in some layouts, timed alone: run() profiles one run of
// the graph and keeps the conv kernel's time; output() runs the graph (conversions included).
class LoomKernelRunner final : public Runner {
 public:
  LoomKernelRunner(loom::CompiledGraph compiled, size_t kernel, loom::NDArray input)
      : compiled_(std::move(compiled)), kernel_(kernel), inputs_{std::move(input)} {}
  void run() override {
    absl::StatusOr<std::vector<double>> ms = compiled_.profile(inputs_, 1);
    if (ms.ok() && kernel_ < ms->size())
      seconds_ = (*ms)[kernel_] * 1e-3;
    else
      status_ = ms.ok() ? absl::InternalError("no conv kernel time") : ms.status();
  }
  std::vector<float> output() override {
    absl::StatusOr<std::vector<loom::NDArray>> out = compiled_.run(inputs_);
    if (!out.ok()) {
      status_ = out.status();
      return {};
    }
    const float* p = out->front().data_as<float>();
    return std::vector<float>(p, p + out->front().numel());
  }
  absl::Status status() const override { return status_; }
  double seconds() const { return seconds_; }  // the conv kernel's, in the last run()

 private:
  loom::CompiledGraph compiled_;
  size_t kernel_;
  std::vector<loom::NDArray> inputs_;
  double seconds_ = 0;
  absl::Status status_;
};

// The case's conv alone; its node id goes to conv_id when given.
loom::Graph conv_graph(const Case& c, int* conv_id = nullptr) {
  const ConvShape& s = c.conv;
  loom::Graph g;
  loom::Tensor x = g.input("x", {1, s.c_in, s.h, s.w});
  loom::Tensor y =
      x.conv2d(g.constant("w", c.w), {.stride = s.stride, .padding = s.pad, .groups = s.groups});
  g.output(y);
  if (conv_id) *conv_id = y.id();
  return g;
}

// Every layout choice of the conv, unfused (the conversions stay kernels of their own), tuned at
// kFast; the one whose conv kernel's median over interleaved rounds is least.
absl::StatusOr<std::unique_ptr<Runner>> make_loom_layouts(const Case& c, double& tune_s,
                                                          std::string& detail) {
  int conv = -1;
  loom::Graph g = conv_graph(c, &conv);
  loom::CompileOptions options{.tune = loom::TuneLevel::kFast, .fuse = false, .use_cache = false};
  auto t0 = std::chrono::steady_clock::now();
  struct Choice {
    std::string layouts;
    loom::CompiledGraph compiled;
    size_t kernel = 0;
    std::vector<double> ms;
    double tune_s = 0;  // its kFast tuning and compile
  };
  std::vector<Choice> choices;
  std::vector<loom::layouts::AnchorLayouts> offered =
      loom::layouts::options(g, conv, loom::Target::host_cpu());
  // A conv offered no choice (depthwise) stays row-major.
  if (offered.empty()) offered.emplace_back();
  for (const loom::layouts::AnchorLayouts& a : offered) {
    loom::Graph laid = g;
    if (!a.inputs.empty()) {
      LOOM_ASSIGN_OR_RETURN(laid, loom::layouts::apply(g, {{conv, a}}));
    }
    auto compile_start = std::chrono::steady_clock::now();
    LOOM_ASSIGN_OR_RETURN(loom::CompiledGraph compiled, loom::Compiler().compile(laid, options));
    Choice ch{a.inputs.empty() ? "row_major" : a.to_string(), std::move(compiled), 0, {},
              std::chrono::duration<double>(std::chrono::steady_clock::now() - compile_start)
                  .count()};
    ch.kernel = conv_kernel_index(ch.compiled);
    choices.push_back(std::move(ch));
  }
  const std::vector<loom::NDArray> inputs = {c.x};
  for (int round = 0; round < 5; ++round)
    for (Choice& ch : choices) {
      LOOM_ASSIGN_OR_RETURN(std::vector<double> ms, ch.compiled.profile(inputs, 5));
      ch.ms.push_back(ms.at(ch.kernel));
    }
  auto best = std::min_element(
      choices.begin(), choices.end(),
      [](const Choice& a, const Choice& b) { return median(a.ms) < median(b.ms); });
  // tune_s: the chosen layouts' kFast tuning (one operator, as for "loom"); the whole search
  // (every choice tuned, then timed) in the detail.
  tune_s = best->tune_s;
  char search[64];
  std::snprintf(search, sizeof search, " (%zu layout choices tuned and timed in %.1f s)",
                choices.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  detail = best->layouts + ": " + best->compiled.kernels()[best->kernel].schedule + search;
  return std::make_unique<LoomKernelRunner>(std::move(best->compiled), best->kernel, c.x);
}

absl::StatusOr<std::unique_ptr<Runner>> make_loom(const Case& c, double& tune_s,
                                                  std::string& detail) {
  loom::Graph g;
  if (c.op == "gemm") {
    loom::Tensor a = g.input("a", {c.gemm.m, c.gemm.k});
    g.output(a.matmul(g.constant("b", c.w)));
  } else {
    g = conv_graph(c);
  }
  // The kernel cache is off: every run tunes afresh, so tune_s is a real tuning time.
  loom::CompileOptions options{.tune = loom::TuneLevel::kFast, .use_cache = false};
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g, options);
  tune_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!compiled.ok()) return compiled.status();
  for (const loom::KernelInfo& k : compiled->kernels())
    if (!k.schedule.empty()) detail += (detail.empty() ? "" : "; ") + k.schedule;
  return std::make_unique<LoomRunner>(*std::move(compiled), c.x);
}

std::unique_ptr<Runner> make_onednn_matmul(const Case& c, std::string& detail) {
  const GemmShape& s = c.gemm;
  dnnl::memory::desc a_md({s.m, s.k}, kF32, Tag::ab), c_md({s.m, s.n}, kF32, Tag::ab);
  dnnl::memory::desc b_any({s.k, s.n}, kF32, Tag::any);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), cpu_engine());
  detail = pd.impl_info_str();
  dnnl::memory a(a_md, cpu_engine(), c.x.data());
  dnnl::memory b_user({{s.k, s.n}, kF32, Tag::ab}, cpu_engine(), c.w.data());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, in_layout(a, pd.src_desc())},
      {DNNL_ARG_WEIGHTS, in_layout(b_user, pd.weights_desc())},
      {DNNL_ARG_DST, dnnl::memory(pd.dst_desc(), cpu_engine())}};
  return std::make_unique<OnednnPrimitiveRunner>(dnnl::matmul(pd), std::move(args), c_md);
}

std::unique_ptr<Runner> make_onednn_conv(const Case& c, bool nchw, std::string& detail) {
  return onednn_conv(c.conv, c.x, c.w, nchw, detail);
}

// Row-major sgemm through a BLAS-style call (dnnl_sgemm or cblas_sgemm).
class SgemmRunner final : public Runner {
 public:
  SgemmRunner(const Case& c, bool onednn)
      : s_(c.gemm),
        a_(c.x.data_as<float>()),
        b_(c.w.data_as<float>()),
        c_(loom::DType::f32(), {s_.m, s_.n}),
        onednn_(onednn) {}
  void run() override {
    float* c = c_.data_as<float>();
    if (onednn_) {
      dnnl::status st =
          dnnl::sgemm('N', 'N', s_.m, s_.n, s_.k, 1.0f, a_, s_.k, b_, s_.n, 0.0f, c, s_.n);
      if (st != dnnl::status::success) status_ = absl::InternalError("dnnl_sgemm failed");
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s_.m, s_.n, s_.k, 1.0f, a_, s_.k, b_,
                  s_.n, 0.0f, c, s_.n);
    }
  }
  std::vector<float> output() override {
    const float* p = c_.data_as<float>();
    return std::vector<float>(p, p + c_.numel());
  }
  absl::Status status() const override { return status_; }

 private:
  GemmShape s_;
  const float* a_;
  const float* b_;
  loom::NDArray c_;
  bool onednn_;
  absl::Status status_;
};

// ---- Setup, verification and benchmarks -------------------------------------------------------

// One implementation of one case at one thread count: made on the benchmark's first call (after
// the thread count is set), run once and verified before anything is timed.
struct Entry {
  std::unique_ptr<Runner> runner;
  std::string detail;  // oneDNN's implementation, loom's kernel schedules
  std::string error;   // setup failure or mismatch; the benchmark is skipped
  double tune_s = -1;  // loom only
  double rel_err = std::numeric_limits<double>::quiet_NaN();
};

std::vector<Case> g_cases;
std::map<std::tuple<int, Impl, int>, Entry> g_entries;
bool g_failed = false;

void fail(Entry& e, const Case& c, Impl impl, int threads, const std::string& why) {
  e.error = why;
  g_failed = true;
  std::fprintf(stderr, "\n*** FAILED: %s threads=%d %s: %s ***\n\n", c.name.c_str(), threads,
               info(impl).name, why.c_str());
}

Entry& entry(int case_index, Impl impl, int threads) {
  auto [it, fresh] = g_entries.try_emplace({case_index, impl, threads});
  Entry& e = it->second;
  if (!fresh) return e;
  Case& c = g_cases[case_index];
  prepare(c);
  try {
    switch (impl) {
      case Impl::kLoom:
      case Impl::kLoomLayouts: {
        absl::StatusOr<std::unique_ptr<Runner>> r = impl == Impl::kLoom
                                                         ? make_loom(c, e.tune_s, e.detail)
                                                         : make_loom_layouts(c, e.tune_s, e.detail);
        if (!r.ok()) {
          fail(e, c, impl, threads, "compile: " + r.status().ToString());
          return e;
        }
        e.runner = *std::move(r);
        break;
      }
      case Impl::kOnednnMatmul:
        e.runner = make_onednn_matmul(c, e.detail);
        break;
      case Impl::kOnednnSgemm:
        e.runner = std::make_unique<SgemmRunner>(c, true);
        break;
      case Impl::kOpenblas:
        e.runner = std::make_unique<SgemmRunner>(c, false);
        break;
      case Impl::kOnednnConv:
        e.runner = make_onednn_conv(c, false, e.detail);
        break;
      case Impl::kOnednnConvNchw:
        e.runner = make_onednn_conv(c, true, e.detail);
        break;
    }
    e.runner->run();
    if (!e.runner->status().ok()) {
      fail(e, c, impl, threads, "run: " + e.runner->status().ToString());
      return e;
    }
    e.rel_err = relative_error(e.runner->output(), c.reference);
  } catch (const dnnl::error& err) {
    fail(e, c, impl, threads, std::string("oneDNN: ") + err.what());
    return e;
  }
  if (!(e.rel_err <= kTolerance)) fail(e, c, impl, threads, mismatch_message(e.rel_err));
  return e;
}

std::string bench_name(const Case& c, int threads, Impl impl) {
  return c.name + "/t" + std::to_string(threads) + "/" + info(impl).name;
}

void run_benchmark(benchmark::State& state, int case_index, Impl impl, int threads) {
  set_threads(threads);
  settle_after_switch(info(impl).library);
  Entry& e = entry(case_index, impl, threads);
  if (!e.error.empty()) {
    state.SkipWithError(e.error.c_str());
    return;
  }
  if (auto* kernel = dynamic_cast<LoomKernelRunner*>(e.runner.get())) {
    for (auto _ : state) {
      kernel->run();
      state.SetIterationTime(kernel->seconds());
    }
  } else {
    for (auto _ : state) e.runner->run();
  }
  // Checked again after timing: a race between threads may show only over many runs.
  const Case& c = g_cases[case_index];
  std::string problem;
  if (!e.runner->status().ok()) {
    problem = "run: " + e.runner->status().ToString();
  } else if (double err = relative_error(e.runner->output(), c.reference); !(err <= kTolerance)) {
    e.rel_err = err;
    problem = mismatch_message(err) + " after timing";
  }
  if (!problem.empty()) {
    fail(e, c, impl, threads, problem);
    state.SkipWithError(e.error.c_str());
    return;
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(g_cases[case_index].flops, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

std::vector<Impl> impls_for(const Case& c) {
  if (c.op == "gemm")
    return {Impl::kLoom, Impl::kOnednnMatmul, Impl::kOnednnSgemm, Impl::kOpenblas};
  return {Impl::kLoom, Impl::kLoomLayouts, Impl::kOnednnConv, Impl::kOnednnConvNchw};
}

constexpr int kThreadCounts[] = {1, 2};

// ---- Results ----------------------------------------------------------------------------------

struct Row {
  const Case* c;
  int threads;
  std::optional<double> loom_ms, tune_s;
  std::string loom_variant;  // conv2d: "nchw" or "layouts" (see the top of the file)
  std::map<std::string, double> loom_variant_ms;
  std::string peer, variant;
  std::optional<double> peer_ms;
  std::map<std::string, double> variant_ms;
  double loom_err, peer_err;
  bool failed;
};

const Entry* find_entry(int case_index, Impl impl, int threads) {
  auto it = g_entries.find({case_index, impl, threads});
  return it == g_entries.end() ? nullptr : &it->second;
}

std::vector<Row> collect_rows(const CollectingReporter& reporter) {
  std::vector<Row> rows;
  auto time_of = [&](const Case& c, int t, Impl impl) -> std::optional<double> {
    auto it = reporter.median_ms.find(bench_name(c, t, impl));
    if (it == reporter.median_ms.end()) return std::nullopt;
    return it->second;
  };
  for (int ci = 0; ci < static_cast<int>(g_cases.size()); ++ci) {
    const Case& c = g_cases[ci];
    std::vector<Impl> impls = impls_for(c);
    for (int t : kThreadCounts) {
      const Entry* loom = find_entry(ci, Impl::kLoom, t);
      // Peers in table order, each with the implementations (variants) it is the best of.
      std::vector<std::pair<std::string, std::vector<Impl>>> peers;
      for (Impl impl : impls) {
        const char* peer = info(impl).peer;
        if (!peer) continue;
        if (peers.empty() || peers.back().first != peer) peers.push_back({peer, {}});
        peers.back().second.push_back(impl);
      }
      for (const auto& [peer, variants] : peers) {
        Row row{&c,
                t,
                time_of(c, t, Impl::kLoom),
                std::nullopt,
                "",
                {},
                peer,
                "",
                std::nullopt,
                {},
                loom ? loom->rel_err : std::nan(""),
                std::nan(""),
                loom && !loom->error.empty()};
        if (loom && loom->tune_s >= 0) row.tune_s = loom->tune_s;
        if (row.loom_ms && c.op == "conv2d") {
          row.loom_variant = info(Impl::kLoom).variant;
          row.loom_variant_ms[row.loom_variant] = *row.loom_ms;
        }
        // Against oneDNN in the layouts it prefers, loom in its own when that is faster.
        const Entry* laid = find_entry(ci, Impl::kLoomLayouts, t);
        std::optional<double> laid_ms = time_of(c, t, Impl::kLoomLayouts);
        if (laid && peer == "onednn") {
          row.failed = row.failed || !laid->error.empty();
          if (laid_ms) row.loom_variant_ms[info(Impl::kLoomLayouts).variant] = *laid_ms;
          if (laid_ms && (!row.loom_ms || *laid_ms < *row.loom_ms)) {
            row.loom_ms = laid_ms;
            row.loom_variant = info(Impl::kLoomLayouts).variant;
            row.loom_err = laid->rel_err;
            if (laid->tune_s >= 0) row.tune_s = laid->tune_s;
          }
        }
        bool any_entry = loom != nullptr;
        for (Impl impl : variants) {
          const Entry* e = find_entry(ci, impl, t);
          if (!e) continue;
          any_entry = true;
          row.failed = row.failed || !e->error.empty();
          std::optional<double> ms = time_of(c, t, impl);
          if (!ms) continue;
          row.variant_ms[info(impl).variant] = *ms;
          if (!row.peer_ms || *ms < *row.peer_ms) {
            row.peer_ms = ms;
            row.variant = info(impl).variant;
            row.peer_err = e->rel_err;
          }
        }
        if (any_entry) rows.push_back(std::move(row));
      }
    }
  }
  return rows;
}

// The machine's FMA peak (GFLOP/s) by thread count, measured after the benchmarks.
std::map<int, double> g_peak_gflops;

// Of the FMA peak at the row's thread count, the fraction a time reaches; nullopt without one.
std::optional<double> peak_fraction(const Row& r, std::optional<double> ms) {
  auto peak = g_peak_gflops.find(r.threads);
  if (!ms || peak == g_peak_gflops.end() || std::isnan(peak->second)) return std::nullopt;
  return r.c->flops / (*ms * 1e6) / peak->second;
}

void print_table(const std::vector<Row>& rows) {
  std::printf(
      "\npeer_ms / loom_ms (> 1 means loom is faster); medians of real time; * loom's conv\n"
      "kernel alone in the layouts it chose (conversions untimed, as oneDNN's reorders); %%pk:\n"
      "the share of the machine's FMA peak at that thread count each reaches (");
  for (const auto& [threads, gflops] : g_peak_gflops)
    std::printf("%s%d: %.1f GFLOP/s", threads == g_peak_gflops.begin()->first ? "" : ", ", threads,
                gflops);
  std::printf(")\n");
  std::printf("%-30s %3s %10s %5s  %-19s %10s %5s %8s %8s\n", "case", "thr", "loom ms", "%pk",
              "peer", "peer ms", "%pk", "ratio", "tune s");
  for (const Row& r : rows) {
    // oneDNN's GEMM row is the faster of two paths: say which.
    std::string peer = r.peer;
    if (r.c->op == "gemm" && r.peer == "onednn" && !r.variant.empty())
      peer += " (" + r.variant + ")";
    std::string loom = fmt(r.loom_ms, "%.3f");
    if (r.loom_variant == info(Impl::kLoomLayouts).variant) loom += "*";
    std::optional<double> ratio;
    if (r.loom_ms && r.peer_ms) ratio = *r.peer_ms / *r.loom_ms;
    auto percent = [&](std::optional<double> ms) {
      std::optional<double> f = peak_fraction(r, ms);
      return fmt(f ? std::optional<double>(*f * 100) : std::nullopt, "%.0f");
    };
    std::printf("%-30s %3d %10s %5s  %-19s %10s %5s %8s %8s%s\n", r.c->name.c_str(), r.threads,
                loom.c_str(), percent(r.loom_ms).c_str(), peer.c_str(),
                fmt(r.peer_ms, "%.3f").c_str(), percent(r.peer_ms).c_str(),
                fmt(ratio, "%.2f").c_str(), fmt(r.tune_s, "%.2f").c_str(),
                r.failed ? "  FAILED" : "");
  }
}

void print_verification() {
  std::printf(
      "\nverification: max |out - ref| / max |ref| against a double-precision reference "
      "(tolerance %.0e)\n",
      kTolerance);
  for (const auto& [key, e] : g_entries) {
    const auto& [ci, impl, threads] = key;
    std::printf("  %-30s t%d %-14s %10.2e  %s%s\n", g_cases[ci].name.c_str(), threads,
                info(impl).name, e.rel_err, e.error.empty() ? "ok" : e.error.c_str(),
                e.detail.empty() ? "" : ("  [" + e.detail + "]").c_str());
  }
}

bool write_json(const std::vector<Row>& rows, const std::string& path) {
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  for (const Row& r : rows) {
    nlohmann::ordered_json rec{{"name", r.c->name},
                               {"op", r.c->op},
                               {"shape", r.c->shape},
                               {"threads", r.threads},
                               {"loom_ms", optional_json(r.loom_ms)},
                               {"peer", r.peer},
                               {"peer_ms", optional_json(r.peer_ms)},
                               {"tune_s", optional_json(r.tune_s)},
                               {"loom_variant", r.loom_variant},
                               {"loom_variant_ms", r.loom_variant_ms},
                               {"peer_variant", r.variant},
                               {"peer_variant_ms", r.variant_ms},
                               {"failed", r.failed}};
    rec["loom_peak_fraction"] = optional_json(peak_fraction(r, r.loom_ms));
    rec["peer_peak_fraction"] = optional_json(peak_fraction(r, r.peer_ms));
    rec["loom_rel_err"] = error_json(r.loom_err);
    rec["peer_rel_err"] = error_json(r.peer_err);
    records.push_back(std::move(rec));
  }
  return write_records(records, path);
}

constexpr const char* kUsage =
    "usage: bench_cpu_peers [--json PATH] [--quick] [--filter REGEX] [--benchmark_<flag>=...]\n"
    "  --json PATH     write one record per case, thread count and peer to PATH\n"
    "  --quick         a small subset with short timings (smoke test)\n"
    "  --filter REGEX  run only matching benchmarks, e.g. gemm or conv\n"
    "Google Benchmark flags pass through (defaults here: 15 repetitions, 0.1 s minimum time).\n";

}  // namespace

int main(int argc, char** argv) {
  Options options;
  // 15 short repetitions rather than 5 long ones: on the shared 2-vCPU VM single repetitions
  // of one kernel spread 10% and more (GEMM 512^3, one thread: p10 1.38 ms, p90 1.55), and the
  // median of 15, interleaved at random with every peer's, moves less between runs.
  if (std::optional<int> exit_code =
          init(argc, argv, /*repetitions=*/15, kUsage, options, /*min_time_s=*/0.1))
    return *exit_code;
  const std::string& json_path = options.json_path;
  const bool quick = options.quick;

  const dnnl_version_t* dv = dnnl_version();
  std::printf("loom target: %s\n", loom::Target::host_cpu().to_string().c_str());
  std::printf("oneDNN %d.%d.%d (%s runtime), OpenBLAS %s\n", dv->major, dv->minor, dv->patch,
              "OpenMP", openblas_get_config());

  g_cases = all_cases(quick);
  for (int ci = 0; ci < static_cast<int>(g_cases.size()); ++ci)
    for (int t : kThreadCounts)
      for (Impl impl : impls_for(g_cases[ci])) {
        benchmark::internal::Benchmark* b =
            benchmark::RegisterBenchmark(bench_name(g_cases[ci], t, impl).c_str(), run_benchmark,
                                         ci, impl, t)
                ->Unit(benchmark::kMillisecond);
        if (impl == Impl::kLoomLayouts)
          b->UseManualTime();
        else
          b->UseRealTime();
      }

  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  for (int t : kThreadCounts) g_peak_gflops[t] = fma_peak_gflops(t);
  std::vector<Row> rows = collect_rows(reporter);
  print_table(rows);
  print_verification();
  if (!json_path.empty() && !write_json(rows, json_path)) return 1;
  if (g_failed) {
    std::fprintf(stderr,
                 "\nFAILED: some results were wrong or could not be produced (see above)\n");
    return 1;
  }
  return 0;
}
