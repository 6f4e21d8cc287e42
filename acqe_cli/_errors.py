"""Turns library exceptions into one-line messages; the table is searched in order (subclasses first)."""
from __future__ import annotations

import os

from acqe_format import errors as E

# (exception type, prefix) — the first matching row wins, so subclasses come before their bases.
ERROR_MESSAGES: list[tuple[type[BaseException], str]] = [
    (E.NotAcqeFileError, "not an .acqe file"),
    (E.UnsupportedVersionError, "unsupported"),
    (E.TruncatedFileError, "truncated"),
    (E.ChecksumMismatchError, "checksum mismatch"),
    (E.LimitExceededError, "limit exceeded"),
    (E.LayoutError, "bad layout"),
    (E.CodecError, "bad codec payload"),
    (E.MetadataError, "bad metadata"),
    (E.SourceError, "cannot read input"),
    (E.RuntimeLoadError, "cannot load model"),
    (E.AcqeFormatError, "invalid file"),
    (E.AcqeError, "error"),
    (FileNotFoundError, "no such file"),
    (IsADirectoryError, "is a directory"),
    (PermissionError, "permission denied"),
    (MemoryError, "out of memory"),
    (OSError, "I/O error"),
]


def format_error(exc: BaseException) -> str | None:
    """One line for a known exception type, or None when the exception is unexpected (a bug)."""
    # Errors defined outside acqe_format (e.g. in recat_runtime, which imports torch) name their own
    # prefix, so this table never has to import their packages.
    own = getattr(type(exc), "cli_prefix", None)
    for kind, prefix in ([(type(exc), own)] if own else []) + ERROR_MESSAGES:
        if isinstance(exc, kind):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, OSError) and exc.filename and exc.strerror:
                detail = f"{exc.filename}: {exc.strerror}"
            return f"{prefix}: {detail}"
    return None


def debug_enabled() -> bool:
    return os.environ.get("ACQE_DEBUG", "") not in ("", "0")
