// kvcast tests — an oracle for fp8 and 16-bit float rounding that shares no code with kvcast:
// it decodes every code of a format to a double and picks the nearest, ties to the even code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace oracle {

// The value of a code of a binary format with `e` exponent bits and `m` mantissa bits.
// `e4m3fn` marks OCP E4M3: exponent all-ones is normal and only S.1111.111 is NaN.
inline double decode(std::uint32_t code, int e, int m, bool e4m3fn) {
  const int bias = (1 << (e - 1)) - 1;
  const std::uint32_t mant = code & ((1u << m) - 1);
  const std::uint32_t expo = (code >> m) & ((1u << e) - 1);
  const bool neg = (code >> (e + m)) & 1u;
  double v;
  if (e4m3fn && expo == 15 && mant == 7) return NAN;
  if (!e4m3fn && expo == (1u << e) - 1) {
    if (mant) return NAN;
    v = INFINITY;
  } else if (expo == 0) {
    v = mant * std::pow(2.0, 1 - bias - m);
  } else {
    v = (1.0 + mant * std::pow(2.0, -m)) * std::pow(2.0, static_cast<int>(expo) - bias);
  }
  return neg ? -v : v;
}

// The non-negative codes of a format in increasing order of value, ending with the code that
// rounding may overflow into (inf for IEEE-like formats, nothing for saturating fp8).
struct Table {
  std::vector<double> value;
  std::vector<std::uint32_t> code;
  std::uint32_t sign_bit = 0;
  double max_finite = 0;
  bool saturating = false;
  std::uint32_t nan_code = 0;

  static Table make(int e, int m, bool e4m3fn, bool saturating, std::uint32_t nan_code) {
    Table t;
    t.sign_bit = 1u << (e + m);
    t.saturating = saturating;
    t.nan_code = nan_code;
    for (std::uint32_t c = 0; c < t.sign_bit; ++c) {
      const double v = decode(c, e, m, e4m3fn);
      if (std::isnan(v)) continue;
      if (std::isinf(v)) {
        if (saturating) continue;
        // IEEE rounding overflows to inf exactly where the next binade would start.
        t.value.push_back(2.0 * std::pow(2.0, (1 << (e - 1)) - 1));
        t.code.push_back(c);
        continue;
      }
      t.value.push_back(v);
      t.code.push_back(c);
      t.max_finite = std::max(t.max_finite, v);
    }
    return t;
  }

  // Nearest code to x, ties to the even code; fp8 saturates (after the clamp the contract asks
  // for, done here explicitly), IEEE formats overflow to inf.
  std::uint32_t round(double x) const {
    if (std::isnan(x)) return nan_code;
    const std::uint32_t sign = std::signbit(x) ? sign_bit : 0u;
    double a = std::fabs(x);
    if (saturating) a = std::min(a, max_finite);  // clamp(-max, max)
    const auto hi = std::lower_bound(value.begin(), value.end(), a);
    if (hi == value.end()) return sign | code.back();  // beyond inf's threshold: inf
    const std::size_t i = static_cast<std::size_t>(hi - value.begin());
    if (*hi == a || i == 0) return sign | code[i];
    const double d_hi = *hi - a, d_lo = a - value[i - 1];
    if (d_lo < d_hi) return sign | code[i - 1];
    if (d_hi < d_lo) return sign | code[i];
    return sign | ((code[i] & 1u) == 0 ? code[i] : code[i - 1]);
  }
};

inline const Table& e4m3() {
  static const Table t = Table::make(4, 3, true, true, 0x7F);
  return t;
}
inline const Table& e5m2() {
  static const Table t = Table::make(5, 2, false, true, 0x7F);
  return t;
}
inline const Table& f16() {
  static const Table t = Table::make(5, 10, false, false, 0x7E00);
  return t;
}
inline const Table& bf16() {
  static const Table t = Table::make(8, 7, false, false, 0x7FC0);
  return t;
}
inline double f16_value(std::uint16_t bits) { return decode(bits, 5, 10, false); }
inline double bf16_value(std::uint16_t bits) { return decode(bits, 8, 7, false); }

// quantize(x, scale) from its definition. `t16` is the 16-bit input format (null for f32).
// fp32 mode: RN_f32(x / scale) — rounding the double quotient to float is the correctly rounded
// float quotient (53 >= 2*24 + 2, so double rounding is innocuous) — then fp8.
// input precision: every step rounded in T, the clamp explicit, then fp8.
inline std::uint32_t quantize(const Table& fp8, const Table* t16, double x, float scale, bool input_precision) {
  if (!input_precision) return fp8.round(static_cast<float>(x / static_cast<double>(scale)));
  if (t16 == nullptr) {
    const float inv = static_cast<float>(1.0 / static_cast<double>(scale));
    return fp8.round(static_cast<float>(x * static_cast<double>(inv)));
  }
  const int e = t16 == &f16() ? 5 : 8, m = t16 == &f16() ? 10 : 7;
  const double s = decode(t16->round(scale), e, m, false);
  const double inv = decode(t16->round(1.0 / s), e, m, false);  // 53 >= 2*11 + 2: innocuous
  double y = decode(t16->round(x * inv), e, m, false);          // exact product, one rounding
  const double max = fp8.max_finite;
  y = y > max ? max : (-max > y ? -max : y);                    // SGLang's clamp, NaN passes
  return fp8.round(y);
}

// The read, `T(float(code) * scale)`: the code's value, times the scale in double (exact: at
// most 5 + 24 significant bits), rounded once to float — the IEEE fp32 product — then to T with
// the tables (`t16` null: fp32); a NaN gives T's canonical NaN (0x7FFF, 0x7FFFFFFF).
inline std::uint32_t dequantize(const Table* t16, bool e4m3, std::uint32_t code, float scale) {
  const double value = e4m3 ? decode(code, 4, 3, true) : decode(code, 5, 2, false);
  const double product = value * static_cast<double>(scale);
  const bool nan = std::isnan(product);
  float y = 0.0f;
  if (!nan) {
    // From FLT_MAX plus half an ulp on, IEEE rounding gives inf (the tie goes to the even
    // "2^128", which is inf); a cast there would be undefined.
    const double overflow = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);
    y = std::fabs(product) >= overflow ? static_cast<float>(std::copysign(INFINITY, product)) : static_cast<float>(product);
  }
  if (t16 == nullptr) {
    std::uint32_t bits = 0x7fffffffu;
    if (!nan) std::memcpy(&bits, &y, 4);
    return bits;
  }
  return nan ? 0x7fffu : t16->round(y);
}

}  // namespace oracle
