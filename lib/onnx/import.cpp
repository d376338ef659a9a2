// ONNX import: ModelProto -> Graph. Each supported op_type has a converter that reads the node's
// attributes and inputs and applies loom operators; everything unsupported is reported with the
// node's name and op. The only translation unit that includes protobuf and ONNX headers.

#include "loom/onnx/onnx.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "loom/core/status.hpp"
#include "onnx/onnx_pb.h"

namespace loom::onnx {
namespace {

namespace pb = ::onnx;

absl::StatusOr<DType> dtype_of(int elem_type) {
  switch (elem_type) {
    case pb::TensorProto::FLOAT:
      return DType::f32();
    case pb::TensorProto::FLOAT16:
      return DType::f16();
    case pb::TensorProto::BFLOAT16:
      return DType::bf16();
    case pb::TensorProto::INT8:
      return DType::i8();
    case pb::TensorProto::INT32:
      return DType::i32();
    case pb::TensorProto::INT64:
      return DType::i64();
    case pb::TensorProto::BOOL:
      return DType::boolean();
    default:
      return absl::UnimplementedError(
          str_cat("ONNX element type ", pb::TensorProto::DataType_Name(
                                            static_cast<pb::TensorProto::DataType>(elem_type)),
                  " (", elem_type, ") is not supported"));
  }
}

// The typed repeated field of a TensorProto that holds its values when raw_data is absent.
template <typename Field>
absl::Status copy_field(const Field& field, NDArray& out) {
  if (field.size() != out.numel())
    return absl::DataLossError(str_cat("tensor holds ", field.size(), " values for shape ",
                                       shape_to_string(out.shape())));
  const bool int8 = out.dtype() == DType::i8();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const auto v = field.Get(static_cast<int>(i));
    // INT8 values travel in int32_data: one that does not fit is a broken file, not a value.
    if (int8 && (v < -128 || v > 127))
      return absl::InvalidArgumentError(
          str_cat("tensor of INT8 holds the value ", v, " at element ", i, ", outside [-128, 127]"));
    out.set(i, static_cast<double>(v));
  }
  return absl::OkStatus();
}

// How many values the typed repeated field that holds t's data has (when raw_data is absent).
int64_t stored_values(const pb::TensorProto& t) {
  switch (t.data_type()) {
    case pb::TensorProto::FLOAT: return t.float_data_size();
    case pb::TensorProto::INT64: return t.int64_data_size();
    default: return t.int32_data_size();  // FLOAT16, BFLOAT16, INT8, INT32, BOOL
  }
}

absl::StatusOr<NDArray> to_ndarray(const pb::TensorProto& t) {
  if (t.data_location() == pb::TensorProto::EXTERNAL)
    return absl::UnimplementedError("tensor '" + t.name() + "' keeps its data in an external file");
  LOOM_ASSIGN_OR_RETURN(DType dtype, dtype_of(t.data_type()));
  std::vector<int64_t> shape(t.dims().begin(), t.dims().end());
  // A file may declare any dims: the size is checked against the data the file really holds
  // before anything is allocated, so a few bytes can never ask for petabytes (or overflow).
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::DataLossError("tensor '" + t.name() + "' has a negative dim");
    if (d > 0 && numel > std::numeric_limits<int64_t>::max() / dtype.bytes() / d)
      return absl::DataLossError(str_cat("tensor '", t.name(), "' declares dims ",
                                         shape_to_string(shape), ", more than 2^63 bytes"));
    numel *= d;
  }
  const int64_t nbytes = numel * dtype.bytes();
  if (t.has_raw_data()) {
    if (static_cast<int64_t>(t.raw_data().size()) != nbytes)
      return absl::DataLossError(str_cat("tensor '", t.name(), "' has ", t.raw_data().size(),
                                         " bytes of data for ", dtype.to_string(),
                                         shape_to_string(shape), " (", nbytes, " bytes)"));
    NDArray out(dtype, shape);
    if (nbytes > 0) std::memcpy(out.data(), t.raw_data().data(), static_cast<size_t>(nbytes));
    return out;
  }
  if (stored_values(t) != numel)
    return absl::DataLossError(str_cat("tensor '", t.name(), "' holds ", stored_values(t),
                                       " values for shape ", shape_to_string(shape)));
  NDArray out(dtype, shape);
  absl::Status s;
  switch (t.data_type()) {
    case pb::TensorProto::FLOAT:
      s = copy_field(t.float_data(), out);
      break;
    case pb::TensorProto::INT64:
      s = copy_field(t.int64_data(), out);
      break;
    case pb::TensorProto::FLOAT16:
    case pb::TensorProto::BFLOAT16: {
      // Stored as raw 16-bit patterns in int32_data.
      if (t.int32_data().size() != out.numel()) {
        s = absl::DataLossError("tensor '" + t.name() + "' has the wrong number of values");
        break;
      }
      auto* bits = out.data_as<uint16_t>();
      for (int64_t i = 0; i < out.numel(); ++i)
        bits[i] = static_cast<uint16_t>(t.int32_data(static_cast<int>(i)));
      break;
    }
    default:  // INT8, INT32, BOOL live in int32_data
      s = copy_field(t.int32_data(), out);
      break;
  }
  if (!s.ok()) return absl::Status(s.code(), "tensor '" + t.name() + "': " + std::string(s.message()));
  return out;
}

// ---- Conversion -------------------------------------------------------------------------------

struct Converter;

// State of one import: values by ONNX name, and which of them are compile-time constants.
class Importer {
 public:
  Importer(Graph& g, int64_t opset) : g_(g), opset_(opset) {}

  Graph& graph() { return g_; }
  int64_t opset() const { return opset_; }

  void define(const std::string& name, Tensor t, std::optional<NDArray> value = std::nullopt) {
    values_[name] = t;
    if (value) constants_[name] = *std::move(value);
  }
  absl::StatusOr<Tensor> value(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return absl::InvalidArgumentError("input '" + name + "' is not defined by any earlier node");
    return it->second;
  }
  const NDArray* constant(const std::string& name) const {
    auto it = constants_.find(name);
    return it == constants_.end() ? nullptr : &it->second;
  }
  Tensor add_constant(const std::string& name, NDArray value) {
    Tensor t = g_.constant(name, value);
    define(name, t, std::move(value));
    return t;
  }

 private:
  Graph& g_;
  int64_t opset_;
  std::map<std::string, Tensor> values_;
  std::map<std::string, NDArray> constants_;
};

// One node being converted: its attributes and inputs.
class Node {
 public:
  Node(const pb::NodeProto& n, Importer& im) : n_(n), im_(im) {}

  const pb::NodeProto& proto() const { return n_; }
  Importer& importer() { return im_; }
  Graph& graph() { return im_.graph(); }
  int64_t opset() const { return im_.opset(); }

