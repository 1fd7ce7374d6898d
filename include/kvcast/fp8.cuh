// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file fp8.cuh
//! Scalar and packed conversions to fp8 built on cuda_fp8.h, and Quantizer, the whole of
//! DESIGN.md §2's `quantize(x, scale)` for one input type, format and arithmetic mode.
//!
//! Every converter here rounds to nearest-even, saturates finite overflow and ±inf to ±max
//! finite (`__NV_SATFINITE`), and turns every NaN into the format's canonical NaN code 0x7F
//! (cuda_fp8.h's behaviour on the host and the device; the sign of a NaN is not kept). Results
//! are identical on the host (cuda_fp8.h's software path) and the device (hardware `cvt` from
//! sm_89 on), which the CPU tests check exhaustively and the GPU tests check on the device.
//!
//! `--use_fast_math` (and its `-ftz=true`): only `_rn` intrinsics and inline PTX are used, so the
//! results do not change, except where fp32 subnormals are involved. In fp32 mode a scale outside
//! the fast range [2^-40, 2^40] that is subnormal reads as ±0 (so 0 / scale gives NaN instead of
//! 0, and subnormal fp32 inputs divided by it change); quotients that flush-to-zero flushes lie
//! far below the smallest fp8 subnormal, so their codes do not change. In input-precision mode
//! the reciprocal is `rcp.approx.f32` without `.ftz` where a bf16 scale or its reciprocal may be
//! subnormal, so even bf16 scales beyond 2^126 or below 2^-126 get CUDA's own bf16 quotient
//! (the GPU test checks every bf16 scale pattern in a fast-math build and reports any that differ).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <nv/target>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"
#include "format.hpp"
#include "vec.cuh"

namespace kvcast {

namespace detail {
template <class Format>
struct Interpretation;
template <>
struct Interpretation<e4m3> {
  static constexpr __nv_fp8_interpretation_t value = __NV_E4M3;
};
template <>
struct Interpretation<e5m2> {
  static constexpr __nv_fp8_interpretation_t value = __NV_E5M2;
};

// IEEE fp32 operations that `--use_fast_math` cannot turn into approximations on the device.
// On the host they are the plain operators (IEEE on every host compiler kvcast supports,
// as long as the host code itself is not built with -ffast-math).
KVCAST_HOST_DEVICE float div_rn(float a, float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return __fdiv_rn(a, b);), (return a / b;))
}
KVCAST_HOST_DEVICE float mul_rn(float a, float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return __fmul_rn(a, b);), (return a * b;))
}
KVCAST_HOST_DEVICE float rcp_rn(float a) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return __frcp_rn(a);), (return 1.0f / a;))
}

// Reciprocals for uses that need only "within one ulp of 1/b" (the PTX ISA's bound for
// rcp.approx.f32), where __frcp_rn's refinement and range check would sit on a decode step's
// path from the scale's load to the first store. On the host both are RN(1/b), which is
// within that bound too. --use_fast_math does not change them (inline PTX).
//! Within one ulp of 1/b where b and 1/b are normal (|b| in [2^-126, 2^126]): one `MUFU.RCP`.
KVCAST_HOST_DEVICE float rcp_approx_normal(float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (float r; asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(b)); return r;),
                    (return 1.0f / b;))
}
//! Within one ulp of 1/b for every b, subnormal b or 1/b included (the hardware prescales
//! them, branch-free); 0 for ±inf, ±inf for ±0, NaN for NaN.
KVCAST_HOST_DEVICE float rcp_approx(float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (float r; asm("rcp.approx.f32 %0, %1;" : "=f"(r) : "f"(b)); return r;),
                    (return 1.0f / b;))
}
}  // namespace detail

//! Converts to fp8: round to nearest-even, ±max finite for |x| beyond it (±inf included),
//! NaN → Format::kNaNCode. `--use_fast_math` does not change it.
template <class Format>
KVCAST_HOST_DEVICE std::uint8_t float_to_fp8(float x) {
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, detail::Interpretation<Format>::value);
}

//! Two floats at once (one `cvt…x2` instruction from sm_89 on): `lo` lands in the low byte,
//! which is the lower address once stored. Same rounding as float_to_fp8.
template <class Format>
KVCAST_HOST_DEVICE std::uint16_t float2_to_fp8x2(float lo, float hi) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE,
                                  detail::Interpretation<Format>::value);
}

//! Two halves at once, converted directly from f16 (no float detour; same result, since every
//! half is exactly a float). Same rounding as float_to_fp8.
template <class Format>
KVCAST_HOST_DEVICE std::uint16_t half2_to_fp8x2(__half2 x) {
  return __nv_cvt_halfraw2_to_fp8x2(static_cast<__half2_raw>(x), __NV_SATFINITE,
                                    detail::Interpretation<Format>::value);
}

//! The exact value of an fp8 code as a float (NaN for the NaN codes, ±inf for E5M2's).
template <class Format>
KVCAST_HOST_DEVICE float fp8_to_float(std::uint8_t code) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(code, detail::Interpretation<Format>::value);
  return __half2float(__half(h));
}

//! Exact widening of an input element to float.
KVCAST_HOST_DEVICE float to_float(float x) { return x; }
KVCAST_HOST_DEVICE float to_float(__half x) { return __half2float(x); }
KVCAST_HOST_DEVICE float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

