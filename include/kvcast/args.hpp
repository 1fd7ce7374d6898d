// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file args.hpp
//! The argument structs of the downcast (the write) and the upcast (the read), plain C++ so that
//! the host reference, the validation and the fuzzer share them with the CUDA launcher.
#pragma once

#include <cstdint>
#include <limits>

#include "layout.hpp"

namespace kvcast {

//! Token → slot indices (SGLang's `loc`, vLLM's `slot_mapping`), int64 or int32, in device
//! memory (host memory for the host reference). No slots: token t goes to slot t.
struct Slots {
  const void* data = nullptr;
  bool is_int32 = false;

  constexpr Slots() = default;
  constexpr Slots(const std::int64_t* p) : data(p), is_int32(false) {}  // NOLINT: implicit on purpose
  constexpr Slots(const std::int32_t* p) : data(p), is_int32(true) {}   // NOLINT
  constexpr explicit operator bool() const { return data != nullptr; }
};

//! One tensor's scale: a float in device memory, read by the kernel when it runs (so a CUDA
//! graph replays with whatever value is there), or a value fixed at launch.
struct Scale {
  const float* device = nullptr;  //!< read at run time when set
  float value = 1.0f;             //!< used when `device` is null

  static constexpr Scale in_device_memory(const float* p) { return Scale{p, 1.0f}; }
  static constexpr Scale host_value(float v) { return Scale{nullptr, v}; }
};

//! How K's and V's scales are given (DESIGN.md §2). Each element is `quantize(x, scale)` with
//! its tensor's scale for that (token, head).
enum class ScaleKind : std::uint8_t {
  per_tensor,      //!< `k_scale` / `v_scale`: one float a tensor, in device memory or a value
  per_head,        //!< `k_head_scales` / `v_head_scales`: `heads` floats a tensor, in device memory
  //! Computed by the kernel from each row-head's amax (fp32 arithmetic only):
  //! `scale = max(amax / fp8_max, min_scale)`, written to `k_scales_out` / `v_scales_out`.
  per_token_head,
};

inline const char* to_string(ScaleKind kind) {
  switch (kind) {
    case ScaleKind::per_tensor: return "per_tensor";
    case ScaleKind::per_head: return "per_head";
    case ScaleKind::per_token_head: return "per_token_head";
  }
  return "unknown";
}

//! Everything one downcast call needs. Strides are in elements of their own tensor.
//!
//! @tparam T input element type: `__nv_bfloat16`, `__half` or `float`.
template <class T>
struct DowncastArgs {
  //! `out_rows = kUncheckedRows` trusts the slots: rows are not bounded above (negative rows are
  //! still skipped and counted). SGLang's behaviour; never the default.
  static constexpr std::int64_t kUncheckedRows = -1;
  //! The default of `out_rows`: a call that leaves it so is refused (validation names it).
  static constexpr std::int64_t kRowsNotGiven = std::numeric_limits<std::int64_t>::min();

  // Inputs `[num_tokens, heads, head_dim]`; either may be null (MLA caches have one tensor).
  const T* k = nullptr;
  const T* v = nullptr;
  std::int64_t num_tokens = 0;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  //! 0 means contiguous: `in_head_stride = head_dim`, `in_token_stride = heads * in_head_stride`.
  std::int64_t in_token_stride = 0;
  std::int64_t in_head_stride = 0;

  // Outputs: fp8 bytes (`__nv_fp8_e4m3*`, `uint8_t*`, `torch.float8_*` data…), one layout for both.
  void* k_out = nullptr;
  void* v_out = nullptr;
  //! All-zero means contiguous `[rows, heads, head_dim]`.
  OutputLayout out{};

  Slots loc{};
  std::int64_t mult = 1;    //!< row = slot * mult + offset (SGLang); 1 <= mult < 2^31
  std::int64_t offset = 0;  //!< |offset| <= 2^62
  //! Number of rows of the output (the cache's row count): rows outside [0, out_rows) are skipped
  //! and counted, never written. Required: give it, or kUncheckedRows to trust the slots.
  std::int64_t out_rows = kRowsNotGiven;
  //! Optional device counter: the kernel adds the number of tokens whose row was skipped by the
  //! bounds check (not the padding tokens with a negative slot). The caller zeroes it.
  unsigned long long* error_count = nullptr;

