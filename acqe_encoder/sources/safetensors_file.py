""".safetensors read with numpy memory maps (bf16 included), validated in safetensors' own order."""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from acqe_encoder.sources import Entry, Source
from acqe_format.errors import SourceError

MAX_HEADER = 100_000_000
_DT = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
       "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
       "BOOL": ("bool", 1), "U16": ("uint16", 2), "U32": ("uint32", 4), "U64": ("uint64", 8)}


def read_header(path: str) -> tuple[dict, int, int]:
    """(header dict, data start, file size) after checking the layout rules."""
    base = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        b = f.read(8)
        if len(b) < 8:
            raise SourceError(f"{base}: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", b)
        if n > MAX_HEADER or 8 + n > size:
            raise SourceError(f"{base}: header of {n} bytes does not fit a {size}-byte file (truncated?)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SourceError(f"{base}: header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise SourceError(f"{base}: header is not a JSON object")
    start = 8 + n
    spans = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            dt, item = _DT[v["dtype"]]
            shape = tuple(int(d) for d in v["shape"])
            b0, b1 = (int(x) for x in v["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{base}: bad header entry for {k!r}") from None
        numel = 1
        for d in shape:
            if d < 0:
                raise SourceError(f"{base}: tensor {k!r} has a negative dimension")
            numel *= d
        if b1 - b0 != numel * item or b0 < 0:
            raise SourceError(f"{base}: tensor {k!r} spans {b1 - b0} bytes, its shape needs {numel * item}")
        if start + b1 > size:
            raise SourceError(f"{base}: tensor {k!r} ends at byte {start + b1}, file is {size} bytes (truncated)")
        spans.append((b0, b1))
    spans.sort()
    pos = 0
    for b0, b1 in spans:
        if b0 != pos:
            raise SourceError(f"{base}: tensor data has a gap or overlap at offset {b0}")
        pos = b1
    if start + pos != size:
        raise SourceError(f"{base}: data ends at {start + pos}, file is {size} bytes")
    return header, start, size


def open_safetensors(path: str) -> Source:
    header, start, size = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > 0 else np.zeros(0, np.uint8)
    entries = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        dt, item = _DT[v["dtype"]]
        shape = tuple(int(d) for d in v["shape"])
        b0, b1 = (int(x) for x in v["data_offsets"])

        def load(b0=b0, b1=b1, dt=dt, shape=shape):
            raw = mm[start + b0:start + b1]
            if dt == "bfloat16":
                return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
            if dt == "bool":
                return raw.view(np.bool_).reshape(shape)
            return raw.view(np.dtype(dt).newbyteorder("<")).reshape(shape)
        entries.append(Entry(k, shape, dt, load))
    if not entries:
        raise SourceError(f"{os.path.basename(path)}: no tensors in the file")
    meta = header.get("__metadata__") or {}
    extras = {"safetensors_metadata": {str(a): str(b)[:4096] for a, b in meta.items()}} if meta else {}
    configs = architecture = None
    if isinstance(meta, dict) and "acqe_configs" in meta:
        try:
            cfg = json.loads(meta["acqe_configs"])
            architecture = cfg.get("architecture")
            configs = {c: cfg[c] for c in ("unet", "vae", "text_encoder", "scheduler") if c in cfg}
        except (ValueError, AttributeError):
            pass
    return Source(path, "safetensors", entries, extras, configs, architecture)
