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
};

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
  int block = kBlockSize;                       //!< threads a CTA

  //! Chunks (groups of threads) a segment is cut into; for the realigned kernel, runs a row.
  std::int64_t chunks() const { return order == GridOrder::chunks_first ? grid_x : grid_y; }
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

//! The write kernels that exist (are instantiated) for an input of `input_bytes` bytes in
//! `mode`: the planner chooses among these alone, and dispatch instantiates these alone. Each
//! earns its place by a measured gain (tuning.hpp cites them):
//!  - vectors from the narrowest the tuning tiers ask for in `mode` up to the widest
//!    (tuning::widest_vector's cap: 16 for 16-bit inputs in fp32 mode, else 8); narrower ones
//!    would only be alignment fallbacks, which the interleaved kernels serve;
//!  - 2-element vectors (fp32 mode's tiniest calls) in the dense kernel alone;
//!  - element by element (interleaved): 8 a thread, and 16 for 16-bit inputs in large general
//!    calls, the dense call of that size taking the realigned kernel.
constexpr bool write_kernel_exists(WriteKernel kernel, int vec, tile::Access access, int input_bytes, Arithmetic mode) {
  if (kernel == WriteKernel::realigned)
    return input_bytes == 2 && vec == kRealignVec && access == tile::Access::interleaved;
  if (access == tile::Access::interleaved)
    return vec == tuning::kElementWiseVector || (kernel == WriteKernel::general && input_bytes == 2 && vec == 16);
  if (vec < tuning::narrowest_vector(mode) || vec > tuning::widest_vector(std::numeric_limits<std::int64_t>::max(), mode, input_bytes))
    return false;
  return vec == 4 || vec == 8 || vec == 16 || (vec == 2 && kernel == WriteKernel::dense);
}

