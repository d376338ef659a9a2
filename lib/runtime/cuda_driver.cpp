// The CUDA driver API through dlopen: libcuda.so.1 is opened on first use and every entry point
// comes from cuGetProcAddress, so loom never links libcuda and runs where no driver is installed.

#include <dlfcn.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "loom/core/status.hpp"
#include "loom/runtime/cuda.hpp"
#include "runtime/hung_devices.hpp"

#ifndef LOOM_HAVE_NVRTC
#define LOOM_HAVE_NVRTC 0
#endif
#if LOOM_HAVE_NVRTC
// Only for the types and the signatures of the entry points (decltype); nothing is linked.
#include <cuda.h>
#endif

namespace loom::runtime::cuda {

bool built_with_cuda() {
  return LOOM_HAVE_NVRTC != 0;
}

#if LOOM_HAVE_NVRTC

namespace {

// Entry points are requested with the semantics of CUDA 12.0, so drivers from 12.0 on serve
// them; the signatures below (cuda.h's current names, e.g. cuMemAlloc_v2) are those versions'.
constexpr int kRequestedApiVersion = 12000;

// cuGetProcAddress before CUDA 12 had no symbolStatus argument.
using GetProcAddressV1 = CUresult (*)(const char*, void**, int, cuuint64_t);

}  // namespace

struct Driver::Api {
  void* library = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;
  decltype(&::cuGetErrorString) get_error_string = nullptr;
  decltype(&::cuInit) init = nullptr;
  decltype(&::cuDriverGetVersion) driver_get_version = nullptr;
  decltype(&::cuDeviceGetCount) device_get_count = nullptr;
  decltype(&::cuDeviceGet) device_get = nullptr;
  decltype(&::cuDeviceGetName) device_get_name = nullptr;
  decltype(&::cuDeviceGetAttribute) device_get_attribute = nullptr;
  decltype(&::cuDeviceTotalMem) device_total_mem = nullptr;
  decltype(&::cuDevicePrimaryCtxRetain) primary_ctx_retain = nullptr;
  decltype(&::cuDevicePrimaryCtxRelease) primary_ctx_release = nullptr;
  decltype(&::cuCtxSetCurrent) ctx_set_current = nullptr;
  decltype(&::cuModuleLoadData) module_load_data = nullptr;
  decltype(&::cuModuleUnload) module_unload = nullptr;
  decltype(&::cuModuleGetFunction) module_get_function = nullptr;
  decltype(&::cuFuncSetAttribute) func_set_attribute = nullptr;
  decltype(&::cuLaunchKernel) launch_kernel = nullptr;
  decltype(&::cuStreamCreate) stream_create = nullptr;
  decltype(&::cuStreamDestroy) stream_destroy = nullptr;
  decltype(&::cuStreamSynchronize) stream_synchronize = nullptr;
  decltype(&::cuMemAlloc) mem_alloc = nullptr;
  decltype(&::cuMemFree) mem_free = nullptr;
  decltype(&::cuMemcpyHtoD) memcpy_htod = nullptr;
  decltype(&::cuMemcpyDtoH) memcpy_dtoh = nullptr;
  decltype(&::cuMemcpyHtoDAsync) memcpy_htod_async = nullptr;
  decltype(&::cuMemcpyDtoHAsync) memcpy_dtoh_async = nullptr;
  decltype(&::cuMemcpyDtoDAsync) memcpy_dtod_async = nullptr;
  decltype(&::cuStreamWaitEvent) stream_wait_event = nullptr;
  decltype(&::cuEventCreate) event_create = nullptr;
  decltype(&::cuEventDestroy) event_destroy = nullptr;
  decltype(&::cuEventRecord) event_record = nullptr;
  decltype(&::cuEventSynchronize) event_synchronize = nullptr;
  decltype(&::cuEventQuery) event_query = nullptr;
  decltype(&::cuEventElapsedTime) event_elapsed_time = nullptr;
  // Optional (CUDA 12 and later drivers): null where the driver lacks it.
  decltype(&::cuTensorMapEncodeTiled) tensor_map_encode_tiled = nullptr;
  decltype(&::cuStreamBeginCapture) stream_begin_capture = nullptr;
  decltype(&::cuStreamEndCapture) stream_end_capture = nullptr;
  decltype(&::cuGraphInstantiateWithFlags) graph_instantiate = nullptr;
  decltype(&::cuGraphLaunch) graph_launch = nullptr;
  decltype(&::cuGraphDestroy) graph_destroy = nullptr;
  decltype(&::cuGraphExecDestroy) graph_exec_destroy = nullptr;
  decltype(&::cuStreamIsCapturing) stream_is_capturing = nullptr;
  decltype(&::cuEventRecordWithFlags) event_record_with_flags = nullptr;
  decltype(&::cuOccupancyMaxActiveBlocksPerMultiprocessor) occupancy_blocks = nullptr;
  decltype(&::cuOccupancyMaxActiveClusters) occupancy_clusters = nullptr;
  bool has_graphs() const {
    return stream_begin_capture && stream_end_capture && graph_instantiate && graph_launch &&
           graph_destroy && graph_exec_destroy;
  }

