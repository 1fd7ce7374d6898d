"""kvcast's Python face: the KV-cache write (quantize and scatter) and read (gather and
dequantize) of the kvcast CUDA library, on any DLPack tensors on a CUDA device (torch, CuPy,
JAX), through apache-tvm-ffi. The stream is the caller's: torch's current stream for torch
tensors, tvm-ffi's environment stream otherwise.

    import kvcast
    kvcast.downcast_fp8(k, v, k_cache, v_cache, k_scale, v_scale, loc)        # SGLang's signature
    kvcast.write(k, v, k_cache, v_cache, loc=loc, k_scale=0.02, v_scale=0.03)  # any option
    kvcast.read(k_cache, v_cache, k, v, loc=rows, k_scale=0.02, v_scale=0.03)  # the other way

Every argument error raises ValueError with kvcast's message before anything is launched or
written. With torch importable, the same operations are torch.ops.kvcast.* custom ops
(torch.compile and CUDA graphs): see kvcast.ops.
"""
from __future__ import annotations

import pathlib

import tvm_ffi

_LIB = tvm_ffi.load_module(str(pathlib.Path(__file__).with_name("_kvcast_ffi.so")))

__version__ = str(_LIB.version())

FORMATS = ("e4m3", "e5m2", "nvfp4")
SCALE_KINDS = ("per_tensor", "per_head", "per_token_head")


def _scale(value):
    """A per-tensor scale: a one-element float32 tensor (read when the kernel runs) or a number."""
    if value is None:
        return None, 1.0
    if isinstance(value, (int, float)):
        return None, float(value)
    return value, 1.0


def downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult=1, offset=0):
    """SGLang's ``downcast_fp8``, argument for argument: ``k``, ``v`` ``[tokens, heads, dim]``
    (bf16/fp16/fp32), ``k_out``, ``v_out`` the E4M3 cache ``[rows, heads, dim]``, one-element
    float32 scales, int64 ``loc``; row = loc * mult + offset; SGLang's input-precision numerics.
    Unlike SGLang's, a row outside the cache is skipped (the cache's row count is its shape's)."""
    _LIB.downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, int(mult), int(offset))


def write(k, v, k_out, v_out, *, loc=None, mult=1, offset=0, format="e4m3", arithmetic="fp32", layout="flat",
          scale_kind="per_tensor", k_scale=1.0, v_scale=1.0, k_head_scales=None, v_head_scales=None, k_scales_out=None,
          v_scales_out=None, min_scale=1e-6, k_amax=None, v_amax=None, k_block_scales_out=None, v_block_scales_out=None,
          pdl=False):
    """Quantizes ``k`` and ``v`` (``[tokens, heads, dim]``; either may be None) into their cache
    rows ``loc[t] * mult + offset`` (int64 or int32 ``loc``; None: row t; negative: skipped).

    The cache, ``k_out``/``v_out`` (uint8 or float8 elements): ``[rows, heads, dim]`` (layout
    'flat', any strides), ``[pages, block, heads, dim]`` ('nhd') or ``[pages, heads, block, dim]``
    ('hnd'); strided views place K/V-interleaved pages. ``format``: 'e4m3' or 'e5m2';
    ``arithmetic``: 'fp32' (PyTorch's numerics) or 'input_precision' (SGLang's).
    ``scale_kind``: 'per_tensor' (``k_scale``/``v_scale``: numbers or one-element float32
    tensors), 'per_head' (``k_head_scales``/``v_head_scales``: ``heads`` floats) or
    'per_token_head' (computed; written to ``k_scales_out``/``v_scales_out``: ``[rows, heads]``,
    or pages as the cache's layout; ``min_scale``). ``k_amax``/``v_amax``: optional zeroed
    float32 tensors raised to max |x|. ``pdl``: programmatic dependent launch (sm_90+).

    ``format='nvfp4'`` (``arithmetic='fp32'``, the exact mode, or ``'fast_math'``, FlashInfer's
    numerics bit for bit; per-tensor scales): ``k_scale``/``v_scale`` are the
    global scales g (``x ≈ e2m1 · sf · g``); the cache holds ``dim / 2`` bytes a row-head (two
    E2M1 codes a byte, the lower-indexed element in the low nibble) and
    ``k_block_scales_out``/``v_block_scales_out`` (uint8 or float8_e4m3fn) ``dim / 16`` E4M3
    block scales a row-head, with the cache's rows, heads and layout and strides of their own
    (FlashInfer's separate ``kv_cache_sf``, or views into vLLM's pages)."""
    if scale_kind != "per_tensor":
        k_scale = v_scale = None
    k_scale, k_value = _scale(k_scale)
    v_scale, v_value = _scale(v_scale)
    _LIB.write(k, v, k_out, v_out, loc, int(mult), int(offset), format, arithmetic, layout, scale_kind, k_scale, v_scale, k_value,
               v_value, k_head_scales, v_head_scales, k_scales_out, v_scales_out, float(min_scale), k_amax, v_amax,
               k_block_scales_out, v_block_scales_out, bool(pdl))


def read(k_cache, v_cache, k, v, *, loc=None, mult=1, offset=0, block_table=None, cu_seq_lens=None, seq_starts=None,
         page_size=0, format="e4m3", layout="flat", scale_kind="per_tensor", k_scale=1.0, v_scale=1.0, k_head_scales=None,
         v_head_scales=None, k_scales=None, v_scales=None, k_block_scales=None, v_block_scales=None, pdl=False):
    """Dequantizes cache rows into ``k`` and ``v`` (``[tokens, heads, dim]``, bf16/fp16/fp32, any
    strides): ``T(float(code) * scale)``. Rows by ``loc`` (row ``loc[t] * mult + offset``; negative:
    token t untouched) or by a page table: ``block_table`` ``[batch, max_pages]`` int32,
    ``cu_seq_lens`` ``[batch + 1]``, optional ``seq_starts`` ``[batch]``; ``page_size`` 0 is the
    cache's block. The cache and the scales as for :func:`write` (``k_scales``/``v_scales``: the
    per-(token, head) scales the write stored; ``format='nvfp4'``: ``k_block_scales``/
    ``v_block_scales`` the block scales it stored, ``k_scale``/``v_scale`` the global scales, and
    ``T((e2m1 · float(sf)) · g)``)."""
    if scale_kind != "per_tensor":
        k_scale = v_scale = None
    k_scale, k_value = _scale(k_scale)
    v_scale, v_value = _scale(v_scale)
    _LIB.read(k_cache, v_cache, k, v, loc, int(mult), int(offset), block_table, cu_seq_lens, seq_starts, int(page_size), format,
              layout, scale_kind, k_scale, v_scale, k_value, v_value, k_head_scales, v_head_scales, k_scales, v_scales, k_block_scales,
              v_block_scales, bool(pdl))


try:  # torch.ops.kvcast.*, where torch is importable
    from . import ops  # noqa: F401
except ImportError:
    ops = None
