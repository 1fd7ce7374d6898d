// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file policy.cuh
//! The policies a write is put together from (docs/ARCHITECTURE.md draws the whole):
//!
//!  - a **code policy** turns a thread's input vector into codes: `Fp8<Format, Mode>`;
//!  - a **scale policy** gives each (token, head) its scale: `PerTensorScale`;
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

namespace kvcast {

//! Code policy: fp8 codes, one byte an element, `quantize(x, scale)` of DESIGN.md §2 in
//! arithmetic `Mode`. The concept a code policy models:
//!
//!     template <class T> using Quantizer;   // built once a thread from a scale (float)
//!     packed(q, vec)     -> the codes of an AlignedVector<T, N>, as words (one store)
//!     bytes(q, vec)      -> the same codes, one byte each (stored element by element)
//!     code(q, x)         -> one element's code (a segment's partial last vector)
//!     kBothAtOnce<N>     -> whether K's and V's vectors of N are best converted together,
//!     store_both(...)       and how (bracketed codes stored first, exact ones over them)
//!
//! @tparam Format `e4m3` or `e5m2`
//! @tparam Mode   Arithmetic::fp32 (PyTorch's numerics) or Arithmetic::input_precision (SGLang's)
template <class Format, Arithmetic Mode = Arithmetic::fp32>
struct Fp8 {
  using format = Format;
  static constexpr Arithmetic kMode = Mode;
  template <class T>
  using Quantizer = kvcast::Quantizer<T, Format, Mode>;

  //! Whole vectors loaded as words (PairWords: fp32 mode takes a bf16 pair's floats from its word).
  template <bool PairWords = false, class T, int N>
  KVCAST_HOST_DEVICE static typename detail::PackedCodes<N>::type packed(const Quantizer<T>& q, const AlignedVector<T, N>& in) {
    return quantize_packed<PairWords>(q, in);
  }
  template <class T, int N>
  KVCAST_HOST_DEVICE static AlignedVector<std::uint8_t, N> bytes(const Quantizer<T>& q, const AlignedVector<T, N>& in) {
    return quantize(q, in);
  }
  template <class T>
  KVCAST_HOST_DEVICE static std::uint8_t code(const Quantizer<T>& q, T x) {
    return q(x);
  }

  //! fp32 mode's vectors of up to 8 elements: K's and V's codes bracketed together, each stored
  //! as soon as it is known, and a vector whose brackets disagree (rare) stored again, exactly
  //! (store_codes_of_two). Wider vectors need the registers of one tensor at a time.
  template <int N>
  static constexpr bool kBothAtOnce = Mode == Arithmetic::fp32 && N <= 8;
  template <class T, int N, class Store>
  KVCAST_HOST_DEVICE static void store_both(const Quantizer<T>& qk, const AlignedVector<T, N>& k, const Quantizer<T>& qv,
                                            const AlignedVector<T, N>& v, Store&& store) {
    store_codes_of_two(qk, k, qv, v, store);
  }
};

//! Scale policy: one scale per tensor, K's and V's, each a float in device memory (read when
//! the kernel runs, so a CUDA graph replays with the current value) or a value fixed at launch.
//! The concept a scale policy models:
//!
//!     struct Params;                                  // trivially copyable, in the kernel's parameters
//!     static Params make(const DowncastArgs<T>&);     // host
//!     load(params, token, head) -> float2             // K's and V's scale for that row-head
//!
//! A scale computed from the row (per (token, head), from its amax) adds a reduction over the
//! group that holds the row-head and a store of the scale through its own layout; see
//! docs/ARCHITECTURE.md.
struct PerTensorScale {
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
#if defined(__CUDACC__)
  //! The same two scales for every (token, head).
  KVCAST_DEVICE static float2 load(const Params& p, std::uint32_t /*token*/, std::uint32_t /*head*/) {
    return make_float2(p.k_device ? __ldg(p.k_device) : p.k_value, p.v_device ? __ldg(p.v_device) : p.v_value);
  }
#endif
};

}  // namespace kvcast
