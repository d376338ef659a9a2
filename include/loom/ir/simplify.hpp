// The simplifier: constant folding, algebraic identities, and index arithmetic using the
// bounds of loop variables (i / 8 == 0 when 0 <= i < 8).
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "loom/ir/expr.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ir {

// Inclusive integer interval; nullopt ends are unbounded.
struct Interval {
  std::optional<int64_t> min, max;
  bool is_const() const { return min && max && *min == *max; }
};

using BoundsMap = std::map<const VarNode*, Interval>;

// Bounds of an integer expression given bounds of free variables.
Interval bounds_of(const Expr& e, const BoundsMap& known = {});

Expr simplify(const Expr& e, const BoundsMap& known = {});
Stmt simplify(const Stmt& s, const BoundsMap& known = {});
Func simplify(const Func& f);

// True when e simplifies to the constant true (with the given bounds).
bool can_prove(const Expr& e, const BoundsMap& known = {});

}  // namespace loom::ir
