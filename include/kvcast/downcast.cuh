// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file downcast.cuh
//! The downcast kernel. It holds no policy: the host launcher (launch.cuh) validates the call,
//! picks the vector shape and fills DowncastParams; the kernel only moves bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "config.cuh"
#include "fp8.cuh"
#include "layout.cuh"
#include "plan.hpp"
#include "tile.cuh"
#include "vec.cuh"

namespace kvcast {
namespace detail {

//! Everything the kernel reads, passed by value as a `__grid_constant__` parameter. Ordered by
//! first use, and packed so that everything but the error counter fits in the first 176 bytes:
//! the three constant-cache lines they span (from offset 0x210) are all touched by the
//! prologue, so the store side never waits for a line after its loads have returned.
template <class T>
struct DowncastParams {
  // To find the thread's work and issue its loads. 32-bit where make_plan bounds the value:
  // segments <= 2^31 - 1, a segment <= 2^24 elements.
  std::uint32_t log2_group;
  std::uint32_t num_segments;
  std::uint32_t seg_len;
  std::uint32_t full_items;  //!< vectors of Vec elements per segment; a partial one may follow
  FastDivmod segs_per_token;
  std::uint32_t loc_is_int32;
  const T* k;
  const T* v;
  std::int64_t in_token_stride;
  std::int64_t in_head_stride;
  const void* loc;
  const float* k_scale_ptr;
  const float* v_scale_ptr;
  float k_scale;
  float v_scale;
  // To decide and place the stores.
  std::int64_t min_slot;
  std::int64_t max_slot;
  std::int64_t mult;    //!< dense plans: times the row stride (launch), so the row is a byte offset
  std::int64_t offset;  //!< likewise
  OutputLayout out;
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  unsigned long long* error_count;  //!< only on the rare out-of-range path
};
static_assert(offsetof(DowncastParams<float>, error_count) == 176, "DowncastParams: keep the hot fields in 176 bytes");

//! Token `token`'s slot: `loc[token]` (int64 or int32), or the token itself without loc. Two
//! predicated loads rather than a branch, which would hold back the loads issued before it.
template <class T>
KVCAST_DEVICE std::int64_t load_slot(const DowncastParams<T>& p, std::uint32_t token) {
  long long slot64 = token;
  std::int32_t slot32 = static_cast<std::int32_t>(token);
  const bool loc32 = p.loc && p.loc_is_int32;
  if (p.loc && !p.loc_is_int32) slot64 = __ldg(static_cast<const long long*>(p.loc) + token);
  if (loc32) slot32 = __ldg(static_cast<const std::int32_t*>(p.loc) + token);
  return loc32 ? std::int64_t{slot32} : std::int64_t{slot64};
}

//! The output row of an in-range slot: `slot * mult + offset`; for a dense plan, whose launch
//! scales mult and offset by the row stride, the row's byte offset in the output. In range, the
//! true value fits int64; unsigned arithmetic keeps the intermediate defined.
template <class T>
KVCAST_DEVICE std::int64_t row_of_slot(const DowncastParams<T>& p, std::int64_t slot) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                   static_cast<std::uint64_t>(p.offset));
}

//! K's and V's scales: each from device memory (read at every launch, so a graph replays the
//! current value) or the host value passed by the launch.
template <class T>
KVCAST_DEVICE float2 load_scales(const DowncastParams<T>& p) {
  return make_float2(p.k_scale_ptr ? __ldg(p.k_scale_ptr) : p.k_scale, p.v_scale_ptr ? __ldg(p.v_scale_ptr) : p.v_scale);
}

