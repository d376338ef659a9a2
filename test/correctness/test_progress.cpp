// Tuning progress: one summary line on stderr when it is not a terminal, nothing when off or
// when nothing was measured.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;

namespace {

// stderr of f(), captured through a temporary file.
template <typename F>
std::string capture_stderr(F f) {
  char path[] = "/tmp/loom_stderr_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  f();
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path);
  return text.str();
}

Graph small_graph() {
  Graph g;
  Tensor x = g.input("x", {5, 33});
  g.output(x.matmul(g.constant("w", random_array(DType::f32(), {33, 17}))).softmax(-1));
  return g;
}

}  // namespace

TEST_CASE("tuning progress: a summary line when kernels are measured", "[progress]") {
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.use_cache = false;
  Graph g = small_graph();  // outside the capture: the first random input reports the test seed
  std::string err = capture_stderr([&] { REQUIRE(Compiler().compile(g, options).ok()); });
  INFO(err);
  // Two templated kernels (the matmul and the softmax), both tuned now.
  REQUIRE(err.find("loom: 2 kernels ready in ") != std::string::npos);
  REQUIRE(err.find("2 tuned, 0 from the cache") != std::string::npos);
}

TEST_CASE("tuning progress: silent when off, untuned, or served by the cache", "[progress]") {
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.use_cache = false;
  options.report_progress = false;
  Graph g = small_graph();  // outside the capture: the first random input reports the test seed
  REQUIRE(capture_stderr([&] { REQUIRE(Compiler().compile(g, options).ok()); }).empty());

  options.report_progress = true;
  options.tune = TuneLevel::kNone;
  REQUIRE(capture_stderr([&] { REQUIRE(Compiler().compile(g, options).ok()); }).empty());

  // A warm cache measures nothing: no line.
  options.tune = TuneLevel::kFast;
  options.use_cache = true;
  options.use_disk_cache = false;
  REQUIRE(Compiler().compile(g, options).ok());
  REQUIRE(capture_stderr([&] { REQUIRE(Compiler().compile(g, options).ok()); }).empty());
}
