// Hand-encoded ONNX protobuf bytes for tests and fuzz seeds: small models, valid or deliberately
// hostile (huge dims, cycles, missing inputs, attributes of the wrong type), written field by
// field so that a test can say exactly what is wrong without linking protobuf or ONNX.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::testing::onnx_bytes {

// Protobuf wire format: a key is (field << 3 | wire type); 0 varint, 2 length-delimited, 5 fixed32.
inline std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    out.push_back(static_cast<char>(byte | (v ? 0x80 : 0)));
  } while (v);
  return out;
}
inline std::string int_field(int field, int64_t v) {
  return varint(static_cast<uint64_t>(field) << 3) + varint(static_cast<uint64_t>(v));
}
inline std::string bytes_field(int field, const std::string& bytes) {
  return varint(static_cast<uint64_t>(field) << 3 | 2) + varint(bytes.size()) + bytes;
}
inline std::string float_field(int field, float v) {
  std::string out = varint(static_cast<uint64_t>(field) << 3 | 5);
  out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

// onnx.proto's element types and attribute types used here.
enum ElemType { kFloat = 1, kInt64 = 7 };
enum AttrType { kAttrFloat = 1, kAttrInt = 2, kAttrString = 3, kAttrTensor = 4, kAttrInts = 7 };

// TensorProto: dims 1, data_type 2, float_data 4 (packed), int64_data 7, name 8, raw_data 9.
inline std::string tensor(const std::string& name, std::vector<int64_t> dims, int elem_type,
                          const std::string& raw_data) {
  std::string t;
  for (int64_t d : dims) t += int_field(1, d);
  t += int_field(2, elem_type) + bytes_field(8, name) + bytes_field(9, raw_data);
  return t;
}
inline std::string float_tensor(const std::string& name, std::vector<int64_t> dims,
                                const std::vector<float>& values) {
  std::string raw(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return tensor(name, std::move(dims), kFloat, raw);
}

// AttributeProto: name 1, f 2, i 3, s 4, t 5, ints 8, type 20.
inline std::string attr_int(const std::string& name, int64_t v) {
  return bytes_field(1, name) + int_field(3, v) + int_field(20, kAttrInt);
}
inline std::string attr_float(const std::string& name, float v) {
  return bytes_field(1, name) + float_field(2, v) + int_field(20, kAttrFloat);
}
inline std::string attr_string(const std::string& name, const std::string& v) {
  return bytes_field(1, name) + bytes_field(4, v) + int_field(20, kAttrString);
}
inline std::string attr_ints(const std::string& name, const std::vector<int64_t>& v) {
  std::string a = bytes_field(1, name);
  for (int64_t x : v) a += int_field(8, x);
  return a + int_field(20, kAttrInts);
}
inline std::string attr_tensor(const std::string& name, const std::string& tensor_proto) {
  return bytes_field(1, name) + bytes_field(5, tensor_proto) + int_field(20, kAttrTensor);
}

// NodeProto: input 1, output 2, name 3, op_type 4, attribute 5.
inline std::string node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs,
                        const std::vector<std::string>& attributes = {}) {
  std::string n;
  for (const std::string& i : inputs) n += bytes_field(1, i);
  for (const std::string& o : outputs) n += bytes_field(2, o);
  n += bytes_field(3, op + "_node") + bytes_field(4, op);
  for (const std::string& a : attributes) n += bytes_field(5, a);
  return n;
}

// ValueInfoProto name 1, type 2; TypeProto tensor_type 1; Tensor elem_type 1, shape 2;
// TensorShapeProto dim 1; Dimension dim_value 1, dim_param 2 (a dim below 0 is written as a
// dim_param named "n").
inline std::string value_info(const std::string& name, const std::vector<int64_t>& dims,
                              int elem_type = kFloat) {
  std::string shape;
  for (int64_t d : dims) shape += bytes_field(1, d >= 0 ? int_field(1, d) : bytes_field(2, "n"));
  std::string tensor_type = int_field(1, elem_type) + bytes_field(2, shape);
  return bytes_field(1, name) + bytes_field(2, bytes_field(1, tensor_type));
}

// GraphProto: node 1, name 2, initializer 5, input 11, output 12; ModelProto: ir_version 1,
// graph 7, opset_import 8 (OperatorSetIdProto: domain 1, version 2).
struct Model {
  std::vector<std::string> nodes, initializers, inputs, outputs;
  int64_t opset = 13;

  std::string bytes() const {
    std::string g;
    for (const std::string& n : nodes) g += bytes_field(1, n);
    g += bytes_field(2, "test_graph");
    for (const std::string& t : initializers) g += bytes_field(5, t);
    for (const std::string& i : inputs) g += bytes_field(11, i);
    for (const std::string& o : outputs) g += bytes_field(12, o);
    return int_field(1, 8) + bytes_field(7, g) + bytes_field(8, bytes_field(1, "") + int_field(2, opset));
  }
};

}  // namespace loom::testing::onnx_bytes
