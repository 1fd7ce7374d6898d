// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/fast_divmod.hpp
//! Division by a run-time constant with a multiply and a shift, for the general write kernel's
//! token and head of a segment. Plain C++; the device uses `__umulhi`.
#pragma once

#include <cstdint>

#include "../config.hpp"

namespace kvcast {
namespace detail {

//! Granlund & Montgomery's round-up method: exact for every 32-bit dividend and every divisor
//! >= 1 (the host tests check the edges and random values).
class FastDivmod {
 public:
  constexpr FastDivmod() = default;
  explicit FastDivmod(std::uint32_t divisor) : divisor_(divisor) {
    while ((std::uint64_t{1} << shift_) < divisor) ++shift_;
    // m = floor(2^32 * (2^l - d) / d) + 1 fits in 32 bits because 2^l - d < d.
    multiplier_ = static_cast<std::uint32_t>(
        ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << shift_) - divisor)) / divisor + 1);
  }
  KVCAST_HOST_DEVICE std::uint32_t divisor() const { return divisor_; }
  KVCAST_HOST_DEVICE std::uint32_t div(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint32_t hi = __umulhi(n, multiplier_);
#else
    const std::uint32_t hi = static_cast<std::uint32_t>((std::uint64_t{n} * multiplier_) >> 32);
#endif
    return static_cast<std::uint32_t>((std::uint64_t{hi} + n) >> shift_);
  }

 private:
  std::uint32_t divisor_ = 1;
  std::uint32_t multiplier_ = 1;
  std::uint32_t shift_ = 0;
};

}  // namespace detail
}  // namespace kvcast
