// A stand-in for the CUDA driver (libcuda.so.1) for tests on machines without a GPU: loom's
// driver loader finds it through LD_LIBRARY_PATH and resolves its entry points through
// cuGetProcAddress_v2, exactly as it does the real one's.
//
// Device memory is host memory (a device pointer is the host address), copies are memcpy, and
// every copy is checked to stay inside one allocation. A launch checks its shape and is counted
// (loom_fake_cuda_launches), as are copies between host and device (loom_fake_cuda_host_copies)
// and waits of a stream for an event (loom_fake_cuda_stream_waits). Kernels run only when their
// cubin was registered with loom_fake_cuda_emulate (with its CUDA source): then in the CUDA
// emulator (test/cuda_emulator.hpp), so that a whole graph's results can be checked.
// Faults are injected through loom_fake_cuda_configure:
//   - fault_after_launches = n >= 0: launch n + 1 "faults" the way a kernel's illegal address
//     does on a real GPU: the launch itself succeeds, and every later call (synchronization,
//     copies, launches, allocations) returns CUDA_ERROR_ILLEGAL_ADDRESS: the context is lost;
//   - out_of_memory: every cuMemAlloc returns CUDA_ERROR_OUT_OF_MEMORY.
// Configuring again clears a fault (a fresh device, as after a process restart).
// A wrong kernel is injected through loom_fake_cuda_scribble(prefix, param, byte): a launch of a
// kernel that does not run in the emulator, named with that prefix, fills the allocation its
// pointer parameter number `param` points into with that byte (a kernel that writes wrong
// values). Such kernels have no source here, so the caller names the parameter.
// A hung kernel through loom_fake_cuda_hang(prefix): after a launch of a kernel named with that
// prefix, cuEventQuery answers CUDA_ERROR_NOT_READY until the next configure.
// CUDA graphs: launches on a stream being captured are recorded (their parameters copied: 8 bytes
// each, or a tensor map's 128; none for kernels without source), as are copies between device
// buffers, and replayed in order, each launch counted, by cuGraphLaunch (counted:
// loom_fake_cuda_graph_launches). External event records and waits (CU_EVENT_RECORD_EXTERNAL,
// CU_EVENT_WAIT_EXTERNAL) are allowed in a capture and nothing to replay (the stand-in runs
// everything at once). What a capture cannot hold fails and invalidates the capture, as on the
// real driver (cuStreamEndCapture then fails): synchronizing the stream, copies through the host,
// launching a graph, a wait without the external flag (for an event recorded outside the
// capture), and, stricter than the real driver, a plain event record (inside a capture it would
// order only work of that capture, which loom never means). loom_fake_cuda_no_graphs makes
// cuGraphInstantiateWithFlags fail (a driver that cannot instantiate the graph).
// Occupancy: the blocks an SM holds (cuOccupancyMaxActiveBlocksPerMultiprocessor) by the
// threads (2048 an SM) and dynamic shared memory (228 KiB an SM, 1 KiB a block for the system),
// and the clusters the device holds (cuOccupancyMaxActiveClusters) by those, over its SMs;
// loom_fake_cuda_occupancy sets the SM count and either answer. loom_fake_cuda_last_grid tells
// the grid (x) of the last launch of a kernel.

#include <cuda.h>
#include <elf.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emulator.hpp"

