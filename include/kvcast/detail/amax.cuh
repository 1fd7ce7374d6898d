// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/amax.cuh
//! max |x| on the device, for the per-(token, head) scales and the amax output. Magnitudes are
//! kept as the bits of non-negative floats: for those the bits order as the values do, with
//! every NaN above +inf, so an unsigned max is max |x| with NaN propagating (torch.amax's rule)
//! and exact (no rounding anywhere), and atomicMax on the bits accumulates it in a float. A
//! 16-bit input's magnitude bits order the same way, so they are maxed as they are, two to a
//! word, and widened once at the end.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "../vec.cuh"
#include "geometry.hpp"

namespace kvcast {
namespace detail {

//! The bits of |float(x)| for x given by its 16-bit pattern with the sign cleared.
template <class T>
KVCAST_DEVICE std::uint32_t magnitude_to_float_bits(std::uint32_t bits16) {
  if constexpr (sizeof(T) == 4) {
    return bits16;
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return bits16 << 16;  // bf16 is fp32's upper half
  } else {
    return __float_as_uint(__half2float(__ushort_as_half(static_cast<unsigned short>(bits16))));
  }
}

//! A vector's magnitudes, maxed two at a time, `m` included: for 16-bit inputs a word whose
//! halves are the largest magnitude bits (sign cleared) of the elements in its low and its high
//! halves, one 16x2 unsigned max a word and no widening, so that several vectors' magnitudes can
//! be gathered into one word before pair_max_to_float_bits finishes it; for 4-byte inputs the
//! float bits of max |x| itself.
template <class T, int N>
KVCAST_DEVICE std::uint32_t abs_max_pairs(const AlignedVector<T, N>& v, std::uint32_t m = 0) {
  if constexpr (sizeof(T) == 4) {
    KVCAST_UNROLL
    for (int i = 0; i < N; ++i) m = max(m, __float_as_uint(v[i]) & 0x7fffffffu);
  } else {
    static_assert(N % 2 == 0, "abs_max_pairs: 16-bit elements go two to a word.");
    std::uint32_t words[N / 2];
    std::memcpy(words, &v, sizeof words);
    KVCAST_UNROLL
    for (int w = 0; w < N / 2; ++w) m = __vmaxu2(m, words[w] & 0x7fff7fffu);
  }
  return m;
}

//! The float bits of the larger magnitude of a pair word (abs_max_pairs), for T's inputs.
template <class T>
KVCAST_DEVICE std::uint32_t pair_max_to_float_bits(std::uint32_t m) {
  if constexpr (sizeof(T) == 4) {
    return m;
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return max(m & 0xffff0000u, m << 16);  // each half as the float it is the upper half of
  } else {
    return magnitude_to_float_bits<T>(max(m & 0xffffu, m >> 16));
  }
}

//! max |float(x)| over a vector, as float bits. 16-bit inputs compare their magnitudes' own bit
//! patterns two at a time (abs_max_pairs) and widen once.
template <class T, int N>
KVCAST_DEVICE std::uint32_t abs_max_bits(const AlignedVector<T, N>& v) {
  return pair_max_to_float_bits<T>(abs_max_pairs(v));
}

//! max |float(x)| over `count` elements (a segment's partial last vector), as float bits.
template <class T>
KVCAST_DEVICE std::uint32_t abs_max_bits(const T* x, std::uint32_t count) {
  std::uint32_t m = 0;
#pragma unroll 1
  for (std::uint32_t e = 0; e < count; ++e) {
    if constexpr (sizeof(T) == 4) {
      m = max(m, __float_as_uint(x[e]) & 0x7fffffffu);
    } else {
      std::uint16_t b;
      std::memcpy(&b, x + e, sizeof b);
      m = max(m, magnitude_to_float_bits<T>(b & 0x7fffu));
    }
  }
  return m;
}

//! K's and V's largest magnitude (float bits) a thread has seen, for the amax output.
struct SeenMax {
  std::uint32_t k = 0;
  std::uint32_t v = 0;
};

//! The max over the warp (every lane calls it): one redux instruction from sm_80 on.
KVCAST_DEVICE std::uint32_t warp_max(std::uint32_t x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xffffffffu, x);
#else
  KVCAST_UNROLL
  for (std::uint32_t o = 1; o < kLanes; o <<= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
#endif
}

//! The max of `k` and of `v` over the caller's group of 2^log2_group threads (groups aligned to
//! their size, at most kBlockSize). Every thread of the CTA calls it (a group wider than a warp
//! meets its other warps in shared memory, after a barrier).
KVCAST_DEVICE void group_max(std::uint32_t& k, std::uint32_t& v, std::uint32_t log2_group) {
  constexpr std::uint32_t kAll = 0xffffffffu;
  constexpr std::uint32_t kLog2Lanes = log2_ceil(kLanes);
  if (log2_group < kLog2Lanes) {
    // Unrolled, each step under a condition the whole warp shares (the group size is the
    // call's): no loop counter or branch between the shuffles.
    KVCAST_UNROLL
    for (std::uint32_t o = 1; o < kLanes; o <<= 1) {
      if (o < (1u << log2_group)) {
        k = max(k, __shfl_xor_sync(kAll, k, o));
        v = max(v, __shfl_xor_sync(kAll, v, o));
      }
    }
    return;
  }
  k = warp_max(k);
  v = warp_max(v);
  if (log2_group == kLog2Lanes) return;
  __shared__ std::uint32_t warp_k[kBlockSize / kLanes], warp_v[kBlockSize / kLanes];
  const std::uint32_t warp = threadIdx.x / kLanes;
  if (threadIdx.x % kLanes == 0) {
    warp_k[warp] = k;
    warp_v[warp] = v;
  }
  __syncthreads();
  const std::uint32_t warps = 1u << (log2_group - kLog2Lanes);
  const std::uint32_t first = warp & ~(warps - 1);
  for (std::uint32_t w = 0; w < warps; ++w) {
    k = max(k, warp_k[first + w]);
    v = max(v, warp_v[first + w]);
  }
}

//! What a warp's maxima must exceed to be added (float bits, K's and V's, in every lane): the
//! value of the amax output as this SM last read it (a load cached in L1; the warp's lanes share
//! its address, so it is one request). Issued with the thread's other loads, so that the decision
//! costs no trip of its own. Only where the call asks for it (AmaxOutput::skip_smaller): the
//! caller's branch on that is uniform, and a small grid's floor of 0 then costs no instruction
//! after the loads return.
KVCAST_DEVICE SeenMax amax_floor(const float* k_amax, const float* v_amax) {
  SeenMax floor;
  if (k_amax) floor.k = __ldca(reinterpret_cast<const unsigned int*>(k_amax));
  if (v_amax) floor.v = __ldca(reinterpret_cast<const unsigned int*>(v_amax));
  return floor;
}

//! `*at = max(*at, bits)` on a float's bits, a reduction that returns nothing.
KVCAST_DEVICE void red_max(float* at, std::uint32_t bits) {
  asm volatile("red.relaxed.gpu.global.max.u32 [%0], %1;" ::"l"(at), "r"(bits));
}

//! The amax output's share of a CTA, in grids that read the floor (AmaxOutput::skip_smaller):
//! a warp adds its maximum only where it is above every maximum its CTA's warps have added
//! before it, which shared memory keeps. It is the first wave that needs it: every warp of it
//! reads the floor before any maximum has been added, and with the output zeroed for the call (as
//! a caller that wants each step's amax does), thousands of warps would otherwise queue their
//! reductions on one address, holding up the L2 slice that serves it (NOTES #15zx). A warp below
//! the floor touches none of it.
struct CtaMaxima {
  std::uint32_t k, v;  //!< the largest maxima the CTA's warps have added (float bits)
};

//! Zeroes `cta`, then a barrier: every thread of the CTA calls it, before any passes it to
//! warp_maxima_add (and before any thread of the CTA returns).
KVCAST_DEVICE void cta_maxima_init(CtaMaxima& cta) {
  if (threadIdx.x == 0) cta = CtaMaxima{0u, 0u};
  __syncthreads();
}

//! `*k_amax = max(*k_amax, warp.k)` (likewise V; a null pointer skips its tensor) for maxima
//! that are already the warp's: one reduction instruction for both tensors, lane 0 K's and lane
//! 1 V's (two addresses, so the compiler adds no warp aggregation of its own), no barrier, and
//! none for a maximum not above `floor` (amax_floor). The value only grows, so a stale floor is
//! never above the true one and can only cost a reduction that was not needed; in a large grid,
//! after its first warps, almost no warp adds one, where thousands on one address would queue.
//! `cta` (a large grid's, cta_maxima_init; null in a small grid's): none either for a maximum
//! not above what the CTA has added, which one shared-memory atomic for both tensors tells.
KVCAST_DEVICE void warp_maxima_add(SeenMax warp, float* k_amax, float* v_amax, SeenMax floor, CtaMaxima* cta) {
  const std::uint32_t lane = threadIdx.x % kLanes;
  float* const at = lane == 0 ? k_amax : v_amax;
  const std::uint32_t bits = lane == 0 ? warp.k : warp.v;
  const std::uint32_t above = lane == 0 ? floor.k : floor.v;
  if (lane < 2 && at != nullptr && bits > above &&
      (cta == nullptr || bits > atomicMax_block(lane == 0 ? &cta->k : &cta->v, bits)))
    red_max(at, bits);
}

//! The amax output's share of a warp: each tensor's maximum of `seen` over the warp (one redux
//! each), added by warp_maxima_add (with `cta` as there). Every lane of the warp calls it. A warp
//! none of whose lanes is above `floor` skips the reductions too (one vote instead): past a large
//! grid's first warps, that is almost every warp (NOTES #15zq).
KVCAST_DEVICE void warp_maxima_into(SeenMax seen, float* k_amax, float* v_amax, SeenMax floor, CtaMaxima* cta) {
  if (!__any_sync(0xffffffffu, seen.k > floor.k || seen.v > floor.v)) return;
  warp_maxima_add(SeenMax{warp_max(seen.k), warp_max(seen.v)}, k_amax, v_amax, floor, cta);
}

}  // namespace detail
}  // namespace kvcast
