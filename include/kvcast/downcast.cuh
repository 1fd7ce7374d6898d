// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file downcast.cuh
//! The downcast kernel. It holds no policy: the host launcher (launch.cuh) validates the call,
//! picks the vector shape and fills DowncastParams; the kernel only moves bytes.
#pragma once

#include <cstdint>

#include "config.cuh"
#include "fp8.cuh"
#include "layout.cuh"
#include "plan.hpp"
#include "tile.cuh"
#include "vec.cuh"

namespace kvcast {
namespace detail {

//! Everything the kernel reads, passed by value as a `__grid_constant__` parameter. Ordered by
//! first use: what the thread needs to issue its loads comes first, in as few constant-cache
//! lines as possible, so that the loads leave early; what the stores need follows.
template <class T>
struct DowncastParams {
  // To find the thread's work and issue its loads.
  std::int32_t log2_group;
  std::uint32_t num_segments;
  FastDivmod segs_per_token;
  std::int32_t seg_len;
  std::int32_t full_items;  //!< vectors of Vec elements per segment; a partial one may follow
  const T* k;
  const T* v;
  std::int64_t in_token_stride;
  std::int64_t in_head_stride;
  const void* loc;
  const float* k_scale_ptr;
  const float* v_scale_ptr;
  float k_scale;
  float v_scale;
  bool loc_is_int32;
  // To decide and place the stores.
  std::int64_t min_slot;
  std::int64_t max_slot;
  std::int64_t mult;
  std::int64_t offset;
  OutputLayout out;
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  unsigned long long* error_count;
};

//! Vec elements, moved `Access` elements per instruction: Access == Vec is one aligned vector
//! access; Access == 1 serves pointers and strides that allow no vector (each thread still
//! handles Vec elements, so the index work is shared and the conversions stay packed).
template <class T, int Vec, int Access>
KVCAST_DEVICE void load_vector(const T* __restrict__ src, AlignedVector<T, Vec>& v) {
  if constexpr (Access == Vec) {
    v.load(src);
  } else {
    KVCAST_UNROLL
    for (int i = 0; i < Vec; i += Access) {
      AlignedVector<T, Access> part;
      part.load(src, i);
      KVCAST_UNROLL
      for (int j = 0; j < Access; ++j) v[i + j] = part[j];
    }
  }
}

template <int Vec, int Access>
KVCAST_DEVICE void store_vector(std::uint8_t* __restrict__ dst, const AlignedVector<std::uint8_t, Vec>& v) {
  if constexpr (Access == Vec) {
    v.store(dst);
  } else {
    KVCAST_UNROLL
    for (int i = 0; i < Vec; i += Access) {
      AlignedVector<std::uint8_t, Access> part;
      KVCAST_UNROLL
      for (int j = 0; j < Access; ++j) part[j] = v[i + j];
      part.store(dst, i);
    }
  }
}

//! One vector per thread. A segment (a token's row, or one head of it) is cut into chunks of
//! 2^log2_group vectors, one chunk per group of threads (grid y), so that a single long row
//! spreads over several CTAs (tile::Memory indexing: vector `chunk * G + rank`). Every load the thread needs
//! — slot, K, V, scales — is issued before any of them is used, so a decode step pays one memory
//! latency. The main path is straight-line code; the tail of a segment whose length Vec does not
//! divide is done element by element.
template <class T, class Format, Arithmetic Mode, int Vec, int Access, int BlockSize>
__global__ void __launch_bounds__(BlockSize) downcast_kernel(const __grid_constant__ DowncastParams<T> p) {
  static_assert(BlockSize % 32 == 0 && BlockSize <= 1024, "downcast_kernel: BlockSize must be a multiple of 32 up to 1024.");
  static_assert(Vec >= 2 && Vec * sizeof(T) <= 32, "downcast_kernel: a vector holds 2 elements up to 32 bytes of input.");
  static_assert(Access == Vec || Access == 1, "downcast_kernel: vectors are accessed whole or element by element.");
#if KVCAST_HAS_PDL
  // Programmatic dependent launch: no-ops unless the launch asked for it. Wait for the kernel
  // before us (it may write K, V, loc or the scales), then let the next one start launching.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  // Grid: x (and z, past 2^31 - 1 CTAs) walks the segments, y the chunks of one segment.
  const std::uint32_t groups_per_cta = BlockSize >> p.log2_group;
  const std::uint64_t seg64 = (std::uint64_t{blockIdx.z} * gridDim.x + blockIdx.x) * groups_per_cta + (threadIdx.x >> p.log2_group);
  if (seg64 >= p.num_segments) return;
  const std::uint32_t seg = static_cast<std::uint32_t>(seg64);
  const tile::Memory<AlignedVector<T, Vec>> walk(threadIdx.x & ((1u << p.log2_group) - 1), std::int64_t{1} << p.log2_group);
  const std::int64_t j = walk.index(blockIdx.y);  // this thread's vector in the segment
  const std::int64_t first = j * Vec;
  if (first >= p.seg_len) return;  // the idle end of the last chunk (never vector 0)
  const std::uint32_t token = p.segs_per_token.div(seg);
  const std::uint32_t head = seg - token * p.segs_per_token.divisor();

  // Loads first.
  const float k_scale = p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale;
  const float v_scale = p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale;
  std::int64_t slot = token;
  if (p.loc) {
    slot = p.loc_is_int32 ? std::int64_t{__ldg(static_cast<const std::int32_t*>(p.loc) + token)}
                          : static_cast<std::int64_t>(__ldg(static_cast<const long long*>(p.loc) + token));
  }
  const std::int64_t in_base = std::int64_t{token} * p.in_token_stride + std::int64_t{head} * p.in_head_stride;
  const T* __restrict__ k_in = p.k + in_base;  // not dereferenced when p.k is null
  const T* __restrict__ v_in = p.v + in_base;
  const bool full = j < p.full_items;
  AlignedVector<T, Vec> k_vec, v_vec;
  if (full) {
    if (p.k) load_vector<T, Vec, Access>(k_in + first, k_vec);
    if (p.v) load_vector<T, Vec, Access>(v_in + first, v_vec);
  }

  // Then the slot decides.
  if (slot < 0) return;  // padding token
  if (slot < p.min_slot || slot > p.max_slot) {
    if (p.error_count && head == 0 && j == 0) atomicAdd(p.error_count, 1ull);  // once per token
    return;
  }
  // In range, so the true row fits int64; unsigned arithmetic keeps the intermediate defined.
  const std::int64_t row = static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                                     static_cast<std::uint64_t>(p.offset));
  const std::int64_t out_base = p.out.address(row, head);
  std::uint8_t* __restrict__ k_out = p.k_out + out_base;  // written only when p.k_out is set
  std::uint8_t* __restrict__ v_out = p.v_out + out_base;
  const Quantizer<T, Format, Mode> qk(k_scale);
  const Quantizer<T, Format, Mode> qv(v_scale);
  if (full) {
    if (p.k_out) store_vector<Vec, Access>(k_out + first, quantize(qk, k_vec));
    if (p.v_out) store_vector<Vec, Access>(v_out + first, quantize(qv, v_vec));
  } else {  // the partial last vector
#pragma unroll 1
    for (std::int64_t e = first; e < p.seg_len; ++e) {
      if (p.k_out) k_out[e] = qk(k_in[e]);
      if (p.v_out) v_out[e] = qv(v_in[e]);
    }
  }
}

}  // namespace detail
}  // namespace kvcast
