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
//! even code) and against cuda_fp4.h's host conversion.
#pragma once

#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ < 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 8))
#error "kvcast/fp4.cuh needs CUDA 12.8 or newer (cuda_fp4.h)."
#endif

#include <cuda_fp4.h>

#include <cstdint>
#include <cstring>

#include "config.hpp"

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

}  // namespace kvcast
