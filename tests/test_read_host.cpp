// CPU, plain C++ (no CUDA header): the read's validation rules and their messages, its plan,
// the host reference of the read on hand-checked gathers (slots and page tables), and the
// write-then-read round trip of the references against the oracle's quantize-then-dequantize.
#include <gtest/gtest.h>

#include <kvcast/detail/read_plan.hpp>
#include <kvcast/reference.hpp>

#include "oracle.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using kvcast::Code;
using kvcast::OutputLayout;
using kvcast::ScaleKind;
using kvcast::Status;
using kvcast::UpcastArgs;
using Bf16 = kvcast::ref::BFloat16;
using Half = kvcast::ref::Half;

// Addresses the validation only looks at (never dereferenced), suitably aligned.
const void* fake_cache(std::uintptr_t a) { return reinterpret_cast<const void*>(a); }
Bf16* fake_out(std::uintptr_t a) { return reinterpret_cast<Bf16*>(a); }
const float* fake_floats(std::uintptr_t a) { return reinterpret_cast<const float*>(a); }
const std::int32_t* fake_ints(std::uintptr_t a) { return reinterpret_cast<const std::int32_t*>(a); }

// 16 tokens of 8 heads of 128 from a contiguous cache of 64 rows (64 KiB a tensor); the outputs
// (32 KiB each) apart from everything.
UpcastArgs<Bf16> valid_read_args() {
  UpcastArgs<Bf16> a;
  a.k_cache = fake_cache(0x10000);
  a.v_cache = fake_cache(0x30000);
  a.cache_rows = 64;
  a.k = fake_out(0x50000);
  a.v = fake_out(0x70000);
  a.num_tokens = 16;
  a.heads = 8;
  a.head_dim = 128;
  return a;
}
void page_table(UpcastArgs<Bf16>& a) {
  a.cache = OutputLayout::paged_nhd(16, 8, 128);
  a.block_table = fake_ints(0x90000);
  a.cu_seq_lens = fake_ints(0x91000);
  a.batch = 4;
  a.max_pages = 4;
}
void per_head(UpcastArgs<Bf16>& a) {
  a.scale_kind = ScaleKind::per_head;
  a.k_head_scales = fake_floats(0xA0000);
  a.v_head_scales = fake_floats(0xA1000);
}
void per_token_head(UpcastArgs<Bf16>& a) {
  a.scale_kind = ScaleKind::per_token_head;
  a.k_scales = fake_floats(0xB0000);
  a.v_scales = fake_floats(0xB1000);
}

struct Invalid {
  const char* name;
  void (*mutate)(UpcastArgs<Bf16>&);
  Code code;
  const char* message;  // a substring the message must contain
};

