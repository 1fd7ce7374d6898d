// CPU, plain C++ (no CUDA header): validation rules and their messages, the launch plan, the
// layout address maths, FastDivmod, and the host reference on hand-checked cases.
#include <gtest/gtest.h>

#include <kvcast/detail/fast_divmod.hpp>
#include <kvcast/detail/plan.hpp>
#include <kvcast/validate.hpp>
#include <kvcast/reference.hpp>

#include "oracle.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using kvcast::Code;
using kvcast::DowncastArgs;
using kvcast::OutputLayout;
using kvcast::Status;
using Bf16 = kvcast::ref::BFloat16;

// Pointers the validation only looks at (never dereferenced): suitably aligned fake addresses.
const Bf16* fake_in(std::uintptr_t a = 0x10000) { return reinterpret_cast<const Bf16*>(a); }
void* fake_out(std::uintptr_t a = 0x20000) { return reinterpret_cast<void*>(a); }

// The plan's choice as the tests read it: elements an access (the vector, or 1 interleaved),
// vectors a segment, the grid order, the realigned kernel.
int access(const kvcast::detail::Plan& p) { return p.choice.access == kvcast::tile::Access::vector ? p.choice.vec : 1; }
std::int64_t items(const kvcast::detail::Plan& p) { return (p.seg_len + p.choice.vec - 1) / p.choice.vec; }
bool chunks_first(const kvcast::detail::Plan& p) { return p.choice.order == kvcast::detail::GridOrder::chunks_first; }
bool realigned(const kvcast::detail::Plan& p) { return p.choice.kernel == kvcast::detail::WriteKernel::realigned; }

DowncastArgs<Bf16> valid_args() {
  DowncastArgs<Bf16> a;
  a.out_rows = DowncastArgs<Bf16>::kUncheckedRows;
  a.k = fake_in(0x10000);
  a.v = fake_in(0x30000);
  a.k_out = fake_out(0x50000);
  a.v_out = fake_out(0x70000);
  a.num_tokens = 16;
  a.heads = 8;
  a.head_dim = 128;
  return a;
}

// Pointers to floats the validation only looks at.
float* fake_floats(std::uintptr_t a) { return reinterpret_cast<float*>(a); }

// valid_args() with per-(token, head) scales: 64 rows (k_out and v_out span 64 KiB each), the
// scale tensors beside them.
void per_token_head(DowncastArgs<Bf16>& a) {
  a.scale_kind = kvcast::ScaleKind::per_token_head;
  a.out_rows = 64;
  a.k_scales_out = fake_floats(0x90000);
  a.v_scales_out = fake_floats(0x91000);
}
void per_head(DowncastArgs<Bf16>& a) {
  a.scale_kind = kvcast::ScaleKind::per_head;
  a.k_head_scales = fake_floats(0xA0000);
  a.v_head_scales = fake_floats(0xA1000);
}

struct Invalid {
  const char* name;
  void (*mutate)(DowncastArgs<Bf16>&);
  Code code;
  const char* message;  // a substring the message must contain
};

// Every rule, each with the code and the words of its message.
const Invalid kInvalid[] = {
    {"both null", [](auto& a) { a.k = nullptr; a.v = nullptr; a.k_out = nullptr; a.v_out = nullptr; }, Code::null_pointer, "k and v are both null"},
    {"k_out null", [](auto& a) { a.k_out = nullptr; }, Code::null_pointer, "k_out is null while k is given"},
    {"v_out null", [](auto& a) { a.v_out = nullptr; }, Code::null_pointer, "v_out is null while v is given"},
    {"k_out without k", [](auto& a) { a.k = nullptr; }, Code::unexpected_pointer, "k_out is given while k is null"},
    {"v_out without v", [](auto& a) { a.v = nullptr; }, Code::unexpected_pointer, "v_out is given while v is null"},
    {"same outputs", [](auto& a) { a.v_out = a.k_out; }, Code::unexpected_pointer, "k_out and v_out are the same pointer"},
    {"k misaligned", [](auto& a) { a.k = reinterpret_cast<const Bf16*>(0x10001); }, Code::bad_option, "k is not aligned to its element size (2 bytes)"},
    {"v misaligned", [](auto& a) { a.v = reinterpret_cast<const Bf16*>(0x30001); }, Code::bad_option, "v is not aligned to its element size (2 bytes)"},
    {"negative tokens", [](auto& a) { a.num_tokens = -1; }, Code::bad_shape, "num_tokens (-1) is negative"},
    {"zero heads", [](auto& a) { a.heads = 0; }, Code::bad_shape, "heads (0) must be >= 1"},
    {"zero head_dim", [](auto& a) { a.head_dim = 0; }, Code::bad_shape, "head_dim (0) must be >= 1"},
    {"huge row", [](auto& a) { a.heads = 65536; a.head_dim = 65536; }, Code::bad_shape, "heads*head_dim (65536*65536) exceeds 2^24"},
    {"mult zero", [](auto& a) { a.mult = 0; }, Code::bad_option, "mult (0) must be in [1, 2^31-1]"},
    {"mult huge", [](auto& a) { a.mult = std::int64_t{1} << 31; }, Code::bad_option, "mult (2147483648) must be in"},
    {"offset huge", [](auto& a) { a.offset = (std::int64_t{1} << 62) + 1; }, Code::bad_option, "offset (4611686018427387905) must be within +-2^62"},
    {"out_rows -2", [](auto& a) { a.out_rows = -2; }, Code::bad_option, "out_rows (-2) must be >= 0"},
    {"out_rows not set", [](auto& a) { a.out_rows = DowncastArgs<Bf16>::kRowsNotGiven; }, Code::bad_option, "out_rows is not set: give the cache's row count, or kUncheckedRows"},
    {"capacity unchecked", [](auto& a) { a.out_capacity = 100; }, Code::bad_option, "out_capacity (100) is given but out_rows is unchecked"},
    {"head stride overlap", [](auto& a) { a.in_head_stride = 64; }, Code::bad_stride, "in_head_stride (64) < 128"},
    {"token stride overlap", [](auto& a) { a.heads = 1; a.in_token_stride = 100; }, Code::bad_stride, "in_token_stride (100) < 128"},
    {"token stride overlap heads", [](auto& a) { a.in_token_stride = 1000; }, Code::bad_stride, "in_token_stride (1000) < 1024"},
    {"negative in stride", [](auto& a) { a.in_token_stride = -1024; }, Code::bad_stride, "in_token_stride (-1024) is negative"},
    {"in capacity", [](auto& a) { a.in_capacity = 16 * 1024 - 1; }, Code::bad_shape, "in_capacity (16383) < 16384"},
    {"block_size zero", [](auto& a) { a.out = OutputLayout::paged(0, 4096, 1024, 128); }, Code::bad_option, "out.block_size (0) must be >= 1"},
    {"negative out stride", [](auto& a) { a.out = OutputLayout::flat(1024, -128); }, Code::bad_stride, "out.head_stride (-128) is negative"},
    {"out head overlap", [](auto& a) { a.out = OutputLayout::flat(1024, 100); }, Code::bad_stride, "out.head_stride (100) < 128"},
    {"out row overlap", [](auto& a) { a.out = OutputLayout::flat(1000, 128); }, Code::bad_stride, "out.token_stride (1000) < 1024"},
    {"page row overlap", [](auto& a) { a.out = OutputLayout::paged(16, 16 * 1024, 512, 128); }, Code::bad_stride, "out.token_stride (512) < 1024"},
    {"page overlap", [](auto& a) { a.out = OutputLayout::paged(16, 8192, 1024, 128); }, Code::bad_stride, "out.block_stride (8192) < 16384"},
    {"hnd head overlap", [](auto& a) { a.out = OutputLayout::paged(16, 16 * 1024, 128, 1024); }, Code::bad_stride, "out.head_stride (1024) < 2048"},
    {"out capacity", [](auto& a) { a.out_rows = 10; a.out_capacity = 10 * 1024 - 1; }, Code::bad_shape, "out_capacity (10239) < 10240"},
    {"out overflow", [](auto& a) { a.out_rows = std::int64_t{1} << 60; }, Code::overflow, "out_rows (1152921504606846976) with this layout addresses beyond int64"},
    {"in overflow", [](auto& a) { a.num_tokens = std::int64_t{1} << 40; a.in_token_stride = std::int64_t{1} << 40; }, Code::overflow, "in_token_stride (1099511627776) * extent"},
    // Scale kinds and amax.
    {"bad scale_kind", [](auto& a) { a.scale_kind = static_cast<kvcast::ScaleKind>(7); }, Code::bad_option, "scale_kind (7) is not a ScaleKind"},
    {"k_scale with per_head", [](auto& a) { per_head(a); a.k_scale = kvcast::Scale::in_device_memory(fake_floats(0xB0000)); }, Code::bad_option, "k_scale is given but scale_kind is per_head: it would be ignored"},
    {"v_scale with per_token_head", [](auto& a) { per_token_head(a); a.v_scale = kvcast::Scale::in_device_memory(fake_floats(0xB0000)); }, Code::bad_option, "v_scale is given but scale_kind is per_token_head"},
    {"head scales with per_tensor", [](auto& a) { a.k_head_scales = fake_floats(0xA0000); }, Code::bad_option, "k_head_scales is given but scale_kind is per_tensor: set scale_kind = per_head"},
    {"head scales with per_token_head", [](auto& a) { per_token_head(a); a.v_head_scales = fake_floats(0xA0000); }, Code::bad_option, "v_head_scales is given but scale_kind is per_token_head"},
    {"scales_out with per_head", [](auto& a) { per_head(a); a.k_scales_out = fake_floats(0x90000); }, Code::bad_option, "k_scales_out is given but scale_kind is per_head: set scale_kind = per_token_head"},
    {"scales_out layout with per_tensor", [](auto& a) { a.scales_out = OutputLayout::contiguous(8, 1); }, Code::bad_option, "scales_out is set but scale_kind is per_tensor"},
    {"per_head without k's", [](auto& a) { per_head(a); a.k_head_scales = nullptr; }, Code::null_pointer, "k_head_scales is null while k is given (scale_kind per_head)"},
    {"per_head without v's", [](auto& a) { per_head(a); a.v_head_scales = nullptr; }, Code::null_pointer, "v_head_scales is null while v is given (scale_kind per_head)"},
    {"head scales without k", [](auto& a) { per_head(a); a.k = nullptr; a.k_out = nullptr; }, Code::unexpected_pointer, "k_head_scales is given while k is null"},
    {"head scales misaligned", [](auto& a) { per_head(a); a.v_head_scales = fake_floats(0xA1002); }, Code::bad_option, "v_head_scales is not aligned to a float (4 bytes)"},
    {"k_amax without k", [](auto& a) { a.k = nullptr; a.k_out = nullptr; a.k_amax = fake_floats(0xC0000); }, Code::unexpected_pointer, "k_amax is given while k is null"},
    {"v_amax misaligned", [](auto& a) { a.v_amax = fake_floats(0xC0001); }, Code::bad_option, "v_amax is not aligned to a float (4 bytes)"},
    {"one amax for both", [](auto& a) { a.k_amax = a.v_amax = fake_floats(0xC0000); }, Code::unexpected_pointer, "k_amax and v_amax are the same pointer"},
    {"min_scale negative", [](auto& a) { per_token_head(a); a.min_scale = -1.0f; }, Code::bad_option, "min_scale (-1) must be finite and >= 0"},
    {"min_scale NaN", [](auto& a) { per_token_head(a); a.min_scale = NAN; }, Code::bad_option, "min_scale (nan) must be finite and >= 0"},
    {"min_scale inf", [](auto& a) { per_token_head(a); a.min_scale = INFINITY; }, Code::bad_option, "min_scale (inf) must be finite and >= 0"},
    {"reduced head too long", [](auto& a) { per_token_head(a); a.head_dim = 2049; a.heads = 1; }, Code::bad_shape, "head_dim (2049) must be <= 2048 with scale_kind per_token_head"},
    {"per_token_head unchecked", [](auto& a) { per_token_head(a); a.out_rows = DowncastArgs<Bf16>::kUncheckedRows; }, Code::bad_option, "out_rows is unchecked, but scale_kind per_token_head needs the cache's row count"},
    {"no k scale tensor", [](auto& a) { per_token_head(a); a.k_scales_out = nullptr; }, Code::null_pointer, "k_scales_out is null while k is given (scale_kind per_token_head)"},
    {"v scale tensor without v", [](auto& a) { per_token_head(a); a.v = nullptr; a.v_out = nullptr; }, Code::unexpected_pointer, "v_scales_out is given while v is null"},
    {"scale heads overlap", [](auto& a) { per_token_head(a); a.scales_out = OutputLayout::flat(8, 0); }, Code::bad_stride, "scales_out.head_stride (0) < 1, the span of the dimensions inside it: scale heads would overlap"},
    {"scale rows overlap", [](auto& a) { per_token_head(a); a.scales_out = OutputLayout::flat(4, 1); }, Code::bad_stride, "scales_out.token_stride (4) < 8, the span of one row: rows would overlap"},
    {"scale page overlap", [](auto& a) { per_token_head(a); a.scales_out = OutputLayout::paged(16, 100, 8, 1); }, Code::bad_stride, "scales_out.block_stride (100) < 128"},
    {"scales on k's codes", [](auto& a) { per_token_head(a); a.k_scales_out = fake_floats(0x50000 + 4096); }, Code::bad_stride, "k_scales_out overlaps k_out"},
    {"scales on v's codes", [](auto& a) { per_token_head(a); a.k_scales_out = fake_floats(0x70000); }, Code::bad_stride, "k_scales_out overlaps v_out"},
    {"scales on each other", [](auto& a) { per_token_head(a); a.v_scales_out = fake_floats(0x90000 + 1024); }, Code::bad_stride, "k_scales_out overlaps v_scales_out"},
    {"too many segments", [](auto& a) { a.num_tokens = std::int64_t{1} << 30; a.in_head_stride = 256; a.in_token_stride = 0; }, Code::bad_shape, "num_tokens*heads (1073741824*8) exceeds 2^31-1"},
};

