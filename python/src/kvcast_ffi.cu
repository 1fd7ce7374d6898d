// kvcast's Python face: the device-wide write and read behind tvm-ffi's C ABI (DLPack tensors in,
// no torch at build time). Shapes, strides and dtypes come from the tensors; the stream is the
// caller's (tvm-ffi's environment stream: torch's current stream when the tensors are torch's).
// Every kvcast::Status error, and every tensor of the wrong kind, raises ValueError before any
// launch: first the tensors' kinds and ranks, then kvcast's own validation (which runs on host
// arrays too), then the device.
#include <cuda_runtime_api.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/optional.h>
#include <tvm/ffi/string.h>

#include <kvcast/kvcast.cuh>
#if CUDART_VERSION >= 12080
#include <kvcast/nvfp4.cuh>  // cuda_fp4.h: CUDA 12.8
#define KVCAST_FFI_HAS_NVFP4 1
#else
#define KVCAST_FFI_HAS_NVFP4 0
#endif

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace {

using tvm::ffi::Optional;
using tvm::ffi::String;
using tvm::ffi::TensorView;
using Maybe = Optional<TensorView>;

// ---- Tensors: what a call reads off them. -------------------------------------------------

// A tensor's shape or strides (in elements): at most kMaxRank dimensions, held in place, so
// that reading a call's tensors allocates nothing.
constexpr int kMaxRank = 4;
struct Dims {
  std::array<std::int64_t, kMaxRank> d{};
  int n = 0;
  std::size_t size() const { return static_cast<std::size_t>(n); }
  std::int64_t operator[](std::size_t i) const { return d[i]; }
  std::int64_t& operator[](std::size_t i) { return d[i]; }
  std::int64_t back() const { return d[n - 1]; }
  bool operator==(const Dims& o) const {
    if (n != o.n) return false;
    for (int i = 0; i < n; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
  bool operator!=(const Dims& o) const { return !(*this == o); }
};

struct View {
  const char* name = nullptr;
  void* data = nullptr;  // data + byte_offset
  Dims shape, strides;   // strides: compact row-major where DLPack omits them
  DLDataType dtype{};
  DLDevice device{};
};

[[noreturn]] void fail(const std::string& message);

View view(const char* name, const TensorView& t) {
  View v;
  v.name = name;
  v.data = static_cast<char*>(t.data_ptr()) + t.byte_offset();
  v.dtype = t.dtype();
  v.device = t.device();
  if (t.ndim() > kMaxRank)
    fail(std::string(name) + ": expected at most " + std::to_string(kMaxRank) + " dimensions, got " + std::to_string(t.ndim()));
  v.shape.n = v.strides.n = t.ndim();
  for (int i = 0; i < v.shape.n; ++i) v.shape[i] = t.shape()[i];
  try {
    for (int i = 0; i < v.strides.n; ++i) v.strides[i] = t.strides()[i];
  } catch (const tvm::ffi::Error&) {  // no strides: compact row-major
    for (int i = v.shape.n - 1; i >= 0; --i) v.strides[i] = i == v.shape.n - 1 ? 1 : v.strides[i + 1] * v.shape[i + 1];
  }
  return v;
}

std::optional<View> view(const char* name, const Maybe& t) {
  if (!t.has_value()) return std::nullopt;
  return view(name, t.value());
}

// Raises Python's ValueError with `message`.
[[noreturn]] void fail(const std::string& message) { throw tvm::ffi::Error("ValueError", message, std::string()); }

void require_rank(const View& v, int rank, const char* shape) {
  if (static_cast<int>(v.shape.size()) != rank)
    fail(std::string(v.name) + ": expected " + std::to_string(rank) + " dimensions " + shape + ", got " +
         std::to_string(v.shape.size()));
}

bool is_float(const View& v, int bits) { return v.dtype.code == kDLFloat && v.dtype.bits == bits && v.dtype.lanes == 1; }
bool is_bf16(const View& v) { return v.dtype.code == kDLBfloat && v.dtype.bits == 16 && v.dtype.lanes == 1; }
bool is_byte(const View& v) { return v.dtype.bits == 8 && v.dtype.lanes == 1; }  // uint8, int8, float8_*
bool is_int(const View& v, int bits) { return v.dtype.code == kDLInt && v.dtype.bits == bits && v.dtype.lanes == 1; }

void require_float32(const View& v) {
  if (!is_float(v, 32)) fail(std::string(v.name) + ": expected float32");
}

enum class Elem { bf16, f16, f32 };
Elem element_of(const View& v) {
  if (is_bf16(v)) return Elem::bf16;
  if (is_float(v, 16)) return Elem::f16;
  if (is_float(v, 32)) return Elem::f32;
  fail(std::string(v.name) + ": expected bfloat16, float16 or float32");
}

// A cache tensor of fp8 bytes (or the scales' floats) and its OutputLayout, in its elements:
// [rows, heads, run] flat, or pages [pages, block, heads, run] ("nhd") / [pages, heads, block,
// run] ("hnd"). `run`: head_dim for codes, absent (1) for per-(token, head) scales.
struct Placed {
  kvcast::OutputLayout layout;
  std::int64_t rows = 0, heads = 0, run = 1;
};
Placed place(const View& v, const std::string& layout, bool has_run) {
  Placed p;
  const int extra = has_run ? 1 : 0;
  const int rank = static_cast<int>(v.shape.size());
  if (has_run && (rank == 0 || v.strides.back() != 1)) fail(std::string(v.name) + ": its last dimension must be contiguous (stride 1)");
  if (rank == 2 + extra) {
    p.rows = v.shape[0];
    p.heads = v.shape[1];
    p.layout = kvcast::OutputLayout::flat(v.strides[0], v.strides[1]);
  } else if (rank == 3 + extra && (layout == "nhd" || layout == "hnd")) {
    const bool nhd = layout == "nhd";
    const std::int64_t block = nhd ? v.shape[1] : v.shape[2];
    p.heads = nhd ? v.shape[2] : v.shape[1];
    p.rows = v.shape[0] * block;
    p.layout = kvcast::OutputLayout::paged(block, v.strides[0], nhd ? v.strides[1] : v.strides[2], nhd ? v.strides[2] : v.strides[1]);
  } else {
    fail(std::string(v.name) + ": expected " + (has_run ? "[rows, heads, head_dim], or pages [pages, block, heads, head_dim] "
                                                          "(layout='nhd') or [pages, heads, block, head_dim] (layout='hnd')"
                                                        : "[rows, heads], or pages [pages, block, heads] (layout='nhd') or "
                                                          "[pages, heads, block] (layout='hnd')") +
         ", got " + std::to_string(rank) + " dimensions (layout='" + layout + "')");
  }
  if (has_run) p.run = v.shape[rank - 1];
  return p;
}

// Every tensor of a call on one CUDA device; that device.
int cuda_device_of(std::initializer_list<const std::optional<View>*> views) {
  int device = -1;
  for (const auto* v : views) {
    if (!v->has_value()) continue;
    const View& t = **v;
    if (t.device.device_type != kDLCUDA)
      fail(std::string(t.name) + ": must be on a CUDA device (kvcast's kernels run there); got device type " +
           std::to_string(t.device.device_type));
    if (device >= 0 && t.device.device_id != device)
      fail(std::string(t.name) + ": on CUDA device " + std::to_string(t.device.device_id) + ", the others on " + std::to_string(device));
    device = t.device.device_id;
  }
  return device;
}

void check(const kvcast::Status& s, const char* op) {
  if (!s.ok()) fail(std::string("kvcast.") + op + ": " + s.message());
}

// The device of the call current while it launches.
struct DeviceScope {
  int previous = -1;
  bool switched = false;
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous) == cudaSuccess && previous != device) switched = cudaSetDevice(device) == cudaSuccess;
  }
  ~DeviceScope() {
    if (switched) cudaSetDevice(previous);
  }
};