//! Programmatic dependent launch: no-ops unless the launch asked for it. Waits for the kernel
//! before this one (it may write K, V, loc or the scales), then lets the next one start
//! launching.
KVCAST_DEVICE void pdl_wait_then_release() {
#if KVCAST_HAS_PDL
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

//! Lanes of a warp: the interleave of element-by-element accesses.
constexpr std::uint32_t kLanes = 32;
//! Widest vector whose K and V codes the dense kernel computes at once in fp32 mode (measured
//! on the H100: 2-4% faster at decode sizes, up to 6% at mid sizes; 16-element vectors need
//! the registers of one tensor at a time, see downcast_block).
constexpr int kBothAtOnce = 8;

//! A thread's Vec elements. Access == Vec: one aligned vector at `src`, one access. Access ==
//! 1 serves pointers and strides that allow no vector: element i is at `src[i * stride]` (the
//! warp's lanes interleave, so every warp-wide access is one coalesced run; `stride` is the
//! constant kLanes, so each access is an immediate offset from one address), and only the
//! elements before `end` (counted from src) exist; the others stay as they were.
template <class T, int Vec, int Access>
KVCAST_DEVICE void load_vector(const T* __restrict__ src, std::uint32_t stride, std::uint32_t end, AlignedVector<T, Vec>& v) {
  if constexpr (Access == Vec) {
    v.load(src);
  } else {
    static_assert(Access == 1, "load_vector: vectors are accessed whole or element by element.");
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i)
      if (i * stride < end) v[i] = src[i * stride];
  }
}

//! Stores a whole vector's packed codes at `dst`: one access of N bytes.
template <int N>
KVCAST_DEVICE void store_codes(std::uint8_t* __restrict__ dst, const typename PackedCodes<N>::type& codes) {
  codes.store(reinterpret_cast<typename PackedCodes<N>::type::value_type*>(dst));
}

//! Quantizes and stores a thread's Vec elements, as load_vector placed them. A whole vector
//! goes as its packed codes (one access of Vec bytes).
template <int Access, class T, class Format, Arithmetic Mode, int Vec>
KVCAST_DEVICE void store_vector(std::uint8_t* __restrict__ dst, std::uint32_t stride, std::uint32_t end,
                                const Quantizer<T, Format, Mode>& q, const AlignedVector<T, Vec>& v) {
  if constexpr (Access == Vec) {
    store_codes<Vec>(dst, quantize_packed(q, v));
  } else {
    const AlignedVector<std::uint8_t, Vec> codes = quantize(q, v);
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i)
      if (i * stride < end) dst[i * stride] = codes[i];
  }
}

//! The partial last vector of a segment, element by element. Out of line, so that the main
//! path's instructions stay contiguous (a decode step fetches them cold). A null
//! output skips its tensor.
template <class T, class Format, Arithmetic Mode>
KVCAST_DEVICE_NOINLINE void quantize_tail(const T* k_in, const T* v_in, std::uint8_t* k_out, std::uint8_t* v_out,
                                          std::uint32_t count, float k_scale, float v_scale) {
  const Quantizer<T, Format, Mode> qk(k_scale);
  const Quantizer<T, Format, Mode> qv(v_scale);
#pragma unroll 1
  for (std::uint32_t e = 0; e < count; ++e) {
    if (k_out) k_out[e] = qk(k_in[e]);
    if (v_out) v_out[e] = qv(v_in[e]);
  }
}