// Every rule of the read, each with its code and the words of its message.
const Invalid kInvalid[] = {
    {"negative tokens", [](auto& a) { a.num_tokens = -1; }, Code::bad_shape, "num_tokens (-1) is negative"},
    {"zero heads", [](auto& a) { a.heads = 0; }, Code::bad_shape, "heads (0) must be >= 1"},
    {"zero head_dim", [](auto& a) { a.head_dim = 0; }, Code::bad_shape, "head_dim (0) must be >= 1"},
    {"huge row", [](auto& a) { a.heads = 65536; a.head_dim = 65536; }, Code::bad_shape, "heads*head_dim (65536*65536) exceeds 2^24"},
    {"cache_rows not set", [](auto& a) { a.cache_rows = UpcastArgs<Bf16>::kRowsNotGiven; }, Code::bad_option, "cache_rows is not set"},
    {"cache_rows negative", [](auto& a) { a.cache_rows = -1; }, Code::bad_option, "cache_rows (-1) must be >= 0"},
    {"both caches null", [](auto& a) { a.k_cache = a.v_cache = nullptr; a.k = a.v = nullptr; }, Code::null_pointer, "k_cache and v_cache are both null"},
    {"k null", [](auto& a) { a.k = nullptr; }, Code::null_pointer, "k is null while k_cache is given"},
    {"v null", [](auto& a) { a.v = nullptr; }, Code::null_pointer, "v is null while v_cache is given"},
    {"k without k_cache", [](auto& a) { a.k_cache = nullptr; }, Code::unexpected_pointer, "k is given while k_cache is null"},
    {"v without v_cache", [](auto& a) { a.v_cache = nullptr; }, Code::unexpected_pointer, "v is given while v_cache is null"},
    {"same outputs", [](auto& a) { a.v = a.k; }, Code::unexpected_pointer, "k and v are the same pointer"},
    {"k misaligned", [](auto& a) { a.k = fake_out(0x50001); }, Code::bad_option, "k is not aligned to its element size (2 bytes)"},
    {"loc and block_table", [](auto& a) { page_table(a); a.loc = reinterpret_cast<const std::int64_t*>(0xC0000); }, Code::bad_option, "loc and block_table are both given"},
    {"mult with block_table", [](auto& a) { page_table(a); a.mult = 2; }, Code::bad_option, "mult (2) and offset (0) apply to loc's slots"},
    {"no cu_seq_lens", [](auto& a) { page_table(a); a.cu_seq_lens = nullptr; }, Code::null_pointer, "cu_seq_lens is null while block_table is given"},
    {"negative batch", [](auto& a) { page_table(a); a.batch = -1; }, Code::bad_shape, "batch (-1) must be in [0, 2^31-2]"},
    {"zero max_pages", [](auto& a) { page_table(a); a.max_pages = 0; }, Code::bad_shape, "max_pages (0) must be in [1, 2^31-1]"},
    {"negative page_size", [](auto& a) { page_table(a); a.page_size = -4; }, Code::bad_option, "page_size (-4) must be in [1, 2^31-1]"},
    {"partial page", [](auto& a) { page_table(a); a.cache_rows = 60; }, Code::bad_shape, "cache_rows (60) is not a multiple of page_size (16)"},
    {"cu_seq_lens and a batch without block_table", [](auto& a) { a.cu_seq_lens = fake_ints(0x91000), a.batch = 2, a.max_pages = 1; },
     Code::null_pointer, "block_table is null while cu_seq_lens is given with batch 2"},
    {"seq_starts alone", [](auto& a) { a.seq_starts = fake_ints(0x92000); }, Code::unexpected_pointer,
     "seq_starts is given without block_table and cu_seq_lens"},
    {"max_pages alone", [](auto& a) { a.max_pages = 3; }, Code::bad_option, "max_pages (3) is set without block_table"},
    {"mult zero", [](auto& a) { a.mult = 0; }, Code::bad_option, "mult (0) must be in [1, 2^31-1]"},
    {"offset huge", [](auto& a) { a.offset = (std::int64_t{1} << 62) + 1; }, Code::bad_option, "offset (4611686018427387905) must be within +-2^62"},
    {"negative out stride", [](auto& a) { a.out_token_stride = -1; }, Code::bad_stride, "out_token_stride (-1) is negative"},
    {"out heads overlap", [](auto& a) { a.out_head_stride = 100; }, Code::bad_stride, "out_head_stride (100) < 128"},
    {"out tokens overlap", [](auto& a) { a.out_token_stride = 1000; }, Code::bad_stride, "out_token_stride (1000) < 1024"},
    {"cache heads overlap", [](auto& a) { a.cache = OutputLayout::flat(1024, 64); }, Code::bad_stride, "cache.head_stride (64) < 128"},
    {"cache pages overlap", [](auto& a) { a.cache = OutputLayout::paged(16, 8192, 1024, 128); }, Code::bad_stride, "cache.block_stride (8192) < 16384"},
    {"cache overflow", [](auto& a) { a.cache_rows = std::int64_t{1} << 60; }, Code::overflow, "cache_rows (1152921504606846976) with this layout addresses beyond int64"},
    {"bad scale_kind", [](auto& a) { a.scale_kind = static_cast<ScaleKind>(9); }, Code::bad_option, "scale_kind (9) is not a ScaleKind"},
    {"k_scale with per_head", [](auto& a) { per_head(a); a.k_scale = kvcast::Scale::in_device_memory(fake_floats(0xD0000)); }, Code::bad_option, "k_scale is given but scale_kind is per_head"},
    {"head scales with per_tensor", [](auto& a) { a.v_head_scales = fake_floats(0xA1000); }, Code::bad_option, "v_head_scales is given but scale_kind is per_tensor"},
    {"token scales with per_head", [](auto& a) { per_head(a); a.k_scales = fake_floats(0xB0000); }, Code::bad_option, "k_scales is given but scale_kind is per_head"},
    {"scales layout with per_tensor", [](auto& a) { a.scales = OutputLayout::contiguous(8, 1); }, Code::bad_option, "scales is set but scale_kind is per_tensor"},
    {"per_head without k's", [](auto& a) { per_head(a); a.k_head_scales = nullptr; }, Code::null_pointer, "k_head_scales is null while k_cache is given (scale_kind per_head)"},
    {"per_token_head without v's", [](auto& a) { per_token_head(a); a.v_scales = nullptr; }, Code::null_pointer, "v_scales is null while v_cache is given (scale_kind per_token_head)"},
    {"token scales without v_cache", [](auto& a) { per_token_head(a); a.v_cache = nullptr; a.v = nullptr; }, Code::unexpected_pointer, "v_scales is given while v_cache is null"},
    {"token scales misaligned", [](auto& a) { per_token_head(a); a.k_scales = fake_floats(0xB0002); }, Code::bad_option, "k_scales is not aligned to a float (4 bytes)"},
    {"scale rows overlap", [](auto& a) { per_token_head(a); a.scales = OutputLayout::flat(4, 1); }, Code::bad_stride, "scales.token_stride (4) < 8"},
    {"k and v overlap", [](auto& a) { a.v = fake_out(0x50000 + 1024); }, Code::bad_stride, "k and v overlap"},
    {"k on its cache", [](auto& a) { a.k = fake_out(0x10000 + 4096); }, Code::bad_stride, "k overlaps k_cache"},
    {"v on k's scales", [](auto& a) { per_token_head(a); a.v = fake_out(0xB0000 - 1024); }, Code::bad_stride, "v overlaps k_scales"},
    {"too many segments", [](auto& a) { a.num_tokens = std::int64_t{1} << 30; a.out_head_stride = 256; a.k = fake_out(std::uintptr_t{1} << 40); a.v = fake_out(std::uintptr_t{1} << 44); }, Code::bad_shape, "num_tokens*heads (1073741824*8) exceeds 2^31-1"},
};

TEST(ReadValidation, ValidArgumentsPass) {
  for (auto mutate : {+[](UpcastArgs<Bf16>&) {}, +[](UpcastArgs<Bf16>& a) { page_table(a); },
                      +[](UpcastArgs<Bf16>& a) { per_head(a); }, +[](UpcastArgs<Bf16>& a) { per_token_head(a); }}) {
    UpcastArgs<Bf16> a = valid_read_args();
    mutate(a);
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::make_read_plan(a, plan);
    EXPECT_TRUE(s.ok()) << s.message();
  }
}

