// The simplifier: targeted rules, and random expressions and loop nests checked against an
// independent interpreter (C semantics: wrapping + - *, truncating / and %).

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "loom/ir/buffer.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "test_util.hpp"

using namespace loom;
using namespace loom::ir;

namespace {

std::string str(const Expr& e) { return to_string(simplify(e)); }
std::string str(const Expr& e, const BoundsMap& known) { return to_string(simplify(e, known)); }

constexpr int64_t kMin64 = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();

// ---- An independent interpreter -----------------------------------------------------------

int64_t wrap_to(DType t, uint64_t v) {
  switch (t.code()) {
    case DTypeCode::kI8: return static_cast<int8_t>(v);
    case DTypeCode::kI32: return static_cast<int32_t>(v);
    case DTypeCode::kBool: return v != 0;
    default: return static_cast<int64_t>(v);
  }
}

using Env = std::map<const VarNode*, int64_t>;

// Value of lane `lane` of an integer or bool expression.
int64_t eval(const Expr& e, Env& env, int lane = 0) {
  auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  DType t = e.type();
  if (auto* i = e.as<IntImm>()) return i->value;
  if (auto* v = e.as<VarNode>()) {
    auto it = env.find(v);
    if (it == env.end()) FAIL("unbound variable " << v->name);
    return it->second;
  }
  if (auto* n = e.as<Not>()) return !eval(n->a, env, lane);
  if (auto* s = e.as<Select>()) {
    return eval(s->cond, env, s->cond.type().is_scalar() ? 0 : lane)
               ? eval(s->true_value, env, lane)
               : eval(s->false_value, env, lane);
  }
  if (auto* c = e.as<Cast>()) return wrap_to(t, u(eval(c->value, env, lane)));
  if (auto* c = e.as<Call>()) {
    REQUIRE(c->name == "abs");
    int64_t v = eval(c->args[0], env, lane);
    return v < 0 ? wrap_to(t, 0 - u(v)) : v;
  }
  if (auto* r = e.as<Ramp>())
    return wrap_to(t, u(eval(r->base, env)) + u(eval(r->stride, env)) * u(lane));
  if (auto* b = e.as<Broadcast>()) return eval(b->value, env);
  if (auto* l = e.as<Let>()) {
    env[l->var.node()] = eval(l->value, env, lane);
    int64_t v = eval(l->body, env, lane);
    env.erase(l->var.node());
    return v;
  }
  REQUIRE(is_binary(e.kind()));
  BinaryView bv = binary_operands(e);
  int64_t a = eval(*bv.a, env, lane), b = eval(*bv.b, env, lane);
  switch (e.kind()) {
    case ExprKind::kAdd: return wrap_to(t, u(a) + u(b));
    case ExprKind::kSub: return wrap_to(t, u(a) - u(b));
    case ExprKind::kMul: return wrap_to(t, u(a) * u(b));
    case ExprKind::kDiv:
      REQUIRE(b != 0);
      return b == -1 ? wrap_to(t, 0 - u(a)) : a / b;  // INT_MIN / -1 wraps
    case ExprKind::kMod:
      REQUIRE(b != 0);
      return b == -1 ? 0 : a % b;
    case ExprKind::kMin: return std::min(a, b);
    case ExprKind::kMax: return std::max(a, b);
    case ExprKind::kEQ: return a == b;
    case ExprKind::kNE: return a != b;
    case ExprKind::kLT: return a < b;
    case ExprKind::kLE: return a <= b;
    case ExprKind::kGT: return a > b;
    case ExprKind::kGE: return a >= b;
    case ExprKind::kAnd: return a && b;
    case ExprKind::kOr: return a || b;
    default: FAIL("cannot evaluate " << e);
  }
  return 0;
}

int count_nodes(const Expr& e) {
  int n = 0;
  for_each_expr(e, [&](const Expr&) { ++n; });
  return n;
}

// ---- Random expressions -------------------------------------------------------------------

struct RandomVar {
  Var var;
  int64_t lo, hi;  // sampled range; bounded ones are also told to the simplifier
  bool bounded;
};

class ExprGen {
 public:
  ExprGen(uint64_t seed, std::vector<RandomVar> vars, DType type = DType::i64())
      : rng_(seed), vars_(std::move(vars)), type_(type) {}

  // A constant of the generated type (wrapped to its width).
  Expr num(int64_t v) const { return IntImm::make(type_, v); }

  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool chance(int percent) { return uniform(0, 99) < percent; }

  int64_t constant() {
    static const int64_t big[] = {int64_t{1} << 40, -(int64_t{1} << 62), kMax64, kMin64 + 1,
                                  int64_t{1} << 62, kMin64};
    if (chance(4)) return big[uniform(0, 5)];
    return uniform(-10, 10);
  }
  int64_t divisor() {
    static const int64_t d[] = {1, 2, 3, 4, 8, 16, 5, -1, -2, -3, -8};
    return d[uniform(0, 10)];
  }
  int64_t positive_divisor() {
    static const int64_t d[] = {2, 3, 4, 8, 16};
    return d[uniform(0, 4)];
  }

  Expr leaf() {
    if (chance(60)) {
      std::vector<Var> all;
      for (auto& v : vars_) all.push_back(v.var);
      for (auto& v : lets_) all.push_back(v);
      return all[uniform(0, static_cast<int64_t>(all.size()) - 1)];
    }
    return num(constant());
  }

