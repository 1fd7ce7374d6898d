// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/plan.hpp
//! The write path's planner: validation of DowncastArgs (check_args), then one decision, the
//! kernel to launch (choose_kernel), from the tuning table. Plain C++: it runs before any CUDA
//! call, so the CPU tests and the fuzzer exercise exactly the code the launcher runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../args.hpp"
#include "../format.hpp"
#include "../status.hpp"
#include "align.hpp"
#include "geometry.hpp"
#include "tuning.hpp"

namespace kvcast {
namespace detail {

//! The write kernels (detail/write_kernel.cuh). All three walk rows the same way; they differ
//! in what they may assume.
enum class WriteKernel : std::uint8_t {
  dense,      //!< a token's heads fused, flat rows, K and V both given: the serving engines' call
  general,    //!< any layout, heads apart, either tensor absent
  realigned,  //!< dense calls of 16-bit inputs with no vector access legal (16-byte loads anyway)
  row_head_warp,  //!< per-(token, head) scales, a warp a row-head of 576 (kRowHeadWarpVec + Side a lane)
  row_head_lean,  //!< per-(token, head) scales of the serving call at decode, a warp a row-head (lean_row_head_vec)
  amax_lean,      //!< per-tensor or per-head scales with the amax output, the serving call at decode, a vector a thread (kAmaxLeanVec)
};

//! The scale policy (policy.cuh) a call's kernels are instantiated with. A per-tensor call that
//! asks for amax takes PerHeadScale with one scale for every head, so that the lean
//! PerTensorScale kernels carry no reduction.
enum class ScalePolicyId : std::uint8_t {
  per_tensor,      //!< PerTensorScale: ScaleKind::per_tensor without amax
  per_head,        //!< PerHeadScale: ScaleKind::per_head, or per_tensor with amax
  per_token_head,  //!< PerTokenHeadScale: ScaleKind::per_token_head
};

template <class T>
constexpr ScalePolicyId scale_policy_of(const DowncastArgs<T>& a) {
  if (a.scale_kind == ScaleKind::per_token_head) return ScalePolicyId::per_token_head;
  if (a.scale_kind == ScaleKind::per_head || a.k_amax != nullptr || a.v_amax != nullptr) return ScalePolicyId::per_head;
  return ScalePolicyId::per_tensor;
}

//! Which grid dimension walks what. Segments first: x the blocks of segments, y the chunks of a
//! segment. Chunks first: the other way round, so that CTAs dispatched one after the other
//! cover a row from its start to its end.
enum class GridOrder : std::uint8_t { segments_first, chunks_first };

//! The planner's one decision: which kernel, its vector, and its grid. Dispatch is a switch
//! over it and the launch takes the grid as it is.
struct KernelChoice {
  WriteKernel kernel = WriteKernel::general;
  int vec = 0;                                  //!< elements a thread
  tile::Access access = tile::Access::vector;   //!< how a thread's elements lie (and are moved)
  GridOrder order = GridOrder::segments_first;
  int log2_group = 0;                           //!< threads that walk a chunk of a segment, log2
  std::int64_t grid_x = 0;
  std::int64_t grid_y = 0;
  //! 2 puts K and V in CTAs of their own, z = 0 K's and 1 V's (tensors_apart); 1 gives each
  //! thread both.
  int grid_z = 1;
  int block = kBlockSize;                       //!< threads a CTA
  //! The lean row-head warp: its instance with the amax output (the call asks for it), so that
  //! the calls without it carry none of its code.
  bool amax = false;

