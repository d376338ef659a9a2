// loom_run: imports an ONNX model, compiles (and optionally tunes) it for a target, runs it on
// random or given inputs, and prints its latency, the memory its runs use, each kernel's time
// and schedule, and the kernel cache entries it used. It can check the outputs against expected
// ones, save them, and draw the graph and the tuning.
//
//   loom_run MODEL.onnx [options]
//     --dim NAME=VALUE      a symbolic input dim (ONNX dim_param), repeatable
//     --input FILE          the next graph input, .npy or ONNX TensorProto .pb; the rest are random
//     --target cpu|cuda[:SM]  (default cpu)
//     --tune none|fast|full (default fast)
//     --layouts row_major|joint|nchw<B>c|nhwc  how tensors between anchors are stored
//                           (default row_major; joint: ALT's joint layout tuning; nchw16c and
//                           the like: a fixed layout wherever a template takes it)
//     --runs N              timed runs (default 10)
//     --expect FILE         the next expected output, .npy or .pb; a mismatch exits with status 1
//     --tolerance T         |got - expected| <= T * (1 + |expected|) (default 1e-4)
//     --save-outputs DIR    writes DIR/output_<i>.npy
//     --dot DIR             DIR/graph.dot (as imported) and DIR/compiled.dot (after the graph
//                           passes, fusion and layouts; one cluster per kernel), and an .svg of
//                           each when Graphviz's dot is on PATH
//     --tune-report FILE    an SVG plot of every tuned kernel's candidate times
//
// Errors (a missing or corrupt file, a bad flag, an unsupported operator or target) are printed
// on stderr with exit status 1 (2 for usage errors).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/runtime/pictures.hpp"
#include "loom/runtime/stats.hpp"
#include "npy.hpp"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model;
  loom::DimBindings dims;
  std::vector<std::string> inputs, expected;
  loom::Target target = loom::Target::host_cpu();
  loom::TuneLevel tune = loom::TuneLevel::kFast;
  loom::LayoutPolicy layouts = loom::LayoutPolicy::kRowMajor;
  std::vector<loom::LayoutStep> fixed_layout;
  int runs = 10;
  double tolerance = 1e-4;
  std::string save_outputs, dot_dir, tune_report;
};

constexpr const char* kUsage =
    "usage: loom_run MODEL.onnx [--dim NAME=VALUE]... [--input FILE]... [--target cpu|cuda[:SM]]\n"
    "                [--tune none|fast|full] [--layouts row_major|joint|nchw<B>c|nhwc]\n"
    "                [--runs N] [--expect FILE]... [--tolerance T]\n"
    "                [--save-outputs DIR] [--dot DIR] [--tune-report FILE.svg]\n";

absl::StatusOr<int64_t> parse_int(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0')
    return absl::InvalidArgumentError(flag + " takes an integer, not '" + text + "'");
  return v;
}

absl::StatusOr<loom::Target> parse_target(const std::string& text) {
  if (text == "cpu") return loom::Target::host_cpu();
  if (text == "cuda") return loom::Target::cuda(80);
  if (text.rfind("cuda:", 0) == 0) {
    std::string sm = text.substr(5);
    if (sm.rfind("sm_", 0) == 0) sm = sm.substr(3);
    LOOM_ASSIGN_OR_RETURN(int64_t arch, parse_int("--target cuda:SM", sm));
    return loom::Target::cuda(static_cast<int>(arch));
  }
  return absl::InvalidArgumentError("--target takes cpu, cuda or cuda:SM, not '" + text + "'");
}

// "row_major", "joint", "nhwc" or "nchw<B>c" (B channels per block).
absl::Status parse_layouts(const std::string& text, Options* o) {
  o->layouts = loom::LayoutPolicy::kFixed;
  if (text == "row_major") {
    o->layouts = loom::LayoutPolicy::kRowMajor;
  } else if (text == "joint") {
    o->layouts = loom::LayoutPolicy::kJoint;
  } else if (text == "nhwc") {
    o->fixed_layout = loom::channels_last();
  } else if (text.size() > 5 && text.rfind("nchw", 0) == 0 && text.back() == 'c') {
    LOOM_ASSIGN_OR_RETURN(int64_t block, parse_int("--layouts", text.substr(4, text.size() - 5)));
    if (block < 1) return absl::InvalidArgumentError("--layouts " + text + ": blocks of at least 1");
    o->fixed_layout = loom::channels_blocked(block);
  } else {
    return absl::InvalidArgumentError("--layouts takes row_major, joint, nhwc or nchw<B>c, not '" +
                                      text + "'");
  }
  return absl::OkStatus();
}

