// fuse_attention: matmul(softmax(matmul(q, kt) * c [+ mask], last axis), v), with c a mul_scalar's
// value, a one-element constant or no scale at all, an optional mask added after the scale (of q's
// type, broadcasting to the scores), and each intermediate read only there, becomes
// attention(q, kt, v[, mask]) with scale c,
// which a GPU template computes in one kernel. Only where that template applies: f16 or bf16 on
// sm_80 or later, the same batch dims, static head dims D and E, multiples of 16 up to 256.

#include "graph/passes/rewrite.hpp"
#include "loom/graph/passes.hpp"
#include "loom/ops/attrs.hpp"

namespace loom::passes {
namespace {

bool is_op(const Node& n, const char* op) { return n.kind == Node::Kind::kOp && n.op == op; }

// Whether q, kt and v suit the tensor-core attention template.
bool suits_template(const TensorType& q, const TensorType& kt, const TensorType& v) {
  const DType t = q.dtype;
  if ((t != DType::f16() && t != DType::bf16()) || kt.dtype != t || v.dtype != t) return false;
  const size_t rank = q.shape.size();
  if (rank < 2 || kt.shape.size() != rank || v.shape.size() != rank) return false;
  // Sequence and batch dims may be symbolic (each binding's compile is static); head dims not.
  if (!q.shape[rank - 1].is_static() || !v.shape[rank - 1].is_static()) return false;
  for (size_t d = 0; d + 2 < rank; ++d)
    if (q.shape[d] != kt.shape[d] || q.shape[d] != v.shape[d]) return false;
  const int64_t d = q.shape[rank - 1].value(), e = v.shape[rank - 1].value();
  return d % 16 == 0 && e % 16 == 0 && d <= 256 && e <= 256;
}

}  // namespace

absl::StatusOr<Graph> fuse_attention(const Graph& g, const Target& target) {
  if (!target.is_cuda() || target.sm_arch() < 80) return g;
  const std::vector<Node>& nodes = g.nodes();
  const Uses uses(g);
  Graph out;
  std::vector<Tensor> map;
  LOOM_ASSIGN_OR_RETURN(
      Graph result,
      rebuild(g, out, map, [&](int id, const std::vector<Tensor>&) -> std::optional<Tensor> {
        const Node& pv = nodes[id];
        if (!is_op(pv, "matmul")) return std::nullopt;
        const Node& probs = nodes[pv.inputs[0]];
        if (!is_op(probs, "softmax") || uses.readers[pv.inputs[0]] != 1) return std::nullopt;
        const int rank = static_cast<int>(probs.type.shape.size());
        const int axis = attrs_as<ops::SoftmaxAttrs>(*probs.attrs).axis;
        if (axis != -1 && axis != rank - 1) return std::nullopt;
        int scores = probs.inputs[0];
        // An added mask: the other operand of an add whose one operand is the scaled scores.
        int mask = -1;
        if (is_op(nodes[scores], "add") && uses.readers[scores] == 1) {
          const Node& add = nodes[scores];
          for (int side : {0, 1}) {
            const Node& x = nodes[add.inputs[side]];
            if ((is_op(x, "matmul") || is_op(x, "mul_scalar") || is_op(x, "mul")) &&
                uses.readers[add.inputs[side]] == 1 && x.type.shape == add.type.shape) {
              mask = add.inputs[1 - side];
              scores = add.inputs[side];
              break;
            }
          }
          if (mask < 0) return std::nullopt;
        }
        double scale = 1;
        if (is_op(nodes[scores], "mul_scalar") && uses.readers[scores] == 1) {
          scale = attrs_as<ops::ScalarAttrs>(*nodes[scores].attrs).value;
          scores = nodes[scores].inputs[0];
        } else if (is_op(nodes[scores], "mul") && uses.readers[scores] == 1) {
          const Node& mul = nodes[scores];
          for (int side : {0, 1}) {
            const Node& c = nodes[mul.inputs[side]];
            if (c.kind == Node::Kind::kConstant && c.value.numel() == 1 &&
                nodes[mul.inputs[1 - side]].type.shape == mul.type.shape) {
              scale = c.value.get(0);
              scores = mul.inputs[1 - side];
              break;
            }
          }
          if (scores == probs.inputs[0]) return std::nullopt;  // not a scale
        }
        const Node& qk = nodes[scores];
        if (!is_op(qk, "matmul") || uses.readers[scores] != 1) return std::nullopt;
        const int q = qk.inputs[0], kt = qk.inputs[1], v = pv.inputs[1];
        if (!suits_template(nodes[q].type, nodes[kt].type, nodes[v].type)) return std::nullopt;
        if (mask >= 0 && nodes[mask].type.dtype != nodes[q].type.dtype) return std::nullopt;
        auto attrs = std::make_shared<ops::AttentionAttrs>();
        attrs->scale = scale;
        std::vector<Tensor> inputs = {map[q], map[kt], map[v]};
        if (mask >= 0) inputs.push_back(map[mask]);
        return keep_layout(out.apply("attention", inputs, attrs), pv);
      }));
  return rebuild(result, nullptr);  // drops the operators that were fused
}

}  // namespace loom::passes
