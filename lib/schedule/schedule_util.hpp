// Private helpers of the loop primitives: finding loops and stores, substituting variables and
// replacing statements by identity. Shared by loop_schedule.cpp and compute_schedule.cpp.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ir/func.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::schedule::internal {

using VarMap = std::map<const ir::VarNode*, ir::Expr>;

// A loop and the loops around it, outermost first.
struct LoopSite {
  const ir::For* loop = nullptr;
  std::vector<const ir::For*> enclosing;
};

std::vector<LoopSite> collect_loops(const ir::Stmt& body);

// The one loop over var; `primitive` prefixes the error message.
absl::StatusOr<LoopSite> find_loop(const ir::Func& f, const ir::Var& var, const char* primitive);

bool uses_var(const ir::Expr& e, const ir::VarNode* var);
bool uses_var(const ir::Stmt& s, const ir::VarNode* var);
bool contains_loop(const ir::Stmt& s);
// The extent of a loop when it simplifies to a constant.
std::optional<int64_t> const_extent(const ir::For* loop);

ir::Expr substitute(const ir::Expr& e, const VarMap& map);
ir::Stmt substitute(const ir::Stmt& s, const VarMap& map);
// Substitutes and gives every loop inside s a fresh variable named <name><suffix>, so a copied
// body never shares loop variables with the original.
ir::Stmt copy_with_fresh_loops(const ir::Stmt& s, const VarMap& map, const std::string& suffix);

ir::Stmt rebuild_for(const ir::For* op, ir::Stmt body);
ir::Stmt rebuild_for(const ir::For* op, ir::ForKind kind);

// Replaces statements by node identity; a loop or allocation whose body vanishes vanishes too.
class StmtReplacer : public ir::IRMutator {
 public:
  std::map<const ir::StmtNode*, ir::Stmt> replace;
  using ir::IRMutator::mutate;
  ir::Stmt mutate(const ir::Stmt& s) override;

 protected:
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override;
};

// Whether buf is a parameter of f, and the Allocate statements of buf in f.
bool is_param(const ir::Func& f, const ir::BufferNode* buf);
int count_allocations(const ir::Stmt& body, const ir::BufferNode* buf);

// Every store to a buffer, with the loops and allocations around it (outermost first).
struct StoreSite {
  const ir::Store* store = nullptr;
  std::vector<const ir::For*> loops;
  std::vector<const ir::Allocate*> allocations;
};
std::vector<StoreSite> collect_stores(const ir::Stmt& body, const ir::BufferNode* buf);

}  // namespace loom::schedule::internal