absl::StatusOr<Options> parse_args(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') return absl::InvalidArgumentError("no model given");
  Options o;
  o.model = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return absl::InvalidArgumentError(flag + ": unknown flag or missing value");
    const std::string value = argv[++i];
    if (flag == "--dim") {
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0)
        return absl::InvalidArgumentError("--dim takes NAME=VALUE");
      LOOM_ASSIGN_OR_RETURN(o.dims[value.substr(0, eq)], parse_int("--dim", value.substr(eq + 1)));
    } else if (flag == "--input") {
      o.inputs.push_back(value);
    } else if (flag == "--expect") {
      o.expected.push_back(value);
    } else if (flag == "--target") {
      LOOM_ASSIGN_OR_RETURN(o.target, parse_target(value));
    } else if (flag == "--tune") {
      if (value != "none" && value != "fast" && value != "full")
        return absl::InvalidArgumentError("--tune takes none, fast or full, not '" + value + "'");
      o.tune = value == "none"   ? loom::TuneLevel::kNone
               : value == "fast" ? loom::TuneLevel::kFast
                                 : loom::TuneLevel::kFull;
    } else if (flag == "--layouts") {
      LOOM_RETURN_IF_ERROR(parse_layouts(value, &o));
    } else if (flag == "--runs") {
      LOOM_ASSIGN_OR_RETURN(int64_t runs, parse_int(flag, value));
      o.runs = static_cast<int>(std::clamp<int64_t>(runs, 1, 1000000));
    } else if (flag == "--tolerance") {
      char* end = nullptr;
      o.tolerance = std::strtod(value.c_str(), &end);
      if (*end != '\0' || !(o.tolerance >= 0))
        return absl::InvalidArgumentError("--tolerance takes a number >= 0");
    } else if (flag == "--save-outputs") {
      o.save_outputs = value;
    } else if (flag == "--dot") {
      o.dot_dir = value;
    } else if (flag == "--tune-report") {
      o.tune_report = value;
    } else {
      return absl::InvalidArgumentError("unknown flag " + flag);
    }
  }
  return o;
}

// An array from a .npy file, or else from a serialized ONNX TensorProto (.pb).
absl::StatusOr<loom::NDArray> read_array(const std::string& path) {
  if (fs::path(path).extension() == ".npy") return loom::npy::read(path);
  return loom::onnx::read_tensor(path);
}

loom::NDArray random_array(loom::DType dtype, const std::vector<int64_t>& shape, uint64_t seed) {
  loom::NDArray a(dtype, shape);
  for (int64_t i = 0; i < a.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    const double u = static_cast<double>(seed >> 11) * 0x1p-53;
    a.set(i, dtype.is_float() ? 2 * u - 1 : static_cast<double>(static_cast<int>(u * 8)));
  }
  return a;
}

// The given input files, in the graph's input order.
absl::StatusOr<std::vector<loom::NDArray>> read_inputs(const loom::Graph& graph, const Options& o) {
  if (o.inputs.size() > graph.inputs().size())
    return absl::InvalidArgumentError(loom::str_cat(
        o.inputs.size(), " --input files for a model with ", graph.inputs().size(), " inputs"));
  std::vector<loom::NDArray> inputs;
  for (const std::string& path : o.inputs) {
    LOOM_ASSIGN_OR_RETURN(loom::NDArray a, read_array(path));
    inputs.push_back(std::move(a));
  }
  return inputs;
}

// --dim values, then the symbolic dims of the given inputs bound to their extents (a rank
// mismatch is left for run() to report).
loom::DimBindings dims_of(const loom::Graph& graph, const std::vector<loom::NDArray>& given,
                          const Options& o) {
  loom::DimBindings dims = o.dims;
  for (size_t i = 0; i < given.size(); ++i) {
    const loom::Shape& shape = graph.nodes()[static_cast<size_t>(graph.inputs()[i])].type.shape;
    if (shape.size() != given[i].shape().size()) continue;
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d].is_symbolic()) dims.emplace(shape[d].name(), given[i].shape()[d]);
  }
  return dims;
}

