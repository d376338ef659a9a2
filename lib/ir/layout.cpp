// Layout: the row-major and strided bases, ALT's primitives, index maps both ways, offsets.

#include "loom/layout/layout.hpp"

#include <algorithm>
#include <numeric>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"

namespace loom {
namespace {

ir::Expr i64(int64_t v) { return ir::Expr(v); }

// a * b, a + b, a / b and a % b with constants folded (layouts of static shapes stay constant).
ir::Expr mul(const ir::Expr& a, const ir::Expr& b) {
  auto x = ir::as_const_int(a), y = ir::as_const_int(b);
  if (x && y) return i64(*x * *y);
  if (x && *x == 1) return b;
  if (y && *y == 1) return a;
  return a * b;
}
ir::Expr add(const ir::Expr& a, const ir::Expr& b) {
  auto x = ir::as_const_int(a), y = ir::as_const_int(b);
  if (x && y) return i64(*x + *y);
  if (x && *x == 0) return b;
  if (y && *y == 0) return a;
  return a + b;
}
ir::Expr div(const ir::Expr& a, int64_t b) {
  auto x = ir::as_const_int(a);
  if (x && *x >= 0) return i64(*x / b);
  return b == 1 ? a : a / i64(b);
}
ir::Expr mod(const ir::Expr& a, int64_t b) {
  auto x = ir::as_const_int(a);
  if (x && *x >= 0) return i64(*x % b);
  return b == 1 ? i64(0) : a % i64(b);
}
ir::Expr ceil_div(const ir::Expr& a, int64_t b) { return div(add(a, i64(b - 1)), b); }

// Row-major strides of extents and the product of all.
std::vector<ir::Expr> row_major_strides(const std::vector<ir::Expr>& extents, ir::Expr* size) {
  std::vector<ir::Expr> strides(extents.size());
  ir::Expr stride = i64(1);
  for (int i = static_cast<int>(extents.size()) - 1; i >= 0; --i) {
    strides[static_cast<size_t>(i)] = stride;
    stride = mul(stride, extents[static_cast<size_t>(i)]);
  }
  *size = stride;
  return strides;
}

}  // namespace

std::string LayoutStep::to_string() const {
  switch (kind) {
    case Kind::kSplit: return str_cat("split(", dim, ", ", a, ")");
    case Kind::kFuse: return str_cat("fuse(", dim, ")");
    case Kind::kPad: return str_cat("pad(", dim, ", ", a, ")");
    case Kind::kUnfold: return str_cat("unfold(", dim, ", ", a, ", ", b, ")");
    case Kind::kSwizzle: return str_cat("swizzle(", dim, ", ", by, ", ", a, ", ", b, ")");
    case Kind::kReorder: {
      std::string s = "reorder(";
      for (size_t k = 0; k < perm.size(); ++k) s += str_cat(k ? ", " : "", perm[k]);
      return s + ")";
    }
  }
  return "?";
}

std::vector<LayoutStep> channels_blocked(int64_t block) {
  return Layout::row_major({i64(1), i64(block), i64(1), i64(1)})
      .split(1, block)
      .reorder({0, 1, 3, 4, 2})
      .steps();
}

std::vector<LayoutStep> channels_last() {
  return Layout::row_major({i64(1), i64(1), i64(1), i64(1)}).reorder({0, 2, 3, 1}).steps();
}

std::vector<LayoutStep> weights_hwio() {
  return Layout::row_major({i64(1), i64(1), i64(1), i64(1)}).reorder({2, 3, 1, 0}).steps();
}

std::string steps_to_string(const std::vector<LayoutStep>& steps) {
  std::string s;
  for (const LayoutStep& step : steps) s += "." + step.to_string();
  return s;
}

Layout Layout::then(const LayoutStep& step) const {
  switch (step.kind) {
    case LayoutStep::Kind::kSplit: return split(step.dim, step.a);
    case LayoutStep::Kind::kReorder: return reorder(step.perm);
    case LayoutStep::Kind::kFuse: return fuse(step.dim);
    case LayoutStep::Kind::kPad: return pad(step.dim, step.a);
    case LayoutStep::Kind::kUnfold: return unfold(step.dim, step.a, step.b);
    case LayoutStep::Kind::kSwizzle: return swizzle(step.dim, step.by, step.a, step.b);
  }
  return failed("unknown primitive");
}

Layout Layout::of(std::vector<ir::Expr> shape, const std::vector<LayoutStep>& steps) {
  Layout l = row_major(std::move(shape));
  for (const LayoutStep& s : steps) l = l.then(s);
  return l;
}

std::optional<ir::Expr> Layout::stride_of(int d) const {
  if (d < 0 || d >= rank() || !ok()) return std::nullopt;
  int at = d;  // the physical dim that is logical dim d
  for (const LayoutStep& s : steps_) {
    switch (s.kind) {
      case LayoutStep::Kind::kSplit:
      case LayoutStep::Kind::kUnfold:
        if (s.dim == at) return std::nullopt;
        if (at > s.dim) ++at;
        break;
      case LayoutStep::Kind::kFuse:
        if (s.dim == at || s.dim + 1 == at) return std::nullopt;
        if (at > s.dim + 1) --at;
        break;
      case LayoutStep::Kind::kReorder:
        at = static_cast<int>(std::find(s.perm.begin(), s.perm.end(), at) - s.perm.begin());
        break;
      case LayoutStep::Kind::kPad:
        break;
      case LayoutStep::Kind::kSwizzle:
        if (s.dim == at || s.by == at) return std::nullopt;
        break;
    }
  }
  return strides_[static_cast<size_t>(at)];
}

Layout Layout::row_major(std::vector<ir::Expr> shape) {
  Layout l;
  l.shape_ = shape;
  l.set_physical(std::move(shape));
  l.row_major_ = true;
  return l;
}

Layout Layout::strided(std::vector<ir::Expr> shape, std::vector<ir::Expr> strides,
                       ir::Expr physical_size) {
  LOOM_CHECK(shape.size() == strides.size(), "layout rank mismatch");
  Layout l = row_major(shape);
  bool same = true;
  for (size_t i = 0; i < strides.size(); ++i) {
    auto a = ir::as_const_int(strides[i]), b = ir::as_const_int(l.strides_[i]);
    same = same && a && b && *a == *b;
  }
  l.row_major_ = same;
  l.strides_ = std::move(strides);
  l.physical_size_ = std::move(physical_size);
  return l;
}

void Layout::set_physical(std::vector<ir::Expr> physical) {
  physical_shape_ = std::move(physical);
  strides_ = row_major_strides(physical_shape_, &physical_size_);
}

Layout Layout::failed(std::string why) const {
  Layout l = *this;
  if (l.status_.ok()) l.status_ = absl::InvalidArgumentError("layout " + to_string() + ": " + why);
  return l;
}

Layout Layout::with(LayoutStep step, std::vector<ir::Expr> physical) const {
  Layout l = *this;
  step.extents_before = physical_shape_;
  l.steps_.push_back(std::move(step));
  l.set_physical(std::move(physical));
  return l;
}

Layout Layout::split(int dim, int64_t factor) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const int r = static_cast<int>(physical_shape_.size());
  if (dim < 0 || dim >= r) return failed(str_cat("split of dim ", dim, " of ", r));
  if (factor < 1) return failed(str_cat("split factor ", factor));
  std::vector<ir::Expr> p = physical_shape_;
  ir::Expr e = p[static_cast<size_t>(dim)];
  p[static_cast<size_t>(dim)] = ceil_div(e, factor);
  p.insert(p.begin() + dim + 1, i64(factor));
  LayoutStep s;
  s.kind = LayoutStep::Kind::kSplit;
  s.dim = dim;
  s.a = factor;
  return with(std::move(s), std::move(p));
}

