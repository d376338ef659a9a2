// Layout choice for Compiler::compile: a fixed layout, or ALT's joint tuning. Joint tuning
// measures each anchor in each layout choice its templates offer (one small graph per anchor
// and choice, tuned at the compile's level and served by the kernel cache on later compiles),
// and each conversion the assignment needs, then searches assignments: all of them when there
// are few (at most 4096: a handful of anchors), else the best uniform one (every anchor the same
// choice) first, then one anchor at a time while the total time falls. The model's best and
// the uniform assignments are then compiled whole and timed; the fastest wins.

#include "compiler_layouts.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>

#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "compiler_cache.hpp"
#include "graph/template_context.hpp"
#include "loom/runtime/thread_pool.hpp"

namespace loom {
namespace {

using layouts::AnchorLayouts;
using layouts::Assignment;

NDArray random_array(const TensorType& t, uint64_t seed) {
  std::vector<int64_t> shape;
  for (const Dim& d : t.shape) shape.push_back(d.value());
  NDArray a(t.dtype, shape);
  for (int64_t i = 0; i < a.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    a.set(i, static_cast<double>(seed >> 40) * 0x1p-24 * 2 - 1);
  }
  return a;
}

class JointSearch {
 public:
  JointSearch(const Compiler& compiler, const Graph& g, const CompileOptions& options,
              std::string* report)
      : compiler_(compiler), g_(g), report_(report), cache_(cache_use(compiler.target(), options)) {
    whole_ = options;
    whole_.layouts = LayoutPolicy::kRowMajor;
    whole_.graph_passes = false;
    whole_.report_progress = false;
    whole_.specialize_shapes = false;
    measure_ = whole_;
    measure_.fuse = false;
  }

  absl::StatusOr<Graph> run() {
    std::vector<int> anchors;
    std::map<int, std::vector<AnchorLayouts>> choices;
    for (size_t id = 0; id < g_.nodes().size(); ++id) {
      std::vector<AnchorLayouts> o = layouts::options(g_, static_cast<int>(id), compiler_.target());
      if (o.empty()) continue;
      anchors.push_back(static_cast<int>(id));
      choices[static_cast<int>(id)] = std::move(o);
    }
    if (anchors.empty()) return g_;
    // A small space is searched whole: the least total exactly.
    double combinations = 1;
    for (int id : anchors) combinations *= static_cast<double>(choices[id].size());
    if (combinations <= kExhaustive) {
      Assignment best;
      double best_ms = std::numeric_limits<double>::infinity();
      std::vector<size_t> digit(anchors.size(), 0);
      for (bool more = true; more;) {
        Assignment a;
        for (size_t k = 0; k < anchors.size(); ++k) a[anchors[k]] = choices[anchors[k]][digit[k]];
        LOOM_ASSIGN_OR_RETURN(double ms, cost(a));
        if (ms < best_ms) best_ms = ms, best = a;
        more = false;
        for (size_t k = 0; k < anchors.size() && !more; ++k) {
          more = ++digit[k] < choices[anchors[k]].size();
          if (!more) digit[k] = 0;
        }
      }
      return decided(anchors, choices, best, best_ms, "every assignment");
    }
    // Uniform starts: every distinct choice, given to the anchors that offer it.
    std::vector<AnchorLayouts> distinct;
    for (int id : anchors)
      for (const AnchorLayouts& c : choices[id])
        if (std::find(distinct.begin(), distinct.end(), c) == distinct.end()) distinct.push_back(c);
    Assignment best;
    double best_ms = std::numeric_limits<double>::infinity();
    for (const AnchorLayouts& c : distinct) {
      Assignment a = uniform(anchors, choices, c);
      LOOM_ASSIGN_OR_RETURN(double ms, cost(a));
      *report_ += str_cat("uniform ", c.to_string(), ": ", ms, " ms\n");
      if (ms < best_ms) best_ms = ms, best = a;
    }
    // One anchor at a time, in graph order, while some change lowers the total.
    for (int sweep = 0; sweep < 4; ++sweep) {
      bool improved = false;
      for (int id : anchors)
        for (const AnchorLayouts& c : choices[id]) {
          if (best[id] == c) continue;
          Assignment a = best;
          a[id] = c;
          LOOM_ASSIGN_OR_RETURN(double ms, cost(a));
          if (ms < best_ms * 0.999) best_ms = ms, best = a, improved = true;
        }
      if (!improved) break;
    }
    return decided(anchors, choices, best, best_ms, "uniform starts and one anchor at a time");
  }

