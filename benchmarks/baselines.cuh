// kvcast benchmarks — the baselines a user compares with, re-implemented here from their
// published descriptions (not copied): the legacy scalar kernel and SGLang's vectorized design.
// Both use SGLang's arithmetic: inv = T(1)/T(scale), x*inv in T, clamp to ±448, E4M3.
// Floors besides: a plain copy kernel, kvcast's own kernel with its conversion taken out, and
// plain gathers and scatters of the read's and the write's rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <kvcast/kvcast.cuh>

namespace baseline {

template <class T>
__device__ __forceinline__ T from_float(float x) {
  return static_cast<T>(x);
}

template <class T>
__device__ __forceinline__ std::uint8_t to_e4m3(T x) {
  if constexpr (sizeof(T) == 2 && std::is_same_v<T, __half>)
    return __nv_cvt_halfraw_to_fp8(static_cast<__half_raw>(x), __NV_SATFINITE, __NV_E4M3);
  else
    return __nv_cvt_bfloat16raw_to_fp8(static_cast<__nv_bfloat16_raw>(x), __NV_SATFINITE, __NV_E4M3);
}

template <class T>
__device__ __forceinline__ T clamp448(T x) {
  const T hi = from_float<T>(448.f), lo = from_float<T>(-448.f);
  return x > hi ? hi : (lo > x ? lo : x);
}

// (c) Legacy: one block per token, each thread strides over the token's heads*dim elements one
// at a time.
template <class T>
__global__ void legacy_scalar(const T* k, const T* v, const float* k_scale, const float* v_scale, std::uint8_t* k_out,
                              std::uint8_t* v_out, int row_elems, std::int64_t mult, std::int64_t offset,
                              const std::int64_t* loc) {
  const int token = blockIdx.x;
  const T inv_k = from_float<T>(1.f) / from_float<T>(k_scale[0]);
  const T inv_v = from_float<T>(1.f) / from_float<T>(v_scale[0]);
  const std::int64_t row = loc[token] * mult + offset;
  for (int i = threadIdx.x; i < row_elems; i += blockDim.x) {
    const std::int64_t in = std::int64_t{token} * row_elems + i;
    const std::int64_t out = row * row_elems + i;
    k_out[out] = to_e4m3(clamp448(k[in] * inv_k));
    v_out[out] = to_e4m3(clamp448(v[in] * inv_v));
  }
}

// (d) SGLang's optimised design: fixed 256-thread blocks, a 2D grid of tokens x vector chunks,
// exactly one 16-byte vector per thread, no loop.
constexpr int kSglangBlock = 256;

template <class T>
__global__ void __launch_bounds__(kSglangBlock) sglang_vectorized(const T* k, const T* v, const float* k_scale,
                                                                  const float* v_scale, std::uint8_t* k_out,
                                                                  std::uint8_t* v_out, int num_tokens, int row_elems,
                                                                  std::int64_t mult, std::int64_t offset,
                                                                  const std::int64_t* loc) {
  constexpr int kVec = 16 / sizeof(T);
  struct alignas(16) In { T x[kVec]; };
  struct alignas(kVec) Out { std::uint8_t x[kVec]; };
  const int token = blockIdx.x;
  const int vec = blockIdx.y * kSglangBlock + threadIdx.x;
  if (token >= num_tokens || vec >= row_elems / kVec) return;
  const T inv_k = from_float<T>(1.f) / from_float<T>(k_scale[0]);
  const T inv_v = from_float<T>(1.f) / from_float<T>(v_scale[0]);
  const std::int64_t row = loc[token] * mult + offset;
  const In kin = reinterpret_cast<const In*>(k + std::int64_t{token} * row_elems)[vec];
  const In vin = reinterpret_cast<const In*>(v + std::int64_t{token} * row_elems)[vec];
  Out ko, vo;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    ko.x[i] = to_e4m3(clamp448(kin.x[i] * inv_k));
    vo.x[i] = to_e4m3(clamp448(vin.x[i] * inv_v));
  }
  reinterpret_cast<Out*>(k_out + row * row_elems)[vec] = ko;
  reinterpret_cast<Out*>(v_out + row * row_elems)[vec] = vo;
}

