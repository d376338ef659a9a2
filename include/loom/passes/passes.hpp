// Loop-IR passes, one per file under lib/passes, and lower(): the flat list that runs them.
// LOOM_DUMP_IR=<dir> writes the IR after every pass.
#pragma once

#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/te/task.hpp"

namespace loom::passes {

// Rewrites every multi-dimensional Load/Store into one physical element offset by its buffer's
// layout. Code generators accept only flattened IR.
ir::Func flatten_layouts(const ir::Func& f);

// Task -> flattened, simplified loop IR ready for a code generator, using the default schedule.
ir::Func lower(const te::Task& task, const Target& target);

}  // namespace loom::passes
