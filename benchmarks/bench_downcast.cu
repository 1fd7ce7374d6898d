// kvcast benchmarks (Google Benchmark, CUDA-event manual time).
//
// Every row times one variant of the KV-cache downcast and, in the same benchmark and the same
// way, a device-to-device copy of the same bytes (bytes read + written), so each row carries
// its own roofline ratio. Variants: copy (the roofline), empty (the launch floor), legacy
// (one block per token, scalar), sglang (SGLang's vectorized design), kvcast (fp32 arithmetic,
// the default) and kvcast_ip (input precision, SGLang's numerics); and two that show where the
// time goes: copy_kernel (the same copy as a plain kernel) and no_math (kvcast's input-precision
// kernel with its conversion taken out: the job's traffic in kvcast's pattern, no arithmetic);
// kvcast_pdl and kvcast_ip_pdl launch kvcast with programmatic dependent launch, so that in a
// graph each call's launch overlaps the call before it, as it would overlap its producer's.
// rope_fused is examples/fused_rope.cuh (K rotated, then the block-level write); rope_split the
// same work as two kernels (rope_only writing the rotated K, then kvcast's downcast). Their
// rows count the downcast's bytes, so "% of copy" reads as for kvcast. token_head_floor is the
// per-(token, head) write with nothing general left (baselines.cuh), its rows' codes and scales
// checked against kvcast's (the bit_exact counter); scatter_copy the write's rows (and
// per-(token, head) scales) scattered by a plain kernel with no arithmetic, the floor of the
// write's memory pattern, as gather_copy is the read's.
//   timing: stream = B calls launched back to back from the host; graph = the same B calls
//           captured in a CUDA graph and replayed. Time per call = elapsed / B.
//   cache:  hot = the same buffers every call; cold = an L2 sweep (a read of 4x L2) before each
//           sample and B distinct buffer sets, so every call starts from DRAM.
// Slots: loc is a random permutation of the tokens (every token's row lands somewhere else);
// rows tagged `sorted` use loc = identity, which isolates what the scatter costs; rows tagged
// `scales_zeroed` zero the amax output before every call (Shape::zero_amax).
// Name: variant/dtype/format/timing/cache/TOKENSxHEADSxDIM[/tag]
#include <benchmark/benchmark.h>

#include <kvcast/kvcast.cuh>
#include <kvcast/nvfp4.cuh>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../examples/fused_rope.cuh"
#include "baselines.cuh"

