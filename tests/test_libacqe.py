"""libacqe (the C reader, libacqe/) against the Python reference reader, bit for bit.

On every spec vector, on files written by `AcqeWriter` (codebook tensors with rANS and packed indices,
row scales, row contexts, every decoded dtype, K > 256, precisions with and without slot tables, many
chunks, empty and scalar tensors, RAW tensors of every dtype with NaN payloads and subnormals), on
hypothesis-generated files and on byte-mutated files: the directory, metadata and assets agree, every
tensor decodes to the same bytes, also converted with `dtype=` (float32/float16/bfloat16), and every
invalid file gets the same error category. The CPython extension (`libacqe/python/_libacqe.c`) is built
in a temporary folder and checked the same way.

The library is built with `make -C libacqe` when needed; the module is skipped only without a C compiler.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acqe_format.errors as E
from acqe_format import AcqeReader, AcqeWriter, CodebookTensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = os.path.join(ROOT, "spec", "vectors")
sys.path.insert(0, os.path.join(ROOT, "libacqe", "python"))
import libacqe_ctypes as LC  # noqa: E402

CC = next((c for c in (os.environ.get("CC", "cc"), "gcc", "clang") if shutil.which(c)), None)
pytestmark = pytest.mark.skipif(CC is None or shutil.which("make") is None, reason="no C compiler (or make)")

FLOATS = ("float32", "float16", "bfloat16", "float64")
CASTS = ("float32", "float16", "bfloat16")


@pytest.fixture(scope="module", autouse=True)
def clib():
    LC.lib(LC.build())      # a build failure fails the tests (it is not a skip)


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _py_category(source) -> str | None:
    try:
        with AcqeReader(source) as r:
            r.verify()
        return None
    except E.AcqeError as e:
        return type(e).__name__


def compare(source, threads: int = 2) -> None:
    """Everything libacqe reads from `source` equals what the Python reader reads."""
    with AcqeReader(source) as r, LC.CFile(source) as c:
        want = [(t.name, tuple(t.shape), t.stored_dtype, t.decoded_dtype, t.codec.name, t.numel, t.payload_offset,
                 t.payload_length, t.checked_length, t.payload_crc32) for t in r.tensors]
        assert [tuple(t) for t in c.tensors] == want
        assert c.header["version"] == r.version
        assert json.loads(c.metadata) == r.metadata
        assert c.assets == r.assets
        for i, t in enumerate(r.tensors):
            assert c.find(t.name) == i
            a, b = r.read(t.name), c.decode(i, threads=threads)
            assert a.shape == b.shape and _bits(a) == _bits(b), t.name
            if t.decoded_dtype in FLOATS:
                for d in CASTS:
                    a, b = r.read(t.name, dtype=d), c.decode(i, dtype=d, threads=1)
                    assert a.dtype.itemsize == b.dtype.itemsize and _bits(a) == _bits(b), (t.name, d)
                    assert a.shape == b.shape, (t.name, d)
            else:
                with pytest.raises(LC.LibAcqeError, match="ArgumentError"):
                    c.decode(i, dtype="float16")
        r.verify()
        c.verify(threads)


# --- the spec vectors ------------------------------------------------------------------------------

VALID = sorted(f for f in os.listdir(os.path.join(VEC, "valid")) if f.endswith(".acqe"))
MANIFEST = json.load(open(os.path.join(VEC, "invalid", "MANIFEST.json"), encoding="utf-8"))["files"]


@pytest.mark.parametrize("name", VALID)
def test_valid_vectors(name):
    path = os.path.join(VEC, "valid", name)
    compare(path)
    compare(open(path, "rb").read(), threads=3)      # from a buffer


def test_invalid_vectors():
    for case in MANIFEST:
        path = os.path.join(VEC, "invalid", case["file"])
        assert LC.category_of(path) == case["error"], case
        assert LC.category_of(open(path, "rb").read(), threads=2) == case["error"], case
        assert _py_category(path) == case["error"], case


def test_decode_budget_is_not_a_file_error():
    """valid/026 expands 32 payload bytes to 1 MiB: valid; a small decode budget refuses it with
    DecodeLimitError (not one of the spec's categories), verify included."""
    path = os.path.join(VEC, "valid", "026-rans-expansion.acqe")
    with LC.CFile(path) as c:
        rep = c.verify()
        assert rep["max_expansion"] == 2 ** 20 / 32 and rep["max_expansion_tensor"] == 0
    with LC.CFile(path, max_decoded_bytes=1 << 19) as c:
        for call in (lambda: c.decode(0), lambda: c.verify()):
            with pytest.raises(LC.LibAcqeError) as info:
                call()
            assert info.value.category == "DecodeLimitError"


# --- files from the Python writer ------------------------------------------------------------------

def _codebook(rng, shape, k, scales=False, contexts=0, decoded="float32", wild=False):
    rows = shape[0] if shape else 1
    numel = int(np.prod(shape)) if shape else 1
    idx = np.minimum(rng.geometric(0.2, numel) - 1, k - 1).astype(np.uint16 if k > 256 else np.uint8)
    cb = rng.standard_normal(k).astype(np.float32)
    if wild:   # overflow to inf in float16/bfloat16, subnormals, signed zeros
        cb[: min(k, 4)] = np.array([70000.0, -3e38, 1e-41, -0.0], np.float32)[: min(k, 4)]
    sc = None
    if scales:
        sc = (0.5 + rng.random(rows)).astype(np.float32)
        if wild and rows:
            sc[0] = np.float32(1e30)
    ctx = (np.arange(rows) % contexts).astype(np.uint16) if contexts else None
    return CodebookTensor(tuple(shape), cb, idx, sc, ctx, decoded)


def _raw_arrays(rng):
    out = {}
    for dt in ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "uint16", "uint32",
               "uint64"):
        bits = rng.integers(0, 256, 12 * np.dtype(dt).itemsize, dtype=np.uint8)
        out[f"raw_{dt}"] = (np.frombuffer(bits.tobytes(), dtype=dt).reshape(3, 4), None)
    special = np.array([0x7F800001, 0x7FC00000, 0xFFA00000, 0x7F800000, 0x00000001, 0x807FFFFF, 0x477FF000,
                        0x33000001, 0x3F808000, 0x7F7FFFFF], np.uint32)
    out["raw_f32_special"] = (special.view(np.float32), None)
    out["raw_f64_special"] = (np.array([0x7FF0000000000001, 0xFFF8000000000001, 0x36A0000000000000, 0x47EFFFFFE0000000,
                                        0x0000000000000001, 0xC7EFFFFFF0000000], np.uint64).view(np.float64), None)
    out["raw_f16_nan"] = (np.array([0x7C01, 0xFE00, 0x0001, 0x8400, 0x7BFF], np.uint16).view(np.float16), None)
    out["raw_bf16"] = (rng.integers(0, 1 << 16, 9, dtype=np.uint16), "bfloat16")
    out["raw_bool"] = (np.array([[True, False], [False, True]]), None)
    out["raw_scalar"] = (np.array(2.5, np.float32), None)
    out["raw_empty"] = (np.zeros((0, 3), np.float16), None)
    return out


