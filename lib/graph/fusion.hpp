// The kernels of fused groups (private to lib/): the te task of a group the default schedule
// lowers as one kernel, and the epilogue fusion of a group whose anchor a template schedules.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/partition.hpp"
#include "loom/passes/passes.hpp"
#include "loom/te/task.hpp"

namespace loom::fusion {

// Index expressions for graph shapes: static dims as constants, each symbolic dim one i64
// variable per name (the same name is the same variable).
class DimVars {
 public:
  ir::Expr dim(const Dim& d);
  std::vector<ir::Expr> shape(const Shape& s);

 private:
  std::map<std::string, ir::Var> vars_;
};

// The values `nodes` read from outside them, in order of first use.
std::vector<int> outside_inputs(const Graph& g, const std::vector<int>& nodes);

// One task computing the whole group: its inputs are placeholders named after their nodes, its
// output the group's output; injective members are inlined into their consumers and the anchor
// into its epilogue (reduction stages inside the anchor stay loop nests of their own).
absl::StatusOr<te::Task> group_task(const Graph& g, const FusedGroup& group,
                                    const std::string& name);

struct Epilogue {
  passes::EpilogueFusion fusion;
  std::vector<int> inputs;  // the nodes whose values fusion.inputs hold, in order
  std::string text;         // canonical text of the epilogue (no node names), for cache keys
};

// The epilogue of an anchor group, ready for passes::fuse_epilogue.
absl::StatusOr<Epilogue> epilogue_of(const Graph& g, const FusedGroup& group);

struct Prologue {
  passes::PrologueFusion fusion;
  std::vector<int> inputs;  // the nodes whose values fusion.inputs hold, in order
  std::string text;         // canonical text, for cache keys
};

// The prologue of each anchor input computed inside the group (in input order).
absl::StatusOr<std::vector<Prologue>> prologues_of(const Graph& g, const FusedGroup& group);

// An anchor's scheduled kernel with its prologues (last input first, so earlier parameters keep
// their places) and its epilogue fused in; an error says why the kernel cannot take one.
absl::StatusOr<ir::Func> fused(const ir::Func& kernel, const std::vector<Prologue>& prologues,
                               const Epilogue* epilogue);

// The buffers of an anchor's kernel, in parameter order: each input's (the slot `replaced` gives
// it, else the values its prologue reads, else the input itself), the epilogue's inputs, the
// output viewed as the anchor's own buffer when the epilogue keeps partial results there, and the
// output.
std::vector<int> anchor_buffers(const Node& anchor, const std::vector<Prologue>& prologues,
                                const Epilogue* epilogue, int output,
                                const std::map<int, int>& replaced = {});

// The fallback when an anchor's kernel cannot take its prologues: the group without them, and
// one injective group per anchor input they computed.
std::pair<FusedGroup, std::vector<FusedGroup>> split_prologues(const Graph& g,
                                                               const FusedGroup& group);

// The fallback when an anchor's kernel cannot take its epilogue: the group with the longest
// shorter epilogue that still has one value read outside it (possibly the anchor alone), and the
// members it drops, as an injective group of their own reading its output.
std::pair<FusedGroup, FusedGroup> shorten_epilogue(const Graph& g, const FusedGroup& group);

}  // namespace loom::fusion
