"""Read model checkpoints safely: Lightning/LDM `.ckpt`, `.safetensors`, diffusers pipeline folders.

`open_source(path)` returns a `Source`: an ordered table of tensor entries (name, shape, dtype) whose
arrays are loaded lazily as numpy (memory-mapped where the format allows), plus the non-tensor entries
of the checkpoint and any configs it carries. Every failure is a one-line `SourceError`.

torch is imported only here (and only for `.ckpt` / `.bin` inputs).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from acqe_format.errors import SourceError


@dataclass
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: str                      # numpy-style name; "bfloat16" for bf16
    load: Callable[[], np.ndarray]  # -> array (bf16 returned as float32 values, exact)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float16", "float32", "float64", "bfloat16")


@dataclass
class Source:
    path: str
    format: str                       # "ckpt" | "safetensors" | "diffusers"
    entries: list[Entry]
    extras: dict = field(default_factory=dict)        # JSON-able non-tensor entries (global_step, ...)
    configs: dict | None = None                       # diffusers configs carried by the input
    architecture: str | None = None                   # from the input itself (e.g. acqe_configs)
    naming_hint: str | None = None                    # "diffusers" for pipeline folders
    dropped: list[str] = field(default_factory=list)  # entries not carried over (optimizer state, ...)
    _closers: list = field(default_factory=list, repr=False)

    def close(self) -> None:
        for c in self._closers:
            try:
                c()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._closers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_source(path: str) -> Source:
    """Open a checkpoint by its form: a folder (diffusers), `.safetensors`, or a torch pickle (`.ckpt`, `.pt`, `.pth`, `.bin`)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(2, "No such file or directory", p)
    if os.path.isdir(p):
        from acqe_encoder.sources.diffusers_folder import open_diffusers_folder
        return open_diffusers_folder(p)
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise SourceError(f"{os.path.basename(p)}: file is {len(head)} bytes, too short to be a checkpoint")
    if p.endswith(".safetensors") or (not head.startswith(b"PK") and head[8:9] == b"{"):
        from acqe_encoder.sources.safetensors_file import open_safetensors
        return open_safetensors(p)
    from acqe_encoder.sources.ckpt import open_ckpt
    return open_ckpt(p)


def jsonable(value, depth: int = 0):
    """A JSON-safe rendering of a small non-tensor checkpoint entry (or None when it is not small/simple)."""
    if depth > 6:
        return None
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) or len(value) < 4096 else value[:4096]
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, dict):
        out = {}
        for k, v in list(value.items())[:256]:
            j = jsonable(v, depth + 1)
            out[str(getattr(k, "__qualname__", k))] = j
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value[:256]]
    # a 0-d / tiny tensor (e.g. best_model_score)
    if hasattr(value, "numel") and hasattr(value, "tolist"):
        try:
            if value.numel() <= 16:
                return jsonable(value.tolist(), depth + 1)
        except Exception:  # noqa: BLE001
            return None
    if hasattr(value, "_acqe_state"):   # an allowlisted stub object
        return {"class": type(value)._acqe_path, "state": jsonable(value._acqe_state, depth + 1)}
    return None


def read_json_file(path: str, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
        return json.loads(data)
    except (OSError, ValueError) as e:
        raise SourceError(f"{what}: cannot read {os.path.basename(path)} ({e})") from None
