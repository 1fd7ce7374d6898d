// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file plan.hpp
//! Validation of DowncastArgs and the launch plan derived from them (vector width, how heads
//! are grouped, slot bounds). Plain C++: it runs before any CUDA call, so the CPU tests and
//! the fuzzer exercise exactly the code the launcher runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "args.hpp"
#include "config.cuh"
#include "format.hpp"
#include "status.hpp"

namespace kvcast {
namespace detail {

//! Division by a run-time constant with a multiply and a shift (Granlund & Montgomery's
//! round-up method): exact for every 32-bit dividend and every divisor >= 1.
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

//! How a validated call is carried out. Work is cut into segments: a token's whole row when
//! heads are contiguous in both input and output (they fuse into one run), otherwise one head.
//! A group of 2^log2_group threads walks a segment in vectors of `vec` elements, each moved
//! `access` elements per memory instruction (`vec` when every pointer and stride allows that
//! vector, else 1); the last vector of a segment may be partial (the tail, done element by element).
struct Plan {
  //! One segment per token, a flat output, K and V both given: the serving engines' call,
  //! which takes a kernel without head split, page arithmetic or null checks.
  bool dense = false;
  int vec = 1;
  int access = 1;
  int log2_group = 0;
  std::int64_t segs_per_token = 1;
  std::int64_t seg_len = 0;
  std::int64_t items_per_seg = 0;
  std::int64_t chunks_per_seg = 1;  //!< groups of 2^log2_group threads per segment
  //! Grid x walks the chunks of a segment and y the segments (the default is the other way
  //! round): a large call's consecutive CTAs then cover a row from its start to its end.
  bool chunks_first = false;
  //! The dense call of 16-bit inputs with no vector access legal, above kSmallCall elements a
  //! tensor: the realigned kernel (whole 16-byte loads and stores, codes moved between the
  //! input's and the output's alignment in registers) instead of one element at a time.
  bool realign = false;
  std::int64_t num_segments = 0;
  std::int64_t in_token_stride = 0;
  std::int64_t in_head_stride = 0;
  OutputLayout out{};
  //! Rows `slot * mult + offset` are in range exactly for slots in [min_slot, max_slot].
  std::int64_t min_slot = 0;
  std::int64_t max_slot = 0;
  //! Elements from k/v (and bytes from k_out/v_out) the call can touch; out_extent is -1
  //! when out_rows is unchecked.
  std::int64_t in_extent = 0;
  std::int64_t out_extent = -1;
};

constexpr int kMaxVectorBytes = 32;
constexpr int kMaxVectorElements = 16;
constexpr int kUnalignedVector = 8;  // fewest elements a thread when only scalar accesses are legal
constexpr std::int64_t kTinyCall = std::int64_t{1} << 11;    // elements a tensor: see make_plan
constexpr std::int64_t kDecodeCall = std::int64_t{1} << 18;  // elements a tensor: see make_plan
constexpr std::int64_t kSmallCall = std::int64_t{1} << 21;
constexpr std::int64_t kLargeCall = std::int64_t{1} << 23;  // elements a tensor: see make_plan
constexpr std::int64_t kMaxGridY = 65535;
constexpr int kChunksFirstMinBytes = 16;  // input bytes a thread: see make_plan
// A row spans at most 2^24 / (2 * 256) = 2^15 chunks of threads: grid y holds them.
constexpr std::int64_t kMaxRowElements = std::int64_t{1} << 24;
constexpr int kBlockSize = 256;
// Elements a warp of the realigned kernel takes from a row: 32 lanes x 16 (downcast.cuh).
constexpr std::int64_t kRealignRun = 512;
constexpr std::int64_t kMaxOffset = std::int64_t{1} << 62;
constexpr std::int64_t kMaxMult = (std::int64_t{1} << 31) - 1;

// a * b + c, false on int64 overflow (all operands >= 0).
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

// Checks that a strided map of `count` dims never sends two indices to one address: sorted by
// stride, each stride must reach past everything the smaller dims span. On success `reach` is
// one past the largest offset (the number of elements the map spans).
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

inline bool aligned(const void* p, std::int64_t bytes) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
}

//! Smallest l with 2^l >= n. Also the kernel's log2 of its block size, at compile time.
KVCAST_HOST_DEVICE constexpr int log2_ceil(std::int64_t n) {
  int l = 0;
  while ((std::int64_t{1} << l) < n) ++l;
  return l;
}

}  // namespace detail