//! Validates `a` and resolves it into `plan` (everything but the kernel choice). Returns the
//! first broken rule, naming the argument.
template <class T>
Status check_args(const DowncastArgs<T>& a, Plan& plan) {
  plan = Plan{};
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };

  if (a.num_tokens < 0) return Status::error(Code::bad_shape, "num_tokens (%lld) is negative", ll(a.num_tokens));
  if (a.heads < 1) return Status::error(Code::bad_shape, "heads (%lld) must be >= 1", ll(a.heads));
  if (a.head_dim < 1) return Status::error(Code::bad_shape, "head_dim (%lld) must be >= 1", ll(a.head_dim));
  std::int64_t row_elems = 0;
  if (!mul_add(a.heads, a.head_dim, 0, row_elems) || row_elems > kMaxSegmentElements)
    return Status::error(Code::bad_shape, "heads*head_dim (%lld*%lld) exceeds 2^24", ll(a.heads), ll(a.head_dim));
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
  if (a.mult < 1 || a.mult > kMaxMult)
    return Status::error(Code::bad_option, "mult (%lld) must be in [1, 2^31-1]", ll(a.mult));
  if (a.offset < -kMaxOffset || a.offset > kMaxOffset)
    return Status::error(Code::bad_option, "offset (%lld) must be within +-2^62", ll(a.offset));
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

  // Output layout: all-zero means contiguous.
  const OutputLayout& o = a.out;
  plan.out = (o.block_size == 1 && o.block_stride == 0 && o.token_stride == 0 && o.head_stride == 0)
                 ? OutputLayout::contiguous(a.heads, a.head_dim)
                 : o;
  const OutputLayout& out = plan.out;
  const bool flat = out.block_size == 1;
  if (out.block_size < 1) return Status::error(Code::bad_option, "out.block_size (%lld) must be >= 1", ll(out.block_size));
  if (out.block_stride < 0 || out.token_stride < 0 || out.head_stride < 0)
    return Status::error(Code::bad_stride, "out.%s (%lld) is negative",
                         out.block_stride < 0 ? "block_stride" : out.token_stride < 0 ? "token_stride" : "head_stride",
                         ll(std::min({out.block_stride, out.token_stride, out.head_stride})));
  std::int64_t page_reach = 0;
  {
    Dim dims[] = {{a.head_dim, 1, "element stride"},
                  {a.heads, out.head_stride, "out.head_stride"},
                  {flat ? 1 : out.block_size, out.token_stride, "out.token_stride"}};
    if (Status s = check_no_overlap(dims, 3, flat ? "output heads" : "output rows of a page", page_reach); !s) return s;
  }
  const bool many_pages = a.out_rows < 0 || a.out_rows > out.block_size;
  if (many_pages && out.block_stride < page_reach)
    return Status::error(Code::bad_stride, "%s (%lld) < %lld, the span of one %s: %s would overlap",
                         flat ? "out.token_stride" : "out.block_stride", ll(out.block_stride), ll(page_reach),
                         flat ? "row" : "page", flat ? "rows" : "pages");
  if (a.out_rows > 0) {
    const std::int64_t last = a.out_rows - 1;
    std::int64_t base = 0;
    // The last row ends last: pages don't overlap, so earlier pages end before its page
    // starts, and earlier rows of its page sit at smaller in-page offsets.
    if (!mul_add(last / out.block_size, out.block_stride, 0, base) ||
        !mul_add(last % out.block_size, out.token_stride, base, base) || !mul_add(1, base, a.head_dim, base) ||
        !mul_add(a.heads - 1, out.head_stride, base, plan.out_extent))
      return Status::error(Code::overflow, "out_rows (%lld) with this layout addresses beyond int64", ll(a.out_rows));
  } else if (a.out_rows == 0) {
    plan.out_extent = 0;
  }
  if (a.out_capacity >= 0 && plan.out_extent > a.out_capacity)
    return Status::error(Code::bad_shape, "out_capacity (%lld) < %lld, the bytes out_rows rows span", ll(a.out_capacity),
                         ll(plan.out_extent));

  // Slot bounds: row = slot*mult + offset in [0, R-1] <=> slot in [min_slot, max_slot].
  {
    const std::int64_t m = a.mult, off = a.offset;
    const std::int64_t last_row = a.out_rows >= 0 ? a.out_rows - 1 : std::numeric_limits<std::int64_t>::max();
    plan.min_slot = off >= 0 ? -(off / m) : (-off + m - 1) / m;
    if (last_row < 0) {
      plan.max_slot = plan.min_slot - 1;  // empty range
    } else if (off >= 0) {
      plan.max_slot = last_row >= off ? (last_row - off) / m : -((off - last_row + m - 1) / m);
    } else {
      const std::int64_t q = last_row / m, r = last_row % m;
      const std::int64_t extra = (r + (-off)) / m;
      plan.max_slot = q > std::numeric_limits<std::int64_t>::max() - extra ? std::numeric_limits<std::int64_t>::max() : q + extra;
    }
  }

  // Segments: heads fuse into one run when they are back to back in input and output.
  const bool fuse = a.heads == 1 || (plan.in_head_stride == a.head_dim && out.head_stride == a.head_dim);
  plan.segs_per_token = fuse ? 1 : a.heads;
  plan.seg_len = fuse ? row_elems : a.head_dim;
  plan.dense = fuse && flat && a.k != nullptr && a.v != nullptr;
  if (!mul_add(a.num_tokens, plan.segs_per_token, 0, plan.num_segments) ||
      plan.num_segments > std::numeric_limits<std::int32_t>::max())
    return Status::error(Code::bad_shape, "num_tokens*heads (%lld*%lld) exceeds 2^31-1", ll(a.num_tokens), ll(a.heads));
  mul_add(a.num_tokens, row_elems, 0, plan.elements);  // <= in_extent: no overflow
  return Status{};
}

