// optimize: the graph passes in order, each dumped (LOOM_DUMP_IR) as graph-passes/NN-name.

#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/passes.hpp"

namespace loom::passes {

absl::StatusOr<Graph> optimize(const Graph& g, const Target& target) {
  LOOM_RETURN_IF_ERROR(g.status());
  Graph current = g;
  int step = 0;
  auto run = [&](const char* name, auto&& pass) -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(current, pass(current));
    dump_stage("graph-passes", str_cat(step < 10 ? "0" : "", step, "-", name), current.to_string());
    ++step;
    return absl::OkStatus();
  };
  dump_stage("graph-passes", "00-input", g.to_string());
  ++step;
  LOOM_RETURN_IF_ERROR(run("remove-identities", remove_identities));
  LOOM_RETURN_IF_ERROR(run("cse", eliminate_common_subexpressions));
  LOOM_RETURN_IF_ERROR(run("fold-constants", [&](const Graph& x) { return fold_constants(x, target); }));
  LOOM_RETURN_IF_ERROR(run("fold-batch-norm", fold_batch_norm_into_conv));
  LOOM_RETURN_IF_ERROR(run("merge-sibling-matmuls", merge_sibling_matmuls));
  LOOM_RETURN_IF_ERROR(run("remove-identities", remove_identities));
  LOOM_RETURN_IF_ERROR(run("cse", eliminate_common_subexpressions));
  return current;
}

}  // namespace loom::passes
