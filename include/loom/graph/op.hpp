// Operator definitions: each operator is registered once with its attribute type, its
// shape/dtype rule and its compute definition. Users register their own operators the same way.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/dtype.hpp"
#include "loom/core/shape.hpp"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/layout/layout.hpp"
#include "loom/te/tensor.hpp"
#include "loom/tune/space.hpp"

namespace loom {

struct TensorType {
  Shape shape;
  DType dtype;
  // How the values are stored: row-major (empty) or the row-major shape followed by layout
  // primitives (loom/layout/layout.hpp). Shape rules give row-major outputs, but for
  // layout_transform; the layout assignment (loom/graph/layouts.hpp) stores other values in
  // other layouts.
  std::vector<LayoutStep> layout;
  std::string to_string() const {
    return dtype.to_string() + shape_to_string(shape) + steps_to_string(layout);
  }
};

// Base of every operator's typed attributes; ops read their own subclass with attrs_as<T>().
struct OpAttrs {
  virtual ~OpAttrs() = default;
  // Canonical text, part of kernel names in dumps and of cache keys.
  virtual std::string to_string() const = 0;
  // These attributes with symbolic dims bound to values, for a graph specialised to concrete
  // shapes; null when they hold no symbolic dims (the default). Attributes that name dims
  // (a reshape's target shape) override it.
  virtual std::shared_ptr<const OpAttrs> bind_dims(const DimBindings& /*dims*/) const {
    return nullptr;
  }
};

struct NoAttrs final : OpAttrs {
  std::string to_string() const override { return ""; }
};

template <typename T>
const T& attrs_as(const OpAttrs& a) {
  return dynamic_cast<const T&>(a);
}

// What a schedule template is asked to schedule: one operator node with static shapes.
struct TemplateContext {
  Target target;
  std::string name;                 // kernel name
  std::vector<TensorType> inputs;   // static shapes
  TensorType output;
  const OpAttrs* attrs = nullptr;
  std::vector<bool> constant_inputs;  // inputs known at compile time (weights)
};

// A scheduled kernel. Its buffer parameters are the operator's inputs in order, then the output;
// an input listed in `packed` is passed in the packed form its pack func produces instead.
struct ScheduledKernel {
  ir::Func func;
  struct Packed {
    int input = 0;
    ir::Func pack;                // params: the input, the packed buffer
    std::vector<int64_t> shape;   // packed buffer shape (same dtype)
  };
  // Only constant inputs are packed this way: the compiler runs pack once at compile time.
  std::vector<Packed> packed;
};

// The layouts a template can read its inputs in and write its output in, offered to the
// layout assignment (ALT's joint layout and loop tuning). Row-major (empty steps) is always one.
struct LayoutOptions {
  std::vector<std::vector<std::vector<LayoutStep>>> inputs;  // per input; empty: row-major only
  std::vector<std::vector<LayoutStep>> output;
};

// A schedule template: a fast implementation of an operator on one kind of target, with its
// hardware-centric space. Ops without an applicable template use the default schedule.
struct ScheduleTemplate {
  std::string name;
  Target::Kind target_kind = Target::Kind::kCpu;
  // Whether the template reads and writes its tensors through their layouts (TemplateContext's
  // types carry them), checking in `applies` which ones it takes. Others only ever see
  // row-major tensors.
  bool any_layout = false;
  // The layouts to try for a node, given its row-major context; null: none. With any_layout it
  // is asked even when `applies` refuses the row-major node (a template may take a node only in
  // blocked layouts), so it must offer nothing for nodes it cannot take in any layout.
  std::function<LayoutOptions(const TemplateContext&)> layouts;
  std::function<bool(const TemplateContext&)> applies;
  // The same space for every input size: its choices come from the target's hardware.
  std::function<tune::Space(const TemplateContext&)> space;
  std::function<absl::StatusOr<ScheduledKernel>(const TemplateContext&, const tune::Config&)>
      build;
};

struct OpDef {
  std::string name;
  // Injective: each output element depends on at most one element of each input (elementwise,
  // broadcast, reshape, transpose). Non-injective ops are fusion anchors.
  bool injective = false;
  // The output holds the (single) input's elements in the same row-major order, only the shape
  // differs (reshape, flatten, squeeze, unsqueeze): fusion maps indices through it.
  bool reshape = false;
  // Each output element is computed from the inputs' elements at the same (broadcast) logical
  // index: the operator is indifferent to layouts, so the layout assignment stores its output in
  // the layout of its input (elementwise arithmetic, activations, casts).
  bool elementwise = false;
  // Input 0 may be read through any layout and the output stored in the same one, where it
  // fits the output's shape (pooling: windows over H and W leave N and C, which the channel
  // layouts split and reorder, as they are).
  bool follows_input_layout = false;
  // The shape rule sets the output's layout (layout_transform); every other operator's output
  // is row-major, whatever layout its inputs have.
  bool sets_layout = false;
  // Expected input count, or -1 for any.
  int num_inputs = -1;
  // The OpAttrs subclass the operator reads (checked by Graph::apply); null means NoAttrs.
  const std::type_info* attrs_type = nullptr;
  // Output type from input types; a clear error for bad input (shape, dtype, rank).
  std::function<absl::StatusOr<TensorType>(const std::vector<TensorType>& inputs,
                                           const OpAttrs& attrs)>
      infer;
  // Compute definition of the output from te tensors of the inputs. out_shape is the inferred
  // shape as index expressions (symbolic dims are i64 variables).
  std::function<te::Tensor(const std::vector<te::Tensor>& inputs, const OpAttrs& attrs,
                           const std::vector<ir::Expr>& out_shape, const std::string& name)>
      compute;
  // Schedule templates, tried in order; the first that applies to the node and target is used.
  std::vector<ScheduleTemplate> templates;
};

class OpRegistry {
 public:
  // The process-wide registry, with loom's built-in operators already registered.
  static OpRegistry& global();
  // Fails if an operator of that name exists.
  absl::Status add(OpDef def);
  const OpDef* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const OpDef>> ops_;
};

}  // namespace loom
