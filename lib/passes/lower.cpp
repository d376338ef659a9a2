// lower(): the pass list from a Task to code-generator-ready loop IR, one line per pass.

#include "loom/core/dump.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/passes/passes.hpp"
#include "loom/te/lower.hpp"

namespace loom::passes {

ir::Func lower(const te::Task& task, const Target& target) {
  const std::string& group = task.name();
  auto step = [&](const char* stage, ir::Func f) {
    dump_stage(group, stage, ir::to_string(f));
    return f;
  };
  dump_stage(group, "task", task.to_string());
  ir::Func f = step("default-schedule", te::lower_default(task));
  f = step("flatten-layouts", flatten_layouts(f));
  f = step("simplify", ir::simplify(f));
  (void)target;  // target-specific passes (vectorize, parallel) join this list with the schedules
  return f;
}

ir::Func lower_scheduled(const ir::Func& f, const Target& target) {
  auto step = [&](const char* stage, ir::Func g) {
    dump_stage(f.name, stage, ir::to_string(g));
    return g;
  };
  ir::Func out = step("scheduled", f);
  out = step("flatten-layouts", flatten_layouts(out));
  out = step("simplify", ir::simplify(out));
  (void)target;
  return out;
}

}  // namespace loom::passes
