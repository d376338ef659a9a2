// Structural hashing and equality of IR: two trees are equal when they have the same shape,
// types and constants, with variables and buffers matched by position of definition, not name.
#pragma once

#include <cstdint>

#include "loom/ir/expr.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ir {

// Stable across processes: built on loom::StableHasher.
uint64_t structural_hash(const Expr& e);
uint64_t structural_hash(const Stmt& s);
uint64_t structural_hash(const Func& f);

bool structural_equal(const Expr& a, const Expr& b);
bool structural_equal(const Stmt& a, const Stmt& b);
bool structural_equal(const Func& a, const Func& b);

}  // namespace loom::ir
