"""kvcast's operations as torch custom ops (``torch.ops.kvcast.*``), for torch.compile and CUDA
graphs: each declares the tensors it writes (``mutates_args``) and has a fake implementation
that checks shapes and returns nothing, so ``torch.compile(fullgraph=True)`` traces a model that
calls them. Imported by ``kvcast`` when torch is importable.

    torch.ops.kvcast.downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult=1, offset=0)
    torch.ops.kvcast.read(k_cache, v_cache, k, v, loc=None, ...)        # kvcast.read's options
    torch.ops.kvcast.write(k, v, k_out, v_out, k_scales_out, v_scales_out, k_amax, v_amax,
                           k_block_scales_out, v_block_scales_out, loc=None, ...)
    kvcast.ops.write(k, v, k_out, v_out, loc=..., k_scale=..., ...)    # the same op, with keywords

write's ten tensors come positionally (None where unused): torch's in-place bookkeeping finds
mutated arguments by position."""
from __future__ import annotations

from typing import Optional

import torch

import kvcast

Tensor = torch.Tensor


@torch.library.custom_op("kvcast::downcast_fp8", mutates_args=("k_out", "v_out"), device_types="cuda")
def downcast_fp8(k: Tensor, v: Tensor, k_out: Tensor, v_out: Tensor, k_scale: Tensor, v_scale: Tensor, loc: Tensor,
                 mult: int = 1, offset: int = 0) -> None:
    kvcast.downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult, offset)


@downcast_fp8.register_fake
def _(k, v, k_out, v_out, k_scale, v_scale, loc, mult=1, offset=0):
    _check_tokens(k, v, loc)
    return None


# The op's outputs are positional and without defaults: torch's in-place bookkeeping finds a
# mutated argument by its position, and an optional one left at its default is dropped from
# the arguments it sees. write() below takes them as keywords.
@torch.library.custom_op("kvcast::write", mutates_args=("k_out", "v_out", "k_scales_out", "v_scales_out", "k_amax", "v_amax",
                                                       "k_block_scales_out", "v_block_scales_out"), device_types="cuda")
def _write(k: Optional[Tensor], v: Optional[Tensor], k_out: Optional[Tensor], v_out: Optional[Tensor],
           k_scales_out: Optional[Tensor], v_scales_out: Optional[Tensor], k_amax: Optional[Tensor], v_amax: Optional[Tensor],
           k_block_scales_out: Optional[Tensor], v_block_scales_out: Optional[Tensor], loc: Optional[Tensor] = None, mult: int = 1, offset: int = 0, format: str = "e4m3", arithmetic: str = "fp32",
           layout: str = "flat", scale_kind: str = "per_tensor", k_scale: Optional[Tensor] = None, v_scale: Optional[Tensor] = None,
           k_scale_value: float = 1.0, v_scale_value: float = 1.0, k_head_scales: Optional[Tensor] = None,
           v_head_scales: Optional[Tensor] = None, min_scale: float = 1e-6, pdl: bool = False) -> None:
    kvcast.write(k, v, k_out, v_out, loc=loc, mult=mult, offset=offset, format=format, arithmetic=arithmetic, layout=layout,
                 scale_kind=scale_kind, k_scale=k_scale if k_scale is not None else k_scale_value,
                 v_scale=v_scale if v_scale is not None else v_scale_value, k_head_scales=k_head_scales,
                 v_head_scales=v_head_scales, k_scales_out=k_scales_out, v_scales_out=v_scales_out, min_scale=min_scale,
                 k_amax=k_amax, v_amax=v_amax, k_block_scales_out=k_block_scales_out, v_block_scales_out=v_block_scales_out,
                 pdl=pdl)


@_write.register_fake
def _(k, v, k_out, v_out, k_scales_out, v_scales_out, k_amax, v_amax, k_block_scales_out, v_block_scales_out, loc=None, mult=1, offset=0, format="e4m3",
      arithmetic="fp32", layout="flat", scale_kind="per_tensor", k_scale=None, v_scale=None, k_scale_value=1.0,
      v_scale_value=1.0, k_head_scales=None, v_head_scales=None, min_scale=1e-6, pdl=False):
    _check_tokens(k, v, loc)
    return None