cudaStream_t stream_of(int device) { return static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, device)); }

// A step's K and V, [num_tokens, heads, head_dim] of bf16/fp16/fp32 (either may be absent): one
// shape, one dtype, the last dimension contiguous.
void check_step_tensors(const std::optional<View>& k, const std::optional<View>& v) {
  for (const auto* t : {&k, &v}) {
    if (!*t) continue;
    require_rank(**t, 3, "[num_tokens, heads, head_dim]");
    element_of(**t);
    if ((*t)->strides[2] != 1) fail(std::string((*t)->name) + ": its last dimension must be contiguous (stride 1)");
  }
  if (k && v && (k->shape != v->shape || k->dtype.code != v->dtype.code || k->dtype.bits != v->dtype.bits))
    fail(std::string(k->name) + " and " + v->name + ": must have the same shape and dtype");
}

// K's and V's caches (or their NVFP4 block scales): bytes in one layout (either may be absent),
// `run` bytes a row-head (the last dimension), so that nothing is written past a tensor's end.
void require_bytes(const View& v) {
  if (!is_byte(v)) fail(std::string(v.name) + ": expected 1-byte elements (uint8 or float8)");
}
void check_cache_tensors(const std::optional<View>& k, const std::optional<View>& v, std::int64_t run, const char* what) {
  for (const auto* t : {&k, &v}) {
    if (!*t) continue;
    require_bytes(**t);
    if ((*t)->shape.size() == 0 || (*t)->shape.back() != run)
      fail(std::string((*t)->name) + ": its last dimension must be " + what + " (" + std::to_string(run) + "), got " +
           ((*t)->shape.size() == 0 ? std::string("a scalar") : std::to_string((*t)->shape.back())));
  }
  if (k && v && (k->shape != v->shape || k->strides != v->strides))
    fail(std::string(k->name) + " and " + v->name + ": must have the same shape and strides (one layout for both)");
}

