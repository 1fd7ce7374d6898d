// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file layout.hpp
//! Output address policy: where row `row`, head `head` of a KV cache starts. One formula covers
//! flat rows (SGLang, vLLM flash NHD) and paged caches (NHD pages, HND pages, K/V interleaved
//! pages of FlashInfer and vLLM). Plain C++ on the host, inlined on the device.
#pragma once

#include <cstdint>

#include "config.hpp"

namespace kvcast {

//! All strides are in fp8 elements (bytes) of the output tensor.
//!
//!     address(row, head) = (row / block_size) * block_stride
//!                        + (row % block_size) * token_stride + head * head_stride
//!
//! `block_size == 1` is a flat cache: `row * block_stride + head * head_stride`; the factories
//! below set `block_stride = token_stride` for it, so both strides read the same.
struct OutputLayout {
  std::int64_t block_size = 1;    //!< rows per page; 1 for a flat cache
  std::int64_t block_stride = 0;  //!< elements from one page to the next
  std::int64_t token_stride = 0;  //!< elements from one row to the next inside a page
  std::int64_t head_stride = 0;   //!< elements from one head to the next inside a row

  //! Flat rows with explicit strides, e.g. one of K/V inside a fused buffer.
  static constexpr OutputLayout flat(std::int64_t token_stride, std::int64_t head_stride) {
    return OutputLayout{1, token_stride, token_stride, head_stride};
  }
  //! Contiguous `[rows, heads, head_dim]` (SGLang's and vLLM flash's cache).
  static constexpr OutputLayout contiguous(std::int64_t heads, std::int64_t head_dim) {
    return flat(heads * head_dim, head_dim);
  }
  //! Any page layout; K/V interleaved pages are this with `block_stride` spanning both halves
  //! and `v_out` pointing at the V half of page 0.
  static constexpr OutputLayout paged(std::int64_t block_size, std::int64_t block_stride,
                                      std::int64_t token_stride, std::int64_t head_stride) {
    return OutputLayout{block_size, block_stride, token_stride, head_stride};
  }
  //! Contiguous pages `[pages, block_size, heads, head_dim]` (vLLM, FlashInfer NHD).
  static constexpr OutputLayout paged_nhd(std::int64_t block_size, std::int64_t heads,
                                          std::int64_t head_dim) {
    return paged(block_size, block_size * heads * head_dim, heads * head_dim, head_dim);
  }
  //! Contiguous pages `[pages, heads, block_size, head_dim]` (FlashInfer HND).
  static constexpr OutputLayout paged_hnd(std::int64_t block_size, std::int64_t heads,
                                          std::int64_t head_dim) {
    return paged(block_size, block_size * heads * head_dim, head_dim, block_size * head_dim);
  }

  //! All-zero, the default of the argument structs: the caller asks for the contiguous layout.
  constexpr bool is_default() const { return block_size == 1 && block_stride == 0 && token_stride == 0 && head_stride == 0; }
  //! This layout, or contiguous `[rows, heads, run]` where it is the default.
  constexpr OutputLayout or_contiguous(std::int64_t heads, std::int64_t run) const {
    return is_default() ? contiguous(heads, run) : *this;
  }

  //! @pre `row >= 0`, `head >= 0`, and the result fits in int64 (validated on the host).
  KVCAST_HOST_DEVICE std::int64_t address(std::int64_t row, std::int64_t head) const {
    return row_address(row) + head * head_stride;
  }
  //! Where row `row` starts (its head 0). Split out so that a kernel can add the head's part
  //! before it knows the row.
  KVCAST_HOST_DEVICE std::int64_t row_address(std::int64_t row) const {
    // The flat case skips the 64-bit division; it is the common one.
    if (block_size == 1) return row * block_stride;
    return (row / block_size) * block_stride + (row % block_size) * token_stride;
  }
};

}  // namespace kvcast