Layout Layout::reorder(std::vector<int> perm) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const size_t r = physical_shape_.size();
  std::vector<int> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> iota(r);
  std::iota(iota.begin(), iota.end(), 0);
  if (sorted != iota) {
    std::string s;
    for (int p : perm) s += str_cat(s.empty() ? "" : ", ", p);
    return failed(str_cat("reorder(", s, ") is not a permutation of ", r, " dims"));
  }
  std::vector<ir::Expr> p;
  for (int k : perm) p.push_back(physical_shape_[static_cast<size_t>(k)]);
  LayoutStep s;
  s.kind = LayoutStep::Kind::kReorder;
  s.perm = std::move(perm);
  return with(std::move(s), std::move(p));
}

Layout Layout::fuse(int dim) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const int r = static_cast<int>(physical_shape_.size());
  if (dim < 0 || dim + 1 >= r) return failed(str_cat("fuse of dims ", dim, " and ", dim + 1, " of ", r));
  std::vector<ir::Expr> p = physical_shape_;
  p[static_cast<size_t>(dim)] = mul(p[static_cast<size_t>(dim)], p[static_cast<size_t>(dim) + 1]);
  p.erase(p.begin() + dim + 1);
  LayoutStep s;
  s.kind = LayoutStep::Kind::kFuse;
  s.dim = dim;
  return with(std::move(s), std::move(p));
}