// The bytes of a row-head's codes, and of its block scales (NVFP4), for `format`.
bool is_nvfp4(const std::string& format) { return format == "nvfp4"; }
std::int64_t code_bytes(std::int64_t head_dim, const std::string& format) { return is_nvfp4(format) ? head_dim / 2 : head_dim; }
const char* code_bytes_rule(const std::string& format) { return is_nvfp4(format) ? "head_dim / 2 (two E2M1 codes a byte)" : "head_dim"; }

// NVFP4's block scales: given for each tensor that has codes, `head_dim / 16` bytes a row-head,
// placed like the codes (the same rows and heads; strides of their own).
void check_block_scales(const std::optional<View>& k_codes, const std::optional<View>& v_codes, const std::optional<View>& k_scales,
                        const std::optional<View>& v_scales, std::int64_t head_dim, const std::string& format, const std::string& layout) {
  if (!is_nvfp4(format)) {
    for (const auto* t : {&k_scales, &v_scales})
      if (*t) fail(std::string((*t)->name) + ": block scales belong to format 'nvfp4' (format is '" + format + "')");
    return;
  }
  if (k_codes && !k_scales) fail(std::string(k_codes->name) + ": format 'nvfp4' needs its block scales too (None given)");
  if (v_codes && !v_scales) fail(std::string(v_codes->name) + ": format 'nvfp4' needs its block scales too (None given)");
  check_cache_tensors(k_scales, v_scales, head_dim / 16, "head_dim / 16 (one E4M3 scale a block of 16)");
  for (const auto& [codes, scales] : {std::pair{&k_codes, &k_scales}, std::pair{&v_codes, &v_scales}}) {
    if (!*codes || !*scales) continue;
    const Placed c = place(**codes, layout, true), b = place(**scales, layout, true);
    if (c.rows != b.rows || c.heads != b.heads)
      fail(std::string((*scales)->name) + ": " + std::to_string(b.rows) + " rows of " + std::to_string(b.heads) + " heads, its codes " +
           std::to_string(c.rows) + " of " + std::to_string(c.heads) + " (one block-scale row-head a code row-head)");
  }
}

// Slots: one int64 or int32 a token, contiguous.
void check_slots(const std::optional<View>& loc) {
  if (!loc) return;
  require_rank(*loc, 1, "[num_tokens]");
  if (!is_int(*loc, 64) && !is_int(*loc, 32)) fail("loc: expected int64 or int32");
  if (loc->strides[0] != 1) fail("loc: must be contiguous");
}

// A call's codes and, for NVFP4, block scales. An NVFP4 head_dim that 16 does not divide is
// left to kvcast's own validation, whose message names that rule.
void check_codes(const std::optional<View>& k_codes, const std::optional<View>& v_codes, const std::optional<View>& k_scales,
                 const std::optional<View>& v_scales, std::int64_t head_dim, const std::string& format, const std::string& layout) {
  if (is_nvfp4(format) && head_dim % 16 != 0) {
    for (const auto* t : {&k_codes, &v_codes})
      if (*t) require_bytes(**t);
    return;
  }
  check_cache_tensors(k_codes, v_codes, code_bytes(head_dim, format), code_bytes_rule(format));
  check_block_scales(k_codes, v_codes, k_scales, v_scales, head_dim, format, layout);
}

// ---- The write. ---------------------------------------------------------------------------

struct WriteCall {
  std::optional<View> k, v, k_out, v_out, loc, k_scale, v_scale, k_heads, v_heads, k_scales_out, v_scales_out, k_amax, v_amax,
      k_block_scales_out, v_block_scales_out;
  std::int64_t mult = 1, offset = 0;
  std::string format, arithmetic, layout, scale_kind;
  double k_value = 1.0, v_value = 1.0, min_scale = 1e-6;
  bool pdl = false;
};

