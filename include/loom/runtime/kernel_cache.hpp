// KernelCache: compiled kernels by a stable key, in process memory (LRU, one build per key even
// when many threads ask at once) and on disk (one directory per key), so a warm start compiles
// nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/tune/tuner.hpp"
#include "loom/version.hpp"

namespace loom::runtime {

// Everything a kernel's machine code depends on. Each part changes the key; nothing else does
// (not the process, the Compiler instance, node names of templated kernels, or constant values).
struct CacheKeyParts {
  std::string task;             // canonical task text (see lib/compiler.cpp)
  std::string target;           // target fingerprint, with the cache sizes and cores spaces use
  std::string backend_version;  // CpuJit::backend_version()
  std::string loom_version = LOOM_CACHE_VERSION_STRING;  // version and codegen revision
};

// 128 bits of two stable hashes of the parts, as 32 hex digits (also the entry's directory name).
std::string cache_key(const CacheKeyParts& parts);

// One cache entry: what a compile needs to use a kernel without tuning or LLVM, and what a
// person needs to see why it was chosen.
struct CachedKernel {
  CacheKeyParts parts;
  std::string kernel_name;                      // the kernel func's name when it was built
  std::string schedule;                         // "default", or the template and its config
  tune::Config config;                          // empty for default schedules
  std::vector<tune::Measurement> measurements;  // candidate timings (empty when not tuned)
  std::vector<tune::Refusal> refused;           // candidates tuning ruled out, and why
  double tune_seconds = 0;                      // spent building it
  // A packed constant input: the object's pack func fills a buffer of this shape (the input's
  // dtype) from the constant. Packing runs at load, since packed data depends on the values.
  struct Packed {
    int input = 0;
    std::vector<int64_t> shape;
  };
  std::vector<Packed> packed;
  ObjectCode object;   // symbols: the kernel(s), then one pack func per packed input
  std::string source;  // the lowered loop IR, for people to read
};

// Where and how big the disk level is.
struct CacheSettings {
  std::filesystem::path dir;  // empty: memory only
  uint64_t max_bytes = 0;     // bound on the disk level's total size; 0: unbounded

  // dir: $LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else $HOME/.cache/loom (empty if none is
  // set); max_bytes: $LOOM_CACHE_MAX_BYTES.
  static CacheSettings from_environment();
};

class KernelCache {
 public:
  using Result = absl::StatusOr<std::shared_ptr<const CachedKernel>>;
  using Build = std::function<absl::StatusOr<CachedKernel>()>;

  // The process-wide cache.
  static KernelCache& global();
  explicit KernelCache(size_t capacity = 4096) : capacity_(capacity) {}

  // The entry for key: from memory; else from settings.dir, verified (a corrupt, truncated or
  // foreign entry is reported once on stderr and rebuilt); else build(), stored in both levels.
  // Concurrent calls for one key run build() once; the others wait for it and share the result.
  // A failed build is returned to every waiter and not remembered. Disk write failures only warn.
  Result get(const std::string& key, const CacheKeyParts& parts, const CacheSettings& settings,
             const Build& build);

  // Entries kept in memory (least recently used ones are dropped beyond it); at least 1.
  void set_capacity(size_t entries);
  size_t capacity() const;
  size_t memory_entries() const;
  // Forgets every finished entry in memory (the disk level is untouched).
  void clear_memory();

 private:
  struct Slot {
    std::shared_future<Result> result;
    bool ready = false;
    std::list<std::string>::iterator lru;  // valid when ready
  };
  void insert_ready(const std::string& key, const Result& result);

  mutable std::mutex mu_;
  size_t capacity_;
  std::unordered_map<std::string, Slot> slots_;
  std::list<std::string> lru_;  // most recently used first
};

// The disk level on its own, for the compiler's cache and the loom_cache tool.
namespace disk_cache {

struct EntryInfo {
  std::string key;
  std::string kernel_name;
  std::string schedule;
  uint64_t bytes = 0;                        // all files of the entry
  std::filesystem::file_time_type last_use;  // the record's mtime, touched on each hit
};

// Entries of dir, least recently used first (unreadable records are listed with no name).
std::vector<EntryInfo> list(const std::filesystem::path& dir);
// The verified entry for key; NotFound when absent, DataLoss when corrupt or truncated,
// FailedPrecondition when it belongs to other key parts (another loom or LLVM version).
absl::StatusOr<CachedKernel> read(const std::filesystem::path& dir, const std::string& key,
                                  const CacheKeyParts& parts);
// The entry's record and source as text, unverified, for people.
absl::StatusOr<std::string> describe(const std::filesystem::path& dir, const std::string& key);
// Writes an entry atomically (a temporary directory, then rename): a reader sees all of it or
// nothing. When another process wrote the key first, its entry is kept.
absl::Status write(const std::filesystem::path& dir, const std::string& key,
                   const CachedKernel& kernel);
// Removes one entry (renamed away first, so readers never see half of it).
void remove(const std::filesystem::path& dir, const std::string& key);
// Removes least recently used entries until the total size is at most max_bytes; keep is never
// removed. Also removes temporary directories that crashed writers left behind.
void evict(const std::filesystem::path& dir, uint64_t max_bytes, const std::string& keep = "");
// Removes every entry; returns how many.
size_t clear(const std::filesystem::path& dir);

}  // namespace disk_cache
}  // namespace loom::runtime