TEST(Validation, ValidArgumentsPass) {
  const Status s = kvcast::validate(valid_args());
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_STREQ(s.message(), "");
}

TEST(Validation, EveryRuleHasItsCodeAndMessage) {
  for (const Invalid& c : kInvalid) {
    DowncastArgs<Bf16> a = valid_args();
    c.mutate(a);
    const Status s = kvcast::validate(a);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
    EXPECT_NE(std::string(s.message()).find(c.message), std::string::npos)
        << c.name << ": message \"" << s.message() << "\" lacks \"" << c.message << "\"";
  }
}

TEST(Validation, MessagesAreDistinct) {
  std::vector<std::string> seen;
  for (const Invalid& c : kInvalid) {
    DowncastArgs<Bf16> a = valid_args();
    c.mutate(a);
    seen.push_back(kvcast::validate(a).message());
  }
  for (std::size_t i = 0; i < seen.size(); ++i)
    for (std::size_t j = i + 1; j < seen.size(); ++j) EXPECT_NE(seen[i], seen[j]) << kInvalid[i].name << " vs " << kInvalid[j].name;
}

TEST(Validation, ZeroTokensIsANoOpEvenWithNullPointers) {
  DowncastArgs<Bf16> a;
  a.heads = 8;
  a.head_dim = 128;
  // out_rows is required even here: a forgotten row count is caught on the first call.
  EXPECT_EQ(kvcast::validate(a).code(), Code::bad_option);
  a.out_rows = 0;
  EXPECT_TRUE(kvcast::validate(a).ok());
  kvcast::detail::Plan plan;
  ASSERT_TRUE(kvcast::make_plan(a, plan).ok());
  EXPECT_EQ(plan.num_segments, 0);
}

TEST(Validation, ScaleKindsAndTheirPlacementsThatAreValid) {
  DowncastArgs<Bf16> a = valid_args();
  per_head(a);
  a.k_amax = fake_floats(0xC0000);
  a.v_amax = fake_floats(0xC0004);
  EXPECT_TRUE(kvcast::validate(a).ok()) << kvcast::validate(a).message();
  // Per tensor with amax takes the per-head kernels (one scale for every head), the dense one
  // for the serving call; so do per-head scales, heads fused, where every vector can lie in one
  // head; otherwise the general one, a head a segment.
  DowncastArgs<Bf16> t = valid_args();
  t.k_amax = fake_floats(0xC0000);
  kvcast::detail::Plan plan;
  ASSERT_TRUE(kvcast::make_plan(t, plan).ok());
  EXPECT_EQ(plan.scale_policy, kvcast::detail::ScalePolicyId::per_head);
  EXPECT_EQ(plan.choice.kernel, kvcast::detail::WriteKernel::dense);
  ASSERT_TRUE(kvcast::make_plan(a, plan).ok());
  EXPECT_EQ(plan.choice.kernel, kvcast::detail::WriteKernel::dense);
  EXPECT_EQ(plan.seg_len, a.heads * a.head_dim);
  for (auto edit : {+[](DowncastArgs<Bf16>& h) { h.head_dim = 126; },                  // no 4-element vector in a head
                    +[](DowncastArgs<Bf16>& h) { h.k = fake_in(0x10000 + 2); },        // misaligned input
                    +[](DowncastArgs<Bf16>& h) { h.v = nullptr, h.v_out = nullptr, h.v_head_scales = nullptr, h.v_amax = nullptr; }}) {
    DowncastArgs<Bf16> h = a;
    edit(h);
    ASSERT_TRUE(kvcast::make_plan(h, plan).ok()) << kvcast::make_plan(h, plan).message();
    EXPECT_EQ(plan.choice.kernel, kvcast::detail::WriteKernel::general);
    EXPECT_EQ(plan.segs_per_token, h.heads);
  }

  // Per (token, head): separate, paged, and inline after each page's codes (16 rows of 8 heads
  // of 128 bytes, then their 128 floats); an inline placement 4 bytes early lands on the codes.
  DowncastArgs<Bf16> b = valid_args();
  per_token_head(b);
  EXPECT_TRUE(kvcast::validate(b).ok()) << kvcast::validate(b).message();
  b.scales_out = OutputLayout::paged(16, 16 * 8 + 4, 8, 1);
  EXPECT_TRUE(kvcast::validate(b).ok()) << kvcast::validate(b).message();
  const std::int64_t page = 16 * 1024 + 16 * 8 * 4;
  b.out = OutputLayout::paged(16, page, 1024, 128);
  b.k_out = fake_out(0x100000);
  b.v_out = fake_out(0x200000);
  b.scales_out = OutputLayout::paged(16, page / 4, 8, 1);
  b.k_scales_out = fake_floats(0x100000 + 16 * 1024);
  b.v_scales_out = fake_floats(0x200000 + 16 * 1024);
  EXPECT_TRUE(kvcast::validate(b).ok()) << kvcast::validate(b).message();
  b.k_scales_out = fake_floats(0x100000 + 16 * 1024 - 4);
  EXPECT_NE(std::string(kvcast::validate(b).message()).find("k_scales_out overlaps k_out"), std::string::npos)
      << kvcast::validate(b).message();
  // Only in fp32 arithmetic.
  b.k_scales_out = fake_floats(0x100000 + 16 * 1024);
  EXPECT_EQ(kvcast::make_plan(b, plan, kvcast::Arithmetic::input_precision).code(), Code::bad_option);
  EXPECT_NE(std::string(kvcast::make_plan(b, plan, kvcast::Arithmetic::input_precision).message()).find("fp32 arithmetic"),
            std::string::npos);
}

// valid_args() as a serving engine calls it at decode: int64 slots into 64 rows, the tensors
// far enough apart for calls of up to 128 rows of 8x128 or 2x576.
DowncastArgs<Bf16> serving_call() {
  DowncastArgs<Bf16> a = valid_args();
  a.v = fake_in(0x300000);
  a.out_rows = 64;
  a.loc = reinterpret_cast<const std::int64_t*>(0xB0000);
  a.k_out = fake_out(0x400000);
  a.v_out = fake_out(0x800000);
  return a;
}