kvcast::ScaleKind scale_kind_of(const std::string& s) {
  if (s == "per_tensor") return kvcast::ScaleKind::per_tensor;
  if (s == "per_head") return kvcast::ScaleKind::per_head;
  if (s == "per_token_head") return kvcast::ScaleKind::per_token_head;
  fail("scale_kind: '" + s + "' is not 'per_tensor', 'per_head' or 'per_token_head'");
}

const float* float_data(const std::optional<View>& v) { return v ? static_cast<const float*>(v->data) : nullptr; }

// A per-tensor scale: a one-element float32 tensor, read when the kernel runs, or a number.
kvcast::Scale tensor_scale(const std::optional<View>& t, double value) {
  return t ? kvcast::Scale::in_device_memory(float_data(t)) : kvcast::Scale::host_value(static_cast<float>(value));
}

template <class T>
kvcast::DowncastArgs<T> write_args(const WriteCall& c) {
  const View& in = c.k ? *c.k : *c.v;
  const View& out = c.k_out ? *c.k_out : *c.v_out;
  kvcast::DowncastArgs<T> a;
  a.k = c.k ? static_cast<const T*>(c.k->data) : nullptr;
  a.v = c.v ? static_cast<const T*>(c.v->data) : nullptr;
  a.num_tokens = in.shape[0];
  a.heads = in.shape[1];
  a.head_dim = in.shape[2];
  a.in_token_stride = in.strides[0];
  a.in_head_stride = in.strides[1];
  a.k_out = c.k_out ? c.k_out->data : nullptr;
  a.v_out = c.v_out ? c.v_out->data : nullptr;
  const Placed placed = place(out, c.layout, true);
  a.out = placed.layout;
  a.out_rows = placed.rows;  // the bounds check, always: the cache's own row count
  if (c.loc) {
    if (is_int(*c.loc, 64)) a.loc = static_cast<const std::int64_t*>(c.loc->data);
    else a.loc = static_cast<const std::int32_t*>(c.loc->data);
  }
  a.mult = c.mult;
  a.offset = c.offset;
  a.scale_kind = scale_kind_of(c.scale_kind);
  if (a.scale_kind == kvcast::ScaleKind::per_tensor) {
    a.k_scale = tensor_scale(c.k_scale, c.k_value);
    a.v_scale = tensor_scale(c.v_scale, c.v_value);
  }
  a.k_head_scales = float_data(c.k_heads);
  a.v_head_scales = float_data(c.v_heads);
  a.k_scales_out = const_cast<float*>(float_data(c.k_scales_out));
  a.v_scales_out = const_cast<float*>(float_data(c.v_scales_out));
  if (c.k_scales_out || c.v_scales_out) a.scales_out = place(c.k_scales_out ? *c.k_scales_out : *c.v_scales_out, c.layout, false).layout;
  a.min_scale = static_cast<float>(c.min_scale);
  a.k_amax = const_cast<float*>(float_data(c.k_amax));
  a.v_amax = const_cast<float*>(float_data(c.v_amax));
  a.k_block_scales_out = c.k_block_scales_out ? c.k_block_scales_out->data : nullptr;
  a.v_block_scales_out = c.v_block_scales_out ? c.v_block_scales_out->data : nullptr;
  if (c.k_block_scales_out || c.v_block_scales_out)
    a.block_scales_out = place(c.k_block_scales_out ? *c.k_block_scales_out : *c.v_block_scales_out, c.layout, true).layout;
  a.pdl = c.pdl;
  return a;
}

// The structure of a write's tensors (kvcast checks the rest: strides, overlaps, sizes).
void check_write_tensors(const WriteCall& c) {
  if (!c.k && !c.v) fail("kvcast.write: k and v are both None: give at least one tensor");
  check_step_tensors(c.k, c.v);
  if (c.k && !c.k_out) fail("k_out: None while k is given");
  if (c.v && !c.v_out) fail("v_out: None while v is given");
  const std::int64_t head_dim = (c.k ? *c.k : *c.v).shape[2];
  check_codes(c.k_out, c.v_out, c.k_block_scales_out, c.v_block_scales_out, head_dim, c.format, c.layout);
  check_slots(c.loc);
  if (c.loc) {
    const View& in = c.k ? *c.k : *c.v;
    if (c.loc->shape[0] != in.shape[0]) fail("loc: " + std::to_string(c.loc->shape[0]) + " slots for " + std::to_string(in.shape[0]) + " tokens");
  }
  for (const auto* t : {&c.k_scale, &c.v_scale, &c.k_heads, &c.v_heads, &c.k_scales_out, &c.v_scales_out, &c.k_amax, &c.v_amax})
    if (*t) require_float32(**t);
  for (const auto* t : {&c.k_scale, &c.v_scale, &c.k_amax, &c.v_amax})
    if (*t && (*t)->shape.size() > 1) fail(std::string((*t)->name) + ": expected one float");
  const View& in = c.k ? *c.k : *c.v;
  for (const auto* t : {&c.k_heads, &c.v_heads})
    if (*t && ((*t)->shape.size() != 1 || (*t)->shape[0] != in.shape[1] || (*t)->strides[0] != 1))
      fail(std::string((*t)->name) + ": expected " + std::to_string(in.shape[1]) + " contiguous floats, one a head");
}