namespace {

struct State {
  std::mutex mu;
  int launches = 0;
  int host_copies = 0;   // copies between host and device memory
  int stream_waits = 0;  // cuStreamWaitEvent calls
  int max_shared_carveouts = 0;  // functions asked to prefer the most shared memory
  int fault_after = -1;
  bool out_of_memory = false;
  CUresult lost = CUDA_SUCCESS;                // sticky once a kernel faulted
  std::string scribble_prefix;                 // kernels that write scribble_byte (empty: none)
  int scribble_param = 0, scribble_byte = 0;
  std::string hang_prefix;                    // kernels that never finish (empty: none)
  bool hung = false;                          // one of them was launched
  std::map<CUdeviceptr, size_t> allocations;  // device pointer -> bytes
  std::map<CUstream, std::unique_ptr<struct FakeGraph>> capturing;  // streams being captured
  int graph_launches = 0;
  bool no_graphs = false;  // cuGraphInstantiateWithFlags fails
  int sms = 132;
  int blocks_per_sm = -1, clusters = -1;  // occupancy answers (-1: by threads and shared memory)
  std::map<std::string, unsigned> last_grid;  // per kernel name: the last launch's grid (x)
  int sm_arch = 90;
  // Cubins whose kernels run in the CUDA emulator: their source, compiled on first load.
  struct Emulated {
    std::string cubin, source, cxx;
    std::shared_ptr<loom::testing::CudaEmulator> emulator;
  };
  std::vector<Emulated> emulated;
};

// A loaded module; its kernels run in the emulator when its cubin was registered, else not at all.
struct FakeModule {
  std::shared_ptr<loom::testing::CudaEmulator> emulator;
  std::string source;
  std::vector<std::unique_ptr<struct FakeFunction>> functions;
};
struct FakeFunction {
  std::string name;
  FakeModule* module = nullptr;
  size_t params = 0;  // the kernel's parameter count (8 bytes each: pointers and i64; or maps)
  std::vector<bool> tensor_map_params;  // per parameter: a tensor map
  int dynamic_shared_limit = 48 * 1024;  // raised by cuFuncSetAttribute, as on a GPU
};

// A captured launch: the kernel, its shape and a copy of its parameters' bytes; or (f null) a
// captured copy between device buffers.
struct CapturedLaunch {
  struct alignas(64) Param {  // a tensor map's alignment
    std::array<char, sizeof(CUtensorMap)> bytes;
  };
  CUfunction f;
  std::array<unsigned, 7> shape;  // grid, block, dynamic shared bytes
  std::vector<Param> params;
  CUdeviceptr copy_dst = 0, copy_src = 0;
  size_t copy_bytes = 0;
};
struct FakeGraph {
  std::vector<CapturedLaunch> launches;
  bool invalidated = false;  // a call the capture cannot hold was made
};

// The opt-in shared memory of an H100 block.
constexpr int kSharedOptIn = 227 * 1024;

State& state() {
  static State* s = new State;  // never destroyed: drivers outlive static destructors
  return *s;
}

// The sticky error of a lost context, for calls that need a working device.
CUresult health() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().lost;
}

void count(int& counter) {
  std::lock_guard<std::mutex> lock(state().mu);
  ++counter;
}

// Whether [p, p + bytes) lies inside one allocation.
bool inside(CUdeviceptr p, size_t bytes) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().allocations.upper_bound(p);
  if (it == state().allocations.begin()) return false;
  --it;
  return p >= it->first && p + bytes <= it->first + it->second;
}

// The errors this driver returns, with the real driver's names and texts.
struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
     "an illegal memory access was encountered"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
     "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
     "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_ISOLATION, "CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
     "dependency created which crosses the capture sequence boundary"},
};

// *out = the name (or text) of r, as cuGetErrorName (cuGetErrorString) gives it.
CUresult describe(CUresult r, const char** out, bool text) {
  for (const ErrorText& e : kErrors)
    if (e.code == r) {
      *out = text ? e.text : e.name;
      return CUDA_SUCCESS;
    }
  *out = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}
CUresult error_name(CUresult r, const char** out) { return describe(r, out, false); }
CUresult error_string(CUresult r, const char** out) { return describe(r, out, true); }

CUresult init(unsigned int) { return CUDA_SUCCESS; }
CUresult driver_version(int* v) {
  *v = 12080;
  return CUDA_SUCCESS;
}
CUresult device_count(int* n) {
  *n = 1;
  return CUDA_SUCCESS;
}
CUresult device_get(CUdevice* d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_VALUE;
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult device_name(char* name, int len, CUdevice) {
  std::snprintf(name, static_cast<size_t>(len), "loom fake GPU");
  return CUDA_SUCCESS;
}
CUresult device_attribute(int* v, CUdevice_attribute a, CUdevice) {
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = state().sm_arch / 10; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = state().sm_arch % 10; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: {
      std::lock_guard<std::mutex> lock(state().mu);  // loom_fake_cuda_occupancy may set it
      *v = state().sms;
      break;
    }
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 227 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 228 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *v = 64 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 64 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 50 * 1024 * 1024; break;
    default: *v = 0; break;
  }
  return CUDA_SUCCESS;
}
CUresult total_mem(size_t* bytes, CUdevice) {
  *bytes = size_t{80} << 30;
  return CUDA_SUCCESS;
}

int context_tag = 0;  // the primary context's handle points here
CUresult ctx_retain(CUcontext* c, CUdevice) {
  *c = reinterpret_cast<CUcontext>(&context_tag);
  return CUDA_SUCCESS;
}
CUresult ctx_release(CUdevice) { return CUDA_SUCCESS; }
CUresult ctx_set_current(CUcontext) { return health(); }

