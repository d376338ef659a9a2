// Broken kernel cache entries (truncated object, corrupt JSON, another loom version, checksum
// mismatch) are reported once and rebuilt, never trusted; an unwritable cache dir leaves the
// cache in memory with one warning. compile() succeeds and computes the right values throughout.

#include <functional>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::cold_cache_options;
using loom::testing::random_array;
using loom::testing::require_close;
using loom::testing::StderrCapture;
using loom::testing::TempDir;
namespace fs = std::filesystem;
namespace disk_cache = loom::runtime::disk_cache;

namespace {

// A templated matmul with a packed constant weight, and a default-schedule kernel: two entries.
Graph two_entry_graph(const NDArray& w) {
  Graph g;
  Tensor x = g.input("x", {19, w.shape()[0]});
  g.output(x.matmul(g.constant("w", w)));
  g.output(x.softmax(0));
  return g;
}

void check_outputs(const Graph& g, const CompiledGraph& c) {
  NDArray x = random_array(DType::f32(), {19, 27});
  auto out = c.run({x});
  REQUIRE(out.ok());
  std::vector<NDArray> expected = loom::testing::reference_run(g, {x});
  for (size_t i = 0; i < out->size(); ++i) require_close((*out)[i], expected[i], 1e-4, 1e-5);
}

std::string read(const fs::path& p) {
  return StderrCapture::read_text(p);
}

}  // namespace

TEST_CASE("corrupt, truncated and foreign cache entries are reported and rebuilt",
          "[cache][error]") {
  using Corruption = std::pair<const char*, std::function<void(const fs::path& entry)>>;
  const std::vector<Corruption> corruptions = {
      {"truncated object",
       [](const fs::path& e) {
         std::string o = read(e / "kernel.o");
         loom::testing::write_text(e / "kernel.o", o.substr(0, o.size() / 2));
       }},
      {"corrupt JSON",
       [](const fs::path& e) {
         std::string r = read(e / "record.json");
         loom::testing::write_text(e / "record.json", r.substr(0, r.size() / 3));
       }},
      {"another loom version",
       [](const fs::path& e) {
         std::string r = read(e / "record.json");
         const std::string field = "\"loom_version\": \"" LOOM_CACHE_VERSION_STRING "\"";
         size_t at = r.find(field);
         REQUIRE(at != std::string::npos);
         r.replace(at, field.size(), "\"loom_version\": \"0.0.1-elsewhere\"");
         loom::testing::write_text(e / "record.json", r);
       }},
      {"checksum mismatch",
       [](const fs::path& e) {
         std::string o = read(e / "kernel.o");
         o[o.size() / 2] = static_cast<char>(o[o.size() / 2] ^ 0x5a);
         loom::testing::write_text(e / "kernel.o", o);
       }},
  };
  for (const auto& [what, corrupt] : corruptions) {
    SECTION(what) {
      TempDir dir;
      NDArray w = random_array(DType::f32(), {27, 21});
      Graph g = two_entry_graph(w);
      REQUIRE(Compiler().compile(g, cold_cache_options(dir.path())).ok());
      std::vector<disk_cache::EntryInfo> entries = disk_cache::list(dir.path());
      REQUIRE(entries.size() == 2);
      // Break the templated entry (the one with a pack func), keep the other's bytes.
      const disk_cache::EntryInfo& broken =
          entries[0].schedule == "default" ? entries[1] : entries[0];
      const disk_cache::EntryInfo& intact =
          entries[0].schedule == "default" ? entries[0] : entries[1];
      const fs::path other = dir.path() / intact.key;
      const std::string other_object = read(other / "kernel.o");
      corrupt(dir.path() / broken.key);

      StderrCapture capture;
      Stats s = stats();
      auto compiled = Compiler().compile(g, cold_cache_options(dir.path()));
      Stats d = stats() - s;
      std::string err = capture.text();
      INFO(what << ": " << d.to_string() << "\nstderr: " << err);
      REQUIRE(compiled.ok());
      CHECK(d.cache_misses == 1);
      CHECK(d.cache_disk_hits == 1);
      CHECK(err.find("kernel cache entry") != std::string::npos);
      CHECK(err.find(broken.key) != std::string::npos);
      check_outputs(g, *compiled);
      CHECK(read(other / "kernel.o") == other_object);

      // Rebuilt: the next fresh start finds both entries intact, and says nothing.
      StderrCapture quiet;
      Stats s2 = stats();
      auto again = Compiler().compile(g, cold_cache_options(dir.path()));
      REQUIRE(again.ok());
      CHECK((stats() - s2).cache_disk_hits == 2);
      CHECK(quiet.text().empty());
      check_outputs(g, *again);
    }
  }
}

TEST_CASE("an unwritable cache directory leaves the cache in memory, with one warning",
          "[cache][error]") {
  TempDir parent;
  // A directory below a regular file cannot be created, whoever runs the test.
  loom::testing::write_text(parent.path() / "file", "not a directory");
  const fs::path dir = parent.path() / "file" / "cache";

  NDArray w = random_array(DType::f32(), {27, 21});
  Graph g = two_entry_graph(w);
  StderrCapture capture;
  auto first = Compiler().compile(g, cold_cache_options(dir));
  NDArray w2 = random_array(DType::f32(), {27, 22});
  CompileOptions options;
  options.cache_dir = dir.string();
  auto second = Compiler().compile(two_entry_graph(w2), options);  // new keys: more failed writes
  Stats s = stats();
  auto third = Compiler().compile(g, options);
  Stats d = stats() - s;
  std::string err = capture.text();
  INFO(err);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  REQUIRE(third.ok());
  CHECK(d.cache_memory_hits == 2);
  CHECK(d.llvm_compiles == 0);
  size_t at = err.find("cannot write the kernel cache");
  REQUIRE(at != std::string::npos);
  CHECK(err.find("cannot write the kernel cache", at + 1) == std::string::npos);
  check_outputs(g, *third);
}
