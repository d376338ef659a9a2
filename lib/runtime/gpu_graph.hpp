// A CompiledGraph on a CUDA GPU (private to lib/): its kernels, in modules compiled apart (at
// once, on as many cores), and what its runs need on the device (the modules loaded, the
// constants uploaded, device memory for the intermediates, a stream), set up by the first run,
// and device memory for the inputs and outputs of runs from the host, set up by the first.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "loom/runtime/cuda.hpp"
#include "runtime/compiled_graph_impl.hpp"

namespace loom {

// Device memory holding constants uploaded together (a graph's set-up's), freed with the last
// of them (its context set current, the primary context it retained then released).
struct DeviceBlock {
  runtime::cuda::Driver* driver = nullptr;
  int ordinal = 0;
  runtime::cuda::Context context = nullptr;
  runtime::cuda::DevicePtr address = 0;
  DeviceBlock() = default;
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;
  ~DeviceBlock();
};

// One constant (a weight) on a device, shared by every compiled graph's run state that holds
// the same bytes there: the instances of a compiled graph, the bindings of a graph compiled per
// binding, graphs compiled apart from one model. Runs only read it.
struct DeviceConstant {
  std::shared_ptr<DeviceBlock> block;  // where it lives
  runtime::cuda::DevicePtr address = 0;
  // A graph holding the same bytes on the host and its constant slot there, to compare a new
  // set-up's constants against without a copy back from the device. Not an owner: the host data
  // goes with the last graph holding it, whatever shares the device copy.
  std::weak_ptr<const CompiledGraphImpl> host_graph;
  size_t host_slot = 0;
};

struct GpuProgram {
  int ordinal = 0;  // the device
  bool cuda_graphs = true;  // CompileOptions::cuda_graphs
  double run_timeout_s = 0;  // CompileOptions::run_timeout_s
  // One module of lowered kernels, its cubin and their launch shapes.
  struct Part {
    ir::Module module;
    runtime::cuda::CompiledModule compiled;
  };
  std::vector<Part> parts;
  // Per kernel of the graph (Launch::gpu_kernel): its part, and its func there.
  struct KernelAt {
    size_t part, func;
  };
  std::vector<KernelAt> kernel_at;

  // Device state, made by the first run (under mu; runs of one graph take turns).
  struct Device {
    runtime::cuda::Driver* driver = nullptr;
    int ordinal = 0;
    runtime::cuda::Context context = nullptr;  // the device's primary context, retained
    std::vector<std::unique_ptr<runtime::cuda::LoadedModule>> loaded;  // per part
    runtime::cuda::Stream stream = nullptr;
    // Per constant slot with data, its bytes on the device (shared; see DeviceConstant).
    std::vector<std::shared_ptr<DeviceConstant>> constants;
    runtime::cuda::DevicePtr memory = 0;  // the intermediates (the memory plan)
    // The inputs and outputs of runs from the host: io_at[slot] bytes into a block of io_bytes,
    // allocated by the first such run (runs on device memory use the caller's buffers).
    runtime::cuda::DevicePtr io = 0;
    std::vector<int64_t> io_at;
    int64_t io_bytes = 0;
    std::vector<runtime::cuda::DevicePtr> address;  // per slot: where its value lives
    std::vector<runtime::cuda::Event> events;       // two per launch, for profile()
    // Recorded where the last run's work ended (at first, on the empty `stream`), on
    // last_stream: a run queued on another stream waits for it (runs share the intermediates).
    // done_in_capture: the last run was queued inside the caller's stream capture, and `done`
    // is recorded where the captured graph's replays end: any later run waits for it.
    runtime::cuda::Event done = nullptr;
    runtime::cuda::Stream last_stream = nullptr;
    bool done_in_capture = false;
    // The kernel launches captured as CUDA graphs, each for the slot addresses it was captured
    // with (the most recently used last, kGraphs at most); the addresses of the last runs that
    // launched their kernels one by one (as many); whether a capture failed (the launches then
    // stay one by one).
    struct Graph {
      std::vector<runtime::cuda::DevicePtr> address;
      runtime::cuda::GraphExec exec = nullptr;
    };
    static constexpr size_t kGraphs = 4;
    std::vector<Graph> graphs;
    std::vector<std::vector<runtime::cuda::DevicePtr>> launched_one_by_one;
    bool graphs_failed = false;
    ~Device();
  };
  std::mutex mu;
  std::unique_ptr<Device> device;
};

// Where a GPU graph's runs keep their values on the device: the constants in `constants` bytes
// (when the graph uploads them all itself); the intermediates where `plan` puts them, in a block
// of `intermediates` bytes; each input and output io_at[slot] bytes into a block of io_bytes, for
// runs from the host (-1: none).
struct GpuMemoryLayout {
  int64_t constants = 0;
  MemoryPlan plan;
  int64_t intermediates = 0;
  std::vector<int64_t> io_at;
  int64_t io_bytes = 0;
};
GpuMemoryLayout gpu_memory_layout(const CompiledGraphImpl& g,
                                  const std::vector<std::vector<int64_t>>& shapes);

// What one run reads and writes, and where its work is queued.
struct GpuRun {
  const std::vector<NDArray>* host_inputs = nullptr;        // copied in, or
  const std::vector<DeviceTensor>* device_inputs = nullptr;  // read in place
  // Written in place (checked by the caller); without them the outputs are copied to the host
  // and returned.
  const std::vector<DeviceTensor>* device_outputs = nullptr;
  // Queued on `stream` and not waited for; otherwise on the program's stream, synchronized.
  bool enqueue = false;
  runtime::cuda::Stream stream = nullptr;
  std::vector<double>* launch_ms = nullptr;  // each launch timed (host runs only)
};

// A run of a graph compiled for a CUDA target: the inputs bound, the kernels launched in order,
// the outputs written. shapes: each computed slot's physical extents. Returns the outputs of a
// host run (none otherwise). A driver error (no driver, out of memory, a kernel failing) is a
// status naming the step; the compiled graph stays usable as far as the driver allows.
absl::StatusOr<std::vector<NDArray>> run_gpu(const CompiledGraphImpl& g,
                                             const std::vector<std::vector<int64_t>>& shapes,
                                             const GpuRun& run);

}  // namespace loom
