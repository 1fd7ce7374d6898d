// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file launch.cuh
//! Host API: validate, plan, launch on the caller's stream. No exceptions, no allocation, no
//! synchronisation (except downcast_checked), no blocking query per call: CUDA-graph capturable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "args.hpp"
#include "config.cuh"
#include "downcast.cuh"
#include "format.hpp"
#include "plan.hpp"
#include "status.hpp"

namespace kvcast {
namespace detail {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status{};
  return Status::error(Code::cuda_error, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

//! Fills the kernel's parameters from a validated plan and launches it on `stream`: one
//! launch, no query, nothing cached.
template <class T, class Format, Arithmetic Mode, int Vec, int Access>
Status launch(const DowncastArgs<T>& a, const Plan& plan, cudaStream_t stream) {
  constexpr int kBlock = kBlockSize;
  DowncastParams<T> p{};
  p.k = a.k;
  p.v = a.v;
  p.k_out = static_cast<std::uint8_t*>(a.k_out);
  p.v_out = static_cast<std::uint8_t*>(a.v_out);
  p.in_token_stride = plan.in_token_stride;
  p.in_head_stride = plan.in_head_stride;
  p.out = plan.out;
  p.segs_per_token = FastDivmod(static_cast<std::uint32_t>(plan.segs_per_token));
  p.num_segments = static_cast<std::uint32_t>(plan.num_segments);
  p.seg_len = static_cast<std::uint32_t>(plan.seg_len);
  p.full_items = static_cast<std::uint32_t>(plan.seg_len / Vec);
  p.log2_group = static_cast<std::uint32_t>(plan.log2_group);
  p.loc = a.loc.data;
  p.loc_is_int32 = a.loc.is_int32 ? 1u : 0u;
  // A dense plan's rows are flat: its kernels take `slot * mult + offset` as the row's byte
  // offset, so the row stride is folded in here (modulo 2^64, exact for every row in range),
  // which takes a 64-bit multiply off the path from the slot's load to the stores.
  const auto times_stride = [&](std::int64_t x) {
    return plan.dense ? static_cast<std::int64_t>(static_cast<std::uint64_t>(x) * static_cast<std::uint64_t>(plan.out.block_stride)) : x;
  };
  p.mult = times_stride(a.mult);
  p.offset = times_stride(a.offset);
  p.min_slot = plan.min_slot;
  p.max_slot = plan.max_slot;
  p.error_count = a.error_count;
  p.k_scale_ptr = a.k_scale.device;
  p.v_scale_ptr = a.v_scale.device;
  p.k_scale = a.k_scale.value;
  p.v_scale = a.v_scale.value;

  // One group of threads per chunk of a segment: x walks the segments (at most 2^31 - 1, see
  // make_plan), y the chunks of a segment (at most 2^15); or, chunks first, the other way round.
  const std::int64_t groups_per_cta = kBlock >> plan.log2_group;
  const std::int64_t ctas = (plan.num_segments + groups_per_cta - 1) / groups_per_cta;
  // make_plan asks for chunks first only with vectors of at least kChunksFirstMinBytes (those
  // of calls above kLargeCall); narrower ones don't instantiate the chunks-first kernels.
  constexpr bool kChunksFirstKernel = Vec * sizeof(T) >= kChunksFirstMinBytes;
  const bool chunks_first = kChunksFirstKernel && plan.chunks_first;
  // Dense calls of 16-bit inputs that take 16 elements a thread one at a time (make_plan:
  // Plan::realign) go to the realigned kernel instead: a warp a row (kRealignWarps rows a CTA
  // on grid x), runs of kRealignRun elements of it on grid y (Plan::chunks_per_seg). No other
  // call takes 16 elements a thread one at a time in the dense kernel.
  constexpr bool kRealignable = Access == 1 && Vec == kRealignVec && sizeof(T) == 2;
  dim3 grid = chunks_first ? dim3(static_cast<unsigned>(plan.chunks_per_seg), static_cast<unsigned>(ctas))
                           : dim3(static_cast<unsigned>(ctas), static_cast<unsigned>(plan.chunks_per_seg));
  dim3 block(kBlock);
  void (*kernel)(DowncastParams<T>) = &downcast_kernel<T, Format, Mode, Vec, Access, false, kBlock, false>;
  if constexpr (kRealignable) {
    if (plan.realign) {
      kernel = &downcast_realigned_kernel<T, Format, Mode>;
      grid = dim3(static_cast<unsigned>((plan.num_segments + kRealignWarps - 1) / kRealignWarps),
                  static_cast<unsigned>(plan.chunks_per_seg));
      block = dim3(kRealignWarps * kLanes);
    }
  } else {
    if (plan.dense) kernel = &downcast_kernel<T, Format, Mode, Vec, Access, true, kBlock, false>;
  }
  if constexpr (kChunksFirstKernel) {
    if (chunks_first) {
      kernel = &downcast_kernel<T, Format, Mode, Vec, Access, false, kBlock, true>;
      if constexpr (!kRealignable)
        if (plan.dense) kernel = &downcast_kernel<T, Format, Mode, Vec, Access, true, kBlock, true>;
    }
  }

  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  if (a.pdl) {
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  return cuda_status(cudaLaunchKernelEx(&config, kernel, p), "kvcast::downcast: kernel launch");
}

//! Launches the kernel a validated plan calls for.
template <class Format, Arithmetic Mode, class T>
Status dispatch(const DowncastArgs<T>& args, const Plan& plan, cudaStream_t stream) {
  if (plan.access == 1) {
    if constexpr (sizeof(T) * 16 <= kMaxVectorBytes)
      if (plan.vec == 16) return launch<T, Format, Mode, 16, 1>(args, plan, stream);
    if (plan.vec == kUnalignedVector) return launch<T, Format, Mode, kUnalignedVector, 1>(args, plan, stream);
  } else {
    switch (plan.vec) {
    case 16:
      if constexpr (sizeof(T) * 16 <= kMaxVectorBytes) return launch<T, Format, Mode, 16, 16>(args, plan, stream);
      break;
    case 8: return launch<T, Format, Mode, 8, 8>(args, plan, stream);
    case 4: return launch<T, Format, Mode, 4, 4>(args, plan, stream);
    case 2: return launch<T, Format, Mode, 2, 2>(args, plan, stream);
    default: break;
    }
  }
  return Status::error(Code::bad_option, "kvcast::downcast: no kernel for vector width %d", plan.vec);
}
}  // namespace detail

//! Downcasts K and V into their KV-cache slots (DESIGN.md §1–2) on `stream`.
//!
//! @tparam Format `kvcast::e4m3` or `kvcast::e5m2`
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
  if (Status s = make_plan(args, plan, Mode); !s || plan.num_segments == 0) return s;
  return detail::dispatch<Format, Mode>(args, plan, stream);
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
  if (Status s = make_plan(args, plan, Mode); !s) return s;
  if (Status s = detail::cuda_status(cudaMemsetAsync(args.error_count, 0, sizeof(unsigned long long), stream),
                                     "kvcast::downcast_checked: zeroing error_count");
      !s)
    return s;
  if (plan.num_segments > 0)
    if (Status s = detail::dispatch<Format, Mode>(args, plan, stream); !s) return s;
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
//! One difference, on purpose: a negative loc skips the token instead of writing before k_out.
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
  args.num_tokens = num_tokens;
  args.heads = heads;
  args.head_dim = head_dim;
  return downcast<e4m3, Arithmetic::input_precision>(args, stream);
}

}  // namespace kvcast
