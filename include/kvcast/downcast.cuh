// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file downcast.cuh
//! The device-wide API: validate, plan, launch on the caller's stream. No exceptions, no
//! allocation, no synchronisation (except downcast_checked), no blocking query per call:
//! CUDA-graph capturable. The block-level API, for a write inside your own kernel, is block.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "args.hpp"
#include "config.hpp"
#include "detail/dispatch.cuh"
#include "detail/plan.hpp"
#include "format.hpp"
#include "policy.cuh"
#include "status.hpp"
#include "validate.hpp"

namespace kvcast {

//! Downcasts K and V into their KV-cache slots (DESIGN.md §1–2) on `stream`.
//!
//! @tparam Format `kvcast::e4m3` or `kvcast::e5m2`; `kvcast::nvfp4` with kvcast/nvfp4.cuh included
//! @tparam Mode   Arithmetic::fp32 (PyTorch's numerics, default) or Arithmetic::input_precision
//!                (SGLang's downcast_fp8, bit for bit)
//! @tparam T      `__nv_bfloat16`, `__half` or `float` (deduced)
//! @return ok once the kernel is enqueued (or there is nothing to do); otherwise the first
//!         broken rule, before any CUDA call, or the CUDA error of the launch.
//! @post nothing is written outside the rows the contract names; asynchronous.
template <class Format = e4m3, Arithmetic Mode = Arithmetic::fp32, class T>
Status downcast(const DowncastArgs<T>& args, cudaStream_t stream = nullptr) {
  static_assert(sizeof(dtype_of<T>::value) > 0, "kvcast::downcast: T must be __nv_bfloat16, __half or float.");
  detail::Plan plan;
  if (Status s = make_plan(args, plan, Mode, code_format_of<Format>()); !s || plan.num_segments == 0) return s;
  return detail::dispatch<typename CodePolicyOf<Format, Mode>::type>(args, plan, stream);
}

//! downcast() followed by a synchronisation of `stream` that turns the error counter into an
//! error: zeroes `*args.error_count` (required), launches, reads it back. Returns
//! Code::rows_out_of_range when any token's row was skipped by the bounds check, and any CUDA
//! error the kernel raised. For debugging and tests; serving paths use downcast().
template <class Format = e4m3, Arithmetic Mode = Arithmetic::fp32, class T>
Status downcast_checked(const DowncastArgs<T>& args, cudaStream_t stream = nullptr) {
  if (args.error_count == nullptr)
    return Status::error(Code::null_pointer, "error_count is null: downcast_checked needs a device counter to read back");
  detail::Plan plan;  // validated once, before anything touches the device
  if (Status s = make_plan(args, plan, Mode, code_format_of<Format>()); !s) return s;
  if (Status s = detail::cuda_status(cudaMemsetAsync(args.error_count, 0, sizeof(unsigned long long), stream),
                                     "kvcast::downcast_checked: zeroing error_count");
      !s)
    return s;
  if (plan.num_segments > 0)
    if (Status s = detail::dispatch<typename CodePolicyOf<Format, Mode>::type>(args, plan, stream); !s) return s;
  unsigned long long skipped = 0;
  if (Status s = detail::cuda_status(cudaMemcpyAsync(&skipped, args.error_count, sizeof skipped, cudaMemcpyDeviceToHost, stream),
                                     "kvcast::downcast_checked: reading error_count");
      !s)
    return s;
  if (Status s = detail::cuda_status(cudaStreamSynchronize(stream), "kvcast::downcast_checked: kernel"); !s) return s;
  if (skipped > 0)
    return Status::error(Code::rows_out_of_range,
                         "loc: %llu of %lld tokens have slots whose row (slot*mult+offset) is outside [0, out_rows=%lld); "
                         "their rows were skipped",
                         skipped, static_cast<long long>(args.num_tokens), static_cast<long long>(args.out_rows));
  return Status{};
}

//! Drop-in for SGLang's `downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult, offset)`:
//! the same arguments in the same order, then the shape (SGLang reads it off the tensors) and
//! the stream. Contiguous `[num_tokens, heads, head_dim]` inputs and `[rows, heads, head_dim]`
//! E4M3 outputs, scales in device memory, int64 loc, SGLang's input-precision arithmetic.
//! Like SGLang's, it has no row count, so rows are unchecked (kUncheckedRows): a slot past the
//! cache writes past it. One difference, on purpose: a negative loc skips the token instead of
//! writing before k_out. Give DowncastArgs::out_rows through downcast() to bound the rows.
template <class T>
Status downcast_fp8(const T* k, const T* v, void* k_out, void* v_out, const float* k_scale, const float* v_scale,
                    const std::int64_t* loc, std::int64_t mult, std::int64_t offset, std::int64_t num_tokens,
                    std::int64_t heads, std::int64_t head_dim, cudaStream_t stream = nullptr) {
  DowncastArgs<T> args;
  args.k = k;
  args.v = v;
  args.k_out = k_out;
  args.v_out = v_out;
  args.k_scale = Scale::in_device_memory(k_scale);
  args.v_scale = Scale::in_device_memory(v_scale);
  args.loc = loc;
  args.mult = mult;
  args.offset = offset;
  args.out_rows = DowncastArgs<T>::kUncheckedRows;
  args.num_tokens = num_tokens;
  args.heads = heads;
  args.head_dim = head_dim;
  return downcast<e4m3, Arithmetic::input_precision>(args, stream);
}

}  // namespace kvcast
