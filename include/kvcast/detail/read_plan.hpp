// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/read_plan.hpp
//! The read path's planner: validation of UpcastArgs (check_read_args), then one decision, the
//! read kernel's vector and grid (choose_read_kernel). It shares the write planner's layout and
//! overlap checks, its slot bounds and its KernelChoice (detail/plan.hpp). Plain C++.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../args.hpp"
#include "../format.hpp"
#include "../status.hpp"
#include "align.hpp"
#include "geometry.hpp"
#include "plan.hpp"
#include "tuning.hpp"

namespace kvcast {
namespace detail {

//! The read kernel instances (dispatch's switch: select_read_kernel).
enum class ReadKernel : std::uint8_t {
  general,   //!< read_kernel: power-of-two groups of threads a chunk of a segment, vectors or elements
  row_warp,  //!< read_row_warp_kernel: a warp a segment of kLanes * (kRowHeadWarpVec + Side) = 576 codes
};

//! A validated read: its sizes and strides resolved, its segments, its row source and bounds,
//! its extents, and the kernel choice.
struct ReadPlan {
  //! Segments as the write's: a token's whole row when heads are back to back in the cache and
  //! the output and the scale is one a tensor, otherwise one head.
  std::int64_t segs_per_token = 1;
  std::int64_t seg_len = 0;
  std::int64_t num_segments = 0;
  std::int64_t elements = 0;  //!< a tensor's output elements: num_tokens * heads * head_dim
  std::int64_t out_token_stride = 0;
  std::int64_t out_head_stride = 0;
  std::int64_t out_extent = 0;  //!< output elements the call can write
  OutputLayout cache{};
  std::int64_t cache_extent = 0;  //!< bytes of a cache the call can read
  bool page_table = false;
  //! Slots: rows in range exactly for slots in [min_slot, max_slot].
  std::int64_t min_slot = 0;
  std::int64_t max_slot = 0;
  //! Page table: rows a page, and the pages of the cache (cache_rows / page_size).
  std::int64_t page_size = 1;
  std::int64_t pages = 0;
  ScalePolicyId scale_policy = ScalePolicyId::per_tensor;
  OutputLayout scales{};  //!< ScaleKind::per_token_head: the scale tensors' layout, in floats
  std::int64_t scales_extent = 0;
  //! What the codes are; for NVFP4, the block scales' layout (in bytes) and the bytes it spans.
  CodeFormat format = CodeFormat::fp8;
  OutputLayout block_scales{};
  std::int64_t block_scales_extent = 0;
  ReadKernel kernel = ReadKernel::general;
  KernelChoice choice{};
};

constexpr LayoutNames kCacheNames{"cache.block_size",   "cache.block_stride", "cache.token_stride", "cache.head_stride",
                                  "cache heads",        "cache rows of a page", "cache_rows"};
constexpr LayoutNames kReadScalesNames{"scales.block_size", "scales.block_stride", "scales.token_stride", "scales.head_stride",
                                       "scale heads",       "scale rows of a page", "cache_rows"};
constexpr LayoutNames kReadBlockScalesNames{"block_scales.block_size",   "block_scales.block_stride", "block_scales.token_stride",
                                            "block_scales.head_stride",  "block-scale heads",         "block-scale rows of a page",
                                            "cache_rows"};

//! The read kernels that exist: whole vectors of 16 or 4 codes (16- and 4-byte loads), and one
//! code an access (8 a thread, the warp's lanes interleaved) for what no vector fits; and the
//! row-warp read, kRowHeadWarpVec codes and a side vector a lane, for fp8 codes. Every scale
//! policy has them all, in each output type and format.
constexpr bool read_kernel_exists(int vec, tile::Access access, ReadKernel kernel = ReadKernel::general) {
  if (kernel == ReadKernel::row_warp) return vec == kRowHeadWarpVec && access == tile::Access::vector;
  return access == tile::Access::interleaved ? vec == tuning::kElementWiseVector : (vec == 16 || vec == 4);
}

//! The checks of the read's scale arguments: each field of the call's kind given for each tensor
//! the call reads, no field of another kind given, and for per_token_head the scale tensors'
//! layout over the cache's rows.
template <class T>
Status check_read_scale_args(const UpcastArgs<T>& a, ReadPlan& plan) {
  const ScaleKind kind = a.scale_kind;
  if (Status s = check_scale_kind_fields(kind, a.k_scale, a.v_scale, a.k_head_scales, a.v_head_scales, a.k_scales, a.v_scales,
                                         !a.scales.is_default(), kReadScaleNames);
      !s)
    return s;
  plan.scale_policy = kind == ScaleKind::per_tensor ? ScalePolicyId::per_tensor
                      : kind == ScaleKind::per_head ? ScalePolicyId::per_head
                                                    : ScalePolicyId::per_token_head;
  // The kind's own fields, for each tensor the call reads and for no other.
  const bool has_k = a.k_cache != nullptr, has_v = a.v_cache != nullptr;
  if (kind == ScaleKind::per_head)
    if (Status s = check_scale_pair(a.k_head_scales, a.v_head_scales, "k_head_scales", "v_head_scales", has_k, has_v, kind, kReadScaleNames); !s)
      return s;
  if (kind == ScaleKind::per_token_head)
    if (Status s = check_scale_pair(a.k_scales, a.v_scales, "k_scales", "v_scales", has_k, has_v, kind, kReadScaleNames); !s) return s;
  if (kind != ScaleKind::per_token_head) return Status{};
  plan.scales = a.scales.or_contiguous(a.heads, 1);
  std::int64_t page_reach = 0;
  return check_layout(plan.scales, a.heads, 1, a.cache_rows, kReadScalesNames, page_reach, plan.scales_extent);
}

//! NVFP4's rules of a read (check_read_args, format nvfp4): head_dim a multiple of 16, one global
//! scale g a tensor (ScaleKind::per_tensor; any value: the read multiplies by it), and the block
//! scales, `head_dim / 16` bytes a row-head, placed by `block_scales` over the cache's rows.
template <class T>
Status check_nvfp4_read_args(const UpcastArgs<T>& a, ReadPlan& plan) {
  if (Status s = check_nvfp4_scale_kind(a.scale_kind); !s) return s;
  const bool has_k = a.k_cache != nullptr, has_v = a.v_cache != nullptr;
  if (Status s = check_block_scale_pair(a.k_block_scales, a.v_block_scales, has_k, has_v, kReadBlockScaleNames); !s) return s;
  plan.block_scales = a.block_scales.or_contiguous(a.heads, a.head_dim / nvfp4::kBlock);
  std::int64_t page_reach = 0;
  return check_layout(plan.block_scales, a.heads, a.head_dim / nvfp4::kBlock, a.cache_rows, kReadBlockScalesNames, page_reach,
                      plan.block_scales_extent);
}

//! Validates `a`, a read of `format` codes, and resolves it into `plan` (everything but the
//! kernel choice). Returns the first broken rule, naming the argument.
template <class T>
Status check_read_args(const UpcastArgs<T>& a, ReadPlan& plan, CodeFormat format = CodeFormat::fp8) {
  plan = ReadPlan{};
  plan.format = format;
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };
  constexpr std::int64_t kBytes = sizeof(T);
  const bool nvfp4 = format == CodeFormat::nvfp4;