// Plans `base` changed by each edit, none of which may take `kernel`.
void expect_not_taken(const DowncastArgs<Bf16>& base, kvcast::detail::WriteKernel kernel,
                      const std::vector<std::pair<const char*, void (*)(DowncastArgs<Bf16>&)>>& edits) {
  kvcast::detail::Plan plan;
  for (const auto& [what, edit] : edits) {
    DowncastArgs<Bf16> a = base;
    edit(a);
    ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << what << ": " << kvcast::make_plan(a, plan).message();
    EXPECT_NE(plan.choice.kernel, kernel) << what;
  }
}

// The serving call of per-(token, head) scales at decode takes the lean row-head warp: a lane
// vector of 2, 4, 8 or 16 (+2) for heads of 64, 128, 256, 576, K and V apart (heads of 64
// without amax up to tuning::kLeanRowHead64ApartUpTo elements a tensor, in one warp past it); a
// call that leaves the serving form in any one way, or is larger, takes the other kernels.
TEST(Plan, LeanRowHeadWarpTakesTheServingCallAtDecode) {
  using kvcast::detail::WriteKernel;
  const auto serving = [](std::int64_t heads, std::int64_t head_dim) {
    DowncastArgs<Bf16> a = serving_call();
    per_token_head(a);
    a.heads = heads;
    a.head_dim = head_dim;
    a.out_rows = 64;
    a.k_scales_out = fake_floats(0x200000);
    a.v_scales_out = fake_floats(0x210000);
    return a;
  };
  kvcast::detail::Plan plan;
  for (auto [heads, head_dim, vec, apart] : {std::tuple{8, 64, 2, true}, {8, 128, 4, true}, {8, 256, 8, true}, {1, 576, 16, true}, {2, 576, 16, true}}) {
    const DowncastArgs<Bf16> a = serving(heads, head_dim);
    ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << kvcast::make_plan(a, plan).message();
    EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean) << heads << "x" << head_dim;
    EXPECT_FALSE(plan.choice.amax) << heads << "x" << head_dim;
    EXPECT_EQ(plan.choice.vec, vec) << heads << "x" << head_dim;
    EXPECT_EQ(plan.choice.grid_z, apart ? 2 : 1) << heads << "x" << head_dim;
    EXPECT_EQ(plan.choice.ctas(), (a.num_tokens * heads + 7) / 8) << heads << "x" << head_dim;
    EXPECT_TRUE(kvcast::detail::write_kernel_exists(WriteKernel::row_head_lean, vec, kvcast::tile::Access::vector, 2,
                                                    kvcast::Arithmetic::fp32, kvcast::detail::ScalePolicyId::per_token_head));
    EXPECT_FALSE(kvcast::detail::write_kernel_exists(WriteKernel::row_head_lean, vec, kvcast::tile::Access::vector, 4,
                                                     kvcast::Arithmetic::fp32, kvcast::detail::ScalePolicyId::per_token_head));
  }
  // Heads of 64 without amax: apart up to tuning::kLeanRowHead64ApartUpTo elements a tensor, in
  // one warp past it (the only lean instance of K and V together: lean_row_head_together).
  EXPECT_TRUE(kvcast::detail::lean_row_head_together(2, false));
  EXPECT_FALSE(kvcast::detail::lean_row_head_together(2, true));
  EXPECT_FALSE(kvcast::detail::lean_row_head_together(4, false));
  for (const std::int64_t extra : {0, 1}) {
    DowncastArgs<Bf16> a = serving(8, 64);
    a.num_tokens = kvcast::detail::tuning::kLeanRowHead64ApartUpTo / 512 + extra;
    ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << kvcast::make_plan(a, plan).message();
    EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean) << a.num_tokens << " tokens";
    EXPECT_EQ(plan.choice.grid_z, extra == 0 ? 2 : 1) << a.num_tokens << " tokens";
  }
  // Pages of contiguous rows are flat rows.
  DowncastArgs<Bf16> paged = serving(8, 128);
  paged.out = OutputLayout::paged_nhd(16, 8, 128);
  paged.scales_out = OutputLayout::paged(16, 16 * 8, 8, 1);
  ASSERT_TRUE(kvcast::make_plan(paged, plan).ok()) << kvcast::make_plan(paged, plan).message();
  EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean);
  const std::vector<std::pair<const char*, void (*)(DowncastArgs<Bf16>&)>> others = {
      {"int32 slots", [](DowncastArgs<Bf16>& a) { a.loc = reinterpret_cast<const std::int32_t*>(0xB0000); }},
      {"no slots", [](DowncastArgs<Bf16>& a) { a.loc = kvcast::Slots{}; }},
      {"mult", [](DowncastArgs<Bf16>& a) { a.mult = 2; }},
      {"offset", [](DowncastArgs<Bf16>& a) { a.offset = 1; }},
      {"K alone", [](DowncastArgs<Bf16>& a) { a.v = nullptr, a.v_out = nullptr, a.v_scales_out = nullptr; }},
      {"HND pages", [](DowncastArgs<Bf16>& a) { a.out = OutputLayout::paged_hnd(16, 8, 128); }},
      {"scale pages apart", [](DowncastArgs<Bf16>& a) { a.scales_out = OutputLayout::paged(16, 16 * 8 + 4, 8, 1); }},
      {"misaligned k", [](DowncastArgs<Bf16>& a) { a.k = fake_in(0x100002); }},
      {"head of 100", [](DowncastArgs<Bf16>& a) { a.head_dim = 100; }},
      {"past the decode size", [](DowncastArgs<Bf16>& a) { a.num_tokens = kvcast::detail::tuning::kTokenHeadLeanUpTo / (8 * 128) + 1, a.out_rows = 128; }},
  };
  expect_not_taken(serving(8, 128), WriteKernel::row_head_lean, others);
  DowncastArgs<Bf16> largest = serving(8, 128);
  largest.num_tokens = kvcast::detail::tuning::kTokenHeadLeanUpTo / (8 * 128);
  largest.out_rows = 512;
  largest.k_scales_out = fake_floats(0x240000);
  largest.v_scales_out = fake_floats(0x250000);
  ASSERT_TRUE(kvcast::make_plan(largest, plan).ok());
  EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean);
  // With the amax output (either tensor's, or both) up to tuning::kAmaxLeanUpTo elements, where
  // every warp adds its maximum; past it, the other kernels.
  for (int which = 1; which <= 3; ++which) {
    DowncastArgs<Bf16> amax = serving(8, 128);
    amax.num_tokens = kvcast::detail::tuning::kAmaxLeanUpTo / (8 * 128);
    if (which & 1) amax.k_amax = fake_floats(0xC0000);
    if (which & 2) amax.v_amax = fake_floats(0xC0004);
    ASSERT_TRUE(kvcast::make_plan(amax, plan).ok()) << kvcast::make_plan(amax, plan).message();
    EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean) << "amax of " << which;
    EXPECT_TRUE(plan.choice.amax) << "amax of " << which << ": the instance with the amax output";
    amax.num_tokens += 1;
    ASSERT_TRUE(kvcast::make_plan(amax, plan).ok()) << kvcast::make_plan(amax, plan).message();
    EXPECT_NE(plan.choice.kernel, WriteKernel::row_head_lean) << "amax of " << which << ", past kAmaxLeanUpTo";
  }
  // Row-heads of 576 up to their own bound (tuning::kTokenHeadLean576UpTo), then the row-head warp.
  DowncastArgs<Bf16> mla = serving(1, 576);
  mla.k = fake_in(0x1000000), mla.v = fake_in(0x2000000);
  mla.k_out = fake_out(0x3000000), mla.v_out = fake_out(0x4000000);
  mla.k_scales_out = fake_floats(0x5000000), mla.v_scales_out = fake_floats(0x5100000);
  mla.out_rows = 8192;
  mla.num_tokens = kvcast::detail::tuning::kTokenHeadLean576UpTo / 576;
  ASSERT_TRUE(kvcast::make_plan(mla, plan).ok()) << kvcast::make_plan(mla, plan).message();
  EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_lean);
  mla.num_tokens += 1;
  ASSERT_TRUE(kvcast::make_plan(mla, plan).ok()) << kvcast::make_plan(mla, plan).message();
  EXPECT_EQ(plan.choice.kernel, WriteKernel::row_head_warp);
}

// The serving call with amax at decode takes the lean amax write, K and V in CTAs of their own:
// one scale a tensor, or a scale a head where a vector's head is a shift; with int32 slots,
// per-head scales without amax or on heads of other sizes, a K alone, unfused heads or more
// elements, the other kernels.
TEST(Plan, LeanAmaxWriteTakesTheServingCallAtDecode) {
  using kvcast::detail::WriteKernel;
  const auto serving = [] {
    DowncastArgs<Bf16> a = serving_call();
    a.k_amax = fake_floats(0xC0000);
    a.v_amax = fake_floats(0xC0004);
    return a;
  };
  kvcast::detail::Plan plan;
  for (const kvcast::Arithmetic mode : {kvcast::Arithmetic::fp32, kvcast::Arithmetic::input_precision}) {
    const DowncastArgs<Bf16> a = serving();
    ASSERT_TRUE(kvcast::make_plan(a, plan, mode).ok()) << kvcast::make_plan(a, plan, mode).message();
    EXPECT_EQ(plan.choice.kernel, WriteKernel::amax_lean);
    EXPECT_EQ(plan.choice.vec, kvcast::detail::kAmaxLeanVec);
    EXPECT_EQ(plan.choice.ctas(), (16 * 8 * 128 / 4 + 255) / 256);
    EXPECT_LE(plan.choice.ctas(), kvcast::detail::tuning::kAmaxAlwaysAddUpToCtas);
    EXPECT_EQ(plan.choice.grid_z, 2);
  }
  DowncastArgs<Bf16> mult = serving();
  mult.mult = 2, mult.offset = 1, mult.out_rows = 200;
  ASSERT_TRUE(kvcast::make_plan(mult, plan).ok());
  EXPECT_EQ(plan.choice.kernel, WriteKernel::amax_lean) << "mult and offset are folded into the row";
  // Scales of each head, where a vector's head is a shift: heads of a power of two, or one head.
  for (auto [heads, head_dim] : {std::pair{8, 128}, {16, 64}, {2, 4}, {1, 576}, {1, 100}}) {
    DowncastArgs<Bf16> a = serving();
    per_head(a);
    a.heads = heads, a.head_dim = head_dim;
    ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << kvcast::make_plan(a, plan).message();
    EXPECT_EQ(plan.choice.kernel, WriteKernel::amax_lean) << "per head, " << heads << "x" << head_dim;
  }
  const std::vector<std::pair<const char*, void (*)(DowncastArgs<Bf16>&)>> others = {
      {"int32 slots", [](DowncastArgs<Bf16>& a) { a.loc = reinterpret_cast<const std::int32_t*>(0xB0000); }},
      {"no amax", [](DowncastArgs<Bf16>& a) { a.k_amax = nullptr, a.v_amax = nullptr; }},
      {"per-head scales without amax", [](DowncastArgs<Bf16>& a) { per_head(a), a.k_amax = nullptr, a.v_amax = nullptr; }},
      {"per-head scales, heads of 96", [](DowncastArgs<Bf16>& a) { per_head(a), a.heads = 8, a.head_dim = 96; }},
      {"per-head scales, heads of 2", [](DowncastArgs<Bf16>& a) { per_head(a), a.heads = 64, a.head_dim = 2; }},
      {"K alone", [](DowncastArgs<Bf16>& a) { a.v = nullptr, a.v_out = nullptr, a.v_amax = nullptr; }},
      {"heads apart", [](DowncastArgs<Bf16>& a) { a.in_head_stride = 136; }},
      {"past the decode size", [](DowncastArgs<Bf16>& a) { a.num_tokens = kvcast::detail::tuning::kAmaxLeanUpTo / (8 * 128) + 1, a.out_rows = 128; }},
  };
  expect_not_taken(serving(), WriteKernel::amax_lean, others);
}