  int num_inputs() const { return n_.input_size(); }
  bool has_input(int i) const { return i < n_.input_size() && !n_.input(i).empty(); }
  absl::StatusOr<Tensor> input(int i) const {
    if (!has_input(i)) return absl::InvalidArgumentError(str_cat("input ", i, " is missing"));
    return im_.value(n_.input(i));
  }
  // An input that must be known at import time (a shape, axes, a weight).
  absl::StatusOr<NDArray> constant_input(int i) const {
    if (!has_input(i)) return absl::InvalidArgumentError(str_cat("input ", i, " is missing"));
    const NDArray* v = im_.constant(n_.input(i));
    if (!v)
      return absl::UnimplementedError(str_cat("input ", i, " ('", n_.input(i),
                                              "') must be a constant (an initializer)"));
    return *v;
  }
  absl::StatusOr<std::vector<int64_t>> ints_input(int i) const {
    LOOM_ASSIGN_OR_RETURN(NDArray v, constant_input(i));
    if (!v.dtype().is_int())
      return absl::InvalidArgumentError(str_cat("input ", i, " must be an integer tensor"));
    // Read as integers: through double, INT64_MAX (Slice's "to the end") would round to 2^63,
    // which no int64 holds.
    std::vector<int64_t> out;
    for (int64_t k = 0; k < v.numel(); ++k) {
      if (v.dtype() == DType::i64()) out.push_back(v.data_as<int64_t>()[k]);
      else if (v.dtype() == DType::i32()) out.push_back(v.data_as<int32_t>()[k]);
      else out.push_back(static_cast<int64_t>(v.get(k)));  // i8
    }
    return out;
  }

  // The attribute of that name and type. One of another type (a float where an int belongs) is
  // recorded as the node's error (see attr_error) rather than read as a silent 0 or default.
  const pb::AttributeProto* attr(const std::string& name,
                                 pb::AttributeProto::AttributeType type) const {
    for (const pb::AttributeProto& a : n_.attribute()) {
      if (a.name() != name) continue;
      // UNDEFINED: models from before the type field was written; their field is trusted.
      if (a.type() == type || a.type() == pb::AttributeProto::UNDEFINED) return &a;
      if (attr_error_.ok())
        attr_error_ = absl::InvalidArgumentError(
            str_cat("attribute '", name, "' is ", pb::AttributeProto::AttributeType_Name(a.type()),
                    ", expected ", pb::AttributeProto::AttributeType_Name(type)));
      return nullptr;
    }
    return nullptr;
  }
  const absl::Status& attr_error() const { return attr_error_; }
  int64_t attr_int(const std::string& name, int64_t fallback) const {
    const pb::AttributeProto* a = attr(name, pb::AttributeProto::INT);
    return a ? a->i() : fallback;
  }
  // An int attribute that loom keeps in an int (axes, groups, dtypes): a value beyond int's range
  // is an error, not a truncation (2^32 + 1 would otherwise read as axis 1).
  int attr_int32(const std::string& name, int fallback) const {
    const int64_t v = attr_int(name, fallback);
    if (v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max())
      return static_cast<int>(v);
    if (attr_error_.ok())
      attr_error_ = absl::InvalidArgumentError(str_cat("attribute '", name, "' = ", v, " is out of range"));
    return fallback;
  }
  std::vector<int> attr_ints32(const std::string& name) const {
    std::vector<int> out;
    for (int64_t v : attr_ints(name)) {
      if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
        if (attr_error_.ok())
          attr_error_ = absl::InvalidArgumentError(
              str_cat("attribute '", name, "' holds ", v, ", out of range"));
        return {};
      }
      out.push_back(static_cast<int>(v));
    }
    return out;
  }
  float attr_float(const std::string& name, float fallback) const {
    const pb::AttributeProto* a = attr(name, pb::AttributeProto::FLOAT);
    return a ? a->f() : fallback;
  }
  std::string attr_string(const std::string& name, const std::string& fallback) const {
    const pb::AttributeProto* a = attr(name, pb::AttributeProto::STRING);
    return a ? a->s() : fallback;
  }
  std::vector<int64_t> attr_ints(const std::string& name, std::vector<int64_t> fallback = {}) const {
    const pb::AttributeProto* a = attr(name, pb::AttributeProto::INTS);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : fallback;
  }

  absl::Status unsupported(const std::string& what) const {
    return absl::UnimplementedError(what + " is not supported");
  }

 private:
  const pb::NodeProto& n_;
  Importer& im_;
  mutable absl::Status attr_error_;
};

using Convert = std::function<absl::StatusOr<std::vector<Tensor>>(Node&)>;

absl::StatusOr<std::vector<Tensor>> one(Tensor t) {
  if (!t.valid()) return absl::InvalidArgumentError("the operator rejected its inputs");
  return std::vector<Tensor>{t};
}

Convert binary(Tensor (Tensor::*fn)(const Tensor&) const) {
  return [fn](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor a, n.input(0));
    LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(1));
    return one((a.*fn)(b));
  };
}

Convert unary(Tensor (Tensor::*fn)() const) {
  return [fn](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    return one((x.*fn)());
  };
}

// A constant of x's dtype holding v (for alpha/beta scaling of non-f32 tensors too).
Tensor scalar_like(Node& n, const Tensor& x, double v, const std::string& what) {
  NDArray a(x.dtype(), {});
  a.set(0, v);
  return n.graph().constant(n.proto().name() + "_" + what, a);
}

// [C] -> [C, 1, ..., 1] so that it broadcasts over the dims after axis 1 of a rank-r tensor.
Tensor per_channel(Node& n, NDArray v, int rank, const std::string& what) {
  std::vector<int64_t> shape = {v.numel()};
  for (int d = 2; d < rank; ++d) shape.push_back(1);
  NDArray r(v.dtype(), shape);
  if (v.nbytes() > 0) std::memcpy(r.data(), v.data(), static_cast<size_t>(v.nbytes()));
  return n.graph().constant(n.proto().name() + "_" + what, r);
}

absl::StatusOr<std::vector<Tensor>> convert_gemm(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor a, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(1));
  if (a.rank() != 2 || b.rank() != 2) return n.unsupported("Gemm on tensors of rank other than 2");
  if (n.attr_int("transA", 0)) a = a.transpose({1, 0});
  if (n.attr_int("transB", 0)) b = b.transpose({1, 0});
  Tensor y = a.matmul(b);
  const double alpha = n.attr_float("alpha", 1), beta = n.attr_float("beta", 1);
  if (alpha != 1) y = y * scalar_like(n, y, alpha, "alpha");
  if (n.has_input(2) && beta != 0) {
    LOOM_ASSIGN_OR_RETURN(Tensor c, n.input(2));
    if (beta != 1) c = c * scalar_like(n, c, beta, "beta");
    y = y + c;
  }
  return one(y);
}

// Pads [begin..., end...] of the spatial dims, from pads or auto_pad.
absl::StatusOr<Conv2dOptions::Padding> spatial_padding(Node& n, const Shape& x, int64_t kh,
                                                       int64_t kw, int sh, int sw, int dh, int dw) {
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  if (auto_pad == "NOTSET" || auto_pad.empty()) {
    std::vector<int64_t> p = n.attr_ints("pads", {0, 0, 0, 0});
    if (p.size() != 4) return absl::InvalidArgumentError("pads must have 4 values for a 2-D window");
    return Conv2dOptions::Padding(static_cast<int>(p[0]), static_cast<int>(p[1]),
                                  static_cast<int>(p[2]), static_cast<int>(p[3]));
  }
  if (auto_pad == "VALID") return Conv2dOptions::Padding(0);
  if (auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    return absl::InvalidArgumentError("auto_pad " + auto_pad + " is not an ONNX value");
  if (!x[2].is_static() || !x[3].is_static())
    return n.unsupported("auto_pad SAME with symbolic spatial dims");
  auto total = [](int64_t in, int64_t k, int s, int d) {
    int64_t out = (in + s - 1) / s;
    return std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - in);
  };
  int64_t th = total(x[2].value(), kh, sh, dh), tw = total(x[3].value(), kw, sw, dw);
  bool upper = auto_pad == "SAME_UPPER";  // the extra pixel goes at the end
  auto lo = [&](int64_t t) { return static_cast<int>(upper ? t / 2 : t - t / 2); };
  return Conv2dOptions::Padding(lo(th), lo(tw), static_cast<int>(th) - lo(th),
                                static_cast<int>(tw) - lo(tw));
}