  if (Status st = check_shape(a.num_tokens, a.heads, a.head_dim); !st) return st;
  if (Status st = check_format_fields(format, a.head_dim, a.k_block_scales, a.v_block_scales, !a.block_scales.is_default(),
                                      kReadBlockScaleNames);
      !st)
    return st;
  if (a.cache_rows == UpcastArgs<T>::kRowsNotGiven)
    return Status::error(Code::bad_option, "cache_rows is not set: give the cache's row count, so that no row outside it is read");
  if (a.cache_rows < 0) return Status::error(Code::bad_option, "cache_rows (%lld) must be >= 0", ll(a.cache_rows));
  if (a.num_tokens == 0) return Status{};  // empty tensors often have null data pointers

  // Pointers: a cache and its output come together; at least one.
  if (a.k_cache == nullptr && a.v_cache == nullptr)
    return Status::error(Code::null_pointer, "k_cache and v_cache are both null: give at least one cache to read");
  if (a.k_cache != nullptr && a.k == nullptr) return Status::error(Code::null_pointer, "k is null while k_cache is given");
  if (a.v_cache != nullptr && a.v == nullptr) return Status::error(Code::null_pointer, "v is null while v_cache is given");
  if (a.k_cache == nullptr && a.k != nullptr) return Status::error(Code::unexpected_pointer, "k is given while k_cache is null");
  if (a.v_cache == nullptr && a.v != nullptr) return Status::error(Code::unexpected_pointer, "v is given while v_cache is null");
  if (a.k != nullptr && a.k == a.v)
    return Status::error(Code::unexpected_pointer, "k and v are the same pointer: K and V would overwrite each other");
  if (!is_aligned(a.k, kBytes) || !is_aligned(a.v, kBytes))
    return Status::error(Code::bad_option, "%s is not aligned to its element size (%d bytes)", is_aligned(a.k, kBytes) ? "v" : "k",
                         static_cast<int>(kBytes));

