// Compiler::compile: graph -> one Task per operator node -> lowered loop IR -> one JIT module.

#include "loom/compiler.hpp"

#include <map>
#include <set>

#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/ir/printer.hpp"
#include "loom/passes/passes.hpp"
#include "loom/te/task.hpp"
#include "loom/tune/tuner.hpp"
#include "runtime/compiled_graph_impl.hpp"

namespace loom {
namespace {

// Symbolic dims of one task, by name: the same name is the same i64 variable.
class SymbolTable {
 public:
  ir::Expr dim(const Dim& d) {
    if (d.is_static()) return ir::Expr(d.value());
    auto it = vars_.find(d.name());
    if (it == vars_.end()) it = vars_.emplace(d.name(), ir::Var(d.name())).first;
    return it->second;
  }
  std::vector<ir::Expr> shape(const Shape& s) {
    std::vector<ir::Expr> out;
    for (const Dim& d : s) out.push_back(dim(d));
    return out;
  }

 private:
  std::map<std::string, ir::Var> vars_;
};

// Nodes that some output depends on.
std::set<int> live_nodes(const Graph& g) {
  std::set<int> live;
  std::vector<int> stack(g.outputs().begin(), g.outputs().end());
  while (!stack.empty()) {
    int n = stack.back();
    stack.pop_back();
    if (!live.insert(n).second) continue;
    for (int i : g.nodes()[n].inputs) stack.push_back(i);
  }
  return live;
}

// The first template of def that applies to node n on target, with its context; null if none
// does (symbolic shapes always use the default schedule).
const ScheduleTemplate* find_template(const OpDef& def, const Graph& g, const Node& n,
                                      const Target& target, TemplateContext* ctx) {
  if (def.templates.empty() || !is_static(n.type.shape)) return nullptr;
  ctx->target = target;
  ctx->name = n.name;
  ctx->output = n.type;
  ctx->attrs = n.attrs.get();
  for (int in : n.inputs) {
    const Node& i = g.nodes()[in];
    if (!is_static(i.type.shape)) return nullptr;
    ctx->inputs.push_back(i.type);
    ctx->constant_inputs.push_back(i.kind == Node::Kind::kConstant);
  }
  for (const ScheduleTemplate& t : def.templates)
    if (t.target_kind == target.kind() && t.applies && t.applies(*ctx)) return &t;
  return nullptr;
}

}  // namespace

absl::StatusOr<CompiledGraph> Compiler::compile(const Graph& graph, const CompileOptions& options) const {
  LOOM_RETURN_IF_ERROR(graph.status());
  if (graph.outputs().empty()) return absl::InvalidArgumentError("graph has no outputs");
  if (!target_.is_cpu())
    return absl::UnimplementedError("target " + target_.to_string() +
                                    ": only CPU targets are supported by this build of loom");
  auto impl = std::make_shared<CompiledGraphImpl>();
  impl->poison_buffers = options.poison_buffers;
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<runtime::CpuJit> jit, runtime::CpuJit::create(target_));
  impl->jit = std::move(jit);

  const std::vector<Node>& nodes = graph.nodes();
  std::set<int> live = live_nodes(graph);
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
  dump_stage("graph", "graph", graph.to_string());

  ir::Module module;
  module.name = "graph";
  module.target = target_;
  std::vector<size_t> module_launches;  // launch of each func of module
  for (int id = 0; id < static_cast<int>(nodes.size()); ++id) {
    const Node& n = nodes[id];
    if (n.kind != Node::Kind::kOp || !live.count(id)) continue;
    const OpDef* def = OpRegistry::global().find(n.op);
    LOOM_CHECK(def, "node of unregistered op ", n.op);
    TemplateContext ctx;
    if (const ScheduleTemplate* t = find_template(*def, graph, n, target_, &ctx)) {
      std::vector<const NDArray*> constants;
      for (int in : n.inputs)
        constants.push_back(nodes[in].kind == Node::Kind::kConstant ? &nodes[in].value : nullptr);
      auto forced = options.template_configs.find(t->name);
      absl::StatusOr<tune::TunedKernel> tuned = tune::tune_kernel(
          *t, ctx, constants, options.tune, *impl->jit,
          forced == options.template_configs.end() ? nullptr : &forced->second);
      if (!tuned.ok())
        return absl::Status(tuned.status().code(), str_cat("scheduling ", n.op, " node '", n.name,
                                                           "' with template ", t->name, ": ",
                                                           tuned.status().message()));
      Launch launch;
      launch.fn = tuned->fn;
      for (int in : n.inputs) launch.buffers.push_back(in);
      // Packed constants get slots of their own, filled at compile time.
      for (auto& [input, array] : tuned->packed_inputs) {
        Slot s;
        s.kind = Slot::Kind::kConstant;
        s.name = nodes[n.inputs[input]].name + "_packed";
        s.type.dtype = array.dtype();
        for (int64_t e : array.shape()) s.type.shape.push_back(Dim(e));
        s.constant = std::move(array);
        launch.buffers[static_cast<size_t>(input)] = static_cast<int>(impl->slots.size());
        impl->slots.push_back(std::move(s));
      }
      launch.buffers.push_back(id);
      impl->launches.push_back(std::move(launch));
      impl->kernels.push_back(KernelInfo{tuned->func.name, {n.name},
                                         t->name + "[" + tuned->config.to_string() + "]",
                                         tuned->seconds});
      continue;
    }

    SymbolTable symbols;
    std::vector<te::Tensor> ins;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Node& in = nodes[n.inputs[k]];
      ins.push_back(te::placeholder(in.name, in.type.dtype, symbols.shape(in.type.shape)));
    }
    te::Tensor out = def->compute(ins, *n.attrs, symbols.shape(n.type.shape), n.name);
    if (out.dtype() != n.type.dtype)
      return absl::InternalError("operator " + n.op + " computed " + out.dtype().to_string() +
                                 " but its shape rule promised " + n.type.dtype.to_string());
    // Inputs that the compute definition does not read are still passed (kernel arity is fixed).
    LOOM_ASSIGN_OR_RETURN(te::Task task, te::Task::make(n.name, ins, {out}));
    ir::Func f = passes::lower(task, target_);

    Launch launch;
    for (int in : n.inputs) launch.buffers.push_back(in);
    launch.buffers.push_back(id);
    for (const ir::Var& v : f.scalar_params()) launch.symbols.push_back(v.name());
    module_launches.push_back(impl->launches.size());
    impl->launches.push_back(std::move(launch));
    impl->kernels.push_back(KernelInfo{f.name, {n.name}, "default", 0});
    module.funcs.push_back(std::move(f));
  }

  if (!module.funcs.empty()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<runtime::KernelFn> fns, impl->jit->compile(module));
    for (size_t k = 0; k < fns.size(); ++k) impl->launches[module_launches[k]].fn = fns[k];
  }
  return CompiledGraph(std::move(impl));
}

}  // namespace loom