template <class Format, kvcast::Arithmetic Mode, class T>
void run_write(const WriteCall& c, const char* op) {
  const kvcast::DowncastArgs<T> a = write_args<T>(c);
  // downcast()'s own steps, so that the arguments are validated once, before the device checks
  // (kvcast's messages come first, NumPy arrays included).
  kvcast::detail::Plan plan;
  check(kvcast::make_plan(a, plan, Mode, kvcast::code_format_of<Format>()), op);
  const int device = cuda_device_of({&c.k, &c.v, &c.k_out, &c.v_out, &c.loc, &c.k_scale, &c.v_scale, &c.k_heads, &c.v_heads,
                                     &c.k_scales_out, &c.v_scales_out, &c.k_amax, &c.v_amax, &c.k_block_scales_out,
                                     &c.v_block_scales_out});
  if (plan.num_segments == 0) return;
  const DeviceScope scope(device);
  check(kvcast::detail::dispatch<typename kvcast::CodePolicyOf<Format, Mode>::type>(a, plan, stream_of(device)), op);
}

template <class Format, kvcast::Arithmetic Mode>
void write_typed(const WriteCall& c, const char* op) {
  switch (element_of(c.k ? *c.k : *c.v)) {
    case Elem::bf16: return run_write<Format, Mode, __nv_bfloat16>(c, op);
    case Elem::f16: return run_write<Format, Mode, __half>(c, op);
    case Elem::f32: return run_write<Format, Mode, float>(c, op);
  }
}

void write_call(const WriteCall& c, const char* op) {
  check_write_tensors(c);
  const bool fp32 = c.arithmetic == "fp32", fast_math = c.arithmetic == "fast_math";
  if (!fp32 && !fast_math && c.arithmetic != "input_precision")
    fail("arithmetic: '" + c.arithmetic + "' is not 'fp32', 'input_precision' or 'fast_math'");
  if (fast_math && !is_nvfp4(c.format))
    fail("arithmetic: 'fast_math' is NVFP4's engine-compatible mode (FlashInfer's): format '" + c.format +
         "' takes 'fp32' or 'input_precision'");
  if (c.format == "e4m3") return fp32 ? write_typed<kvcast::e4m3, kvcast::Arithmetic::fp32>(c, op)
                                      : write_typed<kvcast::e4m3, kvcast::Arithmetic::input_precision>(c, op);
  if (c.format == "e5m2") return fp32 ? write_typed<kvcast::e5m2, kvcast::Arithmetic::fp32>(c, op)
                                      : write_typed<kvcast::e5m2, kvcast::Arithmetic::input_precision>(c, op);
  if (is_nvfp4(c.format)) {
#if KVCAST_FFI_HAS_NVFP4
    if (!fp32 && !fast_math)
      fail("arithmetic: format 'nvfp4' computes in fp32 arithmetic: use arithmetic='fp32' (its exact mode) or 'fast_math' "
           "(FlashInfer's numerics)");
    return fp32 ? write_typed<kvcast::nvfp4, kvcast::Arithmetic::fp32>(c, op) : write_typed<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(c, op);
#else
    fail("format: 'nvfp4' needs kvcast built with CUDA 12.8 or later (cuda_fp4.h)");
#endif
  }
  fail("format: '" + c.format + "' is not 'e4m3', 'e5m2' or 'nvfp4'");
}

