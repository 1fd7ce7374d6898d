// CPU: AlignedVector and tile::Memory on the host, and the host API's promise that invalid
// arguments are rejected before any CUDA call (these run, and pass, on a machine with no GPU).
#include <gtest/gtest.h>

#include <kvcast/kvcast.cuh>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

static_assert(sizeof(kvcast::AlignedVector<__nv_bfloat16, 16>) == 32 && alignof(kvcast::AlignedVector<__nv_bfloat16, 16>) == 32);
static_assert(sizeof(kvcast::AlignedVector<std::uint8_t, 16>) == 16 && alignof(kvcast::AlignedVector<std::uint8_t, 16>) == 16);
static_assert(sizeof(kvcast::AlignedVector<float, 2>) == 8 && alignof(kvcast::AlignedVector<float, 2>) == 8);
static_assert(sizeof(kvcast::AlignedVector<std::uint8_t, 1>) == 1);
static_assert(kvcast::AlignedVector<__half, 8>::size() == 8 && kvcast::AlignedVector<__half, 8>::kBytes == 16);

TEST(AlignedVector, LoadStoreAtElementOffsetsAndAsBytes) {
  alignas(32) std::uint16_t buffer[64];
  std::iota(std::begin(buffer), std::end(buffer), std::uint16_t{100});
  kvcast::AlignedVector<std::uint16_t, 8> v;
  v.load(buffer, 16);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v[i], 116 + i);
  v[3] = 7;
  v.store(buffer, 40);
  EXPECT_EQ(buffer[43], 7);
  EXPECT_EQ(buffer[40], 116);
  EXPECT_EQ(buffer[39], 139);  // neighbours untouched
  EXPECT_EQ(buffer[48], 148);
  EXPECT_TRUE((kvcast::AlignedVector<std::uint16_t, 8>::is_aligned(buffer + 8)));
  EXPECT_FALSE((kvcast::AlignedVector<std::uint16_t, 8>::is_aligned(buffer + 4)));
  // Bytes of another type: four 16-bit elements as two words (the realigned kernel's loads),
  // and packed codes held as words stored to a byte pointer (every kernel's vector stores).
  kvcast::AlignedVector<std::uint32_t, 2> words;
  words.load_bytes(buffer + 4);
  EXPECT_EQ(words[0], (std::uint32_t{105} << 16) | 104);
  alignas(16) std::uint8_t bytes[16] = {};
  words.store_bytes(bytes + 8);
  EXPECT_EQ(bytes[8], 104);
  EXPECT_EQ(bytes[10], 105);
  EXPECT_EQ(bytes[7], 0);
}

