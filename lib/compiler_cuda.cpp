// Compiler::compile for a CUDA target: fused groups -> one loop-IR func each -> one CUDA module
// -> NVRTC (or the kernel cache) -> a GpuProgram that the first run loads onto the device.

#include "compiler_cuda.hpp"

#include <optional>

#include "compiler_cache.hpp"
#include "graph/fusion.hpp"
#include "graph/template_context.hpp"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/partition.hpp"
#include "loom/ops/injective_cuda.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/tune/tuner.hpp"
#include "ops/cuda_common.hpp"
#include "runtime/gpu_graph.hpp"

namespace loom {
namespace {

constexpr int kDefaultThreadsPerBlock = 256;  // default-scheduled kernels: one element a thread

struct GroupKernel {
  ir::Func func;             // lowered, ready for the code generator
  std::vector<int> buffers;  // slots, in its buffer parameter order
  std::string schedule;
};

// The kernel computing group grp, or why it cannot be one kernel. Templates run their default
// config (or the forced one): GPU candidates are not measured yet.
absl::StatusOr<GroupKernel> build_group(const Graph& graph, const FusedGroup& grp,
                                        const Target& target, const CompileOptions& options) {
  const std::vector<Node>& nodes = graph.nodes();
  GroupKernel k;
  TemplateContext ctx;
  const ScheduleTemplate* t =
      grp.anchor >= 0 ? find_template(graph, nodes[static_cast<size_t>(grp.anchor)], target, &ctx)
                      : nullptr;
  if (t) {
    const Node& n = nodes[static_cast<size_t>(grp.anchor)];
    const tune::Space space = t->space(ctx);
    auto forced = options.template_configs.find(t->name);
    const tune::Config config =
        forced == options.template_configs.end() ? space.default_config() : forced->second;
    LOOM_RETURN_IF_ERROR(tune::check_config(*t, space, config));
    LOOM_ASSIGN_OR_RETURN(ScheduledKernel scheduled, t->build(ctx, config));
    if (!scheduled.packed.empty())
      return absl::UnimplementedError("template " + t->name +
                                      " packs constant inputs, which CUDA graphs do not run");
    std::vector<fusion::Prologue> prologues;
    std::optional<fusion::Epilogue> epilogue;
    if (!grp.prologue().empty()) {
      LOOM_ASSIGN_OR_RETURN(prologues, fusion::prologues_of(graph, grp));
    }
    if (grp.anchor != grp.output) {
      LOOM_ASSIGN_OR_RETURN(epilogue, fusion::epilogue_of(graph, grp));
    }
    ir::Func f = scheduled.func;
    // Last input first, so earlier parameters keep their places (as on the CPU).
    for (auto p = prologues.rbegin(); p != prologues.rend(); ++p) {
      LOOM_ASSIGN_OR_RETURN(f, passes::fuse_prologue(f, p->fusion));
    }
    if (epilogue) {
      LOOM_ASSIGN_OR_RETURN(f, passes::fuse_epilogue(f, epilogue->fusion));
    }
    k.func = passes::lower_scheduled(f, target);
    k.buffers = fusion::anchor_buffers(n, prologues, epilogue ? &*epilogue : nullptr, grp.output);
    k.schedule = t->name + "[" + config.to_string() + "]";
    return k;
  }
  LOOM_ASSIGN_OR_RETURN(te::Task task,
                        fusion::group_task(graph, grp, nodes[static_cast<size_t>(grp.output)].name));
  const tune::Config config = ops::injective_cuda_space(target).default_config();
  if (absl::StatusOr<ir::Func> injective = ops::injective_cuda_kernel(task, target, config);
      injective.ok()) {
    k.func = passes::lower_scheduled(*injective, target);
    k.schedule = "injective_cuda[" + config.to_string() + "]";
  } else {
    // Reductions and the like: the default schedule, each output element in a thread.
    k.func = passes::bind_gpu_loops(passes::lower(task, target), kDefaultThreadsPerBlock);
    k.schedule = "default";
  }
  k.buffers = grp.inputs;
  k.buffers.push_back(grp.output);
  return k;
}

// One group per operator of grp, in graph order.
std::vector<FusedGroup> one_per_operator(const Graph& graph, const FusedGroup& grp) {
  std::vector<FusedGroup> out;
  for (int m : grp.nodes) {
    FusedGroup single;
    single.anchor = m == grp.anchor ? m : -1;
    single.nodes = {m};
    single.output = m;
    single.inputs = fusion::outside_inputs(graph, {m});
    out.push_back(std::move(single));
  }
  return out;
}

// Why module m does not emit: the first func that does not emit alone, with its kernel's ops.
absl::Status emit_error(const ir::Module& m, const std::vector<KernelInfo>& kernels,
                        const absl::Status& whole) {
  for (size_t f = 0; f < m.funcs.size(); ++f) {
    ir::Module alone{m.name, m.target, {m.funcs[f]}};
    absl::StatusOr<std::string> s = runtime::cuda::emit_cuda_source(alone);
    if (s.ok()) continue;
    std::string ops;
    for (const std::string& op : kernels[f].ops) ops += (ops.empty() ? "'" : ", '") + op + "'";
    return absl::Status(s.status().code(), str_cat("generating CUDA for the kernel of ", ops, " (",
                                                   kernels[f].schedule, "): ",
                                                   s.status().message()));
  }
  return whole;
}

}  // namespace

absl::Status compile_for_cuda(const Target& target, const Graph& graph,
                              const CompileOptions& options, CompiledGraphImpl& impl) {
  if (!runtime::cuda::built_with_cuda())
    return absl::UnimplementedError(
        "target " + target.to_string() +
        ": this build of loom has no CUDA back end (the CUDA toolkit was not found when it was "
        "configured)");
  const std::vector<Node>& nodes = graph.nodes();
  auto program = std::make_shared<GpuProgram>();
  program->ordinal = target.device();
  ir::Module& module = program->module;
  module.name = "graph";
  module.target = target;
  dump_stage("graph", "graph", graph.to_string());

  PartitionOptions partition_options;
  partition_options.fuse = options.fuse;
  std::vector<FusedGroup> groups = partition(graph, partition_options);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const FusedGroup grp = groups[gi];
    const Node& out = nodes[static_cast<size_t>(grp.output)];
    absl::StatusOr<GroupKernel> k = build_group(graph, grp, target, options);
    if (!k.ok() && grp.nodes.size() > 1) {
      dump_stage("graph", "fusion-" + out.name,
                 str_cat(grp.to_string(graph), "\nnot fused: ", k.status().message(), "\n"));
      std::vector<FusedGroup> singles = one_per_operator(graph, grp);
      groups.erase(groups.begin() + static_cast<std::ptrdiff_t>(gi));
      groups.insert(groups.begin() + static_cast<std::ptrdiff_t>(gi), singles.begin(),
                    singles.end());
      --gi;
      continue;
    }
    if (!k.ok())
      return absl::Status(k.status().code(), str_cat("scheduling ", out.op, " node '", out.name,
                                                     "' for ", target.to_string(), ": ",
                                                     k.status().message()));
    // Kernels share one module, so their symbols are numbered.
    k->func.name = str_cat("k", module.funcs.size(), "_", k->func.name);
    Launch launch;
    launch.buffers = std::move(k->buffers);
    launch.gpu_kernel = static_cast<int>(module.funcs.size());
    KernelInfo info;
    for (int m : grp.nodes) info.ops.push_back(nodes[static_cast<size_t>(m)].name);
    info.name = k->func.name;
    info.schedule = k->schedule;
    impl.launches.push_back(std::move(launch));
    impl.kernels.push_back(std::move(info));
    module.funcs.push_back(std::move(k->func));
  }

