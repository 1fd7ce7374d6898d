// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file fp4.cuh
//! E2M1, the element format of NVFP4: 4 bits, sign in bit 3, magnitudes {0, 0.5, 1, 1.5, 2, 3,
//! 4, 6} (codes 0-7), no infinity, no NaN. The conversion from float rounds to nearest-even and
//! saturates: what `cvt.rn.satfinite.e2m1x2.f32` does on sm_100 and later, where it is the
//! hardware instruction (through cuda_fp4.h), and what the software path below does everywhere
//! else, bit for bit:
//!  - |x| > 6 and ±inf give ±6 (code 7 with x's sign);
//!  - NaN gives +6 (0x7), the sign dropped: the hardware's result, which cuda_fp4.h's host
//!    emulation reproduces;
//!  - a value that rounds to zero keeps its sign (-0 is 0x8).
//! The CPU tests check the software path for every fp16 and bf16 input divided by block scales
//! across E4M3's range, against an oracle that picks the nearest of the 16 values (ties to the
//! even code) and against cuda_fp4.h's host conversion. Below it, NVFP4's block quantizers
//! (issue #17), which the write's code policy applies: the exact mode's (Nvfp4Quantizer) and
//! FlashInfer's fast-math formula (Nvfp4FastMathQuantizer).
#pragma once

#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ < 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 8))
#error "kvcast/fp4.cuh needs CUDA 12.8 or newer (cuda_fp4.h)."
#endif

#include <cuda_fp4.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"
#include "fp8.cuh"

