// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/dispatch.cuh
//! From a plan to a launch, for the write and the read: the kernel parameters, one switch over
//! the planner's choice, and the launch itself, which takes the grid as planned. No query, no
//! allocation, nothing cached.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "../args.hpp"
#include "../config.hpp"
#include "../format.hpp"
#include "../policy.cuh"
#include "../status.hpp"
#include "plan.hpp"
#include "read_kernel.cuh"
#include "read_plan.hpp"
#include "write_kernel.cuh"

namespace kvcast {
namespace detail {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status{};
  return Status::error(Code::cuda_error, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

//! The kernel parameters of a planned call.
template <class T, class Scales>
WriteParams<T, Scales> make_write_params(const DowncastArgs<T>& a, const Plan& plan) {
  WriteParams<T, Scales> p{};
  const WriteKernel kernel = plan.choice.kernel;
  const bool amax_lean = kernel == WriteKernel::amax_lean;
  const bool dense_rows = kernel == WriteKernel::dense || kernel == WriteKernel::realigned || amax_lean;
  // The lean amax write: a vector's head by a shift (lean_amax_call: a power-of-two head_dim where
  // the heads have scales of their own).
  p.log2_group = !amax_lean                                          ? static_cast<std::uint32_t>(plan.choice.log2_group)
                 : a.scale_kind == ScaleKind::per_head && a.heads > 1 ? static_cast<std::uint32_t>(log2_ceil(a.head_dim))
                                                                      : 31u;
  p.num_segments = static_cast<std::uint32_t>(plan.num_segments);
  p.seg_len = static_cast<std::uint32_t>(plan.seg_len);
  p.chunks_first = plan.choice.order == GridOrder::chunks_first ? 1u : 0u;
  // DenseRows (the dense and realigned kernels): head_dim; the lean amax write: a row's vectors;
  // LayoutRows: segments a token.
  p.split = FastDivmod(static_cast<std::uint32_t>(amax_lean    ? plan.seg_len / kAmaxLeanVec
                                                  : dense_rows ? a.head_dim
                                                               : plan.segs_per_token));
  p.loc_is_int32 = a.loc.is_int32 ? 1u : 0u;
  p.k = a.k;
  p.v = a.v;
  p.in_token_stride = plan.in_token_stride;
  p.in_head_stride = plan.in_head_stride;
  p.loc = a.loc.data;
  p.scales = Scales::make(a);
  if constexpr (Scales::kAmax)
    p.scales.amax.skip_smaller = plan.choice.amax_adds_by_cta() ? 1u : 0u;
  p.min_slot = plan.min_slot;
  p.max_slot = plan.max_slot;
  // DenseRows (the dense and realigned kernels) take `slot * mult + offset` as the row's byte
  // offset: the row stride is folded in here (modulo 2^64, exact for every row in range), which
  // takes a 64-bit multiply off the path from the slot's load to the stores. Not where a
  // computed scale is stored at the row (WriteParams::kRowsFolded).
  const bool fold = dense_rows && WriteParams<T, Scales>::kRowsFolded;
  const auto times_stride = [&](std::int64_t x) {
    return fold ? static_cast<std::int64_t>(static_cast<std::uint64_t>(x) * static_cast<std::uint64_t>(plan.out.block_stride)) : x;
  };
  p.mult = times_stride(a.mult);
  p.offset = times_stride(a.offset);
  p.out = plan.out;
  p.k_out = static_cast<std::uint8_t*>(a.k_out);
  p.v_out = static_cast<std::uint8_t*>(a.v_out);
  p.error_count = a.error_count;
  return p;
}

template <class T, class Scales>
using WriteKernelPointer = void (*)(WriteParams<T, Scales>);

//! The planner's name of a scale policy (the kernels that exist for it: write_kernel_exists).
template <class Scales>
constexpr ScalePolicyId scale_policy_id() {
  return std::is_same<Scales, PerTokenHeadScale>::value ? ScalePolicyId::per_token_head
         : std::is_same<Scales, PerHeadScale>::value    ? ScalePolicyId::per_head
                                                        : ScalePolicyId::per_tensor;
}

//! The write kernel with a vector of `Vec` elements laid out as `A`, when it exists.
template <class T, class Codes, class Scales, tile::Access A, int Vec>
WriteKernelPointer<T, Scales> vector_kernel(WriteKernel kernel) {
  constexpr int kBytes = static_cast<int>(sizeof(T));
  constexpr Arithmetic kMode = Codes::kMode;
  constexpr ScalePolicyId kScales = scale_policy_id<Scales>();
  if constexpr (write_kernel_exists(WriteKernel::dense, Vec, A, kBytes, kMode, kScales))
    if (kernel == WriteKernel::dense) return &write_kernel<T, Codes, Scales, DenseRows, Vec, A>;
  if constexpr (write_kernel_exists(WriteKernel::general, Vec, A, kBytes, kMode, kScales))
    if (kernel == WriteKernel::general) return &write_kernel<T, Codes, Scales, LayoutRows, Vec, A>;
  return nullptr;
}

//! The lean row-head warp's parameters of a planned call (lean_token_head_call: row-heads as
//! segments, whatever the plan fused; codes and scales in the flat rows both layouts are there).
template <class T>
RowHeadLeanParams<T> make_row_head_lean_params(const DowncastArgs<T>& a, const Plan& plan) {
  RowHeadLeanParams<T> p{};
  p.num_segments = static_cast<std::uint32_t>(a.num_tokens * a.heads);
  p.split = FastDivmod(static_cast<std::uint32_t>(a.heads));
  p.k = a.k;
  p.v = a.v;
  p.scale_head_stride = plan.scales_out.head_stride;
  p.min_scale = a.min_scale;
  p.in_token_stride = plan.in_token_stride;
  p.in_head_stride = plan.in_head_stride;
  p.k_out = static_cast<std::uint8_t*>(a.k_out);
  p.v_out = static_cast<std::uint8_t*>(a.v_out);
  p.k_scales = a.k_scales_out;
  p.v_scales = a.v_scales_out;
  p.code_row_stride = row_stride_of(plan.out);
  p.code_head_stride = plan.out.head_stride;
  p.loc = static_cast<const long long*>(a.loc.data);
  p.min_slot = plan.min_slot;
  p.max_slot = plan.max_slot;
  p.scale_row_stride = row_stride_of(plan.scales_out);
  p.k_amax = a.k_amax;
  p.v_amax = a.v_amax;
  p.error_count = a.error_count;
  return p;
}

template <class T>
using RowHeadLeanKernelPointer = void (*)(RowHeadLeanParams<T>);

//! The lean row-head warp of lane vector `vec`, with the amax output or without, K and V apart
//! or in one warp (null where that instance is not compiled: lean_row_head_together).
template <class T, class Codes, bool Amax>
RowHeadLeanKernelPointer<T> lean_row_head_kernel(int vec, bool apart) {
  static_assert(lean_row_head_vec(64) == 2 && lean_row_head_vec(128) == 4 && lean_row_head_vec(256) == 8,
                "lean_row_head_kernel: the lean row-head warp's lane vectors");
  if (!apart) {
    if constexpr (lean_row_head_together(2, Amax))
      if (vec == 2) return &write_row_head_lean_kernel<T, Codes, 2, 0, false, Amax>;
    return nullptr;
  }
  switch (vec) {
    case 2: return &write_row_head_lean_kernel<T, Codes, 2, 0, true, Amax>;
    case 4: return &write_row_head_lean_kernel<T, Codes, 4, 0, true, Amax>;
    case 8: return &write_row_head_lean_kernel<T, Codes, 8, 0, true, Amax>;
    case kRowHeadWarpVec: return &write_row_head_lean_kernel<T, Codes, kRowHeadWarpVec, kRowHeadWarpSide, true, Amax>;
    default: return nullptr;
  }
}

//! The one switch over the planner's choice. Null for a choice no kernel exists for (the
//! planner never makes one: write_kernel_exists).
template <class T, class Codes, class Scales>
WriteKernelPointer<T, Scales> select_kernel(const KernelChoice& c) {
  if (c.kernel == WriteKernel::realigned) {
    if constexpr (write_kernel_exists(WriteKernel::realigned, kRealignVec, tile::Access::interleaved, sizeof(T), Codes::kMode,
                                      scale_policy_id<Scales>()))
      return &write_realigned_kernel<T, Codes, Scales>;
    else
      return nullptr;
  }
  if (c.kernel == WriteKernel::row_head_warp) {
    if constexpr (write_kernel_exists(WriteKernel::row_head_warp, kRowHeadWarpVec, tile::Access::vector, sizeof(T), Codes::kMode,
                                      scale_policy_id<Scales>()))
      return &write_row_head_warp_kernel<T, Codes, Scales, kRowHeadWarpVec, kRowHeadWarpSide>;
    else
      return nullptr;
  }
  if (c.kernel == WriteKernel::amax_lean) {
    if constexpr (std::is_same<Scales, PerHeadScale>::value &&
                  write_kernel_exists(WriteKernel::amax_lean, kAmaxLeanVec, tile::Access::vector, sizeof(T), Codes::kMode,
                                      ScalePolicyId::per_head))
      return &write_amax_lean_kernel<T, Codes>;
    else
      return nullptr;
  }
  if (c.kernel == WriteKernel::row_head_lean) return nullptr;  // parameters of its own: dispatch
  if (c.access == tile::Access::interleaved) {
    switch (c.vec) {
      case 8: return vector_kernel<T, Codes, Scales, tile::Access::interleaved, 8>(c.kernel);
      case 16: return vector_kernel<T, Codes, Scales, tile::Access::interleaved, 16>(c.kernel);
      default: return nullptr;
    }
  }
  switch (c.vec) {
    case 2: return vector_kernel<T, Codes, Scales, tile::Access::vector, 2>(c.kernel);
    case 4: return vector_kernel<T, Codes, Scales, tile::Access::vector, 4>(c.kernel);
    case 8: return vector_kernel<T, Codes, Scales, tile::Access::vector, 8>(c.kernel);
    case 16: return vector_kernel<T, Codes, Scales, tile::Access::vector, 16>(c.kernel);
    default: return nullptr;
  }
}

//! Launches `kernel` on `stream` with the planned grid; programmatic dependent launch on request.
template <class Params>
Status launch(void (*kernel)(Params), const KernelChoice& c, const Params& p, bool pdl, cudaStream_t stream,
              const char* what = "kvcast::downcast: kernel launch") {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(c.grid_x), static_cast<unsigned>(c.grid_y), static_cast<unsigned>(c.grid_z));
  config.blockDim = dim3(static_cast<unsigned>(c.block));
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  if (pdl) {
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  return cuda_status(cudaLaunchKernelEx(&config, kernel, p), what);
}

//! Carries out a planned call with scale policy `Scales`: parameters, the kernel the plan
//! chose, the launch.
template <class Codes, class Scales, class T>
Status dispatch(const DowncastArgs<T>& args, const Plan& plan, cudaStream_t stream) {
  if constexpr (std::is_same<Scales, PerTokenHeadScale>::value &&
                write_kernel_exists(WriteKernel::row_head_lean, kRowHeadWarpVec, tile::Access::vector, sizeof(T), Codes::kMode,
                                    ScalePolicyId::per_token_head)) {
    if (plan.choice.kernel == WriteKernel::row_head_lean) {
      const bool apart = plan.choice.grid_z == 2;
      const RowHeadLeanKernelPointer<T> lean = plan.choice.amax ? lean_row_head_kernel<T, Codes, true>(plan.choice.vec, apart)
                                                                : lean_row_head_kernel<T, Codes, false>(plan.choice.vec, apart);
      if (lean == nullptr)
        return Status::error(Code::bad_option, "kvcast::downcast: no kernel for vector width %d", plan.choice.vec);
      return launch(lean, plan.choice, make_row_head_lean_params(args, plan), args.pdl, stream);
    }
  }
  const WriteKernelPointer<T, Scales> kernel = select_kernel<T, Codes, Scales>(plan.choice);
  if (kernel == nullptr)
    return Status::error(Code::bad_option, "kvcast::downcast: no kernel for vector width %d", plan.choice.vec);
  return launch(kernel, plan.choice, make_write_params<T, Scales>(args, plan), args.pdl, stream);
}

//! Carries out a planned call with the scale policy the plan names; a block-scaled format
//! (NVFP4) with its own scale policy, on the general kernel: vectors of a block or half of one,
//! or the widest one element an access.
template <class Codes, class T>
Status dispatch(const DowncastArgs<T>& args, const Plan& plan, cudaStream_t stream) {
  if constexpr (Codes::kBlockScaled) {
    using Scales = typename Codes::Scales;
    constexpr int kWidest = nvfp4_vec(sizeof(T));
    WriteKernelPointer<T, Scales> kernel = &write_kernel<T, Codes, Scales, LayoutRows, kWidest, tile::Access::elements>;
    if (plan.choice.access == tile::Access::vector)
      kernel = plan.choice.vec == kWidest ? &write_kernel<T, Codes, Scales, LayoutRows, kWidest, tile::Access::vector>
                                          : &write_kernel<T, Codes, Scales, LayoutRows, kNvfp4HalfBlock, tile::Access::vector>;
    return launch(kernel, plan.choice, make_write_params<T, Scales>(args, plan), args.pdl, stream);
  } else {
    switch (plan.scale_policy) {
      case ScalePolicyId::per_tensor: return dispatch<Codes, PerTensorScale>(args, plan, stream);
      case ScalePolicyId::per_head: return dispatch<Codes, PerHeadScale>(args, plan, stream);
      case ScalePolicyId::per_token_head:
        if constexpr (Codes::kMode == Arithmetic::fp32) return dispatch<Codes, PerTokenHeadScale>(args, plan, stream);
        break;
    }
  }
  return Status::error(Code::bad_option, "scale_kind %s has no kernel in arithmetic %s", to_string(args.scale_kind),
                       to_string(Codes::kMode));
}

// ---- The read. ----------------------------------------------------------------------------

//! The read kernel's parameters of a planned call.
template <class T, class Scales>
ReadParams<T, Scales> make_read_params(const UpcastArgs<T>& a, const ReadPlan& plan) {
  ReadParams<T, Scales> p{};
  p.chunks_first = plan.choice.order == GridOrder::chunks_first ? 1u : 0u;
  p.log2_group = static_cast<std::uint32_t>(plan.choice.log2_group);
  p.num_segments = static_cast<std::uint32_t>(plan.num_segments);
  p.seg_len = static_cast<std::uint32_t>(plan.seg_len);
  p.loc_is_int32 = a.loc.is_int32 ? 1u : 0u;
  p.segs_per_token = FastDivmod(static_cast<std::uint32_t>(plan.segs_per_token));
  p.loc = a.loc.data;
  p.min_slot = plan.min_slot;
  p.max_slot = plan.max_slot;
  p.mult = a.mult;
  p.offset = a.offset;
  p.block_table = a.block_table;
  p.cu_seq_lens = a.cu_seq_lens;
  p.seq_starts = a.seq_starts;
  p.batch = static_cast<std::uint32_t>(a.batch);
  p.max_pages = static_cast<std::uint32_t>(a.max_pages);
  p.page_size = FastDivmod(static_cast<std::uint32_t>(plan.page_size));
  p.pages = plan.pages;
  p.k_cache = static_cast<const std::uint8_t*>(a.k_cache);
  p.v_cache = static_cast<const std::uint8_t*>(a.v_cache);
  p.cache = plan.cache;
  p.scales = Scales::make(a);
  p.k_out = a.k;
  p.v_out = a.v;
  p.out_token_stride = plan.out_token_stride;
  p.out_head_stride = plan.out_head_stride;
  p.error_count = a.error_count;
  return p;
}

template <class T, class Scales>
using ReadKernelPointer = void (*)(ReadParams<T, Scales>);

//! The one switch over the read planner's choice; null for a choice no kernel exists for (the
//! planner never makes one: read_kernel_exists).
template <class T, class Format, class Scales>
ReadKernelPointer<T, Scales> select_read_kernel(ReadKernel kernel, const KernelChoice& c) {
  constexpr tile::Access kVector = tile::Access::vector, kInterleaved = tile::Access::interleaved;
  static_assert(read_kernel_exists(16, kVector) && read_kernel_exists(4, kVector) &&
                    read_kernel_exists(tuning::kElementWiseVector, kInterleaved) &&
                    read_kernel_exists(kRowHeadWarpVec, kVector, ReadKernel::row_warp),
                "select_read_kernel: one case each kernel that exists.");
  if (kernel == ReadKernel::row_warp)
    return c.vec == kRowHeadWarpVec && c.access == kVector ? &read_row_warp_kernel<T, Format, Scales, kRowHeadWarpVec, kRowHeadWarpSide>
                                                           : nullptr;
  if (c.access == kInterleaved)
    return c.vec == tuning::kElementWiseVector ? &read_kernel<T, Format, Scales, tuning::kElementWiseVector, kInterleaved> : nullptr;
  switch (c.vec) {
    case 16: return &read_kernel<T, Format, Scales, 16, kVector>;
    case 4: return &read_kernel<T, Format, Scales, 4, kVector>;
    default: return nullptr;
  }
}

//! Carries out a planned read with the scale policy the plan names; a block-scaled format
//! (NVFP4) with its code policy's scale policy, a block a thread (kNvfp4ReadVec).
template <class Format, class T>
Status dispatch_read(const UpcastArgs<T>& args, const ReadPlan& plan, cudaStream_t stream) {
  if constexpr (Format::kCodesPerByte != 1) {
    using Scales = typename CodePolicyOf<Format, Arithmetic::fp32>::type::Scales;
    const ReadKernelPointer<T, Scales> kernel = plan.choice.access == tile::Access::vector
                                                    ? &read_kernel<T, Format, Scales, kNvfp4ReadVec, tile::Access::vector>
                                                    : &read_kernel<T, Format, Scales, kNvfp4ReadVec, tile::Access::elements>;
    return launch(kernel, plan.choice, make_read_params<T, Scales>(args, plan), args.pdl, stream, "kvcast::upcast: kernel launch");
  } else {
    const auto run = [&](auto scales_tag) {
      using Scales = decltype(scales_tag);
      const ReadKernelPointer<T, Scales> kernel = select_read_kernel<T, Format, Scales>(plan.kernel, plan.choice);
      if (kernel == nullptr) return Status::error(Code::bad_option, "kvcast::upcast: no kernel for vector width %d", plan.choice.vec);
      return launch(kernel, plan.choice, make_read_params<T, Scales>(args, plan), args.pdl, stream, "kvcast::upcast: kernel launch");
    };
    switch (plan.scale_policy) {
      case ScalePolicyId::per_tensor: return run(PerTensorScale{});
      case ScalePolicyId::per_head: return run(PerHeadScale{});
      case ScalePolicyId::per_token_head: return run(PerTokenHeadScale{});
    }
    return Status::error(Code::bad_option, "scale_kind %s has no read kernel", to_string(args.scale_kind));
  }
}

}  // namespace detail
}  // namespace kvcast
