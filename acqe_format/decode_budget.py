"""How many bytes a reader lets a file's tensors decode to, relative to the file's own size.

The container's limits bound what a file *stores*; a codec can legally expand far beyond it (codec 2
turns a 2 kB payload of a one-symbol table into 2^28 values). A reader therefore refuses to decode a
file whose tensors declare more decoded bytes than ``max(DEFAULT_FLOOR, DEFAULT_EXPANSION * file size)``,
unless the caller raises the limit (``AcqeReader(..., max_decoded_bytes=N)``, or for everything opened
inside a block, ``with decoded_limit(N): ...``). Real models decode to 2-16x their file size (float32 at
2-16 bits per value); 64x admits float32 files down to 0.5 bits per value.
"""
from __future__ import annotations

import contextlib
import contextvars

__all__ = ["DEFAULT_EXPANSION", "DEFAULT_FLOOR", "default_limit", "decoded_limit"]

DEFAULT_EXPANSION = 64          # decoded bytes per file byte allowed by default
DEFAULT_FLOOR = 256 << 20       # ... and never less than this (small files with a few zero tensors)

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("acqe_max_decoded_bytes", default=None)


def default_limit(file_size: int) -> int:
    """The limit a reader of a ``file_size``-byte file uses when its caller names none."""
    forced = _override.get()
    if forced is not None:
        return forced
    return max(DEFAULT_FLOOR, DEFAULT_EXPANSION * int(file_size))


@contextlib.contextmanager
def decoded_limit(max_decoded_bytes: int | None):
    """Readers opened inside the block (without an explicit limit) allow ``max_decoded_bytes`` (None: the
    default rule)."""
    if max_decoded_bytes is not None and max_decoded_bytes < 0:
        raise ValueError(f"max_decoded_bytes must be >= 0, got {max_decoded_bytes}")
    token = _override.set(max_decoded_bytes)
    try:
        yield
    finally:
        _override.reset(token)