namespace kvcast {

//! E2M1's largest magnitude.
constexpr float kE2M1Max = 6.0f;

namespace detail {
//! The software E2M1 rounding: the code is the number of rounding boundaries below |x|. Each
//! boundary is the midpoint of two neighbours; a tie goes to the even code, so a boundary whose
//! upper neighbour is even (0.75 -> 1, 1.75 -> 2, 3.5 -> 4) counts when |x| reaches it, one
//! whose lower neighbour is even (0.25, 1.25, 2.5, 5) only when |x| passes it. NaN passes none.
KVCAST_HOST_DEVICE std::uint8_t e2m1_magnitude_code(float a) {
  return static_cast<std::uint8_t>((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
}
}  // namespace detail

//! The E2M1 code of `x` (low 4 bits): round to nearest-even, saturating, NaN -> +6.
KVCAST_HOST_DEVICE std::uint8_t float_to_e2m1(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_FP8_INTERNAL_CAN_RELY_ON_PTX_FOR_SHORTTYPESCVT__
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest));
#else
  std::uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  if (nan) return 0x7;
  std::uint32_t magnitude_bits = bits & 0x7fffffffu;
  float a;
  memcpy(&a, &magnitude_bits, sizeof a);
  return static_cast<std::uint8_t>((bits >> 28) & 0x8u) | detail::e2m1_magnitude_code(a);
#endif
}

namespace detail {
//! The E2M1 code of `x`, NaN excluded (the caller's guarantee): float_to_e2m1 for every other
//! float, in arithmetic rather than comparisons. From 1.0 up E2M1 keeps one significand bit:
//! adding just under half of bit 22's weight, plus bit 22 itself (a tie then carries only from
//! an odd significand), rounds |x|'s bits to bit 22 nearest-even, and the bits from 22 up then
//! count E2M1's codes from 1.0 (code 2), capped at 7 (±6, ±inf included). Below 1.0, E2M1's
//! values are the multiples of 0.5, to which |x| + 2^22 (whose ulp is 0.5) rounds, ties to even.
//! The CPU tests compare it with float_to_e2m1's software path for every non-NaN float.
KVCAST_HOST_DEVICE std::uint32_t e2m1_code_not_nan(float x) {
  std::uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  const std::uint32_t a = bits & 0x7fffffffu;
  const std::uint32_t from_one = ((a + 0x1fffffu + ((a >> 22) & 1u)) >> 22) - 0xfcu;  // 1.0 -> 2
  const float below_one = fabsf(x) + 0x1p22f;
  std::uint32_t halves;
  memcpy(&halves, &below_one, sizeof halves);
  const std::uint32_t magnitude = a < 0x3f800000u ? halves - 0x4a800000u : (from_one < 7u ? from_one : 7u);
  return magnitude | (bits >> 28 & 0x8u);
}
}  // namespace detail

namespace detail {
// E2M1 codes of fp16 and bf16 inputs without a division: the NVFP4 write's common path where no
// hardware E2M1 conversion exists (below sm_100). An element's code counts the E2M1 rounding
// boundaries b that q = RN32(|x| / d) reaches (0.75, 1.75, 3.5) or passes (0.25, 1.25, 2.5, 5):
// e2m1_magnitude_code. RN32(q) >= b exactly when q >= lo(b), the midpoint between b and the float
// below it (a tie rounds to b, whose significand is even); RN32(q) > b exactly when q > hi(b), the
// midpoint between b and the float above it. With c = hi(0.25), lo(0.75), hi(1.25), lo(1.75),
// hi(2.5), lo(3.5), hi(5), each an odd 25-bit significand, the code is the number of c * d that
// |x| reaches or passes. c * d is never a value of T (its odd part has more than 24 bits, T's at
// most 11), so |x| does so exactly when |x| >= RU_T(c * d): seven thresholds a block, each c * d
// rounded up to float, then to T (directed roundings compose on nested grids). The CPU test
// (E2M1Thresholds) compares every fp16 and bf16 input's code with float_to_e2m1 of the IEEE
// quotient for every positive finite E4M3 block scale and many g.

//! A block's seven thresholds, each a T magnitude's bits in both halves of a word.
struct E2M1Thresholds {
  std::uint32_t t[7];
};

//! RU_T(f) for a positive float f (inf included), as T's bits in both halves of a word.
template <class T>
KVCAST_HOST_DEVICE std::uint32_t round_up_to_both_halves(float f) {
  std::uint32_t bits;
  if constexpr (std::is_same<T, __half>::value) {
    const __half h = __float2half_ru(f);
    std::uint16_t half_bits;
    memcpy(&half_bits, &h, sizeof half_bits);
    bits = half_bits * 0x10001u;
  } else {  // bf16 is float's upper half
    memcpy(&bits, &f, sizeof bits);
    bits += 0xffffu;
    NV_IF_ELSE_TARGET(NV_IS_DEVICE, (bits = __byte_perm(bits, 0, 0x3232);), (bits = (bits >> 16) * 0x10001u;))
  }
  return bits;
}

//! The thresholds of a block whose divisor is d: RU_T(c * d) for each c, through RU_float(c * d).
//! With c = b + e, b the boundary and e a power of two (e * d exact), RU_float(c * d) is one fused
//! multiply-add rounded up, RU(b * d + e * d), on the device; the host computes the same sum
//! exactly in double and rounds it up. @pre scale_allows_fast_division(d).
template <class T>
KVCAST_HOST_DEVICE E2M1Thresholds e2m1_thresholds(float d) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "e2m1_thresholds: fp16 or bf16.");
  constexpr float kBoundary[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  // e * d for c = b + e: e = 2^-26, -2^-25, 2^-24, -2^-24, 2^-23, -2^-23, 2^-22 (exact products).
  const float e26 = d * 0x1p-26f, e25 = d * 0x1p-25f, e24 = d * 0x1p-24f, e23 = d * 0x1p-23f, e22 = d * 0x1p-22f;
  const float offset[7] = {e26, -e25, e24, -e24, e23, -e23, e22};
  E2M1Thresholds out;
  KVCAST_UNROLL
  for (int k = 0; k < 7; ++k) {
    float up;
    NV_IF_ELSE_TARGET(NV_IS_DEVICE, (up = __fmaf_ru(kBoundary[k], d, offset[k]);),
                      (const double exact = static_cast<double>(kBoundary[k]) * d + offset[k];  // exact: 49 bits
                       up = static_cast<float>(exact); if (static_cast<double>(up) < exact) up = std::nextafter(up, INFINITY);))
    out.t[k] = round_up_to_both_halves<T>(up);
  }
  return out;
}

//! Per 16-bit lane: 0xffff where a's T value is at least b's, for magnitudes (no sign, no NaN),
//! whose order is that of their bits. One HSET2 on the device.
template <class T>
KVCAST_HOST_DEVICE std::uint32_t lanes_at_least(std::uint32_t a, std::uint32_t b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<T, __half>::value) {
    __half2 ha, hb;
    memcpy(&ha, &a, sizeof ha);
    memcpy(&hb, &b, sizeof hb);
    return __hge2_mask(ha, hb);
  } else {
    __nv_bfloat162 ha, hb;
    memcpy(&ha, &a, sizeof ha);
    memcpy(&hb, &b, sizeof hb);
    return __hge2_mask(ha, hb);
  }
#else
  return ((a & 0xffffu) >= (b & 0xffffu) ? 0xffffu : 0u) | ((a >> 16) >= (b >> 16) ? 0xffff0000u : 0u);
#endif
}