namespace detail {
//! The floats of two neighbouring elements. With PairWords, for bf16 halves of one 32-bit word
//! (a vector loaded whole): the word shifted up and the word masked, two instructions where the
//! compiler otherwise extracts the high half and then shifts it. Elements loaded one by one
//! would first be packed into a word, so those take to_float (PairWords = false).
template <bool PairWords, class T>
KVCAST_HOST_DEVICE float2 pair_to_float2(T x0, T x1) {
  if constexpr (PairWords && std::is_same_v<T, __nv_bfloat16>) {
    NV_IF_TARGET(NV_IS_DEVICE, (
      const __nv_bfloat162 pair = __halves2bfloat162(x0, x1);
      std::uint32_t word, lo, hi;
      memcpy(&word, &pair, sizeof word);
      // asm: spelled in C++ (word << 16, word & 0xffff0000), the compiler re-derives the halves.
      asm("shl.b32 %0, %2, 16;\n\tand.b32 %1, %2, 0xffff0000;" : "=r"(lo), "=r"(hi) : "r"(word));
      return make_float2(__uint_as_float(lo), __uint_as_float(hi));
    ))
  }
  return make_float2(to_float(x0), to_float(x1));
}
}  // namespace detail

//! `quantize(x, scale)` of DESIGN.md §2 for input type T, fp8 format Format and mode Mode.
//! Built once per thread from the scale (the division or reciprocal is hoisted out of the
//! element loop); then applied to single elements, pairs or whole AlignedVectors.
//!
//! - Arithmetic::fp32: `float_to_fp8(x / scale)` with the quotient exactly as one IEEE fp32
//!   division rounds it (`__fdiv_rn`). fp16 and bf16 inputs take each element's quotient by a
//!   split reciprocal, one FMUL and one FFMA with nothing to check (detail::divide_split). fp32
//!   inputs: single elements from a hoisted reciprocal and two corrections
//!   (detail::divide_fast_for); vectors the same codes from two bracketing products, verified
//!   (detail::bracket_codes).
//! - Arithmetic::input_precision: `s = T(scale)` (round to nearest), `inv = T(1) / s` correctly
//!   rounded in T, `y = x * inv` rounded in T, clamp to ±max, convert. The clamp is not
//!   executed: converting with `__NV_SATFINITE` gives the same code for every input, including
//!   ±inf (→ ±max) and NaN (stays NaN), which the CPU tests check for every 16-bit input.
template <class T, class Format, Arithmetic Mode>
class Quantizer;

namespace detail {
// fp32 division by a scale fixed for the whole kernel, without a division per element: y =
// RN(1/b) once, then two Newton-Markstein corrections of q0 = x*y. The second correction starts
// from a quotient within one ulp and a reciprocal within half an ulp, which makes it the
// correctly rounded quotient RN(x/b) (Markstein's theorem) as long as nothing underflows or
// overflows: |b| in [2^-40, 2^40] (checked once per kernel; other scales take __fdiv_rn) and
// |x| in [2^-80, 2^80). Outside that range of x the fp8 code is still that of RN(x/b):
//  - |x| >= 2^80, ±inf: x is first clamped to ±2^80, whose quotient (>= 2^40) saturates to ±max
//    exactly as the true one does; NaN passes the clamp and stays NaN;
//  - |x| < 2^-80, zeros and subnormals included: |x/b| < 2^-40, and q2 stays within a few units
//    of that, far below half the smallest fp8 subnormal, so the code is ±0 either way; the sign
//    is taken from q0 = x*y, which has the sign of x/b even when it underflows to zero.
// The CPU tests compare the quotient with IEEE division for every fp16/bf16 input in range and
// many scales, and millions of fp32 inputs, and the fp8 codes everywhere.
KVCAST_HOST_DEVICE float fma_rn(float a, float b, float c) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return __fmaf_rn(a, b, c);), (return std::fma(a, b, c);))
}
KVCAST_HOST_DEVICE bool scale_allows_fast_division(float b) {
  const float a = b < 0 ? -b : b;
  return a >= 0x1p-40f && a <= 0x1p40f;  // false for 0, inf and NaN
}
//! x limited to [-2^80, 2^80], NaN kept (`max.NaN`/`min.NaN` on the device: two instructions).
KVCAST_HOST_DEVICE float clamp_2_80(float x) {
  NV_IF_ELSE_TARGET(NV_PROVIDES_SM_80,
                    (float r; asm("max.NaN.f32 %0, %1, 0fE7800000;" : "=f"(r) : "f"(x));
                     asm("min.NaN.f32 %0, %1, 0f67800000;" : "=f"(r) : "f"(r)); return r;),
                    (return x != x ? x : (x < -0x1p80f ? -0x1p80f : (x > 0x1p80f ? 0x1p80f : x));))
}
//! q0 = RN(x * y) followed by `Corrections` Newton-Markstein corrections, with q0's sign (the
//! sign of x / b, also where the quotient underflows to zero).
template <int Corrections>
KVCAST_HOST_DEVICE float divide_corrected(float x, float b, float y) {
  const float q0 = mul_rn(x, y);
  float q = q0;
  KVCAST_UNROLL
  for (int i = 0; i < Corrections; ++i) q = fma_rn(fma_rn(-q, b, x), y, q);
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return copysignf(q, q0);), (return std::copysign(q, q0);))
}

