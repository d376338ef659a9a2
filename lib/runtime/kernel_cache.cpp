// The kernel cache's memory level (single flight, LRU) and disk level: <dir>/<key>/ holds
// record.json (task, config, timings, versions, object checksum), kernel.o and source.txt.

#include "loom/runtime/kernel_cache.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "loom/core/hash.hpp"
#include "loom/core/status.hpp"
#include "loom/runtime/stats.hpp"
#include "nlohmann/json.hpp"

namespace loom::runtime {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kFormat = 1;  // of record.json; a record of another format is foreign
constexpr const char* kRecord = "record.json";
constexpr const char* kObject = "kernel.o";
constexpr const char* kSource = "source.txt";

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string checksum(const std::string& bytes) {
  return "fnv1a64:" + hex64(StableHasher().bytes(bytes.data(), bytes.size()).digest());
}

// Prints each distinct message once per process: a broken entry is worth one line, not one
// per kernel that meets it.
void report_once(const std::string& message) {
  static std::mutex mu;
  static std::set<std::string> reported;
  std::lock_guard<std::mutex> lock(mu);
  if (reported.insert(message).second) std::fprintf(stderr, "loom: %s\n", message.c_str());
}

absl::StatusOr<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + p.string());
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read " + p.string());
  return s.str();
}

absl::Status write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError("cannot create " + p.string());
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError("cannot write " + p.string());
  return absl::OkStatus();
}

// A name no other writer (thread or process) uses: pid, a per-process counter.
std::string unique_suffix(const std::string& key) {
  static std::atomic<uint64_t> next{0};
  return str_cat(key, "-", ::getpid(), "-", next++);
}

json config_json(const tune::Config& c) {
  json j = json::object();
  for (const auto& [name, value] : c.values()) j[name] = value;
  return j;
}

// A record field that must be an integer in [lo, hi]. nlohmann's get<int>() would also take a
// float (1e300 cast to an int is undefined behaviour) or a bool; a record is never trusted.
struct BadField : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int64_t integer(const json& j, int64_t lo = std::numeric_limits<int64_t>::min(),
                int64_t hi = std::numeric_limits<int64_t>::max()) {
  if (!j.is_number_integer() ||
      (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
      (!j.is_number_unsigned() && (j.get<int64_t>() < lo || j.get<int64_t>() > hi)))
    throw BadField(str_cat("expected an integer in [", lo, ", ", hi, "], got ", j.dump()));
  return j.get<int64_t>();
}

tune::Config config_from(const json& j) {
  tune::Config c;
  for (const auto& [name, value] : j.items()) c.set(name, integer(value));
  return c;
}

json record_json(const std::string& key, const CachedKernel& k) {
  json measurements = json::array();
  for (const tune::Measurement& m : k.measurements)
    measurements.push_back({{"config", config_json(m.config)}, {"median_ms", m.median_ms}});
  json refused = json::array();
  for (const tune::Refusal& r : k.refused)
    refused.push_back({{"config", config_json(r.config)}, {"reason", r.reason}});
  json packed = json::array();
  for (const CachedKernel::Packed& p : k.packed)
    packed.push_back({{"input", p.input}, {"shape", p.shape}});
  return {{"format", kFormat},
          {"key", key},
          {"kernel", k.kernel_name},
          {"schedule", k.schedule},
          {"task", k.parts.task},
          {"target", k.parts.target},
          {"backend_version", k.parts.backend_version},
          {"loom_version", k.parts.loom_version},
          {"config", config_json(k.config)},
          {"measurements", measurements},
          {"refused", refused},
          {"tune_seconds", k.tune_seconds},
          {"packed", packed},
          {"symbols", k.object.symbols},
          {"object_file", kObject},
          {"object_bytes", k.object.bytes.size()},
          {"object_checksum", checksum(k.object.bytes)}};
}

// The record's fields (object and source are filled by the caller). Malformed JSON, missing
// fields and wrong types are DataLoss; nlohmann's exceptions stop here.
absl::StatusOr<CachedKernel> parse_record(const std::string& text, json* record) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::DataLossError("record.json is not a JSON object (truncated or corrupt)");
  try {
    CachedKernel k;
    if (!j.at("format").is_number_integer() || j.at("format").get<int64_t>() != kFormat)
      return absl::FailedPreconditionError(
          str_cat("record format ", j.at("format").dump(), ", this loom reads ", kFormat));
    k.parts.task = j.at("task").get<std::string>();
    k.parts.target = j.at("target").get<std::string>();
    k.parts.backend_version = j.at("backend_version").get<std::string>();
    k.parts.loom_version = j.at("loom_version").get<std::string>();
    k.kernel_name = j.at("kernel").get<std::string>();
    k.schedule = j.at("schedule").get<std::string>();
    k.config = config_from(j.at("config"));
    for (const json& m : j.at("measurements"))
      k.measurements.push_back({config_from(m.at("config")), m.at("median_ms").get<double>()});
    if (j.contains("refused"))  // absent from records written before refusals were kept
      for (const json& r : j.at("refused"))
        k.refused.push_back({config_from(r.at("config")), r.at("reason").get<std::string>()});
    k.tune_seconds = j.at("tune_seconds").get<double>();
    for (const json& p : j.at("packed")) {
      CachedKernel::Packed packed{static_cast<int>(integer(p.at("input"), 0, 1 << 20)), {}};
      // Extents whose byte count fits in int64 (the loader allocates the packed buffer).
      int64_t bytes = 8;
      for (const json& e : p.at("shape")) {
        const int64_t extent = integer(e, 0, std::numeric_limits<int64_t>::max() / bytes);
        bytes = std::max<int64_t>(bytes * extent, 8);
        packed.shape.push_back(extent);
      }
      k.packed.push_back(std::move(packed));
    }
    k.object.symbols = j.at("symbols").get<std::vector<std::string>>();
    integer(j.at("object_bytes"), 0);
    j.at("object_checksum").get<std::string>();
    *record = std::move(j);
    return k;
  } catch (const json::exception& e) {
    return absl::DataLossError(str_cat("record.json is malformed: ", e.what()));
  } catch (const BadField& e) {
    return absl::DataLossError(str_cat("record.json is malformed: ", e.what()));
  }
}

