// libFuzzer target over kvcast's host-side validation (plain C++, built with clang's
// -fsanitize=fuzzer,address,undefined). For arbitrary sizes, strides, offsets, flags and pointer
// alignments it checks that make_plan (the write) never crashes, never overflows, and never
// accepts an argument set that would touch memory outside what it reports (and outside the
// capacities given), make two elements share an address, or pick a vector width some pointer
// or stride does not allow; and the same of make_read_plan (the read), every fourth input (a
// quarter of those NVFP4 reads, their block scales too), and of the NVFP4 write (its block scales
// too), every eighth.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz/validate_fuzzer.cpp -o validate_fuzzer
//   ./validate_fuzzer -max_total_time=60
#include <fuzzer/FuzzedDataProvider.h>

#include <kvcast/detail/plan.hpp>
#include <kvcast/detail/read_plan.hpp>
#include <kvcast/reference.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace {

using T = kvcast::ref::BFloat16;
using i128 = __int128;

[[noreturn]] void fail(const char* what, const kvcast::DowncastArgs<T>& a) {
  std::fprintf(stderr,
               "validate_fuzzer: %s\n  tokens %lld heads %lld dim %lld in %lld/%lld out B=%lld bs=%lld ts=%lld hs=%lld rows %lld "
               "mult %lld offset %lld\n",
               what, (long long)a.num_tokens, (long long)a.heads, (long long)a.head_dim, (long long)a.in_token_stride,
               (long long)a.in_head_stride, (long long)a.out.block_size, (long long)a.out.block_stride,
               (long long)a.out.token_stride, (long long)a.out.head_stride, (long long)a.out_rows, (long long)a.mult,
               (long long)a.offset);
  std::abort();
}

std::int64_t pick(FuzzedDataProvider& in, std::int64_t small_max) {
  // Mostly small values, sometimes anything (including the int64 edges).
  switch (in.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return in.ConsumeIntegral<std::int64_t>();
    case 1: return std::int64_t{1} << in.ConsumeIntegralInRange<int>(0, 62);
    case 2: return -in.ConsumeIntegralInRange<std::int64_t>(0, 4);
    default: return in.ConsumeIntegralInRange<std::int64_t>(0, small_max);
  }
}

// Whether a non-null pointer is off a boundary of `bytes`.
bool misaligned(const void* q, std::int64_t bytes) { return q && reinterpret_cast<std::uintptr_t>(q) % bytes != 0; }

}  // namespace


namespace {

[[noreturn]] void fail_read(const char* what, const kvcast::UpcastArgs<T>& a) {
  std::fprintf(stderr,
               "validate_fuzzer (read): %s\n  tokens %lld heads %lld dim %lld out %lld/%lld cache B=%lld bs=%lld ts=%lld hs=%lld "
               "rows %lld table %d batch %lld pages %lld page %lld\n",
               what, (long long)a.num_tokens, (long long)a.heads, (long long)a.head_dim, (long long)a.out_token_stride,
               (long long)a.out_head_stride, (long long)a.cache.block_size, (long long)a.cache.block_stride,
               (long long)a.cache.token_stride, (long long)a.cache.head_stride, (long long)a.cache_rows, a.block_table != nullptr,
               (long long)a.batch, (long long)a.max_pages, (long long)a.page_size);
  std::abort();
}

// The bytes a read's outputs cover (for small problems), failing where two elements share one.
std::set<i128> read_output_bytes(const kvcast::UpcastArgs<T>& a, const kvcast::detail::ReadPlan& p) {
  std::set<i128> written;
  for (const T* base : {static_cast<const T*>(a.k), static_cast<const T*>(a.v)})
    if (base)
      for (std::int64_t t = 0; t < a.num_tokens; ++t)
        for (std::int64_t h = 0; h < a.heads; ++h)
          for (std::int64_t d = 0; d < a.head_dim; ++d)
            for (int b = 0; b < 2; ++b)
              if (!written.insert(i128(reinterpret_cast<std::uintptr_t>(base)) + 2 * (i128(t) * p.out_token_stride + i128(h) * p.out_head_stride + d) + b)
                       .second)
                fail_read("output elements overlap", a);
  return written;
}

// A read's rows of `run` bytes a row-head at `base` in `layout` (the first 48 rows): each ends
// inside `extent` (else `beyond`) and none lies under an output byte in `written` (else `under`).
void check_read_rows(const kvcast::UpcastArgs<T>& a, const std::set<i128>& written, const void* base, const kvcast::OutputLayout& layout,
                     std::int64_t run, std::int64_t extent, const char* beyond, const char* under) {
  if (!base) return;
  const std::int64_t rows = a.cache_rows < 48 ? a.cache_rows : 48;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t h = 0; h < a.heads; ++h)
      for (std::int64_t d = 0; d < run; ++d) {
        const i128 at = layout.address(r, h) + d;
        if (at >= extent) fail_read(beyond, a);
        if (written.count(i128(reinterpret_cast<std::uintptr_t>(base)) + at)) fail_read(under, a);
      }
}