  //! Chunks (groups of threads) a segment is cut into; for the realigned kernel, runs a row.
  std::int64_t chunks() const { return order == GridOrder::chunks_first ? grid_x : grid_y; }
  //! CTAs of segments (the other dimension); for the realigned kernel, CTAs of rows.
  std::int64_t ctas() const { return order == GridOrder::chunks_first ? grid_y : grid_x; }
  //! The amax output, in a grid this large: a warp adds its maximum only above the output's
  //! value as its SM last read it and above what its CTA has added (AmaxOutput::skip_smaller,
  //! detail::CtaMaxima); in a smaller one, every warp adds its own.
  bool amax_adds_by_cta() const { return grid_x * grid_y > tuning::kAmaxAlwaysAddUpToCtas; }
  //! The grid of `ctas` CTAs of segments by `chunks` chunks of a segment, the chunks on x when
  //! `chunks_first`.
  void set_grid(std::int64_t ctas_of_segments, std::int64_t chunks_of_segment, bool chunks_first) {
    order = chunks_first ? GridOrder::chunks_first : GridOrder::segments_first;
    grid_x = chunks_first ? chunks_of_segment : ctas_of_segments;
    grid_y = chunks_first ? ctas_of_segments : chunks_of_segment;
  }
  //! A warp a segment of kRowWarpElements (the row-head-warp write, the row-warp read): each lane
  //! kRowHeadWarpVec elements and a side vector, kBlockSize / kLanes segments a CTA.
  void set_warp_a_segment(std::int64_t segments, int lane_vec = kRowHeadWarpVec) {
    vec = lane_vec;
    access = tile::Access::vector;
    log2_group = log2_ceil(kLanes);
    constexpr std::int64_t kWarps = kBlockSize / kLanes;
    set_grid((segments + kWarps - 1) / kWarps, 1, false);
  }
};

//! A validated call: its sizes and strides resolved (0 strides, an all-zero layout), its
//! segments, its slot bounds and extents, and the kernel that carries it out.
struct Plan {
  //! Work is cut into segments: a token's whole row when heads are back to back in input and
  //! output (they fuse into one run), otherwise one head.
  std::int64_t segs_per_token = 1;
  std::int64_t seg_len = 0;
  std::int64_t num_segments = 0;
  std::int64_t elements = 0;  //!< a tensor's elements: num_tokens * heads * head_dim
  bool dense = false;         //!< heads fused, flat rows, K and V both given
  std::int64_t in_token_stride = 0;
  std::int64_t in_head_stride = 0;
  OutputLayout out{};
  //! Rows `slot * mult + offset` are in range exactly for slots in [min_slot, max_slot].
  std::int64_t min_slot = 0;
  std::int64_t max_slot = 0;
  //! Elements of k/v (and bytes of k_out/v_out) the call can touch; out_extent is -1 when
  //! out_rows is unchecked.
  std::int64_t in_extent = 0;
  std::int64_t out_extent = -1;
  ScalePolicyId scale_policy = ScalePolicyId::per_tensor;
  //! ScaleKind::per_token_head: the scale tensors' layout (in floats) and the floats it spans.
  OutputLayout scales_out{};
  std::int64_t scales_extent = 0;
  //! What the codes are; for NVFP4, the block scales' layout (in bytes) and the bytes it spans.
  CodeFormat format = CodeFormat::fp8;
  OutputLayout block_scales_out{};
  std::int64_t block_scales_extent = 0;
  KernelChoice choice{};
};

constexpr std::int64_t kMaxOffset = std::int64_t{1} << 62;
constexpr std::int64_t kMaxMult = (std::int64_t{1} << 31) - 1;

//! a * b + c, false on int64 overflow (all operands >= 0).
inline bool mul_add(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t& out) {
  std::int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return false;
  return !__builtin_add_overflow(product, c, &out);
}

struct Dim {
  std::int64_t extent;
  std::int64_t stride;
  const char* name;
};

//! Checks that a strided map of `count` dims never sends two indices to one address: sorted by
//! stride, each stride must reach past everything the smaller dims span. On success `reach` is
//! one past the largest offset (the number of elements the map spans).
inline Status check_no_overlap(Dim* dims, int count, const char* what, std::int64_t& reach) {
  std::sort(dims, dims + count, [](const Dim& a, const Dim& b) { return a.stride < b.stride; });
  reach = 1;
  for (int i = 0; i < count; ++i) {
    if (dims[i].extent <= 1) continue;
    if (dims[i].stride < reach)
      return Status::error(Code::bad_stride,
                           "%s (%lld) < %lld, the span of the dimensions inside it: %s would overlap",
                           dims[i].name, static_cast<long long>(dims[i].stride),
                           static_cast<long long>(reach), what);
    if (!mul_add(dims[i].extent - 1, dims[i].stride, reach, reach))
      return Status::error(Code::overflow, "%s (%lld) * extent %lld overflows int64", dims[i].name,
                           static_cast<long long>(dims[i].stride),
                           static_cast<long long>(dims[i].extent));
  }
  return Status{};
}

//! Both directions' shape rules: tokens >= 0, heads and head_dim >= 1, a row of at most 2^24.
inline Status check_shape(std::int64_t num_tokens, std::int64_t heads, std::int64_t head_dim) {
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };
  if (num_tokens < 0) return Status::error(Code::bad_shape, "num_tokens (%lld) is negative", ll(num_tokens));
  if (heads < 1) return Status::error(Code::bad_shape, "heads (%lld) must be >= 1", ll(heads));
  if (head_dim < 1) return Status::error(Code::bad_shape, "head_dim (%lld) must be >= 1", ll(head_dim));
  std::int64_t row_elems = 0;
  if (!mul_add(heads, head_dim, 0, row_elems) || row_elems > kMaxSegmentElements)
    return Status::error(Code::bad_shape, "heads*head_dim (%lld*%lld) exceeds 2^24", ll(heads), ll(head_dim));
  return Status{};
}

//! Both directions' rules of a slot's row `slot * mult + offset`.
inline Status check_mult_offset(std::int64_t mult, std::int64_t offset) {
  if (mult < 1 || mult > kMaxMult) return Status::error(Code::bad_option, "mult (%lld) must be in [1, 2^31-1]", static_cast<long long>(mult));
  if (offset < -kMaxOffset || offset > kMaxOffset)
    return Status::error(Code::bad_option, "offset (%lld) must be within +-2^62", static_cast<long long>(offset));
  return Status{};
}

//! The names a layout's messages give: the code layout's or the scale layout's.
struct LayoutNames {
  const char* block_size;
  const char* block_stride;
  const char* token_stride;
  const char* head_stride;
  const char* heads;         //!< what overlaps when heads do
  const char* rows_of_page;  //!< what overlaps when a page's rows do
  const char* rows;          //!< the argument whose row count bounds it
};
constexpr LayoutNames kOutNames{"out.block_size",   "out.block_stride", "out.token_stride", "out.head_stride",
                                "output heads",     "output rows of a page", "out_rows"};
constexpr LayoutNames kScalesOutNames{"scales_out.block_size", "scales_out.block_stride", "scales_out.token_stride",
                                      "scales_out.head_stride", "scale heads", "scale rows of a page", "out_rows"};
constexpr LayoutNames kBlockScalesOutNames{"block_scales_out.block_size",   "block_scales_out.block_stride",
                                           "block_scales_out.token_stride", "block_scales_out.head_stride",
                                           "block-scale heads",             "block-scale rows of a page", "out_rows"};

//! Checks a layout of `heads` runs of `run` elements a row, for `rows` rows (< 0: unbounded): no
//! negative stride, no two elements at one address. `page_reach`: elements one page spans (one
//! row when flat); `extent`: elements all the rows span (-1 when unbounded).
inline Status check_layout(const OutputLayout& out, std::int64_t heads, std::int64_t run, std::int64_t rows, const LayoutNames& n,
                           std::int64_t& page_reach, std::int64_t& extent) {
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };
  const bool flat = out.block_size == 1;
  extent = -1;
  if (out.block_size < 1) return Status::error(Code::bad_option, "%s (%lld) must be >= 1", n.block_size, ll(out.block_size));
  if (out.block_stride < 0 || out.token_stride < 0 || out.head_stride < 0)
    return Status::error(Code::bad_stride, "%s (%lld) is negative",
                         out.block_stride < 0 ? n.block_stride : out.token_stride < 0 ? n.token_stride : n.head_stride,
                         ll(std::min({out.block_stride, out.token_stride, out.head_stride})));
  {
    Dim dims[] = {{run, 1, "element stride"}, {heads, out.head_stride, n.head_stride}, {flat ? 1 : out.block_size, out.token_stride, n.token_stride}};
    if (Status s = check_no_overlap(dims, 3, flat ? n.heads : n.rows_of_page, page_reach); !s) return s;
  }
  const bool many_pages = rows < 0 || rows > out.block_size;
  if (many_pages && out.block_stride < page_reach)
    return Status::error(Code::bad_stride, "%s (%lld) < %lld, the span of one %s: %s would overlap",
                         flat ? n.token_stride : n.block_stride, ll(out.block_stride), ll(page_reach), flat ? "row" : "page",
                         flat ? "rows" : "pages");
  if (rows > 0) {
    const std::int64_t last = rows - 1;
    std::int64_t base = 0;
    // The last row ends last: pages don't overlap, so earlier pages end before its page
    // starts, and earlier rows of its page sit at smaller in-page offsets.
    if (!mul_add(last / out.block_size, out.block_stride, 0, base) || !mul_add(last % out.block_size, out.token_stride, base, base) ||
        !mul_add(1, base, run, base) || !mul_add(heads - 1, out.head_stride, base, extent))
      return Status::error(Code::overflow, "%s (%lld) with this layout addresses beyond int64", n.rows, ll(rows));
  } else if (rows == 0) {
    extent = 0;
  }
  return Status{};
}

//! Bytes a tensor of a call may touch: from `base`, `extent` bytes (-1: unbounded), repeating
//! every `block_stride` bytes a page of `block_size` rows, of which each page touches its first
//! `page_reach` bytes.
struct Region {
  const void* base;
  std::int64_t extent;
  std::int64_t block_size;
  std::int64_t block_stride;
  std::int64_t page_reach;
};

//! Whether two regions can be shown to share no byte: their extents don't meet, or both have the
//! same pages and, page for page, their spans don't meet (floats placed inside the pages of the
//! codes, after them).
inline bool disjoint(const Region& a, const Region& b) {
  const auto lo_a = reinterpret_cast<std::uintptr_t>(a.base), lo_b = reinterpret_cast<std::uintptr_t>(b.base);
  if (a.extent >= 0 && b.extent >= 0 &&
      (lo_a + static_cast<std::uint64_t>(a.extent) <= lo_b || lo_b + static_cast<std::uint64_t>(b.extent) <= lo_a))
    return true;
  if (a.block_size != b.block_size || a.block_stride != b.block_stride || a.block_stride <= 0) return false;
  const std::int64_t stride = a.block_stride;
  const std::int64_t r = static_cast<std::int64_t>(lo_b - lo_a) % stride;  // in (-stride, stride): no sum below overflows
  const std::int64_t d = r < 0 ? r + stride : r;                            // b's offset in a's page
  return a.page_reach <= d && b.page_reach <= stride - d;
}

