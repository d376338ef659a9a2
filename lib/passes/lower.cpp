// lower(): the pass list from a Task to code-generator-ready loop IR, one line per pass.

#include "loom/core/dump.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/passes/passes.hpp"
#include "loom/te/lower.hpp"

namespace loom::passes {

namespace {
// A default-scheduled loop nest with fewer stores than this runs serially: waking the thread
// pool costs a few microseconds, about what 32K simple element operations take on one core.
constexpr int64_t kMinParallelWork = 32 * 1024;
}  // namespace

ir::Func lower(const te::Task& task, const Target& target) {
  const std::string& group = task.name();
  auto step = [&](const char* stage, ir::Func f) {
    dump_stage(group, stage, ir::to_string(f));
    return f;
  };
  dump_stage(group, "task", task.to_string());
  ir::Func f = step("default-schedule", te::lower_default(task));
  if (target.is_cpu()) f = step("parallelize", parallelize_outer_loops(f, kMinParallelWork));
  if (target.is_cuda()) f = step("parallelize", parallelize_loop_nests(f, 1));
  f = step("flatten-layouts", flatten_layouts(f));
  f = step("simplify", ir::simplify(f));
  return f;
}

ir::Func lower_scheduled(const ir::Func& f, const Target& target) {
  auto step = [&](const char* stage, ir::Func g) {
    dump_stage(f.name, stage, ir::to_string(g));
    return g;
  };
  ir::Func out = step("scheduled", strip_final_marks(f));
  out = step("flatten-layouts", flatten_layouts(out));
  out = step("simplify", ir::simplify(out));
  (void)target;
  return out;
}

}  // namespace loom::passes