// Per-(token, head) rows of 576 (a warp a row-head) of both tensors put K and V in CTAs of their
// own at decode sizes (grid z of 2); other row-heads (the dense and general kernels), per-tensor
// calls, single tensors and larger calls give each thread both. (NVFP4's: test_nvfp4.)
TEST(Plan, TensorsApartOnlyForRowHeadWarpsOfBothTensorsAtDecodeSizes) {
  kvcast::detail::Plan plan;
  DowncastArgs<Bf16> a = valid_args();
  per_token_head(a);
  ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << kvcast::make_plan(a, plan).message();
  EXPECT_EQ(plan.choice.grid_z, 1);  // 8x128: the dense kernel
  a.heads = 1;
  a.head_dim = 576;
  ASSERT_TRUE(kvcast::make_plan(a, plan).ok()) << kvcast::make_plan(a, plan).message();
  ASSERT_EQ(plan.choice.kernel, kvcast::detail::WriteKernel::row_head_warp);
  EXPECT_EQ(plan.choice.grid_z, 2);
  DowncastArgs<Bf16> one = a;
  one.v = nullptr, one.v_out = nullptr, one.v_scales_out = nullptr;
  ASSERT_TRUE(kvcast::make_plan(one, plan).ok()) << kvcast::make_plan(one, plan).message();
  EXPECT_EQ(plan.choice.grid_z, 1);
  DowncastArgs<Bf16> large = a;
  large.num_tokens = kvcast::detail::tuning::kTensorsApartUpTo / a.head_dim + 1;
  ASSERT_TRUE(kvcast::make_plan(large, plan).ok()) << kvcast::make_plan(large, plan).message();
  EXPECT_EQ(plan.choice.grid_z, 1);
  large.num_tokens -= 1;
  ASSERT_TRUE(kvcast::make_plan(large, plan).ok());
  EXPECT_EQ(plan.choice.grid_z, 2);
}

TEST(Validation, SingleTensorIsValid) {
  DowncastArgs<Bf16> a = valid_args();
  a.v = nullptr;
  a.v_out = nullptr;
  EXPECT_TRUE(kvcast::validate(a).ok());
}

// valid_args() with enough tokens (4M elements a tensor) that the launcher takes its widest vectors.
DowncastArgs<Bf16> large_args() {
  DowncastArgs<Bf16> a = valid_args();
  a.num_tokens = 4096;
  return a;
}

TEST(Plan, VectorWidthFollowsEveryPointerAndStride) {
  kvcast::detail::Plan p;
  DowncastArgs<Bf16> a = large_args();
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(p.segs_per_token, 1);  // contiguous heads fuse
  EXPECT_EQ(p.seg_len, 1024);
  EXPECT_EQ(items(p), 64);
  EXPECT_EQ(p.choice.log2_group, 6);
  EXPECT_EQ(p.choice.chunks(), 1);

  // Input precision with 16-bit inputs: at most 8 elements a vector (make_plan says why); element
  // by element still 16 a thread.
  ASSERT_TRUE(kvcast::make_plan(a, p, kvcast::Arithmetic::input_precision).ok());
  EXPECT_EQ(p.choice.vec, 8);
  EXPECT_EQ(access(p), 8);
  a.k = fake_in(0x10000 + 2);
  ASSERT_TRUE(kvcast::make_plan(a, p, kvcast::Arithmetic::input_precision).ok());
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(access(p), 1);
  a.k = fake_in(0x10000);

  a.num_tokens = 16;  // a decode-sized call (16K elements): at most 4 elements a thread, for latency
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 4);
  a.num_tokens = 2;  // 2048 elements: 2 a thread in fp32 mode (its longer chain), 4 in input precision
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 2);
  EXPECT_EQ(access(p), 2);
  EXPECT_EQ(p.choice.log2_group, 8);
  EXPECT_EQ(p.choice.chunks(), 2);
  ASSERT_TRUE(kvcast::make_plan(a, p, kvcast::Arithmetic::input_precision).ok());
  EXPECT_EQ(p.choice.vec, 4);
  a.num_tokens = 3;  // 3072 elements: 4 in both modes
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 4);
  a.num_tokens = 1024;  // a mid-size call (1M elements): at most 8
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 8);
  a.num_tokens = 4096;
  a.heads = 32;
  a.head_dim = 256;  // 8192-element rows: 512 vectors, two groups of 256 threads
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.log2_group, 8);
  EXPECT_EQ(p.choice.chunks(), 2);
  a = large_args();

  a.k = fake_in(0x10000 + 16);  // 8 elements off a 32-byte boundary
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 8);
  a.k = fake_in(0x10000 + 2);  // one element off: no vector access, 16 elements a thread in a large call
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(access(p), 1);
  a.num_tokens = 1024;  // a mid-size call: 8
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 8);
  EXPECT_EQ(access(p), 1);
  a.num_tokens = 16;  // a decode-sized call: still 8 (fewer would leave lanes idle on short rows)
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 8);
  EXPECT_EQ(access(p), 1);

  a = large_args();
  a.in_token_stride = 3 * 1024 + 4;  // a qkv slice with padding: 4-element multiple only
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 4);

  a = large_args();
  a.k_out = fake_out(0x50000 + 2);
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 2);

  a = large_args();
  a.head_dim = 100;  // odd head_dim, contiguous: 800-element rows, 16 divides 800
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(items(p), 50);

  a.heads = 3;
  a.head_dim = 33;  // 99-element rows: odd token stride
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(access(p), 1);
  EXPECT_EQ(items(p), 13);
  EXPECT_EQ(p.choice.log2_group, 5);  // element by element, a whole warp: 32 lanes of 3 or 4 elements, interleaved

  a = large_args();
  a.out = OutputLayout::paged_hnd(16, 8, 128);  // heads apart in the output: one segment per head
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.segs_per_token, 8);
  EXPECT_EQ(p.seg_len, 128);
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(p.choice.log2_group, 3);
}

TEST(Plan, DenseOnlyForFusedFlatCallsWithBothTensors) {
  kvcast::detail::Plan p;
  DowncastArgs<Bf16> a = valid_args();
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(p.dense);  // contiguous K and V into a contiguous cache: SGLang's call
  a.in_token_stride = 3 * 1024;  // a qkv slice: rows apart, heads still back to back
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(p.dense);

  a = valid_args();
  a.v = nullptr;  // K only (MLA): the kernel must check which tensors it has
  a.v_out = nullptr;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_FALSE(p.dense);
  a = valid_args();
  a.k = nullptr;
  a.k_out = nullptr;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_FALSE(p.dense);

  a = valid_args();
  a.out = OutputLayout::paged_nhd(16, 8, 128);  // heads fuse, but rows live in pages
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.segs_per_token, 1);
  EXPECT_FALSE(p.dense);
  a.out = OutputLayout::paged_nhd(1, 8, 128);  // pages of one row are flat rows
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(p.dense);

  a = valid_args();
  a.in_head_stride = 256;  // heads apart in the input: one segment per head
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.segs_per_token, 8);
  EXPECT_FALSE(p.dense);
}

TEST(Plan, ChunksFirstOnlyForLargeCallsWithRowsOfSeveralChunks) {
  kvcast::detail::Plan p;
  DowncastArgs<Bf16> a = valid_args();
  a.heads = 32;
  a.head_dim = 256;  // 8192-element rows: 512 vectors of 16, two chunks of 256 threads
  a.num_tokens = 1025;  // just above 2^23 elements a tensor
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_EQ(p.choice.chunks(), 2);
  EXPECT_TRUE(chunks_first(p));
  a.num_tokens = 1024;  // exactly 2^23: the default order
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.chunks(), 2);
  EXPECT_FALSE(chunks_first(p));
  a.num_tokens = 65535;  // the most segments grid y holds
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(chunks_first(p));
  a.num_tokens = 65536;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_FALSE(chunks_first(p));

  a.num_tokens = 4096;
  a.k = fake_in(0x10000 + 2);  // one element off: element by element, still 16 a thread
  a.v = nullptr;               // (not dense: the dense call takes the realigned kernel, see below)
  a.v_out = nullptr;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(access(p), 1);
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_TRUE(chunks_first(p));
  EXPECT_FALSE(realigned(p));
  a.v = valid_args().v;
  a.v_out = valid_args().v_out;
  a.k = fake_in(0x10000 + 8);  // 4 elements off: vectors of 4 (a narrower kernel): default order
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 4);
  EXPECT_GT(p.choice.chunks(), 1);
  EXPECT_FALSE(chunks_first(p));

  a = valid_args();
  a.heads = 32;
  a.head_dim = 256;
  a.num_tokens = 1025;  // input precision: vectors of 8, four chunks, still chunks first
  ASSERT_TRUE(kvcast::make_plan(a, p, kvcast::Arithmetic::input_precision).ok());
  EXPECT_EQ(p.choice.vec, 8);
  EXPECT_EQ(p.choice.chunks(), 4);
  EXPECT_TRUE(chunks_first(p));

  a = valid_args();
  a.num_tokens = 16384;  // 2^24 elements, but 1024-element rows: one chunk, nothing to reorder
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.chunks(), 1);
  EXPECT_FALSE(chunks_first(p));
}