TEST(ReadValidation, EveryRuleHasItsCodeAndMessage) {
  for (const Invalid& c : kInvalid) {
    UpcastArgs<Bf16> a = valid_read_args();
    c.mutate(a);
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::make_read_plan(a, plan);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
    EXPECT_NE(std::string(s.message()).find(c.message), std::string::npos)
        << c.name << ": message \"" << s.message() << "\" lacks \"" << c.message << "\"";
  }
}

TEST(ReadValidation, MessagesAreDistinct) {
  std::vector<std::string> seen;
  for (const Invalid& c : kInvalid) {
    UpcastArgs<Bf16> a = valid_read_args();
    c.mutate(a);
    kvcast::detail::ReadPlan plan;
    seen.push_back(kvcast::make_read_plan(a, plan).message());
  }
  for (std::size_t i = 0; i < seen.size(); ++i)
    for (std::size_t j = i + 1; j < seen.size(); ++j) EXPECT_NE(seen[i], seen[j]) << kInvalid[i].name << " vs " << kInvalid[j].name;
}

TEST(ReadValidation, ZeroTokensIsANoOpEvenWithNullPointers) {
  UpcastArgs<Bf16> a;
  a.heads = 8;
  a.head_dim = 128;
  kvcast::detail::ReadPlan plan;
  EXPECT_EQ(kvcast::make_read_plan(a, plan).code(), Code::bad_option);  // cache_rows is still required
  a.cache_rows = 0;
  ASSERT_TRUE(kvcast::make_read_plan(a, plan).ok());
  EXPECT_EQ(plan.num_segments, 0);
}

// An empty batch (cu_seq_lens = {0}) reads nothing: its [0, max_pages] table may have a null data
// pointer and no pages, as empty framework tensors do; the plan launches nothing.
TEST(ReadValidation, EmptyBatchReadsNothingWithoutATable) {
  for (const bool table : {false, true}) {
    UpcastArgs<Bf16> a = valid_read_args();
    page_table(a);
    a.batch = 0;
    a.max_pages = table ? 4 : 0;
    if (!table) a.block_table = nullptr;
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::make_read_plan(a, plan);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(plan.page_table);
    EXPECT_EQ(plan.num_segments, 0);
  }
}

// K and V interleaved token by token in one workspace are apart, and valid.
TEST(ReadValidation, InterleavedOutputsInOneWorkspace) {
  UpcastArgs<Bf16> a = valid_read_args();
  a.out_token_stride = 2 * 8 * 128;
  a.v = a.k + 8 * 128;
  kvcast::detail::ReadPlan plan;
  const Status s = kvcast::make_read_plan(a, plan);
  EXPECT_TRUE(s.ok()) << s.message();
  a.v = a.k + 8 * 128 - 1;  // one element onto K's
  EXPECT_EQ(kvcast::make_read_plan(a, plan).code(), Code::bad_stride);
}