// One correction is enough for the fp8 (and E2M1) code of a 16-bit input. After q0 = RN(x*y) and
// q1 = RN(q0 + r*y), r = RN(x - q0*b), q1 = RN(x/b + d) with |d| <= |x/b| * 2^-45 (y and q0 are
// each within 2^-24 relative, r within 2^-24: their errors multiply), wherever |x/b| >= 2^-20
// (below, both codes are ±0; the sign comes from q0). q1 and RN(x/b) differ only when a float32
// rounding midpoint mu lies within |d| of x/b, and their fp8 codes differ only when mu is next to
// an fp8 or E2M1 rounding boundary m: mu = m ± ulp/2, a 25-bit odd significand M. For x's significand X
// (odd, at most 11 bits: fp16 and bf16) and b's B (24 bits) that needs
// |X * 2^s - M * B| <= 16 for some s. The CPU test (OneCorrection) enumerates every X, M, s and
// offset for E4M3, E5M2 and E2M1: one family fits (X = 1, B = 2^24 - 1, at the power-of-two midpoints
// 2^-10 and 2^-17), and there the corrected quotient is RN(x/b) itself, which it checks. So for
// fp16 and bf16 inputs one correction gives RN(x/b)'s fp8 code for every scale in the fast
// range (not always RN(x/b): a float32 value may differ in its last place); fp32 inputs, with
// 24-bit significands, keep the second correction.

// The one correction tolerates a coarser reciprocal: with y anywhere within one ulp of 1/b (what
// rcp.approx guarantees) the same steps give |d| <= |x/b| * 1.2 * 2^-45, inside the 2^-44 for
// which OneCorrection repeats the enumeration (|X * 2^s - M * B| <= 32): the same single family,
// X = 1 and B = 2^24 - 1, and there a reciprocal one ulp below RN(1/b) does change codes (x = 2^23
// over 0x1.fffffep39 lands on E5M2's 2^-17 tie). So 16-bit inputs take their reciprocal from one
// MUFU.RCP except for scales whose significand is all ones, which keep RN(1/b); float inputs keep
// RN(1/b) too, which the second correction's Markstein theorem needs (reciprocal_for).

//! The reciprocal divide_fast_for<T> takes: RN(1/b), or for fp16 and bf16 inputs and a b whose
//! significand is not all ones, anything within one ulp of 1/b (one rcp.approx).
//! @pre scale_allows_fast_division(b) where it is used.
template <class T>
KVCAST_HOST_DEVICE float reciprocal_for(float b) {
  if constexpr (sizeof(T) == 2) {
    std::uint32_t bits;
    memcpy(&bits, &b, sizeof bits);
    if ((bits & 0x7fffffu) != 0x7fffffu) return rcp_approx_normal(b);
  }
  return rcp_rn(b);
}

//! amax / Format::kMax correctly rounded, for amax the magnitude of an input of type T. For fp16
//! and bf16 magnitudes (at most 11 significant bits) one Markstein correction of
//! amax * RN(1 / kMax) is the IEEE quotient, subnormal results included: the CPU test
//! (ScaleOfRowHead) divides every one of them, for both formats. ±inf and NaN keep the first
//! product (inf, and on the device the canonical NaN), where the correction's residual is NaN.
//! Float magnitudes take __fdiv_rn.
template <class Format, class T>
KVCAST_HOST_DEVICE float divide_by_max(float amax) {
  if constexpr (sizeof(T) == 2) {
    constexpr float y = 1.0f / Format::kMax;  // RN(1 / kMax), folded when compiling
    const float q0 = mul_rn(amax, y);
    const float r = fma_rn(-q0, Format::kMax, amax);
    return r == r ? fma_rn(r, y, q0) : q0;
  } else {
    return div_rn(amax, Format::kMax);
  }
}

//! x / b without the clamp, for an x known to be finite and below 2^80 in magnitude
//! (QuotientQuantizer's), with the corrections an input of type T needs for its fp8 code: one
//! for fp16 and bf16 (y within one ulp of 1/b), two for float (y = RN(1/b), and then the quotient
//! is exactly RN(x / b) for |x| in [2^-80, 2^80)): reciprocal_for<T>'s y.
//! @pre scale_allows_fast_division(b), |x| < 2^80, x a T value.
template <class T>
KVCAST_HOST_DEVICE float divide_fast_bounded_for(float x, float b, float y) {
  return divide_corrected<sizeof(T) == 2 ? 1 : 2>(x, b, y);
}
//! divide_fast_bounded_for after the clamp to ±2^80: for any x that is a value of input type T,
//! a quotient with RN(x / b)'s fp8 code. @pre scale_allows_fast_division(b).
template <class T>
KVCAST_HOST_DEVICE float divide_fast_for(float x, float b, float y) {
  return divide_fast_bounded_for<T>(clamp_2_80(x), b, y);
}

