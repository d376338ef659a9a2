// Fusion benchmark: ResNet-50 (224x224) and BERT-base (sequence 128), batch 1, compiled by loom
// with post-scheduling fusion and without it (CompileOptions::fuse), same tuning level, timed in
// one run (Google Benchmark, repetitions interleaved at random). Prints each model's kernel
// counts, latencies and the unfused/fused ratio (above 1: fusion is faster); --json PATH writes
// one record per model.
//
//   bench_fusion [--tune none|fast|full] [--profile] [--quick] [--json PATH] [Google Benchmark flags]
//
// --profile also prints every kernel of both builds with its median time (CompiledGraph::profile).

#include <cstdio>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "models.hpp"

namespace {

using namespace loom_bench;

struct Model {
  std::string name;
  loom::Graph graph;
  std::vector<loom::NDArray> inputs;
  loom::CompiledGraph fused, unfused;
  double compile_s[2] = {0, 0};
};

std::vector<Model> g_models;

void run_model(benchmark::State& state, size_t model, bool fused) {
  const Model& m = g_models[model];
  const loom::CompiledGraph& c = fused ? m.fused : m.unfused;
  for (auto _ : state) {
    absl::StatusOr<std::vector<loom::NDArray>> out = c.run(m.inputs);
    if (!out.ok()) {
      state.SkipWithError(out.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(out->data());
  }
}

const char kUsage[] =
    "bench_fusion [--tune none|fast|full] [--profile] [--quick] [--json PATH] [Google Benchmark "
    "flags]\n";

// Each kernel of c with its median time over a few runs, and the sum.
void print_profile(const std::string& title, const loom::CompiledGraph& c,
                   const std::vector<loom::NDArray>& inputs) {
  absl::StatusOr<std::vector<double>> ms = c.profile(inputs, 10);
  if (!ms.ok()) {
    std::printf("%s: %s\n", title.c_str(), ms.status().ToString().c_str());
    return;
  }
  std::printf("\n%s: %zu kernels\n", title.c_str(), c.kernels().size());
  double total = 0;
  for (size_t k = 0; k < ms->size() && k < c.kernels().size(); ++k) {
    const loom::KernelInfo& info = c.kernels()[k];
    std::string ops;
    for (const std::string& op : info.ops) ops += (ops.empty() ? "" : " ") + op;
    std::printf("  %8.3f ms  %-24s %s\n", (*ms)[k], info.name.c_str(), ops.c_str());
    total += (*ms)[k];
  }
  std::printf("  %8.3f ms  total\n", total);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (std::optional<int> exit_code = init(argc, argv, /*repetitions=*/10, kUsage, options))
    return *exit_code;
  const loom::TuneLevel tune = options.tune == "full"   ? loom::TuneLevel::kFull
                               : options.tune == "fast" ? loom::TuneLevel::kFast
                                                        : loom::TuneLevel::kNone;
  const bool profile = options.profile;

  loom_models::Weights weights;
  loom_models::ResNetConfig resnet;
  loom_models::BertConfig bert;
  int64_t seq = 128;
  if (options.quick) {
    resnet.blocks = {1, 1, 1, 1};
    resnet.image = 64;
    bert.layers = 2;
    seq = 32;
  }
  {
    Model m;
    m.name = "resnet50";
    m.graph = loom_models::build_resnet(resnet, weights);
    m.inputs = {weights.make({1, 3, resnet.image, resnet.image}, 1.0)};
    g_models.push_back(std::move(m));
  }
  {
    Model m;
    m.name = "bert_base";
    absl::StatusOr<loom::Graph> bound = loom_models::build_bert(bert, weights).bind_dims({{"seq", seq}});
    if (!bound.ok()) {
      std::fprintf(stderr, "bert: %s\n", bound.status().ToString().c_str());
      return 1;
    }
    m.graph = *std::move(bound);
    m.inputs = {weights.make({1, seq, bert.hidden}, 1.0)};
    g_models.push_back(std::move(m));
  }
  for (Model& m : g_models) {
    for (int fused = 0; fused < 2; ++fused) {
      loom::CompileOptions o;
      o.tune = tune;
      o.fuse = fused == 1;
      auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<loom::CompiledGraph> c = loom::Compiler().compile(m.graph, o);
      if (!c.ok()) {
        std::fprintf(stderr, "%s: %s\n", m.name.c_str(), c.status().ToString().c_str());
        return 1;
      }
      m.compile_s[fused] = seconds_since(t0);
      (fused ? m.fused : m.unfused) = *std::move(c);
    }
    // Both builds must compute the same thing.
    absl::StatusOr<std::vector<loom::NDArray>> a = m.fused.run(m.inputs), b = m.unfused.run(m.inputs);
    if (!a.ok() || !b.ok()) {
      std::fprintf(stderr, "%s: run failed\n", m.name.c_str());
      return 1;
    }
    double err = 0, scale = 0;
    const float *x = (*a)[0].data_as<float>(), *y = (*b)[0].data_as<float>();
    for (int64_t i = 0; i < (*a)[0].numel(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(x[i] - y[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(y[i])));
    }
    if (!(err <= 1e-3 * std::max(scale, 1.0))) {
      std::fprintf(stderr, "%s: fused and unfused outputs differ (max |diff| %g, max |y| %g)\n",
                   m.name.c_str(), err, scale);
      return 1;
    }
  }
  if (profile)
    for (const Model& m : g_models) {
      print_profile(m.name + " fused", m.fused, m.inputs);
      print_profile(m.name + " unfused", m.unfused, m.inputs);
    }
  for (size_t i = 0; i < g_models.size(); ++i)
    for (int fused = 1; fused >= 0; --fused)
      benchmark::RegisterBenchmark((g_models[i].name + (fused ? "/fused" : "/unfused")).c_str(),
                                   run_model, i, fused == 1)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  std::printf("\n%-10s %8s %8s %11s %11s %8s\n", "model", "kernels", "unfused", "fused ms",
              "unfused ms", "ratio");
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  for (const Model& m : g_models) {
    std::optional<double> f, u;
    if (auto it = reporter.median_ms.find(m.name + "/fused"); it != reporter.median_ms.end()) f = it->second;
    if (auto it = reporter.median_ms.find(m.name + "/unfused"); it != reporter.median_ms.end()) u = it->second;
    std::optional<double> ratio;
    if (f && u && *f > 0) ratio = *u / *f;
    std::printf("%-10s %8zu %8zu %11s %11s %8s\n", m.name.c_str(), m.fused.kernels().size(),
                m.unfused.kernels().size(), fmt(f, "%.3f").c_str(), fmt(u, "%.3f").c_str(),
                fmt(ratio, "%.3fx").c_str());
    nlohmann::ordered_json r;
    r["name"] = m.name;
    r["kernels_fused"] = m.fused.kernels().size();
    r["kernels_unfused"] = m.unfused.kernels().size();
    r["fused_ms"] = optional_json(f);
    r["unfused_ms"] = optional_json(u);
    r["unfused_over_fused"] = optional_json(ratio);
    r["compile_s_fused"] = m.compile_s[1];
    r["compile_s_unfused"] = m.compile_s[0];
    records.push_back(std::move(r));
  }
  if (!options.json_path.empty() && !write_records(records, options.json_path)) return 1;
  return 0;
}
