// CPU row-wise benchmark: loom's softmax, layer_norm and row-sum templates against oneDNN's
// softmax, layer_normalization and reduction primitives, and against loom's own default schedule,
// on BERT-like shapes at 1 and 2 threads; every result is checked against a double-precision
// reference before and after it is timed.
//
//   bench_cpu_rows [--json out.json] [--quick] [--filter REGEX] [--benchmark_<flag>=...]
//
// Times are Google Benchmark's real time per call: the table shows the best (minimum) of the
// repetitions, which other processes on a shared machine can only make worse, and the JSON holds
// the medians too. It prints onednn_ms / loom_ms and default_ms / loom_ms: above 1 means loom's
// template is faster. "loom" is
// compiled with TuneLevel::kFast; "loom_default" applies a copy of the same operator registered
// without templates (a user-defined operator, as far as loom knows), so it runs the default
// schedule, parallel outer loops included.

#include <benchmark/benchmark.h>
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

#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "bench_support.hpp"

#if DNNL_CPU_THREADING_RUNTIME != DNNL_RUNTIME_OMP
#error "bench_cpu_rows sets oneDNN's thread count through OpenMP; this oneDNN uses another runtime"
#endif

namespace {

using namespace loom_bench;

// ---- Threads ----------------------------------------------------------------------------------

void set_threads(int n) {
  omp_set_num_threads(n);
  loom::set_num_threads(n);
}

// ---- Cases ------------------------------------------------------------------------------------

enum class Op { kSoftmax, kLayerNorm, kSum };

const char* op_name(Op op) {
  switch (op) {
    case Op::kSoftmax:
      return "softmax";
    case Op::kLayerNorm:
      return "layer_norm";
    case Op::kSum:
      return "sum";
  }
  return "?";
}

constexpr float kEpsilon = 1e-5f;

// op over the last axis of a rows x len matrix.
struct Case {
  Op op;
  int64_t rows, len;
  std::string name, shape;

  bool prepared = false;
  loom::NDArray x, gamma, beta;   // gamma and beta for layer_norm only
  std::vector<double> reference;  // double precision
};

Case make_case(Op op, int64_t rows, int64_t len) {
  Case c{op, rows, len, "", "", false, {}, {}, {}, {}};
  c.shape = "[" + std::to_string(rows) + ", " + std::to_string(len) + "]";
  c.name = std::string(op_name(op)) + "_" + std::to_string(rows) + "x" + std::to_string(len);
  return c;
}

std::vector<Case> all_cases(bool quick) {
  std::vector<Case> cases;
  cases.push_back(make_case(Op::kSoftmax, 12 * 128, 128));
  if (!quick) cases.push_back(make_case(Op::kSoftmax, 12 * 384, 384));
  cases.push_back(make_case(Op::kLayerNorm, 128, 768));
  if (!quick) cases.push_back(make_case(Op::kLayerNorm, 384, 768));
  cases.push_back(make_case(Op::kSum, 1024, 1024));
  return cases;
}

loom::NDArray random_array(std::vector<int64_t> shape, std::mt19937& rng, float lo, float hi) {
  loom::NDArray a(loom::DType::f32(), std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < a.numel(); ++i) a.data_as<float>()[i] = dist(rng);
  return a;
}

void prepare(Case& c) {
  if (c.prepared) return;
  std::mt19937 rng(1234);
  // Attention scores span a few units; layer_norm inputs are offset like residual streams.
  c.x = c.op == Op::kLayerNorm ? random_array({c.rows, c.len}, rng, -2, 3)
                               : random_array({c.rows, c.len}, rng, -4, 4);
  const float* x = c.x.data_as<float>();
  if (c.op == Op::kLayerNorm) {
    c.gamma = random_array({c.len}, rng, 0.5f, 1.5f);
    c.beta = random_array({c.len}, rng, -0.5f, 0.5f);
  }
  c.reference.assign(c.op == Op::kSum ? c.rows : c.rows * c.len, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* row = x + r * c.len;
    double* out = c.reference.data() + (c.op == Op::kSum ? r : r * c.len);
    if (c.op == Op::kSum) {
      for (int64_t j = 0; j < c.len; ++j) *out += row[j];
    } else if (c.op == Op::kSoftmax) {
      double m = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t j = 0; j < c.len; ++j) m = std::max<double>(m, row[j]);
      for (int64_t j = 0; j < c.len; ++j) sum += std::exp(row[j] - m);
      for (int64_t j = 0; j < c.len; ++j) out[j] = std::exp(row[j] - m) / sum;
    } else {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < c.len; ++j) mean += row[j];
      mean /= static_cast<double>(c.len);
      for (int64_t j = 0; j < c.len; ++j) var += (row[j] - mean) * (row[j] - mean);
      var /= static_cast<double>(c.len);
      const double rstd = 1 / std::sqrt(var + kEpsilon);
      for (int64_t j = 0; j < c.len; ++j)
        out[j] = (row[j] - mean) * rstd * c.gamma.data_as<float>()[j] + c.beta.data_as<float>()[j];
    }
  }
  c.prepared = true;
}

