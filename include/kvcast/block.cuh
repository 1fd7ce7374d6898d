// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file block.cuh
//! The block-level API: a write that your own kernel calls, for the rows its CTA holds (in
//! shared memory, registers spilled there, or global memory), so that work done before the
//! write (a rotary embedding, a norm) costs no second pass over memory. Like CUB's block
//! collectives: every thread of the CTA calls it, and it walks the rows with the same stages
//! and policies as the device-wide kernels (detail/write_kernel.cuh).
//!
//!     // host: validate once, as downcast() would (k and v: the tensors your kernel reads)
//!     kvcast::BlockWriteParams<__nv_bfloat16> params;
//!     kvcast::Status s = kvcast::make_block_write_params(args, params);
//!     // device, in a kernel of 256 threads, once the CTA's rows are ready:
//!     kvcast::BlockDowncast<__nv_bfloat16, 256>::write(params, k_rows, v_rows, row_stride, first_token, rows);
//!
//! examples/fused_rope.cuh is a whole kernel built this way.
#pragma once

#include <cstdint>

#include "args.hpp"
#include "config.hpp"
#include "detail/dispatch.cuh"
#include "detail/plan.hpp"
#include "detail/write_kernel.cuh"
#include "policy.cuh"
#include "status.hpp"
#include "tile.cuh"
#include "vec.cuh"

namespace kvcast {

//! The output side of a validated call, for BlockDowncast: slots, bounds, scales, layout,
//! outputs and error counter, as a trivially copyable value to pass to your kernel.
template <class T, class Scales = PerTensorScale>
struct BlockWriteParams {
  detail::WriteParams<T, Scales> write;  //!< LayoutRows' parameters: rows are row indices
  std::uint32_t heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t out_vector_bytes = 1;  //!< the widest store every output row-head allows (1 to 16)
};

//! Validates `args` exactly as downcast() does (k and v: the tensors your kernel reads, which
//! gives their shape) and fills `params`. Returns the first broken rule, naming the argument.
template <class T, class Scales = PerTensorScale>
Status make_block_write_params(const DowncastArgs<T>& args, BlockWriteParams<T, Scales>& params) {
  detail::Plan plan;
  if (Status s = detail::check_args(args, plan); !s) return s;
  // The block-level write takes per-tensor scales; the other kinds are the device-wide call's.
  if (args.k_amax != nullptr || args.v_amax != nullptr)
    return Status::error(Code::bad_option, "%s is given, but the block-level write has no amax output",
                         args.k_amax != nullptr ? "k_amax" : "v_amax");
  if (args.scale_kind != ScaleKind::per_tensor)
    return Status::error(Code::bad_option, "scale_kind %s: the block-level write takes per_tensor scales only",
                         to_string(args.scale_kind));
  plan.choice = detail::KernelChoice{};  // LayoutRows: rows stay row indices
  plan.choice.kernel = detail::WriteKernel::general;
  params.write = detail::make_write_params<T, Scales>(args, plan);
  params.heads = static_cast<std::uint32_t>(args.heads);
  params.head_dim = static_cast<std::uint32_t>(args.head_dim);
  params.out_vector_bytes = 1;
  for (std::uint32_t b = 16; b > 1; b /= 2) {
    if (detail::outputs_allow(args, plan, b, /*heads_apart=*/true)) {  // every head is stored on its own
      params.out_vector_bytes = b;
      break;
    }
  }
  return Status{};
}

#if defined(__CUDACC__)
//! Quantizes and writes rows a CTA holds into their KV-cache slots (DESIGN.md §1–2).
//!
//! @tparam T         input element type: `__nv_bfloat16`, `__half` or `float`
//! @tparam BlockSize threads of the calling CTA (a 1-D CTA)
//! @tparam Codes     code policy: `Fp8<Format, Mode>` (policy.cuh)
//! @tparam Scales    scale policy: `PerTensorScale` (the only one the block-level write takes)
template <class T, int BlockSize, class Codes = Fp8<e4m3>, class Scales = PerTensorScale>
class BlockDowncast {
 public:
  using Params = BlockWriteParams<T, Scales>;
  //! Elements a thread converts at once: 16 bytes of input.
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));

  //! Writes tokens `first_token .. first_token + rows - 1` of the call. Row r of K is at
  //! `k_rows + r * row_stride`, its head h at `+ h * head_dim` (likewise V); the token's slot
  //! comes from the call's loc. Where the rows, `row_stride` and head_dim allow 16-byte loads and
  //! the outputs 16-byte stores, vectors move whole; otherwise element by element (slower,
  //! never wrong). Nothing outside the rows the contract names is written.
  //! @pre every thread of the CTA calls it; `k_rows` is given exactly when the call has K
  //!      (likewise V); the rows are not written by the CTA while it runs.
  KVCAST_DEVICE static void write(const Params& params, const T* k_rows, const T* v_rows, std::int64_t row_stride,
                                  std::uint32_t first_token, std::uint32_t rows) {
    using Walk = tile::Memory<std::uint32_t>;
    using Vector = AlignedVector<T, kVec>;
    const auto& p = params.write;
    const Walk cta(threadIdx.x, BlockSize);
    const std::uint32_t head_dim = params.head_dim;
    const std::uint32_t per_head = (head_dim + kVec - 1) / kVec;
    const std::uint32_t per_row = per_head * params.heads;
    const bool has_k = p.k_out != nullptr;
    const bool has_v = p.v_out != nullptr;
    const bool vectors = params.out_vector_bytes >= kVec && head_dim % kVec == 0 && row_stride % kVec == 0 &&
                         (!has_k || Vector::is_aligned(k_rows)) && (!has_v || Vector::is_aligned(v_rows));
    for (std::uint32_t t = 0; cta.in_bound(rows * per_row, t); ++t) {
      // locate: item -> (row, head, vector)
      const std::uint32_t item = cta.index(t);
      const std::uint32_t r = item / per_row;
      const std::uint32_t head = (item - r * per_row) / per_head;
      const std::uint32_t first = (item - r * per_row - head * per_head) * kVec;
      const std::uint32_t count = head_dim - first < kVec ? head_dim - first : kVec;
      const std::uint32_t token = first_token + r;
      // load
      const std::int64_t src = r * row_stride + head * head_dim + first;
      Vector k_vec, v_vec;
      if (vectors && has_k) Walk::load<tile::Access::vector>(k_rows + src, kVec, k_vec);
      if (vectors && has_v) Walk::load<tile::Access::vector>(v_rows + src, kVec, v_vec);
      const std::int64_t slot = detail::load_slot(p, token);
      const float2 scales = Scales::load(p.scales, token, head);
      // resolve
      std::int64_t row, row_start;
      if (!detail::resolve_slot<detail::LayoutRows>(p, slot, head == 0 && first == 0, row, row_start)) continue;
      const std::int64_t dst = row_start + head * p.out.head_stride + first;
      // convert, store
      if (!vectors) {
        detail::write_tail<T, Codes>(k_rows + src, v_rows + src, has_k ? p.k_out + dst : nullptr,
                                     has_v ? p.v_out + dst : nullptr, count, scales.x, scales.y);
        continue;
      }
      if (has_k) Walk::store_vector(p.k_out + dst, Codes::packed(typename Codes::template Quantizer<T>(scales.x), k_vec));
      if (has_v) Walk::store_vector(p.v_out + dst, Codes::packed(typename Codes::template Quantizer<T>(scales.y), v_vec));
    }
  }
};
#endif

}  // namespace kvcast
