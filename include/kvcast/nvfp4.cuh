// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file nvfp4.cuh
//! NVFP4 (issue #17). `downcast<nvfp4>(args)` quantizes each block of 16 elements along
//! head_dim to E2M1 codes (two a byte) and one E4M3 block scale, with the per-tensor global scale
//! g (DESIGN.md §2; the host reference is ref::downcast<nvfp4, fp32>); `downcast<nvfp4,
//! Arithmetic::fast_math>` does so with FlashInfer's numerics (ref::nvfp4_fast_math_block); `upcast<nvfp4>`
//! reads them back (ref::upcast<nvfp4>). Its policies plug into the skeletons
//! (detail/write_kernel.cuh, detail/read_kernel.cuh) beside the fp8 ones:
//!
//!  - the code policy `Nvfp4Codes<Mode>` (`Nvfp4` for the exact mode): a thread holds a block,
//!    or half of one (the planner's choice, detail::nvfp4_vec; a pair of lanes then reduces the
//!    block's amax with one shuffle), and stores its code bytes;
//!  - the scale policy `Nvfp4Scales`: g for each tensor (a device float read when the kernel
//!    runs, or a value), and where the block scales are (their own layout and base pointers);
//!  - `Dequantizer<T, nvfp4>`, the read's conversion.
//!
//! Not in kvcast.cuh: it needs CUDA 12.8 (cuda_fp4.h, through fp4.cuh).
#pragma once

#include <cstdint>
#include <type_traits>

#include "args.hpp"
#include "config.hpp"
#include "detail/amax.cuh"
#include "detail/geometry.hpp"
#include "detail/tuning.hpp"
#include "downcast.cuh"
#include "format.hpp"
#include "fp4.cuh"
#include "layout.hpp"
#include "policy.cuh"
#include "tile.cuh"
#include "upcast.cuh"
#include "vec.cuh"

namespace kvcast {

//! Scale policy of NVFP4, both directions: the global scale g of each tensor (ScaleKind::
//! per_tensor's fields), and the block scales, `head_dim / 16` bytes a row-head at
//! `layout.address(row, head)`: stored by the write, loaded by the read.
struct Nvfp4Scales {
  static constexpr bool kAmax = false;
  static constexpr bool kFromRowHead = false;
  static constexpr bool kBlockScaled = true;
  struct Params {
    PerTensorScale::Params g;  //!< K's and V's g, as a per-tensor scale
    std::uint8_t* k_block_scales;
    std::uint8_t* v_block_scales;
    OutputLayout layout;  //!< in bytes, a row-head head_dim / 16 bytes
  };
  template <class T>
  static Params make(const DowncastArgs<T>& a) {
    return make(a, a.k_block_scales_out, a.v_block_scales_out, a.block_scales_out);
  }
  template <class T>
  static Params make(const UpcastArgs<T>& a) {
    return make(a, a.k_block_scales, a.v_block_scales, a.block_scales);
  }
  //! Either direction's: g from the per-tensor fields, the block scales from these (the read's
  //! kernel only loads through them).
  template <class Args>
  static Params make(const Args& a, const void* k_sf, const void* v_sf, const OutputLayout& layout) {
    return Params{PerTensorScale::make(a), static_cast<std::uint8_t*>(const_cast<void*>(k_sf)),
                  static_cast<std::uint8_t*>(const_cast<void*>(v_sf)), layout.or_contiguous(a.heads, a.head_dim / nvfp4::kBlock)};
  }
#if defined(__CUDACC__)
  KVCAST_DEVICE static float2 load(const Params& p, std::uint32_t token, std::uint32_t head) {
    return PerTensorScale::load(p.g, token, head);
  }
  KVCAST_DEVICE static float2 load_row(const Params& p, std::int64_t /*row*/, std::uint32_t head) { return load(p, 0, head); }
  //! The read: K's (low byte) and V's block scale of the block at element `first` of a cache
  //! row-head, each loaded only for a tensor the call reads.
  KVCAST_DEVICE static std::uint32_t load_block_scales(const Params& p, std::int64_t row, std::uint32_t head, std::uint32_t first,
                                                       bool has_k, bool has_v) {
    const std::int64_t at = p.layout.address(row, head) + first / nvfp4::kBlock;
    const std::uint32_t k = has_k ? __ldg(p.k_block_scales + at) : 0u;
    const std::uint32_t v = has_v ? __ldg(p.v_block_scales + at) : 0u;
    return k | v << 8;
  }
#endif
};

//! The read of NVFP4 (DESIGN.md §2): `y = T((e2m1(q) * float(sf)) * g)`, two fp32 products (the
//! first exact: at most 7 significant bits) and the round to nearest-even into T, as the fp8
//! read's Dequantizer. Built a thread from the tensor's g and the block's scale sf; a NaN sf
//! (0x7F) reads the block as NaN.
template <class T>
class Dequantizer<T, nvfp4> {
 public:
  KVCAST_HOST_DEVICE Dequantizer(float g, std::uint8_t sf) : g_(g), sf_(fp8_to_float<e4m3>(sf)) {}