// ---- Implementations --------------------------------------------------------------------------

enum class Impl { kLoom, kLoomDefault, kOnednn };

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::kLoom:
      return "loom";
    case Impl::kLoomDefault:
      return "loom_default";
    case Impl::kOnednn:
      return "onednn";
  }
  return "?";
}

const char* library(Impl impl) {
  return impl == Impl::kOnednn ? "onednn" : "loom";
}

// The name of a copy of a built-in operator without its templates, registered on first use.
std::string untemplated(const std::string& op) {
  std::string name = op + "_untemplated";
  if (!loom::OpRegistry::global().find(name)) {
    loom::OpDef def = *loom::OpRegistry::global().find(op);
    def.name = name;
    def.templates.clear();
    (void)loom::OpRegistry::global().add(std::move(def));
  }
  return name;
}

// loom's graph for a case, on the templates or on the default schedule.
absl::StatusOr<std::unique_ptr<Runner>> make_loom(const Case& c, bool default_schedule,
                                                  double& tune_s, std::string& detail) {
  loom::Graph g;
  loom::Tensor x = g.input("x", {c.rows, c.len});
  auto op = [&](const std::string& name) { return default_schedule ? untemplated(name) : name; };
  switch (c.op) {
    case Op::kSoftmax: {
      auto attrs = std::make_shared<loom::ops::SoftmaxAttrs>();
      attrs->axis = -1;
      g.output(x.apply(op("softmax"), {}, attrs));
      break;
    }
    case Op::kLayerNorm: {
      auto attrs = std::make_shared<loom::ops::LayerNormAttrs>();
      attrs->epsilon = kEpsilon;
      g.output(x.apply(op("layer_norm"), {g.constant("gamma", c.gamma), g.constant("beta", c.beta)},
                       attrs));
      break;
    }
    case Op::kSum: {
      auto attrs = std::make_shared<loom::ops::ReduceAttrs>();
      attrs->axes = {-1};
      g.output(x.apply(op("sum"), {}, attrs));
      break;
    }
  }
  // The kernel cache is off: every run tunes afresh, so tune_s is a real tuning time.
  loom::CompileOptions options{.tune = loom::TuneLevel::kFast, .use_cache = false};
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g, options);
  tune_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!compiled.ok()) return compiled.status();
  for (const loom::KernelInfo& k : compiled->kernels())
    detail += (detail.empty() ? "" : "; ") + k.schedule;
  return std::make_unique<LoomRunner>(*std::move(compiled), c.x);
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

