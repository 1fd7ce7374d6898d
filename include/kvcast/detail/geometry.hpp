// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/geometry.hpp
//! The shapes the write kernels are built with: what the planner must know of them to size a
//! grid, and nothing else. Plain C++, included by both the planner and the kernels (neither
//! includes the other).
#pragma once

#include <cstdint>

#include "../config.hpp"

namespace kvcast {
namespace detail {

//! Smallest l with 2^l >= n.
KVCAST_HOST_DEVICE constexpr int log2_ceil(std::int64_t n) {
  int l = 0;
  while ((std::int64_t{1} << l) < n) ++l;
  return l;
}

//! Threads a CTA of the write kernel (write_kernel.cuh).
constexpr int kBlockSize = 256;
//! Lanes of a warp: the interleave of element-by-element accesses (tile::Access::interleaved).
constexpr int kLanes = 32;
//! The widest access one thread makes: 32 bytes (two 16-byte instructions before sm_100).
constexpr int kMaxVectorBytes = 32;
//! The bytes of values a read thread stores in one instruction (16: one 16-byte store), and so
//! the bytes of output a piece of its vector holds (read_piece in detail/read_kernel.cuh).
constexpr int kReadPieceBytes = 16;
//! Elements a lane of the realigned kernel converts: 16 of a 16-bit input, two 16-byte loads.
constexpr int kRealignVec = 16;
//! Elements a warp of the realigned kernel takes from a row.
constexpr std::int64_t kRealignRun = std::int64_t{kLanes} * kRealignVec;
//! Warps (rows) a CTA of the realigned kernel.
constexpr int kRealignWarps = 8;
//! A lane of the row-head-warp write (per-(token, head) scales of row-heads no power-of-two
//! group fits) and of the row-warp read (rows no power-of-two group of vectors fits without
//! cutting them in chunks): a vector of kRowHeadWarpVec elements and a side vector of
//! kRowHeadWarpSide, so a warp holds kLanes * 18 = 576 elements, one MLA head.
constexpr int kRowHeadWarpVec = 16;
constexpr int kRowHeadWarpSide = 2;
//! Elements (codes, for the read) a warp of those kernels holds: one MLA head of 576.
constexpr std::int64_t kRowWarpElements = std::int64_t{kLanes} * (kRowHeadWarpVec + kRowHeadWarpSide);
//! The vector a lane of the lean row-head warp (write_row_head_lean_kernel) holds for a row-head
//! of `head_dim`: a warp's 32 vectors of 2, 4 or 8 (heads of 64, 128, 256), or of 16 with a side
//! vector of kRowHeadWarpSide (576); 0 for any other head.
KVCAST_HOST_DEVICE constexpr int lean_row_head_vec(std::int64_t head_dim) {
  return head_dim == 64 ? 2 : head_dim == 128 ? 4 : head_dim == 256 ? 8 : head_dim == kRowWarpElements ? kRowHeadWarpVec : 0;
}
//! Whether the lean row-head warp of lane vector `vec` has an instance with K and V in one warp
//! as well as the one with K and V in warps of their own (grid z): heads of 64 without the amax
//! output, whose larger calls take it (tuning::kLeanRowHead64ApartUpTo). From 4 elements a lane
//! (heads of 128 and up) the conversions are the longer chain, and apart measured faster (NOTES
//! #15zi); with the amax output, each warp then makes one reduction and one atomic (NOTES #15zt).
KVCAST_HOST_DEVICE constexpr bool lean_row_head_together(int vec, bool amax) { return vec == 2 && !amax; }

//! Elements a thread of the lean amax write (write_amax_lean_kernel) holds: 16-bit inputs, one
//! 8-byte load a tensor.
constexpr int kAmaxLeanVec = 4;

//! The most elements a thread of an NVFP4 write holds, for inputs of `input_bytes`: a whole
//! block of 16 for 16-bit inputs (32 bytes, its codes two words), half a block for fp32 (32
//! bytes, its codes one word). Half a block (kNvfp4HalfBlock, the planner's choice for small
//! calls) puts a block on two neighbouring lanes, and one shuffle reduces its amax.
KVCAST_HOST_DEVICE constexpr int nvfp4_vec(int input_bytes) { return input_bytes == 2 ? 16 : 8; }
constexpr int kNvfp4HalfBlock = 8;
//! Codes a thread of an NVFP4 read takes: a block of 16, one 8-byte load.
constexpr int kNvfp4ReadVec = 16;
//! A segment (a token's row or one head) spans at most this many elements; the grid's y
//! dimension then holds its chunks (2^24 / (2 * kBlockSize) = 2^15).
constexpr std::int64_t kMaxSegmentElements = std::int64_t{1} << 24;
//! A per-(token, head) scale is reduced over one group of at most kBlockSize threads, each
//! holding at least 8 elements of the row-head (element by element, the narrowest case): so a
//! head of at most this many elements.
constexpr std::int64_t kMaxReducedHeadDim = std::int64_t{kBlockSize} * 8;
//! Only kernels whose vectors hold at least this many bytes of input take a grid with the
//! chunks on x (GridOrder::chunks_first, the planner's choice for large calls); narrower ones,
//! the decode calls', read their grid as segments first without a test.
constexpr int kChunksFirstMinVectorBytes = 16;
//! Grid y (and z) hold at most this many CTAs.
constexpr std::int64_t kMaxGridY = 65535;

}  // namespace detail

namespace tile {
//! How a thread's Vec elements lie in memory (tile::Memory walks both). Declared here, in plain
//! C++, so that the planner can name the choice it makes.
enum class Access : std::uint8_t {
  vector,       //!< consecutive: one aligned access moves the whole vector
  interleaved,  //!< kLanes apart, the warp's lanes interleaved: one element an access, each
                //!< warp-wide access one coalesced run (for pointers or strides no vector fits)
  elements,     //!< consecutive, as `vector`, but one element an access: for a thread that must
                //!< hold consecutive elements (an NVFP4 block) where no vector fits
};
}  // namespace tile
}  // namespace kvcast
