// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file downcast.cuh
//! The downcast kernel. It holds no policy: the host launcher (launch.cuh) validates the call,
//! picks the vector width and fills DowncastParams; the kernel only moves bytes.
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

//! Everything the kernel reads, passed by value as a `__grid_constant__` parameter.
template <class T>
struct DowncastParams {
  const T* k;
  const T* v;
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  std::int64_t in_token_stride;
  std::int64_t in_head_stride;
  OutputLayout out;
  FastDivmod segs_per_token;
  std::uint32_t num_segments;
  std::int32_t seg_len;
  std::int32_t items_per_seg;
  std::int32_t log2_group;
  const void* loc;
  bool loc_is_int32;
  std::int64_t mult;
  std::int64_t offset;
  std::int64_t min_slot;
  std::int64_t max_slot;
  unsigned long long* error_count;
  const float* k_scale_ptr;
  const float* v_scale_ptr;
  float k_scale;
  float v_scale;
};

//! One vector position of a segment, for K and for V.
template <class T, int Vec>
struct Item {
  AlignedVector<T, Vec> k;
  AlignedVector<T, Vec> v;
};

// Loads `count` elements (all of a vector, or a segment's tail) of K and V at `offset`.
template <class T, int Vec>
KVCAST_DEVICE void load_item(const DowncastParams<T>& p, std::int64_t offset, int count, Item<T, Vec>& item) {
  if (count == Vec) {
    if (p.k) item.k.load(p.k, offset);
    if (p.v) item.v.load(p.v, offset);
  } else {
    // Unrolled with a predicate so that the vector stays in registers (a run-time index
    // would move it to local memory).
    item.k.fill(T{});
    item.v.fill(T{});
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i) {
      if (i < count && p.k) item.k[i] = p.k[offset + i];
      if (i < count && p.v) item.v[i] = p.v[offset + i];
    }
  }
}

template <class T, class Format, Arithmetic Mode, int Vec>
KVCAST_DEVICE void store_item(const DowncastParams<T>& p, const Quantizer<T, Format, Mode>& qk,
                              const Quantizer<T, Format, Mode>& qv, std::int64_t offset, int count,
                              const Item<T, Vec>& item) {
  if (count == Vec) {
    if (p.k) quantize(qk, item.k).store(p.k_out, offset);
    if (p.v) quantize(qv, item.v).store(p.v_out, offset);
  } else {
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i) {
      if (i < count && p.k) p.k_out[offset + i] = qk(item.k[i]);
      if (i < count && p.v) p.v_out[offset + i] = qv(item.v[i]);
    }
  }
}

//! Grid-stride over segments; a group of 2^log2_group threads per segment walks its vectors
//! with tile::Memory-style indexing (vector j*G + rank). The first vector's load and the slot's
//! load are both issued before the slot is looked at, so a decode step pays one memory latency.
template <class T, class Format, Arithmetic Mode, int Vec, int BlockSize>
__global__ void __launch_bounds__(BlockSize) downcast_kernel(const __grid_constant__ DowncastParams<T> p) {
  static_assert(BlockSize % 32 == 0 && BlockSize <= 1024, "downcast_kernel: BlockSize must be a multiple of 32 up to 1024.");
  static_assert(Vec >= 1 && Vec * sizeof(T) <= 32, "downcast_kernel: a vector holds at most 32 bytes of input.");
#if KVCAST_HAS_PDL
  // Programmatic dependent launch: no-ops unless the launch asked for it. Wait for the kernel
  // before us (it may write K, V, loc or the scales), then let the next one start launching.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  const int group = 1 << p.log2_group;
  const tile::Memory<Item<T, Vec>> walk(threadIdx.x & (group - 1), group);
  const std::uint32_t groups_per_cta = BlockSize >> p.log2_group;
  const std::uint32_t seg_step = gridDim.x * groups_per_cta;
  std::uint32_t seg = blockIdx.x * groups_per_cta + (threadIdx.x >> p.log2_group);
  if (seg >= p.num_segments) return;

  const Quantizer<T, Format, Mode> qk(p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale);
  const Quantizer<T, Format, Mode> qv(p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale);

  for (; seg < p.num_segments; seg += seg_step) {
    const std::uint32_t token = p.segs_per_token.div(seg);
    const std::uint32_t head = seg - token * p.segs_per_token.divisor();
    std::int64_t slot = token;
    if (p.loc) {
      slot = p.loc_is_int32 ? std::int64_t{__ldg(static_cast<const std::int32_t*>(p.loc) + token)}
                            : static_cast<std::int64_t>(__ldg(static_cast<const long long*>(p.loc) + token));
    }
    const std::int64_t in_base = std::int64_t{token} * p.in_token_stride + std::int64_t{head} * p.in_head_stride;

    std::int64_t j = walk.index(0);
    Item<T, Vec> item;
    const auto count_at = [&](std::int64_t jj) {
      const std::int64_t left = p.seg_len - jj * Vec;
      return left < Vec ? static_cast<int>(left) : Vec;
    };
    if (j < p.items_per_seg) load_item(p, in_base + j * Vec, count_at(j), item);

    if (slot < 0) continue;  // padding token
    if (slot < p.min_slot || slot > p.max_slot) {
      if (p.error_count && head == 0 && walk.rank() == 0) atomicAdd(p.error_count, 1ull);
      continue;
    }
    // In range, so the true row fits int64; unsigned arithmetic keeps the intermediate defined.
    const std::int64_t row = static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                                       static_cast<std::uint64_t>(p.offset));
    const std::int64_t out_base = p.out.address(row, head);
    for (std::int64_t tile_index = 0; j < p.items_per_seg;) {
      store_item(p, qk, qv, out_base + j * Vec, count_at(j), item);
      j = walk.index(++tile_index);
      if (j < p.items_per_seg) load_item(p, in_base + j * Vec, count_at(j), item);
    }
  }
}

}  // namespace detail
}  // namespace kvcast