//! Validates `args` and derives the launch plan. Returns the first broken rule, naming the
//! argument; on success `plan` is filled. Zero tokens is valid (and launches nothing) once the
//! sizes are sane: empty tensors often have null data pointers.
//! `mode`, the arithmetic of the kernel to launch, steers only the vector width.
template <class T>
Status make_plan(const DowncastArgs<T>& a, detail::Plan& plan, Arithmetic mode = Arithmetic::fp32) {
  using detail::Dim;
  plan = detail::Plan{};
  const auto ll = [](std::int64_t x) { return static_cast<long long>(x); };

  if (a.num_tokens < 0) return Status::error(Code::bad_shape, "num_tokens (%lld) is negative", ll(a.num_tokens));
  if (a.heads < 1) return Status::error(Code::bad_shape, "heads (%lld) must be >= 1", ll(a.heads));
  if (a.head_dim < 1) return Status::error(Code::bad_shape, "head_dim (%lld) must be >= 1", ll(a.head_dim));
  std::int64_t row_elems = 0;
  if (!detail::mul_add(a.heads, a.head_dim, 0, row_elems) || row_elems > detail::kMaxRowElements)
    return Status::error(Code::bad_shape, "heads*head_dim (%lld*%lld) exceeds 2^24", ll(a.heads), ll(a.head_dim));
  if (a.num_tokens == 0) return Status{};

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
  if (!detail::aligned(a.k, sizeof(T)) || !detail::aligned(a.v, sizeof(T)))
    return Status::error(Code::bad_option, "%s is not aligned to its element size (%d bytes)",
                         detail::aligned(a.k, sizeof(T)) ? "v" : "k", static_cast<int>(sizeof(T)));

  // Options.
  if (a.mult < 1 || a.mult > detail::kMaxMult)
    return Status::error(Code::bad_option, "mult (%lld) must be in [1, 2^31-1]", ll(a.mult));
  if (a.offset < -detail::kMaxOffset || a.offset > detail::kMaxOffset)
    return Status::error(Code::bad_option, "offset (%lld) must be within +-2^62", ll(a.offset));
  if (a.out_rows < DowncastArgs<T>::kUncheckedRows)
    return Status::error(Code::bad_option, "out_rows (%lld) must be >= 0, or kUncheckedRows (-1)", ll(a.out_rows));
  if (a.out_capacity >= 0 && a.out_rows < 0)
    return Status::error(Code::bad_option, "out_capacity (%lld) is given but out_rows is unchecked: rows can't be bounded",
                         ll(a.out_capacity));

  // Input strides: 0 means contiguous; otherwise non-negative and non-overlapping.
  plan.in_head_stride = a.in_head_stride == 0 ? a.head_dim : a.in_head_stride;
  plan.in_token_stride = a.in_token_stride;
  if (a.in_token_stride == 0 && !detail::mul_add(a.heads, plan.in_head_stride, 0, plan.in_token_stride))
    return Status::error(Code::overflow, "heads*in_head_stride (%lld*%lld) overflows int64", ll(a.heads), ll(plan.in_head_stride));
  if (plan.in_head_stride < 0 || plan.in_token_stride < 0)
    return Status::error(Code::bad_stride, "%s (%lld) is negative", plan.in_head_stride < 0 ? "in_head_stride" : "in_token_stride",
                         ll(plan.in_head_stride < 0 ? plan.in_head_stride : plan.in_token_stride));
  {
    Dim dims[] = {{a.head_dim, 1, "element stride"},
                  {a.heads, plan.in_head_stride, "in_head_stride"},
                  {a.num_tokens, plan.in_token_stride, "in_token_stride"}};
    if (Status s = detail::check_no_overlap(dims, 3, "input elements", plan.in_extent); !s) return s;
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
    if (Status s = detail::check_no_overlap(dims, 3, flat ? "output heads" : "output rows of a page", page_reach); !s) return s;
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
    if (!detail::mul_add(last / out.block_size, out.block_stride, 0, base) ||
        !detail::mul_add(last % out.block_size, out.token_stride, base, base) ||
        !detail::mul_add(1, base, a.head_dim, base) ||
        !detail::mul_add(a.heads - 1, out.head_stride, base, plan.out_extent))
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

  // Grouping: heads fuse into one run when they are back to back in input and output.
  const bool fuse = a.heads == 1 || (plan.in_head_stride == a.head_dim && out.head_stride == a.head_dim);
  plan.segs_per_token = fuse ? 1 : a.heads;
  plan.dense = fuse && flat && a.k != nullptr && a.v != nullptr;
  plan.seg_len = fuse ? row_elems : a.head_dim;
  if (!detail::mul_add(a.num_tokens, plan.segs_per_token, 0, plan.num_segments) ||
      plan.num_segments > std::numeric_limits<std::int32_t>::max())
    return Status::error(Code::bad_shape, "num_tokens*heads (%lld*%lld) exceeds 2^31-1", ll(a.num_tokens), ll(a.heads));

  // Widest vector legal for every pointer and every stride a vector start depends on; when none
  // is, as many elements a thread as the cap below (at least kUnalignedVector, at most 32 bytes
  // of input), moved one element at a time and interleaved with the warp's other lanes (each
  // warp-wide access is one coalesced run). The cap grows with the call: up to kDecodeCall
  // elements a tensor, 4 (the call is all latency: more threads, each with a shorter chain of
  // instructions after its loads, finish sooner; measured on the H100, 0.05-0.15 us less than 8
  // below 2^18 elements, and slower than 8 from 2^20); up to kSmallCall, 8; beyond, 16 (fewer,
  // wider accesses once bandwidth is what counts).
  std::int64_t elements = 0;
  detail::mul_add(a.num_tokens, row_elems, 0, elements);
  // fp32 mode's bracket takes two products and two conversions a pair, so its chain a thread
  // is longer: for the smallest calls, up to kTinyCall elements a tensor, 2 elements a thread
  // (the H100: 1x8x128 and 1x8x256, 0.025-0.06 us less than 4 hot and cold; mixed from 4096
  // elements up).
  const int widest = mode == Arithmetic::fp32 && elements <= detail::kTinyCall ? 2
                     : elements <= detail::kDecodeCall                        ? 4
                     : elements <= detail::kSmallCall                         ? 8
                                                                              : detail::kMaxVectorElements;
  plan.vec = std::max(detail::kUnalignedVector, std::min(widest, detail::kMaxVectorBytes / static_cast<int>(sizeof(T))));
  plan.access = 1;
  // Input precision converts in half the registers of fp32 mode, so twice the CTAs fit on an
  // SM. With 16-bit inputs and 16-element vectors, that keeps 128 KB an SM in flight, twice
  // what fp32 mode and SGLang's design keep, and DRAM serves it worse: 8-element vectors are
  // 0.5-4.8% faster cold at every size above kSmallCall on the H100 (hot, -1.8..+5.9%).
  const int widest_vector = mode == Arithmetic::input_precision && sizeof(T) == 2 ? std::min(widest, 8) : widest;
  for (int v = widest_vector; v >= 2; v /= 2) {
    if (v * static_cast<std::int64_t>(sizeof(T)) > detail::kMaxVectorBytes || v > plan.seg_len) continue;
    const bool in_ok = detail::aligned(a.k, v * sizeof(T)) && detail::aligned(a.v, v * sizeof(T)) &&
                       (a.num_tokens == 1 || plan.in_token_stride % v == 0) &&
                       (fuse || plan.in_head_stride % v == 0);
    const bool out_ok = detail::aligned(a.k_out, v) && detail::aligned(a.v_out, v) && out.block_stride % v == 0 &&
                        (flat || out.token_stride % v == 0) && (fuse || out.head_stride % v == 0);
    if (in_ok && out_ok) {
      plan.vec = v;
      plan.access = v;
      break;
    }
  }
  plan.items_per_seg = (plan.seg_len + plan.vec - 1) / plan.vec;
  plan.log2_group = std::min(detail::log2_ceil(plan.items_per_seg), detail::log2_ceil(detail::kBlockSize));
  // Element by element, a group is at least a warp: its lanes interleave a constant 32 apart
  // (downcast_kernel), which makes every element's address an immediate offset. A row shorter
  // than a warp's 32 * vec elements spreads over all 32 lanes, fewer elements each.
  if (plan.access == 1) plan.log2_group = std::max(plan.log2_group, 5);
  plan.chunks_per_seg = (plan.items_per_seg + (std::int64_t{1} << plan.log2_group) - 1) >> plan.log2_group;
  // Chunks first: for rows of several chunks in a call above kLargeCall elements a tensor
  // (traffic beyond the H100's 50 MB L2). The hardware dispatches CTAs in x order; with the
  // chunks on x, the CTAs in flight read and write whole rows instead of the first chunk of
  // many rows. Measured on the H100 at heads x dim 32 x 256 (2 chunks): 0.7-1.7% faster from
  // 2048 tokens up, both modes, hot and cold; at 512-1024 tokens mixed (input precision, hot:
  // 4% slower), hence the threshold. Grid y holds at most 65535 CTAs of segments (a row of
  // several chunks fills a CTA, see log2_group): bigger calls keep the default order. Vectors
  // of at least 16 bytes only, which such calls take unless misaligned: the launcher
  // instantiates chunks-first kernels for those alone.
  // Realigned: a dense call of 16-bit inputs that would go element by element, 16 a thread.
  // Each of its warps loads a row's input as whole 16-byte halves from the input's 16-byte
  // boundaries, and stores whole 16-byte blocks at the output's (downcast_realigned_kernel).
  plan.realign = plan.dense && plan.access == 1 && sizeof(T) == 2 && plan.vec == detail::kMaxVectorElements;
  if (plan.realign) {
    // Its runs start at the 16-byte boundary at or before a row's element 0, 512, ...: up to
    // 16 / sizeof(T) - 1 elements before it, fewer where every row of K and V sits alike.
    const std::int64_t most = 16 / static_cast<std::int64_t>(sizeof(T)) - 1;
    const bool rows_alike = a.num_tokens == 1 || (plan.in_token_stride * static_cast<std::int64_t>(sizeof(T))) % 16 == 0;
    const auto lead = [&](const T* p) {
      return rows_alike ? static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p) % 16 / sizeof(T)) : most;
    };
    plan.chunks_per_seg = (plan.seg_len + std::max(lead(a.k), lead(a.v)) + detail::kRealignRun - 1) / detail::kRealignRun;
  }
  plan.chunks_first = !plan.realign && plan.vec * static_cast<int>(sizeof(T)) >= detail::kChunksFirstMinBytes &&
                      plan.chunks_per_seg > 1 && elements > detail::kLargeCall && plan.num_segments <= detail::kMaxGridY;
  return Status{};
}

//! Validation alone: the same checks the launcher makes, with no CUDA call.
template <class T>
Status validate(const DowncastArgs<T>& args) {
  detail::Plan plan;
  return make_plan(args, plan);
}

}  // namespace kvcast