namespace {

#define BENCH_CUDA(expr)                                                                        \
  do {                                                                                          \
    const cudaError_t bench_err = (expr);                                                       \
    if (bench_err != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(bench_err)); \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

constexpr int kMaxBatch = 32;      // calls per timed sample, fewer for large calls (batch_for)
constexpr int kIterations = 12;    // timed samples per benchmark (plus warm-up)
constexpr std::size_t kPoolBytes = std::size_t{24} << 30;
constexpr int kMaxHeads = 64;      // per-head scale arrays

// The same-bytes copy's length: half the traffic (read, then written), in whole 16-byte words.
// cudaMemcpy of a length that is not a multiple of 16 (odd shapes, a page table's indices) takes
// a slower path, which would flatter the row it is the roofline of (NOTES #16a).
std::size_t copy_bytes(std::int64_t traffic) { return (static_cast<std::size_t>(traffic) / 2 + 15) / 16 * 16; }

// baseline::copy_kernel over `bytes` bytes from `src` to `dst` (both 16-byte aligned).
void launch_copy_kernel(const void* src, void* dst, std::size_t bytes, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((bytes / sizeof(int4) + 1 + 255) / 256);
  baseline::copy_kernel<<<blocks, 256, 0, stream>>>(static_cast<const int4*>(src), static_cast<int4*>(dst), bytes);
}

// The (K, V) scale pairs of Gpu::scales; Shape::scale_pair indexes them; `name` tags the rows.
struct ScalePair {
  float k, v;
  const char* name;
};
constexpr ScalePair kScalePairs[] = {{0.0173f, 0.0229f, "calibrated"}, {1.0f, 1.0f, "1"},     {3.0f, 3.0f, "3"},
                                     {0.5f, 0.5f, "0.5"},              {1.0f / 3, 1.0f / 3, "1/3"}, {0.1f, 0.1f, "0.1"},
                                     {0.7f, 1.3f, "0.7/1.3"},          {0.37f, 0.37f, "0.37"}};
constexpr int kScalePairCount = static_cast<int>(sizeof kScalePairs / sizeof kScalePairs[0]);

struct Gpu {
  cudaDeviceProp prop{};
  int l2_bytes = 0;
  std::uint8_t* pool = nullptr;
  const int4* sweep = nullptr;  // 4x L2, read to evict everything
  std::size_t sweep_count = 0;
  int* sink = nullptr;
  float* scales = nullptr;
  float* head_scales = nullptr;  // kMaxHeads of K's, then kMaxHeads of V's
  float* amax = nullptr;         // K's and V's
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
};

Gpu& gpu() {
  static Gpu g = [] {
    Gpu s;
    BENCH_CUDA(cudaGetDeviceProperties(&s.prop, 0));
    s.l2_bytes = s.prop.l2CacheSize;
    BENCH_CUDA(cudaMalloc(&s.pool, kPoolBytes));
    s.sweep_count = 4 * static_cast<std::size_t>(s.l2_bytes) / sizeof(int4);
    int4* sweep = nullptr;
    BENCH_CUDA(cudaMalloc(&sweep, s.sweep_count * sizeof(int4)));
    BENCH_CUDA(cudaMemset(sweep, 1, s.sweep_count * sizeof(int4)));
    s.sweep = sweep;
    BENCH_CUDA(cudaMalloc(&s.sink, sizeof(int)));
    // Scale pairs (K, V), kScalePairs: calibrated-looking values (the default, and the division
    // is real work), then the values people type (issue #19's axis): 1 (a power of two: an exact
    // reciprocal), 3 (a short significand: many bf16 quotients land on fp8 rounding boundaries),
    // 0.5, 1/3, 0.1, 0.7/1.3 and 0.37 (decimal: a quotient on a boundary once or twice a binade).
    float scales[2 * kScalePairCount];
    for (int i = 0; i < kScalePairCount; ++i) scales[2 * i] = kScalePairs[i].k, scales[2 * i + 1] = kScalePairs[i].v;
    BENCH_CUDA(cudaMalloc(&s.scales, sizeof scales));
    BENCH_CUDA(cudaMemcpy(s.scales, scales, sizeof scales, cudaMemcpyHostToDevice));
    // Per-head scales around the calibrated pair, one a head.
    std::vector<float> heads(2 * kMaxHeads);
    for (int h = 0; h < 2 * kMaxHeads; ++h) heads[h] = (h < kMaxHeads ? 0.0173f : 0.0229f) * (1.0f + 0.01f * static_cast<float>(h % kMaxHeads));
    BENCH_CUDA(cudaMalloc(&s.head_scales, heads.size() * 4));
    BENCH_CUDA(cudaMemcpy(s.head_scales, heads.data(), heads.size() * 4, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMalloc(&s.amax, 8));
    BENCH_CUDA(cudaMemset(s.amax, 0, 8));
    BENCH_CUDA(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    BENCH_CUDA(cudaEventCreate(&s.start));
    BENCH_CUDA(cudaEventCreate(&s.stop));
    return s;
  }();
  return g;
}

__global__ void empty_kernel() {}

// Reads the sweep buffer (clean lines only: no write-back lands in the timed region).
__global__ void l2_sweep(const int4* p, std::size_t n, int* sink) {
  int acc = 0;
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x)
    acc ^= p[i].x ^ p[i].w;
  if (acc == 0x7A11) *sink = acc;
}

// Normal-ish random values (sum of uniforms from a hash), never zeros.
template <class T>
__global__ void fill_random(T* p, std::size_t n, std::uint64_t seed, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    std::uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    float acc = 0.f;
    for (int r = 0; r < 4; ++r) {
      h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29;
      acc += static_cast<float>(h >> 40) * (1.0f / 16777216.0f) - 0.5f;
    }
    p[i] = static_cast<T>(acc * scale);
  }
}

enum class Variant {
  copy, empty, legacy, sglang, kvcast, kvcast_ip, copy_kernel, no_math, kvcast_pdl, kvcast_ip_pdl, rope_fused, rope_split,
  kvcast_amax, kvcast_head, kvcast_head_amax, kvcast_token_head, kvcast_token_head_amax, kvcast_nvfp4, kvcast_nvfp4_fm,
  upcast, upcast_token_head, upcast_nvfp4, gather_copy, token_head_floor, scatter_copy
};
enum class Timing { stream, graph };
enum class Cache { hot, cold };
const char* name_of(Variant v) {
  switch (v) {
    case Variant::copy: return "copy";
    case Variant::empty: return "empty";
    case Variant::legacy: return "legacy";
    case Variant::sglang: return "sglang";
    case Variant::kvcast: return "kvcast";
    case Variant::kvcast_ip: return "kvcast_ip";
    case Variant::copy_kernel: return "copy_kernel";
    case Variant::gather_copy: return "gather_copy";
    case Variant::token_head_floor: return "token_head_floor";
    case Variant::scatter_copy: return "scatter_copy";
    case Variant::no_math: return "no_math";
    case Variant::kvcast_pdl: return "kvcast_pdl";
    case Variant::kvcast_ip_pdl: return "kvcast_ip_pdl";
    case Variant::rope_fused: return "rope_fused";
    case Variant::rope_split: return "rope_split";
    case Variant::kvcast_amax: return "kvcast_amax";
    case Variant::kvcast_head: return "kvcast_head";
    case Variant::kvcast_head_amax: return "kvcast_head_amax";
    case Variant::kvcast_token_head: return "kvcast_token_head";
    case Variant::kvcast_token_head_amax: return "kvcast_token_head_amax";
    case Variant::kvcast_nvfp4: return "kvcast_nvfp4";
    case Variant::kvcast_nvfp4_fm: return "kvcast_nvfp4_fm";
    case Variant::upcast: return "upcast";
    case Variant::upcast_token_head: return "upcast_token_head";
    case Variant::upcast_nvfp4: return "upcast_nvfp4";
  }
  return "?";
}

struct Shape {
  std::int64_t tokens, heads, dim;
  bool qkv_slice = false;  // K and V as slices of a packed [tokens, 4H + H + H, dim] projection
  const char* tag = "";
  int scale_pair = 0;  // which (K, V) scales of Gpu::scales (kScalePairs): 0 the calibrated pair
  bool sorted_slots = false;  // loc = identity instead of a random permutation
  bool rope = false;          // a rotated-K buffer a set, positions and tables (rope_* variants)
  // Per-(token, head) scale tensors a set; their bytes count in the traffic (and the copy's),
  // so that every variant of the shape is timed against the copy of the per-(token, head) write.
  bool token_scales = false;
  // NVFP4's codes (half a byte an element) and block scales (a byte a 16): the traffic and the
  // copy are the NVFP4 write's, for every variant of the shape.
  bool nvfp4 = false;
  // The amax output zeroed before every call of every variant (an 8-byte memset node), as a
  // caller that wants each step's amax does: its first wave then finds a floor of 0. Otherwise
  // it accumulates over the calls and, the inputs repeating, is soon above anything a call adds.
  bool zero_amax = false;
};

constexpr std::int64_t kRopePositions = 4096;

// One problem instance, with `count` independent buffer sets carved from the pool.
template <class T>
struct Problem {
  struct Set {
    T* k;
    T* v;
    std::uint8_t* k_out;
    std::uint8_t* v_out;
    std::int64_t* loc;
    std::uint8_t* copy_dst;
    T* k_rotated;  // rope_split's intermediate (Shape::rope)
    float* k_scales;  // [tokens, heads] each (Shape::token_scales), or NVFP4's block scales (Shape::nvfp4)
    float* v_scales;
  };
  Shape shape;
  std::int64_t elems = 0, in_token_stride = 0, traffic = 0;
  std::vector<Set> sets;
  example::Rope rope{};  // positions and tables (Shape::rope)

  Problem(const Shape& s, int wanted_sets) : shape(s) {
    const std::int64_t row = s.heads * s.dim;
    elems = s.tokens * row;
    in_token_stride = s.qkv_slice ? 6 * row : row;
    const std::int64_t scale_floats = s.token_scales ? s.tokens * s.heads : 0;
    // A tensor's code bytes, and its side output's (per-(token, head) scales, NVFP4's block scales).
    const std::int64_t code_bytes = s.nvfp4 ? elems / 2 : elems;
    const std::int64_t side_bytes = s.nvfp4 ? elems / 16 : 4 * scale_floats;
    traffic = 2 * (elems * static_cast<std::int64_t>(sizeof(T)) + code_bytes + side_bytes) + s.tokens * 8;
    auto round_up = [](std::size_t b) { return (b + 255) / 256 * 256; };
    const std::size_t in_bytes = round_up((s.qkv_slice ? 1 : 2) * s.tokens * in_token_stride * sizeof(T));
    const std::size_t rot_bytes = s.rope ? round_up(elems * sizeof(T)) : 0;
    const std::size_t scale_bytes = round_up(side_bytes);
    const std::size_t set_bytes =
        in_bytes + 2 * round_up(elems) + round_up(s.tokens * 8) + round_up(traffic / 2) + rot_bytes + 2 * scale_bytes;
    const std::size_t rope_bytes = s.rope ? round_up(s.tokens * 8) + 2 * round_up(kRopePositions * (s.dim / 2) * 4) : 0;
    const int count = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(wanted_sets, (kPoolBytes - rope_bytes) / set_bytes)));
    std::vector<std::int64_t> perm(s.tokens);
    std::iota(perm.begin(), perm.end(), 0);
    if (!s.sorted_slots) std::shuffle(perm.begin(), perm.end(), std::mt19937_64(s.tokens * 31 + row));
    std::uint8_t* p = gpu().pool;
    for (int i = 0; i < count; ++i) {
      Set set;
      T* in = reinterpret_cast<T*>(p);
      set.k = s.qkv_slice ? in + 4 * row : in;
      set.v = s.qkv_slice ? in + 5 * row : in + s.tokens * in_token_stride;
      const std::size_t in_elems = in_bytes / sizeof(T);
      fill_random<T><<<1024, 256, 0, gpu().stream>>>(in, in_elems, 1234 + i, 8.0f);
      p += in_bytes;
      set.k_out = p, p += round_up(elems);
      set.v_out = p, p += round_up(elems);
      set.loc = reinterpret_cast<std::int64_t*>(p), p += round_up(s.tokens * 8);
      set.copy_dst = p, p += round_up(traffic / 2);
      set.k_rotated = s.rope ? reinterpret_cast<T*>(p) : nullptr, p += rot_bytes;
      set.k_scales = reinterpret_cast<float*>(p), p += scale_bytes;
      set.v_scales = reinterpret_cast<float*>(p), p += scale_bytes;
      BENCH_CUDA(cudaMemcpyAsync(set.loc, perm.data(), s.tokens * 8, cudaMemcpyHostToDevice, gpu().stream));
      sets.push_back(set);
    }
    if (s.rope) {  // after the sets, also from the pool: positions, then the cos and sin tables
      const std::int64_t half = s.dim / 2;
      std::vector<std::int64_t> positions(s.tokens);
      std::mt19937_64 rng(s.tokens);
      for (auto& x : positions) x = static_cast<std::int64_t>(rng() % kRopePositions);
      std::vector<float> table(kRopePositions * half);
      for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
      auto* pos = reinterpret_cast<std::int64_t*>(p);
      p += round_up(s.tokens * 8);
      auto* cos = reinterpret_cast<float*>(p);
      p += round_up(table.size() * 4);
      auto* sin = reinterpret_cast<float*>(p);
      BENCH_CUDA(cudaMemcpyAsync(pos, positions.data(), s.tokens * 8, cudaMemcpyHostToDevice, gpu().stream));
      BENCH_CUDA(cudaMemcpyAsync(cos, table.data(), table.size() * 4, cudaMemcpyHostToDevice, gpu().stream));
      BENCH_CUDA(cudaMemcpyAsync(sin, table.data(), table.size() * 4, cudaMemcpyHostToDevice, gpu().stream));
      rope = example::Rope{cos, sin, pos};
    }
    BENCH_CUDA(cudaStreamSynchronize(gpu().stream));
  }