//! One CTA's work: block `bx` of segments, chunk `by` of each, one vector per thread. A
//! segment (a token's row, or one head of it) is cut into chunks of 2^log2_group vectors, one
//! chunk per group of threads, so that a single long row spreads over several CTAs
//! (tile::Memory indexing: vector `chunk * G + rank`). The prologue is short and 32-bit, and
//! every load the thread needs — slot, K, V, scales — is issued before any of them is used, so
//! a decode step pays one memory latency. The main path is straight-line code; the tail of a
//! segment whose length Vec does not divide is done element by element, out of line. Where no
//! vector access is legal (Access == 1) each warp of a group takes a run of kLanes * Vec
//! elements of the chunk, its lanes interleaved, kLanes apart, each element with its own bound
//! (make_plan gives such calls groups of at least a warp).
//!
//! Dense: the common serving call (a token's heads fused into one segment, a flat output, K
//! and V both given; Plan::dense). Its kernel knows the head is 0, the row needs no page
//! split and no pointer is null, which takes a third of the instructions off the path to the
//! loads and the stores: a decode step is nothing but that path.
template <class T, class Format, Arithmetic Mode, int Vec, int Access, bool Dense, int BlockSize>
KVCAST_DEVICE void downcast_block(const DowncastParams<T>& p, const std::uint32_t bx, const std::uint32_t by) {
  // 2^(log2(BlockSize) - log2_group) segments per CTA. No sum here can wrap: segments < 2^31,
  // and a CTA's count past the last segment is below BlockSize.
  constexpr std::uint32_t kLog2Block = log2_ceil(BlockSize);
  const std::uint32_t lg = p.log2_group;
  const std::uint32_t seg = (bx << (kLog2Block - lg)) + (threadIdx.x >> lg);
  const tile::Memory<AlignedVector<T, Vec>, std::uint32_t> walk(threadIdx.x & ((1u << lg) - 1), 1u << lg);
  const std::uint32_t j = walk.index(by);  // this thread's vector in the segment
  // Its first element: vector j (Access == Vec), or, element by element, lane `rank % kLanes`
  // of its warp's run in the chunk, with the next elements `stride` apart.
  const std::uint32_t first = Access == Vec ? j * Vec
                                            : by * (walk.size() * Vec) + (walk.rank() / kLanes) * (kLanes * Vec) +
                                                  walk.rank() % kLanes;
  constexpr std::uint32_t stride = Access == Vec ? 1u : kLanes;
  if (seg >= p.num_segments || first >= p.seg_len) return;  // past the last segment or row end
  const std::uint32_t end = p.seg_len - first;  // elements from `first` to the end of the segment
  const std::uint32_t token = Dense ? seg : p.segs_per_token.div(seg);
  const std::uint32_t head = Dense ? 0u : seg - token * p.segs_per_token.divisor();
  // Which tensors the call has (make_plan: a tensor and its output are null together).
  const bool has_k = Dense || p.k != nullptr;
  const bool has_v = Dense || p.v != nullptr;

  // Loads first: K and V (the bulk of the bytes), then the slot and the scales.
  const std::int64_t in_base = Dense ? token * p.in_token_stride : token * p.in_token_stride + head * p.in_head_stride;
  const T* __restrict__ k_in = p.k + in_base + first;  // not dereferenced when p.k is null
  const T* __restrict__ v_in = p.v + in_base + first;
  // Element by element there is no partial vector: each element has its own bound.
  const bool full = Access == 1 || j < p.full_items;
  AlignedVector<T, Vec> k_vec, v_vec;
  if (full && has_k) load_vector<T, Vec, Access>(k_in, stride, end, k_vec);
  if (full && has_v) load_vector<T, Vec, Access>(v_in, stride, end, v_vec);
  const std::int64_t slot = load_slot(p, token);
  const std::int64_t out_in_row = Dense ? std::int64_t{first} : head * p.out.head_stride + first;  // the part the slot does not decide
  const float2 scales = load_scales(p);
  const float k_scale = scales.x, v_scale = scales.y;

  // Then the slot decides.
  if (slot < 0) return;  // padding token
  if (slot < p.min_slot || slot > p.max_slot) {
    if (p.error_count && head == 0 && j == 0) atomicAdd(p.error_count, 1ull);  // once per token
    return;
  }
  const std::int64_t row = row_of_slot(p, slot);
  // = out.address(row, head) + first; a dense call's row is already a byte offset (launch).
  const std::int64_t out_base = (Dense ? row : p.out.row_address(row)) + out_in_row;
  std::uint8_t* __restrict__ k_out = p.k_out + out_base;  // written only when the call has K
  std::uint8_t* __restrict__ v_out = p.v_out + out_base;
  if (!full) {
    quantize_tail<T, Format, Mode>(k_in, v_in, has_k ? k_out : nullptr, has_v ? v_out : nullptr, end, k_scale, v_scale);
    return;
  }
  const Quantizer<T, Format, Mode> qk(k_scale);
  const Quantizer<T, Format, Mode> qv(v_scale);
  if constexpr (Mode == Arithmetic::fp32 && Dense && Access == Vec && Vec <= kBothAtOnce) {
    // Short vectors (decode and mid-size calls) in fp32 mode: K's and V's codes at once, stored
    // as soon as they are bracketed; the rare vector whose brackets disagree is stored again,
    // exactly, after the one check for both.
    store_codes_of_two(qk, k_vec, qv, v_vec, [&](int tensor, const typename PackedCodes<Vec>::type& codes) {
      store_codes<Vec>(tensor == 0 ? k_out : v_out, codes);
    });
    return;
  }
  // One tensor after the other, so that K's registers are free before V's conversion needs
  // them (converting both at once costs occupancy on the widest vectors).
  if (has_k) store_vector<Access>(k_out, stride, end, qk, k_vec);
  if (has_v) store_vector<Access>(v_out, stride, end, qv, v_vec);
}