TEST(Plan, RealignedOnlyForLargeDenseCallsOf16BitInputsWithNoVectorAccess) {
  kvcast::detail::Plan p;
  DowncastArgs<Bf16> a = valid_args();
  a.heads = 5;
  a.head_dim = 99;      // odd rows: no vector access
  a.num_tokens = 4300;  // just above 2^21 elements a tensor
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(p.dense);
  EXPECT_EQ(access(p), 1);
  EXPECT_EQ(p.choice.vec, 16);
  EXPECT_TRUE(realigned(p));
  EXPECT_FALSE(chunks_first(p));
  EXPECT_EQ(p.choice.chunks(), 1);  // 495 elements from up to 7 before the row: one run of 512
  ASSERT_TRUE(kvcast::make_plan(a, p, kvcast::Arithmetic::input_precision).ok());
  EXPECT_TRUE(realigned(p));
  a.num_tokens = 4236;  // 2096820 elements: at most 2^21, 8 a thread, one at a time
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.vec, 8);
  EXPECT_FALSE(realigned(p));
  a.num_tokens = 4300;
  a.v = nullptr;  // one tensor: not dense
  a.v_out = nullptr;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_FALSE(p.dense);
  EXPECT_FALSE(realigned(p));
  a = large_args();  // aligned: vectors, nothing to realign
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(access(p), 16);
  EXPECT_FALSE(realigned(p));
  a.k_out = fake_out(0x20000 + 1);  // output one byte off: element by element, realigned
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(access(p), 1);
  EXPECT_TRUE(realigned(p));
  EXPECT_EQ(p.choice.chunks(), 2);  // inputs aligned, every row alike: 1024 elements, two runs
  a.k = fake_in(0x10000 + 6);  // three elements before each row's boundary: a third run
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_TRUE(realigned(p));
  EXPECT_EQ(p.choice.chunks(), 3);
  a.k = fake_in(0x10000);
  a.out = kvcast::OutputLayout::paged_nhd(16, a.heads, a.head_dim);  // paged: not dense
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_FALSE(realigned(p));

  DowncastArgs<float> f;  // fp32 inputs: 8 a thread one at a time, never realigned
  f.k = reinterpret_cast<const float*>(std::uintptr_t{0x10000 + 4});
  f.v = reinterpret_cast<const float*>(std::uintptr_t{0x90000000});
  f.k_out = fake_out(0x20000);
  f.v_out = fake_out(0x30000000);
  f.num_tokens = 4096;
  f.out_rows = DowncastArgs<float>::kUncheckedRows;
  f.heads = 8;
  f.head_dim = 128;
  ASSERT_TRUE(kvcast::make_plan(f, p).ok());
  EXPECT_TRUE(p.dense);
  EXPECT_EQ(access(p), 1);
  EXPECT_FALSE(realigned(p));
}

// The planner chooses only kernels that exist (dispatch instantiates exactly those), and the
// write path instantiates 102 kernels over its 12 (input, format, mode) combinations: at most
// half of kvcast 0.1's 208 (docs/ARCHITECTURE.md, "Instantiation budget").
TEST(Plan, ChoosesOnlyInstantiatedKernels) {
  using kvcast::Arithmetic;
  using kvcast::detail::WriteKernel;
  using kvcast::tile::Access;
  int count = 0;
  for (int bytes : {2, 2, 4})  // bf16, f16, f32
    for (Arithmetic mode : {Arithmetic::fp32, Arithmetic::input_precision})
      for (WriteKernel k : {WriteKernel::dense, WriteKernel::general, WriteKernel::realigned, WriteKernel::row_head_warp})
        for (Access acc : {Access::vector, Access::interleaved})
          for (int vec : {1, 2, 4, 8, 16, 32}) count += kvcast::detail::write_kernel_exists(k, vec, acc, bytes, mode) ? 2 : 0;
  EXPECT_EQ(count, 102);  // x 2 formats: PerTensorScale
  int scaled = 0;
  for (auto scales : {kvcast::detail::ScalePolicyId::per_head, kvcast::detail::ScalePolicyId::per_token_head})
    for (int bytes : {2, 2, 4})
      for (Arithmetic mode : {Arithmetic::fp32, Arithmetic::input_precision})
        for (WriteKernel k : {WriteKernel::dense, WriteKernel::general, WriteKernel::realigned, WriteKernel::row_head_warp})
          for (Access acc : {Access::vector, Access::interleaved})
            for (int vec : {1, 2, 4, 8, 16, 32}) scaled += kvcast::detail::write_kernel_exists(k, vec, acc, bytes, mode, scales) ? 2 : 0;
  // PerHeadScale 74 (34 dense), PerTokenHeadScale 42 (16 dense, 4 a warp a row-head; fp32 mode only)
  EXPECT_EQ(scaled, 116);

  // A 2-element vector is legal, but the call is not dense: element by element instead.
  DowncastArgs<Bf16> a = large_args();
  a.v = nullptr;
  a.v_out = nullptr;
  a.k_out = fake_out(0x50000 + 2);
  kvcast::detail::Plan p;
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.choice.kernel, WriteKernel::general);
  EXPECT_EQ(p.choice.access, Access::interleaved);
  EXPECT_EQ(p.choice.vec, 16);

  // Every choice over a spread of shapes, alignments and modes exists, and its grid covers
  // every segment and every vector of it.
  std::mt19937 rng(3);
  for (int i = 0; i < 20000; ++i) {
    DowncastArgs<Bf16> b = valid_args();
    b.num_tokens = 1 + static_cast<std::int64_t>(rng() % 5000);
    b.heads = 1 + static_cast<std::int64_t>(rng() % 40);
    b.head_dim = 1 + static_cast<std::int64_t>(rng() % 300);
    if (rng() % 2) b.k = fake_in(0x100000 + 2 * (rng() % 16));
    if (rng() % 2) b.k_out = fake_out(0x900000 + rng() % 16);
    if (rng() % 3 == 0) b.out = OutputLayout::paged_hnd(16, b.heads, b.head_dim);
    if (rng() % 4 == 0) b.v = nullptr, b.v_out = nullptr;
    b.v = b.v ? fake_in(0x40000000) : nullptr;
    b.v_out = b.v_out ? fake_out(0x60000000) : nullptr;
    const Arithmetic mode = rng() % 2 ? Arithmetic::fp32 : Arithmetic::input_precision;
    ASSERT_TRUE(kvcast::make_plan(b, p, mode).ok());
    const auto& c = p.choice;
    ASSERT_TRUE(kvcast::detail::write_kernel_exists(c.kernel, c.vec, c.access, 2, mode)) << i;
    if (c.kernel == WriteKernel::realigned) {
      EXPECT_GE(c.grid_x * kvcast::detail::kRealignWarps, p.num_segments);
      EXPECT_GE(c.grid_y * kvcast::detail::kRealignRun, p.seg_len);
      continue;
    }
    const std::int64_t groups = std::int64_t{kvcast::detail::kBlockSize} >> c.log2_group;
    EXPECT_GE(c.ctas() * groups, p.num_segments) << i;
    EXPECT_GE(c.chunks() << c.log2_group, items(p)) << i;
    EXPECT_LE(c.grid_y, kvcast::detail::kMaxGridY) << i;
    if (c.access == Access::vector && p.elements > kvcast::detail::tuning::kFewIdleAbove) {  // few idle threads
      const std::int64_t n = items(p), g = std::int64_t{1} << c.log2_group;
      EXPECT_LE(((n + g - 1) / g * g - n) * kvcast::detail::tuning::kIdleShare, n) << i;
    }
  }
}

// Per-head scales: heads fused only in the dense kernel, each vector inside one head; otherwise
// a head a segment. Every choice exists.
TEST(Plan, PerHeadScalesFuseHeadsOnlyWhereEachVectorIsInOneHead) {
  std::mt19937 rng(7);
  int fused = 0, apart = 0;
  for (int i = 0; i < 20000; ++i) {
    DowncastArgs<Bf16> b = valid_args();
    per_head(b);
    b.num_tokens = 1 + static_cast<std::int64_t>(rng() % 3000);
    b.heads = 1 + static_cast<std::int64_t>(rng() % 40);
    b.head_dim = 1 + static_cast<std::int64_t>(rng() % 300);
    if (rng() % 4 == 0) b.k = fake_in(0x100000 + 2 * (rng() % 16));
    if (rng() % 4 == 0) b.k_out = fake_out(0x900000 + rng() % 16);
    if (rng() % 4 == 0) b.in_head_stride = b.head_dim + static_cast<std::int64_t>(rng() % 3);
    const kvcast::Arithmetic mode = rng() % 2 ? kvcast::Arithmetic::fp32 : kvcast::Arithmetic::input_precision;
    kvcast::detail::Plan p;
    ASSERT_TRUE(kvcast::make_plan(b, p, mode).ok()) << kvcast::make_plan(b, p, mode).message();
    const auto& c = p.choice;
    ASSERT_TRUE(kvcast::detail::write_kernel_exists(c.kernel, c.vec, c.access, 2, mode, kvcast::detail::ScalePolicyId::per_head)) << i;
    if (p.segs_per_token == 1 && b.heads > 1) {
      ++fused;
      EXPECT_EQ(c.kernel, kvcast::detail::WriteKernel::dense) << i;
      EXPECT_EQ(c.access, kvcast::tile::Access::vector) << i;
      EXPECT_EQ(b.head_dim % c.vec, 0) << i;
    } else {
      ++apart;
      EXPECT_EQ(p.seg_len, b.head_dim) << i;
    }
  }
  EXPECT_GT(fused, 1000);
  EXPECT_GT(apart, 1000);
}

