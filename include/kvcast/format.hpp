// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file format.hpp
//! The fp8 format tags, the arithmetic modes and the input dtypes, as plain C++ so that the host
//! reference, the validation and the fuzzer can use them without a CUDA compiler.
#pragma once

#include <cstdint>
#include <type_traits>

// cuda_fp16.h / cuda_bf16.h define these; declaring them lets dtype_of name them here without
// pulling CUDA headers into plain C++ translation units.
struct __half;
struct __nv_bfloat16;

namespace kvcast {

//! How `quantize(x, scale)` computes before the fp8 rounding (DESIGN.md §2). Chosen at compile
//! time; both give the same results for every scale that is a power of two.
enum class Arithmetic {
  //! `y = float(x) / scale`, one correctly rounded fp32 division, then fp8 RNE with saturation.
  //! Equals PyTorch's `(x.float() / scale).clamp(-max, max).to(fp8)`.
  fp32,
  //! SGLang's `downcast_fp8`: `inv = T(1) / T(scale)` and `x * inv` each rounded to T,
  //! clamp to ±max, convert. Bit-exact with SGLang for bf16 and fp16.
  input_precision,
  //! NVFP4 only, its engine-compatible mode: fp32 as `nvcc -use_fast_math` compiles FlashInfer's
  //! NVFP4 KV writer (include/flashinfer/page.cuh, nvfp4_append_quantize_block): approximate
  //! reciprocals (`rcp.approx.ftz.f32`), subnormals flushed to zero, NaN left out of the block's
  //! amax. Bit-exact with FlashInfer's nvfp4_quantize_append_paged_kv_cache(_with_slot_mapping).
  fast_math,
};

//! OCP FP8 E4M3 ("e4m3fn"): no infinities, one NaN pair (0x7F, 0xFF), max finite 448.
struct e4m3 {
  static constexpr int kExponentBits = 4;
  static constexpr int kMantissaBits = 3;
  static constexpr int kBias = 7;
  static constexpr float kMax = 448.0f;
  static constexpr std::uint8_t kMaxCode = 0x7E;
  //! The code every NaN input produces (cuda_fp8.h's canonical NaN, sign bit clear).
  static constexpr std::uint8_t kNaNCode = 0x7F;
  static constexpr int kCodesPerByte = 1;
  static constexpr const char* kName = "e4m3";
};

//! OCP FP8 E5M2: IEEE-like with infinities, max finite 57344. Saturation never produces inf.
struct e5m2 {
  static constexpr int kExponentBits = 5;
  static constexpr int kMantissaBits = 2;
  static constexpr int kBias = 15;
  static constexpr float kMax = 57344.0f;
  static constexpr std::uint8_t kMaxCode = 0x7B;
  static constexpr std::uint8_t kNaNCode = 0x7F;
  static constexpr int kCodesPerByte = 1;
  static constexpr const char* kName = "e5m2";
};

//! NVFP4 (issue #17): E2M1 codes, two a byte (the lower-indexed element in the low nibble), in
//! blocks of 16 consecutive elements along head_dim that share one E4M3 block scale (a byte,
//! placed by its own layout), times a per-tensor fp32 global scale g: x ≈ e2m1 · sf · g.
//! The write's format tag: `downcast<nvfp4>` (kvcast/nvfp4.cuh, which needs CUDA 12.8).
struct nvfp4 {
  static constexpr int kCodesPerByte = 2;
  static constexpr int kBlock = 16;        //!< elements that share a block scale
  static constexpr float kMax = 6.0f;      //!< E2M1's largest magnitude
  static constexpr const char* kName = "nvfp4";
};

//! What a write's codes are, for the planner (plain C++): one fp8 byte an element, or NVFP4.
enum class CodeFormat : std::uint8_t { fp8, nvfp4 };

template <class Format>
constexpr CodeFormat code_format_of() {
  return std::is_same<Format, nvfp4>::value ? CodeFormat::nvfp4 : CodeFormat::fp8;
}

//! Input element types the kernels take.
enum class DType { f16, bf16, f32 };

template <class T>
struct dtype_of;  // intentionally undefined: only the three input types below are supported
template <>
struct dtype_of<__half> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<__nv_bfloat16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};

inline const char* to_string(DType dtype) {
  return dtype == DType::f16 ? "f16" : dtype == DType::bf16 ? "bf16" : "f32";
}
inline const char* to_string(CodeFormat format) {
  return format == CodeFormat::fp8 ? "fp8" : "nvfp4";
}
inline const char* to_string(Arithmetic mode) {
  return mode == Arithmetic::fp32 ? "fp32" : mode == Arithmetic::input_precision ? "input_precision" : "fast_math";
}

}  // namespace kvcast
