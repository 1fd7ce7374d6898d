// kvcast — KV-cache quantization. Apache-2.0.
//
// Probe (not a kvcast kernel): what a stream that reads one byte and writes two (fp8 codes to
// 16-bit values, the read path's mix) reaches on this GPU against a same-bytes copy, with a
// thread's 16 codes stored four ways: whole (two 16-byte stores 32 bytes apart, so each store
// instruction fills half of every sector it touches), as one 8-code vector, as two 8-code halves
// a warp apart, and whole after shuffles that make each store contiguous. Plain byte widening
// and a real E4M3 -> bf16 dequantization; cold L2 (512 MB written between samples); medians of
// 15 samples by CUDA events. Build and run on the GPU machine:
//
//   nvcc -std=c++17 -O3 -arch=sm_90 -o read_mix benchmarks/probes/read_mix.cu && ./read_mix
//
// benchmarks/NOTES.md #16i has its H200 numbers.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cstdio>
#include <vector>
#include <algorithm>
#include <cstdint>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)

__device__ __forceinline__ uint2 widen4(uint32_t w) {  // 4 bytes -> 4 u16 (zero-extended)
  return make_uint2(__byte_perm(w, 0, 0x4140), __byte_perm(w, 0, 0x4342));
}
__device__ __forceinline__ uint2 deq4(uint32_t w, float s) {  // 4 e4m3 -> 4 bf16 (x*s)
  __nv_fp8x2_storage_t lo = w & 0xffff, hi = w >> 16;
  __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(lo, __NV_E4M3), b = __nv_cvt_fp8x2_to_halfraw2(hi, __NV_E4M3);
  float2 fa = __half22float2(*reinterpret_cast<__half2*>(&a)), fb = __half22float2(*reinterpret_cast<__half2*>(&b));
  __nv_bfloat162 x = __floats2bfloat162_rn(fa.x * s, fa.y * s), y = __floats2bfloat162_rn(fb.x * s, fb.y * s);
  return make_uint2(*reinterpret_cast<uint32_t*>(&x), *reinterpret_cast<uint32_t*>(&y));
}
template <bool kDeq> __device__ __forceinline__ uint2 cvt(uint32_t w, float s) { if constexpr (kDeq) return deq4(w, s); else return widen4(w); }

__global__ void copy16(const uint4* __restrict__ in, uint4* __restrict__ out, size_t n) {
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (i < n) out[i] = in[i];
}
// ours: 16 codes a thread, two 16-byte stores 32 bytes apart (half a sector a request)
template <bool kDeq> __global__ void widen_split(const uint4* __restrict__ in, uint4* __restrict__ out, size_t n, float s) {
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (i >= n) return;
  uint4 c = in[i]; uint2 a = cvt<kDeq>(c.x, s), b = cvt<kDeq>(c.y, s), d = cvt<kDeq>(c.z, s), e = cvt<kDeq>(c.w, s);
  out[2 * i] = make_uint4(a.x, a.y, b.x, b.y); out[2 * i + 1] = make_uint4(d.x, d.y, e.x, e.y);
}
// 8 codes a thread: one 8-byte load, one 16-byte store
template <bool kDeq> __global__ void widen_8(const uint2* __restrict__ in, uint4* __restrict__ out, size_t n, float s) {
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (i >= n) return;
  uint2 c = in[i]; uint2 a = cvt<kDeq>(c.x, s), b = cvt<kDeq>(c.y, s); out[i] = make_uint4(a.x, a.y, b.x, b.y);
}
// 16 codes a thread as two 8-code halves 32 threads apart: two 8-byte loads and two 16-byte
// stores, each coalesced across the warp (indices within a warp's 64 halves)
template <bool kDeq> __global__ void widen_2x8(const uint2* __restrict__ in, uint4* __restrict__ out, size_t n, float s) {
  size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; size_t w = t >> 5, lane = t & 31;
  size_t i0 = w * 64 + lane, i1 = i0 + 32; if (i1 >= n) return;
  uint2 c0 = in[i0], c1 = in[i1];
  uint2 a = cvt<kDeq>(c0.x, s), b = cvt<kDeq>(c0.y, s); out[i0] = make_uint4(a.x, a.y, b.x, b.y);
  uint2 d = cvt<kDeq>(c1.x, s), e = cvt<kDeq>(c1.y, s); out[i1] = make_uint4(d.x, d.y, e.x, e.y);
}
// 16 codes a thread, one 16-byte load; the warp's stores made contiguous by shuffles
template <bool kDeq> __global__ void widen_shfl(const uint4* __restrict__ in, uint4* __restrict__ out, size_t n, float s) {
  size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (t >= n) return;  // n multiple of 32
  unsigned lane = threadIdx.x & 31; size_t w = t >> 5;
  uint4 c = in[t];
  // store j (0, 1) by lane l: output 16 bytes number 32j + l = codes of lane (16j + l/2), half l%2
  uint4 r[2];
  #pragma unroll
  for (int j = 0; j < 2; ++j) {
    int src = 16 * j + (lane >> 1);
    uint32_t x = __shfl_sync(~0u, c.x, src), y = __shfl_sync(~0u, c.y, src), z = __shfl_sync(~0u, c.z, src), q = __shfl_sync(~0u, c.w, src);
    uint32_t lo = (lane & 1) ? z : x, hi = (lane & 1) ? q : y;
    uint2 a = cvt<kDeq>(lo, s), b = cvt<kDeq>(hi, s); r[j] = make_uint4(a.x, a.y, b.x, b.y);
  }
  out[w * 64 + lane] = r[0]; out[w * 64 + 32 + lane] = r[1];
}
// write only (memset-like), read only (sum)
__global__ void write_only(uint4* __restrict__ out, size_t n) {
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (i < n) out[i] = make_uint4(i, 1, 2, 3);
}
__global__ void read_only(const uint4* __restrict__ in, size_t n, unsigned* sink) {
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; if (i >= n) return; uint4 c = in[i];
  if ((c.x ^ c.y ^ c.z ^ c.w) == 0x12345679u) atomicAdd(sink, 1);
}

