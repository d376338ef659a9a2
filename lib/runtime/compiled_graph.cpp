// CompiledGraph::run: input validation, symbolic-dim binding, buffer allocation, kernel calls.

#include <map>
#include <set>

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

// The graph's symbolic dims, by name, from its inputs' types.
std::set<std::string> symbolic_dims(const CompiledGraphImpl& g) {
  std::set<std::string> names;
  for (int i : g.inputs)
    for (const Dim& d : g.slots[i].type.shape)
      if (d.is_symbolic()) names.insert(d.name());
  return names;
}

}  // namespace

absl::StatusOr<CompiledGraph> Specializations::get(const DimBindings& dims) {
  std::promise<absl::StatusOr<CompiledGraph>> promise;
  Result result;
  uint64_t built_id = 0;  // set when this call builds the entry
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(dims);
    if (it != entries_.end()) {
      it->second.last_use = ++clock_;
      result = it->second.result;
    } else {
      if (entries_.size() >= capacity_ && !entries_.empty()) {
        auto lru = entries_.begin();
        for (auto e = entries_.begin(); e != entries_.end(); ++e)
          if (e->second.last_use < lru->second.last_use) lru = e;
        entries_.erase(lru);  // callers waiting on it hold their own copy of its future
      }
      result = promise.get_future().share();
      built_id = ++clock_;
      entries_[dims] = Entry{result, built_id, built_id};
    }
  }
  if (built_id) {
    absl::StatusOr<CompiledGraph> built = build_(dims);
    if (!built.ok()) {
      // Not kept: the next request tries again (and reports the error again).
      std::lock_guard<std::mutex> lock(mu_);
      auto it = entries_.find(dims);
      if (it != entries_.end() && it->second.id == built_id) entries_.erase(it);
    }
    promise.set_value(std::move(built));
  }
  return result.get();
}

size_t Specializations::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

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

  if (g.specializations) {
    LOOM_ASSIGN_OR_RETURN(CompiledGraph bound, specialize(symbols));
    return bound.run(inputs);
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

absl::StatusOr<CompiledGraph> CompiledGraph::specialize(const DimBindings& dims) const {
  if (!impl_) return absl::FailedPreconditionError("specialize() on an empty CompiledGraph");
  const std::set<std::string> names = symbolic_dims(*impl_);
  std::string all;
  for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
  bool zero = false;
  for (const auto& [name, value] : dims) {
    if (!names.count(name))
      return absl::InvalidArgumentError(
          "the graph has no symbolic dim '" + name + "'" +
          (names.empty() ? std::string(" (its shapes are static)") : " (it has " + all + ")"));
    if (value < 0)
      return absl::InvalidArgumentError(str_cat("symbolic dim ", name, " = ", value, " is negative"));
    zero = zero || value == 0;
  }
  for (const std::string& n : names)
    if (!dims.count(n)) return absl::InvalidArgumentError("symbolic dim " + n + " is not bound");
  if (!impl_->specializations) return *this;
  // Empty tensors run on the generic kernels (the empty binding), not on templates of their own.
  return impl_->specializations->get(zero ? DimBindings{} : dims);
}

size_t CompiledGraph::num_specializations() const {
  return impl_ && impl_->specializations ? impl_->specializations->size() : 0;
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
