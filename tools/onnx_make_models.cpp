// onnx_make_models: writes ResNet-50 and BERT-base as ONNX files with random weights (a fixed
// seed), built node by node the way exporters write them: ResNet-50 with Conv + BatchNormalization
// + Relu, MaxPool, GlobalAveragePool, Flatten and Gemm (opset 13); the BERT-base encoder with a
// symbolic sequence length ("seq"), MatMul + Add, Reshape, Transpose, Softmax, Erf-based Gelu
// and LayerNormalization (opset 17). They let tools/loom_run import and time whole models on a
// machine with no network.
//
//   onnx_make_models DIR [--quick]      writes DIR/resnet50.onnx and DIR/bert_base.onnx
//
// and, for quick tests of tools, DIR/mlp.onnx: softmax(relu(x W1 + b1) W2 + b2), x [4, 32].
//
// --quick writes small stand-ins (one block per ResNet stage at 64x64, a 2-layer BERT).

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"

namespace {

namespace pb = ::onnx;

class ModelWriter {
 public:
  ModelWriter(const std::string& name, int opset) {
    model_.set_ir_version(8);
    model_.set_producer_name("loom onnx_make_models");
    pb::OperatorSetIdProto* o = model_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    graph_ = model_.mutable_graph();
    graph_->set_name(name);
  }

  // A graph input: dims >= 0 are static, the names in `symbols` (for dims < 0) are dim_params.
  void input(const std::string& name, const std::vector<int64_t>& dims,
             const std::vector<std::string>& symbols = {}) {
    pb::ValueInfoProto* v = graph_->add_input();
    v->set_name(name);
    pb::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(pb::TensorProto::FLOAT);
    size_t s = 0;
    for (int64_t d : dims) {
      pb::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
      if (d >= 0) dim->set_dim_value(d);
      else dim->set_dim_param(symbols.at(s++));
    }
  }
  void output(const std::string& name) {
    pb::ValueInfoProto* v = graph_->add_output();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(pb::TensorProto::FLOAT);
  }