//! Bits of a where mask has ones, of b elsewhere: one LOP3 with a constant mask.
KVCAST_HOST_DEVICE std::uint32_t select_bits(std::uint32_t mask, std::uint32_t a, std::uint32_t b) { return (a & mask) | (b & ~mask); }

//! Lanes of two words: a's low half and b's low half (High = false), or their high halves.
template <bool High>
KVCAST_HOST_DEVICE std::uint32_t pair_lanes(std::uint32_t a, std::uint32_t b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return __byte_perm(a, b, High ? 0x7632 : 0x5410);),
                    (return High ? (a >> 16) | (b & 0xffff0000u) : (a & 0xffffu) | b << 16;))
}

//! Eight E2M1 codes, packed as Nvfp4Quantizer::codes packs them, of the fp16 or bf16 elements in
//! w (element 2i in the low half of w[i]) by the block's thresholds. Lanes are paired as (j, j + 4),
//! so that one shift puts both of a pair's codes in place (nibbles j and j + 4); each code is a
//! binary search (three comparisons) over the sorted thresholds, its sign the input's.
template <class T>
KVCAST_HOST_DEVICE std::uint32_t e2m1_codes_by_thresholds(const std::uint32_t (&w)[4], const E2M1Thresholds& th) {
  const std::uint32_t pairs[4] = {pair_lanes<false>(w[0], w[2]), pair_lanes<true>(w[0], w[2]), pair_lanes<false>(w[1], w[3]),
                                  pair_lanes<true>(w[1], w[3])};
  std::uint32_t out = 0;
  KVCAST_UNROLL
  for (int j = 0; j < 4; ++j) {
    const std::uint32_t m = pairs[j] & 0x7fff7fffu;
    const std::uint32_t ge4 = lanes_at_least<T>(m, th.t[3]);                              // code >= 4
    const std::uint32_t ge2 = lanes_at_least<T>(m, select_bits(ge4, th.t[5], th.t[1]));   // and its bit 1
    const std::uint32_t odd_threshold = select_bits(ge2, select_bits(ge4, th.t[6], th.t[2]), select_bits(ge4, th.t[4], th.t[0]));
    const std::uint32_t ge1 = lanes_at_least<T>(m, odd_threshold);                        // and its bit 0
    const std::uint32_t nibble = 0x000f000fu << (4 * j);
    const std::uint32_t magnitude = select_bits(0x00010001u << (4 * j), ge1, select_bits(0x00040004u << (4 * j), ge4, ge2));
    const std::uint32_t code = select_bits(0x00080008u << (4 * j), pairs[j] >> (12 - 4 * j), magnitude);
    out = select_bits(nibble, code, out);
  }
  return out;
}
}  // namespace detail

//! Two codes in one byte: `lo` in the low nibble (the lower-indexed element), `hi` in the high.
KVCAST_HOST_DEVICE std::uint8_t float2_to_e2m1x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_FP8_INTERNAL_CAN_RELY_ON_PTX_FOR_SHORTTYPESCVT__
  return static_cast<std::uint8_t>(__nv_cvt_float2_to_fp4x2(make_float2(lo, hi), __NV_E2M1, cudaRoundNearest));
#else
  return static_cast<std::uint8_t>(float_to_e2m1(lo) | float_to_e2m1(hi) << 4);
#endif
}

