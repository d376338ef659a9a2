// A key bound to a value in a map for the lifetime of a scope, any outer binding of the key
// restored after it (shadowing): how the code emitters bind IR variables and buffers while they
// emit the statements that see them. Private to lib/.
#pragma once

#include <optional>
#include <utility>

namespace loom::codegen {

template <typename Map>
class ScopedBind {
 public:
  ScopedBind(Map& map, typename Map::key_type key, typename Map::mapped_type value)
      : map_(map), key_(key) {
    auto it = map_.find(key);
    if (it != map_.end()) old_ = it->second;
    map_[key] = std::move(value);
  }
  ~ScopedBind() {
    if (old_)
      map_[key_] = *old_;
    else
      map_.erase(key_);
  }
  ScopedBind(const ScopedBind&) = delete;
  ScopedBind& operator=(const ScopedBind&) = delete;

 private:
  Map& map_;
  typename Map::key_type key_;
  std::optional<typename Map::mapped_type> old_;
};

}  // namespace loom::codegen
