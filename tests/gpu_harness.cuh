// kvcast tests — GPU harness shared by the GPU test files: device detection (skip, never fail,
// on a machine without a GPU), device buffers, and one runner that executes a case on the
// device and in the host reference with poisoned outputs and compares every byte.
#pragma once

#include <gtest/gtest.h>

#include <kvcast/kvcast.cuh>
#include <kvcast/reference.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace kvtest {

// Why there is no usable GPU, or empty when there is one.
inline const std::string& gpu_absence() {
  static const std::string reason = [] {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(err);
    if (n == 0) return std::string("no CUDA device: cudaGetDeviceCount returned 0");
    return std::string();
  }();
  return reason;
}

#define KVTEST_REQUIRE_GPU()                                                                          \
  do {                                                                                               \
    if (!::kvtest::gpu_absence().empty()) GTEST_SKIP() << "GPU test skipped: " << ::kvtest::gpu_absence(); \
  } while (0)

#define KVTEST_CUDA(expr)                                                                        \
  do {                                                                                           \
    const cudaError_t kvtest_err = (expr);                                                       \
    ASSERT_EQ(kvtest_err, cudaSuccess) << #expr << ": " << cudaGetErrorString(kvtest_err);       \
  } while (0)

// Owning device allocation of bytes.
class DeviceBytes {
 public:
  DeviceBytes() = default;
  explicit DeviceBytes(std::size_t bytes) : bytes_(bytes) {
    if (bytes && cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  DeviceBytes(DeviceBytes&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  ~DeviceBytes() {
    if (ptr_) cudaFree(ptr_);
  }
  std::uint8_t* get() const { return static_cast<std::uint8_t*>(ptr_); }
  std::size_t size() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr || bytes_ == 0; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// Bits of T for a float, rounded to nearest (host side, via kvcast's own reference rounding).
template <class T>
std::uint32_t bits_of(float f) {
  if constexpr (sizeof(T) == 4) {
    std::uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  } else if constexpr (kvcast::dtype_of<T>::value == kvcast::DType::f16) {
    return kvcast::ref::to_half(f);
  } else {
    return kvcast::ref::to_bf16(f);
  }
}

enum class OutKind { contiguous, flat_padded, nhd, hnd, kv_interleaved };
enum class LocKind { none, i64, i32 };
// Where per-(token, head) scales go: a separate [rows, heads] tensor, a paged [pages, block,
// heads] tensor, or floats after the codes of each page (nhd/hnd pages only).
enum class ScaleOut { separate, paged, inline_in_page };

inline const char* name_of(OutKind o) {
  switch (o) {
    case OutKind::contiguous: return "contiguous";
    case OutKind::flat_padded: return "flat_padded";
    case OutKind::nhd: return "nhd";
    case OutKind::hnd: return "hnd";
    case OutKind::kv_interleaved: return "kv_interleaved";
  }
  return "?";
}

// Where a cache's codes and its per-(token, head) scales go, as both directions' tests build
// them: the code layout (`head_pad`: flat_padded's extra bytes after each head and row), V's
// codes' shift in one allocation (interleaved pages), and the scales' layout in floats: a
// separate [rows, heads] tensor, pages with a gap, or floats after each page's codes (nhd and
// hnd pages; at a 4-byte boundary of memory, `misalign` bytes past an aligned codes pointer).
struct CachePlacement {
  kvcast::OutputLayout codes{};
  std::int64_t v_shift = 0;
  kvcast::OutputLayout scales{};
  bool inline_scales = false;
  std::int64_t inline_at = 0;  // bytes from a page's first code to its first float
};
inline CachePlacement place_cache(OutKind kind, std::int64_t B, std::int64_t H, std::int64_t D, std::int64_t head_pad,
                                  std::int64_t misalign, bool per_token_head, ScaleOut scale_out) {
  CachePlacement p;
  switch (kind) {
    case OutKind::contiguous: p.codes = kvcast::OutputLayout::contiguous(H, D); break;
    case OutKind::flat_padded: p.codes = kvcast::OutputLayout::flat(H * (D + head_pad) + head_pad, D + head_pad); break;
    case OutKind::nhd: p.codes = kvcast::OutputLayout::paged_nhd(B, H, D); break;
    case OutKind::hnd: p.codes = kvcast::OutputLayout::paged_hnd(B, H, D); break;
    case OutKind::kv_interleaved:
      p.codes = kvcast::OutputLayout::paged(B, 2 * B * H * D, H * D, D);
      p.v_shift = B * H * D;
      break;
  }
  p.scales = kvcast::OutputLayout::contiguous(H, 1);
  p.inline_scales = per_token_head && scale_out == ScaleOut::inline_in_page && (kind == OutKind::nhd || kind == OutKind::hnd);
  if (p.inline_scales) {
    p.inline_at = (B * H * D + misalign + 3) / 4 * 4 - misalign;
    p.codes.block_stride = (p.inline_at + 4 * B * H + 3) / 4 * 4;
    p.scales = kvcast::OutputLayout::paged(B, p.codes.block_stride / 4, H, 1);
  } else if (per_token_head && scale_out == ScaleOut::paged) {
    p.scales = kvcast::OutputLayout::paged(B, B * H + 3, H, 1);
  }
  return p;
}

// One downcast call to check. Sizes in elements unless named bytes.
struct Case {
  std::int64_t tokens = 16, heads = 8, head_dim = 128;
  std::int64_t in_head_pad = 0;    // extra elements after each head of the input
  std::int64_t in_token_pad = 0;   // extra elements after each token of the input
  bool packed_kv = false;          // K and V as slices of one [tokens, 2, heads, dim] buffer
  std::int64_t in_misalign = 0;    // base pointers this many elements past an aligned address
  OutKind out = OutKind::contiguous;
  std::int64_t block_size = 16;
  std::int64_t out_head_pad = 0;   // flat_padded: extra bytes after each head / row
  std::int64_t out_misalign = 0;   // bytes
  LocKind loc = LocKind::i64;
  double pad_fraction = 0.0;       // tokens whose slot is negative (padding)
  double bad_fraction = 0.0;       // tokens whose slot lands outside [0, out_rows)
  std::int64_t mult = 1, offset = 0;
  bool checked_rows = true;        // pass out_rows (and count errors)
  bool device_scale = true;
  bool has_k = true, has_v = true;
  float magnitude = 40.0f;         // standard deviation of the normal inputs
  float k_scale = 0.37f, v_scale = 1.7f;
  std::uint64_t seed = 1;
  // Inputs to use instead of random normals (bit patterns, cycled), for exhaustive runs.
  const std::vector<std::uint32_t>* input_bits = nullptr;
  kvcast::ScaleKind scale_kind = kvcast::ScaleKind::per_tensor;
  ScaleOut scale_out = ScaleOut::separate;  // per_token_head
  float min_scale = 1e-6f;                  // per_token_head
  bool amax = false;                        // ask for k_amax / v_amax
  int amax_of = 3;                          // with amax: K's (bit 0) and V's (bit 1), of the tensors given

  std::string describe() const {
    std::ostringstream s;
    s << "tokens=" << tokens << " heads=" << heads << " head_dim=" << head_dim << " in_pad=" << in_head_pad << "/"
      << in_token_pad << (packed_kv ? " packed_kv" : "") << " in_misalign=" << in_misalign << " out=" << name_of(out)
      << " B=" << block_size << " out_pad=" << out_head_pad << " out_misalign=" << out_misalign
      << " loc=" << static_cast<int>(loc) << " pad=" << pad_fraction << " bad=" << bad_fraction << " mult=" << mult
      << " offset=" << offset << " checked=" << checked_rows << " device_scale=" << device_scale << " k=" << has_k
      << " v=" << has_v << " scales=" << k_scale << "/" << v_scale << " kind=" << kvcast::to_string(scale_kind)
      << " scale_out=" << static_cast<int>(scale_out) << " min_scale=" << min_scale << " amax=" << amax << "/" << amax_of << " seed=" << seed;
    return s.str();
  }
};

struct Outcome {
  bool ran = false;        // the device call was made (validation passed)
  int vec = 0;             // vector the launcher chose: elements a thread, elements an access
  int access = 0;
  bool dense = false;         // the dense kernel ran (WriteKernel::dense)
  bool chunks_first = false;  // grid x walked the chunks of a row (GridOrder::chunks_first)
  bool realign = false;       // the realigned kernel ran (WriteKernel::realigned)
  bool row_head_warp = false;  // the row-head-warp kernel ran (WriteKernel::row_head_warp)
  bool row_head_lean = false;  // the lean row-head warp ran (WriteKernel::row_head_lean)
  bool amax_lean = false;      // the lean amax write ran (WriteKernel::amax_lean)
  bool amax_by_cta = false;    // the amax output's warps met their CTA's (KernelChoice::amax_adds_by_cta)
  bool tensors_apart = false;  // K and V in CTAs of their own (KernelChoice::grid_z)
  long long mismatches = 0;
  unsigned long long device_errors = 0, reference_errors = 0;
  float device_amax[2] = {0, 0}, reference_amax[2] = {0, 0};
  std::string first_mismatch;
};

// Runs `c` on the device and in the reference; outputs poisoned with `poison` first (the whole
// allocations, margins included), then compared byte for byte.
template <class T, class Format, kvcast::Arithmetic Mode>
Outcome run_case(const Case& c, std::uint8_t poison) {
  Outcome result;
  std::mt19937_64 rng(c.seed);
  const std::int64_t H = c.heads, D = c.head_dim, N = c.tokens;
  const std::int64_t in_head_stride = D + c.in_head_pad;
  const std::int64_t tensor_token = H * in_head_stride;
  const std::int64_t in_token_stride = (c.packed_kv ? 2 * tensor_token : tensor_token) + c.in_token_pad;
  const std::int64_t in_elems = c.in_misalign + std::max<std::int64_t>(N, 1) * in_token_stride + 64;

  // Inputs: host copies of K and V buffers (bits), random normals or the given patterns.
  std::vector<T> k_host(static_cast<std::size_t>(in_elems)), v_host(static_cast<std::size_t>(in_elems));
  std::normal_distribution<float> normal(0.0f, c.magnitude);
  std::size_t pattern = 0;
  auto fill = [&](std::vector<T>& buf) {
    for (auto& x : buf) {
      const std::uint32_t b =
          c.input_bits ? (*c.input_bits)[pattern++ % c.input_bits->size()] : bits_of<T>(normal(rng));
      std::memcpy(static_cast<void*>(&x), &b, sizeof(T));
    }
  };
  fill(k_host);
  if (c.packed_kv) v_host = k_host; else fill(v_host);

  // Rows and slots: distinct slots, some padding, some out of range.
  const std::int64_t in_range_slots = std::max<std::int64_t>(N + N / 2 + 3, 4);
  const std::int64_t out_rows = in_range_slots * c.mult + std::max<std::int64_t>(c.offset, 0) + 2;
  std::vector<std::int64_t> slots(static_cast<std::size_t>(in_range_slots));
  for (std::int64_t i = 0; i < in_range_slots; ++i) slots[i] = i + (c.offset < 0 ? (-c.offset + c.mult - 1) / c.mult : 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<std::int64_t> loc64(static_cast<std::size_t>(N));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (std::int64_t t = 0; t < N; ++t) {
    loc64[t] = slots[t];
    const double r = u(rng);
    if (r < c.pad_fraction) loc64[t] = -1 - static_cast<std::int64_t>(rng() % 5);
    else if (r < c.pad_fraction + c.bad_fraction && c.checked_rows)
      loc64[t] = (out_rows - c.offset + c.mult - 1) / c.mult + static_cast<std::int64_t>(rng() % 7);  // row >= out_rows
  }
  std::vector<std::int32_t> loc32(loc64.begin(), loc64.end());

  // Output layout and allocation; per-(token, head) scales: their layout, in floats, and where
  // they start (bytes from k_out) when inline.
  const std::int64_t B = c.block_size;
  const bool per_token_head = c.scale_kind == kvcast::ScaleKind::per_token_head;
  const CachePlacement placed = place_cache(c.out, B, H, D, c.out_head_pad, c.out_misalign, per_token_head, c.scale_out);
  const kvcast::OutputLayout& layout = placed.codes;
  const kvcast::OutputLayout& scale_layout = placed.scales;
  const std::int64_t v_shift = placed.v_shift, inline_at = placed.inline_at;
  const bool inline_scales = placed.inline_scales;
  const std::int64_t pages = (out_rows + B - 1) / B;
  const std::int64_t span = std::max(layout.address(out_rows - 1, H - 1) + D, pages * layout.block_stride) + v_shift;
  const std::int64_t margin = 64;
  const std::int64_t out_bytes = margin + c.out_misalign + span + margin;
  const bool shared_out = c.out == OutKind::kv_interleaved;

  // Device side.
  DeviceBytes d_k(static_cast<std::size_t>(in_elems) * sizeof(T)), d_v(static_cast<std::size_t>(in_elems) * sizeof(T));
  DeviceBytes d_kout(static_cast<std::size_t>(out_bytes)), d_vout(shared_out ? 0 : static_cast<std::size_t>(out_bytes));
  DeviceBytes d_loc(static_cast<std::size_t>(N) * 8 + 8), d_scales(8), d_errors(8);
  // Per-head scales (K's then V's), the amax outputs, the separate scale tensors (floats,
  // poisoned like the codes, margins included).
  const std::int64_t scale_span = inline_scales ? 0 : scale_layout.address(out_rows - 1, H - 1) + 1 + scale_layout.block_stride;
  const std::int64_t scale_bytes = per_token_head && !inline_scales ? 4 * (scale_span + 2 * margin) : 0;
  DeviceBytes d_head_scales(static_cast<std::size_t>(8 * H)), d_amax(8), d_kscales(static_cast<std::size_t>(scale_bytes)),
      d_vscales(static_cast<std::size_t>(scale_bytes));
  std::vector<float> head_scales(static_cast<std::size_t>(2 * H));
  std::uniform_real_distribution<float> scale_dist(0.02f, 3.0f);
  for (float& x : head_scales) x = scale_dist(rng);
  if (!d_k || !d_v || !d_kout || !d_vout || !d_loc || !d_scales || !d_errors || !d_head_scales || !d_amax || !d_kscales ||
      !d_vscales) {
    ADD_FAILURE() << "cudaMalloc failed";
    return result;
  }
  auto copy_in = [](void* dst, const void* src, std::size_t n) { return cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); };
  EXPECT_EQ(copy_in(d_k.get(), k_host.data(), k_host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(copy_in(d_v.get(), v_host.data(), v_host.size() * sizeof(T)), cudaSuccess);
  if (c.loc == LocKind::i64) EXPECT_EQ(copy_in(d_loc.get(), loc64.data(), loc64.size() * 8), cudaSuccess);
  if (c.loc == LocKind::i32) EXPECT_EQ(copy_in(d_loc.get(), loc32.data(), loc32.size() * 4), cudaSuccess);
  const float scales[2] = {c.k_scale, c.v_scale};
  EXPECT_EQ(copy_in(d_scales.get(), scales, sizeof scales), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_kout.get(), poison, d_kout.size()), cudaSuccess);
  if (!shared_out) EXPECT_EQ(cudaMemset(d_vout.get(), poison, d_vout.size()), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_errors.get(), 0, 8), cudaSuccess);
  EXPECT_EQ(copy_in(d_head_scales.get(), head_scales.data(), head_scales.size() * 4), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_amax.get(), 0, 8), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_kscales.get(), poison, d_kscales.size()), cudaSuccess);
  EXPECT_EQ(cudaMemset(d_vscales.get(), poison, d_vscales.size()), cudaSuccess);

  // One argument struct, filled twice: device pointers, then host pointers for the reference.
  // The scale-kind pointers of one side (device or host).
  struct ScalePointers {
    const float* head_scales;  // 2*H: K's, then V's
    float* amax;               // 2: K's, V's
    std::uint8_t* k_scales;    // separate scale tensors (bytes), or null when inline
    std::uint8_t* v_scales;
  };
  auto fill_args = [&](const std::uint8_t* k_base, const std::uint8_t* v_base, std::uint8_t* kout_base,
                       std::uint8_t* vout_base, const void* loc, const float* scale_ptr, unsigned long long* errors,
                       ScalePointers sp) {
    kvcast::DowncastArgs<T> a;
    const T* kb = reinterpret_cast<const T*>(k_base) + c.in_misalign;
    const T* vb = c.packed_kv ? kb + tensor_token : reinterpret_cast<const T*>(v_base) + c.in_misalign;
    a.k = c.has_k ? kb : nullptr;
    a.v = c.has_v ? vb : nullptr;
    a.num_tokens = N;
    a.heads = H;
    a.head_dim = D;
    a.in_head_stride = in_head_stride;
    a.in_token_stride = in_token_stride;
    std::uint8_t* ko = kout_base + margin + c.out_misalign;
    std::uint8_t* vo = shared_out ? ko + v_shift : vout_base + margin + c.out_misalign;
    a.k_out = c.has_k ? ko : nullptr;
    a.v_out = c.has_v ? vo : nullptr;
    a.out = layout;
    if (c.loc == LocKind::i64) a.loc = static_cast<const std::int64_t*>(loc);
    if (c.loc == LocKind::i32) a.loc = static_cast<const std::int32_t*>(loc);
    a.mult = c.mult;
    a.offset = c.offset;
    a.out_rows = c.checked_rows ? out_rows : kvcast::DowncastArgs<T>::kUncheckedRows;
    a.error_count = errors;
    a.k_scale = c.device_scale ? kvcast::Scale::in_device_memory(scale_ptr) : kvcast::Scale::host_value(c.k_scale);
    a.v_scale = c.device_scale ? kvcast::Scale::in_device_memory(scale_ptr + 1) : kvcast::Scale::host_value(c.v_scale);
    a.scale_kind = c.scale_kind;
    if (c.scale_kind != kvcast::ScaleKind::per_tensor) a.k_scale = a.v_scale = kvcast::Scale{};
    if (c.scale_kind == kvcast::ScaleKind::per_head) {
      a.k_head_scales = c.has_k ? sp.head_scales : nullptr;
      a.v_head_scales = c.has_v ? sp.head_scales + H : nullptr;
    }
    if (per_token_head) {
      float* k_scales = inline_scales ? reinterpret_cast<float*>(ko + inline_at) : reinterpret_cast<float*>(sp.k_scales + 4 * margin);
      float* v_scales = inline_scales ? reinterpret_cast<float*>(vo + inline_at) : reinterpret_cast<float*>(sp.v_scales + 4 * margin);
      a.k_scales_out = c.has_k ? k_scales : nullptr;
      a.v_scales_out = c.has_v ? v_scales : nullptr;
      a.scales_out = scale_layout;
      a.min_scale = c.min_scale;
    }
    if (c.amax) {
      a.k_amax = c.has_k && (c.amax_of & 1) ? sp.amax : nullptr;
      a.v_amax = c.has_v && (c.amax_of & 2) ? sp.amax + 1 : nullptr;
    }
    return a;
  };

  const auto dargs = fill_args(d_k.get(), d_v.get(), d_kout.get(), shared_out ? nullptr : d_vout.get(), d_loc.get(),
                               reinterpret_cast<const float*>(d_scales.get()),
                               reinterpret_cast<unsigned long long*>(d_errors.get()),
                               ScalePointers{reinterpret_cast<const float*>(d_head_scales.get()),
                                             reinterpret_cast<float*>(d_amax.get()), d_kscales.get(), d_vscales.get()});
  kvcast::detail::Plan plan;
  const kvcast::Status planned = kvcast::make_plan(dargs, plan, Mode);
  EXPECT_TRUE(planned.ok()) << planned.message() << "\n" << c.describe();
  if (!planned.ok()) return result;
  result.vec = plan.choice.vec;
  result.access = plan.choice.access == kvcast::tile::Access::vector ? plan.choice.vec : 1;
  result.dense = plan.choice.kernel == kvcast::detail::WriteKernel::dense;
  result.chunks_first = plan.choice.order == kvcast::detail::GridOrder::chunks_first;
  result.realign = plan.choice.kernel == kvcast::detail::WriteKernel::realigned;
  result.row_head_warp = plan.choice.kernel == kvcast::detail::WriteKernel::row_head_warp;
  result.row_head_lean = plan.choice.kernel == kvcast::detail::WriteKernel::row_head_lean;
  result.amax_lean = plan.choice.kernel == kvcast::detail::WriteKernel::amax_lean;
  result.amax_by_cta = c.amax && plan.choice.amax_adds_by_cta();
  result.tensors_apart = plan.choice.grid_z == 2;
  const kvcast::Status launched = kvcast::downcast<Format, Mode>(dargs);
  EXPECT_TRUE(launched.ok()) << launched.message() << "\n" << c.describe();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << c.describe();
  result.ran = launched.ok();

  std::vector<std::uint8_t> dev_kout(d_kout.size()), dev_vout(d_vout.size());
  EXPECT_EQ(cudaMemcpy(dev_kout.data(), d_kout.get(), dev_kout.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  if (!shared_out) EXPECT_EQ(cudaMemcpy(dev_vout.data(), d_vout.get(), dev_vout.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(&result.device_errors, d_errors.get(), 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(result.device_amax, d_amax.get(), 8, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<std::uint8_t> dev_kscales(d_kscales.size()), dev_vscales(d_vscales.size());
  EXPECT_EQ(cudaMemcpy(dev_kscales.data(), d_kscales.get(), dev_kscales.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(dev_vscales.data(), d_vscales.get(), dev_vscales.size(), cudaMemcpyDeviceToHost), cudaSuccess);

  // Host reference, same bytes, same poison.
  std::vector<std::uint8_t> ref_kout(static_cast<std::size_t>(out_bytes), poison);
  std::vector<std::uint8_t> ref_vout(shared_out ? 0 : static_cast<std::size_t>(out_bytes), poison);
  const void* host_loc = c.loc == LocKind::i64 ? static_cast<const void*>(loc64.data()) : static_cast<const void*>(loc32.data());
  std::vector<std::uint8_t> ref_kscales(static_cast<std::size_t>(scale_bytes), poison), ref_vscales(ref_kscales);
  const auto hargs = fill_args(reinterpret_cast<const std::uint8_t*>(k_host.data()),
                               reinterpret_cast<const std::uint8_t*>(v_host.data()), ref_kout.data(),
                               shared_out ? nullptr : ref_vout.data(), host_loc, scales, &result.reference_errors,
                               ScalePointers{head_scales.data(), result.reference_amax, ref_kscales.data(), ref_vscales.data()});
  const kvcast::Status ref_status = kvcast::ref::downcast<Format, Mode>(hargs);
  EXPECT_TRUE(ref_status.ok()) << ref_status.message();

  auto compare = [&](const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want, const char* which) {
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (got[i] == want[i]) continue;
      if (result.mismatches++ == 0) {
        std::ostringstream s;
        s << which << " byte " << i << " (offset " << static_cast<std::int64_t>(i) - margin - c.out_misalign
          << " from the output pointer): device 0x" << std::hex << int(got[i]) << ", reference 0x" << int(want[i])
          << ", poison 0x" << int(poison);
        result.first_mismatch = s.str();
      }
    }
  };
  compare(dev_kout, ref_kout, "k_out allocation");
  compare(dev_vout, ref_vout, "v_out allocation");
  compare(dev_kscales, ref_kscales, "k_scales_out allocation");
  compare(dev_vscales, ref_vscales, "v_scales_out allocation");
  for (int i = 0; i < 2; ++i) {  // bit for bit, but any NaN equals any NaN (torch.amax's NaN has no set payload)
    const float got = result.device_amax[i], want = result.reference_amax[i];
    if (std::memcmp(&got, &want, 4) != 0 && !(got != got && want != want) && result.mismatches++ == 0) {
      std::ostringstream s;
      s << (i == 0 ? "k_amax" : "v_amax") << ": device " << got << ", reference " << want;
      result.first_mismatch = s.str();
    }
  }
  return result;
}

// Runs with two poisons (a byte the kernel happened to write equal to the poison can't hide an
// unwritten one twice) and asserts everything.
template <class T, class Format, kvcast::Arithmetic Mode>
Outcome check_case(const Case& c) {
  Outcome last;
  for (std::uint8_t poison : {std::uint8_t{0xA5}, std::uint8_t{0x5A}}) {
    last = run_case<T, Format, Mode>(c, poison);
    EXPECT_TRUE(last.ran) << c.describe();
    EXPECT_EQ(last.mismatches, 0) << last.first_mismatch << "\n" << c.describe();
    EXPECT_EQ(last.device_errors, last.reference_errors) << c.describe();
  }
  return last;
}

}  // namespace kvtest

namespace kvtest {

// Row-heads of `head_dim` elements that a per-(token, head) reduction must get right, as input
// bit patterns of T, one row-head after the other (cycle them with Case::input_bits over a
// contiguous input): all zeros, all negative zeros, one +inf, one -inf, one NaN, subnormals
// only, T's largest finite magnitude, a single non-zero element, and a plain random row.
template <class T>
std::vector<std::uint32_t> hostile_row_heads(std::int64_t head_dim, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  constexpr bool kF32 = sizeof(T) == 4;
  const bool f16 = kvcast::dtype_of<T>::value == kvcast::DType::f16;
  const std::uint32_t sign = kF32 ? 0x80000000u : 0x8000u;
  const std::uint32_t inf = kF32 ? 0x7f800000u : f16 ? 0x7c00u : 0x7f80u;
  const std::uint32_t nan = kF32 ? 0x7fc00000u : f16 ? 0x7e00u : 0x7fc0u;
  const std::uint32_t max_finite = kF32 ? 0x7f7fffffu : f16 ? 0x7bffu : 0x7f7fu;
  const std::uint32_t mantissa_mask = kF32 ? 0x7fffffu : f16 ? 0x3ffu : 0x7fu;
  std::vector<std::uint32_t> bits;
  auto row = [&](auto element) {
    const std::int64_t at = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(head_dim));
    for (std::int64_t d = 0; d < head_dim; ++d) bits.push_back(element(d, d == at));
  };
  auto random = [&] { return bits_of<T>(normal(rng)); };
  row([&](std::int64_t, bool) { return 0u; });
  row([&](std::int64_t, bool) { return sign; });
  row([&](std::int64_t, bool one) { return one ? inf : random(); });
  row([&](std::int64_t, bool one) { return one ? inf | sign : random(); });
  row([&](std::int64_t, bool one) { return one ? nan : random(); });
  row([&](std::int64_t, bool) { return static_cast<std::uint32_t>(rng() & mantissa_mask) | (rng() & 1 ? sign : 0u); });
  row([&](std::int64_t, bool one) { return one ? max_finite | (rng() & 1 ? sign : 0u) : random(); });
  row([&](std::int64_t, bool one) { return one ? bits_of<T>(-5.0f) : 0u; });
  row([&](std::int64_t, bool) { return random(); });
  return bits;
}

}  // namespace kvtest