// The vector follows every pointer and stride a vector start depends on, and the grid covers
// every segment and every element, over random shapes.
TEST(ReadPlan, VectorAndGridFollowTheCall) {
  std::mt19937_64 rng(7);
  int row_warps = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    UpcastArgs<Bf16> a = valid_read_args();
    a.num_tokens = 1 + static_cast<std::int64_t>(rng() % 300);
    a.heads = 1 + static_cast<std::int64_t>(rng() % 9);
    const std::int64_t dims[] = {1, 2, 3, 4, 8, 16, 64, 99, 100, 128, 256, 576, 1000, 4096};
    a.head_dim = dims[rng() % (sizeof dims / sizeof dims[0])];
    a.cache_rows = 4096;
    const std::int64_t head_pad = rng() % 3 == 0 ? static_cast<std::int64_t>(rng() % 5) : 0;
    if (rng() % 2) a.cache = OutputLayout::flat(a.heads * (a.head_dim + head_pad), a.head_dim + head_pad);
    constexpr std::uintptr_t kApart = std::uintptr_t{1} << 32;  // every tensor far from the others
    a.k_cache = fake_cache(kApart + (rng() % 4 == 0 ? rng() % 16 : 0));
    a.v_cache = rng() % 5 == 0 ? nullptr : fake_cache(2 * kApart);
    a.k = fake_out(3 * kApart + 2 * (rng() % 4 == 0 ? rng() % 16 : 0));
    a.v = a.v_cache ? fake_out(4 * kApart) : nullptr;
    if (rng() % 3 == 0) a.out_head_stride = a.head_dim + static_cast<std::int64_t>(rng() % 3);
    if (rng() % 3 == 0) {
      a.scale_kind = ScaleKind::per_head;
      a.k_head_scales = fake_floats(5 * kApart);
      a.v_head_scales = a.v_cache ? fake_floats(5 * kApart + 4096) : nullptr;
    }
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::make_read_plan(a, plan);
    ASSERT_TRUE(s.ok()) << s.message();
    const kvcast::detail::KernelChoice& c = plan.choice;
    ASSERT_TRUE(kvcast::detail::read_kernel_exists(c.vec, c.access, plan.kernel));
    if (plan.kernel == kvcast::detail::ReadKernel::row_warp) {
      // A warp a segment of 576 codes, its 8-code pieces allowed by every pointer and stride.
      const bool fused = plan.segs_per_token == 1;
      EXPECT_EQ(plan.seg_len, kvcast::detail::kRowWarpElements);
      EXPECT_EQ(c.log2_group, 5);
      EXPECT_EQ(c.order, kvcast::detail::GridOrder::segments_first);
      EXPECT_EQ(c.chunks(), 1);
      EXPECT_GE(c.ctas() * (kvcast::detail::kBlockSize / 32), plan.num_segments);
      EXPECT_LT((c.ctas() - 1) * (kvcast::detail::kBlockSize / 32), plan.num_segments);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.k_cache) % 8, 0u);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.k) % 16, 0u);
      EXPECT_EQ(plan.cache.block_stride % 8, 0);
      if (!fused) {
        EXPECT_EQ(plan.cache.head_stride % 8, 0);
        EXPECT_EQ(plan.out_head_stride * 2 % 16, 0);
      }
      if (a.num_tokens > 1) {
        EXPECT_EQ(plan.out_token_stride * 2 % 16, 0);
      }
      ++row_warps;
      continue;
    }
    {  // a 576-code segment that stays on the general kernel is one whose pieces do not fit
      const bool fused = plan.segs_per_token == 1;
      const bool pieces_fit = reinterpret_cast<std::uintptr_t>(a.k_cache) % 8 == 0 && reinterpret_cast<std::uintptr_t>(a.k) % 16 == 0 &&
                              plan.cache.block_stride % 8 == 0 && (fused || (plan.cache.head_stride % 8 == 0 && plan.out_head_stride * 2 % 16 == 0)) &&
                              (a.num_tokens == 1 || plan.out_token_stride * 2 % 16 == 0);
      EXPECT_FALSE(plan.seg_len == kvcast::detail::kRowWarpElements && pieces_fit) << "a 576-code segment whose pieces fit takes the row warp";
    }
    const std::int64_t group = std::int64_t{1} << c.log2_group;
    const bool chunks_first = c.order == kvcast::detail::GridOrder::chunks_first;
    EXPECT_GE(c.ctas() * (kvcast::detail::kBlockSize / group), plan.num_segments);
    EXPECT_GE(c.chunks() * group * c.vec, plan.seg_len);
    EXPECT_LE(c.grid_y, kvcast::detail::kMaxGridY);
    if (chunks_first) {
      EXPECT_GT(c.chunks(), 1);
    }
    if (c.access == kvcast::tile::Access::vector) {
      const std::int64_t v = c.vec, store = std::min<std::int64_t>(2 * v, 16);  // pieces of one 16-byte store (read_piece)
      const bool fused = plan.segs_per_token == 1;
      EXPECT_EQ(plan.seg_len % v, 0);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.k_cache) % v, 0u);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.k) % store, 0u);
      EXPECT_EQ(plan.cache.block_stride % v, 0);
      if (!fused) {
        EXPECT_EQ(plan.cache.head_stride % v, 0);
        EXPECT_EQ(plan.out_head_stride * 2 % store, 0);
      }
      if (a.num_tokens > 1) {
        EXPECT_EQ(plan.out_token_stride * 2 % store, 0);
      }
      // The group leaves at most 1/kIdleShare of the segment's threads idle, and is the
      // widest such power of two (up to the CTA).
      const std::int64_t items = plan.seg_len / v;
      const auto idle = [&](std::int64_t g) { return (items + g - 1) / g * g - items; };
      EXPECT_LE(idle(group) * kvcast::detail::tuning::kIdleShare, items) << "items " << items << " group " << group;
      if (2 * group <= std::min<std::int64_t>(std::int64_t{1} << kvcast::detail::log2_ceil(items), kvcast::detail::kBlockSize)) {
        EXPECT_GT(idle(2 * group) * kvcast::detail::tuning::kIdleShare, items) << "items " << items << " group " << group;
      }
    } else {
      EXPECT_GE(c.log2_group, 5);  // interleaved: at least a warp
    }
    // Where 16 is legal the widest is taken.
    const bool plain = reinterpret_cast<std::uintptr_t>(a.k) % 32 == 0 && head_pad == 0 && plan.out_head_stride == a.head_dim;
    for (const int v : {16})
      if (plain && plan.seg_len % v == 0 && reinterpret_cast<std::uintptr_t>(a.k_cache) % v == 0 && a.head_dim % v == 0) {
        EXPECT_GE(c.vec, v) << "head_dim " << a.head_dim;
      }
  }
  EXPECT_GT(row_warps, 100);  // 576-code rows are drawn often enough to reach the row warp
}

