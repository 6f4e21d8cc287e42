"""Property-based round trips for every codec path, determinism and atomic writes."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor, WriteOrderError, reconstruct
from acqe_format.codecs.codebook import pack_indices, unpack_indices
from acqe_format.dtypes import bf16_bits_from_f32 as _bf16_bits_from_f32
from acqe_format.layout import asset_name_problem, check_asset_names_unique

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RAW_DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
              "uint64", "bool"]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


def _write_read(tmp_path, fill, name="t.acqe", **kw):
    path = tmp_path / name
    with AcqeWriter(path, **kw) as w:
        fill(w)
    r = AcqeReader(path)
    r.verify()
    return r, path


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), dtype=st.sampled_from(RAW_DTYPES), shape=shapes)
def test_raw_roundtrip_any_dtype_shape(tmp_path, data, dtype, shape):
    a = data.draw(hnp.arrays(np.dtype(dtype), shape))   # NaN, Inf, -0.0, subnormals included for floats
    r, _ = _write_read(tmp_path, lambda w: w.add_raw("a", a))
    out = r.read("a")
    assert out.dtype == a.dtype and out.shape == a.shape
    assert _bits(out) == _bits(a)                         # bit-exact, NaN payloads and -0.0 included


@settings(max_examples=30, **SETTINGS)
@given(a=hnp.arrays(np.float32, shapes))
def test_raw_bf16_roundtrip(tmp_path, a):
    bits = _bf16_bits_from_f32(a)
    r, _ = _write_read(tmp_path, lambda w: (w.add_raw("from_f32", a, dtype="bfloat16"),
                                           w.add_raw("from_bits", bits, dtype="bfloat16")))
    assert r.info("from_f32").decoded_dtype == "bfloat16"
    assert _bits(r.read("from_f32")) == _bits(bits.reshape(a.shape)) == _bits(r.read("from_bits"))


def test_bf16_rounding_is_nearest_even():
    f = np.array([1.0, 1.00390625, 1.01171875, 3.4028235e38, -0.0, np.inf, 1e-45], np.float32)
    # 1.00390625 = 1 + 2^-8: a tie, rounds to even (1.0); 1 + 3*2^-8: tie, rounds up to 1 + 2^-6
    assert _bf16_bits_from_f32(f).tolist() == [0x3F80, 0x3F80, 0x3F82, 0x7F80, 0x8000, 0x7F80, 0x0000]
    assert _bf16_bits_from_f32(np.array([np.nan], np.float32))[0] & 0x7FC0 == 0x7FC0


def test_raw_long_tensor(tmp_path):
    a = np.arange(3_000_001, dtype=np.int32)
    r, _ = _write_read(tmp_path, lambda w: w.add_raw("long", a))
    assert np.array_equal(r.read("long"), a)


@st.composite
def codebook_tensors(draw, max_k=300):
    shape = draw(shapes)
    numel = int(np.prod(shape)) if shape else 1
    rows = shape[0] if shape else 1
    k = draw(st.integers(1, max_k))
    cb = draw(hnp.arrays(np.float32, k, elements=st.floats(-1e4, 1e4, width=32)))
    mode = draw(st.sampled_from(["random", "constant", "skewed"]))
    dt = np.uint8 if k <= 256 else np.uint16
    if mode == "constant":
        idx = np.full(numel, draw(st.integers(0, k - 1)), dtype=dt)
    else:
        idx = draw(hnp.arrays(dt, numel, elements=st.integers(0, k - 1)))
        if mode == "skewed" and numel:
            idx = np.minimum(idx, draw(st.integers(0, k - 1))).astype(dt)
    scales = draw(st.none() | hnp.arrays(np.float32, rows, elements=st.floats(-100, 100, width=32)))
    ctx = draw(st.none() | hnp.arrays(np.uint16, rows, elements=st.integers(0, 3)))
    decoded = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64"]))
    return CodebookTensor(tuple(shape), cb, idx, scales, ctx, decoded)


@settings(max_examples=60, **SETTINGS)
@given(ct=codebook_tensors(), codec=st.sampled_from(["rans", "packed", None]), chunk=st.sampled_from([1, 7, 64, 65536]),
       precision=st.sampled_from([None, 9, 12, 16]))
def test_codebook_roundtrip(tmp_path, ct, codec, chunk, precision):
    def fill(w):
        w.add_codebook("w", ct, "float32", codec=codec, chunk_size=chunk, precision=precision)
    try:
        r, _ = _write_read(tmp_path, fill)
    except ValueError as e:       # more used symbols than 2**precision slots: refused at write time
        assert precision is not None and "slots" in str(e)
        return
    out = r.read("w")
    want = reconstruct(ct)
    assert out.shape == ct.shape and out.dtype == want.dtype
    assert _bits(out) == _bits(want)
    if codec == "packed":
        assert r.info("w").codec.name == "CODEBOOK_PACKED"


def test_reconstruct_formula_is_one_f32_multiply():
    cb = np.array([0.1, 3.0], np.float32)
    sc = np.array([0.3, 7.0], np.float32)
    ct = CodebookTensor((2, 2), cb, np.array([0, 1, 1, 0], np.uint8), sc)
    want = np.array([[np.float32(0.1) * np.float32(0.3), np.float32(3.0) * np.float32(0.3)],
                     [np.float32(3.0) * np.float32(7.0), np.float32(0.1) * np.float32(7.0)]], np.float32)
    assert _bits(reconstruct(ct)) == _bits(want)


@settings(max_examples=40, **SETTINGS)
@given(bits=st.integers(1, 16), n=st.integers(0, 300), data=st.data())
def test_pack_unpack_all_widths(bits, n, data):
    idx = data.draw(hnp.arrays(np.uint32, n, elements=st.integers(0, (1 << bits) - 1)))
    packed = pack_indices(idx, bits)
    assert len(packed) == (n * bits + 7) // 8
    assert np.array_equal(unpack_indices(np.frombuffer(packed, np.uint8), n, bits), idx)


def test_pack_bit_order_pinned():
    # LSB-first: indices 1, 2, 3 at 3 bits -> bits 100 010 110 (stream order) -> byte 0b11010001, byte 0b0
    assert pack_indices(np.array([1, 2, 3]), 3) == bytes([0b11010001, 0b00000000])
    assert pack_indices(np.array([5, 0, 7, 1]), 4) == bytes([0x05, 0x17])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)


def _portable_asset_names(assets) -> bool:
    """spec §9 rules 5-6: no case-only duplicates, no name that is also another's folder"""
    seen, folders = set(), set()
    try:
        for name in assets:
            check_asset_names_unique(name, seen, folders)
    except ValueError:
        return False
    return True


