// GPU, hostile inputs: a seeded randomized property test over shapes, strides, alignments,
// layouts, slots and numerics; edge values and edge scales; one call past 2^31 elements on both
// sides; CUDA-graph replay with a changed scale; concurrent streams; NVFP4's block quantizer on
// the device against the host reference. Skipped without a GPU.
//
// Replay one property case: KVCAST_PROPERTY_SEED=<seed> ./kvcast_test_gpu_hostile --gtest_filter='Property.*'
// More or fewer cases:      KVCAST_PROPERTY_CASES=<n>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include <kvcast/fp4.cuh>

#include "gpu_harness.cuh"

namespace {

using kvcast::Arithmetic;
using kvtest::Case;
using kvtest::LocKind;
using kvtest::OutKind;

using Runner = kvtest::Outcome (*)(const Case&, std::uint8_t);
struct Combo {
  const char* name;
  Runner run;
  int elem_bytes;
};
const Combo kCombos[] = {
    {"bf16/e4m3/fp32", kvtest::run_case<__nv_bfloat16, kvcast::e4m3, Arithmetic::fp32>, 2},
    {"bf16/e4m3/ip", kvtest::run_case<__nv_bfloat16, kvcast::e4m3, Arithmetic::input_precision>, 2},
    {"bf16/e5m2/fp32", kvtest::run_case<__nv_bfloat16, kvcast::e5m2, Arithmetic::fp32>, 2},
    {"bf16/e5m2/ip", kvtest::run_case<__nv_bfloat16, kvcast::e5m2, Arithmetic::input_precision>, 2},
    {"f16/e4m3/fp32", kvtest::run_case<__half, kvcast::e4m3, Arithmetic::fp32>, 2},
    {"f16/e4m3/ip", kvtest::run_case<__half, kvcast::e4m3, Arithmetic::input_precision>, 2},
    {"f16/e5m2/fp32", kvtest::run_case<__half, kvcast::e5m2, Arithmetic::fp32>, 2},
    {"f16/e5m2/ip", kvtest::run_case<__half, kvcast::e5m2, Arithmetic::input_precision>, 2},
    {"f32/e4m3/fp32", kvtest::run_case<float, kvcast::e4m3, Arithmetic::fp32>, 4},
    {"f32/e4m3/ip", kvtest::run_case<float, kvcast::e4m3, Arithmetic::input_precision>, 4},
    {"f32/e5m2/fp32", kvtest::run_case<float, kvcast::e5m2, Arithmetic::fp32>, 4},
    {"f32/e5m2/ip", kvtest::run_case<float, kvcast::e5m2, Arithmetic::input_precision>, 4},
};

// One random case from its seed (the same seed always gives the same case).
Case random_case(std::uint64_t seed, int& combo) {
  std::mt19937_64 rng(seed);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi - lo + 1)); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto log_uni = [&](double lo, double hi) { return std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng)); };
  combo = static_cast<int>(uni(0, 11));
  const int elem = kCombos[combo].elem_bytes;
  Case c;
  c.seed = seed;
  c.heads = chance(0.5) ? uni(1, 64) : static_cast<std::int64_t>(log_uni(1, 64.99));
  static const std::int64_t kDims[] = {64, 96, 128, 192, 256, 512, 576};
  c.head_dim = chance(0.5) ? kDims[uni(0, 6)] : uni(1, 576);
  c.tokens = chance(0.04) ? 0 : static_cast<std::int64_t>(log_uni(1, 2048.99));
  // Keep the host reference quick: at most 2^17 elements a tensor.
  c.tokens = std::min<std::int64_t>(c.tokens, std::max<std::int64_t>(1, (std::int64_t{1} << 17) / (c.heads * c.head_dim)));
  if (chance(0.4)) c.in_head_pad = uni(0, 16);
  if (chance(0.4)) c.in_token_pad = uni(0, 40);
  c.packed_kv = chance(0.2);
  static const int kMisalign[] = {0, 2, 4, 8, 12};
  const int bytes = kMisalign[uni(0, 4)];
  c.in_misalign = bytes % elem == 0 ? bytes / elem : 0;
  c.out = static_cast<OutKind>(uni(0, 4));
  c.block_size = static_cast<std::int64_t>(log_uni(1, 128.99));
  c.out_head_pad = uni(0, 20);
  if (chance(0.3)) c.out_misalign = uni(1, 15);
  c.loc = static_cast<LocKind>(uni(0, 2));
  if (chance(0.5)) c.pad_fraction = std::uniform_real_distribution<double>(0, 0.3)(rng);
  if (chance(0.5)) c.bad_fraction = std::uniform_real_distribution<double>(0, 0.3)(rng);
  c.checked_rows = chance(0.8);
  if (chance(0.2)) c.mult = uni(2, 3);
  if (chance(0.3)) c.offset = uni(-10, 10);
  c.device_scale = chance(0.7);
  const int which = static_cast<int>(uni(0, 9));
  c.has_k = which != 0;
  c.has_v = which != 1;
  c.k_scale = static_cast<float>(log_uni(1e-3, 1e2));
  c.v_scale = static_cast<float>(log_uni(1e-3, 1e2));
  c.magnitude = static_cast<float>(log_uni(1e-2, 1e4));
  // Scale kinds and amax, drawn last so that the fields above stay those of earlier versions.
  const int kind = static_cast<int>(uni(0, 3));  // half per tensor, a quarter each of the others
  const bool fp32 = combo % 2 == 0;
  c.scale_kind = kind == 2 ? kvcast::ScaleKind::per_head
                 : kind == 3 ? (fp32 ? kvcast::ScaleKind::per_token_head : kvcast::ScaleKind::per_head)
                             : kvcast::ScaleKind::per_tensor;
  c.scale_out = static_cast<kvtest::ScaleOut>(uni(0, 2));
  if (chance(0.2)) c.min_scale = static_cast<float>(log_uni(1e-8, 1.0));
  c.amax = chance(0.3);
  if (c.scale_kind == kvcast::ScaleKind::per_token_head) c.checked_rows = true;  // it needs the row count
  return c;
}

