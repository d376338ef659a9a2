// Kernel cache faults beyond broken entries (test_cache_errors.cpp): a directory made read-only,
// a disk that fills up mid-write, and entries compiled for another CPU. Each compile succeeds with
// correct results, says what happened once, and leaves the entries already there intact.

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <map>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "nlohmann/json.hpp"
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

// A templated matmul (constant weights, packed) and a default-schedule softmax: two entries.
Graph two_entry_graph(int64_t k, int64_t n) {
  Graph g;
  Tensor x = g.input("x", {19, k});
  g.output(x.matmul(g.constant("w", random_array(DType::f32(), {k, n}))));
  g.output(x.softmax(0));
  return g;
}

void check_outputs(const Graph& g, const CompiledGraph& c) {
  const int64_t k = g.nodes()[g.inputs()[0]].type.shape[1].value();
  NDArray x = random_array(DType::f32(), {19, k});
  auto out = c.run({x});
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  std::vector<NDArray> expected = loom::testing::reference_run(g, {x});
  for (size_t i = 0; i < out->size(); ++i) require_close((*out)[i], expected[i], 1e-4, 1e-5);
}

// Every file of every entry in dir, by path, with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "record.json")  // its mtime is its last use
      files[fs::relative(e.path(), dir).string()] = StderrCapture::read_text(e.path());
    else if (e.is_regular_file())
      files[fs::relative(e.path(), dir).string()] = "(record)";
  return files;
}

bool has_temporaries(const fs::path& dir) {
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) return true;
  return false;
}

}  // namespace

TEST_CASE("cache fault: a read-only cache directory keeps its entries and warns once",
          "[cache][error]") {
  if (::geteuid() == 0) {
    // Root writes through any mode bits; test_cache_errors.cpp's directory below a regular file
    // covers an unwritable directory for root.
    WARN("running as root: chmod cannot make a directory unwritable; skipped");
    return;
  }
  TempDir dir;
  Graph first = two_entry_graph(27, 21);
  REQUIRE(Compiler().compile(first, cold_cache_options(dir.path())).ok());
  const auto before = snapshot(dir.path());
  REQUIRE(::chmod(dir.path().c_str(), 0500) == 0);
  StderrCapture capture;
  Graph second = two_entry_graph(27, 23);
  auto compiled = Compiler().compile(second, cold_cache_options(dir.path()));
  std::string err = capture.text();
  ::chmod(dir.path().c_str(), 0700);
  INFO(err);
  REQUIRE(compiled.ok());
  check_outputs(second, *compiled);
  CHECK_THAT(err, Catch::Contains("cannot write the kernel cache in " + dir.path().string()));
  CHECK(snapshot(dir.path()) == before);
}

TEST_CASE("cache fault: a disk that fills up mid-write fails cleanly and keeps earlier entries",
          "[cache][error]") {
  TempDir dir;
  Graph first = two_entry_graph(27, 21);
  REQUIRE(Compiler().compile(first, cold_cache_options(dir.path())).ok());
  const auto before = snapshot(dir.path());
  REQUIRE(before.size() == 6);

  // A file size limit stands in for a full disk: every write past 512 bytes fails (EFBIG), so
  // the new entries' object files cannot be written. SIGXFSZ would kill the process instead.
  struct rlimit saved;
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  StderrCapture capture;
  struct rlimit tiny = saved;
  tiny.rlim_cur = 512;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &tiny) == 0);
  Graph second = two_entry_graph(27, 23);
  auto compiled = Compiler().compile(second, cold_cache_options(dir.path()));
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  std::string err = capture.text();
  INFO(err);

  REQUIRE(compiled.ok());
  check_outputs(second, *compiled);
  CHECK_THAT(err, Catch::Contains("cannot write the kernel cache in " + dir.path().string()));
  CHECK_THAT(err, Catch::Contains("cannot write"));
  // No half-written entry and no leftover temporary directory; the earlier entries are whole.
  CHECK_FALSE(has_temporaries(dir.path()));
  CHECK(snapshot(dir.path()) == before);
  for (const disk_cache::EntryInfo& e : disk_cache::list(dir.path())) CHECK(!e.kernel_name.empty());
  // And they still load: a fresh memory level finds both on disk.
  Stats s = stats();
  auto again = Compiler().compile(first, cold_cache_options(dir.path()));
  REQUIRE(again.ok());
  CHECK((stats() - s).cache_disk_hits == 2);
  check_outputs(first, *again);
}

