// Layout benchmark (ALT's joint layout and loop tuning), in one run:
//  1. the ResNet-50 convolution layers of bench_cpu_peers, batch 1: loom restricted to NCHW,
//     loom with the layouts joint tuning picks for the layer (the conversions into and out of
//     them excluded, as oneDNN's reorders are), and oneDNN in its preferred layouts and in NCHW.
//     loom's times are CompiledGraph::profile's per-kernel medians, oneDNN's medians of as many
//     runs, in interleaved rounds. Ratios: NCHW / joint (the goal: a geometric mean >= 1.2) and
//     oneDNN preferred / joint (>= 1).
//  2. ResNet-50 end to end, batch 1: every tensor row-major, each fixed layout for the whole
//     graph (NCHW8c, NCHW16c, NHWC), and jointly tuned layouts; latency (Google Benchmark, 20
//     repetitions in random order: a few percent apart, variants need many), the conversions
//     left in the compiled graph, tuning time.
//
//   bench_layouts [--tune none|fast|full] [--quick] [--layers|--resnet] [--json PATH]
//                 [Google Benchmark flags]
//
// --layers: the layer table alone. --resnet: ResNet-50 alone.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "loom/graph/layouts.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "models.hpp"
#include "onednn_conv.hpp"

namespace {

using namespace loom_bench;

// ---- 1. Convolution layers ----------------------------------------------------------------------

std::string layer_name(const ConvShape& s) {
  return std::to_string(s.c_in) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + "->" +
         std::to_string(s.c_out) + " k" + std::to_string(s.kernel) + " s" +
         std::to_string(s.stride);
}

// A one-conv graph with the conv's layouts; its conv kernel's index in kernels().
struct LoomLayer {
  loom::CompiledGraph compiled;
  size_t conv_kernel = 0;
  std::string layouts;
};

absl::StatusOr<LoomLayer> compile_layer(const loom::Graph& g, int conv,
                                        const loom::layouts::AnchorLayouts& choice,
                                        const loom::CompileOptions& options) {
  LOOM_ASSIGN_OR_RETURN(loom::Graph laid, loom::layouts::apply(g, {{conv, choice}}));
  // Unfused, so the conversions into and out of the layouts stay kernels of their own (fused,
  // the conv kernel would read and write the graph's row-major tensors through them).
  loom::CompileOptions unfused = options;
  unfused.fuse = false;
  LOOM_ASSIGN_OR_RETURN(loom::CompiledGraph c, loom::Compiler().compile(laid, unfused));
  const size_t conv_kernel = conv_kernel_index(c);
  return LoomLayer{std::move(c), conv_kernel, choice.to_string()};
}

// Each implementation runs twice untimed before its timed runs: the first runs after a pause
// (settle_after_switch) wake sleeping threads and were measured at up to 10x a warm run (oneDNN's
// 1x1 64->256 at 56x56, two threads: 3 to 9 ms, then 0.33).
double kernel_ms(const LoomLayer& l, const std::vector<loom::NDArray>& inputs) {
  if (!l.compiled.run(inputs).ok()) return std::nan("");
  absl::StatusOr<std::vector<double>> ms = l.compiled.profile(inputs, 10);  // one more untimed
  return ms.ok() ? (*ms)[l.conv_kernel] : std::nan("");
}

double peer_ms(Runner& r) {
  r.run();
  r.run();
  std::vector<double> ms;
  for (int i = 0; i < 11; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    r.run();
    ms.push_back(seconds_since(t0) * 1e3);
  }
  return median(ms);
}

struct LayerResult {
  std::string name, joint_layouts;
  std::vector<std::pair<std::string, double>> choice_ms;  // every layout choice's kernel
  double nchw_ms, joint_ms, onednn_ms, onednn_nchw_ms, tune_s;
};

LayerResult bench_layer(const ConvShape& s, const loom::CompileOptions& options, int rounds) {
  LayerResult r{layer_name(s), "", {}, 0, 0, 0, 0, 0};
  loom::Graph g;
  loom::NDArray x = seeded_array({1, s.c_in, s.h, s.w}, 1);
  loom::NDArray w = seeded_array({s.c_out, s.c_in, s.kernel, s.kernel}, 2);
  loom::Tensor y = g.input("x", {1, s.c_in, s.h, s.w})
                       .conv2d(g.constant("w", w), {.stride = s.stride, .padding = s.pad});
  g.output(y);
  const std::vector<loom::NDArray> inputs = {x};
  // Joint: every layout choice of the conv tuned at the same level; the fastest kernel wins.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<loom::layouts::AnchorLayouts> choices =
      loom::layouts::options(g, y.id(), loom::Target::host_cpu());
  std::vector<LoomLayer> layers;
  for (const loom::layouts::AnchorLayouts& c : choices) {
    absl::StatusOr<LoomLayer> l = compile_layer(g, y.id(), c, options);
    if (!l.ok()) {
      std::printf("%s %s: %s\n", r.name.c_str(), c.to_string().c_str(), l.status().ToString().c_str());
      continue;
    }
    layers.push_back(*std::move(l));
  }
  r.tune_s = seconds_since(t0);
  if (layers.empty()) return r;
  std::string detail;
  std::unique_ptr<Runner> onednn = onednn_conv(s, x, w, false, detail);
  std::unique_ptr<Runner> onednn_nchw = onednn_conv(s, x, w, true, detail);
  // Interleaved rounds; each layout's median over rounds.
  std::vector<std::vector<double>> loom_ms(layers.size());
  std::vector<double> dnnl_ms, dnnl_nchw_ms;
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < layers.size(); ++k) loom_ms[k].push_back(kernel_ms(layers[k], inputs));
    settle_after_switch("onednn");
    dnnl_ms.push_back(peer_ms(*onednn));
    dnnl_nchw_ms.push_back(peer_ms(*onednn_nchw));
    settle_after_switch("loom");
  }
  r.nchw_ms = median(loom_ms[0]);  // choices[0] is row-major in and out
  r.joint_ms = r.nchw_ms;
  r.joint_layouts = layers[0].layouts;
  for (size_t k = 1; k < layers.size(); ++k)
    if (median(loom_ms[k]) < r.joint_ms) r.joint_ms = median(loom_ms[k]), r.joint_layouts = layers[k].layouts;
  for (size_t k = 0; k < layers.size(); ++k)
    r.choice_ms.emplace_back(layers[k].layouts, median(loom_ms[k]));
  r.onednn_ms = median(dnnl_ms);
  r.onednn_nchw_ms = median(dnnl_nchw_ms);
  return r;
}

