// emit_llvm: translates a flattened loop-IR Module into an LLVM Module for the CPU back end.
// Private to lib/: only lib/codegen/emit_llvm.cpp and lib/runtime/cpu_jit.cpp include it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ir/func.hpp"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace loom::codegen {

// What the generated code is compiled for; the JIT fills it from its TargetMachine.
struct EmitOptions {
  std::string triple;       // module target triple
  std::string data_layout;  // module data layout string (from the TargetMachine)
  std::string cpu_name;     // function attribute "target-cpu"
  std::string features;     // function attribute "target-features", LLVM syntax "+avx2,-avx512f"
  bool prefer_512_bit_vectors = false;  // "prefer-vector-width"="512" (AVX-512 hosts)
  // Appended to every exported symbol so that symbols stay unique within one JIT instance.
  std::string symbol_suffix;
  // Serial loops with a constant trip count above this get llvm.loop.unroll.disable (0: none).
  int64_t full_unroll_limit = 0;
};

struct EmittedModule {
  std::unique_ptr<llvm::Module> module;
  // Exported entry point of each func, in func order. Each has the runtime's uniform signature
  // void(void* const* buffers, const int64_t* scalars).
  std::vector<std::string> entry_symbols;

  EmittedModule();
  EmittedModule(EmittedModule&&) noexcept;
  EmittedModule& operator=(EmittedModule&&) noexcept;
  ~EmittedModule();
};

// Emits every func of m into one new llvm::Module owned by ctx's user. The IR must be flattened
// (one index per Load/Store) and free of GPU-only constructs; anything else is reported as
// InvalidArgument/Unimplemented naming the offending node, never a crash. The result passes the
// LLVM verifier.
absl::StatusOr<EmittedModule> emit_llvm(const ir::Module& m, llvm::LLVMContext& ctx,
                                        const EmitOptions& options);

}  // namespace loom::codegen