@settings(max_examples=60, **SETTINGS)
@given(meta=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       assets=st.dictionaries(st.from_regex(r"[a-z]{1,5}(/[a-z0-9._-]{1,5}){0,2}", fullmatch=True)
                              .filter(lambda s: asset_name_problem(s) is None),
                              st.binary(max_size=50), max_size=3).filter(_portable_asset_names))
def test_metadata_and_assets_roundtrip(tmp_path, meta, assets):
    def fill(w):
        w.set_metadata(meta)
        for k, v in assets.items():
            w.add_asset(k, v)
    r, _ = _write_read(tmp_path, fill)
    assert r.metadata == meta
    assert r.assets == assets


def test_metadata_refused_at_write():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with AcqeWriter(os.path.join(d, "m.acqe")) as w:
            for bad in [{"a": float("nan")}, {"a": 2**70}, {"a": "\ud800"}, {1: 1, "1": 2}]:
                with pytest.raises(ValueError):
                    w.set_metadata(bad)


def _sample(w, seed=0):
    rng = np.random.default_rng(seed)
    w.set_metadata({"architecture": "x", "z": [1, 2], "a": {"b": None}})
    w.add_asset("tok/vocab.json", b'{"a":1}')
    w.add_raw("bias", rng.standard_normal(10).astype(np.float32))
    ct = CodebookTensor((20, 30), rng.standard_normal(9).astype(np.float32),
                        rng.integers(0, 9, 600).astype(np.uint8), rng.random(20).astype(np.float32),
                        (np.arange(20) % 2).astype(np.uint16))
    w.add_codebook("w", ct, codec="rans", chunk_size=100)
    w.add_codebook("p", ct, codec="packed")


