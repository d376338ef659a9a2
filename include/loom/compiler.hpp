// Compiler: turns a Graph into a CompiledGraph for a Target.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/graph/graph.hpp"
#include "loom/runtime/compiled_graph.hpp"
#include "loom/tune/space.hpp"

namespace loom {

// How tensors are stored (loom/graph/layouts.hpp).
enum class LayoutPolicy {
  kRowMajor,  // every tensor row-major
  kFixed,     // every anchor whose templates take CompileOptions::fixed_layout reads its first
              // input and writes its output in it (elementwise operators follow)
  kJoint,     // ALT's joint layout and loop tuning: each anchor's layout choices are tuned and
              // timed (at the tune level; kNone times the default configs), so are the
              // conversions between them, and the assignment with the least total time wins
};

struct CompileOptions {
  TuneLevel tune = TuneLevel::kNone;
  // Layouts of the tensors between anchors. Graphs with symbolic dims that specialize choose
  // per binding; generic kernels (specialize_shapes off) stay row-major.
  LayoutPolicy layouts = LayoutPolicy::kRowMajor;
  std::vector<LayoutStep> fixed_layout;  // for kFixed, e.g. channels_blocked(16)
  // Fill every computed buffer with NaN (floats) or 0x5a bytes before each run, so a kernel
  // that skips an element is caught. For tests; costs a pass over memory.
  bool poison_buffers = false;
  // Configs by template name, used instead of tuning for every node that template schedules
  // (tests sweep a space this way; an engine replays recorded choices). A config that breaks
  // one of the space's rules is an InvalidArgument error.
  std::map<std::string, tune::Config> template_configs;
  // The values each parameter of a template's space may take, by template and parameter name,
  // e.g. {{"cuda_wgmma_gemm", {{"tma", {0}}, {"cluster", {1}}}}}: an engine keeps configs that
  // misbehave on its device out of tuning, and out of every node that template schedules. The
  // space keeps only those choices (tune::Space::limit: where its default breaks them, the
  // closest valid config replaces it); a forced config must keep them too. A parameter the
  // template lacks, or limits that leave no valid config, are an InvalidArgument error.
  std::map<std::string, std::map<std::string, std::vector<int64_t>>> template_limits;
  // Seconds a candidate's first run on a GPU may take while it is tuned. One still running then
  // is taken for a hung kernel (a wrong barrier count waits forever): the compile fails naming
  // it. Only ending the process stops such a kernel; the tuning's device memory is left to it,
  // and later tunings on that device fail at once with the same error while it runs.
  double tune_candidate_timeout_s = 20;
  // Seconds a synchronous run of a graph compiled for a CUDA GPU (run(), run_on_device(),
  // profile()) may wait for its kernels; 0: as long as they take. Past it the run is a
  // DeadlineExceeded error rather than a process stuck in the driver: the kernels run on until
  // the process ends, with the graph's device memory left to them, and later runs and tunings on
  // that device fail at once with the same error while they run. (Queued runs,
  // enqueue_on_device, return before their kernels run.)
  double run_timeout_s = 0;
  // Runs of a graph compiled for a CUDA GPU: once two runs in a row use the same device buffers
  // (host runs always do), the kernel launches are captured as one CUDA graph and later runs on
  // those buffers replay it: one launch instead of one per kernel, which at batch 1 is much of
  // the time. Runs on other buffers, and profile(), launch kernel by kernel. Off: always so.
  bool cuda_graphs = true;
  // Tuning progress on stderr when something is measured: a live line on a terminal (kernels
  // done / total, elapsed, best time), else one summary line.
  bool report_progress = true;
  // The graph passes (loom/graph/passes.hpp: identities, common subexpressions, constant
  // folding, batch norm into convolutions) before anything is scheduled.
  bool graph_passes = true;
  // Post-scheduling fusion (loom/graph/partition.hpp): each anchor operator's kernel also
  // computes the injective operators before it that only it reads and the elementwise, reshape
  // and transpose operators after it; other injective chains become one kernel each. Off: one
  // kernel per operator.
  bool fuse = true;
  // A graph with symbolic dims (batch, sequence length): on, compile() only checks it, and each
  // binding of the dims that run() or CompiledGraph::specialize() meets is compiled on first
  // sight as a static graph, with templates and tuning at this level, and kept (its kernels also
  // go to the kernel cache, so the next process finds them). Off: one compile with generic
  // kernels (the default schedule, dims as runtime arguments) serves every binding.
  bool specialize_shapes = true;
  // Bindings a CompiledGraph keeps; beyond it the least recently used goes (its kernels stay in
  // the kernel cache).
  int max_specializations = 64;

  // The kernel cache: each kernel is looked up by a stable key (its task, target, LLVM and loom
  // versions) in the process-wide memory level, then on disk, and stored in both after it is
  // built, so a warm compile neither tunes nor runs LLVM. Off: everything is built afresh.
  // LOOM_DUMP_IR also bypasses it (dumps show every stage).
  bool use_cache = true;
  // Off: the memory level only.
  bool use_disk_cache = true;
  // The disk level's directory; empty: $LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else
  // ~/.cache/loom. An unwritable directory leaves the cache in memory, with one warning.
  std::string cache_dir;
  // Bound on the disk level's bytes (least recently used entries go); 0: $LOOM_CACHE_MAX_BYTES,
  // else unbounded.
  uint64_t cache_max_bytes = 0;
};

class Compiler {
 public:
  explicit Compiler(Target target = Target::host_cpu()) : target_(std::move(target)) {}

  // Errors recorded while building the graph come back here, as do unsupported targets.
  absl::StatusOr<CompiledGraph> compile(const Graph& graph, const CompileOptions& options = {}) const;

  const Target& target() const { return target_; }

 private:
  Target target_;
};

}  // namespace loom