  kvcast::DowncastArgs<T> args(const Set& set) const {
    kvcast::DowncastArgs<T> a;
    a.k = set.k;
    a.v = set.v;
    a.k_out = set.k_out;
    a.v_out = set.v_out;
    a.num_tokens = shape.tokens;
    a.heads = shape.heads;
    a.head_dim = shape.dim;
    a.in_token_stride = in_token_stride;
    a.loc = set.loc;
    a.out_rows = shape.tokens;
    a.k_scale = kvcast::Scale::in_device_memory(gpu().scales + 2 * shape.scale_pair);
    a.v_scale = kvcast::Scale::in_device_memory(gpu().scales + 2 * shape.scale_pair + 1);
    return a;
  }

  // baseline::token_head_floor on `set`: a warp a row-head, 8 a CTA.
  template <class Format, int Vec, int Side>
  void launch_token_head_floor(const Set& set, cudaStream_t stream) const {
    const auto row_heads = static_cast<std::uint32_t>(shape.tokens * shape.heads);
    baseline::token_head_floor<T, Format, Vec, Side><<<(row_heads + 7) / 8, 256, 0, stream>>>(
        set.k, set.v, set.loc, set.k_out, set.v_out, set.k_scales, set.v_scales, row_heads,
        static_cast<std::uint32_t>(__builtin_ctzll(static_cast<unsigned long long>(shape.heads))), kvcast::DowncastArgs<T>{}.min_scale);
    BENCH_CUDA(cudaGetLastError());
  }

  // The write's rows scattered by a plain kernel (baseline::scatter_narrow_kernel), with the
  // per-(token, head) scales where the shape has them.
  template <int kItems>
  void launch_scatter_copy(const Set& set, cudaStream_t stream) const {
    const std::int64_t pieces = shape.heads * shape.dim / 16, total = shape.tokens * pieces;
    if (shape.dim % 16 != 0 || shape.qkv_slice || total >= (std::int64_t{1} << 32))
      std::fprintf(stderr, "scatter_copy: contiguous rows of heads of 16k elements, fewer than 2^32 pieces\n"), std::abort();
    baseline::scatter_narrow_kernel<kItems><<<static_cast<unsigned>((total + 256 * kItems - 1) / (256 * kItems)), 256, 0, stream>>>(
        reinterpret_cast<const uint4*>(set.k), reinterpret_cast<const uint4*>(set.v), set.loc, reinterpret_cast<uint4*>(set.k_out),
        reinterpret_cast<uint4*>(set.v_out), shape.token_scales ? set.k_scales : nullptr, shape.token_scales ? set.v_scales : nullptr,
        static_cast<std::uint32_t>(total), static_cast<std::uint32_t>(pieces), static_cast<std::uint32_t>(shape.dim / 16));
    BENCH_CUDA(cudaGetLastError());
  }

  template <class Format>
  void launch(Variant variant, const Set& set, cudaStream_t stream) const {
    const int row = static_cast<int>(shape.heads * shape.dim);
    if (shape.zero_amax) BENCH_CUDA(cudaMemsetAsync(gpu().amax, 0, 2 * sizeof(float), stream));
    switch (variant) {
      case Variant::copy:
        BENCH_CUDA(cudaMemcpyAsync(set.copy_dst, set.k, copy_bytes(traffic), cudaMemcpyDeviceToDevice, stream));
        break;
      case Variant::empty: empty_kernel<<<1, 32, 0, stream>>>(); break;
      case Variant::legacy:
        if constexpr (sizeof(T) == 2)
          baseline::legacy_scalar<T><<<static_cast<unsigned>(shape.tokens), std::min(row, 1024), 0, stream>>>(
              set.k, set.v, gpu().scales, gpu().scales + 1, set.k_out, set.v_out, row, 1, 0, set.loc);
        break;
      case Variant::sglang:
        if constexpr (sizeof(T) == 2) {
          const int vecs = row / (16 / static_cast<int>(sizeof(T)));
          const dim3 grid(static_cast<unsigned>(shape.tokens), (vecs + baseline::kSglangBlock - 1) / baseline::kSglangBlock);
          baseline::sglang_vectorized<T><<<grid, baseline::kSglangBlock, 0, stream>>>(
              set.k, set.v, gpu().scales, gpu().scales + 1, set.k_out, set.v_out, static_cast<int>(shape.tokens), row, 1,
              0, set.loc);
        }
        break;
      case Variant::kvcast:
      case Variant::kvcast_pdl: {
        kvcast::DowncastArgs<T> a = args(set);
        a.pdl = variant == Variant::kvcast_pdl;
        const kvcast::Status s = kvcast::downcast<Format>(a, stream);
        if (!s.ok()) std::fprintf(stderr, "kvcast: %s\n", s.message()), std::abort();
        break;
      }
      case Variant::kvcast_ip:
      case Variant::kvcast_ip_pdl: {
        kvcast::DowncastArgs<T> a = args(set);
        a.pdl = variant == Variant::kvcast_ip_pdl;
        const kvcast::Status s = kvcast::downcast<Format, kvcast::Arithmetic::input_precision>(a, stream);
        if (!s.ok()) std::fprintf(stderr, "kvcast: %s\n", s.message()), std::abort();
        break;
      }
      case Variant::kvcast_amax:
      case Variant::kvcast_head:
      case Variant::kvcast_head_amax:
      case Variant::kvcast_token_head:
      case Variant::kvcast_token_head_amax: {
        kvcast::DowncastArgs<T> a = args(set);
        const bool amax = variant == Variant::kvcast_amax || variant == Variant::kvcast_head_amax ||
                          variant == Variant::kvcast_token_head_amax;
        if (amax) {  // accumulated over the calls (the max of equal inputs stays), or zeroed (zero_amax)
          a.k_amax = gpu().amax;
          a.v_amax = gpu().amax + 1;
        }
        if (variant == Variant::kvcast_head || variant == Variant::kvcast_head_amax) {
          a.scale_kind = kvcast::ScaleKind::per_head;
          a.k_scale = a.v_scale = kvcast::Scale{};
          a.k_head_scales = gpu().head_scales;
          a.v_head_scales = gpu().head_scales + kMaxHeads;
        }
        if (variant == Variant::kvcast_token_head || variant == Variant::kvcast_token_head_amax) {
          a.scale_kind = kvcast::ScaleKind::per_token_head;
          a.k_scale = a.v_scale = kvcast::Scale{};
          a.k_scales_out = set.k_scales;
          a.v_scales_out = set.v_scales;
        }
        const kvcast::Status s = kvcast::downcast<Format>(a, stream);
        if (!s.ok()) std::fprintf(stderr, "%s: %s\n", name_of(variant), s.message()), std::abort();
        break;
      }
      case Variant::kvcast_nvfp4:
      case Variant::kvcast_nvfp4_fm: {  // the shape's global scales as g, block scales [tokens, heads, dim / 16]
        kvcast::DowncastArgs<T> a = args(set);
        a.k_block_scales_out = set.k_scales;
        a.v_block_scales_out = set.v_scales;
        const kvcast::Status s = variant == Variant::kvcast_nvfp4 ? kvcast::downcast<kvcast::nvfp4>(a, stream)
                                                                  : kvcast::downcast<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(a, stream);
        if (!s.ok()) std::fprintf(stderr, "%s: %s\n", name_of(variant), s.message()), std::abort();
        break;
      }
      case Variant::copy_kernel: launch_copy_kernel(set.k, set.copy_dst, static_cast<std::size_t>(traffic / 2), stream); break;
      case Variant::rope_fused: {
        const kvcast::Status s = example::rope_then_write<kvcast::Fp8<Format>>(args(set), rope, stream);
        if (!s.ok()) std::fprintf(stderr, "rope_fused: %s\n", s.message()), std::abort();
        break;
      }
      case Variant::rope_split: {
        BENCH_CUDA(example::rope_only(set.k, set.k_rotated, rope, shape.tokens, shape.heads, shape.dim, stream));
        kvcast::DowncastArgs<T> a = args(set);
        a.k = set.k_rotated;
        const kvcast::Status s = kvcast::downcast<Format>(a, stream);
        if (!s.ok()) std::fprintf(stderr, "rope_split: %s\n", s.message()), std::abort();
        break;
      }
      case Variant::no_math:
        if constexpr (sizeof(T) == 2) {
          const kvcast::Status s = kvcast::downcast<baseline::HighByte, kvcast::Arithmetic::input_precision>(args(set), stream);
          if (!s.ok()) std::fprintf(stderr, "no_math: %s\n", s.message()), std::abort();
        }
        break;
      case Variant::token_head_floor:
        if constexpr (sizeof(T) == 2) {
          switch (shape.dim) {
            case 64: launch_token_head_floor<Format, 2, 0>(set, stream); break;
            case 128: launch_token_head_floor<Format, 4, 0>(set, stream); break;
            case 256: launch_token_head_floor<Format, 8, 0>(set, stream); break;
            case 576: launch_token_head_floor<Format, 16, 2>(set, stream); break;
            default: std::fprintf(stderr, "token_head_floor: head_dim %lld\n", static_cast<long long>(shape.dim)), std::abort();
          }
        }
        break;
      case Variant::scatter_copy:  // one piece a thread: faster than two on the H200 (NOTES #15zy)
        if constexpr (sizeof(T) == 2) launch_scatter_copy<1>(set, stream);
        break;
      case Variant::upcast:
      case Variant::upcast_token_head:
      case Variant::upcast_nvfp4:
      case Variant::gather_copy:  // the read's variants run on ReadProblem
        std::fprintf(stderr, "%s: a read variant on a write's problem\n", name_of(variant)), std::abort();
    }
  }
};