def test_deterministic_bytes(tmp_path):
    for name in ("a.acqe", "b.acqe"):
        with AcqeWriter(tmp_path / name) as w:
            _sample(w)
    assert (tmp_path / "a.acqe").read_bytes() == (tmp_path / "b.acqe").read_bytes()


def test_atomic_write_on_exception(tmp_path):
    target = tmp_path / "out.acqe"
    with pytest.raises(RuntimeError):
        with AcqeWriter(target) as w:
            _sample(w)
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert os.listdir(tmp_path) == []      # no temp or spool file left behind either


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.acqe"
    with AcqeWriter(target) as w:
        w.add_raw("x", np.zeros(3, np.float32))
    old = target.read_bytes()
    import acqe_format.writer as W

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(W.os, "fsync", boom)
    with pytest.raises(OSError):
        with AcqeWriter(target) as w:
            w.add_raw("y", np.ones(3, np.float32))
    assert target.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["out.acqe"]


def test_writer_state_machine(tmp_path):
    w = AcqeWriter(tmp_path / "s.acqe")
    w.add_raw("x", np.zeros(2, np.int8))
    with pytest.raises(ValueError):
        w.add_raw("x", np.zeros(2, np.int8))            # duplicate name
    with pytest.raises(ValueError):
        w.add_raw("", np.zeros(2, np.int8))
    with pytest.raises(ValueError):
        w.add_raw("y", np.zeros(2, np.float32), dtype="float16")   # no silent casts
    with pytest.raises(Exception):
        w.add_asset("../x", b"")
    w.close()
    for call in (lambda: w.add_raw("z", np.zeros(1)), lambda: w.set_metadata({}), w.close,
                 lambda: w.add_asset("a", b"")):
        with pytest.raises(WriteOrderError):
            call()
    assert os.path.exists(tmp_path / "s.acqe")


def test_file_mode_respects_umask(tmp_path):
    with AcqeWriter(tmp_path / "m.acqe") as w:
        w.add_raw("x", np.zeros(1, np.int8))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "m.acqe").st_mode & 0o777 == 0o666 & ~umask


def test_reader_from_bytes_and_lazy_listing(tmp_path):
    with AcqeWriter(tmp_path / "l.acqe") as w:
        _sample(w)
    data = (tmp_path / "l.acqe").read_bytes()
    r = AcqeReader(data)
    assert [t.name for t in r.tensors] == ["bias", "w", "p"]
    assert r.version == (1, 0)
    t = r.info("w")
    assert t.codec.name == "CODEBOOK_RANS" and t.numel == 600 and t.shape == (20, 30)
    assert np.array_equal(r.read("w"), r.read("p"))
    with pytest.raises(KeyError):
        r.read("nope")


def test_iter_tensors_threads_agree(tmp_path):
    with AcqeWriter(tmp_path / "i.acqe") as w:
        _sample(w)
    r = AcqeReader(tmp_path / "i.acqe")
    one = {n: _bits(a) for n, a in r.iter_tensors(threads=1)}
    two = {n: _bits(a) for n, a in r.iter_tensors(threads=2)}
    assert one == two and list(one) == ["bias", "w", "p"]


@settings(max_examples=40, **SETTINGS)
@given(ct=codebook_tensors(max_k=1000))
def test_numba_reconstruct_matches_numpy_twin(ct):
    from acqe_format.codecs.codebook import _values, _values_numpy
    sc = None if ct.row_scales is None else ct.row_scales
    a = _values(ct.codebook, ct.indices, sc, ct.shape, ct.decoded_dtype, threads=2)
    b = _values_numpy(ct.codebook, ct.indices, sc, ct.shape, ct.decoded_dtype)
    assert _bits(a) == _bits(b)