absl::StatusOr<std::vector<Tensor>> convert_conv(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor w, n.input(1));
  if (x.rank() == 3 && w.rank() == 3 && is_static(w.shape())) {
    // 1-D: conv1d (a 2-D convolution over [N, C, 1, L]).
    if (n.attr_string("auto_pad", "NOTSET") != "NOTSET") return n.unsupported("auto_pad on a 1-D Conv");
    std::vector<int64_t> s = n.attr_ints("strides", {1}), d = n.attr_ints("dilations", {1}),
                         p = n.attr_ints("pads", {0, 0});
    if (s.size() != 1 || d.size() != 1 || p.size() != 2) return absl::InvalidArgumentError("bad 1-D strides, dilations or pads");
    Conv2dOptions o;
    o.stride = {1, static_cast<int>(s[0])};
    o.dilation = {1, static_cast<int>(d[0])};
    o.padding = Conv2dOptions::Padding(0, static_cast<int>(p[0]), 0, static_cast<int>(p[1]));
    o.groups = n.attr_int32("group", 1);
    Tensor y = x.conv1d(w, o);
    if (n.has_input(2)) {
      LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(2));
      y = y + b.reshape({b.shape().empty() ? Dim(1) : b.shape()[0], 1});
    }
    return one(y);
  }
  if (x.rank() != 4) return n.unsupported(str_cat("Conv of rank ", x.rank(), " (only 1-D and 2-D)"));
  std::vector<int64_t> s = n.attr_ints("strides", {1, 1}), d = n.attr_ints("dilations", {1, 1});
  if (s.size() != 2 || d.size() != 2) return absl::InvalidArgumentError("strides and dilations need 2 values");
  if (!is_static(w.shape())) return n.unsupported("a weight with symbolic dims");
  if (w.rank() != 4)
    return absl::InvalidArgumentError(
        str_cat("a 2-D Conv needs a weight of rank 4, not ", w.rank()));
  Conv2dOptions o;
  o.stride = {static_cast<int>(s[0]), static_cast<int>(s[1])};
  o.dilation = {static_cast<int>(d[0]), static_cast<int>(d[1])};
  o.groups = n.attr_int32("group", 1);
  LOOM_ASSIGN_OR_RETURN(o.padding,
                        spatial_padding(n, x.shape(), w.shape()[2].value(), w.shape()[3].value(),
                                        o.stride.h, o.stride.w, o.dilation.h, o.dilation.w));
  Tensor y = x.conv2d(w, o);
  if (n.has_input(2)) {
    LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(2));
    y = y + b.reshape({b.shape().empty() ? Dim(1) : b.shape()[0], 1, 1});
  }
  return one(y);
}

absl::StatusOr<std::vector<Tensor>> convert_conv_transpose(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor w, n.input(1));
  if (x.rank() != 4) return n.unsupported(str_cat("ConvTranspose of rank ", x.rank(), " (only 2-D)"));
  if (w.rank() != 4)
    return absl::InvalidArgumentError(
        str_cat("a 2-D ConvTranspose needs a weight of rank 4, not ", w.rank()));
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  std::vector<int64_t> s = n.attr_ints("strides", {1, 1}), d = n.attr_ints("dilations", {1, 1});
  std::vector<int64_t> p = n.attr_ints("pads", {0, 0, 0, 0}), op = n.attr_ints("output_padding", {0, 0});
  if (s.size() != 2 || d.size() != 2 || p.size() != 4 || op.size() != 2)
    return absl::InvalidArgumentError("strides, dilations, output_padding need 2 values and pads 4");
  if (auto_pad == "VALID") p = {0, 0, 0, 0};
  // An output shape (given, or in * stride for SAME) fixes the pads: the total is split with the
  // odd pixel at the end for SAME_UPPER, at the start otherwise.
  std::vector<int64_t> out_shape = n.attr_ints("output_shape");
  if (out_shape.size() > 2) out_shape.erase(out_shape.begin(), out_shape.end() - 2);
  const bool same = auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER";
  if (!out_shape.empty() || same) {
    if (!is_static(x.shape()) || !is_static(w.shape())) return n.unsupported("ConvTranspose output_shape with symbolic dims");
    for (int k = 0; k < 2; ++k) {
      const int64_t in = x.shape()[2 + k].value(), kernel = w.shape()[2 + k].value();
      const int64_t want = out_shape.size() == 2 ? out_shape[k] : in * s[k];
      const int64_t total = s[k] * (in - 1) + op[k] + (kernel - 1) * d[k] + 1 - want;
      if (total < 0) return n.unsupported("an output_shape larger than the full transposed convolution");
      const int64_t half = total / 2;
      p[k] = auto_pad == "SAME_UPPER" ? half : total - half;
      p[k + 2] = total - p[k];
    }
  } else if (auto_pad != "NOTSET") {
    return absl::InvalidArgumentError("auto_pad " + auto_pad + " is not an ONNX value");
  }
  auto i = [](int64_t v) { return static_cast<int>(v); };
  ConvTranspose2dOptions o;
  o.stride = {i(s[0]), i(s[1])};
  o.dilation = {i(d[0]), i(d[1])};
  o.padding = Conv2dOptions::Padding(i(p[0]), i(p[1]), i(p[2]), i(p[3]));
  o.output_padding = {i(op[0]), i(op[1])};
  o.groups = i(n.attr_int("group", 1));
  Tensor y = x.conv_transpose2d(w, o);
  if (n.has_input(2)) {
    LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(2));
    y = y + b.reshape({b.shape().empty() ? Dim(1) : b.shape()[0], 1, 1});
  }
  return one(y);
}

// InstanceNormalization: per (image, channel) normalization over the spatial dims, then a
// per-channel scale and shift: layer_norm over the dims from 2 (unit gamma, zero beta).
absl::StatusOr<std::vector<Tensor>> convert_instance_norm(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor scale, n.input(1));
  LOOM_ASSIGN_OR_RETURN(Tensor bias, n.input(2));
  return one(x.instance_norm(scale, bias, n.attr_float("epsilon", 1e-5f)));
}

Convert pool(bool is_max) {
  return [is_max](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    if (x.rank() != 4) return n.unsupported(str_cat("pooling of rank ", x.rank(), " (only 2-D)"));
    if (n.proto().output_size() > 1 && !n.proto().output(1).empty())
      return n.unsupported("MaxPool's Indices output");
    if (n.attr_int("ceil_mode", 0)) return n.unsupported("ceil_mode=1");
    if (!is_max && n.attr_int("count_include_pad", 0)) return n.unsupported("count_include_pad=1");
    for (int64_t v : n.attr_ints("dilations", {1, 1}))
      if (v != 1) return n.unsupported("pooling with dilations");
    std::vector<int64_t> k = n.attr_ints("kernel_shape"), s = n.attr_ints("strides", {1, 1});
    if (k.size() != 2 || s.size() != 2) return absl::InvalidArgumentError("kernel_shape and strides need 2 values");
    Pool2dOptions o;
    o.kernel = {static_cast<int>(k[0]), static_cast<int>(k[1])};
    o.stride = {static_cast<int>(s[0]), static_cast<int>(s[1])};
    LOOM_ASSIGN_OR_RETURN(o.padding,
                          spatial_padding(n, x.shape(), k[0], k[1], o.stride.h, o.stride.w, 1, 1));
    return one(is_max ? x.max_pool2d(o) : x.avg_pool2d(o));
  };
}