//! The exact value of an E2M1 code (its low 4 bits).
KVCAST_HOST_DEVICE float e2m1_to_float(std::uint8_t code) {
  constexpr float kMagnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitudes[code & 0x7u];
  return (code & 0x8u) ? -m : m;
}

//! One NVFP4 block of 16 elements, packed: its 16 E2M1 codes as two words (element 2i in the low
//! nibble of byte i, the first byte lowest) and its E4M3 block scale.
struct Nvfp4BlockCodes {
  std::uint32_t codes[2];
  std::uint8_t sf;
};

namespace detail {
//! One whole block by an NVFP4 quantizer Q (either mode): the scale of its amax (Q::amax_bits),
//! then its codes.
template <class Q>
KVCAST_HOST_DEVICE Nvfp4BlockCodes nvfp4_block(const Q& q, const float (&x)[16]) {
  const std::uint32_t bits = Q::amax_bits(x);
  float amax;
  memcpy(&amax, &bits, sizeof amax);
  Nvfp4BlockCodes out;
  out.sf = q.block_scale(amax);
  q.template codes<16>(x, out.sf, out.codes);
  return out;
}
}  // namespace detail

//! NVFP4's exact mode (DESIGN.md §2; the host reference is ref::nvfp4_quantize_block), built
//! once a thread from the per-tensor global scale `g`, then applied to blocks of 16 floats:
//!
//!     amax = max |x|                               (NaN propagates)
//!     sf   = e4m3_rne_satfinite(amax / RN(6 * g))  (correctly rounded: __fdiv_rn)
//!     q_i  = e2m1_rne_satfinite(x_i / RN(float(sf) * g))
//!
//! Each element's quotient comes from the block's reciprocal through detail::divide_fast_for,
//! whose E2M1 code is that of the IEEE quotient for every input (E2M1's rounding boundaries,
//! 0.25 to 5, are far inside the range where two corrections are exact, and one keeps the code
//! of an fp16 or bf16 input: fp8.cuh), or from __fdiv_rn where the block's divisor is outside
//! its range. A block whose sf is zero gets zero codes with each input's
//! sign; a NaN element makes sf NaN (0x7F) and every code of its block +6 (0x7). A g of 0, inf
//! or NaN (a device value; host values are validated) gives what these formulas give.
//!
//! The write takes a block in halves, one a thread (block_scale from the block's amax, then
//! codes of each half); block() is the whole at once.
class Nvfp4Quantizer {
 public:
  KVCAST_HOST_DEVICE explicit Nvfp4Quantizer(float g) : g_(g), six_g_(detail::mul_rn(6.0f, g)) {}

  //! The E4M3 block scale of a block whose largest magnitude is `amax` (NaN: 0x7F).
  KVCAST_HOST_DEVICE std::uint8_t block_scale(float amax) const { return float_to_fp8<e4m3>(detail::div_rn(amax, six_g_)); }