// The bytes of an ELF image: up to the end of its section or program header table.
size_t elf_size(const void* image) {
  Elf64_Ehdr h;
  std::memcpy(&h, image, sizeof h);
  if (h.e_ident[EI_CLASS] != ELFCLASS64) return 0;
  return std::max<size_t>(h.e_shoff + size_t{h.e_shnum} * h.e_shentsize,
                          h.e_phoff + size_t{h.e_phnum} * h.e_phentsize);
}

// The parameter count of kernel `name` in generated CUDA source (its top-level commas + 1).
// Kernel `name`'s parameters in the source: per parameter, whether it is a tensor map (passed
// by value, 128 bytes) rather than an 8-byte pointer or i64. Empty where the kernel is missing.
std::vector<bool> parameter_kinds(const std::string& source, const std::string& name) {
  size_t at = source.find(" " + name + "(");
  if (at == std::string::npos) return {};
  at += name.size() + 2;
  std::vector<bool> maps;
  std::string param;
  int depth = 0;
  for (; at < source.size(); ++at) {
    const char c = source[at];
    if (c == '(') ++depth;
    if ((c == ')' && depth == 0) || (c == ',' && depth == 0)) {
      maps.push_back(param.find("LOOM_TENSOR_MAP_PARAM") != std::string::npos);
      param.clear();
      if (c == ')') break;
      continue;
    }
    if (c == ')') --depth;
    param += c;
  }
  return maps;
}

CUresult module_load(CUmodule* m, const void* image) {
  if (CUresult r = health()) return r;
  if (!image || std::memcmp(image, "\x7f" "ELF", 4) != 0) return CUDA_ERROR_INVALID_IMAGE;
  auto module = std::make_unique<FakeModule>();
  {
    std::lock_guard<std::mutex> lock(state().mu);
    const size_t size = elf_size(image);
    for (State::Emulated& e : state().emulated) {
      if (e.cubin.size() != size || std::memcmp(e.cubin.data(), image, size) != 0) continue;
      if (!e.emulator) {
        std::string error;
        e.emulator = loom::testing::CudaEmulator::compile(e.source, e.cxx, &error);
        if (!e.emulator) {
          std::fprintf(stderr, "fake libcuda: %s\n", error.c_str());
          return CUDA_ERROR_INVALID_IMAGE;
        }
      }
      module->emulator = e.emulator;
      module->source = e.source;
      break;
    }
  }
  *m = reinterpret_cast<CUmodule>(module.release());
  return CUDA_SUCCESS;
}
CUresult module_unload(CUmodule m) {
  delete reinterpret_cast<FakeModule*>(m);
  return health();
}
CUresult module_function(CUfunction* f, CUmodule m, const char* name) {
  if (CUresult r = health()) return r;
  if (!name || !*name) return CUDA_ERROR_NOT_FOUND;
  auto* module = reinterpret_cast<FakeModule*>(m);
  auto fn = std::make_unique<FakeFunction>();
  fn->name = name;
  fn->module = module;
  if (module->emulator) {
    fn->tensor_map_params = parameter_kinds(module->source, name);
    fn->params = fn->tensor_map_params.size();
    if (fn->params == 0) return CUDA_ERROR_NOT_FOUND;
  }
  *f = reinterpret_cast<CUfunction>(fn.get());
  module->functions.push_back(std::move(fn));
  return CUDA_SUCCESS;
}

CUresult func_set_attribute(CUfunction f, CUfunction_attribute attribute, int value) {
  if (CUresult r = health()) return r;
  if (f && attribute == CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT) {
    if (value < -1 || value > 100) return CUDA_ERROR_INVALID_VALUE;
    if (value == 100) count(state().max_shared_carveouts);
    return CUDA_SUCCESS;
  }
  if (!f || attribute != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES || value < 0 ||
      value > kSharedOptIn)
    return CUDA_ERROR_INVALID_VALUE;
  reinterpret_cast<FakeFunction*>(f)->dynamic_shared_limit = value;
  return CUDA_SUCCESS;
}

// Whether a kernel's name starts with prefix (an empty prefix names none).
bool named(const FakeFunction& fn, const std::string& prefix) {
  return !prefix.empty() && fn.name.compare(0, prefix.size(), prefix) == 0;
}

// A launch of a kernel that does not run in the emulator: one that hangs (loom_fake_cuda_hang)
// leaves the device busy; one that writes wrong values (loom_fake_cuda_scribble) fills the
// allocation its pointer parameter scribble_param points into.
void misbehave(const FakeFunction& fn, void** params) {
  std::lock_guard<std::mutex> lock(state().mu);
  if (named(fn, state().hang_prefix)) state().hung = true;
  if (!named(fn, state().scribble_prefix)) return;
  CUdeviceptr p = 0;
  std::memcpy(&p, params[state().scribble_param], 8);
  auto it = state().allocations.upper_bound(p);
  if (it == state().allocations.begin()) return;
  --it;
  if (p < it->first + it->second)
    std::memset(reinterpret_cast<void*>(it->first), state().scribble_byte, it->second);
}

