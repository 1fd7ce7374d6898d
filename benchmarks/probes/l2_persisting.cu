// kvcast — KV-cache quantization. Apache-2.0.
//
// Probe (not a kvcast kernel): what 4-byte stores of L2 evict-last priority (the per-(token, head)
// write's scale stores, cuda::access_property::persisting) leave behind for the kernels after
// them. A reader re-reads a 32 or 48 MB buffer that L2 holds; it is timed twice after a writer
// has made 65537 4-byte stores at hashed 128-byte lines of a region (35717 distinct lines, 4.4 MB
// of them: about 18000 tokens' K and V scales, each row on a line of its own), of normal or
// evict-last priority; after those lines were loaded once at
// normal priority (as a read or an attention kernel would); after five writers to five regions
// in a row; and after those and cudaCtxResetPersistingL2Cache. Medians of 15 samples by CUDA
// events. Build and run on the GPU machine:
//
//   nvcc -std=c++17 -O3 -arch=sm_90 -o l2_persisting benchmarks/probes/l2_persisting.cu && ./l2_persisting
//
// benchmarks/NOTES.md #15zu has its H200 numbers.
#include <cuda/annotated_ptr>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>
#define CK(x)                                                                   \
  do {                                                                          \
    cudaError_t e = (x);                                                        \
    if (e != cudaSuccess) {                                                     \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));     \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

constexpr std::size_t kLine = 128;

// `lines` 4-byte stores at the first float of hashed 128-byte lines of `out`.
template <bool Persisting>
__global__ void write_scattered(float* out, std::uint32_t lines) {
  const std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= lines) return;
  const std::uint32_t line = (i * 2654435761u) % lines;  // wraps at 2^32: 35717 distinct lines of 65537
  float* at = out + line * (kLine / 4);
  if constexpr (Persisting) {
    *cuda::associate_access_property(at, cuda::access_property::persisting{}) = 1.0f;
  } else {
    *at = 1.0f;
  }
}

// One normal load of each line written above.
__global__ void touch(const float* in, std::uint32_t lines, float* sink) {
  const std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= lines) return;
  const float x = in[std::size_t{i} * (kLine / 4)];
  if (x == 12345.0f) *sink = x;
}

// The reader: sums `n` uint4 of `in`.
__global__ void read_all(const uint4* in, std::size_t n, unsigned* sink) {
  unsigned s = 0;
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const uint4 v = in[i];
    s ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (s == 0x12345678u) *sink = s;
}

int main() {
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  std::size_t limit = 0;
  CK(cudaDeviceGetLimit(&limit, cudaLimitPersistingL2CacheSize));
  std::printf("%s: L2 %d MB, persistingL2CacheMaxSize %d MB, cudaLimitPersistingL2CacheSize %zu bytes\n", prop.name,
              prop.l2CacheSize >> 20, prop.persistingL2CacheMaxSize >> 20, limit);

  const std::size_t reader_bytes = 48u << 20;
  const std::uint32_t lines = 65537;  // a region of 8 MB of lines, 4.4 MB of them written
  const int regions = 5;
  std::uint8_t *reader = nullptr, *scales = nullptr, *sweep = nullptr;
  unsigned* sink = nullptr;
  CK(cudaMalloc(&reader, reader_bytes));
  CK(cudaMalloc(&scales, regions * std::size_t{lines} * kLine));
  CK(cudaMalloc(&sweep, 512u << 20));
  CK(cudaMalloc(&sink, 64));
  CK(cudaMemset(reader, 1, reader_bytes));
  CK(cudaMemset(scales, 0, regions * std::size_t{lines} * kLine));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  const int threads = 256, blocks = prop.multiProcessorCount * 8;
  const std::uint32_t write_blocks = (lines + threads - 1) / threads;
  auto region = [&](int r) { return reinterpret_cast<float*>(scales + r * std::size_t{lines} * kLine); };
  auto read = [&](std::size_t n) { read_all<<<blocks, threads>>>(reinterpret_cast<const uint4*>(reader), n, sink); };

  // mode 0: no writer; 1: normal stores; 2: evict-last stores; 3: evict-last, then each line
  // loaded at normal priority; 4: evict-last to five regions (22 MB of lines) in a row;
  // 5: as 4, then cudaCtxResetPersistingL2Cache.
  const char* names[] = {"no writer", "normal stores", "evict-last stores", "evict-last, then loaded at normal priority",
                         "evict-last, five regions", "evict-last, five regions, then reset"};
  for (std::size_t mb : {32u, 48u}) {
    const std::size_t n = (mb << 20) / 16;
    for (int mode = 0; mode < 6; ++mode) {
      std::vector<float> first, second;
      for (int s = 0; s < 15; ++s) {
        CK(cudaMemsetAsync(sweep, s, 512u << 20));  // L2 swept: nothing of the last sample stays
        CK(cudaCtxResetPersistingL2Cache());
        read(n);  // the reader's buffer into L2
        const int writes = mode >= 4 ? regions : (mode == 0 ? 0 : 1);
        for (int r = 0; r < writes; ++r) {
          if (mode == 1) write_scattered<false><<<write_blocks, threads>>>(region(r), lines);
          else write_scattered<true><<<write_blocks, threads>>>(region(r), lines);
        }
        if (mode == 3) touch<<<write_blocks, threads>>>(region(0), lines, reinterpret_cast<float*>(sink));
        if (mode == 5) CK(cudaCtxResetPersistingL2Cache());
        for (std::vector<float>* t : {&first, &second}) {  // the reader right after, and once more
          CK(cudaEventRecord(a));
          read(n);
          CK(cudaEventRecord(b));
          CK(cudaEventSynchronize(b));
          float ms = 0;
          CK(cudaEventElapsedTime(&ms, a, b));
          t->push_back(ms * 1000.0f);
        }
      }
      std::sort(first.begin(), first.end());
      std::sort(second.begin(), second.end());
      std::printf("reader %2zu MB, %-43s next read %7.2f us, the one after %7.2f us\n", mb, names[mode], first[7], second[7]);
    }
  }
  return 0;
}
