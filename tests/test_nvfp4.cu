// kvcast tests — NVFP4 (issue #17), both modes, on the device against the host reference. The
// write (ref::downcast<nvfp4, fp32> and, for FlashInfer's fast_math mode, <nvfp4, fast_math> with
// the device's own rcp.approx values), byte for byte over whole poisoned code and block-scale buffers:
// every layout the contract names (flat, padded, NHD and HND pages with FlashInfer's separate
// scale tensors, vLLM's pages with the scales inside), each input type, K or V alone, slots with
// padding and out-of-range rows, g on the device or the host, vectors and the element-by-element
// path, and hostile blocks (zeros, NaN, ±inf, one huge value, subnormals). Then the read
// (ref::upcast<nvfp4>) of what the device wrote, into poisoned outputs: the round trip equals the
// reference's quantize-then-dequantize; and the read by a page table of random codes and scales.
#include <gtest/gtest.h>

#include <kvcast/kvcast.cuh>
#include <kvcast/nvfp4.cuh>
#include <kvcast/reference.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_harness.cuh"

namespace {

using kvcast::OutputLayout;

enum class Placement { contiguous, padded, nhd, hnd, vllm_pages };

const char* name_of(Placement p) {
  switch (p) {
    case Placement::contiguous: return "contiguous";
    case Placement::padded: return "padded";
    case Placement::nhd: return "nhd";
    case Placement::hnd: return "hnd";
    case Placement::vllm_pages: return "vllm_pages";
  }
  return "?";
}

struct Nvfp4Case {
  Placement place = Placement::contiguous;
  std::int64_t tokens = 37, heads = 3, head_dim = 64, page = 4, pages = 16;
  bool has_k = true, has_v = true;
  kvtest::LocKind loc = kvtest::LocKind::i64;
  bool device_g = true;
  float g_k = 0.73f / 8, g_v = 1.9f;  // the global scales
  kvcast::Arithmetic mode = kvcast::Arithmetic::fp32;
  std::int64_t in_pad = 0;    // elements after each input row (odd: no vector access)
  std::int64_t code_pad = 0;  // bytes after each code head (padded placement)
  std::uint64_t seed = 1;

  std::string name() const {
    std::ostringstream o;
    o << kvcast::to_string(mode) << " " << name_of(place) << " " << tokens << "x" << heads << "x" << head_dim << (has_k ? " K" : "") << (has_v ? " V" : "")
      << " loc" << static_cast<int>(loc) << (device_g ? " g-device " : " g-host ") << g_k << "/" << g_v << " in_pad " << in_pad << " code_pad " << code_pad
      << " seed " << seed;
    return o.str();
  }
};

// Blocks of random magnitudes across E4M3's range of block scales, with hostile blocks.
template <class T>
std::vector<std::uint32_t> make_input(const Nvfp4Case& c, std::int64_t token_stride, std::mt19937_64& rng) {
  std::vector<std::uint32_t> bits(static_cast<std::size_t>(c.tokens * token_stride + 16), 0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-18, 14), kind(0, 31);
  const float inf = std::numeric_limits<float>::infinity();
  for (std::int64_t t = 0; t < c.tokens; ++t)
    for (std::int64_t h = 0; h < c.heads; ++h)
      for (std::int64_t b = 0; b < c.head_dim / 16; ++b) {
        const float scale = std::ldexp(1.0f, exponent(rng));
        const int k = kind(rng);
        for (int i = 0; i < 16; ++i) {
          float x = normal(rng) * scale;
          if (k == 0) x = 0.0f;                                  // a zero block
          if (k == 1 && i == 5) x = std::nanf("");               // NaN
          if (k == 8) x = std::nanf("");                         // all NaN
          if (k == 2 && i == 3) x = (i % 2 ? -inf : inf);        // an infinity
          if (k == 3) x = i == 7 ? 3.0e38f : normal(rng);        // one huge value
          if (k == 4) x = normal(rng) * 1e-40f;                  // subnormal (fp32) / zero (16-bit)
          if (k == 5) x = i == 9 ? -1.0f : 0.0f;                 // a single non-zero element
          if (k == 6 && i % 2) x = -0.0f;                        // signed zeros among numbers
          std::uint32_t b_bits = kvtest::bits_of<T>(x);
          if (k == 7 && i == 2)  // a NaN with its sign bit set
            b_bits = sizeof(T) == 4 ? 0xffc00000u : kvcast::dtype_of<T>::value == kvcast::DType::bf16 ? 0xffc0u : 0xfe00u;
          bits[static_cast<std::size_t>(t * token_stride + h * (c.head_dim) + 16 * b + i)] = b_bits;
        }
      }
  return bits;
}

// rcp.approx.ftz.f32 of each value, as this GPU computes it: the fast_math reference takes the
// hardware's reciprocals, which the PTX ISA does not define bit for bit.
__global__ void rcp_approx_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = kvcast::detail::rcp_approx_ftz(in[i]);
}

