"""Compact weights: a layer weight kept as its `.acqe` codebook parts, which every torch op sees as the dense
weight it stands for.

As GGUF runtimes keep block-quantised weights and dequantise per layer, a compact weight holds the
`.acqe` codebook parts — uint8 codes (1 byte per weight instead of 2 for fp16), the K-entry codebook and
the row scales — and the layer's weight is rebuilt when an op needs it and freed after (no dense copy is
kept). The rebuild is the codec's reconstruction formula (`recat_runtime.rebuild`), so the rebuilt weight
is bit for bit the one the ordinary loader produces and outputs are identical.

`CompactTensor` is a tensor subclass (``__torch_dispatch__``) standing in for the weight *parameter*
itself, so the module stays an ordinary ``nn.Linear`` / ``nn.Conv2d``: ``weight.shape``, ``.dtype`` and
``.device`` are the dense weight's, every op sees the rebuilt values, and what must not be lost is kept:

- moving and casting (``.to``, ``.half()``, offloading hooks) move or re-type the parts, never densify;
- views (``reshape``, ``squeeze``, the LDM -> diffusers attention reshapes) stay compact;
- in-place ``+=`` / ``-=`` (PEFT merging a LoRA: ``weight.data += delta``) keep the codes and add a dense
  residual; when the residual becomes exactly zero again (unmerge) it is dropped;
- other in-place writes (``copy_``, ``zero_``, init functions) raise `CompactWeightError`: the codes
  cannot absorb arbitrary values, and a write into a temporary rebuild would be silently lost;
- ``torch.compile`` traces through it (``__tensor_flatten__``), and inductor fuses the rebuild.

Layers skipped by a ReCaT/DeepCache cached step are never rebuilt on that step, so the two compose.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np
import torch

from acqe_format import dtypes
from recat_runtime.errors import CompactWeightError
from recat_runtime.rebuild import rebuild

__all__ = ["CompactTensor", "CompactParts", "make_compact", "compact_bytes", "compact_layers", "eligible",
           "is_compact"]

aten = torch.ops.aten

@dataclasses.dataclass(eq=False)
class CompactParts:
    """The storage behind one compact weight, shared by the weight and its aliases (``.data``, ``detach``,
    views), so that an in-place update through any of them is seen by all, as with a dense tensor."""

    codes: torch.Tensor               # uint8 [numel], row-major
    codebook: torch.Tensor            # float32 [K]
    row_scales: torch.Tensor | None   # float32 [rows] or None
    shape: tuple[int, ...]            # the weight's own shape (rows = shape[0])
    decoded: torch.dtype              # the file's decoded dtype: the codec rounds to it first
    dtype: torch.dtype                # the compute dtype the weight rebuilds to
    delta: torch.Tensor | None = None  # dense residual (in `dtype`, `shape`) from in-place += / -=
    # the signed terms summed into `delta`, by content: a term taken out again exactly as it was added
    # (a LoRA unmerged after being merged) cancels; with none left the residual is dropped, bit for bit
    terms: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def dense(self) -> torch.Tensor:
        w = rebuild(self.codes, self.codebook, self.row_scales, self.shape, self.decoded, self.dtype)
        return w if self.delta is None else w + self.delta

    def to(self, device=None, dtype=None) -> CompactParts:
        move = (lambda t: t if t is None else t.to(device)) if device is not None else (lambda t: t)
        dtype = dtype or self.dtype
        if self.delta is None:
            delta, terms = None, collections.Counter()
        else:   # a re-typed residual is a new value: its terms no longer cancel exactly
            delta = move(self.delta).to(dtype)
            terms = self.terms.copy() if dtype == self.dtype else collections.Counter({("+", _digest(delta)): 1})
        return CompactParts(move(self.codes), move(self.codebook), move(self.row_scales), self.shape,
                            self.decoded, dtype, delta, terms)

    def accumulate(self, step: torch.Tensor, sign: int) -> None:
        """``delta += sign * step``, cancelling an earlier term of the opposite sign with the same bits."""
        key = _digest(step)
        mine, other = ("+", "-") if sign > 0 else ("-", "+")
        if self.terms[(other, key)]:
            self.terms[(other, key)] -= 1
            self.terms += collections.Counter()          # drop zero counts
        else:
            self.terms[(mine, key)] += 1
        if not self.terms:
            self.delta = None
            return
        signed = step if sign > 0 else -step
        self.delta = signed.clone() if self.delta is None else self.delta + signed

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.codebook, self.row_scales, self.delta)
                   if t is not None)


class CompactTensor(torch.Tensor):
    """A weight stored as codebook parts that behaves, to every torch op, as the dense weight it rebuilds to."""

    _parts: CompactParts

    @staticmethod
    def __new__(cls, parts, shape=None, requires_grad: bool = False):
        if isinstance(parts, CompactTensor):
            # `type(param)(value, requires_grad=...)`, as accelerate re-wraps a moved parameter
            return torch.nn.Parameter(parts, requires_grad=requires_grad)
        shape = tuple(parts.shape if shape is None else shape)
        t = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=parts.dtype, device=parts.codes.device,
                                                requires_grad=False)
        t._parts = parts
        return t

    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def from_codebook(cls, ct, dtype: torch.dtype, device=None) -> CompactTensor:
        """From an `acqe_format.CodebookTensor` (uint8 codes), rebuilding to ``dtype``, parts on ``device``."""
        to = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        scales = None if ct.row_scales is None else to(torch.from_numpy(np.asarray(ct.row_scales, np.float32)))
        parts = CompactParts(to(torch.from_numpy(np.ascontiguousarray(ct.indices).reshape(-1))),
                             to(torch.from_numpy(np.asarray(ct.codebook, np.float32))), scales,
                             tuple(int(d) for d in ct.shape), getattr(torch, dtypes.canonical(ct.decoded_dtype)),
                             dtype)
        return cls(parts)

    # the parts as attributes, named for `__tensor_flatten__` (torch.compile rebuilds the subclass from them)
    @property
    def codes(self) -> torch.Tensor:
        return self._parts.codes

    @property
    def codebook(self) -> torch.Tensor:
        return self._parts.codebook

    @property
    def row_scales(self) -> torch.Tensor | None:
        return self._parts.row_scales

    @property
    def delta(self) -> torch.Tensor | None:
        return self._parts.delta

    # ``weight.data`` aliases the parts (``weight.data += x`` reaches the weight); ``weight.data = other``
    # adopts another compact weight's parts (PEFT's safe merge assigns a merged clone). Tensor's own
    # ``.data`` setter would swap the storage and keep these Python-side parts: a silently lost merge.
    @property
    def data(self) -> CompactTensor:
        return CompactTensor(self._parts, self.shape)

    @data.setter
    def data(self, value) -> None:
        if not isinstance(value, CompactTensor) or tuple(value.shape) != tuple(self.shape) \
                or value.dtype != self.dtype or value.device != self.device:
            raise CompactWeightError(f"cannot set .data of a compact weight of shape {tuple(self.shape)} to a "
                                     f"{type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}: only "
                                     "another compact weight of the same shape, dtype and device fits")
        self._parts = value._parts

    def dequantize(self) -> torch.Tensor:
        """The dense weight (a new tensor; the compact parts are unchanged)."""
        return self._parts.dense().view(self.shape)

    def stored_bytes(self) -> int:
        return self._parts.nbytes()

    def __repr__(self, *, tensor_contents=None):
        p = self._parts
        extra = ", with a dense residual" if p.delta is not None else ""
        return (f"CompactTensor(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device}, "
                f"{p.codebook.numel()} codes{extra})")

    def __tensor_flatten__(self):
        names = ["codes", "codebook"] + [n for n in ("row_scales", "delta") if getattr(self._parts, n) is not None]
        return names, (self._parts.shape, self._parts.decoded, self._parts.dtype)

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        shape, decoded, dtype = meta
        delta = inner.get("delta")
        parts = CompactParts(inner["codes"], inner["codebook"], inner.get("row_scales"), shape, decoded, dtype, delta,
                             collections.Counter() if delta is None else collections.Counter({("+", "traced"): 1}))
        return CompactTensor(parts, tuple(outer_size))

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            out = handler(func, args, kwargs)
            if out is not NotImplemented:
                return out
        if func._schema.is_mutable:
            _refuse_writes(func, args, kwargs)
        # every other op (t before a matmul, convolution, cat, ...) runs on the rebuilt weight; this runs once
        # per layer and forward, so it avoids pytree's generic walk
        return func(*(_dense(a) for a in args), **({k: _dense(v) for k, v in kwargs.items()} if kwargs else {}))


def _dense(x):
    if isinstance(x, CompactTensor):
        return x.dequantize()
    if isinstance(x, (list, tuple)):
        return type(x)(_dense(i) for i in x)
    return x


def _refuse_writes(func, args, kwargs) -> None:
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            t = kwargs.get(a.name, args[i] if i < len(args) else None)
            if isinstance(t, CompactTensor):
                raise CompactWeightError(
                    f"cannot write into a compact weight of shape {tuple(t.shape)} with "
                    f"{func.overloadpacket.__name__}: its codes cannot hold arbitrary values; dequantize the "
                    "model to change its weights")


def _alias(func, args, kwargs):
    return CompactTensor(args[0]._parts, args[0].shape)


def _view(func, args, kwargs):
    """A view that keeps every element in row-major order (reshape, squeeze, a full slice, selecting a size-1
    dim) is the same compact weight under another shape; any other view is taken of the rebuilt weight."""
    t = args[0]
    probe = torch.empty(t.shape, dtype=t.dtype, device="meta")
    out = func(probe, *args[1:], **kwargs)
    if isinstance(out, torch.Tensor) and out.numel() == t.numel() and out.is_contiguous() \
            and out.storage_offset() == 0:
        return CompactTensor(t._parts, tuple(out.shape))
    return NotImplemented


def _to_copy(func, args, kwargs):
    t = args[0]
    dtype = kwargs.get("dtype")
    if dtype is not None and not dtype.is_floating_point:
        return NotImplemented                            # an integer copy of the values: take it dense
    return CompactTensor(t._parts.to(kwargs.get("device"), dtype), t.shape)


def _clone(func, args, kwargs):
    t = args[0]
    p = t._parts
    return CompactTensor(dataclasses.replace(p, delta=None if p.delta is None else p.delta.clone(),
                                             terms=p.terms.copy()), t.shape)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy()).hexdigest()


def _accumulate(sign: int):
    """``weight += x`` / ``weight -= x``: the codes stay, ``x`` joins the dense residual (as PEFT merges a
    LoRA into ``weight.data``); a residual that is exactly zero again (unmerged) is dropped."""

    def handler(func, args, kwargs):
        t, other = args[0], args[1]
        if isinstance(other, CompactTensor) or not isinstance(other, torch.Tensor):
            return NotImplemented
        p = t._parts
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        step = torch.broadcast_to(other, t.shape).reshape(p.shape).to(device=p.codes.device, dtype=p.dtype)
        if alpha != 1:
            step = step * alpha
        p.accumulate(step, sign)
        return t

    return handler


def _copy_from_same(func, args, kwargs):
    dst, src = args[0], args[1]
    if isinstance(src, CompactTensor) and src._parts is dst._parts:
        return dst                                        # writing a weight onto itself
    return NotImplemented


_HANDLERS = {
    aten.detach.default: _alias,
    aten.alias.default: _alias,
    aten._to_copy.default: _to_copy,
    aten.clone.default: _clone,
    aten.view.default: _view,
    aten._unsafe_view.default: _view,
    aten.reshape.default: _view,
    aten.squeeze.default: _view,
    aten.squeeze.dim: _view,
    aten.squeeze.dims: _view,
    aten.unsqueeze.default: _view,
    aten.select.int: _view,
    aten.slice.Tensor: _view,
    aten.add_.Tensor: _accumulate(+1),
    aten.sub_.Tensor: _accumulate(-1),
    aten.copy_.default: _copy_from_same,
}


def is_compact(t) -> bool:
    return isinstance(t, CompactTensor)


def make_compact(module: torch.nn.Module, parts, dtype: torch.dtype, device=None) -> CompactTensor:
    """Makes ``module.weight`` (a Linear/Conv weight) the compact weight of ``parts``.

    ``parts``: an `acqe_format.CodebookTensor` (uint8 indices, K ≤ 256) of the weight's shape.
    ``device``: where the parts live (default: the weight's device unless it is ``meta``).
    """
    if device is None and module.weight is not None and not module.weight.is_meta:
        device = module.weight.device
    ct = CompactTensor.from_codebook(parts, dtype, device)
    if tuple(module.weight.shape) != tuple(ct.shape):
        raise ValueError(f"compact weight shape {tuple(ct.shape)} != module weight {tuple(module.weight.shape)}")
    module.weight = torch.nn.Parameter(ct, requires_grad=False)
    return ct


def compact_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every module whose own ``weight`` is compact."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m._parameters.get("weight"), CompactTensor)]


def compact_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes held by compact weights, bytes the same weights take dense in their compute dtype)."""
    held = dense = 0
    for p in model.parameters():
        if isinstance(p, CompactTensor):
            held += p.stored_bytes()
            dense += p.numel() * p.element_size()
    return held, dense


def eligible(parts) -> bool:
    """Worth keeping compact: uint8 indices (K ≤ 256) of a matrix or convolution kernel."""
    return parts is not None and parts.indices.dtype == np.uint8 and len(parts.shape) >= 2
