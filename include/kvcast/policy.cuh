// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file policy.cuh
//! The policies a write is put together from (docs/ARCHITECTURE.md draws the whole):
//!
//!  - a **code policy** turns a thread's input vector into codes: `Fp8<Format, Mode>`;
//!  - a **scale policy** gives each (token, head) its scale: `PerTensorScale`, `PerHeadScale`,
//!    `PerTokenHeadScale` (computed from the row-head, and stored);
//!  - a **layout policy** places a row: `OutputLayout` (layout.hpp), the one address formula,
//!    which the kernels specialise for the dense serving call (detail::DenseRows).
//!
//! Both API levels take them: the device-wide downcast (downcast.cuh) picks them from its
//! template arguments, the block-level write (block.cuh) from its own.
#pragma once

#include <cstdint>

#include "args.hpp"
#include "config.hpp"
#include "fp8.cuh"
#include "format.hpp"
#include "vec.cuh"

#if defined(__CUDACC__) && KVCAST_HAS_PERSISTING_SCALES
#include <cuda/annotated_ptr>
#endif

namespace kvcast {

//! Code policy: fp8 codes, one byte an element, `quantize(x, scale)` of DESIGN.md §2 in
//! arithmetic `Mode`. The concept a code policy models:
//!
//!     template <class T> using Quantizer;   // built once a thread from a scale (float)
//!     packed(q, vec)     -> the codes of an AlignedVector<T, N>, as words (one store);
//!                           packed<PairWords, ExactInLine>: how the vector was loaded, and
//!                           where a rare slow path goes (in line, or a call)
//!     bytes(q, vec)      -> the same codes, one byte each (stored element by element)
//!     code(q, x)         -> one element's code (a segment's partial last vector)
//!     exact(qq, vec)     -> packed codes from each element's own quotient, no bracket: for
//!                           scales computed from the elements (many quotients on rounding
//!                           boundaries), with a QuotientQuantizer<T> qq; exact<PairWords>
//!                           as packed's
//!     kBothAtOnce<N>     -> whether K's and V's vectors of N are best converted together,
//!     store_both(...)       and how (first codes stored first, exact ones over them)
//!
//! @tparam Format `e4m3` or `e5m2`
//! @tparam Mode   Arithmetic::fp32 (PyTorch's numerics) or Arithmetic::input_precision (SGLang's)
template <class Format, Arithmetic Mode = Arithmetic::fp32>
struct Fp8 {
  using format = Format;
  static constexpr Arithmetic kMode = Mode;
  static constexpr bool kBlockScaled = false;  //!< NVFP4's policy (nvfp4.cuh) is the block-scaled one
  static constexpr int kCodesPerByte = 1;
  //! CTAs an SM must hold: the write kernel's __launch_bounds__ occupancy hint. 0 gives none
  //! (ptxas's own choice); 1 would be a hint too, one that lets ptxas take many more registers.
  static constexpr int kMinCtasPerSm = 0;
  template <class T>
  using Quantizer = kvcast::Quantizer<T, Format, Mode>;
  //! For computed scales (fp32 mode): every element from its own quotient (exact).
  template <class T>
  using QuotientQuantizer = kvcast::QuotientQuantizer<T, Format>;