  //! The E2M1 codes of N consecutive elements of a block whose scale is `sf`, packed N / 2
  //! bytes into words (element 2i in the low nibble of byte i, the first byte lowest). The
  //! common blocks take each quotient from the block's reciprocal (detail::divide_fast_for: the IEEE
  //! quotient), and its code by arithmetic (detail::e2m1_code_not_nan, or the hardware pair
  //! conversion): a non-zero, non-NaN sf and a divisor inside the fast division's range make every
  //! quotient a number. Below E4M3's largest scale, |x| <= amax < 464 * 6g makes every quotient
  //! smaller than 12 in magnitude, so its division needs no clamp. Zero blocks are their signs;
  //! the rest (NaN blocks, divisors out of range: a g near 0 or inf) go out of line. T: the
  //! input type the floats were widened from (an fp16 or bf16 input's division takes one
  //! correction, detail::divide_fast_for).
  template <int N, class T = float>
  KVCAST_HOST_DEVICE void codes(const float (&x)[N], std::uint8_t sf, std::uint32_t (&words)[N / 8]) const {
    static_assert(N % 8 == 0, "Nvfp4Quantizer::codes: whole words of 8 codes.");
    const float divisor = detail::mul_rn(fp8_to_float<e4m3>(sf), g_);
    const std::uint8_t sf_magnitude = sf & 0x7fu;
    if (sf_magnitude == 0) {  // a zero block: ±0 with each input's sign (its elements are finite)
      KVCAST_UNROLL
      for (int w = 0; w < N / 8; ++w) {
        std::uint32_t word = 0;
        KVCAST_UNROLL
        for (int i = 0; i < 8; ++i) {
          std::uint32_t bits;
          memcpy(&bits, &x[8 * w + i], sizeof bits);
          word |= (bits >> 31) << (4 * i + 3);
        }
        words[w] = word;
      }
    } else if (sf_magnitude != e4m3::kNaNCode && detail::scale_allows_fast_division(divisor)) {
      const float inv = detail::reciprocal_for<T>(divisor);
      if (sf_magnitude != e4m3::kMaxCode) {
        pack_quotients<N, false, T>(x, divisor, inv, words);
      } else {
        pack_quotients<N, true, T>(x, divisor, inv, words);
      }
    } else {
      Floats<N> copy;
      KVCAST_UNROLL
      for (int i = 0; i < N; ++i) copy.v[i] = x[i];
      const Words<N> out = codes_out_of_line(copy, divisor);
      KVCAST_UNROLL
      for (int w = 0; w < N / 8; ++w) words[w] = out.w[w];
    }
  }
  //! codes() for N fp16 or bf16 elements (T) as they were loaded, two a word (element 2i in the
  //! low half of x[i]). Where no hardware E2M1 conversion exists, the common blocks take their
  //! codes by comparisons with the block's seven thresholds (detail::e2m1_codes_by_thresholds): no
  //! division and no widening an element. Zero blocks are their signs; the rest go out of line.
  template <class T, int N>
  KVCAST_HOST_DEVICE void codes_of_pairs(const std::uint32_t (&x)[N / 2], std::uint8_t sf, std::uint32_t (&words)[N / 8]) const {
    static_assert(sizeof(T) == 2 && N % 8 == 0, "Nvfp4Quantizer::codes_of_pairs: whole words of 8 fp16 or bf16 codes.");
#if defined(__CUDA_ARCH__) && __CUDA_FP8_INTERNAL_CAN_RELY_ON_PTX_FOR_SHORTTYPESCVT__
    codes<N, T>(widen<T, N>(x).v, sf, words);
#else
    const float divisor = divisor_of(sf);
    const std::uint8_t sf_magnitude = sf & 0x7fu;
    if (takes_thresholds(sf, divisor)) {
      codes_by_thresholds<T, N>(x, detail::e2m1_thresholds<T>(divisor), words);
    } else if (sf_magnitude == 0) {  // a zero block: ±0 with each input's sign
      KVCAST_UNROLL
      for (int w = 0; w < N / 8; ++w) {
        std::uint32_t word = 0;
        KVCAST_UNROLL
        for (int i = 0; i < 8; ++i) word |= (x[4 * w + i / 2] >> (16 * (i % 2) + 15) & 1u) << (4 * i + 3);
        words[w] = word;
      }
    } else {
      const Words<N> out = codes_out_of_line(widen<T, N>(x), divisor);
      KVCAST_UNROLL
      for (int w = 0; w < N / 8; ++w) words[w] = out.w[w];
    }
#endif
  }
  //! codes_of_pairs of two blocks, each with its quantizer (a call's K and V): where both take the
  //! thresholds, both blocks' thresholds and codes side by side, so that neither block's chain
  //! waits behind the other's; otherwise one block after the other.
  template <class T, int N>
  KVCAST_HOST_DEVICE static void codes_of_pairs_of_two(const Nvfp4Quantizer& qa, const std::uint32_t (&xa)[N / 2], std::uint8_t sfa,
                                                       std::uint32_t (&wa)[N / 8], const Nvfp4Quantizer& qb,
                                                       const std::uint32_t (&xb)[N / 2], std::uint8_t sfb, std::uint32_t (&wb)[N / 8]) {
#if !(defined(__CUDA_ARCH__) && __CUDA_FP8_INTERNAL_CAN_RELY_ON_PTX_FOR_SHORTTYPESCVT__)
    const float da = qa.divisor_of(sfa), db = qb.divisor_of(sfb);
    if (takes_thresholds(sfa, da) && takes_thresholds(sfb, db)) {
      const detail::E2M1Thresholds ta = detail::e2m1_thresholds<T>(da), tb = detail::e2m1_thresholds<T>(db);
      codes_by_thresholds<T, N>(xa, ta, wa);
      codes_by_thresholds<T, N>(xb, tb, wb);
      return;
    }
#endif
    qa.codes_of_pairs<T, N>(xa, sfa, wa);
    qb.codes_of_pairs<T, N>(xb, sfb, wb);
  }
  //! The block's amax (of its elements' floats `x`, N of them) as float bits: the largest
  //! magnitude by its bits, so a NaN's, above every number's, propagates.
  template <int N>
  KVCAST_HOST_DEVICE static std::uint32_t amax_bits(const float (&x)[N]) {
    std::uint32_t amax = 0;
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) {
      std::uint32_t bits;
      memcpy(&bits, &x[i], sizeof bits);
      bits &= 0x7fffffffu;
      amax = bits > amax ? bits : amax;
    }
    return amax;
  }
  //! A whole block: its scale and its 16 codes.
  KVCAST_HOST_DEVICE Nvfp4BlockCodes block(const float (&x)[16]) const { return detail::nvfp4_block(*this, x); }

 private:
  //! The divisor of a block whose scale is `sf`: RN(float(sf) * g).
  KVCAST_HOST_DEVICE float divisor_of(std::uint8_t sf) const { return detail::mul_rn(fp8_to_float<e4m3>(sf), g_); }
  //! Whether a block of scale `sf` and that divisor takes its codes by thresholds: a non-zero,
  //! non-NaN scale and a divisor in the fast division's range.
  KVCAST_HOST_DEVICE static bool takes_thresholds(std::uint8_t sf, float divisor) {
    const std::uint8_t m = sf & 0x7fu;
    return m != 0 && m != e4m3::kNaNCode && detail::scale_allows_fast_division(divisor);
  }
  //! The codes of N fp16 or bf16 elements, two a word, by the block's thresholds.
  template <class T, int N>
  KVCAST_HOST_DEVICE static void codes_by_thresholds(const std::uint32_t (&x)[N / 2], const detail::E2M1Thresholds& th,
                                                     std::uint32_t (&words)[N / 8]) {
    KVCAST_UNROLL
    for (int w = 0; w < N / 8; ++w) {
      const std::uint32_t part[4] = {x[4 * w], x[4 * w + 1], x[4 * w + 2], x[4 * w + 3]};
      words[w] = detail::e2m1_codes_by_thresholds<T>(part, th);
    }
  }
  //! Codes from the quotients by divide_fast_for<T> (Clamp: |x| may reach 2^80) or without its
  //! clamp.
  template <int N, bool Clamp, class T>
  KVCAST_HOST_DEVICE static void pack_quotients(const float (&x)[N], float divisor, float inv, std::uint32_t (&words)[N / 8]) {
    float q[N];
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i)
      q[i] = Clamp ? detail::divide_fast_for<T>(x[i], divisor, inv) : detail::divide_fast_bounded_for<T>(x[i], divisor, inv);
    KVCAST_UNROLL
    for (int w = 0; w < N / 8; ++w) {
      std::uint32_t word = 0;
      KVCAST_UNROLL
      for (int i = 0; i < 8; i += 2) {
#if defined(__CUDA_ARCH__) && __CUDA_FP8_INTERNAL_CAN_RELY_ON_PTX_FOR_SHORTTYPESCVT__
        word |= std::uint32_t{float2_to_e2m1x2(q[8 * w + i], q[8 * w + i + 1])} << (4 * i);
#else
        word |= (detail::e2m1_code_not_nan(q[8 * w + i]) | detail::e2m1_code_not_nan(q[8 * w + i + 1]) << 4) << (4 * i);
#endif
      }
      words[w] = word;
    }
  }
  // Passed and returned by value, so that the call keeps them in registers (an array by
  // reference would put the common path's elements in local memory before its branch).
  template <int N>
  struct Floats {
    float v[N];
  };
  template <int N>
  struct Words {
    std::uint32_t w[N / 8];
  };
  //! The floats of N fp16 or bf16 elements, two a word.
  template <class T, int N>
  KVCAST_HOST_DEVICE static Floats<N> widen(const std::uint32_t (&x)[N / 2]) {
    Floats<N> f;
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) {
      const std::uint16_t bits = static_cast<std::uint16_t>(x[i / 2] >> (16 * (i % 2)));
      T t;
      memcpy(static_cast<void*>(&t), &bits, sizeof t);
      f.v[i] = to_float(t);
    }
    return f;
  }
  //! The rare blocks: each quotient correctly rounded (__fdiv_rn), each code float_to_e2m1's
  //! (a NaN quotient gives +6). Out of line: kept off the common path's instructions.
  template <int N>
  KVCAST_HOST_DEVICE_NOINLINE static Words<N> codes_out_of_line(Floats<N> x, float divisor) {
    Words<N> out;
    KVCAST_UNROLL
    for (int w = 0; w < N / 8; ++w) {
      std::uint32_t word = 0;
      KVCAST_UNROLL
      for (int i = 0; i < 8; i += 2)
        word |= std::uint32_t{float2_to_e2m1x2(detail::div_rn(x.v[8 * w + i], divisor), detail::div_rn(x.v[8 * w + i + 1], divisor))}
                << (4 * i);
      out.w[w] = word;
    }
    return out;
  }

  float g_;
  float six_g_;
};

