// Writes per-stage IR dumps under $LOOM_DUMP_IR.

#include "loom/core/dump.hpp"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

namespace loom {
namespace {

// Read on every call (getenv is cheap next to compiling) so an engine or a test can turn dumping
// on and off while the process runs.
const char* dump_dir() {
  const char* d = std::getenv("LOOM_DUMP_IR");
  return d && *d ? d : nullptr;
}

std::string sanitize(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') ? c : '_';
  return out.empty() ? "unnamed" : out;
}

}  // namespace

bool dump_enabled() { return dump_dir() != nullptr; }

void dump_stage(const std::string& group, const std::string& stage, const std::string& text,
                const std::string& extension) {
  if (!dump_enabled()) return;
  static std::mutex mu;
  static std::map<std::string, int> counters;
  static std::atomic<bool> warned{false};
  std::lock_guard<std::mutex> lock(mu);
  namespace fs = std::filesystem;
  fs::path dir = fs::path(dump_dir()) / sanitize(group);
  std::error_code ec;
  fs::create_directories(dir, ec);
  int n = counters[group]++;
  char prefix[16];
  std::snprintf(prefix, sizeof(prefix), "%02d-", n);
  fs::path file = dir / (prefix + sanitize(stage) + "." + extension);
  std::ofstream out(file);
  out << text;
  if (!out && !warned.exchange(true))
    std::fprintf(stderr, "loom: cannot write IR dump %s\n", file.string().c_str());
}

}  // namespace loom
