// The CUDA back end's runtime: the driver API (libcuda.so.1, loaded with dlopen on first use) and
// CUDA C++ compilation (loop IR -> CUDA source -> NVRTC -> cubin). No CUDA header appears here.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/ir/func.hpp"

// The driver's opaque handle types, declared (never defined) under the names cuda.h gives them,
// so that code including cuda.h can pass them on unchanged.
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUevent_st;
struct CUgraphExec_st;

namespace loom::runtime::cuda {

using Context = CUctx_st*;
using ModuleHandle = CUmod_st*;
using Function = CUfunc_st*;
using Stream = CUstream_st*;  // nullptr is the legacy default stream
using Event = CUevent_st*;
using GraphExec = CUgraphExec_st*;
using DevicePtr = uint64_t;  // CUdeviceptr

// Whether this build of loom contains the CUDA back end (the CUDA toolkit was found when loom
// was configured). Without it every function below returns a "built without CUDA" status.
bool built_with_cuda();

// What schedule spaces and launches need to know about a device.
struct DeviceProperties {
  int ordinal = 0;
  std::string name;
  int sm_arch = 0;  // compute capability major * 10 + minor: 90 for H100
  int sm_count = 0;
  int warp_size = 0;
  int max_threads_per_block = 0;
  int64_t shared_memory_per_block = 0;        // without opting in
  int64_t shared_memory_per_block_optin = 0;  // the most a kernel may opt in to
  int64_t shared_memory_per_sm = 0;
  int registers_per_block = 0;
  int registers_per_sm = 0;
  int64_t l2_cache_bytes = 0;
  int64_t total_memory_bytes = 0;
};

// A TMA tensor map, as the driver encodes it (CUtensorMap): 128 opaque bytes, passed to a kernel
// by value.
struct alignas(64) TensorMap {
  std::array<uint64_t, 16> bytes{};
};

// A tensor map's contents, innermost dimension first (as the driver takes them): element type
// (CUtensorMapDataType), extents, byte strides of dimensions 1 and up, box extents, swizzle
// (CUtensorMapSwizzle: 0 none, 3 128 bytes).
struct TensorMapShape {
  int data_type = 0;
  int element_bytes = 0;
  uint32_t rank = 0;
  std::array<uint64_t, 5> dims{};
  std::array<uint64_t, 4> strides{};
  std::array<uint32_t, 5> box{};
  int swizzle = 0;
};

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The CUDA driver API, loaded once per process. Every call returns the driver's error name and
// text on failure ("CUDA_ERROR_INVALID_VALUE (invalid argument) in cuMemAlloc"). Thread-safe
// as the driver itself is. Handles are plain driver handles; the caller owns what it creates.
class Driver {
 public:
  // Loads libcuda.so.1 and calls cuInit(0) on first use. A machine without the driver gets an
  // Unavailable status "no CUDA driver (libcuda.so.1 not found): <dlerror>"; nothing else in
  // loom depends on this succeeding.
  static absl::StatusOr<Driver*> get();

  // The driver's CUDA version, 1000 * major + 10 * minor (13000 for CUDA 13.0).
  absl::StatusOr<int> version();
  absl::StatusOr<int> device_count();
  absl::StatusOr<DeviceProperties> device_properties(int ordinal);

  // The device's primary context (retained; release once per retain) and making it current.
  absl::StatusOr<Context> retain_primary_context(int ordinal);
  absl::Status release_primary_context(int ordinal);
  absl::Status set_current(Context context);

  // A module from cubin (or PTX) image bytes; its functions by their extern "C" names.
  absl::StatusOr<ModuleHandle> load_module(std::string_view image);
  absl::Status unload_module(ModuleHandle module);
  absl::StatusOr<Function> get_function(ModuleHandle module, const std::string& name);
  // Lets launches of the function give it up to `bytes` of dynamic shared memory (past 48 KiB
  // a kernel must opt in).
  absl::Status set_dynamic_shared_limit(Function function, int64_t bytes);
  // The share of the SM's L1 and shared memory to give shared memory, in percent (a hint:
  // CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT).
  absl::Status set_shared_carveout(Function function, int percent);
  // The blocks of `function` the device holds at once when launched with `threads` threads a
  // block and `shared_bytes` of dynamic shared memory, in clusters of `cluster` blocks: its
  // occupancy, cuOccupancyMaxActiveBlocksPerMultiprocessor times the device's `sms`, or
  // cuOccupancyMaxActiveClusters times the cluster. Unimplemented where the driver lacks the
  // query.
  absl::StatusOr<int64_t> resident_blocks(Function function, int64_t threads, int64_t shared_bytes,
                                          int64_t cluster, int64_t sms);
  // A tiled tensor map over the global tensor at `address` (cuTensorMapEncodeTiled; the driver
  // checks alignment, strides and box). Unimplemented before CUDA 12.
  absl::StatusOr<TensorMap> encode_tensor_map(const TensorMapShape& shape, DevicePtr address);
  // args[i] points at the value of kernel parameter i (cuLaunchKernel's kernelParams).
  absl::Status launch(Function function, Dim3 grid, Dim3 block, unsigned shared_memory_bytes,
                      Stream stream, void** args);