  // "CUDA_ERROR_INVALID_VALUE (invalid argument) in cuMemAlloc" as an absl::Status.
  absl::Status check(CUresult r, const char* call) const {
    if (r == CUDA_SUCCESS) return absl::OkStatus();
    const char* name = nullptr;
    const char* text = nullptr;
    if (get_error_name) get_error_name(r, &name);
    if (get_error_string) get_error_string(r, &text);
    std::string message = str_cat(name ? name : "CUDA error", " (", text ? text : "no description",
                                  ", code ", static_cast<int>(r), ") in ", call);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) return absl::ResourceExhaustedError(message);
    if (r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_INVALID_DEVICE)
      return absl::UnavailableError(message);
    if (r == CUDA_ERROR_INVALID_VALUE || r == CUDA_ERROR_INVALID_HANDLE ||
        r == CUDA_ERROR_NOT_FOUND || r == CUDA_ERROR_INVALID_IMAGE ||
        r == CUDA_ERROR_NO_BINARY_FOR_GPU)
      return absl::InvalidArgumentError(message);
    return absl::InternalError(message);
  }
};

namespace {

absl::StatusOr<std::unique_ptr<Driver::Api>> load_driver() {
  auto api = std::make_unique<Driver::Api>();
  api->library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!api->library) {
    const char* err = dlerror();
    return absl::UnavailableError(
        str_cat("no CUDA driver (libcuda.so.1 not found): ", err ? err : "unknown dlopen error"));
  }
  // The library stays loaded for the life of the process (the driver dislikes being unloaded).
  void* v2 = dlsym(api->library, "cuGetProcAddress_v2");
  void* v1 = v2 ? nullptr : dlsym(api->library, "cuGetProcAddress");
  if (!v2 && !v1)
    return absl::UnavailableError(
        "the CUDA driver (libcuda.so.1) has no cuGetProcAddress; a driver for CUDA 11.3 or newer "
        "is needed");
  absl::Status status;
  auto resolve = [&](const char* symbol, auto& slot) {
    if (!status.ok()) return;
    void* fn = nullptr;
    CUresult r;
    if (v2) {
      CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SUCCESS;
      r = reinterpret_cast<decltype(&::cuGetProcAddress_v2)>(v2)(
          symbol, &fn, kRequestedApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &found);
      if (r == CUDA_SUCCESS && found != CU_GET_PROC_ADDRESS_SUCCESS) fn = nullptr;
    } else {
      r = reinterpret_cast<GetProcAddressV1>(v1)(symbol, &fn, kRequestedApiVersion,
                                                 CU_GET_PROC_ADDRESS_DEFAULT);
    }
    if (r != CUDA_SUCCESS || !fn) {
      status = absl::UnavailableError(str_cat("the CUDA driver does not provide ", symbol,
                                              " for CUDA ", kRequestedApiVersion / 1000, ".",
                                              kRequestedApiVersion % 1000 / 10, " (error ",
                                              static_cast<int>(r), "); a newer driver is needed"));
      return;
    }
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(fn);
  };
  resolve("cuGetErrorName", api->get_error_name);
  resolve("cuGetErrorString", api->get_error_string);
  resolve("cuInit", api->init);
  resolve("cuDriverGetVersion", api->driver_get_version);
  resolve("cuDeviceGetCount", api->device_get_count);
  resolve("cuDeviceGet", api->device_get);
  resolve("cuDeviceGetName", api->device_get_name);
  resolve("cuDeviceGetAttribute", api->device_get_attribute);
  resolve("cuDeviceTotalMem", api->device_total_mem);
  resolve("cuDevicePrimaryCtxRetain", api->primary_ctx_retain);
  resolve("cuDevicePrimaryCtxRelease", api->primary_ctx_release);
  resolve("cuCtxSetCurrent", api->ctx_set_current);
  resolve("cuModuleLoadData", api->module_load_data);
  resolve("cuModuleUnload", api->module_unload);
  resolve("cuModuleGetFunction", api->module_get_function);
  resolve("cuFuncSetAttribute", api->func_set_attribute);
  resolve("cuLaunchKernel", api->launch_kernel);
  resolve("cuStreamCreate", api->stream_create);
  resolve("cuStreamDestroy", api->stream_destroy);
  resolve("cuStreamSynchronize", api->stream_synchronize);
  resolve("cuMemAlloc", api->mem_alloc);
  resolve("cuMemFree", api->mem_free);
  resolve("cuMemcpyHtoD", api->memcpy_htod);
  resolve("cuMemcpyDtoH", api->memcpy_dtoh);
  resolve("cuMemcpyHtoDAsync", api->memcpy_htod_async);
  resolve("cuMemcpyDtoHAsync", api->memcpy_dtoh_async);
  resolve("cuMemcpyDtoDAsync", api->memcpy_dtod_async);
  resolve("cuStreamWaitEvent", api->stream_wait_event);
  resolve("cuEventCreate", api->event_create);
  resolve("cuEventDestroy", api->event_destroy);
  resolve("cuEventRecord", api->event_record);
  resolve("cuEventSynchronize", api->event_synchronize);
  resolve("cuEventQuery", api->event_query);
  resolve("cuEventElapsedTime", api->event_elapsed_time);
  LOOM_RETURN_IF_ERROR(status);
  resolve("cuTensorMapEncodeTiled", api->tensor_map_encode_tiled);
  status = absl::OkStatus();  // an older driver runs every kernel but the TMA ones
  // CUDA graphs (a run's launches replayed as one); without them kernels launch one by one.
  resolve("cuStreamBeginCapture", api->stream_begin_capture);
  resolve("cuStreamEndCapture", api->stream_end_capture);
  resolve("cuGraphInstantiateWithFlags", api->graph_instantiate);
  resolve("cuGraphLaunch", api->graph_launch);
  resolve("cuGraphDestroy", api->graph_destroy);
  resolve("cuGraphExecDestroy", api->graph_exec_destroy);
  status = absl::OkStatus();
  // Runs queued inside a caller's stream capture (their order against runs outside it).
  resolve("cuStreamIsCapturing", api->stream_is_capturing);
  status = absl::OkStatus();
  resolve("cuEventRecordWithFlags", api->event_record_with_flags);
  status = absl::OkStatus();
  // Persistent grids sized to what the device holds at once.
  resolve("cuOccupancyMaxActiveBlocksPerMultiprocessor", api->occupancy_blocks);
  status = absl::OkStatus();
  resolve("cuOccupancyMaxActiveClusters", api->occupancy_clusters);
  status = absl::OkStatus();
  LOOM_RETURN_IF_ERROR(api->check(api->init(0), "cuInit"));
  return api;
}

}  // namespace