def _writer_files(tmp):
    rng = np.random.default_rng(7)
    files = []
    specs = [  # (name, tensor, codec, kwargs)
        ("rows_long_scaled", _codebook(rng, (8, 64), 16, scales=True, contexts=3, decoded="float16"), "rans",
         {"chunk_size": 64}),
        ("rows_short_scaled", _codebook(rng, (16, 5), 40, scales=True, decoded="bfloat16", wild=True), "rans",
         {"chunk_size": 16}),
        ("k300", _codebook(rng, (6, 50), 300, decoded="float64"), "rans", {"precision": 16, "chunk_size": 100}),
        ("p20", _codebook(rng, (3, 40), 5, scales=True), "rans", {"precision": 20, "chunk_size": 32}),
        ("p24_contexts", _codebook(rng, (4, 30), 3, contexts=1), "rans", {"precision": 24}),
        ("many_chunks", _codebook(rng, (40, 33), 9, contexts=4, wild=True, decoded="float16"), "rans",
         {"chunk_size": 7}),
        ("constant", CodebookTensor((5, 5), np.array([1.5], np.float32), np.zeros(25, np.uint8)), "rans", {}),
        ("scalar", _codebook(rng, (), 2, scales=True), "rans", {}),
        ("empty_rows", _codebook(rng, (4, 0), 3, scales=True, contexts=2), "rans", {}),
        ("empty", _codebook(rng, (0, 4), 3), "rans", {}),
        ("packed_scaled", _codebook(rng, (5, 13), 7, scales=True, wild=True, decoded="float16"), "packed", {}),
        ("packed_k300", _codebook(rng, (2, 3, 3), 300, decoded="bfloat16"), "packed", {}),
        ("packed_long_rows", _codebook(rng, (3, 200), 5, scales=True, decoded="float64"), "packed", {}),
        ("packed_empty", _codebook(rng, (0, 4), 3), "packed", {}),
    ]
    for compress in (False, True):
        path = os.path.join(tmp, f"writer{int(compress)}.acqe")
        with AcqeWriter(path, compress_sections=compress) as w:
            w.set_metadata({"case": "libacqe cross-check", "n": [1, -2.5e-300, None, True, 18446744073709551615]})
            w.add_asset("tokenizer/vocab.json", b'{"a": 0}')
            w.add_asset("LICENSE", b"")
            for name, ct, codec, kw in specs:
                w.add_codebook(name, ct, codec=codec, **kw)
            for name, (a, dt) in _raw_arrays(rng).items():
                w.add_raw(name, a, dtype=dt)
        files.append(path)
    return files