def write(k, v, k_out, v_out, *, loc=None, mult=1, offset=0, format="e4m3", arithmetic="fp32", layout="flat",
          scale_kind="per_tensor", k_scale=None, v_scale=None, k_head_scales=None, v_head_scales=None, k_scales_out=None,
          v_scales_out=None, min_scale=1e-6, k_amax=None, v_amax=None, k_block_scales_out=None, v_block_scales_out=None,
          pdl=False):
    """``torch.ops.kvcast.write`` with :func:`kvcast.write`'s keywords (``k_scale``/``v_scale``:
    one-element float32 tensors, read when the kernel runs, or numbers, fixed when traced)."""
    k_tensor, k_value = (k_scale, 1.0) if isinstance(k_scale, Tensor) or k_scale is None else (None, float(k_scale))
    v_tensor, v_value = (v_scale, 1.0) if isinstance(v_scale, Tensor) or v_scale is None else (None, float(v_scale))
    torch.ops.kvcast.write(k, v, k_out, v_out, k_scales_out, v_scales_out, k_amax, v_amax, k_block_scales_out, v_block_scales_out,
                           loc, mult, offset, format, arithmetic,
                           layout, scale_kind, k_tensor, v_tensor, k_value, v_value, k_head_scales, v_head_scales, min_scale, pdl)


@torch.library.custom_op("kvcast::read", mutates_args=("k", "v"), device_types="cuda")
def read(k_cache: Optional[Tensor], v_cache: Optional[Tensor], k: Optional[Tensor], v: Optional[Tensor],
         loc: Optional[Tensor] = None, mult: int = 1, offset: int = 0, block_table: Optional[Tensor] = None,
         cu_seq_lens: Optional[Tensor] = None, seq_starts: Optional[Tensor] = None, page_size: int = 0, format: str = "e4m3",
         layout: str = "flat", scale_kind: str = "per_tensor", k_scale: Optional[Tensor] = None, v_scale: Optional[Tensor] = None,
         k_scale_value: float = 1.0, v_scale_value: float = 1.0, k_head_scales: Optional[Tensor] = None,
         v_head_scales: Optional[Tensor] = None, k_scales: Optional[Tensor] = None, v_scales: Optional[Tensor] = None,
         k_block_scales: Optional[Tensor] = None, v_block_scales: Optional[Tensor] = None, pdl: bool = False) -> None:
    kvcast.read(k_cache, v_cache, k, v, loc=loc, mult=mult, offset=offset, block_table=block_table, cu_seq_lens=cu_seq_lens,
                seq_starts=seq_starts, page_size=page_size, format=format, layout=layout, scale_kind=scale_kind,
                k_scale=k_scale if k_scale is not None else k_scale_value,
                v_scale=v_scale if v_scale is not None else v_scale_value, k_head_scales=k_head_scales,
                v_head_scales=v_head_scales, k_scales=k_scales, v_scales=v_scales, k_block_scales=k_block_scales,
                v_block_scales=v_block_scales, pdl=pdl)


@read.register_fake
def _(k_cache, v_cache, k, v, loc=None, *args, **kwargs):
    _check_tokens(k, v, loc)
    return None


def _check_tokens(a, b, loc):
    """What a fake implementation can check without data: the tensors' ranks and token counts."""
    tensors = [t for t in (a, b) if t is not None]
    if not tensors:
        raise ValueError("kvcast: give at least one of the two tensors")
    for t in tensors:
        if t.dim() != 3:
            raise ValueError(f"kvcast: expected [num_tokens, heads, head_dim], got {tuple(t.shape)}")
    if len(tensors) == 2 and tensors[0].shape != tensors[1].shape:
        raise ValueError("kvcast: the two tensors must have the same shape")
    if loc is not None and loc.shape != (tensors[0].shape[0],):
        raise ValueError(f"kvcast: loc has {tuple(loc.shape)} slots for {tensors[0].shape[0]} tokens")
