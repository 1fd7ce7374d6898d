// libFuzzer target over kvcast's host-side validation (plain C++, built with clang's
// -fsanitize=fuzzer,address,undefined). For arbitrary sizes, strides, offsets, flags and pointer
// alignments it checks that make_plan never crashes, never overflows, and never accepts an
// argument set that would touch memory outside what it reports (and outside the capacities
// given), make two elements share an address, or pick a vector width some pointer or stride
// does not allow.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz/validate_fuzzer.cpp -o validate_fuzzer
//   ./validate_fuzzer -max_total_time=60
#include <fuzzer/FuzzedDataProvider.h>

#include <kvcast/detail/plan.hpp>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  kvcast::DowncastArgs<T> a;
  const auto ptr = [&](std::uintptr_t base) { return base + in.ConsumeIntegralInRange<std::uintptr_t>(0, 63); };
  const int presence = in.ConsumeIntegralInRange<int>(0, 15);
  if (presence & 1) a.k = reinterpret_cast<const T*>(ptr(0x100000));
  if (presence & 2) a.v = reinterpret_cast<const T*>(ptr(0x200000));
  if (presence & 4) a.k_out = reinterpret_cast<void*>(ptr(0x300000));
  if (presence & 8) a.v_out = reinterpret_cast<void*>(ptr(0x400000));
  a.num_tokens = pick(in, 40);
  a.heads = pick(in, 12);
  a.head_dim = pick(in, 70);
  a.in_token_stride = pick(in, 3000);
  a.in_head_stride = pick(in, 200);
  a.out.block_size = in.ConsumeBool() ? 1 : pick(in, 20);
  a.out.block_stride = pick(in, 20000);
  a.out.token_stride = pick(in, 3000);
  a.out.head_stride = pick(in, 200);
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
  const bool dense_kernel_exists = lean || (p.scale_policy == kvcast::detail::ScalePolicyId::per_head && vector);
  if ((c.kernel == kvcast::detail::WriteKernel::general) == (p.dense && dense_kernel_exists))
    fail("dense call on the general kernel or the other way", a);
  if (p.scale_policy == kvcast::detail::ScalePolicyId::per_token_head &&
      (c.chunks() != 1 || p.seg_len != a.head_dim || (vector && p.seg_len % c.vec != 0)))
    fail("a per-(token, head) row-head is not one chunk of whole vectors", a);
  const std::int64_t v = vector ? c.vec : 1;
  auto misaligned = [&](const void* q, std::int64_t b) { return q && reinterpret_cast<std::uintptr_t>(q) % b != 0; };
  if (misaligned(a.k, v * 2) || misaligned(a.v, v * 2) || misaligned(a.k_out, v) || misaligned(a.v_out, v))
    fail("vector width not allowed by a pointer", a);
  if (a.num_tokens > 1 && p.in_token_stride % v) fail("vector width not allowed by in_token_stride", a);
  if (p.segs_per_token > 1 && (p.in_head_stride % v || p.out.head_stride % v)) fail("vector width not allowed by a head stride", a);
  if (p.out.block_stride % v || (p.out.block_size > 1 && p.out.token_stride % v)) fail("vector width not allowed by the layout", a);
  if (p.segs_per_token * p.seg_len != a.heads * a.head_dim) fail("segments do not cover the row", a);
  if (c.grid_x < 1 || c.grid_y < 1 || c.grid_y > 65535) fail("grid outside the hardware's limits", a);
  if (c.kernel == kvcast::detail::WriteKernel::realigned) {
    // Dense, element by element, 16 a thread; kRealignRun-element runs (grid y) cover a row
    // from up to 7 elements before it, no run more; a warp a row.
    if (vector || c.vec != 16 || c.order != kvcast::detail::GridOrder::segments_first ||
        c.grid_y * kvcast::detail::kRealignRun < p.seg_len || (c.grid_y - 1) * kvcast::detail::kRealignRun >= p.seg_len + 7 ||
        c.grid_x * kvcast::detail::kRealignWarps < p.num_segments)
      fail("realigned runs do not cover the rows", a);
  } else {
    const std::int64_t items = (p.seg_len + c.vec - 1) / c.vec;
    const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
    const bool chunks_first = c.order == kvcast::detail::GridOrder::chunks_first;
    const std::int64_t ctas = chunks_first ? c.grid_y : c.grid_x;
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
