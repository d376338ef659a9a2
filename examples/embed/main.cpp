// An engine that embeds loom: builds relu(x W + b), compiles it for this CPU, runs it and checks
// the result against values worked out by hand. Built against the installed package in CI.
#include <cmath>
#include <cstdio>
#include <string>

#include "loom/loom.hpp"
#include "loom/version.hpp"

int fail(const std::string& why) {
  std::fprintf(stderr, "embed: %s\n", why.c_str());
  return 1;
}

int main() {
  const loom::DType f32 = loom::DType::f32();
  loom::Graph g;
  loom::Tensor x = g.input("x", {loom::Dim("batch"), 3});
  loom::Tensor w =
      g.constant("w", loom::NDArray::from_vector<float>(f32, {3, 2}, {1, 0, 0, 1, 1, -1}));
  loom::Tensor b = g.constant("b", loom::NDArray::from_vector<float>(f32, {2}, {0.5f, 1.5f}));
  g.output(x.matmul(w).add(b).relu());

  absl::StatusOr<loom::CompiledGraph> compiled = loom::Compiler().compile(g);
  if (!compiled.ok()) return fail(compiled.status().ToString());
  loom::NDArray input = loom::NDArray::from_vector<float>(f32, {2, 3}, {1, 2, 3, -1, 0, 2});
  absl::StatusOr<std::vector<loom::NDArray>> out = compiled->run({input});
  if (!out.ok()) return fail(out.status().ToString());

  // Row 0: [1 + 3, 2 - 3] + b = [4.5, 0.5]; row 1: [-1 + 2, -2] + b = [1.5, -0.5], relu -> 0.
  const float expected[] = {4.5f, 0.5f, 1.5f, 0.0f};
  for (int i = 0; i < 4; ++i) {
    const float got = (*out)[0].data_as<float>()[i];
    if (std::abs(got - expected[i]) > 1e-6f)
      return fail("element " + std::to_string(i) + " is " + std::to_string(got) + ", not " +
                  std::to_string(expected[i]));
  }
  std::printf("loom %s: relu(x W + b) matches\n", LOOM_VERSION_STRING);
  return 0;
}