def test_numba_f16_bf16_conversion_edges():
    from numba import njit

    from acqe_format.codecs import _kernels as K

    @njit
    def conv(u, out16, outb):
        for i in range(u.shape[0]):
            out16[i] = K.f32_bits_to_f16_bits(u[i])
            outb[i] = K.f32_bits_to_bf16_bits(u[i])
    rng = np.random.default_rng(5)
    u = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32),
                        np.array([0x477FEFFF, 0x477FF000, 0x38800000, 0x387FFFFF, 0x33000000, 0x33000001,
                                  0x32FFFFFF, 0x33C00000, 0x7F800000, 0xFF800000, 0x80000000, 0x7F7FFFFF], np.uint32)])
    f = u.view(np.float32)
    h, b = np.empty(u.size, np.uint16), np.empty(u.size, np.uint16)
    conv(u, h, b)
    ok = ~np.isnan(f)
    with np.errstate(over="ignore"):
        assert np.array_equal(h[ok], f[ok].astype(np.float16).view(np.uint16))
    assert np.array_equal(b[ok], _bf16_bits_from_f32(f[ok]))


@settings(max_examples=30, **SETTINGS)
@given(bits=st.integers(1, 16), n=st.integers(0, 3000), start=st.integers(0, 50), data=st.data())
def test_numba_unpack_matches_numpy(bits, n, start, data):
    from acqe_format.codecs import _kernels as K
    idx = data.draw(hnp.arrays(np.uint32, n, elements=st.integers(0, (1 << bits) - 1)))
    buf = np.frombuffer(pack_indices(idx, bits), np.uint8)
    out = np.zeros(n, np.uint16)
    s = min(start, n)
    m1 = K.unpack_range(buf, bits, 0, s, out)
    m2 = K.unpack_range(buf, bits, s, n, out)
    assert np.array_equal(out, idx)
    assert max(m1, m2) == (int(idx.max()) if n else 0)


def test_codebook_long_tensor_threads(tmp_path):
    """3M indices in 46 chunks, contexts and scales, decoded with 1 and 2 threads: identical."""
    rng = np.random.default_rng(11)
    rows, cols = 1000, 3000
    ct = CodebookTensor((rows, cols), rng.standard_normal(16).astype(np.float32),
                        np.clip(np.round(rng.laplace(7.5, 1.5, rows * cols)), 0, 15).astype(np.uint8),
                        rng.random(rows).astype(np.float32), (np.arange(rows) % 3).astype(np.uint16), "float16")
    r, _ = _write_read(tmp_path, lambda w: (w.add_codebook("w", ct, codec="rans"),
                                           w.add_codebook("p", ct, codec="packed")))
    want = _bits(reconstruct(ct))
    assert _bits(r.read("w", threads=1)) == want == _bits(r.read("w", threads=2))
    assert _bits(r.read("p", threads=2)) == want
    assert r.info("w").payload_length < r.info("p").payload_length


def test_writer_predicts_its_size(tmp_path):
    w = AcqeWriter(tmp_path / "s.acqe")
    _sample(w)
    meta = {"sizes": {"file_bytes": 0}}
    size = w.file_size(meta)
    meta["sizes"]["file_bytes"] = size
    assert w.file_size(meta) == size          # the longer number fits in the metadata's alignment padding
    w.set_metadata(meta)
    assert w.data_bytes > 0
    w.close()
    assert os.path.getsize(tmp_path / "s.acqe") == size


def test_auto_codec_falls_back_to_packing(tmp_path):
    """10 000 contexts x 2^12 slots exceed the 2^24 slot limit: auto mode packs, forced rANS refuses."""
    rows = 10_000
    ct = CodebookTensor((rows, 2), np.array([1.0, 2.0], np.float32), np.ones(2 * rows, np.uint8), None,
                        np.arange(rows, dtype=np.uint16))
    r, _ = _write_read(tmp_path, lambda w: w.add_codebook("w", ct, precision=12))
    assert r.info("w").codec.name == "CODEBOOK_PACKED"
    with AcqeWriter(tmp_path / "x.acqe") as w:
        with pytest.raises(ValueError, match="slots"):
            w.add_codebook("w", ct, codec="rans", precision=12)