TEST(Property, RandomCasesAreBitExactAndTouchNothingElse) {
  KVTEST_REQUIRE_GPU();
  const char* one = std::getenv("KVCAST_PROPERTY_SEED");
  const char* count_env = std::getenv("KVCAST_PROPERTY_CASES");
  const int cases = one ? 1 : (count_env ? std::atoi(count_env) : 2000);
  const std::uint64_t first_seed = one ? std::strtoull(one, nullptr, 10) : 0x6b7663617374ull;  // "kvcast"
  std::vector<int> per_combo(12, 0), per_kind(3, 0), fused_heads(3, 0);  // fused: heads of their own scales in the dense kernel
  int with_amax = 0;
  long long rows_rejected = 0;
  for (int i = 0; i < cases; ++i) {
    const std::uint64_t seed = first_seed + static_cast<std::uint64_t>(i);
    int combo = 0;
    const Case c = random_case(seed, combo);
    const std::uint8_t poison = static_cast<std::uint8_t>(seed * 0x9E3779B97F4A7C15ull >> 56);
    const kvtest::Outcome o = kCombos[combo].run(c, poison);
    ++per_combo[combo];
    ++per_kind[static_cast<int>(c.scale_kind)];
    if (o.dense && c.heads > 1) ++fused_heads[static_cast<int>(c.scale_kind)];
    with_amax += c.amax ? 1 : 0;
    rows_rejected += static_cast<long long>(o.device_errors);
    const bool ok = o.ran && o.mismatches == 0 && o.device_errors == o.reference_errors;
    ASSERT_TRUE(ok) << "property case failed; replay with KVCAST_PROPERTY_SEED=" << seed << "\n  combo " << kCombos[combo].name
                    << ", poison 0x" << std::hex << int(poison) << std::dec << "\n  " << c.describe() << "\n  "
                    << o.first_mismatch << "\n  errors: device " << o.device_errors << ", reference " << o.reference_errors;
  }
  std::printf("[ property ] %d cases bit-exact, %lld rejected rows counted exactly; per combo:", cases, rows_rejected);
  for (int k = 0; k < 12; ++k) std::printf(" %s=%d", kCombos[k].name, per_combo[k]);
  std::printf("; per scale kind: per_tensor=%d per_head=%d per_token_head=%d (dense, heads fused: %d, %d); with amax %d\n",
              per_kind[0], per_kind[1], per_kind[2], fused_heads[1], fused_heads[2], with_amax);
  if (!one) {
    for (int k = 0; k < 12; ++k) EXPECT_GT(per_combo[k], cases / 40) << kCombos[k].name << " is barely covered";
  }
}

// Edge values of the input type against edge scales, on the device vs the reference.
template <class T>
std::vector<std::uint32_t> edge_inputs(float max_fp8) {
  std::vector<std::uint32_t> bits;
  auto add = [&](float f) {
    const std::uint32_t b = kvtest::bits_of<T>(f);
    for (std::uint32_t d : {0u, 1u, 0xFFFFFFFFu}) bits.push_back(sizeof(T) == 2 ? ((b + d) & 0xFFFF) : b + d);  // neighbours
  };
  for (float s : {1.0f, 0.37f, 2.0f})
    for (float sign : {1.0f, -1.0f}) {
      add(sign * max_fp8 * s);                      // at ±max (times the scale)
      add(sign * max_fp8 * s * (1 + 1.0f / 32));    // the rounding midpoint above max (E4M3: 464)
      add(sign * max_fp8 * s * (1 + 1.0f / 16));    // just above
      add(sign * max_fp8 * s * (1 - 1.0f / 32));    // midpoint below max
      add(sign * 1.0625f * s);                      // a tie in the middle of the range
    }
  if constexpr (sizeof(T) == 2) {
    for (std::uint32_t b : {0x0000u, 0x8000u, 0x0001u, 0x8001u, 0x03FFu, 0x007Fu, 0x7C00u, 0xFC00u, 0x7F80u, 0xFF80u, 0x7E00u,
                            0xFE00u, 0x7FC0u, 0xFFFFu, 0x7BFFu, 0xFBFFu, 0x7F7Fu})
      bits.push_back(b);
  } else {
    for (std::uint32_t b : {0x0u, 0x80000000u, 0x1u, 0x80000001u, 0x007FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
                            0x7F800001u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x00800000u})
      bits.push_back(b);
  }
  return bits;
}

const float kEdgeScales[] = {1.0f, 1e-30f, 1e-45f /* fp32 subnormal */, 3e38f, -0.37f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, 6e-8f /* fp16 subnormal */};

template <class T, class Format, Arithmetic Mode>
void check_edges() {
  const std::vector<std::uint32_t> bits = edge_inputs<T>(Format::kMax);
  for (float ks : kEdgeScales)
    for (bool device_scale : {true, false}) {
      Case c;
      c.tokens = 3;
      c.heads = 1;
      c.head_dim = static_cast<std::int64_t>(bits.size());
      c.input_bits = &bits;
      c.k_scale = ks;
      c.v_scale = ks;
      c.device_scale = device_scale;
      c.loc = LocKind::i32;
      c.in_misalign = 1;  // scalar path too
      kvtest::check_case<T, Format, Mode>(c);
      c.in_misalign = 0;
      kvtest::check_case<T, Format, Mode>(c);
      if (::testing::Test::HasFailure()) return;
    }
}