// Which 576-code segments take a warp each: fp8 codes whose 8-code pieces (4 for fp32 values)
// every pointer and stride allows, whatever makes the segment 576 codes long.
TEST(ReadPlan, RowWarpForSegmentsOf576) {
  using kvcast::detail::ReadKernel;
  struct Case {
    std::int64_t heads, head_dim;
    ScaleKind kind;
    std::int64_t cache_misalign, out_pad;
    ReadKernel want;
  };
  const Case cases[] = {
      {1, 576, ScaleKind::per_tensor, 0, 0, ReadKernel::row_warp},
      {1, 576, ScaleKind::per_token_head, 0, 0, ReadKernel::row_warp},
      {2, 576, ScaleKind::per_head, 0, 0, ReadKernel::row_warp},      // a head a segment
      {4, 144, ScaleKind::per_tensor, 0, 0, ReadKernel::row_warp},    // 4 fused heads of 144
      {4, 144, ScaleKind::per_head, 0, 0, ReadKernel::general},       // heads apart: 144-code segments
      {1, 576, ScaleKind::per_tensor, 4, 0, ReadKernel::general},     // the cache 4 bytes off 8
      {1, 576, ScaleKind::per_tensor, 8, 0, ReadKernel::row_warp},    // 8 bytes off 16: pieces still fit
      {2, 576, ScaleKind::per_tensor, 0, 4, ReadKernel::general},     // output heads 8 bytes off 16
      {1, 1152, ScaleKind::per_tensor, 0, 0, ReadKernel::general},
  };
  for (const Case& k : cases) {
    UpcastArgs<Bf16> a = valid_read_args();
    a.num_tokens = 37;
    a.heads = k.heads;
    a.head_dim = k.head_dim;
    a.cache_rows = 4096;
    constexpr std::uintptr_t kApart = std::uintptr_t{1} << 32;
    a.k_cache = fake_cache(kApart + static_cast<std::uintptr_t>(k.cache_misalign));
    a.v_cache = fake_cache(2 * kApart);
    a.k = fake_out(3 * kApart);
    a.v = fake_out(4 * kApart);
    if (k.out_pad) a.out_head_stride = a.head_dim + k.out_pad;
    a.scale_kind = k.kind;
    if (k.kind == ScaleKind::per_head) a.k_head_scales = fake_floats(5 * kApart), a.v_head_scales = fake_floats(5 * kApart + 4096);
    if (k.kind == ScaleKind::per_token_head) a.k_scales = fake_floats(6 * kApart), a.v_scales = fake_floats(7 * kApart);
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::make_read_plan(a, plan);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(plan.kernel, k.want) << k.heads << "x" << k.head_dim << " " << kvcast::to_string(k.kind) << " misalign " << k.cache_misalign
                                   << " out_pad " << k.out_pad;
    // fp32 values: pieces of 4 codes, so a cache 4 bytes off 8 still fits.
    UpcastArgs<float> f;
    f.k_cache = a.k_cache, f.v_cache = a.v_cache, f.cache_rows = a.cache_rows, f.num_tokens = a.num_tokens, f.heads = a.heads;
    f.head_dim = a.head_dim, f.loc = a.loc, f.scale_kind = a.scale_kind, f.k_scale = a.k_scale, f.v_scale = a.v_scale;
    f.k_head_scales = a.k_head_scales, f.v_head_scales = a.v_head_scales, f.k_scales = a.k_scales, f.v_scales = a.v_scales;
    f.k = reinterpret_cast<float*>(3 * kApart), f.v = reinterpret_cast<float*>(4 * kApart);
    if (k.out_pad) f.out_head_stride = a.head_dim + k.out_pad / 2;  // the same bytes off 16
    ASSERT_TRUE(kvcast::make_read_plan(f, plan).ok());
    const ReadKernel want_f32 = k.cache_misalign == 4 && k.out_pad == 0 && k.head_dim * k.heads == 576 ? ReadKernel::row_warp : k.want;
    EXPECT_EQ(plan.kernel, want_f32) << "fp32 " << k.heads << "x" << k.head_dim << " " << kvcast::to_string(k.kind);
  }
  // NVFP4 codes keep their own kernel.
  UpcastArgs<Bf16> a = valid_read_args();
  a.heads = 1, a.head_dim = 576, a.cache_rows = 64;
  a.k_block_scales = fake_cache(std::uintptr_t{8} << 32), a.v_block_scales = fake_cache(std::uintptr_t{9} << 32);
  kvcast::detail::ReadPlan plan;
  const Status nvfp4 = kvcast::make_read_plan(a, plan, kvcast::CodeFormat::nvfp4);
  ASSERT_TRUE(nvfp4.ok()) << nvfp4.message();
  EXPECT_EQ(plan.kernel, ReadKernel::general);
}

// ---- The host reference of the read, checked by hand. ------------------------------------

std::uint16_t bf16_bits(float f) { return kvcast::ref::to_bf16(f); }

// Slots: padding leaves its token untouched, an out-of-range row leaves it untouched and counts,
// mult and offset place the row, per-head scales apply by head.
TEST(ReadReference, HandCheckedGatherBySlots) {
  // A contiguous E4M3 cache of 4 rows, 2 heads of 2: row r, head h holds codes {0x38 + r, 0xB8 + h}.
  std::vector<std::uint8_t> cache(4 * 2 * 2);
  for (int r = 0; r < 4; ++r)
    for (int h = 0; h < 2; ++h) cache[(r * 2 + h) * 2] = static_cast<std::uint8_t>(0x38 + r), cache[(r * 2 + h) * 2 + 1] = static_cast<std::uint8_t>(0xB8 + h);
  const float head_scales[2] = {2.0f, 0.5f};
  const std::int64_t loc[] = {1, -1, 0, 7};  // rows 2*slot + 1: 3, padding, 1, 15 (out of range)
  std::vector<Bf16> out(4 * 2 * 2, Bf16{0xDEAD});
  unsigned long long errors = 0;
  UpcastArgs<Bf16> a;
  a.k_cache = cache.data();
  a.cache_rows = 4;
  a.k = out.data();
  a.num_tokens = 4;
  a.heads = 2;
  a.head_dim = 2;
  a.loc = loc;
  a.mult = 2;
  a.offset = 1;
  a.error_count = &errors;
  a.scale_kind = ScaleKind::per_head;
  a.k_head_scales = head_scales;
  ASSERT_TRUE((kvcast::ref::upcast<kvcast::e4m3>(a).ok()));
  // E4M3 0x38 + r is 1 + r/8; 0xB8 is -1, 0xB9 -1.125.
  const auto value = [&](std::int64_t t, std::int64_t h, std::int64_t d) { return out[(t * 2 + h) * 2 + d].bits; };
  EXPECT_EQ(value(0, 0, 0), bf16_bits((1 + 3 / 8.0f) * 2)) << "row 3, head 0";
  EXPECT_EQ(value(0, 0, 1), bf16_bits(-1.0f * 2));
  EXPECT_EQ(value(0, 1, 0), bf16_bits((1 + 3 / 8.0f) * 0.5f));
  EXPECT_EQ(value(0, 1, 1), bf16_bits(-1.125f * 0.5f));
  EXPECT_EQ(value(2, 0, 0), bf16_bits((1 + 1 / 8.0f) * 2)) << "row 1";
  for (int d = 0; d < 4; ++d) EXPECT_EQ(out[4 + d].bits, 0xDEAD) << "padding token untouched";
  for (int d = 0; d < 4; ++d) EXPECT_EQ(out[12 + d].bits, 0xDEAD) << "out-of-range token untouched";
  EXPECT_EQ(errors, 1u);
}