//! The downcast kernel: downcast_block for the CTA's place in the grid.
template <class T, class Format, Arithmetic Mode, int Vec, int Access, bool Dense, int BlockSize, bool ChunksFirst>
__global__ void __launch_bounds__(BlockSize) downcast_kernel(const __grid_constant__ DowncastParams<T> p) {
  static_assert(BlockSize >= 32 && BlockSize <= 1024 && (BlockSize & (BlockSize - 1)) == 0,
                "downcast_kernel: BlockSize must be a power of two from 32 to 1024.");
  static_assert(Vec >= 2 && Vec * sizeof(T) <= 32, "downcast_kernel: a vector holds 2 elements up to 32 bytes of input.");
  static_assert(Access == Vec || Access == 1, "downcast_kernel: vectors are accessed whole or element by element.");
  pdl_wait_then_release();
  // Grid: x walks the blocks of segments and y their chunks; ChunksFirst (Plan::chunks_first,
  // large calls) swaps them, so that CTAs dispatched one after the other cover a row from its
  // start to its end.
  if constexpr (ChunksFirst)
    downcast_block<T, Format, Mode, Vec, Access, Dense, BlockSize>(p, blockIdx.y, blockIdx.x);
  else
    downcast_block<T, Format, Mode, Vec, Access, Dense, BlockSize>(p, blockIdx.x, blockIdx.y);
}

//! Elements a lane of the realigned kernel converts: 16 of a 16-bit input, two 16-byte loads.
constexpr int kRealignVec = 16;
static_assert(kRealignRun == kLanes * kRealignVec, "downcast_realigned_kernel: a run is a warp's 16 elements a lane.");
//! Warps (rows) a CTA of the realigned kernel.
constexpr std::uint32_t kRealignWarps = 8;

//! One tensor of a realigned run: the 16 elements of lane `lane` (those of the row's range
//! [cs, ce) only; the others read as zero), loaded before the slot is known.
//! `rs` is the run's first element, relative to the row, at a 16-byte boundary of the input
//! (at most 7 elements before the row's start). Whole 16-byte halves are loaded when they hold
//! an element of the range; `whole` is false for a tensor's first and last rows, whose halves
//! may reach past the tensor, and whose elements are then loaded one at a time.
template <class T>
KVCAST_DEVICE void load_realigned(const T* __restrict__ row, std::int32_t rs, std::int32_t cs, std::int32_t ce, bool whole,
                                  AlignedVector<T, kRealignVec>& v) {
  constexpr int kHalf = kRealignVec / 2;
  const std::int32_t first = rs + static_cast<std::int32_t>((threadIdx.x % kLanes) * kRealignVec);
  // Both ways end in whole 32-bit words, so that the vector reaches the conversion as the words
  // it was loaded in (joined element by element, the compiler would take every word apart and
  // put it back together).
  std::uint32_t words[kRealignVec / 2];
  if (whole) {
    KVCAST_UNROLL
    for (int h = 0; h < 2; ++h) {
      const std::int32_t e = first + h * kHalf;
      uint4 half = make_uint4(0, 0, 0, 0);
      if (e < ce && e + kHalf > cs) half = *reinterpret_cast<const uint4*>(row + e);
      words[4 * h] = half.x, words[4 * h + 1] = half.y, words[4 * h + 2] = half.z, words[4 * h + 3] = half.w;
    }
  } else {
    const auto bits = [&](std::int32_t e) -> std::uint32_t {  // element e's bits, 0 outside [cs, ce)
      if (e < cs || e >= ce) return 0u;
      const T x = row[e];
      std::uint16_t b;
      memcpy(&b, &x, sizeof b);
      return b;
    };
    KVCAST_UNROLL
    for (int i = 0; i < kRealignVec; i += 2) words[i / 2] = bits(first + i) | bits(first + i + 1) << 16;
  }
  static_assert(sizeof words == sizeof v, "load_realigned: eight words make the vector.");
  memcpy(&v, words, sizeof v);
}

