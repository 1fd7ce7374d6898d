// GPU: the block-level write (BlockDowncast) through the fused RoPE example
// (examples/fused_rope.cuh), bit-exact against the host reference of rotate-then-quantize,
// with poisoned outputs, padding and out-of-range slots, paged layouts, every input type,
// both formats and modes, and misaligned outputs (the element-by-element path); and against
// the two kernels it replaces (rope_only, then downcast), byte for byte. Skipped, with the
// reason, where there is no GPU.
#include <cmath>
#include <numeric>
#include <vector>

#include "../examples/fused_rope.cuh"
#include "gpu_harness.cuh"

namespace {

using kvcast::Arithmetic;

struct RopeCase {
  std::int64_t tokens = 16, heads = 8, head_dim = 128;
  bool paged = false;         // HND pages of 16 rows instead of flat rows
  std::int64_t out_misalign = 0;  // bytes: the outputs' vector stores become byte stores
  double pad = 0.1, bad = 0.1;    // padding slots, slots past the cache
  std::uint64_t seed = 1;
};

// Host rotation, the same fp32 operations as the device's (each product and sum rounded alone).
float rotate_lo(float x, float y, float c, float s) {
  const float a = x * c, b = y * s;
  return a - b;
}
float rotate_hi(float x, float y, float c, float s) {
  const float a = y * c, b = x * s;
  return a + b;
}

template <class T>
float value_of(std::uint32_t bits) {
  return kvcast::ref::input_to_float(kvcast::dtype_of<T>::value, bits);
}

template <class T, class Format, Arithmetic Mode>
void check_rope(const RopeCase& c) {
  using Codes = kvcast::Fp8<Format, Mode>;
  std::mt19937_64 rng(c.seed);
  const std::int64_t N = c.tokens, H = c.heads, D = c.head_dim, row = H * D, half = D / 2;
  const std::int64_t positions_max = 64;
  // Inputs (bit patterns of T), positions, tables.
  std::normal_distribution<float> normal(0.0f, 30.0f);
  std::vector<T> k(static_cast<std::size_t>(N * row)), v(k.size());
  for (auto* buf : {&k, &v})
    for (auto& x : *buf) {
      const std::uint32_t b = kvtest::bits_of<T>(normal(rng));
      std::memcpy(static_cast<void*>(&x), &b, sizeof(T));
    }
  std::vector<float> cos_t(static_cast<std::size_t>(positions_max * half)), sin_t(cos_t.size());
  for (std::int64_t p = 0; p < positions_max; ++p)
    for (std::int64_t d = 0; d < half; ++d) {
      const double angle = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(d) / static_cast<double>(D));
      cos_t[p * half + d] = static_cast<float>(std::cos(angle));
      sin_t[p * half + d] = static_cast<float>(std::sin(angle));
    }
  std::vector<std::int64_t> positions(static_cast<std::size_t>(N));
  for (auto& p : positions) p = static_cast<std::int64_t>(rng() % positions_max);
  // Slots: distinct rows of a cache with room to spare, some padding, some past the end.
  const std::int64_t rows = N + N / 2 + 3;
  std::vector<std::int64_t> slots(static_cast<std::size_t>(rows));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<std::int64_t> loc(slots.begin(), slots.begin() + N);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (auto& s : loc) {
    const double r = u(rng);
    if (r < c.pad) s = -1;
    else if (r < c.pad + c.bad) s = rows + static_cast<std::int64_t>(rng() % 5);
  }
  const float scales[2] = {0.37f, 1.7f};
  const kvcast::OutputLayout layout = c.paged ? kvcast::OutputLayout::paged_hnd(16, H, D) : kvcast::OutputLayout::contiguous(H, D);
  const std::int64_t pages = (rows + 15) / 16;
  const std::int64_t span = c.paged ? pages * layout.block_stride : rows * row;
  const std::int64_t margin = 64, out_bytes = margin + c.out_misalign + span + margin;

  // Device buffers, outputs poisoned.
  const std::uint8_t poison = 0xA5;
  kvtest::DeviceBytes dk(k.size() * sizeof(T)), dv(v.size() * sizeof(T)), dkr(k.size() * sizeof(T));
  kvtest::DeviceBytes dko(static_cast<std::size_t>(out_bytes)), dvo(static_cast<std::size_t>(out_bytes));
  kvtest::DeviceBytes dko2(static_cast<std::size_t>(out_bytes)), dvo2(static_cast<std::size_t>(out_bytes));
  kvtest::DeviceBytes dloc(loc.size() * 8), dpos(positions.size() * 8), dcos(cos_t.size() * 4), dsin(sin_t.size() * 4), dscale(8),
      derr(16);
  KVTEST_CUDA(cudaMemcpy(dk.get(), k.data(), dk.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dv.get(), v.data(), dv.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dloc.get(), loc.data(), dloc.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dpos.get(), positions.data(), dpos.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dcos.get(), cos_t.data(), dcos.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dsin.get(), sin_t.data(), dsin.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dscale.get(), scales, 8, cudaMemcpyHostToDevice));
  for (auto* b : {&dko, &dvo, &dko2, &dvo2}) KVTEST_CUDA(cudaMemset(b->get(), poison, b->size()));
  KVTEST_CUDA(cudaMemset(derr.get(), 0, 16));

