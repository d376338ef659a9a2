// CpuJit: compiles loop-IR modules to native code for a CPU in this process (LLVM ORC LLJIT, O3).
// No LLVM types appear here; the JIT lives behind a pointer to an implementation in lib/runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"

namespace loom::runtime {

// Uniform calling convention of every compiled kernel: buffers in the order of
// Func::buffer_params(), scalars (i64) in the order of Func::scalar_params().
using KernelFn = void (*)(void* const* buffers, const int64_t* scalars);

// Machine code of a module, before it is loaded: what the kernel cache stores on disk.
struct ObjectCode {
  std::string bytes;                 // a relocatable object file for the JIT's target
  std::vector<std::string> symbols;  // entry point of each func, in func order
};

class CpuJit {
 public:
  // A JIT for target, which must be a CPU of this machine's architecture (a different CPU model
  // or feature set is allowed: the code must then only use features this machine has).
  static absl::StatusOr<std::unique_ptr<CpuJit>> create(const Target& target = Target::host_cpu());
  // False in a build without LLVM (LOOM_WITH_LLVM=OFF), where create() returns Unimplemented.
  static bool available();
  ~CpuJit();
  CpuJit(const CpuJit&) = delete;
  CpuJit& operator=(const CpuJit&) = delete;

  // Compiles every func of m (O3 for the target) and returns their entry points, in func order.
  // Kernels stay valid while this CpuJit lives. Safe to call from several threads.
  // The same as load_object(compile_object(m)).
  absl::StatusOr<std::vector<KernelFn>> compile(const ir::Module& m);
  // LLVM code generation alone: m to an object file (counted in stats().llvm_compiles).
  absl::StatusOr<ObjectCode> compile_object(const ir::Module& m);
  // Links an object (from compile_object of a CpuJit for the same target, in any process) into
  // this JIT and returns its entry points. No LLVM code generation runs. Each object gets a
  // JITDylib of its own, so one object's symbols never clash with another's. Thread-safe.
  absl::StatusOr<std::vector<KernelFn>> load_object(const ObjectCode& object);

  const Target& target() const;
  // "LLVM 19.1.7": the code generator's version, part of kernel cache keys.
  static std::string backend_version();

 private:
  struct Impl;
  explicit CpuJit(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::runtime
