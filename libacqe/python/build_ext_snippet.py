"""How setuptools builds the CPython extension `acqe_format._libacqe` from libacqe's sources (a snippet for
the project's setup.py; pyproject.toml keeps declaring the metadata). Nothing is linked from the system but
zlib and pthreads, so the same recipe builds a wheel.

    # setup.py (at the repository root)
    from setuptools import setup
    from libacqe.python.build_ext_snippet import libacqe_extension
    setup(ext_modules=[libacqe_extension()])

Run as a script, it builds the extension in place for a quick try:

    python libacqe/python/build_ext_snippet.py build_ext --inplace   # -> acqe_format/_libacqe*.so
"""
from __future__ import annotations

import os
import sys

from setuptools import Extension

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join("libacqe")
SOURCES = ["util.c", "float.c", "json.c", "open.c", "decode.c", "file.c"]


def libacqe_extension(name: str = "acqe_format._libacqe") -> Extension:
    """The extension: libacqe/python/_libacqe.c plus every libacqe source, compiled as C99, linked to zlib.
    Paths are relative to the repository root (where setup.py runs)."""
    windows = sys.platform == "win32"
    return Extension(
        name,
        sources=[os.path.join(LIB, "python", "_libacqe.c")] + [os.path.join(LIB, "src", s) for s in SOURCES],
        include_dirs=[LIB],
        libraries=["zlib" if windows else "z"],
        extra_compile_args=[] if windows else ["-std=c99", "-O2", "-pthread", "-fvisibility=hidden"],
        extra_link_args=[] if windows else ["-pthread"],
    )


if __name__ == "__main__":
    from setuptools import setup
    os.chdir(ROOT)
    setup(name="acqe-libacqe-ext", ext_modules=[libacqe_extension()], script_args=sys.argv[1:] or ["build_ext", "--inplace"])