// The graph `stream` is being captured into (null: none); under state().mu.
FakeGraph* captured_into(CUstream stream) {
  auto it = state().capturing.find(stream);
  return it == state().capturing.end() ? nullptr : it->second.get();
}

// Whether `stream` is being captured; if so, a call that cannot be captured was made: it fails
// and the capture is invalidated.
bool refused_in_capture(CUstream stream) {
  std::lock_guard<std::mutex> lock(state().mu);
  FakeGraph* graph = captured_into(stream);
  if (graph) graph->invalidated = true;
  return graph != nullptr;
}

CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                unsigned bz, unsigned shared_bytes, CUstream stream, void** params, void**) {
  if (CUresult r = health()) return r;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 ||
      uint64_t{bx} * by * bz > 1024 || gy > 65535 || gz > 65535 || !params || !f ||
      shared_bytes > static_cast<unsigned>(reinterpret_cast<FakeFunction*>(f)->dynamic_shared_limit))
    return CUDA_ERROR_INVALID_VALUE;
  {
    std::lock_guard<std::mutex> lock(state().mu);
    if (FakeGraph* graph = captured_into(stream)) {
      if (graph->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
      const auto* fn = reinterpret_cast<const FakeFunction*>(f);
      CapturedLaunch c{f, {gx, gy, gz, bx, by, bz, shared_bytes}, {}};
      for (size_t k = 0; k < fn->params; ++k) {
        c.params.emplace_back();
        std::memcpy(c.params.back().bytes.data(), params[k],
                    fn->tensor_map_params[k] ? sizeof(CUtensorMap) : 8);
      }
      graph->launches.push_back(std::move(c));
      return CUDA_SUCCESS;
    }
    state().last_grid[reinterpret_cast<const FakeFunction*>(f)->name] = gx;
    if (state().fault_after >= 0 && state().launches >= state().fault_after) {
      state().lost = CUDA_ERROR_ILLEGAL_ADDRESS;  // reported by the calls that follow
      ++state().launches;
      return CUDA_SUCCESS;
    }
    ++state().launches;
  }
  const auto* fn = reinterpret_cast<const FakeFunction*>(f);
  if (!fn->module->emulator) {
    misbehave(*fn, params);
    return CUDA_SUCCESS;
  }
  // Every parameter of loom's kernels is 8 bytes (a device pointer or an i64 scalar) but the
  // tensor maps, which the emulator takes by address.
  std::vector<uint64_t> args(fn->params);
  for (size_t k = 0; k < fn->params; ++k) {
    if (fn->tensor_map_params[k])
      args[k] = reinterpret_cast<uint64_t>(params[k]);
    else
      std::memcpy(&args[k], params[k], 8);
  }
  std::string error =
      fn->module->emulator->launch(fn->name, {gx, gy, gz}, {bx, by, bz}, args);
  if (error.empty()) return CUDA_SUCCESS;
  std::fprintf(stderr, "fake libcuda: %s\n", error.c_str());
  return CUDA_ERROR_LAUNCH_FAILED;
}

// The checks the driver makes that loom's maps could fail (alignment, strides, box), then the
// emulator's description of the tensor (its kernels read it).
CUresult tensor_map_encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank,
                                 void* address, const cuuint64_t* dims, const cuuint64_t* strides,
                                 const cuuint32_t* box, const cuuint32_t* element_strides,
                                 CUtensorMapInterleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  if (!map || rank < 1 || rank > 5 || !address || !dims || !box || !element_strides ||
      (rank > 1 && !strides) || reinterpret_cast<uintptr_t>(address) % 16 != 0)
    return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t d = 0; d < rank; ++d) {
    if (dims[d] == 0 || box[d] == 0 || box[d] > 256 || element_strides[d] != 1)
      return CUDA_ERROR_INVALID_VALUE;
    if (d > 0 && strides[d - 1] % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  }
  static constexpr uint64_t kBytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  if (static_cast<unsigned>(type) >= sizeof kBytes / sizeof kBytes[0]) return CUDA_ERROR_INVALID_VALUE;
  const uint64_t element_bytes = kBytes[type];
  if (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && box[0] * element_bytes > 128)
    return CUDA_ERROR_INVALID_VALUE;
  loom::testing::emulator_detail::encode_emulated_tensor_map(
      map, address, rank, static_cast<uint32_t>(element_bytes), dims, strides, box,
      static_cast<uint32_t>(swizzle));
  return CUDA_SUCCESS;
}

