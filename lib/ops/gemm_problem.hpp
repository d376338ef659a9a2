// A matmul node seen as independent GEMMs (private to lib/ops): what the CPU and CUDA matmul
// templates (matmul_cpu.cpp, matmul_cuda.cpp) agree on before they schedule.
#pragma once

#include <algorithm>
#include <optional>

#include "loom/graph/op.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {

// A matmul node seen as G independent GEMMs C[g] (M x N) = A[g] (M x K) * B[g or 0] (K x N).
// Batch dims of A fold into M when B has none; otherwise both must have the same batch dims.
struct GemmProblem {
  int64_t G = 1, M = 0, N = 0, K = 0;
  bool b_batched = false;
};

// Both inputs must be of type `element`.
inline std::optional<GemmProblem> gemm_problem(const TemplateContext& ctx,
                                               DType element = DType::f32()) {
  if (ctx.inputs.size() != 2) return std::nullopt;
  const Shape& a = ctx.inputs[0].shape;
  const Shape& b = ctx.inputs[1].shape;
  if (ctx.inputs[0].dtype != element || ctx.inputs[1].dtype != element) return std::nullopt;
  auto pa = static_product(a, 0, a.size() - 2), pb = static_product(b, 0, b.size() - 2);
  auto m = static_product(a, a.size() - 2, a.size() - 1),
       k = static_product(a, a.size() - 1, a.size());
  auto n = static_product(b, b.size() - 1, b.size());
  // Empty problems have nothing to tile, and an empty K (zeros out) no K block: the default
  // schedule runs them.
  if (!pa || !pb || !m || !k || !n || *m == 0 || *n == 0 || *k == 0 || *pa == 0 || *pb == 0)
    return std::nullopt;
  GemmProblem p;
  p.N = *n;
  p.K = *k;
  if (*pb == 1) {
    p.G = 1;
    p.M = *pa * *m;
    return p;
  }
  if (a.size() != b.size() || !std::equal(a.begin(), a.end() - 2, b.begin())) return std::nullopt;
  p.G = *pa;
  p.M = *m;
  p.b_batched = true;
  return p;
}

}  // namespace loom::ops
