// Graph construction: nodes, the fluent Tensor methods and the operator registry.

#include "loom/graph/graph.hpp"

#include <limits>
#include <sstream>

#include "loom/core/status.hpp"
#include "loom/ops/attrs.hpp"
#include "ops/register.hpp"

namespace loom {
namespace {

// Element counts, byte sizes and offsets are int64 from here to the kernels, so a static shape
// whose bytes do not fit (dims from a hostile file, or an op that multiplies them) is an error
// here rather than an overflow later. Symbolic dims count as 1 until bound.
absl::Status check_size(const std::string& what, const TensorType& type) {
  int64_t bytes = type.dtype.bytes();
  for (const Dim& d : type.shape) {
    if (!d.is_static() || d.value() <= 0) {
      if (d.is_static() && d.value() == 0) return absl::OkStatus();
      continue;
    }
    if (bytes > std::numeric_limits<int64_t>::max() / d.value())
      return absl::InvalidArgumentError(str_cat(what, " has shape ", shape_to_string(type.shape),
                                                ": its size overflows 64 bits"));
    bytes *= d.value();
  }
  return absl::OkStatus();
}

}  // namespace

// ---- OpRegistry -----------------------------------------------------------------------------

OpRegistry& OpRegistry::global() {
  static OpRegistry* registry = [] {
    auto* r = new OpRegistry();
    ops::register_builtin_ops(*r);
    return r;
  }();
  return *registry;
}

absl::Status OpRegistry::add(OpDef def) {
  if (def.name.empty()) return absl::InvalidArgumentError("operator without a name");
  if (!def.infer || !def.compute)
    return absl::InvalidArgumentError("operator " + def.name + " lacks a shape rule or compute");
  std::lock_guard<std::mutex> lock(mu_);
  if (ops_.count(def.name)) return absl::AlreadyExistsError("operator " + def.name + " is already registered");
  std::string name = def.name;
  ops_[name] = std::make_shared<const OpDef>(std::move(def));
  return absl::OkStatus();
}

const OpDef* OpRegistry::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : it->second.get();
}

std::vector<std::string> OpRegistry::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, def] : ops_) out.push_back(name);
  return out;
}

// ---- Graph ----------------------------------------------------------------------------------

Tensor GraphImpl::fail(absl::Status s) {
  if (status.ok()) status = std::move(s);
  return Tensor();
}

Graph::Graph() : impl_(std::make_shared<GraphImpl>()) {}

Graph Graph::adopt(std::shared_ptr<GraphImpl> impl) {
  Graph g;
  g.impl_ = std::move(impl);
  return g;
}

Tensor Graph::input(const std::string& name, Shape shape, DType dtype) {
  for (const Dim& d : shape)
    if (d.is_static() && d.value() < 0)
      return impl_->fail(absl::InvalidArgumentError(
          "input " + name + " has a negative dimension in " + shape_to_string(shape)));
  if (!dtype.is_scalar())
    return impl_->fail(absl::InvalidArgumentError("input " + name + " has a vector dtype"));
  if (absl::Status s = check_size("input " + name, {shape, dtype}); !s.ok()) return impl_->fail(s);
  Node n;
  n.kind = Node::Kind::kInput;
  n.name = name;
  n.type = {std::move(shape), dtype};
  impl_->nodes.push_back(std::move(n));
  int id = static_cast<int>(impl_->nodes.size()) - 1;
  impl_->inputs.push_back(id);
  return Tensor(impl_, id);
}

Tensor Graph::constant(const std::string& name, NDArray value) {
  if (!value.data() && value.numel() > 0)
    return impl_->fail(absl::InvalidArgumentError("constant " + name + " has no data"));
  Node n;
  n.kind = Node::Kind::kConstant;
  n.name = name;
  Shape shape(value.shape().begin(), value.shape().end());
  n.type = {std::move(shape), value.dtype()};
  n.value = std::move(value);
  impl_->nodes.push_back(std::move(n));
  return Tensor(impl_, static_cast<int>(impl_->nodes.size()) - 1);
}

void Graph::output(const Tensor& t) {
  if (!t.valid()) {
    impl_->fail(absl::InvalidArgumentError("graph output is an invalid tensor"));
    return;
  }
  if (t.graph() != impl_.get()) {
    impl_->fail(absl::InvalidArgumentError("graph output " + t.name() + " belongs to another graph"));
    return;
  }
  impl_->outputs.push_back(t.id());
}

