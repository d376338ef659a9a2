// The simplifier: constant folding, a canonical linear form for integer index arithmetic, and
// rules that use bounds (loop ranges, enclosing ifs) to decide comparisons and drop / and %.

#include "loom/ir/simplify.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::ir {
namespace {

// Interval ends are exact 128-bit values: the true (unwrapped) range of an operation on 64-bit
// operands is computed first and compared with its type's range, so wraparound is never missed.
using Wide = __int128;

Wide type_min(DType t) {
  switch (t.code()) {
    case DTypeCode::kI8: return std::numeric_limits<int8_t>::min();
    case DTypeCode::kI32: return std::numeric_limits<int32_t>::min();
    case DTypeCode::kI64: return std::numeric_limits<int64_t>::min();
    default: return 0;
  }
}

Wide type_max(DType t) {
  switch (t.code()) {
    case DTypeCode::kI8: return std::numeric_limits<int8_t>::max();
    case DTypeCode::kI32: return std::numeric_limits<int32_t>::max();
    case DTypeCode::kI64: return std::numeric_limits<int64_t>::max();
    case DTypeCode::kBool: return 1;
    default: return 0;
  }
}

// Reduces an exact value to t's width, as two's-complement arithmetic in generated code does.
int64_t wrap(DType t, Wide v) {
  auto w = static_cast<int64_t>(static_cast<uint64_t>(v));
  switch (t.code()) {
    case DTypeCode::kI8: return static_cast<int8_t>(w);
    case DTypeCode::kI32: return static_cast<int32_t>(w);
    default: return w;
  }
}

Expr int_const(DType t, Wide v) {
  return Broadcast::make(IntImm::make(t.element_of(), wrap(t, v)), t.lanes());
}
Expr bool_const(int lanes, bool v) {
  return Broadcast::make(IntImm::make(DType::boolean(), v), lanes);
}

bool is_const_or_var(const Expr& e) {
  return e.is<VarNode>() || as_const_int(e) || as_const_float(e);
}

// An inclusive range of values an integer (or bool) expression can take, in every lane.
struct Span {
  Wide lo, hi;
};
Span full_span(DType t) { return {type_min(t), type_max(t)}; }
bool fits(const Span& s, DType t) { return s.lo >= type_min(t) && s.hi <= type_max(t); }
// A true range that leaves t's range may wrap anywhere, so only t's whole range is certain.
Span in_type(const Span& s, DType t) { return fits(s, t) ? s : full_span(t); }

using Scope = std::map<const VarNode*, Span>;

// Deep equality with variables and buffers compared by identity (structural_equal would match
// two different free variables by position).
bool same_expr(const Expr& a, const Expr& b) {
  if (a.same_as(b)) return true;
  if (!a.defined() || !b.defined() || a.kind() != b.kind() || a.type() != b.type()) return false;
  auto same_list = [](const std::vector<Expr>& x, const std::vector<Expr>& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!same_expr(x[i], y[i])) return false;
    return true;
  };
  switch (a.kind()) {
    case ExprKind::kIntImm: return a.as<IntImm>()->value == b.as<IntImm>()->value;
    case ExprKind::kFloatImm: {
      double x = a.as<FloatImm>()->value, y = b.as<FloatImm>()->value;
      return x == y && std::signbit(x) == std::signbit(y);
    }
    case ExprKind::kVar: return false;
    case ExprKind::kNot: return same_expr(a.as<Not>()->a, b.as<Not>()->a);
    case ExprKind::kSelect: {
      auto *x = a.as<Select>(), *y = b.as<Select>();
      return same_expr(x->cond, y->cond) && same_expr(x->true_value, y->true_value) &&
             same_expr(x->false_value, y->false_value);
    }
    case ExprKind::kCast: return same_expr(a.as<Cast>()->value, b.as<Cast>()->value);
    case ExprKind::kLoad: {
      auto *x = a.as<Load>(), *y = b.as<Load>();
      return x->buffer == y->buffer && same_list(x->indices, y->indices);
    }
    case ExprKind::kCall: {
      auto *x = a.as<Call>(), *y = b.as<Call>();
      return x->name == y->name && same_list(x->args, y->args);
    }
    case ExprKind::kRamp: {
      auto *x = a.as<Ramp>(), *y = b.as<Ramp>();
      return x->lanes == y->lanes && same_expr(x->base, y->base) && same_expr(x->stride, y->stride);
    }
    case ExprKind::kBroadcast: {
      auto *x = a.as<Broadcast>(), *y = b.as<Broadcast>();
      return x->lanes == y->lanes && same_expr(x->value, y->value);
    }
    case ExprKind::kLet: {
      auto *x = a.as<Let>(), *y = b.as<Let>();
      return x->var.same_as(y->var) && same_expr(x->value, y->value) && same_expr(x->body, y->body);
    }
    case ExprKind::kReduce: return false;
    default: {
      BinaryView x = binary_operands(a), y = binary_operands(b);
      return same_expr(*x.a, *y.a) && same_expr(*x.b, *y.b);
    }
  }
}

// Whether var occurs in an expression or statement, including buffer shapes and strides.
class VarUse : public IRVisitor {
 public:
  explicit VarUse(const VarNode* v) : var_(v) {}
  using IRVisitor::visit;
  bool found = false;

 protected:
  void visit_var(const VarNode* op) override { found |= op == var_; }
  void visit_buffer(const BufferNode& b) {
    for (const Expr& e : b.shape) visit(e);
    for (const Expr& e : b.layout.strides()) visit(e);
    visit(b.layout.physical_size());
  }
  void visit_load(const Load* op) override {
    visit_buffer(*op->buffer);
    IRVisitor::visit_load(op);
  }
  void visit_store(const Store* op) override {
    visit_buffer(*op->buffer);
    IRVisitor::visit_store(op);
  }
  void visit_allocate(const Allocate* op) override {
    visit_buffer(*op->buffer);
    IRVisitor::visit_allocate(op);
  }

 private:
  const VarNode* var_;
};

template <typename T>
bool uses_var(const T& x, const Var& v) {
  VarUse u(v.node());
  u.visit(x);
  return u.found;
}

// ---- Linear forms -------------------------------------------------------------------------