void write(Maybe k, Maybe v, Maybe k_out, Maybe v_out, Maybe loc, std::int64_t mult, std::int64_t offset, String format,
           String arithmetic, String layout, String scale_kind, Maybe k_scale, Maybe v_scale, double k_scale_value,
           double v_scale_value, Maybe k_head_scales, Maybe v_head_scales, Maybe k_scales_out, Maybe v_scales_out, double min_scale,
           Maybe k_amax, Maybe v_amax, Maybe k_block_scales_out, Maybe v_block_scales_out, bool pdl) {
  WriteCall c;
  c.k = view("k", k), c.v = view("v", v), c.k_out = view("k_out", k_out), c.v_out = view("v_out", v_out), c.loc = view("loc", loc);
  c.k_scale = view("k_scale", k_scale), c.v_scale = view("v_scale", v_scale);
  c.k_heads = view("k_head_scales", k_head_scales), c.v_heads = view("v_head_scales", v_head_scales);
  c.k_scales_out = view("k_scales_out", k_scales_out), c.v_scales_out = view("v_scales_out", v_scales_out);
  c.k_amax = view("k_amax", k_amax), c.v_amax = view("v_amax", v_amax);
  c.k_block_scales_out = view("k_block_scales_out", k_block_scales_out);
  c.v_block_scales_out = view("v_block_scales_out", v_block_scales_out);
  c.mult = mult, c.offset = offset;
  c.format = std::string(format), c.arithmetic = std::string(arithmetic), c.layout = std::string(layout);
  c.scale_kind = std::string(scale_kind);
  c.k_value = k_scale_value, c.v_value = v_scale_value, c.min_scale = min_scale, c.pdl = pdl;
  write_call(c, "write");
}

// SGLang's downcast_fp8 as a write: its arguments, its numerics (input precision, E4M3), scales
// in device memory.
WriteCall drop_in_call(TensorView k, TensorView v, TensorView k_out, TensorView v_out, TensorView k_scale, TensorView v_scale,
                       TensorView loc, std::int64_t mult, std::int64_t offset) {
  WriteCall c;
  c.k = view("k", k), c.v = view("v", v), c.k_out = view("k_out", k_out), c.v_out = view("v_out", v_out), c.loc = view("loc", loc);
  c.k_scale = view("k_scale", k_scale), c.v_scale = view("v_scale", v_scale);
  c.mult = mult, c.offset = offset;
  c.format = "e4m3", c.arithmetic = "input_precision", c.layout = "flat", c.scale_kind = "per_tensor";
  return c;
}

// SGLang's downcast_fp8, with the bounds check on, from k_out's row count.
void downcast_fp8(TensorView k, TensorView v, TensorView k_out, TensorView v_out, TensorView k_scale, TensorView v_scale,
                  TensorView loc, std::int64_t mult, std::int64_t offset) {
  write_call(drop_in_call(k, v, k_out, v_out, k_scale, v_scale, loc, mult, offset), "downcast_fp8");
}