absl::StatusOr<Driver*> Driver::get() {
  // Loaded once; a failure is remembered too (the machine will not grow a driver meanwhile).
  static absl::StatusOr<Driver*>* loaded = [] {
    auto api = load_driver();
    if (!api.ok()) return new absl::StatusOr<Driver*>(api.status());
    return new absl::StatusOr<Driver*>(new Driver(std::move(*api)));
  }();
  return *loaded;
}

Driver::Driver(std::unique_ptr<Api> api) : api_(std::move(api)) {}
Driver::~Driver() = default;

absl::StatusOr<int> Driver::version() {
  int v = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->driver_get_version(&v), "cuDriverGetVersion"));
  return v;
}

absl::StatusOr<int> Driver::device_count() {
  int n = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->device_get_count(&n), "cuDeviceGetCount"));
  return n;
}

absl::StatusOr<DeviceProperties> Driver::device_properties(int ordinal) {
  CUdevice dev = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->device_get(&dev, ordinal), "cuDeviceGet"));
  DeviceProperties p;
  p.ordinal = ordinal;
  char name[256] = {};
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->device_get_name(name, sizeof(name) - 1, dev), "cuDeviceGetName"));
  p.name = name;
  auto attribute = [&](CUdevice_attribute a, auto* out) -> absl::Status {
    int v = 0;
    LOOM_RETURN_IF_ERROR(
        api_->check(api_->device_get_attribute(&v, a, dev), "cuDeviceGetAttribute"));
    *out = v;
    return absl::OkStatus();
  };
  int major = 0, minor = 0;
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &major));
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &minor));
  p.sm_arch = major * 10 + minor;
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &p.sm_count));
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_WARP_SIZE, &p.warp_size));
  LOOM_RETURN_IF_ERROR(
      attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &p.max_threads_per_block));
  LOOM_RETURN_IF_ERROR(
      attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, &p.shared_memory_per_block));
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                 &p.shared_memory_per_block_optin));
  LOOM_RETURN_IF_ERROR(
      attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, &p.shared_memory_per_sm));
  LOOM_RETURN_IF_ERROR(
      attribute(CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, &p.registers_per_block));
  LOOM_RETURN_IF_ERROR(
      attribute(CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, &p.registers_per_sm));
  LOOM_RETURN_IF_ERROR(attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, &p.l2_cache_bytes));
  size_t total = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->device_total_mem(&total, dev), "cuDeviceTotalMem"));
  p.total_memory_bytes = static_cast<int64_t>(total);
  return p;
}