  //! Whole vectors loaded as words (PairWords: fp32 mode takes a bf16 pair's floats from its word;
  //! ExactInLine: where fp32 mode redoes a vector whose bracket straddles, Quantizer::codes).
  template <bool PairWords = false, bool ExactInLine = true, class T, int N>
  KVCAST_HOST_DEVICE static typename detail::PackedCodes<N>::type packed(const Quantizer<T>& q, const AlignedVector<T, N>& in) {
    return quantize_packed<PairWords, ExactInLine>(q, in);
  }
  template <class T, int N>
  KVCAST_HOST_DEVICE static AlignedVector<std::uint8_t, N> bytes(const Quantizer<T>& q, const AlignedVector<T, N>& in) {
    return quantize(q, in);
  }
  template <class T>
  KVCAST_HOST_DEVICE static std::uint8_t code(const Quantizer<T>& q, T x) {
    return q(x);
  }
  //! fp32 mode's codes of every element from its quotient (QuotientQuantizer): no bracket, so no
  //! vector redone. A per-(token, head) scale, amax / fp8_max, puts about one 16-element vector
  //! in 17 on a rounding boundary (the ratio of two bf16 significands times 448 is often an
  //! fp8 midpoint), and a warp waits for any of its threads that redo a vector.
  template <bool PairWords = false, class T, int N>
  KVCAST_HOST_DEVICE static typename detail::PackedCodes<N>::type exact(const QuotientQuantizer<T>& q, const AlignedVector<T, N>& in) {
    static_assert(Mode == Arithmetic::fp32, "Fp8::exact: fp32 mode's quotients.");
    return q.template codes<N, PairWords>(in);
  }

