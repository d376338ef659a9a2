// Layout choice for Compiler::compile: a fixed layout, or ALT's joint tuning. Joint tuning
// measures each anchor's kernel in context, as it will run: for each layout choice that keeps
// one layout from an anchor's input to its output, the graph with that choice wherever it is
// offered (a uniform assignment) is compiled whole, fused and tuned at the compile's level, and
// profiled, the uniform graphs in turns; each anchor's kernel time (epilogue included) is its cost
// in that choice. A choice that changes the layout between an anchor's input and output is
// measured where it removes a conversion from a uniform graph (at the graph's inputs and
// outputs: see boundary_assignments). Each conversion an assignment needs is timed alone. The
// search then covers every assignment when there are few (at most 4096: a handful of anchors),
// else starts from the best uniform one and changes one anchor at a time while the total falls.
// The model's best and the uniform assignments are then compiled whole and run in turns, round
// after round (a busy machine slows them alike); the least median wins. Every measurement is
// recorded in the kernel cache, so a warm compile measures nothing.

#include "compiler_layouts.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>

#include "compiler_cache.hpp"
#include "graph/passes/rewrite.hpp"
#include "graph/template_context.hpp"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/simplify.hpp"
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

// The conversions of constants to the layouts their readers take (weights a template reads in a
// layout of its own) done here, once: each becomes a constant stored in the layout, its padding
// zero. Layouts whose offset is affine in every logical dim (reorders, padding: HWIO weights,
// NHWC) go by strides; others (splits, fuses, swizzles) element by element through
// Layout::offset, folded (slower, and rare: templates pack such weights themselves).
absl::StatusOr<Graph> fold_constant_conversions(const Graph& g) {
  const std::vector<Node>& nodes = g.nodes();
  std::vector<std::optional<NDArray>> folded(nodes.size());
  bool any = false;
  for (size_t id = 0; id < nodes.size(); ++id) {
    const Node& n = nodes[id];
    if (n.kind != Node::Kind::kOp || n.op != "layout_transform" || n.inputs.size() != 1) continue;
    const Node& in = nodes[static_cast<size_t>(n.inputs[0])];
    if (in.kind != Node::Kind::kConstant || !in.type.layout.empty()) continue;
    const std::vector<int64_t>& shape = in.value.shape();
    std::vector<ir::Expr> extents;
    for (int64_t e : shape) extents.push_back(ir::Expr(e));
    const Layout layout = Layout::of(extents, n.type.layout);
    if (!layout.ok()) continue;
    auto number = [](const ir::Expr& e) { return ir::as_const_int(ir::simplify(e)); };
    const std::optional<int64_t> size = number(layout.physical_size());
    if (!size) continue;
    // Affine: a constant stride per logical dim and the origin at 0.
    std::vector<int64_t> strides;
    for (int d = 0; d < layout.rank(); ++d) {
      std::optional<ir::Expr> stride = layout.stride_of(d);
      std::optional<int64_t> value = stride ? number(*stride) : std::nullopt;
      if (!value) break;
      strides.push_back(*value);
    }
    const std::optional<int64_t> origin =
        number(layout.offset(std::vector<ir::Expr>(extents.size(), ir::Expr(int64_t{0}))));
    const bool affine = strides.size() == shape.size() && origin == int64_t{0};
    NDArray physical(in.value.dtype(), {*size});
    const size_t bytes = static_cast<size_t>(in.value.dtype().bytes());
    std::memset(physical.data(), 0, static_cast<size_t>(*size) * bytes);  // the padding
    const auto* src = static_cast<const char*>(in.value.data());
    auto* dst = static_cast<char*>(physical.data());
    std::vector<int64_t> index(shape.size(), 0);
    for (int64_t i = 0; i < in.value.numel(); ++i) {
      int64_t at = 0;
      if (affine) {
        for (size_t d = 0; d < shape.size(); ++d) at += index[d] * strides[d];
      } else {
        std::optional<int64_t> offset =
            number(layout.offset(std::vector<ir::Expr>(index.begin(), index.end())));
        at = offset.value_or(-1);
      }
      if (at < 0 || at >= *size)
        return absl::InternalError(str_cat("folding the conversion of ", in.name, " to ",
                                           layout.to_string(), ": element ", i,
                                           " maps outside its storage"));
      std::memcpy(dst + static_cast<size_t>(at) * bytes, src + static_cast<size_t>(i) * bytes,
                  bytes);
      for (size_t d = shape.size(); d-- > 0;) {
        if (++index[d] < shape[d]) break;
        index[d] = 0;
      }
    }
    folded[id] = std::move(physical);
    any = true;
  }
  if (!any) return g;
  Graph out;
  std::vector<Tensor> map;
  LOOM_ASSIGN_OR_RETURN(
      Graph result,
      passes::rebuild(
          g, out, map, [&](int id, const std::vector<Tensor>&) -> std::optional<Tensor> {
            if (!folded[static_cast<size_t>(id)]) return std::nullopt;
            const Node& n = nodes[static_cast<size_t>(id)];
            // The physical elements, typed as the conversion's output: its shape, in its layout.
            const Node& source = nodes[static_cast<size_t>(n.inputs[0])];
            return passes::keep_type(
                out.constant(source.name + "_laid", *std::move(folded[static_cast<size_t>(id)])),
                n);
          }));
  return passes::rebuild(result, nullptr);  // drops the row-major constants, now unread
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
    LOOM_RETURN_IF_ERROR(measure_in_context(anchors, choices));
    // Only choices measured in context are searched.
    for (int id : anchors) {
      std::vector<AnchorLayouts>& mine = choices[id];
      mine.erase(std::remove_if(mine.begin(), mine.end(),
                                [&](const AnchorLayouts& c) {
                                  return !in_context_.count({id, c.to_string()});
                                }),
                 mine.end());
      if (mine.empty()) return absl::InternalError("no layout choice of an anchor was measured");
    }
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

  // The choices that keep one layout from an anchor's first input to its output, each given
  // to every anchor that offers it (row-major elsewhere).
  std::vector<std::pair<std::string, Assignment>> uniform_assignments(
      const std::vector<int>& anchors, std::map<int, std::vector<AnchorLayouts>>& choices) {
    std::vector<std::pair<std::string, Assignment>> out;
    for (int id : anchors)
      for (const AnchorLayouts& c : choices[id]) {
        bool same = !c.inputs.empty() && c.inputs[0] == c.output;
        Assignment a = uniform(anchors, choices, c);
        bool seen = std::any_of(out.begin(), out.end(), [&](const auto& k) { return k.second == a; });
        if (same && !seen) out.emplace_back("uniform " + c.to_string(), a);
      }
    return out;
  }

  // Choices that change the layout from an anchor's input to its output, where one removes a
  // conversion from a uniform assignment: an anchor reading the graph's input row-major and
  // writing blocked channels absorbs the input's conversion (the first conv of a network), and
  // one writing a graph output row-major absorbs the output's. Such a choice, given to every
  // anchor where it removes a conversion from the same uniform assignment, is one more graph
  // measured in context. Inside a uniform graph a changing choice would add a conversion, so it
  // is not measured there (nor searched).
  absl::StatusOr<std::vector<std::pair<std::string, Assignment>>> boundary_assignments(
      const std::vector<int>& anchors, std::map<int, std::vector<AnchorLayouts>>& choices,
      const std::vector<std::pair<std::string, Assignment>>& uniforms) {
    std::vector<std::pair<std::string, Assignment>> out;
    for (const auto& [name, u] : uniforms) {
      LOOM_ASSIGN_OR_RETURN(Graph base, laid(u));
      const int base_conversions = layouts::count_conversions(base);
      std::map<std::string, Assignment> by_choice;
      for (int id : anchors)
        for (const AnchorLayouts& c : choices[id]) {
          if (c.inputs.empty() || c.inputs[0] == c.output) continue;
          Assignment a = u;
          a[id] = c;
          LOOM_ASSIGN_OR_RETURN(Graph with, laid(a));
          if (layouts::count_conversions(with) >= base_conversions) continue;
          by_choice.emplace(c.to_string(), u).first->second[id] = c;
        }
      for (auto& [choice, a] : by_choice)
        out.emplace_back(str_cat("boundary ", choice, " in ", name), std::move(a));
    }
    return out;
  }

  // Each anchor's kernel timed in its uniform graphs and boundary graphs (see above).
  absl::Status measure_in_context(const std::vector<int>& anchors,
                                  std::map<int, std::vector<AnchorLayouts>>& choices) {
    std::map<std::string, int> anchor_of;
    for (int id : anchors) anchor_of[g_.nodes()[static_cast<size_t>(id)].name] = id;
    std::vector<std::pair<std::string, Assignment>> contexts =
        uniform_assignments(anchors, choices);
    LOOM_ASSIGN_OR_RETURN(auto boundary, boundary_assignments(anchors, choices, contexts));
    contexts.insert(contexts.end(), boundary.begin(), boundary.end());
    std::vector<Graph> graphs;
    for (const auto& u : contexts) {
      LOOM_ASSIGN_OR_RETURN(Graph with, laid(u.second));
      graphs.push_back(std::move(with));
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<Profile> profiles, profiled(graphs, anchor_of));
    for (size_t k = 0; k < contexts.size(); ++k) {
      const auto& [name, a] = contexts[k];
      *report_ += str_cat(name, ": kernels ", profiles[k].total_ms, " ms in all\n");
      for (const auto& [id, ms] : profiles[k].anchor_ms) {
        const std::string choice = a.at(id).to_string();
        // The first graph that measured an anchor in a choice keeps it (row-major comes first).
        if (in_context_.emplace(std::make_pair(id, choice), ms).second)
          *report_ += str_cat("anchor ", g_.nodes()[static_cast<size_t>(id)].name, " ", choice,
                              ": ", ms, " ms\n");
      }
    }
    return absl::OkStatus();
  }

  // The model's choice, checked against the whole graph: it and every uniform assignment are
  // compiled whole (fused, as they will run) and run in turns, round after round, so that a busy
  // machine slows them alike; the least median wins. The model sums anchors and conversions; a
  // graph also runs default-scheduled operators that read other layouts than they write.
  absl::StatusOr<Graph> decided(const std::vector<int>& anchors,
                                std::map<int, std::vector<AnchorLayouts>>& choices,
                                const Assignment& model_best, double ms, const char* search) {
    *report_ += str_cat("model ", ms, " ms (", search, ")\n");
    for (int id : anchors)
      if (!(model_best.at(id) == choices[id].front()))
        *report_ += str_cat("model ", g_.nodes()[static_cast<size_t>(id)].name, ": ",
                            model_best.at(id).to_string(), "\n");
    std::vector<std::pair<std::string, Assignment>> candidates = {{"model", model_best}};
    for (auto& u : uniform_assignments(anchors, choices))
      if (!(u.second == model_best)) candidates.push_back(std::move(u));
    std::vector<Graph> graphs;
    for (const auto& c : candidates) {
      LOOM_ASSIGN_OR_RETURN(Graph with, laid(c.second));
      graphs.push_back(std::move(with));
    }
    std::vector<double> t(graphs.size(), 0);
    if (graphs.size() > 1) {
      LOOM_ASSIGN_OR_RETURN(t, timed_in_turns(graphs));
    }
    size_t winner = 0;
    for (size_t k = 0; k < candidates.size(); ++k) {
      *report_ += str_cat("whole graph, ", candidates[k].first, ": ", t[k], " ms\n");
      if (t[k] < t[winner]) winner = k;
    }
    const Assignment& best = candidates[winner].second;
    for (int id : anchors)
      *report_ += str_cat("chosen ", g_.nodes()[static_cast<size_t>(id)].name, ": ",
                          best.at(id).to_string(), "\n");
    *report_ += str_cat("decision: ", candidates[winner].first, "\n");
    return graphs[winner];
  }

  // Rounds in which every graph runs once (after a warm-up round): medians over them compare
  // graphs measured alike, whatever else the machine does meanwhile.
  static constexpr int kRounds = 15;

  // The graphs compiled as they will run and their inputs. A uniform graph profiled first and
  // timed whole later is compiled once.
  absl::StatusOr<std::vector<std::pair<CompiledGraph, std::vector<NDArray>>>> compiled(
      const std::vector<Graph>& graphs) {
    std::vector<std::pair<CompiledGraph, std::vector<NDArray>>> out;
    for (const Graph& laid : graphs) {
      const std::string text = laid.to_string();
      auto known = compiled_.find(text);
      if (known == compiled_.end()) {
        LOOM_ASSIGN_OR_RETURN(CompiledGraph c, compiler_.compile(laid, whole_));
        std::vector<NDArray> inputs;
        for (int in : laid.inputs())
          inputs.push_back(
              random_array(laid.nodes()[static_cast<size_t>(in)].type, 11 + inputs.size()));
        known = compiled_.emplace(text, std::make_pair(std::move(c), std::move(inputs))).first;
      }
      out.push_back(known->second);
    }
    return out;
  }

  // The text identifying a set of graphs measured together (a cache key part).
  static std::string texts(const char* what, const std::vector<Graph>& graphs) {
    std::string s = what;
    for (const Graph& g : graphs) s += "\n" + g.to_string();
    return s;
  }

  // The median end-to-end milliseconds of each graph, run in turns (recorded in the cache).
  absl::StatusOr<std::vector<double>> timed_in_turns(const std::vector<Graph>& graphs) {
    auto measure = [&]() -> absl::StatusOr<runtime::CachedKernel> {
      LOOM_ASSIGN_OR_RETURN(auto runs, compiled(graphs));
      std::vector<std::vector<double>> ms(graphs.size());
      for (int r = 0; r <= kRounds; ++r)
        for (size_t k = 0; k < runs.size(); ++k) {
          auto t0 = std::chrono::steady_clock::now();
          LOOM_RETURN_IF_ERROR(runs[k].first.run(runs[k].second).status());
          if (r > 0)
            ms[k].push_back(std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - t0)
                                .count());
        }
      runtime::CachedKernel e = measurement_entry("whole graphs in turns");
      for (size_t k = 0; k < ms.size(); ++k)
        e.measurements.push_back({tune::Config({{"graph", static_cast<int64_t>(k)}}), median(ms[k])});
      return e;
    };
    LOOM_ASSIGN_OR_RETURN(auto entry, measured(texts("whole graphs in turns", graphs), measure));
    if (entry->measurements.size() != graphs.size())
      return absl::DataLossError("whole-graph measurement record does not match its graphs");
    std::vector<double> out;
    for (const tune::Measurement& m : entry->measurements) out.push_back(m.median_ms);
    return out;
  }

  struct Profile {
    double total_ms = 0;                            // the sum of every kernel's median
    std::vector<std::pair<int, double>> anchor_ms;  // (anchor id, its kernel's median)
  };

  // Per-kernel medians of the graphs, profiled in turns (one profiled run each per round), as
  // each graph's total and its anchors' kernels, recorded in the kernel cache with configs
  // {graph: k} (the total) and {graph: k, anchor: id}.
  absl::StatusOr<std::vector<Profile>> profiled(const std::vector<Graph>& graphs,
                                                const std::map<std::string, int>& anchor_of) {
    auto measure = [&]() -> absl::StatusOr<runtime::CachedKernel> {
      LOOM_ASSIGN_OR_RETURN(auto runs, compiled(graphs));
      std::vector<std::vector<std::vector<double>>> ms(runs.size());  // [graph][kernel][round]
      for (int r = 0; r < kRounds; ++r)
        for (size_t k = 0; k < runs.size(); ++k) {
          LOOM_ASSIGN_OR_RETURN(std::vector<double> once, runs[k].first.profile(runs[k].second, 1));
          ms[k].resize(once.size());
          for (size_t i = 0; i < once.size(); ++i) ms[k][i].push_back(once[i]);
        }
      runtime::CachedKernel e = measurement_entry("graph profiles in turns");
      for (size_t k = 0; k < runs.size(); ++k) {
        const CompiledGraph& c = runs[k].first;
        const int64_t g = static_cast<int64_t>(k);
        double total = 0;
        for (size_t i = 0; i < ms[k].size() && i < c.kernels().size(); ++i) {
          const double kernel_ms = median(ms[k][i]);
          total += kernel_ms;
          for (const std::string& op : c.kernels()[i].ops)
            if (auto it = anchor_of.find(op); it != anchor_of.end())
              e.measurements.push_back(
                  {tune::Config({{"graph", g}, {"anchor", it->second}}), kernel_ms});
        }
        e.measurements.push_back({tune::Config({{"graph", g}}), total});
      }
      return e;
    };
    LOOM_ASSIGN_OR_RETURN(auto entry, measured(texts("graph profiles in turns", graphs), measure));
    std::vector<Profile> out(graphs.size());
    for (const tune::Measurement& m : entry->measurements) {
      if (!m.config.has("graph") || m.config["graph"] < 0 ||
          m.config["graph"] >= static_cast<int64_t>(out.size()))
        return absl::DataLossError("graph profile record is malformed");
      Profile& p = out[static_cast<size_t>(m.config["graph"])];
      if (m.config.has("anchor"))
        p.anchor_ms.emplace_back(static_cast<int>(m.config["anchor"]), m.median_ms);
      else
        p.total_ms = m.median_ms;
    }
    return out;
  }

  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  }

  // An entry of measurements: from the kernel cache when it holds one for `what`, else measured
  // and recorded there.
  absl::StatusOr<std::shared_ptr<const runtime::CachedKernel>> measured(
      const std::string& what,
      const std::function<absl::StatusOr<runtime::CachedKernel>()>& measure) {
    if (!cache_.enabled) {
      LOOM_ASSIGN_OR_RETURN(runtime::CachedKernel k, measure());
      return std::make_shared<const runtime::CachedKernel>(std::move(k));
    }
    runtime::CacheKeyParts parts = measurement_parts(what);
    runtime::KernelCache::Result e =
        runtime::KernelCache::global().get(runtime::cache_key(parts), parts, cache_.settings, measure);
    if (!e.ok()) return e.status();
    return *e;
  }

  // g with the assignment's layouts, its constants' conversions done (as the compile will).
  absl::StatusOr<Graph> laid(const Assignment& a) const {
    LOOM_ASSIGN_OR_RETURN(Graph applied, layouts::apply(g_, a));
    return fold_constant_conversions(applied);
  }

  // Measured anchors plus measured conversions of the graph the assignment gives.
  absl::StatusOr<double> cost(const Assignment& a) {
    double ms = 0;
    for (const auto& [id, c] : a) {
      auto t = in_context_.find({id, c.to_string()});
      if (t == in_context_.end()) return std::numeric_limits<double>::infinity();
      ms += t->second;
    }
    LOOM_ASSIGN_OR_RETURN(Graph with, laid(a));
    for (const Node& n : with.nodes()) {
      if (n.kind != Node::Kind::kOp || n.op != "layout_transform") continue;
      LOOM_ASSIGN_OR_RETURN(double t, conversion_ms(with.nodes()[static_cast<size_t>(n.inputs[0])].type,
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
    LOOM_ASSIGN_OR_RETURN(auto e, measured(what, [&]() -> absl::StatusOr<runtime::CachedKernel> {
      LOOM_ASSIGN_OR_RETURN(double ms, measure());
      runtime::CachedKernel k = measurement_entry(what);
      k.measurements = {tune::Measurement{tune::Config(), ms}};
      return k;
    }));
    if (e->measurements.size() != 1)
      return absl::DataLossError("layout measurement record holds no time: " + what);
    return e->measurements[0].median_ms;
  }

  runtime::CacheKeyParts measurement_parts(const std::string& what) const {
    return cache_.parts(str_cat("layout measurement\n", what, "\nthreads ", num_threads(),
                                "\ntune ", static_cast<int>(measure_.tune), "\n"));
  }
  // A cache entry holding measurements and no code.
  static runtime::CachedKernel measurement_entry(const std::string& what) {
    runtime::CachedKernel k;
    k.kernel_name = "layout_measurement";
    k.schedule = "measurement";
    k.source = what + "\n";
    return k;
  }

  const Compiler& compiler_;
  const Graph& g_;
  std::string* report_;
  CacheUse cache_;
  CompileOptions whole_, measure_;  // how the graph, and each anchor alone, compile
  std::map<std::string, double> conversions_;
  // Whole graphs compiled for measuring, by their text.
  std::map<std::string, std::pair<CompiledGraph, std::vector<NDArray>>> compiled_;
  std::map<std::pair<int, std::string>, double> in_context_;  // (anchor, choice) -> kernel ms
};

absl::StatusOr<Graph> fixed_layouts(const Compiler& compiler, const Graph& g,
                                    const CompileOptions& options, std::string* report) {
  Assignment a;
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    std::vector<AnchorLayouts> offered =
        layouts::options(g, static_cast<int>(id), compiler.target());
    if (offered.empty()) continue;
    const Node& n = g.nodes()[id];
    const OpDef* def = OpRegistry::global().find(n.op);
    TemplateContext row_major;
    if (!template_context(g, n, compiler.target(), &row_major)) continue;
    // The fixed layout for input 0 and the output, the others row-major; or, first, an offered
    // choice with it there, which names the other inputs' layouts (weights a template reads in
    // a layout of its own).
    AnchorLayouts plain;
    plain.inputs.assign(n.inputs.size(), {});
    plain.inputs[0] = options.fixed_layout;
    plain.output = options.fixed_layout;
    std::vector<AnchorLayouts> wants;
    for (const AnchorLayouts& o : offered)
      if (!o.inputs.empty() && o.inputs[0] == plain.inputs[0] && o.output == plain.output)
        wants.push_back(o);
    wants.push_back(plain);
    // Offered or not, a choice counts where a template applies in it.
    for (const AnchorLayouts& want : wants) {
      TemplateContext ctx = row_major;
      for (size_t k = 0; k < ctx.inputs.size() && k < want.inputs.size(); ++k)
        ctx.inputs[k].layout = want.inputs[k];
      ctx.output.layout = want.output;
      const bool takes =
          std::any_of(def->templates.begin(), def->templates.end(), [&](const ScheduleTemplate& t) {
            return t.target_kind == compiler.target().kind() && t.any_layout && t.applies &&
                   t.applies(ctx);
          });
      if (!takes) continue;
      a[static_cast<int>(id)] = want;
      *report += str_cat("fixed ", n.name, ": ", want.to_string(), "\n");
      break;
    }
  }
  return layouts::apply(g, a);
}

}  // namespace

absl::StatusOr<Graph> choose_layouts(const Compiler& compiler, const Graph& g,
                                     const CompileOptions& options, std::string* report) {
  switch (options.layouts) {
    case LayoutPolicy::kRowMajor:
      return g;
    case LayoutPolicy::kFixed: {
      LOOM_ASSIGN_OR_RETURN(Graph laid, fixed_layouts(compiler, g, options, report));
      return fold_constant_conversions(laid);
    }
    case LayoutPolicy::kJoint: {
      LOOM_ASSIGN_OR_RETURN(Graph laid, JointSearch(compiler, g, options, report).run());
      return fold_constant_conversions(laid);
    }
  }
  return g;
}

}  // namespace loom