TEST(TileMemory, GroupsWalkItemsCoalesced) {
  // Four threads of a group of 4 walking 3 tiles cover items 0..11 once each, in order
  // rank + 4 * tile.
  std::vector<int> seen(12, 0);
  for (int rank = 0; rank < 4; ++rank) {
    const kvcast::tile::Memory<> m(rank, 4);
    for (int t = 0; m.in_bound(12, t); ++t) {
      EXPECT_EQ(m.index(t), rank + 4 * t);
      ++seen[static_cast<std::size_t>(m.index(t))];
    }
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  const kvcast::tile::Memory<> far(3, 256);
  EXPECT_EQ(far.index(std::int64_t{1} << 40), (std::int64_t{1} << 48) + 3);  // 64-bit
  // 32-bit indices, as the kernels ask for them: the same walk, one instruction a step.
  const kvcast::tile::Memory<std::uint32_t> narrow(5, 64);
  EXPECT_EQ(narrow.index(3u), 3u * 64 + 5);
  EXPECT_EQ(narrow.rank(), 5u);
  EXPECT_EQ(narrow.size(), 64u);
  static_assert(std::is_same_v<decltype(narrow.index(0u)), std::uint32_t>, "Index type carries through");
}

// The two ways a member's elements lie: every element of a run of tiles is taken by exactly one
// member, once; vector members take Vec consecutive ones, interleaved members a warp's
// kLanes * Vec with the lanes interleaved (consecutive lanes on consecutive elements).
TEST(TileMemory, VectorAndInterleavedWalksCoverARunOnce) {
  using kvcast::tile::Access;
  constexpr int kVec = 4;
  constexpr std::uint32_t kGroup = 64, kRun = 3 * kGroup * kVec;
  for (Access a : {Access::vector, Access::interleaved}) {
    std::vector<int> seen(kRun, 0);
    for (std::uint32_t rank = 0; rank < kGroup; ++rank) {
      const kvcast::tile::Memory<std::uint32_t> m(rank, kGroup);
      for (std::uint32_t t = 0; t < 3; ++t) {
        const std::uint32_t first = a == Access::vector ? m.first_element<Access::vector, kVec>(t)
                                                        : m.first_element<Access::interleaved, kVec>(t);
        const std::uint32_t stride = a == Access::vector ? m.stride<Access::vector>() : m.stride<Access::interleaved>();
        for (int i = 0; i < kVec; ++i) ++seen[first + i * stride];
        if (a == Access::interleaved && rank % 32 != 31 && t == 0) {
          const kvcast::tile::Memory<std::uint32_t> next(rank + 1, kGroup);
          const std::uint32_t next_first = next.first_element<Access::interleaved, kVec>(0);
          EXPECT_EQ(next_first, first + 1);  // neighbours coalesce
        }
      }
    }
    for (int s : seen) ASSERT_EQ(s, 1);
  }
}

// Interleaved loads and stores touch only the elements before the run's end; vector ones move
// the whole vector.
TEST(TileMemory, InterleavedAccessStopsAtTheEnd) {
  using kvcast::tile::Access;
  using Walk = kvcast::tile::Memory<std::uint32_t>;
  std::vector<std::uint16_t> src(200);
  std::iota(src.begin(), src.end(), std::uint16_t{1});
  kvcast::AlignedVector<std::uint16_t, 4> v;
  for (int i = 0; i < 4; ++i) v[i] = 0xEEEE;
  Walk::load<Access::interleaved>(src.data() + 3, 70u, v);  // elements 3, 35, 67 exist; 99 is past the end
  EXPECT_EQ(v[0], 4);
  EXPECT_EQ(v[1], 36);
  EXPECT_EQ(v[2], 68);
  EXPECT_EQ(v[3], 0xEEEE);
  std::vector<std::uint8_t> dst(200, 0xAB);
  kvcast::AlignedVector<std::uint8_t, 4> codes;
  for (int i = 0; i < 4; ++i) codes[i] = static_cast<std::uint8_t>(i + 1);
  Walk::store_interleaved(dst.data() + 3, 70u, codes);
  EXPECT_EQ(dst[3], 1);
  EXPECT_EQ(dst[35], 2);
  EXPECT_EQ(dst[67], 3);
  EXPECT_EQ(std::count(dst.begin(), dst.end(), std::uint8_t{0xAB}), 197);
  alignas(8) std::uint16_t aligned[8] = {9, 8, 7, 6, 5, 4, 3, 2};
  Walk::load<Access::vector>(aligned + 4, 0u, v);  // the end does not apply to a whole vector
  EXPECT_EQ(v[0], 5);
  EXPECT_EQ(v[3], 2);
  alignas(4) std::uint8_t out[8] = {};
  Walk::store_vector(out + 4, codes);
  EXPECT_EQ(out[4], 1);
  EXPECT_EQ(out[7], 4);
  EXPECT_EQ(out[3], 0);
}

// No device is touched here: the arguments are refused first. On a GPU-less machine a CUDA
// call would have turned into cuda_error instead.
TEST(HostApi, InvalidArgumentsFailBeforeAnyCudaCall) {
  kvcast::DowncastArgs<__nv_bfloat16> a;
  a.num_tokens = 4;
  a.heads = 2;
  a.head_dim = 64;
  kvcast::Status s = kvcast::downcast<kvcast::e4m3>(a);
  EXPECT_EQ(s.code(), kvcast::Code::bad_option) << s.message();  // out_rows is required
  EXPECT_NE(std::string(s.message()).find("out_rows is not set"), std::string::npos);
  a.out_rows = kvcast::DowncastArgs<__nv_bfloat16>::kUncheckedRows;
  s = kvcast::downcast<kvcast::e4m3>(a);
  EXPECT_EQ(s.code(), kvcast::Code::null_pointer) << s.message();
  a.k = reinterpret_cast<const __nv_bfloat16*>(0x1000);
  a.k_out = reinterpret_cast<void*>(0x2000);
  a.in_head_stride = 32;
  s = kvcast::downcast<kvcast::e5m2, kvcast::Arithmetic::input_precision>(a);
  EXPECT_EQ(s.code(), kvcast::Code::bad_stride) << s.message();
  unsigned long long* counter = nullptr;
  s = kvcast::downcast_checked<kvcast::e4m3>(a);
  EXPECT_EQ(s.code(), kvcast::Code::null_pointer);
  EXPECT_NE(std::string(s.message()).find("error_count is null"), std::string::npos);
  a.error_count = counter;
  s = kvcast::downcast_fp8<__half>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 0, 4, -2, 64);
  EXPECT_EQ(s.code(), kvcast::Code::bad_shape) << s.message();
}

TEST(HostApi, ZeroTokensLaunchesNothing) {
  kvcast::DowncastArgs<float> a;
  a.out_rows = 0;
  a.heads = 4;
  a.head_dim = 16;
  EXPECT_TRUE(kvcast::downcast<kvcast::e4m3>(a).ok());  // no device needed: nothing launched
}

}  // namespace