// Quotients of 16-bit inputs from a split reciprocal, with nothing to correct afterwards: two
// floats hi + lo close enough to 1/b that q = RN(x * hi + RN(x * lo)) (one FMUL and one FFMA an
// element) has the fp8 and E2M1 code of RN(x / b).
//  - hi = RZ(1/b): from y, either float around 1/b (the device's rcp.approx, which the GPU test
//    finds faithful for every significand; RN(1/b) on the host), one ulp toward zero where y is
//    past 1/b (1 - b*y < 0). So the host and the device get the same hi, 0 <= 1 - b*hi = a <
//    2^-23, and hi has 1/b's sign.
//  - lo = RN((RN(a) + 2^-47) * hi): hi's sign, never zero. Then hi + lo = (1/b)(1 + e) with
//    |e| <= |RN(a) - a| + 2^-47 + 2^-24 * 2^-23 + a^2 <= 1.25 * 2^-45, and RN(x * lo) adds at
//    most 2^-47 |x/b|: q = RN(x/b + d), |d| <= 1.5 * 2^-45 |x/b|, wherever no step underflows
//    (|x/b| >= 2^-20; below, every code is ±0, and q keeps x/b's sign, which both terms have).
//  - That is within OneCorrection's enumeration (|d| <= 2^-44 |x/b|): RN(x/b + d) can take
//    another code than RN(x/b) only for x a power of two and b's significand all ones, where
//    the 2^-47 lifts hi + lo over 1/b's truncated tail so that q is RN(x/b) itself. The CPU
//    tests check that family directly.
//  - No clamp: x * hi and x * lo share x/b's sign, so an infinite x, or a sum past FLT_MAX,
//    gives an infinity of that sign, which saturates as x/b does; NaN stays NaN.
struct SplitReciprocal {
  float hi;
  float lo;
};
//! The split reciprocal of b from y, either float around 1/b. @pre scale_allows_fast_division(b)
KVCAST_HOST_DEVICE SplitReciprocal split_reciprocal_from(float b, float y) {
  // Both candidates' residuals at once, then one select: a decode step waits on this chain.
  std::uint32_t bits;
  memcpy(&bits, &y, sizeof bits);
  bits -= 1u;  // one ulp toward zero, either sign
  float below;
  memcpy(&below, &bits, sizeof below);
  const float e_y = fma_rn(-y, b, 1.0f), e_below = fma_rn(-below, b, 1.0f);
  const bool past = e_y < 0.0f;
  const float hi = past ? below : y;
  return {hi, fma_rn(past ? e_below : e_y, hi, mul_rn(hi, 0x1p-47f))};
}
//! The split reciprocal of b, from one rcp.approx. @pre scale_allows_fast_division(b)
KVCAST_HOST_DEVICE SplitReciprocal split_reciprocal(float b) { return split_reciprocal_from(b, rcp_approx_normal(b)); }
//! x / b as far as its fp8 and E2M1 codes go, for x a value of a 16-bit type (see above).
KVCAST_HOST_DEVICE float divide_split(float x, SplitReciprocal r) { return fma_rn(x, r.hi, mul_rn(x, r.lo)); }

// Vectors of fp32 inputs in fp32 mode: bracket, then verify. Let y be within one ulp of 1/b
// (relative error at most 2^-23: RN(1/b), or the hardware's rcp.approx), below = RN(y*(1-2^-20))
// and above = RN(y*(1+2^-20)). The products RN(x*below) and RN(x*above) bracket RN(x/b) strictly: y's error
// and two roundings of at most 2^-24 each leave them within factors
// (1+2^-23)(1-2^-20)(1+2^-24)^2 < 1-2^-21 and (1-2^-23)(1+2^-20)(1-2^-24)^2 > 1+2^-21 of x/b,
// while RN(x/b) is within 1±2^-24 of it. Rounding to fp8 with saturation is monotone, so when
// the two products give the same code, RN(x/b) gives it too: two multiplies and two packed
// conversions per pair of elements instead of a division each. The bracket straddles a
// rounding boundary for about 4 in 10^5 quotients (the CPU tests measure it); only then does
// the vector take the exact division. Where the relative bounds fail (results below 2^-126 or
// past FLT_MAX) all three values give the same code anyway: ±0 with the sign of x/b, or ±max;
// NaN gives the NaN code either way.
constexpr float kBracketBelow = 1.0f - 0x1p-20f;
constexpr float kBracketAbove = 1.0f + 0x1p-20f;

//! The bracketing reciprocals for scale b, given y within one ulp of 1/b. When y * b is exactly
//! 1 (a power-of-two scale: the hardware's reciprocal is exact there too), x * y rounds exactly
//! as x / b does: a zero-width bracket that never disagrees. Scale 1, the uncalibrated
//! default, would otherwise put many bf16 inputs exactly on fp8 midpoints, where any bracket
//! of nonzero width disagrees.
KVCAST_HOST_DEVICE void bracket(float b, float y, float& below, float& above) {
  const bool exact_inverse = fma_rn(y, b, -1.0f) == 0.0f;
  below = exact_inverse ? y : mul_rn(y, kBracketBelow);
  above = exact_inverse ? y : mul_rn(y, kBracketAbove);
}

// Packed codes put the first code in the lowest byte of a word: its lowest address only where
// the host is little-endian, as every host CUDA supports is.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvcast: packed fp8 codes assume a little-endian host"
#endif

//! N codes held as whole words (N = 2: one 16-bit word), first code in the lowest byte, as the
//! packed conversions return pairs. Codes built, merged and stored as words never take a
//! detour through single bytes, which the compiler would otherwise extract and re-pack on
//! every store's path (fp32 mode's exact and bracketed codes meet at a branch's join).
template <int N>
struct PackedCodes {
  using type = AlignedVector<std::uint32_t, N / 4>;
};
template <>
struct PackedCodes<2> {
  using type = AlignedVector<std::uint16_t, 1>;
};

//! Puts a pair's codes (low byte first) at codes i and i + 1 of packed codes (i even).
template <int N>
KVCAST_HOST_DEVICE void put_pair(typename PackedCodes<N>::type& out, int i, std::uint16_t codes) {
  if constexpr (N == 2) {
    out[0] = codes;
  } else {
    out[i / 4] = i % 4 == 0 ? std::uint32_t{codes} : out[i / 4] | std::uint32_t{codes} << 16;
  }
}

//! Codes of x0 (low byte) and x1 (high byte) from each bracketing product: when `below` and
//! `above` are equal, they are the codes of RN(x / b).
struct BracketCodes {
  std::uint16_t below;
  std::uint16_t above;
};
template <class Format>
KVCAST_HOST_DEVICE BracketCodes bracket_codes(float x0, float x1, float below, float above) {
  return {float2_to_fp8x2<Format>(mul_rn(x0, below), mul_rn(x1, below)),
          float2_to_fp8x2<Format>(mul_rn(x0, above), mul_rn(x1, above))};
}

template <class T, class Format, int N>
KVCAST_HOST_DEVICE_NOINLINE typename PackedCodes<N>::type exact_codes_out_of_line(AlignedVector<T, N> in, float scale);

