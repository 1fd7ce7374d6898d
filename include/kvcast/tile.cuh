// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file tile.cuh
//! tile::Memory: how a group of threads walks memory together. A group of `size` threads
//! walks a run of elements in tiles: at tile `t`, member `rank` takes item `t * size + rank`
//! (an item: Vec elements), so consecutive threads touch consecutive words and every warp-wide
//! access is coalesced. A member's Vec elements lie one of two ways (tile::Access):
//!  - vector: consecutive, moved by one aligned AlignedVector access;
//!  - interleaved: kLanes apart, each warp taking kLanes * Vec consecutive elements with its
//!    lanes interleaved, moved one element an access (each warp-wide access still one
//!    coalesced run): for pointers or strides that allow no vector.
//! Either way a member's elements past the end of the run are not touched (the predicated
//! tail). Every load and store of kvcast's kernels goes through here.
//!
//! `Index` is the integer type of ranks, sizes and indices: 64-bit by default; a kernel whose
//! indices provably stay below 2^32 asks for 32-bit ones, one instruction each instead of two.
#pragma once

#include <cstdint>

#include "config.hpp"
#include "detail/geometry.hpp"
#include "vec.cuh"

namespace kvcast {
namespace tile {

template <class Index = std::int64_t>
class Memory {
 public:
  //! A group of `size` threads of which the caller is member `rank` (`0 <= rank < size`).
  KVCAST_HOST_DEVICE constexpr Memory(Index rank, Index size) : rank_(rank), size_(size) {}

#if defined(__CUDACC__)
  //! The calling thread's warp (rank = lane). @pre blockDim.x is a multiple of 32.
  KVCAST_DEVICE static Memory warp() { return Memory(threadIdx.x % detail::kLanes, detail::kLanes); }
  //! The whole CTA, threads ranked in x-major order.
  KVCAST_DEVICE static Memory cta() {
    const Index rank = threadIdx.x + Index{blockDim.x} * (threadIdx.y + Index{blockDim.y} * threadIdx.z);
    return Memory(rank, Index{blockDim.x} * blockDim.y * blockDim.z);
  }
#endif

  KVCAST_HOST_DEVICE constexpr Index rank() const { return rank_; }
  KVCAST_HOST_DEVICE constexpr Index size() const { return size_; }

  //! This member's item in tile `tile`.
  KVCAST_HOST_DEVICE constexpr Index index(Index tile) const { return tile * size_ + rank_; }
  //! Whether this member's item of tile `tile` lies inside `count` items.
  KVCAST_HOST_DEVICE constexpr bool in_bound(Index count, Index tile = 0) const { return index(tile) < count; }

  //! The element of the run where this member's Vec elements start in tile `tile`: its
  //! item's first element (vector), or its lane's within its warp's kLanes * Vec elements
  //! (interleaved). The others follow stride<A>() apart.
  template <Access A, int Vec>
  KVCAST_HOST_DEVICE constexpr Index first_element(Index tile) const {
    if constexpr (A != Access::interleaved) {
      return index(tile) * Vec;
    } else {
      constexpr Index kLanes = detail::kLanes;
      return tile * (size_ * Vec) + (rank_ / kLanes) * (kLanes * Vec) + rank_ % kLanes;
    }
  }
  //! Distance between a member's consecutive elements.
  template <Access A>
  KVCAST_HOST_DEVICE static constexpr Index stride() {
    return A == Access::interleaved ? Index{detail::kLanes} : Index{1};
  }

  //! Loads this member's Vec elements from `src`, its first element. Vector: one access.
  //! Otherwise element i from `src[i * stride<A>()]`, only where that is before `end`
  //! (elements from `src` to the end of the run); the others stay as they were.
  template <Access A, class T, int Vec>
  KVCAST_HOST_DEVICE static void load(const T* __restrict__ src, Index end, AlignedVector<T, Vec>& v) {
    if constexpr (A == Access::vector) {
      v.load(src);
    } else {
      KVCAST_UNROLL
      for (int i = 0; i < Vec; ++i)
        if (i * stride<A>() < end) v[i] = src[i * stride<A>()];
    }
  }
  //! Stores a whole vector at `dst` in one access, whatever its elements' type (packed codes).
  template <class V>
  KVCAST_HOST_DEVICE static void store_vector(void* __restrict__ dst, const V& v) {
    v.store_bytes(dst);
  }
  //! Stores this member's Vec elements as load<A>() placed them, one an access (A is not
  //! vector): element i at `dst[i * stride<A>()]` where that is before `end`.
  template <Access A, class T, int Vec>
  KVCAST_HOST_DEVICE static void store_elements(T* __restrict__ dst, Index end, const AlignedVector<T, Vec>& v) {
    static_assert(A != Access::vector, "store_elements: a whole vector is one store (store_vector).");
    constexpr Index kStride = stride<A>();
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i)
      if (i * kStride < end) dst[i * kStride] = v[i];
  }
  template <class T, int Vec>
  KVCAST_HOST_DEVICE static void store_interleaved(T* __restrict__ dst, Index end, const AlignedVector<T, Vec>& v) {
    store_elements<Access::interleaved>(dst, end, v);
  }

 private:
  Index rank_;
  Index size_;
};

}  // namespace tile
}  // namespace kvcast