//! The slots whose rows `slot * mult + offset` lie in `[0, rows)` (rows < 0: unbounded above):
//! exactly those in `[min_slot, max_slot]` (an empty range when max_slot < min_slot).
//! @pre 1 <= mult < 2^31, |offset| <= 2^62.
inline void slot_bounds(std::int64_t mult, std::int64_t offset, std::int64_t rows, std::int64_t& min_slot, std::int64_t& max_slot) {
  const std::int64_t m = mult, off = offset;
  const std::int64_t last_row = rows >= 0 ? rows - 1 : std::numeric_limits<std::int64_t>::max();
  min_slot = off >= 0 ? -(off / m) : (-off + m - 1) / m;
  if (last_row < 0) {
    max_slot = min_slot - 1;  // empty range
  } else if (off >= 0) {
    max_slot = last_row >= off ? (last_row - off) / m : -((off - last_row + m - 1) / m);
  } else {
    const std::int64_t q = last_row / m, r = last_row % m;
    const std::int64_t extra = (r + (-off)) / m;
    max_slot = q > std::numeric_limits<std::int64_t>::max() - extra ? std::numeric_limits<std::int64_t>::max() : q + extra;
  }
}

//! Both directions' cut of the work: a segment a token (`fuse`: its heads back to back) or a
//! row-head; at most 2^31 - 1 segments. `elements`: a tensor's, num_tokens * heads * head_dim.
//! @pre heads * head_dim <= 2^24, the extents checked (no product here overflows).
inline Status cut_segments(std::int64_t num_tokens, std::int64_t heads, std::int64_t head_dim, bool fuse, std::int64_t& segs_per_token,
                           std::int64_t& seg_len, std::int64_t& num_segments, std::int64_t& elements) {
  segs_per_token = fuse ? 1 : heads;
  seg_len = fuse ? heads * head_dim : head_dim;
  if (!mul_add(num_tokens, segs_per_token, 0, num_segments) || num_segments > std::numeric_limits<std::int32_t>::max())
    return Status::error(Code::bad_shape, "num_tokens*heads (%lld*%lld) exceeds 2^31-1", static_cast<long long>(num_tokens),
                         static_cast<long long>(heads));
  elements = num_tokens * heads * head_dim;
  return Status{};
}

//! The write kernels that exist (are instantiated) for an input of `input_bytes` bytes in
//! `mode`: the planner chooses among these alone, and dispatch instantiates these alone. Each
//! earns its place by a measured gain (tuning.hpp cites them):
//!  - vectors from the narrowest the tuning tiers ask for in `mode` up to the widest
//!    (tuning::widest_vector's cap: 16 for 16-bit inputs in fp32 mode, else 8); narrower ones
//!    would only be alignment fallbacks, which the interleaved kernels serve;
//!  - 2-element vectors (fp32 mode's tiniest calls) in the dense kernel alone;
//!  - element by element (interleaved): 8 a thread, and 16 for 16-bit inputs in large general
//!    calls, the dense call of that size taking the realigned kernel.
//! The scale policies other than PerTensorScale take the general kernel, with vectors of 4 to
//! the widest and 8 elements interleaved, and the dense kernel's vectors for calls whose heads
//! fuse (per-tensor calls with amax, one head, scales of each head with every vector in one
//! head: NOTES #15f, #15p), PerHeadScale's from 2 in fp32 mode. PerTokenHeadScale computes in
//! fp32 mode only, and has the row-head-warp kernel for 16-bit inputs too (NOTES #15v).
constexpr bool write_kernel_exists(WriteKernel kernel, int vec, tile::Access access, int input_bytes, Arithmetic mode,
                                   ScalePolicyId scales = ScalePolicyId::per_tensor) {
  if (scales != ScalePolicyId::per_tensor) {
    if (kernel == WriteKernel::realigned || (scales == ScalePolicyId::per_token_head && mode != Arithmetic::fp32)) return false;
    if (kernel == WriteKernel::row_head_warp)
      return scales == ScalePolicyId::per_token_head && input_bytes == 2 && vec == kRowHeadWarpVec && access == tile::Access::vector;
    if (kernel == WriteKernel::amax_lean)
      return scales == ScalePolicyId::per_head && input_bytes == 2 && access == tile::Access::vector && vec == kAmaxLeanVec;
    if (kernel == WriteKernel::row_head_lean)
      return scales == ScalePolicyId::per_token_head && input_bytes == 2 && access == tile::Access::vector &&
             (vec == lean_row_head_vec(64) || vec == lean_row_head_vec(128) || vec == lean_row_head_vec(256) ||
              vec == lean_row_head_vec(kRowWarpElements));
    // The dense kernel, whole vectors only: per-tensor calls with amax, and scales of each head
    // where each vector lies in one head; PerHeadScale with PerTensorScale's 2-element vectors
    // for the tiniest calls.
    if (kernel == WriteKernel::dense && access != tile::Access::vector) return false;
    if (access == tile::Access::interleaved) return vec == tuning::kElementWiseVector;
    const bool tiniest = kernel == WriteKernel::dense && scales == ScalePolicyId::per_head && vec == 2 && vec >= tuning::narrowest_vector(mode);
    return (tiniest || vec == tuning::kScaledMinVector || vec == 8 || vec == 16) &&
           vec <= tuning::widest_vector_of_any_call(mode, input_bytes);
  }
  if (kernel == WriteKernel::realigned)
    return input_bytes == 2 && vec == kRealignVec && access == tile::Access::interleaved;
  if (kernel == WriteKernel::row_head_warp || kernel == WriteKernel::row_head_lean || kernel == WriteKernel::amax_lean)
    return false;  // the scaled policies' only
  if (access == tile::Access::interleaved)
    return vec == tuning::kElementWiseVector || (kernel == WriteKernel::general && input_bytes == 2 && vec == 16);
  if (vec < tuning::narrowest_vector(mode) || vec > tuning::widest_vector_of_any_call(mode, input_bytes)) return false;
  return vec == 4 || vec == 8 || vec == 16 || (vec == 2 && kernel == WriteKernel::dense);
}

//! How a direction names the tensors and the per-(token, head) fields in its messages: the
//! write's scale tensors are outputs (`k_scales_out`, `scales_out`), the read's inputs.
struct ScaleFieldNames {
  const char* k_tensor;
  const char* v_tensor;
  const char* k_token;
  const char* v_token;
  const char* token_layout;
};
constexpr ScaleFieldNames kWriteScaleNames{"k", "v", "k_scales_out", "v_scales_out", "scales_out"};
constexpr ScaleFieldNames kReadScaleNames{"k_cache", "v_cache", "k_scales", "v_scales", "scales"};

//! The rules of the scale fields both directions share: `kind` is a ScaleKind, and no field of
//! another kind is given (the call would silently ignore it).
inline Status check_scale_kind_fields(ScaleKind kind, const Scale& k_scale, const Scale& v_scale, const float* k_head,
                                      const float* v_head, const float* k_token, const float* v_token, bool token_layout_set,
                                      const ScaleFieldNames& n) {
  if (kind != ScaleKind::per_tensor && kind != ScaleKind::per_head && kind != ScaleKind::per_token_head)
    return Status::error(Code::bad_option, "scale_kind (%d) is not a ScaleKind", static_cast<int>(kind));
  const char* kind_name = to_string(kind);
  if (kind != ScaleKind::per_tensor && (k_scale.device != nullptr || v_scale.device != nullptr))
    return Status::error(Code::bad_option, "%s is given but scale_kind is %s: it would be ignored",
                         k_scale.device != nullptr ? "k_scale" : "v_scale", kind_name);
  if (kind != ScaleKind::per_head && (k_head != nullptr || v_head != nullptr))
    return Status::error(Code::bad_option, "%s is given but scale_kind is %s: set scale_kind = per_head to use it",
                         k_head != nullptr ? "k_head_scales" : "v_head_scales", kind_name);
  if (kind != ScaleKind::per_token_head && (k_token != nullptr || v_token != nullptr))
    return Status::error(Code::bad_option, "%s is given but scale_kind is %s: set scale_kind = per_token_head to use it",
                         k_token != nullptr ? n.k_token : n.v_token, kind_name);
  if (kind != ScaleKind::per_token_head && token_layout_set)
    return Status::error(Code::bad_option, "%s is set but scale_kind is %s: it places per_token_head scales", n.token_layout, kind_name);
  return Status{};
}

