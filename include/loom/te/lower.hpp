// The default schedule: a Task becomes one loop nest per compute tensor, serial and in
// logical indices, with reductions as accumulator loops. Correct for every task.
#pragma once

#include "loom/ir/func.hpp"
#include "loom/te/task.hpp"

namespace loom::te {

// Params: input buffers, then output buffers, then the task's shape variables (i64).
ir::Func lower_default(const Task& task);

}  // namespace loom::te
