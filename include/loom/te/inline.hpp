// Inlining of injective compute tensors: the value of a tensor at an index with every injective
// producer's body substituted in, so a chain of elementwise/movement ops becomes one expression.
#pragma once

#include <set>
#include <vector>

#include "loom/te/tensor.hpp"

namespace loom::te {

// Whether t's own body contains a reduction (such a tensor is a stage, never inlined implicitly).
bool has_reduction(const Tensor& t);

// t's value at index: t's body with its axes replaced by index, where every load of a compute
// tensor without a reduction is replaced in turn by that tensor's value (recursively). Loads of
// placeholders, of tensors with reductions and of tensors in `keep` stay loads of their buffers.
// A tensor in `inline_anyway` is inlined even though it has a reduction (its Reduce nodes move
// into the returned expression).
ir::Expr value_at(const Tensor& t, const std::vector<ir::Expr>& index,
                  const std::set<const TensorNode*>& keep = {},
                  const std::set<const TensorNode*>& inline_anyway = {});

// A compute tensor named like t whose body is value_at(t, its axes, keep): t with its injective
// producers inlined. Stage tensors it still reads are inlined the same way, so the result's
// inputs are placeholders, kept tensors and reduction stages whose own producers are inlined.
Tensor inline_injective(const Tensor& t, const std::set<const TensorNode*>& keep = {});

// A compute tensor of the given name and shape whose body is `body` over `axes` (the body may
// read any tensor in `reads`; inputs are the tensors among them it loads).
Tensor compute_from(std::string name, std::vector<ir::Expr> shape, std::vector<ir::Var> axes,
                    ir::Expr body, const std::vector<Tensor>& reads);

}  // namespace loom::te