  // A float initializer of uniform values in [-scale, scale) (or all `fill` when scale is 0).
  std::string weight(const std::string& name, const std::vector<int64_t>& dims, double scale,
                     float fill = 0) {
    pb::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(pb::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = scale == 0 ? fill : static_cast<float>(scale * (2 * uniform() - 1));
    t->set_raw_data(v.data(), v.size() * sizeof(float));
    return name;
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& values) {
    pb::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(pb::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values) t->add_int64_data(v);
    return name;
  }

  struct Attr {
    std::string name;
    std::vector<int64_t> ints;
    float f = 0;
    bool is_float = false;
    bool is_int = false;
  };
  static Attr ints_attr(std::string n, std::vector<int64_t> v) { return {std::move(n), std::move(v)}; }
  static Attr int_attr(std::string n, int64_t v) { return {std::move(n), {v}, 0, false, true}; }
  static Attr float_attr(std::string n, float v) { return {std::move(n), {}, v, true, false}; }

  std::string node(const std::string& op, const std::vector<std::string>& inputs,
                   const std::vector<Attr>& attrs = {}) {
    pb::NodeProto* n = graph_->add_node();
    const std::string out = op + "_" + std::to_string(graph_->node_size());
    n->set_op_type(op);
    n->set_name(out);
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(out);
    for (const Attr& a : attrs) {
      pb::AttributeProto* p = n->add_attribute();
      p->set_name(a.name);
      if (a.is_float) {
        p->set_type(pb::AttributeProto::FLOAT);
        p->set_f(a.f);
      } else if (a.is_int) {
        p->set_type(pb::AttributeProto::INT);
        p->set_i(a.ints[0]);
      } else {
        p->set_type(pb::AttributeProto::INTS);
        for (int64_t v : a.ints) p->add_ints(v);
      }
    }
    return out;
  }

  bool write(const std::filesystem::path& path) const {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    return f && model_.SerializeToOstream(&f);
  }

 private:
  double uniform() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return static_cast<double>(state_ >> 11) * 0x1p-53;
  }
  pb::ModelProto model_;
  pb::GraphProto* graph_;
  uint64_t state_ = 0x2545f4914f6cdd1dull;
};

using A = ModelWriter;

void write_resnet(const std::filesystem::path& path, bool quick) {
  ModelWriter m("resnet50", 13);
  const int64_t image = quick ? 64 : 224;
  m.input("image", {1, 3, image, image});
  int id = 0;
  // Conv (no bias) + BatchNormalization (+ Relu), as exported from a framework.
  auto conv_bn = [&](const std::string& x, int64_t in, int64_t out, int64_t k, int64_t stride,
                     bool relu) {
    const std::string p = "conv" + std::to_string(id++);
    const int64_t pad = k / 2;
    std::string y = m.node("Conv", {x, m.weight(p + ".w", {out, in, k, k}, std::sqrt(3.0 / (in * k * k)))},
                           {A::ints_attr("kernel_shape", {k, k}), A::ints_attr("strides", {stride, stride}),
                            A::ints_attr("pads", {pad, pad, pad, pad})});
    y = m.node("BatchNormalization",
               {y, m.weight(p + ".bn.scale", {out}, 0.2, 0), m.weight(p + ".bn.bias", {out}, 0.05),
                m.weight(p + ".bn.mean", {out}, 0.05), m.weight(p + ".bn.var", {out}, 0, 1.0f)},
               {A::float_attr("epsilon", 1e-5f)});
    return relu ? m.node("Relu", {y}) : y;
  };
  std::string x = conv_bn("image", 3, 64, 7, 2, true);
  x = m.node("MaxPool", {x}, {A::ints_attr("kernel_shape", {3, 3}), A::ints_attr("strides", {2, 2}),
                             A::ints_attr("pads", {1, 1, 1, 1})});
  const std::vector<int> blocks = quick ? std::vector<int>{1, 1, 1, 1} : std::vector<int>{3, 4, 6, 3};
  int64_t channels = 64, width = 64;
  for (size_t stage = 0; stage < blocks.size(); ++stage, width *= 2) {
    for (int b = 0; b < blocks[stage]; ++b) {
      const int64_t stride = stage > 0 && b == 0 ? 2 : 1;
      std::string shortcut = b == 0 ? conv_bn(x, channels, 4 * width, 1, stride, false) : x;
      std::string y = conv_bn(x, channels, width, 1, 1, true);
      y = conv_bn(y, width, width, 3, stride, true);
      y = conv_bn(y, width, 4 * width, 1, 1, false);
      x = m.node("Relu", {m.node("Add", {y, shortcut})});
      channels = 4 * width;
    }
  }
  x = m.node("Flatten", {m.node("GlobalAveragePool", {x})}, {A::int_attr("axis", 1)});
  x = m.node("Gemm", {x, m.weight("fc.w", {1000, channels}, 0.05), m.weight("fc.b", {1000}, 0.05)},
             {A::int_attr("transB", 1)});
  m.output(x);
  if (!m.write(path)) std::fprintf(stderr, "onnx_make_models: cannot write %s\n", path.c_str());
}

void write_bert(const std::filesystem::path& path, bool quick) {
  ModelWriter m("bert_base", 17);
  const int64_t hidden = 768, heads = 12, head_dim = 64, ffn = 3072;
  const int layers = quick ? 2 : 12;
  m.input("embeddings", {1, -1, hidden}, {"seq"});
  const std::string split_shape = m.ints("split_heads", {0, 0, heads, head_dim});
  const std::string merge_shape = m.ints("merge_heads", {0, 0, hidden});
  const std::string scale = m.weight("attention_scale", {}, 0, static_cast<float>(std::sqrt(head_dim)));
  const std::string half = m.weight("half", {}, 0, 0.5f), one = m.weight("one", {}, 0, 1.0f);
  const std::string sqrt2 = m.weight("sqrt2", {}, 0, static_cast<float>(std::sqrt(2.0)));
  auto dense = [&](const std::string& x, const std::string& p, int64_t in, int64_t out) {
    return m.node("Add", {m.node("MatMul", {x, m.weight(p + ".w", {in, out}, 0.05)}), m.weight(p + ".b", {out}, 0.02)});
  };
  auto norm = [&](const std::string& x, const std::string& p) {
    return m.node("LayerNormalization", {x, m.weight(p + ".gamma", {hidden}, 1.0), m.weight(p + ".beta", {hidden}, 0.1)},
                  {A::int_attr("axis", -1), A::float_attr("epsilon", 1e-12f)});
  };
  std::string x = "embeddings";
  for (int l = 0; l < layers; ++l) {
    const std::string p = "layer" + std::to_string(l);
    auto heads_of = [&](const std::string& name, std::vector<int64_t> perm) {
      return m.node("Transpose", {m.node("Reshape", {dense(x, p + name, hidden, hidden), split_shape})},
                    {A::ints_attr("perm", std::move(perm))});
    };
    std::string q = heads_of(".q", {0, 2, 1, 3}), k = heads_of(".k", {0, 2, 3, 1}), v = heads_of(".v", {0, 2, 1, 3});
    std::string probs = m.node("Softmax", {m.node("Div", {m.node("MatMul", {q, k}), scale})}, {A::int_attr("axis", -1)});
    std::string context = m.node("Reshape", {m.node("Transpose", {m.node("MatMul", {probs, v})}, {A::ints_attr("perm", {0, 2, 1, 3})}),
                                             merge_shape});
    x = norm(m.node("Add", {x, dense(context, p + ".out", hidden, hidden)}), p + ".norm1");
    std::string h = dense(x, p + ".ffn1", hidden, ffn);
    // gelu(h) = 0.5 * h * (1 + erf(h / sqrt 2))
    h = m.node("Mul", {m.node("Mul", {h, half}), m.node("Add", {one, m.node("Erf", {m.node("Div", {h, sqrt2})})})});
    x = norm(m.node("Add", {x, dense(h, p + ".ffn2", ffn, hidden)}), p + ".norm2");
  }
  m.output(x);
  if (!m.write(path)) std::fprintf(stderr, "onnx_make_models: cannot write %s\n", path.c_str());
}

void write_mlp(const std::filesystem::path& path) {
  ModelWriter m("mlp", 13);
  m.input("x", {4, 32});
  std::string h = m.node("Add", {m.node("MatMul", {"x", m.weight("w1", {32, 48}, 0.2)}), m.weight("b1", {48}, 0.1)});
  h = m.node("Add", {m.node("MatMul", {m.node("Relu", {h}), m.weight("w2", {48, 10}, 0.2)}), m.weight("b2", {10}, 0.1)});
  m.output(m.node("Softmax", {h}, {A::int_attr("axis", -1)}));
  if (!m.write(path)) std::fprintf(stderr, "onnx_make_models: cannot write %s\n", path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (argc == 3 && std::string(argv[2]) != "--quick") || argc > 3) {
    std::fprintf(stderr, "usage: onnx_make_models DIR [--quick]\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const bool quick = argc == 3;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  write_resnet(dir / "resnet50.onnx", quick);
  write_bert(dir / "bert_base.onnx", quick);
  write_mlp(dir / "mlp.onnx");
  for (const char* f : {"resnet50.onnx", "bert_base.onnx", "mlp.onnx"}) {
    if (!std::filesystem::exists(dir / f)) return 1;
    std::printf("wrote %s (%.1f MB)\n", (dir / f).c_str(),
                static_cast<double>(std::filesystem::file_size(dir / f)) / 1e6);
  }
  return 0;
}
