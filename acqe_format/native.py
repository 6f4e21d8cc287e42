"""libacqe, the C decoder, as the reader's decoding engine.

`AcqeReader` validates a file's structure in Python and hands each tensor's decoding to libacqe
(`acqe_format._libacqe`, a CPython extension compiled from libacqe/ when the package is installed):
the rANS loop writes f32/f16/bf16 straight from the codebook, with the GIL released, about 2x faster
than the numba kernels it replaces (bench/RESULTS.md) — and reading or verifying a file needs neither
numba nor llvmlite.

The numpy/numba decoders stay as the reference: ``ACQE_PURE_PYTHON=1`` makes every reader use them
(the test suite runs the codec tests both ways, as msgpack does with MSGPACK_PUREPYTHON).
"""
from __future__ import annotations

import os

from acqe_format import errors as E

try:
    from acqe_format import _libacqe
except ImportError:          # a source checkout whose extension was not built
    _libacqe = None

ENV_PURE_PYTHON = "ACQE_PURE_PYTHON"
NO_LIMIT = (1 << 64) - 1     # the Python reader applies its own decode budget first

# libacqe's categories (spec §14) are the names of this package's exception classes
_ERRORS = {cls.__name__: cls for cls in (E.NotAcqeFileError, E.UnsupportedVersionError, E.TruncatedFileError,
                                         E.ChecksumMismatchError, E.LimitExceededError, E.LayoutError,
                                         E.CodecError, E.MetadataError)}

__all__ = ["available", "enabled", "open_buffer", "translate", "ENV_PURE_PYTHON"]


def available() -> bool:
    """True when the C extension is built and importable."""
    return _libacqe is not None


def enabled() -> bool:
    """True when readers decode through libacqe (built, and not turned off with ACQE_PURE_PYTHON=1)."""
    return _libacqe is not None and os.environ.get(ENV_PURE_PYTHON, "") in ("", "0")


def open_buffer(buf):
    """A libacqe handle on the file's bytes (no copy: it holds the buffer until closed)."""
    try:
        return _libacqe.File(buf, NO_LIMIT)
    except _libacqe.LibAcqeError as exc:
        raise translate(exc) from None


def translate(exc) -> Exception:
    """The `AcqeError` for a libacqe error (same category, same one-line message)."""
    category = getattr(exc, "category", "")
    message = getattr(exc, "message", str(exc))
    if category in _ERRORS:
        return _ERRORS[category](message)
    if category == "OutOfMemory":
        return MemoryError(message)
    if category == "DecodeLimitError":
        return E.DecodedSizeError(message)
    return E.AcqeError(f"{category}: {message}")
