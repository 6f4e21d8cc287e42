"""Turns library exceptions into one-line messages; the table is searched in order (subclasses first)."""
from __future__ import annotations

import os

from acqe_format import errors as E
from recat_runtime.errors import ForecastConflictError, ImageInputError, NoScheduleError   # torch-free: torch loads only when used

# (exception type, prefix) — the first matching row wins, so subclasses come before their bases.
ERROR_MESSAGES: list[tuple[type[BaseException], str]] = [
    (E.NotAcqeFileError, "not an .acqe file"),
    (E.UnsupportedVersionError, "unsupported"),
    (E.TruncatedFileError, "truncated"),
    (E.ChecksumMismatchError, "checksum mismatch"),
    (E.DecodedSizeError, "decode budget"),
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


def _profile_hint(exc) -> str | None:
    """How to create the ReCaT schedule a NoScheduleError asked for (the library names no commands)."""
    steps, budget = getattr(exc, "steps", None), getattr(exc, "budget", None)
    if steps is None or budget is None:
        return None
    return f"run `acqe profile-cache MODEL.acqe --steps {steps} --full-steps {budget}`"


# (exception type, hint) — a command line's advice appended to the library's one-line message
HINTS: list[tuple[type[BaseException], object]] = [
    (NoScheduleError, _profile_hint),
    (E.DecodedSizeError, lambda exc: f"if you trust the file, allow it with --max-decoded-size {exc.decoded}"),
    (E.AmbiguousLayoutError, lambda exc: "pass --prediction-type epsilon (512-base) or v_prediction (768-v)"),
    (E.UnknownLayoutError, lambda exc: "pass --keep-unknown to store them as they are" if exc.keepable else None),
    (ImageInputError, lambda exc: "give one with --init-image PATH" if exc.needs_image else None),
    (ForecastConflictError, lambda exc: "drop --forecast, or add --no-correction to use the plain forecast"),
]


# top-level modules of this project: an ImportError naming one of them is a bug, not a missing extra
_OWN_PACKAGES = ("acqe_format", "acqe_encoder", "acqe_export", "recat_runtime", "acqe_demo", "acqe_cli")


def missing_dependency(exc: BaseException, prefer_extra: str | None = None) -> str | None:
    """One line for an ImportError of an optional third-party module (torch, diffusers, numba, gguf, ...)
    naming what to install; None for anything else (an ImportError inside this project is a bug)."""
    if not isinstance(exc, ImportError):
        return None
    name = getattr(exc, "name", None)
    top = name.split(".")[0] if name else None
    if not top or top in _OWN_PACKAGES:
        return None
    from acqe_cli.extras import install_hint

    return f"missing dependency: {top} is not installed; {install_hint(top, prefer_extra)}"


def format_error(exc: BaseException, prefer_extra: str | None = None) -> str | None:
    """One line for a known exception type, or None when the exception is unexpected (a bug).
    ``prefer_extra``: the extra the running command needs, named first in a missing-dependency line."""
    line = missing_dependency(exc, prefer_extra)
    if line is not None:
        return line
    line = _message(exc)
    if line is not None:
        for kind, hint in HINTS:
            if isinstance(exc, kind) and (extra := hint(exc)):
                line = f"{line}; {extra}"
                break
    return line


def _message(exc: BaseException) -> str | None:
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