int main() {
  const size_t flush_bytes = 512ull << 20;
  char* flush; CK(cudaMalloc(&flush, flush_bytes));
  unsigned* sink; CK(cudaMalloc(&sink, 4));
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  for (size_t codes : {64ull << 20, 256ull << 20, 604ull << 20}) {  // code bytes; output 2x
    uint8_t *in; uint8_t* out; CK(cudaMalloc(&in, codes)); CK(cudaMalloc(&out, 2 * codes));
    CK(cudaMemset(in, 0x3a, codes)); CK(cudaMemset(out, 0, 2 * codes));
    const size_t total = 3 * codes;  // bytes moved
    auto time = [&](auto launch) {
      std::vector<float> ms;
      for (int r = 0; r < 15; ++r) {
        CK(cudaMemsetAsync(flush, r, flush_bytes));
        CK(cudaEventRecord(e0)); launch(); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
        float m; CK(cudaEventElapsedTime(&m, e0, e1)); ms.push_back(m);
      }
      CK(cudaGetLastError());
      std::sort(ms.begin(), ms.end()); return ms[ms.size() / 2] * 1e3f;
    };
    const int B = 256;
    auto grid = [&](size_t threads) { return unsigned((threads + B - 1) / B); };
    uint8_t *cin, *cout; CK(cudaMalloc(&cin, total / 2)); CK(cudaMalloc(&cout, total / 2)); CK(cudaMemset(cin, 7, total / 2));
    float memcpy_us = time([&] { CK(cudaMemcpyAsync(cout, cin, total / 2, cudaMemcpyDeviceToDevice)); });
    printf("== code bytes %zu MB, moved %zu MB; cudaMemcpy of %zu MB: %.1f us (%.0f GB/s)\n", codes >> 20, total >> 20, (total / 2) >> 20, memcpy_us, total / memcpy_us / 1e3);
    auto row = [&](const char* name, float us, size_t bytes) { printf("%-22s %9.1f us %7.0f GB/s  %5.3f of memcpy\n", name, us, bytes / us / 1e3, (bytes / us) / (total / memcpy_us)); };
    size_t n16 = total / 2 / 16;
    row("copy16 kernel", time([&] { copy16<<<grid(n16), B>>>((uint4*)cin, (uint4*)cout, n16); }), total);
    size_t nv = codes / 16, nh = codes / 8; float s = 0.37f;
    row("widen split (ours)", time([&] { widen_split<false><<<grid(nv), B>>>((uint4*)in, (uint4*)out, nv, s); }), total);
    row("widen 8", time([&] { widen_8<false><<<grid(nh), B>>>((uint2*)in, (uint4*)out, nh, s); }), total);
    row("widen 2x8", time([&] { widen_2x8<false><<<grid(nv), B>>>((uint2*)in, (uint4*)out, nh, s); }), total);
    row("widen shfl", time([&] { widen_shfl<false><<<grid(nv), B>>>((uint4*)in, (uint4*)out, nv, s); }), total);
    row("deq split (ours)", time([&] { widen_split<true><<<grid(nv), B>>>((uint4*)in, (uint4*)out, nv, s); }), total);
    row("deq 8", time([&] { widen_8<true><<<grid(nh), B>>>((uint2*)in, (uint4*)out, nh, s); }), total);
    row("deq 2x8", time([&] { widen_2x8<true><<<grid(nv), B>>>((uint2*)in, (uint4*)out, nh, s); }), total);
    row("deq shfl", time([&] { widen_shfl<true><<<grid(nv), B>>>((uint4*)in, (uint4*)out, nv, s); }), total);
    size_t nw = 2 * codes / 16;
    row("write only (2/3)", time([&] { write_only<<<grid(nw), B>>>((uint4*)out, nw); }), 2 * codes);
    row("read only (1/3)", time([&] { read_only<<<grid(nv), B>>>((uint4*)in, nv, sink); }), codes);
    row("cudaMemset out (2/3)", time([&] { CK(cudaMemsetAsync(out, 1, 2 * codes)); }), 2 * codes);
    CK(cudaFree(in)); CK(cudaFree(out)); CK(cudaFree(cin)); CK(cudaFree(cout));
  }
  return 0;
}
