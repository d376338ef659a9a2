// Tensor dimensions: static extents or named symbolic dimensions (batch, sequence length).
// A Shape is an ordered list of Dims; helpers test and format them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace loom {

class Dim {
 public:
  Dim() = default;
  Dim(int64_t value) : value_(value) {}  // NOLINT: implicit so shapes read {1, 3, 224, 224}
  Dim(int value) : value_(value) {}      // NOLINT
  explicit Dim(std::string name) : name_(std::move(name)) {}
  explicit Dim(const char* name) : name_(name) {}

  bool is_static() const { return name_.empty(); }
  bool is_symbolic() const { return !name_.empty(); }
  // Extent of a static dim; -1 for a symbolic one.
  int64_t value() const { return is_static() ? value_ : -1; }
  const std::string& name() const { return name_; }

  bool operator==(const Dim& o) const { return name_ == o.name_ && (is_symbolic() || value_ == o.value_); }
  bool operator!=(const Dim& o) const { return !(*this == o); }

  std::string to_string() const { return is_static() ? std::to_string(value_) : name_; }

 private:
  int64_t value_ = 0;
  std::string name_;
};

inline std::ostream& operator<<(std::ostream& os, const Dim& d) { return os << d.to_string(); }

using Shape = std::vector<Dim>;

inline std::string shape_to_string(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + s[i].to_string();
  return out + "]";
}

inline std::string shape_to_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline bool is_static(const Shape& s) {
  for (const Dim& d : s)
    if (d.is_symbolic()) return false;
  return true;
}

// Concrete extents of a fully static shape; nullopt if any dim is symbolic.
inline std::optional<std::vector<int64_t>> static_extents(const Shape& s) {
  std::vector<int64_t> out;
  for (const Dim& d : s) {
    if (d.is_symbolic()) return std::nullopt;
    out.push_back(d.value());
  }
  return out;
}

// Values of symbolic dims by name, e.g. {{"batch", 8}, {"seq", 128}}.
using DimBindings = std::map<std::string, int64_t>;

// s with each bound symbolic dim replaced by its value (unbound ones stay symbolic).
inline Shape bind_dims(const Shape& s, const DimBindings& dims) {
  Shape out = s;
  for (Dim& d : out) {
    if (d.is_static()) continue;
    auto it = dims.find(d.name());
    if (it != dims.end()) d = Dim(it->second);
  }
  return out;
}

// "batch=8, seq=128"
inline std::string bindings_to_string(const DimBindings& dims) {
  std::string out;
  for (const auto& [name, value] : dims)
    out += (out.empty() ? "" : ", ") + name + "=" + std::to_string(value);
  return out;
}

inline int64_t num_elements(const std::vector<int64_t>& extents) {
  int64_t n = 1;
  for (int64_t e : extents) n *= e;
  return n;
}

}  // namespace loom