Layout Layout::pad(int dim, int64_t multiple) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const int r = static_cast<int>(physical_shape_.size());
  if (dim < 0 || dim >= r) return failed(str_cat("pad of dim ", dim, " of ", r));
  if (multiple < 1) return failed(str_cat("pad to a multiple of ", multiple));
  std::vector<ir::Expr> p = physical_shape_;
  p[static_cast<size_t>(dim)] = mul(ceil_div(p[static_cast<size_t>(dim)], multiple), i64(multiple));
  LayoutStep s;
  s.kind = LayoutStep::Kind::kPad;
  s.dim = dim;
  s.a = multiple;
  return with(std::move(s), std::move(p));
}

Layout Layout::unfold(int dim, int64_t tile, int64_t stride) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const int r = static_cast<int>(physical_shape_.size());
  if (dim < 0 || dim >= r) return failed(str_cat("unfold of dim ", dim, " of ", r));
  if (tile < 1 || stride < 1 || stride > tile)
    return failed(str_cat("unfold with tile ", tile, " and stride ", stride,
                          " (needs 1 <= stride <= tile)"));
  std::optional<int64_t> e = ir::as_const_int(physical_shape_[static_cast<size_t>(dim)]);
  if (!e) return failed("unfold needs a static extent");
  if (*e < tile) return failed(str_cat("unfold of extent ", *e, " into tiles of ", tile));
  std::vector<ir::Expr> p = physical_shape_;
  p[static_cast<size_t>(dim)] = i64((*e - tile + stride - 1) / stride + 1);
  p.insert(p.begin() + dim + 1, i64(tile));
  LayoutStep s;
  s.kind = LayoutStep::Kind::kUnfold;
  s.dim = dim;
  s.a = tile;
  s.b = stride;
  return with(std::move(s), std::move(p));
}

Layout Layout::swizzle(int dim, int by, int64_t width, int64_t step) const {
  if (!ok()) return *this;
  if (!row_major_) return failed("a strided layout takes no primitives");
  const int r = static_cast<int>(physical_shape_.size());
  if (dim < 0 || dim >= r || by < 0 || by >= r || by == dim)
    return failed(str_cat("swizzle of dim ", dim, " by dim ", by, " of ", r));
  if (width < 1 || (width & (width - 1)) != 0 || step < 1)
    return failed(str_cat("swizzle of width ", width, " and step ", step,
                          " (needs a power-of-two width and a positive step)"));
  std::optional<int64_t> e = ir::as_const_int(physical_shape_[static_cast<size_t>(dim)]);
  if (!e || *e % width != 0)
    return failed(str_cat("swizzle of width ", width, " needs a static extent it divides"));
  LayoutStep s;
  s.kind = LayoutStep::Kind::kSwizzle;
  s.dim = dim;
  s.by = by;
  s.a = width;
  s.b = step;
  return with(std::move(s), physical_shape_);
}

namespace {
// Index i of the swizzled dim given j of the dim it is swizzled by (the map is its own inverse).
ir::Expr swizzled(const LayoutStep& s, const ir::Expr& i, const ir::Expr& j) {
  return s.a == 1 ? i : ir::bit_xor(i, mod(div(j, s.b), s.a));
}
}  // namespace

bool Layout::is_injective() const {
  return std::none_of(steps_.begin(), steps_.end(),
                      [](const LayoutStep& s) { return s.kind == LayoutStep::Kind::kUnfold; });
}