// A copy kernel of `bytes` bytes, one 16-byte vector a thread (the thread past the last vector
// copies the odd bytes): what cudaMemcpyAsync's copy costs when it is a kernel like any other.
__global__ void __launch_bounds__(256) copy_kernel(const int4* __restrict__ src, int4* __restrict__ dst, std::size_t bytes) {
  const std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x;
  const std::size_t vectors = bytes / sizeof(int4);
  if (i < vectors) {
    dst[i] = src[i];
  } else if (i == vectors) {
    for (std::size_t b = vectors * sizeof(int4); b < bytes; ++b)
      reinterpret_cast<char*>(dst)[b] = reinterpret_cast<const char*>(src)[b];
  }
}

//! A plain gather of the read's bytes, the floor of its memory pattern: output token t takes row
//! loc[t] of a contiguous cache of `row_bytes` codes a row, each code widened to 16 bits as it is
//! (no scale, no conversion), K and V. A thread moves kItems pieces of 8 codes, an 8-byte load
//! and a 16-byte store each, a CTA's width apart (every warp-wide access one coalesced run): all
//! its slots loaded, then all its codes, then its stores. 32-bit index arithmetic (`total` =
//! tokens * row_bytes / 8 < 2^32, the caller's check). Two pieces a thread were the fastest of 1,
//! 2, 4 and 8 on the H200 (benchmarks/NOTES.md #16s).
template <int kItems>
__global__ void __launch_bounds__(256) gather_widen_kernel(const std::uint8_t* __restrict__ k_cache, const std::uint8_t* __restrict__ v_cache,
                                                           const std::int64_t* __restrict__ loc, uint4* __restrict__ k,
                                                           uint4* __restrict__ v, std::uint32_t total, std::uint32_t pieces) {
  const std::uint32_t first = blockIdx.x * (256u * kItems) + threadIdx.x;
  std::int64_t at[kItems];
  uint2 kc[kItems], vc[kItems];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const std::uint32_t i = first + j * 256u, t = i / pieces;
    at[j] = i < total ? __ldg(loc + t) * (std::int64_t{pieces} * 8) + std::int64_t{i - t * pieces} * 8 : -1;
  }
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    kc[j] = at[j] >= 0 ? __ldg(reinterpret_cast<const uint2*>(k_cache + at[j])) : make_uint2(0, 0);
    vc[j] = at[j] >= 0 && v_cache ? __ldg(reinterpret_cast<const uint2*>(v_cache + at[j])) : make_uint2(0, 0);
  }
  const auto widen = [](uint2 c) {  // bytes b0..b7 to 16-bit b0..b7
    return make_uint4(__byte_perm(c.x, 0, 0x4140), __byte_perm(c.x, 0, 0x4342), __byte_perm(c.y, 0, 0x4140), __byte_perm(c.y, 0, 0x4342));
  };
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    if (at[j] < 0) continue;
    const std::uint32_t i = first + j * 256u;
    k[i] = widen(kc[j]);
    if (v_cache) v[i] = widen(vc[j]);
  }
}