  //! Optional sizes of the buffers, for a check before launch: `k`/`v` hold at least
  //! `in_capacity` elements, `k_out`/`v_out` at least `out_capacity` bytes. -1: unknown.
  std::int64_t in_capacity = -1;
  std::int64_t out_capacity = -1;

  //! Which of the scale fields below the call reads; the others must be left unset.
  ScaleKind scale_kind = ScaleKind::per_tensor;
  //! ScaleKind::per_tensor.
  Scale k_scale{};
  Scale v_scale{};
  //! ScaleKind::per_head: `heads` floats each, in device memory, read when the kernel runs.
  const float* k_head_scales = nullptr;
  const float* v_head_scales = nullptr;
  //! ScaleKind::per_token_head: where each written row-head's scale goes (fp32), at
  //! `scales_out.address(row, head)` floats from these pointers. A padding or out-of-range
  //! token writes no scale, as it writes no code.
  float* k_scales_out = nullptr;
  float* v_scales_out = nullptr;
  //! OutputLayout's formula in floats, a row-head one float: a separate `[rows, heads]` tensor
  //! (all-zero, the default), pages `[pages, block, heads]`, or floats inside each page of the
  //! codes (the pointers then point into the code buffer; they must not overlap the codes).
  OutputLayout scales_out{};
  //! ScaleKind::per_token_head: the smallest scale, so that an all-zero row divides by it
  //! (vLLM's default). Finite and >= 0.
  float min_scale = 1e-6f;

  //! NVFP4 (`downcast<nvfp4>`, kvcast/nvfp4.cuh): the codes go to `k_out` / `v_out` placed by
  //! `out` in bytes, a row-head `head_dim / 2` bytes (all-zero: `[rows, heads, head_dim / 2]`);
  //! `k_scale` / `v_scale` are the global scales g (per_tensor); each written row-head's
  //! `head_dim / 16` E4M3 block scales go to `block_scales_out.address(row, head)` bytes from
  //! these pointers: a separate tensor (all-zero: `[rows, heads, head_dim / 16]`, or FlashInfer's
  //! NHD / HND `kv_cache_sf`), or bytes inside each page of the codes (vLLM's
  //! `[K codes | K scales | V codes | V scales]` pages), never overlapping a code. A padding or
  //! out-of-range token writes neither. Not given with an fp8 format.
  void* k_block_scales_out = nullptr;
  void* v_block_scales_out = nullptr;
  OutputLayout block_scales_out{};

  //! Optional, any scale kind: `*k_amax = max(*k_amax, max |float(x)|)` over every element of K
  //! of every token whose slot is >= 0 (out-of-range rows included: they were real inputs),
  //! NaN propagating. The caller zeroes it (or leaves a non-negative value to accumulate into);
  //! atomics make it graph-safe. Likewise `v_amax`.
  float* k_amax = nullptr;
  float* v_amax = nullptr;

  //! Programmatic dependent launch (sm_90+): the kernel may start while the previous kernel on
  //! the stream finishes, and waits for it (`griddepcontrol.wait`) before its first read.
  bool pdl = false;
};

//! Everything one upcast call (the read path: gather cache rows, dequantize) needs. Strides are
//! in elements of their own tensor. Each output element is `T(float(code) * scale)`.
//!
//! Rows are chosen in one of two forms:
//!  - **slots**: output token t reads cache row `loc[t] * mult + offset` (`loc` absent: row t);
//!    a negative `loc[t]` leaves output token t untouched (the write side's padding);
//!  - **page table**: output tokens `cu_seq_lens[b] .. cu_seq_lens[b+1]-1` are the tokens
//!    `seq_starts[b] + 0, 1, ...` of sequence b (`seq_starts` absent: from 0), and token j of
//!    sequence b is cache row `block_table[b * max_pages + j / page_size] * page_size + j % page_size`.
//!    An output token outside `[cu_seq_lens[0], cu_seq_lens[batch])` belongs to no sequence and is
//!    left untouched.
//!
//! A row outside `[0, cache_rows)`, a page-table entry outside `[0, cache_rows / page_size)` and
//! a page index past `max_pages` leave the token untouched and count once in `error_count`.
//!
//! @tparam T output element type: `__nv_bfloat16`, `__half` or `float`.
template <class T>
struct UpcastArgs {
  //! The default of `cache_rows`: a call that leaves it so is refused (validation names it).
  static constexpr std::int64_t kRowsNotGiven = std::numeric_limits<std::int64_t>::min();