// Entry directories of dir (not the temporary and trash directories writers use).
std::vector<fs::path> entry_dirs(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] != '.' && it->is_directory(ec)) out.push_back(it->path());
  }
  return out;
}

uint64_t entry_bytes(const fs::path& entry) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(entry, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    uint64_t size = it->file_size(size_ec);
    if (!size_ec) total += size;
  }
  return total;
}

fs::file_time_type last_use(const fs::path& entry) {
  std::error_code ec;
  fs::file_time_type t = fs::last_write_time(entry / kRecord, ec);
  if (ec) t = fs::last_write_time(entry, ec);
  return ec ? fs::file_time_type::min() : t;
}

// Directories where a write failed: the cache stays in memory there, after one warning.
bool is_unwritable(const fs::path& dir, bool mark) {
  static std::mutex mu;
  static std::set<std::string> dirs;
  std::lock_guard<std::mutex> lock(mu);
  if (mark) dirs.insert(dir.string());
  return dirs.count(dir.string()) != 0;
}

KernelCache::Result load_or_build(const std::string& key, const CacheKeyParts& parts,
                                  const CacheSettings& settings, const KernelCache::Build& build) {
  if (!settings.dir.empty()) {
    absl::StatusOr<CachedKernel> entry = disk_cache::read(settings.dir, key, parts);
    if (entry.ok()) {
      std::error_code ec;  // the record's mtime is the entry's last use, for LRU eviction
      fs::last_write_time(settings.dir / key / kRecord, fs::file_time_type::clock::now(), ec);
      count(Counter::kCacheDiskHits);
      return std::make_shared<const CachedKernel>(std::move(*entry));
    }
    if (!absl::IsNotFound(entry.status())) {
      report_once(str_cat("kernel cache entry ", (settings.dir / key).string(),
                          " is unusable and is rebuilt: ", entry.status().message()));
      disk_cache::remove(settings.dir, key);
    }
  }
  count(Counter::kCacheMisses);
  absl::StatusOr<CachedKernel> built = build();
  if (!built.ok()) return built.status();
  built->parts = parts;
  if (!settings.dir.empty() && !is_unwritable(settings.dir, false)) {
    if (absl::Status s = disk_cache::write(settings.dir, key, *built); !s.ok()) {
      is_unwritable(settings.dir, true);
      report_once(str_cat("cannot write the kernel cache in ", settings.dir.string(), " (",
                          s.message(), "); kernels are cached in memory only"));
    } else if (settings.max_bytes > 0) {
      disk_cache::evict(settings.dir, settings.max_bytes, key);
    }
  }
  return std::make_shared<const CachedKernel>(std::move(*built));
}

}  // namespace