// An accepted NVFP4 read: head_dim a multiple of 16 and one global scale a tensor; each cache
// read with its block scales; every code row (head_dim / 2 bytes a row-head) and block-scale row
// (head_dim / 16) inside its extent, and none under an output; the kernel a block a thread, whole
// where its 8-byte load and two 16-byte stores fit, else element by element; the grid covers it.
int check_nvfp4_read(const kvcast::UpcastArgs<T>& a, const kvcast::detail::ReadPlan& p) {
  if (a.head_dim % 16 != 0) fail_read("nvfp4: accepted a head_dim that is not a multiple of 16", a);
  if (a.scale_kind != kvcast::ScaleKind::per_tensor) fail_read("nvfp4: accepted a scale kind other than per tensor", a);
  if ((a.k_cache && !a.k_block_scales) || (a.v_cache && !a.v_block_scales)) fail_read("nvfp4: a cache read without its block scales", a);
  if (p.segs_per_token != a.heads) fail_read("nvfp4: heads fused (each has its own block scales)", a);
  const std::int64_t code_bytes = a.head_dim / 2, blocks = a.head_dim / 16;
  if (a.heads * a.head_dim <= 512 && a.num_tokens <= 16) {
    const std::set<i128> written = read_output_bytes(a, p);
    constexpr const char* kUnder = "nvfp4: an output lies on what the read reads";
    for (const void* base : {a.k_cache, a.v_cache})
      check_read_rows(a, written, base, p.cache, code_bytes, p.cache_extent, "nvfp4: a code row ends beyond cache_extent", kUnder);
    for (const void* base : {a.k_cache ? a.k_block_scales : nullptr, a.v_cache ? a.v_block_scales : nullptr})
      check_read_rows(a, written, base, p.block_scales, blocks, p.block_scales_extent, "nvfp4: a block-scale row ends beyond its extent", kUnder);
  }
  if (p.page_table && a.batch == 0) {
    if (p.num_segments != 0) fail_read("nvfp4: an empty batch would launch a kernel", a);
    return 0;
  }
  const kvcast::detail::KernelChoice& c = p.choice;
  if (p.kernel != kvcast::detail::ReadKernel::general || c.vec != kvcast::detail::kNvfp4ReadVec || c.access == kvcast::tile::Access::interleaved)
    fail_read("nvfp4: not a block a thread", a);
  if (c.access == kvcast::tile::Access::vector &&
      (misaligned(a.k_cache, 8) || misaligned(a.v_cache, 8) || misaligned(a.k, 32) || misaligned(a.v, 32) || p.cache.block_stride % 8 ||
       (p.cache.block_size > 1 && p.cache.token_stride % 8) || p.cache.head_stride % 8 || (a.num_tokens > 1 && (2 * p.out_token_stride) % 32) ||
       (2 * p.out_head_stride) % 32))
    fail_read("nvfp4: a whole block not allowed by a pointer or stride", a);
  const std::int64_t items = p.seg_len / c.vec;
  const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
  if (p.seg_len != a.head_dim || c.grid_y > 65535 || (c.chunks() << c.log2_group) < items || c.ctas() * groups < p.num_segments)
    fail_read("nvfp4: the read's grid does not cover the blocks", a);
  return 0;
}