//! Whether every output row-head of a validated call starts at a multiple of `bytes`: k_out,
//! v_out and the layout's strides (the head stride only when a row's heads are written apart).
template <class T>
bool outputs_allow(const DowncastArgs<T>& a, const Plan& plan, std::int64_t bytes, bool heads_apart) {
  return is_aligned(a.k_out, bytes) && is_aligned(a.v_out, bytes) && plan.out.block_stride % bytes == 0 &&
         (plan.out.block_size == 1 || plan.out.token_stride % bytes == 0) && (!heads_apart || plan.out.head_stride % bytes == 0);
}

//! The kernel for a validated call (check_args), from the tuning table. The widest vector the
//! call's size and `mode` allow that every pointer and every stride a vector start depends on
//! allows too; where none does, one element an access, the warp's lanes interleaved.
template <class T>
KernelChoice choose_kernel(const DowncastArgs<T>& a, const Plan& plan, Arithmetic mode) {
  constexpr int kBytes = static_cast<int>(sizeof(T));
  KernelChoice c;
  const bool fused = plan.segs_per_token == 1;
  const WriteKernel kernel = plan.dense ? WriteKernel::dense : WriteKernel::general;
  const int widest = tuning::widest_vector(plan.elements, mode, kBytes);
  for (int v = widest; v >= 2 && c.vec == 0; v /= 2) {
    if (v > plan.seg_len) continue;
    const bool in_ok = is_aligned(a.k, std::int64_t{v} * kBytes) && is_aligned(a.v, std::int64_t{v} * kBytes) &&
                       (a.num_tokens == 1 || plan.in_token_stride % v == 0) && (fused || plan.in_head_stride % v == 0);
    if (in_ok && outputs_allow(a, plan, v, !fused) && write_kernel_exists(kernel, v, tile::Access::vector, kBytes, mode)) {
      c.vec = v;
      c.kernel = kernel;
    }
  }
  if (c.vec == 0) {
    c.access = tile::Access::interleaved;
    const bool large = kBytes == 2 && plan.elements > tuning::kElementWiseWideAbove;
    if (plan.dense && kBytes == 2 && plan.elements > tuning::kRealignAbove) {
      c.kernel = WriteKernel::realigned;
      c.vec = kRealignVec;
    } else {
      c.kernel = plan.dense ? WriteKernel::dense : WriteKernel::general;
      c.vec = large && !plan.dense ? 16 : tuning::kElementWiseVector;
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
  if (c.access == tile::Access::interleaved) c.log2_group = std::max(c.log2_group, log2_ceil(kLanes));
  const std::int64_t chunks = (items + (std::int64_t{1} << c.log2_group) - 1) >> c.log2_group;
  const std::int64_t groups_per_cta = std::int64_t{kBlockSize} >> c.log2_group;
  const std::int64_t ctas = (plan.num_segments + groups_per_cta - 1) / groups_per_cta;
  static_assert(tuning::kRealignAbove <= tuning::kChunksFirstAbove,
                "The dense call goes element by element only below chunks first's size (write_kernel).");
  const bool chunks_first = c.vec * kBytes >= kChunksFirstMinVectorBytes && chunks > 1 &&
                            !(c.kernel == WriteKernel::dense && c.access == tile::Access::interleaved) &&
                            plan.elements > tuning::kChunksFirstAbove && ctas <= kMaxGridY;
  c.order = chunks_first ? GridOrder::chunks_first : GridOrder::segments_first;
  c.grid_x = chunks_first ? chunks : ctas;
  c.grid_y = chunks_first ? ctas : chunks;
  return c;
}

}  // namespace detail

//! Validates `args` and plans the call: detail::check_args, then detail::choose_kernel for the
//! kernel of arithmetic `mode`. Zero tokens is valid (and launches nothing) once the sizes are
//! sane and out_rows is given: empty tensors often have null data pointers.
template <class T>
Status make_plan(const DowncastArgs<T>& args, detail::Plan& plan, Arithmetic mode = Arithmetic::fp32) {
  if (Status s = detail::check_args(args, plan); !s || plan.num_segments == 0) return s;
  plan.choice = detail::choose_kernel(args, plan, mode);
  return Status{};
}

}  // namespace kvcast
