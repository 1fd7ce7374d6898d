// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file vec.cuh
//! AlignedVector<T, N>: N elements in one naturally aligned word, so that one load or store
//! instruction moves all of them (LDG.128 for 16 bytes; two of them for 32 bytes before sm_100).
//! Every vector access of kvcast's kernels is one of its methods.
#pragma once

#include <cstdint>

#include "config.hpp"
#include "detail/align.hpp"

namespace kvcast {

//! @tparam T element type (trivially copyable: fp8 bytes, `__half`, `__nv_bfloat16`, `float`,
//!           32-bit words of packed codes…)
//! @tparam N element count; a power of two with `sizeof(T) * N` from 1 to 32 bytes. One byte
//!           is allowed on purpose: a single fp8 element is a legitimate one-byte access, so
//!           code generic over the width needs no special case for it.
template <class T, int N>
struct alignas(sizeof(T) * N) AlignedVector {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "AlignedVector: N must be a power of two.");
  static_assert(sizeof(T) * N <= 32,
                "AlignedVector: a vector holds at most 32 bytes, the widest single access.");
  static_assert((sizeof(T) & (sizeof(T) - 1)) == 0,
                "AlignedVector: sizeof(T) must be a power of two so the word is naturally aligned.");

  using value_type = T;
  static constexpr int kSize = N;
  static constexpr int kBytes = static_cast<int>(sizeof(T)) * N;

  T data[N];

  KVCAST_HOST_DEVICE static constexpr int size() { return N; }
  KVCAST_HOST_DEVICE T& operator[](int i) { return data[i]; }
  KVCAST_HOST_DEVICE const T& operator[](int i) const { return data[i]; }

  //! Loads the N elements that start at `base[element_offset]`, in one access.
  //! @pre `base + element_offset` is aligned to `kBytes` (is_aligned()).
  KVCAST_HOST_DEVICE void load(const T* base, std::int64_t element_offset = 0) {
    *this = *reinterpret_cast<const AlignedVector*>(base + element_offset);
  }
  //! Stores the N elements to `base[element_offset]` onwards, in one access.
  //! @pre as for load().
  KVCAST_HOST_DEVICE void store(T* base, std::int64_t element_offset = 0) const {
    *reinterpret_cast<AlignedVector*>(base + element_offset) = *this;
  }
  //! Loads the kBytes bytes at `src`, whatever their type, in one access: a row of 16-bit
  //! inputs as 32-bit words, say. @pre `src` is aligned to kBytes.
  KVCAST_HOST_DEVICE void load_bytes(const void* src) { *this = *static_cast<const AlignedVector*>(src); }
  //! Stores the vector as the kBytes bytes at `dst`, in one access: packed fp8 codes held as
  //! words, stored to a byte pointer. @pre `dst` is aligned to kBytes.
  KVCAST_HOST_DEVICE void store_bytes(void* dst) const { *static_cast<AlignedVector*>(dst) = *this; }

  //! Loads the kBytes bytes at `src` when `pred`, else leaves the vector as it is: on the device
  //! one predicated load instruction of global memory (2, 4, 8 or 16 bytes), not a branch, so that
  //! nothing the compiler schedules after it can land between it and the thread's next load.
  //! @pre `src` is aligned to kBytes and points to global memory where `pred`.
  KVCAST_HOST_DEVICE void load_bytes_if(const void* src, bool pred) {
#if defined(__CUDA_ARCH__)
    static_assert(kBytes == 2 || kBytes == 4 || kBytes == 8 || kBytes == 16, "load_bytes_if: 2, 4, 8 or 16 bytes, one instruction.");
    auto* w = reinterpret_cast<std::uint32_t*>(data);
    const int p = pred;
    if constexpr (kBytes == 2) {
      asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n @p ld.global.u16 %0, [%1];\n}\n"
                   : "+h"(*reinterpret_cast<std::uint16_t*>(w))
                   : "l"(src), "r"(p));
    } else if constexpr (kBytes == 16) {
      asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %5, 0;\n @p ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n}\n"
                   : "+r"(w[0]), "+r"(w[1]), "+r"(w[2]), "+r"(w[3])
                   : "l"(src), "r"(p));
    } else if constexpr (kBytes == 8) {
      asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %3, 0;\n @p ld.global.v2.u32 {%0, %1}, [%2];\n}\n"
                   : "+r"(w[0]), "+r"(w[1])
                   : "l"(src), "r"(p));
    } else {
      asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n @p ld.global.u32 %0, [%1];\n}\n" : "+r"(w[0]) : "l"(src), "r"(p));
    }
#else
    if (pred) load_bytes(src);
#endif
  }

  //! True when `ptr` may be passed to the loads and stores above.
  KVCAST_HOST_DEVICE static bool is_aligned(const void* ptr) { return detail::is_aligned(ptr, kBytes); }
};

}  // namespace kvcast