// The read: any sizes, strides, layouts, row sources and scale fields; an accepted call writes
// its outputs inside their extent, never onto each other or onto what it reads, reads its cache
// inside the extent of cache_rows rows, and its kernel choice exists, is aligned and covers it.
int fuzz_read(FuzzedDataProvider& in) {
  kvcast::UpcastArgs<T> a;
  // Half the pointers aligned (so that vectors get chosen), half anywhere in 64 bytes.
  const auto ptr = [&](std::uintptr_t base) { return base + (in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::uintptr_t>(0, 63)); };
  const int presence = in.ConsumeIntegralInRange<int>(0, 15);
  const bool near = in.ConsumeBool();  // outputs close to the caches, where overlaps are likely
  if (presence & 1) a.k_cache = reinterpret_cast<const void*>(ptr(0x100000));
  if (presence & 2) a.v_cache = reinterpret_cast<const void*>(ptr(0x200000));
  if (presence & 4) a.k = reinterpret_cast<T*>(ptr(near ? 0x100000 + 2 * in.ConsumeIntegralInRange<std::uintptr_t>(0, 40000) : 0x10000000));
  if (presence & 8) a.v = reinterpret_cast<T*>(ptr(near ? 0x200000 : 0x20000000));
  a.num_tokens = pick(in, 40);
  a.heads = pick(in, 12);
  a.head_dim = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? 576 : pick(in, 70);  // sometimes one MLA head: the row-warp read
  if (in.ConsumeBool()) {  // strides of the call's own sizes, or any
    a.out_token_stride = pick(in, 3000);
    a.out_head_stride = pick(in, 200);
  }
  const bool sane = a.heads > 0 && a.heads <= 4096 && a.head_dim > 0 && a.head_dim <= 4096;  // the factories' products fit
  switch (sane ? in.ConsumeIntegralInRange<int>(0, 3) : 3) {
    case 0: break;  // contiguous
    case 1: a.cache = kvcast::OutputLayout::paged_nhd(1 + in.ConsumeIntegralInRange<int>(0, 31), a.heads, a.head_dim); break;
    case 2: a.cache = kvcast::OutputLayout::paged_hnd(1 + in.ConsumeIntegralInRange<int>(0, 31), a.heads, a.head_dim); break;
    default:
      a.cache.block_size = in.ConsumeBool() ? 1 : pick(in, 20);
      a.cache.block_stride = pick(in, 20000);
      a.cache.token_stride = pick(in, 3000);
      a.cache.head_stride = pick(in, 200);
  }
  a.cache_rows = in.ConsumeIntegralInRange<int>(0, 5) == 0 ? kvcast::UpcastArgs<T>::kRowsNotGiven : pick(in, 100);
  if (in.ConsumeBool()) {
    a.block_table = reinterpret_cast<const std::int32_t*>(0x30000000);
    a.cu_seq_lens = in.ConsumeIntegralInRange<int>(0, 7) ? reinterpret_cast<const std::int32_t*>(0x30100000) : nullptr;
    if (in.ConsumeBool()) a.seq_starts = reinterpret_cast<const std::int32_t*>(0x30200000);
    a.batch = pick(in, 8);
    a.max_pages = pick(in, 8);
    a.page_size = in.ConsumeBool() ? 0 : pick(in, 20);
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0) a.mult = pick(in, 4);
  } else {
    if (in.ConsumeBool()) a.loc = reinterpret_cast<const std::int64_t*>(0x31000000);
    a.mult = pick(in, 4);
    a.offset = pick(in, 10);
  }
  const auto floats = [&](std::uintptr_t base) { return reinterpret_cast<const float*>(base + 4 * in.ConsumeIntegralInRange<int>(0, 15)); };
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 1:
      a.scale_kind = kvcast::ScaleKind::per_head;
      if (in.ConsumeBool()) a.k_head_scales = floats(0x40000000);
      if (in.ConsumeBool()) a.v_head_scales = floats(0x40008000);
      break;
    case 2:
      a.scale_kind = kvcast::ScaleKind::per_token_head;
      if (in.ConsumeBool()) a.k_scales = floats(near ? 0x100000 : 0x50000000);
      if (in.ConsumeBool()) a.v_scales = floats(0x60000000);
      if (in.ConsumeBool()) a.scales = kvcast::OutputLayout{in.ConsumeBool() ? 1 : pick(in, 20), pick(in, 5000), pick(in, 40), pick(in, 4)};
      break;
    default: break;
  }
  // A quarter of the reads are of NVFP4 codes: head_dim often a multiple of 16, block scales given
  // or not, in their own layout or the default one.
  const bool nvfp4 = in.ConsumeIntegralInRange<int>(0, 3) == 0;
  if (nvfp4) {
    if (in.ConsumeBool()) a.head_dim = 16 * in.ConsumeIntegralInRange<int>(1, 40);
    if (in.ConsumeIntegralInRange<int>(0, 7)) a.k_block_scales = reinterpret_cast<const void*>(ptr(near ? 0x100000 : 0x70000000));
    if (in.ConsumeIntegralInRange<int>(0, 7)) a.v_block_scales = reinterpret_cast<const void*>(ptr(0x78000000));
    if (in.ConsumeBool()) a.block_scales = kvcast::OutputLayout{in.ConsumeBool() ? 1 : pick(in, 20), pick(in, 5000), pick(in, 40), pick(in, 8)};
    if (in.ConsumeBool()) {  // codes on 8-byte steps and outputs on 16-byte ones: whole blocks' edges
      const auto on_step = [&](auto* q, int unit) {
        using P = decltype(q);
        const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(q);
        return q ? reinterpret_cast<P>((at & ~std::uintptr_t{63}) + unit * in.ConsumeIntegralInRange<int>(0, 64 / unit - 1)) : q;
      };
      a.k_cache = on_step(a.k_cache, 8);
      a.v_cache = on_step(a.v_cache, 8);
      a.k = on_step(a.k, 16);
      a.v = on_step(a.v, 16);
    }
  }
  kvcast::detail::ReadPlan p;
  const kvcast::Status s = kvcast::make_read_plan(a, p, nvfp4 ? kvcast::CodeFormat::nvfp4 : kvcast::CodeFormat::fp8);
  if (!s.ok()) {
    if (s.message()[0] == '\0') fail_read("an error without a message", a);
    return 0;
  }
  if (a.cache_rows == kvcast::UpcastArgs<T>::kRowsNotGiven) fail_read("accepted a read without cache_rows", a);
  if (a.num_tokens == 0) return 0;
  if (nvfp4) return check_nvfp4_read(a, p);
  // Outputs: one past the last element is the extent; no two elements of one output share an
  // address; K's and V's apart; neither on a cache (checked by extents, small problems).
  const i128 out_last = i128(a.num_tokens - 1) * p.out_token_stride + i128(a.heads - 1) * p.out_head_stride + a.head_dim - 1;
  if (out_last + 1 != p.out_extent) fail_read("out_extent is not one past the last element", a);
  if (a.heads * a.head_dim <= 256 && a.num_tokens <= 16) {
    const std::set<i128> written = read_output_bytes(a, p);
    for (const void* base : {a.k_cache, a.v_cache})
      check_read_rows(a, written, base, p.cache, a.head_dim, p.cache_extent, "a cache row ends beyond cache_extent", "an output lies on a cache");
  }
  // An empty batch reads nothing: the plan launches no kernel, so it has no choice to check.
  if (p.page_table && a.batch == 0) {
    if (p.num_segments != 0) fail_read("an empty batch would launch a kernel", a);
    return 0;
  }
  const kvcast::detail::KernelChoice& c = p.choice;
  if (!kvcast::detail::read_kernel_exists(c.vec, c.access, p.kernel)) fail_read("chose a read kernel that does not exist", a);
  const bool vector = c.access == kvcast::tile::Access::vector;
  if (p.kernel == kvcast::detail::ReadKernel::row_warp) {
    // A warp a 576-code segment: pieces of one 16-byte store of T (8 codes of bf16), 2-code sides.
    const bool fused = p.segs_per_token == 1;
    if (p.seg_len != kvcast::detail::kRowWarpElements || p.format != kvcast::CodeFormat::fp8) fail_read("the row warp for another segment", a);
    if (misaligned(a.k_cache, 8) || misaligned(a.v_cache, 8) || misaligned(a.k, 16) || misaligned(a.v, 16) || p.cache.block_stride % 8 ||
        (p.cache.block_size > 1 && p.cache.token_stride % 8) || (!fused && p.cache.head_stride % 8) ||
        (a.num_tokens > 1 && (2 * p.out_token_stride) % 16) || (!fused && (2 * p.out_head_stride) % 16))
      fail_read("row-warp pieces not allowed by a pointer or stride", a);
    if (c.log2_group != 5 || c.chunks() != 1 || c.ctas() * (kvcast::detail::kBlockSize / 32) < p.num_segments)
      fail_read("the row warp's grid does not cover the segments", a);
    return 0;
  }
  if (vector) {
    const std::int64_t v = c.vec, store = std::min<std::int64_t>(2 * v, 16);  // pieces of one 16-byte store (read_piece)
    const bool fused = p.segs_per_token == 1;
    if (p.seg_len % v || misaligned(a.k_cache, v) || misaligned(a.v_cache, v) || misaligned(a.k, store) || misaligned(a.v, store))
      fail_read("read vector not allowed by a pointer or the segment", a);
    if (p.cache.block_stride % v || (p.cache.block_size > 1 && p.cache.token_stride % v) || (!fused && p.cache.head_stride % v))
      fail_read("read vector not allowed by the cache's layout", a);
    if ((a.num_tokens > 1 && (2 * p.out_token_stride) % store) || (!fused && (2 * p.out_head_stride) % store))
      fail_read("read vector not allowed by the output's strides", a);
  } else if (c.log2_group < 5) {
    fail_read("an interleaved group smaller than a warp", a);
  }
  const std::int64_t items = (p.seg_len + c.vec - 1) / c.vec;
  const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
  if (c.grid_y > 65535 || (c.chunks() << c.log2_group) < items || c.ctas() * groups < p.num_segments)
    fail_read("the read's grid does not cover the segments", a);
  if (c.order == kvcast::detail::GridOrder::chunks_first && c.chunks() < 2) fail_read("the read's chunks first for rows of one chunk", a);
  if (p.segs_per_token * p.seg_len != a.heads * a.head_dim) fail_read("segments do not cover the row", a);
  if (p.page_table && (p.pages * p.page_size != a.cache_rows)) fail_read("pages do not tile the cache", a);
  return 0;
}

}  // namespace

