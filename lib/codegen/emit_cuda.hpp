// emit_cuda: translates a flattened loop-IR Module into readable CUDA C++ source for NVRTC.
// Private to lib/; the public entry points are in include/loom/runtime/cuda.hpp.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ir/func.hpp"
#include "loom/runtime/cuda.hpp"

namespace loom::codegen {

struct EmittedCuda {
  std::string source;  // preamble, then every definition
  // One per func, in func order: the extern "C" symbol and the launch shape.
  std::vector<runtime::cuda::KernelInfo> kernels;
  // What every part of the source needs (includes, intrinsics), and the kernels' definitions
  // (each with its module-scope arrays): funcs whose code is the same up to names share one.
  // preamble + any subset of the definitions is a source NVRTC compiles.
  std::string preamble;
  std::vector<std::string> definitions;
  std::vector<int> definition_of;  // per func: the index of its definition
};

// Every func becomes an extern "C" __global__ kernel whose parameters are the func's params in
// order (buffers as pointers, scalars as long long). Loops of kind kGpuBlock/kGpuThread become
// blockIdx/threadIdx of their axis; the launch extent of an axis is the largest extent bound to
// it (loops with a smaller one are guarded). Vector expressions are computed lane by lane; a
// vector store of consecutive elements (a ramp of stride 1, up to 16 bytes) whose first index
// is provably a multiple of the lane count, into a buffer in global or shared memory, is one
// vector store (kernel buffers are 16-byte aligned: LoadedModule::launch), and so is each such
// load its value reads whatever the lanes hold (not under a select, && or ||); others go lane
// by lane. f16/bf16 values are held in float registers and rounded after every operation,
// as on the CPU (once on their way to memory: the conversion rounds).
// A global buffer allocated outside every GPU loop is storage of the whole launch: a module-scope
// __device__ array, zero when the module loads and kept between launches (split-K's partial sums
// and arrival counters), so one loaded module must not run the kernel twice at once.
// Unsupported IR is an InvalidArgument/Unimplemented status naming the node, never a crash.
absl::StatusOr<EmittedCuda> emit_cuda(const ir::Module& m);

}  // namespace loom::codegen
