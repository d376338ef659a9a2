// Running a graph compiled for a CUDA target: device memory laid out once (the constants, shared
// with other graphs holding the same bytes; a block for the intermediates' plan; one for the
// inputs and outputs of runs from the host), kernels launched on one stream.

#include "runtime/gpu_graph.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include "loom/core/status.hpp"
#include "runtime/hung_devices.hpp"

namespace loom {
namespace {

using runtime::cuda::DevicePtr;
using runtime::cuda::Driver;

constexpr int64_t kAlign = 256;  // cudaMalloc's alignment; vector loads need 16

int64_t aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// s with "what: " before its message.
absl::Status during(const absl::Status& s, const std::string& what) {
  return s.ok() ? s : absl::Status(s.code(), what + ": " + std::string(s.message()));
}

// The bytes of slot i's value: its constant, its static input shape, or its computed shape.
int64_t slot_bytes(const CompiledGraphImpl& g, size_t i,
                   const std::vector<std::vector<int64_t>>& shapes) {
  const Slot& s = g.slots[i];
  switch (s.kind) {
    case Slot::Kind::kConstant:
      return s.constant.numel() * s.constant.dtype().bytes();
    case Slot::Kind::kInput: {
      int64_t n = 1;
      for (const Dim& d : s.type.shape) n *= d.value();  // GPU graphs are static
      return n * s.type.dtype.bytes();
    }
    case Slot::Kind::kComputed:
      return num_elements(shapes[i]) * s.type.dtype.bytes();
  }
  return 0;
}

// Whether the device bytes at `at` are host's (read back a chunk at a time; a failed copy reads
// as unequal).
bool equal_on_device(Driver& driver, DevicePtr at, const NDArray& host) {
  const auto* bytes = static_cast<const unsigned char*>(host.data());
  const size_t n = static_cast<size_t>(host.nbytes());
  std::vector<unsigned char> chunk(std::min<size_t>(n, size_t{1} << 20));
  for (size_t done = 0; done < n; done += chunk.size()) {
    const size_t len = std::min(chunk.size(), n - done);
    if (!driver.copy_to_host(chunk.data(), at + static_cast<DevicePtr>(done), len).ok() ||
        std::memcmp(chunk.data(), bytes + done, len) != 0)
      return false;
  }
  return true;
}

// The constants on each device that some run state holds, by their bytes: a set-up finds
// there the constants another graph's (or instance's) set-up uploaded, compared byte for byte,
// and uploads only the others, into one block. The comparison reads the host bytes of a graph
// holding them where one lives, else the device copy (and the graph being set up then stands
// for the host bytes): sharing a device constant keeps no host data alive. A constant's host
// data must not change while a graph compiled with it lives (a CPU graph's runs read it there
// too).
class DeviceConstantPool {
 public:
  static DeviceConstantPool& global() {
    static DeviceConstantPool* pool = new DeviceConstantPool;  // outlives every graph
    return *pool;
  }