// The device's reciprocal of every value the fast_math formula takes one of for global scales
// gs: 6 g, and float(sf) * g for every E4M3 code sf (fast-math products).
std::map<std::uint32_t, float> device_reciprocals(std::initializer_list<float> gs) {
  std::vector<float> in;
  for (float g : gs) {
    in.push_back(kvcast::detail::mul_ftz(6.0f, g));
    for (int sf = 0; sf < 256; ++sf) in.push_back(kvcast::detail::mul_ftz(kvcast::fp8_to_float<kvcast::e4m3>(static_cast<std::uint8_t>(sf)), g));
  }
  std::vector<float> out(in.size());
  kvtest::DeviceBytes din(in.size() * 4), dout(in.size() * 4);
  std::map<std::uint32_t, float> table;
  if (!din || !dout) return table;
  if (cudaMemcpy(din.get(), in.data(), in.size() * 4, cudaMemcpyHostToDevice) != cudaSuccess) return table;
  rcp_approx_kernel<<<static_cast<unsigned>((in.size() + 255) / 256), 256>>>(reinterpret_cast<const float*>(din.get()),
                                                                           reinterpret_cast<float*>(dout.get()), static_cast<int>(in.size()));
  if (cudaMemcpy(out.data(), dout.get(), out.size() * 4, cudaMemcpyDeviceToHost) != cudaSuccess) return table;
  for (std::size_t i = 0; i < in.size(); ++i) table[kvtest::bits_of<float>(in[i])] = out[i];
  return table;
}