std::string cache_key(const CacheKeyParts& parts) {
  auto hash = [&](std::string_view salt) {
    return StableHasher()
        .str(salt)
        .str(parts.task)
        .str(parts.target)
        .str(parts.backend_version)
        .str(parts.loom_version)
        .digest();
  };
  return hex64(hash("loom kernel cache key, high")) + hex64(hash("loom kernel cache key, low"));
}

CacheSettings CacheSettings::from_environment() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  CacheSettings s;
  if (std::string dir = env("LOOM_CACHE_DIR"); !dir.empty())
    s.dir = dir;
  else if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty())
    s.dir = fs::path(xdg) / "loom";
  else if (std::string home = env("HOME"); !home.empty())
    s.dir = fs::path(home) / ".cache" / "loom";
  if (std::string max = env("LOOM_CACHE_MAX_BYTES"); !max.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(max.c_str(), &end, 10);
    if (end && *end == '\0')
      s.max_bytes = v;
    else
      report_once("LOOM_CACHE_MAX_BYTES=" + max + " is not a byte count; the cache is unbounded");
  }
  return s;
}

KernelCache& KernelCache::global() {
  static KernelCache* cache = new KernelCache();  // never destroyed: kernels may outlive main
  return *cache;
}

KernelCache::Result KernelCache::get(const std::string& key, const CacheKeyParts& parts,
                                     const CacheSettings& settings, const Build& build) {
  std::promise<Result> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = slots_.find(key);
    if (it != slots_.end()) {
      if (it->second.ready) lru_.splice(lru_.begin(), lru_, it->second.lru);
      std::shared_future<Result> result = it->second.result;
      lock.unlock();
      Result r = result.get();  // waits while another thread builds it
      if (r.ok()) count(Counter::kCacheMemoryHits);
      return r;
    }
    slots_[key].result = promise.get_future().share();
  }
  Result r = load_or_build(key, parts, settings, build);
  promise.set_value(r);
  insert_ready(key, r);
  return r;
}

void KernelCache::insert_ready(const std::string& key, const Result& result) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(key);
  LOOM_CHECK(it != slots_.end() && !it->second.ready, "an in-flight cache slot disappeared");
  if (!result.ok()) {
    slots_.erase(it);  // the next request tries again
    return;
  }
  it->second.ready = true;
  lru_.push_front(key);
  it->second.lru = lru_.begin();
  while (lru_.size() > capacity_) {
    slots_.erase(lru_.back());
    lru_.pop_back();
  }
}

void KernelCache::set_capacity(size_t entries) {
  std::lock_guard<std::mutex> lock(mu_);
  capacity_ = std::max<size_t>(entries, 1);
  while (lru_.size() > capacity_) {
    slots_.erase(lru_.back());
    lru_.pop_back();
  }
}

size_t KernelCache::capacity() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_;
}

size_t KernelCache::memory_entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

void KernelCache::clear_memory() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& key : lru_) slots_.erase(key);
  lru_.clear();
}