CUresult stream_create(CUstream* s, unsigned int) {
  if (CUresult r = health()) return r;
  *s = reinterpret_cast<CUstream>(new int(0));  // each stream a handle of its own
  return CUDA_SUCCESS;
}
CUresult stream_destroy(CUstream s) {
  delete reinterpret_cast<int*>(s);
  return health();
}
CUresult stream_synchronize(CUstream s) {
  if (refused_in_capture(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return health();
}

CUresult mem_alloc(CUdeviceptr* p, size_t bytes) {
  if (CUresult r = health()) return r;
  std::lock_guard<std::mutex> lock(state().mu);
  if (state().out_of_memory || bytes == 0) return state().out_of_memory ? CUDA_ERROR_OUT_OF_MEMORY
                                                                       : CUDA_ERROR_INVALID_VALUE;
  void* block = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!block) return CUDA_ERROR_OUT_OF_MEMORY;
  *p = reinterpret_cast<CUdeviceptr>(block);
  state().allocations[*p] = bytes;
  return CUDA_SUCCESS;
}
CUresult mem_free(CUdeviceptr p) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().allocations.find(p);
  if (it == state().allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  std::free(reinterpret_cast<void*>(p));
  state().allocations.erase(it);
  return state().lost;
}
CUresult htod(CUdeviceptr dst, const void* src, size_t n) {
  if (CUresult r = health()) return r;
  if (!inside(dst, n)) return CUDA_ERROR_INVALID_VALUE;
  count(state().host_copies);
  std::memcpy(reinterpret_cast<void*>(dst), src, n);
  return CUDA_SUCCESS;
}
CUresult dtoh(void* dst, CUdeviceptr src, size_t n) {
  if (CUresult r = health()) return r;
  if (!inside(src, n)) return CUDA_ERROR_INVALID_VALUE;
  count(state().host_copies);
  std::memcpy(dst, reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}
CUresult htod_async(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
  if (refused_in_capture(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return htod(dst, src, n);
}
CUresult dtoh_async(void* dst, CUdeviceptr src, size_t n, CUstream s) {
  if (refused_in_capture(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return dtoh(dst, src, n);
}
CUresult dtod_async(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
  if (CUresult r = health()) return r;
  if (!inside(dst, n) || !inside(src, n)) return CUDA_ERROR_INVALID_VALUE;
  {
    std::lock_guard<std::mutex> lock(state().mu);
    if (FakeGraph* graph = captured_into(s)) {
      if (graph->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
      CapturedLaunch copy{};
      copy.copy_dst = dst;
      copy.copy_src = src;
      copy.copy_bytes = n;
      graph->launches.push_back(std::move(copy));
      return CUDA_SUCCESS;
    }
  }
  std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult event_create(CUevent* e, unsigned int) {
  if (CUresult r = health()) return r;
  *e = reinterpret_cast<CUevent>(new int(0));
  return CUDA_SUCCESS;
}
CUresult event_destroy(CUevent e) {
  delete reinterpret_cast<int*>(e);
  return CUDA_SUCCESS;
}
CUresult event_record(CUevent, CUstream s) {
  if (refused_in_capture(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return health();
}
// In a capture only with the external flag (a node of the graph), outside only without.
CUresult event_record_with_flags(CUevent e, CUstream s, unsigned int flags) {
  if (CUresult r = health()) return r;
  std::lock_guard<std::mutex> lock(state().mu);
  FakeGraph* graph = captured_into(s);
  if (!e || flags != (graph ? static_cast<unsigned>(CU_EVENT_RECORD_EXTERNAL) : 0u)) {
    if (graph) graph->invalidated = true;
    return graph ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_ERROR_INVALID_VALUE;
  }
  return graph && graph->invalidated ? CUDA_ERROR_STREAM_CAPTURE_INVALIDATED : CUDA_SUCCESS;
}
CUresult event_synchronize(CUevent) { return health(); }
CUresult event_query(CUevent) {
  if (CUresult r = health()) return r;
  std::lock_guard<std::mutex> lock(state().mu);
  return state().hung ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}
// The events here are never recorded inside a capture: a capturing stream waits for one only
// with the external flag (a node of the graph), and the flag is refused outside a capture.
CUresult stream_wait_event(CUstream s, CUevent e, unsigned int flags) {
  if (CUresult r = health()) return r;
  std::lock_guard<std::mutex> lock(state().mu);
  ++state().stream_waits;
  if (!e || flags > CU_EVENT_WAIT_EXTERNAL) return CUDA_ERROR_INVALID_VALUE;
  FakeGraph* graph = captured_into(s);
  if (!graph) return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  if (flags == 0) graph->invalidated = true;
  return graph->invalidated ? (flags == 0 ? CUDA_ERROR_STREAM_CAPTURE_ISOLATION
                                          : CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
                            : CUDA_SUCCESS;
}
CUresult stream_is_capturing(CUstream s, CUstreamCaptureStatus* status) {
  if (!status) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(state().mu);
  const FakeGraph* graph = captured_into(s);
  *status = !graph               ? CU_STREAM_CAPTURE_STATUS_NONE
            : graph->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                 : CU_STREAM_CAPTURE_STATUS_ACTIVE;
  return CUDA_SUCCESS;
}
CUresult event_elapsed(float* ms, CUevent, CUevent) {
  if (CUresult r = health()) return r;
  *ms = 0.001f;
  return CUDA_SUCCESS;
}

// The blocks an SM holds by threads and dynamic shared memory (under state().mu).
int blocks_per_sm(int threads, size_t shared_bytes) {
  if (state().blocks_per_sm >= 0) return state().blocks_per_sm;
  if (threads <= 0 || threads > 1024) return 0;
  return static_cast<int>(std::min<size_t>(
      {32, static_cast<size_t>(2048 / threads), 228 * 1024 / (shared_bytes + 1024)}));
}
CUresult occupancy_blocks(int* n, CUfunction f, int threads, size_t shared_bytes) {
  if (!n || !f) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(state().mu);
  *n = blocks_per_sm(threads, shared_bytes);
  return CUDA_SUCCESS;
}
CUresult occupancy_clusters(int* n, CUfunction f, const CUlaunchConfig* config) {
  if (!n || !f || !config || config->blockDimY != 1 || config->blockDimZ != 1)
    return CUDA_ERROR_INVALID_VALUE;
  unsigned cluster = 1;
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
      cluster = config->attrs[i].value.clusterDim.x;
  if (cluster == 0 || config->gridDimX % cluster != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(state().mu);
  *n = state().clusters >= 0
           ? state().clusters
           : blocks_per_sm(static_cast<int>(config->blockDimX), config->sharedMemBytes) *
                 state().sms / static_cast<int>(cluster);
  return CUDA_SUCCESS;
}

CUresult begin_capture(CUstream s, CUstreamCaptureMode) {
  if (CUresult r = health()) return r;
  std::lock_guard<std::mutex> lock(state().mu);
  if (!s) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;  // the legacy stream
  if (captured_into(s)) return CUDA_ERROR_ILLEGAL_STATE;
  state().capturing[s] = std::make_unique<FakeGraph>();
  return CUDA_SUCCESS;
}
CUresult end_capture(CUstream s, CUgraph* graph) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().capturing.find(s);
  if (it == state().capturing.end()) return CUDA_ERROR_ILLEGAL_STATE;
  std::unique_ptr<FakeGraph> captured = std::move(it->second);
  state().capturing.erase(it);
  *graph = nullptr;
  if (captured->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  *graph = reinterpret_cast<CUgraph>(captured.release());
  return state().lost;
}
CUresult graph_instantiate(CUgraphExec* exec, CUgraph graph, unsigned long long) {
  if (CUresult r = health()) return r;
  if (!exec || !graph) return CUDA_ERROR_INVALID_VALUE;
  if (std::lock_guard<std::mutex> lock(state().mu); state().no_graphs)
    return CUDA_ERROR_NOT_SUPPORTED;
  *exec = reinterpret_cast<CUgraphExec>(new FakeGraph(*reinterpret_cast<FakeGraph*>(graph)));
  return CUDA_SUCCESS;
}
CUresult graph_destroy(CUgraph graph) {
  delete reinterpret_cast<FakeGraph*>(graph);
  return CUDA_SUCCESS;
}
CUresult graph_exec_destroy(CUgraphExec exec) {
  delete reinterpret_cast<FakeGraph*>(exec);
  return CUDA_SUCCESS;
}
// Each captured launch again, with its parameters as captured.
CUresult graph_launch(CUgraphExec exec, CUstream s) {
  if (CUresult r = health()) return r;
  if (!exec) return CUDA_ERROR_INVALID_VALUE;
  if (refused_in_capture(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  count(state().graph_launches);
  // Kernels without source captured no parameters: pointers to zeros stand in for them.
  static void** const no_params = [] {
    static uint64_t zeros[64] = {};
    static void* p[64];
    for (void*& q : p) q = zeros;
    return p;
  }();
  for (CapturedLaunch& c : reinterpret_cast<FakeGraph*>(exec)->launches) {
    if (!c.f) {
      std::memmove(reinterpret_cast<void*>(c.copy_dst), reinterpret_cast<const void*>(c.copy_src),
                   c.copy_bytes);
      continue;
    }
    std::vector<void*> params;
    for (CapturedLaunch::Param& p : c.params) params.push_back(p.bytes.data());
    const std::array<unsigned, 7>& d = c.shape;
    if (CUresult r = launch(c.f, d[0], d[1], d[2], d[3], d[4], d[5], d[6], s,
                            params.empty() ? no_params : params.data(), nullptr))
      return r;
  }
  return CUDA_SUCCESS;
}

const std::map<std::string, void*>& entry_points() {
  static const auto* table = new std::map<std::string, void*>{
      {"cuTensorMapEncodeTiled", reinterpret_cast<void*>(&tensor_map_encode_tiled)},
      {"cuGetErrorName", reinterpret_cast<void*>(&error_name)},
      {"cuGetErrorString", reinterpret_cast<void*>(&error_string)},
      {"cuInit", reinterpret_cast<void*>(&init)},
      {"cuDriverGetVersion", reinterpret_cast<void*>(&driver_version)},
      {"cuDeviceGetCount", reinterpret_cast<void*>(&device_count)},
      {"cuDeviceGet", reinterpret_cast<void*>(&device_get)},
      {"cuDeviceGetName", reinterpret_cast<void*>(&device_name)},
      {"cuDeviceGetAttribute", reinterpret_cast<void*>(&device_attribute)},
      {"cuDeviceTotalMem", reinterpret_cast<void*>(&total_mem)},
      {"cuDevicePrimaryCtxRetain", reinterpret_cast<void*>(&ctx_retain)},
      {"cuDevicePrimaryCtxRelease", reinterpret_cast<void*>(&ctx_release)},
      {"cuCtxSetCurrent", reinterpret_cast<void*>(&ctx_set_current)},
      {"cuModuleLoadData", reinterpret_cast<void*>(&module_load)},
      {"cuModuleUnload", reinterpret_cast<void*>(&module_unload)},
      {"cuModuleGetFunction", reinterpret_cast<void*>(&module_function)},
      {"cuFuncSetAttribute", reinterpret_cast<void*>(&func_set_attribute)},
      {"cuLaunchKernel", reinterpret_cast<void*>(&launch)},
      {"cuStreamCreate", reinterpret_cast<void*>(&stream_create)},
      {"cuStreamDestroy", reinterpret_cast<void*>(&stream_destroy)},
      {"cuStreamSynchronize", reinterpret_cast<void*>(&stream_synchronize)},
      {"cuMemAlloc", reinterpret_cast<void*>(&mem_alloc)},
      {"cuMemFree", reinterpret_cast<void*>(&mem_free)},
      {"cuMemcpyHtoD", reinterpret_cast<void*>(&htod)},
      {"cuMemcpyDtoH", reinterpret_cast<void*>(&dtoh)},
      {"cuMemcpyHtoDAsync", reinterpret_cast<void*>(&htod_async)},
      {"cuMemcpyDtoHAsync", reinterpret_cast<void*>(&dtoh_async)},
      {"cuMemcpyDtoDAsync", reinterpret_cast<void*>(&dtod_async)},
      {"cuStreamWaitEvent", reinterpret_cast<void*>(&stream_wait_event)},
      {"cuEventCreate", reinterpret_cast<void*>(&event_create)},
      {"cuEventDestroy", reinterpret_cast<void*>(&event_destroy)},
      {"cuEventRecord", reinterpret_cast<void*>(&event_record)},
      {"cuEventRecordWithFlags", reinterpret_cast<void*>(&event_record_with_flags)},
      {"cuStreamIsCapturing", reinterpret_cast<void*>(&stream_is_capturing)},
      {"cuOccupancyMaxActiveBlocksPerMultiprocessor", reinterpret_cast<void*>(&occupancy_blocks)},
      {"cuOccupancyMaxActiveClusters", reinterpret_cast<void*>(&occupancy_clusters)},
      {"cuEventSynchronize", reinterpret_cast<void*>(&event_synchronize)},
      {"cuEventQuery", reinterpret_cast<void*>(&event_query)},
      {"cuEventElapsedTime", reinterpret_cast<void*>(&event_elapsed)},
      {"cuStreamBeginCapture", reinterpret_cast<void*>(&begin_capture)},
      {"cuStreamEndCapture", reinterpret_cast<void*>(&end_capture)},
      {"cuGraphInstantiateWithFlags", reinterpret_cast<void*>(&graph_instantiate)},
      {"cuGraphLaunch", reinterpret_cast<void*>(&graph_launch)},
      {"cuGraphDestroy", reinterpret_cast<void*>(&graph_destroy)},
      {"cuGraphExecDestroy", reinterpret_cast<void*>(&graph_exec_destroy)},
  };
  return *table;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(
    const char* symbol, void** pfn, int, cuuint64_t, CUdriverProcAddressQueryResult* status) {
  auto it = entry_points().find(symbol ? symbol : "");
  *pfn = it == entry_points().end() ? nullptr : it->second;
  if (status)
    *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

// Test controls (found with dlsym on the loaded library).
__attribute__((visibility("default"))) void loom_fake_cuda_configure(int fault_after_launches,
                                                                    int out_of_memory) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().fault_after = fault_after_launches;
  state().out_of_memory = out_of_memory != 0;
  state().lost = CUDA_SUCCESS;
  state().launches = 0;
  state().scribble_prefix.clear();
  state().hang_prefix.clear();
  state().hung = false;
  state().no_graphs = false;
  state().sms = 132;
  state().blocks_per_sm = state().clusters = -1;
}
// The device's SMs, and the blocks an SM holds and the clusters the device holds (-1: by the
// launch's threads and shared memory), until the next configure.
__attribute__((visibility("default"))) void loom_fake_cuda_occupancy(int sms, int blocks_per_sm,
                                                                     int clusters) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().sms = sms;
  state().blocks_per_sm = blocks_per_sm;
  state().clusters = clusters;
}
// The grid (x) of the last launch of the kernel `name` (0: none).
__attribute__((visibility("default"))) int loom_fake_cuda_last_grid(const char* name) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().last_grid.find(name ? name : "");
  return it == state().last_grid.end() ? 0 : static_cast<int>(it->second);
}
// Whether cuGraphInstantiateWithFlags fails (until the next configure).
__attribute__((visibility("default"))) void loom_fake_cuda_no_graphs(int fail) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().no_graphs = fail != 0;
}
__attribute__((visibility("default"))) int loom_fake_cuda_graph_launches() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().graph_launches;
}
// Kernels named with `prefix` that do not run in the emulator never finish.
__attribute__((visibility("default"))) void loom_fake_cuda_hang(const char* prefix) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().hang_prefix = prefix ? prefix : "";
}
// Kernels named with `prefix` that do not run in the emulator write `byte` over the allocation
// their pointer parameter number `param` points into.
__attribute__((visibility("default"))) void loom_fake_cuda_scribble(const char* prefix, int param,
                                                                    int byte) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().scribble_prefix = prefix ? prefix : "";
  state().scribble_param = param;
  state().scribble_byte = byte;
}
__attribute__((visibility("default"))) int loom_fake_cuda_launches() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().launches;
}
// Kernels of this cubin (the bytes of a kernel cache entry's kernel.o) run in the CUDA emulator,
// compiled from its source (the entry's source.txt) by the host compiler cxx, when it is loaded.
__attribute__((visibility("default"))) void loom_fake_cuda_emulate(const void* cubin, size_t bytes,
                                                                   const char* source,
                                                                   const char* cxx) {
  std::string image(static_cast<const char*>(cubin), bytes);
  std::lock_guard<std::mutex> lock(state().mu);
  for (const State::Emulated& e : state().emulated)
    if (e.cubin == image) return;  // registered already (a module the cache served again)
  state().emulated.push_back({std::move(image), source, cxx, nullptr});
}
__attribute__((visibility("default"))) int loom_fake_cuda_host_copies() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().host_copies;
}
__attribute__((visibility("default"))) int loom_fake_cuda_max_shared_carveouts() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().max_shared_carveouts;
}
__attribute__((visibility("default"))) int loom_fake_cuda_stream_waits() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().stream_waits;
}
__attribute__((visibility("default"))) int loom_fake_cuda_live_allocations() {
  std::lock_guard<std::mutex> lock(state().mu);
  return static_cast<int>(state().allocations.size());
}

// The bytes the live allocations asked for.
__attribute__((visibility("default"))) size_t loom_fake_cuda_live_bytes() {
  std::lock_guard<std::mutex> lock(state().mu);
  size_t total = 0;
  for (const auto& [address, bytes] : state().allocations) total += bytes;
  return total;
}

}  // extern "C"
