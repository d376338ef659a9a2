// Schedule spaces: a template's named integer parameters, each with choices derived from the
// hardware (vector width, registers, caches, cores), and a validity rule over whole configs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace loom {

// How much a compile measures to choose each template's config.
enum class TuneLevel {
  kNone,  // each template's default config, nothing measured
  kFast,  // measure a pruned part of each schedule space
  kFull,  // measure each whole schedule space
};

namespace tune {

// One point of a space: a value for each parameter, by name.
class Config {
 public:
  Config() = default;
  explicit Config(std::map<std::string, int64_t> values) : values_(std::move(values)) {}

  // The value of a parameter; an internal invariant failure when the template did not declare it.
  int64_t operator[](const std::string& name) const;
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  void set(const std::string& name, int64_t v) { values_[name] = v; }
  const std::map<std::string, int64_t>& values() const { return values_; }

  // Canonical text "kc=256,mr=6,nv=2" (sorted by name), part of kernel names and cache records.
  std::string to_string() const;
  bool operator==(const Config& o) const { return values_ == o.values_; }

 private:
  std::map<std::string, int64_t> values_;
};

// A candidate ruled out while a tuning timed its candidates, and why (its output not the
// reference candidate's; on a GPU, its module not loaded or its launch refused).
struct Refusal {
  Config config;
  std::string reason;
};

class Space {
 public:
  // Declares a parameter with its choices, in the order the tuner tries them.
  Space& param(std::string name, std::vector<int64_t> choices);
  // A rule every valid config satisfies (register count, cache capacity, divisibility). Rules
  // are named so a rejected default can be explained.
  Space& rule(std::string name, std::function<bool(const Config&)> valid);
  // A rule of the pruned space kFast measures (for example "uses at least 3/4 of the registers").
  Space& prefer(std::string name, std::function<bool(const Config&)> keep);
  // A rule of the pruned space that prefers value `preferred` of parameter `param` among the
  // configs `where` picks: such a config with another value is left out where the same config
  // with `preferred` is valid. Where a limit or a rule removes `preferred`, the others stay (a
  // prefer rule would leave them out too).
  Space& prefer_choice(std::string name, std::string param, int64_t preferred,
                       std::function<bool(const Config&)> where);
  // The config kNone uses without measuring; it must be valid.
  Space& default_config(Config c);
  // Keeps only the choices of parameter `name` among `allowed` (in their order). Where the
  // default breaks the limit, the valid config closest to it (fewest parameters changed; of the
  // pruned space first) becomes the default. InvalidArgument when the space has no such
  // parameter, no choice is allowed, or no config stays valid (the space is then unusable).
  absl::Status limit(const std::string& name, const std::vector<int64_t>& allowed);

  // Every valid config (cartesian product of the choices, filtered by the rules).
  std::vector<Config> all() const;
  // The valid configs that also pass the prefer rules (never empty: the default is included).
  std::vector<Config> pruned() const;
  const Config& default_config() const { return default_; }
  // Empty when c is valid, else the names of the rules it breaks.
  std::vector<std::string> broken_rules(const Config& c) const;
  const std::vector<std::pair<std::string, std::vector<int64_t>>>& params() const {
    return params_;
  }

 private:
  std::vector<std::pair<std::string, std::vector<int64_t>>> params_;
  std::vector<std::pair<std::string, std::function<bool(const Config&)>>> rules_, prefer_;
  struct PreferChoice {
    std::string name, param;
    int64_t preferred;
    std::function<bool(const Config&)> where;
  };
  std::vector<PreferChoice> prefer_choices_;
  Config default_;
};

}  // namespace tune
}  // namespace loom