  // The device copies of the graph's constant slots with data, in slot order, on device
  // `ordinal` (whose primary context is current).
  absl::StatusOr<std::vector<std::shared_ptr<DeviceConstant>>> acquire(const CompiledGraphImpl& g,
                                                                       Driver& driver,
                                                                       int ordinal) {
    std::vector<size_t> slots;
    for (size_t i = 0; i < g.slots.size(); ++i)
      if (g.slots[i].kind == Slot::Kind::kConstant && g.slots[i].constant.nbytes() > 0)
        slots.push_back(i);
    std::lock_guard<std::mutex> lock(mu_);
    // The constants nothing holds any more leave the pool (a process compiling graph after
    // graph would otherwise keep an entry for each constant it ever uploaded).
    for (auto it = uploaded_.begin(); it != uploaded_.end();)
      it = it->second.expired() ? uploaded_.erase(it) : std::next(it);
    std::vector<std::shared_ptr<DeviceConstant>> out(slots.size());
    std::vector<int64_t> at(slots.size(), -1);  // a new one's offset in the block
    int64_t bytes = 0;
    for (size_t k = 0; k < slots.size(); ++k) {
      out[k] = find(driver, ordinal, g, slots[k]);
      if (out[k]) continue;
      at[k] = bytes;
      bytes += aligned(g.slots[slots[k]].constant.nbytes());
    }
    if (bytes == 0) return out;
    auto block = std::make_shared<DeviceBlock>();
    LOOM_ASSIGN_OR_RETURN(block->context, driver.retain_primary_context(ordinal));
    block->driver = &driver;
    block->ordinal = ordinal;
    LOOM_ASSIGN_OR_RETURN(block->address, driver.allocate(static_cast<size_t>(bytes)));
    for (size_t k = 0; k < slots.size(); ++k) {
      if (at[k] < 0) continue;
      const Slot& s = g.slots[slots[k]];
      auto c = std::make_shared<DeviceConstant>();
      c->block = block;
      c->address = block->address + static_cast<DevicePtr>(at[k]);
      c->host_graph = g.weak_from_this();
      c->host_slot = slots[k];
      LOOM_RETURN_IF_ERROR(during(driver.copy_to_device(c->address, s.constant.data(),
                                                        static_cast<size_t>(s.constant.nbytes())),
                                  "uploading constant '" + s.name + "'"));
      out[k] = std::move(c);
    }
    for (size_t k = 0; k < slots.size(); ++k)
      if (at[k] >= 0) uploaded_.emplace(key(ordinal, g.slots[slots[k]].constant), out[k]);
    return out;
  }

  // After a hang on the device: later set-ups upload their own (the hung kernels keep theirs).
  void forget(int ordinal) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = uploaded_.begin(); it != uploaded_.end();)
      it = std::get<0>(it->first) == ordinal ? uploaded_.erase(it) : std::next(it);
  }

 private:
  // (device, bytes, a hash of a few of them): the constants that may be equal.
  using Key = std::tuple<int, int64_t, uint64_t>;
  static Key key(int ordinal, const NDArray& a) {
    const auto* bytes = static_cast<const unsigned char*>(a.data());
    const size_t n = static_cast<size_t>(a.nbytes());
    uint64_t h = 0xcbf29ce484222325ull;
    auto mix = [&](size_t from) {
      for (size_t i = from; i < std::min(n, from + 64); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
    };
    mix(0);
    if (n > 64) mix(n / 2);
    if (n > 128) mix(n - 64);
    return {ordinal, a.nbytes(), h};
  }

  // A live device copy of the bytes of g's slot i (under mu_), else null.
  std::shared_ptr<DeviceConstant> find(Driver& driver, int ordinal, const CompiledGraphImpl& g,
                                       size_t i) {
    const NDArray& host = g.slots[i].constant;
    auto [first, last] = uploaded_.equal_range(key(ordinal, host));
    for (auto it = first; it != last; ++it) {
      std::shared_ptr<DeviceConstant> c = it->second.lock();
      if (!c) continue;
      if (std::shared_ptr<const CompiledGraphImpl> other = c->host_graph.lock()) {
        const void* bytes = other->slots[c->host_slot].constant.data();
        if (bytes == host.data() ||
            std::memcmp(bytes, host.data(), static_cast<size_t>(host.nbytes())) == 0)
          return c;
      } else if (equal_on_device(driver, c->address, host)) {
        c->host_graph = g.weak_from_this();
        c->host_slot = i;
        return c;
      }
    }
    return nullptr;
  }

  std::mutex mu_;
  std::multimap<Key, std::weak_ptr<DeviceConstant>> uploaded_;
};

absl::StatusOr<std::unique_ptr<GpuProgram::Device>> prepare(
    const CompiledGraphImpl& g, const GpuProgram& p,
    const std::vector<std::vector<int64_t>>& shapes) {
  auto d = std::make_unique<GpuProgram::Device>();
  LOOM_ASSIGN_OR_RETURN(d->driver, Driver::get());
  Driver& driver = *d->driver;
  LOOM_ASSIGN_OR_RETURN(d->context, driver.retain_primary_context(p.ordinal));
  d->ordinal = p.ordinal;
  LOOM_RETURN_IF_ERROR(driver.set_current(d->context));
  for (const GpuProgram::Part& part : p.parts) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<runtime::cuda::LoadedModule> loaded,
                          runtime::cuda::LoadedModule::load(part.module, part.compiled, p.ordinal));
    d->loaded.push_back(std::move(loaded));
  }
  LOOM_ASSIGN_OR_RETURN(d->stream, driver.create_stream());
  LOOM_ASSIGN_OR_RETURN(d->done, driver.create_event());
  // As if a run had just ended on the graph's stream (nothing to wait for).
  LOOM_RETURN_IF_ERROR(driver.record_event(d->done, d->stream));
  d->last_stream = d->stream;

  GpuMemoryLayout layout = gpu_memory_layout(g, shapes);
  const MemoryPlan& plan = layout.plan;
  d->io_at = std::move(layout.io_at);
  d->io_bytes = layout.io_bytes;
  if (layout.intermediates > 0) {
    LOOM_ASSIGN_OR_RETURN(d->memory, driver.allocate(static_cast<size_t>(layout.intermediates)));
  }
  const size_t n = g.slots.size();
  d->address.assign(n, 0);
  LOOM_ASSIGN_OR_RETURN(d->constants, DeviceConstantPool::global().acquire(g, driver, p.ordinal));
  for (size_t i = 0, k = 0; i < n; ++i) {
    const Slot& s = g.slots[i];
    if (s.kind == Slot::Kind::kConstant && s.constant.nbytes() > 0) {
      d->address[i] = d->constants[k++]->address;
    } else if (plan.offsets[i] >= 0) {
      d->address[i] = d->memory + static_cast<DevicePtr>(plan.offsets[i]);
    }
  }
  return d;
}