Tensor Graph::apply(const std::string& op, const std::vector<Tensor>& inputs,
                    std::shared_ptr<const OpAttrs> attrs) {
  if (!impl_->status.ok()) return Tensor();
  const OpDef* def = OpRegistry::global().find(op);
  if (!def) return impl_->fail(absl::NotFoundError("unknown operator " + op));
  std::vector<TensorType> types;
  std::vector<int> ids;
  for (const Tensor& t : inputs) {
    if (!t.valid()) return Tensor();  // the error was recorded where t was made
    if (t.graph() != impl_.get())
      return impl_->fail(absl::InvalidArgumentError(op + ": input " + t.name() +
                                                    " belongs to another graph"));
    types.push_back(t.graph()->nodes[t.id()].type);
    ids.push_back(t.id());
  }
  if (def->num_inputs >= 0 && static_cast<int>(inputs.size()) != def->num_inputs)
    return impl_->fail(absl::InvalidArgumentError(
        str_cat(op, " takes ", def->num_inputs, " inputs, got ", inputs.size())));
  if (!attrs) attrs = std::make_shared<NoAttrs>();
  const std::type_info& want = def->attrs_type ? *def->attrs_type : typeid(NoAttrs);
  const OpAttrs& given = *attrs;  // clang warns about typeid of an expression that calls a function
  if (typeid(given) != want)
    return impl_->fail(absl::InvalidArgumentError(op + " expects attributes of type " +
                                                  want.name() + ", got " + typeid(given).name()));
  absl::StatusOr<TensorType> type = def->infer(types, *attrs);
  if (!type.ok()) {
    std::string names;
    for (const Tensor& t : inputs) names += (names.empty() ? "" : ", ") + t.name() + ": " + t.dtype().to_string() + shape_to_string(t.shape());
    return impl_->fail(absl::Status(type.status().code(),
                                    op + "(" + names + "): " + std::string(type.status().message())));
  }
  if (!def->sets_layout) type->layout.clear();
  if (absl::Status s = check_size("the output of " + op, *type); !s.ok()) return impl_->fail(s);
  Node n;
  n.kind = Node::Kind::kOp;
  n.op = op;
  n.name = op + "_" + std::to_string(impl_->nodes.size());
  n.inputs = std::move(ids);
  n.attrs = std::move(attrs);
  n.type = *std::move(type);
  impl_->nodes.push_back(std::move(n));
  return Tensor(impl_, static_cast<int>(impl_->nodes.size()) - 1);
}

absl::Status Graph::status() const { return impl_->status; }

double Graph::flops() const {
  double total = 0;
  auto product = [](const Shape& s, size_t from, size_t to) {
    double p = 1;
    for (size_t d = from; d < to; ++d) p *= static_cast<double>(s[d].value());
    return p;
  };
  for (const Node& n : impl_->nodes) {
    if (n.kind != Node::Kind::kOp) continue;
    bool known = is_static(n.type.shape);
    for (int i : n.inputs) known = known && is_static(impl_->nodes[i].type.shape);
    if (!known) continue;
    const Shape& out = n.type.shape;
    const Shape& a = impl_->nodes[n.inputs[0]].type.shape;
    if (n.op == "matmul") {
      total += 2 * product(out, 0, out.size()) * static_cast<double>(a.back().value());
    } else if (n.op == "conv2d") {  // weight [O, C / groups, KH, KW]
      total += 2 * product(out, 0, 4) * product(impl_->nodes[n.inputs[1]].type.shape, 1, 4);
    } else if (n.op == "conv_transpose2d") {  // each input pixel meets O / groups x KH x KW taps
      total += 2 * product(a, 0, 4) * product(impl_->nodes[n.inputs[1]].type.shape, 1, 4);
    }
  }
  return total;
}

Graph Graph::clone() const { return adopt(std::make_shared<GraphImpl>(*impl_)); }

