// Writes small ONNX models (one per operator family the importer converts) as fuzz seeds.

#include <cstdio>
#include <fstream>
#include <string>

#include "onnx_bytes.hpp"

namespace ob = loom::testing::onnx_bytes;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  auto model = [](std::vector<std::string> nodes, std::vector<std::string> inits = {}) {
    ob::Model m;
    m.inputs = {ob::value_info("x", {1, 2, 5, 5})};
    m.nodes = std::move(nodes);
    m.initializers = std::move(inits);
    m.outputs = {ob::value_info("y", {})};
    return m.bytes();
  };
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"relu", model({ob::node("Relu", {"x"}, {"y"})})},
      {"softmax", model({ob::node("Softmax", {"x"}, {"y"}, {ob::attr_int("axis", 1)})})},
      {"conv", model({ob::node("Conv", {"x", "w"}, {"y"},
                               {ob::attr_ints("pads", {1, 1, 1, 1}), ob::attr_ints("strides", {2, 2})})},
                     {ob::float_tensor("w", {3, 2, 3, 3}, std::vector<float>(54, 0.5f))})},
      {"pool", model({ob::node("MaxPool", {"x"}, {"y"},
                               {ob::attr_ints("kernel_shape", {3, 3}), ob::attr_ints("strides", {2, 2})})})},
      {"transpose_reshape",
       model({ob::node("Transpose", {"x"}, {"t"}, {ob::attr_ints("perm", {0, 2, 3, 1})}),
              ob::node("Reshape", {"t", "s"}, {"y"})},
             {ob::tensor("s", {2}, ob::kInt64, std::string("\x05\0\0\0\0\0\0\0\x0a\0\0\0\0\0\0\0", 16))})},
      {"matmul_add", model({ob::node("MatMul", {"x", "w"}, {"m"}), ob::node("Add", {"m", "b"}, {"y"})},
                           {ob::float_tensor("w", {5, 3}, std::vector<float>(15, 0.25f)),
                            ob::float_tensor("b", {3}, {1, 2, 3})})},
      {"constant_concat",
       model({ob::node("Constant", {}, {"c"}, {ob::attr_tensor("value", ob::float_tensor("", {1, 2, 5, 5}, std::vector<float>(50, 1)))}),
              ob::node("Concat", {"x", "c"}, {"y"}, {ob::attr_int("axis", 1)})})},
      {"reduce_gather",
       model({ob::node("ReduceMean", {"x"}, {"r"}, {ob::attr_ints("axes", {2, 3}), ob::attr_int("keepdims", 0)}),
              ob::node("Gather", {"r", "i"}, {"y"}, {ob::attr_int("axis", 1)})},
             {ob::tensor("i", {2}, ob::kInt64, std::string("\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16))})},
  };
  for (const auto& [name, bytes] : seeds) {
    std::ofstream out(std::string(argv[1]) + "/" + name + ".onnx", std::ios::binary);
    out << bytes;
  }
  return 0;
}
