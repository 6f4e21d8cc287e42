"""Keeps numba's on-disk kernel cache from crashing an import for users who cannot write anywhere usual.

Kernels are compiled with ``@njit(cache=True)``; numba then needs a writable cache folder when the kernel is
*defined*: the package's own ``__pycache__`` or the user's ``~/.cache/numba``. A user who can write
neither (a read-only install and a read-only or missing home) got ``RuntimeError: cannot cache function
... no locator available`` from every command. :func:`ensure_numba_cache` runs before any kernel is
defined and, only in that situation, points numba at a fresh private temporary folder (compiled kernels
are then reused within the process and by later kernels of the same run, just not across runs).
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["ensure_numba_cache"]

_checked: set[str] = set()


def _writable(folder: str) -> bool:
    """What numba's locators try: create the folder, then a temporary file in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def ensure_numba_cache(package_dir: str) -> None:
    """Makes sure numba finds a writable cache folder for the kernels defined under ``package_dir``."""
    if package_dir in _checked:
        return
    _checked.add(package_dir)
    try:
        from numba.core import config
    except ImportError:                           # no numba: no kernel cache to worry about
        return

    if config.CACHE_DIR:                          # NUMBA_CACHE_DIR (the user's, or ours from an earlier call)
        if _writable(config.CACHE_DIR):
            return
    elif _writable(os.path.join(package_dir, "__pycache__")):
        return
    else:
        from numba.misc.appdirs import AppDirs

        if _writable(AppDirs(appname="numba", appauthor=False).user_cache_dir):
            return
    try:
        config.CACHE_DIR = tempfile.mkdtemp(prefix="acqe-numba-cache-")
    except OSError:                               # no writable temporary folder either: nothing to fall back to
        pass
