// kvcast example: a rotary embedding fused with kvcast's block-level write.
//
// An engine's step rotates K (RoPE) and then writes K and V into the fp8 cache. As two kernels,
// the rotated K makes a round trip through memory (written as bf16, read back by the downcast)
// and the step pays a second launch. Fused, each CTA rotates its tokens' K rows into shared
// memory and hands them, with V straight from global memory, to kvcast::BlockDowncast: K is
// read once, and the codes are the same bytes the two kernels write.
//
//   rope_then_write(args, rope, stream)    the fused kernel
//   rope_only(k, k_rotated, ..., stream)   the first of the two kernels it replaces
//
// Rotation (NeoX's rotate-half) of head row x, for d < D/2, with c = cos[p][d], s = sin[p][d]
// of the token's position p, each product and sum rounded in fp32 on its own, then to T:
//   y[d]       = T(x[d] * c - x[d + D/2] * s)
//   y[d + D/2] = T(x[d + D/2] * c + x[d] * s)
#pragma once

#include <kvcast/kvcast.cuh>

#include <algorithm>
#include <cstdint>

namespace example {

//! Tables `[positions, head_dim / 2]` of cos and sin, and each token's position.
struct Rope {
  const float* cos = nullptr;
  const float* sin = nullptr;
  const std::int64_t* positions = nullptr;
};

//! Elements of a rotated run a thread moves at once: 16 bytes of input.
template <class T>
constexpr int kRopeVec = 16 / static_cast<int>(sizeof(T));

//! Rotates rows `first_token .. first_token + count - 1` of K (`k`: their first row; rows
//! `heads * head_dim` apart, heads `head_dim` apart) into `out` (same layout), by the CTA.
//! @pre head_dim / 2 is a multiple of kRopeVec<T>; `k`, `out` and the tables are 16-byte aligned.
template <class T, int BlockSize>
__device__ void rotate_rows(const T* k, const Rope& rope, std::int64_t first_token, int count, int heads, int head_dim, T* out) {
  constexpr int kVec = kRopeVec<T>;
  using Vector = kvcast::AlignedVector<T, kVec>;
  using Floats = kvcast::AlignedVector<float, kVec>;
  const int half = head_dim / 2;
  const int per_head = half / kVec;
  const int per_row = heads * per_head;
  const kvcast::tile::Memory<int> cta(static_cast<int>(threadIdx.x), BlockSize);
  for (int t = 0; cta.in_bound(count * per_row, t); ++t) {
    const int item = cta.index(t);
    const int r = item / per_row;
    const int h = (item - r * per_row) / per_head;
    const int d = (item - r * per_row - h * per_head) * kVec;
    const std::int64_t at = std::int64_t{r} * heads * head_dim + h * head_dim + d;
    const std::int64_t table = rope.positions[first_token + r] * half + d;
    Vector lo, hi;
    Floats c, s;
    lo.load(k, at);
    hi.load(k, at + half);
    c.load(rope.cos, table);
    s.load(rope.sin, table);
    Vector out_lo, out_hi;
    KVCAST_UNROLL
    for (int i = 0; i < kVec; ++i) {
      const float x = static_cast<float>(lo[i]), y = static_cast<float>(hi[i]);
      out_lo[i] = static_cast<T>(__fsub_rn(__fmul_rn(x, c[i]), __fmul_rn(y, s[i])));
      out_hi[i] = static_cast<T>(__fadd_rn(__fmul_rn(y, c[i]), __fmul_rn(x, s[i])));
    }
    out_lo.store(out, at);
    out_hi.store(out, at + half);
  }
}

constexpr int kRopeBlock = 256;

//! The fused kernel: a CTA's tokens' K rotated into shared memory, then K and V written.
template <class T, class Codes>
__global__ void __launch_bounds__(kRopeBlock)
    rope_write_kernel(const T* k, const T* v, Rope rope, kvcast::BlockWriteParams<T> params, std::int64_t num_tokens,
                      int heads, int head_dim, int tokens_per_cta) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* rows = reinterpret_cast<T*>(smem);
  const std::int64_t first = std::int64_t{blockIdx.x} * tokens_per_cta;
  const int count = static_cast<int>(num_tokens - first < tokens_per_cta ? num_tokens - first : tokens_per_cta);
  const std::int64_t row = std::int64_t{heads} * head_dim;
  rotate_rows<T, kRopeBlock>(k + first * row, rope, first, count, heads, head_dim, rows);
  __syncthreads();
  kvcast::BlockDowncast<T, kRopeBlock, Codes>::write(params, rows, v + first * row, row, static_cast<std::uint32_t>(first),
                                                     static_cast<std::uint32_t>(count));
}