// A page table: sequences by cu_seq_lens, seq_starts, pages of 2 rows of a paged cache; a page
// index past max_pages and an entry outside the cache count; tokens past the last sequence and
// an empty sequence read nothing.
TEST(ReadReference, HandCheckedGatherByPageTable) {
  // 3 pages of 2 rows, 1 head of 1: row r holds E4M3 code 0x38 + r (1 + r/8), in NHD pages with
  // a gap of 2 bytes after each page.
  const OutputLayout layout = OutputLayout::paged(2, 4, 1, 1);
  std::vector<std::uint8_t> cache(12, 0xFF);
  for (int r = 0; r < 6; ++r) cache[static_cast<std::size_t>(layout.address(r, 0))] = static_cast<std::uint8_t>(0x38 + r);
  // Sequence 0: output tokens 0-2, its tokens 1-3 (seq_starts), pages {2, 0}: rows 5, 0, 1.
  // Sequence 1: empty. Sequence 2: output tokens 3-5, its tokens 0-2, pages {1, 9}: rows 2, 3,
  // then entry 9 is outside the 3 pages (counted). Sequence 3: output tokens 6-7, its tokens
  // 3-4: page index 1 holds 7 (outside: counted), page index 2 is past max_pages (counted).
  const std::int32_t block_table[] = {2, 0, 0, 0, 1, 9, -1, 7};  // [batch = 4, max_pages = 2]
  const std::int32_t cu[] = {0, 3, 3, 6, 8};
  const std::int32_t starts[] = {1, 0, 0, 3};
  std::vector<float> out(11, -1.0f);
  unsigned long long errors = 0;
  UpcastArgs<float> a;
  a.k_cache = cache.data();
  a.cache = layout;
  a.cache_rows = 6;
  a.k = out.data();
  a.num_tokens = 10;  // tokens 8, 9: in no sequence
  a.heads = 1;
  a.head_dim = 1;
  a.block_table = block_table;
  a.batch = 4;
  a.max_pages = 2;
  a.cu_seq_lens = cu;
  a.seq_starts = starts;
  a.error_count = &errors;
  a.k_scale = kvcast::Scale::host_value(4.0f);
  ASSERT_TRUE((kvcast::ref::upcast<kvcast::e4m3>(a).ok()));
  const auto row_value = [](int r) { return (1 + r / 8.0f) * 4.0f; };
  EXPECT_EQ(out[0], row_value(5));  // seq 0, token 1: page index 0 → page 2, row 5
  EXPECT_EQ(out[1], row_value(0));  // token 2: page index 1 → page 0, row 0
  EXPECT_EQ(out[2], row_value(1));  // token 3: row 1
  EXPECT_EQ(out[3], row_value(2));  // seq 2, token 0: page 1, row 2
  EXPECT_EQ(out[4], row_value(3));
  EXPECT_EQ(out[5], -1.0f);         // token 2: page index 1 → 9, outside the 3 pages: counted
  EXPECT_EQ(out[6], -1.0f);         // seq 3, token 3: page index 1 → 7: counted
  EXPECT_EQ(out[7], -1.0f);         // token 4: page index 2 >= max_pages: counted
  EXPECT_EQ(out[8], -1.0f);         // in no sequence
  EXPECT_EQ(out[9], -1.0f);
  EXPECT_EQ(out[10], -1.0f);        // past the output
  EXPECT_EQ(errors, 3u);
}

// ---- Write, then read: the references against the oracle's quantize-then-dequantize. -------

