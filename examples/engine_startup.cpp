// engine_startup: what an inference engine does when it starts. It builds BERT-base (one graph
// with a symbolic sequence length, prepared for lengths 32, 128 and 384) and ResNet-50 with
// loom's fluent API, compiles and tunes them for this CPU, and serves a few requests.
//
// Each request prints its latency next to the model's FLOP count (matmuls and convolutions)
// and the GFLOP/s achieved. Run without arguments it starts the engine twice, each time in a fresh process sharing one
// new kernel cache directory: the first start is cold (everything tuned and compiled), the second
// warm (everything loaded from the cache). It prints each start-up's time and counters and the
// ratio, and fails if the warm start compiled or measured anything.
//
//   engine_startup [--tune none|fast|full] [--quick] [--cache-dir DIR]
//   engine_startup --serve ...      one start-up in this process (what each run above is)
//
// --quick builds small stand-ins (BERT with 2 layers at length 32, ResNet-50 with one block per
// stage on 64x64 images) for a smoke test. Weights are random (a fixed seed), with batch norm
// already folded into the convolutions as an engine's converter would; the embedding lookup is
// the engine's, so BERT's input is the embedded sequence [1, seq, 768].

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "loom/loom.hpp"
#include "loom/runtime/stats.hpp"
#include "models.hpp"

