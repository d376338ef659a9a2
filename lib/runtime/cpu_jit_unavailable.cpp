// CpuJit and host CPU detection in a build without LLVM (LOOM_WITH_LLVM=OFF): a GPU-only loom,
// small enough to carry to a GPU machine with nothing but the CUDA driver. Every CPU compile
// returns Unimplemented; graphs compile for CUDA targets as usual, and constants fold through
// the reference evaluator (passes::fold_constants).

#include <unistd.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loom/runtime/cpu_jit.hpp"

namespace loom {

Target Target::host_cpu() {
  static const Target host = [] {
    std::vector<std::string> features;
#if defined(__x86_64__)
    __builtin_cpu_init();
    // LLVM's names for the features loom's CPU templates ask about.
    if (__builtin_cpu_supports("sse4.2")) features.push_back("sse4.2");
    if (__builtin_cpu_supports("avx")) features.push_back("avx");
    if (__builtin_cpu_supports("avx2")) features.push_back("avx2");
    if (__builtin_cpu_supports("fma")) features.push_back("fma");
    if (__builtin_cpu_supports("avx512f")) features.push_back("avx512f");
    if (__builtin_cpu_supports("avx512bw")) features.push_back("avx512bw");
    if (__builtin_cpu_supports("avx512dq")) features.push_back("avx512dq");
    if (__builtin_cpu_supports("avx512vl")) features.push_back("avx512vl");
    Target t = Target::cpu("x86_64-unknown-linux-gnu", "generic", std::move(features));
#elif defined(__aarch64__)
    Target t = Target::cpu("aarch64-unknown-linux-gnu", "generic", std::move(features));
#else
    Target t = Target::cpu("unknown-unknown-unknown", "generic", std::move(features));
#endif
    t.set_caches(sysconf(_SC_LEVEL1_DCACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE),
                 static_cast<int>(std::thread::hardware_concurrency()));
    return t;
  }();
  return host;
}

namespace runtime {

namespace {
absl::Status no_llvm() {
  return absl::UnimplementedError(
      "loom was built without its LLVM CPU back end (LOOM_WITH_LLVM=OFF): only CUDA targets "
      "compile");
}
}  // namespace

struct CpuJit::Impl {};

CpuJit::CpuJit(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuJit::~CpuJit() = default;

bool CpuJit::available() {
  return false;
}

absl::StatusOr<std::unique_ptr<CpuJit>> CpuJit::create(const Target&) {
  return no_llvm();
}

// Unreachable: create() never makes a CpuJit in this build.
const Target& CpuJit::target() const {
  static const Target none = Target::host_cpu();
  return none;
}

std::string CpuJit::backend_version() {
  return "none";
}

absl::StatusOr<std::vector<KernelFn>> CpuJit::compile(const ir::Module&) {
  return no_llvm();
}

absl::StatusOr<ObjectCode> CpuJit::compile_object(const ir::Module&) {
  return no_llvm();
}

absl::StatusOr<std::vector<KernelFn>> CpuJit::load_object(const ObjectCode&) {
  return no_llvm();
}

}  // namespace runtime
}  // namespace loom