  Expr cond(int depth) {
    if (depth > 0 && chance(20)) {
      switch (uniform(0, 2)) {
        case 0: return cond(depth - 1) && cond(depth - 1);
        case 1: return cond(depth - 1) || cond(depth - 1);
        default: return !cond(depth - 1);
      }
    }
    Expr a = gen(depth - 1), b = chance(50) ? num(constant()) : gen(depth - 1);
    switch (uniform(0, 5)) {
      case 0: return a < b;
      case 1: return a <= b;
      case 2: return a > b;
      case 3: return a >= b;
      case 4: return a == b;
      default: return a != b;
    }
  }

  Expr gen(int depth) {
    if (depth <= 0 || chance(15)) return leaf();
    switch (uniform(0, 16)) {
      case 0:
      case 1: return gen(depth - 1) + gen(depth - 1);
      case 2: return gen(depth - 1) - gen(depth - 1);
      case 3: return gen(depth - 1) * (chance(70) ? num(constant()) : gen(depth - 1));
      case 4: return gen(depth - 1) / num(divisor());
      case 5: return gen(depth - 1) % num(divisor());
      case 6: return min(gen(depth - 1), gen(depth - 1));
      case 7: return max(gen(depth - 1), gen(depth - 1));
      case 8: return select(cond(depth - 1), gen(depth - 1), gen(depth - 1));
      case 9:
      case 10: {
        // The index-arithmetic shapes the div/mod rules are for: (x*c + y) / c and % c.
        int64_t c = positive_divisor();
        Expr inner = gen(depth - 1) * num(c) + gen(depth - 2);
        if (chance(30)) inner = inner + num(uniform(-20, 20));
        return chance(50) ? inner / num(c) : inner % num(c);
      }
      case 11: {
        Var v("t" + std::to_string(lets_.size()), type_);
        Expr value = gen(depth - 1);
        lets_.push_back(v);
        Expr body = gen(depth - 1);
        lets_.pop_back();
        return Let::make(v, value, body);
      }
      case 12: {
        // Through a narrower type (or, for i8, a wider one and back).
        DType other = type_ == DType::i64() ? DType::i32() : type_ == DType::i32() ? DType::i8()
                                                                                    : DType::i32();
        return cast(type_, cast(other, gen(depth - 1)));
      }
      case 13: return abs(gen(depth - 1));
      case 14: {
        // (e / c) * c + e % c is e; with other multipliers it is not.
        Expr e = gen(depth - 2);
        int64_t c = divisor();
        int64_t m = chance(70) ? 1 : uniform(-2, 3);
        return (e / num(c)) * num(c * m) + (e % num(c)) * num(chance(80) ? m : m + 1);
      }
      case 15: {
        // (e / a % b) * a + e % a is e % (a * b); with other multipliers it is not.
        Expr e = gen(depth - 2);
        int64_t a = positive_divisor(), b = positive_divisor();
        int64_t m = chance(70) ? 1 : uniform(-2, 3);
        return (e / num(a) % num(b)) * num(a * m) + (e % num(a)) * num(chance(80) ? m : m + 1);
      }
      default: return (gen(depth - 1) / num(positive_divisor())) / num(positive_divisor());
    }
  }

  // One value per variable: corners of the ranges first, then random points; unbounded
  // variables also take the extremes of i64, where wraparound happens.
  Env point(int index) {
    Env env;
    for (size_t k = 0; k < vars_.size(); ++k) {
      const RandomVar& v = vars_[k];
      int64_t x;
      if (index < 4) {
        x = ((index >> (k % 2)) & 1) ? v.hi : v.lo;
      } else if (!v.bounded && chance(30)) {
        int64_t lo = as_const_int(lowest_value(type_)).value();
        int64_t hi = as_const_int(highest_value(type_)).value();
        const int64_t edge[] = {lo, hi, lo + 1, hi - 1, 0, -1};
        x = edge[uniform(0, 5)];
      } else {
        x = uniform(v.lo, v.hi);
      }
      env[v.var.node()] = x;
    }
    return env;
  }

