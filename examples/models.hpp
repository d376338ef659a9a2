// ResNet-50 and BERT-base built with loom's fluent API, with random weights: what the examples
// and benchmarks compile. Batch norm is already folded into the convolutions (conv + per-channel
// bias), as an engine's converter would; BERT's input is the embedded sequence [1, seq, hidden].
// Inputs, weights and outputs are of the config's dtype (f32, or f16/bf16 for GPUs); the weights'
// values are the same in every dtype up to its rounding. bench/gpu_torch_peers.py builds the
// same two models in PyTorch.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "loom/loom.hpp"

namespace loom_models {

using loom::Dim;
using loom::DType;
using loom::Graph;
using loom::NDArray;
using loom::Tensor;

// Uniform values in [-scale, scale) from a fixed-seed xorshift generator (fast for 100M values).
class Weights {
 public:
  NDArray make(std::vector<int64_t> shape, double scale, DType dtype = DType::f32()) {
    NDArray a(dtype, std::move(shape));
    float* p = dtype == DType::f32() ? a.data_as<float>() : nullptr;
    for (int64_t i = 0; i < a.numel(); ++i) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      const double v = scale * (static_cast<double>(state_ >> 11) * 0x1p-52 - 1.0);
      if (p)
        p[i] = static_cast<float>(v);
      else
        a.set(i, v);
    }
    return a;
  }

 private:
  uint64_t state_ = 0x9e3779b97f4a7c15ull;
};

// ---- BERT-base encoder ------------------------------------------------------------------------

struct BertConfig {
  int layers = 12;
  int64_t hidden = 768, heads = 12, ffn = 3072;
  DType dtype = DType::f32();
  // A second input "attention_mask" [1, 1, 1, seq] added to the scaled scores (0 for tokens,
  // a large negative value for padding), as BERT's encoder takes it.
  bool attention_mask = false;
};

inline Graph build_bert(const BertConfig& c, Weights& w) {
  Graph g;
  const int64_t head_dim = c.hidden / c.heads;
  const Dim seq("seq");
  auto constant = [&](const std::string& name, std::vector<int64_t> shape, double scale) {
    return g.constant(name, w.make(std::move(shape), scale, c.dtype));
  };
  auto dense = [&](const Tensor& x, const std::string& name, int64_t in, int64_t out) {
    return x.matmul(constant(name + ".w", {in, out}, 0.05)) + constant(name + ".b", {out}, 0.02);
  };
  auto norm = [&](const Tensor& x, const std::string& name) {
    return x.layer_norm(constant(name + ".gamma", {c.hidden}, 1.0), constant(name + ".beta", {c.hidden}, 0.1),
                        -1, 1e-12);
  };
  // [1, seq, hidden] -> [1, heads, seq, head_dim] (or [1, heads, head_dim, seq] for keys).
  auto split_heads = [&](const Tensor& x, std::vector<int> perm) {
    return x.reshape({1, seq, c.heads, head_dim}).transpose(std::move(perm));
  };

  Tensor x = g.input("embeddings", {1, seq, c.hidden}, c.dtype);
  std::optional<Tensor> mask;
  if (c.attention_mask) mask = g.input("attention_mask", {1, 1, 1, seq}, c.dtype);
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "layer" + std::to_string(l);
    Tensor q = split_heads(dense(x, p + ".q", c.hidden, c.hidden), {0, 2, 1, 3});
    Tensor k = split_heads(dense(x, p + ".k", c.hidden, c.hidden), {0, 2, 3, 1});
    Tensor v = split_heads(dense(x, p + ".v", c.hidden, c.hidden), {0, 2, 1, 3});
    Tensor scores = q.matmul(k).mul(1.0 / std::sqrt(static_cast<double>(head_dim)));
    if (mask) scores = scores.add(*mask);
    Tensor probs = scores.softmax(-1);
    Tensor context = probs.matmul(v).transpose({0, 2, 1, 3}).reshape({1, seq, c.hidden});
    x = norm(x + dense(context, p + ".out", c.hidden, c.hidden), p + ".norm1");
    Tensor h = dense(x, p + ".ffn1", c.hidden, c.ffn).gelu();
    x = norm(x + dense(h, p + ".ffn2", c.ffn, c.hidden), p + ".norm2");
  }
  g.output(x);
  return g;
}

// ---- ResNet-50 ----------------------------------------------------------------------------------

struct ResNetConfig {
  std::vector<int> blocks = {3, 4, 6, 3};
  int64_t image = 224, classes = 1000, batch = 1;
  DType dtype = DType::f32();
};

inline Graph build_resnet(const ResNetConfig& c, Weights& w) {
  Graph g;
  int conv_id = 0;
  // A convolution with its batch norm folded in: conv + per-channel bias.
  auto conv = [&](const Tensor& x, int64_t out, int kernel, int stride, bool relu) {
    const int64_t in = x.shape()[1].value();
    const std::string name = "conv" + std::to_string(conv_id++);
    Tensor wt = g.constant(name + ".w", w.make({out, in, kernel, kernel},
                                               std::sqrt(3.0 / static_cast<double>(in * kernel * kernel)),
                                               c.dtype));
    Tensor y = x.conv2d(wt, {.stride = stride, .padding = kernel / 2}) +
               g.constant(name + ".b", w.make({out, 1, 1}, 0.05, c.dtype));
    return relu ? y.relu() : y;
  };
  Tensor x = g.input("image", {c.batch, 3, c.image, c.image}, c.dtype);
  x = conv(x, 64, 7, 2, true).max_pool2d({.kernel = 3, .stride = 2, .padding = 1});
  int64_t width = 64;
  for (size_t stage = 0; stage < c.blocks.size(); ++stage, width *= 2) {
    for (int b = 0; b < c.blocks[stage]; ++b) {
      const int stride = stage > 0 && b == 0 ? 2 : 1;
      Tensor shortcut = b == 0 ? conv(x, 4 * width, 1, stride, false) : x;
      Tensor y = conv(conv(conv(x, width, 1, 1, true), width, 3, stride, true), 4 * width, 1, 1, false);
      x = (y + shortcut).relu();
    }
  }
  const int64_t features = x.shape()[1].value();
  Tensor pooled = x.mean({2, 3}).reshape({c.batch, features});
  g.output(pooled.matmul(g.constant("fc.w", w.make({features, c.classes}, 0.05, c.dtype))) +
           g.constant("fc.b", w.make({c.classes}, 0.05, c.dtype)));
  return g;
}

}  // namespace loom_models