//! A tensor's own scale field (`k_field` / `v_field`, named `k_name` / `v_name`) comes with the
//! tensor, and only with it, aligned to a float.
inline Status check_scale_pair(const float* k_field, const float* v_field, const char* k_name, const char* v_name, bool has_k,
                               bool has_v, ScaleKind kind, const ScaleFieldNames& n) {
  const char* kind_name = to_string(kind);
  if (has_k && k_field == nullptr)
    return Status::error(Code::null_pointer, "%s is null while %s is given (scale_kind %s)", k_name, n.k_tensor, kind_name);
  if (has_v && v_field == nullptr)
    return Status::error(Code::null_pointer, "%s is null while %s is given (scale_kind %s)", v_name, n.v_tensor, kind_name);
  if (!has_k && k_field != nullptr) return Status::error(Code::unexpected_pointer, "%s is given while %s is null", k_name, n.k_tensor);
  if (!has_v && v_field != nullptr) return Status::error(Code::unexpected_pointer, "%s is given while %s is null", v_name, n.v_tensor);
  if (!is_aligned(k_field, 4) || !is_aligned(v_field, 4))
    return Status::error(Code::bad_option, "%s is not aligned to a float (4 bytes)", is_aligned(k_field, 4) ? v_name : k_name);
  return Status{};
}

//! How a direction names NVFP4's block-scale fields and the tensors they go with: the write's
//! are outputs (`k_block_scales_out`), the read's inputs (`k_block_scales`, of `k_cache`).
struct BlockScaleNames {
  const char* k;
  const char* v;
  const char* layout;
  const char* k_tensor;
  const char* v_tensor;
};
constexpr BlockScaleNames kWriteBlockScaleNames{"k_block_scales_out", "v_block_scales_out", "block_scales_out", "k", "v"};
constexpr BlockScaleNames kReadBlockScaleNames{"k_block_scales", "v_block_scales", "block_scales", "k_cache", "v_cache"};

//! Both directions' rules of the code format, checked with the shape: NVFP4's head_dim a
//! multiple of 16; no block-scale field with an fp8 format.
inline Status check_format_fields(CodeFormat format, std::int64_t head_dim, const void* k_sf, const void* v_sf, bool layout_set,
                                  const BlockScaleNames& n) {
  if (format == CodeFormat::nvfp4 && head_dim % nvfp4::kBlock != 0)
    return Status::error(Code::bad_shape, "head_dim (%lld) must be a multiple of 16 with format nvfp4: 16 elements share a block scale",
                         static_cast<long long>(head_dim));
  if (format != CodeFormat::nvfp4 && (k_sf != nullptr || v_sf != nullptr || layout_set))
    return Status::error(Code::bad_option, "%s is given, but the format is fp8: block scales are NVFP4's",
                         k_sf != nullptr ? n.k : v_sf != nullptr ? n.v : n.layout);
  return Status{};
}

//! Both directions' NVFP4 scale fields: one global scale g a tensor (ScaleKind::per_tensor),
//! then each tensor's block scales given with it, and only with it.
inline Status check_nvfp4_scale_kind(ScaleKind kind) {
  if (kind != ScaleKind::per_tensor)
    return Status::error(Code::bad_option, "scale_kind is %s, but format nvfp4 takes one global scale g a tensor: use per_tensor",
                         to_string(kind));
  return Status{};
}
inline Status check_block_scale_pair(const void* k_sf, const void* v_sf, bool has_k, bool has_v, const BlockScaleNames& n) {
  if (has_k != (k_sf != nullptr) || has_v != (v_sf != nullptr)) {
    const bool k_side = has_k != (k_sf != nullptr);
    const bool tensor = k_side ? has_k : has_v;
    return Status::error(tensor ? Code::null_pointer : Code::unexpected_pointer, "%s is %s while %s is %s", k_side ? n.k : n.v,
                         tensor ? "null" : "given", k_side ? n.k_tensor : n.v_tensor, tensor ? "given" : "null");
  }
  return Status{};
}

//! A side output's tensors (per-(token, head) scales, NVFP4's block scales), as the byte regions
//! `k_side` / `v_side` (named `k_name` / `v_name`), share no byte with a code tensor or each other.
//! `code_page_reach`: bytes one page (row) of the codes spans. `placement`: how to place them
//! inside the code pages, for the message.
template <class T>
Status check_side_outputs_apart(const DowncastArgs<T>& a, const Plan& plan, std::int64_t code_page_reach, const Region& k_side,
                                const Region& v_side, const char* k_name, const char* v_name, const char* placement) {
  const bool has_k = a.k != nullptr, has_v = a.v != nullptr;
  const Region k_codes{a.k_out, plan.out_extent, plan.out.block_size, plan.out.block_stride, code_page_reach};
  const Region v_codes{a.v_out, plan.out_extent, plan.out.block_size, plan.out.block_stride, code_page_reach};
  const struct {
    const Region& side;
    const Region& other;
    bool both;
    const char* side_name;
    const char* other_name;
  } pairs[] = {{k_side, k_codes, has_k, k_name, "k_out"},
               {k_side, v_codes, has_k && has_v, k_name, "v_out"},
               {v_side, k_codes, has_k && has_v, v_name, "k_out"},
               {v_side, v_codes, has_v, v_name, "v_out"},
               {k_side, v_side, has_k && has_v, k_name, v_name}};
  for (const auto& p : pairs)
    if (p.both && !disjoint(p.side, p.other))
      return Status::error(Code::bad_stride, "%s overlaps %s: give separate tensors, or %s", p.side_name, p.other_name, placement);
  return Status{};
}

