"""Rebuilding a compact weight: the codec's formula, as plain torch ops, one Triton kernel, or compiled.

The `.acqe` codebook codecs define a weight as ``value[r, j] = f32(codebook[code[r, j]] * row_scale[r])``
(one IEEE binary32 product; no scales: the codebook entry itself), rounded to nearest even to the decoded
dtype, then cast to the compute dtype. Every backend here computes exactly that, bit for bit:

- ``torch``: a gather, one multiplication and the casts (three or four kernels; the reference);
- ``triton``: one kernel that reads each uint8 code once and writes the rebuilt weight once (CUDA; on
  the CPU it runs under Triton's interpreter, ``TRITON_INTERPRET=1``, which is how the tests check it);
- ``compile``: the torch formula through ``torch.compile`` (inductor fuses it into one kernel).

``auto`` (the default) uses ``triton`` for CUDA tensors when Triton is importable, else ``torch``; inside
a ``torch.compile`` graph it always traces the torch formula, which inductor fuses by itself.
The backend can be chosen with :func:`set_backend` or the ``ACQE_REBUILD`` environment variable.
"""
from __future__ import annotations

import functools
import os

import torch

from recat_runtime.options import REBUILD_BACKENDS

__all__ = ["rebuild", "rebuild_torch", "rebuild_triton", "rebuild_compiled", "set_backend", "get_backend",
           "triton_available"]

_backend = os.environ.get("ACQE_REBUILD", "auto")


def set_backend(name: str) -> None:
    """Choose how compact weights are rebuilt: one of `recat_runtime.options.REBUILD_BACKENDS`."""
    global _backend
    if name not in REBUILD_BACKENDS:
        raise ValueError(f"unknown rebuild backend {name!r}; choose from {', '.join(REBUILD_BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


def rebuild_torch(codes: torch.Tensor, codebook: torch.Tensor, row_scales: torch.Tensor | None, shape,
                  decoded: torch.dtype, dtype: torch.dtype) -> torch.Tensor:
    """The reference: gather, one float32 product, round to ``decoded``, cast to ``dtype``."""
    idx = codes.int()          # int32 indices: half the transient of int64 (uint8 would index as a mask)
    if row_scales is None:
        # rounding commutes with a gather: round the K-entry table, then gather straight into `dtype`
        return codebook.to(decoded).to(dtype)[idx].view(shape)
    rows = row_scales.numel()
    w = codebook[idx].view(rows, -1) * row_scales.view(rows, 1)
    return w.to(decoded).to(dtype).view(shape)


@functools.lru_cache(maxsize=1)
def _compiled_torch():
    # inductor drops a float32 -> float16 -> float32 round trip (the decoded dtype's rounding) unless told
    # to keep the casts it is given
    return torch.compile(rebuild_torch, dynamic=True, options={"emulate_precision_casts": True})


def rebuild_compiled(codes, codebook, row_scales, shape, decoded, dtype) -> torch.Tensor:
    """`rebuild_torch` through ``torch.compile`` (one fused kernel per weight layout)."""
    return _compiled_torch()(codes, codebook, row_scales, tuple(shape), decoded, dtype)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Triton imports and can run here: on CUDA, or on the CPU under ``TRITON_INTERPRET=1``."""
    try:
        import recat_runtime.triton_kernels  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: not available
        return False
    return True


_DECODED_CODE = {torch.float32: 0, torch.float64: 0, torch.float16: 1, torch.bfloat16: 2}
_BLOCK = 1024


def rebuild_triton(codes, codebook, row_scales, shape, decoded, dtype) -> torch.Tensor:
    """One pass: each code read once, each weight written once (float64 decoding holds every float32
    product exactly, so it needs no rounding step)."""
    n = codes.numel()
    out = torch.empty(tuple(shape), dtype=dtype, device=codes.device)
    if n == 0:
        return out
    rows = 1 if row_scales is None else row_scales.numel()
    grid = ((n + _BLOCK - 1) // _BLOCK,)
    from recat_runtime.triton_kernels import rebuild_kernel

    target = out.view(torch.int16) if dtype == torch.bfloat16 else out     # bf16: the kernel stores the bits
    rebuild_kernel[grid](codes, codebook, codebook if row_scales is None else row_scales, target, n, n // rows,
                    HAS_SCALES=row_scales is not None, DECODED=_DECODED_CODE[decoded],
                    OUT_BF16=dtype == torch.bfloat16, BLOCK=_BLOCK)
    return out


def rebuild(codes, codebook, row_scales, shape, decoded, dtype) -> torch.Tensor:
    """The dense weight, by the chosen backend (see the module docstring)."""
    if torch.compiler.is_compiling():
        return rebuild_torch(codes, codebook, row_scales, shape, decoded, dtype)
    backend = _backend
    if backend == "auto":
        backend = "triton" if codes.is_cuda and triton_available() else "torch"
    if backend == "triton":
        return rebuild_triton(codes, codebook, row_scales, shape, decoded, dtype)
    if backend == "compile":
        return rebuild_compiled(codes, codebook, row_scales, shape, decoded, dtype)
    return rebuild_torch(codes, codebook, row_scales, shape, decoded, dtype)