template <class T>
const oracle::Table* table16() {
  if constexpr (std::is_same_v<T, Half>) return &oracle::f16();
  if constexpr (std::is_same_v<T, Bf16>) return &oracle::bf16();
  return nullptr;
}
template <class T>
std::uint32_t random_input(std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 30.0f);
  const float x = rng() % 50 == 0 ? 0.0f : normal(rng);
  if constexpr (std::is_same_v<T, Half>) return kvcast::ref::to_half(x);
  if constexpr (std::is_same_v<T, Bf16>) return kvcast::ref::to_bf16(x);
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return bits;
}
template <class T>
double input_value(std::uint32_t bits) {
  if constexpr (std::is_same_v<T, Half>) return oracle::f16_value(static_cast<std::uint16_t>(bits));
  if constexpr (std::is_same_v<T, Bf16>) return oracle::bf16_value(static_cast<std::uint16_t>(bits));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// One random case: T in and out, Format, a scale kind, a cache layout; the write's slots are
// read back in a shuffled order through the read's slots.
template <class T, class Format>
void round_trip(std::mt19937_64& rng) {
  const std::int64_t N = 1 + static_cast<std::int64_t>(rng() % 9), H = 1 + static_cast<std::int64_t>(rng() % 3),
                     D = 1 + static_cast<std::int64_t>(rng() % 20);
  const ScaleKind kind = static_cast<ScaleKind>(rng() % 3);
  const std::int64_t rows = N + 3, B = 4;
  OutputLayout layout = OutputLayout::contiguous(H, D);
  switch (rng() % 3) {
    case 1: layout = OutputLayout::paged_nhd(B, H, D); break;
    case 2: layout = OutputLayout::paged_hnd(B, H, D); break;
    default: break;
  }
  const std::int64_t cache_rows = (rows + B - 1) / B * B;
  std::vector<T> in(static_cast<std::size_t>(N * H * D));
  std::vector<std::uint32_t> bits(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    bits[i] = random_input<T>(rng);
    std::memcpy(static_cast<void*>(&in[i]), &bits[i], sizeof(T));
  }
  std::vector<std::int64_t> slots(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i) slots[i] = i;
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(static_cast<std::size_t>(N));
  std::vector<std::uint8_t> cache(static_cast<std::size_t>(layout.address(cache_rows - 1, H - 1) + D + layout.block_stride), 0);
  std::vector<float> head_scales(static_cast<std::size_t>(H)), token_scales(static_cast<std::size_t>(cache_rows * H), 0.0f);
  std::uniform_real_distribution<float> scale_dist(0.05f, 3.0f);
  for (float& s : head_scales) s = scale_dist(rng);
  const float tensor_scale = scale_dist(rng);

  kvcast::DowncastArgs<T> w;
  w.k = in.data();
  w.k_out = cache.data();
  w.out = layout;
  w.num_tokens = N;
  w.heads = H;
  w.head_dim = D;
  w.loc = slots.data();
  w.out_rows = cache_rows;
  w.scale_kind = kind;
  if (kind == ScaleKind::per_tensor) w.k_scale = kvcast::Scale::host_value(tensor_scale);
  if (kind == ScaleKind::per_head) w.k_head_scales = head_scales.data();
  if (kind == ScaleKind::per_token_head) w.k_scales_out = token_scales.data();
  ASSERT_TRUE((kvcast::ref::downcast<Format, kvcast::Arithmetic::fp32>(w).ok()));

  std::vector<T> back(in.size());
  UpcastArgs<T> r;
  r.k_cache = cache.data();
  r.cache = layout;
  r.cache_rows = cache_rows;
  r.k = back.data();
  r.num_tokens = N;
  r.heads = H;
  r.head_dim = D;
  r.loc = slots.data();
  r.scale_kind = kind;
  if (kind == ScaleKind::per_tensor) r.k_scale = kvcast::Scale::host_value(tensor_scale);
  if (kind == ScaleKind::per_head) r.k_head_scales = head_scales.data();
  if (kind == ScaleKind::per_token_head) r.k_scales = token_scales.data();
  ASSERT_TRUE((kvcast::ref::upcast<Format>(r).ok()));

  // The oracle: torch's quantize-then-dequantize, element by element.
  const oracle::Table& fp8 = Format::kMantissaBits == 3 ? oracle::e4m3() : oracle::e5m2();
  for (std::int64_t t = 0; t < N; ++t)
    for (std::int64_t h = 0; h < H; ++h) {
      float scale = kind == ScaleKind::per_tensor ? tensor_scale : head_scales[h];
      if (kind == ScaleKind::per_token_head) {
        double amax = 0;
        for (std::int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(input_value<T>(bits[(t * H + h) * D + d])));
        scale = std::max(static_cast<float>(amax) / Format::kMax, 1e-6f);  // one fp32 division
      }
      for (std::int64_t d = 0; d < D; ++d) {
        const std::size_t i = static_cast<std::size_t>((t * H + h) * D + d);
        const std::uint32_t code = oracle::quantize(fp8, table16<T>(), input_value<T>(bits[i]), scale, false);
        const std::uint32_t want = oracle::dequantize(table16<T>(), Format::kMantissaBits == 3, code, scale);
        std::uint32_t got = 0;
        std::memcpy(&got, &back[i], sizeof(T));
        ASSERT_EQ(got, want) << "token " << t << " head " << h << " d " << d << " kind " << kvcast::to_string(kind) << " N/H/D "
                             << N << "/" << H << "/" << D;
      }
    }
}

TEST(ReadReference, WriteThenReadIsQuantizeThenDequantize) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    round_trip<Bf16, kvcast::e4m3>(rng);
    round_trip<Half, kvcast::e4m3>(rng);
    round_trip<float, kvcast::e5m2>(rng);
    round_trip<Bf16, kvcast::e5m2>(rng);
    if (HasFatalFailure()) return;
  }
}

// ---- NVFP4 (issue #17): the read's rules, its plan, and its reference on a hand-checked block. -

