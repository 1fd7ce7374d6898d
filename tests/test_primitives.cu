// CPU: AlignedVector and tile::Memory on the host, and the host API's promise that invalid
// arguments are rejected before any CUDA call (these run, and pass, on a machine with no GPU).
#include <gtest/gtest.h>

#include <kvcast/kvcast.cuh>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

static_assert(sizeof(kvcast::AlignedVector<__nv_bfloat16, 16>) == 32 && alignof(kvcast::AlignedVector<__nv_bfloat16, 16>) == 32);
static_assert(sizeof(kvcast::AlignedVector<std::uint8_t, 16>) == 16 && alignof(kvcast::AlignedVector<std::uint8_t, 16>) == 16);
static_assert(sizeof(kvcast::AlignedVector<float, 2>) == 8 && alignof(kvcast::AlignedVector<float, 2>) == 8);
static_assert(sizeof(kvcast::AlignedVector<std::uint8_t, 1>) == 1);
static_assert(kvcast::AlignedVector<__half, 8>::size() == 8 && kvcast::AlignedVector<__half, 8>::kBytes == 16);

TEST(AlignedVector, LoadStoreAtElementOffsetsFillAndIndex) {
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
  v.fill(9);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v[i], 9);
  EXPECT_TRUE((kvcast::AlignedVector<std::uint16_t, 8>::is_aligned(buffer + 8)));
  EXPECT_FALSE((kvcast::AlignedVector<std::uint16_t, 8>::is_aligned(buffer + 4)));
}

TEST(TileMemory, GroupsWalkTilesCoalesced) {
  // Four threads of a group of 4 walking 3 tiles cover indices 0..11 once each, in order
  // rank + 4 * tile.
  std::vector<int> data(12);
  std::iota(data.begin(), data.end(), 0);
  std::vector<int> seen(12, 0);
  for (int rank = 0; rank < 4; ++rank) {
    const kvcast::tile::Memory<int> m(rank, 4);
    for (int t = 0; m.in_bound(12, t); ++t) {
      EXPECT_EQ(m.load(data.data(), t), rank + 4 * t);
      m.store(seen.data(), 1, t);
    }
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  const auto one = kvcast::tile::Memory<int>::thread();
  EXPECT_EQ(one.index(5), 5);
  const kvcast::tile::Memory<int> far(3, 256);
  EXPECT_EQ(far.index(std::int64_t{1} << 40), (std::int64_t{1} << 48) + 3);  // 64-bit
  // 32-bit indices, as the kernel asks for them: the same walk, one instruction a step.
  const kvcast::tile::Memory<int, std::uint32_t> narrow(5, 64);
  EXPECT_EQ(narrow.index(3u), 3u * 64 + 5);
  EXPECT_EQ(narrow.rank(), 5u);
  EXPECT_EQ(narrow.size(), 64u);
  static_assert(std::is_same_v<decltype(narrow.index(0u)), std::uint32_t>, "Index type carries through");
}

// No device is touched here: the arguments are refused first. On a GPU-less machine a CUDA
// call would have turned into cuda_error instead.
TEST(HostApi, InvalidArgumentsFailBeforeAnyCudaCall) {
  kvcast::DowncastArgs<__nv_bfloat16> a;
  a.num_tokens = 4;
  a.heads = 2;
  a.head_dim = 64;
  kvcast::Status s = kvcast::downcast<kvcast::e4m3>(a);
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
  a.heads = 4;
  a.head_dim = 16;
  EXPECT_TRUE(kvcast::downcast<kvcast::e4m3>(a).ok());  // no device needed: nothing launched
}

}  // namespace