//! Stores one tensor's codes of a realigned run (`codes`: this lane's 16 elements, in input
//! alignment) at `out` (the row's first byte). With the output's 16-byte boundaries at elements
//! `d` (mod 16) of the run, each lane joins its left neighbour's codes from there to its own up
//! to there: one whole, aligned 16-byte block, stored when it lies inside [cs, ce). The at most
//! 15 bytes at each end of the range that fill no whole block go one byte a lane: lanes 0-15
//! the head, 16-31 the tail, each fetching its byte's word from the lane that converted it.
//! Every lane of the warp takes part (the shuffles).
KVCAST_DEVICE void store_realigned(std::uint8_t* __restrict__ out, std::int32_t rs, std::int32_t cs, std::int32_t ce,
                                   const typename PackedCodes<kRealignVec>::type& codes) {
  constexpr unsigned kAll = 0xffffffffu;
  const std::int32_t lane = static_cast<std::int32_t>(threadIdx.x % kLanes);
  const std::int32_t h = static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(out) % 16);
  const std::int32_t d = -(h + rs) & 15;  // run elements before the first output boundary
  std::uint32_t prev[4];
  KVCAST_UNROLL
  for (int w = 0; w < 4; ++w) prev[w] = __shfl_up_sync(kAll, codes[w], 1);
  // The block from element rs + 16 lane + d - 16 (d > 0: the left neighbour's codes from d on,
  // then this lane's up to d), or this lane's own codes (d == 0).
  const std::int32_t start = rs + 16 * lane + (d == 0 ? 0 : d - 16);
  if (start >= cs && start + 16 <= ce) {
    typename PackedCodes<kRealignVec>::type block;
    if (d == 0) {
      block = codes;
    } else {
      // Bytes d .. d + 15 of (prev, codes): d / 4 picks the words, the same for the whole warp.
      const std::uint32_t bits = 8u * static_cast<std::uint32_t>(d % 4);
      const std::uint32_t all[8] = {prev[0], prev[1], prev[2], prev[3], codes[0], codes[1], codes[2], codes[3]};
      switch (d / 4) {
#define KVCAST_REALIGN_CASE(q)                                                              \
  case q:                                                                                   \
    KVCAST_UNROLL                                                                           \
    for (int w = 0; w < 4; ++w) block[w] = __funnelshift_r(all[q + w], all[q + w + 1], bits); \
    break;
        KVCAST_REALIGN_CASE(0)
        KVCAST_REALIGN_CASE(1)
        KVCAST_REALIGN_CASE(2)
        default:
          KVCAST_REALIGN_CASE(3)
#undef KVCAST_REALIGN_CASE
      }
    }
    store_codes<kRealignVec>(out + start, block);
  }
  // The ends: [cs, head_end) before the first whole block, [tail, ce) after the last.
  const std::int32_t first_block = cs + (-(h + cs) & 15);
  const std::int32_t head_end = first_block < ce ? first_block : ce;
  const std::int32_t last_block_end = ce - ((h + ce) & 15);
  const std::int32_t tail = last_block_end > head_end ? last_block_end : head_end;
  const std::int32_t e = lane < 16 ? cs + lane : tail + lane - 16;
  const bool mine = lane < 16 ? e < head_end : e < ce;
  const std::int32_t from = mine ? e - rs : 0;  // in [0, kRealignRun): the run holds [cs, ce)
  std::uint32_t word[4];
  KVCAST_UNROLL
  for (int w = 0; w < 4; ++w) word[w] = __shfl_sync(kAll, codes[w], from / 16);
  const int b = from % 16;
  const std::uint32_t x = b < 8 ? (b < 4 ? word[0] : word[1]) : (b < 12 ? word[2] : word[3]);
  if (mine) out[e] = static_cast<std::uint8_t>(x >> (8 * (b % 4)));
}