//! A plain scatter of the write's bytes, the floor of its memory pattern: token t's row of K and
//! V (contiguous 16-bit inputs, `pieces` * 16 elements a row) goes to row loc[t] of a contiguous
//! cache, a byte an element (the input's high byte as it is: no scale, no conversion); and, where
//! `k_scales` is given, a float a (token, head) to row loc[t] of a [rows, heads] tensor (the
//! head's first input widened as it is), where the per-(token, head) write stores its scales.
//! A thread moves kItems pieces of 16 elements (two 16-byte loads, one 16-byte store), a CTA's
//! width apart, so that every warp-wide access is one coalesced run: all its slots loaded, then
//! all its inputs, then its stores. 32-bit piece indices (`total` < 2^32, the caller's check).
template <int kItems>
__global__ void __launch_bounds__(256) scatter_narrow_kernel(const uint4* __restrict__ k, const uint4* __restrict__ v,
                                                             const std::int64_t* __restrict__ loc, uint4* __restrict__ k_out,
                                                             uint4* __restrict__ v_out, float* __restrict__ k_scales,
                                                             float* __restrict__ v_scales, std::uint32_t total,
                                                             std::uint32_t pieces, std::uint32_t head_pieces) {
  const std::uint32_t first = blockIdx.x * (256u * kItems) + threadIdx.x;
  std::int64_t row[kItems];
  std::uint32_t in_row[kItems];
  uint4 kin[kItems][2], vin[kItems][2];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const std::uint32_t i = first + j * 256u, t = i / pieces;
    in_row[j] = i - t * pieces;
    row[j] = i < total ? __ldg(loc + t) : -1;
  }
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const std::uint32_t i = first + j * 256u;
    if (i >= total) continue;
    kin[j][0] = __ldg(k + 2 * std::size_t{i}), kin[j][1] = __ldg(k + 2 * std::size_t{i} + 1);
    vin[j][0] = __ldg(v + 2 * std::size_t{i}), vin[j][1] = __ldg(v + 2 * std::size_t{i} + 1);
  }
  const auto narrow = [](const uint4 (&x)[2]) {  // the high byte of each of 16 elements
    return make_uint4(__byte_perm(x[0].x, x[0].y, 0x7531), __byte_perm(x[0].z, x[0].w, 0x7531), __byte_perm(x[1].x, x[1].y, 0x7531),
                      __byte_perm(x[1].z, x[1].w, 0x7531));
  };
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    if (row[j] < 0) continue;
    k_out[row[j] * pieces + in_row[j]] = narrow(kin[j]);
    v_out[row[j] * pieces + in_row[j]] = narrow(vin[j]);
    if (k_scales != nullptr && in_row[j] % head_pieces == 0) {
      const std::int64_t at = row[j] * (pieces / head_pieces) + in_row[j] / head_pieces;
      k_scales[at] = __uint_as_float(kin[j][0].x << 16);
      v_scales[at] = __uint_as_float(vin[j][0].x << 16);
    }
  }
}

//! The per-(token, head) write with nothing general left, its floor at decode: contiguous
//! inputs, flat code rows and a [rows, heads] scale tensor, int64 slots, every slot in range,
//! row-heads of 32 * (Vec + Side) elements known at compile time, one warp a row-head (a
//! lane's Vec elements at lane * Vec, its Side after the warp's), K and V in the same warp,
//! a power-of-two count of heads.
//! The numerics are kvcast's own (its magnitude maxima, scale and quotient codes), so the
//! codes and scales are kvcast's bit for bit (the benchmark checks); what is gone is the
//! planner's generality: runtime group sizes and layouts, the amax output, the out-of-range
//! count, the tail path.
template <class T, class Format, int Vec, int Side>
__global__ void __launch_bounds__(256) token_head_floor(const T* __restrict__ k, const T* __restrict__ v,
                                                        const std::int64_t* __restrict__ loc, std::uint8_t* __restrict__ k_out,
                                                        std::uint8_t* __restrict__ v_out, float* __restrict__ k_scales,
                                                        float* __restrict__ v_scales, std::uint32_t row_heads,
                                                        std::uint32_t log2_heads, float min_scale) {
  using namespace kvcast;
  constexpr std::uint32_t kDim = 32 * (Vec + Side);
  const std::uint32_t w = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (w >= row_heads) return;
  const std::uint32_t heads = 1u << log2_heads, token = w >> log2_heads, head = w & (heads - 1);
  const std::size_t in = std::size_t{w} * kDim;
  AlignedVector<T, Vec> kv, vv;
  AlignedVector<T, Side == 0 ? 2 : Side> ks, vs;
  kv.load(k + in + lane * Vec);
  vv.load(v + in + lane * Vec);
  if constexpr (Side != 0) {
    ks.load(k + in + 32 * Vec + lane * Side);
    vs.load(v + in + 32 * Vec + lane * Side);
  }
  const std::int64_t slot = __ldg(loc + token);
  std::uint32_t km = detail::abs_max_pairs(kv), vm = detail::abs_max_pairs(vv);
  if constexpr (Side != 0) km = detail::abs_max_pairs(ks, km), vm = detail::abs_max_pairs(vs, vm);
  km = detail::warp_max(detail::pair_max_to_float_bits<T>(km));
  vm = detail::warp_max(detail::pair_max_to_float_bits<T>(vm));
  const float k_scale = PerTokenHeadScale::scale_of<Format, T>(__uint_as_float(km), min_scale);
  const float v_scale = PerTokenHeadScale::scale_of<Format, T>(__uint_as_float(vm), min_scale);
  if (slot < 0) return;
  const std::int64_t out = slot * (std::int64_t{heads} * kDim) + std::int64_t{head} * kDim;
  const QuotientQuantizer<T, Format> qk(k_scale), qv(v_scale);
  qk.template codes<Vec, true>(kv).store_bytes(k_out + out + lane * Vec);
  qv.template codes<Vec, true>(vv).store_bytes(v_out + out + lane * Vec);
  if constexpr (Side != 0) {
    qk.template codes<Side, true>(ks).store_bytes(k_out + out + 32 * Vec + lane * Side);
    qv.template codes<Side, true>(vs).store_bytes(v_out + out + 32 * Vec + lane * Side);
  }
  if (lane == 0) {
    k_scales[slot * heads + head] = k_scale;
    v_scales[slot * heads + head] = v_scale;
  }
}

