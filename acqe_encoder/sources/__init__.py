"""Read model checkpoints safely: Lightning/LDM `.ckpt`, `.safetensors`, diffusers pipeline folders.

`open_source(path)` returns a `Source`: an ordered table of tensor entries (name, shape, dtype) whose
arrays are loaded lazily as numpy (memory-mapped where the format allows), plus the non-tensor entries
of the checkpoint, any configs it carries, and the regular files it read (`Source.files`, which
`Source.sha256()` hashes). Every failure on bad input is a one-line `SourceError`.

No reader imports torch: `.ckpt` / `.bin` pickles go through a restricted unpickler of their own
(`unpickle.py`). The bounds every reader enforces are in `limits.py`, their rationale in `README.md`.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from acqe_encoder.sources import limits as L
from acqe_encoder.sources.files import RegularFile, hash_files, open_regular, read_bounded, shown
from acqe_format.errors import SourceError

CONFIG_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")


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
    dropped_reasons: dict = field(default_factory=dict)  # a dropped entry (or folder) -> why
    tokenizers: dict = field(default_factory=dict)    # tokenizer component -> its tokenizer_config.json
    files: list[RegularFile] = field(default_factory=list)   # exactly the regular files read
    _closers: list = field(default_factory=list, repr=False)

    def sha256(self) -> str:
        """SHA-256 over the bytes of `files` (sorted by path): what `source.sha256` records."""
        return hash_files(self.files)

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
    """Open a checkpoint by its form: a folder (diffusers), `.safetensors`, or a torch zip pickle (`.ckpt`,
    `.pt`, `.pth`, `.bin`). Only regular files are read (symlinks to them are followed)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        from acqe_encoder.sources.diffusers_folder import open_diffusers_folder
        src = open_diffusers_folder(p)
    else:
        f, rf = open_regular(p, os.path.basename(p))
        try:
            head = f.read(16)
            f.seek(0)
        except BaseException:
            f.close()
            raise
        if len(head) < 8:
            f.close()
            raise SourceError(f"{shown(os.path.basename(p))}: file is {len(head)} bytes, too short to be a checkpoint")
        if p.endswith(".safetensors") or (not head.startswith(b"PK") and head[8:9] == b"{"):
            from acqe_encoder.sources.safetensors_file import open_safetensors
            src = open_safetensors(p, (f, rf))
        else:
            from acqe_encoder.sources.ckpt import open_ckpt
            src = open_ckpt(p, (f, rf))
    try:
        check_entries(src)
    except BaseException:
        src.close()
        raise
    return src


def check_entries(src: Source) -> None:
    """What every `.acqe` must satisfy, checked before any work: names, ranks, counts, some values."""
    base = shown(os.path.basename(os.path.normpath(src.path)))
    if not src.entries:
        raise SourceError(f"{base}: no tensors found (unknown layout)")
    if len(src.entries) > L.MAX_TENSORS:
        raise SourceError(f"{base}: {len(src.entries):,} tensors, above the {L.MAX_TENSORS:,} an .acqe file holds")
    seen: set[str] = set()
    total = 0
    for e in src.entries:
        try:
            nb = e.name.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError(f"{base}: tensor name {shown(e.name)[:80]!r} is not valid UTF-8") from None
        if not 1 <= len(nb) <= L.MAX_NAME_BYTES:
            raise SourceError(f"{base}: tensor name {shown(e.name)[:60]!r} has {len(nb)} UTF-8 bytes "
                              f"(an .acqe name has 1..{L.MAX_NAME_BYTES})")
        if e.name in seen:
            raise SourceError(f"{base}: two tensors are both named {shown(e.name)[:80]!r}")
        seen.add(e.name)
        if len(e.shape) > L.MAX_RANK:
            raise SourceError(f"{base}: tensor {shown(e.name)[:80]!r} has rank {len(e.shape)}, above the "
                              f"{L.MAX_RANK} an .acqe file holds")
        total += e.numel
    if total == 0:
        raise SourceError(f"{base}: every tensor is empty (no values to convert)")


# --------------------------------------------------------------------------------------------------
# non-tensor entries -> metadata

def _text(s: str, limit: int = 4096) -> str:
    s = s[:limit]
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def json_key(k) -> str:
    """A dict key as a metadata key: strings (valid UTF-8, cut at 256), numbers, stub class names."""
    if isinstance(k, str):
        return _text(k, 256)
    if isinstance(k, type) and hasattr(k, "_acqe_path"):    # an allowlisted stub class used as a key
        return k.__qualname__
    if isinstance(k, bool) or k is None or isinstance(k, float):
        return str(k)
    if isinstance(k, int):
        return str(k) if k.bit_length() <= 64 else f"<integer of {k.bit_length()} bits>"
    return f"<{type(k).__name__} key>"