class OnednnRunner final : public Runner {
 public:
  OnednnRunner(dnnl::primitive primitive, std::unordered_map<int, dnnl::memory> args)
      : primitive_(std::move(primitive)), args_(std::move(args)), stream_(cpu_engine()) {}
  void run() override {
    primitive_.execute(stream_, args_);
    stream_.wait();
  }
  std::vector<float> output() override {
    dnnl::memory dst = args_.at(DNNL_ARG_DST);
    const float* p = static_cast<const float*>(dst.get_data_handle());
    return std::vector<float>(p, p + dst.get_desc().get_size() / sizeof(float));
  }

 private:
  dnnl::primitive primitive_;
  std::unordered_map<int, dnnl::memory> args_;
  dnnl::stream stream_;
};

using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

// oneDNN on plain row-major data (what a framework hands it between matmuls).
std::unique_ptr<Runner> make_onednn(const Case& c, std::string& detail) {
  dnnl::memory::desc md({c.rows, c.len}, kF32, Tag::ab);
  dnnl::memory src(md, cpu_engine(), c.x.data());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}};
  switch (c.op) {
    case Op::kSoftmax: {
      dnnl::softmax_forward::primitive_desc pd(
          dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1), cpu_engine());
      detail = pd.impl_info_str();
      args[DNNL_ARG_DST] = dnnl::memory(pd.dst_desc(), cpu_engine());
      return std::make_unique<OnednnRunner>(dnnl::softmax_forward(pd), std::move(args));
    }
    case Op::kLayerNorm: {
      auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      dnnl::layer_normalization_forward::primitive_desc pd(
          dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, kEpsilon,
                                                  flags),
          cpu_engine());
      detail = pd.impl_info_str();
      dnnl::memory::desc vec_md({c.len}, kF32, Tag::a);
      args[DNNL_ARG_SCALE] = dnnl::memory(vec_md, cpu_engine(), c.gamma.data());
      args[DNNL_ARG_SHIFT] = dnnl::memory(vec_md, cpu_engine(), c.beta.data());
      args[DNNL_ARG_DST] = dnnl::memory(pd.dst_desc(), cpu_engine());
      // Inference computes the statistics itself; memories are passed where it asks for them.
      if (pd.mean_desc().get_size() > 0)
        args[DNNL_ARG_MEAN] = dnnl::memory(pd.mean_desc(), cpu_engine());
      if (pd.variance_desc().get_size() > 0)
        args[DNNL_ARG_VARIANCE] = dnnl::memory(pd.variance_desc(), cpu_engine());
      return std::make_unique<OnednnRunner>(dnnl::layer_normalization_forward(pd), std::move(args));
    }
    case Op::kSum: {
      dnnl::memory::desc dst_md({c.rows, 1}, kF32, Tag::ab);
      dnnl::reduction::primitive_desc pd(
          dnnl::reduction::desc(dnnl::algorithm::reduction_sum, md, dst_md, 0.f, 0.f),
          cpu_engine());
      detail = pd.impl_info_str();
      args[DNNL_ARG_DST] = dnnl::memory(pd.dst_desc(), cpu_engine());
      return std::make_unique<OnednnRunner>(dnnl::reduction(pd), std::move(args));
    }
  }
  return nullptr;
}

// ---- Setup, verification and benchmarks -------------------------------------------------------

struct Entry {
  std::unique_ptr<Runner> runner;
  std::string detail;  // oneDNN's implementation, loom's kernel schedules
  std::string error;
  double tune_s = -1;
  double rel_err = std::numeric_limits<double>::quiet_NaN();
};

std::vector<Case> g_cases;
std::map<std::tuple<int, Impl, int>, Entry> g_entries;
bool g_failed = false;

void fail(Entry& e, const Case& c, Impl impl, int threads, const std::string& why) {
  e.error = why;
  g_failed = true;
  std::fprintf(stderr, "\n*** FAILED: %s threads=%d %s: %s ***\n\n", c.name.c_str(), threads,
               impl_name(impl), why.c_str());
}