  //! The values of elements `first .. first + P - 1` of the codes (two a byte, the lower-indexed
  //! element in the low nibble; `first` a multiple of P, P even), as one vector of T.
  template <int P, int N>
  KVCAST_HOST_DEVICE AlignedVector<T, P> values(const AlignedVector<std::uint8_t, N>& codes, int first = 0) const {
    static_assert(P % 2 == 0 && 2 * N % P == 0, "Dequantizer<nvfp4>::values converts whole bytes.");
    AlignedVector<T, P> out;
    KVCAST_UNROLL
    for (int i = 0; i < P; i += 2) {
      const std::uint8_t byte = codes[(first + i) / 2];
      const typename detail::PairOf<T>::type p = detail::PairOf<T>::from(make_float2(value(byte), value(byte >> 4)));
      memcpy(static_cast<void*>(&out[i]), &p, sizeof p);
    }
    return out;
  }

 private:
  //! (e2m1 * sf) * g for the code in the low nibble. E2M1's magnitudes from its bits: codes 2-7
  //! are 2^(e - 1) (1 + m / 2) for exponent bits e and mantissa bit m, a float whose bits are
  //! code << 22 plus those of 0.5; code 1 is 0.5 and code 0 is 0.
  KVCAST_HOST_DEVICE float value(std::uint32_t code) const {
    const std::uint32_t m = code & 0x7u;
    const std::uint32_t bits = (m < 2u ? m * 0x3f000000u : (m << 22) + 0x3f000000u) | (code & 0x8u) << 28;
    float e2m1;
    memcpy(&e2m1, &bits, sizeof e2m1);
    return detail::mul_ieee(detail::mul_ieee(e2m1, sf_), g_);
  }

  float g_;
  float sf_;
};

//! Code policy of the NVFP4 write, in either mode: Mode fp32 (exact, Nvfp4Quantizer) or
//! fast_math (FlashInfer's, Nvfp4FastMathQuantizer). The skeleton hands it each thread's block,
//! or half of one, once the row is known (store_blocks).
template <Arithmetic Mode>
struct Nvfp4Codes {
  static_assert(Mode == Arithmetic::fp32 || Mode == Arithmetic::fast_math,
                "kvcast: format nvfp4 computes in Arithmetic::fp32 (exact) or Arithmetic::fast_math (FlashInfer's).");
  using format = nvfp4;
  using Scales = Nvfp4Scales;
  using Quantizer = typename std::conditional<Mode == Arithmetic::fp32, Nvfp4Quantizer, Nvfp4FastMathQuantizer>::type;
  static constexpr Arithmetic kMode = Mode;
  static constexpr bool kBlockScaled = true;
  static constexpr int kCodesPerByte = nvfp4::kCodesPerByte;
  static constexpr int kMinCtasPerSm = Mode == Arithmetic::fp32 ? detail::tuning::kNvfp4MinCtasPerSm : 0;

#if defined(__CUDACC__)
  //! The exact mode of fp16 and bf16 inputs codes them as loaded, two a word; the rest, floats.
  template <class T>
  static constexpr bool kPairs = Mode == Arithmetic::fp32 && sizeof(T) == 2;

  //! A thread's part of a block's amax, made the block's: for a half (Vec < kBlock), with the
  //! neighbouring lane's (lanes 2i and 2i + 1 hold a block).
  template <int Vec>
  KVCAST_DEVICE static std::uint32_t block_amax(std::uint32_t amax) {
    if constexpr (Vec < nvfp4::kBlock) {
      const unsigned pair = 0x3u << (threadIdx.x & (detail::kLanes - 2));
      amax = max(amax, __shfl_xor_sync(pair, amax, 1));
    }
    return amax;
  }

  //! One tensor's Vec elements of a block (all 16, or a half): the block's amax (with the
  //! neighbouring lane's, for a half: lanes 2i and 2i + 1 hold a block; the planner's groups are
  //! even and a pair shares its token, so both are here), its scale, the Vec codes at
  //! `codes_out`, and the scale byte, stored by the block's first part at `scales_out`.
  template <tile::Access A, class T, int Vec>
  KVCAST_DEVICE static void store_part(const Quantizer& q, const AlignedVector<T, Vec>& x, bool first_part,
                                       std::uint8_t* __restrict__ codes_out, std::uint8_t* __restrict__ scales_out) {
    static_assert(Vec == nvfp4::kBlock || 2 * Vec == nvfp4::kBlock, "Nvfp4Codes::store_part: a block or half of one.");
    float f[Vec];
    if constexpr (!kPairs<T>) {
      KVCAST_UNROLL
      for (int i = 0; i < Vec; ++i) f[i] = to_float(x[i]);
    }
    // The exact mode's amax propagates NaN (by the magnitudes' bits); FlashInfer's skips it.
    std::uint32_t amax;
    if constexpr (Mode == Arithmetic::fp32) {
      amax = detail::abs_max_bits(x);
    } else {
      amax = Quantizer::amax_bits(f);
    }
    amax = block_amax<Vec>(amax);
    const std::uint8_t sf = q.block_scale(__uint_as_float(amax));
    AlignedVector<std::uint32_t, Vec / 8> words;
    if constexpr (kPairs<T>) {
      std::uint32_t pairs[Vec / 2];
      memcpy(pairs, &x, sizeof pairs);
      q.template codes_of_pairs<T, Vec>(pairs, sf, words.data);
    } else {
      q.template codes<Vec, T>(f, sf, words.data);
    }
    store_codes<A>(words, codes_out);
    if (first_part) *scales_out = sf;
  }