//! Realigned rows: the dense call (Plan::dense) of 16-bit inputs whose rows allow no vector
//! access (an odd row length or stride, a misaligned pointer), above kSmallCall elements a
//! tensor (Plan::realign). A warp takes a run of kRealignRun elements of a row, starting at a
//! 16-byte boundary of its input: lane L loads its 16 elements with two 16-byte loads, before
//! the slot is known, and converts them. Once the slot gives the output row, store_realigned
//! moves the codes to the output's 16-byte boundaries (a shuffle and a funnel shift a word) and
//! stores whole blocks, and the run's ends a byte a lane. Grid: x walks groups of
//! kRealignWarps rows, y the runs of a row.
template <class T, class Format, Arithmetic Mode>
__global__ void __launch_bounds__(kRealignWarps * kLanes) downcast_realigned_kernel(const __grid_constant__ DowncastParams<T> p) {
  static_assert(sizeof(T) == 2, "downcast_realigned_kernel: 16-bit inputs (16 elements, two 16-byte loads a lane).");
  pdl_wait_then_release();
  const std::uint32_t token = blockIdx.x * kRealignWarps + threadIdx.x / kLanes;  // dense: a segment is a token
  if (token >= p.num_segments) return;  // the whole warp: it shares the token
  const std::int32_t n = static_cast<std::int32_t>(p.seg_len);
  const std::int32_t run = static_cast<std::int32_t>(blockIdx.y * kRealignRun);  // grid y: Plan::chunks_per_seg
  const T* __restrict__ k_row = p.k + token * p.in_token_stride;
  const T* __restrict__ v_row = p.v + token * p.in_token_stride;
  // Each tensor's run starts at the 16-byte boundary at or before element `run` of its row.
  const std::int32_t k_rs = run - static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(k_row) % 16 / sizeof(T));
  const std::int32_t v_rs = run - static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(v_row) % 16 / sizeof(T));
  const auto clamp = [n](std::int32_t x) { return x < 0 ? 0 : x > n ? n : x; };
  const std::int32_t k_cs = clamp(k_rs), k_ce = clamp(k_rs + static_cast<std::int32_t>(kRealignRun));
  const std::int32_t v_cs = clamp(v_rs), v_ce = clamp(v_rs + static_cast<std::int32_t>(kRealignRun));
  // A tensor's first and last rows may sit at its ends: their halves could reach past it.
  const bool whole = token != 0 && token + 1 != p.num_segments;
  AlignedVector<T, kRealignVec> k_vec, v_vec;
  load_realigned(k_row, k_rs, k_cs, k_ce, whole, k_vec);
  load_realigned(v_row, v_rs, v_cs, v_ce, whole, v_vec);
  const std::int64_t slot = load_slot(p, token);
  const float2 scales = load_scales(p);
  const float k_scale = scales.x, v_scale = scales.y;

  if (slot < 0) return;  // padding token (the whole warp)
  if (slot < p.min_slot || slot > p.max_slot) {
    if (p.error_count && blockIdx.y == 0 && threadIdx.x % kLanes == 0) atomicAdd(p.error_count, 1ull);  // once per token
    return;
  }
  const std::int64_t out_base = row_of_slot(p, slot);  // dense: the row's byte offset (launch)
  const Quantizer<T, Format, Mode> qk(k_scale);
  const Quantizer<T, Format, Mode> qv(v_scale);
  // The vectors hold whole words (load_realigned): fp32 mode takes each pair's floats from its word.
  store_realigned(p.k_out + out_base, k_rs, k_cs, k_ce, quantize_packed<true>(qk, k_vec));
  store_realigned(p.v_out + out_base, v_rs, v_cs, v_ce, quantize_packed<true>(qv, v_vec));
}

}  // namespace detail
}  // namespace kvcast