// A hash consistent with same_expr, so that long sums find repeated terms without comparing
// every pair (an unrolled sum of n loads would otherwise cost n^3).
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}
uint64_t node_seed(ExprKind k, DType t) {
  return mix(static_cast<uint64_t>(k), (static_cast<uint64_t>(t.code()) << 32) |
                                           static_cast<uint32_t>(t.lanes()));
}
uint64_t expr_hash(const Expr& e) {
  uint64_t h = node_seed(e.kind(), e.type());
  auto ptr = [](const void* p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); };
  switch (e.kind()) {
    case ExprKind::kIntImm: return mix(h, static_cast<uint64_t>(e.as<IntImm>()->value));
    case ExprKind::kFloatImm: return mix(h, std::hash<double>()(e.as<FloatImm>()->value));
    case ExprKind::kVar: return mix(h, ptr(e.get()));
    case ExprKind::kNot: return mix(h, expr_hash(e.as<Not>()->a));
    case ExprKind::kSelect: {
      auto* n = e.as<Select>();
      return mix(mix(mix(h, expr_hash(n->cond)), expr_hash(n->true_value)),
                 expr_hash(n->false_value));
    }
    case ExprKind::kCast: return mix(h, expr_hash(e.as<Cast>()->value));
    case ExprKind::kLoad: {
      h = mix(h, ptr(e.as<Load>()->buffer.get()));
      for (const Expr& i : e.as<Load>()->indices) h = mix(h, expr_hash(i));
      return h;
    }
    case ExprKind::kCall: {
      h = mix(h, std::hash<std::string>()(e.as<Call>()->name));
      for (const Expr& a : e.as<Call>()->args) h = mix(h, expr_hash(a));
      return h;
    }
    case ExprKind::kRamp: {
      auto* r = e.as<Ramp>();
      return mix(mix(mix(h, r->lanes), expr_hash(r->base)), expr_hash(r->stride));
    }
    case ExprKind::kBroadcast:
      return mix(mix(h, e.as<Broadcast>()->lanes), expr_hash(e.as<Broadcast>()->value));
    case ExprKind::kLet: {
      auto* l = e.as<Let>();
      return mix(mix(mix(h, ptr(l->var.get())), expr_hash(l->value)), expr_hash(l->body));
    }
    case ExprKind::kReduce: return mix(h, ptr(e.get()));
    default: {
      BinaryView v = binary_operands(e);
      return mix(mix(h, expr_hash(*v.a)), expr_hash(*v.b));
    }
  }
}

// sum(coeff * term) + constant. Coefficients are reduced to the type's width: + - * are exact
// modulo 2^bits, so rebuilding an expression from its form never changes a wrapped result.
struct Linear {
  DType type;
  // Distinct terms; a coefficient may drop to 0 while the form is built, finish() removes it.
  std::vector<std::pair<Expr, int64_t>> terms;
  int64_t constant = 0;
  std::unordered_multimap<uint64_t, size_t> index;  // expr_hash of a term -> its position

  std::optional<size_t> find(const Expr& t, uint64_t h) const {
    auto [lo, hi] = index.equal_range(h);
    for (auto it = lo; it != hi; ++it)
      if (same_expr(terms[it->second].first, t)) return it->second;
    return std::nullopt;
  }
};

void add_term(Linear& l, const Expr& t, Wide coeff) {
  int64_t c = wrap(l.type, coeff);
  if (c == 0) return;
  uint64_t h = expr_hash(t);
  if (auto i = l.find(t, h)) {
    l.terms[*i].second = wrap(l.type, Wide(l.terms[*i].second) + c);
    return;
  }
  l.index.emplace(h, l.terms.size());
  l.terms.emplace_back(t, c);
}

void linearize_into(Linear& l, const Expr& e, Wide coeff) {
  coeff = wrap(l.type, coeff);
  if (auto c = as_const_int(e)) {
    l.constant = wrap(l.type, l.constant + coeff * *c);
    return;
  }
  switch (e.kind()) {
    case ExprKind::kAdd:
      linearize_into(l, e.as<Add>()->a, coeff);
      linearize_into(l, e.as<Add>()->b, coeff);
      return;
    case ExprKind::kSub:
      linearize_into(l, e.as<Sub>()->a, coeff);
      linearize_into(l, e.as<Sub>()->b, -coeff);
      return;
    case ExprKind::kMul: {
      auto* m = e.as<Mul>();
      if (auto c = as_const_int(m->b)) return linearize_into(l, m->a, coeff * *c);
      if (auto c = as_const_int(m->a)) return linearize_into(l, m->b, coeff * *c);
      break;
    }
    default: break;
  }
  add_term(l, e, coeff);
}

// (x / a % b) * a + x % a is x % (a * b) for positive constants a and b (truncating / and %
// agree: x / a / b is x / (a * b)). Merges such pairs, scaled alike, until none is left: the
// offset of a row-major index split into dims, ((x / (b a)) * b + x / a % b) * a + x % a, then
// folds whole (below).
void merge_mods(Linear& l) {
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t i = 0; i < l.terms.size(); ++i) {
      auto* outer = l.terms[i].first.as<Mod>();
      auto* inner = outer ? outer->a.as<Div>() : nullptr;
      auto a = inner ? as_const_int(inner->b) : std::nullopt;
      auto b = outer ? as_const_int(outer->b) : std::nullopt;
      if (!a || !b || *a <= 0 || *b <= 0 || l.terms[i].second == 0) continue;
      Expr low = Mod::make(inner->a, inner->b);
      auto j = l.find(low, expr_hash(low));
      if (!j || l.terms[*j].second == 0) continue;
      const int64_t coeff = l.terms[*j].second;
      if (l.terms[i].second != wrap(l.type, Wide(coeff) * *a)) continue;
      const Wide ab = Wide(*a) * *b;
      const DType t = inner->a.type();
      if (ab > std::numeric_limits<int64_t>::max() || Wide(wrap(t, ab)) != ab) continue;
      l.terms[i].second = l.terms[*j].second = 0;
      add_term(l, Mod::make(inner->a, int_const(t, ab)), coeff);
      merged = true;
    }
  }
}

// (x / c) * c + x % c is x for every non-zero constant c: truncating / and % agree.
// Then drops zero coefficients.
void finish(Linear& l) {
  bool has_mod = std::any_of(l.terms.begin(), l.terms.end(),
                             [](const auto& t) { return t.first.template is<Mod>(); });
  if (has_mod) merge_mods(l);
  for (size_t i = 0; has_mod && i < l.terms.size(); ++i) {
    auto* d = l.terms[i].first.as<Div>();
    auto c = d ? as_const_int(d->b) : std::nullopt;
    if (!c || *c == 0 || l.terms[i].second == 0) continue;
    Expr mod = Mod::make(d->a, d->b);
    auto j = l.find(mod, expr_hash(mod));
    if (!j || l.terms[*j].second == 0) continue;
    int64_t coeff = l.terms[*j].second;
    if (l.terms[i].second != wrap(l.type, Wide(coeff) * *c)) continue;
    l.terms[i].second = l.terms[*j].second = 0;
    linearize_into(l, d->a, coeff);  // may append terms, which this loop then visits
  }
  std::vector<std::pair<Expr, int64_t>> kept;
  l.index.clear();
  for (auto& t : l.terms) {
    if (t.second == 0) continue;
    l.index.emplace(expr_hash(t.first), kept.size());
    kept.push_back(std::move(t));
  }
  l.terms = std::move(kept);
}

Linear linearize(const Expr& e) {
  Linear l{e.type(), {}, 0, {}};
  linearize_into(l, e, 1);
  finish(l);
  return l;
}

// Canonical text of a linear form: terms with positive coefficients in order of appearance,
// then the subtracted ones, then the constant: (i*8 + j) - k - 3.
Expr rebuild(const Linear& l) {
  DType t = l.type;
  const auto tmin = static_cast<int64_t>(type_min(t));
  auto scaled = [&](const Expr& e, int64_t c) {
    return c == 1 ? e : Mul::make(e, int_const(t, c));
  };
  Expr sum;
  for (const auto& [e, c] : l.terms) {
    if (c < 0 && c != tmin) continue;
    sum = sum.defined() ? Add::make(sum, scaled(e, c)) : scaled(e, c);
  }
  int64_t k = l.constant;
  for (const auto& [e, c] : l.terms) {
    if (c > 0 || c == tmin) continue;
    if (!sum.defined()) {
      sum = int_const(t, k > 0 ? k : 0);
      if (k > 0) k = 0;
    }
    sum = Sub::make(sum, scaled(e, -c));
  }
  if (!sum.defined()) return int_const(t, k);
  if (k > 0 || k == tmin) return Add::make(sum, int_const(t, k));
  if (k < 0) return Sub::make(sum, int_const(t, -Wide(k)));
  return sum;
}