//! Tokens a CTA of the fused kernel takes: one for small calls (every token its own CTA), and
//! about 8 KB of K rows for large ones.
inline int rope_tokens_per_cta(std::int64_t num_tokens, std::int64_t row_bytes) {
  if (num_tokens < 4096) return 1;
  return static_cast<int>(std::clamp<std::int64_t>(8192 / row_bytes, 1, 16));
}

//! Rotates K and writes K and V into the cache in one kernel. `args` is a downcast call on the
//! un-rotated K and V (contiguous `[num_tokens, heads, head_dim]`): validated as downcast()
//! validates it, and its codes are those of downcast() on the rotated K.
template <class Codes = kvcast::Fp8<kvcast::e4m3>, class T>
kvcast::Status rope_then_write(const kvcast::DowncastArgs<T>& args, const Rope& rope, cudaStream_t stream) {
  const bool contiguous = (args.in_head_stride == 0 || args.in_head_stride == args.head_dim) &&
                          (args.in_token_stride == 0 || args.in_token_stride == args.heads * args.head_dim);
  if (args.k == nullptr || args.v == nullptr || !contiguous)
    return kvcast::Status::error(kvcast::Code::bad_option, "rope_then_write: K and V both given, contiguous");
  if (args.head_dim % (2 * kRopeVec<T>) != 0)
    return kvcast::Status::error(kvcast::Code::bad_shape, "rope_then_write: head_dim (%lld) must be a multiple of %d",
                                 static_cast<long long>(args.head_dim), 2 * kRopeVec<T>);
  kvcast::BlockWriteParams<T> params;
  if (kvcast::Status s = kvcast::make_block_write_params(args, params); !s || args.num_tokens == 0) return s;
  const std::int64_t row_bytes = args.heads * args.head_dim * static_cast<std::int64_t>(sizeof(T));
  const int per_cta = rope_tokens_per_cta(args.num_tokens, row_bytes);
  const unsigned blocks = static_cast<unsigned>((args.num_tokens + per_cta - 1) / per_cta);
  const std::size_t smem = static_cast<std::size_t>(per_cta * row_bytes);
  auto* kernel = &rope_write_kernel<T, Codes>;
  if (smem > 48 * 1024)
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)); e)
      return kvcast::Status::error(kvcast::Code::cuda_error, "rope_then_write: %s", cudaGetErrorString(e));
  kernel<<<blocks, kRopeBlock, smem, stream>>>(args.k, args.v, rope, params, args.num_tokens, static_cast<int>(args.heads),
                                               static_cast<int>(args.head_dim), per_cta);
  if (cudaError_t e = cudaGetLastError(); e)
    return kvcast::Status::error(kvcast::Code::cuda_error, "rope_then_write: %s", cudaGetErrorString(e));
  return kvcast::Status{};
}

//! The unfused first step: K rotated into `k_rotated` (same layout), one CTA a token for small
//! calls and the fused kernel's grouping for large ones. Then downcast() on k_rotated and v.
template <class T>
__global__ void __launch_bounds__(kRopeBlock)
    rope_kernel(const T* k, T* k_rotated, Rope rope, std::int64_t num_tokens, int heads, int head_dim, int tokens_per_cta) {
  const std::int64_t first = std::int64_t{blockIdx.x} * tokens_per_cta;
  const int count = static_cast<int>(num_tokens - first < tokens_per_cta ? num_tokens - first : tokens_per_cta);
  const std::int64_t row = std::int64_t{heads} * head_dim;
  rotate_rows<T, kRopeBlock>(k + first * row, rope, first, count, heads, head_dim, k_rotated + first * row);
}

template <class T>
cudaError_t rope_only(const T* k, T* k_rotated, const Rope& rope, std::int64_t num_tokens, std::int64_t heads,
                      std::int64_t head_dim, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  const int per_cta = rope_tokens_per_cta(num_tokens, heads * head_dim * static_cast<std::int64_t>(sizeof(T)));
  const unsigned blocks = static_cast<unsigned>((num_tokens + per_cta - 1) / per_cta);
  rope_kernel<T><<<blocks, kRopeBlock, 0, stream>>>(k, k_rotated, rope, num_tokens, static_cast<int>(heads),
                                                    static_cast<int>(head_dim), per_cta);
  return cudaGetLastError();
}

}  // namespace example
