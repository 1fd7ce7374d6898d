// kvcast tools — kvcast's NVFP4 write in FlashInfer's numerics (Arithmetic::fast_math) against
// FlashInfer's own kernel (flashinfer_side.cu), on this GPU: the code and block-scale bytes of
// whole poisoned paged caches compared, then both timed (CUDA graphs, hot and cold L2, medians)
// beside kvcast's exact mode and a copy of the same bytes. Built and run by
// tools/flashinfer-nvfp4.sh; prints one line a comparison and a timing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <kvcast/kvcast.cuh>
#include <kvcast/nvfp4.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

cudaError_t flashinfer_nvfp4_write(bool bf16, bool hnd, const void* k, const void* v, const std::int64_t* slots, std::uint32_t tokens,
                                   std::uint32_t heads, std::uint32_t page, std::uint32_t pages, std::uint32_t dim,
                                   std::uint8_t* k_codes, std::uint8_t* v_codes, std::uint8_t* k_sf, std::uint8_t* v_sf, float* g_k,
                                   float* g_v, cudaStream_t stream);

namespace {

#define CHECK(x)                                                                               \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)), std::exit(1); \
  } while (0)

void* device_alloc(std::size_t bytes) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 1));
  return p;
}

struct Call {
  bool bf16 = true, hnd = false;
  std::uint32_t tokens = 333, heads = 8, dim = 128, page = 16, pages = 64;
  float g_k = 1.0f, g_v = 1.0f;
};

// One problem on the device: inputs, slots, g, and two caches (codes and block scales, K and V).
struct Problem {
  Call c;
  void *k, *v;
  std::int64_t* slots;
  float* g;
  std::uint8_t *kc[2], *vc[2], *ks[2], *vs[2];
  std::size_t in_bytes, code_bytes, sf_bytes;