// Calls per sample: 32 for small calls, down to 2 once a call moves a few hundred MB (the
// sample is long enough to time, and cold runs need a buffer set per call).
int batch_for(std::int64_t traffic) {
  return static_cast<int>(std::clamp<std::int64_t>((std::int64_t{256} << 20) / std::max<std::int64_t>(traffic, 1), 2, kMaxBatch));
}

// Times `variant` kIterations samples of `calls` calls; returns each sample's time per call (s).
// Problem: a write's (Problem) or a read's (ReadProblem).
template <class Format, class Problem>
std::vector<double> sample(const Problem& problem, Variant variant, Timing timing, Cache cache, int calls) {
  Gpu& g = gpu();
  const auto& sets = problem.sets;
  auto batch = [&](cudaStream_t s) {
    for (int j = 0; j < calls; ++j) problem.template launch<Format>(variant, sets[j % sets.size()], s);
  };
  cudaGraphExec_t exec = nullptr;
  if (timing == Timing::graph) {
    cudaGraph_t graph;
    BENCH_CUDA(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
    batch(g.stream);
    BENCH_CUDA(cudaStreamEndCapture(g.stream, &graph));
    BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    BENCH_CUDA(cudaGraphDestroy(graph));
  }
  std::vector<double> times;
  for (int it = -3; it < kIterations; ++it) {  // three warm-up samples
    if (cache == Cache::cold) l2_sweep<<<4 * g.prop.multiProcessorCount, 512, 0, g.stream>>>(g.sweep, g.sweep_count, g.sink);
    BENCH_CUDA(cudaEventRecord(g.start, g.stream));
    if (exec) BENCH_CUDA(cudaGraphLaunch(exec, g.stream)); else batch(g.stream);
    BENCH_CUDA(cudaEventRecord(g.stop, g.stream));
    BENCH_CUDA(cudaEventSynchronize(g.stop));
    BENCH_CUDA(cudaGetLastError());
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, g.start, g.stop));
    if (it >= 0) times.push_back(ms * 1e-3 / calls);
  }
  if (exec) BENCH_CUDA(cudaGraphExecDestroy(exec));
  return times;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// A row's samples (time per call, s) as Google Benchmark's iterations, and its counters: the
// median time, GB/s, the same bytes' copy (measured in the same row) and the share of it.
void report(benchmark::State& state, const std::vector<double>& times, double copy, std::int64_t traffic, std::size_t sets,
            int calls) {
  std::size_t i = 0;
  for (auto _ : state) state.SetIterationTime(times[i++ % times.size()]);
  const double t = median(times);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * traffic);
  state.counters["us"] = t * 1e6;
  state.counters["GBps"] = traffic / t * 1e-9;
  state.counters["copy_GBps"] = traffic / copy * 1e-9;
  state.counters["pct_of_copy"] = 100.0 * copy / t;
  state.counters["traffic_MB"] = traffic * 1e-6;
  state.counters["sets"] = static_cast<double>(sets);
  state.counters["calls_per_sample"] = calls;
}

// Whether `variant` writes the codes and scales that kvcast's per-(token, head) write does, byte
// for byte, on the problem's first set (each output poisoned before each run).
template <class T, class Format>
bool writes_as_token_head(const Problem<T>& problem, Variant variant) {
  const auto& set = problem.sets[0];
  const std::size_t codes = static_cast<std::size_t>(problem.elems), scales = static_cast<std::size_t>(problem.shape.tokens * problem.shape.heads) * 4;
  auto run = [&](Variant v) {
    std::vector<std::uint8_t> out(2 * codes + 2 * scales);
    BENCH_CUDA(cudaMemsetAsync(set.k_out, 0xA5, codes, gpu().stream));
    BENCH_CUDA(cudaMemsetAsync(set.v_out, 0xA5, codes, gpu().stream));
    BENCH_CUDA(cudaMemsetAsync(set.k_scales, 0xA5, scales, gpu().stream));
    BENCH_CUDA(cudaMemsetAsync(set.v_scales, 0xA5, scales, gpu().stream));
    problem.template launch<Format>(v, set, gpu().stream);
    BENCH_CUDA(cudaMemcpyAsync(out.data(), set.k_out, codes, cudaMemcpyDeviceToHost, gpu().stream));
    BENCH_CUDA(cudaMemcpyAsync(out.data() + codes, set.v_out, codes, cudaMemcpyDeviceToHost, gpu().stream));
    BENCH_CUDA(cudaMemcpyAsync(out.data() + 2 * codes, set.k_scales, scales, cudaMemcpyDeviceToHost, gpu().stream));
    BENCH_CUDA(cudaMemcpyAsync(out.data() + 2 * codes + scales, set.v_scales, scales, cudaMemcpyDeviceToHost, gpu().stream));
    BENCH_CUDA(cudaStreamSynchronize(gpu().stream));
    return out;
  };
  return run(Variant::kvcast_token_head) == run(variant);
}