Convert global_pool(bool is_max) {
  return [is_max](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    std::vector<int> axes;
    for (int d = 2; d < x.rank(); ++d) axes.push_back(d);
    if (axes.empty()) return n.unsupported("global pooling of a tensor without spatial dims");
    return one(is_max ? x.max(axes, true) : x.mean(axes, true));
  };
}

// Softmax and LogSoftmax: before opset 13 they normalize x flattened to 2-D at axis; from 13
// on, along axis.
Convert softmax_like(Tensor (Tensor::*fn)(int) const) {
  return [fn](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    const int rank = x.rank();
    int axis = n.attr_int32("axis", n.opset() >= 13 ? -1 : 1);
    if (axis < -rank || axis >= std::max(rank, 1))
      return absl::InvalidArgumentError(str_cat("axis ", axis, " is out of range"));
    if (axis < 0) axis += rank;
    if (n.opset() >= 13 || axis == rank - 1) return one((x.*fn)(axis));
    if (!is_static(x.shape())) return n.unsupported("the pre-opset-13 form over symbolic dims");
    int64_t inner = 1;
    for (int d = axis; d < rank; ++d) inner *= x.shape()[d].value();
    return one((x.reshape({-1, inner}).*fn)(-1).reshape(x.shape()));
  };
}

absl::StatusOr<std::vector<Tensor>> convert_reshape(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  std::vector<int64_t> shape;
  if (n.opset() < 5) {
    shape = n.attr_ints("shape");
  } else {
    LOOM_ASSIGN_OR_RETURN(shape, n.ints_input(1));
  }
  const bool allow_zero = n.attr_int("allowzero", 0) != 0;
  Shape target;
  for (size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0 && !allow_zero) {
      if (k >= x.shape().size()) return absl::InvalidArgumentError("a 0 in the shape past the input's rank");
      target.push_back(x.shape()[k]);
    } else {
      target.push_back(Dim(shape[k]));
    }
  }
  return one(x.reshape(target));
}

absl::StatusOr<std::vector<Tensor>> convert_transpose(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  std::vector<int> perm;
  for (int p : n.attr_ints32("perm")) perm.push_back(p);
  return one(x.transpose(perm));
}

// ReduceSum (axes an input from opset 13) and ReduceMean/ReduceMax (axes an input from 18).
Convert reduce(Tensor (Tensor::*fn)(std::vector<int>, bool) const, int64_t axes_input_from) {
  return [fn, axes_input_from](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    std::vector<int64_t> axes;
    if (n.opset() >= axes_input_from) {
      if (n.has_input(1)) {
        LOOM_ASSIGN_OR_RETURN(axes, n.ints_input(1));
      }
    } else {
      axes = n.attr_ints("axes");
    }
    if (axes.empty() && n.attr_int("noop_with_empty_axes", 0)) return std::vector<Tensor>{x};
    std::vector<int> a(axes.begin(), axes.end());
    return one((x.*fn)(a, n.attr_int("keepdims", 1) != 0));
  };
}

absl::StatusOr<std::vector<Tensor>> convert_layer_norm(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor scale, n.input(1));
  if (n.proto().output_size() > 1)
    for (int k = 1; k < n.proto().output_size(); ++k)
      if (!n.proto().output(k).empty()) return n.unsupported("LayerNormalization's Mean and InvStdDev outputs");
  Tensor bias;
  if (n.has_input(2)) {
    LOOM_ASSIGN_OR_RETURN(bias, n.input(2));
  } else {
    if (!is_static(scale.shape())) return n.unsupported("a symbolic Scale without B");
    NDArray zeros(scale.dtype(), *static_extents(scale.shape()));
    for (int64_t i = 0; i < zeros.numel(); ++i) zeros.set(i, 0);
    bias = n.graph().constant(n.proto().name() + "_B", zeros);
  }
  return one(x.layer_norm(scale, bias, n.attr_int32("axis", -1),
                          n.attr_float("epsilon", 1e-5f)));
}

// Inference batch norm with constant statistics: y = x * a + b, a = scale / sqrt(var + eps),
// b = B - mean * a, folded at import.
absl::StatusOr<std::vector<Tensor>> convert_batch_norm(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  if (n.attr_int("training_mode", 0)) return n.unsupported("training_mode=1");
  for (int k = 1; k < n.proto().output_size(); ++k)
    if (!n.proto().output(k).empty()) return n.unsupported("BatchNormalization's running statistics outputs");
  LOOM_ASSIGN_OR_RETURN(NDArray scale, n.constant_input(1));
  LOOM_ASSIGN_OR_RETURN(NDArray b, n.constant_input(2));
  LOOM_ASSIGN_OR_RETURN(NDArray mean, n.constant_input(3));
  LOOM_ASSIGN_OR_RETURN(NDArray var, n.constant_input(4));
  const int64_t c = scale.numel();
  if (b.numel() != c || mean.numel() != c || var.numel() != c)
    return absl::InvalidArgumentError("scale, B, mean and var must have one value per channel");
  const double eps = n.attr_float("epsilon", 1e-5f);
  NDArray mul(x.dtype(), {c}), add(x.dtype(), {c});
  for (int64_t i = 0; i < c; ++i) {
    double a = scale.get(i) / std::sqrt(var.get(i) + eps);
    mul.set(i, a);
    add.set(i, b.get(i) - mean.get(i) * a);
  }
  return one(x * per_channel(n, mul, x.rank(), "scale") + per_channel(n, add, x.rank(), "shift"));
}

absl::StatusOr<std::vector<Tensor>> convert_constant(Node& n) {
  const pb::AttributeProto* a = n.attr("value", pb::AttributeProto::TENSOR);
  if (!a) return n.unsupported("a Constant without a tensor 'value'");
  if (n.proto().output_size() < 1) return absl::InvalidArgumentError("a Constant without an output");
  LOOM_ASSIGN_OR_RETURN(NDArray v, to_ndarray(a->t()));
  return std::vector<Tensor>{n.importer().add_constant(n.proto().output(0), std::move(v))};
}

// Inference: Dropout is the identity (its mask output and training mode are not supported).
absl::StatusOr<std::vector<Tensor>> convert_dropout(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  if (n.proto().output_size() > 1 && !n.proto().output(1).empty())
    return n.unsupported("Dropout's mask output");
  if (n.has_input(2)) {
    LOOM_ASSIGN_OR_RETURN(NDArray training, n.constant_input(2));
    if (training.numel() > 0 && training.get(0) != 0) return n.unsupported("training_mode=true");
  }
  return std::vector<Tensor>{x};
}

