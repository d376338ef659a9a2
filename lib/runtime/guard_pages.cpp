// Guard-page allocations: mmap with an inaccessible page on each side of the data.

#include "loom/runtime/guard_pages.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace loom::runtime {
namespace {

GuardPages from_environment() {
  const char* env = std::getenv("LOOM_GUARD_PAGES");
  if (!env) return GuardPages::kOff;
  if (std::strcmp(env, "after") == 0) return GuardPages::kAfter;
  if (std::strcmp(env, "before") == 0) return GuardPages::kBefore;
  return GuardPages::kOff;
}

std::atomic<GuardPages>& mode() {
  static std::atomic<GuardPages> m{from_environment()};
  return m;
}

}  // namespace

GuardPages guard_pages() { return mode().load(std::memory_order_relaxed); }

void set_guard_pages(GuardPages m) { mode().store(m, std::memory_order_relaxed); }

std::shared_ptr<void> allocate_guarded(int64_t bytes, GuardPages m) {
  if (bytes < 0) return nullptr;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t size = static_cast<size_t>(bytes);
  const size_t data_pages = (size + page - 1) / page;
  const size_t length = (data_pages + 2) * page;
  void* raw = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(raw);
  char* const after = base + page + data_pages * page;  // the guard page after the data
  if (::mprotect(base, page, PROT_NONE) != 0 || ::mprotect(after, page, PROT_NONE) != 0) {
    ::munmap(raw, length);
    return nullptr;
  }
  char* data = m == GuardPages::kBefore ? base + page : after - size;
  // The aliasing constructor keeps the data pointer while the deleter unmaps the whole mapping.
  std::shared_ptr<void> mapping(raw, [length](void* p) { ::munmap(p, length); });
  return std::shared_ptr<void>(mapping, data);
}

}  // namespace loom::runtime
