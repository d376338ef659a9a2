// CompiledGraph: the result of compiling a Graph. run(inputs) validates the inputs and executes
// the graph's kernels in order, returning the outputs. Copies share the compiled code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/ndarray.hpp"
#include "loom/graph/graph.hpp"
#include "loom/graph/op.hpp"

namespace loom {

// One config timed while tuning a kernel, and its median time.
struct CandidateTime {
  tune::Config config;
  double median_ms = 0;
};

struct KernelInfo {
  std::string name;         // kernel (function) name
  std::vector<std::string> ops;  // graph nodes it computes
  std::string schedule;          // "default", or the template and its config
                                 // (ops: the anchor's prologue, the anchor, its epilogue)
  double tune_seconds = 0;       // spent choosing and compiling it (0 for default schedules)
  // Its kernel cache entry (loom_cache show KEY); empty when the cache is off. Default-schedule
  // kernels share one entry, the graph's default module.
  std::string cache_key;
  // The candidates timed when it was tuned (first round), also when it came from the cache;
  // empty when nothing was measured (TuneLevel::kNone, a forced config, the default schedule).
  std::vector<CandidateTime> candidates;
  // The candidates that tuning ruled out, with why: their output disagreed with the default
  // config's (tune::outputs_agree, on the same inputs), or a GPU would not load or launch them.
  std::vector<tune::Refusal> refused;
};

// A tensor in the memory of the GPU a graph was compiled for, owned by the caller: a CUDA device
// pointer (a CUdeviceptr) to its elements in row-major order, and the dtype and shape they hold.
// The address must be a multiple of kDeviceAlignment (cuMemAlloc's are).
inline constexpr uint64_t kDeviceAlignment = 16;
struct DeviceTensor {
  uint64_t address = 0;
  DType dtype;
  std::vector<int64_t> shape;
};

// The memory a compiled graph's runs use, in bytes, as its memory plan has it (nothing runs).
struct MemoryUse {
  // The constants (weights); on a GPU each in a multiple of 256 bytes, and on the device once
  // for every compiled graph that holds the same bytes (instances, bindings).
  int64_t constants = 0;
  // The values between kernels, in the blocks the liveness plan reuses: a CPU run's arena (each
  // run under way takes one), a GPU instance's device memory.
  int64_t intermediates = 0;
  // A GPU instance's device memory for the inputs and outputs of runs from the host (run(),
  // profile()), set up by the first: runs on device memory use the caller's buffers. 0 on a CPU,
  // whose runs return arrays of their own.
  int64_t host_inputs_outputs = 0;
};

struct CompiledGraphImpl;

class CompiledGraph {
 public:
  CompiledGraph() = default;
  explicit CompiledGraph(std::shared_ptr<const CompiledGraphImpl> impl) : impl_(std::move(impl)) {}

  // inputs in the order the graph declared them. Errors name the offending input and what was
  // expected (count, dtype, rank, extents, inconsistent symbolic dims), or the node whose shape
  // rule the bound dims break.
  absl::StatusOr<std::vector<NDArray>> run(const std::vector<NDArray>& inputs) const;

  // Runs the graph `runs` times (after one warm-up run) timing each kernel: the median
  // milliseconds of each, in kernels() order. For a graph that specializes per binding the times
  // are those of specialize(dims) for the inputs' dims, in its kernels() order.
  absl::StatusOr<std::vector<double>> profile(const std::vector<NDArray>& inputs, int runs = 10) const;