namespace detail {
// fp32 as `nvcc -use_fast_math` compiles it (-ftz=true -prec-div=false): subnormal operands and
// results are flushed to zero of the same sign, and a NaN result is the canonical NaN
// 0x7FFFFFFF, as the GPU returns it for any NaN operand. On the device each is the PTX
// instruction that flag makes of the C++ expression; on the host, its emulation.
KVCAST_HOST_DEVICE float flush_subnormal(float x) {
  std::uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
  memcpy(&x, &bits, sizeof x);
  return x;
}
KVCAST_HOST_DEVICE float canonical_nan_of(float x) {
  if (x == x) return x;
  const std::uint32_t bits = 0x7fffffffu;
  memcpy(&x, &bits, sizeof x);
  return x;
}
//! `a * b` under -ftz: `mul.rn.ftz.f32`.
KVCAST_HOST_DEVICE float mul_ftz(float a, float b) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (float r; asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r;),
                    (return canonical_nan_of(flush_subnormal(flush_subnormal(a) * flush_subnormal(b)));))
}
//! `1.0f / x` under -prec-div=false: `rcp.approx.ftz.f32` (MUFU.RCP). The PTX ISA bounds its
//! error but does not define its bits, so the host stands in with the correctly rounded
//! reciprocal, flushed; bit-exact checks of the fast-math formula take the device's own values
//! (ref::nvfp4_fast_math_block's `rcp`).
KVCAST_HOST_DEVICE float rcp_approx_ftz(float x) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE, (return rcp_approx_normal(x);),  // the same instruction
                    (return canonical_nan_of(flush_subnormal(1.0f / flush_subnormal(x)));))
}
//! `a / b` under -prec-div=false: `div.approx.ftz.f32`, which the PTX ISA defines as a * (1 / b)
//! and ptxas builds as exactly that (sm_90: MUFU.RCP, then FMUL.FTZ).
KVCAST_HOST_DEVICE float div_approx_ftz(float a, float b) { return mul_ftz(a, rcp_approx_ftz(b)); }
//! `fmaxf(m, fabsf(x))` under -ftz: `abs.ftz.f32` then `max.ftz.f32` (one FMNMX.FTZ): a NaN x
//! leaves m as it is, a subnormal x counts as 0.
KVCAST_HOST_DEVICE float max_abs_ftz(float m, float x) {
  NV_IF_ELSE_TARGET(NV_IS_DEVICE,
                    (float r; asm("{ .reg .f32 a; abs.ftz.f32 a, %2; max.ftz.f32 %0, %1, a; }" : "=f"(r) : "f"(m), "f"(x)); return r;),
                    (const float a = flush_subnormal(std::fabs(x)); return a > m ? a : m;))
}
}  // namespace detail