  //! store_part for K and V at once, the exact mode of fp16 and bf16 inputs: each stage for both
  //! tensors before the next (their amaxes, scales, then codes: Nvfp4Quantizer::codes_of_pairs_of_two),
  //! so that the two chains overlap instead of following each other (a decode step's time).
  template <tile::Access A, class T, int Vec>
  KVCAST_DEVICE static void store_parts_of_two(const Quantizer& qk, const AlignedVector<T, Vec>& k, const Quantizer& qv,
                                               const AlignedVector<T, Vec>& v, bool first_part, std::uint8_t* __restrict__ k_out,
                                               std::uint8_t* __restrict__ v_out, std::uint8_t* __restrict__ k_scale_out,
                                               std::uint8_t* __restrict__ v_scale_out) {
    static_assert(kPairs<T>, "Nvfp4Codes::store_parts_of_two: the exact mode's 16-bit inputs.");
    std::uint32_t k_amax = detail::abs_max_bits(k), v_amax = detail::abs_max_bits(v);
    k_amax = block_amax<Vec>(k_amax);
    v_amax = block_amax<Vec>(v_amax);
    const std::uint8_t k_sf = qk.block_scale(__uint_as_float(k_amax));
    const std::uint8_t v_sf = qv.block_scale(__uint_as_float(v_amax));
    std::uint32_t k_pairs[Vec / 2], v_pairs[Vec / 2];
    memcpy(k_pairs, &k, sizeof k_pairs);
    memcpy(v_pairs, &v, sizeof v_pairs);
    AlignedVector<std::uint32_t, Vec / 8> k_words, v_words;
    Quantizer::template codes_of_pairs_of_two<T, Vec>(qk, k_pairs, k_sf, k_words.data, qv, v_pairs, v_sf, v_words.data);
    store_codes<A>(k_words, k_out);
    store_codes<A>(v_words, v_out);
    if (first_part) {
      *k_scale_out = k_sf;
      *v_scale_out = v_sf;
    }
  }

  //! A part's packed codes at `out`: one access, or a byte each.
  template <tile::Access A, int Words>
  KVCAST_DEVICE static void store_codes(const AlignedVector<std::uint32_t, Words>& words, std::uint8_t* __restrict__ out) {
    if constexpr (A == tile::Access::vector) {
      words.store_bytes(out);
    } else {
      KVCAST_UNROLL
      for (int b = 0; b < 4 * Words; ++b) out[b] = static_cast<std::uint8_t>(words[b / 4] >> (8 * (b % 4)));
    }
  }

  //! K's and V's parts of a block of a thread whose first element is `first` in row-head (row,
  //! head); `k_out` / `v_out` point at its code bytes, `g` holds the tensors' global scales.
  template <tile::Access A, class T, int Vec>
  KVCAST_DEVICE static void store_blocks(const Nvfp4Scales::Params& s, std::int64_t row, std::uint32_t head, std::uint32_t first,
                                         const AlignedVector<T, Vec>& k, const AlignedVector<T, Vec>& v, float2 g, bool has_k,
                                         bool has_v, std::uint8_t* k_out, std::uint8_t* v_out) {
    const std::int64_t at = s.layout.address(row, head) + first / nvfp4::kBlock;
    const bool first_part = first % nvfp4::kBlock == 0;
    if constexpr (kPairs<T>) {
      if (has_k && has_v) {
        store_parts_of_two<A>(Quantizer(g.x), k, Quantizer(g.y), v, first_part, k_out, v_out, s.k_block_scales + at,
                              s.v_block_scales + at);
        return;
      }
    }
    if (has_k) store_part<A>(Quantizer(g.x), k, first_part, k_out, s.k_block_scales + at);
    if (has_v) store_part<A>(Quantizer(g.y), v, first_part, v_out, s.v_block_scales + at);
  }
#endif
};

//! The exact mode's code policy.
using Nvfp4 = Nvfp4Codes<Arithmetic::fp32>;

template <Arithmetic Mode>
struct CodePolicyOf<nvfp4, Mode> {
  using type = Nvfp4Codes<Mode>;
};

}  // namespace kvcast
