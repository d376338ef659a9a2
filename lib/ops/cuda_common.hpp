// What the CUDA schedule templates share (private to lib/ops): the device properties their
// hardware-centric spaces derive from, the launch of a kernel body, and warp/block reductions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "loom/core/target.hpp"
#include "loom/graph/op.hpp"
#include "loom/ir/buffer.hpp"
#include "loom/ir/expr.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ops {

// The properties of a GPU that size schedule spaces. The values are the device's when a CUDA
// device of the target's sm arch is present, else typical values of that arch (sm_80: A100,
// sm_90: H100 SXM), so that spaces can be built and tested on machines without a GPU.
struct GpuProperties {
  int sm_arch = 0;
  int sm_count = 0;
  int warp_size = 32;
  int max_threads_per_block = 1024;
  // Static __shared__ arrays are limited to 48 KiB per block whatever the device could opt in to.
  int64_t shared_memory_per_block = 48 * 1024;
  // What a kernel may take when it opts in (dynamic shared memory, which the code generator
  // uses when a kernel's shared buffers pass 48 KiB).
  int64_t shared_memory_per_block_optin = 48 * 1024;
  int64_t shared_memory_per_sm = 0;
  int registers_per_block = 64 * 1024;
  int registers_per_sm = 64 * 1024;
  int max_registers_per_thread = 255;
  bool from_device = false;  // false: the arch's typical values

  // Typical values of sm_<sm_arch> (sm_80 and sm_90 exactly; other archs approximately).
  static GpuProperties defaults_for(int sm_arch);
};

// The device's properties when target's device is present and of target's arch, else the arch's
// defaults (the SM count the target sets, if it does). Queried once per process and device.
GpuProperties gpu_properties(const Target& target);

// The default of a GEMM-like space: the first of by_size (largest tile first) that breaks no rule
// and gives every SM a block (blocks(config) of them), else the last.
tune::Config first_filling_config(const tune::Space& s, const std::vector<tune::Config>& by_size,
                                  int sm_count,
                                  const std::function<int64_t(const tune::Config&)>& blocks);

// A CUDA schedule template.
ScheduleTemplate cuda_template(std::string name, std::function<bool(const TemplateContext&)> applies,
                               std::function<tune::Space(const TemplateContext&)> space,
                               decltype(ScheduleTemplate::build) build);

// The kernel launch: for block in [0, blocks) (blockIdx.x), for thread in [0, threads)
// (threadIdx.x), body.
ir::Stmt gpu_launch(const ir::Var& block, int64_t blocks, const ir::Var& thread, int64_t threads,
                    ir::Stmt body);

// store, guarded by row < rows where row_tail and by col < cols where col_tail: a tile's element
// that may lie past the edge of its matrix.
ir::Stmt store_inside(ir::Stmt store, const ir::Expr& row, int64_t rows, bool row_tail,
                      const ir::Expr& col, int64_t cols, bool col_tail);

// Where a GEMM's C[g][row][col] is stored: the buffer, the logical shape, and the index of an
// element (null: c itself is the row-major [G, M, N]).
struct GemmOutput {
  ir::Buffer c;
  int64_t M = 0, N = 0;
  std::function<std::vector<ir::Expr>(const ir::Expr&, const ir::Expr&, const ir::Expr&)> at;
  // With `at`: a row's columns are consecutive elements of c, the row's first at a multiple of
  // N (an NHWC output's channels), so `at` may take a Ramp of columns.
  bool at_columns_contiguous = false;
};

// Stores accumulators acc[slot], ..., acc[slot + lanes - 1] as C's elements (row, col), ...,
// (row, col + lanes - 1) of GEMM g, col a multiple of lanes: final values in C's type, guarded
// past M and N (tails as told). Where C is stored as it is, or through `at` with contiguous
// columns, and N is a multiple of lanes, one vector store (aligned, and col < N holds for all
// lanes or none; the CUDA emitter makes it one store); otherwise one store each.
ir::Stmt store_accumulators(const GemmOutput& out, const ir::Expr& g, const ir::Expr& row,
                            const ir::Expr& col, const ir::Buffer& acc, int64_t slot, int lanes,
                            bool row_tail, bool col_tail);

// Butterfly all-reduce of acc[slot] across the lanes of each warp (shfl_xor_sync with masks
// warp/2, ..., 1): afterwards every lane holds the warp's combined value. Every lane of the warp
// must run it.
ir::Stmt warp_all_reduce(ir::ReduceKind kind, const ir::Buffer& acc, int64_t slot, int warp_size);

// The all-reduce of acc[slot] across `warps` consecutive warps of one group (a row's warps):
// warp all-reduce, lane 0 of each warp writes partials[group * warps + warp], a barrier, every
// thread combines its group's partials, and a barrier again so that partials can be reused.
// Every thread of the block must run it (the barriers).
ir::Stmt group_all_reduce(ir::ReduceKind kind, const ir::Buffer& acc, int64_t slot,
                          const ir::Buffer& partials, const ir::Expr& group, const ir::Expr& warp,
                          const ir::Expr& lane, int64_t warps, int warp_size);

}  // namespace loom::ops