  absl::StatusOr<Stream> create_stream();
  absl::Status destroy_stream(Stream stream);
  absl::Status synchronize(Stream stream);

  absl::StatusOr<DevicePtr> allocate(size_t bytes);
  absl::Status free(DevicePtr ptr);
  absl::Status copy_to_device(DevicePtr dst, const void* src, size_t bytes);
  absl::Status copy_to_host(void* dst, DevicePtr src, size_t bytes);
  absl::Status copy_to_device_async(DevicePtr dst, const void* src, size_t bytes, Stream stream);
  absl::Status copy_to_host_async(void* dst, DevicePtr src, size_t bytes, Stream stream);
  absl::Status copy_on_device_async(DevicePtr dst, DevicePtr src, size_t bytes, Stream stream);

  absl::StatusOr<Event> create_event();
  absl::Status destroy_event(Event event);
  absl::Status record_event(Event event, Stream stream);
  // Work queued on stream after this waits for event's recorded work to complete.
  absl::Status wait_event(Stream stream, Event event);
  absl::Status synchronize_event(Event event);
  // Whether the work recorded before the event has finished (cuEventQuery), without waiting:
  // false while it runs; the error of a kernel that failed before it.
  absl::StatusOr<bool> event_done(Event event);
  // Milliseconds between two recorded, completed events.
  absl::StatusOr<float> elapsed_ms(Event start, Event end);

  // CUDA graphs: the kernel launches `launches` queues on `stream` (from this thread) are
  // recorded, not run, and become one executable graph, which launch_graph queues on any stream
  // as one launch (with their parameters as they were at capture). An error of `launches` or of
  // the capture ends the capture and leaves nothing to destroy. Unimplemented where the driver
  // lacks graphs (has_graphs false).
  bool has_graphs() const;
  absl::StatusOr<GraphExec> capture(Stream stream, const std::function<absl::Status()>& launches);
  absl::Status launch_graph(GraphExec graph, Stream stream);
  // Whether work queued on `stream` is being captured into a CUDA graph (a caller capturing its
  // own stream), not run; an error where the capture was invalidated. False where the driver
  // cannot capture.
  absl::StatusOr<bool> capturing(Stream stream);
  // Inside a capture of `stream`: a node of the captured graph that, each time the graph runs,
  // records `event` (work outside the graph may wait for it), or waits for the work last
  // recorded on `event` outside the graph (external event nodes; a plain record or wait inside
  // a capture would only order work of the same capture).
  absl::Status record_event_in_capture(Event event, Stream stream);
  absl::Status wait_event_in_capture(Stream stream, Event event);
  absl::Status destroy_graph(GraphExec graph);

  struct Api;  // the entry points (lib/runtime/cuda_driver.cpp)
  explicit Driver(std::unique_ptr<Api> api);
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

