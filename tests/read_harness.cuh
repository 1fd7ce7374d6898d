// kvcast tests — the read's GPU harness: one runner that builds a cache (random codes, every
// byte pattern included), its scales and its row source (slots or a page table), runs the read
// on the device and in the host reference with poisoned outputs, and compares every byte.
#pragma once

#include "gpu_harness.cuh"

namespace kvtest {

enum class RowSource { none, i64, i32, page_table };

inline const char* name_of(RowSource r) {
  switch (r) {
    case RowSource::none: return "rows=tokens";
    case RowSource::i64: return "loc=int64";
    case RowSource::i32: return "loc=int32";
    case RowSource::page_table: return "page_table";
  }
  return "?";
}

// One read to check. Sizes in elements of their own tensor.
struct ReadCase {
  std::int64_t tokens = 16, heads = 8, head_dim = 128;  // tokens: the page table's own count wins
  OutKind cache = OutKind::contiguous;
  std::int64_t block_size = 16;
  std::int64_t cache_head_pad = 0;  // flat_padded: extra bytes after each head / row
  std::int64_t cache_misalign = 0;  // bytes
  RowSource rows = RowSource::i64;
  double pad_fraction = 0.0;  // slots: negative ones
  double bad_fraction = 0.0;  // slots: rows past the cache; page table: bad entries
  std::int64_t mult = 1, offset = 0;
  std::int64_t batch = 3;     // page table: sequences
  bool seq_starts = false;    // page table: read each sequence from a later token
  std::int64_t first_token = 0;  // page table: cu_seq_lens[0] (the output tokens before it are in no sequence)
  std::int64_t max_seq_len = -1; // page table: sequences of 0 .. this many tokens (-1: 2 pages + 2)
  std::int64_t page_size = 0; // page table: 0 is the cache's block size (4 for flat caches)
  std::int64_t out_head_pad = 0, out_token_pad = 0, out_misalign = 0;  // elements of T
  bool kv_one_workspace = false;  // K and V interleaved token by token in one output buffer
  kvcast::ScaleKind scale_kind = kvcast::ScaleKind::per_tensor;
  bool device_scale = true;
  ScaleOut scale_out = ScaleOut::separate;  // per_token_head
  bool has_k = true, has_v = true;
  float k_scale = 0.37f, v_scale = 1.7f;
  std::uint64_t seed = 1;

