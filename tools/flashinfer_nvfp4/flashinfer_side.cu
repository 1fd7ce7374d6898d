// kvcast tools — FlashInfer's NVFP4 KV writer, built as FlashInfer's JIT builds it (-use_fast_math,
// its vendored CCCL): the reference side of compare.cu. Nothing of FlashInfer is copied here; its
// header comes from the installed wheel (tools/flashinfer-nvfp4.sh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <flashinfer/page.cuh>

#include <cstdint>

namespace {
// FlashInfer's slot-mapping append (include/flashinfer/page.cuh) on a cache of `pages` pages of
// `page` rows: NHD [pages, page, heads, dim] or HND [pages, heads, page, dim], codes dim / 2 bytes a
// row-head, block scales dim / 16, K and V in separate tensors of the same shape.
template <class T>
cudaError_t write(bool hnd, const void* k, const void* v, const std::int64_t* slots, std::uint32_t tokens, std::uint32_t heads,
                  std::uint32_t page, std::uint32_t pages, std::uint32_t dim, std::uint8_t* k_codes, std::uint8_t* v_codes,
                  std::uint8_t* k_sf, std::uint8_t* v_sf, float* g_k, float* g_v, cudaStream_t stream) {
  const std::size_t ph = dim / 2, sh = dim / 16;
  const std::size_t c_page = std::size_t{page} * heads * ph, s_page = std::size_t{page} * heads * sh;
  const std::size_t c_n = hnd ? ph : heads * ph, c_h = hnd ? page * ph : ph;
  const std::size_t s_n = hnd ? sh : heads * sh, s_h = hnd ? page * sh : sh;
  return flashinfer::NVFP4QuantizeAppendPagedKVCacheWithSlotMapping<T, std::int64_t>(
      static_cast<T*>(const_cast<void*>(k)), static_cast<T*>(const_cast<void*>(v)), const_cast<std::int64_t*>(slots), tokens, heads,
      page, pages, static_cast<std::uint32_t>(ph), std::size_t{heads} * dim, dim, std::size_t{heads} * dim, dim, k_codes, v_codes,
      k_sf, v_sf, c_page, c_n, c_h, c_page, c_n, c_h, s_page, s_n, s_h, s_page, s_n, s_h, g_k, g_v, stream);
}
}  // namespace

cudaError_t flashinfer_nvfp4_write(bool bf16, bool hnd, const void* k, const void* v, const std::int64_t* slots, std::uint32_t tokens,
                                   std::uint32_t heads, std::uint32_t page, std::uint32_t pages, std::uint32_t dim,
                                   std::uint8_t* k_codes, std::uint8_t* v_codes, std::uint8_t* k_sf, std::uint8_t* v_sf, float* g_k,
                                   float* g_v, cudaStream_t stream) {
  return bf16 ? write<__nv_bfloat16>(hnd, k, v, slots, tokens, heads, page, pages, dim, k_codes, v_codes, k_sf, v_sf, g_k, g_v, stream)
              : write<__half>(hnd, k, v, slots, tokens, heads, page, pages, dim, k_codes, v_codes, k_sf, v_sf, g_k, g_v, stream);
}
