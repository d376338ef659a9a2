// Tensor expressions: placeholder, compute and reduce define what a kernel computes, with no
// schedule. A te::Tensor reads as a function of its indices: A(i, k) * B(k, j).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/ir/buffer.hpp"
#include "loom/ir/expr.hpp"

namespace loom::te {

class Tensor;

struct TensorNode {
  std::string name;
  DType dtype;
  std::vector<ir::Expr> shape;
  // Storage the tensor's values live in; reading the tensor is a Load of this buffer.
  ir::Buffer buffer;
  // Compute tensors only: one index variable per output dim and the value at that index.
  std::vector<ir::Var> axes;
  ir::Expr body;
  // Tensors read by body, in order of first use.
  std::vector<Tensor> inputs;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<const TensorNode> n) : node_(std::move(n)) {}

  bool defined() const { return node_ != nullptr; }
  const TensorNode* operator->() const { return node_.get(); }
  const std::shared_ptr<const TensorNode>& node() const { return node_; }
  const std::string& name() const { return node_->name; }
  DType dtype() const { return node_->dtype; }
  const std::vector<ir::Expr>& shape() const { return node_->shape; }
  int rank() const { return static_cast<int>(node_->shape.size()); }
  bool is_placeholder() const { return !node_->body.defined(); }
  bool same_as(const Tensor& o) const { return node_ == o.node_; }

  // The value at a logical index; usable inside compute bodies.
  ir::Expr operator()(std::vector<ir::Expr> indices) const;
  template <typename... Idx>
  ir::Expr operator()(Idx... idx) const {
    return (*this)(std::vector<ir::Expr>{ir::Expr(idx)...});
  }

 private:
  std::shared_ptr<const TensorNode> node_;
};

// An input of the task, filled by the caller (stored row-major, or in `layout`).
Tensor placeholder(std::string name, DType dtype, std::vector<ir::Expr> shape);
Tensor placeholder(std::string name, DType dtype, Layout layout);

// t, written into storage of the given layout (same logical shape): a task's output stored in a
// layout other than row-major.
Tensor with_layout(const Tensor& t, Layout layout);

// out[axes] = fcompute(axes). The body's dtype is the tensor's dtype.
Tensor compute(std::string name, std::vector<ir::Expr> shape,
               const std::function<ir::Expr(const std::vector<ir::Var>&)>& fcompute);

// A reduction axis over [0, extent).
ir::IterVar reduce_axis(ir::Expr extent, std::string name);

// Reductions over axes; accumulate in accum (defaults to the source type, f32 for f16/bf16).
ir::Expr sum(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum = {});
ir::Expr prod(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum = {});
ir::Expr max(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum = {});
ir::Expr min(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum = {});

}  // namespace loom::te