//! The codes of N elements (N even) from each element's own quotient RN(x / b), packed: where
//! `fast` (scale_allows_fast_division(b)), divide_fast_for<T> with the reciprocal `inverse()`
//! (called there, so that its instructions sit behind that branch), or, `Bounded`, without the
//! clamp (every x finite and below 2^80); elsewhere __fdiv_rn. PairWords: as for Quantizer::first_codes.
template <class Format, bool PairWords, bool Bounded, class T, int N, class Inverse>
KVCAST_HOST_DEVICE typename PackedCodes<N>::type quotient_codes(const AlignedVector<T, N>& in, float b, bool fast, Inverse inverse) {
  typename PackedCodes<N>::type out;
  float q[N];  // the scale's range is checked once for the vector, not per element
  KVCAST_UNROLL
  for (int i = 0; i < N; i += 2) {
    const float2 x = pair_to_float2<PairWords>(in[i], in[i + 1]);
    q[i] = x.x, q[i + 1] = x.y;
  }
  if (fast) {
    const float y = inverse();
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) q[i] = Bounded ? divide_fast_bounded_for<T>(q[i], b, y) : divide_fast_for<T>(q[i], b, y);
  } else {
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) q[i] = div_rn(q[i], b);
  }
  KVCAST_UNROLL
  for (int i = 0; i < N; i += 2) put_pair<N>(out, i, float2_to_fp8x2<Format>(q[i], q[i + 1]));
  return out;
}

//! The codes of N 16-bit elements (N even) from their quotients by the split reciprocal r,
//! packed. PairWords: as for Quantizer::first_codes. @pre r's scale is in the fast range.
template <class Format, bool PairWords, class T, int N>
KVCAST_HOST_DEVICE typename PackedCodes<N>::type split_quotient_codes(const AlignedVector<T, N>& in, SplitReciprocal r) {
  typename PackedCodes<N>::type out;
  KVCAST_UNROLL
  for (int i = 0; i < N; i += 2) {
    const float2 x = pair_to_float2<PairWords>(in[i], in[i + 1]);
    put_pair<N>(out, i, float2_to_fp8x2<Format>(divide_split(x.x, r), divide_split(x.y, r)));
  }
  return out;
}

//! The codes of N 16-bit elements (N even) from each element's own quotient, packed: by the split
//! reciprocal r of b where `fast` (scale_allows_fast_division(b)), elsewhere by __fdiv_rn.
template <class Format, bool PairWords, class T, int N>
KVCAST_HOST_DEVICE typename PackedCodes<N>::type split_or_divided_codes(const AlignedVector<T, N>& in, float b, bool fast,
                                                                       SplitReciprocal r) {
  if (fast) return split_quotient_codes<Format, PairWords>(in, r);
  return quotient_codes<Format, PairWords, false>(in, b, false, [] { return 0.0f; });
}
}  // namespace detail

template <class T, class Format>
class Quantizer<T, Format, Arithmetic::fp32> {
 public:
  KVCAST_HOST_DEVICE explicit Quantizer(float scale)
      : scale_(scale),
        inv_(kSplit ? 0.0f : detail::reciprocal_for<T>(scale)),
        fast_(detail::scale_allows_fast_division(scale)) {
    // In the fast range, [2^-40, 2^40]; outside it every vector takes the exact path, so these
    // values there do not matter.
    if constexpr (kSplit) {
      split_ = detail::split_reciprocal(scale);
    } else {
      detail::bracket(scale, detail::rcp_approx_normal(scale), below_, above_);
    }
  }

  KVCAST_HOST_DEVICE std::uint8_t operator()(T x) const { return float_to_fp8<Format>(divide_input(x)); }
  //! Codes of x0 (low byte) and x1 (high byte).
  KVCAST_HOST_DEVICE std::uint16_t pair(T x0, T x1) const {
    return float2_to_fp8x2<Format>(divide_input(x0), divide_input(x1));
  }
  //! Codes of N elements (N even), packed: first_codes(), then exact() where they must be
  //! redone: for fp32 inputs a vector whose bracket straddles a rounding boundary; for every
  //! input type every vector when the scale is outside the fast range (a branch the whole grid
  //! takes the same way). PairWords: as for first_codes(). ExactInLine: that vector is redone
  //! in line (a call would pass it through local memory, and keep its warp waiting longer), or
  //! by a call, for kernels whose short calls the longer code slows down (the realigned and the
  //! element-by-element kernels: NOTES #19b).
  template <int N, bool PairWords = false, bool ExactInLine = true>
  KVCAST_HOST_DEVICE typename detail::PackedCodes<N>::type codes(const AlignedVector<T, N>& in) const {
    std::uint32_t redo = 0;
    typename detail::PackedCodes<N>::type packed = first_codes<N, PairWords>(in, redo);
    if (redo != 0) {
      if constexpr (ExactInLine) {
        packed = exact<N, PairWords>(in);
      } else {
        packed = detail::exact_codes_out_of_line<T, Format, N>(in, scale_);
      }
    }
    return packed;
  }
  //! The first half of codes(): the codes of N elements (N even), packed, final where `redo`
  //! comes back 0, otherwise to be replaced by exact(in). fp16 and bf16 inputs: each element's
  //! quotient by the split reciprocal (detail::divide_split), so `redo` is 0 for every scale in
  //! the fast range. fp32 inputs: bracketed and verified (detail::bracket_codes). PairWords:
  //! `in` was loaded whole, so each pair is one word (detail::pair_to_float2; the codes are the
  //! same either way).
  template <int N, bool PairWords = false>
  KVCAST_HOST_DEVICE typename detail::PackedCodes<N>::type first_codes(const AlignedVector<T, N>& in, std::uint32_t& redo) const {
    static_assert(N % 2 == 0, "Quantizer::first_codes converts pairs.");
    if constexpr (kSplit) {
      redo = fast_ ? 0u : 1u;
      return detail::split_quotient_codes<Format, PairWords>(in, split_);
    } else {
      typename detail::PackedCodes<N>::type out, above_codes;
      KVCAST_UNROLL
      for (int i = 0; i < N; i += 2) {
        const float2 x = detail::pair_to_float2<PairWords>(in[i], in[i + 1]);
        const detail::BracketCodes c = detail::bracket_codes<Format>(x.x, x.y, below_, above_);
        detail::put_pair<N>(out, i, c.below);
        detail::put_pair<N>(above_codes, i, c.above);
      }
      // Compared as packed words: one XOR a word, not one a pair.
      redo = fast_ ? 0u : 1u;
      KVCAST_UNROLL
      for (int w = 0; w < static_cast<int>(sizeof out / sizeof out[0]); ++w) redo |= static_cast<std::uint32_t>(out[w] ^ above_codes[w]);
      return out;
    }
  }
  //! The second half of codes(): the codes of N elements (N even) from the quotients themselves,
  //! packed. PairWords: as for first_codes().
  template <int N, bool PairWords = false>
  KVCAST_HOST_DEVICE typename detail::PackedCodes<N>::type exact(const AlignedVector<T, N>& in) const {
    const float scale = scale_;
    if constexpr (kSplit) {
      return detail::split_or_divided_codes<Format, PairWords>(in, scale, fast_, split_);
    } else {
      // The reciprocal computed here, not the member: where this path sits behind a rare
      // branch, its instructions stay there too, off the path every vector takes.
      return detail::quotient_codes<Format, PairWords, false>(in, scale, fast_, [scale] { return detail::reciprocal_for<T>(scale); });
    }
  }