// Per-(token, head) scales: a row-head in one chunk of whole vectors (at most kBlockSize of
// them): one row-head a segment, or heads fused in the dense kernel where head_dim is a power of
// two.
TEST(Plan, PerTokenHeadReducesOneRowHeadInOneChunk) {
  std::mt19937 rng(5);
  int dense = 0, row_head_warps = 0;
  for (int i = 0; i < 20000; ++i) {
    DowncastArgs<Bf16> b = valid_args();
    per_token_head(b);
    b.out_rows = 64;
    b.num_tokens = 1 + static_cast<std::int64_t>(rng() % 64);
    b.heads = 1 + static_cast<std::int64_t>(rng() % 8);
    const std::uint32_t pick = rng() % 8;
    b.head_dim = pick < 2 ? std::int64_t{1} << (rng() % 12) : pick == 2 ? 576 : 1 + static_cast<std::int64_t>(rng() % 2048);
    b.out = OutputLayout::contiguous(b.heads, b.head_dim);
    b.k_out = fake_out(0x10000000);
    b.v_out = fake_out(0x20000000);
    b.k_scales_out = fake_floats(0x30000000);
    b.v_scales_out = fake_floats(0x30100000);
    if (rng() % 2) b.k = fake_in(0x100000 + 2 * (rng() % 16));
    kvcast::detail::Plan p;
    ASSERT_TRUE(kvcast::make_plan(b, p).ok()) << kvcast::make_plan(b, p).message();
    const auto& c = p.choice;
    ASSERT_TRUE(kvcast::detail::write_kernel_exists(c.kernel, c.vec, c.access, 2, kvcast::Arithmetic::fp32,
                                                    kvcast::detail::ScalePolicyId::per_token_head));
    EXPECT_LE(1 << c.log2_group, kvcast::detail::kBlockSize);
    const bool pow2 = (b.head_dim & (b.head_dim - 1)) == 0;
    if (c.kernel == kvcast::detail::WriteKernel::row_head_warp) {
      // A warp a row-head of 576: 16 + 2 elements a lane, 8 row-heads a CTA.
      ++row_head_warps;
      EXPECT_EQ(b.head_dim, 576) << i;
      EXPECT_EQ(p.seg_len, 576) << i;
      EXPECT_EQ(p.num_segments, b.num_tokens * b.heads) << i;
      EXPECT_EQ(c.vec, 16) << i;
      EXPECT_EQ(c.chunks(), 1) << i;
      EXPECT_EQ(c.ctas(), (p.num_segments + 7) / 8) << i;
      continue;
    }
    EXPECT_FALSE(b.head_dim == 576 && b.k == fake_in(0x10000)) << "aligned rows of 576 take a warp a row-head, " << i;
    if (c.kernel == kvcast::detail::WriteKernel::dense) {
      // Heads fused: a row-head is an aligned power-of-two group of vectors inside one chunk.
      ++dense;
      EXPECT_TRUE(pow2) << i;
      EXPECT_EQ(p.seg_len, b.heads * b.head_dim) << i;
      EXPECT_EQ(c.access, kvcast::tile::Access::vector) << i;
      EXPECT_EQ(b.head_dim % c.vec, 0) << i;
      EXPECT_LE(b.head_dim / c.vec, std::int64_t{1} << c.log2_group) << i;
      EXPECT_GE(std::int64_t{c.vec} << c.log2_group, std::min<std::int64_t>(p.seg_len, b.head_dim)) << i;
      continue;
    }
    EXPECT_TRUE(!pow2 || b.heads == 1 || b.k != fake_in(0x10000) || b.head_dim < 4 || b.head_dim > 1024) << i;
    EXPECT_EQ(p.seg_len, b.head_dim);
    EXPECT_EQ(p.segs_per_token, b.heads);
    EXPECT_EQ(c.chunks(), 1) << i;
    if (c.access == kvcast::tile::Access::vector) {
      EXPECT_EQ(b.head_dim % c.vec, 0) << i;
    }
    EXPECT_GE(std::int64_t{c.vec} << c.log2_group, b.head_dim) << i;
  }
  EXPECT_GT(dense, 1000);
  EXPECT_GT(row_head_warps, 500);

  // Decode calls: a row-head in one warp where a vector allows it (NOTES #15t), 576 too (a
  // warp a row-head, 16 + 2 elements a lane).
  for (auto [heads, head_dim, vec] : {std::tuple{8, 64, 4}, {8, 128, 4}, {8, 256, 8}, {4, 512, 16}, {1, 576, 16}}) {
    DowncastArgs<Bf16> b = valid_args();
    per_token_head(b);
    b.num_tokens = 1;
    b.heads = heads;
    b.head_dim = head_dim;
    b.out = OutputLayout::contiguous(b.heads, b.head_dim);
    kvcast::detail::Plan p;
    ASSERT_TRUE(kvcast::make_plan(b, p).ok()) << kvcast::make_plan(b, p).message();
    EXPECT_EQ(p.choice.vec, vec) << heads << "x" << head_dim;
    EXPECT_EQ(access(p), vec) << heads << "x" << head_dim;
  }
}

TEST(Plan, SlotBoundsMatchRowRange) {
  // For many (mult, offset, out_rows), the plan's slot range is exactly the slots whose row
  // lands in [0, out_rows).
  kvcast::detail::Plan p;
  for (std::int64_t mult : {1, 2, 3, 7})
    for (std::int64_t offset : {-9, -1, 0, 1, 5})
      for (std::int64_t rows : {0, 1, 2, 10, 33}) {
        DowncastArgs<Bf16> a = valid_args();
        a.mult = mult;
        a.offset = offset;
        a.out_rows = rows;
        ASSERT_TRUE(kvcast::make_plan(a, p).ok());
        for (std::int64_t slot = 0; slot < 60; ++slot) {
          const std::int64_t row = slot * mult + offset;
          const bool want = row >= 0 && row < rows;
          const bool got = slot >= p.min_slot && slot <= p.max_slot;
          EXPECT_EQ(got, want) << "mult " << mult << " offset " << offset << " rows " << rows << " slot " << slot;
        }
      }
  DowncastArgs<Bf16> a = valid_args();  // unchecked: every non-negative row, no int64 overflow
  a.mult = 4;
  a.offset = -(std::int64_t{1} << 62);
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.min_slot, std::int64_t{1} << 60);
  EXPECT_EQ(p.max_slot, std::numeric_limits<std::int64_t>::max() / 4 + (std::int64_t{1} << 60));
}

TEST(Plan, ExtentsAreTheLastTouchedElementPlusOne) {
  kvcast::detail::Plan p;
  DowncastArgs<Bf16> a = valid_args();
  a.out_rows = 37;
  a.out = OutputLayout::paged_nhd(16, 8, 128);
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  EXPECT_EQ(p.in_extent, 16 * 1024);
  EXPECT_EQ(p.out_extent, 37 * 1024);  // rows 0..36 of NHD pages: contiguous
  a.out = OutputLayout::paged_hnd(16, 8, 128);
  ASSERT_TRUE(kvcast::make_plan(a, p).ok());
  // Last row 36 is in page 2 at in-page row 4: page 2 spans to its end.
  EXPECT_EQ(p.out_extent, 2 * 16 * 1024 + 4 * 128 + 7 * 16 * 128 + 128);
}

TEST(Layout, AddressFormula) {
  const OutputLayout flat = OutputLayout::contiguous(8, 128);
  EXPECT_EQ(flat.address(0, 0), 0);
  EXPECT_EQ(flat.address(5, 3), 5 * 1024 + 3 * 128);
  const OutputLayout nhd = OutputLayout::paged_nhd(16, 8, 128);
  EXPECT_EQ(nhd.address(37, 2), 37 * 1024 + 2 * 128);  // NHD pages are flat rows
  const OutputLayout hnd = OutputLayout::paged_hnd(16, 8, 128);
  EXPECT_EQ(hnd.address(37, 2), 2 * 16 * 1024 + 2 * 16 * 128 + 5 * 128);
  // K/V interleaved pages: [page][K|V][block][heads][dim]; V is K + one half-page.
  const OutputLayout kv = OutputLayout::paged(16, 2 * 16 * 1024, 1024, 128);
  EXPECT_EQ(kv.address(17, 1), 2 * 16 * 1024 + 1024 + 128);
  const std::int64_t big = std::int64_t{1} << 33;  // 64-bit rows
  EXPECT_EQ(flat.address(big, 7), big * 1024 + 7 * 128);
}

TEST(FastDivmod, ExactForEdgesAndRandomValues) {
  std::mt19937 rng(7);
  std::vector<std::uint32_t> divisors = {1, 2, 3, 5, 7, 8, 63, 64, 65, 100, 641, 0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu};
  for (int i = 0; i < 200; ++i) divisors.push_back(rng() >> (rng() % 32));
  for (std::uint32_t d : divisors) {
    if (d == 0) continue;
    const kvcast::detail::FastDivmod fd(d);
    std::vector<std::uint32_t> ns = {0, 1, d - 1, d, d + 1, 0xFFFFFFFFu, 0xFFFFFFFEu, 0x80000000u};
    for (int i = 0; i < 2000; ++i) ns.push_back(rng());
    for (std::uint32_t n : ns) ASSERT_EQ(fd.div(n), n / d) << n << " / " << d;
  }
}

TEST(Status, CodesHaveNames) {
  EXPECT_STREQ(kvcast::to_string(Code::ok), "ok");
  EXPECT_STREQ(kvcast::to_string(Code::rows_out_of_range), "rows_out_of_range");
  const Status s = Status::error(Code::bad_shape, "x (%d)", 3);
  EXPECT_FALSE(s.ok());
  EXPECT_STREQ(s.message(), "x (3)");
}

