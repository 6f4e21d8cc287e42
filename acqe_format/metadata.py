"""Strict, inert JSON for the METADATA section.

Accepted: one RFC 8259 JSON object, UTF-8 without BOM; no duplicate keys (at any depth); no NaN,
Infinity or numbers that overflow binary64; integers within [-2**63, 2**64 - 1]; strings without lone
surrogates; nesting depth <= MAX_JSON_DEPTH. Values are data only: nothing in them is ever templated,
evaluated or executed. The writer emits the canonical form: sorted keys, no whitespace, UTF-8.
"""
from __future__ import annotations

import json
import math

from acqe_format import constants as C
from acqe_format.errors import MetadataError


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise MetadataError(f"duplicate JSON key {k[:60]!r}")     # a hostile key may be megabytes long
        out[k] = v
    return out


def _constant(name):
    raise MetadataError(f"JSON constant {name} is not allowed")


def _float(s):
    v = float(s)
    if not math.isfinite(v):
        raise MetadataError(f"JSON number {s[:40]} overflows binary64")
    return v


def _int(s):
    if len(s) > 21:
        raise MetadataError(f"JSON integer {s[:40]}... is outside [-2**63, 2**64-1]")
    v = int(s)
    if not -(1 << 63) <= v < (1 << 64):
        raise MetadataError(f"JSON integer {s} is outside [-2**63, 2**64-1]")
    return v


_LEAVES = (float, int, bool, type(None))


def check_tree(obj, max_depth: int) -> None:
    """Nesting depth and strings of the parsed value, walked without recursion or copies.

    (The depth used to be measured on the text with a regex over string literals: a 15 MB string took
    1.7 GB of regex backtracking state on every open. The json module's own nesting guard raises
    RecursionError long before the stack is at risk, so measuring on the parsed value is safe.)"""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                raise MetadataError("JSON string contains a lone surrogate escape") from None
        elif isinstance(o, (dict, list)):
            if depth > max_depth:
                raise MetadataError(f"JSON nesting deeper than {max_depth}")
            if isinstance(o, dict):
                stack.extend((k, depth) for k in o.keys())
            # numbers, booleans and nulls have nothing to check: skipping them here, rather than pushing
            # each, keeps a profile's ~600k stored numbers from costing 60 ms on every open
            stack.extend((v, depth + 1) for v in (o.values() if isinstance(o, dict) else o)
                         if type(v) not in _LEAVES)


def loads_strict(text: str, max_depth: int = C.MAX_JSON_DEPTH, what: str = "metadata", want: type | None = None):
    """Parse strict JSON text; `MetadataError` with one line on any deviation (`want`: the required
    top-level type, checked before the tree).

    The one home of the strict-JSON rules: the METADATA section uses it, and so do the encoder's readers
    of configs and safetensors headers, so that whatever they accept can be written without a late
    failure. `what` names the text in the "is not valid JSON" message."""
    try:
        obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant,
                         parse_float=_float, parse_int=_int)
    except MetadataError:
        raise
    except RecursionError:
        raise MetadataError(f"JSON nesting deeper than {max_depth}") from None
    except ValueError as e:
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise MetadataError(f"{what} is not valid JSON: {msg}") from None
    if want is not None and not isinstance(obj, want):
        raise MetadataError(f"{what} must be a JSON {json_type(want())}, not a JSON {json_type(obj)}")
    check_tree(obj, max_depth)
    return obj


def json_type(v) -> str:
    """JSON's name for the type of a parsed value (for messages)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def parse_metadata(data: bytes) -> dict:
    """Parse METADATA bytes strictly; raise `MetadataError` with one line on any deviation."""
    if data[:3] == b"\xef\xbb\xbf":
        raise MetadataError("metadata starts with a UTF-8 BOM")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MetadataError(f"metadata is not UTF-8 (byte {e.start})") from None
    return loads_strict(text, want=dict)


def dump_metadata(obj: dict) -> bytes:
    """Canonical bytes for `obj` (sorted keys, compact, UTF-8); refuses anything a reader would refuse."""
    if not isinstance(obj, dict):
        raise TypeError("metadata must be a dict")
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o):
                raise ValueError("metadata object keys must be strings")
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    try:
        text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError) as e:
        raise ValueError(f"metadata cannot be written as strict JSON: {e}") from None
    data = text.encode("utf-8", "strict")
    parse_metadata(data)   # same rules both ways (depth, integer range, surrogates)
    return data
