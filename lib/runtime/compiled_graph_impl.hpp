// What a CompiledGraph holds: value slots (one per graph node), kernel launches and the JIT
// that owns their code. Private to lib/.
#pragma once

#include <memory>
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
  runtime::KernelFn fn = nullptr;
  std::vector<int> buffers;           // slots, in the kernel's buffer parameter order
  std::vector<std::string> symbols;   // symbolic dims, in its scalar parameter order
};

struct CompiledGraphImpl {
  std::shared_ptr<runtime::CpuJit> jit;
  std::vector<Slot> slots;
  std::vector<int> inputs, outputs;
  std::vector<Launch> launches;
  std::vector<KernelInfo> kernels;
  bool poison_buffers = false;
};

}  // namespace loom