// The host reference on a case small enough to check by hand.
TEST(Reference, HandCheckedScatter) {
  std::vector<kvcast::ref::BFloat16> k(2 * 2 * 2);
  const float values[] = {1.0f, -2.0f, 448.0f, 1000.0f, 0.5f, -0.0f, 3.0f, -7.0f};
  for (int i = 0; i < 8; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    k[i].bits = static_cast<std::uint16_t>(bits >> 16);  // exact in bf16
  }
  const std::int64_t loc[] = {3, -1};
  std::vector<std::uint8_t> out(4 * 4, 0xCC);
  unsigned long long errors = 0;
  DowncastArgs<kvcast::ref::BFloat16> a;
  a.k = k.data();
  a.k_out = out.data();
  a.num_tokens = 2;
  a.heads = 2;
  a.head_dim = 2;
  a.loc = loc;
  a.out_rows = 4;
  a.error_count = &errors;
  a.k_scale = kvcast::Scale::host_value(1.0f);
  ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, kvcast::Arithmetic::fp32>(a).ok()));
  // Row 3 gets token 0: 1 → 0x38, -2 → 0xC0, 448 → 0x7E, 1000 → saturates to 0x7E.
  const std::vector<std::uint8_t> want = {0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC,
                                          0xCC, 0xCC, 0xCC, 0xCC, 0x38, 0xC0, 0x7E, 0x7E};
  EXPECT_EQ(out, want);
  EXPECT_EQ(errors, 0u);  // the padding token is not an error
  const std::int64_t bad_loc[] = {4, 0};
  a.loc = bad_loc;
  ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, kvcast::Arithmetic::fp32>(a).ok()));
  EXPECT_EQ(errors, 1u);  // slot 4 is outside [0, 4)
  EXPECT_EQ(out[0], 0x30);  // 0.5
  EXPECT_EQ(out[1], 0x80);  // -0
  EXPECT_EQ(out[2], 0x44);  // 3
  EXPECT_EQ(out[3], 0xCE);  // -7
}

// The per-(token, head) scale of hostile row-heads (bf16), from its definition: amax over the
// row-head with NaN propagating, amax / 448 in fp32, clamped below by min_scale (NaN stays);
// each code the oracle's rounding of x / scale. Also the amax output, NaN included.
TEST(Reference, PerTokenHeadScalesOfHostileRows) {
  using kvcast::ref::BFloat16;
  constexpr int D = 16;
  const auto bf = [](float f) { return BFloat16{kvcast::ref::to_bf16(f)}; };
  std::vector<std::vector<BFloat16>> rows;
  auto row = [&](auto element) {
    std::vector<BFloat16> r(D);
    for (int d = 0; d < D; ++d) r[d] = element(d);
    rows.push_back(r);
  };
  const float plain[D] = {1, -2, 3.5f, 0.25f, -7, 9, 0, 1.5f, -0.5f, 12, -3, 2, 0.125f, 6, -1, 4};
  row([&](int) { return BFloat16{0x0000}; });                                          // zeros
  row([&](int) { return BFloat16{0x8000}; });                                          // negative zeros
  row([&](int d) { return d == 5 ? BFloat16{0x7f80} : bf(plain[d]); });               // one +inf
  row([&](int d) { return d == 2 ? BFloat16{0xff80} : bf(plain[d]); });               // one -inf
  row([&](int d) { return d == 9 ? BFloat16{0x7fc0} : bf(plain[d]); });               // one NaN
  row([&](int d) { return BFloat16{static_cast<std::uint16_t>((d % 2 ? 0x8000 : 0) | (1 + 9 * d))}; });  // subnormals
  row([&](int d) { return d == 4 ? BFloat16{0xff7f} : bf(plain[d]); });               // bf16's largest magnitude
  row([&](int d) { return d == 3 ? bf(5.0f) : BFloat16{0x0000}; });                   // one non-zero
  const std::int64_t n = static_cast<std::int64_t>(rows.size());
  std::vector<BFloat16> k;
  for (const auto& r : rows) k.insert(k.end(), r.begin(), r.end());
  for (const bool with_nan : {true, false}) {
    std::vector<std::uint8_t> out(static_cast<std::size_t>(n * D), 0xCC);
    std::vector<float> scales(static_cast<std::size_t>(n), -1.0f);
    std::vector<std::int64_t> loc(static_cast<std::size_t>(n));
    for (std::int64_t t = 0; t < n; ++t) loc[t] = with_nan || t != 4 ? t : -1;  // the NaN row as padding
    float amax = 0.0f;
    DowncastArgs<BFloat16> a;
    a.k = k.data();
    a.k_out = out.data();
    a.num_tokens = n;
    a.heads = 1;
    a.head_dim = D;
    a.loc = loc.data();
    a.out_rows = n;
    a.scale_kind = kvcast::ScaleKind::per_token_head;
    a.k_scales_out = scales.data();
    a.k_amax = &amax;
    ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, kvcast::Arithmetic::fp32>(a).ok()));
    if (with_nan) {
      EXPECT_TRUE(std::isnan(amax));
    } else {
      EXPECT_TRUE(std::isinf(amax) && amax > 0);
    }
    for (std::int64_t t = 0; t < n; ++t) {
      if (loc[t] < 0) {
        EXPECT_EQ(scales[t], -1.0f) << "padding writes no scale";
        for (int d = 0; d < D; ++d) EXPECT_EQ(out[t * D + d], 0xCC) << "padding writes no code";
        continue;
      }
      double m = 0.0;
      bool nan = false;
      for (int d = 0; d < D; ++d) {
        const double x = oracle::bf16_value(rows[t][d].bits);
        nan = nan || std::isnan(x);
        m = std::fabs(x) > m ? std::fabs(x) : m;
      }
      const float q = nan ? NAN : static_cast<float>(m) / 448.0f;
      const float want = q < 1e-6f ? 1e-6f : q;
      if (nan) {
        EXPECT_TRUE(std::isnan(scales[t])) << "row " << t;
      } else {
        EXPECT_EQ(scales[t], want) << "row " << t;
      }
      for (int d = 0; d < D; ++d)
        EXPECT_EQ(out[t * D + d], oracle::quantize(oracle::e4m3(), nullptr, oracle::bf16_value(rows[t][d].bits), scales[t], false))
            << "row " << t << " element " << d;
    }
    // The named cases, by hand.
    EXPECT_EQ(scales[0], 1e-6f);                                                     // zeros: min_scale, codes 0
    EXPECT_EQ(out[0], 0x00);
    EXPECT_EQ(out[D], 0x80);                                                         // -0 keeps its sign
    EXPECT_TRUE(std::isinf(scales[2]));                                              // inf: x / inf = 0, inf / inf = NaN
    EXPECT_EQ(out[2 * D + 5], 0x7F);
    EXPECT_EQ(scales[5], 1e-6f);                                                     // subnormals: min_scale
    EXPECT_EQ(scales[6], kvcast::ref::bf16_to_float(0x7f7f) / 448.0f);               // the largest magnitude...
    EXPECT_EQ(out[6 * D + 4], 0xFE);                                                 // ...is -448
    EXPECT_EQ(scales[7], 5.0f / 448.0f);                                             // one non-zero: it becomes 448
    EXPECT_EQ(out[7 * D + 3], 0x7E);
    EXPECT_EQ(out[7 * D + 0], 0x00);
  }
}

// ---- NVFP4 (issue #17): its rules, its plan, and its reference on a hand-checked block. ----

namespace nvfp4_cases {

// valid_args() as an NVFP4 write: 64 rows of [8 heads, 64 code bytes] (k_out and v_out span 32 KiB
// each), block scales [64, 8, 8] beside them, host global scales.
DowncastArgs<Bf16> valid_nvfp4_args() {
  DowncastArgs<Bf16> a = valid_args();
  a.out_rows = 64;
  a.k_block_scales_out = fake_out(0x90000);
  a.v_block_scales_out = fake_out(0x91000);
  a.k_scale = kvcast::Scale::host_value(0.5f);
  a.v_scale = kvcast::Scale::host_value(2.0f);
  return a;
}

const Invalid kInvalidNvfp4[] = {
    {"head_dim not of 16", [](auto& a) { a.head_dim = 120; }, Code::bad_shape, "head_dim (120) must be a multiple of 16 with format nvfp4"},
    {"per_head", [](auto& a) { per_head(a); }, Code::bad_option, "scale_kind is per_head, but format nvfp4 takes one global scale g a tensor"},
    {"amax", [](auto& a) { a.v_amax = fake_floats(0xC0000); }, Code::bad_option, "v_amax is given, but format nvfp4 has no amax output"},
    {"g zero", [](auto& a) { a.k_scale = kvcast::Scale::host_value(0.0f); }, Code::bad_option, "k_scale (0), NVFP4's global scale g, must be finite and > 0"},
    {"g negative", [](auto& a) { a.v_scale = kvcast::Scale::host_value(-1.0f); }, Code::bad_option, "v_scale (-1), NVFP4's global scale g"},
    {"g inf", [](auto& a) { a.k_scale = kvcast::Scale::host_value(INFINITY); }, Code::bad_option, "k_scale (inf), NVFP4's global scale g"},
    {"g NaN", [](auto& a) { a.k_scale = kvcast::Scale::host_value(NAN); }, Code::bad_option, "k_scale (nan), NVFP4's global scale g"},
    {"unchecked rows", [](auto& a) { a.out_rows = DowncastArgs<Bf16>::kUncheckedRows; }, Code::bad_option, "out_rows is unchecked, but format nvfp4 needs"},
    {"no k block scales", [](auto& a) { a.k_block_scales_out = nullptr; }, Code::null_pointer, "k_block_scales_out is null while k is given"},
    {"v block scales without v", [](auto& a) { a.v = nullptr; a.v_out = nullptr; }, Code::unexpected_pointer, "v_block_scales_out is given while v is null"},
    {"block-scale heads overlap", [](auto& a) { a.block_scales_out = OutputLayout::flat(64, 4); }, Code::bad_stride, "block_scales_out.head_stride (4) < 8"},
    {"block-scale rows overlap", [](auto& a) { a.block_scales_out = OutputLayout::flat(32, 8); }, Code::bad_stride, "block_scales_out.token_stride (32) < 64"},
    {"block scales on k's codes", [](auto& a) { a.k_block_scales_out = fake_out(0x50000 + 100); }, Code::bad_stride, "k_block_scales_out overlaps k_out"},
    {"block scales on v's codes", [](auto& a) { a.v_block_scales_out = fake_out(0x70000 + 8191); }, Code::bad_stride, "v_block_scales_out overlaps v_out"},
    {"block scales on each other", [](auto& a) { a.v_block_scales_out = fake_out(0x90000 + 4095); }, Code::bad_stride, "k_block_scales_out overlaps v_block_scales_out"},
    {"code rows overlap", [](auto& a) { a.out = OutputLayout::flat(500, 64); }, Code::bad_stride, "out.token_stride (500) < 512"},
};

}  // namespace nvfp4_cases