 private:
  // At most this many assignments are all measured; larger spaces are searched greedily.
  static constexpr double kExhaustive = 4096;

  // Each anchor choice c where it is offered, row-major elsewhere.
  static Assignment uniform(const std::vector<int>& anchors,
                            std::map<int, std::vector<AnchorLayouts>>& choices,
                            const AnchorLayouts& c) {
    Assignment a;
    for (int id : anchors) {
      const auto& mine = choices[id];
      a[id] = std::find(mine.begin(), mine.end(), c) != mine.end() ? c : mine.front();
    }
    return a;
  }

  // The model's choice, checked against the whole graph: it and every uniform assignment that
  // keeps one layout from input to output are compiled whole (fused, as they will run) and
  // timed, and the fastest wins. The model sums anchors and conversions; a graph also runs
  // epilogues and default-scheduled operators that read other layouts than they write.
  absl::StatusOr<Graph> decided(const std::vector<int>& anchors,
                                std::map<int, std::vector<AnchorLayouts>>& choices,
                                const Assignment& model_best, double ms, const char* search) {
    *report_ += str_cat("model ", ms, " ms (", search, ")\n");
    std::vector<std::pair<std::string, Assignment>> candidates = {{"model", model_best}};
    for (int id : anchors)
      for (const AnchorLayouts& c : choices[id]) {
        bool same = !c.inputs.empty() && c.inputs[0] == c.output;
        Assignment a = uniform(anchors, choices, c);
        bool seen = std::any_of(candidates.begin(), candidates.end(),
                                [&](const auto& k) { return k.second == a; });
        if (same && !seen) candidates.emplace_back("uniform " + c.to_string(), a);
      }
    size_t winner = 0;
    Graph winner_graph;
    double winner_ms = std::numeric_limits<double>::infinity();
    for (size_t k = 0; k < candidates.size(); ++k) {
      LOOM_ASSIGN_OR_RETURN(Graph laid, layouts::apply(g_, candidates[k].second));
      double t = 0;
      if (candidates.size() > 1) {
        LOOM_ASSIGN_OR_RETURN(t, recorded("whole graph\n" + laid.to_string(),
                                          [&]() { return whole_ms(laid); }));
      }
      *report_ += str_cat("whole graph, ", candidates[k].first, ": ", t, " ms\n");
      if (t < winner_ms) winner = k, winner_ms = t, winner_graph = laid;
    }
    const Assignment& best = candidates[winner].second;
    for (int id : anchors)
      *report_ += str_cat("chosen ", g_.nodes()[static_cast<size_t>(id)].name, ": ",
                          best.at(id).to_string(), "\n");
    *report_ += str_cat("decision: ", candidates[winner].first, "\n");
    return winner_graph;
  }

