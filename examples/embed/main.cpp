// An engine that embeds loom: builds relu(x W + b), compiles it for this CPU, runs it and checks
// the result against values worked out by hand. Built against the installed package in CI.
#include <cmath>
#include <cstdio>

#include "loom/loom.hpp"
#include "loom/version.hpp"

int main() {
  loom::Graph g;
  loom::Tensor x = g.input("x", {loom::Dim("batch"), 3});
  loom::Tensor w = g.constant("w", loom::NDArray::from_vector<float>(
                                       loom::DType::f32(), {3, 2}, {1, 0, 0, 1, 1, -1}));
  loom::Tensor b = g.constant("b", loom::NDArray::from_vector<float>(loom::DType::f32(), {2}, {0.5f, 1.5f}));
  g.output(x.matmul(w).add(b).relu());

  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g);
  if (!compiled.ok()) return std::fprintf(stderr, "%s\n", compiled.status().ToString().c_str()), 1;
  loom::NDArray input = loom::NDArray::from_vector<float>(loom::DType::f32(), {2, 3}, {1, 2, 3, -1, 0, 2});
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run({input});
  if (!out.ok()) return std::fprintf(stderr, "%s\n", out.status().ToString().c_str()), 1;

  // Row 0: [1 + 3, 2 - 3] + b = [4.5, 0.5]; row 1: [-1 + 2, -2] + b = [1.5, -0.5], relu -> 0.
  const float expected[] = {4.5f, 0.5f, 1.5f, 0.0f};
  for (int i = 0; i < 4; ++i)
    if (std::abs((*out)[0].data_as<float>()[i] - expected[i]) > 1e-6f)
      return std::fprintf(stderr, "element %d: got %g, expected %g\n", i,
                          (*out)[0].data_as<float>()[i], expected[i]), 1;
  std::printf("loom %s: relu(x W + b) matches\n", LOOM_VERSION_STRING);
  return 0;
}