TEST(Nvfp4Validation, ValidArgumentsPass) {
  const Status s = kvcast::validate(nvfp4_cases::valid_nvfp4_args(), kvcast::CodeFormat::nvfp4);
  EXPECT_TRUE(s.ok()) << s.message();
  // g on the device is read when the kernel runs: any value there is the formulas' business.
  DowncastArgs<Bf16> a = nvfp4_cases::valid_nvfp4_args();
  a.k_scale = kvcast::Scale::in_device_memory(fake_floats(0xB0000));
  EXPECT_TRUE(kvcast::validate(a, kvcast::CodeFormat::nvfp4).ok());
  // vLLM's pages: [K codes | K scales | V codes | V scales], 16 rows a page.
  const std::int64_t codes = 16 * 8 * 64, scales = 16 * 8 * 8, page = 2 * (codes + scales);
  a.out = OutputLayout::paged(16, page, 8 * 64, 64);
  a.block_scales_out = OutputLayout::paged(16, page, 8 * 8, 8);
  a.k_out = fake_out(0x100000);
  a.k_block_scales_out = fake_out(0x100000 + codes);
  a.v_out = fake_out(0x100000 + codes + scales);
  a.v_block_scales_out = fake_out(0x100000 + 2 * codes + scales);
  const Status paged = kvcast::validate(a, kvcast::CodeFormat::nvfp4);
  EXPECT_TRUE(paged.ok()) << paged.message();
  a.v_block_scales_out = fake_out(0x100000 + 2 * codes + scales - 1);  // one byte on V's codes
  EXPECT_EQ(kvcast::validate(a, kvcast::CodeFormat::nvfp4).code(), Code::bad_stride);
}

TEST(Nvfp4Validation, EveryRuleHasItsCodeAndMessage) {
  std::vector<std::string> seen;
  for (const Invalid& c : nvfp4_cases::kInvalidNvfp4) {
    DowncastArgs<Bf16> a = nvfp4_cases::valid_nvfp4_args();
    c.mutate(a);
    const Status s = kvcast::validate(a, kvcast::CodeFormat::nvfp4);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
    EXPECT_NE(std::string(s.message()).find(c.message), std::string::npos)
        << c.name << ": message \"" << s.message() << "\" lacks \"" << c.message << "\"";
    for (const std::string& m : seen) EXPECT_NE(m, s.message()) << c.name;
    seen.push_back(s.message());
  }
  // Block scales belong to NVFP4, and NVFP4 to fp32 arithmetic.
  DowncastArgs<Bf16> f = valid_args();
  f.v_block_scales_out = fake_out(0x91000);
  EXPECT_NE(std::string(kvcast::validate(f).message()).find("v_block_scales_out is given, but the format is fp8"), std::string::npos);
  kvcast::detail::Plan plan;
  const Status mode = kvcast::make_plan(nvfp4_cases::valid_nvfp4_args(), plan, kvcast::Arithmetic::input_precision, kvcast::CodeFormat::nvfp4);
  EXPECT_NE(std::string(mode.message()).find("format nvfp4 computes in fp32 arithmetic"), std::string::npos) << mode.message();
  // fast_math is NVFP4's (FlashInfer's numerics) and no fp8 format's; NVFP4 plans in it.
  const Status fp8_fast = kvcast::make_plan(valid_args(), plan, kvcast::Arithmetic::fast_math, kvcast::CodeFormat::fp8);
  EXPECT_NE(std::string(fp8_fast.message()).find("Arithmetic::fast_math is NVFP4's engine-compatible mode"), std::string::npos)
      << fp8_fast.message();
  EXPECT_TRUE(kvcast::make_plan(nvfp4_cases::valid_nvfp4_args(), plan, kvcast::Arithmetic::fast_math, kvcast::CodeFormat::nvfp4).ok());
}

// 16-bit inputs: a block a thread in large calls (a 32-byte load, 8 code bytes), half a block in
// small ones, in pairs of lanes (never a group of one), where every pointer and stride allows
// the access; else the widest, element by element.
TEST(Nvfp4Plan, BlocksOrHalfBlocksVectorsWhereAligned) {
  using kvcast::tile::Access;
  const auto plan_of = [](const DowncastArgs<Bf16>& a) {
    kvcast::detail::Plan p;
    const Status s = kvcast::make_plan(a, p, kvcast::Arithmetic::fp32, kvcast::CodeFormat::nvfp4);
    EXPECT_TRUE(s.ok()) << s.message();
    return p;
  };
  DowncastArgs<Bf16> a = nvfp4_cases::valid_nvfp4_args();
  for (std::int64_t tokens : {1, 16, 4096, 65536})
    for (std::int64_t d : {16, 48, 128, 576}) {
      a.num_tokens = tokens;
      a.head_dim = d;
      a.heads = d == 576 ? 1 : 8;
      a.out_rows = tokens;
      a.k_out = fake_out(0x10000000);
      a.v_out = fake_out(0x20000000);
      a.k_block_scales_out = fake_out(0x30000000);
      a.v_block_scales_out = fake_out(0x38000000);
      a.k = fake_in(0x40000000);
      a.v = fake_in(0x80000000);
      const kvcast::detail::Plan p = plan_of(a);
      EXPECT_EQ(p.choice.vec, tokens * a.heads * d > kvcast::detail::tuning::kNvfp4WholeBlocksAbove ? 16 : 8) << tokens << "x" << d;
      EXPECT_EQ(p.choice.kernel, kvcast::detail::WriteKernel::general);
      EXPECT_EQ(p.choice.access, Access::vector) << tokens << "x" << d;
      if (p.choice.vec == 8) {
        EXPECT_GE(p.choice.log2_group, 1) << tokens << "x" << d;  // a block on a pair of lanes
      }
      EXPECT_EQ(p.seg_len, d);
    }
  a = nvfp4_cases::valid_nvfp4_args();
  a.in_token_stride = 8 * 128 + 1;  // rows an odd number of elements apart
  EXPECT_EQ(plan_of(a).choice.access, Access::elements);
  EXPECT_EQ(plan_of(a).choice.vec, 16);
  a = nvfp4_cases::valid_nvfp4_args();
  a.num_tokens = a.out_rows = 1024;  // 2^20 elements: whole blocks
  a.k = fake_in(0x1000000);
  a.v = fake_in(0x2000000);
  a.k_out = fake_out(0x3000000);
  a.v_out = fake_out(0x4000000);
  a.k_block_scales_out = fake_out(0x5000000);
  a.v_block_scales_out = fake_out(0x6000000);
  EXPECT_EQ(plan_of(a).choice.vec, 16);
  a.k = fake_in(0x1000010);  // 16 bytes from a 32-byte boundary: half blocks still fit
  EXPECT_EQ(plan_of(a).choice.vec, 8);
  EXPECT_EQ(plan_of(a).choice.access, Access::vector);
  a = nvfp4_cases::valid_nvfp4_args();
  a.out = OutputLayout::flat(8 * 66, 66);  // code heads 66 bytes apart: no 4-byte word
  EXPECT_EQ(plan_of(a).choice.access, Access::elements);
  a = nvfp4_cases::valid_nvfp4_args();
  a.k_out = fake_out(0x50002);
  EXPECT_EQ(plan_of(a).choice.access, Access::elements);
  a = nvfp4_cases::valid_nvfp4_args();
  a.k_block_scales_out = fake_out(0x8F001);  // block scales are bytes: any address
  EXPECT_EQ(plan_of(a).choice.access, Access::vector);
}

// The reference on one block by hand: g = 0.5, so 6g = 3; amax 12 gives sf = e4m3(4) = 0x48 and
// a divisor sf * g = 2; x / 2 rounded to E2M1.
TEST(Nvfp4Reference, HandCheckedBlock) {
  using kvcast::ref::BFloat16;
  const float x[16] = {1, -2, 3, 12, 0.5f, -0.5f, 5, 7, -12, 0, -0.0f, 2.5f, 4.5f, 9, 10, -3.5f};
  std::vector<BFloat16> k(32);
  for (int i = 0; i < 32; ++i) k[i] = BFloat16{kvcast::ref::to_bf16(i < 16 ? x[i] : 0.0f)};
  std::vector<std::uint8_t> codes(4 * 8, 0xCC), scales(4 * 1, 0xCC);
  const std::int64_t loc[] = {2, 5};  // token 1 out of range
  unsigned long long errors = 0;
  DowncastArgs<BFloat16> a;
  a.k = k.data();
  a.k_out = codes.data();
  a.k_block_scales_out = scales.data();
  a.num_tokens = 2;
  a.heads = 1;
  a.head_dim = 16;
  a.loc = loc;
  a.out_rows = 4;
  a.error_count = &errors;
  a.k_scale = kvcast::Scale::host_value(0.5f);
  ASSERT_TRUE((kvcast::ref::downcast<kvcast::nvfp4, kvcast::Arithmetic::fp32>(a).ok()));
  EXPECT_EQ(errors, 1u);
  EXPECT_EQ(scales, (std::vector<std::uint8_t>{0xCC, 0xCC, 0x48, 0xCC}));
  // x / 2 = 0.5 -1 1.5 6 | 0.25 -0.25 2.5 3.5 | -6 0 -0 1.25 | 2.25 4.5 5 -1.75, to E2M1 (ties to
  // the even code): 1 A 3 7 | 0 8 4 6 | F 0 8 2 | 4 6 6 C, element 2i in the low nibble of byte i.
  const std::uint8_t want_codes[8] = {0xA1, 0x73, 0x80, 0x64, 0x0F, 0x28, 0x64, 0xC6};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(codes[16 + i], want_codes[i]) << "byte " << i;
  for (int i = 0; i < 16; ++i) EXPECT_EQ(codes[i], 0xCC);
  for (int i = 24; i < 32; ++i) EXPECT_EQ(codes[i], 0xCC);
}

}  // namespace