// The block of the inputs and outputs of runs from the host, allocated by the first.
absl::Status allocate_io(GpuProgram::Device& d) {
  if (d.io || d.io_bytes == 0) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(d.io, d.driver->allocate(static_cast<size_t>(d.io_bytes)));
  for (size_t i = 0; i < d.io_at.size(); ++i)
    if (d.io_at[i] >= 0) d.address[i] = d.io + static_cast<DevicePtr>(d.io_at[i]);
  return absl::OkStatus();
}

}  // namespace

// Intermediates where the plan puts them. The inputs and the outputs (not in the plan) each get
// a place in a block of their own, allocated by the first run from the host: runs on device
// memory read and write the caller's buffers instead. Values fused into the kernels that read
// them are never stored and get no memory (address 0).
GpuMemoryLayout gpu_memory_layout(const CompiledGraphImpl& g,
                                  const std::vector<std::vector<int64_t>>& shapes) {
  GpuMemoryLayout out;
  for (const Slot& s : g.slots)
    if (s.kind == Slot::Kind::kConstant) out.constants += aligned(s.constant.nbytes());
  out.plan = plan_memory(g, shapes);
  out.intermediates = aligned(out.plan.bytes);
  const size_t n = g.slots.size();
  out.io_at.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (out.plan.offsets[i] < 0 &&
        (g.slots[i].kind == Slot::Kind::kInput ||
         (g.slots[i].kind == Slot::Kind::kComputed && out.plan.used[i]))) {
      out.io_at[i] = out.io_bytes;
      out.io_bytes += aligned(slot_bytes(g, i, shapes));
    }
  }
  return out;
}

GpuProgram::Device::~Device() {
  if (!driver) return;
  // Errors here (a context a failed kernel left unusable) have nobody to go to.
  if (context) (void)driver->set_current(context);
  for (const Graph& g : graphs) (void)driver->destroy_graph(g.exec);
  for (runtime::cuda::Event e : events) (void)driver->destroy_event(e);
  if (done) (void)driver->destroy_event(done);
  if (memory) (void)driver->free(memory);
  if (io) (void)driver->free(io);
  constants.clear();  // a block of them freed here when no run state holds any of its constants
  if (stream) (void)driver->destroy_stream(stream);
  loaded.clear();
  if (context) (void)driver->release_primary_context(ordinal);
}