def jsonable(value, depth: int = 0, budget: list | None = None):
    """A JSON-safe rendering of a small non-tensor checkpoint entry (None when it is not small/simple).

    At most 256 items per container, 6 levels, 4096 values in all (a pickle can share one list many
    times over: the walk is bounded, not the tree it describes), strings cut at 4096 characters and
    made valid UTF-8, integers outside int64/uint64 and non-finite floats written as strings.
    """
    from acqe_encoder.sources.unpickle import LazyTensor, Refused
    if budget is None:
        budget = [4096]
    budget[0] -= 1
    if depth > 6 or budget[0] < 0:
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        return v if -(1 << 63) <= v < (1 << 64) else f"<integer of {v.bit_length()} bits>"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, dict):
        out = {}
        for k, v in itertools.islice(value.items(), 256):
            out[json_key(k)] = jsonable(v, depth + 1, budget)
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1, budget) for v in itertools.islice(value, 256)]
    if isinstance(value, LazyTensor):         # a 0-d / tiny tensor (e.g. best_model_score)
        return jsonable(value.load().tolist(), depth + 1, budget) if value.numel <= 16 else None
    if isinstance(value, Refused):
        return f"<tensor not read: it {value.reason}>"
    if hasattr(value, "_acqe_state"):   # an allowlisted stub object
        return {"class": type(value)._acqe_path, "state": jsonable(value._acqe_state, depth + 1, budget)}
    return None


# --------------------------------------------------------------------------------------------------
# configs carried by an input

def _plain(value, what: str):
    """A pickled config (dict) as plain JSON data, or a one-line error: only dict (str keys), list,
    tuple, str, int, finite float, bool and None, at most 100k values and MAX_CONFIG_DEPTH levels."""
    budget = 100_000
    out_root: list = [None]
    stack = [(value, out_root, 0, 1)]
    while stack:
        v, parent, slot, d = stack.pop()
        budget -= 1
        if budget < 0 or d > L.MAX_CONFIG_DEPTH:
            raise SourceError(f"{what}: too large or too deeply nested to be a config")
        if v is None or isinstance(v, (bool, str)):
            o = v
        elif isinstance(v, int):
            if not -(1 << 63) <= v < (1 << 64):
                raise SourceError(f"{what}: an integer outside [-2**63, 2**64-1]")
            o = v
        elif isinstance(v, float):
            if not np.isfinite(v):
                raise SourceError(f"{what}: a non-finite number ({v}) is not strict JSON")
            o = v
        elif isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise SourceError(f"{what}: an object key is not a string")
            o = {}
            for k, x in v.items():
                o[k] = None
                stack.append((x, o, k, d + 1))
        elif isinstance(v, (list, tuple)):
            o = [None] * len(v)
            for i, x in enumerate(v):
                stack.append((x, o, i, d + 1))
        else:
            raise SourceError(f"{what}: holds a {type(v).__name__}, which is not JSON data")
        parent[slot] = o
    from acqe_format.errors import MetadataError
    from acqe_format.metadata import check_tree
    try:
        check_tree(out_root[0], L.MAX_CONFIG_DEPTH)
    except MetadataError as e:
        raise SourceError(f"{what}: not strict JSON ({e})") from None
    return out_root[0]


def acqe_configs(value, what: str) -> tuple[str | None, dict]:
    """(architecture, {component: config}) from an `acqe_configs` entry (a JSON string, or a dict)."""
    from acqe_encoder.sources import strict_json
    if isinstance(value, str):
        if len(value) > L.MAX_CONFIG_BYTES:
            raise SourceError(f"{what}: {len(value):,} characters, above the {L.MAX_CONFIG_BYTES:,} limit for a config")
        cfg = strict_json.loads(value, what, L.MAX_CONFIG_DEPTH + 1)
    elif isinstance(value, dict):
        cfg = _plain(value, what)
    else:
        raise SourceError(f"{what}: a {type(value).__name__}, not a JSON object")
    arch = cfg.get("architecture")
    if arch is not None and not (isinstance(arch, str) and 1 <= len(arch) <= 256 and arch.isprintable()):
        raise SourceError(f"{what}: 'architecture' must be a name (1..256 printable characters), "
                          f"not {json.dumps(arch)[:40] if not isinstance(arch, str) else repr(arch[:40])}")
    configs = {}
    for c in CONFIG_COMPONENTS:
        if c in cfg:
            if not isinstance(cfg[c], dict):
                raise SourceError(f"{what}: config {c!r} is a JSON {type(cfg[c]).__name__}, not an object")
            configs[c] = cfg[c]
    return arch, configs


def read_json_file(path: str, what: str) -> tuple[dict, RegularFile]:
    """A config file: a regular file of at most MAX_CONFIG_BYTES holding one strict JSON object."""
    from acqe_encoder.sources import strict_json
    data, rf = read_bounded(path, L.MAX_CONFIG_BYTES, f"{what}/{os.path.basename(path)}")
    return strict_json.loads(data, f"{what}/{os.path.basename(path)}", L.MAX_CONFIG_DEPTH), rf