// Shape of a tensor with static dims, as an i64 constant (start and end as in opset 15).
absl::StatusOr<std::vector<Tensor>> convert_shape(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  const int64_t rank = x.rank();
  int64_t start = n.attr_int("start", 0), end = n.attr_int("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  NDArray v(DType::i64(), {end - start});
  for (int64_t d = start; d < end; ++d) {
    if (!x.shape()[d].is_static()) return n.unsupported("Shape of a symbolic dim");
    v.set(d - start, static_cast<double>(x.shape()[d].value()));
  }
  if (n.proto().output_size() < 1) return absl::InvalidArgumentError("a Shape without an output");
  return std::vector<Tensor>{n.importer().add_constant(n.proto().output(0), std::move(v))};
}

// Clip: bounds are attributes before opset 11 and optional constant inputs after.
absl::StatusOr<std::vector<Tensor>> convert_clip(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  if (n.opset() < 11) {
    lo = n.attr_float("min", -std::numeric_limits<float>::infinity());
    hi = n.attr_float("max", std::numeric_limits<float>::infinity());
  } else {
    for (int k : {1, 2}) {
      if (!n.has_input(k)) continue;
      LOOM_ASSIGN_OR_RETURN(NDArray v, n.constant_input(k));
      if (v.numel() != 1) return absl::InvalidArgumentError("Clip bounds must be scalars");
      (k == 1 ? lo : hi) = v.get(0);
    }
  }
  if (!x.dtype().is_float()) {
    // Integer tensors take whole-number bounds; infinite ones mean no bound on that side.
    if (std::isinf(lo)) lo = std::numeric_limits<int32_t>::min();
    if (std::isinf(hi)) hi = std::numeric_limits<int32_t>::max();
  }
  return one(x.clip(lo, hi));
}

absl::StatusOr<std::vector<Tensor>> convert_cast(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(DType to, dtype_of(n.attr_int32("to", 0)));
  return one(x.cast(to));
}

absl::StatusOr<std::vector<Tensor>> convert_where(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor c, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor a, n.input(1));
  LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(2));
  return one(c.where(a, b));
}

// Sum, Mean, Max and Min of any number of inputs, with broadcasting.
Convert variadic(Tensor (Tensor::*fn)(const Tensor&) const, bool mean = false) {
  return [fn, mean](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor y, n.input(0));
    for (int i = 1; i < n.num_inputs(); ++i) {
      LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(i));
      y = (y.*fn)(x);
    }
    if (mean && n.num_inputs() > 1) y = y * scalar_like(n, y, 1.0 / n.num_inputs(), "scale");
    return one(y);
  };
}

// Gelu (as a function of erf, the ONNX definition; no Gelu op before opset 20 in the test data).
absl::StatusOr<std::vector<Tensor>> convert_gelu(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  return one(x.gelu(n.attr_string("approximate", "none") == "tanh"));
}

// Pow: the exponent may have another dtype (cast to the base's); integer bases compute in f32.
absl::StatusOr<std::vector<Tensor>> convert_pow(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor y, n.input(1));
  if (x.dtype().is_float()) return one(x.pow(y.dtype() == x.dtype() ? y : y.cast(x.dtype())));
  return one(x.cast(DType::f32()).pow(y.cast(DType::f32())).cast(x.dtype()));
}

// Axes from the attribute (before opset `from`) or the optional constant input k (from on).
absl::StatusOr<std::vector<int>> axes_of(Node& n, int64_t from, int k) {
  std::vector<int64_t> axes;
  if (n.opset() < from) {
    axes = n.attr_ints("axes");
  } else if (n.has_input(k)) {
    LOOM_ASSIGN_OR_RETURN(axes, n.ints_input(k));
  }
  return std::vector<int>(axes.begin(), axes.end());
}

absl::StatusOr<std::vector<Tensor>> convert_concat(Node& n) {
  std::vector<Tensor> in;
  for (int i = 0; i < n.num_inputs(); ++i) {
    LOOM_ASSIGN_OR_RETURN(Tensor t, n.input(i));
    in.push_back(t);
  }
  return one(concat(in, n.attr_int32("axis", 0)));
}

absl::StatusOr<std::vector<Tensor>> convert_split(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  const int rank = x.rank();
  int axis = n.attr_int32("axis", 0);
  if (axis < -rank || axis >= rank) return absl::InvalidArgumentError(str_cat("axis ", axis, " is out of range"));
  if (axis < 0) axis += rank;
  std::vector<int64_t> sizes;
  if (n.opset() < 13) {
    sizes = n.attr_ints("split");
  } else if (n.has_input(1)) {
    LOOM_ASSIGN_OR_RETURN(sizes, n.ints_input(1));
  }
  if (sizes.empty()) {
    if (!x.shape()[axis].is_static()) return n.unsupported("Split of a symbolic dim");
    const int64_t parts = n.attr_int("num_outputs", n.proto().output_size()), extent = x.shape()[axis].value();
    if (parts <= 0) return absl::InvalidArgumentError("Split into no parts");
    const int64_t each = (extent + parts - 1) / parts;  // the last part takes the rest
    for (int64_t p = 0, left = extent; p < parts; ++p, left -= each) sizes.push_back(std::min(each, left));
  }
  std::vector<Tensor> parts = x.split(axis, sizes);
  for (const Tensor& t : parts)
    if (!t.valid()) return absl::InvalidArgumentError("the operator rejected its inputs");
  return parts;
}

absl::StatusOr<std::vector<Tensor>> convert_slice(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  std::vector<int64_t> starts, ends, steps;
  std::vector<int> axes;
  if (n.opset() < 10) {
    starts = n.attr_ints("starts");
    ends = n.attr_ints("ends");
    for (int a : n.attr_ints32("axes")) axes.push_back(a);
  } else {
    LOOM_ASSIGN_OR_RETURN(starts, n.ints_input(1));
    LOOM_ASSIGN_OR_RETURN(ends, n.ints_input(2));
    if (n.has_input(3)) {
      LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> a, n.ints_input(3));
      axes.assign(a.begin(), a.end());
    }
    if (n.has_input(4)) {
      LOOM_ASSIGN_OR_RETURN(steps, n.ints_input(4));
    }
  }
  return one(x.slice(starts, ends, axes, steps));
}

absl::StatusOr<std::vector<Tensor>> convert_gather(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(Tensor i, n.input(1));
  return one(x.gather(i, n.attr_int32("axis", 0)));
}

absl::StatusOr<std::vector<Tensor>> convert_pad(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  const std::string mode_name = n.attr_string("mode", "constant");
  PadMode mode = mode_name == "reflect" ? PadMode::kReflect
                 : mode_name == "edge"  ? PadMode::kEdge
                                        : PadMode::kConstant;
  if (mode_name != "constant" && mode_name != "reflect" && mode_name != "edge")
    return n.unsupported("Pad mode " + mode_name);
  std::vector<int64_t> pads;
  double value = 0;
  std::vector<int64_t> axes;
  if (n.opset() < 11) {
    pads = n.attr_ints(n.opset() < 2 ? "paddings" : "pads");
    value = n.attr_float("value", 0);
  } else {
    LOOM_ASSIGN_OR_RETURN(pads, n.ints_input(1));
    if (n.has_input(2)) {
      LOOM_ASSIGN_OR_RETURN(NDArray v, n.constant_input(2));
      if (v.numel() > 0) value = v.get(0);
    }
    if (n.has_input(3)) {
      LOOM_ASSIGN_OR_RETURN(axes, n.ints_input(3));
    }
  }
  const int rank = x.rank();
  if (axes.empty())
    for (int d = 0; d < rank; ++d) axes.push_back(d);
  if (pads.size() != 2 * axes.size()) return absl::InvalidArgumentError("pads must hold a begin and an end per axis");
  std::vector<PadWidth> widths(static_cast<size_t>(rank));
  for (size_t k = 0; k < axes.size(); ++k) {
    int64_t a = axes[k] < 0 ? axes[k] + rank : axes[k];
    if (a < 0 || a >= rank) return absl::InvalidArgumentError(str_cat("pad axis ", axes[k], " is out of range"));
    widths[static_cast<size_t>(a)] = PadWidth{pads[k], pads[k + axes.size()]};
  }
  return one(x.pad(widths, mode, value));
}

