// CompiledGraph::run: input validation, symbolic-dim binding, buffer allocation, kernel calls.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <set>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/runtime/guard_pages.hpp"
#include "runtime/compiled_graph_impl.hpp"
#include "runtime/gpu_graph.hpp"

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

// Calls every kernel in order on the buffers of values.
void launch_all(const CompiledGraphImpl& g, std::vector<NDArray>& values,
                const std::map<std::string, int64_t>& symbols, std::vector<double>* launch_ms) {
  std::vector<void*> buffers;
  std::vector<int64_t> scalars;
  for (const Launch& l : g.launches) {
    buffers.clear();
    scalars.clear();
    // Poisoned right before the kernel that writes it: arena bytes are shared over time.
    if (g.poison_buffers) values[l.buffers.back()].poison();
    for (int slot : l.buffers) buffers.push_back(values[slot].data());
    for (const std::string& sym : l.symbols) scalars.push_back(symbols.at(sym));
    if (!launch_ms) {
      l.fn(buffers.data(), scalars.data());
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    l.fn(buffers.data(), scalars.data());
    launch_ms->push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
}

// run() in guard-page mode (loom/runtime/guard_pages.hpp): every buffer a kernel sees, inputs
// and constants included, is a copy in a mapping of its own that ends at (or starts after) an
// inaccessible page, so an out-of-bounds access faults; outputs are copied out afterwards.
absl::StatusOr<std::vector<NDArray>> run_guarded(const CompiledGraphImpl& g,
                                                 const std::vector<NDArray>& inputs,
                                                 const std::vector<std::vector<int64_t>>& shapes,
                                                 const std::map<std::string, int64_t>& symbols,
                                                 runtime::GuardPages guard,
                                                 std::vector<double>* launch_ms) {
  std::vector<std::shared_ptr<void>> blocks;  // own the mappings until the outputs are copied
  auto place = [&](DType dtype, const std::vector<int64_t>& shape,
                   const NDArray* from) -> absl::StatusOr<NDArray> {
    const int64_t bytes = num_elements(shape) * dtype.bytes();
    std::shared_ptr<void> block = runtime::allocate_guarded(bytes, guard);
    if (!block) return absl::ResourceExhaustedError(str_cat("cannot map ", bytes, " guarded bytes"));
    if (from && bytes > 0) std::memcpy(block.get(), from->data(), static_cast<size_t>(bytes));
    blocks.push_back(block);
    return NDArray::borrow(block.get(), dtype, shape);
  };
  std::vector<NDArray> values(g.slots.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    LOOM_ASSIGN_OR_RETURN(values[g.inputs[k]],
                          place(inputs[k].dtype(), inputs[k].shape(), &inputs[k]));
  }
  for (size_t i = 0; i < g.slots.size(); ++i) {
    const Slot& s = g.slots[i];
    if (s.kind == Slot::Kind::kConstant) {
      LOOM_ASSIGN_OR_RETURN(values[i], place(s.constant.dtype(), s.constant.shape(), &s.constant));
    } else if (s.kind == Slot::Kind::kComputed) {
      LOOM_ASSIGN_OR_RETURN(values[i], place(s.type.dtype, shapes[i], nullptr));
    }
  }
  launch_all(g, values, symbols, launch_ms);
  std::vector<NDArray> outputs;
  for (int o : g.outputs) outputs.push_back(values[o].copy());
  return outputs;
}

}  // namespace

OutputBuffers::~OutputBuffers() {
  for (const auto& [bytes, buffer] : waiting_) std::free(buffer);
}

absl::StatusOr<NDArray> OutputBuffers::take(DType dtype, std::vector<int64_t> shape) {
  // Empty outputs, and sizes that do not fit, are NDArray::allocate's (which says what is wrong).
  int64_t bytes = dtype.bytes();
  bool unusual = false;
  for (int64_t e : shape)
    unusual = unusual || e < 0 || __builtin_mul_overflow(bytes, e, &bytes) ||
              bytes > INT64_MAX - 63;
  if (unusual || bytes == 0) return NDArray::allocate(dtype, std::move(shape));
  const size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
  void* buffer = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = waiting_.rbegin(); it != waiting_.rend(); ++it)
      if (it->first == rounded) {
        buffer = it->second;
        waiting_.erase(std::next(it).base());
        break;
      }
  }
  if (!buffer && !(buffer = std::aligned_alloc(64, rounded)))
    return absl::ResourceExhaustedError(str_cat("cannot allocate ", bytes, " bytes for ",
                                                dtype.to_string(), shape_to_string(shape)));
  std::weak_ptr<OutputBuffers> home = weak_from_this();
  std::shared_ptr<void> storage(buffer, [home, rounded](void* b) {
    if (std::shared_ptr<OutputBuffers> pool = home.lock())
      pool->give_back(b, rounded);
    else
      std::free(b);
  });
  return NDArray::adopt(std::move(storage), dtype, std::move(shape));
}