  std::string describe() const {
    std::ostringstream s;
    s << "tokens=" << tokens << " heads=" << heads << " head_dim=" << head_dim << " cache=" << name_of(cache)
      << " B=" << block_size << " cache_pad=" << cache_head_pad << " cache_misalign=" << cache_misalign << " " << name_of(rows)
      << " pad=" << pad_fraction << " bad=" << bad_fraction << " mult=" << mult << " offset=" << offset << " batch=" << batch
      << " seq_starts=" << seq_starts << " first_token=" << first_token << " max_seq_len=" << max_seq_len << " page_size=" << page_size << " out_pad=" << out_head_pad << "/" << out_token_pad
      << " out_misalign=" << out_misalign << " one_workspace=" << kv_one_workspace
      << " kind=" << kvcast::to_string(scale_kind) << " device_scale=" << device_scale
      << " scale_out=" << static_cast<int>(scale_out) << " k=" << has_k << " v=" << has_v << " scales=" << k_scale << "/" << v_scale
      << " seed=" << seed;
    return s.str();
  }
};

struct ReadOutcome {
  bool ran = false;
  int vec = 0;     // elements a thread
  int access = 0;  // elements an access (1: interleaved)
  bool row_warp = false;  // read_row_warp_kernel: a warp a 576-code segment
  std::int64_t tokens = 0;
  long long mismatches = 0;
  unsigned long long device_errors = 0, reference_errors = 0;
  std::string first_mismatch;
};

// Runs `c` on the device and in the reference, the outputs' allocations (margins included)
// poisoned with `poison` bytes first, then compared byte for byte.
template <class T, class Format>
ReadOutcome run_read_case(const ReadCase& c, std::uint8_t poison) {
  ReadOutcome result;
  std::mt19937_64 rng(c.seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::int64_t H = c.heads, D = c.head_dim;
  const bool paged_cache = c.cache == OutKind::nhd || c.cache == OutKind::hnd || c.cache == OutKind::kv_interleaved;
  const std::int64_t B = paged_cache ? c.block_size : 1;

  // Rows: slots (distinct, some padding, some out of range) or a page table.
  std::int64_t N = c.tokens, cache_rows = 0;
  std::vector<std::int64_t> loc64;
  std::vector<std::int32_t> block_table, cu_seq_lens, seq_starts;
  std::int64_t page = 0, max_pages = 0;
  if (c.rows != RowSource::page_table) {
    const std::int64_t in_range_slots = std::max<std::int64_t>(N + N / 2 + 3, 4);
    cache_rows = in_range_slots * c.mult + std::max<std::int64_t>(c.offset, 0) + 2;
    cache_rows = (cache_rows + B - 1) / B * B;
    std::vector<std::int64_t> slots(static_cast<std::size_t>(in_range_slots));
    for (std::int64_t i = 0; i < in_range_slots; ++i) slots[i] = i + (c.offset < 0 ? (-c.offset + c.mult - 1) / c.mult : 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    loc64.resize(static_cast<std::size_t>(N));
    for (std::int64_t t = 0; t < N; ++t) {
      loc64[t] = slots[t % in_range_slots];
      const double r = u(rng);
      if (r < c.pad_fraction) loc64[t] = -1 - static_cast<std::int64_t>(rng() % 5);
      else if (r < c.pad_fraction + c.bad_fraction) loc64[t] = (cache_rows - c.offset + c.mult - 1) / c.mult + static_cast<std::int64_t>(rng() % 7);
    }
  } else {
    page = c.page_size != 0 ? c.page_size : (paged_cache ? B : 4);
    const std::int64_t pages = 3 + static_cast<std::int64_t>(rng() % 6);
    cache_rows = pages * page;
    std::int64_t longest = 0;
    cu_seq_lens.push_back(static_cast<std::int32_t>(c.first_token));
    const std::int64_t max_len = c.max_seq_len >= 0 ? c.max_seq_len : 2 * page + 2;
    for (std::int64_t b = 0; b < c.batch; ++b) {
      const std::int64_t len = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(max_len + 1));  // 0 included
      const std::int64_t start = c.seq_starts ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(page + 2)) : 0;
      seq_starts.push_back(static_cast<std::int32_t>(start));
      cu_seq_lens.push_back(cu_seq_lens.back() + static_cast<std::int32_t>(len));
      longest = std::max(longest, start + len);
    }
    // Most sequences fit their table; a bad fraction reaches past it or holds bad entries.
    max_pages = std::max<std::int64_t>((longest + page - 1) / page - (c.bad_fraction > 0 ? 1 : 0), 1);
    for (std::int64_t i = 0; i < c.batch * max_pages; ++i) {
      std::int32_t entry = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(pages));
      const double r = u(rng);
      if (r < c.bad_fraction / 2) entry = -1 - static_cast<std::int32_t>(rng() % 3);
      else if (r < c.bad_fraction) entry = static_cast<std::int32_t>(pages + static_cast<std::int64_t>(rng() % 3));
      block_table.push_back(entry);
    }
    N = cu_seq_lens.back() + 2;  // two tokens past the last sequence: read nothing
  }
  result.tokens = N;
  std::vector<std::int32_t> loc32(loc64.begin(), loc64.end());

