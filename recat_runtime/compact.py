"""Compact weights on the device: codebook indices stay in memory, each layer's weight is rebuilt on the fly.

As GGUF runtimes keep block-quantised weights and dequantise per layer, a compact layer stores the
`.acqe` codebook parts — uint8 indices (1 byte per weight instead of 2 for fp16), the K-entry codebook
and the row scales — and materialises its weight just before its forward, freeing it right after.
The rebuilt weight is bit-for-bit the one the ordinary loader produces (the codec's reconstruction
formula in float32: one gather, one IEEE multiplication, then the decoded dtype and the compute dtype,
each rounded to nearest even), so outputs are identical; the price is the rebuild work in every forward.

Layers skipped by a ReCaT/DeepCache cached step are never rebuilt on that step, so the two compose.
"""
from __future__ import annotations

import numpy as np
import torch

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


class CompactWeight(torch.nn.Module):
    """The codebook parts of one weight, as buffers on the module's device."""

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, row_scales: torch.Tensor | None,
                 shape: tuple[int, ...], decoded_dtype: str, dtype: torch.dtype):
        super().__init__()
        # float32 parts are kept as their int32 bit patterns so that model.to(dtype)/.half() cannot
        # round them (that would change the rebuilt weights)
        self.register_buffer("codebook", codebook.to(torch.float32).view(torch.int32), persistent=False)
        self.register_buffer("indices", indices, persistent=False)
        self.register_buffer("row_scales", None if row_scales is None
                             else row_scales.to(torch.float32).view(torch.int32), persistent=False)
        self.shape = tuple(int(d) for d in shape)
        self.decoded = _TORCH[decoded_dtype]
        self.dtype = dtype

    def forward(self) -> torch.Tensor:
        # int32 indices: half the transient of int64 ones (uint8 would index as a boolean mask)
        idx = self.indices.int()
        codebook = self.codebook.view(torch.float32)
        if self.row_scales is None:
            # rounding commutes with a gather: round the K-entry table, then gather straight into the
            # compute dtype (no float32 copy of the whole weight)
            return codebook.to(self.decoded).to(self.dtype)[idx].view(self.shape)
        rows = self.row_scales.numel()
        w = codebook[idx].view(rows, -1) * self.row_scales.view(torch.float32).view(rows, 1)  # one binary32 product
        return w.to(self.decoded).to(self.dtype).view(self.shape)

    def stored_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.codebook, self.indices, self.row_scales)
                   if b is not None)


def _materialise(module, args):
    module.weight = module.acqe_weight()
    return None


def _release(module, args, output):
    module.weight = None
    return None


def make_compact(module: torch.nn.Module, parts, dtype: torch.dtype, device=None) -> CompactWeight:
    """Replaces ``module.weight`` (a Linear/Conv parameter) by codebook parts rebuilt at each forward.

    ``parts``: an `acqe_format.CodebookTensor` (uint8 indices, K ≤ 256) of the weight's shape.
    ``device``: where the parts live (default: the weight's device unless it is ``meta``).
    """
    if device is None and module.weight is not None and not module.weight.is_meta:
        device = module.weight.device
    cw = CompactWeight(torch.from_numpy(np.asarray(parts.codebook, np.float32)),
                       torch.from_numpy(np.ascontiguousarray(parts.indices)),
                       None if parts.row_scales is None else torch.from_numpy(np.asarray(parts.row_scales,
                                                                                         np.float32)),
                       parts.shape, parts.decoded_dtype, dtype)
    if tuple(module.weight.shape) != cw.shape:
        raise ValueError(f"compact weight shape {cw.shape} != module weight {tuple(module.weight.shape)}")
    if device is not None:
        cw.to(device)
    del module.weight                   # drop the Parameter; a plain attribute is set around forward
    module.weight = None
    module.acqe_weight = cw
    module.register_forward_pre_hook(_materialise)
    module.register_forward_hook(_release)
    return cw


def compact_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes held by compact weights, bytes the same weights take dense in their compute dtype)."""
    held = dense = 0
    for m in model.modules():
        cw = getattr(m, "acqe_weight", None)
        if isinstance(cw, CompactWeight):
            held += cw.stored_bytes()
            dense += int(np.prod(cw.shape)) * torch.empty((), dtype=cw.dtype).element_size()
    return held, dense


def eligible(parts) -> bool:
    """Worth keeping compact: uint8 indices (K ≤ 256) of a matrix or convolution kernel."""
    return parts is not None and parts.indices.dtype == np.uint8 and len(parts.shape) >= 2