  // Rows: slots, or a page table; the fields of the other form left unset.
  plan.page_table = a.block_table != nullptr || a.cu_seq_lens != nullptr;
  if (plan.page_table) {
    if (a.loc) return Status::error(Code::bad_option, "loc and block_table are both given: rows come from one or the other");
    if (a.mult != 1 || a.offset != 0)
      return Status::error(Code::bad_option, "mult (%lld) and offset (%lld) apply to loc's slots: with block_table they must be 1 and 0",
                           ll(a.mult), ll(a.offset));
    if (a.cu_seq_lens == nullptr) return Status::error(Code::null_pointer, "cu_seq_lens is null while block_table is given");
    if (a.batch < 0 || a.batch > std::numeric_limits<std::int32_t>::max() - 1)
      return Status::error(Code::bad_shape, "batch (%lld) must be in [0, 2^31-2]", ll(a.batch));
    // An empty batch (a [0, max_pages] table, whose data pointer may well be null) reads nothing.
    if (a.block_table == nullptr && a.batch > 0)
      return Status::error(Code::null_pointer, "block_table is null while cu_seq_lens is given with batch %lld", ll(a.batch));
    if (a.max_pages < (a.batch > 0 ? 1 : 0) || a.max_pages > std::numeric_limits<std::int32_t>::max())
      return Status::error(Code::bad_shape, "max_pages (%lld) must be in [1, 2^31-1] (0 allowed when batch is 0)", ll(a.max_pages));
    std::int64_t entries = 0;
    if (!mul_add(a.batch, a.max_pages, 0, entries))
      return Status::error(Code::overflow, "batch*max_pages (%lld*%lld) overflows int64", ll(a.batch), ll(a.max_pages));
    plan.page_size = a.page_size != 0 ? a.page_size : (a.cache.is_default() ? 1 : a.cache.block_size);
    if (plan.page_size < 1 || plan.page_size > std::numeric_limits<std::int32_t>::max())
      return Status::error(Code::bad_option, "page_size (%lld) must be in [1, 2^31-1] (0: the cache's block_size)", ll(plan.page_size));
    if (a.cache_rows % plan.page_size != 0)
      return Status::error(Code::bad_shape, "cache_rows (%lld) is not a multiple of page_size (%lld): the cache holds whole pages",
                           ll(a.cache_rows), ll(plan.page_size));
    plan.pages = a.cache_rows / plan.page_size;
  } else {
    if (a.seq_starts != nullptr)
      return Status::error(Code::unexpected_pointer, "seq_starts is given without block_table and cu_seq_lens: it belongs to the page-table form");
    if (a.batch != 0 || a.max_pages != 0 || a.page_size != 0)
      return Status::error(Code::bad_option, "%s (%lld) is set without block_table: it belongs to the page-table form",
                           a.batch != 0 ? "batch" : a.max_pages != 0 ? "max_pages" : "page_size",
                           ll(a.batch != 0 ? a.batch : a.max_pages != 0 ? a.max_pages : a.page_size));
    if (Status st = check_mult_offset(a.mult, a.offset); !st) return st;
    slot_bounds(a.mult, a.offset, a.cache_rows, plan.min_slot, plan.max_slot);
  }

