// onnx_conformance: runs the ONNX backend node tests (Debian's libonnx-testdata) through loom:
// import model.onnx, compile for this CPU, run every test_data_set_* and compare with its
// expected outputs. Prints one line per test with --verbose, and a summary line:
//
//   onnx node tests: P passed, F failed, U unsupported, of T
//
// "unsupported" is an import or compile that reports UNIMPLEMENTED (an operator, attribute or
// dtype loom does not have); "failed" is any other error or a wrong result. No test is special-
// cased. Exits 1 if fewer than --min-pass tests pass, else 0.
//
//   onnx_conformance [--data DIR] [--filter SUBSTRING] [--verbose] [--min-pass N]

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"

namespace fs = std::filesystem;

namespace {

enum class Outcome { kPass, kFail, kUnsupported };

// |got - want| <= atol + rtol * |want| (ONNX's backend tests use rtol 1e-3, atol 1e-7; atol is
// 1e-5 here for f32 kernels that use fast exp/erf); NaN must match NaN; ints and bools exact.
std::string compare(const loom::NDArray& got, const loom::NDArray& want) {
  if (got.dtype() != want.dtype())
    return "dtype " + got.dtype().to_string() + ", expected " + want.dtype().to_string();
  if (got.shape() != want.shape())
    return "shape " + loom::shape_to_string(got.shape()) + ", expected " +
           loom::shape_to_string(want.shape());
  const bool exact = !want.dtype().is_float();
  const double rtol = want.dtype() == loom::DType::f32() ? 1e-3 : 1e-2, atol = 1e-5;
  for (int64_t i = 0; i < want.numel(); ++i) {
    double g = got.get(i), w = want.get(i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && g == w) continue;
    bool ok = exact ? g == w : std::fabs(g - w) <= atol + rtol * std::fabs(w);
    if (!ok) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "element %lld: %.9g, expected %.9g", static_cast<long long>(i), g, w);
      return buf;
    }
  }
  return "";
}

std::vector<fs::path> numbered(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  for (int k = 0;; ++k) {
    fs::path p = dir / (prefix + std::to_string(k) + ".pb");
    if (!fs::exists(p)) break;
    out.push_back(p);
  }
  return out;
}

Outcome run_test(const fs::path& dir, std::string* why) {
  auto unsupported = [&](const absl::Status& s) {
    *why = s.ToString();
    return s.code() == absl::StatusCode::kUnimplemented ? Outcome::kUnsupported : Outcome::kFail;
  };
  absl::StatusOr<loom::Graph> g = loom::onnx::import((dir / "model.onnx").string());
  if (!g.ok()) return unsupported(g.status());
  loom::CompileOptions options;
  options.use_disk_cache = false;  // the user's cache is no place for a thousand tiny tests
  options.report_progress = false;
  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(*g, options);
  if (!compiled.ok()) return unsupported(compiled.status());
  int sets = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_directory() || entry.path().filename().string().rfind("test_data_set_", 0) != 0)
      continue;
    std::vector<loom::NDArray> inputs, expected;
    for (const fs::path& p : numbered(entry.path(), "input_")) {
      absl::StatusOr<loom::NDArray> t = loom::onnx::read_tensor(p.string());
      if (!t.ok()) return unsupported(t.status());
      inputs.push_back(*std::move(t));
    }
    for (const fs::path& p : numbered(entry.path(), "output_")) {
      absl::StatusOr<loom::NDArray> t = loom::onnx::read_tensor(p.string());
      if (!t.ok()) return unsupported(t.status());
      expected.push_back(*std::move(t));
    }
    absl::StatusOr<std::vector<loom::NDArray>> got = compiled->run(inputs);
    if (!got.ok()) return unsupported(got.status());
    if (got->size() != expected.size()) {
      *why = "produced " + std::to_string(got->size()) + " outputs, expected " +
             std::to_string(expected.size());
      return Outcome::kFail;
    }
    for (size_t k = 0; k < expected.size(); ++k) {
      std::string diff = compare((*got)[k], expected[k]);
      if (!diff.empty()) {
        *why = entry.path().filename().string() + " output " + std::to_string(k) + ": " + diff;
        return Outcome::kFail;
      }
    }
    ++sets;
  }
  if (sets == 0) {
    *why = "no test_data_set_*";
    return Outcome::kFail;
  }
  return Outcome::kPass;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = "/usr/share/libonnx-testdata/data/node", filter;
  bool verbose = false;
  int min_pass = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) data = argv[++i];
    else if (a == "--filter" && i + 1 < argc) filter = argv[++i];
    else if (a == "--verbose") verbose = true;
    else if (a == "--min-pass" && i + 1 < argc) min_pass = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: onnx_conformance [--data DIR] [--filter SUBSTRING] [--verbose] [--min-pass N]\n");
      return 2;
    }
  }
  std::error_code ec;
  if (!fs::is_directory(data, ec)) {
    std::fprintf(stderr, "onnx_conformance: %s is not a directory (install libonnx-testdata)\n", data.c_str());
    return 2;
  }
  std::vector<fs::path> tests;
  for (const auto& e : fs::directory_iterator(data))
    if (e.is_directory() && fs::exists(e.path() / "model.onnx") &&
        e.path().filename().string().find(filter) != std::string::npos)
      tests.push_back(e.path());
  std::sort(tests.begin(), tests.end());
  int pass = 0, fail = 0, unsupported = 0;
  for (const fs::path& t : tests) {
    std::string why;
    Outcome o = run_test(t, &why);
    (o == Outcome::kPass ? pass : o == Outcome::kFail ? fail : unsupported)++;
    if (verbose || (o == Outcome::kFail && !filter.empty()))
      std::printf("%-60s %s %s\n", t.filename().c_str(),
                  o == Outcome::kPass ? "pass" : o == Outcome::kFail ? "FAIL" : "unsupported",
                  why.c_str());
  }
  std::printf("onnx node tests: %d passed, %d failed, %d unsupported, of %zu\n", pass, fail,
              unsupported, tests.size());
  return pass >= min_pass ? 0 : 1;
}
