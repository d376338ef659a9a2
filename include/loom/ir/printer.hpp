// Readable text of any IR: expressions, statements, funcs and modules.
// The same text serves dumps (LOOM_DUMP_IR), test diffs and cache keys.
#pragma once

#include <ostream>
#include <string>

#include "loom/ir/expr.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ir {

std::string to_string(const Expr& e);
std::string to_string(const Stmt& s);
std::string to_string(const Func& f);
std::string to_string(const Module& m);

std::ostream& operator<<(std::ostream& os, const Expr& e);
std::ostream& operator<<(std::ostream& os, const Stmt& s);
std::ostream& operator<<(std::ostream& os, const Func& f);

}  // namespace loom::ir
