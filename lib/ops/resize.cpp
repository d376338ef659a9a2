// resize (ONNX Resize, nearest and n-linear) over any rank. Each dim maps an output index o to
// the input position x = (o * alpha + beta) / gamma in exact integer arithmetic, so that nearest
// rounding at ties matches the spec; values are interpolated in f32. Default schedule only.

#include <cmath>
#include <numeric>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

using ir::Expr;

// int64 arithmetic that remembers whether any step overflowed.
class CheckedMath {
 public:
  int64_t mul(int64_t a, int64_t b) {
    int64_t r = 0;
    overflow_ |= __builtin_mul_overflow(a, b, &r);
    return r;
  }
  int64_t add(int64_t a, int64_t b) {
    int64_t r = 0;
    overflow_ |= __builtin_add_overflow(a, b, &r);
    return r;
  }
  bool overflow() const { return overflow_; }

 private:
  bool overflow_ = false;
};

// How one dim is read: kSame reads index o, kZero index 0 (an input extent of 1), kMapped
// through floor((o * alpha + beta) / gamma) - offset, whose numerator is never negative for o in
// [0, output extent), so truncating division floors it.
struct DimMap {
  enum class Kind { kSame, kZero, kMapped };
  Kind kind = Kind::kSame;
  int64_t alpha = 1, beta = 0, gamma = 1, offset = 0;
};

// The scale of dim d as a fraction num / den: sizes[d] / n, or the given float exactly (a float is
// an integer of 24 bits times a power of two).
absl::StatusOr<std::pair<int64_t, int64_t>> scale_fraction(const ResizeAttrs& a, size_t d,
                                                           int64_t n) {
  if (a.scales.empty()) return std::pair<int64_t, int64_t>{a.sizes[d], n};
  int e = 0;
  const double f = std::frexp(static_cast<double>(a.scales[d]), &e);
  auto mantissa = static_cast<int64_t>(std::ldexp(f, 24));
  int exponent = e - 24;
  while (mantissa % 2 == 0 && exponent < 0) {
    mantissa /= 2;
    ++exponent;
  }
  if (exponent > 30 || exponent < -62)
    return absl::InvalidArgumentError(
        str_cat("resize scale ", exact_double(a.scales[d]), " of dim ", d, " is out of range"));
  if (exponent >= 0) return std::pair<int64_t, int64_t>{mantissa << exponent, 1};
  return std::pair<int64_t, int64_t>{mantissa, int64_t{1} << -exponent};
}