  // The cache's layout, per-(token, head) scales beside or inside it, and its bytes.
  const bool per_token_head = c.scale_kind == kvcast::ScaleKind::per_token_head;
  const CachePlacement placed = place_cache(c.cache, B, H, D, c.cache_head_pad, c.cache_misalign, per_token_head, c.scale_out);
  const kvcast::OutputLayout& layout = placed.codes;
  const kvcast::OutputLayout& scale_layout = placed.scales;
  const std::int64_t v_shift = placed.v_shift, inline_at = placed.inline_at;
  const bool inline_scales = placed.inline_scales;
  const std::int64_t margin = 64;
  // Whole pages: a page table's page need not be the layout's, so the last page may be partial,
  // and scales inside pages sit after its codes.
  const std::int64_t cache_span =
      std::max(layout.address(cache_rows - 1, H - 1) + D, (cache_rows + B - 1) / B * layout.block_stride) + v_shift;
  const std::int64_t cache_bytes = margin + c.cache_misalign + cache_span + margin;
  const bool shared_cache = c.cache == OutKind::kv_interleaved;
  std::vector<std::uint8_t> k_cache(static_cast<std::size_t>(cache_bytes)), v_cache(shared_cache ? 0 : static_cast<std::size_t>(cache_bytes));
  for (auto& b : k_cache) b = static_cast<std::uint8_t>(rng());
  for (auto& b : v_cache) b = static_cast<std::uint8_t>(rng());
  std::uint8_t* const k_cache_at = k_cache.data() + margin + c.cache_misalign;
  std::uint8_t* const v_cache_at = shared_cache ? k_cache_at + v_shift : v_cache.data() + margin + c.cache_misalign;
  // Scales: per-tensor pair, per-head arrays, per-(token, head) floats (separate tensors, or
  // inside the cache's pages, written over its random bytes).
  std::uniform_real_distribution<float> scale_dist(0.02f, 3.0f);
  std::vector<float> head_scales(static_cast<std::size_t>(2 * H));
  for (float& x : head_scales) x = scale_dist(rng);
  const std::int64_t scale_span = inline_scales ? 0 : scale_layout.address(cache_rows - 1, H - 1) + 1 + scale_layout.block_stride;
  std::vector<float> k_token_scales(static_cast<std::size_t>(scale_span)), v_token_scales(k_token_scales.size());
  std::lognormal_distribution<float> token_scale_dist(-2.0f, 2.0f);
  if (per_token_head)
    for (std::int64_t r = 0; r < cache_rows; ++r)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t at = scale_layout.address(r, h);
        const float ks = token_scale_dist(rng), vs = token_scale_dist(rng);
        if (inline_scales) {
          std::memcpy(k_cache_at + inline_at + 4 * at, &ks, 4);
          std::memcpy(v_cache_at + inline_at + 4 * at, &vs, 4);
        } else {
          k_token_scales[static_cast<std::size_t>(at)] = ks;
          v_token_scales[static_cast<std::size_t>(at)] = vs;
        }
      }

  // Outputs: [N, H, D] of T with padded strides, or K and V token by token in one workspace.
  const std::int64_t out_head_stride = D + c.out_head_pad;
  const std::int64_t tensor_token = H * out_head_stride + c.out_token_pad;
  const std::int64_t out_token_stride = c.kv_one_workspace ? 2 * tensor_token : tensor_token;
  const std::int64_t out_elems = 2 * margin + c.out_misalign + std::max<std::int64_t>(N, 1) * out_token_stride;
  const std::size_t out_bytes = static_cast<std::size_t>(out_elems) * sizeof(T);

  // Device side.
  DeviceBytes d_kc(k_cache.size()), d_vc(v_cache.size()), d_k(out_bytes), d_v(c.kv_one_workspace ? 0 : out_bytes);
  DeviceBytes d_loc(static_cast<std::size_t>(std::max<std::int64_t>(N, 1)) * 8), d_scales(8), d_errors(8),
      d_head_scales(head_scales.size() * 4), d_kts(k_token_scales.size() * 4), d_vts(v_token_scales.size() * 4),
      d_table(block_table.size() * 4 + 4), d_cu(cu_seq_lens.size() * 4 + 4), d_starts(seq_starts.size() * 4 + 4);
  if (!d_kc || !d_vc || !d_k || !d_v || !d_loc || !d_scales || !d_errors || !d_head_scales || !d_kts || !d_vts || !d_table || !d_cu ||
      !d_starts) {
    ADD_FAILURE() << "cudaMalloc failed";
    return result;
  }
  auto copy_in = [](const DeviceBytes& dst, const void* src, std::size_t n) {
    if (n > 0) EXPECT_EQ(cudaMemcpy(dst.get(), src, n, cudaMemcpyHostToDevice), cudaSuccess);
  };
  copy_in(d_kc, k_cache.data(), k_cache.size());
  copy_in(d_vc, v_cache.data(), v_cache.size());
  if (c.rows == RowSource::i64) copy_in(d_loc, loc64.data(), loc64.size() * 8);
  if (c.rows == RowSource::i32) copy_in(d_loc, loc32.data(), loc32.size() * 4);
  const float scales[2] = {c.k_scale, c.v_scale};
  copy_in(d_scales, scales, sizeof scales);
  copy_in(d_head_scales, head_scales.data(), head_scales.size() * 4);
  copy_in(d_kts, k_token_scales.data(), k_token_scales.size() * 4);
  copy_in(d_vts, v_token_scales.data(), v_token_scales.size() * 4);
  copy_in(d_table, block_table.data(), block_table.size() * 4);
  copy_in(d_cu, cu_seq_lens.data(), cu_seq_lens.size() * 4);
  copy_in(d_starts, seq_starts.data(), seq_starts.size() * 4);
  EXPECT_EQ(cudaMemset(d_k.get(), poison, d_k.size()), cudaSuccess);
  if (d_v.size() > 0) EXPECT_EQ(cudaMemset(d_v.get(), poison, d_v.size()), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_errors.get(), 0, 8), cudaSuccess);

  // One argument struct, filled for the device, then for the host reference.
  struct Side {
    const std::uint8_t* k_cache;  // the allocations' starts
    const std::uint8_t* v_cache;
    std::uint8_t* k;
    std::uint8_t* v;
    const void* loc;
    const float* scales;
    const float* head_scales;
    const float* k_token_scales;
    const float* v_token_scales;
    const std::int32_t* block_table;
    const std::int32_t* cu;
    const std::int32_t* starts;
    unsigned long long* errors;
  };
  auto fill_args = [&](const Side& s) {
    kvcast::UpcastArgs<T> a;
    const std::uint8_t* kc = s.k_cache + margin + c.cache_misalign;
    const std::uint8_t* vc = shared_cache ? kc + v_shift : s.v_cache + margin + c.cache_misalign;
    a.k_cache = c.has_k ? kc : nullptr;
    a.v_cache = c.has_v ? vc : nullptr;
    a.cache = layout;
    a.cache_rows = cache_rows;
    T* k = reinterpret_cast<T*>(s.k) + margin + c.out_misalign;
    T* v = c.kv_one_workspace ? k + tensor_token : reinterpret_cast<T*>(s.v) + margin + c.out_misalign;
    a.k = c.has_k ? k : nullptr;
    a.v = c.has_v ? v : nullptr;
    a.num_tokens = N;
    a.heads = H;
    a.head_dim = D;
    a.out_head_stride = out_head_stride;
    a.out_token_stride = out_token_stride;
    if (c.rows == RowSource::i64) a.loc = static_cast<const std::int64_t*>(s.loc);
    if (c.rows == RowSource::i32) a.loc = static_cast<const std::int32_t*>(s.loc);
    if (c.rows != RowSource::page_table) {
      a.mult = c.mult;
      a.offset = c.offset;
    } else {
      a.block_table = s.block_table;
      a.batch = c.batch;
      a.max_pages = max_pages;
      a.cu_seq_lens = s.cu;
      a.seq_starts = c.seq_starts ? s.starts : nullptr;
      a.page_size = page;
    }
    a.error_count = s.errors;
    a.scale_kind = c.scale_kind;
    if (c.scale_kind == kvcast::ScaleKind::per_tensor) {
      a.k_scale = c.device_scale ? kvcast::Scale::in_device_memory(s.scales) : kvcast::Scale::host_value(c.k_scale);
      a.v_scale = c.device_scale ? kvcast::Scale::in_device_memory(s.scales + 1) : kvcast::Scale::host_value(c.v_scale);
    }
    if (c.scale_kind == kvcast::ScaleKind::per_head) {
      a.k_head_scales = c.has_k ? s.head_scales : nullptr;
      a.v_head_scales = c.has_v ? s.head_scales + H : nullptr;
    }
    if (per_token_head) {
      const float* ks = inline_scales ? reinterpret_cast<const float*>(kc + inline_at) : s.k_token_scales;
      const float* vs = inline_scales ? reinterpret_cast<const float*>(vc + inline_at) : s.v_token_scales;
      a.k_scales = c.has_k ? ks : nullptr;
      a.v_scales = c.has_v ? vs : nullptr;
      a.scales = scale_layout;
    }
    return a;
  };
  const auto fp = [](const DeviceBytes& b) { return reinterpret_cast<const float*>(b.get()); };
  const auto ip = [](const DeviceBytes& b) { return reinterpret_cast<const std::int32_t*>(b.get()); };
  const auto dargs = fill_args(Side{d_kc.get(), d_vc.get(), d_k.get(), d_v.get(), d_loc.get(), fp(d_scales), fp(d_head_scales), fp(d_kts),
                                    fp(d_vts), ip(d_table), ip(d_cu), ip(d_starts),
                                    reinterpret_cast<unsigned long long*>(d_errors.get())});
  kvcast::detail::ReadPlan plan;
  const kvcast::Status planned = kvcast::make_read_plan(dargs, plan);
  EXPECT_TRUE(planned.ok()) << planned.message() << "\n" << c.describe();
  if (!planned.ok()) return result;
  result.vec = plan.choice.vec;
  result.access = plan.choice.access == kvcast::tile::Access::vector ? plan.choice.vec : 1;
  result.row_warp = plan.kernel == kvcast::detail::ReadKernel::row_warp;
  const kvcast::Status launched = kvcast::upcast<Format>(dargs);
  EXPECT_TRUE(launched.ok()) << launched.message() << "\n" << c.describe();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << c.describe();
  result.ran = launched.ok();
  std::vector<std::uint8_t> dev_k(d_k.size()), dev_v(d_v.size());
  EXPECT_EQ(cudaMemcpy(dev_k.data(), d_k.get(), dev_k.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  if (d_v.size() > 0) EXPECT_EQ(cudaMemcpy(dev_v.data(), d_v.get(), dev_v.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(&result.device_errors, d_errors.get(), 8, cudaMemcpyDeviceToHost), cudaSuccess);

  // The host reference, same bytes, same poison.
  std::vector<std::uint8_t> ref_k(out_bytes, poison), ref_v(c.kv_one_workspace ? 0 : out_bytes, poison);
  const void* host_loc = c.rows == RowSource::i64 ? static_cast<const void*>(loc64.data()) : static_cast<const void*>(loc32.data());
  const auto hargs = fill_args(Side{k_cache.data(), v_cache.data(), ref_k.data(), ref_v.data(), host_loc, scales, head_scales.data(),
                                    k_token_scales.data(), v_token_scales.data(), block_table.data(), cu_seq_lens.data(),
                                    seq_starts.data(), &result.reference_errors});
  const kvcast::Status ref_status = kvcast::ref::upcast<Format>(hargs);
  EXPECT_TRUE(ref_status.ok()) << ref_status.message();

  auto compare = [&](const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want, const char* which) {
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (got[i] == want[i]) continue;
      if (result.mismatches++ == 0) {
        std::ostringstream s;
        const std::int64_t element = static_cast<std::int64_t>(i / sizeof(T)) - margin - c.out_misalign;
        s << which << " byte " << i << " (element " << element << " of the output: token " << element / out_token_stride
          << "): device 0x" << std::hex << int(got[i]) << ", reference 0x" << int(want[i]) << ", poison 0x" << int(poison);
        result.first_mismatch = s.str();
      }
    }
  };
  compare(dev_k, ref_k, "k allocation");
  compare(dev_v, ref_v, "v allocation");
  return result;
}

// Runs with two poisons and asserts everything.
template <class T, class Format>
ReadOutcome check_read_case(const ReadCase& c) {
  ReadOutcome last;
  for (std::uint8_t poison : {std::uint8_t{0xA5}, std::uint8_t{0x5A}}) {
    last = run_read_case<T, Format>(c, poison);
    EXPECT_TRUE(last.ran) << c.describe();
    EXPECT_EQ(last.mismatches, 0) << last.first_mismatch << "\n" << c.describe();
    EXPECT_EQ(last.device_errors, last.reference_errors) << c.describe();
  }
  return last;
}

}  // namespace kvtest