  // Output strides: 0 means contiguous; otherwise non-negative and non-overlapping.
  plan.out_head_stride = a.out_head_stride == 0 ? a.head_dim : a.out_head_stride;
  plan.out_token_stride = a.out_token_stride;
  if (a.out_token_stride == 0 && !mul_add(a.heads, plan.out_head_stride, 0, plan.out_token_stride))
    return Status::error(Code::overflow, "heads*out_head_stride (%lld*%lld) overflows int64", ll(a.heads), ll(plan.out_head_stride));
  if (plan.out_head_stride < 0 || plan.out_token_stride < 0)
    return Status::error(Code::bad_stride, "%s (%lld) is negative", plan.out_head_stride < 0 ? "out_head_stride" : "out_token_stride",
                         ll(plan.out_head_stride < 0 ? plan.out_head_stride : plan.out_token_stride));
  std::int64_t out_row_reach = 0;  // elements one output token spans
  {
    Dim row[] = {{a.head_dim, 1, "element stride"}, {a.heads, plan.out_head_stride, "out_head_stride"}};
    if (Status s = check_no_overlap(row, 2, "output heads", out_row_reach); !s) return s;
    Dim dims[] = {{a.head_dim, 1, "element stride"},
                  {a.heads, plan.out_head_stride, "out_head_stride"},
                  {a.num_tokens, plan.out_token_stride, "out_token_stride"}};
    if (Status s = check_no_overlap(dims, 3, "output elements", plan.out_extent); !s) return s;
  }

  // The cache's layout (in bytes, a row-head head_dim codes' bytes): all-zero means contiguous.
  const std::int64_t code_bytes = nvfp4 ? a.head_dim / kvcast::nvfp4::kCodesPerByte : a.head_dim;
  plan.cache = a.cache.or_contiguous(a.heads, code_bytes);
  std::int64_t page_reach = 0;
  if (Status s = check_layout(plan.cache, a.heads, code_bytes, a.cache_rows, kCacheNames, page_reach, plan.cache_extent); !s) return s;

  if (Status s = nvfp4 ? check_nvfp4_read_args(a, plan) : check_read_scale_args(a, plan); !s) return s;