Convert squeeze(bool un) {
  return [un](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    LOOM_ASSIGN_OR_RETURN(std::vector<int> axes, axes_of(n, 13, 1));
    return one(un ? x.unsqueeze(axes) : x.squeeze(axes));
  };
}

absl::StatusOr<std::vector<Tensor>> convert_expand(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> shape, n.ints_input(1));
  Shape s;
  for (int64_t d : shape) s.push_back(Dim(d));
  return one(x.expand(s));
}

absl::StatusOr<std::vector<Tensor>> convert_flatten(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  return one(x.flatten(n.attr_int32("axis", 1)));
}

Convert arg_reduce(bool is_max) {
  return [is_max](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    if (n.attr_int("select_last_index", 0)) return n.unsupported("select_last_index=1");
    const int axis = n.attr_int32("axis", 0);
    const bool keep = n.attr_int("keepdims", 1) != 0;
    return one(is_max ? x.argmax(axis, keep) : x.argmin(axis, keep));
  };
}

// The reductions ONNX defines from sum: of squares, of absolute values, its square root and
// log, and log-sum-exp (as written in the spec, without max subtraction).
Convert reduce_composite(const std::string& kind) {
  return [kind](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
    LOOM_ASSIGN_OR_RETURN(std::vector<int> axes, axes_of(n, 18, 1));
    const bool keep = n.attr_int("keepdims", 1) != 0;
    if (axes.empty() && n.attr_int("noop_with_empty_axes", 0)) return std::vector<Tensor>{x};
    if (kind == "sum_square") return one((x * x).sum(axes, keep));
    if (kind == "l1") return one(x.abs().sum(axes, keep));
    if (kind == "l2") return one((x * x).sum(axes, keep).sqrt());
    if (kind == "log_sum") return one(x.sum(axes, keep).log());
    return one(x.exp().sum(axes, keep).log());  // log_sum_exp
  };
}

// Inference batch norm from tensors: (x - mean) / sqrt(var + eps) * scale + B, per channel.
absl::StatusOr<std::vector<Tensor>> convert_batch_norm_tensors(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  if (n.attr_int("training_mode", 0)) return n.unsupported("training_mode=1");
  for (int k = 1; k < n.proto().output_size(); ++k)
    if (!n.proto().output(k).empty()) return n.unsupported("BatchNormalization's running statistics outputs");
  std::vector<Tensor> p;
  for (int k = 1; k <= 4; ++k) {
    LOOM_ASSIGN_OR_RETURN(Tensor t, n.input(k));
    p.push_back(t);
  }
  return one(x.batch_norm(p[0], p[1], p[2], p[3], n.attr_float("epsilon", 1e-5f)));
}

absl::StatusOr<std::vector<Tensor>> convert_batch_norm_any(Node& n) {
  bool constant = true;
  for (int k = 1; k <= 4; ++k) constant = constant && n.has_input(k) && n.importer().constant(n.proto().input(k));
  return constant ? convert_batch_norm(n) : convert_batch_norm_tensors(n);
}

// Logic on bool tensors, from where and equal.
Convert logic(const std::string& kind) {
  return [kind](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
    LOOM_ASSIGN_OR_RETURN(Tensor a, n.input(0));
    NDArray f(DType::boolean(), {}), t(DType::boolean(), {});
    f.set(0, 0);
    t.set(0, 1);
    Tensor no = n.graph().constant(n.proto().name() + "_false", f);
    Tensor yes = n.graph().constant(n.proto().name() + "_true", t);
    if (kind == "not") return one(a.where(no, yes));
    LOOM_ASSIGN_OR_RETURN(Tensor b, n.input(1));
    if (kind == "and") return one(a.where(b, no).where(yes, no));
    if (kind == "or") return one(a.where(yes, b).where(yes, no));
    return one(a.equal(b).where(no, yes));  // xor
  };
}

// Resize (scales an input from opset 10; roi, scales, sizes from 11) and Upsample (scales an
// attribute before opset 9, an input from 9). Output extents come from sizes, else from
// floor(extent * scale); the mapping uses the given scales exactly, as ONNX does.
absl::StatusOr<std::vector<Tensor>> convert_resize(Node& n) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  const bool upsample = n.proto().op_type() == "Upsample";
  const bool modern = !upsample && n.opset() >= 11;  // the coordinate and rounding attributes
  if (upsample && n.opset() < 7) return n.unsupported("Upsample before opset 7 (height_scale, width_scale)");
  ResizeOptions o;
  const std::string mode = n.attr_string("mode", "nearest");
  if (mode == "linear") {
    o.mode = ResizeMode::kLinear;
  } else if (mode != "nearest") {
    return n.unsupported("Resize mode " + mode);
  }
  o.coordinate = CoordinateMode::kAsymmetric;
  o.nearest = NearestRounding::kFloor;
  if (modern) {
    static const std::map<std::string, CoordinateMode> coordinates = {
        {"half_pixel", CoordinateMode::kHalfPixel},
        {"pytorch_half_pixel", CoordinateMode::kPytorchHalfPixel},
        {"align_corners", CoordinateMode::kAlignCorners},
        {"asymmetric", CoordinateMode::kAsymmetric},
        {"tf_half_pixel_for_nearest", CoordinateMode::kTfHalfPixelForNearest},
        {"tf_half_pixel_for_nn", CoordinateMode::kTfHalfPixelForNearest}};  // its name in early opset-11 models
    static const std::map<std::string, NearestRounding> roundings = {
        {"round_prefer_floor", NearestRounding::kRoundPreferFloor},
        {"round_prefer_ceil", NearestRounding::kRoundPreferCeil},
        {"floor", NearestRounding::kFloor},
        {"ceil", NearestRounding::kCeil}};
    const std::string coordinate = n.attr_string("coordinate_transformation_mode", "half_pixel");
    const std::string nearest = n.attr_string("nearest_mode", "round_prefer_floor");
    auto c = coordinates.find(coordinate);
    if (c == coordinates.end()) return n.unsupported("coordinate_transformation_mode " + coordinate);
    auto r = roundings.find(nearest);
    if (r == roundings.end()) return n.unsupported("nearest_mode " + nearest);
    o.coordinate = c->second;
    o.nearest = r->second;
    if (n.attr_int("antialias", 0) != 0) return n.unsupported("antialias=1");
    if (n.attr_int("exclude_outside", 0) != 0) return n.unsupported("exclude_outside=1");
    if (n.attr_string("keep_aspect_ratio_policy", "stretch") != "stretch")
      return n.unsupported("keep_aspect_ratio_policy " + n.attr_string("keep_aspect_ratio_policy", ""));
  }
  if (!is_static(x.shape())) return n.unsupported("Resize of a tensor with symbolic dims");
  const int rank = x.rank();
  // The listed axes (opset 18) take the scales or sizes; other dims stay as they are.
  std::vector<int64_t> axes = n.attr_ints("axes");
  if (axes.empty())
    for (int d = 0; d < rank; ++d) axes.push_back(d);
  for (int64_t& a : axes) {
    if (a < -rank || a >= rank) return absl::InvalidArgumentError(str_cat("Resize axis ", a, " is out of range"));
    if (a < 0) a += rank;
  }
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  if (upsample && n.opset() < 9) {
    if (const pb::AttributeProto* a = n.attr("scales", pb::AttributeProto::FLOATS)) scales.assign(a->floats().begin(), a->floats().end());
  } else {
    const int scales_input = upsample || n.opset() < 11 ? 1 : 2;
    if (n.has_input(scales_input)) {
      LOOM_ASSIGN_OR_RETURN(NDArray v, n.constant_input(scales_input));
      for (int64_t k = 0; k < v.numel(); ++k) scales.push_back(static_cast<float>(v.get(k)));
    }
    if (modern && n.has_input(3)) {
      LOOM_ASSIGN_OR_RETURN(sizes, n.ints_input(3));
    }
  }
  if (!scales.empty() && !sizes.empty()) return absl::InvalidArgumentError("Resize has both scales and sizes");
  if (scales.empty() && sizes.empty()) return absl::InvalidArgumentError("Resize needs scales or sizes");
  const size_t given = scales.empty() ? sizes.size() : scales.size();
  if (given != axes.size())
    return absl::InvalidArgumentError(str_cat("Resize has ", given, " scales or sizes for ", axes.size(), " axes"));
  o.sizes.assign(x.shape().size(), 0);
  for (int d = 0; d < rank; ++d) o.sizes[static_cast<size_t>(d)] = x.shape()[d].value();
  if (!scales.empty()) o.scales.assign(o.sizes.size(), 1.0f);
  for (size_t k = 0; k < axes.size(); ++k) {
    const auto d = static_cast<size_t>(axes[k]);
    if (scales.empty()) {
      o.sizes[d] = sizes[k];
      continue;
    }
    if (!(scales[k] > 0)) return absl::InvalidArgumentError(str_cat("Resize scale ", scales[k], " is not positive"));
    o.scales[d] = scales[k];
    o.sizes[d] = static_cast<int64_t>(std::floor(static_cast<double>(o.sizes[d]) * scales[k]));
  }
  return one(x.resize(o));
}

