// A consumer of kvcast: the README's API examples, compiled by CI three ways (find_package
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

// README:read:begin
// Read back the live rows of a paged E4M3 cache (pages of 16 rows, NHD) as bf16: sequence b's
// tokens are output tokens cu_seq_lens[b] .. cu_seq_lens[b+1]-1, its pages block_table[b][...].
kvcast::Status read_kv_cache(const void* k_cache, const void* v_cache, std::int64_t cache_rows,
                             const std::int32_t* block_table, std::int64_t batch, std::int64_t max_pages,
                             const std::int32_t* cu_seq_lens, const float* k_scale, const float* v_scale,
                             __nv_bfloat16* k, __nv_bfloat16* v, std::int64_t num_tokens, std::int64_t heads,
                             std::int64_t head_dim, cudaStream_t stream) {
  kvcast::UpcastArgs<__nv_bfloat16> args;
  args.k_cache = k_cache;
  args.v_cache = v_cache;
  args.cache = kvcast::OutputLayout::paged_nhd(16, heads, head_dim);
  args.cache_rows = cache_rows;  // no row outside [0, cache_rows) is ever read
  args.block_table = block_table;  // or args.loc = slots: one row per output token
  args.batch = batch;
  args.max_pages = max_pages;
  args.cu_seq_lens = cu_seq_lens;
  args.k = k;  // [num_tokens, heads, head_dim]; out_token_stride / out_head_stride for a slice
  args.v = v;
  args.num_tokens = num_tokens;
  args.heads = heads;
  args.head_dim = head_dim;
  args.k_scale = kvcast::Scale::in_device_memory(k_scale);
  args.v_scale = kvcast::Scale::in_device_memory(v_scale);
  return kvcast::upcast<kvcast::e4m3>(args, stream);  // T(float(code) * scale)
}
// README:read:end

int main() {
  // Invalid on purpose (no tensors): shows the error path without needing a GPU.
  const kvcast::Status s = write_kv_cache(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 8, 128, 16, nullptr);
  std::printf("kvcast %d.%d.%d consumer: %s (%s)\n", KVCAST_VERSION_MAJOR, KVCAST_VERSION_MINOR, KVCAST_VERSION_PATCH,
              kvcast::to_string(s.code()), s.message());
  const kvcast::Status r = read_kv_cache(nullptr, nullptr, 64, nullptr, 2, 4, nullptr, nullptr, nullptr, nullptr, nullptr, 8, 8,
                                         128, nullptr);
  std::printf("kvcast consumer, the read: %s (%s)\n", kvcast::to_string(r.code()), r.message());
  return s.code() == kvcast::Code::null_pointer && r.code() == kvcast::Code::null_pointer ? 0 : 1;
}