// ---- 2. ResNet-50 end to end -----------------------------------------------------------------

struct Variant {
  std::string name;
  loom::CompiledGraph compiled;
  int conversions = 0;
  double compile_s = 0;
};

std::vector<Variant> g_variants;
std::vector<loom::NDArray> g_resnet_inputs;

void run_variant(benchmark::State& state, size_t v) {
  for (auto _ : state) {
    absl::StatusOr<std::vector<loom::NDArray>> out = g_variants[v].compiled.run(g_resnet_inputs);
    if (!out.ok()) {
      state.SkipWithError(out.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(out->data());
  }
}

// Conversions the compiled graph runs: kernels computing a layout_transform node.
int conversions_in(const loom::CompiledGraph& c) {
  int n = 0;
  for (const loom::KernelInfo& k : c.kernels())
    for (const std::string& op : k.ops) n += op.rfind("layout_transform", 0) == 0 ? 1 : 0;
  return n;
}

// How many convolutions read and write each pair of layouts, as "in(...) out ...: count; ...".
std::string conv_layouts(const loom::CompiledGraph& c) {
  const std::vector<loom::Node>& nodes = c.graph().nodes();
  std::map<std::string, int> count;
  for (const loom::Node& n : nodes)
    if (n.op == "conv2d") {
      const auto& in = nodes[static_cast<size_t>(n.inputs[0])].type.layout;
      ++count[loom::layouts::AnchorLayouts{{in}, n.type.layout}.to_string()];
    }
  std::string s;
  for (const auto& [pair, k] : count) s += (s.empty() ? "" : "; ") + pair + ": " + std::to_string(k);
  return s;
}

const char kUsage[] =
    "bench_layouts [--tune none|fast|full] [--quick] [--layers|--resnet] [--json PATH]\n"
    "              [Google Benchmark flags]\n";

}  // namespace

int main(int argc, char** argv) {
  // --layers and --resnet are taken out before Google Benchmark sees the flags.
  bool layers_only = false, resnet_only = false;
  for (auto [flag, on] : {std::pair{"--layers", &layers_only}, std::pair{"--resnet", &resnet_only}})
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]) == flag) {
        *on = true;
        for (int j = i; j < argc; ++j) argv[j] = argv[j + 1];  // argv[argc] is null
        --argc;
        break;
      }
  Options options;
  if (std::optional<int> code = init(argc, argv, 20, kUsage, options)) return *code;
  loom::CompileOptions compile;
  compile.tune = options.tune == "none" ? loom::TuneLevel::kNone
                 : options.tune == "full" ? loom::TuneLevel::kFull
                                          : loom::TuneLevel::kFast;
  compile.report_progress = false;
  omp_set_num_threads(loom::num_threads());
  std::printf("threads %d, tuning %s\n", loom::num_threads(), options.tune.empty() ? "fast" : options.tune.c_str());

  // 1. Layers.
  std::vector<ConvShape> shapes = {{64, 56, 56, 64, 3, 1, 1, 1},  {64, 56, 56, 256, 1, 1, 0, 1},
                                   {256, 56, 56, 64, 1, 1, 0, 1}, {128, 28, 28, 128, 3, 1, 1, 1},
                                   {256, 14, 14, 256, 3, 1, 1, 1}, {512, 7, 7, 512, 3, 1, 1, 1},
                                   {3, 224, 224, 64, 7, 2, 3, 1}};
  if (options.quick) shapes = {{256, 14, 14, 256, 3, 1, 1, 1}, {64, 56, 56, 256, 1, 1, 0, 1}};
  if (resnet_only) shapes.clear();
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  // The roofline: what share of the FMA peak each time reaches, counting the direct method's
  // FLOPs (Winograd does fewer multiplies and may pass 100%), and so how far a layout could take
  // a layer past its NCHW time with the same arithmetic (peak / NCHW's rate).
  const double peak = shapes.empty() ? std::nan("") : fma_peak_gflops(loom::num_threads());
  auto peak_fraction = [&](const ConvShape& s, double ms) { return s.flops() / (ms * 1e6) / peak; };
  if (!shapes.empty())
    std::printf("\nFMA peak %.1f GFLOP/s on %d threads; %%pk: the direct method's FLOPs over the time,\n"
                "as a share of it (Winograd kernels do fewer multiplies, so theirs may pass 100)\n"
                "%-26s %9s %9s %9s %9s %7s %7s %5s %5s %5s  %s\n",
                peak, loom::num_threads(), "conv layer", "nchw ms", "joint ms", "dnnl ms",
                "dnnl_nchw", "n/j", "d/j", "n%pk", "j%pk", "d%pk", "joint layouts");
  double log_nchw = 0, log_dnnl = 0, log_ceiling = 0;
  int n = 0;
  for (const ConvShape& s : shapes) {
    LayerResult r = bench_layer(s, compile, options.quick ? 3 : 21);
    const double nchw_pk = peak_fraction(s, r.nchw_ms), joint_pk = peak_fraction(s, r.joint_ms),
                 dnnl_pk = peak_fraction(s, r.onednn_ms);
    std::printf("%-26s %9.3f %9.3f %9.3f %9.3f %7.2f %7.2f %5.0f %5.0f %5.0f  %s\n", r.name.c_str(),
                r.nchw_ms, r.joint_ms, r.onednn_ms, r.onednn_nchw_ms, r.nchw_ms / r.joint_ms,
                r.onednn_ms / r.joint_ms, nchw_pk * 100, joint_pk * 100, dnnl_pk * 100,
                r.joint_layouts.c_str());
    for (const auto& [layouts, ms] : r.choice_ms) std::printf("    %9.3f  %s\n", ms, layouts.c_str());
    log_nchw += std::log(r.nchw_ms / r.joint_ms);
    log_dnnl += std::log(r.onednn_ms / r.joint_ms);
    log_ceiling += std::log(1 / nchw_pk);
    ++n;
    records.push_back({{"name", r.name}, {"kind", "conv_layer"}, {"nchw_ms", r.nchw_ms},
                       {"joint_ms", r.joint_ms}, {"joint_layouts", r.joint_layouts},
                       {"onednn_ms", r.onednn_ms}, {"onednn_nchw_ms", r.onednn_nchw_ms},
                       {"choices_ms", r.choice_ms}, {"tune_s", r.tune_s},
                       {"peak_gflops", peak}, {"nchw_peak_fraction", nchw_pk},
                       {"joint_peak_fraction", joint_pk}, {"onednn_peak_fraction", dnnl_pk}});
  }
  if (n > 0)
    std::printf("geometric mean: nchw / joint %.3f, onednn preferred / joint %.3f\n"
                "ceiling of nchw / joint with the direct method's arithmetic at the FMA peak: %.3f\n",
                std::exp(log_nchw / n), std::exp(log_dnnl / n), std::exp(log_ceiling / n));

  if (layers_only) return options.json_path.empty() || write_records(records, options.json_path) ? 0 : 1;

  // 2. ResNet-50.
  loom_models::Weights weights;
  loom_models::ResNetConfig config;
  if (options.quick) config.blocks = {1, 1, 1, 1};
  loom::Graph resnet = loom_models::build_resnet(config, weights);
  g_resnet_inputs = {seeded_array({1, 3, config.image, config.image}, 3)};
  struct Policy {
    std::string name;
    loom::LayoutPolicy policy;
    std::vector<loom::LayoutStep> fixed;
  };
  const int64_t lanes = loom::Target::host_cpu().vector_lanes_f32();
  std::vector<Policy> policies = {{"nchw", loom::LayoutPolicy::kRowMajor, {}},
                                  {"nchw8c", loom::LayoutPolicy::kFixed, loom::channels_blocked(8)},
                                  {"nchw16c", loom::LayoutPolicy::kFixed, loom::channels_blocked(16)},
                                  {"nhwc", loom::LayoutPolicy::kFixed, loom::channels_last()},
                                  {"joint", loom::LayoutPolicy::kJoint, {}}};
  if (lanes != 8 && lanes != 16)
    policies.insert(policies.begin() + 3, {"nchw" + std::to_string(lanes) + "c",
                                           loom::LayoutPolicy::kFixed, loom::channels_blocked(lanes)});
  for (const Policy& p : policies) {
    loom::CompileOptions o = compile;
    o.layouts = p.policy;
    o.fixed_layout = p.fixed;
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<loom::CompiledGraph> c = loom::Compiler().compile(resnet, o);
    if (!c.ok()) {
      std::printf("resnet50 %s: %s\n", p.name.c_str(), c.status().ToString().c_str());
      return 1;
    }
    Variant v{p.name, *std::move(c), 0, seconds_since(t0)};
    v.conversions = conversions_in(v.compiled);
    std::printf("resnet50 %-8s compiled in %.1f s, %zu kernels, %d conversions\n", p.name.c_str(),
                v.compile_s, v.compiled.kernels().size(), v.conversions);
    std::printf("    convs %s\n", conv_layouts(v.compiled).c_str());
    g_variants.push_back(std::move(v));
  }
  for (size_t v = 0; v < g_variants.size(); ++v)
    benchmark::RegisterBenchmark(("resnet50/" + g_variants[v].name).c_str(), run_variant, v)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\n%-12s %10s %12s %10s %12s\n", "resnet50", "ms", "conversions", "compile s",
              "vs joint");
  double joint_ms = reporter.median_ms["resnet50/joint"];
  for (const Variant& v : g_variants) {
    double ms = reporter.median_ms["resnet50/" + v.name];
    std::printf("%-12s %10.2f %12d %10.1f %12.3f\n", v.name.c_str(), ms, v.conversions,
                v.compile_s, ms / joint_ms);
    records.push_back({{"name", "resnet50"}, {"kind", "end_to_end"}, {"layouts", v.name},
                       {"ms", ms}, {"conversions", v.conversions}, {"compile_s", v.compile_s}});
  }
  if (!options.json_path.empty() && !write_records(records, options.json_path)) return 1;
  return 0;
}