DeviceBlock::~DeviceBlock() {
  if (!driver) return;
  if (context) (void)driver->set_current(context);
  if (address) (void)driver->free(address);
  if (context) (void)driver->release_primary_context(ordinal);
}

absl::StatusOr<std::vector<NDArray>> run_gpu(const CompiledGraphImpl& g,
                                             const std::vector<std::vector<int64_t>>& shapes,
                                             const GpuRun& run) {
  GpuProgram& p = *g.gpu;
  std::lock_guard<std::mutex> lock(p.mu);
  absl::StatusOr<Driver*> loaded = Driver::get();  // (without one, preparing says so)
  if (loaded.ok())  // nothing is queued behind a kernel that hung on the device
    LOOM_RETURN_IF_ERROR(runtime::cuda::HungDevices::global().check(p.ordinal, **loaded));
  if (!p.device) {
    // A capture (below) cannot hold the first run's set-up. (Asked again below with the
    // context current, where an error is the run's.)
    if (run.enqueue && loaded.ok()) {
      absl::StatusOr<bool> capturing = (*loaded)->capturing(run.stream);
      if (capturing.ok() && *capturing)
        return absl::FailedPreconditionError(
            "enqueue_on_device() inside a CUDA graph capture before the graph's first run: the "
            "first run loads its kernels, allocates its device memory and uploads its "
            "constants, which a capture does not allow; run it once before capturing");
    }
    absl::StatusOr<std::unique_ptr<GpuProgram::Device>> d = prepare(g, p, shapes);
    if (!d.ok()) return during(d.status(), "preparing the graph on the GPU");
    p.device = *std::move(d);
  }
  GpuProgram::Device& d = *p.device;
  Driver& driver = *d.driver;
  const runtime::cuda::Stream stream = run.enqueue ? run.stream : d.stream;
  LOOM_RETURN_IF_ERROR(during(driver.set_current(d.context), "running the graph on the GPU"));
  // A run queued on a stream the caller is capturing into a CUDA graph (an engine capturing its
  // whole step) is captured, not run: its kernel launches and device copies become nodes of the
  // caller's graph, which each replay runs on the buffers of this call. Nothing here may then
  // synchronize or use the stream outside the capture's rules (that would invalidate the
  // caller's capture): the graph's own CUDA graphs are neither captured nor launched, and the
  // order against runs outside the capture goes through external event nodes.
  bool in_capture = false;
  if (run.enqueue) {
    absl::StatusOr<bool> capturing = driver.capturing(stream);
    if (!capturing.ok()) return during(capturing.status(), "enqueueing the graph");
    in_capture = *capturing;
  }
  // Once queued work fails, what was queued finishes before the error returns.
  // (Not inside a capture, where nothing was queued to run.)
  auto fail = [&](const absl::Status& s, const std::string& what) {
    if (!in_capture) (void)driver.synchronize(stream);
    return during(s, what);
  };
  if (in_capture) {
    // Each replay waits for the run last recorded outside it.
    LOOM_RETURN_IF_ERROR(
        during(driver.wait_event_in_capture(stream, d.done), "ordering after the last run"));
  } else if (d.done_in_capture || d.last_stream != stream) {
    LOOM_RETURN_IF_ERROR(during(driver.wait_event(stream, d.done), "ordering after the last run"));
  }

  if (!run.device_inputs || !run.device_outputs) {  // the host's inputs or outputs go there
    absl::Status s = allocate_io(d);
    if (!s.ok()) return during(s, "allocating the graph's inputs and outputs on the GPU");
  }
  // Where each slot lives in this run: the caller's memory for device inputs and outputs.
  std::vector<DevicePtr> address = d.address;
  for (size_t k = 0; k < g.inputs.size(); ++k) {
    const size_t slot = static_cast<size_t>(g.inputs[k]);
    if (run.device_inputs) {
      address[slot] = (*run.device_inputs)[k].address;
      continue;
    }
    const int64_t bytes = slot_bytes(g, slot, shapes);
    absl::Status s = driver.copy_to_device_async(d.address[slot], (*run.host_inputs)[k].data(),
                                                 static_cast<size_t>(bytes), stream);
    if (!s.ok()) return fail(s, "copying input '" + g.slots[slot].name + "' to the GPU");
  }
  // A computed output is written in place by its kernel; an output that is an input, a constant
  // or a repeat of an earlier output is copied after the launches.
  std::vector<bool> copy_output(g.outputs.size(), true);
  if (run.device_outputs) {
    std::vector<bool> taken(g.slots.size(), false);
    for (size_t k = 0; k < g.outputs.size(); ++k) {
      const size_t slot = static_cast<size_t>(g.outputs[k]);
      if (g.slots[slot].kind != Slot::Kind::kComputed || taken[slot]) continue;
      address[slot] = (*run.device_outputs)[k].address;
      taken[slot] = true;
      copy_output[k] = false;
    }
  }
  if (run.launch_ms && d.events.size() < 2 * g.launches.size()) {
    while (d.events.size() < 2 * g.launches.size()) {
      LOOM_ASSIGN_OR_RETURN(runtime::cuda::Event e, driver.create_event());
      d.events.push_back(e);
    }
  }
  // The kernels, one launch each (each between two events when timed), on `on`.
  auto launch_each = [&](runtime::cuda::Stream on) -> absl::Status {
    std::vector<DevicePtr> buffers;
    for (size_t l = 0; l < g.launches.size(); ++l) {
      const Launch& launch = g.launches[l];
      buffers.clear();
      for (int slot : launch.buffers) buffers.push_back(address[static_cast<size_t>(slot)]);
      absl::Status s;
      if (run.launch_ms) s = driver.record_event(d.events[2 * l], on);
      const GpuProgram::KernelAt at = p.kernel_at[static_cast<size_t>(launch.gpu_kernel)];
      if (s.ok()) s = d.loaded[at.part]->launch(at.func, buffers, {}, on);
      if (run.launch_ms && s.ok()) s = driver.record_event(d.events[2 * l + 1], on);
      if (!s.ok())
        return during(s, str_cat("launching kernel '", g.kernels[l].name, "' (", l + 1, " of ",
                                 g.launches.size(), ")"));
    }
    return absl::OkStatus();
  };
  // A run on device buffers that a recent run launched on one by one (an engine's loop, or two
  // sets of buffers taking turns) captures the launches as a CUDA graph on the program's
  // stream; runs on those buffers then replay it, one launch for all kernels, whatever stream
  // they are queued on. A run on other buffers launches one by one (the kernels' parameters,
  // tensor maps included, name the buffers), as do timed runs. A capture that fails (a driver
  // without graphs) is not tried again.
  using Graph = GpuProgram::Device::Graph;
  const bool graphs = p.cuda_graphs && !run.launch_ms && !in_capture && !d.graphs_failed &&
                      driver.has_graphs() && g.launches.size() > 1;
  auto graph = std::find_if(d.graphs.begin(), d.graphs.end(),
                            [&](const Graph& c) { return c.address == address; });
  std::vector<std::vector<DevicePtr>>& recent = d.launched_one_by_one;
  auto forget = [&] {
    recent.erase(std::remove(recent.begin(), recent.end(), address), recent.end());
  };
  if (graphs && graph == d.graphs.end() &&
      std::find(recent.begin(), recent.end(), address) != recent.end()) {
    absl::StatusOr<runtime::cuda::GraphExec> captured =
        driver.capture(d.stream, [&] { return launch_each(d.stream); });
    if (captured.ok()) {
      if (d.graphs.size() == GpuProgram::Device::kGraphs) {
        (void)driver.destroy_graph(d.graphs.front().exec);
        d.graphs.erase(d.graphs.begin());
      }
      d.graphs.push_back({address, *captured});
      graph = d.graphs.end() - 1;
      forget();
    } else {
      d.graphs_failed = true;
    }
  }
  if (graphs && graph != d.graphs.end()) {
    std::rotate(graph, graph + 1, d.graphs.end());  // the most recently used last
    absl::Status s = driver.launch_graph(d.graphs.back().exec, stream);
    if (!s.ok()) return fail(s, str_cat("launching the graph's ", g.launches.size(), " kernels"));
  } else {
    if (graphs) {
      forget();
      if (recent.size() == GpuProgram::Device::kGraphs) recent.erase(recent.begin());
      recent.push_back(address);
    }
    absl::Status s = launch_each(stream);
    if (!s.ok()) {
      if (!in_capture) (void)driver.synchronize(stream);
      return s;
    }
  }
  // With a time limit, a synchronous run waits for its kernels (polling) before it queues the
  // copies: a copy to the host's pageable memory would wait in the driver behind a hung kernel.
  if (!run.enqueue && p.run_timeout_s > 0) {
    absl::StatusOr<bool> finished = false;
    if (absl::Status s = driver.record_event(d.done, stream); !s.ok())
      finished = s;
    else
      finished = runtime::cuda::finished_within(driver, d.done, p.run_timeout_s);
    if (!finished.ok()) return fail(finished.status(), "running the graph on the GPU");
    if (!*finished) {
      absl::Status hung = absl::DeadlineExceededError(str_cat(
          "the graph's ", g.launches.size(), " kernels did not finish within ", p.run_timeout_s,
          " s on the device (a hung kernel?; CompileOptions::run_timeout_s): they run until the "
          "process ends, with the graph's device memory left to them"));
      runtime::cuda::HungDevices::global().add(p.ordinal, d.done, hung);
      (void)p.device.release();  // its memory, modules and events stay with the kernels
      DeviceConstantPool::global().forget(p.ordinal);  // and so do the constants
      return hung;
    }
  }
  std::vector<NDArray> outputs;
  for (size_t k = 0; k < g.outputs.size(); ++k) {
    const size_t slot = static_cast<size_t>(g.outputs[k]);
    const std::string& name = g.slots[slot].name;
    const size_t bytes = static_cast<size_t>(slot_bytes(g, slot, shapes));
    if (run.device_outputs) {
      if (!copy_output[k]) continue;
      absl::Status s = driver.copy_on_device_async((*run.device_outputs)[k].address,
                                                   address[slot], bytes, stream);
      if (!s.ok()) return fail(s, "copying output '" + name + "' on the GPU");
      continue;
    }
    std::vector<int64_t> shape;
    if (g.slots[slot].kind == Slot::Kind::kComputed) {
      shape = shapes[slot];
    } else {
      for (const Dim& dim : g.slots[slot].type.shape) shape.push_back(dim.value());
    }
    absl::StatusOr<NDArray> out = NDArray::allocate(g.slots[slot].type.dtype, shape);
    if (!out.ok()) return fail(out.status(), "output " + name);
    absl::Status s = driver.copy_to_host_async(out->data(), address[slot], bytes, stream);
    if (!s.ok()) return fail(s, "copying output '" + name + "' from the GPU");
    outputs.push_back(*std::move(out));
  }
  absl::Status s = in_capture ? driver.record_event_in_capture(d.done, stream)
                              : driver.record_event(d.done, stream);
  if (!s.ok()) return fail(s, "running the graph on the GPU");
  d.last_stream = stream;
  d.done_in_capture = in_capture;
  if (run.enqueue) return outputs;
  // Kernel faults surface here, when the stream's work completes.
  LOOM_RETURN_IF_ERROR(during(driver.synchronize(stream), "running the graph on the GPU"));
  if (run.launch_ms)
    for (size_t l = 0; l < g.launches.size(); ++l) {
      LOOM_ASSIGN_OR_RETURN(float ms, driver.elapsed_ms(d.events[2 * l], d.events[2 * l + 1]));
      run.launch_ms->push_back(ms);
    }
  return outputs;
}

}  // namespace loom