void OutputBuffers::give_back(void* buffer, size_t bytes) {
  void* evicted = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting_.emplace_back(bytes, buffer);
    if (waiting_.size() > kKeep) {
      evicted = waiting_.front().second;
      waiting_.erase(waiting_.begin());
    }
  }
  std::free(evicted);
}

MemoryPlan plan_memory(const CompiledGraphImpl& g, const std::vector<std::vector<int64_t>>& shapes) {
  constexpr int64_t kAlign = 64;
  const size_t n = g.slots.size();
  MemoryPlan plan;
  plan.offsets.assign(n, -1);
  std::vector<bool> is_output(n, false);
  for (int o : g.outputs) is_output[static_cast<size_t>(o)] = true;
  std::vector<int> last_use(n, -1);
  for (size_t l = 0; l < g.launches.size(); ++l)
    for (int slot : g.launches[l].buffers) last_use[static_cast<size_t>(slot)] = static_cast<int>(l);
  plan.used.assign(n, false);
  for (size_t i = 0; i < n; ++i) plan.used[i] = is_output[i] || last_use[i] >= 0;
  auto size_of = [&](size_t slot) {
    int64_t bytes = num_elements(shapes[slot]) * g.slots[slot].type.dtype.bytes();
    return std::max<int64_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  };
  std::map<int64_t, int64_t> free_blocks;  // offset -> bytes, coalesced
  auto release = [&](int64_t offset, int64_t bytes) {
    auto next = free_blocks.lower_bound(offset);
    if (next != free_blocks.end() && offset + bytes == next->first) {
      bytes += next->second;
      next = free_blocks.erase(next);
    }
    if (next != free_blocks.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += bytes;
        return;
      }
    }
    free_blocks[offset] = bytes;
  };
  for (size_t l = 0; l < g.launches.size(); ++l) {
    const size_t out = static_cast<size_t>(g.launches[l].buffers.back());
    if (g.slots[out].kind == Slot::Kind::kComputed && !is_output[out] && plan.offsets[out] < 0) {
      const int64_t bytes = size_of(out);
      auto best = free_blocks.end();
      for (auto it = free_blocks.begin(); it != free_blocks.end(); ++it)
        if (it->second >= bytes && (best == free_blocks.end() || it->second < best->second))
          best = it;
      if (best != free_blocks.end()) {
        plan.offsets[out] = best->first;
        const int64_t rest = best->second - bytes, at = best->first + bytes;
        free_blocks.erase(best);
        if (rest > 0) free_blocks[at] = rest;
      } else {
        plan.offsets[out] = plan.bytes;
        plan.bytes += bytes;
      }
    }
    for (int slot : g.launches[l].buffers) {
      const size_t s = static_cast<size_t>(slot);
      if (plan.offsets[s] >= 0 && last_use[s] == static_cast<int>(l)) {
        release(plan.offsets[s], size_of(s));
        last_use[s] = -2;  // released once even when a kernel reads it twice
      }
    }
  }
  return plan;
}

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
  return run(inputs, nullptr);
}