  BoundsMap known() const {
    BoundsMap m;
    for (const auto& v : vars_)
      if (v.bounded) m[v.var.node()] = Interval{v.lo, v.hi};
    return m;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
  std::vector<RandomVar> vars_;
  std::vector<Var> lets_;
  DType type_;
};

bool contains(const Interval& iv, int64_t v) {
  return (!iv.min || *iv.min <= v) && (!iv.max || v <= *iv.max);
}

std::string describe(const Env& env) {
  std::ostringstream os;
  for (const auto& [v, x] : env) os << v->name << "=" << x << " ";
  return os.str();
}

}  // namespace

// ---- Targeted rules -------------------------------------------------------------------------

TEST_CASE("constants fold with C semantics and wrap to their type", "[simplify]") {
  CHECK(str(Expr(7) / 2) == "3");
  CHECK(str(Expr(-7) / 2) == "-3");
  CHECK(str(Expr(-7) % 2) == "-1");
  CHECK(str(Expr(7) % -2) == "1");
  CHECK(str(Expr(3) * 4 - 5) == "7");
  CHECK(str(min(Expr(3), 4) + max(Expr(-1), -2)) == "2");
  CHECK(str(Expr(kMin64) / -1) == std::to_string(kMin64));  // wraps, never traps
  CHECK(str(Expr(kMin64) % -1) == "0");
  CHECK(str(Expr(kMax64) + 1) == std::to_string(kMin64));
  Expr big32 = IntImm::make(DType::i32(), std::numeric_limits<int32_t>::max());
  CHECK(str(big32 + IntImm::make(DType::i32(), 1)) == "(i32)-2147483648");
  CHECK(str(cast(DType::i8(), Expr(300))) == "(i8)44");
  CHECK(str(cast(DType::i32(), Expr(2.75f))) == "(i32)2");
  CHECK(str(cast(DType::f32(), Expr(3))) == "3f");
  CHECK(str(Expr(3) < 4) == "true");
  CHECK(str(Expr(3) >= 4) == "false");
  CHECK(str((Expr(3) < 4) && (Expr(1) == 2)) == "false");
  CHECK(str(!(Expr(1) != 2)) == "false");
  CHECK(str(select(Expr(2) > 1, Expr(10), Expr(20))) == "10");
}

TEST_CASE("f32 constants fold with f32 rounding, and float identities stay IEEE-exact", "[simplify]") {
  volatile float a = 0.1f, b = 0.2f, c = 3.0f;
  auto folded = [](const Expr& e) { return *as_const_float(simplify(e)); };
  CHECK(folded(Expr(0.1f) + Expr(0.2f)) == static_cast<float>(a + b));
  CHECK(folded(Expr(1.0f) / Expr(3.0f)) == static_cast<float>(1.0f / c));
  CHECK(folded(Expr(1e20f) * Expr(1e20f)) == std::numeric_limits<float>::infinity());
  CHECK(str(Expr(1.5f) < Expr(2.0f)) == "true");
  Var f("f", DType::f32());
  CHECK(str(f * 1.0f) == "f");
  CHECK(str(1.0f * f) == "f");
  CHECK(str(f / 1.0f) == "f");
  CHECK(str(f - 0.0f) == "f");
  CHECK(str(f + 0.0f) == "(f + 0f)");  // -0 + 0 is +0
  CHECK(str(f * 0.0f) == "(f * 0f)");  // NaN * 0 is NaN
  CHECK(str(f - f) == "(f - f)");
  CHECK(str((f + 1.0f) + 2.0f) == "((f + 1f) + 2f)");  // no reassociation
  CHECK(str(f == f) == "(f == f)");                    // false for NaN
  CHECK(str(!(f < 1.0f)) == "!(f < 1f)");              // true for NaN
  CHECK(str(!(f == f)) == "(f != f)");                 // true for NaN, not folded to false
  CHECK(str(!(f != f)) == "(f == f)");
  CHECK(str(f > 1.0f) == "(1f < f)");
}

TEST_CASE("integer identities and canonical linear forms", "[simplify]") {
  Var x("x"), y("y"), z("z");
  CHECK(str(x + 0) == "x");
  CHECK(str(x - 0) == "x");
  CHECK(str(x * 1) == "x");
  CHECK(str(x * 0) == "0");
  CHECK(str(x / 1) == "x");
  CHECK(str(x % 1) == "0");
  CHECK(str(x - x) == "0");
  CHECK(str(min(x, x)) == "x");
  CHECK(str(max(x, x)) == "x");
  CHECK(str((x + 3) + 4) == "(x + 7)");
  CHECK(str(3 + x) == "(x + 3)");
  CHECK(str(x - 3) == "(x - 3)");
  CHECK(str((x + 3) - 3) == "x");
  CHECK(str((x * 2) * 3) == "(x * 6)");
  CHECK(str((x + 1) * 4) == "((x * 4) + 4)");
  CHECK(str((x + y) - x) == "y");
  CHECK(str(x * 8 + y - x * 8) == "y");
  CHECK(str(x + x) == "(x * 2)");
  CHECK(str(y - x * 2) == "(y - (x * 2))");
  CHECK(str(5 - x) == "(5 - x)");
  CHECK(str(0 - x - 3) == "((0 - x) - 3)");
  CHECK(str((x / 8) * 8 + x % 8) == "x");
  CHECK(str((x / 8) * 4 + x % 8) == "(((x / 8) * 4) + (x % 8))");
  CHECK(str((x / 8) * 16 + (x % 8) * 2 + z) == "((x * 2) + z)");
  // (x / a % b) * a + x % a is x % (a * b): an NHWC offset of a pixel split into (n, h, w) folds
  // back to the pixel, however the terms are ordered.
  CHECK(str((x / 4 % 3) * 4 + x % 4) == "(x % 12)");
  CHECK(str((x / 99) * 2376 + (x / 9 % 11) * 216 + (x % 9) * 24 + y) == "((x * 24) + y)");
  CHECK(str((x % 9) * 24 + (x / 9 % 11) * 216 + (x / 99) * 2376) == "(x * 24)");
  CHECK(str((x / 4 % 3) * 8 + x % 4) == "((((x / 4) % 3) * 8) + (x % 4))");
  // Wraparound is exact for + - *, so these hold even without bounds.
  CHECK(str((x + 1) - (x - 1)) == "2");
  // i8 coefficients live modulo 256.
  Var b("b", DType::i8());
  CHECK(str(b * IntImm::make(DType::i8(), 16) * IntImm::make(DType::i8(), 16)) == "(i8)0");
}

TEST_CASE("division and modulo use bounds and respect truncation and wraparound", "[simplify]") {
  Var i("i"), j("j"), x("x");
  BoundsMap k{{i.node(), {0, 15}}, {j.node(), {0, 7}}};
  CHECK(str(j / 8, k) == "0");
  CHECK(str(j % 8, k) == "j");
  CHECK(str((i * 8 + j) / 8, k) == "i");
  CHECK(str((i * 8 + j) % 8, k) == "j");
  CHECK(str((j + i * 8) / 8, k) == "i");
  CHECK(str((i * 16 + j * 2 + 1) / 16, k) == "i");
  CHECK(str((i * 16 + j) / 8, k) == "(i * 2)");
  CHECK(str((i * 8 + j + 8) / 8, k) == "(i + 1)");
  CHECK(str((i * 8 + j + 8) % 8, k) == "j");
  CHECK(str((i * 8) / 8, k) == "i");
  CHECK(str((i * 8) % 8, k) == "0");
  CHECK(str((i * 8 + j) / 4, k) == "((i * 2) + (j / 4))");
  // j may be negative: with i = 1, j = -1, (i*8 + j) / 8 is 0, not i.
  BoundsMap neg{{i.node(), {0, 15}}, {j.node(), {-1, 7}}};
  CHECK(str((i * 8 + j) / 8, neg) == "(((i * 8) + j) / 8)");
  // The whole may be negative while the remainder is not: i = -1, j = 1 gives -7 / 8 == 0.
  BoundsMap signs{{i.node(), {-3, 3}}, {j.node(), {0, 7}}};
  CHECK(str((i * 8 + j) / 8, signs) == "(((i * 8) + j) / 8)");
  // Both non-positive works too.
  BoundsMap nonpos{{i.node(), {-3, 0}}, {j.node(), {-7, 0}}};
  CHECK(str((i * 8 + j) / 8, nonpos) == "i");
  CHECK(str((i * 8 + j) % 8, nonpos) == "j");
  // Unbounded x: x * 8 can wrap, so (x * 8) / 8 is not x.
  CHECK(str((x * 8) / 8) == "((x * 8) / 8)");
  CHECK(str((x * 8) / 8, {{x.node(), {-1000, 1000}}}) == "x");
  CHECK(str((x * 8) % 8) == "((x * 8) % 8)");
  // Nested divisions and moduli hold for every x.
  CHECK(str((x / 4) / 8) == "(x / 32)");
  CHECK(str((x % 16) % 4) == "(x % 4)");
  CHECK(str((x % 4) % 16) == "(x % 4)");
  CHECK(str((x % 8) / 8) == "0");
  CHECK(str(x % -8) == "(x % 8)");
  CHECK(str(x / -1) == "(0 - x)");
  CHECK(str(x / 0) == "(x / 0)");  // left for the program to fault on, not folded
  // A symbolic divisor known to exceed the dividend.
  Var n("n");
  CHECK(str(j / n, {{j.node(), {0, 7}}, {n.node(), {8, 100}}}) == "0");
  CHECK(str(j % n, {{j.node(), {0, 7}}, {n.node(), {8, 100}}}) == "j");
}

TEST_CASE("comparisons, min and max decided by bounds", "[simplify]") {
  Var i("i"), j("j"), x("x"), y("y");
  BoundsMap k{{i.node(), {0, 7}}, {j.node(), {0, 7}}};
  CHECK(str(i < 8, k) == "true");
  CHECK(str(i >= 0, k) == "true");
  CHECK(str(i < 7, k) == "(i < 7)");
  CHECK(str(i > 7, k) == "false");
  CHECK(str(i == 9, k) == "false");
  CHECK(str(i != -1, k) == "true");
  CHECK(str(min(i, 10), k) == "i");
  CHECK(str(max(i, 0), k) == "i");
  CHECK(str(max(i, 7), k) == "7");
  CHECK(str(min(i, j), k) == "min(i, j)");
  // Common terms cancel: i*8 + j < i*8 + 8.
  BoundsMap wide{{i.node(), {0, 1000}}, {j.node(), {0, 7}}};
  CHECK(str(i * 8 + j < i * 8 + 8, wide) == "true");
  CHECK(str(i * 8 + j >= i * 8, wide) == "true");
  // ... but not when the sides can wrap.
  CHECK(str(x + 1 > x) == "(x < (x + 1))");
  CHECK(str(x + 1 > x, {{x.node(), {0, 100}}}) == "true");
  CHECK(str(min(x + 1, x + 3), {{x.node(), {0, 100}}}) == "(x + 1)");
  CHECK(str(max(x + 1, x + 3), {{x.node(), {0, 100}}}) == "(x + 3)");
  CHECK(str(min(x + 1, x + 3)) == "min((x + 1), (x + 3))");
  CHECK(str(min(min(x, 4), 2)) == "min(x, 2)");
  CHECK(str(max(3, max(x, 4))) == "max(x, 4)");
  CHECK(str(min(min(x, y), x)) == "min(x, y)");
  CHECK(str(min(max(x, y), y)) == "y");
  CHECK(str(x == x) == "true");
  CHECK(str(x < x) == "false");
  CHECK(str(3 == x) == "(x == 3)");
  CHECK(str(!(x < y)) == "(y <= x)");
  CHECK(str(!!(x < y)) == "(x < y)");
  CHECK(str((x < y) && (Expr(1) < 2)) == "(x < y)");
  CHECK(str((x < y) || (Expr(1) < 2)) == "true");
  CHECK(str((x < y) && (x < y)) == "(x < y)");
  CHECK(str(select(x < y, x, x)) == "x");
  Var c("c", DType::boolean());
  CHECK(str(select(!c, x, y)) == "select(c, y, x)");
  CHECK(can_prove(i * 2 < 15, k));
  CHECK_FALSE(can_prove(i * 2 < 14, k));
  CHECK_FALSE(can_prove(x < 5));
}

TEST_CASE("lets, casts and calls", "[simplify]") {
  Var x("x"), y("y"), v("v"), i("i");
  CHECK(str(Let::make(v, Expr(3), v + 1)) == "4");
  CHECK(str(Let::make(v, x, v * 2 - x)) == "x");
  CHECK(str(Let::make(v, x * y, v + v)) == "(let v = (x * y) in (v * 2))");
  CHECK(str(Let::make(v, x * y, x + 1)) == "(x + 1)");
  // A let's bounds reach its body.
  CHECK(str(Let::make(v, i % 8, v < 8), {{i.node(), {0, 100}}}) == "true");
  BoundsMap k{{i.node(), {0, 100}}};
  CHECK(str(cast(DType::i64(), cast(DType::i32(), i)), k) == "i");
  CHECK(str(cast(DType::i64(), cast(DType::i32(), x))) == "i64(i32(x))");
  // A 16-bit float widened to f32 and narrowed back is itself; narrowed first, it is not.
  for (const DType t : {DType::f16(), DType::bf16()}) {
    Var h("h", t), f("f", DType::f32());
    CHECK(str(cast(t, cast(DType::f32(), h))) == "h");
    CHECK(str(cast(DType::f32(), cast(t, f))) == "f32(" + t.to_string() + "(f))");
  }
  CHECK(str(cast(DType::f16(), cast(DType::f32(), Var("b", DType::bf16())))) == "f16(f32(b))");
  CHECK(str(abs(i - 200), k) == "(200 - i)");
  CHECK(str(abs(Expr(-5))) == "5");
  CHECK(str(abs(Expr(kMin64))) == std::to_string(kMin64));
  CHECK(str(abs(i), k) == "i");
  CHECK(str(abs(i - 1), k) == "abs((i - 1))");
}

TEST_CASE("vector arithmetic on ramps and broadcasts", "[simplify]") {
  Var x("x"), i("i");
  auto ramp = [](Expr b, Expr s, int n) { return Ramp::make(b, s, n); };
  auto bc = [](Expr v, int n) { return Broadcast::make(v, n); };
  CHECK(str(ramp(x, 1, 4) + bc(2, 4)) == "ramp((x + 2), 1, 4)");
  CHECK(str(bc(x, 4) + bc(Expr(3), 4)) == "x4((x + 3))");
  CHECK(str(ramp(x, 1, 4) + ramp(Expr(0), 2, 4)) == "ramp(x, 3, 4)");
  CHECK(str(ramp(x, 1, 4) - ramp(x, 1, 4)) == "x4(0)");
  CHECK(str(ramp(x, 2, 4) * bc(3, 4)) == "ramp((x * 3), 6, 4)");
  CHECK(str(bc(x, 4) - ramp(Expr(1), 1, 4)) == "ramp((x - 1), -1, 4)");
  BoundsMap k{{i.node(), {0, 100}}};
  CHECK(str(ramp(i * 8, 1, 8) / bc(8, 8), k) == "x8(i)");
  CHECK(str(ramp(i * 8, 1, 8) % bc(8, 8), k) == "ramp(0, 1, 8)");
  CHECK(str(ramp(i * 16, 8, 4) / bc(8, 4), k) == "ramp((i * 2), 1, 4)");
  CHECK(str(ramp(i * 16 + 3, 8, 4) % bc(8, 4), k) == "x4(3)");
  CHECK(str(ramp(i, 1, 4) < bc(Expr(200), 4), k) == "x4(true)");
  // Lanes that cross a block boundary are left alone.
  CHECK(str(ramp(i * 8 + 6, 1, 4) / bc(8, 4), k) == "(ramp(((i * 8) + 6), 1, 4) / x4(8))");
  Var f("f", DType::f32());
  CHECK(str(bc(f, 4) * bc(Expr(1.0f), 4)) == "x4(f)");
}

TEST_CASE("bounds_of is interval arithmetic that knows about wraparound", "[simplify]") {
  Var x("x"), y("y"), u("u"), v("v");
  BoundsMap k{{x.node(), {-5, 10}}, {y.node(), {2, 3}}};
  auto is = [](const Interval& iv, std::optional<int64_t> lo, std::optional<int64_t> hi) {
    return iv.min == lo && iv.max == hi;
  };
  CHECK(is(bounds_of(x + y, k), -3, 13));
  CHECK(is(bounds_of(x - y, k), -8, 8));
  CHECK(is(bounds_of(x * y, k), -15, 30));
  CHECK(is(bounds_of(x * -2, k), -20, 10));
  CHECK(is(bounds_of(x * x, k), -50, 100));
  CHECK(is(bounds_of(x / 2, k), -2, 5));
  CHECK(is(bounds_of(x / y, k), -2, 5));
  CHECK(is(bounds_of(x % 3, k), -2, 2));
  CHECK(is(bounds_of(y % 8, k), 2, 3));
  CHECK(is(bounds_of(min(x, y), k), -5, 3));
  CHECK(is(bounds_of(max(x, y), k), 2, 10));
  CHECK(is(bounds_of(select(u < 0, x, y * 10), k), -5, 30));
  CHECK(is(bounds_of(x - x, k), 0, 0));  // linear forms cancel
  CHECK(is(bounds_of(Ramp::make(x, 2, 4), k), -5, 16));
  CHECK(is(bounds_of(Broadcast::make(y, 4), k), 2, 3));
  CHECK(is(bounds_of(Let::make(v, x * 2, v + 1), k), -9, 21));
  CHECK(is(bounds_of(cast(DType::i32(), x), k), -5, 10));
  CHECK(is(bounds_of(x < y, k), 0, 1));
  CHECK(is(bounds_of(u, k), std::nullopt, std::nullopt));
  CHECK(is(bounds_of(u + 1, k), std::nullopt, std::nullopt));  // u + 1 wraps at the top
  CHECK(is(bounds_of(u % 8, k), -7, 7));
  CHECK(is(bounds_of(u / kMax64, k), -1, 1));
  CHECK(is(bounds_of(x / u, k), std::nullopt, std::nullopt));  // u may be 0
  CHECK(is(bounds_of(x * (int64_t{1} << 62), k), std::nullopt, std::nullopt));
  Var b("b", DType::i8());
  // A type's own limit is reported as "no bound".
  CHECK(is(bounds_of(b + IntImm::make(DType::i8(), 1), {{b.node(), {0, 125}}}), 1, 126));
  CHECK(is(bounds_of(b + IntImm::make(DType::i8(), 1), {{b.node(), {0, 126}}}), 1, std::nullopt));
  CHECK(is(bounds_of(b + IntImm::make(DType::i8(), 1), {{b.node(), {0, 127}}}), std::nullopt,
           std::nullopt));
  CHECK(is(bounds_of(cast(DType::i8(), x * 100), k), std::nullopt, std::nullopt));
  Var f("f", DType::f32());
  CHECK(is(bounds_of(f, {}), std::nullopt, std::nullopt));
}

// ---- Statements -----------------------------------------------------------------------------

TEST_CASE("loops of extent 1 disappear and empty loops are removed", "[simplify]") {
  Buffer out = Buffer::make("B", DType::i64(), {Expr(64)});
  Var k("k"), n("n");
  Stmt one = For::make(k, 3, 1, ForKind::kSerial, Store::make(out, k * 2, {k}));
  CHECK(to_string(simplify(one)) == "B[3] = 6\n");
  Stmt zero = For::make(k, 0, 0, ForKind::kSerial, Store::make(out, k, {k}));
  CHECK_FALSE(simplify(zero).defined());
  // A loop whose extent is provably <= 0 by the known bounds of n.
  Stmt neg = For::make(k, 0, n - 5, ForKind::kSerial, Store::make(out, k, {k}));
  CHECK_FALSE(simplify(neg, {{n.node(), {0, 5}}}).defined());
  CHECK(simplify(neg).defined());
  // Extent 1 at a non-constant start keeps a let.
  Stmt let = For::make(k, n * 4, 1, ForKind::kSerial, Store::make(out, k + k, {k}));
  CHECK(to_string(simplify(let)) == "let k = (n * 4)\nB[k] = (k * 2)\n");
  // An emptied body removes the loop, the allocation and the sequence around it.
  Buffer tmp = Buffer::make("tmp", DType::i64(), {Expr(4)}, MemoryScope::kLocal);
  Var i("i");
  Stmt nest = For::make(i, 0, 4, ForKind::kSerial,
                        Allocate::make(tmp, Seq::make({For::make(k, 0, i - i, ForKind::kSerial,
                                                                 Store::make(tmp, k, {k})),
                                                       Evaluate::make(Expr(0))})));
  CHECK_FALSE(simplify(nest).defined());
}

TEST_CASE("ifs decided by constants, loop bounds and enclosing conditions", "[simplify]") {
  Buffer out = Buffer::make("B", DType::i64(), {Expr(64)});
  Var i("i"), n("n"), x("x");
  Stmt a = Store::make(out, Expr(1), {0}), b = Store::make(out, Expr(2), {0});
  CHECK(to_string(simplify(IfThenElse::make(Expr(1) < 2, a, b))) == "B[0] = 1\n");
  CHECK(to_string(simplify(IfThenElse::make(Expr(1) > 2, a, b))) == "B[0] = 2\n");
  CHECK_FALSE(simplify(IfThenElse::make(Expr(1) > 2, a)).defined());
  // The loop range decides the guard of a full tile.
  Stmt guarded = For::make(i, 0, 8, ForKind::kSerial,
                           IfThenElse::make(i < 8, Store::make(out, i, {i})));
  CHECK(to_string(simplify(guarded)) == "for (i, 0, 8) {\n  B[i] = i\n}\n");
  // A symbolic extent: i < n is the loop condition itself.
  Stmt sym = For::make(i, 0, n, ForKind::kSerial,
                       IfThenElse::make(i < n, Store::make(out, i, {i}), b));
  CHECK(to_string(simplify(sym)) == "for (i, 0, n) {\n  B[i] = i\n}\n");
  // Nested conditions: the inner one follows from the outer.
  Stmt nested =
      IfThenElse::make(x < 5, IfThenElse::make(x < 10, a, b), IfThenElse::make(x >= 5, b, a));
  CHECK(to_string(simplify(nested)) == "if ((x < 5)) {\n  B[0] = 1\n} else {\n  B[0] = 2\n}\n");
  // Same condition repeated, and its negation.
  Stmt again = IfThenElse::make(x < n, IfThenElse::make(n <= x, a, b));
  CHECK(to_string(simplify(again)) == "if ((x < n)) {\n  B[0] = 2\n}\n");
  // An empty then-branch flips the condition.
  Stmt flip = IfThenElse::make(x < n, For::make(i, 0, 0, ForKind::kSerial, a), b);
  CHECK(to_string(simplify(flip)) == "if ((n <= x)) {\n  B[0] = 2\n}\n");
}

TEST_CASE("loop index arithmetic simplifies inside the loop", "[simplify]") {
  Buffer in = Buffer::make("A", DType::f32(), {Expr(128)});
  Buffer out = Buffer::make("B", DType::f32(), {Expr(16), Expr(8)});
  Var i("i"), j("j"), t("t");
  Expr flat = i * 8 + j;
  Stmt body = Store::make(out, in(flat), {flat / 8, flat % 8});
  Stmt loops = For::make(i, 0, 16, ForKind::kParallel,
                         For::make(j, 0, 8, ForKind::kVectorized, body));
  CHECK(to_string(simplify(loops)) ==
        "parallel for (i, 0, 16) {\n"
        "  vectorized for (j, 0, 8) {\n"
        "    B[i, j] = A[((i * 8) + j)]\n"
        "  }\n"
        "}\n");
  // LetStmt with a constant is substituted; with anything else it stays and gives bounds.
  Stmt lets = LetStmt::make(t, Expr(8), For::make(j, 0, t, ForKind::kSerial,
                                                   Store::make(out, in(j), {j / t, j % t})));
  CHECK(to_string(simplify(lets)) == "for (j, 0, 8) {\n  B[0, j] = A[j]\n}\n");
  Stmt bounded = LetStmt::make(t, i % 8, Store::make(out, in(t), {t / 8, t}));
  CHECK(to_string(simplify(bounded, {{i.node(), {0, 1000}}})) ==
        "let t = (i % 8)\nB[0, t] = A[t]\n");
  Func f{"copy", {in, out}, loops};
  CHECK(to_string(simplify(f)).find("B[i, j] = A[((i * 8) + j)]") != std::string::npos);
}

// ---- Random expressions against the interpreter --------------------------------------------

namespace {

void check_random_scalars(uint64_t seed, DType type) {
  INFO("seed " << seed << ", type " << type);
  Var x("x", type), y("y", type), z("z", type), w("w", type);
  // w is unknown to the simplifier; it is sampled in [-100, 100] and at the type's extremes.
  ExprGen gen(seed, {{x, -20, 20, true}, {y, 0, 31, true}, {z, -64, -1, true},
                     {w, -100, 100, false}}, type);
  BoundsMap known = gen.known();
  int before = 0, after = 0, became_constant = 0;
  for (int n = 0; n < 3000; ++n) {
    Expr e = gen.gen(4);
    Expr s = simplify(e, known);
    before += count_nodes(e);
    after += count_nodes(s);
    became_constant += as_const_int(s) && !as_const_int(e);
    Interval b = bounds_of(e, known), bs = bounds_of(s, known);
    INFO("expr " << e << "\nsimplified " << s);
    for (int p = 0; p < 24; ++p) {
      Env env = gen.point(p);
      INFO("at " << describe(env));
      int64_t want = eval(e, env), got = eval(s, env);
      REQUIRE(got == want);
      REQUIRE(contains(b, want));
      REQUIRE(contains(bs, want));
    }
  }
  // A simplifier that did nothing would pass the checks above; this one must shrink things.
  INFO("nodes before " << before << ", after " << after << ", constants " << became_constant);
  CHECK(after * 10 < before * 8);
  CHECK(became_constant > 30);
}

// Vector expressions of 4 lanes built from ramps and broadcasts, checked lane by lane.
void check_random_vectors(uint64_t seed) {
  INFO("seed " << seed);
  Var x("x"), y("y");
  ExprGen gen(seed, {{x, 0, 50, true}, {y, -8, 8, true}});
  BoundsMap known = gen.known();
  constexpr int kLanes = 4;
  std::function<Expr(int)> vgen = [&](int depth) -> Expr {
    if (depth <= 0 || gen.chance(20)) {
      switch (gen.uniform(0, 2)) {
        case 0: return Ramp::make(gen.gen(1), Expr(gen.uniform(-3, 3)), kLanes);
        case 1: return Broadcast::make(gen.gen(1), kLanes);
        default: return Broadcast::make(Expr(gen.uniform(-9, 9)), kLanes);
      }
    }
    Expr c = Broadcast::make(Expr(gen.positive_divisor()), kLanes);
    switch (gen.uniform(0, 7)) {
      case 0: return vgen(depth - 1) + vgen(depth - 1);
      case 1: return vgen(depth - 1) - vgen(depth - 1);
      case 2: return vgen(depth - 1) * Broadcast::make(Expr(gen.uniform(-4, 4)), kLanes);
      case 3: return vgen(depth - 1) / c;
      case 4: return vgen(depth - 1) % c;
      case 5: return min(vgen(depth - 1), vgen(depth - 1));
      case 6: {
        // ramp(x*c + k, s, n) / c: the vectorised index shape.
        int64_t d = gen.positive_divisor();
        Expr base = Expr(x) * Expr(d) + Expr(gen.uniform(-3, 10));
        Expr r = Ramp::make(base, Expr(gen.uniform(0, 2) * (gen.chance(50) ? d : 1)), kLanes);
        Expr dv = Broadcast::make(Expr(d), kLanes);
        return gen.chance(50) ? r / dv : r % dv;
      }
      default: return select(vgen(depth - 1) < vgen(depth - 1), vgen(depth - 1), vgen(depth - 1));
    }
  };
  int changed = 0;
  for (int n = 0; n < 1500; ++n) {
    Expr e = vgen(3);
    Expr s = simplify(e, known);
    REQUIRE(s.type() == e.type());
    changed += count_nodes(s) < count_nodes(e);
    Interval b = bounds_of(e, known);
    INFO("expr " << e << "\nsimplified " << s);
    for (int p = 0; p < 12; ++p) {
      Env env = gen.point(p);
      INFO("at " << describe(env));
      for (int lane = 0; lane < kLanes; ++lane) {
        INFO("lane " << lane);
        int64_t want = eval(e, env, lane);
        REQUIRE(eval(s, env, lane) == want);
        REQUIRE(contains(b, want));
      }
    }
  }
  CHECK(changed > 500);
}

}  // namespace

TEST_CASE("random integer expressions keep their values (fixed and fresh seeds)", "[simplify]") {
  for (DType t : {DType::i64(), DType::i32(), DType::i8()}) {
    check_random_scalars(12345, t);
    check_random_scalars(loom::testing::test_seed(), t);
  }
}

TEST_CASE("random vector expressions keep their values lane by lane", "[simplify]") {
  check_random_vectors(777);
  check_random_vectors(loom::testing::test_seed() + 1);
}

// ---- Random loop nests against a statement interpreter -------------------------------------

namespace {

using Trace = std::vector<std::pair<int64_t, int64_t>>;  // (index, value) of each store, in order

void run(const Stmt& s, Env& env, Trace& trace) {
  if (!s.defined()) return;
  if (auto* f = s.as<For>()) {
    int64_t lo = eval(f->min, env), n = eval(f->extent, env);
    for (int64_t v = lo; v < lo + n; ++v) {
      env[f->var.node()] = v;
      run(f->body, env, trace);
    }
    env.erase(f->var.node());
  } else if (auto* l = s.as<LetStmt>()) {
    env[l->var.node()] = eval(l->value, env);
    run(l->body, env, trace);
    env.erase(l->var.node());
  } else if (auto* i = s.as<IfThenElse>()) {
    run(eval(i->cond, env) ? i->then_case : i->else_case, env, trace);
  } else if (auto* q = s.as<Seq>()) {
    for (const Stmt& st : q->stmts) run(st, env, trace);
  } else if (auto* st = s.as<Store>()) {
    trace.emplace_back(eval(st->indices[0], env), eval(st->value, env));
  } else {
    FAIL("cannot run " << s);
  }
}

}  // namespace

TEST_CASE("random loop nests store the same values in the same order", "[simplify]") {
  uint64_t seed = loom::testing::test_seed() + 2;
  INFO("seed " << seed);
  Var x("x"), i("i"), j("j");
  ExprGen outer(seed, {{x, -5, 5, true}});
  ExprGen inner(seed + 1, {{x, -5, 5, true}, {i, -3, 12, true}, {j, -3, 12, true}});
  Buffer out = Buffer::make("B", DType::i64(), {Expr(1000)});
  int removed = 0;
  for (int n = 0; n < 400; ++n) {
    auto extent = [&] {
      return Expr(outer.uniform(0, 4)) + (outer.chance(30) ? Expr(x) : Expr(0));
    };
    auto start = [&] { return outer.chance(50) ? Expr(outer.uniform(-3, 3)) : Expr(x); };
    // Conditions that share comparisons, so enclosing ifs decide inner ones and selects.
    Expr p = inner.cond(1), q = inner.cond(1);
    auto pick = [&](std::vector<Expr> es) { return es[outer.uniform(0, es.size() - 1)]; };
    auto store = [&] {
      Expr v = outer.chance(30) ? select(pick({p, q}), inner.gen(2), inner.gen(2)) : inner.gen(3);
      return Store::make(out, v, {inner.gen(3)});
    };
    auto nested = [&](bool allow_empty) {
      if (outer.chance(50)) return allow_empty && outer.chance(30) ? Stmt() : store();
      return IfThenElse::make(pick({p, q, !p, !q, p && q, inner.cond(1)}), store(),
                              outer.chance(50) ? store() : Stmt());
    };
    Stmt body = outer.chance(75)
                    ? IfThenElse::make(pick({p, p && q, p || q, !p, !(p || q)}), nested(false),
                                       nested(true))
                    : Seq::make({store(), nested(true)});
    Stmt prog = For::make(i, start(), extent(), ForKind::kSerial,
                          For::make(j, start(), extent(), ForKind::kSerial, body));
    Stmt s = simplify(prog, outer.known());
    removed += !s.defined() || s.as<For>() == nullptr || s.as<For>()->body.as<For>() == nullptr;
    INFO("program\n" << prog << "simplified\n" << s);
    for (int64_t xv = -5; xv <= 5; ++xv) {
      Env e1{{x.node(), xv}}, e2{{x.node(), xv}};
      Trace t1, t2;
      run(prog, e1, t1);
      run(s, e2, t2);
      REQUIRE(t1 == t2);
    }
  }
  CHECK(removed > 20);
}