  KVCAST_HOST_DEVICE float scale() const { return scale_; }

 private:
  //! fp16 and bf16 inputs take the split reciprocal's quotients; fp32 inputs, whose 24-bit
  //! significands its proof does not cover, the bracket and two corrections.
  static constexpr bool kSplit = sizeof(T) == 2;

  //! An input's quotient, as close as its fp8 code needs (detail::divide_split for 16-bit
  //! inputs, detail::divide_fast_for for floats).
  KVCAST_HOST_DEVICE float divide_input(T x) const {
    if (!fast_) return detail::div_rn(to_float(x), scale_);
    if constexpr (kSplit) {
      return detail::divide_split(to_float(x), split_);
    } else {
      return detail::divide_fast_for<T>(to_float(x), scale_, inv_);
    }
  }

  float scale_;
  float inv_;  //!< fp32 inputs
  bool fast_;
  detail::SplitReciprocal split_{};  //!< fp16 and bf16 inputs
  float below_ = 0;                  //!< fp32 inputs: the bracket
  float above_ = 0;
};

template <class Format>
class Quantizer<float, Format, Arithmetic::input_precision> {
 public:
  KVCAST_HOST_DEVICE explicit Quantizer(float scale) : inv_(detail::rcp_rn(scale)) {}
  KVCAST_HOST_DEVICE std::uint8_t operator()(float x) const {
    return float_to_fp8<Format>(detail::mul_rn(x, inv_));
  }
  KVCAST_HOST_DEVICE std::uint16_t pair(float x0, float x1) const {
    return float2_to_fp8x2<Format>(detail::mul_rn(x0, inv_), detail::mul_rn(x1, inv_));
  }
  KVCAST_HOST_DEVICE float inverse() const { return inv_; }

 private:
  float inv_;
};

template <class Format>
class Quantizer<__half, Format, Arithmetic::input_precision> {
 public:
  // Rounding an fp32 reciprocal of the half scale s to half gives the correctly rounded half
  // quotient 1/s as long as the fp32 value is within one ulp of 1/s: 1/s is never that close
  // to a half rounding boundary (the host tests and the device test try every half scale with
  // every float within one ulp of 1/s). A half scale and its reciprocal are normal floats.
  KVCAST_HOST_DEVICE explicit Quantizer(float scale)
      : inv_(__half2half2(__float2half_rn(detail::rcp_approx_normal(__half2float(__float2half_rn(scale)))))) {}
  KVCAST_HOST_DEVICE std::uint8_t operator()(__half x) const {
    return static_cast<std::uint8_t>(half2_to_fp8x2<Format>(__hmul2_rn(__half2half2(x), inv_)));
  }
  KVCAST_HOST_DEVICE std::uint16_t pair(__half x0, __half x1) const {
    return half2_to_fp8x2<Format>(__hmul2_rn(__halves2half2(x0, x1), inv_));
  }
  KVCAST_HOST_DEVICE __half inverse() const { return __low2half(inv_); }

 private:
  __half2 inv_;
};

template <class Format>
class Quantizer<__nv_bfloat16, Format, Arithmetic::input_precision> {
 public:
  // Same argument as for half, with 8-bit significands; a bf16 scale or its reciprocal may
  // be a subnormal float, which rcp_approx covers.
  KVCAST_HOST_DEVICE explicit Quantizer(float scale)
      : inv_(__bfloat162bfloat162(
            __float2bfloat16_rn(detail::rcp_approx(__bfloat162float(__float2bfloat16_rn(scale)))))) {}
  KVCAST_HOST_DEVICE std::uint8_t operator()(__nv_bfloat16 x) const {
    return pair(x, x) & 0xFF;
  }
  KVCAST_HOST_DEVICE std::uint16_t pair(__nv_bfloat16 x0, __nv_bfloat16 x1) const {
    // No bf16x2 → e4m3x2 instruction on sm_90: widen the rounded products (exact) and use
    // the f32x2 form.
    const float2 y = __bfloat1622float2(__hmul2_rn(__halves2bfloat162(x0, x1), inv_));
    return float2_to_fp8x2<Format>(y.x, y.y);
  }
  KVCAST_HOST_DEVICE __nv_bfloat16 inverse() const { return __low2bfloat16(inv_); }