// Activations: loom ops with the ONNX attribute defaults, or formulas of ops loom has.
absl::StatusOr<std::vector<Tensor>> convert_activation(Node& n, const std::string& op) {
  LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
  if (op == "LeakyRelu") return one(x.leaky_relu(n.attr_float("alpha", 0.01f)));
  if (op == "Elu") return one(x.elu(n.attr_float("alpha", 1.0f)));
  if (op == "HardSigmoid")
    return one(x.hard_sigmoid(n.attr_float("alpha", 0.2f), n.attr_float("beta", 0.5f)));
  auto k = [&](double v, const char* what) { return scalar_like(n, x, v, what); };
  const Tensor zero = k(0, "zero");
  if (op == "PRelu") {
    LOOM_ASSIGN_OR_RETURN(Tensor slope, n.input(1));
    return one(x.less(zero).where(x * slope, x));
  }
  if (op == "Selu") {
    const double alpha = n.attr_float("alpha", 1.67326319217681884765625f);
    const double gamma = n.attr_float("gamma", 1.05070102214813232421875f);
    return one(x.greater(zero).where(x, (x.exp() - k(1, "one")) * k(alpha, "alpha")) * k(gamma, "gamma"));
  }
  if (op == "Celu") {
    const double alpha = n.attr_float("alpha", 1.0f);
    // max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    return one(x.maximum(zero) + ((x / k(alpha, "alpha")).exp() - k(1, "one")).mul(alpha).minimum(zero));
  }
  if (op == "ThresholdedRelu") return one(x.greater(k(n.attr_float("alpha", 1.0f), "alpha")).where(x, zero));
  if (op == "Softplus") return one((x.exp() + k(1, "one")).log());
  if (op == "Softsign") return one(x / (x.abs() + k(1, "one")));
  if (op == "Mish") return one(x * (x.exp() + k(1, "one")).log().tanh());
  if (op == "Sign") return one(x.greater(zero).where(k(1, "one"), x.less(zero).where(k(-1, "minus_one"), zero)));
  if (op == "Shrink") {
    const double bias = n.attr_float("bias", 0.0f), lambd = n.attr_float("lambd", 0.5f);
    return one(x.less(k(-lambd, "neg_lambd"))
                   .where(x + k(bias, "bias"), x.greater(k(lambd, "lambd")).where(x - k(bias, "bias"), zero)));
  }
  return n.unsupported(op);
}

Convert activation(std::string op) {
  return [op](Node& n) { return convert_activation(n, op); };
}

const std::map<std::string, Convert>& converters() {
  static const auto* table = new std::map<std::string, Convert>{
      {"Add", binary(&Tensor::add)},
      {"Sub", binary(&Tensor::sub)},
      {"Mul", binary(&Tensor::mul)},
      {"Div", binary(&Tensor::div)},
      {"MatMul", binary(&Tensor::matmul)},
      {"Relu", unary(&Tensor::relu)},
      {"Tanh", unary(&Tensor::tanh)},
      {"Exp", unary(&Tensor::exp)},
      {"Sigmoid", unary(&Tensor::sigmoid)},
      {"Identity", [](Node& n) -> absl::StatusOr<std::vector<Tensor>> {
         LOOM_ASSIGN_OR_RETURN(Tensor x, n.input(0));
         return std::vector<Tensor>{x};
       }},
      {"Gemm", convert_gemm},
      {"Conv", convert_conv},
      {"ConvTranspose", convert_conv_transpose},
      {"InstanceNormalization", convert_instance_norm},
      {"MaxPool", pool(true)},
      {"AveragePool", pool(false)},
      {"GlobalMaxPool", global_pool(true)},
      {"GlobalAveragePool", global_pool(false)},
      {"Softmax", softmax_like(&Tensor::softmax)},
      {"Reshape", convert_reshape},
      {"Flatten", convert_flatten},
      {"Transpose", convert_transpose},
      {"ReduceSum", reduce(&Tensor::sum, 13)},
      {"ReduceMean", reduce(&Tensor::mean, 18)},
      {"ReduceMax", reduce(&Tensor::max, 18)},
      {"LayerNormalization", convert_layer_norm},
      {"BatchNormalization", convert_batch_norm_any},
      {"Constant", convert_constant},
      {"Dropout", convert_dropout},
      {"LeakyRelu", activation("LeakyRelu")},
      {"Elu", activation("Elu")},
      {"HardSigmoid", activation("HardSigmoid")},
      {"HardSwish", unary(&Tensor::hard_swish)},
      {"Erf", unary(&Tensor::erf)},
      {"Log", unary(&Tensor::log)},
      {"Sqrt", unary(&Tensor::sqrt)},
      {"Reciprocal", unary(&Tensor::reciprocal)},
      {"Floor", unary(&Tensor::floor)},
      {"Ceil", unary(&Tensor::ceil)},
      {"Abs", unary(&Tensor::abs)},
      {"Neg", unary(&Tensor::neg)},
      {"Softsign", activation("Softsign")},
      {"Softplus", activation("Softplus")},
      {"Gelu", convert_gelu},
      {"PRelu", activation("PRelu")},
      {"Selu", activation("Selu")},
      {"Celu", activation("Celu")},
      {"ThresholdedRelu", activation("ThresholdedRelu")},
      {"Mish", activation("Mish")},
      {"Sign", activation("Sign")},
      {"Shrink", activation("Shrink")},
      {"Clip", convert_clip},
      {"Cast", convert_cast},
      {"Pow", convert_pow},
      {"Concat", convert_concat},
      {"Split", convert_split},
      {"Slice", convert_slice},
      {"Gather", convert_gather},
      {"Pad", convert_pad},
      {"Resize", convert_resize},
      {"Upsample", convert_resize},
      {"Squeeze", squeeze(false)},
      {"Unsqueeze", squeeze(true)},
      {"Expand", convert_expand},
      {"ReduceMin", reduce(&Tensor::min, 18)},
      {"ReduceProd", reduce(&Tensor::prod, 18)},
      {"ReduceSumSquare", reduce_composite("sum_square")},
      {"ReduceL1", reduce_composite("l1")},
      {"ReduceL2", reduce_composite("l2")},
      {"ReduceLogSum", reduce_composite("log_sum")},
      {"ReduceLogSumExp", reduce_composite("log_sum_exp")},
      {"ArgMax", arg_reduce(true)},
      {"ArgMin", arg_reduce(false)},
      {"Not", logic("not")},
      {"And", logic("and")},
      {"Or", logic("or")},
      {"Xor", logic("xor")},
      {"Equal", binary(&Tensor::equal)},
      {"Less", binary(&Tensor::less)},
      {"LessOrEqual", binary(&Tensor::less_equal)},
      {"Greater", binary(&Tensor::greater)},
      {"GreaterOrEqual", binary(&Tensor::greater_equal)},
      {"Where", convert_where},
      {"Max", variadic(&Tensor::maximum)},
      {"Min", variadic(&Tensor::minimum)},
      {"LogSoftmax", softmax_like(&Tensor::log_softmax)},
      {"Shape", convert_shape},
      {"Sum", variadic(&Tensor::add)},
      {"Mean", variadic(&Tensor::add, true)},
  };
  return *table;
}

