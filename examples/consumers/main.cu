// A consumer of kvcast: the README's API example, compiled by CI three ways (find_package
// against an installed prefix, add_subdirectory, and a copied include/kvcast/ alone).
#include <kvcast/kvcast.cuh>

#include <cstdio>

// README:begin
// Downcast one step's K and V ([num_tokens, heads, head_dim] bf16, contiguous) into an fp8
// E4M3 cache of `cache_rows` rows, token t going to row loc[t]; scales live in device memory.
kvcast::Status write_kv_cache(const __nv_bfloat16* k, const __nv_bfloat16* v, void* k_cache, void* v_cache,
                              const std::int64_t* loc, const float* k_scale, const float* v_scale,
                              std::int64_t num_tokens, std::int64_t heads, std::int64_t head_dim,
                              std::int64_t cache_rows, cudaStream_t stream) {
  kvcast::DowncastArgs<__nv_bfloat16> args;
  args.k = k;
  args.v = v;
  args.num_tokens = num_tokens;
  args.heads = heads;
  args.head_dim = head_dim;
  args.k_out = k_cache;
  args.v_out = v_cache;
  args.out = kvcast::OutputLayout::contiguous(heads, head_dim);  // or paged_nhd(16, heads, head_dim), …
  args.loc = loc;              // int64 or int32; a negative slot skips the token
  args.out_rows = cache_rows;  // rows outside [0, cache_rows) are skipped, never written
  args.k_scale = kvcast::Scale::in_device_memory(k_scale);
  args.v_scale = kvcast::Scale::in_device_memory(v_scale);
  return kvcast::downcast<kvcast::e4m3>(args, stream);  // fp32 arithmetic, PyTorch's numerics
}
// README:end

int main() {
  // Invalid on purpose (no tensors): shows the error path without needing a GPU.
  const kvcast::Status s = write_kv_cache(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 8, 128, 16, nullptr);
  std::printf("kvcast %d.%d.%d consumer: %s (%s)\n", KVCAST_VERSION_MAJOR, KVCAST_VERSION_MINOR, KVCAST_VERSION_PATCH,
              kvcast::to_string(s.code()), s.message());
  return s.code() == kvcast::Code::null_pointer ? 0 : 1;
}
