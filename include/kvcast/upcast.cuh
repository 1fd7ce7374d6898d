// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file upcast.cuh
//! The read path's device-wide API: gather cache rows (by slots or by a page table) and
//! dequantize them to bf16, fp16 or fp32. Validate, plan, launch on the caller's stream; no
//! exceptions, no allocation, no synchronisation (except upcast_checked): CUDA-graph capturable.
#pragma once

#include <cuda_runtime_api.h>

#include "args.hpp"
#include "config.hpp"
#include "detail/dispatch.cuh"
#include "detail/read_plan.hpp"
#include "format.hpp"
#include "status.hpp"

namespace kvcast {

//! Reads the cache rows `args` names into `args.k` / `args.v` (DESIGN.md §1, the read):
//! `out[t, h, d] = T(float(code) * scale)` for the cache row of output token t.
//!
//! @tparam Format the cache's codes: `kvcast::e4m3` or `kvcast::e5m2`; `kvcast::nvfp4` with
//!                kvcast/nvfp4.cuh included (the block scales: UpcastArgs::k_block_scales)
//! @tparam T      output type `__nv_bfloat16`, `__half` or `float` (deduced)
//! @return ok once the kernel is enqueued (or there is nothing to do); otherwise the first
//!         broken rule, before any CUDA call, or the CUDA error of the launch.
//! @post only the output tokens that read a row are written; nothing outside the cache, its
//!       scales, the slots and the page table is read; asynchronous.
template <class Format = e4m3, class T>
Status upcast(const UpcastArgs<T>& args, cudaStream_t stream = nullptr) {
  static_assert(sizeof(dtype_of<T>::value) > 0, "kvcast::upcast: T must be __nv_bfloat16, __half or float.");
  detail::ReadPlan plan;
  if (Status s = make_read_plan(args, plan, code_format_of<Format>()); !s || plan.num_segments == 0) return s;
  return detail::dispatch_read<Format>(args, plan, stream);
}

//! upcast() followed by a synchronisation of `stream` that turns the error counter into an
//! error: zeroes `*args.error_count` (required), launches, reads it back. Returns
//! Code::rows_out_of_range when any token was skipped by a bounds check, and any CUDA error the
//! kernel raised. For debugging and tests; serving paths use upcast().
template <class Format = e4m3, class T>
Status upcast_checked(const UpcastArgs<T>& args, cudaStream_t stream = nullptr) {
  if (args.error_count == nullptr)
    return Status::error(Code::null_pointer, "error_count is null: upcast_checked needs a device counter to read back");
  detail::ReadPlan plan;
  if (Status s = make_read_plan(args, plan, code_format_of<Format>()); !s) return s;
  if (Status s = detail::cuda_status(cudaMemsetAsync(args.error_count, 0, sizeof(unsigned long long), stream),
                                     "kvcast::upcast_checked: zeroing error_count");
      !s)
    return s;
  if (plan.num_segments > 0)
    if (Status s = detail::dispatch_read<Format>(args, plan, stream); !s) return s;
  unsigned long long skipped = 0;
  if (Status s = detail::cuda_status(cudaMemcpyAsync(&skipped, args.error_count, sizeof skipped, cudaMemcpyDeviceToHost, stream),
                                     "kvcast::upcast_checked: reading error_count");
      !s)
    return s;
  if (Status s = detail::cuda_status(cudaStreamSynchronize(stream), "kvcast::upcast_checked: kernel"); !s) return s;
  if (skipped > 0)
    return Status::error(Code::rows_out_of_range,
                         "%s: %llu of %lld tokens have rows outside [0, cache_rows=%lld)%s; they were left untouched",
                         args.block_table ? "block_table" : "loc", skipped, static_cast<long long>(args.num_tokens),
                         static_cast<long long>(args.cache_rows),
                         args.block_table ? ", pages outside [0, cache_rows / page_size) or page indices past max_pages" : "");
  return Status{};
}

}  // namespace kvcast