template <class T, class Format>
void bm_downcast(benchmark::State& state, Variant variant, Timing timing, Cache cache, Shape shape) {
  const int calls = batch_for(2 * shape.tokens * shape.heads * shape.dim * static_cast<std::int64_t>(sizeof(T) + (shape.nvfp4 ? 0 : 1)));
  const Problem<T> problem(shape, cache == Cache::cold ? calls : 1);
  if (cache == Cache::cold && problem.sets.size() < 2) {
    state.SkipWithError("not enough memory for two buffer sets");
    return;
  }
  const double copy = median(sample<Format>(problem, Variant::copy, timing, cache, calls));  // the copy is sampled first
  report(state, sample<Format>(problem, variant, timing, cache, calls), copy, problem.traffic, problem.sets.size(), calls);
  if (variant == Variant::token_head_floor) state.counters["bit_exact"] = writes_as_token_head<T, Format>(problem, variant) ? 1 : 0;
}

// ---- The read (upcast): gathers of cache rows by slots or a page table, dequantized. --------

__global__ void fill_bytes(std::uint8_t* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    std::uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29;
    p[i] = static_cast<std::uint8_t>(h >> 40);
  }
}

// A read: `tokens` output tokens of heads x dim from a pool of `cache_rows` rows (contiguous;
// paged NHD by `page` rows with a page table), K and V or K alone (an MLA cache).
struct ReadShape {
  std::int64_t tokens, heads, dim, cache_rows;
  bool both = true;
  bool page_table = false;  // rows by a page table (batch sequences of whole pages), else by slots
  bool whole_pool = false;  // every row in order (no slots): dequantizing the pool
  std::int64_t page = 64;
  std::int64_t batch = 64;
  const char* tag = "read";
  // An NVFP4 cache (codes half a byte an element, a block-scale byte a 16): the traffic and the
  // copy are the NVFP4 read's, for every variant of the shape.
  bool nvfp4 = false;
};

// One read instance, `count` buffer sets from the pool. Traffic: the codes read, the outputs
// written, the indices (slots or page table and cu_seq_lens) and, per (token, head), the scales.
template <class T>
struct ReadProblem {
  struct Set {
    std::uint8_t* k_cache;
    std::uint8_t* v_cache;
    T* k;
    T* v;
    std::int64_t* loc;
    std::int32_t* block_table;
    std::int32_t* cu;
    float* k_scales;  // [cache_rows, heads]
    float* v_scales;
    std::uint8_t* copy_dst;
  };
  ReadShape shape;
  std::int64_t elems = 0, traffic = 0, max_pages = 0;
  std::vector<Set> sets;

  ReadProblem(const ReadShape& s, int wanted_sets, bool token_scales) : shape(s) {
    const int tensors = s.both ? 2 : 1;
    elems = s.tokens * s.heads * s.dim;
    max_pages = s.page_table ? (s.tokens / s.batch + s.page - 1) / s.page : 0;
    const std::int64_t index_bytes = s.whole_pool ? 0 : s.page_table ? s.batch * max_pages * 4 + (s.batch + 1) * 4 : s.tokens * 8;
    const std::int64_t scale_bytes_read =
        s.nvfp4 ? tensors * elems / 16 : token_scales ? tensors * s.tokens * s.heads * 4 : 0;
    const std::int64_t code_bytes_read = s.nvfp4 ? elems / 2 : elems;
    traffic = tensors * (code_bytes_read + elems * static_cast<std::int64_t>(sizeof(T))) + index_bytes + scale_bytes_read;
    auto round_up = [](std::size_t b) { return (b + 255) / 256 * 256; };
    const std::size_t cache_bytes = round_up(s.cache_rows * s.heads * s.dim);
    const std::size_t out_bytes = round_up(elems * sizeof(T));
    const std::size_t scale_bytes = round_up(s.cache_rows * s.heads * std::max<std::int64_t>(4, s.dim / 16));
    const std::size_t table_bytes = round_up(s.batch * max_pages * 4) + round_up((s.batch + 1) * 4);
    const std::size_t set_bytes = tensors * (cache_bytes + out_bytes + scale_bytes) + round_up(s.tokens * 8) + table_bytes +
                                  round_up(traffic / 2);
    const int count = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(wanted_sets, kPoolBytes / set_bytes)));
    // Slots: distinct random rows of the pool. Page table: `batch` sequences of tokens / batch
    // tokens, each on distinct random pages.
    std::mt19937_64 rng(s.tokens * 131 + s.cache_rows);
    std::vector<std::int64_t> rows(s.cache_rows);
    std::iota(rows.begin(), rows.end(), 0);
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(s.tokens);
    std::vector<std::int32_t> pages(s.cache_rows / s.page), table, cu(1, 0);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    // Each sequence's rows go into `rows` as slots too, for the plain gather of the same rows.
    for (std::int64_t b = 0; b < s.batch && s.page_table; ++b) {
      for (std::int64_t i = 0; i < max_pages; ++i) table.push_back(pages[static_cast<std::size_t>((b * max_pages + i) % pages.size())]);
      for (std::int64_t j = 0; j < s.tokens / s.batch; ++j)
        rows[static_cast<std::size_t>(cu.back() + j)] = table[static_cast<std::size_t>(b * max_pages + j / s.page)] * s.page + j % s.page;
      cu.push_back(cu.back() + static_cast<std::int32_t>(s.tokens / s.batch));
    }
    std::uint8_t* p = gpu().pool;
    for (int i = 0; i < count; ++i) {
      Set set{};
      set.k_cache = p, p += cache_bytes;
      set.v_cache = s.both ? p : nullptr, p += s.both ? cache_bytes : 0;
      fill_bytes<<<1024, 256, 0, gpu().stream>>>(set.k_cache, tensors * cache_bytes, 99 + i);
      set.k = reinterpret_cast<T*>(p), p += out_bytes;
      set.v = s.both ? reinterpret_cast<T*>(p) : nullptr, p += s.both ? out_bytes : 0;
      set.loc = reinterpret_cast<std::int64_t*>(p), p += round_up(s.tokens * 8);
      set.block_table = reinterpret_cast<std::int32_t*>(p), p += round_up(s.batch * max_pages * 4);
      set.cu = reinterpret_cast<std::int32_t*>(p), p += round_up((s.batch + 1) * 4);
      set.k_scales = reinterpret_cast<float*>(p), p += scale_bytes;
      set.v_scales = s.both ? reinterpret_cast<float*>(p) : nullptr, p += s.both ? scale_bytes : 0;
      fill_random<float><<<1024, 256, 0, gpu().stream>>>(set.k_scales, tensors * scale_bytes / 4, 7 + i, 0.1f);
      set.copy_dst = p, p += round_up(traffic / 2);
      BENCH_CUDA(cudaMemcpyAsync(set.loc, rows.data(), s.tokens * 8, cudaMemcpyHostToDevice, gpu().stream));
      if (s.page_table) {
        BENCH_CUDA(cudaMemcpyAsync(set.block_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice, gpu().stream));
        BENCH_CUDA(cudaMemcpyAsync(set.cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice, gpu().stream));
      }
      sets.push_back(set);
    }
    BENCH_CUDA(cudaStreamSynchronize(gpu().stream));
  }

  kvcast::UpcastArgs<T> args(const Set& set, Variant variant) const {
    kvcast::UpcastArgs<T> a;
    a.k_cache = set.k_cache;
    a.v_cache = set.v_cache;
    a.cache_rows = shape.cache_rows;
    a.k = set.k;
    a.v = set.v;
    a.num_tokens = shape.tokens;
    a.heads = shape.heads;
    a.head_dim = shape.dim;
    if (shape.page_table) {
      a.cache = kvcast::OutputLayout::paged_nhd(shape.page, shape.heads, shape.nvfp4 ? shape.dim / 2 : shape.dim);
      a.block_table = set.block_table;
      a.batch = shape.batch;
      a.max_pages = max_pages;
      a.cu_seq_lens = set.cu;
    } else if (!shape.whole_pool) {
      a.loc = set.loc;
    }
    if (variant == Variant::upcast_token_head) {
      a.scale_kind = kvcast::ScaleKind::per_token_head;
      a.k_scales = set.k_scales;
      a.v_scales = set.v_scales;
    } else if (variant == Variant::upcast_nvfp4) {  // random codes and block scales, the shape's g
      a.k_block_scales = set.k_scales;
      a.v_block_scales = set.v_scales;
      a.k_scale = kvcast::Scale::in_device_memory(gpu().scales);
      a.v_scale = kvcast::Scale::in_device_memory(gpu().scales + 1);
    } else {
      a.k_scale = kvcast::Scale::in_device_memory(gpu().scales);
      a.v_scale = kvcast::Scale::in_device_memory(gpu().scales + 1);
    }
    return a;
  }

  template <class Format>
  void launch(Variant variant, const Set& set, cudaStream_t stream) const {
    if (variant == Variant::copy) {
      BENCH_CUDA(cudaMemcpyAsync(set.copy_dst, set.k_cache, copy_bytes(traffic), cudaMemcpyDeviceToDevice, stream));
      return;
    }
    if (variant == Variant::copy_kernel) {  // the same bytes by a plain kernel: a second roofline
      launch_copy_kernel(set.k_cache, set.copy_dst, copy_bytes(traffic), stream);
      return;
    }
    if (variant == Variant::gather_copy) {  // the same rows gathered and widened, no arithmetic
      constexpr int kItems = 2;
      const std::int64_t pieces = shape.heads * shape.dim / 8, total = shape.tokens * pieces;
      if (total >= (std::int64_t{1} << 32)) std::fprintf(stderr, "gather_copy: 2^32 pieces or more\n"), std::abort();
      baseline::gather_widen_kernel<kItems><<<static_cast<unsigned>((total + 256 * kItems - 1) / (256 * kItems)), 256, 0, stream>>>(
          set.k_cache, set.v_cache, set.loc, reinterpret_cast<uint4*>(set.k), reinterpret_cast<uint4*>(set.v),
          static_cast<std::uint32_t>(total), static_cast<std::uint32_t>(pieces));
      return;
    }
    const kvcast::Status s = variant == Variant::upcast_nvfp4 ? kvcast::upcast<kvcast::nvfp4>(args(set, variant), stream)
                                                              : kvcast::upcast<Format>(args(set, variant), stream);
    if (!s.ok()) std::fprintf(stderr, "%s: %s\n", name_of(variant), s.message()), std::abort();
  }
};