// The map of dim d from input extent n: the coordinate transformation, then (for nearest) its
// rounding, both folded into one fraction of o.
absl::StatusOr<DimMap> dim_map(const ResizeAttrs& a, size_t d, int64_t n) {
  const int64_t m = a.sizes[d];
  DimMap map;
  if (n == 1) {
    map.kind = DimMap::Kind::kZero;
    return map;
  }
  LOOM_ASSIGN_OR_RETURN(auto scale, scale_fraction(a, d, n));
  const auto [p, q] = scale;  // s = p / q
  CheckedMath c;
  int64_t alpha = 0, beta = 0, gamma = 1;  // x = (o * alpha + beta) / gamma
  switch (a.coordinate) {
    case CoordinateMode::kPytorchHalfPixel:
      if (m == 1) break;  // x = 0
      [[fallthrough]];
    case CoordinateMode::kHalfPixel:  // ((2o + 1) q - p) / 2p
      alpha = c.mul(2, q), beta = q - p, gamma = c.mul(2, p);
      break;
    case CoordinateMode::kAlignCorners: {  // o (n - 1) / (s n - 1) = o (n - 1) q / (p n - q)
      const int64_t width = c.add(c.mul(p, n), -q);
      if (width == 0) break;  // x = 0
      alpha = c.mul(n - 1, q), gamma = width;
      if (gamma < 0) alpha = -alpha, gamma = -gamma;
      break;
    }
    case CoordinateMode::kAsymmetric:  // o q / p
      alpha = q, gamma = p;
      break;
    case CoordinateMode::kTfHalfPixelForNearest:  // (2o + 1) q / 2p
      alpha = c.mul(2, q), beta = q, gamma = c.mul(2, p);
      break;
  }
  const int64_t g = std::gcd(std::gcd(alpha, beta), gamma);
  if (g > 1) alpha /= g, beta /= g, gamma /= g;
  if (!c.overflow() && m == n && alpha == gamma && beta == 0) return map;  // x = o
  if (a.mode == ResizeMode::kNearest) {
    switch (a.nearest) {
      case NearestRounding::kFloor:
        break;
      case NearestRounding::kCeil:  // floor((N + gamma - 1) / gamma)
        beta = c.add(beta, gamma - 1);
        break;
      case NearestRounding::kRoundPreferFloor:  // ceil(x - 1/2) = floor((2N + gamma - 1) / 2gamma)
        alpha = c.mul(2, alpha), beta = c.add(c.mul(2, beta), gamma - 1), gamma = c.mul(2, gamma);
        break;
      case NearestRounding::kRoundPreferCeil:  // floor(x + 1/2) = floor((2N + gamma) / 2gamma)
        alpha = c.mul(2, alpha), beta = c.add(c.mul(2, beta), gamma), gamma = c.mul(2, gamma);
        break;
    }
  }
  // Shift the numerator up by whole multiples of gamma until it is non-negative on [0, m).
  const int64_t last = c.add(c.mul(alpha, m - 1), beta);
  const int64_t lowest = std::min(beta, last);
  if (lowest < 0) {
    map.offset = (-lowest) / gamma + 1;
    beta = c.add(beta, c.mul(map.offset, gamma));
  }
  c.add(c.mul(alpha, m - 1), beta);  // the largest numerator must fit as well
  if (c.overflow())
    return absl::InvalidArgumentError(str_cat("resize dim ", d, ": the mapping from extent ", n,
                                              " to ", m, " with scale ", p, "/", q,
                                              " does not fit in 64-bit integers"));
  map.kind = DimMap::Kind::kMapped;
  map.alpha = alpha, map.beta = beta, map.gamma = gamma;
  return map;
}

absl::StatusOr<TensorType> infer(const std::vector<TensorType>& in, const OpAttrs& attrs) {
  const auto& a = attrs_as<ResizeAttrs>(attrs);
  const TensorType& x = in[0];
  const size_t rank = x.shape.size();
  if (!x.dtype.is_float())
    return absl::InvalidArgumentError("resize needs a floating-point tensor, got " +
                                      x.dtype.to_string());
  if (a.sizes.size() != rank)
    return absl::InvalidArgumentError(str_cat("resize sizes ", int64s_to_string(a.sizes),
                                              " must have one entry per dim of the input ",
                                              shape_to_string(x.shape)));
  if (!a.scales.empty() && a.scales.size() != rank)
    return absl::InvalidArgumentError(
        str_cat("resize scales must be empty or have one entry per "
                "dim of the input ",
                shape_to_string(x.shape), ", got ", a.scales.size()));
  if (!is_static(x.shape))
    return absl::InvalidArgumentError("resize input " + shape_to_string(x.shape) +
                                      ": every dim must be static");
  if (static_cast<size_t>(a.mode) > 1)
    return absl::InvalidArgumentError(str_cat("resize: unknown mode ", static_cast<int>(a.mode)));
  if (static_cast<size_t>(a.coordinate) > 4)
    return absl::InvalidArgumentError(
        str_cat("resize: unknown coordinate mode ", static_cast<int>(a.coordinate)));
  if (static_cast<size_t>(a.nearest) > 3)
    return absl::InvalidArgumentError(
        str_cat("resize: unknown nearest rounding ", static_cast<int>(a.nearest)));
  for (const Dim& dim : x.shape)
    if (dim.value() == 0)
      return absl::InvalidArgumentError("resize input " + shape_to_string(x.shape) +
                                        " is empty: there is nothing to interpolate from");
  Shape out;
  for (size_t d = 0; d < rank; ++d) {
    if (a.sizes[d] <= 0)
      return absl::InvalidArgumentError(
          str_cat("resize sizes must be positive, got ", int64s_to_string(a.sizes)));
    if (!a.scales.empty() && !(std::isfinite(a.scales[d]) && a.scales[d] > 0))
      return absl::InvalidArgumentError(str_cat("resize scales must be positive and finite, got ",
                                                exact_double(a.scales[d]), " for dim ", d));
    LOOM_ASSIGN_OR_RETURN(DimMap unused, dim_map(a, d, x.shape[d].value()));
    (void)unused;
    out.push_back(Dim(a.sizes[d]));
  }
  return TensorType{out, x.dtype};
}