//! The checks of the scale arguments (ScaleKind, amax): each field of the call's kind given for
//! each tensor the call has, no field of another kind given, and, for per_token_head, the scale
//! tensors' layout, with no float of theirs on a code or on each other. `code_page_reach`: bytes
//! one page (row) of the codes spans.
template <class T>
Status check_scale_args(const DowncastArgs<T>& a, Plan& plan, std::int64_t code_page_reach) {
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };
  const ScaleKind kind = a.scale_kind;
  const bool has_k = a.k != nullptr, has_v = a.v != nullptr;
  if (Status s = check_scale_kind_fields(kind, a.k_scale, a.v_scale, a.k_head_scales, a.v_head_scales, a.k_scales_out, a.v_scales_out,
                                         !a.scales_out.is_default(), kWriteScaleNames);
      !s)
    return s;
  plan.scale_policy = scale_policy_of(a);
  const auto pair = [&](const float* k_field, const float* v_field, const char* k_name, const char* v_name) {
    return check_scale_pair(k_field, v_field, k_name, v_name, has_k, has_v, kind, kWriteScaleNames);
  };
  if (kind == ScaleKind::per_head)
    if (Status s = pair(a.k_head_scales, a.v_head_scales, "k_head_scales", "v_head_scales"); !s) return s;
  if (!has_k && a.k_amax != nullptr) return Status::error(Code::unexpected_pointer, "k_amax is given while k is null");
  if (!has_v && a.v_amax != nullptr) return Status::error(Code::unexpected_pointer, "v_amax is given while v is null");
  if (!is_aligned(a.k_amax, 4) || !is_aligned(a.v_amax, 4))
    return Status::error(Code::bad_option, "%s is not aligned to a float (4 bytes)", is_aligned(a.k_amax, 4) ? "v_amax" : "k_amax");
  if (a.k_amax != nullptr && a.k_amax == a.v_amax)
    return Status::error(Code::unexpected_pointer, "k_amax and v_amax are the same pointer: give one float each");
  if (kind != ScaleKind::per_token_head) return Status{};

  // per_token_head.
  if (!(a.min_scale >= 0.0f && a.min_scale <= std::numeric_limits<float>::max()))
    return Status::error(Code::bad_option, "min_scale (%g) must be finite and >= 0", static_cast<double>(a.min_scale));
  if (a.head_dim > kMaxReducedHeadDim)
    return Status::error(Code::bad_shape, "head_dim (%lld) must be <= %lld with scale_kind per_token_head: one CTA reduces a row-head",
                         ll(a.head_dim), ll(kMaxReducedHeadDim));
  if (a.out_rows < 0)
    return Status::error(Code::bad_option,
                         "out_rows is unchecked, but scale_kind per_token_head needs the cache's row count to check the scale tensors");
  if (Status s = pair(a.k_scales_out, a.v_scales_out, "k_scales_out", "v_scales_out"); !s) return s;
  plan.scales_out = a.scales_out.or_contiguous(a.heads, 1);
  std::int64_t scale_page_reach = 0;
  if (Status s = check_layout(plan.scales_out, a.heads, 1, a.out_rows, kScalesOutNames, scale_page_reach, plan.scales_extent); !s)
    return s;
  // In bytes, every tensor the call writes: no float of a scale tensor on a code or on the other.
  const OutputLayout& so = plan.scales_out;
  std::int64_t scale_bytes = 0, scale_stride = 0, scale_reach = 0;
  if (!mul_add(plan.scales_extent, 4, 0, scale_bytes) || !mul_add(so.block_stride, 4, 0, scale_stride) ||
      !mul_add(scale_page_reach, 4, 0, scale_reach))
    return Status::error(Code::overflow, "scales_out with out_rows (%lld) addresses beyond int64 bytes", ll(a.out_rows));
  return check_side_outputs_apart(a, plan, code_page_reach, Region{a.k_scales_out, scale_bytes, so.block_size, scale_stride, scale_reach},
                                  Region{a.v_scales_out, scale_bytes, so.block_size, scale_stride, scale_reach}, "k_scales_out",
                                  "v_scales_out", "floats inside each page of the codes, beside them (scales_out with the codes' "
                                  "block_size and block_stride / 4)");
}

//! NVFP4's rules (check_args, format nvfp4): head_dim a multiple of 16; one global scale g a
//! tensor (ScaleKind::per_tensor), finite and > 0 where it is a host value (a device value is
//! read when the kernel runs: 0, inf or NaN there give what the formulas give); no amax output;
//! the block scales, `head_dim / 16` bytes a row-head, placed by `block_scales_out` (all-zero:
//! contiguous), for the rows out_rows bounds (required), apart from every code and each other.
template <class T>
Status check_nvfp4_args(const DowncastArgs<T>& a, Plan& plan, std::int64_t code_page_reach) {
  const bool has_k = a.k != nullptr, has_v = a.v != nullptr;
  if (Status s = check_nvfp4_scale_kind(a.scale_kind); !s) return s;
  if (a.k_amax != nullptr || a.v_amax != nullptr)
    return Status::error(Code::bad_option, "%s is given, but format nvfp4 has no amax output", a.k_amax != nullptr ? "k_amax" : "v_amax");
  const auto bad_g = [](const Scale& g) {
    return g.device == nullptr && !(g.value > 0.0f && g.value <= std::numeric_limits<float>::max());
  };
  if ((has_k && bad_g(a.k_scale)) || (has_v && bad_g(a.v_scale))) {
    const bool k_bad = has_k && bad_g(a.k_scale);
    return Status::error(Code::bad_option, "%s (%g), NVFP4's global scale g, must be finite and > 0", k_bad ? "k_scale" : "v_scale",
                         static_cast<double>(k_bad ? a.k_scale.value : a.v_scale.value));
  }
  if (a.out_rows < 0)
    return Status::error(Code::bad_option,
                         "out_rows is unchecked, but format nvfp4 needs the cache's row count to check the block-scale tensors");
  if (Status s = check_block_scale_pair(a.k_block_scales_out, a.v_block_scales_out, has_k, has_v, kWriteBlockScaleNames); !s) return s;
  const std::int64_t run = a.head_dim / nvfp4::kBlock;
  plan.block_scales_out = a.block_scales_out.or_contiguous(a.heads, run);
  std::int64_t page_reach = 0;
  if (Status s = check_layout(plan.block_scales_out, a.heads, run, a.out_rows, kBlockScalesOutNames, page_reach, plan.block_scales_extent);
      !s)
    return s;
  const OutputLayout& so = plan.block_scales_out;
  return check_side_outputs_apart(a, plan, code_page_reach,
                                  Region{a.k_block_scales_out, plan.block_scales_extent, so.block_size, so.block_stride, page_reach},
                                  Region{a.v_block_scales_out, plan.block_scales_extent, so.block_size, so.block_stride, page_reach},
                                  "k_block_scales_out", "v_block_scales_out",
                                  "bytes inside each page of the codes, beside them (block_scales_out with the codes' block_size and "
                                  "block_stride)");
}

//! Whether every output row-head of a validated call starts at a multiple of `bytes`: k_out,
//! v_out and the layout's strides (the head stride only when a row's heads are written apart).
template <class T>
bool outputs_allow(const DowncastArgs<T>& a, const Plan& plan, std::int64_t bytes, bool heads_apart) {
  return is_aligned(a.k_out, bytes) && is_aligned(a.v_out, bytes) && plan.out.block_stride % bytes == 0 &&
         (plan.out.block_size == 1 || plan.out.token_stride % bytes == 0) && (!heads_apart || plan.out.head_stride % bytes == 0);
}

//! Whether every input vector of `v` elements starts at a multiple of its size: k, v and the
//! input strides a vector's start depends on (the head stride only when heads are apart).
template <class T>
bool inputs_allow(const DowncastArgs<T>& a, const Plan& plan, std::int64_t v, bool heads_apart) {
  const std::int64_t bytes = v * static_cast<std::int64_t>(sizeof(T));
  return is_aligned(a.k, bytes) && is_aligned(a.v, bytes) && (a.num_tokens == 1 || plan.in_token_stride % v == 0) &&
         (!heads_apart || plan.in_head_stride % v == 0);
}

//! Per-head scales fuse a dense call's heads into one row when vectors of
//! tuning::kScaledMinVector fit: each lies in one head and every access is aligned. The planner
//! then takes a vector that divides head_dim (choose_kernel), and the dense kernel a vector's
//! head from its first element (DenseRows::scale_head).
template <class T>
bool per_head_rows_fuse(const DowncastArgs<T>& a, const Plan& plan) {
  constexpr int v = tuning::kScaledMinVector;
  return a.head_dim % v == 0 && inputs_allow(a, plan, v, false) && outputs_allow(a, plan, v, false);
}

//! Per-(token, head) scales fuse a dense call's heads into one row when, besides
//! per_head_rows_fuse, head_dim is a power of two whose vectors of tuning::kScaledMinVector fit
//! one group: a row-head is then an aligned power-of-two group of the row's threads, which
//! reduce it (DenseRows::row_head_log2).
template <class T>
bool per_token_head_rows_fuse(const DowncastArgs<T>& a, const Plan& plan) {
  return (a.head_dim & (a.head_dim - 1)) == 0 && a.head_dim <= std::int64_t{kBlockSize} * tuning::kScaledMinVector &&
         per_head_rows_fuse(a, plan);
}

static_assert(kMaxReducedHeadDim <= std::int64_t{kBlockSize} * tuning::kElementWiseVector,
              "A reduced row-head fits one group, element by element.");