template <class T, class Format>
void bm_upcast(benchmark::State& state, Variant variant, Timing timing, Cache cache, ReadShape shape) {
  const bool token_scales = variant == Variant::upcast_token_head;
  const int tensors = shape.both ? 2 : 1;
  const int calls = batch_for(tensors * shape.tokens * shape.heads * shape.dim * static_cast<std::int64_t>(1 + sizeof(T)));
  const ReadProblem<T> problem(shape, cache == Cache::cold ? calls : 1, token_scales);
  if (cache == Cache::cold && problem.sets.size() < 2) {
    state.SkipWithError("not enough memory for two buffer sets");
    return;
  }
  const double copy = median(sample<Format>(problem, Variant::copy, timing, cache, calls));  // the copy is sampled first
  report(state, sample<Format>(problem, variant, timing, cache, calls), copy, problem.traffic, problem.sets.size(), calls);
}

template <class T, class Format>
void register_upcast(const char* dtype, const ReadShape& shape, std::initializer_list<Variant> variants, std::initializer_list<Cache> caches) {
  for (Variant v : variants)
    for (Cache c : caches) {
      const std::string name = std::string(name_of(v)) + "/" + dtype + "/" + Format::kName + "/graph/" + (c == Cache::cold ? "cold" : "hot") +
                               "/" + std::to_string(shape.tokens) + "x" + std::to_string(shape.heads) + "x" + std::to_string(shape.dim) + "/" +
                               shape.tag;
      benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { bm_upcast<T, Format>(st, v, Timing::graph, c, shape); })
          ->UseManualTime()
          ->Iterations(kIterations)
          ->Unit(benchmark::kMicrosecond);
    }
}

// Host-side cost of one call: validation alone, the whole launch path, and a raw <<<>>> launch.
// A launch row is the median, over kHostBatches batches, of the time to issue kHostBatch calls
// back to back, the stream drained between batches and outside the timing: the host's cost
// alone, never the GPU's pace (the queue holds far more than a batch).
// tools/python_overhead.py times the Python face the same way.
constexpr int kHostBatch = 256;
constexpr int kHostBatches = 400;
template <class Launch>
void time_issue(benchmark::State& state, Launch&& launch) {
  for (auto _ : state) {
    std::vector<double> per_call;
    for (int b = -1; b < kHostBatches; ++b) {  // batch -1 warms up
      cudaStreamSynchronize(gpu().stream);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < kHostBatch; ++i) launch();
      const std::chrono::duration<double> issued = std::chrono::steady_clock::now() - start;
      if (b >= 0) per_call.push_back(issued.count() / kHostBatch);
    }
    state.SetIterationTime(median(per_call));
  }
  cudaStreamSynchronize(gpu().stream);
}
void bm_host_validate(benchmark::State& state) {
  Problem<__nv_bfloat16> problem(Shape{16, 8, 128}, 1);
  const auto args = problem.args(problem.sets[0]);
  for (auto _ : state) benchmark::DoNotOptimize(kvcast::validate(args));
}
void bm_host_downcast(benchmark::State& state) {
  Problem<__nv_bfloat16> problem(Shape{16, 8, 128}, 1);
  const auto args = problem.args(problem.sets[0]);
  time_issue(state, [&] { benchmark::DoNotOptimize(kvcast::downcast<kvcast::e4m3>(args, gpu().stream)); });
}
void bm_host_raw_launch(benchmark::State& state) {
  time_issue(state, [] { empty_kernel<<<1, 32, 0, gpu().stream>>>(); });
}

// Programmatic dependent launch: a producer writes K and V, kvcast follows; the pair is
// captured B times in a graph with and without PDL on kvcast's launch.
__global__ void producer(__nv_bfloat16* k, __nv_bfloat16* v, std::size_t n) {
#if KVCAST_HAS_PDL
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    k[i] = __float2bfloat16(static_cast<float>(i % 1000) * 0.01f);
    v[i] = __float2bfloat16(static_cast<float>(i % 777) * -0.01f);
  }
}