  // Nothing the call writes may be read by it or written twice: the outputs apart from each
  // other (token for token, when they interleave in one workspace) and from every cache and
  // scale tensor.
  std::int64_t out_bytes = 0, out_stride_bytes = 0, out_reach_bytes = 0, scale_bytes = 0;
  if (!mul_add(plan.out_extent, kBytes, 0, out_bytes) || !mul_add(plan.out_token_stride, kBytes, 0, out_stride_bytes) ||
      !mul_add(out_row_reach, kBytes, 0, out_reach_bytes) || !mul_add(plan.scales_extent, 4, 0, scale_bytes))
    return Status::error(Code::overflow, "the outputs' extent in bytes overflows int64");
  const std::int64_t tokens_as_pages = a.num_tokens > 1 ? out_stride_bytes : 0;
  const Region k_out{a.k, out_bytes, 1, tokens_as_pages, out_reach_bytes};
  const Region v_out{a.v, out_bytes, 1, tokens_as_pages, out_reach_bytes};
  if (a.k != nullptr && a.v != nullptr && !disjoint(k_out, v_out))
    return Status::error(Code::bad_stride, "k and v overlap: K's and V's values would overwrite each other");
  const Region read[] = {{a.k_cache, plan.cache_extent, 0, 0, 0},
                         {a.v_cache, plan.cache_extent, 0, 0, 0},
                         {a.k_scales, scale_bytes, 0, 0, 0},
                         {a.v_scales, scale_bytes, 0, 0, 0},
                         {a.k_block_scales, plan.block_scales_extent, 0, 0, 0},
                         {a.v_block_scales, plan.block_scales_extent, 0, 0, 0}};
  const char* read_names[] = {"k_cache", "v_cache", "k_scales", "v_scales", "k_block_scales", "v_block_scales"};
  for (int r = 0; r < 6; ++r) {
    if (read[r].base == nullptr) continue;
    if (a.k != nullptr && !disjoint(k_out, read[r]))
      return Status::error(Code::bad_stride, "k overlaps %s: the read would overwrite what it reads", read_names[r]);
    if (a.v != nullptr && !disjoint(v_out, read[r]))
      return Status::error(Code::bad_stride, "v overlaps %s: the read would overwrite what it reads", read_names[r]);
  }