absl::StatusOr<Context> Driver::retain_primary_context(int ordinal) {
  CUdevice dev = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->device_get(&dev, ordinal), "cuDeviceGet"));
  CUcontext ctx = nullptr;
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->primary_ctx_retain(&ctx, dev), "cuDevicePrimaryCtxRetain"));
  return ctx;
}

absl::Status Driver::release_primary_context(int ordinal) {
  CUdevice dev = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->device_get(&dev, ordinal), "cuDeviceGet"));
  return api_->check(api_->primary_ctx_release(dev), "cuDevicePrimaryCtxRelease");
}

absl::Status Driver::set_current(Context context) {
  return api_->check(api_->ctx_set_current(context), "cuCtxSetCurrent");
}

absl::StatusOr<ModuleHandle> Driver::load_module(std::string_view image) {
  if (image.empty()) return absl::InvalidArgumentError("cannot load an empty CUDA module image");
  // cuModuleLoadData reads the size from the ELF (or PTX text) header; a copy guarantees the
  // NUL terminator PTX text needs.
  std::string copy(image);
  CUmodule module = nullptr;
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->module_load_data(&module, copy.c_str()), "cuModuleLoadData"));
  return module;
}

absl::Status Driver::unload_module(ModuleHandle module) {
  return api_->check(api_->module_unload(module), "cuModuleUnload");
}

