// A conv2d node's sizes as the CUDA conv templates (conv_cuda.cpp, tensor_core_cuda.cpp) read
// them (private to lib/ops): NCHW input, OIHW weights, static shapes.
#pragma once

#include <optional>

#include "loom/graph/op.hpp"
#include "loom/ops/attrs.hpp"
#include "ops/template_util.hpp"

namespace loom::ops {

struct ConvProblem {
  int64_t n, c, h, w, o, cg, kh, kw, oh, ow;
  Conv2dAttrs attrs;
  bool depthwise() const { return attrs.groups > 1 && cg == 1 && o == attrs.groups; }
  // 1x1, stride 1, no padding: each output pixel reads its own input pixel.
  bool pointwise() const {
    return kh == 1 && kw == 1 && attrs.stride_h == 1 && attrs.stride_w == 1 && attrs.pad_top == 0 &&
           attrs.pad_left == 0 && oh == h && ow == w;
  }
};

// The problem when the node is a conv2d with input, weights and output all of type `element`.
inline std::optional<ConvProblem> conv_problem(const TemplateContext& ctx,
                                               DType element = DType::f32()) {
  if (ctx.inputs.size() != 2 || !ctx.attrs || ctx.output.dtype != element) return std::nullopt;
  const auto* attrs = dynamic_cast<const Conv2dAttrs*>(ctx.attrs);
  if (!attrs) return std::nullopt;
  const TensorType &x = ctx.inputs[0], &w = ctx.inputs[1];
  if (x.dtype != element || w.dtype != element || x.shape.size() != 4 || w.shape.size() != 4 ||
      !is_static(x.shape) || !is_static(w.shape) || !is_static(ctx.output.shape) ||
      ctx.output.shape.size() != 4)
    return std::nullopt;
  ConvProblem p{x.shape[0].value(),
                x.shape[1].value(),
                x.shape[2].value(),
                x.shape[3].value(),
                w.shape[0].value(),
                w.shape[1].value(),
                w.shape[2].value(),
                w.shape[3].value(),
                ctx.output.shape[2].value(),
                ctx.output.shape[3].value(),
                *attrs};
  if (p.n < 1 || p.oh < 1 || p.ow < 1 || p.o < 1) return std::nullopt;
  return p;
}

}  // namespace loom::ops
