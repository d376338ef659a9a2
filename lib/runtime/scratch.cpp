// Per-thread caches of scratch blocks for generated kernels.

#include "loom/runtime/scratch.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "loom/runtime/guard_pages.hpp"

namespace {

constexpr size_t kAlign = 64;
// A header before each block records its capacity; it keeps the block 64-byte aligned.
constexpr size_t kHeader = kAlign;
// What one thread keeps for reuse; more is returned to the system.
constexpr size_t kMaxCachedBlocks = 8;
constexpr size_t kMaxCachedBytes = size_t{64} << 20;

struct Block {
  char* base = nullptr;  // the allocation (header first)
  size_t capacity = 0;   // usable bytes after the header
};

struct ThreadCache {
  std::vector<Block> blocks;
  size_t bytes = 0;
  ~ThreadCache() {
    for (Block& b : blocks) std::free(b.base);
  }
};

ThreadCache& cache() {
  thread_local ThreadCache c;
  return c;
}

size_t& capacity_of(char* base) { return *reinterpret_cast<size_t*>(base); }

// Guard-page mode: each block is a mapping of its own (no header, no reuse, so an access past
// either end faults), found again by its address when freed.
struct GuardedBlocks {
  std::mutex mu;
  std::unordered_map<void*, std::shared_ptr<void>> blocks;
  std::atomic<size_t> count{0};  // lets loom_scratch_free skip the lock outside guard mode
};

GuardedBlocks& guarded() {
  static GuardedBlocks* g = new GuardedBlocks();  // never destroyed: threads may free at exit
  return *g;
}

}  // namespace

extern "C" void* loom_scratch_alloc(int64_t bytes) {
  if (loom::runtime::GuardPages mode = loom::runtime::guard_pages();
      mode != loom::runtime::GuardPages::kOff) {
    std::shared_ptr<void> block = loom::runtime::allocate_guarded(std::max<int64_t>(bytes, 0), mode);
    if (!block) return nullptr;
    GuardedBlocks& g = guarded();
    std::lock_guard<std::mutex> lock(g.mu);
    g.blocks.emplace(block.get(), block);
    g.count.fetch_add(1);
    return block.get();
  }
  size_t want = static_cast<size_t>(std::max<int64_t>(bytes, 1));
  ThreadCache& c = cache();
  // The smallest cached block that fits.
  auto best = c.blocks.end();
  for (auto it = c.blocks.begin(); it != c.blocks.end(); ++it)
    if (it->capacity >= want && (best == c.blocks.end() || it->capacity < best->capacity)) best = it;
  if (best != c.blocks.end()) {
    char* base = best->base;
    c.bytes -= best->capacity;
    c.blocks.erase(best);
    return base + kHeader;
  }
  size_t capacity = (want + kAlign - 1) / kAlign * kAlign;
  char* base = static_cast<char*>(std::aligned_alloc(kAlign, kHeader + capacity));
  if (!base) return nullptr;
  capacity_of(base) = capacity;
  return base + kHeader;
}

extern "C" void loom_scratch_free(void* p) {
  if (!p) return;
  if (GuardedBlocks& g = guarded(); g.count.load() > 0) {
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.blocks.erase(p)) {
      g.count.fetch_sub(1);
      return;
    }
  }
  char* base = static_cast<char*>(p) - kHeader;
  size_t capacity = capacity_of(base);
  ThreadCache& c = cache();
  if (capacity > kMaxCachedBytes) {
    std::free(base);
    return;
  }
  // Make room: drop the smallest blocks first (large ones are the expensive ones to map).
  while (!c.blocks.empty() &&
         (c.blocks.size() >= kMaxCachedBlocks || c.bytes + capacity > kMaxCachedBytes)) {
    auto smallest = std::min_element(c.blocks.begin(), c.blocks.end(),
                                     [](const Block& a, const Block& b) { return a.capacity < b.capacity; });
    c.bytes -= smallest->capacity;
    std::free(smallest->base);
    c.blocks.erase(smallest);
  }
  c.blocks.push_back(Block{base, capacity});
  c.bytes += capacity;
}