// ---- Bounds -------------------------------------------------------------------------------

// Restores a variable's previous bounds when it goes out of scope.
class ScopedSpan {
 public:
  ScopedSpan(Scope& scope, const VarNode* v, Span s) : scope_(scope), var_(v) {
    auto it = scope.find(v);
    if (it != scope.end()) old_ = it->second;
    scope[v] = s;
  }
  ~ScopedSpan() {
    if (old_) scope_[var_] = *old_;
    else scope_.erase(var_);
  }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;

 private:
  Scope& scope_;
  const VarNode* var_;
  std::optional<Span> old_;
};

class Bounder {
 public:
  explicit Bounder(Scope& scope) : scope_(scope) {}

  // Range of an integer or bool expression over all lanes and all values of its variables.
  Span span(const Expr& e);

  // The true (unwrapped) range of a linear form; nullopt if it does not even fit 128 bits.
  std::optional<Span> linear_span(const Linear& l) { return sum_span(l, nullptr); }
  // The true range of a - b, from their linear forms (common terms cancel).
  std::optional<Span> difference_span(const Linear& a, const Linear& b) { return sum_span(a, &b); }

 private:
  std::optional<Span> sum_span(const Linear& a, const Linear* b);
  Span mod_span(const Span& a, const Span& b);

  Scope& scope_;
};

std::optional<Span> Bounder::sum_span(const Linear& a, const Linear* b) {
  Span s{Wide(a.constant) - (b ? Wide(b->constant) : 0), 0};
  s.hi = s.lo;
  auto add = [&](const Expr& e, Wide c) {
    Span t = span(e);
    Wide p, q;
    if (__builtin_mul_overflow(t.lo, c, &p) || __builtin_mul_overflow(t.hi, c, &q)) return false;
    return !__builtin_add_overflow(s.lo, std::min(p, q), &s.lo) &&
           !__builtin_add_overflow(s.hi, std::max(p, q), &s.hi);
  };
  std::vector<bool> matched(b ? b->terms.size() : 0, false);
  for (const auto& [e, c] : a.terms) {
    Wide coeff = c;
    if (b) {
      if (auto j = b->find(e, expr_hash(e))) {
        matched[*j] = true;
        coeff -= b->terms[*j].second;
      }
    }
    if (coeff != 0 && !add(e, coeff)) return std::nullopt;
  }
  for (size_t j = 0; b && j < b->terms.size(); ++j)
    if (!matched[j] && !add(b->terms[j].first, -Wide(b->terms[j].second))) return std::nullopt;
  return s;
}

// Truncating %: the result takes the dividend's sign and is smaller than the divisor's magnitude.
Span Bounder::mod_span(const Span& a, const Span& b) {
  Wide m_lo = std::min(b.lo < 0 ? -b.lo : b.lo, b.hi < 0 ? -b.hi : b.hi);
  Wide m_hi = std::max(b.lo < 0 ? -b.lo : b.lo, b.hi < 0 ? -b.hi : b.hi);
  if (a.lo > -m_lo && a.hi < m_lo) return a;
  return {a.lo >= 0 ? 0 : std::max(a.lo, -(m_hi - 1)), a.hi <= 0 ? 0 : std::min(a.hi, m_hi - 1)};
}

Span Bounder::span(const Expr& e) {
  DType t = e.type();
  LOOM_CHECK(!t.is_float(), "integer bounds of a float expression");
  auto linear = [&]() {
    auto s = linear_span(linearize(e));
    return s ? in_type(*s, t) : full_span(t);
  };
  switch (e.kind()) {
    case ExprKind::kIntImm: return {e.as<IntImm>()->value, e.as<IntImm>()->value};
    case ExprKind::kVar: {
      auto it = scope_.find(e.as<VarNode>());
      return it == scope_.end() ? full_span(t) : it->second;
    }
    case ExprKind::kAdd:
    case ExprKind::kSub: return linear();
    case ExprKind::kMul: {
      auto* m = e.as<Mul>();
      if (as_const_int(m->a) || as_const_int(m->b)) return linear();
      Span a = span(m->a), b = span(m->b);
      Wide c[4] = {a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi};
      return in_type({*std::min_element(c, c + 4), *std::max_element(c, c + 4)}, t);
    }
    case ExprKind::kDiv: {
      Span a = span(e.as<Div>()->a), b = span(e.as<Div>()->b);
      if (b.lo <= 0 && b.hi >= 0) return full_span(t);
      // Truncating division is monotonic in each operand when the divisor keeps its sign.
      Wide c[4] = {a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi};
      return in_type({*std::min_element(c, c + 4), *std::max_element(c, c + 4)}, t);
    }
    case ExprKind::kMod: {
      Span a = span(e.as<Mod>()->a), b = span(e.as<Mod>()->b);
      if (b.lo <= 0 && b.hi >= 0) return full_span(t);
      return mod_span(a, b);
    }
    case ExprKind::kMin: {
      Span a = span(e.as<Min>()->a), b = span(e.as<Min>()->b);
      return {std::min(a.lo, b.lo), std::min(a.hi, b.hi)};
    }
    case ExprKind::kMax: {
      Span a = span(e.as<Max>()->a), b = span(e.as<Max>()->b);
      return {std::max(a.lo, b.lo), std::max(a.hi, b.hi)};
    }
    case ExprKind::kSelect: {
      Span a = span(e.as<Select>()->true_value), b = span(e.as<Select>()->false_value);
      return {std::min(a.lo, b.lo), std::max(a.hi, b.hi)};
    }
    case ExprKind::kCast: {
      const Expr& v = e.as<Cast>()->value;
      if (t.is_bool() || v.type().is_float()) return full_span(t);
      return in_type(span(v), t);
    }
    case ExprKind::kCall: {
      auto* c = e.as<Call>();
      if (c->name == "bit_xor") {
        // Non-negative operands below 2^b give a result below 2^b.
        Span a = span(c->args[0]), b = span(c->args[1]);
        if (a.lo < 0 || b.lo < 0) return full_span(t);
        Wide below = 1;
        while (below <= std::max(a.hi, b.hi)) below *= 2;
        return in_type({0, below - 1}, t);
      }
      if (c->name == "grid_blocks") return in_type({1, (Wide{1} << 31) - 1}, t);
      if (c->name != "abs") return full_span(t);
      Span a = span(c->args[0]);
      Wide lo = a.lo >= 0 ? a.lo : (a.hi <= 0 ? -a.hi : 0);
      return in_type({lo, std::max(-a.lo, a.hi)}, t);
    }
    case ExprKind::kRamp: {
      auto* r = e.as<Ramp>();
      Span base = span(r->base), stride = span(r->stride);
      Wide last = r->lanes - 1;
      Wide lo = std::min<Wide>({0, stride.lo * last, stride.hi * last});
      Wide hi = std::max<Wide>({0, stride.lo * last, stride.hi * last});
      return in_type({base.lo + lo, base.hi + hi}, t);
    }
    case ExprKind::kBroadcast: return span(e.as<Broadcast>()->value);
    case ExprKind::kLet: {
      auto* l = e.as<Let>();
      if (l->value.type().is_float()) return span(l->body);
      ScopedSpan bind(scope_, l->var.node(), span(l->value));
      return span(l->body);
    }
    default: return full_span(t);  // comparisons and logic give [0, 1]; loads are unknown
  }
}