absl::StatusOr<Function> Driver::get_function(ModuleHandle module, const std::string& name) {
  CUfunction fn = nullptr;
  absl::Status s =
      api_->check(api_->module_get_function(&fn, module, name.c_str()), "cuModuleGetFunction");
  if (!s.ok()) return absl::Status(s.code(), str_cat("kernel '", name, "': ", s.message()));
  return fn;
}

absl::Status Driver::set_dynamic_shared_limit(Function function, int64_t bytes) {
  return api_->check(
      api_->func_set_attribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                               static_cast<int>(bytes)),
      "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
}

absl::Status Driver::set_shared_carveout(Function function, int percent) {
  return api_->check(api_->func_set_attribute(
                         function, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent),
                     "cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)");
}

static_assert(sizeof(CUtensorMap) == sizeof(TensorMap), "TensorMap is a CUtensorMap");

absl::StatusOr<TensorMap> Driver::encode_tensor_map(const TensorMapShape& shape,
                                                    DevicePtr address) {
  if (!api_->tensor_map_encode_tiled)
    return absl::UnimplementedError(
        "the CUDA driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12 driver)");
  TensorMap map;
  const std::array<cuuint32_t, 5> element_strides = {1, 1, 1, 1, 1};
  LOOM_RETURN_IF_ERROR(api_->check(
      api_->tensor_map_encode_tiled(
          reinterpret_cast<CUtensorMap*>(map.bytes.data()),
          static_cast<CUtensorMapDataType>(shape.data_type), shape.rank,
          reinterpret_cast<void*>(address), shape.dims.data(), shape.strides.data(),
          shape.box.data(), element_strides.data(), CU_TENSOR_MAP_INTERLEAVE_NONE,
          static_cast<CUtensorMapSwizzle>(shape.swizzle), CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
      "cuTensorMapEncodeTiled"));
  return map;
}

absl::Status Driver::launch(Function function, Dim3 grid, Dim3 block, unsigned shared_memory_bytes,
                            Stream stream, void** args) {
  return api_->check(api_->launch_kernel(function, grid.x, grid.y, grid.z, block.x, block.y,
                                         block.z, shared_memory_bytes, stream, args, nullptr),
                     "cuLaunchKernel");
}

absl::StatusOr<Stream> Driver::create_stream() {
  CUstream s = nullptr;
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->stream_create(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate"));
  return s;
}

absl::Status Driver::destroy_stream(Stream stream) {
  return api_->check(api_->stream_destroy(stream), "cuStreamDestroy");
}

absl::Status Driver::synchronize(Stream stream) {
  return api_->check(api_->stream_synchronize(stream), "cuStreamSynchronize");
}

absl::StatusOr<DevicePtr> Driver::allocate(size_t bytes) {
  CUdeviceptr p = 0;
  // A zero-byte request still gets a distinct pointer (cuMemAlloc rejects size 0).
  LOOM_RETURN_IF_ERROR(api_->check(api_->mem_alloc(&p, bytes == 0 ? 1 : bytes), "cuMemAlloc"));
  return static_cast<DevicePtr>(p);
}

absl::Status Driver::free(DevicePtr ptr) {
  return api_->check(api_->mem_free(ptr), "cuMemFree");
}

absl::Status Driver::copy_to_device(DevicePtr dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return api_->check(api_->memcpy_htod(dst, src, bytes), "cuMemcpyHtoD");
}

absl::Status Driver::copy_to_host(void* dst, DevicePtr src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return api_->check(api_->memcpy_dtoh(dst, src, bytes), "cuMemcpyDtoH");
}

absl::Status Driver::copy_to_device_async(DevicePtr dst, const void* src, size_t bytes,
                                          Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return api_->check(api_->memcpy_htod_async(dst, src, bytes, stream), "cuMemcpyHtoDAsync");
}

absl::Status Driver::copy_to_host_async(void* dst, DevicePtr src, size_t bytes, Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return api_->check(api_->memcpy_dtoh_async(dst, src, bytes, stream), "cuMemcpyDtoHAsync");
}

absl::Status Driver::copy_on_device_async(DevicePtr dst, DevicePtr src, size_t bytes,
                                          Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return api_->check(api_->memcpy_dtod_async(dst, src, bytes, stream), "cuMemcpyDtoDAsync");
}

absl::StatusOr<Event> Driver::create_event() {
  CUevent e = nullptr;
  LOOM_RETURN_IF_ERROR(api_->check(api_->event_create(&e, CU_EVENT_DEFAULT), "cuEventCreate"));
  return e;
}

absl::Status Driver::destroy_event(Event event) {
  return api_->check(api_->event_destroy(event), "cuEventDestroy");
}

absl::Status Driver::record_event(Event event, Stream stream) {
  return api_->check(api_->event_record(event, stream), "cuEventRecord");
}

absl::Status Driver::wait_event(Stream stream, Event event) {
  return api_->check(api_->stream_wait_event(stream, event, 0), "cuStreamWaitEvent");
}

absl::Status Driver::synchronize_event(Event event) {
  return api_->check(api_->event_synchronize(event), "cuEventSynchronize");
}

absl::StatusOr<bool> Driver::event_done(Event event) {
  const CUresult r = api_->event_query(event);
  if (r == CUDA_ERROR_NOT_READY) return false;
  LOOM_RETURN_IF_ERROR(api_->check(r, "cuEventQuery"));
  return true;
}

absl::StatusOr<float> Driver::elapsed_ms(Event start, Event end) {
  float ms = 0;
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->event_elapsed_time(&ms, start, end), "cuEventElapsedTime"));
  return ms;
}

