// Operators and helper functions that build IR expressions: a + b, min(a, b), exp(x), ...
// Immediates adopt the other operand's type; scalars broadcast against vectors.
#pragma once

#include <optional>

#include "loom/ir/expr.hpp"

namespace loom::ir {

// Makes a and b the same type: immediates are re-typed, scalars broadcast. Internal invariant
// failure when the types genuinely differ.
void match_types(Expr& a, Expr& b);

// Constant of type t (any lanes) with the given value.
Expr make_const(DType t, double value);
Expr make_zero(DType t);
Expr make_one(DType t);

// The constant value of an integer immediate (or a broadcast of one).
std::optional<int64_t> as_const_int(const Expr& e);
std::optional<double> as_const_float(const Expr& e);
bool is_const_int(const Expr& e, int64_t v);

Expr operator+(Expr a, Expr b);
Expr operator-(Expr a, Expr b);
Expr operator*(Expr a, Expr b);
Expr operator/(Expr a, Expr b);
Expr operator%(Expr a, Expr b);
Expr operator-(Expr a);
Expr operator==(Expr a, Expr b);
Expr operator!=(Expr a, Expr b);
Expr operator<(Expr a, Expr b);
Expr operator<=(Expr a, Expr b);
Expr operator>(Expr a, Expr b);
Expr operator>=(Expr a, Expr b);
Expr operator&&(Expr a, Expr b);
Expr operator||(Expr a, Expr b);
Expr operator!(Expr a);

Expr min(Expr a, Expr b);
Expr max(Expr a, Expr b);
Expr select(Expr cond, Expr t, Expr f);
Expr cast(DType t, Expr v);
Expr exp(Expr x);
Expr log(Expr x);
Expr sqrt(Expr x);
Expr rsqrt(Expr x);
Expr tanh(Expr x);
Expr erf(Expr x);
Expr abs(Expr x);
Expr floor(Expr x);
Expr ceil(Expr x);
Expr round(Expr x);
Expr pow(Expr x, Expr y);
Expr fma(Expr a, Expr b, Expr c);
// a XOR b of two integers (constants fold): the intrinsic bit_xor, which swizzled layouts use.
Expr bit_xor(Expr a, Expr b);
// The bits of x read as type t (f32 <-> i32, same lanes): the intrinsics reinterpret_f32 and
// reinterpret_i32. Vector exp and similar functions build float exponents this way.
Expr reinterpret(DType t, Expr x);
Expr sigmoid(Expr x);
// x, marked as an output element's final value (see Call).
Expr final_value(Expr x);
// CUDA only: x of the warp lane (lane index xor lane_mask), for butterfly warp reductions.
Expr shfl_xor_sync(Expr x, int lane_mask);

// Lowest and highest finite values of a type (as constants of that type).
Expr lowest_value(DType t);
Expr highest_value(DType t);

}  // namespace loom::ir