Scope scope_of(const BoundsMap& known) {
  Scope s;
  for (const auto& [v, iv] : known) {
    if (v->type.is_float()) continue;
    Span sp = full_span(v->type);
    if (iv.min) sp.lo = std::max<Wide>(sp.lo, *iv.min);
    if (iv.max) sp.hi = std::min<Wide>(sp.hi, *iv.max);
    s[v] = sp;
  }
  return s;
}

// Whether `a k b` holds when a - b lies in [lo, hi]; nullopt when the range does not tell.
std::optional<bool> decide(ExprKind k, Wide lo, Wide hi) {
  auto known = [](bool yes, bool no) {
    return yes ? std::optional(true) : no ? std::optional(false) : std::nullopt;
  };
  switch (k) {
    case ExprKind::kLT: return known(hi < 0, lo >= 0);
    case ExprKind::kLE: return known(hi <= 0, lo > 0);
    case ExprKind::kEQ: return known(lo == 0 && hi == 0, lo > 0 || hi < 0);
    default: return known(lo > 0 || hi < 0, lo == 0 && hi == 0);  // kNE
  }
}

// ---- The simplifier -----------------------------------------------------------------------

// Bottom-up: children are simplified first, then the rules below rebuild the node from them.
// Every rule returns simplified IR, so nothing is mutated twice.
class Simplifier : public IRMutator {
 public:
  explicit Simplifier(Scope scope) : scope_(std::move(scope)), bounds_(scope_) {}
  using IRMutator::mutate;

 protected:
  Expr mutate_var(const VarNode* op, const Expr& e) override {
    auto it = replacements_.find(op);
    return it == replacements_.end() ? e : it->second;
  }
  Expr mutate_binary(const ExprNode* op, const Expr& e) override {
    BinaryView v = binary_operands(e);
    Expr a = mutate(*v.a), b = mutate(*v.b);
    Expr r = binary(op->kind, a, b);
    if (r.kind() == e.kind() && is_binary(r.kind())) {
      BinaryView rv = binary_operands(r);
      if (rv.a->same_as(*v.a) && rv.b->same_as(*v.b)) return e;
    }
    return r;
  }
  Expr mutate_not(const Not* op, const Expr& e) override {
    Expr a = mutate(op->a);
    Expr r = logical_not(a);
    return r.is<Not>() && a.same_as(op->a) ? e : r;
  }
  Expr mutate_select(const Select* op, const Expr& e) override {
    Expr c = mutate(op->cond), t = mutate(op->true_value), f = mutate(op->false_value);
    Expr r = select(c, t, f);
    auto* n = r.as<Select>();
    bool same = n && n->cond.same_as(op->cond) && n->true_value.same_as(op->true_value) &&
                n->false_value.same_as(op->false_value);
    return same ? e : r;
  }
  Expr mutate_cast(const Cast* op, const Expr& e) override {
    Expr v = mutate(op->value);
    Expr r = cast(op->type, v);
    return r.is<Cast>() && v.same_as(op->value) ? e : r;
  }
  Expr mutate_call(const Call* op, const Expr& e) override;
  Expr mutate_ramp(const Ramp* op, const Expr& e) override {
    Expr b = mutate(op->base), s = mutate(op->stride);
    if (b.same_as(op->base) && s.same_as(op->stride)) return e;
    return make_ramp(b, s, op->lanes);
  }
  Expr mutate_let(const Let* op, const Expr& e) override;
  Expr mutate_reduce(const Reduce* op, const Expr& e) override;

  Stmt mutate_let_stmt(const LetStmt* op, const Stmt& s) override;
  Stmt mutate_for(const For* op, const Stmt& s) override;
  Stmt mutate_seq(const Seq* op, const Stmt& s) override {
    Stmt r = IRMutator::mutate_seq(op, s);
    auto* seq = r.as<Seq>();
    return seq && seq->stmts.empty() ? Stmt() : r;
  }
  Stmt mutate_if(const IfThenElse* op, const Stmt& s) override;
  Stmt mutate_evaluate(const Evaluate* op, const Stmt& s) override {
    Stmt r = IRMutator::mutate_evaluate(op, s);
    return is_const_or_var(r.as<Evaluate>()->value) ? Stmt() : r;
  }

 private:
  // Rules; operands are already simplified.
  Expr binary(ExprKind k, Expr a, Expr b);
  Expr arith(ExprKind k, const Expr& a, const Expr& b);
  Expr vector_arith(ExprKind k, const Expr& a, const Expr& b);
  Expr fold_vector_terms(const Expr& e);
  Expr div_mod(ExprKind k, const Expr& a, const Expr& b);
  Expr linear_div_mod(bool is_div, const Expr& a, int64_t c);
  Expr ramp_div_mod(bool is_div, const Ramp* r, int64_t c);
  Expr min_max(ExprKind k, Expr a, Expr b);
  Expr compare(ExprKind k, Expr a, Expr b);
  Expr logic(ExprKind k, Expr a, Expr b);
  Expr float_binary(ExprKind k, Expr a, Expr b);
  Expr logical_not(const Expr& a);
  Expr select(const Expr& c, const Expr& t, const Expr& f);
  Expr cast(DType t, const Expr& v);
  Expr make_ramp(const Expr& base, const Expr& stride, int lanes) {
    return is_const_int(stride, 0) ? Broadcast::make(base, lanes) : Ramp::make(base, stride, lanes);
  }

  // Simplifies body with var bound to value (already simplified); keeps a LetStmt if needed.
  Stmt let_stmt(const Var& var, const Expr& value, const Stmt& body);
  // Records that cond holds (or fails, when truth is false): facts and tighter variable bounds.
  void learn(const Expr& cond, bool truth);
  void tighten(const Expr& e, Span s);
  std::optional<bool> known_truth(const Expr& cond) const {
    for (const auto& [f, truth] : facts_)
      if (same_expr(f, cond)) return truth;
    return std::nullopt;
  }
  Span span(const Expr& e) { return bounds_.span(e); }

  Scope scope_;
  Bounder bounds_;
  std::map<const VarNode*, Expr> replacements_;
  // Conditions known to hold (true) or fail (false) here: loop ranges and enclosing ifs.
  std::vector<std::pair<Expr, bool>> facts_;
};

Expr Simplifier::binary(ExprKind k, Expr a, Expr b) {
  // Lane-free arithmetic: op(x8(a), x8(b)) == x8(op(a, b)).
  auto *ba = a.as<Broadcast>(), *bb = b.as<Broadcast>();
  if (ba && bb) return Broadcast::make(binary(k, ba->value, bb->value), ba->lanes);
  if (a.type().is_float()) return float_binary(k, a, b);
  switch (k) {
    case ExprKind::kAdd:
    case ExprKind::kSub:
    case ExprKind::kMul: return arith(k, a, b);
    case ExprKind::kDiv:
    case ExprKind::kMod: return div_mod(k, a, b);
    case ExprKind::kMin:
    case ExprKind::kMax: return min_max(k, a, b);
    case ExprKind::kAnd:
    case ExprKind::kOr: return logic(k, a, b);
    default: return compare(k, a, b);
  }
}

