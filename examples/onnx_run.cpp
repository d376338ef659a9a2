// onnx_run: imports an ONNX model, compiles it for this CPU, runs it on random inputs and prints
// its latency next to its FLOP count (matmuls and convolutions) and the GFLOP/s achieved.
//
//   onnx_run MODEL.onnx [--dim NAME=VALUE]... [--tune none|fast|full] [--runs N]
//
// Symbolic input dims (ONNX dim_params such as a sequence length) take the --dim values.
// tools/onnx_make_models writes ResNet-50 and BERT-base models to try it on.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

loom::NDArray random_input(loom::DType dtype, const std::vector<int64_t>& shape, uint64_t seed) {
  loom::NDArray a(dtype, shape);
  for (int64_t i = 0; i < a.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    double u = static_cast<double>(seed >> 11) * 0x1p-53;
    a.set(i, dtype.is_float() ? 2 * u - 1 : static_cast<double>(static_cast<int>(u * 8)));
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: onnx_run MODEL.onnx [--dim NAME=VALUE]... [--tune none|fast|full] [--runs N]\n");
    return 2;
  }
  const std::string path = argv[1];
  loom::DimBindings dims;
  loom::CompileOptions options;
  options.tune = loom::TuneLevel::kFast;
  int runs = 10;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dim" && i + 1 < argc) {
      const std::string d = argv[++i];
      const size_t eq = d.find('=');
      if (eq == std::string::npos) return std::fprintf(stderr, "--dim takes NAME=VALUE\n"), 2;
      dims[d.substr(0, eq)] = std::atoll(d.c_str() + eq + 1);
    } else if (a == "--tune" && i + 1 < argc) {
      const std::string t = argv[++i];
      options.tune = t == "none" ? loom::TuneLevel::kNone
                     : t == "full" ? loom::TuneLevel::kFull
                                   : loom::TuneLevel::kFast;
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      return std::fprintf(stderr, "onnx_run: unknown argument %s\n", a.c_str()), 2;
    }
  }

  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::Graph> graph = loom::onnx::import(path);
  if (!graph.ok()) return std::fprintf(stderr, "onnx_run: %s\n", graph.status().ToString().c_str()), 1;
  const double import_s = seconds_since(t0);
  absl::StatusOr<loom::Graph> bound = graph->bind_dims(dims);
  if (!bound.ok()) return std::fprintf(stderr, "onnx_run: %s\n", bound.status().ToString().c_str()), 1;
  for (int id : bound->inputs())
    if (!loom::is_static(bound->nodes()[id].type.shape))
      return std::fprintf(stderr, "onnx_run: input %s has symbolic dims %s: give them with --dim\n",
                          bound->nodes()[id].name.c_str(),
                          loom::shape_to_string(bound->nodes()[id].type.shape).c_str()), 1;

  t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(*graph, options);
  if (!compiled.ok()) return std::fprintf(stderr, "onnx_run: %s\n", compiled.status().ToString().c_str()), 1;
  std::vector<loom::NDArray> inputs;
  uint64_t seed = 1;
  for (int id : bound->inputs()) {
    const loom::Node& n = bound->nodes()[id];
    inputs.push_back(random_input(n.type.dtype, *loom::static_extents(n.type.shape), seed++));
  }
  // The first run compiles the binding of the symbolic dims (if any): part of the start-up.
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run(inputs);
  if (!out.ok()) return std::fprintf(stderr, "onnx_run: %s\n", out.status().ToString().c_str()), 1;
  const double compile_s = seconds_since(t0);

  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    auto r0 = std::chrono::steady_clock::now();
    out = compiled->run(inputs);
    ms.push_back(1e3 * seconds_since(r0));
    if (!out.ok()) return std::fprintf(stderr, "onnx_run: %s\n", out.status().ToString().c_str()), 1;
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2], work = bound->flops() * 1e-9;
  std::printf("%s: imported in %.2f s, compiled in %.2f s; %zu outputs, first %s %s\n", path.c_str(),
              import_s, compile_s, out->size(), (*out)[0].dtype().to_string().c_str(),
              loom::shape_to_string((*out)[0].shape()).c_str());
  std::printf("latency %.2f ms (median of %d), %.2f GFLOP, %.1f GFLOP/s\n", median, runs, work,
              work / (median * 1e-3));
  return 0;
}
