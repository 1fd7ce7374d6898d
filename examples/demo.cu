// kvcast demo: one KV-cache step of a serving engine, end to end.
//
// 384 new tokens of bf16 K and V ([tokens, 8 heads, 128]) are scaled, saturated, converted to
// fp8 E4M3 and scattered into a 4096-slot cache by a shuffled slot map with some padding
// (slot -1), then checked byte for byte against the host reference. Without a GPU it says so
// and runs the host reference on the same data.
#include <kvcast/kvcast.cuh>
#include <kvcast/reference.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

namespace {

constexpr std::int64_t kTokens = 384, kHeads = 8, kHeadDim = 128, kSlots = 4096;

#define DEMO_CUDA(expr)                                                                    \
  do {                                                                                     \
    const cudaError_t err = (expr);                                                        \
    if (err != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(err));             \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

}  // namespace

int main() {
  // The step's data: random normal K and V, a shuffled slot map, ~5% padding tokens.
  std::mt19937_64 rng(2026);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const std::int64_t elems = kTokens * kHeads * kHeadDim;
  std::vector<__nv_bfloat16> k(elems), v(elems);
  for (auto& x : k) x = __float2bfloat16(normal(rng));
  for (auto& x : v) x = __float2bfloat16(normal(rng));
  std::vector<std::int64_t> all_slots(kSlots);
  std::iota(all_slots.begin(), all_slots.end(), 0);
  std::shuffle(all_slots.begin(), all_slots.end(), rng);
  std::vector<std::int64_t> loc(all_slots.begin(), all_slots.begin() + kTokens);
  int padding = 0;
  for (auto& s : loc)
    if (rng() % 20 == 0) s = -1, ++padding;
  const float scales[2] = {0.0125f, 0.0110f};  // amax/448-style per-tensor scales

  const std::size_t cache_bytes = kSlots * kHeads * kHeadDim;
  std::vector<std::uint8_t> ref_k(cache_bytes, 0), ref_v(cache_bytes, 0);
  kvcast::DowncastArgs<__nv_bfloat16> args;
  args.num_tokens = kTokens;
  args.heads = kHeads;
  args.head_dim = kHeadDim;
  args.out_rows = kSlots;

  // The host reference always runs: it is the answer the GPU must match.
  args.k = k.data();
  args.v = v.data();
  args.k_out = ref_k.data();
  args.v_out = ref_v.data();
  args.loc = loc.data();
  args.k_scale = kvcast::Scale::in_device_memory(&scales[0]);  // host memory for the reference
  args.v_scale = kvcast::Scale::in_device_memory(&scales[1]);
  const auto t0 = std::chrono::steady_clock::now();
  const kvcast::Status ref_status = kvcast::ref::downcast<kvcast::e4m3, kvcast::Arithmetic::fp32>(args);
  const double ref_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!ref_status.ok()) {
    std::fprintf(stderr, "reference: %s\n", ref_status.message());
    return 1;
  }
  std::printf("kvcast %d.%d.%d demo: %lld tokens (%d padding) x %lld heads x %lld dims, bf16 -> fp8 e4m3 into a %lld-slot cache\n",
              KVCAST_VERSION_MAJOR, KVCAST_VERSION_MINOR, KVCAST_VERSION_PATCH, static_cast<long long>(kTokens), padding,
              static_cast<long long>(kHeads), static_cast<long long>(kHeadDim), static_cast<long long>(kSlots));

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: ran the host reference only (%.1f ms); nothing to compare\n", ref_ms);
    return 0;
  }

  // Device buffers; the cache starts as zeros like a fresh allocation.
  __nv_bfloat16 *dk = nullptr, *dv = nullptr;
  std::uint8_t *dk_cache = nullptr, *dv_cache = nullptr;
  std::int64_t* dloc = nullptr;
  float* dscales = nullptr;
  unsigned long long* derrors = nullptr;
  DEMO_CUDA(cudaMalloc(&dk, elems * 2));
  DEMO_CUDA(cudaMalloc(&dv, elems * 2));
  DEMO_CUDA(cudaMalloc(&dk_cache, cache_bytes));
  DEMO_CUDA(cudaMalloc(&dv_cache, cache_bytes));
  DEMO_CUDA(cudaMalloc(&dloc, kTokens * 8));
  DEMO_CUDA(cudaMalloc(&dscales, 8));
  DEMO_CUDA(cudaMalloc(&derrors, 8));
  DEMO_CUDA(cudaMemcpy(dk, k.data(), elems * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(dv, v.data(), elems * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(dloc, loc.data(), kTokens * 8, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(dscales, scales, 8, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemset(dk_cache, 0, cache_bytes));
  DEMO_CUDA(cudaMemset(dv_cache, 0, cache_bytes));

  args.k = dk;
  args.v = dv;
  args.k_out = dk_cache;
  args.v_out = dv_cache;
  args.loc = dloc;
  args.k_scale = kvcast::Scale::in_device_memory(dscales);
  args.v_scale = kvcast::Scale::in_device_memory(dscales + 1);
  args.error_count = derrors;
  const kvcast::Status status = kvcast::downcast_checked<kvcast::e4m3>(args);
  if (!status.ok()) {
    std::fprintf(stderr, "kvcast::downcast_checked: %s\n", status.message());
    return 1;
  }
  std::vector<std::uint8_t> got_k(cache_bytes), got_v(cache_bytes);
  DEMO_CUDA(cudaMemcpy(got_k.data(), dk_cache, cache_bytes, cudaMemcpyDeviceToHost));
  DEMO_CUDA(cudaMemcpy(got_v.data(), dv_cache, cache_bytes, cudaMemcpyDeviceToHost));
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < cache_bytes; ++i) mismatches += (got_k[i] != ref_k[i]) + (got_v[i] != ref_v[i]);

  // Throughput of the same call: median of 50 event-timed launches after warm-up.
  cudaEvent_t start, stop;
  DEMO_CUDA(cudaEventCreate(&start));
  DEMO_CUDA(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < 60; ++i) {
    DEMO_CUDA(cudaEventRecord(start));
    const kvcast::Status s = kvcast::downcast<kvcast::e4m3>(args);
    DEMO_CUDA(cudaEventRecord(stop));
    DEMO_CUDA(cudaEventSynchronize(stop));
    if (!s.ok()) return std::fprintf(stderr, "%s\n", s.message()), 1;
    float ms = 0;
    DEMO_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (i >= 10) times.push_back(ms);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  const double us = times[times.size() / 2] * 1e3;
  const double bytes = 2.0 * elems * (2 + 1) + kTokens * 8.0;  // K and V read and written, loc read
  cudaDeviceProp prop{};
  DEMO_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU %s: %zu mismatching bytes against the host reference (of %zu), %.2f us per call, %.0f GB/s\n",
              prop.name, mismatches, 2 * cache_bytes, us, bytes / us * 1e-3);
  cudaFree(dk), cudaFree(dv), cudaFree(dk_cache), cudaFree(dv_cache), cudaFree(dloc), cudaFree(dscales), cudaFree(derrors);
  return mismatches == 0 ? 0 : 1;
}