TEST(EdgeValues, EveryComboEveryEdgeScale) {
  KVTEST_REQUIRE_GPU();
  check_edges<__nv_bfloat16, kvcast::e4m3, Arithmetic::fp32>();
  check_edges<__nv_bfloat16, kvcast::e4m3, Arithmetic::input_precision>();
  check_edges<__nv_bfloat16, kvcast::e5m2, Arithmetic::fp32>();
  check_edges<__nv_bfloat16, kvcast::e5m2, Arithmetic::input_precision>();
  check_edges<__half, kvcast::e4m3, Arithmetic::fp32>();
  check_edges<__half, kvcast::e4m3, Arithmetic::input_precision>();
  check_edges<__half, kvcast::e5m2, Arithmetic::fp32>();
  check_edges<__half, kvcast::e5m2, Arithmetic::input_precision>();
  check_edges<float, kvcast::e4m3, Arithmetic::fp32>();
  check_edges<float, kvcast::e4m3, Arithmetic::input_precision>();
  check_edges<float, kvcast::e5m2, Arithmetic::fp32>();
  check_edges<float, kvcast::e5m2, Arithmetic::input_precision>();
}

// One call past 2^31 elements on both sides: 2^21 + 3 tokens of 1024 bf16 (K only, as an MLA
// cache), rows reversed so the first input lands in the last row. Values come from a hash of
// the element index, so any element can be recomputed on the host.
__host__ __device__ inline float large_value(std::uint64_t i) {
  std::uint64_t h = (i + 7) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return (static_cast<float>(h & 0xFFFFF) / 1048576.0f - 0.5f) * 1000.0f;  // saturates often
}
__global__ void fill_large(__nv_bfloat16* k, std::uint64_t n) {
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < n; i += std::uint64_t{gridDim.x} * blockDim.x)
    k[i] = __float2bfloat16_rn(large_value(i));
}
__global__ void reversed_slots(std::int64_t* loc, std::int64_t n) {
  for (std::int64_t t = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; t < n; t += std::int64_t{gridDim.x} * blockDim.x)
    loc[t] = n - 1 - t;
}

TEST(Large, IndexingPast2To31OnBothSides) {
  KVTEST_REQUIRE_GPU();
  const std::int64_t D = 1024, N = (std::int64_t{1} << 21) + 3, rows = N + 1;
  const std::uint64_t in_elems = static_cast<std::uint64_t>(N * D);
  ASSERT_GT(in_elems, std::uint64_t{1} << 31);
  size_t free_bytes = 0, total = 0;
  KVTEST_CUDA(cudaMemGetInfo(&free_bytes, &total));
  if (free_bytes < in_elems * 2 + rows * D + (std::size_t{1} << 30)) GTEST_SKIP() << "GPU test skipped: needs ~7 GB free";
  kvtest::DeviceBytes k(in_elems * 2), out(static_cast<std::size_t>(rows * D)), loc(N * 8), errors(8);
  ASSERT_TRUE(k && out && loc && errors);
  fill_large<<<4096, 256>>>(reinterpret_cast<__nv_bfloat16*>(k.get()), in_elems);
  reversed_slots<<<1024, 256>>>(reinterpret_cast<std::int64_t*>(loc.get()), N);
  KVTEST_CUDA(cudaMemset(out.get(), 0xA5, out.size()));
  kvcast::DowncastArgs<__nv_bfloat16> a;
  a.k = reinterpret_cast<const __nv_bfloat16*>(k.get());
  a.k_out = out.get();
  a.num_tokens = N;
  a.heads = 1;
  a.head_dim = D;
  a.loc = reinterpret_cast<const std::int64_t*>(loc.get());
  a.out_rows = rows;
  a.error_count = reinterpret_cast<unsigned long long*>(errors.get());
  a.k_scale = kvcast::Scale::host_value(0.75f);
  const kvcast::Status s = kvcast::downcast_checked<kvcast::e4m3>(a);
  ASSERT_TRUE(s.ok()) << s.message();
  // Tokens that matter: first, last, and those around input element 2^31 (token 2^21).
  const std::int64_t boundary = (std::int64_t{1} << 31) / D;
  std::vector<std::int64_t> tokens = {0, 1, N / 2, boundary - 1, boundary, boundary + 1, N - 2, N - 1};
  for (std::int64_t t : tokens) {
    const std::int64_t row = N - 1 - t;
    std::vector<std::uint8_t> got(D);
    KVTEST_CUDA(cudaMemcpy(got.data(), out.get() + row * D, D, cudaMemcpyDeviceToHost));
    for (std::int64_t d = 0; d < D; ++d) {
      const float x = kvcast::ref::bf16_to_float(kvcast::ref::to_bf16(large_value(static_cast<std::uint64_t>(t * D + d))));
      const std::uint8_t want = kvcast::ref::to_fp8<kvcast::e4m3>(x / 0.75f);
      ASSERT_EQ(got[d], want) << "token " << t << " row " << row << " element " << d;
    }
  }
  // The extra last row stays poisoned; rows around output byte 2^31 were written.
  std::vector<std::uint8_t> last(D);
  KVTEST_CUDA(cudaMemcpy(last.data(), out.get() + (rows - 1) * D, D, cudaMemcpyDeviceToHost));
  for (std::uint8_t b : last) ASSERT_EQ(b, 0xA5);
  ASSERT_GT(static_cast<std::uint64_t>(rows * D), std::uint64_t{1} << 31);
}