namespace {

// The NVFP4 write (make_plan with CodeFormat::nvfp4): accepted calls have head_dim a multiple of
// 16 and a row count; every code row (head_dim / 2 bytes a row-head) and block-scale row
// (head_dim / 16) ends inside its extent; no block-scale byte lies on a code byte or on the
// other tensor's block scales; the kernel's vector is a block or half of one (half on a pair of
// lanes), allowed by every pointer and stride, or element by element; the grid covers the rows.
int fuzz_nvfp4_write(FuzzedDataProvider& in) {
  kvcast::DowncastArgs<T> a;
  // Pointers at a 32-byte boundary half the time (whole-block vectors need it), else anywhere.
  const auto ptr = [&](std::uintptr_t base) { return base + (in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::uintptr_t>(0, 63)); };
  const int presence = in.ConsumeIntegralInRange<int>(0, 15);
  if (presence & 1) a.k = reinterpret_cast<const T*>(ptr(0x100000));
  if (presence & 2) a.v = reinterpret_cast<const T*>(ptr(0x200000));
  if (presence & 1) a.k_out = reinterpret_cast<void*>(ptr(0x300000));
  if (presence & 2) a.v_out = reinterpret_cast<void*>(ptr(0x400000));
  a.num_tokens = in.ConsumeIntegralInRange<int>(0, 3) == 0 ? in.ConsumeIntegralInRange<std::int64_t>(4096, 8192) : pick(in, 40);  // large calls: whole blocks
  a.heads = pick(in, 6);
  a.head_dim = in.ConsumeBool() ? 16 * in.ConsumeIntegralInRange<std::int64_t>(0, 5) : pick(in, 70);
  a.in_token_stride = pick(in, 3000);
  a.in_head_stride = pick(in, 200);
  a.out.block_size = in.ConsumeBool() ? 1 : pick(in, 8);
  a.out.block_stride = pick(in, 5000);
  a.out.token_stride = pick(in, 1000);
  a.out.head_stride = pick(in, 100);
  a.out_rows = in.ConsumeBool() ? pick(in, 60) : kvcast::DowncastArgs<T>::kUncheckedRows;
  // Block scales apart, inside the code buffers, or on them; any layout.
  const int where = in.ConsumeIntegralInRange<int>(0, 2);
  const std::uintptr_t k_base = where == 0 ? 0x600000 : where == 1 ? 0x300000 + in.ConsumeIntegralInRange<std::uintptr_t>(0, 20000) : 0x300000;
  const std::uintptr_t v_base = where == 0 ? 0x700000 : where == 1 ? 0x400000 + in.ConsumeIntegralInRange<std::uintptr_t>(0, 20000) : 0x300040;
  if (in.ConsumeIntegralInRange<int>(0, 7) != 0) {
    if (a.k) a.k_block_scales_out = reinterpret_cast<void*>(k_base);
    if (a.v) a.v_block_scales_out = reinterpret_cast<void*>(v_base);
  }
  if (in.ConsumeBool()) {
    a.block_scales_out.block_size = in.ConsumeBool() ? a.out.block_size : pick(in, 8);
    a.block_scales_out.block_stride = in.ConsumeBool() ? a.out.block_stride : pick(in, 2000);
    a.block_scales_out.token_stride = pick(in, 100);
    a.block_scales_out.head_stride = pick(in, 10);
  }
  const float gs[] = {1.0f, 0.0f, -1.0f, NAN, INFINITY, 0.01f};
  a.k_scale = kvcast::Scale::host_value(gs[in.ConsumeIntegralInRange<int>(0, 5)]);
  a.v_scale = in.ConsumeBool() ? kvcast::Scale::in_device_memory(reinterpret_cast<const float*>(0x900000)) : a.k_scale;

  kvcast::detail::Plan p;
  const kvcast::Status s = kvcast::make_plan(a, p, kvcast::Arithmetic::fp32, kvcast::CodeFormat::nvfp4);
  if (!s.ok()) {
    if (s.message()[0] == '\0') fail("nvfp4: an error without a message", a);
    return 0;
  }
  if (a.num_tokens == 0) return 0;
  if (a.head_dim % 16 != 0 || a.out_rows < 0) fail("nvfp4: accepted a head_dim not of 16, or no row count", a);
  const std::int64_t code_run = a.head_dim / 2, scale_run = a.head_dim / 16;
  const kvcast::OutputLayout& o = p.out;
  const kvcast::OutputLayout& so = p.block_scales_out;
  for (std::int64_t r = 0; r < (a.out_rows < 256 ? a.out_rows : 256); ++r) {
    if (i128(o.address(r, a.heads - 1)) + code_run > p.out_extent) fail("nvfp4: a code row ends beyond out_extent", a);
    if (i128(so.address(r, a.heads - 1)) + scale_run > p.block_scales_extent) fail("nvfp4: a block-scale row ends beyond its extent", a);
  }
  if (a.heads * a.head_dim <= 256 && a.out_rows <= 48) {
    // A tensor's code bytes apart (K's and V's are checked against each other nowhere, as for
    // fp8: the validation refuses only the same pointer); every one of them in `codes`.
    std::set<i128> codes, scales;
    for (const void* base : {a.k_out, a.v_out})
      if (base) {
        std::set<i128> own;
        for (std::int64_t r = 0; r < a.out_rows; ++r)
          for (std::int64_t h = 0; h < a.heads; ++h)
            for (std::int64_t b = 0; b < code_run; ++b) {
              const i128 at = i128(reinterpret_cast<std::uintptr_t>(base)) + o.address(r, h) + b;
              if (!own.insert(at).second) fail("nvfp4: code bytes overlap", a);
              codes.insert(at);
            }
      }
    for (const void* base : {a.k_block_scales_out, a.v_block_scales_out})
      if (base)
        for (std::int64_t r = 0; r < a.out_rows; ++r)
          for (std::int64_t h = 0; h < a.heads; ++h)
            for (std::int64_t b = 0; b < scale_run; ++b) {
              const i128 at = i128(reinterpret_cast<std::uintptr_t>(base)) + so.address(r, h) + b;
              if (codes.count(at) || !scales.insert(at).second) fail("nvfp4: a block scale on a code or another block scale", a);
            }
  }
  const kvcast::detail::KernelChoice& c = p.choice;
  const bool vector = c.access == kvcast::tile::Access::vector;
  if (c.kernel != kvcast::detail::WriteKernel::general || p.segs_per_token != (a.heads == 1 ? 1 : a.heads))
    fail("nvfp4: not the general kernel with heads apart", a);
  if (vector ? (c.vec != 8 && c.vec != 16) : (c.access != kvcast::tile::Access::elements || c.vec != 16))
    fail("nvfp4: a vector other than a block or half of one", a);
  if (c.vec == 8 && c.log2_group < 1) fail("nvfp4: half blocks without a pair of lanes", a);
  const std::int64_t v = vector ? c.vec : 1;
  if (misaligned(a.k, v * 2) || misaligned(a.v, v * 2) || misaligned(a.k_out, (v + 1) / 2) || misaligned(a.v_out, (v + 1) / 2))
    fail("nvfp4: vector width not allowed by a pointer", a);
  if (vector && ((a.num_tokens > 1 && p.in_token_stride % v) || (p.segs_per_token > 1 && (p.in_head_stride % v || o.head_stride % (v / 2))) ||
                 o.block_stride % (v / 2) || (o.block_size > 1 && o.token_stride % (v / 2))))
    fail("nvfp4: vector width not allowed by a stride", a);
  const std::int64_t items = p.seg_len / c.vec;
  const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
  if (p.seg_len % c.vec || (c.chunks() << c.log2_group) < items || c.ctas() * groups < p.num_segments)
    fail("nvfp4: the grid does not cover the blocks", a);
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const int direction = in.ConsumeIntegralInRange<int>(0, 7);
  if (direction < 2) return fuzz_read(in);
  if (direction == 2) return fuzz_nvfp4_write(in);
  kvcast::DowncastArgs<T> a;
  // A quarter of the calls aligned and of their own sizes' strides (so that the widest vectors
  // and the row-head-warp kernel get chosen); the others' pointers anywhere in 64 bytes.
  const bool aligned = in.ConsumeIntegralInRange<int>(0, 3) == 0;
  const auto ptr = [&](std::uintptr_t base) { return base + (aligned ? 0 : in.ConsumeIntegralInRange<std::uintptr_t>(0, 63)); };
  const int presence = in.ConsumeIntegralInRange<int>(0, 15);
  if (presence & 1) a.k = reinterpret_cast<const T*>(ptr(0x100000));
  if (presence & 2) a.v = reinterpret_cast<const T*>(ptr(0x200000));
  if (presence & 4) a.k_out = reinterpret_cast<void*>(ptr(0x300000));
  if (presence & 8) a.v_out = reinterpret_cast<void*>(ptr(0x400000));
  a.num_tokens = pick(in, 40);
  a.heads = pick(in, 12);
  a.head_dim = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? 576 : pick(in, 70);  // sometimes one MLA head
  if (!aligned) {
    a.in_token_stride = pick(in, 3000);
    a.in_head_stride = pick(in, 200);
    a.out.block_size = in.ConsumeBool() ? 1 : pick(in, 20);
    a.out.block_stride = pick(in, 20000);
    a.out.token_stride = pick(in, 3000);
    a.out.head_stride = pick(in, 200);
  }
  a.mult = pick(in, 4);
  a.offset = pick(in, 10);
  if (in.ConsumeBool() && a.offset != INT64_MIN) a.offset = -a.offset;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {  // unchecked, not given, or a row count
    case 0: a.out_rows = kvcast::DowncastArgs<T>::kUncheckedRows; break;
    case 1: break;
    default: a.out_rows = pick(in, 100);
  }
  a.in_capacity = in.ConsumeBool() ? -1 : pick(in, 200000);
  a.out_capacity = in.ConsumeBool() ? -1 : pick(in, 200000);

  // Scale kinds: per-head arrays, or per-(token, head) scale tensors placed apart, inside the
  // code buffers (inline, or on the codes), with any layout; amax outputs.
  const auto floats = [&](std::uintptr_t base) { return reinterpret_cast<float*>(base + 4 * in.ConsumeIntegralInRange<int>(0, 15)); };
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 1:
      a.scale_kind = kvcast::ScaleKind::per_head;
      if (in.ConsumeBool()) a.k_head_scales = floats(0x500000);
      if (in.ConsumeBool()) a.v_head_scales = floats(0x508000);
      break;
    case 2: {
      a.scale_kind = kvcast::ScaleKind::per_token_head;
      const int where = in.ConsumeIntegralInRange<int>(0, 2);  // apart, inside the codes' buffers, anywhere near them
      const std::uintptr_t k_base = where == 0 ? 0x600000 : where == 1 ? 0x300000 + 4 * in.ConsumeIntegralInRange<std::uintptr_t>(0, 5000) : 0x300000;
      const std::uintptr_t v_base = where == 0 ? 0x700000 : where == 1 ? 0x400000 + 4 * in.ConsumeIntegralInRange<std::uintptr_t>(0, 5000) : 0x300100;
      if (in.ConsumeBool()) a.k_scales_out = floats(k_base);
      if (in.ConsumeBool()) a.v_scales_out = floats(v_base);
      if (in.ConsumeBool()) {
        a.scales_out.block_size = in.ConsumeBool() ? a.out.block_size : pick(in, 20);
        a.scales_out.block_stride = in.ConsumeBool() ? a.out.block_stride / 4 : pick(in, 5000);
        a.scales_out.token_stride = pick(in, 40);
        a.scales_out.head_stride = pick(in, 4);
      }
      const float min_scales[] = {1e-6f, 0.0f, -1.0f, NAN, INFINITY, 3.0f};
      a.min_scale = min_scales[in.ConsumeIntegralInRange<int>(0, 5)];
      break;
    }
    default: break;
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) a.k_amax = floats(0x800000);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) a.v_amax = floats(0x800000);

  const auto mode = in.ConsumeBool() ? kvcast::Arithmetic::fp32 : kvcast::Arithmetic::input_precision;

  kvcast::detail::Plan p;
  const kvcast::Status s = kvcast::make_plan(a, p, mode);