namespace nvfp4_read {

// valid_read_args() as an NVFP4 read: 64 cache rows of [8 heads, 64 code bytes] (the caches span
// 32 KiB each), block scales [64, 8, 8] apart from them.
UpcastArgs<Bf16> valid_args() {
  UpcastArgs<Bf16> a = valid_read_args();
  a.k_block_scales = fake_cache(0xC0000);
  a.v_block_scales = fake_cache(0xC1000);
  return a;
}

const Invalid kRules[] = {
    {"head_dim not of 16", [](auto& a) { a.head_dim = 40; }, Code::bad_shape, "head_dim (40) must be a multiple of 16 with format nvfp4"},
    {"per_head", [](auto& a) { per_head(a); }, Code::bad_option, "scale_kind is per_head, but format nvfp4 takes one global scale g a tensor"},
    {"no v block scales", [](auto& a) { a.v_block_scales = nullptr; }, Code::null_pointer, "v_block_scales is null while v_cache is given"},
    {"k block scales without k", [](auto& a) { a.k_cache = nullptr; a.k = nullptr; }, Code::unexpected_pointer, "k_block_scales is given while k_cache is null"},
    {"block-scale heads overlap", [](auto& a) { a.block_scales = OutputLayout::flat(64, 7); }, Code::bad_stride, "block_scales.head_stride (7) < 8"},
    {"output on block scales", [](auto& a) { a.v_block_scales = fake_cache(0x70000 + 64); }, Code::bad_stride, "v overlaps v_block_scales"},
    {"cache rows overlap", [](auto& a) { a.cache = OutputLayout::flat(256, 64); }, Code::bad_stride, "cache.token_stride (256) < 512"},
};

}  // namespace nvfp4_read

TEST(Nvfp4ReadValidation, EveryRuleHasItsCodeAndMessage) {
  kvcast::detail::ReadPlan valid;
  const Status ok = kvcast::detail::check_read_args(nvfp4_read::valid_args(), valid, kvcast::CodeFormat::nvfp4);
  EXPECT_TRUE(ok.ok()) << ok.message();
  for (const Invalid& c : nvfp4_read::kRules) {
    UpcastArgs<Bf16> a = nvfp4_read::valid_args();
    c.mutate(a);
    kvcast::detail::ReadPlan plan;
    const Status s = kvcast::detail::check_read_args(a, plan, kvcast::CodeFormat::nvfp4);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
    EXPECT_NE(std::string(s.message()).find(c.message), std::string::npos) << c.name << ": message \"" << s.message() << "\"";
  }
  kvcast::detail::ReadPlan plan;
  UpcastArgs<Bf16> f = valid_read_args();
  f.k_block_scales = fake_cache(0xC0000);
  EXPECT_NE(std::string(kvcast::detail::check_read_args(f, plan).message()).find("k_block_scales is given, but the format is fp8"),
            std::string::npos);
}

// A block of 16 codes a thread, one 8-byte load and whole stores where everything is aligned,
// else element by element; heads never fused (their block scales have their own layout).
TEST(Nvfp4ReadPlan, ABlockAThread) {
  kvcast::detail::ReadPlan plan;
  UpcastArgs<Bf16> a = nvfp4_read::valid_args();
  ASSERT_TRUE(kvcast::make_read_plan(a, plan, kvcast::CodeFormat::nvfp4).ok());
  EXPECT_EQ(plan.choice.vec, 16);
  EXPECT_EQ(plan.choice.access, kvcast::tile::Access::vector);
  EXPECT_EQ(plan.seg_len, 128);
  EXPECT_EQ(plan.segs_per_token, 8);
  a.out_head_stride = 129;  // odd output rows
  ASSERT_TRUE(kvcast::make_read_plan(a, plan, kvcast::CodeFormat::nvfp4).ok());
  EXPECT_EQ(plan.choice.access, kvcast::tile::Access::elements);
  a = nvfp4_read::valid_args();
  a.k_cache = fake_cache(0x10004);  // codes not at an 8-byte boundary
  ASSERT_TRUE(kvcast::make_read_plan(a, plan, kvcast::CodeFormat::nvfp4).ok());
  EXPECT_EQ(plan.choice.access, kvcast::tile::Access::elements);
}

// The reference's read of one block by hand: sf 0x48 (4), g 0.25: e2m1 * 4 * 0.25 = e2m1; a NaN
// block scale reads as NaN.
TEST(Nvfp4ReadReference, HandCheckedBlock) {
  using kvcast::ref::BFloat16;
  const std::uint8_t codes[16] = {0xA1, 0x73, 0x80, 0x64, 0x0F, 0x28, 0x64, 0xC6,   // row 0
                                  0x21, 0x43, 0x65, 0x07, 0x00, 0x00, 0x00, 0x00};  // row 1
  const std::uint8_t scales[2] = {0x48, 0x7F};
  std::vector<BFloat16> out(3 * 16, BFloat16{0x1234});
  const std::int64_t loc[] = {0, -1, 1};
  UpcastArgs<BFloat16> a;
  a.k_cache = codes;
  a.k_block_scales = scales;
  a.cache_rows = 2;
  a.k = out.data();
  a.num_tokens = 3;
  a.heads = 1;
  a.head_dim = 16;
  a.loc = loc;
  a.k_scale = kvcast::Scale::host_value(0.25f);
  ASSERT_TRUE(kvcast::ref::upcast<kvcast::nvfp4>(a).ok());
  const float want[16] = {0.5f, -1, 1.5f, 6, 0, -0.0f, 2, 4, -6, 0, -0.0f, 1, 2, 4, 4, -2};
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i].bits, kvcast::ref::to_bf16(want[i])) << "element " << i;
    EXPECT_EQ(out[16 + i].bits, 0x1234) << "padding token, element " << i;
    EXPECT_EQ(out[32 + i].bits, 0x7fff) << "NaN block, element " << i;
  }
}

}  // namespace
