// CompiledGraph::run: input validation, symbolic-dim binding, buffer allocation, kernel calls.

#include <map>

#include "loom/core/status.hpp"
#include "runtime/compiled_graph_impl.hpp"

namespace loom {
namespace {

absl::StatusOr<std::vector<int64_t>> concrete_shape(const Shape& shape,
                                                    const std::map<std::string, int64_t>& symbols) {
  std::vector<int64_t> out;
  for (const Dim& d : shape) {
    if (d.is_static()) {
      out.push_back(d.value());
      continue;
    }
    auto it = symbols.find(d.name());
    if (it == symbols.end())
      return absl::InvalidArgumentError("symbolic dim " + d.name() + " is not bound by any input");
    out.push_back(it->second);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<NDArray>> CompiledGraph::run(const std::vector<NDArray>& inputs) const {
  if (!impl_) return absl::FailedPreconditionError("run() on an empty CompiledGraph");
  const CompiledGraphImpl& g = *impl_;
  if (inputs.size() != g.inputs.size())
    return absl::InvalidArgumentError(str_cat("graph takes ", g.inputs.size(), " inputs, got ", inputs.size()));

  // Check dtypes, ranks and static extents, and bind symbolic dims (consistently).
  std::map<std::string, int64_t> symbols;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Slot& s = g.slots[g.inputs[k]];
    const NDArray& a = inputs[k];
    std::string what = str_cat("input ", k, " (", s.name, ")");
    if (!a.data() && a.numel() > 0) return absl::InvalidArgumentError(what + " has no data");
    if (a.dtype() != s.type.dtype)
      return absl::InvalidArgumentError(what + " has dtype " + a.dtype().to_string() + ", expected " +
                                        s.type.dtype.to_string());
    if (a.rank() != static_cast<int>(s.type.shape.size()))
      return absl::InvalidArgumentError(str_cat(what, " has rank ", a.rank(), " (shape ",
                                                shape_to_string(a.shape()), "), expected rank ",
                                                s.type.shape.size(), " ", shape_to_string(s.type.shape)));
    for (int d = 0; d < a.rank(); ++d) {
      const Dim& want = s.type.shape[d];
      int64_t got = a.shape()[d];
      if (want.is_static() && want.value() != got)
        return absl::InvalidArgumentError(str_cat(what, " has shape ", shape_to_string(a.shape()),
                                                  ", expected ", shape_to_string(s.type.shape)));
      if (want.is_symbolic()) {
        auto [it, inserted] = symbols.emplace(want.name(), got);
        if (!inserted && it->second != got)
          return absl::InvalidArgumentError(str_cat(what, " has ", want.name(), " = ", got,
                                                    " but an earlier input bound it to ", it->second));
      }
    }
  }

  std::vector<NDArray> values(g.slots.size());
  for (size_t k = 0; k < inputs.size(); ++k) values[g.inputs[k]] = inputs[k];
  for (size_t i = 0; i < g.slots.size(); ++i) {
    const Slot& s = g.slots[i];
    if (s.kind == Slot::Kind::kConstant) values[i] = s.constant;
    if (s.kind != Slot::Kind::kComputed) continue;
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> shape, concrete_shape(s.type.shape, symbols));
    values[i] = NDArray(s.type.dtype, std::move(shape));
    if (g.poison_buffers) values[i].poison();
  }

  std::vector<void*> buffers;
  std::vector<int64_t> scalars;
  for (const Launch& l : g.launches) {
    buffers.clear();
    scalars.clear();
    for (int slot : l.buffers) buffers.push_back(values[slot].data());
    for (const std::string& sym : l.symbols) scalars.push_back(symbols.at(sym));
    l.fn(buffers.data(), scalars.data());
  }

  std::vector<NDArray> outputs;
  for (int o : g.outputs) {
    const Slot& s = g.slots[o];
    // An output that is an input or a constant is copied so callers never alias graph state.
    outputs.push_back(s.kind == Slot::Kind::kComputed ? values[o] : values[o].copy());
  }
  return outputs;
}

const std::vector<KernelInfo>& CompiledGraph::kernels() const {
  static const std::vector<KernelInfo> kNone;
  return impl_ ? impl_->kernels : kNone;
}

std::vector<std::string> CompiledGraph::input_names() const {
  std::vector<std::string> out;
  if (impl_)
    for (int i : impl_->inputs) out.push_back(impl_->slots[i].name);
  return out;
}

std::vector<TensorType> CompiledGraph::input_types() const {
  std::vector<TensorType> out;
  if (impl_)
    for (int i : impl_->inputs) out.push_back(impl_->slots[i].type);
  return out;
}

std::vector<TensorType> CompiledGraph::output_types() const {
  std::vector<TensorType> out;
  if (impl_)
    for (int i : impl_->outputs) out.push_back(impl_->slots[i].type);
  return out;
}

}  // namespace loom