  // Segments: heads fuse into one run when they are back to back in the cache and the output,
  // and one scale serves them all.
  // NVFP4's block scales have their own layout: its heads stay apart.
  const bool fuse = a.heads == 1 || (!nvfp4 && a.scale_kind == ScaleKind::per_tensor && plan.cache.head_stride == a.head_dim &&
                                     plan.out_head_stride == a.head_dim);
  if (Status st = cut_segments(a.num_tokens, a.heads, a.head_dim, fuse, plan.segs_per_token, plan.seg_len, plan.num_segments,
                               plan.elements);
      !st)
    return st;
  if (plan.page_table && a.batch == 0) plan.num_segments = 0;  // no sequence: every output token is left as it is
  return Status{};
}

//! The kernel for a validated read, into `plan.kernel` and `plan.choice`. Segments of
//! kRowWarpElements fp8 codes (one MLA head of 576) take a warp each where every pointer and stride
//! allows its pieces (read_row_warp_kernel). Otherwise the widest vector (tuning::kReadVectors)
//! that the segment's length and every pointer and stride a vector's start depends on allow, in
//! the cache (codes) and the output (stores of up to 16 bytes of T, read_piece; NVFP4's whole
//! blocks up to 32); otherwise one code an access.
template <class T>
void choose_read_kernel(const UpcastArgs<T>& a, ReadPlan& plan) {
  constexpr std::int64_t kBytes = sizeof(T);
  KernelChoice c;
  const bool fused = plan.segs_per_token == 1;
  const OutputLayout& cache = plan.cache;
  // Whether every pointer and stride a vector's start depends on allows vectors of `v` values:
  // loads of `code_bytes` from the cache, stores of up to `widest_store` bytes of T; the head
  // strides count where `heads_apart`.
  const auto vector_fits = [&](int v, std::int64_t code_bytes, std::int64_t widest_store, bool heads_apart) {
    const std::int64_t store_bytes = std::min<std::int64_t>(v * kBytes, widest_store);
    const bool cache_ok = is_aligned(a.k_cache, code_bytes) && is_aligned(a.v_cache, code_bytes) && cache.block_stride % code_bytes == 0 &&
                          (cache.block_size == 1 || cache.token_stride % code_bytes == 0) &&
                          (!heads_apart || cache.head_stride % code_bytes == 0);
    const bool out_ok = is_aligned(a.k, store_bytes) && is_aligned(a.v, store_bytes) &&
                        (a.num_tokens == 1 || (plan.out_token_stride * kBytes) % store_bytes == 0) &&
                        (!heads_apart || (plan.out_head_stride * kBytes) % store_bytes == 0);
    return cache_ok && out_ok;
  };
  // A warp a row: one slot or page-table walk a row instead of one a chunk of 64 codes (power-of-
  // two groups cut 576 codes into 9 chunks, each resolving the row again). Its loads are pieces
  // of one 16-byte store of T (8 codes of 16-bit values, 4 of fp32) and 2-code side vectors.
  plan.kernel = ReadKernel::general;
  constexpr int kRowWarpPiece = kReadPieceBytes / static_cast<int>(kBytes);
  if (plan.format == CodeFormat::fp8 && plan.seg_len == kRowWarpElements && vector_fits(kRowWarpPiece, kRowWarpPiece, kReadPieceBytes, !fused)) {
    plan.kernel = ReadKernel::row_warp;
    c.set_warp_a_segment(plan.num_segments);
    plan.choice = c;
    return;
  }
  if (plan.format == CodeFormat::nvfp4) {
    // A block a thread (kNvfp4ReadVec codes, 8 bytes), whole where one 8-byte load and the
    // stores fit, else one element an access.
    c.vec = kNvfp4ReadVec;
    c.access = vector_fits(kNvfp4ReadVec, kNvfp4ReadVec / nvfp4::kCodesPerByte, kMaxVectorBytes, true) ? tile::Access::vector : tile::Access::elements;
  }
  for (int v : tuning::kReadVectors) {
    if (c.vec != 0 || plan.seg_len % v != 0 || !read_kernel_exists(v, tile::Access::vector)) continue;
    if (vector_fits(v, v, kReadPieceBytes, !fused)) c.vec = v;
  }
  if (c.vec == 0) {
    c.access = tile::Access::interleaved;
    c.vec = tuning::kElementWiseVector;
  }
  // A group of 2^log2_group threads walks a chunk of a segment, a vector each (interleaved: at
  // least a warp); a CTA holds kBlockSize >> log2_group groups; the grid holds the CTAs of
  // segments and the chunks of a segment (vector_group_log2: few idle threads).
  const std::int64_t items = (plan.seg_len + c.vec - 1) / c.vec;
  c.log2_group = c.access == tile::Access::interleaved ? std::max(std::min(log2_ceil(items), log2_ceil(kBlockSize)), log2_ceil(kLanes))
                                                        : vector_group_log2(items);
  const std::int64_t groups_per_cta = std::int64_t{kBlockSize} >> c.log2_group;
  const std::int64_t ctas = (plan.num_segments + groups_per_cta - 1) / groups_per_cta;
  const std::int64_t chunks = (items + (std::int64_t{1} << c.log2_group) - 1) >> c.log2_group;
  // Rows of several chunks: a row's chunks in neighbouring CTAs, which run together, so that
  // each row's codes are read and its values written at once, not in one sweep of the whole
  // call a chunk (NOTES #16k: 1.05-1.27x on 576-code rows, level at one chunk a row).
  const bool chunks_first = chunks > 1 && ctas <= kMaxGridY;
  c.set_grid(ctas, chunks, chunks_first);
  plan.choice = c;
}

}  // namespace detail

//! Validates `args` and plans the read of `format` codes: detail::check_read_args, then
//! detail::choose_read_kernel. Zero tokens is valid (and launches nothing) once the sizes are
//! sane and cache_rows is given.
template <class T>
Status make_read_plan(const UpcastArgs<T>& args, detail::ReadPlan& plan, CodeFormat format = CodeFormat::fp8) {
  if (Status s = detail::check_read_args(args, plan, format); !s) return s;
  if (plan.num_segments == 0) return Status{};
  detail::choose_read_kernel(args, plan);
  return Status{};
}

}  // namespace kvcast
