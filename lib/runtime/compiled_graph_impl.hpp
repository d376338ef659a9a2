// What a CompiledGraph holds: value slots (one per graph node), kernel launches and the JIT
// that owns their code. Private to lib/.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "loom/runtime/compiled_graph.hpp"
#include "loom/runtime/cpu_jit.hpp"

namespace loom {

struct Slot {
  enum class Kind { kInput, kConstant, kComputed };
  Kind kind = Slot::Kind::kComputed;
  std::string name;
  TensorType type;
  NDArray constant;  // kConstant
};

struct Launch {
  runtime::KernelFn fn = nullptr;  // CPU kernels
  int gpu_kernel = -1;             // GPU kernels: its index in GpuProgram::kernel_at
  std::vector<int> buffers;           // slots, in the kernel's buffer parameter order
  std::vector<std::string> symbols;   // symbolic dims, in its scalar parameter order
};

// The static versions of a graph with symbolic dims, one per binding of them, each built on
// first request and kept (least recently used beyond a capacity). Concurrent requests for one
// binding build it once; a failed build is not kept.
class Specializations {
 public:
  using Build = std::function<absl::StatusOr<CompiledGraph>(const DimBindings&)>;
  Specializations(Build build, size_t capacity) : build_(std::move(build)), capacity_(capacity) {}

  absl::StatusOr<CompiledGraph> get(const DimBindings& dims);
  size_t size() const;

 private:
  using Result = std::shared_future<absl::StatusOr<CompiledGraph>>;
  struct Entry {
    Result result;
    uint64_t last_use = 0;
    uint64_t id = 0;  // tells a rebuilt entry from the one a failed build inserted
  };
  Build build_;
  size_t capacity_;
  mutable std::mutex mu_;
  std::map<DimBindings, Entry> entries_;
  uint64_t clock_ = 0;
};

// Where each intermediate value lives in a run's arena: offsets[slot] in bytes, or -1 for slots
// that are not arena-allocated (inputs, constants, outputs, values fused into the kernels that
// read them). used[slot]: whether a kernel reads or writes the slot or the graph returns it.
struct MemoryPlan {
  std::vector<int64_t> offsets;
  std::vector<bool> used;
  int64_t bytes = 0;
};

struct CompiledGraphImpl;

// Greedy best-fit over the launches in order: a launch's output takes the smallest free block
// that holds it (or grows the arena), and the values whose last reader is that launch are freed
// after it, so a kernel's output never overlaps its inputs. Inputs, constants and outputs are
// not placed. shapes: each computed slot's physical extents.
MemoryPlan plan_memory(const CompiledGraphImpl& g, const std::vector<std::vector<int64_t>>& shapes);

// Memory for the intermediate values of one run (every computed slot that is not an output),
// kept between runs so that a steady stream of requests allocates (and page-faults) nothing.
struct Arena {
  std::shared_ptr<void> data;
  int64_t bytes = 0;
};

// Free arenas of one CompiledGraph: each run takes one (concurrent runs take different ones) and
// gives it back.
class ArenaPool {
 public:
  Arena take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return Arena{};
    Arena a = std::move(free_.back());
    free_.pop_back();
    return a;
  }
  void give_back(Arena a) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(a));
  }

 private:
  std::mutex mu_;
  std::vector<Arena> free_;
};

// Output buffers of one CompiledGraph that callers have let go of, kept for the next runs: a
// fresh buffer page-faults on first touch, a fifth or more of a small graph's run (a 1x1 conv
// at 56x56, two threads). A run's output is an NDArray whose deleter brings its buffer back here
// (or frees it, once the graph is gone), so a buffer returns only when no caller holds it. The
// kKeep buffers returned last wait, of whatever sizes (a graph run with varying dims meets many).
class OutputBuffers : public std::enable_shared_from_this<OutputBuffers> {
 public:
  static constexpr size_t kKeep = 4;
  OutputBuffers() = default;
  OutputBuffers(const OutputBuffers&) = delete;
  OutputBuffers& operator=(const OutputBuffers&) = delete;
  ~OutputBuffers();
  // An array for a run's output: a waiting buffer of its size, else a new one (64-byte aligned;
  // ResourceExhausted when the system has no memory for it).
  absl::StatusOr<NDArray> take(DType dtype, std::vector<int64_t> shape);

 private:
  void give_back(void* buffer, size_t bytes);

  std::mutex mu_;
  std::vector<std::pair<size_t, void*>> waiting_;  // (bytes, buffer), oldest first
};

struct GpuProgram;  // runtime/gpu_graph.hpp

// Made by make_shared (what a device constant's weak reference to a graph holding its host
// bytes needs: runtime/gpu_graph.hpp).
struct CompiledGraphImpl : std::enable_shared_from_this<CompiledGraphImpl> {
  std::shared_ptr<runtime::CpuJit> jit;
  // Set for a graph compiled for a CUDA target: its kernels, device memory and stream.
  std::shared_ptr<GpuProgram> gpu;
  std::vector<Slot> slots;
  std::vector<int> inputs, outputs;
  std::vector<Launch> launches;
  std::vector<KernelInfo> kernels;
  Graph graph;  // what the kernels compute (CompiledGraph::graph)
  bool poison_buffers = false;
  mutable ArenaPool arenas;
  std::shared_ptr<OutputBuffers> output_buffers = std::make_shared<OutputBuffers>();
  // The plan of a graph whose shapes are all static, made by its first run.
  mutable std::once_flag static_plan_once;
  mutable MemoryPlan static_plan;
  // The computed slots' physical shapes of a graph whose shapes are all static, worked out
  // once (a slot stored in a layout needs its layout's size).
  mutable std::once_flag static_shapes_once;
  mutable absl::StatusOr<std::vector<std::vector<int64_t>>> static_shapes;
  // Set for a graph with symbolic dims compiled per binding: run() hands each call to the
  // static version for its inputs' dims, and launches stay empty here.
  std::shared_ptr<Specializations> specializations;
};

}  // namespace loom
