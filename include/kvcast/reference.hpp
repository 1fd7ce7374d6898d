// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file reference.hpp
//! The host reference of the contract (DESIGN.md §1–2), the write and the read, in plain C++:
//! no CUDA header, no device code, its own rounding routines (not cuda_fp8.h's), all pointers
//! host pointers. The GPU tests compare the kernels with it byte for byte; the demo runs it
//! when there is no GPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "args.hpp"
#include "format.hpp"
#include "detail/plan.hpp"
#include "detail/read_plan.hpp"
#include "status.hpp"

namespace kvcast {
namespace ref {

//! Bit containers standing in for `__half` / `__nv_bfloat16` where no CUDA header is included.
struct Half {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};

}  // namespace ref

template <>
struct dtype_of<ref::Half> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<ref::BFloat16> {
  static constexpr DType value = DType::bf16;
};

namespace ref {

//! A binary floating-point format, enough to round into it.
struct FloatFormat {
  int mantissa_bits;
  int exponent_bits;
  int bias;
  double max_finite;
  bool saturate;  //!< true: finite overflow and ±inf give ±max (fp8 SATFINITE); false: ±inf
};

constexpr FloatFormat kHalf{10, 5, 15, 65504.0, false};
constexpr FloatFormat kBFloat16{7, 8, 127, 3.3895313892515355e38, false};
constexpr FloatFormat kE4M3{3, 4, 7, 448.0, true};
constexpr FloatFormat kE5M2{2, 5, 15, 57344.0, true};
//! NVFP4's elements: no infinity, no NaN (round_to's `nan_code` gives NaN inputs 0x7, +6).
constexpr FloatFormat kE2M1{1, 2, 1, 6.0, true};

template <class Format>
constexpr FloatFormat fp8_format() {
  return Format::kMantissaBits == 3 ? kE4M3 : kE5M2;
}

//! Rounds `x` to nearest-even in `f` and returns its bit pattern. NaN gives `nan_code`.
//! Works on the real value: scale into [2^m, 2^(m+1)) by the binade's quantum, round the
//! integer, rebuild. Every step is exact in double for the formats above.
inline std::uint32_t round_to(double x, const FloatFormat& f, std::uint32_t nan_code) {
  const int width = 1 + f.exponent_bits + f.mantissa_bits;
  const std::uint32_t sign = std::signbit(x) ? (1u << (width - 1)) : 0u;
  if (std::isnan(x)) return nan_code;
  const std::uint32_t inf_code = ((1u << f.exponent_bits) - 1) << f.mantissa_bits;
  const int min_exp = 1 - f.bias;  // exponent of the smallest normal
  double a = std::fabs(x);
  if (std::isinf(a)) a = f.saturate ? f.max_finite : a;
  if (std::isinf(a)) return sign | inf_code;
  if (a == 0.0) return sign;
  int e = std::ilogb(a);
  if (e < min_exp) e = min_exp;
  const double quantum = std::ldexp(1.0, e - f.mantissa_bits);
  double n = std::nearbyint(a / quantum);  // default rounding mode: to nearest, ties to even
  double value = n * quantum;
  if (value > f.max_finite) {
    if (!f.saturate) return sign | inf_code;
    value = f.max_finite;
  }
  if (value == 0.0) return sign;
  int ve = std::ilogb(value);
  if (ve < min_exp) {  // subnormal: exponent field 0
    return sign | static_cast<std::uint32_t>(value / std::ldexp(1.0, min_exp - f.mantissa_bits));
  }
  const std::uint32_t mantissa =
      static_cast<std::uint32_t>(value / std::ldexp(1.0, ve - f.mantissa_bits)) - (1u << f.mantissa_bits);
  return sign | (static_cast<std::uint32_t>(ve + f.bias) << f.mantissa_bits) | mantissa;
}

//! Exact value of a bit pattern of `f` (NaN for NaN patterns, E4M3's 0x7F/0xFF included; every
//! E2M1 pattern is finite).
inline double decode(std::uint32_t bits, const FloatFormat& f) {
  const int width = 1 + f.exponent_bits + f.mantissa_bits;
  const bool negative = (bits >> (width - 1)) & 1u;
  const std::uint32_t exp_field = (bits >> f.mantissa_bits) & ((1u << f.exponent_bits) - 1);
  const std::uint32_t mantissa = bits & ((1u << f.mantissa_bits) - 1);
  const std::uint32_t exp_all_ones = (1u << f.exponent_bits) - 1;
  double v;
  if (f.saturate && f.mantissa_bits == 3) {  // E4M3: exponent 15 is normal, only S.1111.111 is NaN
    if (exp_field == exp_all_ones && mantissa == 7) return NAN;
  } else if (f.saturate && f.mantissa_bits == 1) {  // E2M1: every pattern is a finite value
  } else if (exp_field == exp_all_ones) {
    return mantissa != 0 ? NAN : (negative ? -INFINITY : INFINITY);
  }
  if (exp_field == 0)
    v = std::ldexp(static_cast<double>(mantissa), 1 - f.bias - f.mantissa_bits);
  else
    v = std::ldexp(static_cast<double>(mantissa | (1u << f.mantissa_bits)),
                   static_cast<int>(exp_field) - f.bias - f.mantissa_bits);
  return negative ? -v : v;
}

inline float bits_to_float(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float half_to_float(std::uint16_t bits) { return static_cast<float>(decode(bits, kHalf)); }
inline float bf16_to_float(std::uint16_t bits) { return bits_to_float(std::uint32_t{bits} << 16); }
inline std::uint16_t to_half(double x) { return static_cast<std::uint16_t>(round_to(x, kHalf, 0x7E00)); }
inline std::uint16_t to_bf16(double x) { return static_cast<std::uint16_t>(round_to(x, kBFloat16, 0x7FC0)); }

//! fp8 code of `x`: nearest-even, saturating, NaN → 0x7F (DESIGN.md §2).
template <class Format>
inline std::uint8_t to_fp8(double x) {
  return static_cast<std::uint8_t>(round_to(x, fp8_format<Format>(), Format::kNaNCode));
}

//! Input element `bits` (the low 16 bits for f16/bf16) widened to float.
inline float input_to_float(DType dtype, std::uint32_t bits) {
  switch (dtype) {
    case DType::f16: return half_to_float(static_cast<std::uint16_t>(bits));
    case DType::bf16: return bf16_to_float(static_cast<std::uint16_t>(bits));
    case DType::f32: break;
  }
  return bits_to_float(bits);
}

//! quantize(x, scale) of DESIGN.md §2 for one input element given by its bit pattern.
template <class Format, Arithmetic Mode>
inline std::uint8_t quantize(DType dtype, std::uint32_t bits, float scale) {
  const float x = input_to_float(dtype, bits);
  if (Mode == Arithmetic::fp32) return to_fp8<Format>(x / scale);  // one IEEE fp32 division
  if (dtype == DType::f32) {
    const float inv = 1.0f / scale;
    return to_fp8<Format>(x * inv);
  }
  // Input precision: every step rounded to T. The product of two T values is exact in double,
  // so rounding it once gives T's correctly rounded product.
  const bool half = dtype == DType::f16;
  const auto round_t = [half](double v) { return half ? half_to_float(to_half(v)) : bf16_to_float(to_bf16(v)); };
  const float s = round_t(scale);
  const float inv = round_t(1.0f / s);  // fp32 reciprocal rounded to T: T's correctly rounded 1/s
  const float y = round_t(static_cast<double>(x) * inv);
  return to_fp8<Format>(y);
}

template <class T>
inline std::uint32_t element_bits(const T* base, std::int64_t index) {
  if constexpr (sizeof(T) == 2) {
    std::uint16_t b;
    std::memcpy(&b, base + index, 2);
    return b;
  } else {
    std::uint32_t b;
    std::memcpy(&b, base + index, 4);
    return b;
  }
}

//! Token t's slot: `loc[t]` (int32 or int64), or t without loc.
inline std::int64_t slot_of(const Slots& loc, std::int64_t t) {
  if (!loc) return t;
  return loc.is_int32 ? static_cast<const std::int32_t*>(loc.data)[t] : static_cast<const std::int64_t*>(loc.data)[t];
}

//! max(a, b) of magnitudes, NaN propagating (torch.amax's rule).
inline float nan_max(float a, float b) { return std::isnan(a) || a > b ? a : (std::isnan(b) || b > a ? b : a); }

//! A per-(token, head) scale from its row-head's largest magnitude (DESIGN.md §2):
//! `max(amax / fp8_max, min_scale)`, one IEEE fp32 division; a NaN amax gives the canonical NaN
//! 0x7FFFFFFF, which is what the GPU's division returns for any NaN operand.
template <class Format>
inline float scale_from_amax(float amax, float min_scale) {
  const float s = amax / Format::kMax;
  if (std::isnan(s)) return bits_to_float(0x7fffffffu);
  return s < min_scale ? min_scale : s;
}

// ---- NVFP4 (issue #17), exact mode: a block and an element. ----------------------------------

//! One NVFP4 block of 16 elements: its E4M3 block scale and 8 bytes of E2M1 codes (element 2i
//! in the low nibble of byte i).
struct Nvfp4Block {
  std::uint8_t sf;
  std::uint8_t codes[8];
};

//! The exact mode's quantization of a block, with the per-tensor global scale `g` (finite,
//! > 0: the caller's rule, validated where g is a host value):
//!
//!     amax = max |x|                               (NaN propagates)
//!     sf   = e4m3_rne_satfinite(amax / RN(6 * g))  (a correctly rounded fp32 division; NaN -> 0x7F)
//!     q_i  = e2m1_rne_satfinite(x_i / RN(float(sf) * g))
//!
//! A block whose sf is zero (amax / (6 g) below half of E4M3's smallest subnormal) gets zero
//! codes that keep each input's sign. A NaN element makes sf NaN, and every code of its block
//! then +6 (0x7): the read gives NaN for the whole block. E2M1 rounding: `kE2M1`.
inline Nvfp4Block nvfp4_quantize_block(const float (&x)[16], float g) {
  float amax = 0.0f;
  for (float v : x) amax = nan_max(amax, std::fabs(v));
  const float six_g = 6.0f * g;  // one fp32 product
  Nvfp4Block block{};
  block.sf = to_fp8<e4m3>(amax / six_g);  // one fp32 division; to_fp8 saturates, NaN -> 0x7F
  const float sf = static_cast<float>(decode(block.sf, kE4M3));
  const float denominator = sf * g;
  for (int i = 0; i < 16; ++i) {
    std::uint8_t code;
    if (sf == 0.0f) {
      code = std::signbit(x[i]) ? 0x8 : 0x0;
    } else {
      code = static_cast<std::uint8_t>(round_to(x[i] / denominator, kE2M1, 0x7));
    }
    block.codes[i / 2] = static_cast<std::uint8_t>(block.codes[i / 2] | code << (4 * (i % 2)));
  }
  return block;
}

// ---- NVFP4, engine-compatible mode (Arithmetic::fast_math): FlashInfer's writer. ------------

//! The fast-math operations FlashInfer's NVFP4 writer is compiled to, on the host: -ftz flushes
//! subnormal operands and results to zero of the same sign; NaN results are the GPU's canonical
//! 0x7FFFFFFF.
inline float ftz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }
inline float fast_math_product(float a, float b) {
  const float p = ftz(ftz(a) * ftz(b));
  return std::isnan(p) ? bits_to_float(0x7fffffffu) : p;
}
//! The stand-in for `rcp.approx.ftz.f32` where no device value is given: 1 / x correctly
//! rounded, flushed. The hardware's reciprocal is within an ulp of it, not always equal.
inline float rcp_rn_ftz(float x) {
  const float r = ftz(1.0f / ftz(x));
  return std::isnan(r) ? bits_to_float(0x7fffffffu) : r;
}

//! FlashInfer's NVFP4 KV quantization of one block (include/flashinfer/page.cuh,
//! nvfp4_append_quantize_block, FlashInfer 0.7.4, built with -use_fast_math), read as a formula;
//! `rcp` is the reciprocal `rcp.approx.ftz.f32` computes (and `div.approx.ftz.f32` multiplies
//! by):
//!
//!     amax = fmaxf-fold of |x_i| from 0                 (NaN skipped, subnormal |x_i| as 0)
//!     sf   = e4m3_rne_satfinite(amax > 0 && g > 0 ? amax * rcp(6 g) : 0)
//!     os   = amax > 0 && float(sf) > 0 && g > 0 ? rcp(float(sf) * g) : 0
//!     q_i  = E2M1 of x_i * os, nearest-even, saturating; NaN gives a zero with its sign
//!
//! every product and comparison flushing subnormals (fast_math_product; `g > 0` false for a
//! subnormal g).
template <class Rcp>
inline Nvfp4Block nvfp4_fast_math_block(const float (&x)[16], float g, Rcp rcp) {
  float amax = 0.0f;
  for (float v : x) {
    const float a = ftz(std::fabs(v));
    if (!std::isnan(a) && a > amax) amax = a;
  }
  const bool g_positive = ftz(g) > 0.0f;
  const float sf_value = amax > 0.0f && g_positive ? fast_math_product(amax, rcp(fast_math_product(6.0f, g))) : 0.0f;
  Nvfp4Block block{};
  block.sf = to_fp8<e4m3>(sf_value);
  const float sf = static_cast<float>(decode(block.sf, kE4M3));
  const float os = amax > 0.0f && sf > 0.0f && g_positive ? rcp(fast_math_product(sf, g)) : 0.0f;
  for (int i = 0; i < 16; ++i) {
    const float v = fast_math_product(x[i], os);
    const std::uint8_t sign = std::signbit(v) ? 0x8 : 0x0;
    const std::uint8_t code = std::isnan(v) ? sign : static_cast<std::uint8_t>(round_to(v, kE2M1, 0x7));
    block.codes[i / 2] = static_cast<std::uint8_t>(block.codes[i / 2] | code << (4 * (i % 2)));
  }
  return block;
}

//! The read of one NVFP4 element: `(e2m1(q) * float(sf)) * g`, two fp32 products, as a float (a
//! NaN sf gives NaN; the caller rounds it into its output type as the fp8 read does).
inline float nvfp4_dequantize(std::uint8_t code, std::uint8_t sf, float g) {
  const float q = static_cast<float>(decode(code & 0xFu, kE2M1));
  return (q * static_cast<float>(decode(sf, kE4M3))) * g;
}

//! The whole contract on the host, fp8 or NVFP4 (`Format` nvfp4, fp32 mode: each block by
//! nvfp4_quantize_block with its tensor's g, its codes at `out`, its scale at
//! `block_scales_out`). Every pointer in `args` is a host pointer (the scales, scale tensors,
//! amax outputs and `error_count` too). Returns validation's status; writes only the bytes (and
//! scale floats) the contract names, raises `*k_amax` / `*v_amax` to the inputs' largest
//! magnitude, and adds skipped rows to `*args.error_count`.
//! Mode fast_math (NVFP4 only) quantizes each block by nvfp4_fast_math_block with `rcp` as its
//! reciprocal (the device's values where bit-exactness with a GPU is checked).
template <class Format, Arithmetic Mode, class T>
Status downcast(const DowncastArgs<T>& args, const std::function<float(float)>& rcp = rcp_rn_ftz) {
  // Validation, and the defaults it resolves (0 strides, an all-zero layout), are the launcher's;
  // the rest — slots, rows, addresses, scales, arithmetic — is computed here on its own.
  detail::Plan plan;
  const Status status = make_plan(args, plan, Mode, code_format_of<Format>());
  if (!status.ok() || args.num_tokens == 0) return status;
  const DType dtype = dtype_of<T>::value;
  const std::int64_t head_stride = plan.in_head_stride;
  const std::int64_t token_stride = plan.in_token_stride;
  const OutputLayout& out = plan.out;
  const ScaleKind kind = args.scale_kind;
  const auto tensor_scale = [](const Scale& s) { return s.device ? *s.device : s.value; };
  const auto magnitude = [dtype](const T* x, std::int64_t i) { return std::fabs(input_to_float(dtype, element_bits(x, i))); };
  for (std::int64_t t = 0; t < args.num_tokens; ++t) {
    const std::int64_t slot = slot_of(args.loc, t);
    if (slot < 0) continue;  // padding
    // The amax output takes every token with a slot, its row in range or not.
    for (std::int64_t h = 0; h < args.heads; ++h)
      for (std::int64_t d = 0; d < args.head_dim; ++d) {
        const std::int64_t src = t * token_stride + h * head_stride + d;
        if (args.k && args.k_amax) *args.k_amax = nan_max(*args.k_amax, magnitude(args.k, src));
        if (args.v && args.v_amax) *args.v_amax = nan_max(*args.v_amax, magnitude(args.v, src));
      }
    const __int128 row = static_cast<__int128>(slot) * args.mult + args.offset;
    const bool in_range = row >= 0 && row <= INT64_MAX && (args.out_rows < 0 || row < args.out_rows);
    if (!in_range) {
      if (args.error_count) ++*args.error_count;
      continue;
    }
    for (std::int64_t h = 0; h < args.heads; ++h) {
      if constexpr (std::is_same<Format, nvfp4>::value) {
        const std::int64_t codes_at = out.address(static_cast<std::int64_t>(row), h);
        const std::int64_t scales_at = plan.block_scales_out.address(static_cast<std::int64_t>(row), h);
        const auto put = [&](const T* in, void* codes, void* scales, float g) {
          for (std::int64_t b = 0; b < args.head_dim / 16; ++b) {
            float block[16];
            for (int i = 0; i < 16; ++i)
              block[i] = input_to_float(dtype, element_bits(in, t * token_stride + h * head_stride + 16 * b + i));
            const Nvfp4Block q = Mode == Arithmetic::fast_math ? nvfp4_fast_math_block(block, g, rcp) : nvfp4_quantize_block(block, g);
            for (int i = 0; i < 8; ++i) static_cast<std::uint8_t*>(codes)[codes_at + 8 * b + i] = q.codes[i];
            static_cast<std::uint8_t*>(scales)[scales_at + b] = q.sf;
          }
        };
        if (args.k) put(args.k, args.k_out, args.k_block_scales_out, tensor_scale(args.k_scale));
        if (args.v) put(args.v, args.v_out, args.v_block_scales_out, tensor_scale(args.v_scale));
      } else {
        float k_scale = 1.0f, v_scale = 1.0f;
        switch (kind) {
          case ScaleKind::per_tensor:
            k_scale = tensor_scale(args.k_scale);
            v_scale = tensor_scale(args.v_scale);
            break;
          case ScaleKind::per_head:
            if (args.k) k_scale = args.k_head_scales[h];
            if (args.v) v_scale = args.v_head_scales[h];
            break;
          case ScaleKind::per_token_head: {
            float k_max = 0.0f, v_max = 0.0f;
            for (std::int64_t d = 0; d < args.head_dim; ++d) {
              const std::int64_t src = t * token_stride + h * head_stride + d;
              if (args.k) k_max = nan_max(k_max, magnitude(args.k, src));
              if (args.v) v_max = nan_max(v_max, magnitude(args.v, src));
            }
            k_scale = scale_from_amax<Format>(k_max, args.min_scale);
            v_scale = scale_from_amax<Format>(v_max, args.min_scale);
            const std::int64_t at = plan.scales_out.address(static_cast<std::int64_t>(row), h);
            if (args.k) args.k_scales_out[at] = k_scale;
            if (args.v) args.v_scales_out[at] = v_scale;
            break;
          }
        }
        const std::int64_t dst = out.address(static_cast<std::int64_t>(row), h);
        for (std::int64_t d = 0; d < args.head_dim; ++d) {
          const std::int64_t src = t * token_stride + h * head_stride + d;
          if (args.k)
            static_cast<std::uint8_t*>(args.k_out)[dst + d] =
                quantize<Format, Mode>(dtype, element_bits(args.k, src), k_scale);
          if (args.v)
            static_cast<std::uint8_t*>(args.v_out)[dst + d] =
                quantize<Format, Mode>(dtype, element_bits(args.v, src), v_scale);
        }
      }
    }
  }
  return status;
}

//! A read's fp32 value `y` as the bits of the output type `out`: nearest-even (±inf past T's
//! range), NaN as T's canonical NaN.
inline std::uint32_t output_bits(DType out, float y) {
  if (std::isnan(y)) return out == DType::f32 ? 0x7fffffffu : 0x7fffu;
  switch (out) {
    case DType::f16: return round_to(y, kHalf, 0x7fffu);
    case DType::bf16: return round_to(y, kBFloat16, 0x7fffu);
    case DType::f32: break;
  }
  return float_to_bits(y);
}

//! One value of the read (DESIGN.md §2), as the bits of the output type `out` (the low 16 bits
//! for f16/bf16): `T(float(code) * scale)`, the product one IEEE fp32 multiplication, then
//! nearest-even into T (±inf past its range); a NaN product gives T's canonical NaN (0x7FFF,
//! 0x7FFFFFFF), as the GPU's arithmetic and conversions give it.
template <class Format>
inline std::uint32_t dequantize(DType out, std::uint8_t code, float scale) {
  const float x = static_cast<float>(decode(code, fp8_format<Format>()));  // exact: fp8 values are floats
  return output_bits(out, x * scale);                                       // one IEEE fp32 product
}


//! The read on the host, fp8 or NVFP4 (`Format` nvfp4: the codes two a byte, each element
//! nvfp4_dequantize of its code, its block's scale and the tensor's g). Every pointer in `args`
//! is a host pointer (the scales, the slots, the page table and `error_count` too). Returns
//! validation's status; writes only the output tokens that read a row, and adds the tokens
//! skipped by a bounds check to `*args.error_count`.
template <class Format, class T>
Status upcast(const UpcastArgs<T>& args) {
  // Validation and the defaults it resolves are the launcher's; rows, addresses, scales and
  // arithmetic are computed here on their own.
  detail::ReadPlan plan;
  const Status status = make_read_plan(args, plan, code_format_of<Format>());
  if (!status.ok() || args.num_tokens == 0) return status;
  const DType dtype = dtype_of<T>::value;
  const auto tensor_scale = [](const Scale& s) { return s.device ? *s.device : s.value; };
  const auto skip_counted = [&]() {
    if (args.error_count) ++*args.error_count;
  };
  for (std::int64_t t = 0; t < args.num_tokens; ++t) {
    std::int64_t row = 0;
    if (plan.page_table) {
      // The sequence holding output token t: the last b with cu_seq_lens[b] <= t, if t is
      // before cu_seq_lens[batch].
      const std::int32_t* cu = args.cu_seq_lens;
      if (t < cu[0] || t >= cu[args.batch]) continue;  // in no sequence
      std::int64_t b = 0;
      while (b + 1 < args.batch && cu[b + 1] <= t) ++b;
      const std::int64_t j = (args.seq_starts ? args.seq_starts[b] : 0) + (t - cu[b]);
      if (j < 0 || j / plan.page_size >= args.max_pages) {
        skip_counted();
        continue;
      }
      const std::int64_t entry = args.block_table[b * args.max_pages + j / plan.page_size];
      if (entry < 0 || entry >= plan.pages) {
        skip_counted();
        continue;
      }
      row = entry * plan.page_size + j % plan.page_size;
    } else {
      const std::int64_t slot = slot_of(args.loc, t);
      if (slot < 0) continue;  // padding
      const __int128 r = static_cast<__int128>(slot) * args.mult + args.offset;
      if (r < 0 || r >= args.cache_rows) {
        skip_counted();
        continue;
      }
      row = static_cast<std::int64_t>(r);
    }
    for (std::int64_t h = 0; h < args.heads; ++h) {
      float k_scale = 1.0f, v_scale = 1.0f;
      switch (args.scale_kind) {
        case ScaleKind::per_tensor:
          k_scale = tensor_scale(args.k_scale);
          v_scale = tensor_scale(args.v_scale);
          break;
        case ScaleKind::per_head:
          if (args.k_cache) k_scale = args.k_head_scales[h];
          if (args.v_cache) v_scale = args.v_head_scales[h];
          break;
        case ScaleKind::per_token_head:
          if (args.k_cache) k_scale = args.k_scales[plan.scales.address(row, h)];
          if (args.v_cache) v_scale = args.v_scales[plan.scales.address(row, h)];
          break;
      }
      const std::int64_t src = plan.cache.address(row, h);
      const std::int64_t dst = t * plan.out_token_stride + h * plan.out_head_stride;
      for (std::int64_t d = 0; d < args.head_dim; ++d) {
        const auto put = [&](T* out, const void* cache, const void* block_scales, float scale) {
          const auto* bytes = static_cast<const std::uint8_t*>(cache);
          std::uint32_t bits;
          if constexpr (std::is_same<Format, nvfp4>::value) {
            const std::uint8_t code = static_cast<std::uint8_t>(bytes[src + d / 2] >> (4 * (d % 2)) & 0xF);
            const std::uint8_t sf = static_cast<const std::uint8_t*>(block_scales)[plan.block_scales.address(row, h) + d / 16];
            bits = output_bits(dtype, nvfp4_dequantize(code, sf, scale));
          } else {
            (void)block_scales;
            bits = dequantize<Format>(dtype, bytes[src + d], scale);
          }
          std::memcpy(static_cast<void*>(out + dst + d), &bits, sizeof(T));  // little-endian: the low bytes
        };
        if (args.k_cache) put(args.k, args.k_cache, args.k_block_scales, k_scale);
        if (args.v_cache) put(args.v, args.v_cache, args.v_block_scales, v_scale);
      }
    }
  }
  return status;
}

}  // namespace ref
}  // namespace kvcast
