// A CompiledGraph on a CUDA GPU (private to lib/): one module holding every kernel, and what
// its runs need on the device (the module loaded, the constants uploaded, one block of device
// memory for inputs, intermediates and outputs, a stream), set up by the first run.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "loom/runtime/cuda.hpp"
#include "runtime/compiled_graph_impl.hpp"

namespace loom {

struct GpuProgram {
  int ordinal = 0;              // the device
  ir::Module module;            // the lowered kernels; Launch::gpu_kernel indexes its funcs
  runtime::cuda::CompiledModule compiled;  // their cubin and launch shapes

  // Device state, made by the first run (under mu; runs of one graph take turns).
  struct Device {
    runtime::cuda::Driver* driver = nullptr;
    int ordinal = 0;
    runtime::cuda::Context context = nullptr;  // the device's primary context, retained
    std::unique_ptr<runtime::cuda::LoadedModule> loaded;
    runtime::cuda::Stream stream = nullptr;
    runtime::cuda::DevicePtr constants = 0;  // every constant slot's data, uploaded once
    runtime::cuda::DevicePtr memory = 0;     // a run's inputs, intermediates and outputs
    std::vector<runtime::cuda::DevicePtr> address;  // per slot: where its value lives
    std::vector<runtime::cuda::Event> events;       // two per launch, for profile()
    ~Device();
  };
  std::mutex mu;
  std::unique_ptr<Device> device;
};

// run() of a graph compiled for a CUDA target: host inputs are copied in, the kernels run on the
// program's stream in order, the outputs are copied back. shapes: each computed slot's physical
// extents. A driver error (no driver, out of memory, a kernel failing) is a status naming the
// step; the compiled graph stays usable as far as the driver allows.
absl::StatusOr<std::vector<NDArray>> run_gpu(const CompiledGraphImpl& g,
                                             const std::vector<NDArray>& inputs,
                                             const std::vector<std::vector<int64_t>>& shapes,
                                             std::vector<double>* launch_ms);

}  // namespace loom
