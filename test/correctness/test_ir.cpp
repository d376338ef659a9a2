// Loop IR: node construction, printing, structural hashing/equality, layouts.

#include "loom/core/hash.hpp"
#include "loom/ir/buffer.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/structural.hpp"
#include "loom/layout/layout.hpp"
#include "test_util.hpp"

using namespace loom;
using namespace loom::ir;

TEST_CASE("expressions print readably and adopt operand types", "[ir]") {
  Var i("i"), j("j");
  Expr e = (i * 4 + j) / 2;
  CHECK(to_string(e) == "(((i * 4) + j) / 2)");
  CHECK(e.type() == DType::i64());
  Var x("x", DType::f32());
  Expr f = max(x * 2, 0);  // integer literals adopt the float type
  CHECK(f.type() == DType::f32());
  CHECK(to_string(f) == "max((x * 2f), 0f)");
  Expr v = Ramp::make(i, 1, 8) + Broadcast::make(j, 8);
  CHECK(v.type() == DType::i64(8));
  CHECK(to_string(v) == "(ramp(i, 1, 8) + x8(j))");
  CHECK(to_string(cast(DType::f16(), x)) == "f16(x)");
  CHECK(to_string(select(x > 1.5f, exp(x), x)) == "select((x > 1.5f), exp(x), x)");
  CHECK((x < 2.0f).type() == DType::boolean());
}

TEST_CASE("statements and funcs print as nested loops", "[ir]") {
  Var n("n");
  Buffer a = Buffer::make("A", DType::f32(), {n, Expr(4)});
  Buffer c = Buffer::make("C", DType::f32(), {n});
  Buffer acc = Buffer::make("acc", DType::f32(), {Expr(1)}, MemoryScope::kLocal);
  Var i("i"), k("k");
  Stmt body = For::make(
      i, 0, n, ForKind::kParallel,
      Allocate::make(acc, Seq::make({Store::make(acc, Expr(0.0f), {0}),
                                     For::make(k, 0, 4, ForKind::kUnrolled,
                                               Store::make(acc, acc(0) + a(i, k), {0})),
                                     Store::make(c, acc(0), {i})})));
  Func f{"row_sum", {a, c, n}, body};
  std::string text = to_string(f);
  CHECK(text.find("func row_sum(A: f32[row_major(n, 4)], C: f32[row_major(n)], n: i64)") == 0);
  CHECK(text.find("parallel for (i, 0, n) {") != std::string::npos);
  CHECK(text.find("unrolled for (k, 0, 4) {") != std::string::npos);
  CHECK(text.find("acc[0] = (acc[0] + A[i, k])") != std::string::npos);
  CHECK(f.buffer_params().size() == 2);
  CHECK(f.scalar_params().size() == 1);
}

TEST_CASE("structural equality ignores names but not structure", "[ir]") {
  auto make = [](const std::string& prefix, int64_t extent, bool swap) {
    Var i(prefix + "i");
    Buffer b = Buffer::make(prefix + "B", DType::f32(), {Expr(extent)});
    Expr v = swap ? b(i) * 2.0f : b(i) + 2.0f;
    return Func{prefix + "f", {b}, For::make(i, 0, extent, ForKind::kSerial, Store::make(b, v, {i}))};
  };
  CHECK(structural_equal(make("a", 8, false), make("b", 8, false)));
  CHECK(structural_hash(make("a", 8, false)) == structural_hash(make("b", 8, false)));
  CHECK(!structural_equal(make("a", 8, false), make("a", 9, false)));
  CHECK(!structural_equal(make("a", 8, false), make("a", 8, true)));
  CHECK(structural_hash(make("a", 8, false)) != structural_hash(make("a", 8, true)));
  // Sharing matters: x + x differs from x + y.
  Var x("x"), y("y");
  CHECK(!structural_equal(x + x, x + y));
  CHECK(structural_equal(x + y, y + x));  // both are "first var + second var"
  // The hash is stable across processes: a fixed expression has a fixed hash.
  CHECK(structural_hash(Expr(int64_t{3}) + Expr(int64_t{4})) ==
        structural_hash(Expr(int64_t{3}) + Expr(int64_t{4})));
}

TEST_CASE("row-major layouts give suffix-product offsets", "[ir][layout]") {
  Var n("n");
  Layout l = Layout::row_major({Expr(3), n, Expr(5)});
  CHECK(l.is_row_major());
  CHECK(to_string(l.physical_size()) == "((5 * n) * 3)");
  Var i("i"), j("j"), k("k");
  CHECK(to_string(l.offset({i, j, k})) == "(((i * (5 * n)) + (j * 5)) + k)");
  CHECK(l.to_string() == "row_major(3, n, 5)");
  Layout t = Layout::strided({Expr(4), Expr(6)}, {Expr(1), Expr(4)}, Expr(24));
  CHECK(!t.is_row_major());
  CHECK(to_string(t.offset({i, j})) == "(i + (j * 4))");
}

TEST_CASE("stable hash is fixed across builds", "[ir]") {
  // FNV-1a with a fixed mix: changing it would silently invalidate every cache key.
  CHECK(stable_hash("loom") == stable_hash(std::string("lo") + "om"));
  CHECK(stable_hash("loom") != stable_hash("loon"));
}
