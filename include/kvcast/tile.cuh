// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file tile.cuh
//! tile::Memory<T>: cooperative, coalesced access by a group of threads. A group of `size`
//! threads walks an array in tiles of `size` elements (T is usually an AlignedVector): at tile
//! `t`, member `rank` touches element `t * size + rank`, so consecutive threads touch
//! consecutive words and every warp access is one coalesced transaction per word.
#pragma once

#include <cstdint>

#include "config.cuh"

namespace kvcast {
namespace tile {

template <class T>
class Memory {
 public:
  //! A group of `size` threads of which the caller is member `rank` (`0 <= rank < size`).
  KVCAST_HOST_DEVICE constexpr Memory(std::int64_t rank, std::int64_t size) : rank_(rank), size_(size) {}

  //! The calling thread alone.
  KVCAST_HOST_DEVICE static constexpr Memory thread() { return Memory(0, 1); }
#if defined(__CUDACC__)
  //! The calling thread's warp (lane = rank). @pre blockDim.x is a multiple of 32.
  KVCAST_DEVICE static Memory warp() { return Memory(threadIdx.x % 32, 32); }
  //! The whole CTA, threads ranked in x-major order.
  KVCAST_DEVICE static Memory cta() {
    const std::int64_t rank = threadIdx.x + blockDim.x * (threadIdx.y + std::int64_t{blockDim.y} * threadIdx.z);
    return Memory(rank, std::int64_t{blockDim.x} * blockDim.y * blockDim.z);
  }
#endif

  KVCAST_HOST_DEVICE constexpr std::int64_t rank() const { return rank_; }
  KVCAST_HOST_DEVICE constexpr std::int64_t size() const { return size_; }

  //! Index of this thread's element in tile `tile`. 64-bit throughout.
  KVCAST_HOST_DEVICE constexpr std::int64_t index(std::int64_t tile) const { return tile * size_ + rank_; }
  //! Whether this thread's element of tile `tile` lies inside an array of `count` elements.
  KVCAST_HOST_DEVICE constexpr bool in_bound(std::int64_t count, std::int64_t tile = 0) const {
    return index(tile) < count;
  }
  KVCAST_HOST_DEVICE T load(const T* ptr, std::int64_t tile = 0) const { return ptr[index(tile)]; }
  KVCAST_HOST_DEVICE void store(T* ptr, const T& value, std::int64_t tile = 0) const {
    ptr[index(tile)] = value;
  }

 private:
  std::int64_t rank_;
  std::int64_t size_;
};

}  // namespace tile
}  // namespace kvcast
