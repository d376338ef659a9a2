// How Compiler::compile uses the kernel cache (private to lib/).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "loom/compiler.hpp"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/runtime/kernel_cache.hpp"

namespace loom {

// How one compile uses the kernel cache.
struct CacheUse {
  bool enabled = false;
  runtime::CacheSettings settings;
  std::string target;   // key part: fingerprint and the cache sizes and cores spaces derive from
  std::string backend;  // key part: LLVM's version
  // Objects this compile loaded into its JIT, by key: identical nodes link one copy.
  std::map<std::string, std::vector<runtime::KernelFn>> loaded;

  runtime::CacheKeyParts parts(std::string task) const {
    runtime::CacheKeyParts p;
    p.task = std::move(task);
    p.target = target;
    p.backend_version = backend;
    return p;
  }
  absl::StatusOr<std::vector<runtime::KernelFn>> load(const std::string& key,
                                                      const runtime::CachedKernel& entry,
                                                      runtime::CpuJit& jit) {
    auto it = loaded.find(key);
    if (it != loaded.end()) return it->second;
    LOOM_ASSIGN_OR_RETURN(std::vector<runtime::KernelFn> fns, jit.load_object(entry.object));
    return loaded[key] = std::move(fns);
  }
};

inline CacheUse cache_use(const Target& target, const CompileOptions& options) {
  CacheUse c;
  c.enabled = options.use_cache && !dump_enabled();
  if (!c.enabled) return c;
  c.settings = runtime::CacheSettings::from_environment();
  if (!options.cache_dir.empty()) c.settings.dir = options.cache_dir;
  if (options.cache_max_bytes > 0) c.settings.max_bytes = options.cache_max_bytes;
  if (!options.use_disk_cache) c.settings.dir.clear();
  c.target = str_cat(target.fingerprint(), " l1d=", target.l1d_bytes(), " l2=", target.l2_bytes(),
                     " cores=", target.cores());
  c.backend = runtime::CpuJit::backend_version();
  return c;
}

}  // namespace loom
