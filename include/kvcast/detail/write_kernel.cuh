// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/write_kernel.cuh
//! The write skeleton and its kernels. A kernel holds no policy of its own: the planner
//! (detail/plan.hpp) decides, dispatch (detail/dispatch.cuh) fills WriteParams and launches.
//! Each thread goes through the same stages, in this order:
//!
//!   locate   (layout policy)   which token and head its segment is
//!   load     (tile::Memory)    its K and V vectors, then the token's slot and the scales
//!   scale    (scale policy)    loaded, or computed from the row-head's amax (a group reduction)
//!   resolve  (slot stage)      padding and out-of-range slots write nothing; else the row
//!   convert  (code policy)     codes from the vectors and the scales
//!   store    (tile::Memory)    at the row's place, as the layout policy gives it (and a
//!                              computed scale at its own)
//!
//! and, where the call asks for amax, before the conversion a reduction over each warp and one
//! atomic a warp and tensor (where it raises the value, in large grids).
//!
//! Every load is issued before any is used, so that a decode step pays one memory latency.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "../layout.hpp"
#include "../policy.cuh"
#include "../tile.cuh"
#include "../vec.cuh"
#include "amax.cuh"
#include "fast_divmod.hpp"
#include "geometry.hpp"

namespace kvcast {
namespace detail {

//! Everything a write kernel reads (but the lean row-head warp, whose parameters are its own:
//! RowHeadLeanParams), passed by value as a `__grid_constant__` parameter. Ordered
//! by first use, and packed so that everything but the error counter fits in the first 176
//! bytes: the three constant-cache lines they span are all touched by the prologue, so the
//! store side never waits for a line after its loads have returned.
template <class T, class Scales>
struct WriteParams {
  // To find the thread's work and issue its loads. 32-bit where the planner bounds the value:
  // segments <= 2^31 - 1, a segment <= 2^24 elements.
  //! Threads that walk a chunk, log2; the lean amax write: a head's elements, log2 (a row's element
  //! e is in head e >> log2_group; 31 where the call has one scale a tensor, or one head).
  std::uint32_t log2_group;
  std::uint32_t num_segments;
  std::uint32_t seg_len;
  std::uint32_t chunks_first;  //!< GridOrder::chunks_first: grid x walks the chunks, y the segments
  //! LayoutRows: segments a token (a segment's token and head are seg / split and seg % split);
  //! DenseRows: head_dim (a fused row's element e is in head e / split).
  FastDivmod split;
  std::uint32_t loc_is_int32;
  const T* k;
  const T* v;
  std::int64_t in_token_stride;
  std::int64_t in_head_stride;
  const void* loc;
  // Where the stores go: ahead of the scale parameters, whose size depends on the policy, so
  // that they stay in the first three lines for every policy.
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  typename Scales::Params scales;
  // To decide and place the stores.
  std::int64_t min_slot;
  std::int64_t max_slot;
  std::int64_t mult;    //!< DenseRows (kRowsFolded): times the row stride (dispatch), so the row is a byte offset
  std::int64_t offset;  //!< likewise
  OutputLayout out;
  unsigned long long* error_count;  //!< only on the rare out-of-range path

