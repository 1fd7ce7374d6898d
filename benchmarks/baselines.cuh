// kvcast benchmarks — the baselines a user compares with, re-implemented here from their
// published descriptions (not copied): the legacy scalar kernel and SGLang's vectorized design.
// Both use SGLang's arithmetic: inv = T(1)/T(scale), x*inv in T, clamp to ±448, E4M3.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

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

}  // namespace baseline
