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
  std::int64_t mult;
  std::int64_t offset;
  OutputLayout out;
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  unsigned long long* error_count;  //!< only on the rare out-of-range path
};
static_assert(offsetof(DowncastParams<float>, error_count) == 176, "DowncastParams: keep the hot fields in 176 bytes");

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
  // Two predicated loads rather than a branch, which would hold the K/V loads back behind it.
  long long slot64 = token;
  std::int32_t slot32 = static_cast<std::int32_t>(token);
  const bool loc32 = p.loc && p.loc_is_int32;
  if (p.loc && !p.loc_is_int32) slot64 = __ldg(static_cast<const long long*>(p.loc) + token);
  if (loc32) slot32 = __ldg(static_cast<const std::int32_t*>(p.loc) + token);
  const std::int64_t slot = loc32 ? std::int64_t{slot32} : std::int64_t{slot64};
  const std::int64_t out_in_row = Dense ? std::int64_t{first} : head * p.out.head_stride + first;  // the part the slot does not decide
  const float k_scale = p.k_scale_ptr ? __ldg(p.k_scale_ptr) : p.k_scale;
  const float v_scale = p.v_scale_ptr ? __ldg(p.v_scale_ptr) : p.v_scale;

  // Then the slot decides.
  if (slot < 0) return;  // padding token
  if (slot < p.min_slot || slot > p.max_slot) {
    if (p.error_count && head == 0 && j == 0) atomicAdd(p.error_count, 1ull);  // once per token
    return;
  }
  // In range, so the true row fits int64; unsigned arithmetic keeps the intermediate defined.
  const std::int64_t row = static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                                     static_cast<std::uint64_t>(p.offset));
  // = out.address(row, head) + first; a flat row is row * block_stride.
  const std::int64_t out_base = (Dense ? row * p.out.block_stride : p.out.row_address(row)) + out_in_row;
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
#if KVCAST_HAS_PDL
  // Programmatic dependent launch: no-ops unless the launch asked for it. Wait for the kernel
  // before us (it may write K, V, loc or the scales), then let the next one start launching.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  // Grid: x walks the blocks of segments and y their chunks; ChunksFirst (Plan::chunks_first,
  // large calls) swaps them, so that CTAs dispatched one after the other cover a row from its
  // start to its end.
  if constexpr (ChunksFirst)
    downcast_block<T, Format, Mode, Vec, Access, Dense, BlockSize>(p, blockIdx.y, blockIdx.x);
  else
    downcast_block<T, Format, Mode, Vec, Access, Dense, BlockSize>(p, blockIdx.x, blockIdx.y);
}

}  // namespace detail
}  // namespace kvcast
