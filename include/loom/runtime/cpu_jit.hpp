// CpuJit: compiles loop-IR modules to native code for a CPU in this process (LLVM ORC LLJIT, O3).
// No LLVM types appear here; the JIT lives behind a pointer to an implementation in lib/runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"

namespace loom::runtime {

// Uniform calling convention of every compiled kernel: buffers in the order of
// Func::buffer_params(), scalars (i64) in the order of Func::scalar_params().
using KernelFn = void (*)(void* const* buffers, const int64_t* scalars);

class CpuJit {
 public:
  // A JIT for target, which must be a CPU of this machine's architecture (a different CPU model
  // or feature set is allowed: the code must then only use features this machine has).
  static absl::StatusOr<std::unique_ptr<CpuJit>> create(const Target& target = Target::host_cpu());
  ~CpuJit();
  CpuJit(const CpuJit&) = delete;
  CpuJit& operator=(const CpuJit&) = delete;

  // Compiles every func of m (O3 for the target) and returns their entry points, in func order.
  // Kernels stay valid while this CpuJit lives. Safe to call from several threads.
  absl::StatusOr<std::vector<KernelFn>> compile(const ir::Module& m);

  const Target& target() const;

 private:
  struct Impl;
  explicit CpuJit(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::runtime