// A captured call reads its scale from device memory at replay time; a graph replays with the
// new scale, and with new K/V data.
TEST(Graph, ReplayFollowsTheScaleInDeviceMemory) {
  KVTEST_REQUIRE_GPU();
  const std::int64_t N = 64, H = 8, D = 128;
  std::vector<__half> k(N * H * D);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 50.f);
  for (auto& x : k) x = __float2half(normal(rng));
  std::vector<std::int64_t> loc(N);
  for (std::int64_t t = 0; t < N; ++t) loc[t] = (t * 5 + 3) % N;
  kvtest::DeviceBytes dk(k.size() * 2), dout(N * H * D), dl(N * 8), ds(4);
  KVTEST_CUDA(cudaMemcpy(dk.get(), k.data(), k.size() * 2, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dl.get(), loc.data(), N * 8, cudaMemcpyHostToDevice));
  cudaStream_t stream;
  KVTEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  kvcast::DowncastArgs<__half> a;
  a.k = reinterpret_cast<const __half*>(dk.get());
  a.k_out = dout.get();
  a.num_tokens = N;
  a.heads = H;
  a.head_dim = D;
  a.loc = reinterpret_cast<const std::int64_t*>(dl.get());
  a.out_rows = N;
  a.k_scale = kvcast::Scale::in_device_memory(reinterpret_cast<const float*>(ds.get()));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  KVTEST_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const kvcast::Status s = kvcast::downcast<kvcast::e4m3>(a, stream);
  KVTEST_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(s.ok()) << s.message();
  KVTEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (float scale : {1.0f, 0.25f, 3.3f}) {
    KVTEST_CUDA(cudaMemcpy(ds.get(), &scale, 4, cudaMemcpyHostToDevice));
    KVTEST_CUDA(cudaMemset(dout.get(), 0xA5, dout.size()));
    KVTEST_CUDA(cudaDeviceSynchronize());  // the copies and memsets above ran on the legacy stream
    KVTEST_CUDA(cudaGraphLaunch(exec, stream));
    KVTEST_CUDA(cudaStreamSynchronize(stream));
    std::vector<std::uint8_t> got(dout.size()), want(dout.size(), 0xA5);
    KVTEST_CUDA(cudaMemcpy(got.data(), dout.get(), got.size(), cudaMemcpyDeviceToHost));
    kvcast::DowncastArgs<__half> h = a;
    h.k = k.data();
    h.k_out = want.data();
    h.loc = loc.data();
    h.k_scale = kvcast::Scale::host_value(scale);
    ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, Arithmetic::fp32>(h).ok()));
    EXPECT_EQ(got, want) << "scale " << scale;
  }
  KVTEST_CUDA(cudaGraphExecDestroy(exec));
  KVTEST_CUDA(cudaGraphDestroy(graph));
  KVTEST_CUDA(cudaStreamDestroy(stream));
}