void bm_pdl(benchmark::State& state, Shape shape, bool pdl) {
  Gpu& g = gpu();
  Problem<__nv_bfloat16> problem(shape, 1);
  auto args = problem.args(problem.sets[0]);
  args.pdl = pdl;
  const auto& set = problem.sets[0];
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((problem.elems + 255) / 256, 4 * g.prop.multiProcessorCount));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
  for (int j = 0; j < kMaxBatch; ++j) {
    producer<<<blocks, 256, 0, g.stream>>>(set.k, set.v, problem.elems);
    const kvcast::Status s = kvcast::downcast<kvcast::e4m3>(args, g.stream);
    if (!s.ok()) std::fprintf(stderr, "%s\n", s.message()), std::abort();
  }
  BENCH_CUDA(cudaStreamEndCapture(g.stream, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<double> times;
  for (int it = -3; it < kIterations; ++it) {
    BENCH_CUDA(cudaEventRecord(g.start, g.stream));
    BENCH_CUDA(cudaGraphLaunch(exec, g.stream));
    BENCH_CUDA(cudaEventRecord(g.stop, g.stream));
    BENCH_CUDA(cudaEventSynchronize(g.stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, g.start, g.stop));
    if (it >= 0) times.push_back(ms * 1e-3 / kMaxBatch);
  }
  BENCH_CUDA(cudaGraphExecDestroy(exec));
  BENCH_CUDA(cudaGraphDestroy(graph));
  std::size_t i = 0;
  for (auto _ : state) state.SetIterationTime(times[i++ % times.size()]);
  state.counters["pair_us"] = median(times) * 1e6;
}

std::vector<Shape> grid_shapes() {
  std::vector<Shape> shapes;
  for (std::int64_t tokens : {1, 4, 16, 64, 256, 512, 1024, 2048, 8192, 32768})
    for (auto [h, d] : {std::pair{8, 128}, std::pair{32, 128}, std::pair{8, 256}, std::pair{32, 256}})
      shapes.push_back(Shape{tokens, h, d});
  return shapes;
}

template <class T, class Format>
void register_downcast(const char* dtype, const Shape& shape, std::initializer_list<Variant> variants,
                       std::initializer_list<Timing> timings, std::initializer_list<Cache> caches) {
  for (Variant v : variants)
    for (Timing t : timings)
      for (Cache c : caches) {
        std::string name = std::string(name_of(v)) + "/" + dtype + "/" + Format::kName + "/" +
                           (t == Timing::graph ? "graph" : "stream") + "/" + (c == Cache::cold ? "cold" : "hot") + "/" +
                           std::to_string(shape.tokens) + "x" + std::to_string(shape.heads) + "x" + std::to_string(shape.dim);
        if (*shape.tag) name += std::string("/") + shape.tag;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { bm_downcast<T, Format>(st, v, t, c, shape); })
            ->UseManualTime()
            ->Iterations(kIterations)
            ->Unit(benchmark::kMicrosecond);
      }
}

