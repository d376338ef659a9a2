// The umbrella header an inference engine includes: graph API, compiler, runtime.
#pragma once

#include "loom/compiler.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/ndarray.hpp"
#include "loom/core/shape.hpp"
#include "loom/core/status.hpp"
#include "loom/core/target.hpp"
#include "loom/graph/graph.hpp"
#include "loom/graph/op.hpp"
#include "loom/runtime/compiled_graph.hpp"
#include "loom/runtime/stats.hpp"