//! Validates `a`, a write of `format` codes, and resolves it into `plan` (everything but the
//! kernel choice). Returns the first broken rule, naming the argument.
template <class T>
Status check_args(const DowncastArgs<T>& a, Plan& plan, CodeFormat format = CodeFormat::fp8) {
  plan = Plan{};
  plan.format = format;
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };
  const bool nvfp4 = format == CodeFormat::nvfp4;

  if (Status st = check_shape(a.num_tokens, a.heads, a.head_dim); !st) return st;
  if (Status st = check_format_fields(format, a.head_dim, a.k_block_scales_out, a.v_block_scales_out, !a.block_scales_out.is_default(),
                                      kWriteBlockScaleNames);
      !st)
    return st;
  if (a.out_rows == DowncastArgs<T>::kRowsNotGiven)
    return Status::error(Code::bad_option,
                         "out_rows is not set: give the cache's row count, or kUncheckedRows to trust the slots");
  if (a.num_tokens == 0) return Status{};  // empty tensors often have null data pointers

  // Pointers: a tensor and its output come together; at least one tensor.
  if (a.k == nullptr && a.v == nullptr)
    return Status::error(Code::null_pointer, "k and v are both null: give at least one tensor to downcast");
  if (a.k != nullptr && a.k_out == nullptr) return Status::error(Code::null_pointer, "k_out is null while k is given");
  if (a.v != nullptr && a.v_out == nullptr) return Status::error(Code::null_pointer, "v_out is null while v is given");
  if (a.k == nullptr && a.k_out != nullptr)
    return Status::error(Code::unexpected_pointer, "k_out is given while k is null");
  if (a.v == nullptr && a.v_out != nullptr)
    return Status::error(Code::unexpected_pointer, "v_out is given while v is null");
  if (a.k_out != nullptr && a.k_out == a.v_out)
    return Status::error(Code::unexpected_pointer, "k_out and v_out are the same pointer: K and V would overwrite each other");
  if (!is_aligned(a.k, sizeof(T)) || !is_aligned(a.v, sizeof(T)))
    return Status::error(Code::bad_option, "%s is not aligned to its element size (%d bytes)",
                         is_aligned(a.k, sizeof(T)) ? "v" : "k", static_cast<int>(sizeof(T)));

  // Options.
  if (Status st = check_mult_offset(a.mult, a.offset); !st) return st;
  if (a.out_rows < DowncastArgs<T>::kUncheckedRows)
    return Status::error(Code::bad_option, "out_rows (%lld) must be >= 0, or kUncheckedRows (-1)", ll(a.out_rows));
  if (a.out_capacity >= 0 && a.out_rows < 0)
    return Status::error(Code::bad_option, "out_capacity (%lld) is given but out_rows is unchecked: rows can't be bounded",
                         ll(a.out_capacity));

  // Input strides: 0 means contiguous; otherwise non-negative and non-overlapping.
  plan.in_head_stride = a.in_head_stride == 0 ? a.head_dim : a.in_head_stride;
  plan.in_token_stride = a.in_token_stride;
  if (a.in_token_stride == 0 && !mul_add(a.heads, plan.in_head_stride, 0, plan.in_token_stride))
    return Status::error(Code::overflow, "heads*in_head_stride (%lld*%lld) overflows int64", ll(a.heads), ll(plan.in_head_stride));
  if (plan.in_head_stride < 0 || plan.in_token_stride < 0)
    return Status::error(Code::bad_stride, "%s (%lld) is negative", plan.in_head_stride < 0 ? "in_head_stride" : "in_token_stride",
                         ll(plan.in_head_stride < 0 ? plan.in_head_stride : plan.in_token_stride));
  {
    Dim dims[] = {{a.head_dim, 1, "element stride"},
                  {a.heads, plan.in_head_stride, "in_head_stride"},
                  {a.num_tokens, plan.in_token_stride, "in_token_stride"}};
    if (Status s = check_no_overlap(dims, 3, "input elements", plan.in_extent); !s) return s;
  }
  if (a.in_capacity >= 0 && plan.in_extent > a.in_capacity)
    return Status::error(Code::bad_shape, "in_capacity (%lld) < %lld, the elements the inputs span", ll(a.in_capacity),
                         ll(plan.in_extent));

  // Output layout (in bytes, a row-head head_dim codes' bytes): all-zero means contiguous.
  const std::int64_t code_bytes = nvfp4 ? a.head_dim / kvcast::nvfp4::kCodesPerByte : a.head_dim;
  plan.out = a.out.or_contiguous(a.heads, code_bytes);
  std::int64_t page_reach = 0;
  if (Status s = check_layout(plan.out, a.heads, code_bytes, a.out_rows, kOutNames, page_reach, plan.out_extent); !s) return s;
  if (a.out_capacity >= 0 && plan.out_extent > a.out_capacity)
    return Status::error(Code::bad_shape, "out_capacity (%lld) < %lld, the bytes out_rows rows span", ll(a.out_capacity),
                         ll(plan.out_extent));

  if (Status s = nvfp4 ? check_nvfp4_args(a, plan, page_reach) : check_scale_args(a, plan, page_reach); !s) return s;

  slot_bounds(a.mult, a.offset, a.out_rows, plan.min_slot, plan.max_slot);

  // Segments: heads fuse into one run when they are back to back in input and output.
  // A scale that changes with the head keeps heads apart (a segment is then one row-head), but
  // in the dense call whose vectors can each lie in one head: the dense kernel finds a vector's
  // head from its first element, and reduces a row-head over its group of threads
  // (per_head_rows_fuse, per_token_head_rows_fuse).
  // NVFP4's block scales have their own layout: its heads stay apart (the general kernel).
  const bool back_to_back = plan.in_head_stride == a.head_dim && plan.out.head_stride == a.head_dim;
  const bool dense_call = !nvfp4 && plan.out.block_size == 1 && a.k != nullptr && a.v != nullptr;
  const bool heads_fit = a.scale_kind == ScaleKind::per_tensor ||
                         (a.scale_kind == ScaleKind::per_head && per_head_rows_fuse(a, plan)) ||
                         (a.scale_kind == ScaleKind::per_token_head && per_token_head_rows_fuse(a, plan));
  const bool fuse = a.heads == 1 || (!nvfp4 && back_to_back && (a.scale_kind == ScaleKind::per_tensor || (dense_call && heads_fit)));
  plan.dense = dense_call && fuse && heads_fit;
  return cut_segments(a.num_tokens, a.heads, a.head_dim, fuse, plan.segs_per_token, plan.seg_len, plan.num_segments, plan.elements);
}

//! The log2 of the group of threads that walks a chunk of a segment of `items` whole vectors: the
//! widest power of two up to kBlockSize that leaves at most 1/tuning::kIdleShare of the
//! segment's threads without a vector in its last chunk (a 576-element row of 36 vectors takes
//! groups of 4 over 9 chunks, not one of 64 with 28 idle).
inline int vector_group_log2(std::int64_t items) {
  int lg = std::min(log2_ceil(items), log2_ceil(kBlockSize));
  const auto idle = [&](int g) { return ((items + (std::int64_t{1} << g) - 1) >> g << g) - items; };
  while (lg > 0 && idle(lg) * tuning::kIdleShare > items) --lg;
  return lg;
}

//! Whether `layout`'s rows lie one after another: flat, or pages of contiguous rows (a page's
//! stride block_size rows), where row r starts at r * row_stride_of(layout) either way.
constexpr bool rows_flat(const OutputLayout& layout) {
  return layout.block_size == 1 || layout.block_stride == layout.block_size * layout.token_stride;
}
constexpr std::int64_t row_stride_of(const OutputLayout& layout) {
  return layout.block_size == 1 ? layout.block_stride : layout.token_stride;
}