// Random arrays for the inputs after the given ones, whose dims must all be bound by now.
absl::Status add_random_inputs(const loom::Graph& graph, std::vector<loom::NDArray>* inputs) {
  for (size_t i = inputs->size(); i < graph.inputs().size(); ++i) {
    const loom::Node& n = graph.nodes()[static_cast<size_t>(graph.inputs()[i])];
    std::optional<std::vector<int64_t>> extents = loom::static_extents(n.type.shape);
    if (!extents)
      return absl::InvalidArgumentError("input " + n.name + " has symbolic dims " +
                                        loom::shape_to_string(n.type.shape) +
                                        ": give them with --dim");
    inputs->push_back(random_array(n.type.dtype, *extents, i + 1));
  }
  return absl::OkStatus();
}

absl::Status compare(const loom::NDArray& got, const loom::NDArray& want, double tolerance,
                     size_t index) {
  if (got.dtype() != want.dtype() || got.shape() != want.shape())
    return absl::InvalidArgumentError(loom::str_cat(
        "output ", index, " is ", got.dtype().to_string(), loom::shape_to_string(got.shape()),
        ", expected ", want.dtype().to_string(), loom::shape_to_string(want.shape())));
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get(i), w = want.get(i);
    if (std::isnan(g) && std::isnan(w)) continue;
    if (!(std::abs(g - w) <= tolerance * (1 + std::abs(w))))
      return absl::InvalidArgumentError(loom::str_cat("output ", index, " differs at element ", i,
                                                      ": got ", g, ", expected ", w));
  }
  return absl::OkStatus();
}

absl::Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!(f << text)) return absl::InternalError("cannot write " + path.string());
  return absl::OkStatus();
}

// DOT files, and their SVG drawings when Graphviz is installed (a note otherwise).
absl::Status write_pictures(const fs::path& dir, const loom::Graph& imported,
                            const loom::CompiledGraph& compiled, const std::string& model) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError("cannot create " + dir.string() + ": " + ec.message());
  const std::pair<std::string, std::string> pictures[] = {
      {"graph", loom::to_dot(imported, {.title = model + " as imported"})},
      {"compiled", loom::to_dot(compiled, model + " compiled: one cluster per kernel")}};
  bool drawn = true;
  for (const auto& [name, dot] : pictures) {
    LOOM_RETURN_IF_ERROR(write_text(dir / (name + ".dot"), dot));
    absl::Status svg = loom::render_svg(dot, (dir / (name + ".svg")).string());
    if (absl::IsUnavailable(svg))
      drawn = false;
    else
      LOOM_RETURN_IF_ERROR(svg);
  }
  std::printf("pictures: %s/{graph,compiled}.dot%s\n", dir.string().c_str(),
              drawn ? " and .svg" : " (install graphviz for SVGs)");
  return absl::OkStatus();
}

// Each kernel's median time (microseconds), name, cache entry and schedule; then the entries.
void print_kernels(const std::vector<loom::KernelInfo>& kernels, const std::vector<double>& ms) {
  std::printf("%4s %10s  %-28s %-34s %s\n", "#", "us", "kernel", "cache entry", "schedule");
  for (size_t k = 0; k < kernels.size(); ++k)
    std::printf("%4zu %10.2f  %-28s %-34s %s\n", k, k < ms.size() ? 1e3 * ms[k] : 0.0,
                kernels[k].name.c_str(),
                kernels[k].cache_key.empty() ? "-" : kernels[k].cache_key.c_str(),
                kernels[k].schedule.c_str());
  std::set<std::string> keys;
  for (const loom::KernelInfo& k : kernels)
    if (!k.cache_key.empty()) keys.insert(k.cache_key);
  const fs::path dir = loom::runtime::CacheSettings::from_environment().dir;
  std::printf("cache entries used: %zu in %s (loom_cache show KEY)\n", keys.size(),
              dir.empty() ? "memory only" : dir.string().c_str());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes as KiB, or MiB from 1 MiB on.
std::string size_text(int64_t bytes) {
  char text[32];
  if (bytes < (int64_t{1} << 20))
    std::snprintf(text, sizeof(text), "%.1f KiB", static_cast<double>(bytes) / 1024);
  else
    std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1024 * 1024));
  return text;
}