void register_all() {
  const auto all_timing = {Timing::stream, Timing::graph};
  const auto all_cache = {Cache::hot, Cache::cold};
  const auto baselines = {Variant::copy,   Variant::empty,     Variant::legacy,      Variant::sglang,
                         Variant::kvcast, Variant::kvcast_ip, Variant::copy_kernel, Variant::no_math};
  const auto chained = {Variant::kvcast_pdl, Variant::kvcast_ip_pdl};
  const auto sorted = {Variant::kvcast, Variant::kvcast_ip, Variant::no_math, Variant::sglang};
  for (Shape s : grid_shapes()) {
    register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, baselines, all_timing, all_cache);
    register_downcast<__half, kvcast::e4m3>("f16", s, baselines, all_timing, all_cache);
    // Decode sizes with PDL, each call's launch overlapping the call before it.
    if (s.tokens <= 16) {
      register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, chained, {Timing::graph}, all_cache);
      register_downcast<__half, kvcast::e4m3>("f16", s, chained, {Timing::graph}, all_cache);
    }
    // Large sizes with sorted slots: the same calls without the scatter.
    if (s.tokens >= 2048) {
      s.sorted_slots = true;
      s.tag = "sorted";
      register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, sorted, {Timing::graph}, {Cache::cold});
      register_downcast<__half, kvcast::e4m3>("f16", s, sorted, {Timing::graph}, {Cache::cold});
    }
  }
  // Subsets: E5M2, fp32 input, strided input, odd shapes (graph and stream, cold).
  for (std::int64_t tokens : {1, 16, 256, 2048, 32768}) {
    const Shape s{tokens, 8, 128};
    register_downcast<__nv_bfloat16, kvcast::e5m2>("bf16", s, {Variant::kvcast, Variant::kvcast_ip}, all_timing, {Cache::cold});
    register_downcast<float, kvcast::e4m3>("f32", s, {Variant::kvcast, Variant::kvcast_ip}, all_timing, {Cache::cold});
    // Strided and odd shapes in both modes, and no_math: how much of their cost is the access pattern.
    const auto shaped = {Variant::kvcast, Variant::kvcast_ip, Variant::no_math};
    register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", Shape{tokens, 8, 128, true, "qkv_slice"}, shaped, all_timing,
                                                   {Cache::cold});
    register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", Shape{tokens, 8, 100, false, "odd"}, shaped, all_timing, {Cache::cold});
    register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", Shape{tokens, 5, 99, false, "odd"}, shaped, all_timing, {Cache::cold});
    Shape odd_sorted{tokens, 5, 99, false, "odd_sorted"};
    odd_sorted.sorted_slots = true;
    register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", odd_sorted, shaped, {Timing::graph}, {Cache::cold});
  }
  // The scale axis (issue #19): every pair of kScalePairs, both modes, at decode and from 64 MB
  // (bf16 8x128, graph, hot and cold). Tags name the pair: scale_3, scale_0.7/1.3 -> scale_0_7_1_3.
  for (std::int64_t tokens : {1, 4, 16, 32768})
    for (int pair = 0; pair < kScalePairCount; ++pair) {
      static std::deque<std::string> tags;  // Shape keeps a pointer to its tag: a deque never moves them
      std::string tag = std::string("scale_") + kScalePairs[pair].name;
      for (char& ch : tag)
        if (ch == '.' || ch == '/') ch = '_';
      tags.push_back(tag);
      register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", Shape{tokens, 8, 128, false, tags.back().c_str(), pair},
                                                     {Variant::kvcast, Variant::kvcast_ip}, {Timing::graph}, {Cache::cold, Cache::hot});
    }
  // The fused RoPE example against the same work as two kernels, and kvcast's write alone:
  // decode calls (graph replay) and calls from 64 MB up.
  for (std::int64_t tokens : {1, 4, 16, 8192, 32768})
    for (auto [h, d] : {std::pair{8, 128}, std::pair{32, 256}}) {
      Shape s{tokens, h, d, false, "rope"};
      s.rope = true;
      register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::rope_fused, Variant::rope_split, Variant::kvcast},
                                                     {Timing::graph}, all_cache);
    }
  // Scale kinds: per tensor (the lean kernels), with amax, per head (with and without amax), per
  // (token, head) (with and without amax), at decode and from 64 MB, head sizes 64, 128, 256
  // and one MLA-sized head of 576. The traffic (and the copy) counts the per-(token, head)
  // scale tensors.
  // Between decode and 64 MB, rows of 8x128 and 576: where K and V stop going to CTAs of their
  // own (tuning::kTensorsApartUpTo) and per-(token, head) scales take the widest vector
  // (tuning::kTokenHeadWidestAbove); and of 8x64 and 8x256 at 2^18 elements, the largest calls the
  // lean row-head warp takes (tuning::kTokenHeadLeanUpTo).
  for (std::int64_t tokens : {1, 4, 16, 128, 256, 512, 1024, 4096, 32768, 65536})
    for (auto [h, d] : {std::pair{8, 64}, std::pair{8, 128}, std::pair{8, 256}, std::pair{1, 576}}) {
      if (tokens == 65536 && d >= 128) continue;  // 32768 tokens are past 64 MB already
      const bool lean_bound = (tokens == 512 && d == 64) || (tokens == 128 && d == 256);  // 2^18 elements
      if (tokens > 16 && tokens < 32768 && d != 576 && d != 128 && !lean_bound) continue;
      if ((tokens == 128 || tokens == 512) && !lean_bound) continue;
      Shape s{tokens, h, d, false, "scales"};
      s.token_scales = true;
      register_downcast<__nv_bfloat16, kvcast::e4m3>(
          "bf16", s,
          {Variant::kvcast, Variant::kvcast_amax, Variant::kvcast_head, Variant::kvcast_head_amax, Variant::kvcast_token_head,
           Variant::kvcast_token_head_amax},
          {Timing::graph}, all_cache);
      // The per-(token, head) write's floor at decode (baseline::token_head_floor).
      if (tokens <= 16) register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::token_head_floor}, {Timing::graph}, all_cache);
      // The amax output zeroed before each call, at decode, 1024 tokens and from 64 MB: what
      // the amax costs a caller that wants each step's own.
      if (tokens <= 16 || tokens == 1024 || tokens == 32768) {
        Shape z = s;
        z.zero_amax = true;
        z.tag = "scales_zeroed";
        register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", z,
                                                       {Variant::kvcast, Variant::kvcast_amax, Variant::kvcast_head,
                                                        Variant::kvcast_head_amax, Variant::kvcast_token_head,
                                                        Variant::kvcast_token_head_amax},
                                                       {Timing::graph}, {Cache::cold});
      }
      // From 64 MB, the same rows and scales scattered by a plain kernel: the pattern's floor.
      if (tokens >= 32768)
        register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::scatter_copy}, {Timing::graph}, all_cache);
      // From 64 MB with loc = identity: what the scatter of codes and scales costs each kind.
      if (tokens == 32768) {
        s.sorted_slots = true;
        s.tag = "scales_sorted";
        register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s,
                                                       {Variant::kvcast, Variant::kvcast_amax, Variant::kvcast_head_amax,
                                                        Variant::kvcast_token_head, Variant::scatter_copy},
                                                       {Timing::graph}, {Cache::cold});
      }
    }
  // NVFP4's write (issue #17), both modes (kvcast_nvfp4_fm: FlashInfer's numerics), beside the
  // fp8 per-tensor write of the same inputs, at decode and
  // from 64 MB; the traffic (and the copy) is NVFP4's: inputs, half-byte codes, block scales, slots.
  for (std::int64_t tokens : {1, 4, 16, 256, 1024, 4096, 32768, 65536})
    for (auto [h, d] : {std::pair{8, 128}, std::pair{1, 576}}) {
      if (tokens == 65536 && d == 128) continue;
      Shape s{tokens, h, d, false, "nvfp4"};
      s.nvfp4 = true;
      register_downcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::kvcast, Variant::kvcast_nvfp4, Variant::kvcast_nvfp4_fm},
                                                     {Timing::graph}, all_cache);
      if (tokens == 32768 && d == 128) {
        register_downcast<__half, kvcast::e4m3>("f16", s, {Variant::kvcast_nvfp4, Variant::kvcast_nvfp4_fm}, {Timing::graph}, {Cache::cold});
        register_downcast<float, kvcast::e4m3>("f32", s, {Variant::kvcast_nvfp4, Variant::kvcast_nvfp4_fm}, {Timing::graph}, {Cache::cold});
      }
    }
  // The read: gathers by slots (per tensor and per (token, head)) and by page table, at decode
  // sizes (a few thousand rows) and from 64 MB, from a pool of twice the rows; 8x128 K and V,
  // and one MLA head of 576 (K alone). Then SGLang #35291's shape: a pool of 2^20 slots of one
  // 576 head in pages of 64, its live rows (1%, 5%, 20%, by page table) against the whole pool.
  for (std::int64_t tokens : {2048, 4096, 32768, 65536})
    for (auto [h, d] : {std::pair{8, 128}, std::pair{1, 576}}) {
      if (tokens == 65536 && h == 8) continue;  // 32768 tokens of 8x128 are past 64 MB already
      ReadShape s{tokens, h, d, 2 * tokens};
      s.both = h == 8;
      s.tag = "read_slots";
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::upcast, Variant::upcast_token_head}, all_cache);
      // The same bytes copied by a plain kernel, beside cudaMemcpy (the rows' roofline): the
      // page-table rows' cudaMemcpy runs at about 2/3 of the slot rows' (NOTES #16b).
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::copy_kernel}, {Cache::cold});
      // The same rows gathered by a plain kernel (widened, no scale): the floor of the pattern.
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::gather_copy}, all_cache);
      s.page_table = true;
      s.tag = "read_pages";
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::upcast}, all_cache);
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::copy_kernel}, {Cache::cold});
      // The page table's rows gathered by the plain kernel, given as slots: that pattern's floor.
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::gather_copy}, all_cache);
    }
  // NVFP4's read, by slots and by page table, beside the copy of its bytes.
  for (std::int64_t tokens : {4096, 32768, 65536})
    for (auto [h, d] : {std::pair{8, 128}, std::pair{1, 576}}) {
      if ((tokens == 65536) == (h == 8)) continue;  // 4096 and 32768 rows of 8x128, 65536 of one 576 head
      ReadShape s{tokens, h, d, 2 * tokens};
      s.both = h == 8;
      s.nvfp4 = true;
      s.tag = "nvfp4_slots";
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::upcast_nvfp4}, all_cache);
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::copy_kernel}, {Cache::cold});
      s.page_table = true;
      s.tag = "nvfp4_pages";
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::upcast_nvfp4}, all_cache);
      register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::copy_kernel}, {Cache::cold});
    }
  for (int percent : {1, 5, 20, 100}) {
    constexpr std::int64_t kPool = std::int64_t{1} << 20;
    ReadShape s{kPool * percent / 100 / 4096 * 4096, 1, 576, kPool};
    s.both = false;
    s.page_table = percent < 100;
    s.whole_pool = percent == 100;
    s.tag = percent == 1 ? "pool_live1" : percent == 5 ? "pool_live5" : percent == 20 ? "pool_live20" : "pool_all";
    if (s.whole_pool) s.tokens = kPool;
    register_upcast<__nv_bfloat16, kvcast::e4m3>("bf16", s, {Variant::upcast}, all_cache);
  }
  benchmark::RegisterBenchmark("host/validate", bm_host_validate);
  benchmark::RegisterBenchmark("host/downcast_launch", bm_host_downcast)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("host/raw_empty_launch", bm_host_raw_launch)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  for (std::int64_t tokens : {1, 16, 256, 4096})
    for (bool pdl : {false, true})
      benchmark::RegisterBenchmark(("pdl/bf16/e4m3/graph/hot/" + std::to_string(tokens) + "x8x128/" + (pdl ? "on" : "off")).c_str(),
                                   [=](benchmark::State& st) { bm_pdl(st, Shape{tokens, 8, 128}, pdl); })
          ->UseManualTime()
          ->Iterations(kIterations)
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("kvcast benchmarks: no CUDA device, nothing to measure\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  register_all();
  benchmark::AddCustomContext("gpu", gpu().prop.name);
  benchmark::AddCustomContext("l2_bytes", std::to_string(gpu().l2_bytes));
  benchmark::AddCustomContext("sms", std::to_string(gpu().prop.multiProcessorCount));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