//! NVFP4's engine-compatible mode (Arithmetic::fast_math): FlashInfer's NVFP4 KV writer bit for
//! bit, nvfp4_append_quantize_block in include/flashinfer/page.cuh (FlashInfer 0.7.4, without
//! its optional 4over6 block scales), as FlashInfer's JIT builds it, with -use_fast_math. With
//! the fast-math operations of detail:: (mul_ftz, div_approx_ftz, rcp_approx_ftz, max_abs_ftz):
//!
//!     amax = max_abs_ftz over the block, from 0        (NaN skipped, subnormals as 0)
//!     sf   = e4m3_rne_satfinite(amax > 0 && g > 0 ? div_approx_ftz(amax, mul_ftz(6, g)) : 0)
//!     os   = float(sf) > 0 ? rcp_approx_ftz(mul_ftz(float(sf), g)) : 0
//!     q_i  = e2m1 of v = mul_ftz(x_i, os): round to nearest-even, saturating; a NaN v (a NaN
//!            input; 0 times inf) gives a zero with its sign bit (+0: the GPU's NaNs are canonical)
//!
//! (`g > 0` as -ftz compares: a subnormal g is not above 0.) FlashInfer's condition for os also
//! asks amax > 0 and g > 0; a non-zero sf implies both. A zero block gets zero codes with each
//! input's sign, like the exact mode; unlike it, a NaN element leaves the rest of its block
//! quantized as if it were absent, and reads back as 0. The host reference is
//! ref::nvfp4_fast_math_block. Same interface as Nvfp4Quantizer.
class Nvfp4FastMathQuantizer {
 public:
  KVCAST_HOST_DEVICE explicit Nvfp4FastMathQuantizer(float g)
      : g_(g), six_g_(detail::mul_ftz(6.0f, g)), g_positive_(g >= 0x1p-126f) {}