Entry& entry(int case_index, Impl impl, int threads) {
  auto [it, fresh] = g_entries.try_emplace({case_index, impl, threads});
  Entry& e = it->second;
  if (!fresh) return e;
  Case& c = g_cases[case_index];
  prepare(c);
  try {
    if (impl == Impl::kOnednn) {
      e.runner = make_onednn(c, e.detail);
    } else {
      auto r = make_loom(c, impl == Impl::kLoomDefault, e.tune_s, e.detail);
      if (!r.ok()) {
        fail(e, c, impl, threads, "compile: " + r.status().ToString());
        return e;
      }
      e.runner = *std::move(r);
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
  return c.name + "/t" + std::to_string(threads) + "/" + impl_name(impl);
}

void run_benchmark(benchmark::State& state, int case_index, Impl impl, int threads) {
  set_threads(threads);
  settle_after_switch(library(impl));
  Entry& e = entry(case_index, impl, threads);
  if (!e.error.empty()) {
    state.SkipWithError(e.error.c_str());
    return;
  }
  for (auto _ : state) e.runner->run();
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
  // Bytes the operator must move at least: read x once, write the output once.
  double bytes = 4.0 * c.rows * c.len + 4.0 * (c.op == Op::kSum ? c.rows : c.rows * c.len);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

constexpr int kThreadCounts[] = {1, 2};
constexpr Impl kImpls[] = {Impl::kLoom, Impl::kLoomDefault, Impl::kOnednn};

// ---- Results ----------------------------------------------------------------------------------

struct Row {
  const Case* c;
  int threads;
  std::map<Impl, double> ms, median_ms;
  std::optional<double> tune_s;
  bool failed = false;
};

std::vector<Row> collect_rows(const CollectingReporter& reporter) {
  std::vector<Row> rows;
  for (int ci = 0; ci < static_cast<int>(g_cases.size()); ++ci)
    for (int t : kThreadCounts) {
      Row row{&g_cases[ci], t, {}, {}, std::nullopt, false};
      bool any = false;
      for (Impl impl : kImpls) {
        auto e = g_entries.find({ci, impl, t});
        if (e == g_entries.end()) continue;
        any = true;
        row.failed = row.failed || !e->second.error.empty();
        if (impl == Impl::kLoom && e->second.tune_s >= 0) row.tune_s = e->second.tune_s;
        std::string name = bench_name(g_cases[ci], t, impl);
        if (auto it = reporter.min_ms.find(name); it != reporter.min_ms.end())
          row.ms[impl] = it->second;
        if (auto it = reporter.median_ms.find(name); it != reporter.median_ms.end())
          row.median_ms[impl] = it->second;
      }
      if (any) rows.push_back(std::move(row));
    }
  return rows;
}

std::optional<double> time_of(const Row& r, Impl impl) {
  auto it = r.ms.find(impl);
  if (it == r.ms.end()) return std::nullopt;
  return it->second;
}

std::optional<double> median_of(const Row& r, Impl impl) {
  auto it = r.median_ms.find(impl);
  if (it == r.median_ms.end()) return std::nullopt;
  return it->second;
}

std::optional<double> ratio(const Row& r, Impl peer) {
  auto loom = time_of(r, Impl::kLoom), other = time_of(r, peer);
  if (!loom || !other) return std::nullopt;
  return *other / *loom;
}

void print_table(const std::vector<Row>& rows) {
  std::printf(
      "\nonednn_ms / loom_ms and default_ms / loom_ms (> 1 means loom's template is "
      "faster); best of the repetitions\n");
  std::printf("%-24s %3s %10s %10s %10s %9s %9s %7s\n", "case", "thr", "loom ms", "onednn ms",
              "default ms", "vs onednn", "vs deflt", "tune s");
  for (const Row& r : rows)
    std::printf("%-24s %3d %10s %10s %10s %9s %9s %7s%s\n", r.c->name.c_str(), r.threads,
                fmt(time_of(r, Impl::kLoom), "%.4f").c_str(),
                fmt(time_of(r, Impl::kOnednn), "%.4f").c_str(),
                fmt(time_of(r, Impl::kLoomDefault), "%.4f").c_str(),
                fmt(ratio(r, Impl::kOnednn), "%.2f").c_str(),
                fmt(ratio(r, Impl::kLoomDefault), "%.1f").c_str(), fmt(r.tune_s, "%.2f").c_str(),
                r.failed ? "  FAILED" : "");
}

void print_verification() {
  std::printf(
      "\nverification: max |out - ref| / max |ref| against a double-precision reference "
      "(tolerance %.0e)\n",
      kTolerance);
  for (const auto& [key, e] : g_entries) {
    const auto& [ci, impl, threads] = key;
    std::printf("  %-24s t%d %-13s %10.2e  %s%s\n", g_cases[ci].name.c_str(), threads,
                impl_name(impl), e.rel_err, e.error.empty() ? "ok" : e.error.c_str(),
                e.detail.empty() ? "" : ("  [" + e.detail + "]").c_str());
  }
}

bool write_json(const std::vector<Row>& rows, const std::string& path) {
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  for (const Row& r : rows) {
    int ci = static_cast<int>(r.c - g_cases.data());
    nlohmann::ordered_json rec{
        {"name", r.c->name},
        {"op", op_name(r.c->op)},
        {"shape", r.c->shape},
        {"threads", r.threads},
        {"loom_ms", optional_json(time_of(r, Impl::kLoom))},
        {"onednn_ms", optional_json(time_of(r, Impl::kOnednn))},
        {"loom_default_ms", optional_json(time_of(r, Impl::kLoomDefault))},
        {"onednn_over_loom", optional_json(ratio(r, Impl::kOnednn))},
        {"default_over_loom", optional_json(ratio(r, Impl::kLoomDefault))},
        {"loom_median_ms", optional_json(median_of(r, Impl::kLoom))},
        {"onednn_median_ms", optional_json(median_of(r, Impl::kOnednn))},
        {"loom_default_median_ms", optional_json(median_of(r, Impl::kLoomDefault))},
        {"tune_s", optional_json(r.tune_s)},
        {"failed", r.failed}};
    for (Impl impl : kImpls) {
      auto e = g_entries.find({ci, impl, r.threads});
      if (e == g_entries.end()) continue;
      std::string key = impl_name(impl);
      rec[key + "_rel_err"] = error_json(e->second.rel_err);
      rec[key + "_detail"] = e->second.detail;
    }
    records.push_back(std::move(rec));
  }
  return write_records(records, path);
}

constexpr const char* kUsage =
    "usage: bench_cpu_rows [--json PATH] [--quick] [--filter REGEX] [--benchmark_<flag>=...]\n"
    "  --json PATH     write one record per case and thread count to PATH\n"
    "  --quick         a small subset with short timings (smoke test)\n"
    "  --filter REGEX  run only matching benchmarks, e.g. softmax or layer_norm\n"
    "Google Benchmark flags pass through (defaults here: 8 repetitions, 0.2 s minimum time).\n";

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (std::optional<int> exit_code = init(argc, argv, /*repetitions=*/8, kUsage, options))
    return *exit_code;
  const std::string& json_path = options.json_path;
  const bool quick = options.quick;

  const dnnl_version_t* dv = dnnl_version();
  std::printf("loom target: %s\n", loom::Target::host_cpu().to_string().c_str());
  std::printf("oneDNN %d.%d.%d (OpenMP runtime)\n", dv->major, dv->minor, dv->patch);

  g_cases = all_cases(quick);
  for (int ci = 0; ci < static_cast<int>(g_cases.size()); ++ci)
    for (int t : kThreadCounts)
      for (Impl impl : kImpls)
        benchmark::RegisterBenchmark(bench_name(g_cases[ci], t, impl).c_str(), run_benchmark, ci,
                                     impl, t)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->ComputeStatistics("min", [](const std::vector<double>& v) {
              return *std::min_element(v.begin(), v.end());
            });

  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

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
