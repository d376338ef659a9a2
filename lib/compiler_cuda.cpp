// Compiler::compile for a CUDA target: fused groups -> one loop-IR func each -> CUDA source
// (identical kernels defined once) in parts of a few definitions -> NVRTC on all cores (or the
// kernel cache) -> a GpuProgram that the first run loads onto the device.

#include "compiler_cuda.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <semaphore>
#include <thread>
#include <utility>

#include "codegen/emit_cuda.hpp"
#include "compiler_cache.hpp"
#include "graph/fusion.hpp"
#include "graph/template_context.hpp"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/partition.hpp"
#include "loom/ir/op.hpp"
#include "loom/ops/injective_cuda.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/runtime/stats.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "loom/tune/tuner.hpp"
#include "ops/cuda_common.hpp"
#include "runtime/gpu_graph.hpp"
#include "runtime/hung_devices.hpp"

namespace loom {

// Whether kernels for target can be timed here: a device of its arch at its ordinal.
bool can_measure(const Target& target) {
  absl::StatusOr<runtime::cuda::Driver*> driver = runtime::cuda::Driver::get();
  if (!driver.ok()) return false;
  absl::StatusOr<runtime::cuda::DeviceProperties> p =
      (*driver)->device_properties(target.device());
  return p.ok() && p->sm_arch == target.sm_arch();
}

namespace {

constexpr int kDefaultThreadsPerBlock = 256;  // default-scheduled kernels: one element a thread

struct GroupKernel {
  ir::Func func;             // lowered, ready for the code generator
  std::vector<int> buffers;  // slots, in its buffer parameter order
  std::string schedule;
  std::vector<tune::Measurement> measurements;  // the candidates timed (empty: none)
  std::vector<tune::Refusal> refused;           // the candidates tuning ruled out
  double tune_seconds = 0;
};

// The machine's cores (at least 1).
size_t cores() { return std::max(1u, std::thread::hardware_concurrency()); }

// Runs work(i) for i in [0, count) on as many threads as cores (NVRTC compiles in parallel).
void on_all_cores(size_t count, const std::function<void(size_t)>& work) {
  runtime::on_threads(count, cores(), work);
}

// NVRTC compiles at once, across every tuning of the process: all cores, but one where there are
// more than two, left to the thread that launches the candidates being timed (a launch that waits
// for a core would count as the kernel's time).
std::counting_semaphore<>& compile_slots() {
  static std::counting_semaphore<> slots(
      static_cast<std::ptrdiff_t>(cores() > 2 ? cores() - 1 : cores()));
  return slots;
}

// Candidates are timed one tuning at a time, whatever else compiles meanwhile.
std::mutex& device_timing_mutex() {
  static std::mutex mu;
  return mu;
}

// How one candidate fared on the device: its median time, or why it was ruled out.
struct DeviceTiming {
  double median_ms = 0;
  std::string refused;  // empty: timed
};

// The host values of a tuning's buffers: the inputs tune::tuning_input makes, the output (the
// last buffer) poisoned, so that a candidate that leaves an element unwritten disagrees with one
// that writes it.
std::vector<NDArray> tuning_buffers(const ir::Func& f) {
  std::vector<NDArray> out;
  const std::vector<ir::Buffer> params = f.buffer_params();
  for (size_t b = 0; b < params.size(); ++b) {
    std::vector<int64_t> shape;
    for (const ir::Expr& e : params[b]->shape) shape.push_back(ir::as_const_int(e).value_or(1));
    out.push_back(tune::tuning_input(params[b]->dtype, std::move(shape)));
    if (b + 1 == params.size()) out.back().poison();
  }
  return out;
}

// Times candidate kernels (lowered funcs with the same buffer params, named by `labels` in
// errors and refusals) on target's device, on buffers of small values. First each candidate runs
// once, on fresh inputs and a poisoned output, and is checked: a candidate whose module the device
// does not load, whose launch it refuses (too many registers or threads, a tensor map it cannot
// encode) or whose output disagrees with the reference candidate's (tune::outputs_agree) is
// refused. The reference is candidate `reference` (the space's default), or the first that runs
// where that one is refused. Then each candidate left runs kRepeats times between two events,
// in turns for kRounds rounds; the median of each. A candidate that faults (an illegal address)
// loses the process's device context, and one whose first run takes more than timeout_s seconds
// is taken for hung: the error names it, nothing is timed, and later tunings on that device
// fail at once with that error (HungDevices) for as long as it runs.
absl::StatusOr<std::vector<DeviceTiming>> time_on_device(const Target& target,
                                                         std::vector<ir::Func> funcs,
                                                         const std::vector<std::string>& labels,
                                                         size_t reference, double timeout_s) {
  constexpr int kRounds = 5, kRepeats = 10;
  namespace cuda = runtime::cuda;
  LOOM_ASSIGN_OR_RETURN(cuda::Driver * driver, cuda::Driver::get());
  // Checked before the compiles and again once the device is this tuning's.
  LOOM_RETURN_IF_ERROR(cuda::HungDevices::global().check(target.device(), *driver));
  // NVRTC compiles one module per core at once, the candidates dealt round-robin: candidate i is
  // kernel i / n of module i % n. Every module pays for the preamble, but that is about 0.03 s of
  // NVRTC against about 0.2 s for a wgmma candidate (a 2026 Xeon core).
  const size_t candidates = funcs.size();
  const size_t n = std::max<size_t>(1, std::min(cores(), candidates));
  std::vector<NDArray> host = tuning_buffers(funcs[0]);
  std::vector<ir::Module> modules;
  for (size_t w = 0; w < n; ++w) modules.push_back({str_cat("candidates", w), target, {}});
  for (size_t i = 0; i < candidates; ++i) {
    funcs[i].name = str_cat("c", i, "_", funcs[i].name);
    modules[i % n].funcs.push_back(std::move(funcs[i]));
  }
  std::vector<absl::StatusOr<cuda::CompiledModule>> compiled(n, absl::UnknownError("not compiled"));
  {
    CountTime compiling(Counter::kTuneCompileMicros);
    on_all_cores(n, [&](size_t w) {
      struct Slot {  // held for one compile, whatever ends it
        Slot() { compile_slots().acquire(); }
        ~Slot() { compile_slots().release(); }
      } slot;
      compiled[w] = cuda::compile_module(modules[w]);
    });
  }
  std::vector<DeviceTiming> out(candidates);
  std::lock_guard<std::mutex> exclusive(device_timing_mutex());
  LOOM_RETURN_IF_ERROR(cuda::HungDevices::global().check(target.device(), *driver));
  std::optional<CountTime> loading(std::in_place, Counter::kTuneLoadMicros);
  std::vector<std::unique_ptr<cuda::LoadedModule>> loaded;
  for (size_t w = 0; w < n; ++w) {
    if (!compiled[w].ok()) return compiled[w].status();
    absl::StatusOr<std::unique_ptr<cuda::LoadedModule>> l =
        cuda::LoadedModule::load(modules[w], *std::move(compiled[w]), target.device());
    if (!l.ok()) {  // e.g. a kernel asking for more shared memory than this device has
      for (size_t i = w; i < candidates; i += n)
        out[i].refused = str_cat("its module did not load: ", l.status().message());
      loaded.push_back(nullptr);
      continue;
    }
    loaded.push_back(*std::move(l));
  }
  auto launch = [&](size_t i, const std::vector<cuda::DevicePtr>& buffers,
                    cuda::Stream stream = nullptr) {
    return loaded[i % n]->launch(i / n, buffers, {}, stream);
  };
  // Device buffers of the first candidate's params (all candidates share them), freed on exit.
  std::vector<cuda::DevicePtr> buffers;
  struct Free {
    cuda::Driver* driver;
    std::vector<cuda::DevicePtr>* buffers;
    std::vector<cuda::Event> events;
    cuda::Stream stream = nullptr;
    std::vector<cuda::GraphExec> graphs;
    bool hung = false;  // a kernel still runs: freeing would wait for it
    ~Free() {
      if (hung) return;
      for (cuda::GraphExec g : graphs)
        if (g) (void)driver->destroy_graph(g);
      if (stream) (void)driver->destroy_stream(stream);
      for (cuda::DevicePtr p : *buffers) (void)driver->free(p);
      for (cuda::Event e : events) (void)driver->destroy_event(e);
    }
  } cleanup{driver, &buffers, {}};
  for (const NDArray& a : host) {
    LOOM_ASSIGN_OR_RETURN(cuda::DevicePtr p,
                          driver->allocate(static_cast<size_t>(std::max<int64_t>(a.nbytes(), 1))));
    buffers.push_back(p);
  }
  for (int e = 0; e < 2; ++e) {
    LOOM_ASSIGN_OR_RETURN(cuda::Event ev, driver->create_event());
    cleanup.events.push_back(ev);
  }
  // Each candidate once, the reference first: fresh inputs (a candidate that wrote out of bounds
  // must not change the next one's), the output poisoned, then compared.
  NDArray reference_output, output(host.back().dtype(), host.back().shape());
  std::optional<size_t> reference_at;
  std::vector<size_t> order = {std::min(reference, candidates - 1)};
  for (size_t i = 0; i < candidates; ++i)
    if (i != order[0]) order.push_back(i);
  for (size_t i : order) {
    if (!out[i].refused.empty()) continue;
    for (size_t b = 0; b < host.size(); ++b)
      LOOM_RETURN_IF_ERROR(driver->copy_to_device(buffers[b], host[b].data(),
                                                  static_cast<size_t>(host[b].nbytes())));
    if (absl::Status s = launch(i, buffers); !s.ok()) {
      out[i].refused = str_cat("the device refused its launch: ", s.message());
      continue;
    }
    // Waits for the run, polling, so that a hung kernel is an error and not a hung process.
    absl::StatusOr<bool> done = false;
    if (absl::Status s = driver->record_event(cleanup.events[0], nullptr); !s.ok())
      done = s;
    else
      done = cuda::finished_within(*driver, cleanup.events[0], timeout_s);
    if (done.ok() && !*done) {
      cleanup.hung = true;  // neither its memory nor its modules can go while it runs
      for (std::unique_ptr<cuda::LoadedModule>& l : loaded) (void)l.release();
      absl::Status hung = absl::DeadlineExceededError(
          str_cat("candidate ", labels[i], " did not finish within ", timeout_s,
                  " s on the device (a hung kernel?); it runs until the process ends"));
      cuda::HungDevices::global().add(target.device(), cleanup.events[0], hung);
      return hung;
    }
    if (!done.ok())
      return absl::Status(done.status().code(),
                          str_cat("candidate ", labels[i], " failed on the device (",
                                  done.status().message(), "); the device context is lost"));
    LOOM_RETURN_IF_ERROR(
        driver->copy_to_host(output.data(), buffers.back(), static_cast<size_t>(output.nbytes())));
    if (!reference_at) {
      reference_at = i;
      reference_output = output.copy();
    } else if (absl::Status s = tune::outputs_agree(reference_output, output); !s.ok()) {
      out[i].refused =
          str_cat("its output disagrees with that of ", labels[*reference_at], ": ", s.message());
    }
  }
  // Each candidate's kRepeats launches, captured as one CUDA graph on a stream of the tuning's
  // own, run back to back on the device without the host's launch latency between them: a
  // kernel of a few microseconds launched one by one would time the host's launches (and a
  // compiled graph's runs replay theirs as a graph too). Where capturing fails (a driver
  // without graphs), the launches go one by one.
  if (driver->has_graphs()) {
    absl::StatusOr<cuda::Stream> stream = driver->create_stream();
    if (stream.ok()) cleanup.stream = *stream;
  }
  bool replay = cleanup.stream != nullptr;
  if (replay) {
    cleanup.graphs.assign(candidates, nullptr);
    for (size_t i = 0; i < candidates; ++i) {
      if (!out[i].refused.empty()) continue;
      absl::StatusOr<cuda::GraphExec> graph = driver->capture(cleanup.stream, [&] {
        absl::Status s;
        for (int r = 0; r < kRepeats && s.ok(); ++r) s = launch(i, buffers, cleanup.stream);
        return s;
      });
      if (!graph.ok()) {  // one by one, all of them (the graphs made go with `cleanup`)
        replay = false;
        break;
      }
      cleanup.graphs[i] = *graph;
    }
  }
  const cuda::Stream stream = replay ? cleanup.stream : nullptr;
  loading.reset();
  CountTime measuring(Counter::kTuneMeasureMicros);
  std::vector<std::vector<double>> ms(candidates);
  for (int round = 0; round < kRounds; ++round)
    for (size_t i = 0; i < candidates; ++i) {
      if (!out[i].refused.empty()) continue;
      LOOM_RETURN_IF_ERROR(driver->record_event(cleanup.events[0], stream));
      if (stream) {
        LOOM_RETURN_IF_ERROR(driver->launch_graph(cleanup.graphs[i], stream));
      } else {
        for (int r = 0; r < kRepeats; ++r) LOOM_RETURN_IF_ERROR(launch(i, buffers));
      }
      LOOM_RETURN_IF_ERROR(driver->record_event(cleanup.events[1], stream));
      LOOM_RETURN_IF_ERROR(driver->synchronize_event(cleanup.events[1]));
      LOOM_ASSIGN_OR_RETURN(float t, driver->elapsed_ms(cleanup.events[0], cleanup.events[1]));
      ms[i].push_back(t / kRepeats);
    }
  LOOM_RETURN_IF_ERROR(driver->synchronize(stream));
  count(Counter::kTuneMeasurements, candidates);
  for (size_t i = 0; i < candidates; ++i) {
    if (ms[i].empty()) continue;
    std::nth_element(ms[i].begin(), ms[i].begin() + static_cast<std::ptrdiff_t>(ms[i].size() / 2),
                     ms[i].end());
    out[i].median_ms = ms[i][ms[i].size() / 2];
  }
  return out;
}

// A tuning's outcome as the kernel cache keeps it: the chosen config and the candidates' times.
using TuningEntry = std::shared_ptr<const runtime::CachedKernel>;

// What identifies the tuning of template t for node n: the cache's task text for it.
std::string tuning_text(const ScheduleTemplate& t, const TemplateContext& ctx, const Node& n,
                        const tune::Space& space, const CompileOptions& options) {
  return "cuda tuning\n" + template_task_text(n, ctx, t, options.tune, nullptr) + space_text(space);
}

// Whether template t's config for node n is chosen by timing candidates on a device.
bool tunes(const ScheduleTemplate& t, const TemplateContext& ctx, const CompileOptions& options) {
  return !options.template_configs.contains(t.name) && options.tune != TuneLevel::kNone &&
         can_measure(ctx.target);
}

// The fastest candidate of t's space (pruned at kFast) for node n, timed on the device as built
// (before fusion), with the timings; through the kernel cache, so that a warm compile times
// nothing.
absl::StatusOr<TuningEntry> tune_on_device(const ScheduleTemplate& t, const TemplateContext& ctx,
                                           const Node& n, const tune::Space& space,
                                           const CompileOptions& options, const CacheUse& cache) {
  const auto t0 = std::chrono::steady_clock::now();
  auto measure = [&]() -> absl::StatusOr<runtime::CachedKernel> {
    std::vector<tune::Config> configs =
        options.tune == TuneLevel::kFast ? space.pruned() : space.all();
    std::vector<tune::Config> built;
    std::vector<ir::Func> funcs;
    std::vector<std::string> labels;
    size_t reference = 0;  // the default config, where it is among them
    for (const tune::Config& c : configs) {
      absl::StatusOr<ScheduledKernel> s = t.build(ctx, c);
      if (!s.ok() || !s->packed.empty()) continue;
      if (c == space.default_config()) reference = built.size();
      built.push_back(c);
      funcs.push_back(passes::lower_scheduled(s->func, ctx.target));
      labels.push_back(t.name + "[" + c.to_string() + "]");
    }
    if (funcs.empty()) return absl::InternalError("template " + t.name + " built no candidate");
    LOOM_ASSIGN_OR_RETURN(std::vector<DeviceTiming> timed,
                          time_on_device(ctx.target, std::move(funcs), labels, reference,
                                         options.tune_candidate_timeout_s));
    runtime::CachedKernel e;
    e.kernel_name = "cuda_tuning";
    e.schedule = t.name;
    std::optional<size_t> best;
    for (size_t i = 0; i < built.size(); ++i) {
      if (!timed[i].refused.empty()) {
        e.refused.push_back({built[i], timed[i].refused});
        continue;
      }
      e.measurements.push_back({built[i], timed[i].median_ms});
      if (!best || timed[i].median_ms < timed[*best].median_ms) best = i;
    }
    if (!best)
      return absl::InternalError(str_cat("the device ran no candidate of template ", t.name,
                                         "; the first was refused: ", e.refused[0].reason));
    e.config = built[*best];
    e.tune_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return e;
  };
  if (cache.enabled) {
    runtime::CacheKeyParts parts = cache.parts(tuning_text(t, ctx, n, space, options));
    runtime::KernelCache::Result e =
        runtime::KernelCache::global().get(runtime::cache_key(parts), parts, cache.settings, measure);
    if (!e.ok()) return e.status();
    return *e;
  }
  LOOM_ASSIGN_OR_RETURN(runtime::CachedKernel e, measure());
  return std::make_shared<const runtime::CachedKernel>(std::move(e));
}

// Tunings done ahead of the graph's kernels (tune_ahead), by tuning text: their outcomes, or
// why they failed.
using TunedAhead = std::map<std::string, absl::StatusOr<TuningEntry>>;

// The config template t runs for node n: the forced one, the default (kNone, or no device to
// time candidates on), else the fastest candidate (tuned ahead, or now).
absl::StatusOr<tune::Config> choose_config(const ScheduleTemplate& t, const TemplateContext& ctx,
                                           const Node& n, const tune::Space& space,
                                           const CompileOptions& options, const CacheUse& cache,
                                           const TunedAhead& ahead, GroupKernel* k) {
  auto forced = options.template_configs.find(t.name);
  if (forced != options.template_configs.end()) {
    LOOM_RETURN_IF_ERROR(tune::check_config(t, space, forced->second));
    return forced->second;
  }
  if (!tunes(t, ctx, options)) return space.default_config();
  TuningEntry entry;
  if (auto it = ahead.find(tuning_text(t, ctx, n, space, options)); it != ahead.end()) {
    LOOM_ASSIGN_OR_RETURN(entry, it->second);
  } else {
    LOOM_ASSIGN_OR_RETURN(entry, tune_on_device(t, ctx, n, space, options, cache));
  }
  LOOM_RETURN_IF_ERROR(tune::check_config(t, space, entry->config));
  k->measurements = entry->measurements;
  k->refused = entry->refused;
  k->tune_seconds = entry->tune_seconds;
  return entry->config;
}

// The kernel computing group grp, or why it cannot be one kernel.
absl::StatusOr<GroupKernel> build_group(const Graph& graph, const FusedGroup& grp,
                                        const Target& target, const CompileOptions& options,
                                        const CacheUse& cache, const TunedAhead& ahead) {
  const std::vector<Node>& nodes = graph.nodes();
  GroupKernel k;
  TemplateContext ctx;
  const ScheduleTemplate* t =
      grp.anchor >= 0 ? find_template(graph, nodes[static_cast<size_t>(grp.anchor)], target, &ctx)
                      : nullptr;
  if (t) {
    const Node& n = nodes[static_cast<size_t>(grp.anchor)];
    LOOM_ASSIGN_OR_RETURN(const tune::Space space, limited_space(*t, ctx, options));
    LOOM_ASSIGN_OR_RETURN(tune::Config config,
                          choose_config(*t, ctx, n, space, options, cache, ahead, &k));
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
    LOOM_ASSIGN_OR_RETURN(ir::Func f, fusion::fused(scheduled.func, prologues,
                                                    epilogue ? &*epilogue : nullptr));
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

// The tunings of the groups' anchors, each distinct one once, all at once: their candidates
// compile on all cores together (compile_slots) while the device times one tuning at a time
// (device_timing_mutex). Tuned one group after another, a tuning of few candidates left cores
// idle, and every core waited while the device timed. A few tunings at a time keep the cores
// busy (each has some ten candidates) without a thread per core for every tuning of a large
// graph on a large machine. A tuning that fails here fails the group's own build, which says so
// in context (tuned again, it would meet a device context that a faulting candidate lost).
TunedAhead tune_ahead(const Graph& graph, const std::vector<FusedGroup>& groups,
                      const Target& target, const CompileOptions& options, const CacheUse& cache) {
  struct Job {
    const ScheduleTemplate* t;
    TemplateContext ctx;
    const Node* node;
    tune::Space space;
  };
  std::map<std::string, Job> jobs;
  for (const FusedGroup& grp : groups) {
    if (grp.anchor < 0) continue;
    const Node& n = graph.nodes()[static_cast<size_t>(grp.anchor)];
    TemplateContext ctx;
    const ScheduleTemplate* t = find_template(graph, n, target, &ctx);
    if (!t || !tunes(*t, ctx, options)) continue;
    absl::StatusOr<tune::Space> space = limited_space(*t, ctx, options);
    if (!space.ok()) continue;  // the group's own build reports it
    std::string text = tuning_text(*t, ctx, n, *space, options);
    jobs.emplace(std::move(text), Job{t, std::move(ctx), &n, *std::move(space)});
  }
  std::vector<std::pair<const std::string*, const Job*>> list;
  for (const auto& [text, job] : jobs) list.emplace_back(&text, &job);
  std::vector<absl::StatusOr<TuningEntry>> done(list.size(), absl::UnknownError("not tuned"));
  constexpr size_t kTuningsAtOnce = 4;
  runtime::on_threads(list.size(), kTuningsAtOnce, [&](size_t i) {
    const Job& j = *list[i].second;
    done[i] = tune_on_device(*j.t, j.ctx, *j.node, j.space, options, cache);
  });
  TunedAhead ahead;
  for (size_t i = 0; i < list.size(); ++i) ahead.emplace(*list[i].first, std::move(done[i]));
  return ahead;
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

// The graph's kernels in parts of at most kDefinitionsPerPart definitions each, so that NVRTC
// compiles them on several cores at once; kernel_at[f] says where func f of `all` went. A part
// holds the funcs of its definitions (funcs that share one definition go to the same part), and
// its source is the whole preamble with those definitions. BERT-base (f16, sm_90): 108 kernels,
// 7 definitions; ResNet-50: 56 kernels, 31 definitions, about 7 s of NVRTC on one core.
constexpr size_t kDefinitionsPerPart = 4;

std::vector<GpuProgram::Part> split_into_parts(
    const ir::Module& all, const codegen::EmittedCuda& emitted,
    std::vector<GpuProgram::KernelAt>& kernel_at) {
  const size_t definitions = emitted.definitions.size();
  std::vector<GpuProgram::Part> parts(
      std::max<size_t>(1, (definitions + kDefinitionsPerPart - 1) / kDefinitionsPerPart));
  for (size_t i = 0; i < parts.size(); ++i) {
    GpuProgram::Part& part = parts[i];
    part.module.name = str_cat(all.name, i);
    part.module.target = all.target;
    part.compiled.sm_arch = all.target.sm_arch();
    part.compiled.source = emitted.preamble;
    for (size_t d = i * kDefinitionsPerPart; d < std::min(definitions, (i + 1) * kDefinitionsPerPart);
         ++d)
      part.compiled.source += emitted.definitions[d];
  }
  kernel_at.clear();
  for (size_t f = 0; f < all.funcs.size(); ++f) {
    const size_t p = static_cast<size_t>(emitted.definition_of[f]) / kDefinitionsPerPart;
    GpuProgram::Part& part = parts[p];
    kernel_at.push_back({p, part.module.funcs.size()});
    part.module.funcs.push_back(all.funcs[f]);
    part.compiled.kernels.push_back(emitted.kernels[f]);
  }
  return parts;
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
  program->cuda_graphs = options.cuda_graphs;
  program->run_timeout_s = options.run_timeout_s;
  program->ordinal = target.device();
  ir::Module module;  // every kernel of the graph, before the split into parts
  module.name = "graph";
  module.target = target;
  dump_stage("graph", "graph", graph.to_string());

  // The cubin depends on the source, the arch and NVRTC; the spaces also on the device.
  CacheUse cache = cache_use(target, options);
  if (cache.enabled) {
    const ops::GpuProperties gpu = ops::gpu_properties(target);
    cache.target = str_cat(target.fingerprint(), " sms=", gpu.sm_count,
                           " smem=", gpu.shared_memory_per_block, "/",
                           gpu.shared_memory_per_block_optin, "/", gpu.shared_memory_per_sm,
                           " regs=", gpu.registers_per_block, "/", gpu.registers_per_sm);
    LOOM_ASSIGN_OR_RETURN(cache.backend, runtime::cuda::nvrtc_version());
  }
  PartitionOptions partition_options;
  partition_options.fuse = options.fuse;
  std::vector<FusedGroup> groups = partition(graph, partition_options);
  const TunedAhead ahead = tune_ahead(graph, groups, target, options, cache);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const FusedGroup grp = groups[gi];
    const Node& out = nodes[static_cast<size_t>(grp.output)];
    absl::StatusOr<GroupKernel> k = build_group(graph, grp, target, options, cache, ahead);
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
    info.candidates = candidate_times(k->measurements);
    info.refused = k->refused;
    info.tune_seconds = k->tune_seconds;
    impl.launches.push_back(std::move(launch));
    impl.kernels.push_back(std::move(info));
    module.funcs.push_back(std::move(k->func));
  }

  absl::StatusOr<codegen::EmittedCuda> emitted = codegen::emit_cuda(module);
  if (!emitted.ok()) return emit_error(module, impl.kernels, emitted.status());
  dump_stage("graph", "cuda-source", emitted->source, "cu");
  program->parts = split_into_parts(module, *emitted, program->kernel_at);

  // NVRTC compiles the parts at once (each through the cache, keyed by its source).
  std::vector<runtime::KernelCache::Result> built(program->parts.size(),
                                                 absl::UnknownError("not compiled"));
  std::vector<std::string> keys(program->parts.size());
  auto compile_part = [&](size_t i) {
    runtime::cuda::CompiledModule& compiled = program->parts[i].compiled;
    auto nvrtc = [&compiled, i]() -> absl::StatusOr<runtime::CachedKernel> {
      LOOM_ASSIGN_OR_RETURN(runtime::cuda::NvrtcOutput out,
                            runtime::cuda::compile_cuda_source(compiled.source, compiled.sm_arch,
                                                               str_cat("graph", i, ".cu")));
      compiled.ptx = std::move(out.ptx);
      compiled.log = std::move(out.log);
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
    if (!cache.enabled) {
      absl::StatusOr<runtime::CachedKernel> k = nvrtc();
      built[i] = k.ok() ? runtime::KernelCache::Result(
                              std::make_shared<const runtime::CachedKernel>(*std::move(k)))
                        : k.status();
      return;
    }
    runtime::CacheKeyParts parts = cache.parts("cuda module\n" + compiled.source);
    keys[i] = runtime::cache_key(parts);
    built[i] = runtime::KernelCache::global().get(keys[i], parts, cache.settings, nvrtc);
  };
  on_all_cores(built.size(), compile_part);
  for (size_t i = 0; i < built.size(); ++i) {
    if (!built[i].ok()) return built[i].status();
    runtime::cuda::CompiledModule& compiled = program->parts[i].compiled;
    const runtime::CachedKernel& k = **built[i];
    if (k.object.symbols.size() != compiled.kernels.size())
      return absl::DataLossError(str_cat("cache entry ", keys[i], " has ", k.object.symbols.size(),
                                         " kernels for ", compiled.kernels.size()));
    compiled.cubin = k.object.bytes;
    if (!compiled.ptx.empty()) dump_stage("graph", str_cat("ptx", i), compiled.ptx, "ptx");
    if (!compiled.log.empty()) dump_stage("graph", str_cat("nvrtc-log", i), compiled.log);
  }
  for (size_t f = 0; f < impl.kernels.size(); ++f)
    impl.kernels[f].cache_key = keys[program->kernel_at[f].part];
  impl.gpu = std::move(program);
  return absl::OkStatus();
}

}  // namespace loom