def test_writer_files(tmp_path):
    for path in _writer_files(str(tmp_path)):
        compare(path)


def test_large_tensor_threads(tmp_path):
    """A tensor big enough to be split over threads (chunk groups of the 4-stream loop, row tables)."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "big.acqe")
    with AcqeWriter(path) as w:
        w.add_codebook("w", _codebook(rng, (96, 3000), 24, scales=True, contexts=5, decoded="float16"), codec="rans",
                       chunk_size=4096)
        w.add_codebook("v", _codebook(rng, (300, 700), 200, contexts=3), codec="rans", precision=14)
    with AcqeReader(path) as r, LC.CFile(path) as c:
        for i, t in enumerate(r.tensors):
            want = _bits(r.read(t.name))
            for threads in (1, 2, 5):
                assert _bits(c.decode(i, threads=threads)) == want
            assert _bits(c.decode(i, dtype="bfloat16", threads=3)) == _bits(r.read(t.name, dtype="bfloat16"))


# --- hypothesis-generated files ------------------------------------------------------------------

@st.composite
def tensor_specs(draw):
    kind = draw(st.sampled_from(["raw", "rans", "packed"]))
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=rank, max_size=rank)))
    numel = int(np.prod(shape)) if shape else 1
    if kind == "raw":
        dt = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64", "int8", "uint16", "int64", "bool"]))
        if dt == "bool":
            a = np.array(draw(st.lists(st.booleans(), min_size=numel, max_size=numel)), dtype=bool).reshape(shape)
            return ("raw", a, None)
        item = 2 if dt == "bfloat16" else np.dtype(dt).itemsize
        raw = draw(st.binary(min_size=numel * item, max_size=numel * item))
        a = np.frombuffer(raw, dtype="<u2" if dt == "bfloat16" else dt).reshape(shape)
        return ("raw", a, "bfloat16" if dt == "bfloat16" else None)
    k = draw(st.sampled_from([1, 2, 5, 16, 257]))
    rows = shape[0] if shape else 1
    floats = st.floats(width=32, allow_nan=False, allow_infinity=False)
    cb = np.array(draw(st.lists(floats, min_size=k, max_size=k)), np.float32)
    idx = np.array(draw(st.lists(st.integers(0, k - 1), min_size=numel, max_size=numel)),
                   dtype=np.uint16 if k > 256 else np.uint8)
    sc = None
    if draw(st.booleans()):
        sc = np.array(draw(st.lists(floats, min_size=rows, max_size=rows)), np.float32)
    ctx = None
    if kind == "rans" and draw(st.booleans()):
        ctx = np.array(draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows)), np.uint16)
    decoded = draw(st.sampled_from(FLOATS))
    ct = CodebookTensor(shape, cb, idx, sc, ctx, decoded)
    kw = {}
    if kind == "rans":
        kw = {"precision": draw(st.sampled_from([None, 12, 16, 20])), "chunk_size": draw(st.sampled_from([None, 1, 3, 16]))}
    return (kind, ct, kw)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs=st.lists(tensor_specs(), min_size=1, max_size=4), compress=st.booleans())
def test_hypothesis_files(tmp_path, specs, compress):
    path = str(tmp_path / "h.acqe")
    with AcqeWriter(path, compress_sections=compress) as w:
        for i, (kind, obj, extra) in enumerate(specs):
            if kind == "raw":
                w.add_raw(f"t{i}", obj, dtype=extra)
            else:
                w.add_codebook(f"t{i}", obj, codec=kind, **extra)
    compare(path)


# --- mutated files: the same verdict ------------------------------------------------------------------

def test_mutations_same_category(tmp_path):
    """Single-byte changes (and truncations) of valid files: libacqe and the Python reader both accept or
    both reject, with the same category."""
    rnd = random.Random(1234)
    sources = [os.path.join(VEC, "valid", f) for f in ("013-rans-basic.acqe", "015-rans-contexts.acqe",
                                                      "016-rans-chunks.acqe", "020-assets-metadata-align16.acqe",
                                                      "024-compressed-directory-metadata.acqe",
                                                      "010-packed-scales-f16.acqe")]
    sources += _writer_files(str(tmp_path))[:1]
    checked = 0
    for src in sources:
        data = open(src, "rb").read()
        for _ in range(40):
            b = bytearray(data)
            how = rnd.random()
            if how < 0.8:
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            elif how < 0.9:
                b = b[:rnd.randrange(len(b))]
            else:
                b[rnd.randrange(len(b))] = rnd.choice([0, 0xFF])
            b = bytes(b)
            assert LC.category_of(b, threads=2) == _py_category(b), (src, how)
            checked += 1
    assert checked == 40 * len(sources)


# --- the CPython extension ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """libacqe/python/_libacqe.c compiled with libacqe's sources into a temporary folder."""
    out = tmp_path_factory.mktemp("ext")
    so = str(out / ("_libacqe" + sysconfig.get_config_var("EXT_SUFFIX")))
    lib = os.path.join(ROOT, "libacqe")
    srcs = [os.path.join(lib, "python", "_libacqe.c")] + [os.path.join(lib, "src", f) for f in
                                                           ("util.c", "float.c", "json.c", "open.c", "decode.c", "file.c")]
    cmd = [CC, "-shared", "-fPIC", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
           "-I" + sysconfig.get_paths()["include"], "-I" + lib, *srcs, "-lz", "-pthread", "-o", so]
    subprocess.run(cmd, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("_libacqe", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_extension(ext):
    import mmap
    for name in VALID:
        path = os.path.join(VEC, "valid", name)
        data = open(path, "rb").read()
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for source in (path, data, np.frombuffer(data, np.uint8), mm):
                with AcqeReader(path) as r:
                    f = ext.File(source)
                    assert json.loads(f.metadata()) == r.metadata and f.assets() == r.assets
                    rows = f.tensors()
                    assert [t[0] for t in rows] == [t.name for t in r.tensors]
                    for i, t in enumerate(r.tensors):
                        dts = [None] + (list(CASTS) if t.decoded_dtype in FLOATS else [])
                        for d in dts:
                            want = r.read(t.name, dtype=d)
                            out = np.empty(f.output_nbytes(i, d), np.uint8)
                            f.decode_into(i, out, d, 2)
                            assert out.tobytes() == _bits(want), (name, t.name, d)
                    assert f.verify(2)["tensors"] == len(r.tensors)
                    f.close()
    for case in MANIFEST[::5]:
        with pytest.raises(ext.LibAcqeError) as info:
            f = ext.File(os.path.join(VEC, "invalid", case["file"]))
            f.verify(1)
        assert info.value.category == case["error"] and info.value.args[0] == case["error"]
    with pytest.raises(ext.LibAcqeError) as info:
        ext.File(b"")
    assert info.value.category == "TruncatedFileError"


# --- the strict JSON of METADATA: the same verdict -------------------------------------------------------

def _meta_file(body: bytes) -> bytes:
    sys.path.insert(0, VEC)
    try:
        from generate import Builder, S
    finally:
        sys.path.remove(VEC)
    return Builder([S(1), S(2, body), S(4)], []).build()


def test_metadata_json_same_verdict():
    """Mutated JSON texts and numbers around the limits of spec section 8 (2^64 - 1, -2^63, the binary64
    overflow threshold 2^1024 - 2^970): libacqe's validator and Python's json agree."""
    rnd = random.Random(5)
    seeds = [b'{}', b'{"a":[1,2.5,-0,1e5,"x\\u00e9\\ud83d\\ude00"],"b":{"c":null,"d":true}}',
             b'{"big":18446744073709551615,"neg":-9223372036854775808,"f":1.7976931348623157e308}',
             '{"\u00e9":"\u03c0","\\u00e9x":[[[]]]}'.encode()]
    alphabet = b'{}[]:,"\\ \t\n0123456789.eE+-abcdefnrtulsNIf\x00\x7f\xc3\xa9\xff\xed\xa0\x80u'
    texts = []
    for _ in range(600):
        s = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.4 and s:
                s[rnd.randrange(len(s))] = rnd.choice(alphabet)
            elif op < 0.7:
                s.insert(rnd.randrange(len(s) + 1), rnd.choice(alphabet))
            elif s:
                del s[rnd.randrange(len(s))]
        texts.append(bytes(s))
    limit = str((2 ** 54 - 1) * 2 ** 970)
    for _ in range(300):
        d = list(limit)
        d[rnd.randrange(len(d))] = str(rnd.randrange(10))
        s = "".join(d[:rnd.randint(2, 320)])
        e = len(limit) - 1 + rnd.choice([-1, 0, 0, 1])
        texts.append(f'{{"a":{s[0]}.{s[1:]}e{e}}}'.encode())
        texts.append(f'{{"a":{rnd.choice(["", "-"])}{rnd.choice([2 ** 63, 2 ** 64]) + rnd.randint(-2, 1)}}}'.encode())
    for body in texts:
        data = _meta_file(body)
        assert LC.category_of(data) == _py_category(data), body


def test_asset_names_same_verdict():
    """Random sets of asset names built from parts that hit every rule of spec section 9 (devices, case,
    folders, reserved characters, trailing dots and spaces, non-ASCII): the same verdict and kind of message."""
    import struct
    sys.path.insert(0, VEC)
    try:
        from generate import Builder, S
    finally:
        sys.path.remove(VEC)
    rnd = random.Random(3)
    parts = ["a", "A", "b", "tok", "TOK", "x.json", "X.JSON", "con", "Con.txt", "com1", "com10", "lpt9.x", "nul ",
             "aux .y", "c:d", "e.", "f ", " g", ".", "..", "", "\u00e9", "h\\i", "conin$", "CONOUT$.q", "k?", "prn.", "ok-_~!"]
    for _ in range(500):
        names = ["/".join(rnd.choice(parts) for _ in range(rnd.randint(1, 3))) for _ in range(rnd.randint(1, 5))]
        if any(not n for n in names):
            continue
        body = struct.pack("<I", len(names)) + b"".join(struct.pack("<H", len(n.encode())) + n.encode()
                                                         + struct.pack("<Q", 0) for n in names)
        data = Builder([S(1), S(2, b"{}"), S(3, body), S(4)], []).build()
        assert LC.category_of(data) == _py_category(data), names


# --- the C test programs and the sanitizer run ------------------------------------------------------------

def test_c_test_programs():
    """`make -C libacqe test`: unit tests, every vector through test_vectors.c, the threads test, the example."""
    p = subprocess.run(["make", "-C", os.path.join(ROOT, "libacqe"), "-j2", "-s", "test"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "0 failures" in p.stdout


@pytest.mark.skipif(not os.environ.get("ACQE_SANITIZE"), reason="set ACQE_SANITIZE=1 (CI runs libacqe/tests/run_sanitized.sh)")
def test_sanitized_build():
    p = subprocess.run(["bash", os.path.join(ROOT, "libacqe", "tests", "run_sanitized.sh")], capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
