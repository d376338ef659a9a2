// The CPU schedule template of matmul (private to lib/ops): packed-B GEMM with a register-tiled
// micro-kernel and a hardware-centric space.
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate matmul_cpu_template();

}  // namespace loom::ops