absl::StatusOr<Shape> shape_of(const pb::ValueInfoProto& v) {
  if (!v.type().has_tensor_type()) return absl::UnimplementedError("input '" + v.name() + "' is not a tensor");
  if (!v.type().tensor_type().has_shape())
    return absl::UnimplementedError("input '" + v.name() + "' has no shape");
  Shape shape;
  int k = 0;
  for (const pb::TensorShapeProto::Dimension& d : v.type().tensor_type().shape().dim()) {
    if (d.has_dim_value()) shape.push_back(Dim(d.dim_value()));
    else if (d.has_dim_param() && !d.dim_param().empty()) shape.push_back(Dim(d.dim_param()));
    else shape.push_back(Dim(v.name() + "_dim" + std::to_string(k)));
    ++k;
  }
  return shape;
}

absl::StatusOr<Graph> convert(const pb::ModelProto& model) {
  int64_t opset = -1;
  for (const pb::OperatorSetIdProto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  if (opset < 0 && model.opset_import_size() == 0) opset = 1;
  if (opset < kMinOpset || opset > kMaxOpset)
    return absl::UnimplementedError(str_cat("ONNX opset ", opset, " of the default domain is not supported (", kMinOpset, " to ", kMaxOpset, ")"));
  const pb::GraphProto& gp = model.graph();
  Graph g;
  Importer im(g, opset);
  for (const pb::TensorProto& t : gp.initializer()) {
    absl::StatusOr<NDArray> v = to_ndarray(t);
    if (!v.ok()) return absl::Status(v.status().code(), "initializer: " + std::string(v.status().message()));
    im.add_constant(t.name(), *std::move(v));
  }
  for (const pb::ValueInfoProto& in : gp.input()) {
    if (im.constant(in.name())) continue;  // an initializer listed as an input (old models)
    LOOM_ASSIGN_OR_RETURN(Shape shape, shape_of(in));
    absl::StatusOr<DType> dtype = dtype_of(in.type().tensor_type().elem_type());
    if (!dtype.ok()) return absl::Status(dtype.status().code(), "input '" + in.name() + "': " + std::string(dtype.status().message()));
    im.define(in.name(), g.input(in.name(), shape, *dtype));
  }
  for (int i = 0; i < gp.node_size(); ++i) {
    const pb::NodeProto& np = gp.node(i);
    const std::string where = str_cat("node ", i, " '", np.name(), "' (", np.op_type(), ")");
    if (!np.domain().empty() && np.domain() != "ai.onnx")
      return absl::UnimplementedError(where + ": operator domain '" + np.domain() + "' is not supported");
    auto it = converters().find(np.op_type());
    if (it == converters().end())
      return absl::UnimplementedError(where + ": operator " + np.op_type() + " is not supported");
    Node node(np, im);
    absl::StatusOr<std::vector<Tensor>> outs = it->second(node);
    if (!g.status().ok()) outs = g.status();  // the loom operator's own error says more
    if (!node.attr_error().ok()) outs = node.attr_error();  // what was read instead was wrong
    if (!outs.ok()) return absl::Status(outs.status().code(), where + ": " + std::string(outs.status().message()));
    if (static_cast<int>(outs->size()) < np.output_size())
      for (int k = static_cast<int>(outs->size()); k < np.output_size(); ++k)
        if (!np.output(k).empty())
          return absl::UnimplementedError(str_cat(where, ": output ", k, " is not supported"));
    for (size_t k = 0; k < outs->size() && static_cast<int>(k) < np.output_size(); ++k)
      im.define(np.output(static_cast<int>(k)), (*outs)[k]);
  }
  for (const pb::ValueInfoProto& out : gp.output()) {
    absl::StatusOr<Tensor> t = im.value(out.name());
    if (!t.ok()) return absl::InvalidArgumentError("graph output '" + out.name() + "' is not produced by any node");
    g.output(*t);
  }
  LOOM_RETURN_IF_ERROR(g.status());
  return g;
}

absl::StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::stringstream s;
  s << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read " + path);
  return s.str();
}

}  // namespace

absl::StatusOr<Graph> import_from_memory(std::string_view bytes) {
  pb::ModelProto model;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return absl::DataLossError(str_cat("not a valid ONNX model (", bytes.size(),
                                       " bytes that do not parse as a ModelProto; truncated?)"));
  if (!model.has_graph()) return absl::DataLossError("the ONNX model has no graph");
  return convert(model);
}

absl::StatusOr<Graph> import(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  absl::StatusOr<Graph> g = import_from_memory(bytes);
  if (!g.ok()) return absl::Status(g.status().code(), path + ": " + std::string(g.status().message()));
  return g;
}

absl::StatusOr<NDArray> tensor_from_memory(std::string_view bytes) {
  pb::TensorProto t;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !t.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return absl::DataLossError("not a valid ONNX TensorProto");
  return to_ndarray(t);
}

absl::StatusOr<NDArray> read_tensor(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  absl::StatusOr<NDArray> t = tensor_from_memory(bytes);
  if (!t.ok()) return absl::Status(t.status().code(), path + ": " + std::string(t.status().message()));
  return t;
}

}  // namespace loom::onnx