  auto make_args = [&](const void* kp, const void* vp, std::uint8_t* ko, std::uint8_t* vo, const void* locp, const float* sp,
                       unsigned long long* errors) {
    kvcast::DowncastArgs<T> a;
    a.k = static_cast<const T*>(kp);
    a.v = static_cast<const T*>(vp);
    a.num_tokens = N;
    a.heads = H;
    a.head_dim = D;
    a.k_out = ko + margin + c.out_misalign;
    a.v_out = vo + margin + c.out_misalign;
    a.out = layout;
    a.loc = static_cast<const std::int64_t*>(locp);
    a.out_rows = rows;
    a.error_count = errors;
    a.k_scale = kvcast::Scale::in_device_memory(sp);
    a.v_scale = kvcast::Scale::in_device_memory(sp + 1);
    return a;
  };
  auto* errors = reinterpret_cast<unsigned long long*>(derr.get());
  const auto* sp = reinterpret_cast<const float*>(dscale.get());
  const example::Rope rope{reinterpret_cast<const float*>(dcos.get()), reinterpret_cast<const float*>(dsin.get()),
                           reinterpret_cast<const std::int64_t*>(dpos.get())};
  // Fused.
  const auto fused_args = make_args(dk.get(), dv.get(), dko.get(), dvo.get(), dloc.get(), sp, errors);
  const kvcast::Status fused = example::rope_then_write<Codes>(fused_args, rope, nullptr);
  ASSERT_TRUE(fused.ok()) << fused.message();
  // Two kernels: rotate into a buffer, then downcast.
  ASSERT_EQ(example::rope_only(reinterpret_cast<const T*>(dk.get()), reinterpret_cast<T*>(dkr.get()), rope, N, H, D, nullptr),
            cudaSuccess);
  const auto split_args = make_args(dkr.get(), dv.get(), dko2.get(), dvo2.get(), dloc.get(), sp, errors + 1);
  const kvcast::Status split = kvcast::downcast<Format, Mode>(split_args);
  ASSERT_TRUE(split.ok()) << split.message();
  KVTEST_CUDA(cudaDeviceSynchronize());