  // The median of a few runs of the whole graph compiled as it will run.
  absl::StatusOr<double> whole_ms(const Graph& laid) {
    LOOM_ASSIGN_OR_RETURN(CompiledGraph c, compiler_.compile(laid, whole_));
    std::vector<NDArray> inputs;
    for (int in : laid.inputs())
      inputs.push_back(random_array(laid.nodes()[static_cast<size_t>(in)].type, 11 + inputs.size()));
    LOOM_RETURN_IF_ERROR(c.run(inputs).status());  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < 7; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      LOOM_RETURN_IF_ERROR(c.run(inputs).status());
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  // Measured anchors plus measured conversions of the graph the assignment gives.
  absl::StatusOr<double> cost(const Assignment& a) {
    double ms = 0;
    for (const auto& [id, c] : a) {
      LOOM_ASSIGN_OR_RETURN(double t, anchor_ms(id, c));
      ms += t;
    }
    LOOM_ASSIGN_OR_RETURN(Graph laid, layouts::apply(g_, a));
    for (const Node& n : laid.nodes()) {
      if (n.kind != Node::Kind::kOp || n.op != "layout_transform") continue;
      LOOM_ASSIGN_OR_RETURN(double t, conversion_ms(laid.nodes()[static_cast<size_t>(n.inputs[0])].type,
                                                    n.type.layout));
      ms += t;
    }
    return ms;
  }

  // The median time of the kernel of m computing the node `pick` accepts.
  absl::StatusOr<double> time_of(const Graph& m, const std::function<bool(const Node&)>& pick) {
    LOOM_ASSIGN_OR_RETURN(CompiledGraph c, compiler_.compile(m, measure_));
    std::vector<NDArray> inputs;
    for (int in : m.inputs())
      inputs.push_back(random_array(m.nodes()[static_cast<size_t>(in)].type, 7 + inputs.size()));
    LOOM_ASSIGN_OR_RETURN(std::vector<double> ms, c.profile(inputs, 10));
    for (size_t k = 0; k < c.kernels().size() && k < ms.size(); ++k)
      for (const std::string& name : c.kernels()[k].ops)
        for (const Node& n : m.nodes())
          if (n.name == name && pick(n)) return ms[k];
    return absl::InternalError("no kernel of the measuring graph computes the node timed");
  }

  absl::StatusOr<double> anchor_ms(int id, const AnchorLayouts& c) {
    const Node& n = g_.nodes()[static_cast<size_t>(id)];
    std::string key = str_cat(n.op, "(", n.attrs ? n.attrs->to_string() : "", ")");
    for (int in : n.inputs) {
      const Node& i = g_.nodes()[static_cast<size_t>(in)];
      key += " " + i.type.to_string() + (i.kind == Node::Kind::kConstant ? "c" : "");
    }
    key += " " + c.to_string();
    auto it = anchors_.find(key);
    if (it != anchors_.end()) return it->second;
    LOOM_ASSIGN_OR_RETURN(double ms, recorded("anchor " + key, [&]() -> absl::StatusOr<double> {
      Graph m;
      std::vector<Tensor> ins;
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const Node& i = g_.nodes()[static_cast<size_t>(n.inputs[k])];
        ins.push_back(i.kind == Node::Kind::kConstant
                          ? m.constant(i.name, i.value)
                          : m.input(str_cat("in", k), i.type.shape, i.type.dtype));
      }
      Tensor y = m.apply(n.op, ins, n.attrs);
      m.output(y);
      LOOM_ASSIGN_OR_RETURN(Graph laid, layouts::apply(m, {{y.id(), c}}));
      return time_of(laid, [&](const Node& k) { return k.op == n.op; });
    }));
    *report_ += str_cat("anchor ", key, ": ", ms, " ms\n");
    return anchors_[key] = ms;
  }