#ifdef KVCAST_FUZZ_STATS  // how often each outcome happens, printed at exit
  static long long counts[16] = {};
  static const bool registered = [] {
    std::atexit([] {
      for (int i = 0; i < 16; ++i)
        if (counts[i]) std::fprintf(stderr, "outcome %s: %lld\n", kvcast::to_string(static_cast<kvcast::Code>(i)), counts[i]);
    });
    return true;
  }();
  (void)registered;
  ++counts[static_cast<int>(s.code())];
#endif
  if (!s.ok()) {
    if (s.message()[0] == '\0') fail("an error without a message", a);
    return 0;
  }
  if (a.num_tokens == 0) return 0;

  // Input: the largest element index (strides are non-negative) lies inside the reported extent.
  const i128 in_last = i128(a.num_tokens - 1) * p.in_token_stride + i128(a.heads - 1) * p.in_head_stride + a.head_dim - 1;
  if (in_last + 1 != p.in_extent) fail("in_extent is not one past the last element", a);
  if (a.in_capacity >= 0 && in_last >= a.in_capacity) fail("accepted inputs beyond in_capacity", a);
  // Output: every row in [0, out_rows) ends inside the reported extent.
  if (a.out_rows > 0) {
    const kvcast::OutputLayout& o = p.out;
    const std::int64_t rows_to_check = a.out_rows <= 512 ? a.out_rows : 512;
    for (std::int64_t i = 0; i < rows_to_check; ++i) {
      const std::int64_t r = a.out_rows <= 512 ? i : a.out_rows - 1 - i;  // the last rows when there are many
      const i128 end = i128(r / o.block_size) * o.block_stride + i128(r % o.block_size) * o.token_stride +
                       i128(a.heads - 1) * o.head_stride + a.head_dim;
      if (end > p.out_extent) fail("a row ends beyond out_extent", a);
      if (a.out_capacity >= 0 && end > a.out_capacity) fail("accepted outputs beyond out_capacity", a);
    }
  }
  // No two elements share an address (small problems, checked exhaustively).
  if (a.heads * a.head_dim <= 256 && a.num_tokens <= 16) {
    std::set<i128> seen;
    for (std::int64_t t = 0; t < a.num_tokens; ++t)
      for (std::int64_t h = 0; h < a.heads; ++h)
        for (std::int64_t d = 0; d < a.head_dim; ++d)
          if (!seen.insert(i128(t) * p.in_token_stride + i128(h) * p.in_head_stride + d).second) fail("input elements overlap", a);
    seen.clear();
    const std::int64_t rows = a.out_rows >= 0 ? (a.out_rows < 48 ? a.out_rows : 48) : 48;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t h = 0; h < a.heads; ++h)
        for (std::int64_t d = 0; d < a.head_dim; ++d) {
          const i128 addr = i128(r / p.out.block_size) * p.out.block_stride + i128(r % p.out.block_size) * p.out.token_stride +
                            i128(h) * p.out.head_stride + d;
          if (!seen.insert(addr).second) fail("output elements overlap", a);
        }
  }
  // Per-(token, head) scales: no scale float on a code byte, or on the other tensor's floats.
  if (a.scale_kind == kvcast::ScaleKind::per_token_head && a.heads * a.head_dim <= 256) {
    if (a.out_rows < 0) fail("per_token_head accepted without a row count", a);
    std::set<i128> bytes;
    const std::int64_t rows = a.out_rows < 48 ? a.out_rows : 48;
    const kvcast::OutputLayout& so = p.scales_out;
    for (const void* base : {a.k_out, a.v_out})
      if (base)
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t h = 0; h < a.heads; ++h)
            for (std::int64_t d = 0; d < a.head_dim; ++d)
              bytes.insert(i128(reinterpret_cast<std::uintptr_t>(base)) + p.out.address(r, h) + d);
    for (const float* base : {a.k_scales_out, a.v_scales_out})
      if (base)
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t h = 0; h < a.heads; ++h)
            for (int b = 0; b < 4; ++b)
              if (!bytes.insert(i128(reinterpret_cast<std::uintptr_t>(base)) + 4 * i128(so.address(r, h)) + b).second)
                fail("a scale float overlaps a code or another scale", a);
  }
  // The planner's choice: a kernel that exists (dispatch instantiates no other), a vector whose
  // width divides every pointer and every stride a vector start depends on, and a grid that
  // covers every segment and every vector of it.
  if (a.out_rows == kvcast::DowncastArgs<T>::kRowsNotGiven) fail("accepted a call without out_rows", a);
  const kvcast::detail::KernelChoice& c = p.choice;
  const int bytes = static_cast<int>(sizeof(T));
  if (!kvcast::detail::write_kernel_exists(c.kernel, c.vec, c.access, bytes, mode, p.scale_policy))
    fail("chose a kernel that does not exist", a);
  const bool vector = c.access == kvcast::tile::Access::vector;
  const bool lean = p.scale_policy == kvcast::detail::ScalePolicyId::per_tensor;
  // Per-head and per-(token, head) scales have dense kernels of vectors (the planner's fusing
  // rules, per_head_rows_fuse and per_token_head_rows_fuse, decide p.dense).
  const bool dense_kernel_exists = lean || vector;
  // LayoutRows: the general kernel, and the row-head-warp one (per-(token, head) scales, 576).
  const bool layout_rows = c.kernel == kvcast::detail::WriteKernel::general || c.kernel == kvcast::detail::WriteKernel::row_head_warp;
  if (layout_rows == (p.dense && dense_kernel_exists)) fail("dense call on the general kernel or the other way", a);
  if (c.kernel == kvcast::detail::WriteKernel::row_head_warp &&
      (a.head_dim != 576 || p.scale_policy != kvcast::detail::ScalePolicyId::per_token_head || c.vec != 16))
    fail("the row-head-warp kernel for a call other than per-(token, head) rows of 576", a);
  if (p.scale_policy == kvcast::detail::ScalePolicyId::per_token_head) {
    // A row-head in one chunk of whole vectors: the segment itself, or, heads fused (the dense
    // kernel), an aligned power-of-two group of the row's threads inside one chunk.
    const bool pow2 = (a.head_dim & (a.head_dim - 1)) == 0;
    const bool whole = p.dense ? pow2 && vector && p.seg_len == a.heads * a.head_dim && a.head_dim % c.vec == 0 &&
                                     (std::int64_t{c.vec} << c.log2_group) % a.head_dim == 0
                               : c.chunks() == 1 && p.seg_len == a.head_dim && (!vector || p.seg_len % c.vec == 0);
    if (!whole) fail("a per-(token, head) row-head is not one chunk of whole vectors", a);
  }
  const std::int64_t v = vector ? c.vec : 1;
  if (misaligned(a.k, v * 2) || misaligned(a.v, v * 2) || misaligned(a.k_out, v) || misaligned(a.v_out, v))
    fail("vector width not allowed by a pointer", a);
  if (a.num_tokens > 1 && p.in_token_stride % v) fail("vector width not allowed by in_token_stride", a);
  if (p.segs_per_token > 1 && (p.in_head_stride % v || p.out.head_stride % v)) fail("vector width not allowed by a head stride", a);
  if (p.out.block_stride % v || (p.out.block_size > 1 && p.out.token_stride % v)) fail("vector width not allowed by the layout", a);
  if (p.segs_per_token * p.seg_len != a.heads * a.head_dim) fail("segments do not cover the row", a);
  if (c.grid_x < 1 || c.grid_y < 1 || c.grid_y > 65535) fail("grid outside the hardware's limits", a);
  // K and V apart (grid z of 2) only where both are given, in a kernel compiled for it: NVFP4's,
  // and the row-head-warp one (writes_k, writes_v).
  const bool may_go_apart = c.kernel == kvcast::detail::WriteKernel::row_head_warp || p.format == kvcast::CodeFormat::nvfp4;
  if (c.grid_z != 1 && (c.grid_z != 2 || !may_go_apart || a.k == nullptr || a.v == nullptr))
    fail("K and V apart in a call or kernel without both", a);
  if (c.kernel == kvcast::detail::WriteKernel::realigned) {
    // Dense, element by element, 16 a thread; kRealignRun-element runs (grid y) cover a row
    // from up to 7 elements before it, no run more; a warp a row.
    if (vector || c.vec != 16 || c.order != kvcast::detail::GridOrder::segments_first ||
        c.grid_y * kvcast::detail::kRealignRun < p.seg_len || (c.grid_y - 1) * kvcast::detail::kRealignRun >= p.seg_len + 7 ||
        c.grid_x * kvcast::detail::kRealignWarps < p.num_segments)
      fail("realigned runs do not cover the rows", a);
  } else if (c.kernel == kvcast::detail::WriteKernel::row_head_warp) {
    // A warp a row-head, kBlockSize / kLanes of them a CTA.
    const std::int64_t warps = kvcast::detail::kBlockSize / kvcast::detail::kLanes;
    if (!vector || c.chunks() != 1 || kvcast::detail::kRowWarpElements != p.seg_len ||
        c.ctas() * warps < p.num_segments || (c.ctas() - 1) * warps >= p.num_segments)
      fail("row-head warps do not cover the row-heads", a);
  } else {
    const std::int64_t items = (p.seg_len + c.vec - 1) / c.vec;
    const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
    const bool chunks_first = c.order == kvcast::detail::GridOrder::chunks_first;
    const std::int64_t ctas = c.ctas();
    if ((c.chunks() << c.log2_group) < items || ctas * groups < p.num_segments || (ctas - 1) * groups >= p.num_segments)
      fail("the grid does not cover the segments", a);
    if (!vector && c.log2_group < 5) fail("an interleaved group smaller than a warp", a);
    // Chunks first exists for rows of several chunks with vectors of at least 16 bytes.
    if (chunks_first && (c.chunks() < 2 || c.vec * bytes < 16)) fail("chunks first outside its calls", a);
  }
  // Slot bounds: for slots near both ends, in range exactly when the row is.
  const std::int64_t last_row = a.out_rows >= 0 ? a.out_rows - 1 : INT64_MAX;
  for (std::int64_t base : {p.min_slot, p.max_slot, std::int64_t{0}, std::int64_t{7}})
    for (std::int64_t d = -2; d <= 2; ++d) {
      const i128 slot = i128(base) + d;
      if (slot < 0 || slot > INT64_MAX) continue;
      const i128 row = slot * a.mult + a.offset;
      const bool want = row >= 0 && row <= last_row;
      const bool got = slot >= p.min_slot && slot <= p.max_slot;
      if (want != got) fail("slot bounds disagree with the row range", a);
    }
  return 0;
}
