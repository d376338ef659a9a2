// The tuner: builds a template's candidate kernels, compiles them in parallel, times each with
// warm-up and repeats (median), and returns the fastest, compiled and ready to launch.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/ndarray.hpp"
#include "loom/graph/op.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/tune/space.hpp"

namespace loom::tune {

struct Measurement {
  Config config;
  double median_ms = 0;
};

// An input the tuners time candidates on (CPU and GPU): small values from a hash of the index.
// Floats are multiples of 1/1024 in [-0.5, 0.5) (no denormals or NaNs to distort the timing, and
// varied, so that a candidate reading the wrong elements computes another output than the
// reference candidate); booleans 0 or 1; integers 0 (safe as indices).
NDArray tuning_input(DType dtype, std::vector<int64_t> shape);

// Whether a candidate's output `got` agrees with the reference candidate's `want` (same dtype and
// shape), as two correct schedules of one computation do: floats within 4 units in the last
// place of f16 and bf16 (each rounds its own f32 sum), 2^-11 for f32 (other summation orders),
// relative to each element's magnitude plus the output's root mean square (a sum that cancels
// keeps the error of its terms; of at most 65536 evenly spaced elements); NaN where want has NaN,
// infinities equal; integers and booleans exact. Otherwise an Aborted error says how many elements
// differ, and names the first.
absl::Status outputs_agree(const NDArray& want, const NDArray& got);

// Whether `config` is a whole config of template t's `space` that keeps its rules; an
// InvalidArgument error naming the missing parameter or the broken rule otherwise.
absl::Status check_config(const ScheduleTemplate& t, const Space& space, const Config& config);

struct TunedKernel {
  Config config;
  ir::Func func;  // the chosen kernel, lowered
  runtime::KernelFn fn = nullptr;
  // Constant inputs the kernel takes packed (input index, packed array), packed at compile time.
  std::vector<std::pair<int, NDArray>> packed_inputs;
  // The chosen candidate's object code: the kernel's symbol, then one pack func per packed
  // input (in packed_inputs order), for the kernel cache; and its printed loop IR.
  runtime::ObjectCode object;
  std::string source;
  std::vector<Measurement> measurements;  // first-round times; empty at TuneLevel::kNone
  // Candidates not timed because their output disagreed with the default config's (run once on
  // the same inputs; outputs_agree), with why.
  std::vector<Refusal> refused;
  double seconds = 0;                     // spent building, compiling and measuring
};

// Chooses t's config for ctx: the space's default at kNone, else the fastest of the pruned space
// (kFast) or the whole space (kFull): each candidate is timed (warm-up, repeats, median; runs
// write two output buffers in turn, so that no run finds the output it has just written), then
// the three fastest are timed again, interleaved, and the lowest median of that final round
// wins. constants[i] is input i's value when it is a constant (the kernel packs it, and it is
// timed on it), else null (timed on random data). Code lives in jit.
// A forced config replaces the choice (nothing is measured); it must satisfy the space's rules.
//
// A rewrite (post-scheduling fusion) turns a built candidate into the kernel finally compiled:
// candidates are timed as built and the fastest one the rewrite accepts is compiled rewritten
// (at kNone, only the rewritten default is compiled); its error, when it accepts none, is
// returned. The rewritten kernel's extra buffer params follow the template's inputs.
// `space` is the space to choose in (null: t.space(ctx)), e.g. one CompileOptions::template_limits
// limited.
using KernelRewrite = std::function<absl::StatusOr<ScheduledKernel>(const ScheduledKernel&)>;
absl::StatusOr<TunedKernel> tune_kernel(const ScheduleTemplate& t, const TemplateContext& ctx,
                                        const std::vector<const NDArray*>& constants,
                                        TuneLevel level, runtime::CpuJit& jit,
                                        const Config* forced = nullptr,
                                        const KernelRewrite* rewrite = nullptr,
                                        const Space* space = nullptr);

}  // namespace loom::tune