absl::StatusOr<Graph> Graph::bind_dims(const DimBindings& dims) const {
  LOOM_RETURN_IF_ERROR(impl_->status);
  Graph out = clone();
  // The given dims, and dims that only a shape rule defines (an op's output dim named after its
  // input's, like n/2) once the rule has given them a value.
  DimBindings known = dims;
  for (Node& n : out.impl_->nodes) {
    const Shape want = loom::bind_dims(n.type.shape, known);
    if (n.kind != Node::Kind::kOp) {
      n.type.shape = want;
      if (absl::Status s = check_size(str_cat("with ", bindings_to_string(dims), ": ", n.name),
                                      n.type);
          !s.ok())
        return s;
      continue;
    }
    if (n.attrs)
      if (std::shared_ptr<const OpAttrs> bound = n.attrs->bind_dims(known)) n.attrs = std::move(bound);
    const OpDef* def = OpRegistry::global().find(n.op);
    LOOM_CHECK(def, "node of unregistered op ", n.op);
    std::vector<TensorType> types;
    for (int i : n.inputs) types.push_back(out.impl_->nodes[i].type);
    static const NoAttrs kNoAttrs;
    absl::StatusOr<TensorType> type = def->infer(types, n.attrs ? *n.attrs : kNoAttrs);
    auto error = [&](absl::StatusCode code, const std::string& what) {
      return absl::Status(code, str_cat("with ", bindings_to_string(dims), ": ", n.op, " node '",
                                        n.name, "' ", what));
    };
    if (!type.ok()) return error(type.status().code(), std::string(type.status().message()));
    bool agrees = type->dtype == n.type.dtype && type->shape.size() == want.size();
    for (size_t k = 0; agrees && k < want.size(); ++k) {
      const Dim& got = type->shape[k];
      if (want[k].is_static() || got.is_symbolic()) {
        agrees = got == want[k];
      } else {
        known[want[k].name()] = got.value();
      }
    }
    if (!agrees)
      return error(absl::StatusCode::kInvalidArgument,
                   str_cat("gives ", type->to_string(), " where its symbolic type ",
                           n.type.to_string(), " promised ",
                           TensorType{want, n.type.dtype}.to_string()));
    n.type = *std::move(type);
    if (absl::Status s = check_size("output", n.type); !s.ok())
      return error(s.code(), std::string(s.message()));
  }
  return out;
}

const std::vector<Node>& Graph::nodes() const { return impl_->nodes; }
const std::vector<int>& Graph::inputs() const { return impl_->inputs; }
const std::vector<int>& Graph::outputs() const { return impl_->outputs; }

std::string Graph::to_string() const {
  std::ostringstream os;
  for (size_t i = 0; i < impl_->nodes.size(); ++i) {
    const Node& n = impl_->nodes[i];
    os << "%" << i << " " << n.name << ": " << n.type.to_string() << " = ";
    if (n.kind == Node::Kind::kInput) {
      os << "input";
    } else if (n.kind == Node::Kind::kConstant) {
      os << "constant";
    } else {
      os << n.op << "(";
      for (size_t k = 0; k < n.inputs.size(); ++k) os << (k ? ", " : "") << "%" << n.inputs[k];
      os << ")";
      std::string a = n.attrs ? n.attrs->to_string() : "";
      if (!a.empty()) os << " {" << a << "}";
    }
    os << "\n";
  }
  os << "outputs:";
  for (int o : impl_->outputs) os << " %" << o;
  return os.str() + "\n";
}

// ---- Tensor ---------------------------------------------------------------------------------

namespace {
const Node& node_of(const Tensor& t) {
  LOOM_CHECK(t.valid(), "use of an invalid tensor's properties");
  return t.graph()->nodes[t.id()];
}
}  // namespace

const Shape& Tensor::shape() const {
  static const Shape kEmpty;
  return valid() ? node_of(*this).type.shape : kEmpty;
}
DType Tensor::dtype() const { return valid() ? node_of(*this).type.dtype : DType(); }
const std::string& Tensor::name() const {
  static const std::string kInvalid = "<invalid>";
  return valid() ? node_of(*this).name : kInvalid;
}

Tensor Tensor::apply(const std::string& op, std::vector<Tensor> others,
                     std::shared_ptr<const OpAttrs> attrs) const {
  if (!valid()) return Tensor();
  others.insert(others.begin(), *this);
  return Graph::adopt(graph_).apply(op, others, std::move(attrs));
}

}  // namespace loom