  //! DenseRows: dispatch folds the row stride into mult and offset, unless the scale policy
  //! stores a computed scale at the row (which needs the row itself).
  static constexpr bool kRowsFolded = !Scales::kFromRowHead;
};
using PerTensorWriteParams = WriteParams<float, PerTensorScale>;
static_assert(offsetof(PerTensorWriteParams, error_count) == 176, "WriteParams: keep the hot fields in 176 bytes.");

// ---- Layout policies of the write kernels: where a segment's input and output are. ----------

//! The dense serving call (heads fused into one segment, flat rows, K and V both given): the
//! head is 0, the row needs no page split, no pointer is null, and dispatch folds the row stride
//! into mult and offset, so a slot's row is already its byte offset. A decode step is nothing
//! but the path from the loads to the stores, and this takes a third of its instructions off.
//! Scales of each head fuse here too, each vector in one head: its scale is its first element's
//! head's, and a row-head reduced for its scale is a power-of-two group of the row's threads.
struct DenseRows {
  static constexpr bool kBothTensors = true;
  template <class P>
  KVCAST_DEVICE static void locate(const P&, std::uint32_t seg, std::uint32_t& token, std::uint32_t& head) {
    token = seg;
    head = 0;
  }
  //! The head whose scale the vector starting at element `first` of the segment takes.
  template <class P>
  KVCAST_DEVICE static std::uint32_t scale_head(const P& p, std::uint32_t, std::uint32_t first) {
    return p.split.div(first);
  }
  //! log2 of the threads that hold a row-head (head_dim / Vec, a power of two: the planner).
  template <int Vec, class P>
  KVCAST_DEVICE static std::uint32_t row_head_log2(const P& p) {
    return static_cast<std::uint32_t>(31 - __clz(static_cast<int>(p.split.divisor())) - log2_ceil(Vec));
  }
  template <class P>
  KVCAST_DEVICE static std::int64_t in_offset(const P& p, std::uint32_t token, std::uint32_t) {
    return token * p.in_token_stride;
  }
  //! The part of the output offset the slot does not decide.
  template <class P>
  KVCAST_DEVICE static std::int64_t out_offset_in_row(const P&, std::uint32_t, std::uint32_t first) {
    return std::int64_t{first};
  }
  template <class P>
  KVCAST_DEVICE static std::int64_t row_start(const P& p, std::int64_t row) {
    if constexpr (P::kRowsFolded) {
      return row;
    } else {
      return row * p.out.block_stride;
    }
  }
  template <class P>
  KVCAST_DEVICE static bool has_k(const P&) {
    return true;
  }
  template <class P>
  KVCAST_DEVICE static bool has_v(const P&) {
    return true;
  }
};

//! Any call: segments of one head where heads are apart, OutputLayout's formula for the row,
//! either tensor absent (the planner: a tensor and its output are null together).
struct LayoutRows {
  static constexpr bool kBothTensors = false;
  template <class P>
  KVCAST_DEVICE static void locate(const P& p, std::uint32_t seg, std::uint32_t& token, std::uint32_t& head) {
    token = p.split.div(seg);
    head = seg - token * p.split.divisor();
  }
  template <class P>
  KVCAST_DEVICE static std::uint32_t scale_head(const P&, std::uint32_t head, std::uint32_t) {
    return head;
  }
  //! A row-head reduced for its scale is the segment, one chunk: the whole group.
  template <int Vec, class P>
  KVCAST_DEVICE static std::uint32_t row_head_log2(const P& p) {
    return p.log2_group;
  }
  template <class P>
  KVCAST_DEVICE static std::int64_t in_offset(const P& p, std::uint32_t token, std::uint32_t head) {
    return token * p.in_token_stride + head * p.in_head_stride;
  }
  template <class P>
  KVCAST_DEVICE static std::int64_t out_offset_in_row(const P& p, std::uint32_t head, std::uint32_t first) {
    return head * p.out.head_stride + first;
  }
  template <class P>
  KVCAST_DEVICE static std::int64_t row_start(const P& p, std::int64_t row) {
    return p.out.row_address(row);
  }
  template <class P>
  KVCAST_DEVICE static bool has_k(const P& p) {
    return p.k != nullptr;
  }
  template <class P>
  KVCAST_DEVICE static bool has_v(const P& p) {
    return p.v != nullptr;
  }
};

// ---- Stages every write kernel shares. ---------------------------------------------------

//! Token `token`'s slot: `loc[token]` (int64 or int32), or the token itself without loc. Two
//! predicated loads rather than a branch, which would hold back the loads issued before it.
template <class P>
KVCAST_DEVICE std::int64_t load_slot(const P& p, std::uint32_t token) {
  long long slot64 = token;
  std::int32_t slot32 = static_cast<std::int32_t>(token);
  const bool loc32 = p.loc && p.loc_is_int32;
  if (p.loc && !p.loc_is_int32) slot64 = __ldg(static_cast<const long long*>(p.loc) + token);
  if (loc32) slot32 = __ldg(static_cast<const std::int32_t*>(p.loc) + token);
  return loc32 ? std::int64_t{slot32} : std::int64_t{slot64};
}

//! Whether token's slot writes: not a negative slot (padding), nor one whose row is outside
//! [0, out_rows), which is skipped and counted once a token, by the thread that `counts`.
template <class P>
KVCAST_DEVICE bool slot_writes(const P& p, std::int64_t slot, bool counts) {
  if (slot < 0) return false;
  if (slot < p.min_slot || slot > p.max_slot) {
    if (p.error_count && counts) atomicAdd(p.error_count, 1ull);
    return false;
  }
  return true;
}

//! The slot stage: false when the token writes nothing (slot_writes); otherwise `row` and
//! `row_start`, where that row starts in the output (Rows).
template <class Rows, class P>
KVCAST_DEVICE bool resolve_slot(const P& p, std::int64_t slot, bool counts, std::int64_t& row, std::int64_t& row_start) {
  if (!slot_writes(p, slot, counts)) return false;
  // In range, the true row fits int64; unsigned arithmetic keeps the intermediate defined.
  row = static_cast<std::int64_t>(static_cast<std::uint64_t>(slot) * static_cast<std::uint64_t>(p.mult) +
                                  static_cast<std::uint64_t>(p.offset));
  row_start = Rows::row_start(p, row);
  return true;
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

//! The calling thread's lane in its warp, from %laneid. Equal to threadIdx.x % kLanes in a CTA of
//! whole warps, but opaque to the compiler: from the known low bits of threadIdx.x % kLanes,
//! nvcc 13 split a 16-byte store at `base + lane * 16 bytes` into 2- and 4-byte stores.
KVCAST_DEVICE std::uint32_t lane_id() {
  std::uint32_t lane;
  asm("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}

//! Whether this CTA writes K, or V, in a kernel compiled to let the planner put them in CTAs of
//! their own (`MayGoApart`; tensors_apart, KernelChoice::grid_z: z = 0 K's CTAs, 1 V's).
template <bool MayGoApart>
KVCAST_DEVICE bool writes_k() {
  return !MayGoApart || blockIdx.z == 0;
}
template <bool MayGoApart>
KVCAST_DEVICE bool writes_v() {
  return !MayGoApart || blockIdx.z + 1 == gridDim.z;
}

//! `v_ptr` where `pick_v`, else `k_ptr`. Where both are fields of the kernel's parameters,
//! `pick_v ? p.v : p.k` compiles to a constant load at an offset computed from blockIdx.z: a
//! latency of its own between the grid's coordinates and the loads that need the pointer. Here
//! both fields load with the prologue's other parameters and the choice is a select of their
//! byte distance (opaque, so that it stays one), added to `k_ptr`, which keeps the pointer
//! global (a select of two pointers through inline PTX made every access through it generic).
template <class Ptr>
KVCAST_DEVICE Ptr select_tensor(bool pick_v, Ptr k_ptr, Ptr v_ptr) {
  using Byte = std::conditional_t<std::is_const<std::remove_pointer_t<Ptr>>::value, const char, char>;
  std::int64_t distance = pick_v ? static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(v_ptr) -
                                                             reinterpret_cast<std::uintptr_t>(k_ptr))
                                 : 0;
  asm("" : "+l"(distance));
  return reinterpret_cast<Ptr>(reinterpret_cast<Byte*>(k_ptr) + distance);
}

//! Converts and stores a thread's Vec elements, as tile::Memory::load placed them: a whole
//! vector as its packed codes (one access), interleaved ones a byte each. `Exact`: each code
//! from its element's own quotient (the code policy's `exact`, for computed scales; `q` is then
//! its QuotientQuantizer).
template <class Codes, tile::Access A, bool Exact, class T, int Vec, class Q>
KVCAST_DEVICE void store_codes(std::uint8_t* __restrict__ dst, std::uint32_t end, const Q& q, const AlignedVector<T, Vec>& v) {
  if constexpr (Exact) {
    // Loaded whole, each pair is one word (PairWords), as for the codes below; not in the
    // 4-element kernels of decode calls, where ptxas then had V's load wait for the slot's
    // (tools/sass_loads.py, NOTES #15zf).
    const typename PackedCodes<Vec>::type codes = Codes::template exact<A == tile::Access::vector && Vec >= 8>(q, v);
    if constexpr (A == tile::Access::vector) {
      tile::Memory<std::uint32_t>::store_vector(dst, codes);
    } else {
      AlignedVector<std::uint8_t, Vec> bytes;
      static_assert(sizeof bytes == sizeof codes, "store_codes: packed codes hold Vec bytes.");
      memcpy(&bytes, &codes, sizeof bytes);
      tile::Memory<std::uint32_t>::store_interleaved(dst, end, bytes);
    }
  } else if constexpr (A == tile::Access::vector) {
    // Loaded whole: each pair is one word (PairWords), so its elements are never taken apart.
    tile::Memory<std::uint32_t>::store_vector(dst, Codes::template packed<true>(q, v));
  } else {
    tile::Memory<std::uint32_t>::store_interleaved(dst, end, Codes::bytes(q, v));
  }
}

//! `count` elements of K and V from memory, one at a time, each code by Codes::code (in fp32 mode
//! that of RN(x / scale), __fdiv_rn where the scale is out of the fast range). A null output
//! skips its tensor.
template <class T, class Codes>
KVCAST_DEVICE void write_elements(const T* k_in, const T* v_in, std::uint8_t* k_out, std::uint8_t* v_out, std::uint32_t count,
                                  float k_scale, float v_scale) {
  const typename Codes::template Quantizer<T> qk(k_scale);
  const typename Codes::template Quantizer<T> qv(v_scale);
#pragma unroll 1
  for (std::uint32_t e = 0; e < count; ++e) {
    if (k_out) k_out[e] = Codes::code(qk, k_in[e]);
    if (v_out) v_out[e] = Codes::code(qv, v_in[e]);
  }
}

//! write_elements out of line: a segment's partial last vector, and a whole vector of a computed
//! scale out of the fast range (out_of_fast_range), so that the main path's instructions stay
//! contiguous (a decode step fetches them cold) and its registers its own.
template <class T, class Codes>
KVCAST_DEVICE_NOINLINE void write_tail(const T* k_in, const T* v_in, std::uint8_t* k_out, std::uint8_t* v_out,
                                       std::uint32_t count, float k_scale, float v_scale) {
  write_elements<T, Codes>(k_in, v_in, k_out, v_out, count, k_scale, v_scale);
}

//! Whether a computed scale pair leaves the fast division's range (a zero, subnormal, huge,
//! infinite or NaN scale: rare). Its vectors then go element by element, each quotient by
//! __fdiv_rn (write_elements; fp32 mode's code of x is that of RN(x / scale), as the
//! QuotientQuantizer's): in line, a vector's divisions held registers the whole kernel paid for
//! (a CTA an SM in the 16-wide kernels, NOTES #15zo) and put their instructions on the path
//! every vector takes.
KVCAST_DEVICE bool out_of_fast_range(float2 scales) {
  return !(scale_allows_fast_division(scales.x) && scale_allows_fast_division(scales.y));
}

// ---- The skeleton. ------------------------------------------------------------------------

//! One thread's share of the write: block `bx` of segments, chunk `by` of each. A segment (a
//! token's row, or one head of it) is cut into chunks of 2^log2_group items, one chunk a group
//! of threads, so that one long row spreads over several CTAs; a thread takes item
//! `by * group + rank` (tile::Memory), Vec elements laid out as `A` says. The tail of a segment
//! whose length Vec does not divide goes element by element, out of line. A scale computed
//! from the row-head (Scales::kFromRowHead) has the planner put each row-head in one chunk of
//! whole vectors: a segment of its own, or, heads fused (DenseRows), an aligned power-of-two
//! group of the row's threads (Rows::row_head_log2).
template <class T, class Codes, class Scales, class Rows, int Vec, tile::Access A>
KVCAST_DEVICE void write_chunk(const WriteParams<T, Scales>& p, const std::uint32_t bx, const std::uint32_t by) {
  using Walk = tile::Memory<std::uint32_t>;
  // 2^(log2(kBlockSize) - log2_group) segments a CTA. No sum here can wrap: segments < 2^31,
  // and a CTA's count past the last segment is below kBlockSize.
  constexpr std::uint32_t kLog2Block = log2_ceil(kBlockSize);
  const std::uint32_t lg = p.log2_group;
  const std::uint32_t seg = (bx << (kLog2Block - lg)) + (threadIdx.x >> lg);
  const Walk group(threadIdx.x & ((1u << lg) - 1), 1u << lg);
  const std::uint32_t item = group.index(by);                             // this thread's vector in the segment
  const std::uint32_t first = group.template first_element<A, Vec>(by);  // its first element
  // Past the last segment or the row's end, a thread has nothing to write; but a row-head's
  // scale needs every thread of its group (and of the CTA: the reduction may cross warps), and
  // the amax output every lane of its warp (and, in a large grid, every thread of the CTA at
  // its barrier: cta_maxima_init), so there it stays until those are done. The amax output is a
  // uniform branch: the call asks for it or not, and the grid's size decides whether a CTA's
  // warps keep their maxima in shared memory.
  constexpr bool kReduces = Scales::kFromRowHead;
  bool amax = false, amax_by_cta = false;
  if constexpr (Scales::kAmax) {
    amax = p.scales.amax.k != nullptr || p.scales.amax.v != nullptr;
    amax_by_cta = amax && p.scales.amax.skip_smaller != 0;
  }
  const bool active = seg < p.num_segments && first < p.seg_len;
  const bool stays = kReduces || amax;
  if (!stays && !active) return;
  const std::uint32_t end = p.seg_len - first;  // elements from `first` to the segment's end

  // locate
  std::uint32_t token, head;
  Rows::locate(p, stays && !active ? 0u : seg, token, head);
  constexpr bool kApart = Codes::kBlockScaled;  // NVFP4's blocks: K and V apart at decode (tensors_apart)
  const bool has_k = Rows::has_k(p) && writes_k<kApart>();
  const bool has_v = Rows::has_v(p) && writes_v<kApart>();

  // load: K and V (the bulk of the bytes), then the slot and the scales. Interleaved, every
  // element has its own bound, so there is no partial vector.
  const std::int64_t in_base = Rows::in_offset(p, token, head);
  const T* __restrict__ k_in = p.k + in_base + first;  // not dereferenced when p.k is null
  const T* __restrict__ v_in = p.v + in_base + first;
  constexpr std::uint32_t kLog2Vec = log2_ceil(Vec);
  const bool full = active && (A == tile::Access::interleaved || item < (p.seg_len >> kLog2Vec));
  AlignedVector<T, Vec> k_vec, v_vec;
  if constexpr (Scales::kAmax && A == tile::Access::interleaved) {
    KVCAST_UNROLL
    for (int i = 0; i < Vec; ++i) k_vec[i] = v_vec[i] = T{};  // elements past the end count as 0
  }
  if (full && has_k) Walk::template load<A>(k_in, end, k_vec);
  if (full && has_v) Walk::template load<A>(v_in, end, v_vec);
  const std::int64_t slot = load_slot(p, token);
  const std::int64_t out_in_row = Rows::out_offset_in_row(p, head, first / Codes::kCodesPerByte);
  // A loaded scale goes out with the other loads: issued after code that waits for them (the
  // amax output's), it would cost a second memory latency.
  float2 scales;
  // (A thread that stays only for a reduction takes element 0's head: its own may be past the row.)
  const std::uint32_t scale_head = Rows::scale_head(p, head, active ? first : 0u);
  if constexpr (!kReduces) scales = Scales::load(p.scales, token, scale_head);
  // A computed scale's place, as far as the row does not decide it, and whether this thread is
  // its row-head's first (which stores it): worked out while the loads are in flight, so that
  // after them the store costs a few instructions, predicated, behind the codes'.
  std::uint32_t row_head_log2 = 0;
  std::int64_t scale_in_row = 0;
  if constexpr (kReduces) {
    row_head_log2 = Rows::template row_head_log2<Vec>(p);
    scale_in_row = Scales::offset_in_row(p.scales, scale_head);
  }
  const bool stores_scale = kReduces && (item & ((1u << row_head_log2) - 1)) == 0;
  SeenMax seen, floor;
  __shared__ CtaMaxima cta_max;  // (only a large grid's amax output uses it)
  if constexpr (Scales::kAmax) {
    if (amax_by_cta) {
      floor = amax_floor(p.scales.amax.k, p.scales.amax.v);
      cta_maxima_init(cta_max);  // the loads are out: the barrier waits for none of them
    }
  }

  // scale: computed from the row-head's amax, which all its threads reduce. The amax output:
  // only tokens with a slot count; out-of-range rows do (they were real inputs).
  if (amax && full && slot >= 0) {
    seen.k = has_k ? abs_max_bits(k_vec) : 0u;
    seen.v = has_v ? abs_max_bits(v_vec) : 0u;
  }
  if constexpr (kReduces) {
    std::uint32_t k_max = full && has_k ? abs_max_bits(k_vec) : 0u;
    std::uint32_t v_max = full && has_v ? abs_max_bits(v_vec) : 0u;
    group_max(k_max, v_max, row_head_log2);
    scales = Scales::template from_amax<typename Codes::format, T>(p.scales, k_max, v_max);
  } else {
    if (amax && active && !full && slot >= 0) {  // the partial last vector
      seen.k = has_k ? abs_max_bits(k_in, end) : 0u;
      seen.v = has_v ? abs_max_bits(v_in, end) : 0u;
    }
  }
  // The amax output's atomics go out now, before the conversion, so that their trip to L2
  // overlaps the stores instead of following them.
  if constexpr (Scales::kAmax) {
    if (amax) warp_maxima_into(seen, p.scales.amax.k, p.scales.amax.v, floor, amax_by_cta ? &cta_max : nullptr);
  }
  if (!active) return;

  // resolve
  std::int64_t row, row_start;
  if (!resolve_slot<Rows>(p, slot, head == 0 && item == 0 && writes_k<kApart>(), row, row_start)) return;
  std::uint8_t* __restrict__ k_out = p.k_out + row_start + out_in_row;  // written only when the call has K
  std::uint8_t* __restrict__ v_out = p.v_out + row_start + out_in_row;

  // convert and store
  if constexpr (Codes::kBlockScaled) {  // NVFP4: a block (or half of one) a thread, never a partial vector
    Codes::template store_blocks<A>(p.scales, row, head, first, k_vec, v_vec, scales, has_k, has_v, k_out, v_out);
    return;
  } else {
    if (!full) {
      write_tail<T, Codes>(k_in, v_in, has_k ? k_out : nullptr, has_v ? v_out : nullptr, end, scales.x, scales.y);
      if constexpr (kReduces) Scales::store(p.scales, row, scale_in_row, scales, stores_scale && has_k, stores_scale && has_v);
      return;
    }
    // A whole vector of a computed scale out of the fast range goes element by element too
    // (out_of_fast_range; interleaved vectors, a lane apart, keep their own path).
    if constexpr (kReduces && A == tile::Access::vector) {
      if (out_of_fast_range(scales)) {
        write_tail<T, Codes>(k_in, v_in, has_k ? k_out : nullptr, has_v ? v_out : nullptr, Vec, scales.x, scales.y);
        Scales::store(p.scales, row, scale_in_row, scales, stores_scale && has_k, stores_scale && has_v);
        return;
      }
    }
    if constexpr (kReduces) {  // computed scales: each element's own quotient (Fp8::exact), then the scale
      const typename Codes::template QuotientQuantizer<T> qk(scales.x);
      const typename Codes::template QuotientQuantizer<T> qv(scales.y);
      if (has_k) store_codes<Codes, A, true>(k_out, end, qk, k_vec);
      if (has_v) store_codes<Codes, A, true>(v_out, end, qv, v_vec);
      Scales::store(p.scales, row, scale_in_row, scales, stores_scale && has_k, stores_scale && has_v);
      return;
    }
    const typename Codes::template Quantizer<T> qk(scales.x);
    const typename Codes::template Quantizer<T> qv(scales.y);
    if constexpr (A == tile::Access::vector && Rows::kBothTensors && Codes::template kBothAtOnce<Vec>) {
      Codes::store_both(qk, k_vec, qv, v_vec, [&](int tensor, const typename PackedCodes<Vec>::type& codes) {
        Walk::store_vector(tensor == 0 ? k_out : v_out, codes);
      });
      return;
    }
    // One tensor after the other, so that K's registers are free before V's conversion needs them.
    if (has_k) store_codes<Codes, A, false>(k_out, end, qk, k_vec);
    if (has_v) store_codes<Codes, A, false>(v_out, end, qv, v_vec);
  }
}

//! The write kernel: write_chunk for the CTA's place in the grid.
template <class T, class Codes, class Scales, class Rows, int Vec, tile::Access A>
__global__ void __launch_bounds__(kBlockSize, Codes::kMinCtasPerSm) write_kernel(const __grid_constant__ WriteParams<T, Scales> p) {
  static_assert(Vec >= 2 && Vec * sizeof(T) <= kMaxVectorBytes, "write_kernel: a vector holds 2 elements up to 32 bytes of input.");
  pdl_wait_then_release();
  // Only wide vectors take the chunks-first grid, and never the dense call element by element
  // (it is that only below the realigned kernel's size, itself below chunks first's).
  constexpr bool kMayTakeChunksFirst =
      Vec * sizeof(T) >= kChunksFirstMinVectorBytes && !(Rows::kBothTensors && A == tile::Access::interleaved);
  const bool chunks_first = kMayTakeChunksFirst && p.chunks_first != 0;
  write_chunk<T, Codes, Scales, Rows, Vec, A>(p, chunks_first ? blockIdx.y : blockIdx.x, chunks_first ? blockIdx.x : blockIdx.y);
}

// ---- A warp a row-head: per-(token, head) scales where no power-of-two group fits the row-head. --

//! One MLA head of 576 elements is 36 vectors of 16: a power-of-two group (64 threads) leaves
//! 28 idle, and their warp issues the whole instruction stream for 4 lanes. Here a warp holds
//! the row-head of kLanes * (Vec + Side) elements, each lane a vector of Vec at lane * Vec and a
//! side vector of Side after the warp's vectors, at kLanes * Vec + lane * Side: no idle lane, one
//! warp reduction, every access coalesced. Heads apart (LayoutRows), both vectors whole.
template <class T, class Codes, class Scales, int Vec, int Side>
__global__ void __launch_bounds__(kBlockSize, Codes::kMinCtasPerSm)
    write_row_head_warp_kernel(const __grid_constant__ WriteParams<T, Scales> p) {
  static_assert(Scales::kFromRowHead && Side >= 2 && Side < Vec, "write_row_head_warp_kernel: a reduced row-head, a side vector narrower than the main one.");
  using Walk = tile::Memory<std::uint32_t>;
  constexpr tile::Access A = tile::Access::vector;
  pdl_wait_then_release();
  const std::uint32_t lane = threadIdx.x % kLanes;
  const std::uint32_t seg = blockIdx.x * (kBlockSize / kLanes) + threadIdx.x / kLanes;
  bool amax = false, amax_by_cta = false;  // as in write_chunk
  if constexpr (Scales::kAmax) {
    amax = p.scales.amax.k != nullptr || p.scales.amax.v != nullptr;
    amax_by_cta = amax && p.scales.amax.skip_smaller != 0;
  }
  __shared__ CtaMaxima cta_max;
  if (amax_by_cta) cta_maxima_init(cta_max);
  if (seg >= p.num_segments) return;  // the whole warp: it holds the row-head

  // locate
  std::uint32_t token, head;
  LayoutRows::locate(p, seg, token, head);
  constexpr bool kApart = true;  // K and V apart at decode (tensors_apart)
  const bool has_k = LayoutRows::has_k(p) && writes_k<kApart>();
  const bool has_v = LayoutRows::has_v(p) && writes_v<kApart>();

  // load: both vectors of K and V, then the slot (and the amax output's floor)
  const std::uint32_t first = lane * Vec;
  const std::uint32_t side_first = kLanes * Vec + lane * Side;
  const std::int64_t in_base = LayoutRows::in_offset(p, token, head);
  AlignedVector<T, Vec> k_vec, v_vec;
  AlignedVector<T, Side> k_side, v_side;
  if (has_k) {
    Walk::template load<A>(p.k + in_base + first, Vec, k_vec);
    Walk::template load<A>(p.k + in_base + side_first, Side, k_side);
  }
  if (has_v) {
    Walk::template load<A>(p.v + in_base + first, Vec, v_vec);
    Walk::template load<A>(p.v + in_base + side_first, Side, v_side);
  }
  const std::int64_t slot = load_slot(p, token);
  SeenMax floor;
  if constexpr (Scales::kAmax) {
    if (amax_by_cta) floor = amax_floor(p.scales.amax.k, p.scales.amax.v);
  }
  const std::int64_t scale_in_row = Scales::offset_in_row(p.scales, LayoutRows::scale_head(p, head, 0));

  // scale: from the row-head's amax, one warp reduction. The amax output adds those maxima as
  // they are (already the warp's); only tokens with a slot count (the warp shares the token).
  // (The side vector's magnitudes join the vector's before either is widened.)
  const std::uint32_t k_max = warp_max(has_k ? pair_max_to_float_bits<T>(abs_max_pairs(k_side, abs_max_pairs(k_vec))) : 0u);
  const std::uint32_t v_max = warp_max(has_v ? pair_max_to_float_bits<T>(abs_max_pairs(v_side, abs_max_pairs(v_vec))) : 0u);
  if constexpr (Scales::kAmax) {
    if (amax && slot >= 0)
      warp_maxima_add(SeenMax{k_max, v_max}, p.scales.amax.k, p.scales.amax.v, floor, amax_by_cta ? &cta_max : nullptr);
  }
  const float2 scales = Scales::template from_amax<typename Codes::format, T>(p.scales, k_max, v_max);

  // resolve
  std::int64_t row, row_start;
  if (!resolve_slot<LayoutRows>(p, slot, head == 0 && lane == 0 && writes_k<kApart>(), row, row_start)) return;

  // convert and store: each element's own quotient (Fp8::exact), then the scale (lane 0); a scale
  // out of the fast range element by element (out_of_fast_range)
  const std::int64_t out_base = row_start + LayoutRows::out_offset_in_row(p, head, 0);
  Scales::store(p.scales, row, scale_in_row, scales, lane == 0 && has_k, lane == 0 && has_v);
  if (out_of_fast_range(scales)) {
    // The warp's row-head shares its scales: a lane takes Vec + Side elements in a row, in line
    // (a call would cost the kernel its registers). A null input is not dereferenced.
    const std::uint32_t at = lane * (Vec + Side);
    write_elements<T, Codes>(p.k + in_base + at, p.v + in_base + at, has_k ? p.k_out + out_base + at : nullptr,
                             has_v ? p.v_out + out_base + at : nullptr, Vec + Side, scales.x, scales.y);
    return;
  }
  const typename Codes::template QuotientQuantizer<T> qk(scales.x);
  const typename Codes::template QuotientQuantizer<T> qv(scales.y);
  if (has_k) {
    store_codes<Codes, A, true>(p.k_out + out_base + first, Vec, qk, k_vec);
    store_codes<Codes, A, true>(p.k_out + out_base + side_first, Side, qk, k_side);
  }
  if (has_v) {
    store_codes<Codes, A, true>(p.v_out + out_base + first, Vec, qv, v_vec);
    store_codes<Codes, A, true>(p.v_out + out_base + side_first, Side, qv, v_side);
  }
}

// ---- The lean row-head warp: per-(token, head) scales of the serving call at decode. --------

//! The lean row-head warp's parameters: only what it reads (WriteParams of per-(token, head)
//! scales is 240 bytes), laid out so that its prologue touches each constant-cache line they
//! span before the loads return: the row-head count, its split and the inputs in the first
//! line, the input strides in the second, the slots in the third. Whatever its stores read is
//! then in a line already there; a line first read after the loads slowed 576's decode steps
//! (NOTES #15zr). Lines of 64 bytes from the parameters' constant bank offset 0x210
//! (sm_90), which the offsets below are cut to.
template <class T>
struct RowHeadLeanParams {
  // First line: to find the warp's row-head and its inputs; the scale's place and bound.
  std::uint32_t num_segments;  //!< row-heads (tokens * heads)
  FastDivmod split;            //!< heads (LayoutRows::locate: token seg / split, head seg % split)
  const T* k;
  const T* v;
  std::int64_t scale_head_stride;  //!< floats from one head's scale to the next in a row
  float min_scale;
  // Second line: the input strides, then where the codes and scales go.
  std::int64_t in_token_stride;
  std::int64_t in_head_stride;
  std::uint8_t* k_out;
  std::uint8_t* v_out;
  float* k_scales;
  float* v_scales;
  std::int64_t code_row_stride;  //!< bytes from one slot's codes to the next (flat rows: row = slot)
  std::int64_t code_head_stride;
  // Third line: the slots, their bounds, the amax output, the out-of-range count.
  const long long* loc;
  std::int64_t min_slot;
  std::int64_t max_slot;
  std::int64_t scale_row_stride;  //!< floats from one slot's scales to the next
  float* k_amax;                  //!< null: no amax of K (the instance compiled with it)
  float* v_amax;
  unsigned long long* error_count;  //!< only on the rare out-of-range path
};
static_assert(offsetof(RowHeadLeanParams<std::uint16_t>, in_token_stride) == 0x240 - 0x210 &&
                  offsetof(RowHeadLeanParams<std::uint16_t>, loc) == 0x280 - 0x210 &&
                  sizeof(RowHeadLeanParams<std::uint16_t>) <= 0x2c0 - 0x210,
              "RowHeadLeanParams: a field the prologue reads in each of its three constant-cache lines.");

//! A warp a row-head, for the serving call of per-(token, head) scales at decode
//! (detail::lean_token_head_call): 16-bit K and V both given, int64 slots with row = slot, codes
//! and scales in flat rows (dispatch gives a layout of contiguous pages as the flat one it is),
//! and, compiled `Amax`, the amax output in grids small enough that every warp adds its
//! row-head's maximum (a runtime branch on its pointers cost the calls without it up to 7%,
//! NOTES #15zl). Each lane holds Vec elements at lane * Vec of a row-head of kLanes * (Vec +
//! Side), and Side after the warp's, at kLanes * Vec + lane * Side. What the dense and
//! row-head-warp kernels carry for every other call (a tensor absent, int32 or no slots, mult
//! and offset, page arithmetic, the amax output, groups of any size) costs a decode step as much
//! as its arithmetic (NOTES #15zi): here the path from the loads to the stores is the reduction,
//! the scale, the codes and two addresses. Apart: K's and V's row-heads in warps of their own
//! (grid z: 0 K, 1 V), else both in one warp (lean_row_head_together, detail::tensors_apart).
template <class T, class Codes, int Vec, int Side, bool Apart, bool Amax>
__global__ void __launch_bounds__(kBlockSize, Codes::kMinCtasPerSm)
    write_row_head_lean_kernel(const __grid_constant__ RowHeadLeanParams<T> p) {
  static_assert(Side == 0 || (Side >= 2 && Side < Vec), "write_row_head_lean_kernel: a side vector narrower than the main one.");
  using Walk = tile::Memory<std::uint32_t>;
  using Format = typename Codes::format;
  constexpr tile::Access A = tile::Access::vector;
  constexpr int kTensors = Apart ? 1 : 2;
  constexpr int kSideVec = Side == 0 ? 2 : Side;  // held, not loaded, when Side is 0
  pdl_wait_then_release();
  const std::uint32_t lane = threadIdx.x % kLanes;
  const std::uint32_t seg = blockIdx.x * (kBlockSize / kLanes) + threadIdx.x / kLanes;
  if (seg >= p.num_segments) return;  // the whole warp: it holds the row-head

  // locate: the row-head, and each tensor's input, codes and scales
  std::uint32_t token, head;
  LayoutRows::locate(p, seg, token, head);
  const T* in[kTensors];
  std::uint8_t* out[kTensors];
  float* scale_out[kTensors];
  float* amax_out[kTensors] = {};  // null: no amax of that tensor
  if constexpr (Apart) {
    // The input's and the amax output's by select_tensor: needed right after the grid's
    // coordinates and the loads; the stores' wait for the conversion anyway.
    const bool v = blockIdx.z != 0;
    in[0] = select_tensor(v, p.k, p.v);
    out[0] = v ? p.v_out : p.k_out;
    scale_out[0] = v ? p.v_scales : p.k_scales;
    if constexpr (Amax) amax_out[0] = select_tensor(v, p.k_amax, p.v_amax);
  } else {
    in[0] = p.k, in[1] = p.v;
    out[0] = p.k_out, out[1] = p.v_out;
    scale_out[0] = p.k_scales, scale_out[1] = p.v_scales;
    if constexpr (Amax) amax_out[0] = p.k_amax, amax_out[1] = p.v_amax;
  }

  // load: each tensor's vectors, then the slot
  const std::int64_t in_base = LayoutRows::in_offset(p, token, head);
  AlignedVector<T, Vec> vec[kTensors];
  AlignedVector<T, kSideVec> side[kTensors];
  KVCAST_UNROLL
  for (int t = 0; t < kTensors; ++t) {
    Walk::template load<A>(in[t] + in_base + lane * Vec, Vec, vec[t]);
    if constexpr (Side != 0) Walk::template load<A>(in[t] + in_base + kLanes * Vec + lane * Side, Side, side[t]);
  }
  const std::int64_t slot = __ldg(p.loc + token);
  const std::int64_t code_in_row = head * p.code_head_stride;
  const std::int64_t scale_in_row = head * p.scale_head_stride;

  // scale: one warp reduction a tensor (the side vector's magnitudes join before widening). The
  // amax output takes that maximum as it is, from lane 0, for a token with a slot (out-of-range
  // ones too: they were real inputs), before the conversion so that its trip overlaps the stores.
  float scale[kTensors];
  KVCAST_UNROLL
  for (int t = 0; t < kTensors; ++t) {
    std::uint32_t m = abs_max_pairs(vec[t]);
    if constexpr (Side != 0) m = abs_max_pairs(side[t], m);
    const std::uint32_t bits = warp_max(pair_max_to_float_bits<T>(m));
    if constexpr (Amax)
      if (lane == 0 && slot >= 0 && amax_out[t] != nullptr) red_max(amax_out[t], bits);
    scale[t] = PerTokenHeadScale::scale_of<Format, T>(__uint_as_float(bits), p.min_scale);
  }

  // resolve: row = slot, flat rows
  if (!slot_writes(p, slot, head == 0 && lane == 0 && (!Apart || blockIdx.z == 0))) return;
  const std::int64_t code_at = slot * p.code_row_stride + code_in_row;
  const std::int64_t scale_at = slot * p.scale_row_stride + scale_in_row;

  // convert and store: each element's own quotient (Fp8::exact), then the scale (lane 0)
  KVCAST_UNROLL
  for (int t = 0; t < kTensors; ++t) {
    const typename Codes::template QuotientQuantizer<T> q(scale[t]);
    store_codes<Codes, A, true>(out[t] + code_at + lane * Vec, Vec, q, vec[t]);
    if constexpr (Side != 0) store_codes<Codes, A, true>(out[t] + code_at + kLanes * Vec + lane * Side, Side, q, side[t]);
    if (lane == 0) PerTokenHeadScale::store_one(scale_out[t] + scale_at, scale[t]);
  }
}

// ---- The lean amax write: a scale a tensor or a head and the amax output, at decode. --------

//! A thread a vector of kAmaxLeanVec, for the serving call of per-tensor or per-head scales with
//! the amax output at decode (detail::lean_amax_call): 16-bit K and V, heads fused in flat rows
//! (DenseRows, the row stride folded into mult and offset), int64 slots, rows of whole vectors,
//! each in one head, a grid small enough that every warp adds its maximum. The dense kernel's
//! generality (partial vectors, groups of any size, the amax floor) costs a decode step more
//! than the amax does (NOTES #15zj). K and V in CTAs of their own (grid z: 0 K, 1 V;
//! tensors_apart): a warp's chain after its loads is then one tensor's reduction, atomic and
//! codes (NOTES #15zp). `split` holds a row's vectors; `log2_group`, a head's elements (log2).
template <class T, class Codes>
__global__ void __launch_bounds__(kBlockSize, Codes::kMinCtasPerSm) write_amax_lean_kernel(const __grid_constant__ WriteParams<T, PerHeadScale> p) {
  using Walk = tile::Memory<std::uint32_t>;
  constexpr tile::Access A = tile::Access::vector;
  constexpr int Vec = kAmaxLeanVec;
  pdl_wait_then_release();
  const std::uint32_t row_vectors = p.split.divisor();
  const std::uint32_t i = blockIdx.x * kBlockSize + threadIdx.x;
  const bool active = i < p.num_segments * row_vectors;
  if (__all_sync(0xffffffffu, !active)) return;  // a warp with nothing to write adds nothing
  // locate (a thread past the end takes vector 0's place, loads it and counts nothing), and the
  // CTA's tensor
  const std::uint32_t at = active ? i : 0u;
  const std::uint32_t token = p.split.div(at);
  const std::uint32_t in_row = (at - token * row_vectors) * Vec;
  const bool is_v = blockIdx.z != 0;
  const T* const in_tensor = select_tensor(is_v, p.k, p.v);  // as in the lean row-head warp
  std::uint8_t* const out_tensor = is_v ? p.v_out : p.k_out;
  float* const amax = select_tensor(is_v, p.scales.amax.k, p.scales.amax.v);
  // load
  const std::int64_t in = DenseRows::in_offset(p, token, 0) + in_row;
  AlignedVector<T, Vec> vec;
  Walk::template load<A>(in_tensor + in, Vec, vec);
  const std::int64_t slot = __ldg(static_cast<const long long*>(p.loc) + token);
  const float2 scales = PerHeadScale::load(p.scales, token, in_row >> p.log2_group);
  // the amax output: tokens with a slot, out-of-range ones too (they were real inputs); lane 0
  // adds the warp's maximum (its address alone: ptxas adds no warp aggregation of its own)
  const std::uint32_t warp_max_bits = warp_max(active && slot >= 0 ? abs_max_bits(vec) : 0u);
  float* const adds_to = threadIdx.x % kLanes == 0 ? amax : nullptr;
  if (adds_to != nullptr && warp_max_bits != 0u) red_max(adds_to, warp_max_bits);
  // resolve: the row is its byte offset (dispatch folded the row stride); K's CTAs count
  std::int64_t row, row_start;
  if (!active || !resolve_slot<DenseRows>(p, slot, in_row == 0 && !is_v, row, row_start)) return;
  // convert and store
  const typename Codes::template Quantizer<T> q(is_v ? scales.y : scales.x);
  store_codes<Codes, A, false>(out_tensor + row_start + in_row, Vec, q, vec);
}

// ---- The realigned instance: dense rows of 16-bit inputs where no vector access is legal. ---

//! One tensor of a realigned run: the 16 elements of lane `lane` (those of the row's range
//! [cs, ce) only; the others read as zero), loaded before the slot is known. `rs` is the run's
//! first element, relative to the row, at a 16-byte boundary of the input (at most 7 elements
//! before the row's start). Whole 16-byte halves are loaded when they hold an element of the
//! range; `whole` is false for a tensor's first and last rows, whose halves may reach past the
//! tensor, and whose elements are then loaded one at a time.
template <class T>
KVCAST_DEVICE void load_realigned(const T* __restrict__ row, std::int32_t lane, std::int32_t rs, std::int32_t cs, std::int32_t ce,
                                  bool whole, AlignedVector<T, kRealignVec>& v) {
  constexpr int kHalf = kRealignVec / 2;
  const std::int32_t first = rs + lane * kRealignVec;
  // Both ways end in whole 32-bit words, so that the vector reaches the conversion as the words
  // it was loaded in (joined element by element, the compiler would take every word apart and
  // put it back together).
  AlignedVector<std::uint32_t, kRealignVec / 2> words;
  if (whole) {
    KVCAST_UNROLL
    for (int h = 0; h < 2; ++h) {
      const std::int32_t e = first + h * kHalf;
      AlignedVector<std::uint32_t, 4> half;
      KVCAST_UNROLL
      for (int w = 0; w < 4; ++w) half[w] = 0;
      if (e < ce && e + kHalf > cs) half.load_bytes(row + e);
      KVCAST_UNROLL
      for (int w = 0; w < 4; ++w) words[4 * h + w] = half[w];
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
  memcpy(&v, &words, sizeof v);
}

//! Stores one tensor's codes of a realigned run (`codes`: this lane's 16 elements, in input
//! alignment) at `out` (the row's first byte). With the output's 16-byte boundaries at elements
//! `d` (mod 16) of the run, each lane joins its left neighbour's codes from there to its own up
//! to there: one whole, aligned 16-byte block, stored when it lies inside [cs, ce). The at most
//! 15 bytes at each end of the range that fill no whole block go one byte a lane: lanes 0-15
//! the head, 16-31 the tail, each fetching its byte's word from the lane that converted it.
//! Every lane of the warp takes part (the shuffles).
KVCAST_DEVICE void store_realigned(std::uint8_t* __restrict__ out, std::int32_t lane, std::int32_t rs, std::int32_t cs,
                                   std::int32_t ce, const typename PackedCodes<kRealignVec>::type& codes) {
  constexpr unsigned kAll = 0xffffffffu;
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
    tile::Memory<std::uint32_t>::store_vector(out + start, block);
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

//! The skeleton with a warp-wide access pattern, for the dense call (DenseRows) of 16-bit
//! inputs whose rows allow no vector access (an odd row length or stride, a misaligned
//! pointer), above tuning::kRealignAbove elements a tensor. A warp takes a run of kRealignRun
//! elements of a row, starting at a 16-byte boundary of its input: each lane loads its 16
//! elements with two 16-byte loads, before the slot is known, and converts them. Once the
//! slot gives the output row, store_realigned moves the codes to the output's 16-byte
//! boundaries (a shuffle and a funnel shift a word) and stores whole blocks, and the run's
//! ends a byte a lane. Grid: x walks groups of kRealignWarps rows, y the runs of a row.
template <class T, class Codes, class Scales>
__global__ void __launch_bounds__(kRealignWarps * kLanes) write_realigned_kernel(const __grid_constant__ WriteParams<T, Scales> p) {
  static_assert(sizeof(T) == 2, "write_realigned_kernel: 16-bit inputs (16 elements, two 16-byte loads a lane).");
  using Rows = DenseRows;
  pdl_wait_then_release();
  const auto warp = tile::Memory<std::uint32_t>::warp();
  const std::int32_t lane = static_cast<std::int32_t>(warp.rank());
  // locate: a warp a row.
  std::uint32_t token, head;
  Rows::locate(p, blockIdx.x * kRealignWarps + threadIdx.x / kLanes, token, head);
  if (token >= p.num_segments) return;  // the whole warp: it shares the token
  const std::int32_t n = static_cast<std::int32_t>(p.seg_len);
  const std::int32_t run = static_cast<std::int32_t>(blockIdx.y * kRealignRun);
  const std::int64_t in_base = Rows::in_offset(p, token, head);
  const T* __restrict__ k_row = p.k + in_base;
  const T* __restrict__ v_row = p.v + in_base;
  // Each tensor's run starts at the 16-byte boundary at or before element `run` of its row.
  const std::int32_t k_rs = run - static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(k_row) % 16 / sizeof(T));
  const std::int32_t v_rs = run - static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(v_row) % 16 / sizeof(T));
  const auto clamp = [n](std::int32_t x) { return x < 0 ? 0 : x > n ? n : x; };
  const std::int32_t k_cs = clamp(k_rs), k_ce = clamp(k_rs + static_cast<std::int32_t>(kRealignRun));
  const std::int32_t v_cs = clamp(v_rs), v_ce = clamp(v_rs + static_cast<std::int32_t>(kRealignRun));
  // load. A tensor's first and last rows may sit at its ends: their halves could reach past it.
  const bool whole = token != 0 && token + 1 != p.num_segments;
  AlignedVector<T, kRealignVec> k_vec, v_vec;
  load_realigned(k_row, lane, k_rs, k_cs, k_ce, whole, k_vec);
  load_realigned(v_row, lane, v_rs, v_cs, v_ce, whole, v_vec);
  const std::int64_t slot = load_slot(p, token);
  const float2 scales = Scales::load(p.scales, token, head);
  // resolve (the whole warp shares the token)
  std::int64_t row, row_start;
  if (!resolve_slot<Rows>(p, slot, blockIdx.y == 0 && lane == 0, row, row_start)) return;
  // convert (the vectors hold whole words: fp32 mode takes each pair's floats from its word, and
  // redoes a straddling vector by a call: in line, the longer code slowed this kernel's short
  // calls, NOTES #19b), store
  const typename Codes::template Quantizer<T> qk(scales.x);
  const typename Codes::template Quantizer<T> qv(scales.y);
  store_realigned(p.k_out + row_start, lane, k_rs, k_cs, k_ce, Codes::template packed<true, false>(qk, k_vec));
  store_realigned(p.v_out + row_start, lane, v_rs, v_cs, v_ce, Codes::template packed<true, false>(qv, v_vec));
}

}  // namespace detail
}  // namespace kvcast