  // Host reference: rotate, round to T, then the reference downcast.
  std::vector<T> k_rot(k.size());
  for (std::int64_t t = 0; t < N; ++t)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t d = 0; d < half; ++d) {
        const std::int64_t at = t * row + h * D + d;
        const float x = value_of<T>(kvcast::ref::element_bits(k.data(), at));
        const float y = value_of<T>(kvcast::ref::element_bits(k.data(), at + half));
        const float cs = cos_t[positions[t] * half + d], sn = sin_t[positions[t] * half + d];
        const std::uint32_t lo = kvtest::bits_of<T>(rotate_lo(x, y, cs, sn));
        const std::uint32_t hi = kvtest::bits_of<T>(rotate_hi(x, y, cs, sn));
        std::memcpy(static_cast<void*>(&k_rot[at]), &lo, sizeof(T));
        std::memcpy(static_cast<void*>(&k_rot[at + half]), &hi, sizeof(T));
      }
  std::vector<std::uint8_t> want_k(static_cast<std::size_t>(out_bytes), poison), want_v(want_k.size(), poison);
  unsigned long long want_errors = 0;
  const auto ref_args = make_args(k_rot.data(), v.data(), want_k.data(), want_v.data(), loc.data(), scales, &want_errors);
  ASSERT_TRUE((kvcast::ref::downcast<Format, Mode>(ref_args).ok()));

  std::vector<std::uint8_t> got_k(want_k.size()), got_v(want_k.size()), split_k(want_k.size()), split_v(want_k.size());
  KVTEST_CUDA(cudaMemcpy(got_k.data(), dko.get(), got_k.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(got_v.data(), dvo.get(), got_v.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(split_k.data(), dko2.get(), split_k.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(split_v.data(), dvo2.get(), split_v.size(), cudaMemcpyDeviceToHost));
  unsigned long long got_errors[2] = {};
  KVTEST_CUDA(cudaMemcpy(got_errors, derr.get(), 16, cudaMemcpyDeviceToHost));
  const auto mismatches = [](const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
    long long n = 0;
    for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
    return n;
  };
  const std::string what = "tokens " + std::to_string(N) + " heads " + std::to_string(H) + " dim " + std::to_string(D) +
                           (c.paged ? " paged" : " flat") + " misalign " + std::to_string(c.out_misalign);
  EXPECT_EQ(mismatches(got_k, want_k), 0) << "fused K, " << what;
  EXPECT_EQ(mismatches(got_v, want_v), 0) << "fused V, " << what;
  EXPECT_EQ(mismatches(split_k, got_k), 0) << "two kernels against fused, K, " << what;
  EXPECT_EQ(mismatches(split_v, got_v), 0) << "two kernels against fused, V, " << what;
  EXPECT_EQ(got_errors[0], want_errors) << what;
  EXPECT_EQ(got_errors[1], want_errors) << what;
  EXPECT_GT(mismatches(want_k, std::vector<std::uint8_t>(want_k.size(), poison)), 0) << "nothing was written: " << what;
}

template <class T, class Format, Arithmetic Mode>
void check_grid() {
  RopeCase c;
  check_rope<T, Format, Mode>(c);                                            // decode-sized, flat
  c.tokens = 1;
  check_rope<T, Format, Mode>(c);
  c.tokens = 4100;  // several tokens a CTA
  c.heads = 2;
  c.head_dim = 64;
  c.seed = 2;
  check_rope<T, Format, Mode>(c);
  c.paged = true;  // HND pages, heads apart
  c.tokens = 37;
  c.heads = 4;
  c.head_dim = 128;
  c.seed = 3;
  check_rope<T, Format, Mode>(c);
  c.out_misalign = 3;  // byte stores
  c.seed = 4;
  check_rope<T, Format, Mode>(c);
  c.paged = false;
  c.tokens = 5000;
  c.heads = 3;
  c.head_dim = 32;
  c.seed = 5;
  check_rope<T, Format, Mode>(c);
}

TEST(BlockDowncast, FusedRopeIsBitExactBf16) {
  KVTEST_REQUIRE_GPU();
  check_grid<__nv_bfloat16, kvcast::e4m3, Arithmetic::fp32>();
  check_grid<__nv_bfloat16, kvcast::e5m2, Arithmetic::input_precision>();
}
TEST(BlockDowncast, FusedRopeIsBitExactF16) {
  KVTEST_REQUIRE_GPU();
  check_grid<__half, kvcast::e4m3, Arithmetic::input_precision>();
  check_grid<__half, kvcast::e5m2, Arithmetic::fp32>();
}
TEST(BlockDowncast, FusedRopeIsBitExactF32) {
  KVTEST_REQUIRE_GPU();
  check_grid<float, kvcast::e4m3, Arithmetic::fp32>();
}

// The host side validates as downcast() does: a bad argument is refused before any launch.
TEST(BlockDowncast, ParamsAreValidatedLikeTheDeviceWideCall) {
  kvcast::DowncastArgs<__nv_bfloat16> a;
  a.num_tokens = 4;
  a.heads = 2;
  a.head_dim = 64;
  kvcast::BlockWriteParams<__nv_bfloat16> p;
  EXPECT_EQ(kvcast::make_block_write_params(a, p).code(), kvcast::Code::bad_option);  // out_rows not given
  a.out_rows = 10;
  a.k = reinterpret_cast<const __nv_bfloat16*>(0x1000);
  EXPECT_EQ(kvcast::make_block_write_params(a, p).code(), kvcast::Code::null_pointer);  // k_out missing
  a.k_out = reinterpret_cast<void*>(0x2001);
  EXPECT_TRUE(kvcast::make_block_write_params(a, p).ok());
  EXPECT_EQ(p.out_vector_bytes, 1u);  // an odd output address: byte stores
  a.k_out = reinterpret_cast<void*>(0x2000);
  EXPECT_TRUE(kvcast::make_block_write_params(a, p).ok());
  EXPECT_EQ(p.out_vector_bytes, 16u);
  // Per-tensor scales only, no amax: the other scale kinds are the device-wide call's.
  float amax = 0;
  a.k_amax = &amax;
  EXPECT_NE(std::string(kvcast::make_block_write_params(a, p).message()).find("k_amax is given, but the block-level write"),
            std::string::npos);
  a.k_amax = nullptr;
  a.scale_kind = kvcast::ScaleKind::per_head;
  a.k_head_scales = reinterpret_cast<const float*>(0x3000);
  EXPECT_NE(std::string(kvcast::make_block_write_params(a, p).message()).find("scale_kind per_head: the block-level write"),
            std::string::npos);
}

}  // namespace
