// Guard-page mode, a debugging aid: every buffer a CPU kernel touches (inputs, constants,
// intermediates, outputs, scratch) gets a mapping of its own that ends exactly at (or starts right
// after) an inaccessible page, so any access by generated code outside its buffers faults.
#pragma once

#include <cstdint>
#include <memory>

namespace loom::runtime {

enum class GuardPages {
  kOff,     // buffers come from the arena, malloc and the scratch caches (the default)
  kAfter,   // each buffer's last byte is followed by a PROT_NONE page (catches overruns)
  kBefore,  // each buffer's first byte follows a PROT_NONE page (catches underruns)
};

// The process-wide mode; it starts as $LOOM_GUARD_PAGES ("after" or "before"; anything else is
// off) and applies to runs and scratch allocations that start after the change. Costs a mapping
// and a copy per buffer per run: for tests, never for serving.
GuardPages guard_pages();
void set_guard_pages(GuardPages mode);

// `bytes` of fresh memory placed as `mode` says (kOff is taken as kAfter), in a mapping that also
// has a PROT_NONE page on either side; null when the system refuses the mapping. Data is aligned
// to its end (kAfter) or to a page (kBefore): element-aligned for any whole number of elements.
std::shared_ptr<void> allocate_guarded(int64_t bytes, GuardPages mode);

}  // namespace loom::runtime
