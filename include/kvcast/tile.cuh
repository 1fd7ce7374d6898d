// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file tile.cuh
//! tile::Memory<T>: cooperative, coalesced access by a group of threads. A group of `size`
//! threads walks an array in tiles of `size` elements (T is usually an AlignedVector): at tile
//! `t`, member `rank` touches element `t * size + rank`, so consecutive threads touch
//! consecutive words and every warp access is one coalesced transaction per word.
//!
//! `Index` is the integer type of ranks, sizes and indices: 64-bit by default; a kernel whose
//! indices provably stay below 2^32 asks for 32-bit ones, one instruction each instead of two.
#pragma once

#include <cstdint>

#include "config.cuh"

namespace kvcast {
namespace tile {

template <class T, class Index = std::int64_t>
class Memory {
 public:
  //! A group of `size` threads of which the caller is member `rank` (`0 <= rank < size`).
  KVCAST_HOST_DEVICE constexpr Memory(Index rank, Index size) : rank_(rank), size_(size) {}

  //! The calling thread alone.
  KVCAST_HOST_DEVICE static constexpr Memory thread() { return Memory(0, 1); }
#if defined(__CUDACC__)
  //! The calling thread's warp (lane = rank). @pre blockDim.x is a multiple of 32.
  KVCAST_DEVICE static Memory warp() { return Memory(threadIdx.x % 32, 32); }
  //! The whole CTA, threads ranked in x-major order.
  KVCAST_DEVICE static Memory cta() {
    const Index rank = threadIdx.x + Index{blockDim.x} * (threadIdx.y + Index{blockDim.y} * threadIdx.z);
    return Memory(rank, Index{blockDim.x} * blockDim.y * blockDim.z);
  }
#endif

  KVCAST_HOST_DEVICE constexpr Index rank() const { return rank_; }
  KVCAST_HOST_DEVICE constexpr Index size() const { return size_; }

  //! Index of this thread's element in tile `tile`.
  KVCAST_HOST_DEVICE constexpr Index index(Index tile) const { return tile * size_ + rank_; }
  //! Whether this thread's element of tile `tile` lies inside an array of `count` elements.
  KVCAST_HOST_DEVICE constexpr bool in_bound(Index count, Index tile = 0) const {
    return index(tile) < count;
  }
  KVCAST_HOST_DEVICE T load(const T* ptr, Index tile = 0) const { return ptr[index(tile)]; }
  KVCAST_HOST_DEVICE void store(T* ptr, const T& value, Index tile = 0) const {
    ptr[index(tile)] = value;
  }

 private:
  Index rank_;
  Index size_;
};

}  // namespace tile
}  // namespace kvcast