bool Driver::has_graphs() const {
  return api_->has_graphs();
}

namespace {
absl::Status no_graphs() {
  return absl::UnimplementedError("the CUDA driver has no CUDA graph entry points");
}
}  // namespace

absl::StatusOr<GraphExec> Driver::capture(Stream stream,
                                          const std::function<absl::Status()>& launches) {
  if (!api_->has_graphs()) return no_graphs();
  // Thread-local: other threads' calls (another graph's allocations) do not break the capture.
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->stream_begin_capture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                  "cuStreamBeginCapture"));
  const absl::Status launched = launches();
  CUgraph graph = nullptr;  // the capture ends whatever failed: left open, it breaks the stream
  const absl::Status ended =
      api_->check(api_->stream_end_capture(stream, &graph), "cuStreamEndCapture");
  CUgraphExec exec = nullptr;
  absl::Status made = launched.ok() ? ended : launched;
  if (made.ok())
    made = api_->check(api_->graph_instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  if (graph) (void)api_->graph_destroy(graph);  // the executable graph keeps what it needs
  LOOM_RETURN_IF_ERROR(made);
  return exec;
}

absl::StatusOr<int64_t> Driver::resident_blocks(Function function, int64_t threads,
                                                int64_t shared_bytes, int64_t cluster,
                                                int64_t sms) {
  if (cluster <= 1) {
    if (!api_->occupancy_blocks)
      return absl::UnimplementedError("the CUDA driver has no occupancy query");
    int per_sm = 0;
    LOOM_RETURN_IF_ERROR(
        api_->check(api_->occupancy_blocks(&per_sm, function, static_cast<int>(threads),
                                           static_cast<size_t>(shared_bytes)),
                    "cuOccupancyMaxActiveBlocksPerMultiprocessor"));
    return int64_t{per_sm} * sms;
  }
  if (!api_->occupancy_clusters)
    return absl::UnimplementedError("the CUDA driver has no cluster occupancy query");
  CUlaunchAttribute dims{};
  dims.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  dims.value.clusterDim.x = static_cast<unsigned>(cluster);
  dims.value.clusterDim.y = 1;
  dims.value.clusterDim.z = 1;
  CUlaunchConfig config{};
  config.gridDimX = static_cast<unsigned>(cluster);
  config.gridDimY = config.gridDimZ = 1;
  config.blockDimX = static_cast<unsigned>(threads);
  config.blockDimY = config.blockDimZ = 1;
  config.sharedMemBytes = static_cast<unsigned>(shared_bytes);
  config.attrs = &dims;
  config.numAttrs = 1;
  int clusters = 0;
  LOOM_RETURN_IF_ERROR(api_->check(api_->occupancy_clusters(&clusters, function, &config),
                                   "cuOccupancyMaxActiveClusters"));
  return int64_t{clusters} * cluster;
}