//! Whether a validated per-(token, head) call is the serving call that the lean row-head warp
//! takes (write_row_head_lean_kernel): 16-bit K and V both given, int64 slots with row = slot,
//! codes and scales in flat rows (rows_flat), a head of 64, 128, 256 or 576 whose vectors every
//! pointer and stride allows, at most tuning::kTokenHeadLeanUpTo elements a tensor
//! (kTokenHeadLean576UpTo for row-heads of 576); with the amax output, at most
//! tuning::kAmaxLeanUpTo, where every warp adds its maximum.
template <class T>
bool lean_token_head_call(const DowncastArgs<T>& a, const Plan& plan, Arithmetic mode) {
  const int vec = lean_row_head_vec(a.head_dim);
  return plan.scale_policy == ScalePolicyId::per_token_head && plan.format == CodeFormat::fp8 && vec != 0 &&
         write_kernel_exists(WriteKernel::row_head_lean, vec, tile::Access::vector, static_cast<int>(sizeof(T)), mode,
                             ScalePolicyId::per_token_head) &&
         plan.elements <= (vec == kRowHeadWarpVec ? tuning::kTokenHeadLean576UpTo : tuning::kTokenHeadLeanUpTo) &&
         (plan.elements <= tuning::kAmaxLeanUpTo || (a.k_amax == nullptr && a.v_amax == nullptr)) && a.k != nullptr &&
         a.v != nullptr && a.loc.data != nullptr && !a.loc.is_int32 && a.mult == 1 && a.offset == 0 && rows_flat(plan.out) &&
         rows_flat(plan.scales_out) && inputs_allow(a, plan, vec, true) && outputs_allow(a, plan, vec, true);
}

//! Whether a validated call is the serving call with the amax output that the lean amax write
//! takes (write_amax_lean_kernel): one scale a tensor, or a scale a head where each head is one
//! head or a power of two of whole vectors; 16-bit K and V, fused heads in flat rows (the dense
//! call), int64 slots, rows of whole kAmaxLeanVec vectors that every pointer and stride allows,
//! at most tuning::kAmaxLeanUpTo elements a tensor.
template <class T>
bool lean_amax_call(const DowncastArgs<T>& a, const Plan& plan, Arithmetic mode) {
  const bool heads_by_shift = a.heads == 1 || ((a.head_dim & (a.head_dim - 1)) == 0 && a.head_dim >= kAmaxLeanVec);
  const bool scales = a.scale_kind == ScaleKind::per_tensor ||
                      (a.scale_kind == ScaleKind::per_head && heads_by_shift && (a.k_amax != nullptr || a.v_amax != nullptr));
  return plan.scale_policy == ScalePolicyId::per_head && scales && plan.format == CodeFormat::fp8 && plan.dense &&
         plan.segs_per_token == 1 &&
         write_kernel_exists(WriteKernel::amax_lean, kAmaxLeanVec, tile::Access::vector, static_cast<int>(sizeof(T)), mode,
                             ScalePolicyId::per_head) &&
         plan.elements <= tuning::kAmaxLeanUpTo && a.loc.data != nullptr && !a.loc.is_int32 && plan.seg_len % kAmaxLeanVec == 0 &&
         inputs_allow(a, plan, kAmaxLeanVec, false) && outputs_allow(a, plan, kAmaxLeanVec, false);
}

