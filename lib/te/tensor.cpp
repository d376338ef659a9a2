// placeholder/compute/reduce and Task construction.

#include "loom/te/tensor.hpp"

#include <map>
#include <set>
#include <sstream>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/te/task.hpp"

namespace loom::te {
namespace {

// compute() records which tensors its body reads: Tensor::operator() reports to the innermost
// active recorder on this thread.
thread_local std::vector<std::vector<Tensor>*> g_recorders;

DType default_accum(DType t) {
  if (t.code() == DTypeCode::kF16 || t.code() == DTypeCode::kBF16) return DType::f32();
  if (t.code() == DTypeCode::kI8 || t.code() == DTypeCode::kBool) return DType::i32();
  return t;
}

ir::Expr make_reduce(ir::ReduceKind kind, ir::Expr source, std::vector<ir::IterVar> axes,
                     std::optional<DType> accum) {
  DType acc = accum ? *accum : default_accum(source.type());
  return ir::Reduce::make(kind, std::move(source), std::move(axes), acc);
}

}  // namespace

ir::Expr Tensor::operator()(std::vector<ir::Expr> indices) const {
  LOOM_CHECK(static_cast<int>(indices.size()) == rank(), "tensor ", name(), " of rank ", rank(),
             " indexed with ", indices.size(), " indices");
  if (!g_recorders.empty()) {
    auto& used = *g_recorders.back();
    bool seen = false;
    for (const Tensor& t : used) seen |= t.same_as(*this);
    if (!seen) used.push_back(*this);
  }
  for (ir::Expr& i : indices)
    if (i.type() != DType::i64()) i = ir::cast(DType::i64(), i);
  return node_->buffer.load(std::move(indices));
}

Tensor placeholder(std::string name, DType dtype, std::vector<ir::Expr> shape) {
  auto n = std::make_shared<TensorNode>();
  n->name = std::move(name);
  n->dtype = dtype;
  n->shape = std::move(shape);
  n->buffer = ir::Buffer::make(n->name, dtype, n->shape);
  return Tensor(std::move(n));
}

Tensor placeholder(std::string name, DType dtype, Layout layout) {
  auto n = std::make_shared<TensorNode>();
  n->name = std::move(name);
  n->dtype = dtype;
  n->shape = layout.shape();
  n->buffer = ir::Buffer::make(n->name, dtype, std::move(layout));
  return Tensor(std::move(n));
}

Tensor with_layout(const Tensor& t, Layout layout) {
  auto n = std::make_shared<TensorNode>(*t.node());
  n->buffer = ir::Buffer::make(n->name, n->dtype, std::move(layout));
  return Tensor(std::move(n));
}

Tensor compute(std::string name, std::vector<ir::Expr> shape,
               const std::function<ir::Expr(const std::vector<ir::Var>&)>& fcompute) {
  auto n = std::make_shared<TensorNode>();
  n->name = std::move(name);
  n->shape = std::move(shape);
  for (size_t i = 0; i < n->shape.size(); ++i)
    n->axes.emplace_back(n->name + "_i" + std::to_string(i));
  g_recorders.push_back(&n->inputs);
  n->body = fcompute(n->axes);
  g_recorders.pop_back();
  LOOM_CHECK(n->body.defined() && n->body.type().is_scalar(), "compute ", n->name,
             " body must be a scalar expression");
  n->dtype = n->body.type();
  n->buffer = ir::Buffer::make(n->name, n->dtype, n->shape);
  return Tensor(std::move(n));
}

ir::IterVar reduce_axis(ir::Expr extent, std::string name) {
  return ir::IterVar{ir::Var(std::move(name)), std::move(extent)};
}

ir::Expr sum(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum) {
  return make_reduce(ir::ReduceKind::kSum, std::move(source), std::move(axes), accum);
}
ir::Expr prod(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum) {
  return make_reduce(ir::ReduceKind::kProd, std::move(source), std::move(axes), accum);
}
ir::Expr max(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum) {
  return make_reduce(ir::ReduceKind::kMax, std::move(source), std::move(axes), accum);
}
ir::Expr min(ir::Expr source, std::vector<ir::IterVar> axes, std::optional<DType> accum) {
  return make_reduce(ir::ReduceKind::kMin, std::move(source), std::move(axes), accum);
}

// ---- Task ---------------------------------------------------------------------------------

absl::StatusOr<Task> Task::make(std::string name, std::vector<Tensor> inputs,
                                std::vector<Tensor> outputs) {
  Task task;
  task.name_ = std::move(name);
  task.inputs_ = std::move(inputs);
  task.outputs_ = std::move(outputs);
  if (task.outputs_.empty()) return absl::InvalidArgumentError("task " + task.name_ + " has no outputs");

  std::set<const TensorNode*> input_set, visited;
  for (const Tensor& t : task.inputs_) {
    if (!t.is_placeholder())
      return absl::InvalidArgumentError("task input " + t.name() + " is not a placeholder");
    input_set.insert(t.node().get());
  }
  // Post-order DFS gives producers before consumers.
  absl::Status status;
  std::function<void(const Tensor&)> visit = [&](const Tensor& t) {
    if (!status.ok() || visited.count(t.node().get())) return;
    visited.insert(t.node().get());
    if (t.is_placeholder()) {
      if (!input_set.count(t.node().get()))
        status = absl::InvalidArgumentError("task " + task.name_ + " reads tensor " + t.name() +
                                            " which is neither computed nor an input");
      return;
    }
    for (const Tensor& in : t->inputs) visit(in);
    task.computes_.push_back(t);
  };
  for (const Tensor& t : task.outputs_) {
    if (t.is_placeholder())
      return absl::InvalidArgumentError("task output " + t.name() + " is a placeholder");
    visit(t);
  }
  LOOM_RETURN_IF_ERROR(status);

  std::set<const ir::VarNode*> seen_vars;
  auto collect = [&](const Tensor& t) {
    for (const ir::Expr& e : t.shape()) {
      ir::for_each_expr(e, [&](const ir::Expr& x) {
        if (auto* v = x.as<ir::VarNode>(); v && seen_vars.insert(v).second)
          task.shape_vars_.push_back(ir::Var(x));
      });
    }
  };
  for (const Tensor& t : task.inputs_) collect(t);
  for (const Tensor& t : task.computes_) collect(t);
  return task;
}

bool Task::is_output(const Tensor& t) const {
  for (const Tensor& o : outputs_)
    if (o.same_as(t)) return true;
  return false;
}

std::string Task::to_string() const {
  std::ostringstream os;
  auto shape_text = [](const Tensor& t) {
    std::string s = t.dtype().to_string() + "[";
    for (int i = 0; i < t.rank(); ++i) s += (i ? ", " : "") + ir::to_string(t.shape()[i]);
    return s + "]";
  };
  os << "task " << name_ << "\n";
  // An input stored in another layout is read through it: part of the text (and so of the
  // kernel cache's key), as two such tasks compile to different kernels.
  for (const Tensor& t : inputs_) {
    os << "  input " << t.name() << ": " << shape_text(t);
    if (const Layout& l = t->buffer.layout(); !l.is_row_major()) os << " stored " << l.to_string();
    os << "\n";
  }
  for (const Tensor& t : computes_) {
    os << "  " << (is_output(t) ? "output " : "") << t.name() << "[";
    for (size_t i = 0; i < t->axes.size(); ++i) os << (i ? ", " : "") << t->axes[i].name();
    os << "]: " << shape_text(t) << " = " << t->body << "\n";
  }
  return os.str();
}

}  // namespace loom::te