absl::StatusOr<std::vector<double>> CompiledGraph::profile(const std::vector<NDArray>& inputs,
                                                           int runs) const {
  if (runs < 1) return absl::InvalidArgumentError(str_cat("profile() needs runs >= 1, got ", runs));
  std::vector<std::vector<double>> times;
  for (int r = 0; r <= runs; ++r) {
    std::vector<double> ms;
    LOOM_RETURN_IF_ERROR(run(inputs, &ms).status());
    if (r == 0) {  // warm-up
      times.assign(ms.size(), {});
      continue;
    }
    for (size_t k = 0; k < ms.size() && k < times.size(); ++k) times[k].push_back(ms[k]);
  }
  std::vector<double> median;
  for (std::vector<double>& t : times) {
    std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2), t.end());
    median.push_back(t[t.size() / 2]);
  }
  return median;
}

namespace {

// What is checked of one input, an NDArray or a DeviceTensor.
struct InputView {
  DType dtype;
  const std::vector<int64_t>& shape;
  bool has_data;
};

// Checks the inputs' count, dtypes, ranks and static extents against the graph's, and binds its
// symbolic dims (consistently).
absl::StatusOr<std::map<std::string, int64_t>> bind_inputs(const CompiledGraphImpl& g,
                                                           const std::vector<InputView>& inputs) {
  if (inputs.size() != g.inputs.size())
    return absl::InvalidArgumentError(str_cat("graph takes ", g.inputs.size(), " inputs, got ", inputs.size()));
  std::map<std::string, int64_t> symbols;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Slot& s = g.slots[g.inputs[k]];
    const InputView& a = inputs[k];
    const int rank = static_cast<int>(a.shape.size());
    // Named only for an error: a run with good inputs builds no strings.
    auto what = [&] { return str_cat("input ", k, " (", s.name, ")"); };
    if (!a.has_data && num_elements(a.shape) > 0) return absl::InvalidArgumentError(what() + " has no data");
    if (a.dtype != s.type.dtype)
      return absl::InvalidArgumentError(what() + " has dtype " + a.dtype.to_string() + ", expected " +
                                        s.type.dtype.to_string());
    if (rank != static_cast<int>(s.type.shape.size()))
      return absl::InvalidArgumentError(str_cat(what(), " has rank ", rank, " (shape ",
                                                shape_to_string(a.shape), "), expected rank ",
                                                s.type.shape.size(), " ", shape_to_string(s.type.shape)));
    for (int d = 0; d < rank; ++d) {
      const Dim& want = s.type.shape[d];
      int64_t got = a.shape[d];
      if (want.is_static() && want.value() != got)
        return absl::InvalidArgumentError(str_cat(what(), " has shape ", shape_to_string(a.shape),
                                                  ", expected ", shape_to_string(s.type.shape)));
      if (want.is_symbolic()) {
        auto [it, inserted] = symbols.emplace(want.name(), got);
        if (!inserted && it->second != got)
          return absl::InvalidArgumentError(str_cat(what(), " has ", want.name(), " = ", got,
                                                    " but an earlier input bound it to ", it->second));
      }
    }
  }
  return symbols;
}

// Each computed slot's extents for the bound dims; a value stored in another layout takes its
// physical elements (padding included).
absl::StatusOr<std::vector<std::vector<int64_t>>> shapes_for(
    const CompiledGraphImpl& g, const std::map<std::string, int64_t>& symbols) {
  std::vector<std::vector<int64_t>> shapes(g.slots.size());
  for (size_t i = 0; i < g.slots.size(); ++i) {
    if (g.slots[i].kind != Slot::Kind::kComputed) continue;
    LOOM_ASSIGN_OR_RETURN(shapes[i], concrete_shape(g.slots[i].type.shape, symbols));
    if (const std::vector<LayoutStep>& steps = g.slots[i].type.layout; !steps.empty()) {
      std::vector<ir::Expr> extents;
      for (int64_t e : shapes[i]) extents.push_back(ir::Expr(e));
      std::optional<int64_t> size = ir::as_const_int(Layout::of(extents, steps).physical_size());
      if (!size) return absl::InternalError("layout of " + g.slots[i].name + " has no static size");
      shapes[i] = {*size};
    }
  }
  return shapes;
}

