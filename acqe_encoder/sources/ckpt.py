"""Lightning / CompVis `.ckpt` (torch zip pickle) read with `torch.load(weights_only=True, mmap=True)`.

Real SD checkpoints pickle a few inert objects besides tensors: pytorch_lightning's `ModelCheckpoint`
callback (as a dict key, or an instance holding its state) and sometimes numpy scalars. These are
allowed by an explicit list of stub classes that only record their state. Anything else a pickle asks
for is refused (`SourceError`); there is never a fall-back to unrestricted unpickling.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile

import numpy as np

from acqe_encoder.sources import Entry, Source, jsonable
from acqe_format.errors import SourceError

# Full pickle paths of inert classes a training checkpoint may reference (Lightning callbacks).
ALLOWED_STUB_PATHS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "lightning.pytorch.callbacks.lr_monitor.LearningRateMonitor",
)


def _make_stub(path: str) -> type:
    module, _, qual = path.rpartition(".")

    def __setstate__(self, state):
        self._acqe_state = state

    def __init__(self, *args, **kwargs):  # never called by the unpickler (NEWOBJ uses __new__)
        self._acqe_state = {"args": args, "kwargs": kwargs}

    cls = type(qual, (), {"__setstate__": __setstate__, "__init__": __init__, "_acqe_path": path,
                          "__module__": module, "__doc__": f"Inert stand-in for {path}: records its state only."})
    cls.__qualname__ = qual
    return cls


STUBS = {p: _make_stub(p) for p in ALLOWED_STUB_PATHS}


def _safe_globals():
    import torch  # noqa: F401
    allowed = [(cls, path) for path, cls in STUBS.items()]
    # numpy scalars / dtypes as stored by some trainers (inert value constructors)
    try:
        from numpy.core.multiarray import scalar as np_scalar  # type: ignore
    except Exception:  # noqa: BLE001
        np_scalar = None
    if np_scalar is not None:
        allowed += [(np_scalar, "numpy.core.multiarray.scalar"), (np_scalar, "numpy._core.multiarray.scalar")]
    allowed += [(np.dtype, "numpy.dtype")]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
        t = getattr(np.dtypes, name, None)
        if t is not None:
            allowed.append((t, f"numpy.dtypes.{name}"))
    return allowed


_GLOBAL_RE = re.compile(r"(?:Unsupported global: GLOBAL|unrecognized function|global)\s+([\w.]+)")


def _load(path: str):
    import torch
    base = os.path.basename(path)
    with open(path, "rb") as f:
        lead = f.read(4)
    if lead.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise SourceError(f"{base}: torch zip checkpoint without its central directory (truncated or corrupt)")
    if not zipfile.is_zipfile(path):
        # legacy (pre-1.6) torch pickles cannot be memory-mapped; weights_only still applies
        mmap = False
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic[:1] != b"\x80":
            raise SourceError(f"{base}: neither a torch zip checkpoint nor a pickle (starts with {magic!r})")
    else:
        mmap = True
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg) or _GLOBAL_RE.search(msg)
        what = m.group(1) if m else msg.strip().splitlines()[0][:160]
        raise SourceError(f"{base}: the pickle asks for {what}, which is not on the allowlist of inert "
                          f"classes; refusing to unpickle it") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile) as e:
        line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SourceError(f"{base}: cannot read checkpoint (truncated or corrupt?): {line}") from None


def _np_view(t) -> np.ndarray:
    """A torch CPU tensor -> numpy (no copy where possible); bf16 -> float32 values (exact)."""
    import torch
    t = t.detach()
    if t.dtype == torch.bfloat16:
        u = t.contiguous().view(torch.int16).numpy().view(np.uint16)
        return (u.astype(np.uint32) << 16).view(np.float32)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


_DTYPES = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16",
           "torch.float64": "float64", "torch.int64": "int64", "torch.int32": "int32", "torch.int16": "int16",
           "torch.int8": "int8", "torch.uint8": "uint8", "torch.bool": "bool"}


def tensor_entries(sd: dict, prefix: str = "") -> tuple[list[Entry], dict]:
    """(tensor entries, JSON-able scalars) of a flat dict that may mix tensors and plain values."""
    import torch
    entries, scalars = [], {}
    for k, v in sd.items():
        name = prefix + str(k)
        if isinstance(v, torch.Tensor):
            dt = _DTYPES.get(str(v.dtype))
            if dt is None:
                raise SourceError(f"tensor {name!r} has unsupported dtype {v.dtype}")
            if v.is_sparse or v.layout != torch.strided:
                raise SourceError(f"tensor {name!r} is not a dense tensor")
            entries.append(Entry(name, tuple(int(d) for d in v.shape), dt, (lambda t=v: _np_view(t))))
        else:
            scalars[name] = jsonable(v)
    return entries, scalars


def open_ckpt(path: str) -> Source:
    import torch
    base = os.path.basename(path)
    obj = _load(path)
    extras: dict = {}
    dropped: list[str] = []
    configs = architecture = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
        for k, v in obj.items():
            if k == "state_dict":
                continue
            if k == "acqe_configs":
                try:
                    cfg = json.loads(v) if isinstance(v, str) else v
                    if not isinstance(cfg, dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:
                    raise SourceError(f"{base}: acqe_configs is not a JSON object ({e})") from None
                architecture = cfg.get("architecture")
                configs = {c: cfg[c] for c in ("unet", "vae", "text_encoder", "scheduler") if c in cfg}
                continue
            if k in ("optimizer_states", "lr_schedulers", "loops"):
                dropped.append(k)
                continue
            if isinstance(v, torch.Tensor):
                extras[k] = jsonable(v) if v.numel() <= 16 else f"<tensor {list(v.shape)} dropped>"
                continue
            j = jsonable(v)
            extras[k] = j
    elif isinstance(obj, dict):
        sd = obj
    else:
        raise SourceError(f"{base}: the checkpoint holds a {type(obj).__name__}, not a state dict")
    entries, scalars = tensor_entries(sd)
    extras.update({f"state_dict.{k}": v for k, v in scalars.items()})
    if not entries:
        raise SourceError(f"{base}: no tensors found in the checkpoint (unknown layout)")
    return Source(path, "ckpt", entries, extras, configs, architecture, None, dropped)