  runtime::cuda::CompiledModule& compiled = program->compiled;
  compiled.sm_arch = target.sm_arch();
  absl::StatusOr<std::string> source = runtime::cuda::emit_cuda_source(module, &compiled.kernels);
  if (!source.ok()) return emit_error(module, impl.kernels, source.status());
  compiled.source = *std::move(source);
  dump_stage("graph", "cuda-source", compiled.source, "cu");

  auto nvrtc = [&]() -> absl::StatusOr<runtime::CachedKernel> {
    LOOM_ASSIGN_OR_RETURN(runtime::cuda::NvrtcOutput out,
                          runtime::cuda::compile_cuda_source(compiled.source, compiled.sm_arch,
                                                             "graph.cu"));
    compiled.ptx = std::move(out.ptx);
    compiled.log = std::move(out.log);
    if (!compiled.ptx.empty()) dump_stage("graph", "ptx", compiled.ptx, "ptx");
    runtime::CachedKernel k;
    for (const runtime::cuda::KernelInfo& kernel : compiled.kernels) {
      k.kernel_name += (k.kernel_name.empty() ? "" : ",") + kernel.symbol;
      k.object.symbols.push_back(kernel.symbol);
    }
    k.schedule = "cuda module";
    k.object.bytes = std::move(out.cubin);
    k.source = compiled.source;
    return k;
  };
  CacheUse cache = cache_use(target, options);
  if (!cache.enabled) {
    LOOM_ASSIGN_OR_RETURN(runtime::CachedKernel k, nvrtc());
    compiled.cubin = std::move(k.object.bytes);
  } else {
    // The cubin depends on the source, the arch and NVRTC; the spaces also on the device.
    const ops::GpuProperties gpu = ops::gpu_properties(target);
    cache.target = str_cat(target.fingerprint(), " sms=", gpu.sm_count,
                           " smem=", gpu.shared_memory_per_block, "/", gpu.shared_memory_per_sm,
                           " regs=", gpu.registers_per_block, "/", gpu.registers_per_sm);
    LOOM_ASSIGN_OR_RETURN(cache.backend, runtime::cuda::nvrtc_version());
    runtime::CacheKeyParts parts = cache.parts("cuda module\n" + compiled.source);
    const std::string key = runtime::cache_key(parts);
    runtime::KernelCache::Result entry =
        runtime::KernelCache::global().get(key, parts, cache.settings, nvrtc);
    if (!entry.ok()) return entry.status();
    if ((*entry)->object.symbols.size() != compiled.kernels.size())
      return absl::DataLossError(str_cat("cache entry ", key, " has ",
                                         (*entry)->object.symbols.size(), " kernels for ",
                                         compiled.kernels.size()));
    compiled.cubin = (*entry)->object.bytes;
    for (KernelInfo& info : impl.kernels) info.cache_key = key;
  }
  impl.gpu = std::move(program);
  return absl::OkStatus();
}

}  // namespace loom
