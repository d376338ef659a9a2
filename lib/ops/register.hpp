// Registration of loom's built-in operator families into an OpRegistry (private to lib/).
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

void register_attention_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_conv_transpose_ops(OpRegistry& r);
void register_elementwise_ops(OpRegistry& r);
void register_layout_ops(OpRegistry& r);
void register_matmul_ops(OpRegistry& r);
void register_norm_ops(OpRegistry& r);
void register_pool_ops(OpRegistry& r);
void register_reduce_ops(OpRegistry& r);
void register_resize_ops(OpRegistry& r);
void register_shape_ops(OpRegistry& r);
// concat, slice, gather, pad (data movement)
void register_movement_ops(OpRegistry& r);

inline void register_builtin_ops(OpRegistry& r) {
  register_attention_ops(r);
  register_conv_ops(r);
  register_conv_transpose_ops(r);
  register_elementwise_ops(r);
  register_layout_ops(r);
  register_matmul_ops(r);
  register_norm_ops(r);
  register_pool_ops(r);
  register_reduce_ops(r);
  register_resize_ops(r);
  register_shape_ops(r);
  register_movement_ops(r);
}

}  // namespace loom::ops
