// Math functions built from plain IR arithmetic (see loom/ir/fast_math.hpp).

#include "loom/ir/fast_math.hpp"

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"

namespace loom::ir {

Expr fast_exp(Expr x, bool use_fma) {
  const DType t = x.type();
  LOOM_CHECK(t.code() == DTypeCode::kF32, "fast_exp of ", t, " (needs f32)");
  const int lanes = t.lanes();
  auto c = [&](double v) { return make_const(t, v); };
  // a * b + c, fused where the target can.
  auto mad = [&](Expr a, Expr b, Expr d) { return use_fma ? fma(a, b, d) : a * b + d; };

  // Cephes expf: ln2 split so that n * kLn2Hi is exact for |n| < 2^15, and the minimax
  // polynomial e^r ~ 1 + r + r^2 P(r) on |r| <= ln2 / 2.
  constexpr double kLog2e = 1.44269504088896341;
  constexpr double kLn2Hi = 0.693359375;
  constexpr double kLn2Lo = -2.12194440e-4;
  constexpr double kP[] = {1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                           4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1};

  Var xc("exp_x", t), n("exp_n", t), r("exp_r", t), r2("exp_r2", t);
  // max first: maxnum(NaN, lo) is lo, so a NaN never reaches the integer conversion.
  Expr clamped = min(max(x, c(-88.0)), c(88.37));
  Expr n_value = floor(mad(xc, c(kLog2e), c(0.5)));
  Expr r_value = mad(n, c(-kLn2Lo), mad(n, c(-kLn2Hi), xc));
  Expr p = c(kP[0]);
  for (int k = 1; k < 6; ++k) p = mad(p, r, c(kP[k]));
  Expr e_r = mad(p, r2, r + c(1.0));
  // 2^n for n in [-127, 127]: biased exponent n + 127 in bits 23..30 (n = -127 gives +0).
  Expr bits = (cast(DType::i32(lanes), n) + 127) * (1 << 23);
  Expr body = e_r * reinterpret(t, bits);
  return Let::make(xc, clamped,
                   Let::make(n, n_value, Let::make(r, r_value, Let::make(r2, r * r, body))));
}

}  // namespace loom::ir
