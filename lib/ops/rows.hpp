// Row-wise operators seen as R rows of L contiguous f32 elements (private to lib/ops): what the
// CPU and CUDA row templates (rows_cpu.cpp, rows_cuda.cpp) agree on before they schedule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/graph/op.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {

// An operator's input as rows: `rows` rows of `len` contiguous elements of type dtype.
struct Rows {
  int64_t rows = 0, len = 0;
  DType dtype = DType::f32();
};

// x as rows of its dims from axis on; nullopt unless x is static, not empty and f32 (any float
// type when any_float: f16 and bf16 rows are computed in f32 by the CUDA templates).
std::optional<Rows> rows_of(const TensorType& x, int axis, bool any_float = false);
// The rows of a sum/mean/max/... node whose reduced axes are exactly the trailing dims. As for
// the next two, the output has the input's type, f32 unless any_float.
std::optional<Rows> reduce_rows(const TemplateContext& ctx, bool any_float = false);
// The rows of a softmax node over its last axis.
std::optional<Rows> softmax_rows(const TemplateContext& ctx, bool any_float = false);
// The rows of a layer_norm node (gamma and beta one row each, of the input's type).
std::optional<Rows> layer_norm_rows(const TemplateContext& ctx, bool any_float = false);


}  // namespace loom::ops
