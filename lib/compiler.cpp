// Compiler::compile: graph -> one Task per operator node -> lowered loop IR -> one JIT module.
// Every kernel goes through the kernel cache: templated nodes one entry each, keyed by their task
// text; default-schedule kernels one entry for the graph's whole default module, keyed by its IR.

#include "loom/compiler.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/partition.hpp"
#include "loom/graph/passes.hpp"
#include "loom/ir/printer.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "loom/te/task.hpp"
#include "loom/tune/tuner.hpp"
#include "tune/progress.hpp"
#include "runtime/compiled_graph_impl.hpp"
#include "graph/fusion.hpp"
#include "graph/template_context.hpp"
#include "compiler_cache.hpp"
#include "compiler_cuda.hpp"
#include "compiler_layouts.hpp"

namespace loom {
namespace {

bool has_symbolic_input(const Graph& g) {
  for (int i : g.inputs())
    if (!is_static(g.nodes()[i].type.shape)) return true;
  return false;
}

double best_ms(const std::vector<tune::Measurement>& ms) {
  double best = 0;
  for (const tune::Measurement& m : ms)
    if (best == 0 || m.median_ms < best) best = m.median_ms;
  return best;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

absl::StatusOr<CompiledGraph> Compiler::compile(const Graph& graph, const CompileOptions& options) const {
  LOOM_RETURN_IF_ERROR(graph.status());
  if (graph.outputs().empty()) return absl::InvalidArgumentError("graph has no outputs");
  if (!(options.run_timeout_s >= 0) || !(options.tune_candidate_timeout_s > 0))
    return absl::InvalidArgumentError(
        str_cat("CompileOptions: run_timeout_s (", options.run_timeout_s,
                ") must be 0 (no limit) or more, tune_candidate_timeout_s (",
                options.tune_candidate_timeout_s, ") more than 0"));
  for (int o : graph.outputs())
    if (!graph.nodes()[o].type.layout.empty())
      return absl::InvalidArgumentError(
          "graph output '" + graph.nodes()[o].name + "' is stored in layout " +
          graph.nodes()[o].type.to_string() + "; outputs are row-major (transform it back)");
  if (target_.is_cuda() && options.layouts == LayoutPolicy::kJoint && !can_measure(target_))
    return absl::FailedPreconditionError(
        "target " + target_.to_string() +
        ": the joint layout search times each layout choice on the device, and no device of "
        "that arch is here; LayoutPolicy::kFixed chooses without one (channels_last(): "
        "convolutions as NHWC implicit GEMMs)");
  if (options.graph_passes) {
    // Constants fold on the host, whatever the target (a GPU compile needs no GPU).
    LOOM_ASSIGN_OR_RETURN(Graph optimized,
                          passes::optimize(graph, target_.is_cpu() ? target_ : Target::host_cpu()));
    LOOM_ASSIGN_OR_RETURN(optimized, passes::fuse_attention(optimized, target_));
    CompileOptions rest = options;
    rest.graph_passes = false;
    return compile(optimized, rest);
  }
  if (options.layouts != LayoutPolicy::kRowMajor && !has_symbolic_input(graph)) {
    std::string report;
    LOOM_ASSIGN_OR_RETURN(Graph laid, choose_layouts(*this, graph, options, &report));
    dump_stage("graph", "layouts", report + "\n" + laid.to_string());
    CompileOptions rest = options;
    rest.layouts = LayoutPolicy::kRowMajor;
    rest.graph_passes = false;
    return compile(laid, rest);
  }
  auto impl = std::make_shared<CompiledGraphImpl>();
  impl->poison_buffers = options.poison_buffers;
  const std::vector<Node>& nodes = graph.nodes();
  for (const Node& n : nodes) {
    Slot s;
    s.name = n.name;
    s.type = n.type;
    s.kind = n.kind == Node::Kind::kInput      ? Slot::Kind::kInput
             : n.kind == Node::Kind::kConstant ? Slot::Kind::kConstant
                                               : Slot::Kind::kComputed;
    s.constant = n.value;
    impl->slots.push_back(std::move(s));
  }
  impl->inputs = graph.inputs();
  impl->outputs = graph.outputs();
  impl->graph = graph.clone();

  if (options.specialize_shapes && has_symbolic_input(graph)) {
    // Each binding compiles a static copy; the graph is copied so later edits do not leak in.
    CompileOptions each = options;
    each.specialize_shapes = false;
    auto build = [compiler = *this, symbolic = graph.clone(),
                  each](const DimBindings& dims) -> absl::StatusOr<CompiledGraph> {
      if (dims.empty()) return compiler.compile(symbolic, each);  // the generic kernels
      LOOM_ASSIGN_OR_RETURN(Graph bound, symbolic.bind_dims(dims));
      return compiler.compile(bound, each);
    };
    impl->specializations = std::make_shared<Specializations>(
        std::move(build), static_cast<size_t>(std::max(1, options.max_specializations)));
    return CompiledGraph(std::move(impl));
  }

  if (target_.is_cuda()) {
    if (has_symbolic_input(graph))
      return absl::UnimplementedError(
          "target " + target_.to_string() +
          ": CUDA kernels need static shapes; compile graphs with symbolic dims with "
          "CompileOptions::specialize_shapes (each binding is then compiled as a static graph)");
    LOOM_RETURN_IF_ERROR(compile_for_cuda(target_, graph, options, *impl));
    return CompiledGraph(std::move(impl));
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<runtime::CpuJit> jit, runtime::CpuJit::create(target_));
  impl->jit = std::move(jit);
  CacheUse cache = cache_use(target_, options);
  dump_stage("graph", "graph", graph.to_string());

  ir::Module module;
  module.name = "graph";
  module.target = target_;
  module.llvm_full_unroll_limit = 16;
  std::vector<size_t> module_launches;  // launch of each func of module

  // The template scheduling an anchor node, if any.
  auto template_of = [&](int id, TemplateContext* ctx) -> const ScheduleTemplate* {
    return find_template(graph, nodes[id], target_, ctx);
  };
  PartitionOptions partition_options;
  partition_options.fuse = options.fuse;
  std::vector<FusedGroup> groups = partition(graph, partition_options);
  std::string partition_text;
  for (const FusedGroup& grp : groups) partition_text += grp.to_string(graph) + "\n";
  dump_stage("graph", "partition", partition_text);

  int templated = 0;
  for (const FusedGroup& grp : groups) {
    TemplateContext ctx;
    if (grp.anchor >= 0 && template_of(grp.anchor, &ctx)) ++templated;
  }
  tune::Progress progress(templated, options.report_progress && options.tune != TuneLevel::kNone);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const FusedGroup grp = groups[gi];
    KernelInfo info;
    for (int m : grp.nodes) info.ops.push_back(nodes[m].name);
    TemplateContext ctx;
    const ScheduleTemplate* t = grp.anchor >= 0 ? template_of(grp.anchor, &ctx) : nullptr;
    if (t) {
      const int id = grp.anchor;
      const Node& n = nodes[id];
      auto t0 = std::chrono::steady_clock::now();
      std::vector<const NDArray*> constants;
      for (int in : n.inputs)
        constants.push_back(nodes[in].kind == Node::Kind::kConstant ? &nodes[in].value : nullptr);
      auto forced = options.template_configs.find(t->name);
      const tune::Config* forced_config =
          forced == options.template_configs.end() ? nullptr : &forced->second;
      auto scheduling_error = [&](const absl::Status& s) {
        return absl::Status(s.code(), str_cat("scheduling ", n.op, " node '", n.name,
                                              "' with template ", t->name, ": ", s.message()));
      };
      absl::StatusOr<tune::Space> limited = limited_space(*t, ctx, options);
      if (!limited.ok()) return scheduling_error(limited.status());
      const tune::Space& space = *limited;
      // Post-scheduling fusion: prologues replace the loads of the inputs they compute, the
      // epilogue goes around the output stores, of whichever config wins. A kernel that cannot
      // take its prologues (checked on the default config) leaves them to groups of their own,
      // computed first; one that cannot take its epilogue tries shorter ones, and the members
      // dropped become one group of their own, computed next.
      std::vector<fusion::Prologue> prologues;
      std::optional<fusion::Epilogue> epilogue;
      tune::KernelRewrite rewrite = [&prologues, &epilogue](const ScheduledKernel& k)
          -> absl::StatusOr<ScheduledKernel> {
        ScheduledKernel out = k;
        LOOM_ASSIGN_OR_RETURN(out.func,
                              fusion::fused(k.func, prologues, epilogue ? &*epilogue : nullptr));
        return out;
      };
      auto probe = [&]() -> absl::Status {
        absl::StatusOr<ScheduledKernel> k =
            t->build(ctx, forced_config ? *forced_config : space.default_config());
        return k.ok() ? rewrite(*k).status() : k.status();
      };
      FusedGroup rest;  // epilogue members dropped, in one group computed next
      FusedGroup cur = grp;
      if (!cur.prologue().empty()) {
        absl::StatusOr<std::vector<fusion::Prologue>> ps = fusion::prologues_of(graph, cur);
        absl::Status fits = ps.status();
        if (ps.ok()) {
          prologues = std::move(*ps);
          fits = probe();
        }
        if (!fits.ok()) {
          dump_stage("graph", "fusion-" + n.name,
                     str_cat(cur.to_string(graph), "\nprologue not fused: ", fits.message(), "\n"));
          auto [without, split] = fusion::split_prologues(graph, cur);
          groups[gi] = without;
          groups.insert(groups.begin() + static_cast<std::ptrdiff_t>(gi), split.begin(), split.end());
          --gi;
          continue;
        }
      }
      while (cur.anchor != cur.output) {
        absl::StatusOr<fusion::Epilogue> e = fusion::epilogue_of(graph, cur);
        absl::Status fits = e.status();
        if (e.ok()) {
          epilogue = std::move(*e);
          fits = probe();
        }
        if (fits.ok()) break;
        dump_stage("graph", "fusion-" + n.name,
                   str_cat(cur.to_string(graph), "\nnot fused: ", fits.message(), "\n"));
        epilogue.reset();
        auto [shorter, dropped] = fusion::shorten_epilogue(graph, cur);
        cur = shorter;
        rest.nodes.insert(rest.nodes.end(), dropped.nodes.begin(), dropped.nodes.end());
      }
      if (!rest.nodes.empty()) {
        std::sort(rest.nodes.begin(), rest.nodes.end());
        rest.output = grp.output;
        rest.inputs = fusion::outside_inputs(graph, rest.nodes);
        groups[gi] = cur;
        groups.insert(groups.begin() + static_cast<std::ptrdiff_t>(gi) + 1, rest);
        info.ops.clear();
        for (int m : cur.nodes) info.ops.push_back(nodes[m].name);
      }
      const tune::KernelRewrite* rewrite_ptr =
          epilogue || !prologues.empty() ? &rewrite : nullptr;
      Launch launch;
      std::vector<std::pair<int, NDArray>> packed_inputs;
      if (!cache.enabled) {
        absl::StatusOr<tune::TunedKernel> tuned = tune::tune_kernel(
            *t, ctx, constants, options.tune, *impl->jit, forced_config, rewrite_ptr, &space);
        if (!tuned.ok()) return scheduling_error(tuned.status());
        launch.fn = tuned->fn;
        progress.kernel_done(n.name, !tuned->measurements.empty(), best_ms(tuned->measurements));
        packed_inputs = std::move(tuned->packed_inputs);
        info.name = tuned->func.name;
        info.schedule = t->name + "[" + tuned->config.to_string() + "]";
        info.candidates = candidate_times(tuned->measurements);
        info.refused = tuned->refused;
      } else {
        std::string task_text =
            template_task_text(n, ctx, *t, options.tune, forced_config) + limits_text(*t, options);
        const std::string alone_text = task_text;
        for (const fusion::Prologue& p : prologues) task_text += "fused " + p.text;
        if (epilogue) task_text += "fused " + epilogue->text;
        runtime::CacheKeyParts parts = cache.parts(std::move(task_text));
        const std::string key = runtime::cache_key(parts);
        std::optional<tune::TunedKernel> fresh;  // set when this thread built the entry
        runtime::KernelCache::Result entry = runtime::KernelCache::global().get(
            key, parts, cache.settings, [&]() -> absl::StatusOr<runtime::CachedKernel> {
              // A fused kernel takes the config tuned for its anchor alone when the cache has
              // it (joint layout tuning measures anchors so): it tunes nothing again.
              const tune::Config* tune_config = forced_config;
              std::optional<tune::Config> recorded;
              if (!forced_config && rewrite_ptr && options.tune != TuneLevel::kNone) {
                runtime::CacheKeyParts alone = cache.parts(alone_text);
                runtime::KernelCache::Result e = runtime::KernelCache::global().get(
                    runtime::cache_key(alone), alone, cache.settings,
                    []() -> absl::StatusOr<runtime::CachedKernel> {
                      return absl::NotFoundError("not tuned alone");
                    });
                if (e.ok() && !(*e)->config.to_string().empty())
                  tune_config = &recorded.emplace((*e)->config);
              }
              LOOM_ASSIGN_OR_RETURN(tune::TunedKernel tuned,
                                    tune::tune_kernel(*t, ctx, constants, options.tune, *impl->jit,
                                                      tune_config, rewrite_ptr, &space));
              runtime::CachedKernel k;
              k.kernel_name = tuned.func.name;
              k.schedule = t->name + "[" + tuned.config.to_string() + "]";
              k.config = tuned.config;
              k.measurements = tuned.measurements;
              k.refused = tuned.refused;
              k.tune_seconds = tuned.seconds;
              for (const auto& [input, array] : tuned.packed_inputs)
                k.packed.push_back({input, array.shape()});
              k.object = tuned.object;
              k.source = tuned.source;
              fresh = std::move(tuned);
              return k;
            });
        if (!entry.ok()) return scheduling_error(entry.status());
        const runtime::CachedKernel& e = **entry;
        if (fresh) {
          launch.fn = fresh->fn;
          progress.kernel_done(n.name, !fresh->measurements.empty(),
                               best_ms(fresh->measurements));
          packed_inputs = std::move(fresh->packed_inputs);
        } else {
          // Packing runs here, from the cached pack funcs: packed data depends on the values.
          absl::StatusOr<std::vector<runtime::KernelFn>> fns = cache.load(key, e, *impl->jit);
          if (!fns.ok()) return scheduling_error(fns.status());
          if (fns->size() != 1 + e.packed.size())
            return scheduling_error(absl::DataLossError(
                str_cat("cache entry ", key, " has ", fns->size(), " entry points for ",
                        e.packed.size(), " packed inputs")));
          launch.fn = (*fns)[0];
          for (size_t i = 0; i < e.packed.size(); ++i) {
            const runtime::CachedKernel::Packed& p = e.packed[i];
            if (p.input < 0 || p.input >= static_cast<int>(n.inputs.size()) ||
                !constants[static_cast<size_t>(p.input)])
              return scheduling_error(absl::DataLossError(
                  str_cat("cache entry ", key, " packs input ", p.input, ", not a constant")));
            const NDArray& src = *constants[static_cast<size_t>(p.input)];
            NDArray packed(src.dtype(), p.shape);
            void* buffers[] = {src.data(), packed.data()};
            (*fns)[1 + i](buffers, nullptr);
            packed_inputs.emplace_back(p.input, std::move(packed));
          }
        }
        if (!fresh) progress.kernel_done(n.name, false, 0);
        info.name = e.kernel_name;
        info.schedule = e.schedule;
        info.cache_key = key;
        info.candidates = candidate_times(e.measurements);
        info.refused = e.refused;
      }
      info.tune_seconds = seconds_since(t0);
      // Packed constants get slots of their own, filled at compile time.
      std::map<int, int> packed_slots;
      for (auto& [input, array] : packed_inputs) {
        Slot s;
        s.kind = Slot::Kind::kConstant;
        s.name = nodes[n.inputs[input]].name + "_packed";
        s.type.dtype = array.dtype();
        for (int64_t e : array.shape()) s.type.shape.push_back(Dim(e));
        s.constant = std::move(array);
        packed_slots[input] = static_cast<int>(impl->slots.size());
        impl->slots.push_back(std::move(s));
      }
      launch.buffers = fusion::anchor_buffers(n, prologues, epilogue ? &*epilogue : nullptr,
                                              cur.output, packed_slots);
      impl->launches.push_back(std::move(launch));
      impl->kernels.push_back(std::move(info));
      continue;
    }

    // The default schedule: the whole group as one task.
    const std::string name = nodes[grp.output].name;
    LOOM_ASSIGN_OR_RETURN(te::Task task, fusion::group_task(graph, grp, name));
    ir::Func f = passes::lower(task, target_);
    // Inputs that the compute definition does not read are still passed (kernel arity is fixed).
    Launch launch;
    launch.buffers = grp.inputs;
    launch.buffers.push_back(grp.output);
    for (const ir::Var& v : f.scalar_params()) launch.symbols.push_back(v.name());
    module_launches.push_back(impl->launches.size());
    impl->launches.push_back(std::move(launch));
    info.name = f.name;
    info.schedule = "default";
    impl->kernels.push_back(std::move(info));
    module.funcs.push_back(std::move(f));
  }

  if (!module.funcs.empty()) {
    std::vector<runtime::KernelFn> fns;
    if (!cache.enabled) {
      LOOM_ASSIGN_OR_RETURN(fns, impl->jit->compile(module));
    } else {
      const std::string source = ir::to_string(module);
      runtime::CacheKeyParts parts = cache.parts("default schedule\n" + source);
      const std::string key = runtime::cache_key(parts);
      std::optional<std::vector<runtime::KernelFn>> fresh;
      runtime::KernelCache::Result entry = runtime::KernelCache::global().get(
          key, parts, cache.settings, [&]() -> absl::StatusOr<runtime::CachedKernel> {
            runtime::CachedKernel k;
            for (const ir::Func& f : module.funcs)
              k.kernel_name += (k.kernel_name.empty() ? "" : ",") + f.name;
            k.schedule = "default";
            LOOM_ASSIGN_OR_RETURN(k.object, impl->jit->compile_object(module));
            LOOM_ASSIGN_OR_RETURN(fresh, impl->jit->load_object(k.object));
            k.source = source;
            return k;
          });
      if (!entry.ok()) return entry.status();
      for (size_t launch : module_launches) impl->kernels[launch].cache_key = key;
      if (fresh) {
        fns = std::move(*fresh);
      } else {
        LOOM_ASSIGN_OR_RETURN(fns, cache.load(key, **entry, *impl->jit));
        if (fns.size() != module.funcs.size())
          return absl::DataLossError(str_cat("cache entry ", key, " has ", fns.size(),
                                             " entry points for ", module.funcs.size(),
                                             " kernels"));
      }
    }
    for (size_t k = 0; k < fns.size(); ++k) impl->launches[module_launches[k]].fn = fns[k];
  }
  return CompiledGraph(std::move(impl));
}

}  // namespace loom
