"""Opening input files safely: regular files only, never blocking, sizes bounded, identity recorded.

A conversion reads a few files (one checkpoint, or a diffusers folder's weights and configs). Each is
opened with O_NONBLOCK and checked with fstat on the open descriptor, so a FIFO, a device (a symlink to
/dev/zero) or a socket is refused in one line instead of blocking or streaming forever, and a file
swapped between the check and the read cannot slip through. The identity (device, inode, size,
mtime) of every file read is recorded in `RegularFile`; `hash_files` hashes exactly those files and
refuses any that changed meanwhile.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from acqe_encoder.sources import limits as L
from acqe_format.errors import SourceError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class RegularFile:
    """A regular file a source read: its path as given and the identity it had when opened."""
    path: str
    size: int
    dev: int
    ino: int
    mtime_ns: int


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def shown(path: str) -> str:
    """A path for a one-line message: control characters escaped, long paths shortened."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in os.fspath(path))
    return s if len(s) <= 160 else s[:70] + "..." + s[-80:]


def open_regular(path: str, what: str | None = None):
    """(binary file object, RegularFile) for a regular file; a one-line `SourceError` for anything else.

    Symlinks are followed (a Hugging Face cache snapshot links to its blobs); what they point at must be a
    regular file. A missing path raises FileNotFoundError (the CLI reports it as "no such file").
    """
    what = what or shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise SourceError(f"{what}: is a directory, expected a regular file") from None
    except OSError as e:
        raise SourceError(f"{what}: cannot open ({e.strerror or type(e).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{what}: is {_kind(st.st_mode)}, expected a regular file; refusing to read it")
        try:   # back to blocking reads (a regular file never blocks; O_NONBLOCK only guarded the open)
            os.set_blocking(fd, True)
        except OSError:
            pass
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, RegularFile(os.fspath(path), st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns)


def read_bounded(path: str, limit: int, what: str | None = None) -> tuple[bytes, RegularFile]:
    """All bytes of a small regular file, refused when it holds more than `limit` bytes."""
    what = what or shown(path)
    f, rf = open_regular(path, what)
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SourceError(f"{what}: {rf.size:,} bytes, above the {limit:,}-byte limit for this file")
    return data, rf


def hash_files(files: list[RegularFile]) -> str:
    """SHA-256 of the files' bytes concatenated in sorted path order (each file exactly as it was read).

    A file that is no longer the same regular file of the same size and mtime is refused: the hash would
    not describe what was converted.
    """
    h = hashlib.sha256()
    for rf in sorted(files, key=lambda r: r.path):
        f, now = open_regular(rf.path)
        with f:
            if (now.dev, now.ino, now.size, now.mtime_ns) != (rf.dev, rf.ino, rf.size, rf.mtime_ns):
                raise SourceError(f"{shown(rf.path)}: changed while it was being converted")
            left = rf.size
            while left > 0:
                b = f.read(min(L.HASH_CHUNK, left))
                if not b:
                    raise SourceError(f"{shown(rf.path)}: shrank while it was being converted")
                h.update(b)
                left -= len(b)
    return h.hexdigest()