Expr Simplifier::arith(ExprKind k, const Expr& a, const Expr& b) {
  if (a.type().is_vector()) {
    if (Expr r = vector_arith(k, a, b); r.defined()) return r;
  }
  Linear l{a.type(), {}, 0};
  if (k == ExprKind::kMul) {
    auto ca = as_const_int(a), cb = as_const_int(b);
    if (!ca && !cb) return Mul::make(a, b);
    if (cb) linearize_into(l, a, *cb);
    else linearize_into(l, b, *ca);
  } else {
    linearize_into(l, a, 1);
    linearize_into(l, b, k == ExprKind::kSub ? -1 : 1);
  }
  finish(l);
  Expr r = rebuild(l);
  return a.type().is_vector() ? fold_vector_terms(r) : r;
}

// A rebuilt vector sum whose terms are ramps and broadcasts (x8(i*64) + ramp(0, 1, 8), what
// (v / 7) * 7 + v % 7 collapses to) becomes one ramp again: code generators want ramp indices.
Expr Simplifier::fold_vector_terms(const Expr& e) {
  auto lanes_free = [](const Expr& x) { return x.is<Ramp>() || x.is<Broadcast>(); };
  ExprKind k = e.kind();
  Expr a, b;
  if (auto* x = e.as<Add>()) {
    a = x->a;
    b = x->b;
  } else if (auto* y = e.as<Sub>()) {
    a = y->a;
    b = y->b;
  } else if (auto* z = e.as<Mul>()) {
    a = z->a;
    b = z->b;
  } else {
    return e;
  }
  a = fold_vector_terms(a);
  b = fold_vector_terms(b);
  if (lanes_free(a) && lanes_free(b)) {
    auto *ba = a.as<Broadcast>(), *bb = b.as<Broadcast>();
    if (ba && bb) return Broadcast::make(binary(k, ba->value, bb->value), ba->lanes);
    if (Expr r = vector_arith(k, a, b); r.defined()) return r;
  }
  return k == ExprKind::kAdd ? Add::make(a, b) : k == ExprKind::kSub ? Sub::make(a, b) : Mul::make(a, b);
}

// Ramps absorb broadcasts and each other; all exact under wraparound.
Expr Simplifier::vector_arith(ExprKind k, const Expr& a, const Expr& b) {
  auto *ra = a.as<Ramp>(), *rb = b.as<Ramp>();
  auto *ba = a.as<Broadcast>(), *bb = b.as<Broadcast>();
  int n = a.type().lanes();
  Expr zero = int_const(a.type().element_of(), 0);
  switch (k) {
    case ExprKind::kAdd:
      if (ra && bb) return make_ramp(binary(k, ra->base, bb->value), ra->stride, n);
      if (ba && rb) return make_ramp(binary(k, ba->value, rb->base), rb->stride, n);
      if (ra && rb)
        return make_ramp(binary(k, ra->base, rb->base), binary(k, ra->stride, rb->stride), n);
      break;
    case ExprKind::kSub:
      if (ra && bb) return make_ramp(binary(k, ra->base, bb->value), ra->stride, n);
      if (ba && rb)
        return make_ramp(binary(k, ba->value, rb->base), binary(k, zero, rb->stride), n);
      if (ra && rb)
        return make_ramp(binary(k, ra->base, rb->base), binary(k, ra->stride, rb->stride), n);
      break;
    case ExprKind::kMul:
      if (ra && bb)
        return make_ramp(binary(k, ra->base, bb->value), binary(k, ra->stride, bb->value), n);
      if (ba && rb)
        return make_ramp(binary(k, ba->value, rb->base), binary(k, ba->value, rb->stride), n);
      break;
    default: break;
  }
  return Expr();
}

Expr Simplifier::div_mod(ExprKind k, const Expr& a, const Expr& b) {
  DType t = a.type();
  bool is_div = k == ExprKind::kDiv;
  Expr zero = int_const(t, 0);
  auto ca = as_const_int(a), cb = as_const_int(b);
  if (!cb || *cb == 0) {
    // A divisor that may be zero is left alone; a positive one larger than |a| gives 0 and a.
    Span sa = span(a), sb = span(b);
    if (sb.lo > 0 && sa.lo > -sb.lo && sa.hi < sb.lo) return is_div ? zero : a;
    return make_binary(k, a, b);
  }
  Wide c = *cb;
  if (ca) return int_const(t, is_div ? Wide(*ca) / c : Wide(*ca) % c);  // 128-bit: no overflow trap
  if (c == 1) return is_div ? a : zero;
  if (c == -1) return is_div ? binary(ExprKind::kSub, zero, a) : zero;
  Wide m = c < 0 ? -c : c;
  Span sa = span(a);
  if (sa.lo > -m && sa.hi < m) return is_div ? zero : a;
  if (c < 0) {
    // x % -c == x % c (the sign follows x); negative divisors are otherwise left alone.
    if (!is_div && m <= type_max(t)) return binary(k, a, int_const(t, m));
    return make_binary(k, a, b);
  }
  // (x / c1) / c == x / (c1 * c) for positive constants, whatever the sign of x.
  if (auto* d = a.as<Div>(); d && is_div) {
    auto c1 = as_const_int(d->b);
    if (c1 && *c1 > 0 && Wide(*c1) * c <= type_max(t))
      return binary(k, d->a, int_const(t, Wide(*c1) * c));
  }
  // (x % c1) % c == x % c when c divides c1 (both results keep x's sign and residue mod c).
  if (auto* md = a.as<Mod>(); md && !is_div) {
    auto c1 = as_const_int(md->b);
    if (c1 && *c1 > 0 && *c1 % c == 0) return binary(k, md->a, b);
  }
  if (auto* r = a.as<Ramp>()) {
    if (Expr v = ramp_div_mod(is_div, r, *cb); v.defined()) return v;
  }
  if (Expr v = linear_div_mod(is_div, a, *cb); v.defined()) return v;
  return make_binary(k, a, b);
}

// Splits a linear form into c * q + r. With truncating division, (c*q + r) / c == q + r / c and
// (c*q + r) % c == r % c when r and the whole have the same sign (or r is 0) and nothing
// wraps. floor_split keeps r's constant in [0, c), otherwise in (-c, 0].
struct DivSplit {
  Linear q, r;
};
DivSplit split_linear(const Linear& l, Wide c, bool floor_split) {
  DivSplit s{{l.type, {}, 0}, {l.type, {}, 0}};
  for (const auto& [e, coeff] : l.terms) {
    if (coeff % c == 0) s.q.terms.emplace_back(e, static_cast<int64_t>(coeff / c));
    else s.r.terms.emplace_back(e, coeff);
  }
  Wide qk = l.constant / c, rk = l.constant % c;
  if (floor_split && rk < 0) rk += c, qk -= 1;
  if (!floor_split && rk > 0) rk -= c, qk += 1;
  s.q.constant = static_cast<int64_t>(qk);
  s.r.constant = static_cast<int64_t>(rk);
  return s;
}