// The host seconds to issue `calls` launches of downcast_fp8's C++ call, kvcast::downcast with
// arguments built once: the same-process baseline of tools/python_overhead.py, which times the
// Python call against it. With `whole_binding`, each launch goes through the whole binding
// (downcast_fp8: the tensors read, checked and planned again) in this C++ loop instead: the
// binding's own cost, without the Python call or tvm-ffi's conversion of the tensors.
double issue_seconds_downcast_fp8(TensorView k, TensorView v, TensorView k_out, TensorView v_out, TensorView k_scale,
                                  TensorView v_scale, TensorView loc, std::int64_t calls, bool whole_binding) {
  const WriteCall c = drop_in_call(k, v, k_out, v_out, k_scale, v_scale, loc, 1, 0);
  check_write_tensors(c);
  if (element_of(*c.k) != Elem::bf16) fail("k: the baseline times bfloat16 inputs");
  const kvcast::DowncastArgs<__nv_bfloat16> a = write_args<__nv_bfloat16>(c);
  const int device = cuda_device_of({&c.k, &c.v, &c.k_out, &c.v_out, &c.loc, &c.k_scale, &c.v_scale});
  const DeviceScope scope(device);
  const cudaStream_t stream = stream_of(device);
  const auto start = std::chrono::steady_clock::now();
  if (whole_binding) {
    for (std::int64_t i = 0; i < calls; ++i) downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, 1, 0);
  } else {
    for (std::int64_t i = 0; i < calls; ++i)
      check(kvcast::downcast<kvcast::e4m3, kvcast::Arithmetic::input_precision>(a, stream), "downcast_fp8");
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- The read. ----------------------------------------------------------------------------

struct ReadCall {
  std::optional<View> k_cache, v_cache, k, v, loc, block_table, cu_seq_lens, seq_starts, k_scale, v_scale, k_heads, v_heads, k_scales,
      v_scales, k_block_scales, v_block_scales;
  std::int64_t mult = 1, offset = 0, page_size = 0;
  std::string format, layout, scale_kind;
  double k_value = 1.0, v_value = 1.0;
  bool pdl = false;
};

template <class T>
kvcast::UpcastArgs<T> read_args(const ReadCall& c) {
  const View& cache = c.k_cache ? *c.k_cache : *c.v_cache;
  const View& out = c.k ? *c.k : *c.v;
  kvcast::UpcastArgs<T> a;
  const Placed placed = place(cache, c.layout, true);
  a.k_cache = c.k_cache ? c.k_cache->data : nullptr;
  a.v_cache = c.v_cache ? c.v_cache->data : nullptr;
  a.cache = placed.layout;
  a.cache_rows = placed.rows;
  a.k = c.k ? static_cast<T*>(c.k->data) : nullptr;
  a.v = c.v ? static_cast<T*>(c.v->data) : nullptr;
  a.num_tokens = out.shape[0];
  a.heads = out.shape[1];
  a.head_dim = out.shape[2];
  a.out_token_stride = out.strides[0];
  a.out_head_stride = out.strides[1];
  if (c.loc) {
    if (is_int(*c.loc, 64)) a.loc = static_cast<const std::int64_t*>(c.loc->data);
    else a.loc = static_cast<const std::int32_t*>(c.loc->data);
  }
  a.mult = c.mult;
  a.offset = c.offset;
  if (c.block_table) {
    a.block_table = static_cast<const std::int32_t*>(c.block_table->data);
    a.batch = c.block_table->shape[0];
    a.max_pages = c.block_table->shape[1];
    a.cu_seq_lens = c.cu_seq_lens ? static_cast<const std::int32_t*>(c.cu_seq_lens->data) : nullptr;
    a.seq_starts = c.seq_starts ? static_cast<const std::int32_t*>(c.seq_starts->data) : nullptr;
    a.page_size = c.page_size;
  }
  a.scale_kind = scale_kind_of(c.scale_kind);
  if (a.scale_kind == kvcast::ScaleKind::per_tensor) {
    a.k_scale = tensor_scale(c.k_scale, c.k_value);
    a.v_scale = tensor_scale(c.v_scale, c.v_value);
  }
  a.k_head_scales = float_data(c.k_heads);
  a.v_head_scales = float_data(c.v_heads);
  a.k_scales = float_data(c.k_scales);
  a.v_scales = float_data(c.v_scales);
  if (c.k_scales || c.v_scales) a.scales = place(c.k_scales ? *c.k_scales : *c.v_scales, c.layout, false).layout;
  a.k_block_scales = c.k_block_scales ? c.k_block_scales->data : nullptr;
  a.v_block_scales = c.v_block_scales ? c.v_block_scales->data : nullptr;
  if (c.k_block_scales || c.v_block_scales)
    a.block_scales = place(c.k_block_scales ? *c.k_block_scales : *c.v_block_scales, c.layout, true).layout;
  a.pdl = c.pdl;
  return a;
}

void check_read_tensors(const ReadCall& c) {
  if (!c.k_cache && !c.v_cache) fail("kvcast.read: k_cache and v_cache are both None: give at least one cache");
  check_step_tensors(c.k, c.v);
  if (c.k_cache && !c.k) fail("k: None while k_cache is given");
  if (c.v_cache && !c.v) fail("v: None while v_cache is given");
  const std::int64_t head_dim = (c.k ? *c.k : *c.v).shape[2];
  check_codes(c.k_cache, c.v_cache, c.k_block_scales, c.v_block_scales, head_dim, c.format, c.layout);
  check_slots(c.loc);
  if (c.block_table) {
    require_rank(*c.block_table, 2, "[batch, max_pages]");
    // An empty table (an empty batch) has no layout to check: its strides are whatever its maker chose.
    const bool empty = c.block_table->shape[0] == 0 || c.block_table->shape[1] == 0;
    if (!is_int(*c.block_table, 32) || (!empty && c.block_table->shape[1] > 1 && c.block_table->strides[1] != 1))
      fail("block_table: expected int32 with contiguous rows");
    if (!empty && c.block_table->strides[0] != c.block_table->shape[1] && c.block_table->shape[0] > 1)
      fail("block_table: its rows must be back to back (row stride = max_pages)");
    if (!c.cu_seq_lens) fail("cu_seq_lens: None while block_table is given");
  }
  for (const auto* t : {&c.cu_seq_lens, &c.seq_starts}) {
    if (!*t) continue;
    if ((*t)->shape.size() != 1 || !is_int(**t, 32) || (*t)->strides[0] != 1) fail(std::string((*t)->name) + ": expected contiguous int32");
  }
  if (c.block_table && c.cu_seq_lens->shape[0] != c.block_table->shape[0] + 1)
    fail("cu_seq_lens: expected batch + 1 = " + std::to_string(c.block_table->shape[0] + 1) + " entries");
  if (c.block_table && c.seq_starts && c.seq_starts->shape[0] != c.block_table->shape[0])
    fail("seq_starts: expected batch = " + std::to_string(c.block_table->shape[0]) + " entries");
  for (const auto* t : {&c.k_scale, &c.v_scale, &c.k_heads, &c.v_heads, &c.k_scales, &c.v_scales})
    if (*t) require_float32(**t);
}

template <class Format, class T>
void run_read(const ReadCall& c) {
  const kvcast::UpcastArgs<T> a = read_args<T>(c);
  kvcast::detail::ReadPlan plan;  // upcast()'s own steps: validated once, before the device checks
  check(kvcast::make_read_plan(a, plan, kvcast::code_format_of<Format>()), "read");
  const int device = cuda_device_of({&c.k_cache, &c.v_cache, &c.k, &c.v, &c.loc, &c.block_table, &c.cu_seq_lens, &c.seq_starts,
                                     &c.k_scale, &c.v_scale, &c.k_heads, &c.v_heads, &c.k_scales, &c.v_scales, &c.k_block_scales,
                                     &c.v_block_scales});
  if (plan.num_segments == 0) return;
  const DeviceScope scope(device);
  check(kvcast::detail::dispatch_read<Format>(a, plan, stream_of(device)), "read");
}

template <class Format>
void read_typed(const ReadCall& c) {
  switch (element_of(c.k ? *c.k : *c.v)) {
    case Elem::bf16: return run_read<Format, __nv_bfloat16>(c);
    case Elem::f16: return run_read<Format, __half>(c);
    case Elem::f32: return run_read<Format, float>(c);
  }
}

void read(Maybe k_cache, Maybe v_cache, Maybe k, Maybe v, Maybe loc, std::int64_t mult, std::int64_t offset, Maybe block_table,
          Maybe cu_seq_lens, Maybe seq_starts, std::int64_t page_size, String format, String layout, String scale_kind,
          Maybe k_scale, Maybe v_scale, double k_scale_value, double v_scale_value, Maybe k_head_scales, Maybe v_head_scales,
          Maybe k_scales, Maybe v_scales, Maybe k_block_scales, Maybe v_block_scales, bool pdl) {
  ReadCall c;
  c.k_cache = view("k_cache", k_cache), c.v_cache = view("v_cache", v_cache), c.k = view("k", k), c.v = view("v", v);
  c.loc = view("loc", loc), c.block_table = view("block_table", block_table), c.cu_seq_lens = view("cu_seq_lens", cu_seq_lens);
  c.seq_starts = view("seq_starts", seq_starts);
  c.k_scale = view("k_scale", k_scale), c.v_scale = view("v_scale", v_scale);
  c.k_heads = view("k_head_scales", k_head_scales), c.v_heads = view("v_head_scales", v_head_scales);
  c.k_scales = view("k_scales", k_scales), c.v_scales = view("v_scales", v_scales);
  c.k_block_scales = view("k_block_scales", k_block_scales), c.v_block_scales = view("v_block_scales", v_block_scales);
  c.mult = mult, c.offset = offset, c.page_size = page_size;
  c.format = std::string(format), c.layout = std::string(layout), c.scale_kind = std::string(scale_kind);
  c.k_value = k_scale_value, c.v_value = v_scale_value, c.pdl = pdl;
  check_read_tensors(c);
  if (c.format == "e4m3") return read_typed<kvcast::e4m3>(c);
  if (c.format == "e5m2") return read_typed<kvcast::e5m2>(c);
  if (is_nvfp4(c.format)) {
#if KVCAST_FFI_HAS_NVFP4
    return read_typed<kvcast::nvfp4>(c);
#else
    fail("format: 'nvfp4' needs kvcast built with CUDA 12.8 or later (cuda_fp4.h)");
#endif
  }
  fail("format: '" + c.format + "' is not 'e4m3', 'e5m2' or 'nvfp4'");
}

String version() { return String(std::to_string(KVCAST_VERSION_MAJOR) + "." + std::to_string(KVCAST_VERSION_MINOR) + "." +
                                 std::to_string(KVCAST_VERSION_PATCH)); }

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(write, write);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(read, read);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(downcast_fp8, downcast_fp8);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(version, version);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(_issue_seconds_downcast_fp8, issue_seconds_downcast_fp8);