template <class T>
void run_nvfp4_case(const Nvfp4Case& c) {
  SCOPED_TRACE(c.name());
  std::mt19937_64 rng(c.seed);
  const std::int64_t H = c.heads, D = c.head_dim, B = c.page;
  const std::int64_t code_head = D / 2, sf_head = D / 16;
  const std::int64_t rows = c.pages * B;
  const std::int64_t in_token_stride = H * D + c.in_pad;

  // Where the codes and the block scales go: one byte buffer a tensor for each, or (vLLM's
  // pages) one buffer for all four.
  OutputLayout codes{}, scales{};
  std::int64_t code_bytes = 0, scale_bytes = 0, v_code_shift = 0, k_scale_shift = 0, v_scale_shift = 0;
  bool one_buffer = false;
  switch (c.place) {
    case Placement::contiguous:
      codes = OutputLayout::contiguous(H, code_head);
      scales = OutputLayout{};  // the default: [rows, heads, head_dim / 16]
      code_bytes = rows * H * code_head;
      scale_bytes = rows * H * sf_head;
      break;
    case Placement::padded:
      codes = OutputLayout::flat(H * (code_head + c.code_pad) + (c.code_pad == 1 ? 3 : 8), code_head + c.code_pad);
      scales = OutputLayout::flat(H * (sf_head + 1) + 2, sf_head + 1);
      code_bytes = rows * codes.token_stride;
      scale_bytes = rows * scales.token_stride;
      break;
    case Placement::nhd:
      codes = OutputLayout::paged_nhd(B, H, code_head);
      scales = OutputLayout::paged_nhd(B, H, sf_head);
      code_bytes = rows * H * code_head;
      scale_bytes = rows * H * sf_head;
      break;
    case Placement::hnd:
      codes = OutputLayout::paged_hnd(B, H, code_head);
      scales = OutputLayout::paged_hnd(B, H, sf_head);
      code_bytes = rows * H * code_head;
      scale_bytes = rows * H * sf_head;
      break;
    case Placement::vllm_pages: {
      // [K codes | K scales | V codes | V scales] a page, NHD inside each part.
      const std::int64_t part_codes = B * H * code_head, part_scales = B * H * sf_head;
      const std::int64_t page_bytes = 2 * (part_codes + part_scales);
      codes = OutputLayout::paged(B, page_bytes, H * code_head, code_head);
      scales = OutputLayout::paged(B, page_bytes, H * sf_head, sf_head);
      one_buffer = true;
      k_scale_shift = part_codes;
      v_code_shift = part_codes + part_scales;
      v_scale_shift = 2 * part_codes + part_scales;
      code_bytes = c.pages * page_bytes;
      break;
    }
  }

  // Slots: a permutation of rows, a few padding tokens and a few out of range.
  std::vector<std::int64_t> slots(static_cast<std::size_t>(c.tokens));
  std::vector<std::int64_t> perm(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) perm[static_cast<std::size_t>(r)] = r;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::uint64_t out_of_range = 0;
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    std::int64_t s = perm[static_cast<std::size_t>(t % rows)];
    if (c.loc != kvtest::LocKind::none) {
      if (t % 11 == 3) s = -1;
      if (t % 13 == 5) {
        s = rows + t;
        ++out_of_range;
      }
    }
    slots[static_cast<std::size_t>(t)] = s;
  }
  std::vector<std::int32_t> slots32(slots.begin(), slots.end());
  if (c.loc == kvtest::LocKind::none) out_of_range = 0;

  const std::vector<std::uint32_t> k_bits = make_input<T>(c, in_token_stride, rng);
  const std::vector<std::uint32_t> v_bits = make_input<T>(c, in_token_stride, rng);
  const auto pack = [](const std::vector<std::uint32_t>& b) {
    std::vector<std::uint8_t> out(b.size() * sizeof(T));
    for (std::size_t i = 0; i < b.size(); ++i) std::memcpy(out.data() + i * sizeof(T), &b[i], sizeof(T));
    return out;
  };
  const std::vector<std::uint8_t> k_in = pack(k_bits), v_in = pack(v_bits);
  const float g_k = c.g_k, g_v = c.g_v;

  // Host buffers, poisoned; the device's start from the same poison.
  constexpr std::uint8_t kCodePoison = 0xA5, kScalePoison = 0x5A;
  const std::int64_t total_code = code_bytes, total_scale = one_buffer ? 0 : scale_bytes;
  std::vector<std::uint8_t> host_k_codes(static_cast<std::size_t>(total_code), kCodePoison);
  std::vector<std::uint8_t> host_v_codes(static_cast<std::size_t>(one_buffer ? 0 : total_code), kCodePoison);
  std::vector<std::uint8_t> host_k_scales(static_cast<std::size_t>(total_scale), kScalePoison);
  std::vector<std::uint8_t> host_v_scales(static_cast<std::size_t>(total_scale), kScalePoison);
  if (one_buffer) {  // each page's scale parts poisoned as scales
    for (std::int64_t pg = 0; pg < c.pages; ++pg)
      for (std::int64_t i = 0; i < B * H * sf_head; ++i) {
        host_k_codes[static_cast<std::size_t>(pg * codes.block_stride + k_scale_shift + i)] = kScalePoison;
        host_k_codes[static_cast<std::size_t>(pg * codes.block_stride + v_scale_shift + i)] = kScalePoison;
      }
  }

  kvtest::DeviceBytes dk(k_in.size()), dv(v_in.size()), dkc(host_k_codes.size()), dvc(host_v_codes.size()), dks(host_k_scales.size()),
      dvs(host_v_scales.size()), dloc(slots.size() * 8), dg(8), derr(8);
  ASSERT_TRUE(dk && dv && dkc && dvc && dks && dvs && dloc && dg && derr);
  KVTEST_CUDA(cudaMemcpy(dk.get(), k_in.data(), k_in.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dv.get(), v_in.data(), v_in.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dkc.get(), host_k_codes.data(), host_k_codes.size(), cudaMemcpyHostToDevice));
  if (!host_v_codes.empty()) KVTEST_CUDA(cudaMemcpy(dvc.get(), host_v_codes.data(), host_v_codes.size(), cudaMemcpyHostToDevice));
  if (!host_k_scales.empty()) {
    KVTEST_CUDA(cudaMemcpy(dks.get(), host_k_scales.data(), host_k_scales.size(), cudaMemcpyHostToDevice));
    KVTEST_CUDA(cudaMemcpy(dvs.get(), host_v_scales.data(), host_v_scales.size(), cudaMemcpyHostToDevice));
  }
  if (c.loc == kvtest::LocKind::i32)
    KVTEST_CUDA(cudaMemcpy(dloc.get(), slots32.data(), slots32.size() * 4, cudaMemcpyHostToDevice));
  else
    KVTEST_CUDA(cudaMemcpy(dloc.get(), slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
  const float g_pair[2] = {g_k, g_v};
  KVTEST_CUDA(cudaMemcpy(dg.get(), g_pair, 8, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(derr.get(), 0, 8));

  // The same call twice: device pointers, then host pointers for the reference.
  const auto fill = [&](kvcast::DowncastArgs<T>& a, const void* k, const void* v, std::uint8_t* kc, std::uint8_t* vc, std::uint8_t* ks,
                        std::uint8_t* vs, const void* loc, const float* g, unsigned long long* err) {
    a.k = c.has_k ? static_cast<const T*>(k) : nullptr;
    a.v = c.has_v ? static_cast<const T*>(v) : nullptr;
    a.num_tokens = c.tokens;
    a.heads = H;
    a.head_dim = D;
    a.in_token_stride = in_token_stride;
    a.in_head_stride = D;
    if (one_buffer) {
      a.k_out = c.has_k ? kc : nullptr;
      a.v_out = c.has_v ? kc + v_code_shift : nullptr;
      a.k_block_scales_out = c.has_k ? kc + k_scale_shift : nullptr;
      a.v_block_scales_out = c.has_v ? kc + v_scale_shift : nullptr;
    } else {
      a.k_out = c.has_k ? kc : nullptr;
      a.v_out = c.has_v ? vc : nullptr;
      a.k_block_scales_out = c.has_k ? ks : nullptr;
      a.v_block_scales_out = c.has_v ? vs : nullptr;
    }
    a.out = codes;
    a.block_scales_out = scales;
    if (c.loc == kvtest::LocKind::i64) a.loc = static_cast<const std::int64_t*>(loc);
    if (c.loc == kvtest::LocKind::i32) a.loc = static_cast<const std::int32_t*>(loc);
    a.out_rows = rows;
    a.error_count = err;
    if (c.device_g) {
      a.k_scale = kvcast::Scale::in_device_memory(g);
      a.v_scale = kvcast::Scale::in_device_memory(g + 1);
    } else {
      a.k_scale = kvcast::Scale::host_value(g_k);
      a.v_scale = kvcast::Scale::host_value(g_v);
    }
  };
  kvcast::DowncastArgs<T> dev, host;
  fill(dev, dk.get(), dv.get(), dkc.get(), dvc.get(), dks.get(), dvs.get(), dloc.get(), reinterpret_cast<const float*>(dg.get()),
       reinterpret_cast<unsigned long long*>(derr.get()));
  unsigned long long host_err = 0;
  fill(host, k_in.data(), v_in.data(), host_k_codes.data(), host_v_codes.data(), host_k_scales.data(), host_v_scales.data(),
       c.loc == kvtest::LocKind::i32 ? static_cast<const void*>(slots32.data()) : static_cast<const void*>(slots.data()), g_pair,
       &host_err);
  const bool fast = c.mode == kvcast::Arithmetic::fast_math;
  // Both tensors of a decode-sized call go to CTAs of their own (KernelChoice::grid_z): the small
  // cases take that path, LargeCallsEqualTheReference the other.
  kvcast::detail::Plan plan;
  ASSERT_TRUE(kvcast::make_plan(dev, plan, c.mode, kvcast::CodeFormat::nvfp4).ok());
  EXPECT_EQ(plan.choice.grid_z == 2, c.has_k && c.has_v && c.tokens * H * D <= kvcast::detail::tuning::kTensorsApartUpTo)
      << c.name();
  const kvcast::Status st = fast ? kvcast::downcast<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(dev) : kvcast::downcast<kvcast::nvfp4>(dev);
  ASSERT_TRUE(st.ok()) << st.message();
  KVTEST_CUDA(cudaDeviceSynchronize());
  const std::map<std::uint32_t, float> reciprocals = fast ? device_reciprocals({g_k, g_v}) : std::map<std::uint32_t, float>{};
  int missing = 0;
  const auto device_rcp = [&](float x) {
    const auto it = reciprocals.find(kvtest::bits_of<float>(x));
    if (it != reciprocals.end()) return it->second;
    ++missing;
    return kvcast::ref::rcp_rn_ftz(x);
  };
  const kvcast::Status hs = fast ? kvcast::ref::downcast<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(host, device_rcp)
                                 : kvcast::ref::downcast<kvcast::nvfp4, kvcast::Arithmetic::fp32>(host);
  EXPECT_EQ(missing, 0) << "the reference asked for a reciprocal the device table lacks";
  ASSERT_TRUE(hs.ok()) << hs.message();
  EXPECT_EQ(host_err, out_of_range);

  const auto expect_same = [&](const kvtest::DeviceBytes& d, const std::vector<std::uint8_t>& want, const char* what) {
    std::vector<std::uint8_t> got(want.size());
    if (!got.empty()) {
      ASSERT_EQ(cudaMemcpy(got.data(), d.get(), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    std::int64_t diffs = 0, first = -1;
    for (std::size_t i = 0; i < want.size(); ++i)
      if (got[i] != want[i]) {
        if (first < 0) first = static_cast<std::int64_t>(i);
        ++diffs;
      }
    EXPECT_EQ(diffs, 0) << what << ": first difference at byte " << first << " (device 0x" << std::hex
                        << (first >= 0 ? int{got[static_cast<std::size_t>(first)]} : 0) << ", reference 0x"
                        << (first >= 0 ? int{want[static_cast<std::size_t>(first)]} : 0) << ")";
  };
  expect_same(dkc, host_k_codes, one_buffer ? "pages" : "k codes");
  expect_same(dvc, host_v_codes, "v codes");
  expect_same(dks, host_k_scales, "k block scales");
  expect_same(dvs, host_v_scales, "v block scales");
  unsigned long long dev_err = 0;
  KVTEST_CUDA(cudaMemcpy(&dev_err, derr.get(), 8, cudaMemcpyDeviceToHost));
  EXPECT_EQ(dev_err, out_of_range);
  // The reference wrote something: not every byte is still poison.
  std::int64_t written = 0;
  for (std::uint8_t b : host_k_codes) written += b != kCodePoison && b != kScalePoison;
  for (std::uint8_t b : host_v_codes) written += b != kCodePoison;
  EXPECT_GT(written, 0);
  if (::testing::Test::HasFailure()) return;

  // The read of the same rows by the same slots (what the device wrote, on the device; what the
  // reference wrote, in the reference), into poisoned outputs: padding tokens stay poisoned,
  // out-of-range ones too, and are counted. Odd input padding makes odd output strides too.
  const std::int64_t out_head_stride = D + c.in_pad, out_token_stride = H * out_head_stride + c.in_pad;
  const std::size_t out_elems = static_cast<std::size_t>(c.tokens * out_token_stride + 16);
  constexpr std::uint8_t kOutPoison = 0xC3;
  std::vector<std::uint8_t> host_k_out(out_elems * sizeof(T), kOutPoison), host_v_out(out_elems * sizeof(T), kOutPoison);
  kvtest::DeviceBytes dko(host_k_out.size()), dvo(host_v_out.size());
  ASSERT_TRUE(dko && dvo);
  KVTEST_CUDA(cudaMemcpy(dko.get(), host_k_out.data(), host_k_out.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dvo.get(), host_v_out.data(), host_v_out.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(derr.get(), 0, 8));
  const auto read_args = [&](const kvcast::DowncastArgs<T>& w, void* k_out, void* v_out) {
    kvcast::UpcastArgs<T> r;
    r.k_cache = w.k_out;
    r.v_cache = w.v_out;
    r.k_block_scales = w.k_block_scales_out;
    r.v_block_scales = w.v_block_scales_out;
    r.cache = codes;
    r.block_scales = scales;
    r.cache_rows = rows;
    r.k = c.has_k ? static_cast<T*>(k_out) : nullptr;
    r.v = c.has_v ? static_cast<T*>(v_out) : nullptr;
    r.num_tokens = c.tokens;
    r.heads = H;
    r.head_dim = D;
    r.out_token_stride = out_token_stride;
    r.out_head_stride = out_head_stride;
    r.loc = w.loc;
    r.error_count = w.error_count;
    r.k_scale = w.k_scale;
    r.v_scale = w.v_scale;
    return r;
  };
  const kvcast::Status rs = kvcast::upcast<kvcast::nvfp4>(read_args(dev, dko.get(), dvo.get()));
  ASSERT_TRUE(rs.ok()) << rs.message();
  KVTEST_CUDA(cudaDeviceSynchronize());
  host_err = 0;
  const kvcast::Status hr = kvcast::ref::upcast<kvcast::nvfp4>(read_args(host, host_k_out.data(), host_v_out.data()));
  ASSERT_TRUE(hr.ok()) << hr.message();
  EXPECT_EQ(host_err, out_of_range);
  expect_same(dko, host_k_out, "k read back");
  expect_same(dvo, host_v_out, "v read back");
  KVTEST_CUDA(cudaMemcpy(&dev_err, derr.get(), 8, cudaMemcpyDeviceToHost));
  EXPECT_EQ(dev_err, out_of_range);
}

template <class T>
void run_grid(std::uint64_t seed, kvcast::Arithmetic mode = kvcast::Arithmetic::fp32) {
  const Placement places[] = {Placement::contiguous, Placement::padded, Placement::nhd, Placement::hnd, Placement::vllm_pages};
  int n = 0;
  for (Placement place : places)
    for (std::int64_t D : {16, 64, 128, 576})
      for (int tensors : {3, 1, 2})
        for (kvtest::LocKind loc : {kvtest::LocKind::i64, kvtest::LocKind::i32, kvtest::LocKind::none}) {
          Nvfp4Case c;
          c.place = place;
          c.head_dim = D;
          c.heads = D == 576 ? 1 : 3;
          c.has_k = tensors & 1;
          c.has_v = tensors & 2;
          c.loc = loc;
          c.tokens = loc == kvtest::LocKind::none ? c.pages * c.page : 37;
          c.device_g = (n % 2) == 0;
          c.in_pad = (n % 3 == 1) ? 1 : 0;  // odd rows: element by element
          c.code_pad = place == Placement::padded ? ((n % 4 == 2) ? 1 : 8) : 0;
          c.seed = seed + static_cast<std::uint64_t>(n++);
          c.mode = mode;
          run_nvfp4_case<T>(c);
          if (::testing::Test::HasFailure()) return;
        }
}

// Each case writes, then reads back (run_nvfp4_case).
TEST(Nvfp4Write, Bf16GridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<__nv_bfloat16>(100);
}
TEST(Nvfp4Write, HalfGridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<__half>(2000);
}
TEST(Nvfp4Write, FloatGridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<float>(30000);
}

// FlashInfer's numerics (Arithmetic::fast_math): the same grid against the fast-math formula.
TEST(Nvfp4FastMathWrite, Bf16GridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<__nv_bfloat16>(500, kvcast::Arithmetic::fast_math);
}
TEST(Nvfp4FastMathWrite, HalfGridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<__half>(5000, kvcast::Arithmetic::fast_math);
}
TEST(Nvfp4FastMathWrite, FloatGridEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  run_grid<float>(50000, kvcast::Arithmetic::fast_math);
}

// Global scales on the device are read when the kernel runs, so no validation sees them: 0,
// negative, infinite, NaN, and ones that put the block divisors outside the fast division's range, each
// give what the formulas give, the same as the reference's.
TEST(Nvfp4Write, HostileGlobalScalesOnTheDevice) {
  KVTEST_REQUIRE_GPU();
  const float inf = std::numeric_limits<float>::infinity();
  const float gs[] = {0.0f, -0.0f, -0.5f, inf, -inf, std::nanf(""), 1e-30f, 1e30f, 0x1p-40f, 0x1p40f, 1e-45f, 3e38f};
  std::uint64_t seed = 900;
  for (float g : gs) {
    Nvfp4Case c;
    c.g_k = g;
    c.g_v = -g;
    c.seed = seed++;
    for (kvcast::Arithmetic mode : {kvcast::Arithmetic::fp32, kvcast::Arithmetic::fast_math}) {
      c.mode = mode;
      c.head_dim = 64;
      c.in_pad = 0;
      run_nvfp4_case<__nv_bfloat16>(c);
      c.head_dim = 32;
      c.in_pad = 1;
      run_nvfp4_case<float>(c);
    }
  }
}

// The read by a page table: random code bytes and block scales (NaN, zero and negative scales
// among them), two sequences over random pages, the second from a seq_starts offset, and a page
// index past the cache; NHD pages, vectors or element by element.
template <class T>
void run_page_table_read(std::uint64_t seed, bool odd_output) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << (odd_output ? " odd output" : ""));
  std::mt19937_64 rng(seed);
  const std::int64_t H = 2, D = 64, B = 8, pages = 12, rows = pages * B;
  const OutputLayout codes = OutputLayout::paged_nhd(B, H, D / 2), scales = OutputLayout::paged_nhd(B, H, D / 16);
  std::vector<std::uint8_t> k_codes(static_cast<std::size_t>(rows * H * D / 2)), v_codes(k_codes.size());
  std::vector<std::uint8_t> k_scales(static_cast<std::size_t>(rows * H * D / 16)), v_scales(k_scales.size());
  for (auto* v : {&k_codes, &v_codes, &k_scales, &v_scales})
    for (auto& b : *v) b = static_cast<std::uint8_t>(rng());
  const std::int32_t block_table[2 * 4] = {3, 7, 0, 99, 11, 5, 2, 1};  // 99: past the cache's 12 pages
  const std::int32_t cu[3] = {0, 29, 45};
  const std::int32_t starts[2] = {0, 5};
  const std::int64_t tokens = 45;
  const std::int64_t out_head_stride = D + (odd_output ? 1 : 0), out_token_stride = H * out_head_stride;
  constexpr std::uint8_t kOutPoison = 0x3C;
  std::vector<std::uint8_t> host_k(static_cast<std::size_t>(tokens * out_token_stride) * sizeof(T), kOutPoison), host_v(host_k);
  kvtest::DeviceBytes dkc(k_codes.size()), dvc(v_codes.size()), dks(k_scales.size()), dvs(v_scales.size()), dbt(sizeof block_table),
      dcu(sizeof cu), dst(sizeof starts), dk(host_k.size()), dv(host_v.size()), dg(8), derr(8);
  ASSERT_TRUE(dkc && dvc && dks && dvs && dbt && dcu && dst && dk && dv && dg && derr);
  KVTEST_CUDA(cudaMemcpy(dkc.get(), k_codes.data(), k_codes.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dvc.get(), v_codes.data(), v_codes.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dks.get(), k_scales.data(), k_scales.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dvs.get(), v_scales.data(), v_scales.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dbt.get(), block_table, sizeof block_table, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dcu.get(), cu, sizeof cu, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dst.get(), starts, sizeof starts, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dk.get(), host_k.data(), host_k.size(), cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemcpy(dv.get(), host_v.data(), host_v.size(), cudaMemcpyHostToDevice));
  const float g[2] = {0.37f, -3.0f};
  KVTEST_CUDA(cudaMemcpy(dg.get(), g, 8, cudaMemcpyHostToDevice));
  KVTEST_CUDA(cudaMemset(derr.get(), 0, 8));
  const auto args = [&](const void* kc, const void* vc, const void* ks, const void* vs, const std::int32_t* bt, const std::int32_t* cus,
                        const std::int32_t* st, void* k, void* v, const float* gp, bool device_g, unsigned long long* err) {
    kvcast::UpcastArgs<T> r;
    r.k_cache = kc;
    r.v_cache = vc;
    r.k_block_scales = ks;
    r.v_block_scales = vs;
    r.cache = codes;
    r.block_scales = scales;
    r.cache_rows = rows;
    r.k = static_cast<T*>(k);
    r.v = static_cast<T*>(v);
    r.num_tokens = tokens;
    r.heads = H;
    r.head_dim = D;
    r.out_token_stride = out_token_stride;
    r.out_head_stride = out_head_stride;
    r.block_table = bt;
    r.batch = 2;
    r.max_pages = 4;
    r.cu_seq_lens = cus;
    r.seq_starts = st;
    r.error_count = err;
    r.k_scale = device_g ? kvcast::Scale::in_device_memory(gp) : kvcast::Scale::host_value(g[0]);
    r.v_scale = device_g ? kvcast::Scale::in_device_memory(gp + 1) : kvcast::Scale::host_value(g[1]);
    return r;
  };
  const kvcast::Status s = kvcast::upcast<kvcast::nvfp4>(args(dkc.get(), dvc.get(), dks.get(), dvs.get(), reinterpret_cast<const std::int32_t*>(dbt.get()),
                                                              reinterpret_cast<const std::int32_t*>(dcu.get()),
                                                              reinterpret_cast<const std::int32_t*>(dst.get()), dk.get(), dv.get(),
                                                              reinterpret_cast<const float*>(dg.get()), !odd_output,
                                                              reinterpret_cast<unsigned long long*>(derr.get())));
  ASSERT_TRUE(s.ok()) << s.message();
  KVTEST_CUDA(cudaDeviceSynchronize());
  unsigned long long host_err = 0;
  const kvcast::Status h = kvcast::ref::upcast<kvcast::nvfp4>(args(k_codes.data(), v_codes.data(), k_scales.data(), v_scales.data(),
                                                                    block_table, cu, starts, host_k.data(), host_v.data(), g, false, &host_err));
  ASSERT_TRUE(h.ok()) << h.message();
  std::vector<std::uint8_t> got_k(host_k.size()), got_v(host_v.size());
  KVTEST_CUDA(cudaMemcpy(got_k.data(), dk.get(), got_k.size(), cudaMemcpyDeviceToHost));
  KVTEST_CUDA(cudaMemcpy(got_v.data(), dv.get(), got_v.size(), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(got_k == host_k) << "k";
  EXPECT_TRUE(got_v == host_v) << "v";
  unsigned long long dev_err = 0;
  KVTEST_CUDA(cudaMemcpy(&dev_err, derr.get(), 8, cudaMemcpyDeviceToHost));
  EXPECT_GT(host_err, 0u);  // the tokens of page 99
  EXPECT_EQ(dev_err, host_err);
  std::int64_t untouched = 0;
  for (std::uint8_t b : host_k) untouched += b == kOutPoison;
  EXPECT_GT(untouched, 0);
  EXPECT_LT(untouched, static_cast<std::int64_t>(host_k.size()) / 2);
}

TEST(Nvfp4Read, PageTableOfRandomCodesEqualsTheReference) {
  KVTEST_REQUIRE_GPU();
  for (bool odd : {false, true}) {
    run_page_table_read<__nv_bfloat16>(41, odd);
    run_page_table_read<__half>(42, odd);
    run_page_table_read<float>(43, odd);
  }
}

// Many tokens: grids of several chunks, groups of every size the planner picks, both orders.
TEST(Nvfp4Write, LargeCallsEqualTheReference) {
  KVTEST_REQUIRE_GPU();
  for (std::int64_t D : {128, 576}) {
    Nvfp4Case c;
    c.place = Placement::nhd;
    c.head_dim = D;
    c.heads = D == 576 ? 1 : 8;
    c.page = 16;
    c.pages = 2400;
    c.tokens = 30000;
    c.seed = 77 + static_cast<std::uint64_t>(D);
    run_nvfp4_case<__nv_bfloat16>(c);
    c.mode = kvcast::Arithmetic::fast_math;
    run_nvfp4_case<__half>(c);
  }
}

}  // namespace