//! The kernel for a validated call (check_args), from the tuning table. The widest vector the
//! call's size and `mode` allow that every pointer and every stride a vector start depends on
//! allows too; where none does, one element an access, the warp's lanes interleaved.
template <class T>
KernelChoice choose_kernel(const DowncastArgs<T>& a, const Plan& plan, Arithmetic mode) {
  constexpr int kBytes = static_cast<int>(sizeof(T));
  KernelChoice c;
  const bool fused = plan.segs_per_token == 1;
  const ScalePolicyId scales = plan.scale_policy;
  // A row-head reduced for its scale lies in one chunk, whole vectors: no partial vector, no
  // more items than a CTA has threads (heads fused: a power of two of them, check_args, so that
  // the chunks, of a power of two, split the row between heads).
  const bool reduced = scales == ScalePolicyId::per_token_head;
  const WriteKernel kernel = plan.dense ? WriteKernel::dense : WriteKernel::general;
  // Every vector in one head: a row-head reduced for its scale, and scales of each head with
  // heads fused (check_args).
  const bool vectors_in_heads = reduced || (fused && a.heads > 1 && a.scale_kind != ScaleKind::per_tensor);
  if (plan.format == CodeFormat::nvfp4) {
    // Vectors of a block a thread for 16-bit inputs in large calls, half a block otherwise, its
    // codes one access, where the pointers and strides allow; else the widest, one element (one
    // code byte) an access.
    c.kernel = WriteKernel::general;
    const int widest = nvfp4_vec(kBytes);
    const auto vector_fits = [&](int v) { return inputs_allow(a, plan, v, !fused) && outputs_allow(a, plan, v / nvfp4::kCodesPerByte, !fused); };
    if (widest > kNvfp4HalfBlock && plan.elements > tuning::kNvfp4WholeBlocksAbove && vector_fits(widest)) {
      c.vec = widest;
    } else if (vector_fits(kNvfp4HalfBlock)) {
      c.vec = kNvfp4HalfBlock;
    } else {
      c.vec = widest;
      c.access = tile::Access::elements;
    }
  }
  // The serving call at decode with amax: a vector a thread, nothing general (NOTES #15zj).
  if (lean_amax_call(a, plan, mode)) {
    c.kernel = WriteKernel::amax_lean;
    c.vec = kAmaxLeanVec;
    c.access = tile::Access::vector;
    c.set_grid((plan.elements / kAmaxLeanVec + kBlockSize - 1) / kBlockSize, 1, false);
    return c;
  }
  // The serving call at decode: a warp a row-head, nothing general (NOTES #15zi).
  if (lean_token_head_call(a, plan, mode)) {
    c.kernel = WriteKernel::row_head_lean;
    c.set_warp_a_segment(a.num_tokens * a.heads, lean_row_head_vec(a.head_dim));
    c.amax = a.k_amax != nullptr || a.v_amax != nullptr;
    return c;
  }
  // A row-head of 576 (one MLA head) in a warp, a vector of 16 and a side vector of 2 a lane,
  // at every size: power-of-two groups leave 28 of 64 threads idle (NOTES #15v).
  if (reduced && !plan.dense && a.head_dim == kRowWarpElements &&
      inputs_allow(a, plan, kRowHeadWarpVec, !fused) && outputs_allow(a, plan, kRowHeadWarpVec, !fused) &&
      write_kernel_exists(WriteKernel::row_head_warp, kRowHeadWarpVec, tile::Access::vector, kBytes, mode, scales)) {
    c.kernel = WriteKernel::row_head_warp;
    c.set_warp_a_segment(plan.num_segments);
    return c;
  }
  int widest = tuning::widest_vector(plan.elements, mode, kBytes);
  // The other scale policies' narrowest vector is tuning::kScaledMinVector (PerHeadScale's in
  // the dense kernel is 2, as PerTensorScale's): where the tiers ask for a narrower one, they
  // take that rather than go element by element.
  if (scales != ScalePolicyId::per_tensor && !(kernel == WriteKernel::dense && scales == ScalePolicyId::per_head) &&
      widest < tuning::kScaledMinVector)
    widest = tuning::kScaledMinVector;
  const int widest_of_any_call = tuning::widest_vector_of_any_call(mode, kBytes);
  if (scales == ScalePolicyId::per_token_head && plan.elements > tuning::kTokenHeadWidestAbove)
    widest = std::max(widest, widest_of_any_call);
  // A row-head reduced for its scale is held by one warp where a vector the kernels have allows
  // it: across warps, its reduction takes a shared-memory round and a CTA barrier (NOTES #15t).
  // A 576-element one needs more than the widest: narrower vectors over more warps win there.
  if (reduced) {
    const int in_one_warp = 1 << log2_ceil((a.head_dim + kLanes - 1) / kLanes);
    if (in_one_warp <= widest_of_any_call) widest = std::max(widest, in_one_warp);
  }
  for (int v = widest; v >= 2 && c.vec == 0; v /= 2) {
    if (v > plan.seg_len || (vectors_in_heads && a.head_dim % v != 0) || (reduced && a.head_dim / v > kBlockSize)) continue;
    if (inputs_allow(a, plan, v, !fused) && outputs_allow(a, plan, v, !fused) &&
        write_kernel_exists(kernel, v, tile::Access::vector, kBytes, mode, scales)) {
      c.vec = v;
      c.kernel = kernel;
    }
  }
  if (c.vec == 0) {
    c.access = tile::Access::interleaved;
    const bool large = kBytes == 2 && plan.elements > tuning::kElementWiseWideAbove;
    if (kernel == WriteKernel::dense && scales == ScalePolicyId::per_tensor && kBytes == 2 && plan.elements > tuning::kRealignAbove) {
      c.kernel = WriteKernel::realigned;
      c.vec = kRealignVec;
    } else {
      // The scaled policies' dense kernels take whole vectors only.
      c.kernel = scales == ScalePolicyId::per_tensor ? kernel : WriteKernel::general;
      c.vec = large && kernel == WriteKernel::general && scales == ScalePolicyId::per_tensor ? 16 : tuning::kElementWiseVector;
    }
  }

  if (c.kernel == WriteKernel::realigned) {
    // A warp a row (kRealignWarps rows a CTA on x), runs of kRealignRun elements on y. Runs
    // start at the 16-byte boundary at or before a row's element 0, 512, ...: up to
    // 16 / sizeof(T) - 1 elements before it, fewer where every row of K and V sits alike.
    const std::int64_t most = 16 / kBytes - 1;
    const bool rows_alike = a.num_tokens == 1 || (plan.in_token_stride * kBytes) % 16 == 0;
    const auto lead = [&](const T* p) {
      return rows_alike ? static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p) % 16 / kBytes) : most;
    };
    c.block = kRealignWarps * kLanes;
    c.grid_x = (plan.num_segments + kRealignWarps - 1) / kRealignWarps;
    c.grid_y = (plan.seg_len + std::max(lead(a.k), lead(a.v)) + kRealignRun - 1) / kRealignRun;
    return c;
  }

  // A group of 2^log2_group threads walks a chunk of a segment, a vector each; a CTA holds
  // kBlockSize >> log2_group groups. Interleaved, a group is at least a warp: its lanes
  // interleave kLanes apart, which makes every element's address an immediate offset; a row
  // shorter than a warp's kLanes * vec elements spreads over all its lanes, fewer elements each.
  const std::int64_t items = (plan.seg_len + c.vec - 1) / c.vec;
  c.log2_group = std::min(log2_ceil(items), log2_ceil(kBlockSize));
  if (c.access == tile::Access::interleaved) {
    c.log2_group = std::max(c.log2_group, log2_ceil(kLanes));
  } else if (!reduced && plan.elements > tuning::kFewIdleAbove) {
    c.log2_group = vector_group_log2(items);  // a row-head reduced for its scale stays one chunk
  }
  const std::int64_t chunks = (items + (std::int64_t{1} << c.log2_group) - 1) >> c.log2_group;
  const std::int64_t groups_per_cta = std::int64_t{kBlockSize} >> c.log2_group;
  const std::int64_t ctas = (plan.num_segments + groups_per_cta - 1) / groups_per_cta;
  static_assert(tuning::kRealignAbove <= tuning::kChunksFirstAbove,
                "The dense call goes element by element only below chunks first's size (write_kernel).");
  const bool chunks_first = c.vec * kBytes >= kChunksFirstMinVectorBytes && chunks > 1 &&
                            !(c.kernel == WriteKernel::dense && c.access == tile::Access::interleaved) &&
                            plan.elements > tuning::kChunksFirstAbove && ctas <= kMaxGridY;
  c.set_grid(ctas, chunks, chunks_first);
  return c;
}

//! Whether the call puts K and V in CTAs of their own (KernelChoice::grid_z): both tensors, at
//! most tuning::kTensorsApartUpTo elements a tensor, on the kernels whose chain after the loads
//! is long and that are compiled for it: NVFP4's blocks, and a warp a per-(token, head)
//! row-head of 576; the lean row-head warp but for row-heads of 64 without the amax output past
//! tuning::kLeanRowHead64ApartUpTo (lean_row_head_together), and the lean amax write
//! always (both take decode calls of both tensors only; a warp's reduction and atomic are then
//! one tensor's, NOTES #15zp). A small call waits for its longest thread; apart, each thread
//! converts one tensor, and twice the warps share the step. The dense per-(token, head) kernel
//! lost apart, and every kernel loses in large calls (the measurements:
//! tuning::kTensorsApartUpTo, NOTES #15zc).
template <class T>
bool tensors_apart(const DowncastArgs<T>& a, const Plan& plan) {
  if (plan.choice.kernel == WriteKernel::row_head_lean)  // K and V both given
    return !lean_row_head_together(plan.choice.vec, plan.choice.amax) || plan.elements <= tuning::kLeanRowHead64ApartUpTo;
  if (plan.choice.kernel == WriteKernel::amax_lean) return true;
  const bool long_chain = plan.choice.kernel == WriteKernel::row_head_warp || plan.format == CodeFormat::nvfp4;
  return long_chain && a.k != nullptr && a.v != nullptr && plan.elements <= tuning::kTensorsApartUpTo;
}

}  // namespace detail

//! Validates `args` and plans the call: detail::check_args, then detail::choose_kernel for the
//! kernel of arithmetic `mode` writing `format` codes. Zero tokens is valid (and launches
//! nothing) once the sizes are sane and out_rows is given: empty tensors often have null data
//! pointers.
template <class T>
Status make_plan(const DowncastArgs<T>& args, detail::Plan& plan, Arithmetic mode = Arithmetic::fp32,
                 CodeFormat format = CodeFormat::fp8) {
  if (Status s = detail::check_args(args, plan, format); !s) return s;
  if (format == CodeFormat::nvfp4 && mode == Arithmetic::input_precision)
    return Status::error(Code::bad_option,
                         "format nvfp4 computes in fp32 arithmetic: use Arithmetic::fp32 (its exact mode) or Arithmetic::fast_math "
                         "(FlashInfer's numerics)");
  if (format != CodeFormat::nvfp4 && mode == Arithmetic::fast_math)
    return Status::error(Code::bad_option,
                         "Arithmetic::fast_math is NVFP4's engine-compatible mode (FlashInfer's): fp8 formats take fp32 or input_precision");
  if (args.scale_kind == ScaleKind::per_token_head && mode != Arithmetic::fp32)
    return Status::error(Code::bad_option, "scale_kind per_token_head computes its scales in fp32 arithmetic: use Arithmetic::fp32");
  if (plan.num_segments == 0) return Status{};
  plan.choice = detail::choose_kernel(args, plan, mode);
  plan.choice.grid_z = detail::tensors_apart(args, plan) ? 2 : 1;
  return Status{};
}

}  // namespace kvcast