//! Format tag of the no_math variant: kvcast's kernel (its plan, launch, loads, slot arithmetic
//! and stores) with each element's conversion replaced by its high byte. What is left is the
//! cost of the job's memory traffic in kvcast's access pattern, with no arithmetic.
struct HighByte {};

//! The no_math variant's "quantizer": the high byte of each 16-bit input, picked by one byte
//! permute whose selector comes from the scale (its bits above the 16 the permute reads), so
//! that, as with a real conversion, the codes wait for the scale and the compiler keeps the
//! kernel's order (every load issued before any is used).
template <class T>
class HighByteQuantizer {
  static_assert(sizeof(T) == 2, "the no_math variant takes 16-bit inputs");

 public:
  __host__ __device__ explicit HighByteQuantizer(float scale) {
    std::uint32_t bits;
    memcpy(&bits, &scale, sizeof bits);
    selector_ = (bits & 0xFFFF0000u) | 0x4431u;  // result bytes: input bytes 1 and 3, then zeros
  }
  __host__ __device__ std::uint8_t operator()(T x) const { return static_cast<std::uint8_t>(pair(x, x)); }
  __host__ __device__ std::uint16_t pair(T x0, T x1) const {
    // The pair as one word, the way the real conversions take it (no split into halves).
    std::uint32_t word;
    if constexpr (std::is_same_v<T, __half>) {
      const __half2 h = __halves2half2(x0, x1);
      memcpy(&word, &h, sizeof word);
    } else {
      const __nv_bfloat162 h = __halves2bfloat162(x0, x1);
      memcpy(&word, &h, sizeof word);
    }
#if defined(__CUDA_ARCH__)
    std::uint32_t codes;  // asm: the compiler folds __byte_perm's known selector bits away
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(codes) : "r"(word), "r"(selector_));
    return static_cast<std::uint16_t>(codes);
#else
    return static_cast<std::uint16_t>((word >> 8 & 0xFFu) | (word >> 16 & 0xFF00u));
#endif
  }

 private:
  std::uint32_t selector_;
};

}  // namespace baseline

// kvcast's kernel takes its conversion from Quantizer<T, Format, Mode>: the tag selects the one above.
namespace kvcast {
template <>
class Quantizer<__nv_bfloat16, baseline::HighByte, Arithmetic::input_precision>
    : public baseline::HighByteQuantizer<__nv_bfloat16> {
  using HighByteQuantizer::HighByteQuantizer;
};
template <>
class Quantizer<__half, baseline::HighByte, Arithmetic::input_precision> : public baseline::HighByteQuantizer<__half> {
  using HighByteQuantizer::HighByteQuantizer;
};
}  // namespace kvcast