bool same_sign(const Span& r, const Span& whole, bool floor_split) {
  if (r.lo == 0 && r.hi == 0) return true;
  return floor_split ? r.lo >= 0 && whole.lo >= 0 : r.hi <= 0 && whole.hi <= 0;
}

Expr Simplifier::linear_div_mod(bool is_div, const Expr& a, int64_t c) {
  DType t = a.type();
  Linear l = linearize(a);
  auto whole = bounds_.linear_span(l);
  if (!whole || !fits(*whole, t)) return Expr();
  Expr divisor = int_const(t, c);
  for (bool floor_split : {true, false}) {
    DivSplit s = split_linear(l, c, floor_split);
    bool moved_terms = !s.q.terms.empty();
    if (!moved_terms && s.q.constant == 0) continue;
    auto rs = bounds_.linear_span(s.r);
    if (!rs || !fits(*rs, t) || !same_sign(*rs, *whole, floor_split)) continue;
    bool r_below_c = rs->lo > -c && rs->hi < c;
    // Moving only a constant out of a quotient is no simpler unless the rest divides to 0.
    if (is_div && !moved_terms && !r_below_c) continue;
    Expr r = rebuild(s.r);
    if (!is_div) return r_below_c ? r : binary(ExprKind::kMod, r, divisor);
    Expr q = rebuild(s.q);
    return r_below_c ? q : binary(ExprKind::kAdd, q, binary(ExprKind::kDiv, r, divisor));
  }
  return Expr();
}

// Lane k of ramp(base, s, n) is base + k*s: split base as above and treat k*s as part of the
// quotient (when c divides s) or of the remainder.
Expr Simplifier::ramp_div_mod(bool is_div, const Ramp* ramp, int64_t c) {
  auto s = as_const_int(ramp->stride);
  if (!s) return Expr();
  DType t = ramp->base.type();
  int n = ramp->lanes;
  Wide last = Wide(*s) * (n - 1);
  Span lanes{std::min<Wide>(0, last), std::max<Wide>(0, last)};
  Linear l = linearize(ramp->base);
  auto base = bounds_.linear_span(l);
  if (!base) return Expr();
  Span whole{base->lo + lanes.lo, base->hi + lanes.hi};
  if (!fits(whole, t)) return Expr();
  bool stride_divides = *s % c == 0;
  Expr divisor = int_const(t, c);
  for (bool floor_split : {true, false}) {
    DivSplit sp = split_linear(l, c, floor_split);
    auto rs = bounds_.linear_span(sp.r);
    if (!rs) continue;
    Span r_lanes = stride_divides ? *rs : Span{rs->lo + lanes.lo, rs->hi + lanes.hi};
    if (!fits(r_lanes, t) || !same_sign(r_lanes, whole, floor_split)) continue;
    Expr q = rebuild(sp.q), r = rebuild(sp.r);
    if (stride_divides) {
      if (!is_div) return Broadcast::make(binary(ExprKind::kMod, r, divisor), n);
      Expr q_base = binary(ExprKind::kAdd, q, binary(ExprKind::kDiv, r, divisor));
      return make_ramp(q_base, int_const(t, *s / c), n);
    }
    // Otherwise useful only when every lane's remainder stays below c: no lane crosses a block.
    if (r_lanes.lo <= -c || r_lanes.hi >= c) continue;
    return is_div ? Broadcast::make(q, n) : make_ramp(r, ramp->stride, n);
  }
  return Expr();
}

Expr Simplifier::min_max(ExprKind k, Expr a, Expr b) {
  DType t = a.type();
  bool is_min = k == ExprKind::kMin;
  auto ca = as_const_int(a), cb = as_const_int(b);
  if (ca && cb) return int_const(t, is_min ? std::min(*ca, *cb) : std::max(*ca, *cb));
  if (ca) {
    std::swap(a, b);
    std::swap(ca, cb);
  }
  if (same_expr(a, b)) return a;
  Span sa = span(a), sb = span(b);
  if (sa.hi <= sb.lo) return is_min ? a : b;
  if (sb.hi <= sa.lo) return is_min ? b : a;
  if (t.is_int()) {
    // b == a + d for a constant d: min(x + 1, x + 3) is x + 1 unless x + 3 can wrap.
    Linear d = linearize(b);
    linearize_into(d, a, -1);
    finish(d);
    if (d.terms.empty() && fits({sa.lo + d.constant, sa.hi + d.constant}, t))
      return (d.constant >= 0) == is_min ? a : b;
    // min(min(x, c1), c2) == min(x, min(c1, c2)).
    if (cb && a.kind() == k) {
      BinaryView v = binary_operands(a);
      if (auto c1 = as_const_int(*v.b))
        return make_binary(k, *v.a, int_const(t, is_min ? std::min(*c1, *cb) : std::max(*c1, *cb)));
    }
    // min(min(x, y), x) == min(x, y); min(max(x, y), x) == x; and the same for max.
    for (int i = 0; i < 2; ++i) {
      const Expr& p = i ? b : a;
      const Expr& o = i ? a : b;
      if (p.kind() != ExprKind::kMin && p.kind() != ExprKind::kMax) continue;
      BinaryView v = binary_operands(p);
      if (same_expr(*v.a, o) || same_expr(*v.b, o)) return p.kind() == k ? p : o;
    }
  }
  return make_binary(k, a, b);
}

Expr Simplifier::compare(ExprKind k, Expr a, Expr b) {
  // Canonical directions: a > b is b < a, a >= b is b <= a.
  if (k == ExprKind::kGT) return compare(ExprKind::kLT, b, a);
  if (k == ExprKind::kGE) return compare(ExprKind::kLE, b, a);
  int lanes = a.type().lanes();
  auto ca = as_const_int(a), cb = as_const_int(b);
  if (ca && cb) return bool_const(lanes, *decide(k, Wide(*ca) - *cb, Wide(*ca) - *cb));
  if (ca && (k == ExprKind::kEQ || k == ExprKind::kNE)) std::swap(a, b);
  if (same_expr(a, b)) return bool_const(lanes, k == ExprKind::kEQ || k == ExprKind::kLE);
  Span sa = span(a), sb = span(b);
  // a - b lies in [min a - max b, max a - min b] (exact: 128 bits, no wrap).
  Wide lo = sa.lo - sb.hi, hi = sa.hi - sb.lo;
  std::optional<bool> r = decide(k, lo, hi);
  if (!r && a.type().is_int()) {
    // When neither side wraps, a - b can be bounded from their linear forms, where common
    // terms cancel: i*8 + j < i*8 + 8 for j in [0, 8).
    Linear la = linearize(a), lb = linearize(b);
    auto xa = bounds_.linear_span(la), xb = bounds_.linear_span(lb);
    if (xa && xb && fits(*xa, a.type()) && fits(*xb, a.type())) {
      if (auto d = bounds_.difference_span(la, lb)) r = decide(k, d->lo, d->hi);
    }
  }
  if (r) return bool_const(lanes, *r);
  Expr e = make_binary(k, a, b);
  if (auto f = known_truth(e)) return bool_const(lanes, *f);
  return e;
}