namespace {

using loom::Dim;
using loom::DType;
using loom::Graph;
using loom::NDArray;
using loom::Tensor;
using loom_models::BertConfig;
using loom_models::ResNetConfig;
using loom_models::Weights;
using loom_models::build_bert;
using loom_models::build_resnet;

struct Settings {
  loom::TuneLevel tune = loom::TuneLevel::kFast;
  bool quick = false;
  std::string cache_dir;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- One start-up -----------------------------------------------------------------------------

bool all_finite(const NDArray& a) {
  for (int64_t i = 0; i < a.numel(); ++i)
    if (!std::isfinite(a.data_as<float>()[i])) return false;
  return true;
}

int fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "engine_startup: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

int serve(const Settings& settings) {
  // Model loading (here: building the graphs from random weights) is not part of start-up.
  auto t_load = std::chrono::steady_clock::now();
  Weights weights;
  BertConfig bert_config;
  ResNetConfig resnet_config;
  std::vector<int64_t> seqs = {32, 128, 384};
  if (settings.quick) {
    bert_config.layers = 2;
    seqs = {32};
    resnet_config.blocks = {1, 1, 1, 1};
    resnet_config.image = 64;
  }
  Graph bert = build_bert(bert_config, weights);
  Graph resnet = build_resnet(resnet_config, weights);
  std::printf("models built in %.2f s (BERT-base %d layers, ResNet-50 %dx%lld images)\n",
              seconds_since(t_load), bert_config.layers, settings.quick ? 1 : 50,
              static_cast<long long>(resnet_config.image));

  // Start-up: compile (and tune) both models for this CPU, BERT for each sequence length served.
  loom::CompileOptions options;
  options.tune = settings.tune;
  options.cache_dir = settings.cache_dir;
  loom::Compiler compiler;
  const loom::Stats before = loom::stats();
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> bert_compiled = compiler.compile(bert, options);
  if (!bert_compiled.ok()) return fail("compiling BERT", bert_compiled.status());
  for (int64_t seq : seqs) {
    auto t = std::chrono::steady_clock::now();
    absl::StatusOr<loom::CompiledGraph> s = bert_compiled->specialize({{"seq", seq}});
    if (!s.ok()) return fail("compiling BERT for length " + std::to_string(seq), s.status());
    std::printf("  BERT, length %4lld: %3zu kernels ready in %6.2f s\n", static_cast<long long>(seq),
                s->kernels().size(), seconds_since(t));
  }
  auto t = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> resnet_compiled = compiler.compile(resnet, options);
  if (!resnet_compiled.ok()) return fail("compiling ResNet-50", resnet_compiled.status());
  std::printf("  ResNet-50:         %3zu kernels ready in %6.2f s\n",
              resnet_compiled->kernels().size(), seconds_since(t));
  const double startup = seconds_since(t0);
  const loom::Stats work = loom::stats() - before;
  std::printf("start-up: %.3f s; %s\n", startup, work.to_string().c_str());

  // Serve a few requests.
  Weights inputs;
  const double resnet_gflop = resnet.flops() * 1e-9;
  for (int64_t seq : seqs) {
    absl::StatusOr<Graph> bound = bert.bind_dims({{"seq", seq}});
    if (!bound.ok()) return fail("BERT", bound.status());
    const double gflop = bound->flops() * 1e-9;
    NDArray embedded = inputs.make({1, seq, bert_config.hidden}, 1.0);
    auto r0 = std::chrono::steady_clock::now();
    auto out = bert_compiled->run({embedded});
    if (!out.ok()) return fail("BERT request", out.status());
    if (!all_finite((*out)[0])) return fail("BERT request", absl::DataLossError("non-finite output"));
    const double seconds = seconds_since(r0);
    std::printf("  request: BERT, length %4lld -> %s in %7.1f ms (%5.1f GFLOP, %5.1f GFLOP/s)\n",
                static_cast<long long>(seq), loom::shape_to_string((*out)[0].shape()).c_str(),
                1e3 * seconds, gflop, gflop / seconds);
  }
  for (int r = 0; r < 2; ++r) {
    NDArray image = inputs.make({1, 3, resnet_config.image, resnet_config.image}, 1.0);
    auto r0 = std::chrono::steady_clock::now();
    auto out = resnet_compiled->run({image});
    if (!out.ok()) return fail("ResNet-50 request", out.status());
    if (!all_finite((*out)[0])) return fail("ResNet-50 request", absl::DataLossError("non-finite output"));
    const double seconds = seconds_since(r0);
    std::printf("  request: ResNet-50 -> %s in %7.1f ms (%5.1f GFLOP, %5.1f GFLOP/s)\n",
                loom::shape_to_string((*out)[0].shape()).c_str(), 1e3 * seconds, resnet_gflop,
                resnet_gflop / seconds);
  }
  // The line the two-run driver reads.
  std::printf("@startup seconds=%.6f llvm_compiles=%llu tune_measurements=%llu\n", startup,
              static_cast<unsigned long long>(work.llvm_compiles),
              static_cast<unsigned long long>(work.tune_measurements));
  return 0;
}

// ---- The driver: a cold and a warm start in fresh processes -----------------------------------

struct StartupRun {
  double seconds = -1;
  unsigned long long llvm_compiles = 0, tune_measurements = 0;
};

// Runs this program with --serve in a child process, echoing its output indented.
bool run_child(const std::string& args, StartupRun* result) {
  // /proc/self/exe in the command would name the shell popen starts: resolve it here.
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return false;
  std::string command = "'" + self + "' --serve " + args;
  FILE* child = ::popen(command.c_str(), "r");
  if (!child) return false;
  char line[1024];
  while (std::fgets(line, sizeof line, child)) {
    if (std::sscanf(line, "@startup seconds=%lf llvm_compiles=%llu tune_measurements=%llu",
                    &result->seconds, &result->llvm_compiles, &result->tune_measurements) == 3)
      continue;
    std::printf("  | %s", line);
    std::fflush(stdout);
  }
  return ::pclose(child) == 0 && result->seconds >= 0;
}

const char* tune_name(loom::TuneLevel t) {
  return t == loom::TuneLevel::kNone ? "none" : t == loom::TuneLevel::kFast ? "fast" : "full";
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  bool serve_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--serve") {
      serve_only = true;
    } else if (a == "--quick") {
      settings.quick = true;
    } else if (a == "--tune" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v == "none") settings.tune = loom::TuneLevel::kNone;
      else if (v == "fast") settings.tune = loom::TuneLevel::kFast;
      else if (v == "full") settings.tune = loom::TuneLevel::kFull;
      else return std::fprintf(stderr, "--tune takes none, fast or full\n"), 2;
    } else if (a == "--cache-dir" && i + 1 < argc) {
      settings.cache_dir = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: engine_startup [--tune none|fast|full] [--quick] [--cache-dir DIR] "
                   "[--serve]\n");
      return 2;
    }
  }
  if (serve_only) return serve(settings);

  // A new cache directory unless one is given, so that the first start is cold.
  std::string dir = settings.cache_dir;
  bool remove_dir = false;
  if (dir.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "loom-engine-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) return std::perror("mkdtemp"), 1;
    dir = pattern;
    remove_dir = true;
  }
  const std::string args = std::string("--tune ") + tune_name(settings.tune) +
                           (settings.quick ? " --quick" : "") + " --cache-dir '" + dir + "'";
  StartupRun cold, warm;
  std::printf("first start-up (cache directory %s):\n", dir.c_str());
  std::fflush(stdout);
  bool ok = run_child(args, &cold);
  std::printf("second start-up, a fresh process with the cache now warm:\n");
  std::fflush(stdout);
  ok = ok && run_child(args, &warm);
  if (remove_dir) std::filesystem::remove_all(dir);
  if (!ok) return std::fprintf(stderr, "engine_startup: a start-up failed\n"), 1;

  std::printf("\nstart-up    seconds  llvm_compiles  tune_measurements\n");
  std::printf("cold      %9.3f  %13llu  %17llu\n", cold.seconds, cold.llvm_compiles,
              cold.tune_measurements);
  std::printf("warm      %9.3f  %13llu  %17llu\n", warm.seconds, warm.llvm_compiles,
              warm.tune_measurements);
  std::printf("warm start-up is %.1fx faster than cold\n", cold.seconds / warm.seconds);
  if (warm.llvm_compiles != 0 || warm.tune_measurements != 0) {
    std::fprintf(stderr, "engine_startup: the warm start-up compiled or measured kernels\n");
    return 1;
  }
  return 0;
}
