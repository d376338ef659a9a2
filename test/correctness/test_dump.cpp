// LOOM_DUMP_IR writes every stage of every kernel: task, loop-IR passes, LLVM IR, assembly.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
namespace fs = std::filesystem;

namespace {
std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
// The one file in dir whose name contains stage.
fs::path find_stage(const fs::path& dir, const std::string& stage) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(stage) != std::string::npos) return e.path();
  return {};
}
}  // namespace

TEST_CASE("LOOM_DUMP_IR shows every stage of a kernel", "[dump]") {
  fs::path dir = fs::temp_directory_path() / ("loom_dump_test_" + std::to_string(loom::testing::test_seed()));
  fs::remove_all(dir);
  ::setenv("LOOM_DUMP_IR", dir.c_str(), 1);
  Graph g;
  g.output(g.input("x", {7, 31}).softmax(0));  // not the last axis: the default schedule
  auto compiled = Compiler().compile(g);
  ::unsetenv("LOOM_DUMP_IR");
  REQUIRE(compiled.ok());
  REQUIRE(compiled->kernels().size() == 1);
  fs::path kernel = dir / compiled->kernels()[0].name;
  REQUIRE(fs::is_directory(kernel));
  CHECK(read_file(find_stage(kernel, "task")).find("= max<f32>") != std::string::npos);
  CHECK(read_file(find_stage(kernel, "default-schedule")).find("for (") != std::string::npos);
  CHECK(!find_stage(kernel, "flatten-layouts").empty());
  CHECK(!find_stage(kernel, "simplify").empty());
  fs::path graph = dir / "graph";
  CHECK(read_file(find_stage(graph, "-llvm.ll")).find("define") != std::string::npos);
  CHECK(read_file(find_stage(graph, "llvm-opt.ll")).find("define") != std::string::npos);
  CHECK(!read_file(find_stage(graph, "asm.s")).empty());
  fs::remove_all(dir);

  // Off again: nothing is written.
  auto again = Compiler().compile(g);
  REQUIRE(again.ok());
  CHECK(!fs::exists(dir));
}
