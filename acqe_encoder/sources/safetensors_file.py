""".safetensors read with numpy memory maps (bf16 included), validated in safetensors' own order.

1. at least 8 bytes; 2. header length <= MAX_SAFETENSORS_HEADER and inside the file; 3. UTF-8, strict
JSON (no NaN/Infinity, no duplicate keys, depth-limited); 4. an object; 5. `__metadata__`, if present,
maps strings to strings (the spec's str -> str); 6. every other entry is an object with `dtype` from the
table, `shape` a list of non-negative integers (not floats, not booleans) and `data_offsets` two
non-negative integers, begin <= end; 7. each entry's byte length equals its shape times its item size;
8. the data is contiguous from offset 0 and ends exactly at the end of the file.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from acqe_encoder.sources import Entry, Source, acqe_configs, strict_json
from acqe_encoder.sources import limits as L
from acqe_encoder.sources.files import open_regular, shown
from acqe_format.errors import SourceError

MAX_HEADER = L.MAX_SAFETENSORS_HEADER
_DT = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
       "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
       "BOOL": ("bool", 1), "U16": ("uint16", 2), "U32": ("uint32", 4), "U64": ("uint64", 8)}


def _is_uint(x) -> bool:
    return type(x) is int and x >= 0


def _parse(f, size: int, base: str) -> tuple[dict, int, list]:
    """(header, data start, [(name, dtype, shape, begin, end)]) after checking every rule above."""
    b = os.pread(f.fileno(), 8, 0)
    if len(b) < 8:
        raise SourceError(f"{base}: {size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", b)
    if n > MAX_HEADER or 8 + n > size:
        raise SourceError(f"{base}: header of {n:,} bytes does not fit a {size:,}-byte file (truncated?)")
    raw = os.pread(f.fileno(), n, 8)
    if len(raw) != n:
        raise SourceError(f"{base}: header of {n:,} bytes does not fit a {size:,}-byte file (truncated?)")
    header = strict_json.loads(raw, f"{base}: header", L.MAX_SAFETENSORS_HEADER_DEPTH)
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise SourceError(f"{base}: __metadata__ must map strings to strings (safetensors spec)")
    start = 8 + n
    tensors, spans = [], []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if not isinstance(v, dict):
            raise SourceError(f"{base}: header entry {shown(k)[:80]!r} is not an object")
        dt = _DT.get(v.get("dtype")) if isinstance(v.get("dtype"), str) else None
        shape, offs = v.get("shape"), v.get("data_offsets")
        if dt is None:
            raise SourceError(f"{base}: tensor {shown(k)[:80]!r} has dtype {str(v.get('dtype'))[:20]!r}, not one "
                              f"of {', '.join(_DT)}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise SourceError(f"{base}: tensor {shown(k)[:80]!r} has shape {str(shape)[:60]}: not a list of "
                              f"non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(x) for x in offs) and offs[0] <= offs[1]):
            raise SourceError(f"{base}: tensor {shown(k)[:80]!r} has data_offsets {str(offs)[:60]}: not two "
                              f"non-negative integers in order")
        b0, b1 = offs
        numel = 1
        for d in shape:
            numel *= d
        if b1 - b0 != numel * dt[1]:
            raise SourceError(f"{base}: tensor {shown(k)[:80]!r} spans {b1 - b0:,} bytes, its shape needs "
                              f"{numel * dt[1]:,}")
        if start + b1 > size:
            raise SourceError(f"{base}: tensor {shown(k)[:80]!r} ends at byte {start + b1:,}, file is {size:,} "
                              f"bytes (truncated)")
        tensors.append((k, dt[0], tuple(shape), b0, b1))
        spans.append((b0, b1))
    spans.sort()
    pos = 0
    for b0, b1 in spans:
        if b0 != pos:
            raise SourceError(f"{base}: tensor data has a gap or overlap at offset {b0:,}")
        pos = b1
    if start + pos != size:
        raise SourceError(f"{base}: data ends at {start + pos:,}, file is {size:,} bytes")
    return header, start, tensors


def read_header(path: str) -> tuple[dict, int, int]:
    """(header dict, data start, file size) after checking the layout rules."""
    f, rf = open_regular(path, shown(os.path.basename(path)))
    with f:
        header, start, _ = _parse(f, rf.size, shown(os.path.basename(path)))
    return header, start, rf.size


def open_safetensors(path: str, opened=None) -> Source:
    base = shown(os.path.basename(path))
    f, rf = opened if opened is not None else open_regular(path, base)
    try:
        header, start, tensors = _parse(f, rf.size, base)
        mm = np.memmap(f, dtype=np.uint8, mode="r") if rf.size > 0 else np.zeros(0, np.uint8)
    except BaseException:
        f.close()
        raise
    entries = []
    for k, dt, shape, b0, b1 in tensors:
        def load(b0=b0, b1=b1, dt=dt, shape=shape):
            raw = mm[start + b0:start + b1]
            if dt == "bfloat16":
                return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
            if dt == "bool":
                return (raw != 0).reshape(shape)
            return raw.view(np.dtype(dt).newbyteorder("<")).reshape(shape)
        entries.append(Entry(k, shape, dt, load))
    if not entries:
        f.close()
        raise SourceError(f"{base}: no tensors in the file")
    meta = header.get("__metadata__") or {}
    extras = {"safetensors_metadata": {str(a)[:256]: str(b)[:4096] for a, b in meta.items()}} if meta else {}
    configs = architecture = None
    if "acqe_configs" in meta:
        architecture, configs = acqe_configs(meta["acqe_configs"], f"{base}: __metadata__.acqe_configs")
    src = Source(path, "safetensors", entries, extras, configs or None, architecture, files=[rf])
    src._closers.append(f.close)
    return src