// The computed slots' shapes for the bound symbols: a static graph's worked out once.
absl::StatusOr<std::vector<std::vector<int64_t>>> computed_shapes(
    const CompiledGraphImpl& g, const std::map<std::string, int64_t>& symbols) {
  if (!symbols.empty()) return shapes_for(g, symbols);
  std::call_once(g.static_shapes_once, [&] { g.static_shapes = shapes_for(g, symbols); });
  return g.static_shapes;
}

}  // namespace

absl::StatusOr<std::vector<NDArray>> CompiledGraph::run(const std::vector<NDArray>& inputs,
                                                        std::vector<double>* launch_ms) const {
  if (!impl_) return absl::FailedPreconditionError("run() on an empty CompiledGraph");
  const CompiledGraphImpl& g = *impl_;
  std::vector<InputView> views;
  for (const NDArray& a : inputs) views.push_back({a.dtype(), a.shape(), a.data() != nullptr});
  LOOM_ASSIGN_OR_RETURN(const auto symbols, bind_inputs(g, views));

  if (g.specializations) {
    LOOM_ASSIGN_OR_RETURN(CompiledGraph bound, specialize(symbols));
    return bound.run(inputs, launch_ms);
  }

  // Outputs get arrays of their own; every other computed value lives in the arena at the
  // offset the plan gives it, reusing the bytes of values no later kernel reads.
  LOOM_ASSIGN_OR_RETURN(const std::vector<std::vector<int64_t>> shapes, computed_shapes(g, symbols));
  if (g.gpu) return run_gpu(g, shapes, {.host_inputs = &inputs, .launch_ms = launch_ms});
  if (const runtime::GuardPages guard = runtime::guard_pages(); guard != runtime::GuardPages::kOff)
    return run_guarded(g, inputs, shapes, symbols, guard, launch_ms);
  // Static graphs plan once; graphs run with symbolic dims plan per run (their sizes vary).
  MemoryPlan dynamic_plan;
  if (symbols.empty()) {
    std::call_once(g.static_plan_once, [&] { g.static_plan = plan_memory(g, shapes); });
  } else {
    dynamic_plan = plan_memory(g, shapes);
  }
  const MemoryPlan& plan = symbols.empty() ? g.static_plan : dynamic_plan;
  Arena arena = g.arenas.take();
  if (plan.bytes > 0 && arena.bytes < plan.bytes) {
    arena.data.reset(std::aligned_alloc(64, static_cast<size_t>(plan.bytes)), std::free);
    if (!arena.data) return absl::ResourceExhaustedError(str_cat("cannot allocate ", plan.bytes,
                                                                 " bytes for intermediate values"));
    arena.bytes = plan.bytes;
  }
  std::vector<NDArray> values(g.slots.size());
  for (size_t k = 0; k < inputs.size(); ++k) values[g.inputs[k]] = inputs[k];
  for (size_t i = 0; i < g.slots.size(); ++i) {
    const Slot& s = g.slots[i];
    if (s.kind == Slot::Kind::kConstant) values[i] = s.constant;
    if (s.kind != Slot::Kind::kComputed) continue;
    if (plan.offsets[i] >= 0) {
      values[i] = NDArray::borrow(static_cast<char*>(arena.data.get()) + plan.offsets[i],
                                  s.type.dtype, shapes[i]);
      continue;
    }
    if (!plan.used[i]) continue;  // fused into the kernels that read it: never stored
    // An output: its size comes from the inputs' dims, so a failed allocation is an error.
    absl::StatusOr<NDArray> output = g.output_buffers->take(s.type.dtype, shapes[i]);
    if (!output.ok()) {
      g.arenas.give_back(std::move(arena));
      return absl::Status(output.status().code(),
                          str_cat("output ", s.name, ": ", output.status().message()));
    }
    values[i] = *std::move(output);
  }

  launch_all(g, values, symbols, launch_ms);
  g.arenas.give_back(std::move(arena));

  std::vector<NDArray> outputs;
  for (int o : g.outputs) {
    const Slot& s = g.slots[o];
    // An output that is an input or a constant is copied so callers never alias graph state.
    outputs.push_back(s.kind == Slot::Kind::kComputed ? values[o] : values[o].copy());
  }
  return outputs;
}

