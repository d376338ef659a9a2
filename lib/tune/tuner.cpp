// The tuner: candidates are built and compiled in parallel (one module per candidate, on as many
// threads as cores), then timed one at a time with warm-up and repeats; the median decides.

#include "loom/tune/tuner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "loom/core/status.hpp"
#include "loom/ir/printer.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/stats.hpp"
#include "loom/runtime/thread_pool.hpp"

namespace loom::tune {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A candidate compiled: the kernel, and the pack kernels of its packed inputs.
struct Compiled {
  Config config;
  ScheduledKernel built;   // as the template built it (what a rewrite starts from)
  ScheduledKernel kernel;  // lowered funcs
  runtime::KernelFn fn = nullptr;
  std::vector<runtime::KernelFn> pack_fns;
  runtime::ObjectCode object;
  std::string source;  // printed loop IR of the module
  absl::Status status;
};

// Lowers k and compiles it with its pack funcs into c.
void compile_kernel(ScheduledKernel k, const TemplateContext& ctx, runtime::CpuJit& jit,
                    Compiled& c) {
  c.kernel = std::move(k);
  ir::Module m;
  m.name = ctx.name + "[" + c.config.to_string() + "]";
  m.target = ctx.target;
  c.kernel.func = passes::lower_scheduled(c.kernel.func, ctx.target);
  m.funcs.push_back(c.kernel.func);
  for (ScheduledKernel::Packed& p : c.kernel.packed) {
    p.pack = passes::lower_scheduled(p.pack, ctx.target);
    m.funcs.push_back(p.pack);
  }
  c.source = ir::to_string(m);
  absl::StatusOr<runtime::ObjectCode> object = jit.compile_object(m);
  if (!object.ok()) {
    c.status = object.status();
    return;
  }
  c.object = std::move(*object);
  absl::StatusOr<std::vector<runtime::KernelFn>> fns = jit.load_object(c.object);
  if (!fns.ok()) {
    c.status = fns.status();
    return;
  }
  c.fn = (*fns)[0];
  c.pack_fns.assign(fns->begin() + 1, fns->end());
}

// Builds c's config; compiles it as built, or rewritten when `rewrite` is given (the one
// candidate of an untuned compile goes straight to its final form).
void build_and_compile(const ScheduleTemplate& t, const TemplateContext& ctx,
                       runtime::CpuJit& jit, const KernelRewrite* rewrite, Compiled& c) {
  absl::StatusOr<ScheduledKernel> k = t.build(ctx, c.config);
  if (!k.ok()) {
    c.status = k.status();
    return;
  }
  c.built = *k;
  if (rewrite) {
    absl::StatusOr<ScheduledKernel> r = (*rewrite)(*k);
    if (!r.ok()) {
      c.status = r.status();
      return;
    }
    k = std::move(r);
  }
  compile_kernel(std::move(*k), ctx, jit, c);
}

// Moves the compiled kernel c into out (everything but the packed inputs and measurements).
void take_kernel(Compiled& c, Clock::time_point t0, TunedKernel& out) {
  out.config = c.config;
  out.func = c.kernel.func;
  out.fn = c.fn;
  out.object = std::move(c.object);
  out.source = std::move(c.source);
  out.seconds = seconds_since(t0);
}

// Packs each packed input of c from its constant value.
absl::StatusOr<std::vector<std::pair<int, NDArray>>> pack_constants(
    const Compiled& c, const std::vector<const NDArray*>& inputs) {
  std::vector<std::pair<int, NDArray>> out;
  for (size_t i = 0; i < c.kernel.packed.size(); ++i) {
    const ScheduledKernel::Packed& p = c.kernel.packed[i];
    const NDArray* src = inputs[static_cast<size_t>(p.input)];
    if (!src) return absl::InternalError("packed input has no value");
    NDArray packed(src->dtype(), p.shape);
    void* buffers[] = {src->data(), packed.data()};
    c.pack_fns[i](buffers, nullptr);
    out.emplace_back(p.input, std::move(packed));
  }
  return out;
}

// `packed`, or an equal packing measured before (same dtype, shape and bytes), which every
// candidate that packs its constants alike then reads. Candidates of one template mostly pack
// alike (a GEMM's packed B depends only on its panel width): one copy per packing, not per
// candidate, spares memory (the 3 finalists of a 1x1000x2048 GEMM held 3 copies of its 8 MB of
// weights) and lets each candidate read weights that the ones before left in the caches, as the
// runs of a compiled graph do.
NDArray shared_packing(std::vector<NDArray>& packings, NDArray packed) {
  for (const NDArray& p : packings)
    if (p.dtype() == packed.dtype() && p.shape() == packed.shape() &&
        std::memcmp(p.data(), packed.data(), static_cast<size_t>(p.nbytes())) == 0)
      return p;
  packings.push_back(packed);
  return packed;
}

// A candidate's buffers: its inputs (packed where it packs them), then one of two outputs,
// alternating from run to run. A graph's kernel rarely writes an output that it wrote a moment
// ago: one output, rewritten run after run, stays in L2 and flatters kernels that write many
// scattered lines at once. Measured on a Xeon, 1x1 conv 64->256 at 56x56, two threads (medians
// of 20 interleaved rounds): a tile of all 256 output rows ran 0.91 ms on one output and 1.19 ms
// alternating between two, near its 1.26 ms in CompiledGraph::run, while 24-row tiles ran 0.82
// and 0.83 (0.85 in run); on one output the tuner chose tiles of 256 or more rows in 7 of 8
// tunings.
struct CandidateBuffers {
  std::vector<void*> buffers;  // the last is the output of the next run
  void* outputs[2] = {nullptr, nullptr};
  // The buffers of run number `run`.
  void* const* for_run(size_t run) {
    buffers.back() = outputs[run % 2];
    return buffers.data();
  }
};

// Warm-up before a candidate's timed runs, in milliseconds of runs (at least one run). On a
// 2-vCPU KVM guest (Zen 2) the first runs of a kernel after the tuner had packed or compiled
// something were slow and sped up run by run: a matrix-vector product (1x1000x2048, two
// threads) ran 0.15-0.34 ms first, then 0.11-0.14, reaching 0.07-0.08 only after about 15 runs,
// so that the median of its first 15 runs ranked the candidates by how fast they caught up.
// After 10 ms of warm-up, its timed runs read 0.070-0.072 ms.
constexpr double kWarmupMs = 10;

// Median time of c over its inputs: warm-up (kWarmupMs), then repeats until about 50 ms or 15
// runs (at least 3). A candidate whose last warm-up run is far slower than the best so far stops
// early.
double time_candidate(const Compiled& c, CandidateBuffers& buffers, double best_ms) {
  size_t runs = 0;
  auto run_once = [&] {
    void* const* b = buffers.for_run(runs++);
    auto t0 = Clock::now();
    c.fn(b, nullptr);
    return seconds_since(t0) * 1e3;
  };
  double warm = 0;
  for (double spent = 0; runs == 0 || spent < kWarmupMs; spent += warm) warm = run_once();
  if (best_ms > 0 && warm > 3 * best_ms) return warm;
  std::vector<double> times;
  double total = 0;
  while (times.size() < 3 || (total < 50 && times.size() < 15)) {
    times.push_back(run_once());
    total += times.back();
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

NDArray filled(const TensorType& t) {
  std::vector<int64_t> shape;
  for (const Dim& d : t.shape) shape.push_back(d.value());
  return tuning_input(t.dtype, std::move(shape));
}

}  // namespace

NDArray tuning_input(DType dtype, std::vector<int64_t> shape) {
  NDArray a(dtype.element_of(), std::move(shape));
  const bool floats = a.dtype().is_float(), boolean = a.dtype().is_bool();
  for (int64_t i = 0; i < a.numel(); ++i) {
    uint64_t h = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    a.set(i, floats ? static_cast<double>(h % 1024) / 1024 - 0.5 : boolean ? (h & 1) : 0);
  }
  return a;
}

absl::Status outputs_agree(const NDArray& want, const NDArray& got) {
  if (want.dtype() != got.dtype() || want.shape() != got.shape())
    return absl::InvalidArgumentError(str_cat(
        "outputs of ", want.dtype().to_string(), " ", shape_to_string(want.shape()), " and ",
        got.dtype().to_string(), " ", shape_to_string(got.shape()), " cannot agree"));
  const int64_t n = want.numel();
  // Elements whose bytes differ (few, where each output rounds an f32 sum to f16), judged below.
  const size_t bytes = static_cast<size_t>(want.dtype().bytes());
  const char* w_bytes = static_cast<const char*>(want.data());
  const char* g_bytes = static_cast<const char*>(got.data());
  std::vector<int64_t> changed;
  auto find_changed = [&](auto element) {  // compared as unsigned integers of their size
    using T = decltype(element);
    for (int64_t i = 0; i < n; ++i) {
      T w, g;
      std::memcpy(&w, w_bytes + i * sizeof(T), sizeof(T));
      std::memcpy(&g, g_bytes + i * sizeof(T), sizeof(T));
      if (w != g) changed.push_back(i);
    }
  };
  if (bytes == 2) {
    find_changed(uint16_t{});
  } else if (bytes == 4) {
    find_changed(uint32_t{});
  } else {
    for (int64_t i = 0; i < n; ++i)
      if (std::memcmp(w_bytes + i * bytes, g_bytes + i * bytes, bytes) != 0) changed.push_back(i);
  }
  if (changed.empty()) return absl::OkStatus();
  // 4 units in the last place (f32: 2^-11); 0: exact.
  const DTypeCode code = want.dtype().code();
  const double rtol = code == DTypeCode::kF16    ? 0x1p-8
                      : code == DTypeCode::kBF16 ? 0x1p-5
                      : code == DTypeCode::kF32  ? 0x1p-11
                                                 : 0;
  double squares = 0;  // the root mean square, of at most 65536 evenly spaced elements
  int64_t finite = 0;
  for (int64_t i = 0, step = std::max<int64_t>(1, n / 65536); i < n; i += step)
    if (const double w = want.get(i); std::isfinite(w)) {
      squares += w * w;
      ++finite;
    }
  const double rms = finite ? std::sqrt(squares / static_cast<double>(finite)) : 0;
  int64_t differ = 0, first = -1;
  for (int64_t i : changed) {
    const double w = want.get(i), g = got.get(i);
    const bool same = std::isnan(w)   ? std::isnan(g)
                      : std::isinf(w) ? g == w
                      : rtol == 0     ? g == w
                                      : std::abs(g - w) <= rtol * (std::abs(w) + rms);
    if (same) continue;
    if (first < 0) first = i;
    ++differ;
  }
  if (differ == 0) return absl::OkStatus();
  return absl::AbortedError(str_cat(differ, " of ", n, " elements differ; the first, element ",
                                    first, ", is ", got.get(first), " against ", want.get(first)));
}

absl::Status check_config(const ScheduleTemplate& t, const Space& space, const Config& config) {
  for (const auto& [name, choices] : space.params())
    if (!config.has(name))
      return absl::InvalidArgumentError(str_cat("config ", config.to_string(), " for template ",
                                                t.name, " lacks parameter ", name));
  if (std::vector<std::string> broken = space.broken_rules(config); !broken.empty())
    return absl::InvalidArgumentError(str_cat("config ", config.to_string(), " for template ",
                                              t.name, " breaks rule '", broken[0], "'"));
  return absl::OkStatus();
}

absl::StatusOr<TunedKernel> tune_kernel(const ScheduleTemplate& t, const TemplateContext& ctx,
                                        const std::vector<const NDArray*>& constants,
                                        TuneLevel level, runtime::CpuJit& jit, const Config* forced,
                                        const KernelRewrite* rewrite, const Space* limited) {
  auto t0 = Clock::now();
  const Space space = limited ? *limited : t.space(ctx);
  std::vector<Config> configs;
  if (forced) {
    LOOM_RETURN_IF_ERROR(check_config(t, space, *forced));
    level = TuneLevel::kNone;
    configs = {*forced};
  } else if (level == TuneLevel::kNone)
    configs = {space.default_config()};
  else
    configs = level == TuneLevel::kFast ? space.pruned() : space.all();
  if (configs.empty()) return absl::InternalError("template " + t.name + " has an empty space");
  if (std::vector<std::string> broken = space.broken_rules(configs[0]);
      level == TuneLevel::kNone && !broken.empty())
    return absl::InternalError(str_cat("template ", t.name, ": default config ",
                                       configs[0].to_string(), " breaks rule ", broken[0]));

  std::vector<Compiled> candidates(configs.size());
  for (size_t i = 0; i < configs.size(); ++i) candidates[i].config = configs[i];
  // Compile in parallel: the JIT accepts concurrent compiles.
  {
    std::optional<CountTime> compiling;
    if (level != TuneLevel::kNone) compiling.emplace(Counter::kTuneCompileMicros);
    runtime::on_threads(
        candidates.size(), static_cast<size_t>(std::max(1, ctx.target.cores())), [&](size_t i) {
          build_and_compile(t, ctx, jit, level == TuneLevel::kNone ? rewrite : nullptr,
                            candidates[i]);
        });
  }

  TunedKernel out;
  if (level == TuneLevel::kNone) {
    Compiled& c = candidates[0];
    LOOM_RETURN_IF_ERROR(c.status);
    LOOM_ASSIGN_OR_RETURN(out.packed_inputs, pack_constants(c, constants));
    take_kernel(c, t0, out);
    return out;
  }

  CountTime measuring(Counter::kTuneMeasureMicros);
  // The same inputs for every candidate; constants are the real ones.
  std::vector<NDArray> inputs;
  for (size_t i = 0; i < ctx.inputs.size(); ++i)
    inputs.push_back(constants.size() > i && constants[i] ? *constants[i] : filled(ctx.inputs[i]));
  NDArray output = filled(ctx.output), other_output = filled(ctx.output);
  // The few fastest so far, with their packed inputs, for the final round.
  struct Finalist {
    double ms = 0;
    size_t index = 0;
    std::vector<std::pair<int, NDArray>> packed;
    CandidateBuffers buffers;
  };
  std::vector<Finalist> finalists;
  constexpr size_t kFinalists = 3;
  std::vector<NDArray> packings;  // every distinct packing of the constants so far
  // Candidate i with its packed constants and buffers, ready to run.
  auto prepare = [&](size_t i) -> absl::StatusOr<Finalist> {
    const Compiled& c = candidates[i];
    if (!c.status.ok()) return c.status;  // a template must build every config of its space
    std::vector<const NDArray*> values;
    for (const NDArray& a : inputs) values.push_back(&a);
    Finalist f;
    f.index = i;
    LOOM_ASSIGN_OR_RETURN(f.packed, pack_constants(c, values));
    for (auto& [input, array] : f.packed) array = shared_packing(packings, std::move(array));
    for (size_t k = 0; k < inputs.size(); ++k) {
      void* data = inputs[k].data();
      for (auto& [input, array] : f.packed)
        if (input == static_cast<int>(k)) data = array.data();
      f.buffers.buffers.push_back(data);
    }
    f.buffers.buffers.push_back(output.data());
    f.buffers.outputs[0] = output.data();
    f.buffers.outputs[1] = other_output.data();
    return f;
  };
  // Candidate f's output, computed once into a poisoned buffer.
  NDArray checked(output.dtype(), output.shape());
  auto output_of = [&](Finalist& f) -> const NDArray& {
    checked.poison();
    std::vector<void*> buffers = f.buffers.buffers;
    buffers.back() = checked.data();
    candidates[f.index].fn(buffers.data(), nullptr);
    return checked;
  };
  // The reference every candidate's output is checked against: the default config's (the first
  // candidate's where the default is not among them).
  size_t reference = 0;
  for (size_t i = 0; i < candidates.size(); ++i)
    if (candidates[i].config == space.default_config()) reference = i;
  absl::StatusOr<Finalist> prepared_reference = prepare(reference);
  if (!prepared_reference.ok()) return prepared_reference.status();
  const NDArray reference_output = output_of(*prepared_reference).copy();
  std::vector<double> first_ms(candidates.size(), std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Compiled& c = candidates[i];
    LOOM_ASSIGN_OR_RETURN(Finalist f, i == reference ? std::move(prepared_reference) : prepare(i));
    if (i != reference)
      if (absl::Status agree = outputs_agree(reference_output, output_of(f)); !agree.ok()) {
        out.refused.push_back(
            {c.config, str_cat("its output disagrees with that of ", t.name, "[",
                               candidates[reference].config.to_string(), "]: ", agree.message())});
        continue;
      }
    f.ms = time_candidate(c, f.buffers, finalists.empty() ? -1 : finalists.front().ms);
    count(Counter::kTuneMeasurements);
    out.measurements.push_back(Measurement{c.config, f.ms});
    first_ms[i] = f.ms;
    if (finalists.size() < kFinalists || f.ms < finalists.back().ms) {
      finalists.push_back(std::move(f));
      std::sort(finalists.begin(), finalists.end(),
                [](const Finalist& x, const Finalist& y) { return x.ms < y.ms; });
      if (finalists.size() > kFinalists) finalists.pop_back();
    }
  }
  // Final round: the finalists again, interleaved, so that a burst of noise during one
  // candidate's turn cannot crown it or sink it; the lowest median of these runs wins. Each turn
  // runs its finalist once untimed first, as the first measurement warmed it up: finalists that
  // pack their constants differently push each other's packings out of the caches (three 8 MB
  // packings of a 1x1000x2048 GEMM's weights overflow a 16 MB L3), and a graph runs its kernel
  // on constants left there by its last run.
  if (finalists.size() > 1) {
    std::vector<std::vector<double>> times(finalists.size());
    double spent = 0;
    size_t runs = 0;  // consecutive runs write different outputs, whichever finalist runs
    for (int round = 0; round < 15 && (round < 5 || spent < 150); ++round)
      for (size_t f = 0; f < finalists.size(); ++f) {
        const Compiled& c = candidates[finalists[f].index];
        auto start = Clock::now();
        c.fn(finalists[f].buffers.for_run(runs++), nullptr);
        spent += seconds_since(start) * 1e3;
        start = Clock::now();
        c.fn(finalists[f].buffers.for_run(runs++), nullptr);
        times[f].push_back(seconds_since(start) * 1e3);
        spent += times[f].back();
      }
    for (size_t f = 0; f < finalists.size(); ++f) {
      std::nth_element(times[f].begin(), times[f].begin() + times[f].size() / 2, times[f].end());
      finalists[f].ms = times[f][times[f].size() / 2];
    }
    std::stable_sort(finalists.begin(), finalists.end(),
                     [](const Finalist& x, const Finalist& y) { return x.ms < y.ms; });
  }
  if (rewrite) {
    // Post-scheduling: the fastest candidate whose built kernel takes the rewrite is compiled
    // again in its rewritten form.
    std::vector<size_t> order;
    for (const Finalist& f : finalists) order.push_back(f.index);
    std::vector<size_t> rest;  // the other candidates timed, fastest first
    for (size_t i = 0; i < candidates.size(); ++i)
      if (std::find(order.begin(), order.end(), i) == order.end() && std::isfinite(first_ms[i]))
        rest.push_back(i);
    std::stable_sort(rest.begin(), rest.end(),
                     [&](size_t x, size_t y) { return first_ms[x] < first_ms[y]; });
    order.insert(order.end(), rest.begin(), rest.end());
    absl::Status first_error;
    for (size_t i : order) {
      absl::StatusOr<ScheduledKernel> r = (*rewrite)(candidates[i].built);
      if (!r.ok()) {
        if (first_error.ok()) first_error = r.status();
        continue;
      }
      Compiled c;
      c.config = candidates[i].config;
      compile_kernel(std::move(*r), ctx, jit, c);
      LOOM_RETURN_IF_ERROR(c.status);
      LOOM_ASSIGN_OR_RETURN(out.packed_inputs, pack_constants(c, constants));
      take_kernel(c, t0, out);
      return out;
    }
    return first_error;
  }
  const size_t best = finalists.front().index;
  std::vector<std::pair<int, NDArray>> best_packed = std::move(finalists.front().packed);
  out.packed_inputs = std::move(best_packed);
  take_kernel(candidates[best], t0, out);
  return out;
}

}  // namespace loom::tune