Expr Simplifier::logic(ExprKind k, Expr a, Expr b) {
  int lanes = a.type().lanes();
  bool is_and = k == ExprKind::kAnd;
  auto ca = as_const_int(a), cb = as_const_int(b);
  if (ca && cb) return bool_const(lanes, is_and ? (*ca && *cb) : (*ca || *cb));
  if (ca) {
    std::swap(a, b);
    std::swap(ca, cb);
  }
  if (cb) return (*cb != 0) == is_and ? a : bool_const(lanes, !is_and);
  if (same_expr(a, b)) return a;
  return make_binary(k, a, b);
}

Expr Simplifier::float_binary(ExprKind k, Expr a, Expr b) {
  DType t = a.type();
  // Only f32 constants are folded: FloatImm rounds f32, while f16/bf16 rounding is the back
  // end's business.
  bool f32 = t.element_of() == DType::f32();
  auto ca = as_const_float(a), cb = as_const_float(b);
  if (ca && cb && f32) {
    auto x = static_cast<float>(*ca), y = static_cast<float>(*cb);
    auto fold = [&](float v) { return FloatImm::make(t, v); };
    switch (k) {
      case ExprKind::kAdd: return fold(x + y);
      case ExprKind::kSub: return fold(x - y);
      case ExprKind::kMul: return fold(x * y);
      case ExprKind::kDiv: return fold(x / y);
      case ExprKind::kMin:
      case ExprKind::kMax:
        // NaN and signed zeros are where back ends' min/max disagree; leave them.
        if (std::isnan(x) || std::isnan(y) || (x == y && std::signbit(x) != std::signbit(y))) break;
        return fold(k == ExprKind::kMin ? std::min(x, y) : std::max(x, y));
      case ExprKind::kEQ: return bool_const(1, x == y);
      case ExprKind::kNE: return bool_const(1, x != y);
      case ExprKind::kLT: return bool_const(1, x < y);
      case ExprKind::kLE: return bool_const(1, x <= y);
      case ExprKind::kGT: return bool_const(1, x > y);
      case ExprKind::kGE: return bool_const(1, x >= y);
      default: break;
    }
  }
  if (k == ExprKind::kGT) return float_binary(ExprKind::kLT, b, a);
  if (k == ExprKind::kGE) return float_binary(ExprKind::kLE, b, a);
  if ((k == ExprKind::kAdd || k == ExprKind::kMul) && ca && !cb) {
    std::swap(a, b);
    std::swap(ca, cb);
  }
  // The only IEEE-exact identities: x * 1, x / 1 and x - (+0).
  if ((k == ExprKind::kMul || k == ExprKind::kDiv) && cb && *cb == 1.0) return a;
  if (k == ExprKind::kSub && cb && *cb == 0.0 && !std::signbit(*cb)) return a;
  return make_binary(k, a, b);
}

Expr Simplifier::logical_not(const Expr& a) {
  if (auto c = as_const_int(a)) return bool_const(a.type().lanes(), !*c);
  if (auto* n = a.as<Not>()) return n->a;
  if (is_comparison(a.kind())) {
    BinaryView v = binary_operands(a);
    bool ints = !v.a->type().is_float();  // !(x < y) is not y <= x when x or y is NaN
    switch (a.kind()) {
      // Floats skip compare(): its integer facts (x == x) do not hold for a NaN.
      case ExprKind::kEQ:
        return ints ? compare(ExprKind::kNE, *v.a, *v.b) : make_binary(ExprKind::kNE, *v.a, *v.b);
      case ExprKind::kNE:
        return ints ? compare(ExprKind::kEQ, *v.a, *v.b) : make_binary(ExprKind::kEQ, *v.a, *v.b);
      case ExprKind::kLT:
        if (ints) return compare(ExprKind::kLE, *v.b, *v.a);
        break;
      case ExprKind::kLE:
        if (ints) return compare(ExprKind::kLT, *v.b, *v.a);
        break;
      default: break;
    }
  }
  return Not::make(a);
}

Expr Simplifier::select(const Expr& c, const Expr& t, const Expr& f) {
  if (auto v = as_const_int(c)) return *v ? t : f;
  if (auto k = known_truth(c)) return *k ? t : f;
  if (same_expr(t, f)) return t;
  if (auto* n = c.as<Not>()) return select(n->a, f, t);
  return Select::make(c, t, f);
}

Expr Simplifier::cast(DType t, const Expr& v) {
  DType from = v.type();
  if (from == t) return v;
  if (auto* b = v.as<Broadcast>()) return Broadcast::make(cast(t.element_of(), b->value), b->lanes);
  if (t.is_int()) {
    if (auto c = as_const_int(v)) return IntImm::make(t, *c);  // wraps to t's width
    if (auto c = as_const_float(v); c && from == DType::f32()) {
      // Float-to-int conversion of a value outside the type's range is undefined: left alone.
      // (f16/bf16 constants are not rounded to their type, so they are not folded either.)
      double x = std::trunc(*c);
      if (std::isfinite(x) && x >= static_cast<double>(type_min(t)) &&
          x <= static_cast<double>(type_max(t)) && x != 9223372036854775808.0)
        return IntImm::make(t, static_cast<int64_t>(x));
    }
    // cast(t, cast(u, x)) == cast(t, x) when x fits u: the inner cast loses nothing.
    if (auto* inner = v.as<Cast>(); inner && !inner->value.type().is_float() && from.is_int()) {
      if (fits(span(inner->value), from)) return cast(t, inner->value);
    }
  }
  if (t == DType::f32()) {
    if (auto c = as_const_int(v)) return FloatImm::make(t, static_cast<float>(*c));
  }
  // cast(t, cast(f32, x)) with x of 16-bit float type t is x: f32 holds every f16 and bf16 value
  // exactly (a load widened and narrowed back, as fused prologues of 16-bit kernels read).
  if (auto* inner = v.as<Cast>();
      inner && inner->value.type() == t && from.element_of() == DType::f32() &&
      (t.element_of() == DType::f16() || t.element_of() == DType::bf16()))
    return inner->value;
  return Cast::make(t, v);
}

Expr Simplifier::mutate_call(const Call* op, const Expr& e) {
  Expr r = IRMutator::mutate_call(op, e);
  auto* c = r.as<Call>();
  if (c && c->name == "bit_xor") {
    auto x = as_const_int(c->args[0]), y = as_const_int(c->args[1]);
    if (x && y) return int_const(c->type, Wide(*x ^ *y));
    if (is_const_int(c->args[0], 0)) return c->args[1];
    if (is_const_int(c->args[1], 0)) return c->args[0];
    return r;
  }
  if (!c || c->name != "abs" || !c->type.is_int()) return r;
  const Expr& x = c->args[0];
  if (auto v = as_const_int(x)) return int_const(c->type, *v < 0 ? -Wide(*v) : Wide(*v));
  Span s = span(x);
  if (s.lo >= 0) return x;
  if (s.hi <= 0 && s.lo > type_min(x.type()))
    return binary(ExprKind::kSub, int_const(x.type(), 0), x);
  return r;
}

Expr Simplifier::mutate_let(const Let* op, const Expr& e) {
  Expr v = mutate(op->value);
  const VarNode* var = op->var.node();
  Expr body;
  if (is_const_or_var(v)) {
    auto saved = replacements_;
    replacements_[var] = v;
    body = mutate(op->body);
    replacements_ = std::move(saved);
  } else if (!v.type().is_float()) {
    ScopedSpan bind(scope_, var, span(v));
    body = mutate(op->body);
  } else {
    body = mutate(op->body);
  }
  if (!uses_var(body, op->var)) return body;
  if (v.same_as(op->value) && body.same_as(op->body)) return e;
  return Let::make(op->var, v, body);
}