TEST_CASE("cache fault: entries for another CPU are never used for this one", "[cache][error]") {
  const Target host = Target::host_cpu();
  if (host.triple().rfind("x86_64", 0) != 0) {
    WARN("not an x86-64 host; skipped");
    return;
  }
  TempDir dir;
  Graph g = two_entry_graph(27, 21);
  // Baseline x86-64 (no AVX): a different fingerprint, so different keys, code this host can run.
  const Target baseline = Target::cpu(host.triple(), "x86-64", {"sse2"});
  REQUIRE(baseline.fingerprint() != host.fingerprint());
  auto other = Compiler(baseline).compile(g, cold_cache_options(dir.path()));
  REQUIRE(other.ok());
  check_outputs(g, *other);
  const auto baseline_files = snapshot(dir.path());
  REQUIRE(disk_cache::list(dir.path()).size() == 2);

  // The host finds nothing for itself: it builds its own two entries beside them.
  Stats s = stats();
  auto native = Compiler(host).compile(g, cold_cache_options(dir.path()));
  Stats d = stats() - s;
  REQUIRE(native.ok());
  CHECK(d.cache_disk_hits == 0);
  CHECK(d.cache_misses == 2);
  check_outputs(g, *native);
  REQUIRE(disk_cache::list(dir.path()).size() == 4);

  // An entry of the host's key whose record says it was compiled for the baseline (a cache
  // directory copied between machines, or a forged one) is reported and rebuilt, not run.
  std::string host_key;
  for (const disk_cache::EntryInfo& e : disk_cache::list(dir.path()))
    if (!baseline_files.count(e.key + "/kernel.o") && e.schedule != "default") host_key = e.key;
  REQUIRE(!host_key.empty());
  const fs::path record = dir.path() / host_key / "record.json";
  std::string text = StderrCapture::read_text(record);
  const std::string field = "\"target\": \"";
  size_t at = text.find(field);
  REQUIRE(at != std::string::npos);
  size_t end = text.find('"', at + field.size());
  text.replace(at + field.size(), end - at - field.size(), "cpu:" + host.triple() + ":x86-64:+sse2");
  loom::testing::write_text(record, text);
  const auto untouched = snapshot(dir.path());

  StderrCapture capture;
  s = stats();
  auto rebuilt = Compiler(host).compile(g, cold_cache_options(dir.path()));
  d = stats() - s;
  std::string err = capture.text();
  INFO(err);
  REQUIRE(rebuilt.ok());
  CHECK(d.cache_misses == 1);
  CHECK(d.cache_disk_hits == 1);
  CHECK_THAT(err, Catch::Contains(host_key));
  CHECK_THAT(err, Catch::Contains("compiled for cpu:" + host.triple() + ":x86-64"));
  check_outputs(g, *rebuilt);
  // Every other entry is byte for byte as it was.
  auto now = snapshot(dir.path());
  for (const auto& [path, bytes] : untouched)
    if (path.rfind(host_key, 0) != 0) CHECK(now.at(path) == bytes);
}

TEST_CASE("cache fault: record fields of the wrong type make the entry malformed",
          "[cache][error]") {
  TempDir dir;
  Graph g = two_entry_graph(27, 21);
  REQUIRE(Compiler().compile(g, cold_cache_options(dir.path())).ok());
  std::string key;
  for (const disk_cache::EntryInfo& e : disk_cache::list(dir.path()))
    if (e.schedule != "default") key = e.key;
  REQUIRE(!key.empty());
  const fs::path record = dir.path() / key / "record.json";
  const nlohmann::json original = nlohmann::json::parse(StderrCapture::read_text(record));
  // The entry's own key parts: only the field under test is wrong.
  runtime::CacheKeyParts parts{original["task"], original["target"], original["backend_version"],
                               original["loom_version"]};
  REQUIRE(disk_cache::read(dir.path(), key, parts).ok());
  // Numbers where a float would have been converted to an int (undefined for 1e300), negative
  // sizes, and packed buffers of impossible shapes.
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"object_bytes", 1e300},
      {"object_bytes", -5},
      {"format", 1.5},
      {"config", {{"mc", 1e300}}},
      {"packed", {{{"input", 1}, {"shape", {-3}}}}},
      {"packed", {{{"input", 1e20}, {"shape", {1}}}}},
      {"packed", {{{"input", 1}, {"shape", {int64_t{1} << 40, int64_t{1} << 40}}}}}};
  for (const auto& [field, value] : cases) {
    nlohmann::json broken = original;
    broken[field] = value;
    loom::testing::write_text(record, broken.dump(2));
    absl::Status s = disk_cache::read(dir.path(), key, parts).status();
    INFO(field << " = " << value.dump() << ": " << s.ToString());
    CHECK((s.code() == absl::StatusCode::kDataLoss ||
           s.code() == absl::StatusCode::kFailedPrecondition));
    CHECK_THAT(std::string(s.message()), Catch::Contains("record"));
  }
}
