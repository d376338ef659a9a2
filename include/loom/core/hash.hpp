// Stable hashing: the same value in every process and build (unlike absl::Hash, which is salted).
// Used for structural IR hashes and, later, kernel cache keys.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace loom {

// 64-bit FNV-1a over bytes, with a final avalanche mix.
class StableHasher {
 public:
  StableHasher& bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h_ ^= p[i];
      h_ *= 0x100000001b3ULL;
    }
    return *this;
  }
  StableHasher& str(std::string_view s) {
    u64(s.size());
    return bytes(s.data(), s.size());
  }
  StableHasher& u64(uint64_t v) { return bytes(&v, sizeof(v)); }
  StableHasher& i64(int64_t v) { return bytes(&v, sizeof(v)); }
  StableHasher& f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    return u64(bits);
  }
  uint64_t digest() const {
    uint64_t x = h_;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
  }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

inline uint64_t stable_hash(std::string_view s) { return StableHasher().str(s).digest(); }

}  // namespace loom
