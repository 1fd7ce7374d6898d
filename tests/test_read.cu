// GPU: the read (upcast) bit-exact against the host reference, outputs poisoned, over a grid of
// output types, formats, scale kinds, cache layouts, row sources (slots, page tables), strides
// and alignments; a seeded property test; graph replay with a changed scale; more than 2^31
// output elements; and the write-then-read round trip. Skipped, with the reason, without a GPU.
#include "read_harness.cuh"

#include <cstdlib>

namespace {

using kvtest::OutKind;
using kvtest::ReadCase;
using kvtest::RowSource;
using kvtest::ScaleOut;
using kvcast::ScaleKind;

template <class T>
void grid_for_type(RowSource rows) {
  const OutKind caches[] = {OutKind::contiguous, OutKind::flat_padded, OutKind::nhd, OutKind::hnd, OutKind::kv_interleaved};
  const ScaleKind kinds[] = {ScaleKind::per_tensor, ScaleKind::per_head, ScaleKind::per_token_head};
  struct Shape {
    std::int64_t tokens, heads, dim;
  };
  // 496 codes: 31 vectors of 16 in a group of 32 threads, whose last thread's second piece (8
  // codes, read_piece) lies past the row: each piece has its own bound. 576-code segments (one
  // head of 576, two apart, four fused heads of 144) take a warp each where their pieces fit.
  const Shape shapes[] = {{1, 8, 128}, {19, 8, 128}, {7, 2, 64}, {5, 1, 576}, {6, 3, 16}, {3, 1, 496}, {11, 2, 576}, {9, 4, 144}};
  std::uint64_t seed = 1;
  int row_warps = 0;
  for (OutKind cache : caches)
    for (ScaleKind kind : kinds)
      for (const Shape& s : shapes) {
        ReadCase c;
        c.tokens = s.tokens;
        c.heads = s.heads;
        c.head_dim = s.dim;
        c.cache = cache;
        c.block_size = 4;
        c.cache_head_pad = cache == OutKind::flat_padded ? 16 : 0;
        c.rows = rows;
        c.pad_fraction = rows == RowSource::page_table || rows == RowSource::none ? 0.0 : 0.2;
        c.bad_fraction = rows == RowSource::none ? 0.0 : 0.15;
        c.seq_starts = seed % 2 == 0;
        c.scale_kind = kind;
        c.scale_out = static_cast<ScaleOut>(seed % 3);
        c.device_scale = seed % 3 != 0;
        c.seed = seed++;
        row_warps += kvtest::check_read_case<T, kvcast::e4m3>(c).row_warp;
        c.seed = seed++;
        row_warps += kvtest::check_read_case<T, kvcast::e5m2>(c).row_warp;
        if (::testing::Test::HasFailure()) return;
      }
  // The row warp is reached in every cache layout and scale kind: the one-head and two-head
  // shapes are 60 cases (5 layouts, 3 kinds, 2 formats), the fused 4x144 a few more.
  std::printf("[ row warp ] %d of the grid's cases took the row-warp read\n", row_warps);
  EXPECT_GE(row_warps, 60) << "576-code segments left the row-warp read";
}

TEST(ReadGrid, SlotsBf16) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<__nv_bfloat16>(RowSource::i64);
}
TEST(ReadGrid, SlotsF16Int32) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<__half>(RowSource::i32);
}
TEST(ReadGrid, SlotsF32) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<float>(RowSource::i64);
}
TEST(ReadGrid, RowsAreTokensBf16) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<__nv_bfloat16>(RowSource::none);
}
TEST(ReadGrid, PageTableBf16) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<__nv_bfloat16>(RowSource::page_table);
}
TEST(ReadGrid, PageTableF32) {
  KVTEST_REQUIRE_GPU();
  grid_for_type<float>(RowSource::page_table);
}

