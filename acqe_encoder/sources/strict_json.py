"""Strict JSON for what the readers take from an input (configs, acqe_configs, safetensors headers).

The rules are those of the `.acqe` METADATA and live there (`acqe_format.metadata.loads_strict`), so
anything accepted here can be written there without a late failure: UTF-8 without BOM; no NaN / Infinity / numbers that overflow
binary64; integers within [-2**63, 2**64 - 1]; no duplicate keys; no lone surrogates; a nesting depth
limit (checked on the parsed value, and Python's own recursion limit turned into a one-line error).
"""
from __future__ import annotations

from acqe_format.errors import MetadataError, SourceError
from acqe_format.metadata import loads_strict


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
        return loads_strict(text, max_depth=max_depth, what="the text", want=want)
    except MetadataError as e:
        raise SourceError(f"{what}: not strict JSON ({e})") from None
