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
#include "loom/runtime/thread_pool.hpp"

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

inline const char* tune_level_name(TuneLevel level) {
  switch (level) {
    case TuneLevel::kNone:
      return "none";
    case TuneLevel::kFast:
      return "fast";
    case TuneLevel::kFull:
      return "full";
  }
  return "?";
}

// Canonical text of a templated node's task: all its tuning and code depend on, but the target
// (a key part of its own) and the node's name (identical layers share one kernel). On CPUs the
// thread count is part of it: templates split their work by it and tuning measures with it.
inline std::string template_task_text(const Node& n, const TemplateContext& ctx,
                                      const ScheduleTemplate& t, TuneLevel level,
                                      const tune::Config* forced) {
  std::string s = str_cat("template ", t.name, "\nop ", n.op, "(",
                          ctx.attrs ? ctx.attrs->to_string() : "", ")\n");
  for (size_t i = 0; i < ctx.inputs.size(); ++i)
    s += str_cat("input ", i, ": ", ctx.inputs[i].to_string(),
                 ctx.constant_inputs[i] ? " constant" : "", "\n");
  s += "output: " + ctx.output.to_string() + "\n";
  if (ctx.target.is_cpu()) s += str_cat("threads ", num_threads(), "\n");
  s += forced ? "config " + forced->to_string() : str_cat("tune ", tune_level_name(level));
  return s + "\n";
}

// " name{v1,v2,...}": a parameter and its choices, in the keys of tunings.
inline std::string choices_text(const std::string& name, const std::vector<int64_t>& choices) {
  std::string s = " " + name + "{";
  for (size_t i = 0; i < choices.size(); ++i) s += (i ? "," : "") + std::to_string(choices[i]);
  return s + "}";
}

// Template t's space for ctx, limited by options.template_limits.
inline absl::StatusOr<tune::Space> limited_space(const ScheduleTemplate& t,
                                                 const TemplateContext& ctx,
                                                 const CompileOptions& options) {
  tune::Space space = t.space(ctx);
  auto limits = options.template_limits.find(t.name);
  if (limits == options.template_limits.end()) return space;
  for (const auto& [param, allowed] : limits->second)
    if (absl::Status s = space.limit(param, allowed); !s.ok())
      return absl::InvalidArgumentError(
          str_cat("template_limits of template ", t.name, ": ", s.message()));
  return space;
}

// The limits options.template_limits sets on template t's space ("limits tma{0}\n"; empty:
// none), for the keys of kernels tuned in it.
inline std::string limits_text(const ScheduleTemplate& t, const CompileOptions& options) {
  auto limits = options.template_limits.find(t.name);
  if (limits == options.template_limits.end()) return "";
  std::string s = "limits";
  for (const auto& [param, allowed] : limits->second) s += choices_text(param, allowed);
  return s + "\n";
}

// The parameters of a space and their choices ("block_n{64,128,256} stages{2,3,4}"): part of a
// tuning record's key, so that a record made before a template's space changed (a parameter
// added) is not taken for one of the new space, whose configs it would lack.
inline std::string space_text(const tune::Space& space) {
  std::string s = "space";
  for (const auto& [name, choices] : space.params()) s += choices_text(name, choices);
  return s + "\n";
}

inline std::vector<CandidateTime> candidate_times(const std::vector<tune::Measurement>& ms) {
  std::vector<CandidateTime> out;
  for (const tune::Measurement& m : ms) out.push_back({m.config, m.median_ms});
  return out;
}

}  // namespace loom
