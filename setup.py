"""Builds the one compiled part of the package: `acqe_format._libacqe`, the C decoder (libacqe/) as a
CPython extension. Everything else is declared in pyproject.toml. It needs a C99 compiler and zlib's
headers (Debian: gcc, zlib1g-dev)."""
import runpy

from setuptools import setup

libacqe_extension = runpy.run_path("libacqe/python/build_ext_snippet.py")["libacqe_extension"]

setup(ext_modules=[libacqe_extension()])
