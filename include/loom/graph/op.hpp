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
#include "loom/te/tensor.hpp"

namespace loom {

struct TensorType {
  Shape shape;
  DType dtype;
  std::string to_string() const { return dtype.to_string() + shape_to_string(shape); }
};

// Base of every operator's typed attributes; ops read their own subclass with attrs_as<T>().
struct OpAttrs {
  virtual ~OpAttrs() = default;
  // Canonical text, part of kernel names in dumps and of cache keys.
  virtual std::string to_string() const = 0;
};

struct NoAttrs final : OpAttrs {
  std::string to_string() const override { return ""; }
};

template <typename T>
const T& attrs_as(const OpAttrs& a) {
  return dynamic_cast<const T&>(a);
}

struct OpDef {
  std::string name;
  // Injective: each output element depends on at most one element of each input (elementwise,
  // broadcast, reshape, transpose). Non-injective ops are fusion anchors.
  bool injective = false;
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
