// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/read_kernel.cuh
//! The read skeleton and its kernel: the write's stages in the other direction. The planner
//! (detail/read_plan.hpp) decides, dispatch (detail/dispatch.cuh) fills ReadParams and launches.
//! Each thread goes through the same stages, in this order:
//!
//!   locate   its segment's output token and head
//!   resolve  (row stage)      the cache row: the token's slot (padding reads nothing), or its
//!                             sequence, page and page-table entry; rows, pages and page
//!                             indices out of range read nothing and are counted
//!   load     (tile::Memory)   its codes of K and V at the row's place, and the row-head's scales
//!                             (scale policy: per tensor, per head, or stored per (token, head))
//!   convert  (Dequantizer)    T(float(code) * scale)
//!   store    (tile::Memory)   at the output token's place
//!
//! A gather cannot load before it knows the row: its chain is the slot (or the page-table walk),
//! then the codes and the scale together, then the stores.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../fp8.cuh"
#include "../layout.hpp"
#include "../policy.cuh"
#include "../tile.cuh"
#include "../vec.cuh"
#include "fast_divmod.hpp"
#include "geometry.hpp"
#include "write_kernel.cuh"

namespace kvcast {
namespace detail {

//! Everything a read kernel reads, passed by value as a `__grid_constant__` parameter, in order
//! of first use.
template <class T, class Scales>
struct ReadParams {
  // To find the thread's work. 32-bit where the planner bounds the value: segments <= 2^31 - 1,
  // a segment <= 2^24 elements.
  std::uint32_t chunks_first;  //!< GridOrder::chunks_first: grid x walks the chunks, y the segments
  std::uint32_t log2_group;
  std::uint32_t num_segments;
  std::uint32_t seg_len;
  std::uint32_t loc_is_int32;
  FastDivmod segs_per_token;
  // Rows from slots (block_table null): as the write's slot stage.
  const void* loc;
  std::int64_t min_slot;
  std::int64_t max_slot;
  std::int64_t mult;
  std::int64_t offset;
  // Rows from a page table.
  const std::int32_t* block_table;  //!< null: rows from slots
  const std::int32_t* cu_seq_lens;  //!< batch + 1 entries
  const std::int32_t* seq_starts;   //!< null: every sequence from its token 0
  std::uint32_t batch;
  std::uint32_t max_pages;
  FastDivmod page_size;
  std::int64_t pages;
  // The codes, their scales, and where the values go.
  const std::uint8_t* k_cache;
  const std::uint8_t* v_cache;
  OutputLayout cache;
  typename Scales::Params scales;
  T* k_out;
  T* v_out;
  std::int64_t out_token_stride;
  std::int64_t out_head_stride;
  unsigned long long* error_count;  //!< only on the rare out-of-range path
};

//! The sequence of output token `t` in the page table: the b with cu[b] <= t < cu[b + 1] (cu =
//! cu_seq_lens), into `seq` and `seq_start` (cu[b]), or false where t is in no sequence or the
//! lane is not `active`. Found by the warp together, so every lane of it calls this: a search of
//! cu for the token of its lowest active lane, 32 ways a round (a load a lane and a ballot) while
//! 32 or more sequences remain, then a last round that loads every remaining bound, cu[lo] to
//! cu[hi], one a lane: the sequence and both its bounds come from that round (by shuffles), with
//! no load after it. One round up to 31 sequences, two up to 992. Each lane then steps forward to
//! its own token's sequence (a warp's tokens are consecutive, so it rarely steps). A binary
//! search a thread would chain log2(batch) loads. Whatever cu's entries, only indices 0..batch
//! are read and the sequence is below batch.
template <class P>
KVCAST_DEVICE bool warp_sequence_of(const P& p, std::int32_t t, bool active, std::uint32_t& seq, std::int32_t& seq_start) {
  constexpr unsigned kWarp = 0xffffffffu;
  const unsigned lanes = __ballot_sync(kWarp, active);
  if (lanes == 0) return false;
  const std::int32_t t_ref = __shfl_sync(kWarp, t, __ffs(lanes) - 1);
  const std::int32_t first = __ldg(p.cu_seq_lens), last = __ldg(p.cu_seq_lens + p.batch);
  // Keep cu[lo] <= t_ref < cu[hi] (when t_ref is in a sequence; else lo stays a valid start).
  const std::uint32_t lane = threadIdx.x % kLanes;
  std::uint32_t lo = 0, hi = p.batch;
  while (hi - lo >= kLanes) {  // the same trips on every lane
    const std::uint32_t step = (hi - lo + kLanes - 1) / kLanes;
    const std::uint32_t at = lo + lane * step;
    // Lane 0's probe is cu[lo] (below t_ref, or t_ref before every sequence: lo stays).
    const unsigned below = __ballot_sync(kWarp, at < hi && __ldg(p.cu_seq_lens + at) <= t_ref) | 1u;
    lo += static_cast<std::uint32_t>(31 - __clz(static_cast<int>(below))) * step;
    hi = min(hi, lo + step);
  }
  // The last round: hi - lo < kLanes, so lanes 0 .. hi - lo load cu[lo .. hi]. The sequence is
  // lo + k, k below hi - lo, and its bounds are lanes k's and k + 1's.
  const std::uint32_t at = lo + lane;
  const std::int32_t bound = at <= hi ? __ldg(p.cu_seq_lens + at) : 0;
  const int k = 31 - __clz(static_cast<int>(__ballot_sync(kWarp, at < hi && bound <= t_ref) | 1u));
  std::uint32_t b = lo + static_cast<std::uint32_t>(k);
  std::int32_t start = __shfl_sync(kWarp, bound, k), next = __shfl_sync(kWarp, bound, k + 1);
  if (!active || t < first || t >= last) return false;
  // Forward to t's sequence: it stops by b + 1 = batch, as cu[batch] > t.
  while (next <= t) {
    ++b;
    start = next;
    next = __ldg(p.cu_seq_lens + b + 1);
  }
  seq = b;
  seq_start = start;
  return true;
}

//! The read's row stage: the cache row of output token `token`, or false when it reads nothing:
//! the lane is not `active`, a negative slot or a token in no sequence (left untouched), or a
//! row, page index or page-table entry out of range (left untouched and counted once a token, by
//! the thread that `counts`). Every lane of the warp calls it (the page table's sequence is the
//! warp's search: warp_sequence_of).
template <class P>
KVCAST_DEVICE bool resolve_read_row(const P& p, std::uint32_t token, bool active, bool counts, std::int64_t& row) {
  const auto skip_counted = [&]() {
    if (p.error_count && counts) atomicAdd(p.error_count, 1ull);
    return false;
  };
  if (p.block_table == nullptr) {
    if (!active) return false;
    const std::int64_t slot = load_slot(p, token);
    if (slot < 0) return false;
    if (slot < p.min_slot || slot > p.max_slot) return skip_counted();
    // In range, the true row fits int64; unsigned arithmetic keeps the intermediate defined.
    row = static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                    static_cast<std::uint64_t>(p.offset));
    return true;
  }
  const std::int32_t t = static_cast<std::int32_t>(token);
  std::uint32_t b;
  std::int32_t b_start;
  if (!warp_sequence_of(p, t, active, b, b_start)) return false;
  // Token j of the sequence (from its seq_starts), then its page and the page's entry.
  const std::int64_t j = (p.seq_starts ? std::int64_t{__ldg(p.seq_starts + b)} : std::int64_t{0}) + (t - b_start);
  if (j < 0 || j > std::int64_t{0xffffffff}) return skip_counted();
  const std::uint32_t j32 = static_cast<std::uint32_t>(j);
  const std::uint32_t page_index = p.page_size.div(j32);
  if (page_index >= p.max_pages) return skip_counted();
  const std::int32_t entry = __ldg(p.block_table + std::int64_t{b} * p.max_pages + page_index);
  if (entry < 0 || entry >= p.pages) return skip_counted();
  const std::uint32_t in_page = j32 - page_index * p.page_size.divisor();
  row = std::int64_t{entry} * p.page_size.divisor() + in_page;
  return true;
}

//! Converts and stores a thread's Vec values (from Vec / Format::kCodesPerByte code bytes) as
//! tile::Memory::load placed them: a whole vector in stores of up to kMaxVectorBytes of T,
//! otherwise an element each (those before `end`).
template <class Format, tile::Access A, class T, int Vec, int Bytes>
KVCAST_DEVICE void store_values(T* __restrict__ dst, std::uint32_t end, const Dequantizer<T, Format>& q,
                                const AlignedVector<std::uint8_t, Bytes>& codes) {
  using Walk = tile::Memory<std::uint32_t>;
  constexpr int kPiece = Vec * static_cast<int>(sizeof(T)) <= kMaxVectorBytes ? Vec : kMaxVectorBytes / static_cast<int>(sizeof(T));
  if constexpr (A == tile::Access::vector) {
    KVCAST_UNROLL
    for (int i = 0; i < Vec; i += kPiece) Walk::store_vector(dst + i, q.template values<kPiece>(codes, i));
  } else if constexpr (kPiece == Vec) {
    Walk::template store_elements<A>(dst, end, q.template values<Vec>(codes));
  } else {  // NVFP4's 16 fp32 values element by element: converted 8 at a time, one vector of T
    KVCAST_UNROLL
    for (int i = 0; i < Vec; i += kPiece) {
      const std::uint32_t skipped = i * Walk::template stride<A>();
      if (skipped < end) Walk::template store_elements<A>(dst + skipped, end - skipped, q.template values<kPiece>(codes, i));
    }
  }
}

//! Codes in one piece of a read thread's vector: as many as one 16-byte store of T takes
//! (kReadPieceBytes). A group's threads lay their pieces side by side, so that each warp-wide
//! store is one coalesced run; a vector of 16 codes stored whole (32 bytes of bf16) would leave
//! every store instruction half of each sector it touches. NVFP4's vectors stay whole (a block
//! and its one scale), and so do element-by-element (interleaved) ones, already coalesced.
template <class T, class Format, int Vec, tile::Access A>
KVCAST_HOST_DEVICE constexpr int read_piece() {
  constexpr int kWidest = kReadPieceBytes / static_cast<int>(sizeof(T));
  return A == tile::Access::vector && Format::kCodesPerByte == 1 && Vec > kWidest ? kWidest : Vec;
}

//! The place `offset` bytes into a cache, formed as an integer: a call without one of the tensors
//! has a null cache, whose places are never loaded and so must not be pointers past null.
KVCAST_DEVICE const std::uint8_t* code_place(const std::uint8_t* cache, std::int64_t offset) {
  return reinterpret_cast<const std::uint8_t*>(reinterpret_cast<std::uintptr_t>(cache) + static_cast<std::uintptr_t>(offset));
}

//! Loads a piece of codes where `pred`: vectors by one predicated instruction (no branch, so
//! that the thread's loads issue back to back), element by element through tile::Memory.
template <tile::Access A, int Bytes>
KVCAST_DEVICE void load_codes(const std::uint8_t* src, std::uint32_t end, bool pred, AlignedVector<std::uint8_t, Bytes>& codes) {
  if constexpr (A == tile::Access::vector) {
    codes.load_bytes_if(src, pred);
  } else {
    if (pred) tile::Memory<std::uint32_t>::template load<A>(src, end, codes);
  }
}

//! One thread's share of the read: block `bx` of segments, chunk `by` of each, cut as the
//! write's skeleton cuts them (write_chunk): a group of 2^log2_group threads a chunk, a thread
//! Vec codes laid out as `A` says, in Vec / read_piece() pieces: the thread's pieces are items
//! `by * pieces ..` of its group's walk in pieces, each a group's width from the last. Vectors
//! are whole (the planner takes one only where Vec divides the segment), and so are pieces, each
//! with its own bound; interleaved, each code has its own bound.
template <class T, class Format, class Scales, int Vec, tile::Access A>
KVCAST_DEVICE void read_chunk(const ReadParams<T, Scales>& p, const std::uint32_t bx, const std::uint32_t by) {
  using Walk = tile::Memory<std::uint32_t>;
  constexpr std::uint32_t kLog2Block = log2_ceil(kBlockSize);
  constexpr int kPiece = read_piece<T, Format, Vec, A>();
  constexpr int kPieces = Vec / kPiece;
  const std::uint32_t lg = p.log2_group;
  const std::uint32_t seg = (bx << (kLog2Block - lg)) + (threadIdx.x >> lg);
  const Walk group(threadIdx.x & ((1u << lg) - 1), 1u << lg);
  const std::uint32_t first = group.template first_element<A, kPiece>(by * kPieces);
  const bool active = seg < p.num_segments && first < p.seg_len;
  if (!active && p.block_table == nullptr) return;  // a page table's lanes search it together
  const std::uint32_t end = p.seg_len - first;  // elements from `first` to the segment's end
  const std::uint32_t piece_stride = kPiece << lg;
  // Whether piece i lies in the segment (the first does: the thread returned otherwise).
  const auto piece_in = [&](int i) { return i == 0 || i * piece_stride < end; };

  // locate
  const std::uint32_t token = p.segs_per_token.div(seg);
  const std::uint32_t head = seg - token * p.segs_per_token.divisor();

  // resolve: one thread a token counts a skipped row (its first segment's first element)
  std::int64_t row;
  if (!resolve_read_row(p, token, active, head == 0 && first == 0, row)) return;

  // load: the codes of both tensors (kPiece / kCodesPerByte bytes a piece: NVFP4 packs two a
  // byte), then the scales (and NVFP4's block scales)
  constexpr int kBytes = kPiece / Format::kCodesPerByte;
  const bool has_k = p.k_cache != nullptr;
  const bool has_v = p.v_cache != nullptr;
  const std::int64_t at = p.cache.row_address(row) + std::int64_t{head} * p.cache.head_stride + first / Format::kCodesPerByte;
  AlignedVector<std::uint8_t, kBytes> k_codes[kPieces], v_codes[kPieces];
  KVCAST_UNROLL
  for (int i = 0; i < kPieces; ++i)
    KVCAST_UNROLL
    for (int b = 0; b < kBytes; ++b) k_codes[i][b] = v_codes[i][b] = 0;  // codes not loaded: converted, never stored
  KVCAST_UNROLL
  for (int i = 0; i < kPieces; ++i) {
    load_codes<A>(code_place(p.k_cache, at + i * piece_stride), end - i * piece_stride, has_k && piece_in(i), k_codes[i]);
    load_codes<A>(code_place(p.v_cache, at + i * piece_stride), end - i * piece_stride, has_v && piece_in(i), v_codes[i]);
  }
  const float2 scales = Scales::load_row(p.scales, row, head);

  // convert and store
  const std::int64_t out_at = std::int64_t{token} * p.out_token_stride + std::int64_t{head} * p.out_head_stride + first;
  if constexpr (Scales::kBlockScaled) {  // NVFP4 (one piece): each tensor's block scale too
    const std::uint32_t sf = Scales::load_block_scales(p.scales, row, head, first, has_k, has_v);  // K's in the low byte
    if (has_k) store_values<Format, A, T, Vec>(p.k_out + out_at, end, Dequantizer<T, Format>(scales.x, sf & 0xffu), k_codes[0]);
    if (has_v) store_values<Format, A, T, Vec>(p.v_out + out_at, end, Dequantizer<T, Format>(scales.y, sf >> 8), v_codes[0]);
  } else {
    KVCAST_UNROLL
    for (int i = 0; i < kPieces; ++i)
      if (has_k && piece_in(i))
        store_values<Format, A, T, kPiece>(p.k_out + out_at + i * piece_stride, end - i * piece_stride, Dequantizer<T, Format>(scales.x),
                                           k_codes[i]);
    KVCAST_UNROLL
    for (int i = 0; i < kPieces; ++i)
      if (has_v && piece_in(i))
        store_values<Format, A, T, kPiece>(p.v_out + out_at + i * piece_stride, end - i * piece_stride, Dequantizer<T, Format>(scales.y),
                                           v_codes[i]);
  }
}

//! The read kernel: read_chunk for the CTA's place in the grid (x: blocks of segments, y: chunks;
//! or the other way round, GridOrder::chunks_first).
template <class T, class Format, class Scales, int Vec, tile::Access A>
__global__ void __launch_bounds__(kBlockSize) read_kernel(const __grid_constant__ ReadParams<T, Scales> p) {
  pdl_wait_then_release();
  const bool chunks_first = p.chunks_first != 0;
  read_chunk<T, Format, Scales, Vec, A>(p, chunks_first ? blockIdx.y : blockIdx.x, chunks_first ? blockIdx.x : blockIdx.y);
}

//! One tensor's values of a row-warp read, from its lane's pieces and side vector: piece i at
//! `dst + i * kLanes * Piece + lane * Piece` (one 16-byte store of T), the side vector at
//! `dst + kLanes * Pieces * Piece + lane * Side`.
template <class T, class Format, int Piece, int Pieces, int Side>
KVCAST_DEVICE void store_row_warp(T* __restrict__ dst, std::uint32_t lane, const Dequantizer<T, Format>& q,
                                  const AlignedVector<std::uint8_t, Piece> (&codes)[Pieces], const AlignedVector<std::uint8_t, Side>& side) {
  using Walk = tile::Memory<std::uint32_t>;
  KVCAST_UNROLL
  for (int i = 0; i < Pieces; ++i) Walk::store_vector(dst + i * kLanes * Piece + lane * Piece, q.template values<Piece>(codes[i]));
  std::uint16_t side_codes;
  memcpy(&side_codes, &side, sizeof side_codes);
  const typename PairOf<T>::type pair = q.pair(side_codes);
  AlignedVector<T, Side> side_values;
  memcpy(static_cast<void*>(&side_values), &pair, sizeof side_values);
  Walk::store_vector(dst + kLanes * Pieces * Piece + lane * Side, side_values);
}

//! The read of a segment of kLanes * (Vec + Side) fp8 codes (576: one MLA head) by one warp.
//! Power-of-two groups cut such a row into chunks (9 of 64 codes), each of which loads the slot
//! (or walks the page table) again and moves 64 codes; here the warp resolves the row once and
//! every lane takes Vec codes, in pieces of one 16-byte store of T laid side by side across the
//! warp (piece i of lane l at code i * kLanes * Piece + l * Piece), and a side vector of Side
//! codes at kLanes * Vec + l * Side: every access one coalesced run, no lane idle. The stages
//! are read_chunk's. Whole pieces and side vectors: the planner takes this kernel only where
//! every pointer and stride allows them (choose_read_kernel).
template <class T, class Format, class Scales, int Vec, int Side>
__global__ void __launch_bounds__(kBlockSize) read_row_warp_kernel(const __grid_constant__ ReadParams<T, Scales> p) {
  constexpr int kPiece = read_piece<T, Format, Vec, tile::Access::vector>();
  constexpr int kPieces = Vec / kPiece;
  static_assert(Format::kCodesPerByte == 1 && !Scales::kBlockScaled && Side == 2 && kPieces * kPiece == Vec,
                "read_row_warp_kernel: fp8 codes, whole pieces, a side vector of one pair.");
  pdl_wait_then_release();
  const std::uint32_t lane = lane_id();
  const std::uint32_t seg = blockIdx.x * (kBlockSize / kLanes) + threadIdx.x / kLanes;
  if (seg >= p.num_segments) return;  // the whole warp: it holds the segment

  // locate
  const std::uint32_t token = p.segs_per_token.div(seg);
  const std::uint32_t head = seg - token * p.segs_per_token.divisor();

  // resolve: every lane (a page table's search is the warp's); lane 0 of head 0 counts a skip
  std::int64_t row;
  if (!resolve_read_row(p, token, true, head == 0 && lane == 0, row)) return;

  // load: K's and V's pieces and side vectors, then the scales
  const bool has_k = p.k_cache != nullptr;
  const bool has_v = p.v_cache != nullptr;
  const std::int64_t at = p.cache.row_address(row) + std::int64_t{head} * p.cache.head_stride;
  const std::uint32_t side_first = kLanes * Vec + lane * Side;
  AlignedVector<std::uint8_t, kPiece> k_codes[kPieces] = {}, v_codes[kPieces] = {};  // a tensor not loaded is never stored
  AlignedVector<std::uint8_t, Side> k_side = {}, v_side = {};
  KVCAST_UNROLL
  for (int i = 0; i < kPieces; ++i) {
    const std::uint32_t first = i * kLanes * kPiece + lane * kPiece;
    k_codes[i].load_bytes_if(code_place(p.k_cache, at + first), has_k);
    v_codes[i].load_bytes_if(code_place(p.v_cache, at + first), has_v);
  }
  k_side.load_bytes_if(code_place(p.k_cache, at + side_first), has_k);
  v_side.load_bytes_if(code_place(p.v_cache, at + side_first), has_v);
  const float2 scales = Scales::load_row(p.scales, row, head);

  // convert and store
  const std::int64_t out_at = std::int64_t{token} * p.out_token_stride + std::int64_t{head} * p.out_head_stride;
  if (has_k) store_row_warp<T, Format>(p.k_out + out_at, lane, Dequantizer<T, Format>(scales.x), k_codes, k_side);
  if (has_v) store_row_warp<T, Format>(p.v_out + out_at, lane, Dequantizer<T, Format>(scales.y), v_codes, v_side);
}

}  // namespace detail
}  // namespace kvcast