// A captured per-head call reads its scale array at replay time, and its amax output
// accumulates what each replay saw (the caller zeroes it between steps); a captured
// per-(token, head) call computes new scales from new data.
TEST(Graph, ReplayFollowsPerHeadScalesAndComputesAmaxAndTokenHeadScales) {
  KVTEST_REQUIRE_GPU();
  const std::int64_t N = 48, H = 4, D = 128;
  std::vector<__nv_bfloat16> k(N * H * D);
  std::mt19937 rng(9);
  std::vector<std::int64_t> loc(N);
  for (std::int64_t t = 0; t < N; ++t) loc[t] = t % 7 == 3 ? -1 : (t * 5 + 1) % N;  // some padding
  kvtest::DeviceBytes dk(k.size() * 2), dout(N * H * D), dl(N * 8), dheads(4 * H), damax(4), dscales(N * H * 4);
  KVTEST_CUDA(cudaMemcpy(dl.get(), loc.data(), N * 8, cudaMemcpyHostToDevice));
  cudaStream_t stream;
  KVTEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const kvcast::ScaleKind kind : {kvcast::ScaleKind::per_head, kvcast::ScaleKind::per_token_head}) {
    kvcast::DowncastArgs<__nv_bfloat16> a;
    a.k = reinterpret_cast<const __nv_bfloat16*>(dk.get());
    a.k_out = dout.get();
    a.num_tokens = N;
    a.heads = H;
    a.head_dim = D;
    a.loc = reinterpret_cast<const std::int64_t*>(dl.get());
    a.out_rows = N;
    a.scale_kind = kind;
    a.k_amax = reinterpret_cast<float*>(damax.get());
    if (kind == kvcast::ScaleKind::per_head) a.k_head_scales = reinterpret_cast<const float*>(dheads.get());
    else a.k_scales_out = reinterpret_cast<float*>(dscales.get());
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    KVTEST_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const kvcast::Status s = kvcast::downcast<kvcast::e4m3>(a, stream);
    KVTEST_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_TRUE(s.ok()) << s.message();
    KVTEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 3; ++replay) {
      std::normal_distribution<float> normal(0.f, 4.0f * static_cast<float>(replay + 1));
      for (auto& x : k) x = __float2bfloat16(normal(rng));
      std::vector<float> heads(H);
      for (std::int64_t h = 0; h < H; ++h) heads[h] = 0.05f * static_cast<float>((replay + 1) * (h + 2));
      KVTEST_CUDA(cudaMemcpy(dk.get(), k.data(), k.size() * 2, cudaMemcpyHostToDevice));
      KVTEST_CUDA(cudaMemcpy(dheads.get(), heads.data(), 4 * H, cudaMemcpyHostToDevice));
      KVTEST_CUDA(cudaMemset(dout.get(), 0xA5, dout.size()));
      KVTEST_CUDA(cudaMemset(dscales.get(), 0xA5, dscales.size()));
      KVTEST_CUDA(cudaMemset(damax.get(), 0, 4));
      KVTEST_CUDA(cudaDeviceSynchronize());  // the copies and memsets above ran on the legacy stream
    KVTEST_CUDA(cudaGraphLaunch(exec, stream));
      KVTEST_CUDA(cudaStreamSynchronize(stream));
      std::vector<std::uint8_t> got(dout.size()), want(dout.size(), 0xA5), got_scales(dscales.size()),
          want_scales(dscales.size(), 0xA5);
      float got_amax = 0, want_amax = 0;
      KVTEST_CUDA(cudaMemcpy(got.data(), dout.get(), got.size(), cudaMemcpyDeviceToHost));
      KVTEST_CUDA(cudaMemcpy(got_scales.data(), dscales.get(), got_scales.size(), cudaMemcpyDeviceToHost));
      KVTEST_CUDA(cudaMemcpy(&got_amax, damax.get(), 4, cudaMemcpyDeviceToHost));
      kvcast::DowncastArgs<__nv_bfloat16> h = a;
      h.k = k.data();
      h.k_out = want.data();
      h.loc = loc.data();
      h.k_amax = &want_amax;
      if (kind == kvcast::ScaleKind::per_head) h.k_head_scales = heads.data();
      else h.k_scales_out = reinterpret_cast<float*>(want_scales.data());
      ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, Arithmetic::fp32>(h).ok()));
      EXPECT_EQ(got, want) << kvcast::to_string(kind) << " replay " << replay;
      EXPECT_EQ(got_scales, want_scales) << kvcast::to_string(kind) << " replay " << replay;
      EXPECT_EQ(got_amax, want_amax) << kvcast::to_string(kind) << " replay " << replay;
    }
    KVTEST_CUDA(cudaGraphExecDestroy(exec));
    KVTEST_CUDA(cudaGraphDestroy(graph));
  }
  KVTEST_CUDA(cudaStreamDestroy(stream));
}

// Calls on four streams at once, each with its own tokens and disjoint rows of one cache, give
// the bytes of one sequential call.
TEST(Streams, ConcurrentDisjointCallsEqualOneCall) {
  KVTEST_REQUIRE_GPU();
  const std::int64_t N = 4096, H = 8, D = 128, parts = 4;
  std::vector<__nv_bfloat16> k(N * H * D), v(N * H * D);
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.f, 20.f);
  for (auto& x : k) x = __float2bfloat16(normal(rng));
  for (auto& x : v) x = __float2bfloat16(normal(rng));
  std::vector<std::int64_t> loc(N);
  std::iota(loc.begin(), loc.end(), 0);
  std::shuffle(loc.begin(), loc.end(), rng);
  kvtest::DeviceBytes dk(k.size() * 2), dv(v.size() * 2), dl(N * 8), ko1(N * H * D), vo1(N * H * D), ko2(N * H * D), vo2(N * H * D);
  KVTEST_CUDA(cudaMemcpy(dk.get(), k.data(), k.size() * 2, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dv.get(), v.data(), v.size() * 2, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dl.get(), loc.data(), N * 8, cudaMemcpyHostToDevice));
  for (auto* b : {&ko1, &vo1, &ko2, &vo2}) KVTEST_CUDA(cudaMemset(b->get(), 0x5A, b->size()));
  auto make = [&](std::int64_t first, std::int64_t count, std::uint8_t* ko, std::uint8_t* vo) {
    kvcast::DowncastArgs<__nv_bfloat16> a;
    a.k = reinterpret_cast<const __nv_bfloat16*>(dk.get()) + first * H * D;
    a.v = reinterpret_cast<const __nv_bfloat16*>(dv.get()) + first * H * D;
    a.k_out = ko;
    a.v_out = vo;
    a.num_tokens = count;
    a.heads = H;
    a.head_dim = D;
    a.loc = reinterpret_cast<const std::int64_t*>(dl.get()) + first;
    a.out_rows = N;
    a.k_scale = kvcast::Scale::host_value(0.3f);
    a.v_scale = kvcast::Scale::host_value(0.6f);
    return a;
  };
  ASSERT_TRUE(kvcast::downcast<kvcast::e4m3>(make(0, N, ko1.get(), vo1.get())).ok());
  KVTEST_CUDA(cudaDeviceSynchronize());
  std::vector<cudaStream_t> streams(parts);
  for (auto& s : streams) KVTEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (std::int64_t p = 0; p < parts; ++p)
    ASSERT_TRUE(kvcast::downcast<kvcast::e4m3>(make(p * N / parts, N / parts, ko2.get(), vo2.get()), streams[p]).ok());
  KVTEST_CUDA(cudaDeviceSynchronize());
  std::vector<std::uint8_t> a1(ko1.size()), a2(ko2.size()), b1(vo1.size()), b2(vo2.size());
  KVTEST_CUDA(cudaMemcpy(a1.data(), ko1.get(), a1.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(a2.data(), ko2.get(), a2.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(b1.data(), vo1.get(), b1.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(b2.data(), vo2.get(), b2.size(), cudaMemcpyDeviceToHost));
  EXPECT_EQ(a1, a2);
  EXPECT_EQ(b1, b2);
  // And both are the contract's bytes, not two equal leftovers.
  std::vector<std::uint8_t> want_k(a1.size(), 0x5A), want_v(b1.size(), 0x5A);
  kvcast::DowncastArgs<__nv_bfloat16> h = make(0, N, want_k.data(), want_v.data());
  h.k = k.data();
  h.v = v.data();
  h.loc = loc.data();
  ASSERT_TRUE((kvcast::ref::downcast<kvcast::e4m3, Arithmetic::fp32>(h).ok()));
  EXPECT_EQ(a1, want_k);
  EXPECT_EQ(b1, want_v);
  for (auto& s : streams) KVTEST_CUDA(cudaStreamDestroy(s));
}

}  // namespace

// ---- NVFP4's exact-mode block quantizer on the device (issue #17; its write comes later). ----

namespace {
__global__ void nvfp4_blocks(const float* x, const float* g, int blocks, kvcast::Nvfp4BlockCodes* out) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = x[16 * b + i];
  out[b] = kvcast::Nvfp4Quantizer(g[b]).block(v);
}
}  // namespace