  absl::StatusOr<double> conversion_ms(const TensorType& from, const std::vector<LayoutStep>& to) {
    std::string key = from.to_string() + " -> " + steps_to_string(to);
    auto it = conversions_.find(key);
    if (it != conversions_.end()) return it->second;
    LOOM_ASSIGN_OR_RETURN(double ms, recorded("conversion " + key, [&]() -> absl::StatusOr<double> {
      std::vector<ir::Expr> shape;
      for (const Dim& d : from.shape) shape.push_back(ir::Expr(d.value()));
      Graph m;
      Tensor x = m.input("x", from.shape, from.dtype);
      if (!from.layout.empty()) x = x.layout_transform(Layout::of(shape, from.layout));
      Tensor y = x.layout_transform(Layout::of(shape, to));
      m.output(to.empty() ? y : y.layout_transform(Layout::row_major(shape)));
      LOOM_RETURN_IF_ERROR(m.status());
      const std::string name = y.name();
      return time_of(m, [&](const Node& k) { return k.name == name; });
    }));
    *report_ += str_cat("conversion ", key, ": ", ms, " ms\n");
    return conversions_[key] = ms;
  }

  // A measurement, recorded in the kernel cache (an entry with no object code) so that the next
  // compile of the same graph decides without measuring.
  absl::StatusOr<double> recorded(const std::string& what,
                                  const std::function<absl::StatusOr<double>()>& measure) {
    if (!cache_.enabled) return measure();
    runtime::CacheKeyParts parts =
        cache_.parts(str_cat("layout measurement\n", what, "\nthreads ", num_threads(), "\ntune ",
                             static_cast<int>(measure_.tune), "\n"));
    runtime::KernelCache::Result e = runtime::KernelCache::global().get(
        runtime::cache_key(parts), parts, cache_.settings,
        [&]() -> absl::StatusOr<runtime::CachedKernel> {
          LOOM_ASSIGN_OR_RETURN(double ms, measure());
          runtime::CachedKernel k;
          k.kernel_name = "layout_measurement";
          k.schedule = "measurement";
          k.measurements = {tune::Measurement{tune::Config(), ms}};
          k.source = what + "\n";
          return k;
        });
    if (!e.ok()) return e.status();
    if ((*e)->measurements.size() != 1)
      return absl::DataLossError("layout measurement record holds no time: " + what);
    return (*e)->measurements[0].median_ms;
  }

  const Compiler& compiler_;
  const Graph& g_;
  std::string* report_;
  CacheUse cache_;
  CompileOptions whole_, measure_;  // how the graph, and each anchor alone, compile
  std::map<std::string, double> anchors_, conversions_;
};

absl::StatusOr<Graph> fixed_layouts(const Compiler& compiler, const Graph& g,
                                    const CompileOptions& options, std::string* report) {
  Assignment a;
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    std::vector<AnchorLayouts> o = layouts::options(g, static_cast<int>(id), compiler.target());
    if (o.empty()) continue;
    AnchorLayouts want;
    want.inputs.assign(g.nodes()[id].inputs.size(), {});
    want.inputs[0] = options.fixed_layout;
    want.output = options.fixed_layout;
    // Offered or not, a template that applies in the layout takes it.
    const Node& n = g.nodes()[id];
    const OpDef* def = OpRegistry::global().find(n.op);
    TemplateContext ctx;
    if (!template_context(g, n, compiler.target(), &ctx)) continue;
    ctx.inputs[0].layout = want.inputs[0];
    ctx.output.layout = want.output;
    bool takes = std::any_of(def->templates.begin(), def->templates.end(), [&](const ScheduleTemplate& t) {
      return t.target_kind == compiler.target().kind() && t.any_layout && t.applies && t.applies(ctx);
    });
    if (!takes) continue;
    a[static_cast<int>(id)] = want;
    *report += str_cat("fixed ", n.name, ": ", want.to_string(), "\n");
  }
  return layouts::apply(g, a);
}

}  // namespace

absl::StatusOr<Graph> choose_layouts(const Compiler& compiler, const Graph& g,
                                     const CompileOptions& options, std::string* report) {
  switch (options.layouts) {
    case LayoutPolicy::kRowMajor:
      return g;
    case LayoutPolicy::kFixed:
      return fixed_layouts(compiler, g, options, report);
    case LayoutPolicy::kJoint:
      return JointSearch(compiler, g, options, report).run();
  }
  return g;
}

}  // namespace loom