absl::StatusOr<bool> Driver::capturing(Stream stream) {
  if (!api_->stream_is_capturing) return false;  // a driver without it cannot capture either
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  LOOM_RETURN_IF_ERROR(
      api_->check(api_->stream_is_capturing(stream, &status), "cuStreamIsCapturing"));
  if (status == CU_STREAM_CAPTURE_STATUS_INVALIDATED)
    return absl::FailedPreconditionError(
        "the stream's CUDA graph capture was invalidated by an earlier call (end the capture "
        "and begin again)");
  return status == CU_STREAM_CAPTURE_STATUS_ACTIVE;
}

absl::Status Driver::record_event_in_capture(Event event, Stream stream) {
  if (!api_->event_record_with_flags)
    return absl::UnimplementedError("the CUDA driver has no cuEventRecordWithFlags (CUDA 11.1)");
  return api_->check(api_->event_record_with_flags(event, stream, CU_EVENT_RECORD_EXTERNAL),
                     "cuEventRecordWithFlags");
}

absl::Status Driver::wait_event_in_capture(Stream stream, Event event) {
  return api_->check(api_->stream_wait_event(stream, event, CU_EVENT_WAIT_EXTERNAL),
                     "cuStreamWaitEvent");
}

absl::Status Driver::launch_graph(GraphExec graph, Stream stream) {
  if (!api_->has_graphs()) return no_graphs();
  return api_->check(api_->graph_launch(graph, stream), "cuGraphLaunch");
}

absl::Status Driver::destroy_graph(GraphExec graph) {
  if (!api_->has_graphs()) return no_graphs();
  return api_->check(api_->graph_exec_destroy(graph), "cuGraphExecDestroy");
}

#else  // !LOOM_HAVE_NVRTC

struct Driver::Api {};

absl::StatusOr<Driver*> Driver::get() {
  return absl::UnimplementedError(
      "loom was built without CUDA (the CUDA toolkit was not found when it was configured); "
      "the CUDA driver is not used");
}