  // The cache: fp8 codes (E4M3 or E5M2, the call's Format) placed by `cache`. Either may be
  // null (MLA caches have one tensor), not both.
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  //! All-zero means contiguous `[cache_rows, heads, head_dim]`.
  OutputLayout cache{};
  //! Rows of the cache (pages * page size for a paged one). Required: no row outside
  //! `[0, cache_rows)` is ever read.
  std::int64_t cache_rows = kRowsNotGiven;

  // Outputs `[num_tokens, heads, head_dim]`, each given exactly when its cache is.
  T* k = nullptr;
  T* v = nullptr;
  std::int64_t num_tokens = 0;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  //! 0 means contiguous: `out_head_stride = head_dim`, `out_token_stride = heads * out_head_stride`.
  //! Other values write into a slice of a larger workspace.
  std::int64_t out_token_stride = 0;
  std::int64_t out_head_stride = 0;

  // Rows, form (a): slots.
  Slots loc{};
  std::int64_t mult = 1;    //!< row = slot * mult + offset; 1 <= mult < 2^31
  std::int64_t offset = 0;  //!< |offset| <= 2^62

  // Rows, form (b): a page table (int32, in device memory), instead of loc, mult and offset.
  const std::int32_t* block_table = nullptr;  //!< `[batch, max_pages]`, page indices
  std::int64_t batch = 0;
  std::int64_t max_pages = 0;                  //!< entries a sequence (the block table's row stride)
  const std::int32_t* cu_seq_lens = nullptr;   //!< `batch + 1` non-decreasing offsets into the output tokens
  const std::int32_t* seq_starts = nullptr;    //!< optional, `batch`: each sequence's first token to read (>= 0)
  //! Rows a page; 0 means the cache layout's `block_size`.
  std::int64_t page_size = 0;

  //! Optional device counter: the kernel adds the number of tokens skipped by a bounds check.
  unsigned long long* error_count = nullptr;

  //! Which of the scale fields below the call reads; the others must be left unset.
  ScaleKind scale_kind = ScaleKind::per_tensor;
  //! ScaleKind::per_tensor: a device float (read when the kernel runs) or a host value.
  Scale k_scale{};
  Scale v_scale{};
  //! ScaleKind::per_head: `heads` floats each, in device memory.
  const float* k_head_scales = nullptr;
  const float* v_head_scales = nullptr;
  //! ScaleKind::per_token_head: each cache row-head's scale, a float at `scales.address(row,
  //! head)` of these pointers (what the write stored).
  const float* k_scales = nullptr;
  const float* v_scales = nullptr;
  //! OutputLayout's formula in floats; all-zero means a separate `[cache_rows, heads]` tensor.
  OutputLayout scales{};
  //! NVFP4 (`upcast<nvfp4>`, kvcast/nvfp4.cuh): the cache holds E2M1 codes placed by `cache` in
  //! bytes (a row-head `head_dim / 2` bytes); `k_scale` / `v_scale` are the global scales g; each
  //! cache row-head's `head_dim / 16` E4M3 block scales are at `block_scales.address(row, head)`
  //! bytes from these pointers (all-zero layout: `[cache_rows, heads, head_dim / 16]`), as the
  //! write placed them. Not given with an fp8 format.
  const void* k_block_scales = nullptr;
  const void* v_block_scales = nullptr;
  OutputLayout block_scales{};

  //! Programmatic dependent launch (sm_90+), as DowncastArgs::pdl.
  bool pdl = false;
};

}  // namespace kvcast