// Random and hostile blocks, each with its own global scale: the device's sf and codes equal
// the host reference's (software E2M1 below sm_100, the hardware conversion from it), and every
// output is written (poisoned before).
TEST(Nvfp4Quantizer, DeviceEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  std::mt19937_64 rng(4004);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float globals[] = {1.0f, 0.5f, 1.0f / 3.0f, 0.0173f, 1e-3f, 300.0f, 1.0f / 448.0f, 0.7f, 1e-30f, 1e30f, 3e-39f};
  constexpr int kBlocks = 1 << 16;
  std::vector<float> x(16 * kBlocks), g(kBlocks);
  for (int b = 0; b < kBlocks; ++b) {
    const float magnitude = std::ldexp(1.0f, static_cast<int>(rng() % 120) - 60);
    for (int i = 0; i < 16; ++i) {
      float v = normal(rng) * magnitude;
      switch (b % 8) {  // hostile blocks among the random ones
        case 5: v = i == 3 ? NAN : v; break;
        case 6: v = i == 7 ? -INFINITY : v; break;
        case 7: v = (i % 2 ? -1.0f : 1.0f) * 1e-40f * static_cast<float>(i + 1); break;
        default: break;
      }
      x[16 * b + i] = v;
    }
    g[b] = globals[rng() % (sizeof globals / sizeof globals[0])];
  }
  kvtest::DeviceBytes dx(x.size() * 4), dg(g.size() * 4), dout(kBlocks * sizeof(kvcast::Nvfp4BlockCodes));
  ASSERT_TRUE(dx && dg && dout);
  KVTEST_CUDA(cudaMemcpy(dx.get(), x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dg.get(), g.data(), g.size() * 4, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(dout.get(), 0xA5, dout.size()));
  nvfp4_blocks<<<kBlocks / 256, 256>>>(reinterpret_cast<const float*>(dx.get()), reinterpret_cast<const float*>(dg.get()), kBlocks,
                                       reinterpret_cast<kvcast::Nvfp4BlockCodes*>(dout.get()));
  KVTEST_CUDA(cudaGetLastError());
  std::vector<kvcast::Nvfp4BlockCodes> got(kBlocks);
  KVTEST_CUDA(cudaMemcpy(got.data(), dout.get(), dout.size(), cudaMemcpyDeviceToHost));
  long long mismatches = 0;
  for (int b = 0; b < kBlocks; ++b) {
    float block[16];
    std::copy(x.begin() + 16 * b, x.begin() + 16 * b + 16, block);
    const kvcast::ref::Nvfp4Block want = kvcast::ref::nvfp4_quantize_block(block, g[b]);
    std::uint8_t bytes[8];
    std::memcpy(bytes, got[b].codes, sizeof bytes);
    if ((got[b].sf != want.sf || std::memcmp(bytes, want.codes, 8) != 0) && mismatches++ < 5)
      ADD_FAILURE() << "block " << b << " g " << g[b] << ": sf 0x" << std::hex << int{got[b].sf} << " want 0x" << int{want.sf};
  }
  EXPECT_EQ(mismatches, 0) << "of " << kBlocks << " blocks";
}

// ---- NVFP4's E2M1 codes by thresholds on the device (fp16 and bf16 inputs below sm_100). ----

namespace {
// Every 16-bit pattern, eight a thread, over divisors[blockIdx.y]: the device's thresholds and
// comparisons (HSET2), as the write computes them.
template <class T>
__global__ void codes_by_thresholds(const float* divisors, std::uint32_t* out) {
  const std::uint32_t group = blockIdx.x * blockDim.x + threadIdx.x;  // patterns 8 * group ..
  if (group >= 0x10000 / 8) return;
  const kvcast::detail::E2M1Thresholds th = kvcast::detail::e2m1_thresholds<T>(divisors[blockIdx.y]);
  std::uint32_t w[4];
  for (std::uint32_t i = 0; i < 4; ++i) w[i] = (8 * group + 2 * i) | (8 * group + 2 * i + 1) << 16;
  out[blockIdx.y * (0x10000 / 8) + group] = kvcast::detail::e2m1_codes_by_thresholds<T>(w, th);
}

template <class T>
void check_device_codes_by_thresholds() {
  const float globals[] = {1.0f, 1.0f / 3.0f, 0.7f, 0.0173f, 300.0f, 0x1p-31f, 0x1p40f / 448.0f, 0x1.fffffep-20f};
  std::vector<float> divisors;
  for (std::uint32_t sf = 1; sf < 0x7F; ++sf)
    for (float g : globals) {
      const float d = kvcast::fp8_to_float<kvcast::e4m3>(static_cast<std::uint8_t>(sf)) * g;
      if (kvcast::detail::scale_allows_fast_division(d)) divisors.push_back(d);
    }
  constexpr std::uint32_t kGroups = 0x10000 / 8;
  kvtest::DeviceBytes dd(divisors.size() * 4), dout(divisors.size() * kGroups * 4);
  ASSERT_TRUE(dd && dout);
  KVTEST_CUDA(cudaMemcpy(dd.get(), divisors.data(), divisors.size() * 4, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(dout.get(), 0xA5, dout.size()));
  codes_by_thresholds<T><<<dim3(kGroups / 256, static_cast<unsigned>(divisors.size())), 256>>>(
      reinterpret_cast<const float*>(dd.get()), reinterpret_cast<std::uint32_t*>(dout.get()));
  KVTEST_CUDA(cudaGetLastError());
  std::vector<std::uint32_t> got(divisors.size() * kGroups);
  KVTEST_CUDA(cudaMemcpy(got.data(), dout.get(), dout.size(), cudaMemcpyDeviceToHost));
  long long mismatches = 0, checked = 0;
  for (std::size_t d = 0; d < divisors.size(); ++d)
    for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
      const std::uint16_t b16 = static_cast<std::uint16_t>(bits);
      T t;
      std::memcpy(static_cast<void*>(&t), &b16, sizeof t);
      const float x = kvcast::to_float(t);
      if (x != x) continue;  // a NaN's block takes the out-of-line path
      ++checked;
      const std::uint32_t want = kvcast::float_to_e2m1(x / divisors[d]);
      const std::uint32_t code = got[d * kGroups + bits / 8] >> (4 * (bits % 8)) & 0xFu;
      if (code != want && mismatches++ < 5)
        ADD_FAILURE() << "bits 0x" << std::hex << bits << std::dec << " / " << divisors[d] << ": device 0x" << std::hex << code
                      << ", IEEE quotient's 0x" << want;
    }
  EXPECT_EQ(mismatches, 0) << "of " << checked;
}
}  // namespace

namespace {
// The split reciprocal of fp32 mode's 16-bit inputs (fp8.cuh, split_reciprocal) as the device
// builds it, from rcp.approx, for every significand at exponents across the fast range, both
// signs. Counts: [0] rcp.approx not one of the two floats around 1/b, [1] hi not RZ(1/b) or lo
// of another sign or zero, [2] |(hi + lo) b - 1| over 1.25 * 2^-45; [3] the worst, as bits.
__global__ void check_split_reciprocals(const int* exponents, unsigned long long* counts) {
  const std::uint32_t m = blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= (1u << 23)) return;
  const int e = exponents[blockIdx.y / 2];
  const float b = (blockIdx.y % 2 ? -1.0f : 1.0f) * ldexpf(__uint_as_float(0x3F800000u | m), e);
  const float y = kvcast::detail::rcp_approx_normal(b);
  const double yb = static_cast<double>(y) * b;  // exact: 48 bits
  const float toward = yb > 1.0 ? 0.0f : 2.0f * y;
  const bool faithful = yb == 1.0 || (yb > 1.0) != (static_cast<double>(nextafterf(y, toward)) * b > 1.0);
  const kvcast::detail::SplitReciprocal r = kvcast::detail::split_reciprocal(b);
  const double err = fabs((static_cast<double>(r.hi) + r.lo) * b - 1.0);
  const bool rz = static_cast<double>(r.hi) * b <= 1.0 && static_cast<double>(nextafterf(r.hi, 2.0f * r.hi)) * b > 1.0;
  if (!faithful) atomicAdd(&counts[0], 1ull);
  if (!rz || !(r.lo * r.hi > 0.0f)) atomicAdd(&counts[1], 1ull);
  if (err > 1.25 * 0x1p-45 + 0x1p-52) atomicAdd(&counts[2], 1ull);
  atomicMax(&counts[3], static_cast<unsigned long long>(__double_as_longlong(err)));
}

// fp32 mode's device Quantizer (a pair at a time, as the kernels' vectors) over every pattern of
// T: codes[(scale, format, pattern)].
template <class T>
__global__ void fp32_mode_codes(const float* scales, std::uint8_t* codes) {
  const std::uint32_t bits = blockIdx.x * blockDim.x + threadIdx.x;  // < 0x10000
  const float s = scales[blockIdx.y];
  kvcast::AlignedVector<T, 2> in;
  const std::uint16_t b16 = static_cast<std::uint16_t>(bits);
  memcpy(&in[0], &b16, 2);
  in[1] = in[0];
  const kvcast::Quantizer<T, kvcast::e4m3, Arithmetic::fp32> q4(s);
  const kvcast::Quantizer<T, kvcast::e5m2, Arithmetic::fp32> q5(s);
  codes[(blockIdx.y * 2 + 0) * 0x10000u + bits] = q4.template codes<2>(in)[0] & 0xFF;
  codes[(blockIdx.y * 2 + 1) * 0x10000u + bits] = q5.template codes<2>(in)[0] & 0xFF;
}

template <class T>
void check_fp32_mode_codes(const std::vector<float>& scales) {
  const std::size_t n = scales.size() * 2 * 0x10000u;
  kvtest::DeviceBytes ds(scales.size() * 4), dc(n);
  ASSERT_TRUE(ds && dc);
  KVTEST_CUDA(cudaMemcpy(ds.get(), scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(dc.get(), 0xA5, n));
  fp32_mode_codes<T><<<dim3(0x10000 / 256, static_cast<unsigned>(scales.size())), 256>>>(
      reinterpret_cast<const float*>(ds.get()), reinterpret_cast<std::uint8_t*>(dc.get()));
  KVTEST_CUDA(cudaGetLastError());
  std::vector<std::uint8_t> got(n);
  KVTEST_CUDA(cudaMemcpy(got.data(), dc.get(), n, cudaMemcpyDeviceToHost));
  const kvcast::DType dtype = kvcast::dtype_of<T>::value;
  long long mismatches = 0;
  for (std::size_t i = 0; i < scales.size(); ++i)
    for (std::uint32_t bits = 0; bits < 0x10000; ++bits)
      for (int f = 0; f < 2; ++f) {
        const unsigned want = f == 0 ? kvcast::ref::quantize<kvcast::e4m3, Arithmetic::fp32>(dtype, bits, scales[i])
                                     : kvcast::ref::quantize<kvcast::e5m2, Arithmetic::fp32>(dtype, bits, scales[i]);
        const unsigned code = got[(i * 2 + f) * 0x10000u + bits];
        if (code != want && mismatches++ < 5)
          ADD_FAILURE() << (f == 0 ? "E4M3" : "E5M2") << " bits 0x" << std::hex << bits << std::dec << " / " << scales[i]
                        << ": device 0x" << std::hex << code << ", reference 0x" << want;
      }
  EXPECT_EQ(mismatches, 0) << "of " << scales.size() * 2 * 0x10000;
}
}  // namespace

// The device's split reciprocal for every significand of the scale (the CPU test covers the
// host's, from RN(1/b)): rcp.approx is faithful, one step toward zero makes hi RZ(1/b), the
// host's hi, and hi + lo is within the bound that the proof in fp8.cuh takes.
TEST(SplitReciprocal, DeviceSplitIsWithinItsBoundForEverySignificand) {
  KVTEST_REQUIRE_GPU();
  const std::vector<int> exponents = {-40, -21, -7, -1, 0, 1, 13, 39};
  kvtest::DeviceBytes de(exponents.size() * 4), dc(4 * 8);
  ASSERT_TRUE(de && dc);
  KVTEST_CUDA(cudaMemcpy(de.get(), exponents.data(), exponents.size() * 4, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(dc.get(), 0, dc.size()));
  check_split_reciprocals<<<dim3((1u << 23) / 256, static_cast<unsigned>(2 * exponents.size())), 256>>>(
      reinterpret_cast<const int*>(de.get()), reinterpret_cast<unsigned long long*>(dc.get()));
  KVTEST_CUDA(cudaGetLastError());
  unsigned long long counts[4];
  KVTEST_CUDA(cudaMemcpy(counts, dc.get(), sizeof counts, cudaMemcpyDeviceToHost));
  double worst;
  std::memcpy(&worst, &counts[3], sizeof worst);
  std::printf("[ split ] device: %llu reciprocals; worst |(hi + lo) b - 1| = %.3f * 2^-45\n",
              static_cast<unsigned long long>(exponents.size()) * 2 * (1u << 23), worst * 0x1p45);
  EXPECT_EQ(counts[0], 0u) << "rcp.approx is not faithful for some significands";
  EXPECT_EQ(counts[1], 0u) << "hi not RZ(1/b), or lo not of hi's sign";
  EXPECT_EQ(counts[2], 0u) << "hi + lo outside 1.25 * 2^-45 of 1/b";
}

// fp32 mode on the device for every fp16 and bf16 input over typed, all-ones, edge and random
// scales of the fast range and outside it: the reference's codes (its IEEE quotient), both formats.
TEST(SplitReciprocal, DeviceFp32ModeEqualsTheReferenceForEverySixteenBitInput) {
  KVTEST_REQUIRE_GPU();
  std::vector<float> scales = {0.1f, 0.7f, 1.3f, 0.37f, 1.0f / 3, 3.0f, 5.0f, 0.0173f, 0.0229f, 0.5f, 1.0f, -0.7f,
                               0x1.fffffep-1f, 0x1.fffffep39f, 0x1.fffffep-41f, 0x1p-40f, 0x1p40f, 0x1.4p-40f,
                               1e-39f, 1e30f, 3e38f};
  std::mt19937 rng(1919);
  std::uniform_int_distribution<std::uint32_t> significand(0, (1u << 23) - 1);
  std::uniform_int_distribution<int> exponent(-40, 39);
  for (int i = 0; i < 40; ++i) scales.push_back(std::ldexp(1.0f + std::ldexp(static_cast<float>(significand(rng)), -23), exponent(rng)));
  check_fp32_mode_codes<__half>(scales);
  check_fp32_mode_codes<__nv_bfloat16>(scales);
}

// Every fp16 and bf16 input over every positive finite E4M3 block scale and several g: the
// device's codes by thresholds equal float_to_e2m1 of the IEEE quotient (the CPU test proves the
// same of the host's comparisons; this checks the device's HSET2 and its subnormal inputs).
TEST(E2M1Thresholds, DeviceEqualsTheIeeeQuotientsCodes) {
  KVTEST_REQUIRE_GPU();
  check_device_codes_by_thresholds<__half>();
  check_device_codes_by_thresholds<__nv_bfloat16>();
}