  // For a graph compiled for a CUDA target: runs on inputs already in the GPU's memory and writes
  // the outputs into the caller's device memory (one DeviceTensor per output, in output order,
  // with the output's dtype and shape): no copies through the host. Inputs are read in place;
  // outputs are written by the kernels that compute them. Returns when the work is complete.
  // From the second run on the same buffers (of the last few sets used), the kernels' launches
  // are replayed as one captured CUDA graph (CompileOptions::cuda_graphs). Errors as run()'s,
  // and for outputs of the wrong count, dtype or shape, null addresses, or a graph compiled for
  // the CPU.
  absl::Status run_on_device(const std::vector<DeviceTensor>& inputs,
                             const std::vector<DeviceTensor>& outputs) const;
  // The same, queued on the caller's CUDA stream (a CUstream; null is the legacy default stream)
  // after the work already there, and returning at once: the outputs are ready when the stream
  // reaches this point. Runs of one graph share its intermediates, so a run on another stream
  // (or a host run()) first waits for this one's work. Inside the caller's capture of `stream`
  // into a CUDA graph, the run's launches and copies are captured as nodes of the caller's
  // graph (each replay runs them on these buffers, ordered after the runs queued before it is
  // launched); the graph must have run once before (else FailedPrecondition, the capture left
  // valid), and must outlive the caller's graph.
  absl::Status enqueue_on_device(const std::vector<DeviceTensor>& inputs,
                                 const std::vector<DeviceTensor>& outputs, void* stream) const;

  // A graph with symbolic dims compiled with CompileOptions::specialize_shapes runs each
  // binding of its dims (from the inputs' extents) on a static CompiledGraph of its own, compiled
  // and tuned on first sight and kept; this returns it, so an engine can prepare the shapes it
  // will serve before the first request. Thread-safe: concurrent requests for one binding build
  // it once. Every symbolic dim must be bound; a binding with a zero extent gets the generic
  // kernels. On a static graph, or one compiled without specialization, it checks the binding
  // and returns this graph.
  absl::StatusOr<CompiledGraph> specialize(const DimBindings& dims) const;
  // Bindings compiled and kept so far (0 for static graphs).
  size_t num_specializations() const;

  // The memory its runs use for a binding of its symbolic dims (none for a static graph), for
  // an engine to plan how many graphs and instances fit. A graph compiled per binding answers
  // for specialize(dims), compiling that binding if it was not yet. Errors as specialize()'s.
  absl::StatusOr<MemoryUse> memory_use(const DimBindings& dims = {}) const;

  // Another instance of this compiled graph: the same kernels (nothing compiled or tuned again),
  // with run state of its own. On a GPU that is the device memory for intermediates (and the
  // graph's inputs and outputs on host runs), the stream, the captured CUDA graphs and the
  // loaded modules, set up by its first run: runs of one instance take turns and share
  // intermediates, while two instances run at once, each on its own stream, never waiting for
  // each other (an engine serving requests on several streams keeps one instance per stream).
  // The weights are on the device once for all instances (and for any compiled graph holding
  // the same bytes, the bindings of specialize(dims) among them): the first run that needs them
  // uploads them, and they go with the last run state holding them. A CPU graph's runs already run
  // at once (each takes an arena of its own); its instance shares the compiled code. A copy of a
  // CompiledGraph is the same instance. A graph compiled per binding of its dims has no instance of
  // its own: take one of specialize(dims).
  absl::StatusOr<CompiledGraph> instance() const;

  // The kernels run, in order. Empty for a graph that specializes per binding: ask
  // specialize(dims).kernels().
  const std::vector<KernelInfo>& kernels() const;
  // The graph the kernels compute: the compiled graph after the graph passes, with its tensors'
  // layouts (the nodes named in kernels()[k].ops).
  const Graph& graph() const;
  std::vector<std::string> input_names() const;
  std::vector<TensorType> input_types() const;
  std::vector<TensorType> output_types() const;

 private:
  // run(), timing each launch into (*launch_ms)[k] when launch_ms is given.
  absl::StatusOr<std::vector<NDArray>> run(const std::vector<NDArray>& inputs,
                                           std::vector<double>* launch_ms) const;
  absl::Status run_device(const std::vector<DeviceTensor>& inputs,
                          const std::vector<DeviceTensor>& outputs, bool enqueue,
                          void* stream) const;
  std::shared_ptr<const CompiledGraphImpl> impl_;
};

}  // namespace loom