namespace disk_cache {

absl::StatusOr<CachedKernel> read(const fs::path& dir, const std::string& key,
                                  const CacheKeyParts& parts) {
  const fs::path entry = dir / key;
  std::error_code ec;
  if (!fs::is_directory(entry, ec)) return absl::NotFoundError("no entry " + key);
  absl::StatusOr<std::string> text = read_file(entry / kRecord);
  if (!text.ok()) return absl::DataLossError(str_cat("record.json: ", text.status().message()));
  json record;
  LOOM_ASSIGN_OR_RETURN(CachedKernel k, parse_record(*text, &record));
  // The key names these parts; a record of other parts is another version's (or a collision).
  if (k.parts.loom_version != parts.loom_version)
    return absl::FailedPreconditionError("written by loom " + k.parts.loom_version +
                                         ", this is loom " + parts.loom_version);
  if (k.parts.backend_version != parts.backend_version)
    return absl::FailedPreconditionError("compiled by " + k.parts.backend_version + ", not " +
                                         parts.backend_version);
  if (k.parts.target != parts.target)
    return absl::FailedPreconditionError("compiled for " + k.parts.target);
  if (k.parts.task != parts.task)
    return absl::FailedPreconditionError("the record's task differs from the key's");

  absl::StatusOr<std::string> object = read_file(entry / kObject);
  if (!object.ok()) return absl::DataLossError(str_cat("kernel.o: ", object.status().message()));
  if (object->size() != record["object_bytes"].get<uint64_t>())
    return absl::DataLossError(str_cat("kernel.o has ", object->size(), " bytes, the record says ",
                                       record["object_bytes"].get<uint64_t>(), " (truncated)"));
  if (checksum(*object) != record["object_checksum"].get<std::string>())
    return absl::DataLossError("kernel.o does not match the record's checksum");
  k.object.bytes = std::move(*object);
  absl::StatusOr<std::string> source = read_file(entry / kSource);
  if (source.ok()) k.source = std::move(*source);  // for people only; its loss is harmless
  return k;
}

absl::StatusOr<std::string> describe(const fs::path& dir, const std::string& key) {
  LOOM_ASSIGN_OR_RETURN(std::string record, read_file(dir / key / kRecord));
  json j = json::parse(record, nullptr, false);
  std::string out = j.is_discarded() ? record : j.dump(2);
  absl::StatusOr<std::string> source = read_file(dir / key / kSource);
  out += "\n\n--- source (" + (dir / key / kSource).string() + ") ---\n";
  out += source.ok() ? *source : std::string(source.status().message());
  return out;
}

absl::Status write(const fs::path& dir, const std::string& key, const CachedKernel& kernel) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError("cannot create " + dir.string() + ": " + ec.message());
  const fs::path tmp = dir / (".tmp-" + unique_suffix(key));
  if (!fs::create_directory(tmp, ec) || ec)
    return absl::PermissionDeniedError("cannot create " + tmp.string() + ": " + ec.message());
  absl::Status s = write_file(tmp / kObject, kernel.object.bytes);
  if (s.ok()) s = write_file(tmp / kSource, kernel.source);
  if (s.ok()) s = write_file(tmp / kRecord, record_json(key, kernel).dump(2) + "\n");
  if (s.ok()) {
    fs::rename(tmp, dir / key, ec);
    // A full directory of that name means another writer finished first: keep its entry.
    if (ec && !fs::is_directory(dir / key))
      s = absl::PermissionDeniedError("cannot rename " + tmp.string() + ": " + ec.message());
  }
  if (fs::exists(tmp)) fs::remove_all(tmp, ec);
  return s;
}

void remove(const fs::path& dir, const std::string& key) {
  std::error_code ec;
  const fs::path trash = dir / (".trash-" + unique_suffix(key));
  fs::rename(dir / key, trash, ec);
  if (!ec) fs::remove_all(trash, ec);
}

void evict(const fs::path& dir, uint64_t max_bytes, const std::string& keep) {
  std::error_code ec;
  // Leftovers of writers that died mid-write (an hour gives a live writer ample time).
  const auto stale = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code t_ec;
    if ((name.rfind(".tmp-", 0) == 0 || name.rfind(".trash-", 0) == 0) &&
        fs::last_write_time(it->path(), t_ec) < stale && !t_ec)
      fs::remove_all(it->path(), t_ec);
  }
  std::vector<EntryInfo> entries;
  uint64_t total = 0;
  for (const fs::path& p : entry_dirs(dir)) {
    EntryInfo e;
    e.key = p.filename().string();
    e.bytes = entry_bytes(p);
    e.last_use = last_use(p);
    total += e.bytes;
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return a.last_use != b.last_use ? a.last_use < b.last_use : a.key < b.key;
  });
  for (const EntryInfo& e : entries) {
    if (total <= max_bytes) break;
    if (e.key == keep) continue;
    remove(dir, e.key);
    total -= e.bytes;
  }
}

std::vector<EntryInfo> list(const fs::path& dir) {
  std::vector<EntryInfo> out;
  for (const fs::path& p : entry_dirs(dir)) {
    EntryInfo e;
    e.key = p.filename().string();
    e.bytes = entry_bytes(p);
    e.last_use = last_use(p);
    absl::StatusOr<std::string> text = read_file(p / kRecord);
    json record;
    absl::StatusOr<CachedKernel> k =
        text.ok() ? parse_record(*text, &record) : absl::StatusOr<CachedKernel>(text.status());
    if (k.ok()) {
      e.kernel_name = k->kernel_name;
      e.schedule = k->schedule;
    }
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return a.last_use != b.last_use ? a.last_use < b.last_use : a.key < b.key;
  });
  return out;
}

size_t clear(const fs::path& dir) {
  size_t n = 0;
  for (const fs::path& p : entry_dirs(dir)) {
    remove(dir, p.filename().string());
    ++n;
  }
  return n;
}

}  // namespace disk_cache
}  // namespace loom::runtime