 private:
  std::unique_ptr<Api> api_;
};

// A tensor map of a kernel: buffer param `buffer` (position among Func::buffer_params(); a
// row-major tensor), whose extents (outermost first) are expressions over the func's scalar
// params, copied in boxes of `box` (outermost first) with the 128-byte swizzle.
struct TensorMapInfo {
  size_t buffer = 0;
  DType dtype;
  std::vector<ir::Expr> dims;
  std::vector<int64_t> box;
};

// The shape of tensor map `m` of a kernel for given scalar parameter values (in
// Func::scalar_params order); an error where an extent is not a positive constant for them or a
// stride is not a multiple of 16 bytes.
absl::StatusOr<TensorMapShape> tensor_map_shape(const ir::Func& f, const TensorMapInfo& m,
                                                const std::vector<int64_t>& scalars);

// One CUDA kernel of a compiled module: its symbol and launch shape. The grid and block extents
// are i64 expressions over the func's scalar parameters (symbolic dims), 1 where unused.
struct KernelInfo {
  std::string symbol;
  std::array<ir::Expr, 3> grid;
  std::array<ir::Expr, 3> block;
  // Dynamic shared memory per block: the kernel's shared buffers when they pass the 48 KiB that
  // static __shared__ arrays may take (0: static ones).
  int64_t dynamic_shared_bytes = 0;
  // Blocks per cluster (ir::Call cluster_dims; 1: no clusters).
  int64_t cluster = 1;
  // The blocks an SM must hold at once (ir::Call min_blocks_per_sm: a persistent grid, sized to
  // the SMs, whose blocks all run at once; 0: none). Loading such a kernel asks the driver for
  // the most shared memory an SM has (the carveout hint), lest it pick a split with L1 in which
  // fewer of its blocks fit, and for the blocks the device holds at once (its occupancy): where
  // that is fewer than the grid, launches give the grid only as many (whole clusters), and the
  // kernel's blocks walk the work in steps of the grid they were launched with.
  int64_t min_blocks_per_sm = 0;
  // The TMA tensor maps the kernel copies through (ir::Call tma_load_3d), passed after the
  // func's params in this order, each encoded at launch over a buffer param.
  std::vector<TensorMapInfo> tensor_maps;
};

// A module compiled for one sm arch: the generated source and PTX for people to read, the cubin
// for the driver, and one KernelInfo per func (in func order).
struct CompiledModule {
  int sm_arch = 0;
  std::string source;
  std::string ptx;
  std::string cubin;
  std::string log;  // NVRTC's log (warnings), empty when quiet
  std::vector<KernelInfo> kernels;
};

// Emits CUDA C++ for a flattened loop-IR module (lowered for a CUDA target). Loops of kind
// kGpuBlock/kGpuThread become blockIdx/threadIdx; unsupported IR gives an error naming the node.
absl::StatusOr<std::string> emit_cuda_source(const ir::Module& m,
                                             std::vector<KernelInfo>* kernels = nullptr);

// NVRTC: CUDA C++ source -> cubin for exactly sm_<sm_arch> (PTX kept). A compile error is an
// InvalidArgument status carrying NVRTC's log.
struct NvrtcOutput {
  std::string ptx;
  std::string cubin;
  std::string log;
};
absl::StatusOr<NvrtcOutput> compile_cuda_source(const std::string& source, int sm_arch,
                                                const std::string& program_name = "loom.cu");
// "NVRTC 13.0": part of kernel cache keys.
absl::StatusOr<std::string> nvrtc_version();

// emit_cuda_source + compile_cuda_source for m.target.sm_arch() (or sm_arch when non-zero).
absl::StatusOr<CompiledModule> compile_module(const ir::Module& m, int sm_arch = 0);

// The launch shape of a kernel for given scalar parameter values (in Func::scalar_params order).
absl::StatusOr<std::pair<Dim3, Dim3>> launch_shape(const ir::Func& f, const KernelInfo& kernel,
                                                   const std::vector<int64_t>& scalars);

// A compiled module loaded into the current context, ready to launch its kernels.
class LoadedModule {
 public:
  // Makes device `ordinal`'s primary context current and loads the cubin into it.
  static absl::StatusOr<std::unique_ptr<LoadedModule>> load(const ir::Module& m,
                                                            CompiledModule compiled,
                                                            int ordinal = 0);
  ~LoadedModule();
  LoadedModule(const LoadedModule&) = delete;
  LoadedModule& operator=(const LoadedModule&) = delete;

  // Launches func `index` with the runtime's convention: device buffers in the order of
  // Func::buffer_params(), scalars (i64) in the order of Func::scalar_params(). Every buffer's
  // address must be a multiple of kDeviceAlignment (16; cuMemAlloc's are): kernels access their
  // buffers in vectors of up to 16 bytes. Another address is an InvalidArgument error.
  absl::Status launch(size_t index, const std::vector<DevicePtr>& buffers,
                      const std::vector<int64_t>& scalars, Stream stream = nullptr);
  const CompiledModule& compiled() const { return compiled_; }

 private:
  LoadedModule() = default;
  Driver* driver_ = nullptr;
  int ordinal_ = 0;
  Context context_ = nullptr;
  ModuleHandle module_ = nullptr;
  std::vector<ir::Func> funcs_;
  std::vector<Function> functions_;
  // Per kernel: the blocks the device holds at once, for a persistent grid (0: no limit).
  std::vector<int64_t> resident_;
  CompiledModule compiled_;
  // Per kernel, per tensor map: the last one encoded, reused while the buffer's address and the
  // scalars stay (runs of a compiled graph keep their buffers).
  struct EncodedMap {
    DevicePtr address = 0;
    std::vector<int64_t> scalars;
    TensorMap map;
  };
  std::mutex maps_mu_;
  std::vector<std::vector<std::optional<EncodedMap>>> maps_;
  // Per kernel: its buffer count, and its last launch shape with the scalars it was computed
  // for (a static graph's launches repeat them; working them out costs more than the launch).
  struct LastShape {
    std::vector<int64_t> scalars;
    std::pair<Dim3, Dim3> shape;
  };
  std::vector<size_t> buffer_counts_;
  std::mutex shapes_mu_;
  std::vector<std::optional<LastShape>> shapes_;
};

}  // namespace loom::runtime::cuda