// Strides, padding, misalignment and K/V in one workspace: the vector narrows, or the
// interleaved kernel takes over; odd head sizes; K or V alone; mult and offset.
TEST(ReadGrid, StridesAlignmentAndOddShapes) {
  KVTEST_REQUIRE_GPU();
  std::uint64_t seed = 100;
  for (std::int64_t dim : {1, 2, 3, 8, 99, 100, 128, 260, 576}) {
    for (int variant = 0; variant < 6; ++variant) {
      ReadCase c;
      c.tokens = 13;
      c.heads = 3;
      c.head_dim = dim;
      c.out_head_pad = variant == 1 ? 1 : variant == 2 ? 8 : 0;
      c.out_token_pad = variant == 3 ? 3 : 0;
      c.out_misalign = variant == 4 ? 1 : 0;
      c.cache_misalign = variant == 4 ? 3 : variant == 5 ? 4 : 0;
      c.kv_one_workspace = variant == 5;
      c.has_k = variant != 2;
      c.has_v = variant != 3;
      c.cache = variant % 2 == 0 ? OutKind::contiguous : OutKind::flat_padded;
      c.cache_head_pad = 5;
      c.scale_kind = static_cast<ScaleKind>(variant % 3);
      c.mult = variant == 1 ? 3 : 1;
      c.offset = variant == 1 ? -2 : variant == 3 ? 5 : 0;
      c.pad_fraction = 0.1;
      c.bad_fraction = 0.1;
      c.seed = seed++;
      const auto bf = kvtest::check_read_case<__nv_bfloat16, kvcast::e4m3>(c);
      const auto f32 = kvtest::check_read_case<float, kvcast::e5m2>(c);
      if (dim == 99 || variant == 4) {
        EXPECT_EQ(bf.access, 1) << c.describe();  // no vector fits
        EXPECT_EQ(f32.access, 1) << c.describe();
      }
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// A page size other than the cache's block size, page tables with bad entries, tables too short.
TEST(ReadGrid, PageSizesAndBadTables) {
  KVTEST_REQUIRE_GPU();
  std::uint64_t seed = 300;
  for (std::int64_t page : {1, 2, 16})
    for (OutKind cache : {OutKind::contiguous, OutKind::nhd, OutKind::hnd}) {
      ReadCase c;
      c.rows = RowSource::page_table;
      c.heads = 2;
      c.head_dim = 64;
      c.cache = cache;
      c.block_size = 16;
      c.page_size = page;
      c.batch = 9;
      c.seq_starts = true;
      c.bad_fraction = 0.3;
      c.scale_kind = ScaleKind::per_token_head;
      c.scale_out = ScaleOut::paged;
      c.seed = seed++;
      kvtest::check_read_case<__half, kvcast::e4m3>(c);
      if (::testing::Test::HasFailure()) return;
    }
}

// Many sequences, many of them empty or of one token, after output tokens in no sequence: the
// warp's 32-way search of cu_seq_lens over one, two and three rounds (33, 100 and 1500
// sequences), and its lanes' steps forward across sequence ends.
TEST(ReadGrid, ManySequences) {
  KVTEST_REQUIRE_GPU();
  std::uint64_t seed = 400;
  // 31 sequences are one round of the warp's 32-way search, 33 .. 1024 two, 1500 and 20000 three.
  for (std::int64_t batch : {31, 33, 100, 128, 129, 1500, 20000})
    for (std::int64_t max_len : {2, 40}) {
      if (batch == 20000 && max_len == 40) continue;  // 400k tokens: the host reference's time
      ReadCase c;
      c.rows = RowSource::page_table;
      c.heads = 2;
      c.head_dim = max_len == 2 ? 16 : 128;  // groups of one thread (a warp spans many tokens) or of 8
      c.cache = OutKind::nhd;
      c.block_size = 4;
      c.batch = batch;
      c.first_token = 3;
      c.max_seq_len = max_len;
      c.seq_starts = batch % 2 == 1;
      c.bad_fraction = 0.05;
      c.seed = seed++;
      kvtest::check_read_case<__nv_bfloat16, kvcast::e4m3>(c);
      if (::testing::Test::HasFailure()) return;
    }
}

// Random draws of everything above (seeded: a failure names its trial). KVCAST_PROPERTY_CASES=<n>
// sets the count (the sanitizer runs take fewer).
TEST(ReadProperty, SeededRandomCases) {
  KVTEST_REQUIRE_GPU();
  const char* count_env = std::getenv("KVCAST_PROPERTY_CASES");
  const int cases = count_env ? std::atoi(count_env) : 600;
  std::mt19937_64 rng(2026);
  for (int trial = 0; trial < cases; ++trial) {
    ReadCase c;
    c.tokens = 1 + static_cast<std::int64_t>(rng() % 70);
    c.heads = 1 + static_cast<std::int64_t>(rng() % 5);
    const std::int64_t dims[] = {1, 4, 16, 32, 64, 80, 96, 100, 128, 192, 256, 576};
    c.head_dim = dims[rng() % (sizeof dims / sizeof dims[0])];
    c.cache = static_cast<OutKind>(rng() % 5);
    c.block_size = 1 + static_cast<std::int64_t>(rng() % 16);
    c.cache_head_pad = static_cast<std::int64_t>(rng() % 20);
    c.cache_misalign = rng() % 4 == 0 ? static_cast<std::int64_t>(rng() % 16) : 0;
    c.rows = static_cast<RowSource>(rng() % 4);
    c.pad_fraction = (rng() % 4) * 0.1;
    c.bad_fraction = (rng() % 3) * 0.1;
    c.mult = rng() % 4 == 0 ? 1 + static_cast<std::int64_t>(rng() % 3) : 1;
    c.offset = rng() % 4 == 0 ? static_cast<std::int64_t>(rng() % 7) - 3 : 0;
    c.batch = static_cast<std::int64_t>(rng() % 8);
    c.seq_starts = rng() % 2 == 0;
    c.page_size = rng() % 3 == 0 ? 1 + static_cast<std::int64_t>(rng() % 8) : 0;
    c.out_head_pad = rng() % 3 == 0 ? static_cast<std::int64_t>(rng() % 9) : 0;
    c.out_token_pad = rng() % 3 == 0 ? static_cast<std::int64_t>(rng() % 9) : 0;
    c.out_misalign = rng() % 5 == 0 ? static_cast<std::int64_t>(rng() % 8) : 0;
    c.kv_one_workspace = rng() % 5 == 0;
    c.scale_kind = static_cast<ScaleKind>(rng() % 3);
    c.device_scale = rng() % 2 == 0;
    c.scale_out = static_cast<ScaleOut>(rng() % 3);
    c.has_k = rng() % 6 != 0;
    c.has_v = !c.has_k || rng() % 6 != 0;
    c.seed = rng();
    switch (rng() % 6) {
      case 0: kvtest::check_read_case<__nv_bfloat16, kvcast::e4m3>(c); break;
      case 1: kvtest::check_read_case<__nv_bfloat16, kvcast::e5m2>(c); break;
      case 2: kvtest::check_read_case<__half, kvcast::e4m3>(c); break;
      case 3: kvtest::check_read_case<__half, kvcast::e5m2>(c); break;
      case 4: kvtest::check_read_case<float, kvcast::e4m3>(c); break;
      default: kvtest::check_read_case<float, kvcast::e5m2>(c); break;
    }
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "trial " << trial;
      return;
    }
  }
}

// A CUDA graph captures the read once; it replays with the scales and codes in device memory
// at replay time: a changed per-tensor scale, a changed per-head scale.
TEST(ReadGraph, ReplaysWithAChangedScale) {
  KVTEST_REQUIRE_GPU();
  using T = __nv_bfloat16;
  constexpr std::int64_t N = 33, H = 4, D = 128, R = 64;
  std::mt19937_64 rng(5);
  std::vector<std::uint8_t> cache(R * H * D);
  for (auto& b : cache) b = static_cast<std::uint8_t>(rng());
  std::vector<std::int64_t> loc(N);
  for (std::int64_t t = 0; t < N; ++t) loc[t] = t % 5 == 4 ? -1 : static_cast<std::int64_t>(rng() % R);
  kvtest::DeviceBytes d_cache(cache.size()), d_out(N * H * D * sizeof(T)), d_loc(N * 8), d_scale(4 * (1 + H));
  ASSERT_TRUE(d_cache && d_out && d_loc && d_scale);
  KVTEST_CUDA(cudaMemcpy(d_cache.get(), cache.data(), cache.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(d_loc.get(), loc.data(), N * 8, cudaMemcpyHostToDevice));
  for (ScaleKind kind : {ScaleKind::per_tensor, ScaleKind::per_head}) {
    kvcast::UpcastArgs<T> a;
    a.k_cache = d_cache.get();
    a.cache_rows = R;
    a.k = reinterpret_cast<T*>(d_out.get());
    a.num_tokens = N;
    a.heads = H;
    a.head_dim = D;
    a.loc = reinterpret_cast<const std::int64_t*>(d_loc.get());
    a.scale_kind = kind;
    float* scale = reinterpret_cast<float*>(d_scale.get());
    if (kind == ScaleKind::per_tensor) a.k_scale = kvcast::Scale::in_device_memory(scale);
    else a.k_head_scales = scale + 1;
    cudaStream_t stream;
    KVTEST_CUDA(cudaStreamCreate(&stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    KVTEST_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const kvcast::Status s = kvcast::upcast<kvcast::e4m3>(a, stream);
    KVTEST_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_TRUE(s.ok()) << s.message();
    KVTEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (float value : {0.5f, 3.25f, 1e-3f}) {
      std::vector<float> scales(1 + H);
      for (std::int64_t i = 0; i <= H; ++i) scales[i] = value * (1.0f + 0.25f * static_cast<float>(i));
      KVTEST_CUDA(cudaMemcpy(scale, scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
      KVTEST_CUDA(cudaMemset(d_out.get(), 0xA5, d_out.size()));
      KVTEST_CUDA(cudaGraphLaunch(exec, stream));
      KVTEST_CUDA(cudaStreamSynchronize(stream));
      std::vector<std::uint8_t> got(d_out.size()), want(d_out.size(), 0xA5);
      KVTEST_CUDA(cudaMemcpy(got.data(), d_out.get(), got.size(), cudaMemcpyDeviceToHost));
      kvcast::UpcastArgs<T> h = a;
      h.k_cache = cache.data();
      h.k = reinterpret_cast<T*>(want.data());
      h.loc = loc.data();
      if (kind == ScaleKind::per_tensor) h.k_scale = kvcast::Scale::in_device_memory(scales.data());
      else h.k_head_scales = scales.data() + 1;
      ASSERT_TRUE(kvcast::ref::upcast<kvcast::e4m3>(h).ok());
      EXPECT_EQ(got, want) << "scale kind " << kvcast::to_string(kind) << ", scale " << value;
    }
    KVTEST_CUDA(cudaGraphExecDestroy(exec));
    KVTEST_CUDA(cudaGraphDestroy(graph));
    KVTEST_CUDA(cudaStreamDestroy(stream));
  }
}

// More than 2^31 output elements (64-bit offsets all the way): 2^19 + 3 tokens of one 4096-wide
// head, gathered in reverse; tokens checked against the reference at the ends and at random.
TEST(ReadLarge, MoreThan2Pow31OutputElements) {
  KVTEST_REQUIRE_GPU();
  using T = __nv_bfloat16;
  constexpr std::int64_t N = (std::int64_t{1} << 19) + 3, D = 4096;
  static_assert(N * D > (std::int64_t{1} << 31), "the case must pass 2^31 elements");
  std::size_t free_bytes = 0, total = 0;
  KVTEST_CUDA(cudaMemGetInfo(&free_bytes, &total));
  const std::size_t need = static_cast<std::size_t>(N * D) * (1 + sizeof(T)) + static_cast<std::size_t>(N) * 8;
  if (free_bytes < need + (std::size_t{1} << 30)) GTEST_SKIP() << "needs " << need / (1 << 20) << " MiB of device memory";
  kvtest::DeviceBytes d_cache(static_cast<std::size_t>(N * D)), d_out(static_cast<std::size_t>(N * D) * sizeof(T)),
      d_loc(static_cast<std::size_t>(N) * 8), d_errors(8);
  ASSERT_TRUE(d_cache && d_out && d_loc && d_errors);
  // Row r holds codes that depend on r and the column: (r * 7 + d) & 0xFF, built on the device.
  std::vector<std::uint8_t> row(D);
  std::vector<std::int64_t> loc(N);
  for (std::int64_t t = 0; t < N; ++t) loc[t] = N - 1 - t;
  KVTEST_CUDA(cudaMemcpy(d_loc.get(), loc.data(), N * 8, cudaMemcpyHostToDevice));
  const auto row_codes = [&](std::int64_t r) {
    for (std::int64_t d = 0; d < D; ++d) row[d] = static_cast<std::uint8_t>((r * 7 + d) & 0xFF);
    return row;
  };
  // The cache is built a row at a time from a repeating pattern: rows r and r + 256 are equal.
  std::vector<std::uint8_t> pattern(256 * D);
  for (std::int64_t r = 0; r < 256; ++r) {
    const auto codes = row_codes(r);
    std::memcpy(pattern.data() + r * D, codes.data(), D);
  }
  for (std::int64_t r = 0; r < N; r += 256) {
    const std::int64_t n = std::min<std::int64_t>(256, N - r);
    KVTEST_CUDA(cudaMemcpy(d_cache.get() + r * D, pattern.data(), static_cast<std::size_t>(n * D), cudaMemcpyHostToDevice));
  }
  KVTEST_CUDA(cudaMemset(d_out.get(), 0xA5, d_out.size()));
  KVTEST_CUDA(cudaMemset(d_errors.get(), 0, 8));
  kvcast::UpcastArgs<T> a;
  a.k_cache = d_cache.get();
  a.cache_rows = N;
  a.k = reinterpret_cast<T*>(d_out.get());
  a.num_tokens = N;
  a.heads = 1;
  a.head_dim = D;
  a.loc = reinterpret_cast<const std::int64_t*>(d_loc.get());
  a.error_count = reinterpret_cast<unsigned long long*>(d_errors.get());
  a.k_scale = kvcast::Scale::host_value(0.75f);
  const kvcast::Status s = kvcast::upcast_checked<kvcast::e4m3>(a);
  ASSERT_TRUE(s.ok()) << s.message();
  std::mt19937_64 rng(9);
  std::vector<std::int64_t> tokens = {0, 1, N / 2, N - 2, N - 1};
  for (int i = 0; i < 64; ++i) tokens.push_back(static_cast<std::int64_t>(rng() % N));
  std::vector<std::uint8_t> got(D * sizeof(T)), want(D * sizeof(T));
  for (std::int64_t t : tokens) {
    KVTEST_CUDA(cudaMemcpy(got.data(), d_out.get() + t * D * sizeof(T), got.size(), cudaMemcpyDeviceToHost));
    const auto codes = row_codes((N - 1 - t) % 256);
    for (std::int64_t d = 0; d < D; ++d) {
      const std::uint32_t bits = kvcast::ref::dequantize<kvcast::e4m3>(kvcast::DType::bf16, codes[d], 0.75f);
      std::memcpy(want.data() + d * sizeof(T), &bits, sizeof(T));
    }
    ASSERT_EQ(got, want) << "token " << t;
  }
}

// Write (downcast) then read (upcast), both on the device: the result is the reference's
// write-then-read, which the CPU tests prove equal to quantize-then-dequantize (the oracle),
// over scale kinds, formats, cache layouts and types (in = out type).
template <class T, class Format>
void device_round_trip(std::mt19937_64& rng) {
  const std::int64_t N = 1 + static_cast<std::int64_t>(rng() % 40), H = 1 + static_cast<std::int64_t>(rng() % 4);
  const std::int64_t dims[] = {16, 64, 100, 128, 576};
  const std::int64_t D = dims[rng() % 5];
  const ScaleKind kind = static_cast<ScaleKind>(rng() % 3);
  const std::int64_t B = 8, rows = (N + 5 + B - 1) / B * B;
  kvcast::OutputLayout layout = kvcast::OutputLayout::contiguous(H, D);
  if (rng() % 3 == 1) layout = kvcast::OutputLayout::paged_nhd(B, H, D);
  if (rng() % 3 == 2) layout = kvcast::OutputLayout::paged_hnd(B, H, D);
  std::vector<T> in(static_cast<std::size_t>(N * H * D));
  std::normal_distribution<float> normal(0.0f, 20.0f);
  for (auto& x : in) {
    const std::uint32_t b = kvtest::bits_of<T>(normal(rng));
    std::memcpy(static_cast<void*>(&x), &b, sizeof(T));
  }
  std::vector<std::int64_t> slots(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i) slots[i] = i;
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(static_cast<std::size_t>(N));
  std::vector<float> head_scales(static_cast<std::size_t>(H));
  std::uniform_real_distribution<float> dist(0.05f, 2.0f);
  for (float& s : head_scales) s = dist(rng);
  const float tensor_scale = dist(rng);
  const std::size_t cache_bytes = static_cast<std::size_t>(layout.address(rows - 1, H - 1) + D + layout.block_stride);

  kvtest::DeviceBytes d_in(in.size() * sizeof(T)), d_cache(cache_bytes), d_loc(slots.size() * 8), d_heads(4 * H),
      d_tokens(static_cast<std::size_t>(4 * rows * H)), d_back(in.size() * sizeof(T));
  ASSERT_TRUE(d_in && d_cache && d_loc && d_heads && d_tokens && d_back);
  KVTEST_CUDA(cudaMemcpy(d_in.get(), in.data(), d_in.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(d_loc.get(), slots.data(), d_loc.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(d_heads.get(), head_scales.data(), d_heads.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(d_cache.get(), 0, cache_bytes));
  KVTEST_CUDA(cudaMemset(d_tokens.get(), 0, d_tokens.size()));
  KVTEST_CUDA(cudaMemset(d_back.get(), 0xA5, d_back.size()));

  const auto make = [&](const T* x, std::uint8_t* cache, const std::int64_t* loc, const float* heads, float* tokens, T* back) {
    kvcast::DowncastArgs<T> w;
    w.k = x;
    w.k_out = cache;
    w.out = layout;
    w.num_tokens = N;
    w.heads = H;
    w.head_dim = D;
    w.loc = loc;
    w.out_rows = rows;
    w.scale_kind = kind;
    if (kind == ScaleKind::per_tensor) w.k_scale = kvcast::Scale::host_value(tensor_scale);
    if (kind == ScaleKind::per_head) w.k_head_scales = heads;
    if (kind == ScaleKind::per_token_head) w.k_scales_out = tokens;
    kvcast::UpcastArgs<T> r;
    r.k_cache = cache;
    r.cache = layout;
    r.cache_rows = rows;
    r.k = back;
    r.num_tokens = N;
    r.heads = H;
    r.head_dim = D;
    r.loc = loc;
    r.scale_kind = kind;
    if (kind == ScaleKind::per_tensor) r.k_scale = kvcast::Scale::host_value(tensor_scale);
    if (kind == ScaleKind::per_head) r.k_head_scales = heads;
    if (kind == ScaleKind::per_token_head) r.k_scales = tokens;
    return std::make_pair(w, r);
  };
  const auto dev = make(reinterpret_cast<const T*>(d_in.get()), d_cache.get(), reinterpret_cast<const std::int64_t*>(d_loc.get()),
                        reinterpret_cast<const float*>(d_heads.get()), reinterpret_cast<float*>(d_tokens.get()),
                        reinterpret_cast<T*>(d_back.get()));
  const kvcast::Status wrote = kvcast::downcast<Format, kvcast::Arithmetic::fp32>(dev.first);
  ASSERT_TRUE(wrote.ok()) << wrote.message();
  const kvcast::Status read = kvcast::upcast<Format>(dev.second);
  ASSERT_TRUE(read.ok()) << read.message();
  std::vector<std::uint8_t> got(d_back.size());
  KVTEST_CUDA(cudaMemcpy(got.data(), d_back.get(), got.size(), cudaMemcpyDeviceToHost));

  std::vector<std::uint8_t> cache(cache_bytes, 0), want(got.size(), 0xA5);
  std::vector<float> tokens(static_cast<std::size_t>(rows * H), 0.0f);
  const auto host = make(in.data(), cache.data(), slots.data(), head_scales.data(), tokens.data(), reinterpret_cast<T*>(want.data()));
  ASSERT_TRUE((kvcast::ref::downcast<Format, kvcast::Arithmetic::fp32>(host.first).ok()));
  ASSERT_TRUE(kvcast::ref::upcast<Format>(host.second).ok());
  ASSERT_EQ(got, want) << "N/H/D " << N << "/" << H << "/" << D << " kind " << kvcast::to_string(kind);
}

TEST(ReadRoundTrip, WriteThenReadIsQuantizeThenDequantize) {
  KVTEST_REQUIRE_GPU();
  std::mt19937_64 rng(77);
  for (int trial = 0; trial < 60; ++trial) {
    device_round_trip<__nv_bfloat16, kvcast::e4m3>(rng);
    device_round_trip<__half, kvcast::e5m2>(rng);
    device_round_trip<float, kvcast::e4m3>(rng);
    device_round_trip<__nv_bfloat16, kvcast::e5m2>(rng);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