 private:
  __nv_bfloat162 inv_;
};

namespace detail {
// The exact path of Quantizer<T, Format, fp32>::codes<..., ExactInLine = false>: its
// instructions stay out of the kernel's stream. The vector travels by value.
template <class T, class Format, int N>
KVCAST_HOST_DEVICE_NOINLINE typename PackedCodes<N>::type exact_codes_out_of_line(AlignedVector<T, N> in, float scale) {
  return Quantizer<T, Format, Arithmetic::fp32>(scale).exact(in);
}
}  // namespace detail

//! fp32 mode's codes of a vector from each element's own quotient, as Quantizer::exact gives
//! them, for a scale computed from the elements it divides (PerTokenHeadScale: scale >=
//! RN(amax / fp8_max) >= amax / (fp8_max * (1 + 2^-23)), so in the fast range, scale <= 2^40,
//! every |x| <= amax is finite and below 2^80): the reciprocal once a thread, no clamp and no
//! bracket, which Quantizer builds for the scales that rarely straddle. Outside the fast range
//! (a subnormal, huge, infinite or NaN scale) each element takes __fdiv_rn.
//! @pre every x converted is finite with |x| < 2^80 when the scale is in the fast range.
template <class T, class Format>
class QuotientQuantizer {
 public:
  KVCAST_HOST_DEVICE explicit QuotientQuantizer(float scale)
      : scale_(scale),
        inv_(kSplit ? 0.0f : detail::reciprocal_for<T>(scale)),
        fast_(detail::scale_allows_fast_division(scale)) {
    if constexpr (kSplit) split_ = detail::split_reciprocal(scale);
  }

  //! The codes of N elements (N even), packed. PairWords: as for Quantizer::first_codes.
  template <int N, bool PairWords = false>
  KVCAST_HOST_DEVICE typename detail::PackedCodes<N>::type codes(const AlignedVector<T, N>& in) const {
    if constexpr (kSplit) {
      return detail::split_or_divided_codes<Format, PairWords>(in, scale_, fast_, split_);
    } else {
      const float inv = inv_;
      return detail::quotient_codes<Format, PairWords, true>(in, scale_, fast_, [inv] { return inv; });
    }
  }

 private:
  static constexpr bool kSplit = sizeof(T) == 2;  //!< as Quantizer's
  float scale_;
  float inv_;  //!< fp32 inputs
  bool fast_;
  detail::SplitReciprocal split_{};  //!< fp16 and bf16 inputs
};

//! The codes of a whole vector (N even), packed (detail::PackedCodes): what the kernel
//! stores, two elements per conversion. PairWords: `in` was loaded as whole words, and fp32
//! mode takes each pair's floats from its word (Quantizer::first_codes); input precision converts
//! its pairs the same way either way. ExactInLine: as for Quantizer::codes (fp32 mode).
template <bool PairWords = false, bool ExactInLine = true, class T, class Format, Arithmetic Mode, int N>
KVCAST_HOST_DEVICE typename detail::PackedCodes<N>::type quantize_packed(const Quantizer<T, Format, Mode>& q,
                                                                         const AlignedVector<T, N>& in) {
  static_assert(N % 2 == 0, "quantize_packed: codes come in pairs.");
  if constexpr (Mode == Arithmetic::fp32) {
    return q.template codes<N, PairWords, ExactInLine>(in);
  } else {
    typename detail::PackedCodes<N>::type out;
    KVCAST_UNROLL
    for (int i = 0; i < N; i += 2) detail::put_pair<N>(out, i, q.pair(in[i], in[i + 1]));
    return out;
  }
}

//! fp32 mode's codes of two vectors loaded whole (K's and V's), each with its own quantizer,
//! handed to `store(i, codes)` (i = 0 for `a`, 1 for `b`) as soon as first_codes gives them;
//! then, for a vector they must be redone for (fp32 inputs whose brackets disagree, which is
//! rare; any input with a scale outside the fast range), its exact codes, which land on the
//! same bytes and so replace the first ones. Neither store waits for the check, nor one vector's
//! conversions for the other's: the kernel's path for vectors short enough that both
//! conversions fit in registers at once.
template <class T, class Format, int N, class Store>
KVCAST_HOST_DEVICE void store_codes_of_two(const Quantizer<T, Format, Arithmetic::fp32>& qa, const AlignedVector<T, N>& a,
                                           const Quantizer<T, Format, Arithmetic::fp32>& qb, const AlignedVector<T, N>& b,
                                           Store&& store) {
  std::uint32_t redo_a = 0, redo_b = 0;
  store(0, qa.template first_codes<N, true>(a, redo_a));
  store(1, qb.template first_codes<N, true>(b, redo_b));
  if ((redo_a | redo_b) != 0) {
    // 8-wide vectors (calls of 2^18..2^21 elements) by a call: in line, their hot-L2 calls ran
    // slower (NOTES #19c); 4-wide ones (decode) in line.
    if constexpr (N >= 8) {
      if (redo_a != 0) store(0, detail::exact_codes_out_of_line<T, Format, N>(a, qa.scale()));
      if (redo_b != 0) store(1, detail::exact_codes_out_of_line<T, Format, N>(b, qb.scale()));
    } else {
      if (redo_a != 0) store(0, qa.template exact<N, true>(a));
      if (redo_b != 0) store(1, qb.template exact<N, true>(b));
    }
  }
}