absl::Status run_model(const Options& o) {
  auto t0 = std::chrono::steady_clock::now();
  LOOM_ASSIGN_OR_RETURN(loom::Graph imported, loom::onnx::import(o.model));
  const double import_s = seconds_since(t0);
  LOOM_ASSIGN_OR_RETURN(std::vector<loom::NDArray> inputs, read_inputs(imported, o));
  // A static graph: its kernels() are the ones run, and the pictures show its extents.
  LOOM_ASSIGN_OR_RETURN(loom::Graph graph, imported.bind_dims(dims_of(imported, inputs, o)));
  LOOM_RETURN_IF_ERROR(add_random_inputs(graph, &inputs));

  t0 = std::chrono::steady_clock::now();
  loom::CompileOptions options;
  options.tune = o.tune;
  options.layouts = o.layouts;
  options.fixed_layout = o.fixed_layout;
  const loom::Stats before = loom::stats();
  LOOM_ASSIGN_OR_RETURN(loom::CompiledGraph compiled,
                        loom::Compiler(o.target).compile(graph, options));
  LOOM_ASSIGN_OR_RETURN(std::vector<loom::NDArray> outputs, compiled.run(inputs));
  const double compile_s = seconds_since(t0);
  std::printf("%s: imported in %.2f s, compiled in %.2f s (%s)\n", o.model.c_str(), import_s,
              compile_s, (loom::stats() - before).to_string().c_str());

  std::vector<double> ms;
  for (int r = 0; r < o.runs; ++r) {
    const auto r0 = std::chrono::steady_clock::now();
    LOOM_ASSIGN_OR_RETURN(outputs, compiled.run(inputs));
    ms.push_back(1e3 * seconds_since(r0));
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2], gflop = graph.flops() * 1e-9;
  std::printf("latency %.3f ms (median of %d), %.2f GFLOP, %.1f GFLOP/s\n", median, o.runs, gflop,
              gflop / (median * 1e-3));
  LOOM_ASSIGN_OR_RETURN(const loom::MemoryUse memory, compiled.memory_use());
  std::printf("memory: %s constants, %s intermediates", size_text(memory.constants).c_str(),
              size_text(memory.intermediates).c_str());
  if (o.target.is_cuda())
    std::printf(", %s for run()'s inputs and outputs on the device",
                size_text(memory.host_inputs_outputs).c_str());
  std::printf("\n");
  LOOM_ASSIGN_OR_RETURN(std::vector<double> kernel_ms, compiled.profile(inputs, o.runs));
  print_kernels(compiled.kernels(), kernel_ms);

  for (size_t i = 0; i < outputs.size(); ++i)
    std::printf("output %zu: %s%s\n", i, outputs[i].dtype().to_string().c_str(),
                loom::shape_to_string(outputs[i].shape()).c_str());
  if (!o.save_outputs.empty()) {
    std::error_code ec;
    fs::create_directories(o.save_outputs, ec);
    for (size_t i = 0; i < outputs.size(); ++i)
      LOOM_RETURN_IF_ERROR(loom::npy::write(
          (fs::path(o.save_outputs) / loom::str_cat("output_", i, ".npy")).string(), outputs[i]));
  }
  if (!o.dot_dir.empty()) LOOM_RETURN_IF_ERROR(write_pictures(o.dot_dir, graph, compiled, o.model));
  if (!o.tune_report.empty()) {
    LOOM_RETURN_IF_ERROR(
        write_text(o.tune_report, loom::tuning_report_svg(compiled.kernels(), o.model)));
    std::printf("tuning report: %s\n", o.tune_report.c_str());
  }
  if (o.expected.size() > outputs.size())
    return absl::InvalidArgumentError(
        loom::str_cat(o.expected.size(), " --expect files for ", outputs.size(), " outputs"));
  for (size_t i = 0; i < o.expected.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(loom::NDArray want, read_array(o.expected[i]));
    LOOM_RETURN_IF_ERROR(compare(outputs[i], want, o.tolerance, i));
  }
  if (!o.expected.empty()) std::printf("outputs match the %zu expected\n", o.expected.size());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf("%s", kUsage);
    return 0;
  }
  absl::StatusOr<Options> options = parse_args(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "loom_run: %s\n%s", std::string(options.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  try {
    absl::Status s = run_model(*options);
    if (!s.ok()) {
      std::fprintf(stderr, "loom_run: %s\n", s.ToString().c_str());
      return 1;
    }
  } catch (const std::exception& e) {  // out of memory on a huge model: say so, do not abort
    std::fprintf(stderr, "loom_run: %s\n", e.what());
    return 1;
  }
  return 0;
}