std::vector<ir::Expr> Layout::physical_index(const std::vector<ir::Expr>& logical) const {
  LOOM_CHECK(static_cast<int>(logical.size()) == rank(), "layout of rank ", rank(),
             " indexed with ", logical.size(), " indices");
  std::vector<ir::Expr> idx = logical;
  for (const LayoutStep& s : steps_) {
    const size_t d = static_cast<size_t>(s.dim);
    switch (s.kind) {
      case LayoutStep::Kind::kSplit: {
        ir::Expr i = idx[d];
        idx[d] = div(i, s.a);
        idx.insert(idx.begin() + s.dim + 1, mod(i, s.a));
        break;
      }
      case LayoutStep::Kind::kReorder: {
        std::vector<ir::Expr> next;
        for (int k : s.perm) next.push_back(idx[static_cast<size_t>(k)]);
        idx = std::move(next);
        break;
      }
      case LayoutStep::Kind::kFuse:
        idx[d] = add(mul(idx[d], s.extents_before[d + 1]), idx[d + 1]);
        idx.erase(idx.begin() + s.dim + 1);
        break;
      case LayoutStep::Kind::kPad:
        break;
      case LayoutStep::Kind::kUnfold: {
        // The tile starting at or before i, the last tile for the tail.
        const int64_t tiles = (*ir::as_const_int(s.extents_before[d]) - s.a + s.b - 1) / s.b + 1;
        ir::Expr i = idx[d];
        ir::Expr t = ir::as_const_int(i) ? i64(std::min(*ir::as_const_int(i) / s.b, tiles - 1))
                                          : ir::min(div(i, s.b), i64(tiles - 1));
        idx[d] = t;
        idx.insert(idx.begin() + s.dim + 1, add(i, mul(t, i64(-s.b))));
        break;
      }
      case LayoutStep::Kind::kSwizzle:
        idx[d] = swizzled(s, idx[d], idx[static_cast<size_t>(s.by)]);
        break;
    }
  }
  return idx;
}

std::vector<ir::Expr> Layout::logical_index(const std::vector<ir::Expr>& physical) const {
  LOOM_CHECK(physical.size() == physical_shape_.size(), "physical index of rank ",
             physical.size(), " for ", physical_shape_.size(), " physical dims");
  std::vector<ir::Expr> idx = physical;
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    const LayoutStep& s = *it;
    const size_t d = static_cast<size_t>(s.dim);
    switch (s.kind) {
      case LayoutStep::Kind::kSplit:
        idx[d] = add(mul(idx[d], i64(s.a)), idx[d + 1]);
        idx.erase(idx.begin() + s.dim + 1);
        break;
      case LayoutStep::Kind::kReorder: {
        std::vector<ir::Expr> prev(idx.size());
        for (size_t k = 0; k < s.perm.size(); ++k) prev[static_cast<size_t>(s.perm[k])] = idx[k];
        idx = std::move(prev);
        break;
      }
      case LayoutStep::Kind::kFuse: {
        const ir::Expr& inner = s.extents_before[d + 1];
        ir::Expr x = idx[d];
        std::optional<int64_t> c = ir::as_const_int(inner);
        idx[d] = c ? div(x, *c) : x / inner;
        idx.insert(idx.begin() + s.dim + 1, c ? mod(x, *c) : x % inner);
        break;
      }
      case LayoutStep::Kind::kPad:
        break;
      case LayoutStep::Kind::kUnfold:
        idx[d] = add(mul(idx[d], i64(s.b)), idx[d + 1]);
        idx.erase(idx.begin() + s.dim + 1);
        break;
      case LayoutStep::Kind::kSwizzle:
        idx[d] = swizzled(s, idx[d], idx[static_cast<size_t>(s.by)]);
        break;
    }
  }
  return idx;
}

ir::Expr Layout::offset(const std::vector<ir::Expr>& indices) const {
  LOOM_CHECK(static_cast<int>(indices.size()) == rank(), "layout of rank ", rank(), " indexed with ",
             indices.size(), " indices");
  std::vector<ir::Expr> idx = steps_.empty() ? indices : physical_index(indices);
  ir::Expr off;
  for (size_t i = 0; i < idx.size(); ++i) {
    ir::Expr term = ir::is_const_int(strides_[i], 1) ? idx[i] : idx[i] * strides_[i];
    off = off.defined() ? off + term : term;
  }
  return off.defined() ? off : i64(0);
}

std::string Layout::to_string() const {
  std::string s = row_major_ ? "row_major(" : "strided(";
  for (int i = 0; i < rank(); ++i) s += (i ? ", " : "") + ir::to_string(shape_[static_cast<size_t>(i)]);
  if (!row_major_) {
    s += "; strides ";
    for (int i = 0; i < rank(); ++i) s += (i ? ", " : "") + ir::to_string(strides_[static_cast<size_t>(i)]);
  }
  return s + ")" + steps_to_string(steps_);
}

}  // namespace loom