  // `hostile`: blocks of zeros, NaN, ±inf, huge, subnormal and signed-zero values among the
  // random ones (the comparisons); otherwise random blocks only (the timings).
  Problem(const Call& call, std::uint64_t seed, bool hostile = true) : c(call) {
    const std::size_t elems = std::size_t{c.tokens} * c.heads * c.dim, rows = std::size_t{c.pages} * c.page;
    in_bytes = elems * 2;
    code_bytes = rows * c.heads * c.dim / 2;
    sf_bytes = rows * c.heads * c.dim / 16;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int> exponent(-18, 14), kind(0, 40);
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<std::uint16_t> host(elems * 2);
    for (std::size_t b = 0; b < elems * 2 / 16; ++b) {  // K's blocks, then V's
      const float scale = std::ldexp(1.0f, exponent(rng));
      const int k = hostile ? kind(rng) : 40;
      for (int i = 0; i < 16; ++i) {
        float x = normal(rng) * scale;
        if (k == 0) x = 0.0f;
        if (k == 1 && i == 5) x = std::nanf("");
        if (k == 2 && i == 3) x = -inf;
        if (k == 3) x = i == 7 ? 3.0e38f : normal(rng);
        if (k == 4) x = normal(rng) * 1e-39f;  // bf16 subnormals
        if (k == 5) x = i == 9 ? -1.0f : 0.0f;
        if (k == 6 && i % 2) x = -0.0f;
        if (k == 7) x = std::nanf("");
        std::uint16_t bits;
        if (c.bf16) {
          const __nv_bfloat16 y = __float2bfloat16_rn(x);
          std::memcpy(&bits, &y, 2);
        } else {
          const __half y = __float2half_rn(x);
          std::memcpy(&bits, &y, 2);
        }
        if (k == 8 && i == 2) bits = c.bf16 ? 0xffc0 : 0xfe00;  // a NaN with its sign bit set
        host[b * 16 + i] = bits;
      }
    }
    k = device_alloc(in_bytes);
    v = device_alloc(in_bytes);
    CHECK(cudaMemcpy(k, host.data(), in_bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(v, host.data() + elems, in_bytes, cudaMemcpyHostToDevice));
    // Slots: distinct rows, a padding token and an out-of-range one.
    std::vector<std::int64_t> perm(rows);
    for (std::size_t r = 0; r < rows; ++r) perm[r] = static_cast<std::int64_t>(r);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<std::int64_t> s(c.tokens);
    for (std::uint32_t t = 0; t < c.tokens; ++t) s[t] = perm[t % rows];
    if (c.tokens > 8) s[5] = -1, s[7] = static_cast<std::int64_t>(rows) + 3;
    slots = static_cast<std::int64_t*>(device_alloc(s.size() * 8));
    CHECK(cudaMemcpy(slots, s.data(), s.size() * 8, cudaMemcpyHostToDevice));
    const float gs[2] = {c.g_k, c.g_v};
    g = static_cast<float*>(device_alloc(8));
    CHECK(cudaMemcpy(g, gs, 8, cudaMemcpyHostToDevice));
    for (int i = 0; i < 2; ++i) {
      kc[i] = static_cast<std::uint8_t*>(device_alloc(code_bytes));
      vc[i] = static_cast<std::uint8_t*>(device_alloc(code_bytes));
      ks[i] = static_cast<std::uint8_t*>(device_alloc(sf_bytes));
      vs[i] = static_cast<std::uint8_t*>(device_alloc(sf_bytes));
    }
  }
  ~Problem() {
    for (void* p : {k, v, static_cast<void*>(slots), static_cast<void*>(g)}) cudaFree(p);
    for (int i = 0; i < 2; ++i)
      for (void* p : {kc[i], vc[i], ks[i], vs[i]}) cudaFree(p);
  }
  void poison() {
    for (int i = 0; i < 2; ++i) {
      CHECK(cudaMemset(kc[i], 0xA5, code_bytes));
      CHECK(cudaMemset(vc[i], 0xA5, code_bytes));
      CHECK(cudaMemset(ks[i], 0x5A, sf_bytes));
      CHECK(cudaMemset(vs[i], 0x5A, sf_bytes));
    }
  }
  // Set 0: FlashInfer; set 1: kvcast (fast_math, or the exact mode).
  void flashinfer(cudaStream_t s) {
    CHECK(flashinfer_nvfp4_write(c.bf16, c.hnd, k, v, slots, c.tokens, c.heads, c.page, c.pages, c.dim, kc[0], vc[0], ks[0], vs[0], g,
                                 g + 1, s));
  }
  template <class T>
  kvcast::Status kvcast_typed(bool fast, cudaStream_t s) {
    kvcast::DowncastArgs<T> a;
    a.k = static_cast<const T*>(k);
    a.v = static_cast<const T*>(v);
    a.num_tokens = c.tokens;
    a.heads = c.heads;
    a.head_dim = c.dim;
    a.k_out = kc[1];
    a.v_out = vc[1];
    a.k_block_scales_out = ks[1];
    a.v_block_scales_out = vs[1];
    a.out = c.hnd ? kvcast::OutputLayout::paged_hnd(c.page, c.heads, c.dim / 2) : kvcast::OutputLayout::paged_nhd(c.page, c.heads, c.dim / 2);
    a.block_scales_out =
        c.hnd ? kvcast::OutputLayout::paged_hnd(c.page, c.heads, c.dim / 16) : kvcast::OutputLayout::paged_nhd(c.page, c.heads, c.dim / 16);
    a.loc = slots;
    a.out_rows = std::int64_t{c.pages} * c.page;
    a.k_scale = kvcast::Scale::in_device_memory(g);
    a.v_scale = kvcast::Scale::in_device_memory(g + 1);
    return fast ? kvcast::downcast<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(a, s) : kvcast::downcast<kvcast::nvfp4>(a, s);
  }
  void kvcast(bool fast, cudaStream_t s) {
    const kvcast::Status st = c.bf16 ? kvcast_typed<__nv_bfloat16>(fast, s) : kvcast_typed<__half>(fast, s);
    if (!st.ok()) std::fprintf(stderr, "kvcast: %s\n", st.message()), std::exit(1);
  }
};

long long count_diffs(const std::uint8_t* a, const std::uint8_t* b, std::size_t n, long long& first) {
  std::vector<std::uint8_t> x(n), y(n);
  CHECK(cudaMemcpy(x.data(), a, n, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(y.data(), b, n, cudaMemcpyDeviceToHost));
  long long d = 0;
  first = -1;
  for (std::size_t i = 0; i < n; ++i)
    if (x[i] != y[i]) {
      if (first < 0) first = static_cast<long long>(i);
      ++d;
    }
  return d;
}

// Byte for byte over whole poisoned caches; returns the differing bytes.
long long compare(const Call& c, std::uint64_t seed) {
  Problem p(c, seed);
  p.poison();
  p.flashinfer(nullptr);
  p.kvcast(true, nullptr);
  CHECK(cudaDeviceSynchronize());
  long long total = 0, first = -1;
  const char* names[4] = {"k codes", "v codes", "k scales", "v scales"};
  const std::uint8_t* fi[4] = {p.kc[0], p.vc[0], p.ks[0], p.vs[0]};
  const std::uint8_t* kv[4] = {p.kc[1], p.vc[1], p.ks[1], p.vs[1]};
  const std::size_t n[4] = {p.code_bytes, p.code_bytes, p.sf_bytes, p.sf_bytes};
  std::printf("compare %s %s %ux%ux%u g=%g/%g:", c.bf16 ? "bf16" : "f16", c.hnd ? "HND" : "NHD", c.tokens, c.heads, c.dim, c.g_k, c.g_v);
  for (int i = 0; i < 4; ++i) {
    const long long d = count_diffs(fi[i], kv[i], n[i], first);
    total += d;
    std::printf(" %s %lld/%zu differ%s", names[i], d, n[i], i < 3 ? "," : "");
    if (d > 0) std::printf(" (first at %lld)", first);
  }
  std::printf("\n");
  return total;
}

// Median time of one call in microseconds: `hot` replays a graph of 20 calls; cold times one
// call after a 256 MB memset that sweeps L2.
template <class F>
double time_us(F&& call, bool hot, cudaStream_t s, void* sweep) {
  const int per_graph = hot ? 20 : 1;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < per_graph; ++i) call(s);
  CHECK(cudaStreamEndCapture(s, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<double> samples;
  for (int r = 0; r < 25; ++r) {
    if (!hot) CHECK(cudaMemsetAsync(sweep, r & 0xff, std::size_t{256} << 20, s));
    CHECK(cudaEventRecord(a, s));
    CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    if (r >= 3) samples.push_back(1000.0 * ms / per_graph);
  }
  std::sort(samples.begin(), samples.end());
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return samples[samples.size() / 2];
}

void timings(const Call& c, void* sweep, cudaStream_t s) {
  Problem p(c, 99, false);
  // Bytes moved: inputs, codes, block scales, slots; the copy moves as many.
  const std::size_t elems = std::size_t{c.tokens} * c.heads * c.dim;
  const std::size_t bytes = 2 * (elems * 2 + elems / 2 + elems / 16) + std::size_t{c.tokens} * 8;
  void* copy_dst = device_alloc(bytes / 2);
  void* copy_src = device_alloc(bytes / 2);
  for (bool hot : {false, true}) {
    const double fi = time_us([&](cudaStream_t st) { p.flashinfer(st); }, hot, s, sweep);
    const double fm = time_us([&](cudaStream_t st) { p.kvcast(true, st); }, hot, s, sweep);
    const double ex = time_us([&](cudaStream_t st) { p.kvcast(false, st); }, hot, s, sweep);
    const double cp = time_us([&](cudaStream_t st) { CHECK(cudaMemcpyAsync(copy_dst, copy_src, bytes / 2, cudaMemcpyDeviceToDevice, st)); },
                              hot, s, sweep);
    std::printf("time %s %ux%ux%u %s: flashinfer %.2f us, kvcast fast_math %.2f us (%.2fx flashinfer's speed, %.3f of copy), "
                "kvcast exact %.2f us (%.3f of copy), copy %.2f us\n",
                c.bf16 ? "bf16" : "f16", c.tokens, c.heads, c.dim, hot ? "hot" : "cold", fi, fm, fi / fm, cp / fm, ex, cp / ex, cp);
  }
  cudaFree(copy_dst);
  cudaFree(copy_src);
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  long long differ = 0;
  std::uint64_t seed = 1;
  for (bool bf16 : {true, false})
    for (bool hnd : {false, true})
      for (std::uint32_t dim : {64u, 128u, 256u})
        for (float g : {1.0f, 0.0173f, 2.5e-3f, 37.0f}) {
          Call c;
          c.bf16 = bf16, c.hnd = hnd, c.dim = dim, c.g_k = g, c.g_v = g * 0.37f;
          differ += compare(c, seed++);
        }
  Call big;  // many blocks: 2^22 a tensor
  big.tokens = 32768, big.pages = 2048;
  differ += compare(big, 7);
  big.bf16 = false;
  differ += compare(big, 8);
  std::printf("compare total: %lld bytes differ\n", differ);

  void* sweep = device_alloc(std::size_t{256} << 20);
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (std::uint32_t tokens : {1u, 4u, 16u, 32768u}) {
    Call c;
    c.tokens = tokens;
    c.pages = tokens > 1024 ? 2048 : 64;
    timings(c, sweep, s);
  }
  Call f16;
  f16.bf16 = false, f16.tokens = 32768, f16.pages = 2048;
  timings(f16, sweep, s);
  return differ == 0 ? 0 : 2;
}