te::Tensor compute(const std::vector<te::Tensor>& in, const OpAttrs& attrs,
                   const std::vector<Expr>& shape, const std::string& name) {
  const auto& a = attrs_as<ResizeAttrs>(attrs);
  const te::Tensor& x = in[0];
  const int rank = x.rank();
  std::vector<DimMap> maps;
  std::vector<int64_t> extents;
  for (int d = 0; d < rank; ++d) {
    extents.push_back(*ir::as_const_int(x.shape()[d]));
    auto map = dim_map(a, static_cast<size_t>(d), extents.back());
    LOOM_CHECK(map.ok(), "resize attributes were checked by infer");
    maps.push_back(*map);
  }
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    auto clamp = [](Expr v, int64_t n) {
      return ir::min(ir::max(std::move(v), Expr(int64_t{0})), Expr(n - 1));
    };
    // Per dim: the lower index, the upper one and the upper one's weight (interpolated dims).
    std::vector<Expr> lower(rank), upper(rank), upper_weight(rank);
    std::vector<int> interpolated;
    for (int d = 0; d < rank; ++d) {
      const DimMap& m = maps[d];
      if (m.kind == DimMap::Kind::kSame) {
        lower[d] = i[d];
        continue;
      }
      if (m.kind == DimMap::Kind::kZero) {
        lower[d] = Expr(int64_t{0});
        continue;
      }
      Expr numerator = i[d] * m.alpha + m.beta;
      Expr quotient = numerator / m.gamma;
      Expr index = quotient - m.offset;
      lower[d] = clamp(index, extents[d]);  // clamped: both sides of a select are evaluated
      if (a.mode == ResizeMode::kNearest) continue;
      upper[d] = clamp(index + int64_t{1}, extents[d]);
      upper_weight[d] = ir::cast(DType::f32(), numerator - quotient * m.gamma) /
                        ir::make_const(DType::f32(), static_cast<double>(m.gamma));
      interpolated.push_back(d);
    }
    if (interpolated.empty()) return x(lower);
    // n-linear: the sum over the 2^k corners of the product of their weights per dim.
    Expr total;
    for (size_t corner = 0; corner < (size_t{1} << interpolated.size()); ++corner) {
      std::vector<Expr> index = lower;
      Expr weight;
      for (size_t k = 0; k < interpolated.size(); ++k) {
        const int d = interpolated[k];
        const bool up = (corner >> k) & 1;
        if (up) index[d] = upper[d];
        Expr w = up ? upper_weight[d] : Expr(1.0f) - upper_weight[d];
        weight = weight.defined() ? weight * w : w;
      }
      Expr term = weight * ir::cast(DType::f32(), x(index));
      total = total.defined() ? total + term : term;
    }
    return ir::cast(x.dtype(), total);
  });
}

}  // namespace

void register_resize_ops(OpRegistry& r) {
  OpDef def;
  def.name = "resize";
  def.num_inputs = 1;
  def.attrs_type = &typeid(ResizeAttrs);
  def.infer = infer;
  def.compute = compute;
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
