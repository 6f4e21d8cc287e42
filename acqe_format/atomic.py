"""Atomic file output: the one way this project writes a file that must never be seen half-written.

    with atomic_write("model.acqe") as f:     # a temporary file next to the target
        f.write(...)
    # on success: flushed, fsynced, renamed over the target, folder fsynced; on an exception: removed

The temporary file is ``.<target name>.<pid>.<random>.tmp`` in the target's folder (same file system, so
the rename is atomic). A process killed with SIGKILL cannot remove its own; the next write to the same
target removes those whose process no longer exists, so stale temporaries do not pile up.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile

__all__ = ["atomic_write", "stale_temporaries", "check_writable", "scratch_file"]


def _prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, owned by someone else
        return True
    return True


def stale_temporaries(path: str) -> list[str]:
    """Temporary files of earlier writes to ``path`` whose writing process is gone."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    pattern = re.compile(re.escape(_prefix(path)) + r"(\d+)\.[A-Za-z0-9_]+\.tmp$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        m = pattern.match(name)
        if m and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            out.append(os.path.join(folder, name))
    return out


def _remove_stale(path: str) -> None:
    for stale in stale_temporaries(path):
        with contextlib.suppress(OSError):
            os.unlink(stale)


def scratch_file(path):
    """An anonymous temporary file in ``path``'s folder (for spooling data that ends up in ``path``);
    errors name ``path``, not the temporary."""
    path = os.path.abspath(os.fspath(path))
    try:
        return tempfile.TemporaryFile(dir=os.path.dirname(path), prefix=".acqe-spool-")
    except OSError as e:
        raise type(e)(e.errno, e.strerror, path) from None


def check_writable(path) -> None:
    """Raise the OSError that writing ``path`` would raise (missing or read-only folder, a folder in the
    way) now, naming ``path``: long jobs call it before their first second of work."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory", path)
    scratch_file(path).close()


@contextlib.contextmanager
def atomic_write(path):
    """A binary file object whose contents replace ``path`` only if the block ends without an exception.

    The file gets the permissions a plain ``open(path, "wb")`` would give it (0666 less the umask).
    Errors creating the temporary file (missing or read-only folder) name ``path``, not the temporary.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    _remove_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_prefix(path)}{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)             # mkstemp's 0600 is for the temporary name only
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