  //! fp32 mode's vectors of up to 8 elements: K's and V's codes converted together, each stored
  //! as soon as it is known, and a vector to redo (rare: Quantizer::first_codes) stored again,
  //! exactly (store_codes_of_two). Wider vectors need the registers of one tensor at a time.
  template <int N>
  static constexpr bool kBothAtOnce = Mode == Arithmetic::fp32 && N <= 8;
  template <class T, int N, class Store>
  KVCAST_HOST_DEVICE static void store_both(const Quantizer<T>& qk, const AlignedVector<T, N>& k, const Quantizer<T>& qv,
                                            const AlignedVector<T, N>& v, Store&& store) {
    store_codes_of_two(qk, k, qv, v, store);
  }
};

//! The code policy of a format tag in arithmetic `Mode`: Fp8 for `e4m3` and `e5m2`; for `nvfp4`,
//! `Nvfp4`, which kvcast/nvfp4.cuh defines (it needs CUDA 12.8): include it to write NVFP4.
template <class Format, Arithmetic Mode>
struct CodePolicyOf {
  using type = Fp8<Format, Mode>;
};
template <Arithmetic Mode>
struct CodePolicyOf<nvfp4, Mode>;

//! Scale policy: one scale per tensor, K's and V's, each a float in device memory (read when
//! the kernel runs, so a CUDA graph replays with the current value) or a value fixed at launch.
//! The lean policy: no amax. The concept a scale policy models:
//!
//!     struct Params;                                  // trivially copyable, in the kernel's parameters
//!     static Params make(const DowncastArgs<T>&);     // host
//!     kAmax                                           // whether Params may ask for the amax output
//!     kFromRowHead                                    // whether the scale is computed from the row-head
//!     load(params, token, head) -> float2             // K's and V's scale for that row-head (!kFromRowHead)
//!     from_amax<Format, T>(params, k_bits, v_bits)    // ...or from its amax (kFromRowHead),
//!     offset_in_row(params, head)                     // and where it is kept: the part the row
//!     store(params, row, in_row, scales, k, v)        //   does not decide, then the stores
//!
//! and, for the read (detail/read_kernel.cuh), which dequantizes with the same scales:
//!
//!     static Params make(const UpcastArgs<T>&)        // host
//!     load_row(params, row, head) -> float2           // K's and V's scale of a cache row-head
//!     kBlockScaled                                    // and, where true (NVFP4), block scales:
//!     load_block_scales(params, row, head, first)     //   K's and V's of the block at `first`
//!
//! The skeleton (detail/write_kernel.cuh) does the reductions: a row-head's over the group of
//! threads that holds it, the amax output's over each warp, then one atomic (detail/amax.cuh).
struct PerTensorScale {
  static constexpr bool kAmax = false;
  static constexpr bool kFromRowHead = false;
  static constexpr bool kBlockScaled = false;  //!< NVFP4's (Nvfp4Scales) has block scales too
  struct Params {
    const float* k_device;
    const float* v_device;
    float k_value;
    float v_value;
  };
  template <class T>
  static Params make(const DowncastArgs<T>& a) {
    return Params{a.k_scale.device, a.v_scale.device, a.k_scale.value, a.v_scale.value};
  }
  template <class T>
  static Params make(const UpcastArgs<T>& a) {
    return Params{a.k_scale.device, a.v_scale.device, a.k_scale.value, a.v_scale.value};
  }
#if defined(__CUDACC__)
  //! The same two scales for every (token, head).
  KVCAST_DEVICE static float2 load(const Params& p, std::uint32_t /*token*/, std::uint32_t /*head*/) {
    return make_float2(p.k_device ? __ldg(p.k_device) : p.k_value, p.v_device ? __ldg(p.v_device) : p.v_value);
  }
  KVCAST_DEVICE static float2 load_row(const Params& p, std::int64_t /*row*/, std::uint32_t head) { return load(p, 0, head); }
#endif
};

//! The amax output of a call, in the parameters of the scale policies that have one.
struct AmaxOutput {
  float* k;  //!< null: no amax of K
  float* v;
  //! How the kernel adds its maxima, at most one atomic a warp (the planner's choice,
  //! KernelChoice::amax_adds_by_cta): 0, always (small grids: no load on a decode call's path);
  //! 1, only a maximum above the value the SM last read and above what the warp's CTA has added
  //! (large grids, where thousands of atomics on one address would queue).
  std::uint32_t skip_smaller = 0;
};

//! Scale policy: a scale a head, `heads` floats a tensor in device memory, read when the kernel
//! runs (ScaleKind::per_head). With a step of 0 between heads it is one scale a tensor: the
//! device-wide API takes it for per-tensor calls that ask for amax, so that PerTensorScale's
//! kernels stay lean. Optional amax output.
struct PerHeadScale {
  static constexpr bool kAmax = true;
  static constexpr bool kFromRowHead = false;
  static constexpr bool kBlockScaled = false;
  struct Params {
    const float* k_device;   //!< null: k_value for every head
    const float* v_device;
    std::uint32_t head_step;  //!< floats from one head's scale to the next: 1, or 0 (one a tensor)
    float k_value;
    float v_value;
    AmaxOutput amax;
  };
  template <class T>
  static Params make(const DowncastArgs<T>& a) {
    if (a.scale_kind == ScaleKind::per_head) return Params{a.k_head_scales, a.v_head_scales, 1u, 1.0f, 1.0f, {a.k_amax, a.v_amax}};
    return Params{a.k_scale.device, a.v_scale.device, 0u, a.k_scale.value, a.v_scale.value, {a.k_amax, a.v_amax}};
  }
  //! The read: ScaleKind::per_head only (a per-tensor read takes PerTensorScale).
  template <class T>
  static Params make(const UpcastArgs<T>& a) {
    return Params{a.k_head_scales, a.v_head_scales, 1u, 1.0f, 1.0f, {nullptr, nullptr}};
  }
#if defined(__CUDACC__)
  KVCAST_DEVICE static float2 load(const Params& p, std::uint32_t /*token*/, std::uint32_t head) {
    const std::uint32_t at = head * p.head_step;
    return make_float2(p.k_device ? __ldg(p.k_device + at) : p.k_value, p.v_device ? __ldg(p.v_device + at) : p.v_value);
  }
  KVCAST_DEVICE static float2 load_row(const Params& p, std::int64_t /*row*/, std::uint32_t head) { return load(p, 0, head); }
#endif
};

//! Scale policy: a scale a (token, head), computed from the row-head's elements
//! (ScaleKind::per_token_head, fp32 arithmetic):
//!
//!     amax  = max over d of |float(x[t, h, d])|            (NaN propagates)
//!     scale = max(amax / fp8_max, min_scale)                (fp32 division, correctly rounded; a NaN
//!                                                           amax gives NaN, stored as 0x7FFFFFFF)
//!
//! and stored, as a float, at `layout.address(row, head)` of its tensor's scale pointer, where
//! the read (load_row) finds it again. Optional amax output (the write).
struct PerTokenHeadScale {
  static constexpr bool kAmax = true;
  static constexpr bool kFromRowHead = true;
  static constexpr bool kBlockScaled = false;
  struct Params {
    float* k_scales;  //!< the write stores here; the read only loads
    float* v_scales;
    OutputLayout layout;  //!< in floats, a row-head one float
    float min_scale;
    AmaxOutput amax;
  };
  template <class T>
  static Params make(const DowncastArgs<T>& a) {
    return Params{a.k_scales_out, a.v_scales_out, a.scales_out.or_contiguous(a.heads, 1), a.min_scale, {a.k_amax, a.v_amax}};
  }
  template <class T>
  static Params make(const UpcastArgs<T>& a) {
    // const_cast: one Params for both directions; the read's kernel only loads through them.
    return Params{const_cast<float*>(a.k_scales), const_cast<float*>(a.v_scales), a.scales.or_contiguous(a.heads, 1), 0.0f,
                  {nullptr, nullptr}};
  }
  //! The scale of a row-head of inputs of type T whose largest magnitude is `amax` (any value of
  //! T, NaN included): amax / Format::kMax correctly rounded (detail::divide_by_max). On the device
  //! a NaN comes out as the canonical 0x7FFFFFFF, whatever its payload.
  template <class Format, class T>
  KVCAST_HOST_DEVICE static float scale_of(float amax, float min_scale) {
    const float s = detail::divide_by_max<Format, T>(amax);
    return s < min_scale ? min_scale : s;  // a NaN amax keeps its NaN, as torch's clamp(min=)
  }
#if defined(__CUDACC__)
  template <class Format, class T>
  KVCAST_DEVICE static float2 from_amax(const Params& p, std::uint32_t k_bits, std::uint32_t v_bits) {
    return make_float2(scale_of<Format, T>(__uint_as_float(k_bits), p.min_scale), scale_of<Format, T>(__uint_as_float(v_bits), p.min_scale));
  }
  //! Where head `head`'s scale is in a row, in floats: the kernel has it before its loads return.
  KVCAST_DEVICE static std::int64_t offset_in_row(const Params& p, std::uint32_t head) {
    return std::int64_t{head} * p.layout.head_stride;
  }
  //! Stores one computed scale at `at`: with L2 evict-last priority where KVCAST_PERSISTING_SCALES
  //! asks for it (config.hpp says why it is an option).
  KVCAST_DEVICE static void store_one(float* at, float scale) {
#if KVCAST_HAS_PERSISTING_SCALES
    *cuda::associate_access_property(at, cuda::access_property::persisting{}) = scale;
#else
    *at = scale;
#endif
  }
  //! K's scale (where `k`) and V's (where `v`) at row `row`, `in_row` floats in (offset_in_row).
  //! The place is worked out whether or not either is stored, so that the stores are predicated.
  KVCAST_DEVICE static void store(const Params& p, std::int64_t row, std::int64_t in_row, float2 scales, bool k, bool v) {
    const std::int64_t at = p.layout.row_address(row) + in_row;
    if (k) store_one(p.k_scales + at, scales.x);
    if (v) store_one(p.v_scales + at, scales.y);
  }
  KVCAST_DEVICE static float2 load_row(const Params& p, std::int64_t row, std::uint32_t head) {
    const std::int64_t at = p.layout.address(row, head);
    return make_float2(p.k_scales ? __ldg(p.k_scales + at) : 1.0f, p.v_scales ? __ldg(p.v_scales + at) : 1.0f);
  }
#endif
};

}  // namespace kvcast
