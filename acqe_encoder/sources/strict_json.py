"""Strict JSON for what the readers take from an input (configs, acqe_configs, safetensors headers).

The rules are those of the `.acqe` METADATA (`acqe_format/metadata.py`), so anything accepted here can be
written there without a late failure: UTF-8 without BOM; no NaN / Infinity / numbers that overflow
binary64; integers within [-2**63, 2**64 - 1]; no duplicate keys; no lone surrogates; a nesting depth
limit (checked on the parsed value, and Python's own recursion limit turned into a one-line error).
"""
from __future__ import annotations

import json
import math

from acqe_format.errors import SourceError


class _Reject(ValueError):
    pass


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Reject(f"duplicate key {k[:60]!r}")
        out[k] = v
    return out


def _constant(name):
    raise _Reject(f"{name} is not JSON")


def _float(s):
    v = float(s)
    if not math.isfinite(v):
        raise _Reject(f"number {s[:40]} overflows binary64")
    return v


def _int(s):
    if len(s) > 21:
        raise _Reject(f"integer {s[:24]}... is outside [-2**63, 2**64-1]")
    v = int(s)
    if not -(1 << 63) <= v < (1 << 64):
        raise _Reject(f"integer {s} is outside [-2**63, 2**64-1]")
    return v


def depth_and_strings(obj, max_depth: int) -> None:
    """Walk a parsed value without recursion: nesting depth <= max_depth, strings encodable as UTF-8."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                raise _Reject("a string holds a lone surrogate escape") from None
        elif isinstance(o, (dict, list)):
            if d > max_depth:
                raise _Reject(f"nested deeper than {max_depth}")
            if isinstance(o, dict):
                stack.extend((k, d) for k in o)
                stack.extend((v, d + 1) for v in o.values())
            else:
                stack.extend((v, d + 1) for v in o)


def loads(data: bytes | str, what: str, max_depth: int, want=dict):
    """Parse strict JSON; `want` is the required top-level type. One-line `SourceError` on any deviation."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if data[:3] == b"\xef\xbb\xbf":
            raise SourceError(f"{what}: starts with a UTF-8 byte order mark (not strict JSON)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceError(f"{what}: not UTF-8 (byte {e.start})") from None
    else:
        text = data
    try:
        obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float,
                         parse_int=_int)
        if want is not None and not isinstance(obj, want):
            raise _Reject(f"the top level is a JSON {_json_type(obj)}, not an {_json_type(want())}")
        depth_and_strings(obj, max_depth)
    except RecursionError:
        raise SourceError(f"{what}: not strict JSON (nested too deeply to parse)") from None
    except ValueError as e:     # _Reject, json.JSONDecodeError
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SourceError(f"{what}: not strict JSON ({msg})") from None
    return obj


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number")
