// Schedule spaces: enumeration of valid configs and the pruned subset the fast tuner measures.

#include "loom/tune/space.hpp"

#include <algorithm>

#include "loom/core/status.hpp"

namespace loom::tune {

int64_t Config::operator[](const std::string& name) const {
  auto it = values_.find(name);
  LOOM_CHECK(it != values_.end(), "config ", to_string(), " has no parameter ", name);
  return it->second;
}

std::string Config::to_string() const {
  std::string s;
  for (const auto& [name, v] : values_) s += (s.empty() ? "" : ",") + name + "=" + std::to_string(v);
  return s;
}

Space& Space::param(std::string name, std::vector<int64_t> choices) {
  LOOM_CHECK(!choices.empty(), "parameter ", name, " has no choices");
  params_.emplace_back(std::move(name), std::move(choices));
  return *this;
}

Space& Space::rule(std::string name, std::function<bool(const Config&)> valid) {
  rules_.emplace_back(std::move(name), std::move(valid));
  return *this;
}

Space& Space::prefer(std::string name, std::function<bool(const Config&)> keep) {
  prefer_.emplace_back(std::move(name), std::move(keep));
  return *this;
}

Space& Space::default_config(Config c) {
  default_ = std::move(c);
  return *this;
}

absl::Status Space::limit(const std::string& name, const std::vector<int64_t>& allowed) {
  auto param =
      std::find_if(params_.begin(), params_.end(), [&](const auto& p) { return p.first == name; });
  if (param == params_.end())
    return absl::InvalidArgumentError("the space has no parameter " + name);
  std::vector<int64_t> kept;
  for (int64_t v : param->second)
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) kept.push_back(v);
  if (kept.empty()) {
    std::string choices;
    for (int64_t v : param->second) choices += (choices.empty() ? "" : ",") + std::to_string(v);
    return absl::InvalidArgumentError(
        str_cat("none of parameter ", name, "'s choices {", choices, "} is allowed"));
  }
  param->second = std::move(kept);
  if (broken_rules(default_).empty()) return absl::OkStatus();
  std::vector<Config> candidates = pruned();  // without the old default, which breaks the limit
  if (candidates.empty()) candidates = all();
  if (candidates.empty())
    return absl::InvalidArgumentError(
        str_cat("no config keeps the space's rules with parameter ", name, " limited"));
  auto changed = [&](const Config& c) {
    size_t n = 0;
    for (const auto& [p, v] : c.values()) n += !default_.has(p) || default_[p] != v;
    return n;
  };
  default_ =
      *std::min_element(candidates.begin(), candidates.end(),
                        [&](const Config& a, const Config& b) { return changed(a) < changed(b); });
  return absl::OkStatus();
}

std::vector<std::string> Space::broken_rules(const Config& c) const {
  std::vector<std::string> broken;
  for (const auto& [name, choices] : params_)
    if (!c.has(name) || std::find(choices.begin(), choices.end(), c[name]) == choices.end())
      broken.push_back("choices of " + name);
  if (!broken.empty()) return broken;
  for (const auto& [name, valid] : rules_)
    if (!valid(c)) broken.push_back(name);
  return broken;
}

std::vector<Config> Space::all() const {
  std::vector<Config> out;
  std::vector<size_t> at(params_.size(), 0);
  for (;;) {
    Config c;
    for (size_t p = 0; p < params_.size(); ++p) c.set(params_[p].first, params_[p].second[at[p]]);
    bool ok = true;
    for (const auto& rule : rules_) ok = ok && rule.second(c);
    if (ok) out.push_back(std::move(c));
    // Odometer over the choices, last parameter fastest.
    size_t p = params_.size();
    while (p > 0 && ++at[p - 1] == params_[p - 1].second.size()) at[--p] = 0;
    if (p == 0) break;
  }
  return out;
}

Space& Space::prefer_choice(std::string name, std::string param, int64_t preferred,
                            std::function<bool(const Config&)> where) {
  prefer_choices_.push_back({std::move(name), std::move(param), preferred, std::move(where)});
  return *this;
}

std::vector<Config> Space::pruned() const {
  std::vector<Config> out;
  // Whether c gives way to its twin with the preferred choice, a valid config.
  auto gives_way = [this](const Config& c, const PreferChoice& p) {
    if (!p.where(c) || c[p.param] == p.preferred) return false;
    Config twin = c;
    twin.set(p.param, p.preferred);
    return broken_rules(twin).empty();
  };
  for (Config& c : all()) {
    bool keep = true;
    for (const auto& rule : prefer_) keep = keep && rule.second(c);
    for (const PreferChoice& p : prefer_choices_) keep = keep && !gives_way(c, p);
    if (keep) out.push_back(std::move(c));
  }
  if (std::find(out.begin(), out.end(), default_) == out.end() && broken_rules(default_).empty())
    out.insert(out.begin(), default_);
  return out;
}

}  // namespace loom::tune
