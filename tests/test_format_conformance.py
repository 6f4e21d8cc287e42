"""Conformance over spec/vectors: valid files decode to the recorded hashes, invalid files give the
recorded error (library and `acqe verify`), and the generator reproduces the committed bytes."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import acqe_format.errors as E
from acqe_cli.main import cli
from acqe_format import AcqeReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = os.path.join(ROOT, "spec", "vectors")
VALID = sorted(f[:-5] for f in os.listdir(os.path.join(VEC, "valid")) if f.endswith(".acqe"))
MANIFEST = json.load(open(os.path.join(VEC, "invalid", "MANIFEST.json"), encoding="utf-8"))["files"]


def _sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def test_corpus_sizes():
    assert len(VALID) >= 20 and len(MANIFEST) >= 90


@pytest.mark.parametrize("stem", VALID)
def test_valid_vector(stem):
    doc = json.load(open(os.path.join(VEC, "valid", stem + ".json"), encoding="utf-8"))
    path = os.path.join(VEC, "valid", stem + ".acqe")
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == doc["file_sha256"]
    with AcqeReader(path) as r:
        r.verify()
        assert r.metadata == doc["metadata"]
        assert [t.name for t in r.tensors] == [t["name"] for t in doc["tensors"]]
        for t in doc["tensors"]:
            a = r.read(t["name"])
            assert list(a.shape) == t["shape"]
            assert _sha(a) == t["sha256"], t["name"]
        assert {k: hashlib.sha256(v).hexdigest() for k, v in r.assets.items()} == doc["assets"]
        # iter_tensors (threaded) gives the same bytes
        for name, a in r.iter_tensors(threads=2):
            assert _sha(a) == next(t["sha256"] for t in doc["tensors"] if t["name"] == name)


@pytest.mark.parametrize("case", MANIFEST, ids=[c["file"] for c in MANIFEST])
def test_invalid_vector(case):
    path = os.path.join(VEC, "invalid", case["file"])
    cls = getattr(E, case["error"])
    with pytest.raises(E.AcqeError) as info:
        with AcqeReader(path) as r:
            r.verify()
    assert type(info.value) is cls, str(info.value)
    assert case["message"] in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_verify_corpora():
    runner = CliRunner()
    for stem in VALID:
        res = runner.invoke(cli, ["verify", os.path.join(VEC, "valid", stem + ".acqe")], standalone_mode=False)
        assert res.exception is None and res.exit_code == 0, (stem, res.output)
    from acqe_cli.main import main
    for case in MANIFEST[::7]:
        # through main(): the one place that turns exceptions into one line + exit code
        rc = subprocess_free_main(main, ["verify", os.path.join(VEC, "invalid", case["file"])])
        assert rc == 3, case


def subprocess_free_main(main, argv):
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    line = err.getvalue()
    assert line.startswith("Error: ") and line.count("\n") == 1 and "Traceback" not in line, line
    return rc


def test_cli_verify_subprocess_one_line():
    """The installed entry point: a few invalid vectors, one line each, exit 3, no traceback."""
    exe = [sys.executable, "-m", "acqe_cli.main"]
    for case in [MANIFEST[0], next(c for c in MANIFEST if c["error"] == "NotAcqeFileError")]:
        p = subprocess.run(exe + ["verify", os.path.join(VEC, "invalid", case["file"])], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 3, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        if case["error"] == "NotAcqeFileError":
            assert p.stderr.startswith("Error: not an .acqe file")


def test_generator_is_deterministic(tmp_path):
    """Regenerating the corpus gives the committed bytes (the writer is deterministic)."""
    subprocess.run([sys.executable, os.path.join(VEC, "generate.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    for sub in ("valid", "invalid"):
        names = sorted(os.listdir(tmp_path / sub))
        assert names == sorted(f for f in os.listdir(os.path.join(VEC, sub)) if not f.startswith("."))
        for n in names:
            assert (tmp_path / sub / n).read_bytes() == open(os.path.join(VEC, sub, n), "rb").read(), n


def test_valid_vectors_without_jit():
    """The numba kernels run as plain Python under NUMBA_DISABLE_JIT=1: same hashes (two paths, one
    corpus)."""
    code = ("import hashlib, json, os, sys\n"
            "import numpy as np\n"
            "from acqe_format import AcqeReader\n"
            "d = sys.argv[1]; out = {}\n"
            "for f in sorted(os.listdir(d)):\n"
            "    if f.endswith('.acqe'):\n"
            "        r = AcqeReader(os.path.join(d, f)); r.verify()\n"
            "        for t in r.tensors:\n"
            "            a = np.ascontiguousarray(r.read(t.name))\n"
            "            out[f[:-5] + '/' + t.name] = hashlib.sha256(a.tobytes()).hexdigest()\n"
            "print(json.dumps(out))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    p = subprocess.run([sys.executable, "-c", code, os.path.join(VEC, "valid")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout)
    want = {}
    for stem in VALID:
        doc = json.load(open(os.path.join(VEC, "valid", stem + ".json"), encoding="utf-8"))
        want.update({stem + "/" + t["name"]: t["sha256"] for t in doc["tensors"]})
    assert got == want


def test_directory_plus_metadata_cap():
    """Not in the corpus (it needs a 16 MiB file): DIRECTORY + METADATA above 16 MiB is refused before
    either is read or parsed; exactly at the cap is fine."""
    sys.path.insert(0, VEC)
    try:
        from generate import Builder, S
    finally:
        sys.path.remove(VEC)
    from acqe_format import constants as C
    dir_len = 4
    for extra, ok in ((0, True), (1, False)):
        body = b'{"a":"' + b"x" * (C.MAX_DIRECTORY_PLUS_METADATA - dir_len - 8 + extra) + b'"}'
        data = Builder([S(1), S(2, body), S(4)], []).build()
        if ok:
            AcqeReader(data).verify()
        else:
            with pytest.raises(E.LimitExceededError, match="directory \\+ metadata"):
                AcqeReader(data)
