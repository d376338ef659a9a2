// LOOM_DUMP_IR=<dir>: every compilation stage writes its IR as text for people to read.
// Files are <dir>/<group>/<NN>-<stage>.<ext>, numbered in the order the stages ran.
#pragma once

#include <string>

namespace loom {

// True when LOOM_DUMP_IR is set.
bool dump_enabled();
// Writes text as the next stage of group (a kernel or graph name); no-op when dumping is off.
// Errors writing the dump are reported on stderr once and otherwise ignored.
void dump_stage(const std::string& group, const std::string& stage, const std::string& text,
                const std::string& extension = "txt");

}  // namespace loom
