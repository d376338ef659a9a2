// Scratch memory for CPU kernels: the large or symbolic-size buffers a kernel allocates (packed
// panels, padded copies) come from here instead of malloc. Blocks are 64-byte aligned and kept
// per thread for reuse, so a parallel loop whose tasks each allocate a few hundred KiB neither
// maps fresh pages every task nor makes the threads contend on unmapping them.
#pragma once

#include <cstdint>

// C linkage: generated kernels call these (resolved by the JIT). A null pointer is returned only
// when the system is out of memory. loom_scratch_free accepts null.
extern "C" void* loom_scratch_alloc(int64_t bytes);
extern "C" void loom_scratch_free(void* p);
