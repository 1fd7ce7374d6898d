// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/align.hpp
//! The one alignment test, shared by AlignedVector (vec.cuh) and the planner. Plain C++.
#pragma once

#include <cstdint>

#include "../config.hpp"

namespace kvcast {
namespace detail {

//! Whether `p` is a multiple of `bytes` (a null pointer is).
KVCAST_HOST_DEVICE bool is_aligned(const void* p, std::int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
}

}  // namespace detail
}  // namespace kvcast
