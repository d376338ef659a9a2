// Math functions built from plain IR arithmetic, for schedule templates: LLVM lowers its own
// intrinsics (llvm.exp) on vectors to one libm call per lane, these stay in vector registers.
#pragma once

#include "loom/ir/expr.hpp"

namespace loom::ir {

// e^x of an f32 scalar or vector, with x clamped to [-88, 88.37]: range reduction x = n ln2 + r
// (Cody-Waite), a degree-6 polynomial for e^r, and 2^n built as float exponent bits. Relative
// error within 2e-7 on [-87, 88]; below about -87.7 the result flushes to 0, and it saturates
// at e^88.37 (a NaN input gives one of the two ends). use_fma picks fused multiply-adds (only
// where the target has them: elsewhere llvm.fma becomes a library call per lane).
Expr fast_exp(Expr x, bool use_fma = true);

}  // namespace loom::ir