absl::Status CompiledGraph::run_on_device(const std::vector<DeviceTensor>& inputs,
                                          const std::vector<DeviceTensor>& outputs) const {
  return run_device(inputs, outputs, /*enqueue=*/false, nullptr);
}

absl::Status CompiledGraph::enqueue_on_device(const std::vector<DeviceTensor>& inputs,
                                              const std::vector<DeviceTensor>& outputs,
                                              void* stream) const {
  return run_device(inputs, outputs, /*enqueue=*/true, stream);
}

absl::Status CompiledGraph::run_device(const std::vector<DeviceTensor>& inputs,
                                       const std::vector<DeviceTensor>& outputs, bool enqueue,
                                       void* stream) const {
  if (!impl_) return absl::FailedPreconditionError("run_on_device() on an empty CompiledGraph");
  const CompiledGraphImpl& g = *impl_;
  std::vector<InputView> views;
  for (const DeviceTensor& t : inputs) views.push_back({t.dtype, t.shape, t.address != 0});
  LOOM_ASSIGN_OR_RETURN(const auto symbols, bind_inputs(g, views));
  if (g.specializations) {
    LOOM_ASSIGN_OR_RETURN(CompiledGraph bound, specialize(symbols));
    return bound.run_device(inputs, outputs, enqueue, stream);
  }
  if (!g.gpu)
    return absl::FailedPreconditionError(
        "run_on_device() needs a graph compiled for a CUDA target; this one runs on the CPU "
        "(use run())");
  LOOM_ASSIGN_OR_RETURN(const std::vector<std::vector<int64_t>> shapes, computed_shapes(g, symbols));
  if (outputs.size() != g.outputs.size())
    return absl::InvalidArgumentError(
        str_cat("graph has ", g.outputs.size(), " outputs, got ", outputs.size(), " to write"));
  for (size_t k = 0; k < outputs.size(); ++k) {
    const Slot& s = g.slots[static_cast<size_t>(g.outputs[k])];
    std::vector<int64_t> want = shapes[static_cast<size_t>(g.outputs[k])];
    if (s.kind != Slot::Kind::kComputed) {
      LOOM_ASSIGN_OR_RETURN(want, concrete_shape(s.type.shape, symbols));
    }
    const DeviceTensor& t = outputs[k];
    auto what = [&] { return str_cat("output ", k, " (", s.name, ")"); };
    if (t.dtype != s.type.dtype)
      return absl::InvalidArgumentError(what() + " has dtype " + t.dtype.to_string() +
                                        ", expected " + s.type.dtype.to_string());
    if (t.shape != want)
      return absl::InvalidArgumentError(str_cat(what(), " has shape ", shape_to_string(t.shape),
                                                ", expected ", shape_to_string(want)));
    if (t.address == 0 && num_elements(want) > 0)
      return absl::InvalidArgumentError(what() + " has a null device address");
  }
  // Kernels read and write 16 bytes at a time (vector loads, cp.async).
  auto misaligned = [](const std::vector<DeviceTensor>& ts, const char* what) {
    for (size_t k = 0; k < ts.size(); ++k)
      if (ts[k].address % kDeviceAlignment != 0)
        return absl::InvalidArgumentError(
            str_cat(what, " ", k, " has device address ", ts[k].address, ", not a multiple of ",
                    kDeviceAlignment, " bytes (the GPU's allocations are)"));
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(misaligned(inputs, "input"));
  LOOM_RETURN_IF_ERROR(misaligned(outputs, "output"));
  GpuRun run{.device_inputs = &inputs, .device_outputs = &outputs, .enqueue = enqueue,
             .stream = static_cast<runtime::cuda::Stream>(stream)};
  return run_gpu(g, shapes, run).status();
}

absl::StatusOr<CompiledGraph> CompiledGraph::specialize(const DimBindings& dims) const {
  if (!impl_) return absl::FailedPreconditionError("specialize() on an empty CompiledGraph");
  const std::set<std::string> names = symbolic_dims(*impl_);
  bool zero = false;
  for (const auto& [name, value] : dims) {
    if (!names.count(name)) {
      std::string all;
      for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
      return absl::InvalidArgumentError(
          "the graph has no symbolic dim '" + name + "'" +
          (names.empty() ? std::string(" (its shapes are static)") : " (it has " + all + ")"));
    }
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

absl::StatusOr<CompiledGraph> CompiledGraph::instance() const {
  if (!impl_) return absl::FailedPreconditionError("instance() of an empty CompiledGraph");
  const CompiledGraphImpl& g = *impl_;
  if (g.specializations)
    return absl::FailedPreconditionError(
        "instance() of a graph compiled per binding of its symbolic dims: each binding is a "
        "compiled graph of its own; take the instance of specialize(dims)");
  auto out = std::make_shared<CompiledGraphImpl>();
  out->jit = g.jit;  // compiled code, shared
  out->slots = g.slots;
  out->inputs = g.inputs;
  out->outputs = g.outputs;
  out->launches = g.launches;
  out->kernels = g.kernels;
  out->graph = g.graph;
  out->poison_buffers = g.poison_buffers;
  if (g.gpu) {
    // The modules again (each instance loads them on its first run: a module's memory, split-K's
    // partials among it, belongs to its runs); no device state (the constants on the device are
    // shared all the same: runtime/gpu_graph.hpp).
    auto gpu = std::make_shared<GpuProgram>();
    gpu->ordinal = g.gpu->ordinal;
    gpu->cuda_graphs = g.gpu->cuda_graphs;
    gpu->run_timeout_s = g.gpu->run_timeout_s;
    gpu->parts = g.gpu->parts;
    gpu->kernel_at = g.gpu->kernel_at;
    out->gpu = std::move(gpu);
  }
  return CompiledGraph(std::move(out));
}

absl::StatusOr<MemoryUse> CompiledGraph::memory_use(const DimBindings& dims) const {
  if (!impl_) return absl::FailedPreconditionError("memory_use() of an empty CompiledGraph");
  LOOM_ASSIGN_OR_RETURN(const CompiledGraph bound, specialize(dims));  // checks the binding
  // A binding's own graph: static, or (a zero extent) the generic kernels with the dims.
  if (bound.impl_ != impl_)
    return bound.memory_use(symbolic_dims(*bound.impl_).empty() ? DimBindings{} : dims);
  const CompiledGraphImpl& g = *impl_;
  LOOM_ASSIGN_OR_RETURN(const std::vector<std::vector<int64_t>> shapes, computed_shapes(g, dims));
  MemoryUse use;
  if (g.gpu) {
    const GpuMemoryLayout layout = gpu_memory_layout(g, shapes);
    use.constants = layout.constants;
    use.intermediates = layout.intermediates;
    use.host_inputs_outputs = layout.io_bytes;
  } else {
    for (const Slot& s : g.slots)
      if (s.kind == Slot::Kind::kConstant) use.constants += s.constant.nbytes();
    use.intermediates = plan_memory(g, shapes).bytes;
  }
  return use;
}

size_t CompiledGraph::num_specializations() const {
  return impl_ && impl_->specializations ? impl_->specializations->size() : 0;
}

const std::vector<KernelInfo>& CompiledGraph::kernels() const {
  static const std::vector<KernelInfo> kNone;
  return impl_ ? impl_->kernels : kNone;
}

const Graph& CompiledGraph::graph() const {
  static const Graph kEmpty;
  return impl_ ? impl_->graph : kEmpty;
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
