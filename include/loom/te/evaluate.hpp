// The reference evaluator: interprets a Task's tensor expressions point by point in double
// precision, rounding to each tensor's dtype. Slow and simple, it is the ground truth in tests.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/ndarray.hpp"
#include "loom/te/task.hpp"

namespace loom::te {

// inputs follow task.inputs(); shape variables are inferred from the input shapes.
absl::StatusOr<std::vector<NDArray>> evaluate(const Task& task, const std::vector<NDArray>& inputs);

}  // namespace loom::te