Expr Simplifier::mutate_reduce(const Reduce* op, const Expr& e) {
  Scope saved = scope_;
  bool changed = false;
  std::vector<IterVar> axes;
  for (const IterVar& iv : op->axes) {
    Expr ext = mutate(iv.extent);
    changed |= !ext.same_as(iv.extent);
    axes.push_back({iv.var, ext});
    Span s = span(ext);
    if (s.hi >= 1) scope_[iv.var.node()] = {0, s.hi - 1};
  }
  Expr src = mutate(op->source);
  scope_ = std::move(saved);
  changed |= !src.same_as(op->source);
  return changed ? Reduce::make(op->reduce_kind, src, std::move(axes), op->type) : e;
}

Stmt Simplifier::let_stmt(const Var& var, const Expr& value, const Stmt& body) {
  Stmt b;
  if (is_const_or_var(value)) {
    auto saved = replacements_;
    replacements_[var.node()] = value;
    b = mutate(body);
    replacements_ = std::move(saved);
  } else if (!value.type().is_float()) {
    ScopedSpan bind(scope_, var.node(), span(value));
    b = mutate(body);
  } else {
    b = mutate(body);
  }
  if (!b.defined()) return Stmt();
  // Buffer shapes are not rewritten, so a substituted variable may still be needed there.
  return uses_var(b, var) ? LetStmt::make(var, value, b) : b;
}

Stmt Simplifier::mutate_let_stmt(const LetStmt* op, const Stmt& s) {
  Expr v = mutate(op->value);
  Stmt r = let_stmt(op->var, v, op->body);
  if (auto* l = r.as<LetStmt>(); l && l->value.same_as(op->value) && l->body.same_as(op->body))
    return s;
  return r;
}

Stmt Simplifier::mutate_for(const For* op, const Stmt& s) {
  Expr mn = mutate(op->min), ext = mutate(op->extent);
  Span sm = span(mn), se = span(ext);
  if (se.hi <= 0) return Stmt();  // never runs
  if (se.lo == 1 && se.hi == 1) return let_stmt(op->var, mn, op->body);
  Stmt body;
  {
    // Inside the body the loop ran at least once: min <= var <= min + extent - 1.
    Scope saved_scope = scope_;
    size_t saved_facts = facts_.size();
    DType t = op->var.type();
    scope_[op->var.node()] = {sm.lo, std::min(sm.hi + se.hi - 1, type_max(t))};
    learn(binary(ExprKind::kLE, mn, op->var), true);
    learn(binary(ExprKind::kLT, op->var, binary(ExprKind::kAdd, mn, ext)), true);
    body = mutate(op->body);
    scope_ = std::move(saved_scope);
    facts_.resize(saved_facts);
  }
  if (!body.defined()) return Stmt();
  if (mn.same_as(op->min) && ext.same_as(op->extent) && body.same_as(op->body)) return s;
  return For::make(op->var, mn, ext, op->for_kind, body, op->gpu_axis);
}

Stmt Simplifier::mutate_if(const IfThenElse* op, const Stmt& s) {
  Expr c = mutate(op->cond);
  if (auto k = known_truth(c)) c = bool_const(1, *k);
  if (auto v = as_const_int(c)) return *v ? mutate(op->then_case) : mutate(op->else_case);
  Stmt branches[2];
  for (int i = 0; i < 2; ++i) {
    const Stmt& b = i == 0 ? op->then_case : op->else_case;
    if (!b.defined()) continue;
    Scope saved_scope = scope_;
    size_t saved_facts = facts_.size();
    learn(c, i == 0);
    branches[i] = mutate(b);
    scope_ = std::move(saved_scope);
    facts_.resize(saved_facts);
  }
  auto& [t, f] = branches;
  if (!t.defined() && !f.defined()) return Stmt();
  if (!t.defined()) return IfThenElse::make(logical_not(c), f);
  if (c.same_as(op->cond) && t.same_as(op->then_case) && f.same_as(op->else_case)) return s;
  return IfThenElse::make(c, t, f);
}

void Simplifier::learn(const Expr& cond, bool truth) {
  if (auto* a = cond.as<And>(); a && truth) {
    learn(a->a, true);
    learn(a->b, true);
    return;
  }
  if (auto* o = cond.as<Or>(); o && !truth) {
    learn(o->a, false);
    learn(o->b, false);
    return;
  }
  if (auto* n = cond.as<Not>()) return learn(n->a, !truth);
  if (as_const_int(cond)) return;
  facts_.emplace_back(cond, truth);
  Expr opposite = logical_not(cond);
  if (!as_const_int(opposite)) facts_.emplace_back(opposite, !truth);
  // Bounds of a variable compared with something bounded: x < e gives x <= max(e) - 1.
  Expr holds = truth ? cond : opposite;
  if (!is_comparison(holds.kind()) || !holds.type().is_scalar()) return;
  BinaryView v = binary_operands(holds);
  if (!v.a->type().is_int()) return;
  Span sa = span(*v.a), sb = span(*v.b);
  switch (holds.kind()) {
    case ExprKind::kLT:
      tighten(*v.a, {type_min(v.a->type()), sb.hi - 1});
      tighten(*v.b, {sa.lo + 1, type_max(v.a->type())});
      break;
    case ExprKind::kLE:
      tighten(*v.a, {type_min(v.a->type()), sb.hi});
      tighten(*v.b, {sa.lo, type_max(v.a->type())});
      break;
    case ExprKind::kEQ:
      tighten(*v.a, sb);
      tighten(*v.b, sa);
      break;
    default: break;
  }
}

void Simplifier::tighten(const Expr& e, Span s) {
  auto* v = e.as<VarNode>();
  if (!v) return;
  Span cur = span(e);
  Span r{std::max(cur.lo, s.lo), std::min(cur.hi, s.hi)};
  // An empty range means the code is unreachable; keeping the old bounds is still sound.
  if (r.lo <= r.hi) scope_[v] = r;
}

}  // namespace

Interval bounds_of(const Expr& e, const BoundsMap& known) {
  if (!e.defined() || e.type().is_float()) return {};
  Scope scope = scope_of(known);
  Span s = Bounder(scope).span(e);
  DType t = e.type();
  Interval r;
  // For integers the type's own limits mean "no bound"; bool keeps its [0, 1].
  if (t.is_bool() || s.lo > type_min(t)) r.min = static_cast<int64_t>(s.lo);
  if (t.is_bool() || s.hi < type_max(t)) r.max = static_cast<int64_t>(s.hi);
  return r;
}

Expr simplify(const Expr& e, const BoundsMap& known) {
  Simplifier s(scope_of(known));
  return s.mutate(e);
}

Stmt simplify(const Stmt& st, const BoundsMap& known) {
  Simplifier s(scope_of(known));
  return s.mutate(st);
}

Func simplify(const Func& f) {
  Func r = f;
  r.body = simplify(f.body);
  return r;
}

bool can_prove(const Expr& e, const BoundsMap& known) {
  if (!e.defined() || !e.type().is_bool()) return false;
  return is_const_int(simplify(e, known), 1);
}

}  // namespace loom::ir
