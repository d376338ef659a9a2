// Func: one kernel (parameters + body); Module: the kernels compiled together for one target.
// Parameters are buffers (pointers) or scalar i64 variables (symbolic extents).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "loom/core/target.hpp"
#include "loom/ir/buffer.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ir {

// A kernel parameter: a buffer passed by pointer, or a scalar passed by value.
using Param = std::variant<Buffer, Var>;

struct Func {
  std::string name;
  std::vector<Param> params;
  Stmt body;
  // Positions of buffer params that may share memory with another param (fusion's view of a
  // partial-sum output); all others are assumed distinct (noalias to LLVM).
  std::vector<size_t> may_alias;

  // Buffers among params, in order (what the runtime binds arrays to).
  std::vector<Buffer> buffer_params() const;
  std::vector<Var> scalar_params() const;
};

struct Module {
  std::string name;
  Target target;
  std::vector<Func> funcs;
  // Loops left to LLVM (the default schedule): serial loops with a constant trip count above
  // this are not fully unrolled by LLVM, which otherwise unrolls a 64-element copy nest into
  // thousands of scalars and spends seconds in its SLP vectorizer; the loop vectorizer still
  // vectorizes and interleaves them. 0: no limit (templates unroll what they mean to unroll).
  int64_t llvm_full_unroll_limit = 0;
};

}  // namespace loom::ir
