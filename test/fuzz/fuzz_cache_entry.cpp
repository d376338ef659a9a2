// libFuzzer target: arbitrary bytes as a kernel cache entry on disk (record.json, then a NUL
// byte, then kernel.o). Reading, listing and describing it, and a cache lookup that must replace
// it when it is unusable, return an entry or an error; never crash, never trust a bad record.
// A record whose object_bytes / object_checksum are "auto" gets the object's true size and
// checksum, so that inputs also reach the paths behind the integrity checks.

#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "loom/core/hash.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "nlohmann/json.hpp"

namespace fs = std::filesystem;
namespace runtime = loom::runtime;
using nlohmann::json;

namespace {

const fs::path& cache_dir() {
  static const fs::path dir = [] {
    std::string pattern = (fs::temp_directory_path() / "loom-fuzz-cache-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) std::abort();
    return fs::path(pattern);
  }();
  return dir;
}

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// The record's own key parts when it has them as strings (so version and target checks pass and
// the fuzzer reaches the object checks), else fixed ones; "auto" integrity fields filled in.
runtime::CacheKeyParts prepare(std::string& record, const std::string& object) {
  runtime::CacheKeyParts parts{"task", "target", "backend", "version"};
  json j = json::parse(record, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return parts;
  auto take = [&](const char* field, std::string& out) {
    if (j.contains(field) && j[field].is_string()) out = j[field].get<std::string>();
  };
  take("task", parts.task);
  take("target", parts.target);
  take("backend_version", parts.backend_version);
  take("loom_version", parts.loom_version);
  if (j.contains("object_bytes") && j["object_bytes"] == "auto") j["object_bytes"] = object.size();
  if (j.contains("object_checksum") && j["object_checksum"] == "auto") {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx",
                  static_cast<unsigned long long>(
                      loom::StableHasher().bytes(object.data(), object.size()).digest()));
    j["object_checksum"] = std::string("fnv1a64:") + hex;
  }
  record = j.dump();
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  std::string record = input.substr(0, nul);
  const std::string object = nul == std::string::npos ? "" : input.substr(nul + 1);
  const runtime::CacheKeyParts parts = prepare(record, object);

  const fs::path& dir = cache_dir();
  const std::string key = runtime::cache_key(parts);
  std::error_code ec;
  fs::remove_all(dir / key, ec);
  fs::create_directories(dir / key, ec);
  write(dir / key / "record.json", record);
  write(dir / key / "kernel.o", object);

  absl::StatusOr<runtime::CachedKernel> entry = runtime::disk_cache::read(dir, key, parts);
  if (entry.ok() && entry->object.bytes != object) std::abort();  // only a verified object loads
  if (!entry.ok() && entry.status().message().empty()) std::abort();
  runtime::disk_cache::list(dir);
  (void)runtime::disk_cache::describe(dir, key);

  // Through the cache: an unusable entry is replaced by the build's; a usable one is returned.
  runtime::KernelCache cache(1);
  runtime::CacheSettings settings;
  settings.dir = dir;
  bool built = false;
  runtime::KernelCache::Result r = cache.get(key, parts, settings, [&]() {
    built = true;
    runtime::CachedKernel k;
    k.kernel_name = "rebuilt";
    k.object.bytes = "object";
    return absl::StatusOr<runtime::CachedKernel>(std::move(k));
  });
  if (!r.ok() || built == entry.ok()) std::abort();
  if (built) {
    absl::StatusOr<runtime::CachedKernel> again = runtime::disk_cache::read(dir, key, parts);
    if (!again.ok() || again->kernel_name != "rebuilt") std::abort();
  }
  return 0;
}
