"""Two paths, one suite: readers decode through libacqe (the C extension) by default; with
ACQE_PURE_PYTHON=1 they use the numpy/numba reference decoders. The format's own tests run here once more
on the reference path, so both stay correct (as msgpack runs its suite with MSGPACK_PUREPYTHON)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from acqe_format import AcqeReader, native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID = os.path.join(ROOT, "spec", "vectors", "valid")


def test_the_default_reader_decodes_in_c():
    assert native.available(), "acqe_format._libacqe is not built (pip install -e . builds it)"
    with AcqeReader(os.path.join(VALID, "013-rans-basic.acqe")) as r:
        assert r._native is not None


def test_the_format_suite_on_the_reference_decoders():
    env = dict(os.environ, ACQE_PURE_PYTHON="1")
    files = ["tests/test_format_conformance.py", "tests/test_format_roundtrip.py", "tests/test_format_read_dtype.py",
             "tests/test_format_compressed.py", "tests/test_reader_edges.py"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(VALID) if f.endswith(".acqe")))
def test_c_and_reference_give_the_same_bits(name, monkeypatch):
    path = os.path.join(VALID, name)
    with AcqeReader(path) as r:
        fast = {t.name: r.read(t.name) for t in r.tensors}
    monkeypatch.setenv(native.ENV_PURE_PYTHON, "1")
    with AcqeReader(path) as r:
        assert r._native is None
        for t in r.tensors:
            a, b = fast[t.name], r.read(t.name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), t.name