// Unreachable without a Driver instance; defined so that the class is complete.
Driver::Driver(std::unique_ptr<Api> api) : api_(std::move(api)) {}
Driver::~Driver() = default;
// clang-format off
#define LOOM_NO_CUDA return absl::UnimplementedError("loom was built without CUDA")
absl::StatusOr<int> Driver::version() { LOOM_NO_CUDA; }
absl::StatusOr<int> Driver::device_count() { LOOM_NO_CUDA; }
absl::StatusOr<DeviceProperties> Driver::device_properties(int) { LOOM_NO_CUDA; }
absl::StatusOr<Context> Driver::retain_primary_context(int) { LOOM_NO_CUDA; }
absl::Status Driver::release_primary_context(int) { LOOM_NO_CUDA; }
absl::Status Driver::set_current(Context) { LOOM_NO_CUDA; }
absl::StatusOr<ModuleHandle> Driver::load_module(std::string_view) { LOOM_NO_CUDA; }
absl::Status Driver::unload_module(ModuleHandle) { LOOM_NO_CUDA; }
absl::StatusOr<Function> Driver::get_function(ModuleHandle, const std::string&) { LOOM_NO_CUDA; }
absl::Status Driver::set_dynamic_shared_limit(Function, int64_t) { LOOM_NO_CUDA; }
absl::Status Driver::set_shared_carveout(Function, int) { LOOM_NO_CUDA; }
absl::StatusOr<TensorMap> Driver::encode_tensor_map(const TensorMapShape&, DevicePtr) {
  LOOM_NO_CUDA;
}
absl::Status Driver::launch(Function, Dim3, Dim3, unsigned, Stream, void**) { LOOM_NO_CUDA; }
absl::StatusOr<Stream> Driver::create_stream() { LOOM_NO_CUDA; }
absl::Status Driver::destroy_stream(Stream) { LOOM_NO_CUDA; }
absl::Status Driver::synchronize(Stream) { LOOM_NO_CUDA; }
absl::StatusOr<DevicePtr> Driver::allocate(size_t) { LOOM_NO_CUDA; }
absl::Status Driver::free(DevicePtr) { LOOM_NO_CUDA; }
absl::Status Driver::copy_to_device(DevicePtr, const void*, size_t) { LOOM_NO_CUDA; }
absl::Status Driver::copy_to_host(void*, DevicePtr, size_t) { LOOM_NO_CUDA; }
absl::Status Driver::copy_to_device_async(DevicePtr, const void*, size_t, Stream) { LOOM_NO_CUDA; }
absl::Status Driver::copy_to_host_async(void*, DevicePtr, size_t, Stream) { LOOM_NO_CUDA; }
absl::Status Driver::copy_on_device_async(DevicePtr, DevicePtr, size_t, Stream) { LOOM_NO_CUDA; }
absl::StatusOr<Event> Driver::create_event() { LOOM_NO_CUDA; }
absl::Status Driver::destroy_event(Event) { LOOM_NO_CUDA; }
absl::Status Driver::record_event(Event, Stream) { LOOM_NO_CUDA; }
absl::Status Driver::wait_event(Stream, Event) { LOOM_NO_CUDA; }
absl::Status Driver::synchronize_event(Event) { LOOM_NO_CUDA; }
absl::StatusOr<bool> Driver::event_done(Event) { LOOM_NO_CUDA; }
absl::StatusOr<float> Driver::elapsed_ms(Event, Event) { LOOM_NO_CUDA; }
bool Driver::has_graphs() const { return false; }
absl::StatusOr<GraphExec> Driver::capture(Stream, const std::function<absl::Status()>&) {
  LOOM_NO_CUDA;
}
absl::StatusOr<bool> Driver::capturing(Stream) { LOOM_NO_CUDA; }
absl::StatusOr<int64_t> Driver::resident_blocks(Function, int64_t, int64_t, int64_t, int64_t) {
  LOOM_NO_CUDA;
}
absl::Status Driver::record_event_in_capture(Event, Stream) { LOOM_NO_CUDA; }
absl::Status Driver::wait_event_in_capture(Stream, Event) { LOOM_NO_CUDA; }
absl::Status Driver::launch_graph(GraphExec, Stream) { LOOM_NO_CUDA; }
absl::Status Driver::destroy_graph(GraphExec) { LOOM_NO_CUDA; }
// clang-format on
#undef LOOM_NO_CUDA

#endif  // LOOM_HAVE_NVRTC

absl::StatusOr<bool> finished_within(Driver& driver, Event event, double timeout_s) {
  // Spinning at first (a run's latency), then sleeping between polls.
  const auto started = std::chrono::steady_clock::now();
  for (int polls = 0;; ++polls) {
    LOOM_ASSIGN_OR_RETURN(bool done, driver.event_done(event));
    if (done) return true;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (waited > timeout_s) return false;
    if (polls < 1000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace loom::runtime::cuda