//! Quantizes a whole vector: its codes one byte each, in order. For the kernels that load and
//! store element by element, whose calls are short: fp32 mode redoes a vector by a call where
//! it must (Quantizer::codes' ExactInLine; in line, the longer code slowed them, NOTES #19b).
template <class T, class Format, Arithmetic Mode, int N>
KVCAST_HOST_DEVICE AlignedVector<std::uint8_t, N> quantize(const Quantizer<T, Format, Mode>& q,
                                                          const AlignedVector<T, N>& in) {
  AlignedVector<std::uint8_t, N> out;
  if constexpr (N == 1) {
    out[0] = q(in[0]);
  } else {
    const auto packed = quantize_packed<false, false>(q, in);
    static_assert(sizeof packed == sizeof out, "quantize: packed codes hold N bytes.");
    memcpy(&out, &packed, sizeof out);
  }
  return out;
}

// ---- The read path: codes back to values. ------------------------------------------------

//! The exact values of two fp8 codes, `lo` in the low byte, as floats (through f16, which holds
//! every fp8 value exactly; one `cvt…f16x2` from sm_89 on). NaN codes give NaN, E5M2's ±inf ±inf.
template <class Format>
KVCAST_HOST_DEVICE float2 fp8x2_to_float2(std::uint16_t codes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(codes, detail::Interpretation<Format>::value);
  return __half22float2(__half2(h));
}

namespace detail {
//! The IEEE fp32 product, subnormals kept: inline PTX on the device, so that `--use_fast_math`'s
//! flush-to-zero does not reach it (mul.rn.f32 without .ftz). A NaN product is the canonical
//! 0x7FFFFFFF on both sides (the device's arithmetic returns it; the host is made to).
KVCAST_HOST_DEVICE float mul_ieee(float a, float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (float r; asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r;),
                    (const float r = a * b; if (r != r) {
                      const std::uint32_t canonical = 0x7fffffffu;
                      float nan;
                      memcpy(&nan, &canonical, sizeof nan);
                      return nan;
                    } return r;))
}

//! Two floats rounded to nearest-even into T, as T's pair (T's canonical NaN 0x7FFF for a NaN;
//! cuda_bf16.h / cuda_fp16.h's conversions, which are inline PTX without .ftz on the device).
template <class T>
struct PairOf;
template <>
struct PairOf<float> {
  using type = float2;
  KVCAST_HOST_DEVICE static float2 from(float2 x) { return x; }
};
template <>
struct PairOf<__half> {
  using type = __half2;
  KVCAST_HOST_DEVICE static __half2 from(float2 x) { return __floats2half2_rn(x.x, x.y); }
};
template <>
struct PairOf<__nv_bfloat16> {
  using type = __nv_bfloat162;
  KVCAST_HOST_DEVICE static __nv_bfloat162 from(float2 x) { return __floats2bfloat162_rn(x.x, x.y); }
};
}  // namespace detail

//! The read path's arithmetic for output type T (`float`, `__half`, `__nv_bfloat16`) and fp8
//! format Format: `y = T(float(code) * scale)`, the product one IEEE fp32 multiplication
//! (subnormals kept, whatever `--use_fast_math` says), then round-to-nearest-even to T
//! (overflow gives ±inf; a NaN code, or inf times 0, T's canonical NaN). Bit-exact with
//! PyTorch's `(codes.view(fp8).float() * scale).to(T)` on the GPU.
template <class T, class Format>
class Dequantizer {
 public:
  KVCAST_HOST_DEVICE explicit Dequantizer(float scale) : scale_(scale) {}

  //! The values of two codes (`lo` in the low byte), as T's pair type.
  KVCAST_HOST_DEVICE typename detail::PairOf<T>::type pair(std::uint16_t codes) const {
    const float2 x = fp8x2_to_float2<Format>(codes);
    return detail::PairOf<T>::from(make_float2(detail::mul_ieee(x.x, scale_), detail::mul_ieee(x.y, scale_)));
  }
  //! One code's value.
  KVCAST_HOST_DEVICE T operator()(std::uint8_t code) const {
    const typename detail::PairOf<T>::type p = pair(code);
    T out;
    memcpy(static_cast<void*>(&out), &p, sizeof out);  // the low element
    return out;
  }
  //! The values of codes `first .. first + P - 1` of `codes` (P even; `first` a multiple of P),
  //! as one vector of T: what one store of the output takes.
  template <int P, int N>
  KVCAST_HOST_DEVICE AlignedVector<T, P> values(const AlignedVector<std::uint8_t, N>& codes, int first = 0) const {
    static_assert(P % 2 == 0 && N % P == 0 && N % 4 == 0, "Dequantizer::values converts whole pairs of whole words.");
    // As words: a pair is a word's low or high half (one instruction), where bytes joined one by
    // one would be taken apart and put back together.
    std::uint32_t words[N / 4];
    memcpy(words, &codes, sizeof words);
    AlignedVector<T, P> out;
    KVCAST_UNROLL
    for (int i = 0; i < P; i += 2) {
      const int at = first + i;
      const std::uint32_t word = words[at / 4];
      const typename detail::PairOf<T>::type p = pair(static_cast<std::uint16_t>(at % 4 == 0 ? word : word >> 16));
      memcpy(static_cast<void*>(&out[i]), &p, sizeof p);
    }
    return out;
  }
  KVCAST_HOST_DEVICE float scale() const { return scale_; }

 private:
  float scale_;
};

}  // namespace kvcast
