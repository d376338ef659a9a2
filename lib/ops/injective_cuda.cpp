// Injective tasks on CUDA GPUs: a grid-stride loop over the flat output elements, each element's
// value the output's body with its injective producers inlined.

#include "loom/ops/injective_cuda.hpp"

#include <algorithm>
#include <set>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "loom/te/inline.hpp"
#include "ops/cuda_common.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {

tune::Space injective_cuda_space(const Target& target) {
  const GpuProperties p = gpu_properties(target);
  std::vector<int64_t> threads;
  for (int64_t t = 4 * p.warp_size; t <= p.max_threads_per_block; t *= 2) threads.push_back(t);
  tune::Space s;
  s.param("threads", threads).param("vector", {1, 2, 4}).param("blocks_per_sm", {2, 4, 8, 16});
  // An SM holds at most 2048 threads (sm_80 and sm_90); more blocks only queue.
  s.rule("resident blocks fit an SM's threads",
         [](const tune::Config& c) { return c["threads"] * c["blocks_per_sm"] <= 2048; });
  s.prefer("256 threads", [](const tune::Config& c) { return c["threads"] == 256; });
  s.default_config(tune::Config({{"threads", 256}, {"vector", 4}, {"blocks_per_sm", 8}}));
  return s;
}

absl::StatusOr<ir::Func> injective_cuda_kernel(const te::Task& task, const Target& target,
                                               const tune::Config& config) {
  if (task.outputs().empty()) return absl::InvalidArgumentError("task has no outputs");
  const std::vector<ir::Expr>& shape = task.outputs()[0].shape();
  std::vector<int64_t> extents;
  for (const ir::Expr& e : shape) {
    std::optional<int64_t> n = ir::as_const_int(e);
    if (!n)
      return absl::InvalidArgumentError(str_cat("injective CUDA kernel for task '", task.name(),
                                                "' needs static shapes; ", ir::to_string(e),
                                                " is symbolic"));
    extents.push_back(*n);
  }
  int64_t total = 1;
  for (int64_t n : extents) total *= n;
  std::set<const ir::BufferNode*> inputs;
  for (const te::Tensor& t : task.inputs()) inputs.insert(t->buffer.node().get());
  for (const te::Tensor& out : task.outputs()) {
    if (out.is_placeholder() || out.shape().size() != shape.size())
      return absl::InvalidArgumentError(str_cat("output '", out.name(), "' of task '", task.name(),
                                                "' is not a compute tensor of the first output's "
                                                "rank"));
    for (size_t d = 0; d < shape.size(); ++d)
      if (ir::as_const_int(out.shape()[d]) != extents[d])
        return absl::InvalidArgumentError(
            str_cat("outputs of task '", task.name(), "' differ in shape"));
  }

  const GpuProperties p = gpu_properties(target);
  const int64_t threads = config["threads"], vector = config["vector"];
  const int64_t chunks = std::max<int64_t>(ceil_div(total, vector), 1);
  const int64_t blocks =
      std::min(ceil_div(chunks, threads), int64_t{p.sm_count} * config["blocks_per_sm"]);
  const int64_t workers = blocks * threads;
  // The mapping's outer level is a serial loop, its inner repeat unrolled.
  const int64_t steps = ceil_div(chunks, workers);
  auto outer = schedule::repeat(steps);
  auto inner = schedule::spatial(workers) * schedule::repeat(vector);
  LOOM_RETURN_IF_ERROR(outer.status());
  LOOM_RETURN_IF_ERROR(inner.status());

  ir::Var block("block"), tid("tid");
  absl::Status status;
  auto element = [&](const std::vector<ir::Expr>& flat) {
    // The element's index, unravelled row-major.
    std::vector<ir::Expr> index(extents.size());
    int64_t stride = 1;
    for (size_t d = extents.size(); d-- > 0;) {
      ir::Expr i = stride == 1 ? flat[0] : flat[0] / ir::Expr(stride);
      index[d] = d == 0 ? i : i % ir::Expr(extents[d]);
      stride *= extents[d];
    }
    std::vector<ir::Stmt> stores;
    for (const te::Tensor& out : task.outputs()) {
      ir::Expr value = te::value_at(out, index);
      ir::for_each_expr(value, [&](const ir::Expr& e) {
        const auto* load = e.as<ir::Load>();
        if (status.ok() && (e.is<ir::Reduce>() || (load && !inputs.count(load->buffer.get()))))
          status = absl::InvalidArgumentError(
              str_cat("task '", task.name(), "' is not injective: output '", out.name(), "' needs ",
                      e.is<ir::Reduce>() ? "a reduction" : "an intermediate stage"));
      });
      stores.push_back(ir::Store::make(out->buffer, value, index));
    }
    ir::Stmt s = ir::Seq::make(std::move(stores));
    return total % (workers * vector) ? ir::IfThenElse::make(flat[0] < total, s) : s;
  };
  ir::Stmt per_thread = outer->on(ir::Expr(int64_t{0}), [&](const std::vector<ir::Expr>& step) {
    return inner->on(
        block * threads + tid,
        [&](const std::vector<ir::Expr>& within) {
          return element({ir::simplify(step[0] * (workers * vector) + within[0])});
        },
        ir::ForKind::kUnrolled);
  });
  LOOM_RETURN_IF_ERROR(status);

  ir::Func f;
  f.name = task.name();
  for (const te::Tensor& t : task.inputs()) f.params.push_back(t->buffer);
  for (const te::Tensor& t : task.outputs()) f.params.push_back(t->buffer);
  f.body = gpu_launch(block, blocks, tid, threads, per_thread);
  return f;
}

}  // namespace loom::ops
