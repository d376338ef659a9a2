// CUDA schedule templates of row-wise operators (private to lib/ops): sum/mean/max/... over
// trailing axes, softmax over the last axis and layer_norm, one row per warp or per block.
#pragma once

#include "loom/graph/op.hpp"
#include "loom/ir/expr.hpp"

namespace loom::ops {

// kind kSum with mean=true is mean; any kind (sum, prod, max, min) otherwise.
ScheduleTemplate row_reduce_cuda_template(ir::ReduceKind kind, bool mean);
ScheduleTemplate softmax_cuda_template(bool log = false);  // log: log_softmax
ScheduleTemplate arg_reduce_cuda_template(bool is_max);    // argmax, or argmin
// softmax, log_softmax, argmax or argmin over an axis that is not the last: a thread per column.
ScheduleTemplate axis_columns_cuda_template(const std::string& op);
ScheduleTemplate layer_norm_cuda_template();

}  // namespace loom::ops