  //! The block's amax (of its elements' floats `x`, N of them) as float bits.
  template <int N>
  KVCAST_HOST_DEVICE static std::uint32_t amax_bits(const float (&x)[N]) {
    float m = 0.0f;
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) m = detail::max_abs_ftz(m, x[i]);
    std::uint32_t bits;
    memcpy(&bits, &m, sizeof bits);
    return bits;
  }
  //! The E4M3 block scale of a block whose amax (amax_bits) is `amax`.
  KVCAST_HOST_DEVICE std::uint8_t block_scale(float amax) const {
    return float_to_fp8<e4m3>(amax > 0.0f && g_positive_ ? detail::div_approx_ftz(amax, six_g_) : 0.0f);
  }
  //! The E2M1 codes of N consecutive elements of a block whose scale is `sf`, packed as
  //! Nvfp4Quantizer::codes packs them. T: unused (the formula is the same for every input type).
  template <int N, class T = float>
  KVCAST_HOST_DEVICE void codes(const float (&x)[N], std::uint8_t sf, std::uint32_t (&words)[N / 8]) const {
    static_assert(N % 8 == 0, "Nvfp4FastMathQuantizer::codes: whole words of 8 codes.");
    const float sf_value = fp8_to_float<e4m3>(sf);
    const float os = sf_value > 0.0f ? detail::rcp_approx_ftz(detail::mul_ftz(sf_value, g_)) : 0.0f;
    KVCAST_UNROLL
    for (int w = 0; w < N / 8; ++w) {
      std::uint32_t word = 0;
      KVCAST_UNROLL
      for (int i = 0; i < 8; ++i) {
        const float v = detail::mul_ftz(x[8 * w + i], os);
        std::uint32_t v_bits;
        memcpy(&v_bits, &v, sizeof v_bits);
        word |= (v == v ? detail::e2m1_code_not_nan(v) : v_bits >> 28 & 0x8u) << (4 * i);
      }
      words[w] = word;
    }
  }
  //! A whole block: its scale and its 16 codes.
  KVCAST_HOST_DEVICE Nvfp4BlockCodes block(const float (&x)[16]) const { return detail::nvfp4_block(*this, x); }

 private:
  float g_;
  float six_g_;
  bool g_positive_;
};

}  // namespace kvcast
