// Task: the unit that gets scheduled and compiled into one kernel: input placeholders, output
// tensors and every compute tensor between them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/te/tensor.hpp"

namespace loom::te {

class Task {
 public:
  // Checks that every tensor the outputs depend on is a compute tensor or one of inputs.
  static absl::StatusOr<Task> make(std::string name, std::vector<Tensor> inputs,
                                   std::vector<Tensor> outputs);

  const std::string& name() const { return name_; }
  const std::vector<Tensor>& inputs() const { return inputs_; }
  const std::vector<Tensor>& outputs() const { return outputs_; }
  // Compute tensors in dependency order (producers first); outputs included.
  const std::vector<Tensor>& computes() const { return computes_; }
  // Symbolic extents (i64 variables) appearing in the shapes of inputs and outputs.
  const std::vector<ir::Var>& shape_vars() const { return shape_vars_; }
  bool is_output(const Tensor& t) const;

  // Canonical, human-readable text of the computation (names of index variables included).
  std::string to_string() const;

 private:
  std::string name_;
  std::vector<Tensor> inputs_, outputs_, computes_;
  std::vector<ir::Var> shape_vars_;
};

}  // namespace loom::te
