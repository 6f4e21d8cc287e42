"""Format 1.1: zlib-compressed DIRECTORY and METADATA sections (spec/ACQE.md §4.1).

Writer round trips (hypothesis), files without compression staying 1.0 byte for byte, the bounded
inflation (a bomb allocates nothing near its inflated size), the 16 MiB limit on raw and stored lengths,
replace_metadata on compressed files, and what `acqe inspect` shows."""
from __future__ import annotations

import json
import os
import random
import struct
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acqe_cli.main import cli
from acqe_format import (AcqeError, AcqeReader, AcqeWriter, CodebookTensor, LayoutError, LimitExceededError,
                         replace_metadata)
from acqe_format import constants as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = os.path.join(ROOT, "spec", "vectors")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PREFIX = "model.diffusion_model.input_blocks.{}.1.transformer_blocks.0.attn1.to_{}.weight"


def _builder():
    sys.path.insert(0, VEC)
    try:
        import generate
    finally:
        sys.path.remove(VEC)
    return generate


def _fill(w, n, seed=0, meta=None):
    rng = np.random.default_rng(seed)
    w.set_metadata(meta if meta is not None else {"architecture": "t", "configs": {"unet": {"ch": list(range(50))}}})
    for i in range(n):
        name = PREFIX.format(i // 3, "qkv"[i % 3])
        if i % 4 == 3:
            ct = CodebookTensor((4, 10), rng.standard_normal(8).astype(np.float32),
                                rng.integers(0, 8, 40).astype(np.uint8), rng.random(4).astype(np.float32))
            w.add_codebook(name, ct, codec="rans" if i % 8 == 3 else "packed")
        else:
            w.add_raw(name, rng.standard_normal(i % 5).astype(np.float16))


def _tensors(r):
    return {t.name: (t.shape, t.codec, np.ascontiguousarray(r.read(t.name)).tobytes()) for t in r.tensors}


def test_compressed_roundtrip_and_api(tmp_path):
    plain, packed = tmp_path / "p.acqe", tmp_path / "z.acqe"
    for path, comp in ((plain, False), (packed, True)):
        with AcqeWriter(path, compress_sections=comp) as w:
            _fill(w, 90)
    rp, rz = AcqeReader(plain), AcqeReader(packed)
    rp.verify()
    rz.verify()
    assert rp.version == (1, 0) and rp.header.required_features == 0 and not rp.compressed
    assert rz.version == (1, 1) and rz.header.required_features == C.FEATURE_COMPRESSED_SECTIONS and rz.compressed
    assert [s.flags for s in rz.sections] == [3, 3, 1]
    d, m = rz.sections[0], rz.sections[1]
    assert rz.raw_length(d) == rp.sections[0].length and rz.raw_length(m) == rp.sections[1].length
    assert d.length < rz.raw_length(d) // 4                       # long shared prefixes compress well
    assert rz.raw_length(rz.sections[2]) == rz.sections[2].length
    assert rz.metadata == rp.metadata and _tensors(rz) == _tensors(rp)
    assert os.path.getsize(packed) < os.path.getsize(plain)
    # deterministic
    with AcqeWriter(tmp_path / "z2.acqe", compress_sections=True) as w:
        _fill(w, 90)
    assert (tmp_path / "z2.acqe").read_bytes() == packed.read_bytes()


def test_compression_off_writes_1_0_files(tmp_path):
    """compress_sections=False (the default) and compress_sections=True with nothing to gain both write
    the 1.0 file byte for byte: minor 0, no feature bits, flags 1."""
    for comp in (False, True):
        with AcqeWriter(tmp_path / f"e{comp}.acqe", compress_sections=comp):
            pass
    empty = (tmp_path / "eFalse.acqe").read_bytes()
    assert len(empty) == 368 and (tmp_path / "eTrue.acqe").read_bytes() == empty
    assert struct.unpack_from("<HHIQ", empty, 8) == (1, 0, 64, 0)
    with AcqeWriter(tmp_path / "d.acqe") as w:
        _fill(w, 30)
    r = AcqeReader(tmp_path / "d.acqe")
    assert r.version == (1, 0) and r.header.required_features == 0 and all(s.flags == 1 for s in r.sections)
    # the valid 1.0 vectors are what the writer still writes (the generator test checks the bytes)
    doc = json.load(open(os.path.join(VEC, "valid", "001-raw-f32.json"), encoding="utf-8"))
    assert doc["version"] == [1, 0]


def test_only_metadata_compressed_when_directory_does_not_shrink(tmp_path):
    with AcqeWriter(tmp_path / "m.acqe", compress_sections=True) as w:
        w.set_metadata({"note": "abc " * 100})
    r = AcqeReader(tmp_path / "m.acqe")
    r.verify()
    assert r.version == (1, 1) and [s.compressed for s in r.sections] == [False, True, False]
    assert r.metadata == {"note": "abc " * 100}


names = st.lists(st.text(alphabet="abc._0123", min_size=1, max_size=40), min_size=0, max_size=40, unique=True)


@settings(max_examples=40, **SETTINGS)
@given(names=names, alignment=st.sampled_from([16, 64, 4096]), seed=st.integers(0, 2**32 - 1),
       meta=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-5, 5), st.text(max_size=30)), max_size=20),
       prefix=st.sampled_from(["", "model.diffusion_model.output_blocks.", "first_stage_model.decoder.up."]))
def test_compressed_roundtrip_property(tmp_path, names, alignment, seed, meta, prefix):
    """Any tensors, names and metadata: the compressed file reads back like the plain one; each section
    is compressed exactly when its compressed form is smaller; the file is 1.1 exactly when one is."""
    rng = np.random.default_rng(seed)
    arrays = {prefix + n: rng.standard_normal(rng.integers(0, 7)).astype(np.float32) for n in names}
    files = {}
    for comp in (False, True):
        p = tmp_path / f"h{int(comp)}.acqe"
        with AcqeWriter(p, alignment=alignment, compress_sections=comp) as w:
            w.set_metadata(meta)
            for n, a in arrays.items():
                w.add_raw(n, a)
        r = AcqeReader(p)
        r.verify()
        files[comp] = r
    r0, r1 = files[False], files[True]
    assert r1.metadata == r0.metadata == meta
    assert _tensors(r1) == _tensors(r0)
    for s0, s1 in zip(r0.sections[:2], r1.sections[:2]):
        assert r1.raw_length(s1) == s0.length
        if s1.compressed:
            assert s1.length < s0.length
    assert (r1.version == (1, 1)) == r1.compressed == (r1.header.required_features == 1)
    # METADATA does not depend on the layout: compressed exactly when 8 + zlib(level 9) is smaller
    raw_meta = r0.sections[1].length
    want = 8 + len(zlib.compress(json.dumps(meta, ensure_ascii=False, sort_keys=True,
                                            separators=(",", ":")).encode(), 9)) < raw_meta
    assert r1.sections[1].compressed == want
    # the writer's size prediction holds with compression too
    w = AcqeWriter(tmp_path / "s.acqe", alignment=alignment, compress_sections=True)
    w.set_metadata(meta)
    for n, a in arrays.items():
        w.add_raw(n, a)
    size = w.file_size()
    w.close()
    assert size == os.path.getsize(tmp_path / "s.acqe") == os.path.getsize(tmp_path / "h1.acqe")


def _zfile(meta_store, meta=b'{"a":1}', tensors=True, required=1):
    g = _builder()
    ts = [g.raw_t("x", np.arange(6, dtype=np.float32), 1)] if tensors else []
    return g.Builder([g.S(1), g.zsec(2, meta, meta_store), g.S(4)], ts, minor=1, required=required).build()


def _traced(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_bomb_is_refused_without_allocating(tmp_path):
    """A stream inflating to 32 MiB whose raw_length says 1 MiB: the reader stops after 1 MiB + 1 bytes of
    output. A tiny stream claiming 2^40 bytes: refused by the limit before anything is inflated."""
    huge = b'{"a":"' + b" " * (32 << 20) + b'"}'
    stream = zlib.compress(huge, 9)
    assert len(stream) < 64 << 10
    data = _zfile(lambda raw: struct.pack("<Q", 1 << 20) + stream)
    del huge

    def open_it():
        with pytest.raises(LayoutError, match="inflates to more than its raw_length"):
            AcqeReader(data)
    peak = _traced(open_it)
    assert peak < (1 << 20) * 3 + (256 << 10), peak            # ~ raw_length (+ one piece), never 32 MiB

    claim = _zfile(lambda raw: struct.pack("<Q", 1 << 40) + zlib.compress(raw, 9))

    def open_claim():
        with pytest.raises(LimitExceededError, match="after decompression"):
            AcqeReader(claim)
    assert _traced(open_claim) < 256 << 10


def test_raw_and_stored_limits():
    """16 MiB of DIRECTORY + METADATA contents: at the cap is fine, one byte more is LimitExceeded, read from
    raw_length before inflating; the stored lengths are capped too (a stored-block stream of nearly 16 MiB)."""
    dir_len = 4
    for extra, ok in ((0, True), (1, False)):
        body = b'{"a":"' + b"x" * (C.MAX_DIRECTORY_PLUS_METADATA - dir_len - 8 + extra) + b'"}'
        data = _zfile(_builder().zwrap, body, tensors=False)
        assert len(data) < 1 << 20
        if ok:
            AcqeReader(data).verify()
        else:
            with pytest.raises(LimitExceededError, match="after decompression"):
                AcqeReader(data)
    body = b'{"a":"' + b"x" * (C.MAX_DIRECTORY_PLUS_METADATA - 64) + b'"}'
    stored = struct.pack("<Q", len(body)) + zlib.compress(body, 0)      # stored blocks: longer than raw
    with pytest.raises(LimitExceededError, match=r"directory \+ metadata are \d+ bytes \(limit"):
        AcqeReader(_zfile(lambda raw: stored, body, tensors=False))


@pytest.mark.parametrize("store,err,frag", [
    (lambda raw: struct.pack("<Q", len(raw)) + zlib.compress(raw, 9)[:-1], LayoutError, "does not end inside"),
    (lambda raw: struct.pack("<Q", len(raw)), LayoutError, "does not end inside"),
    (lambda raw: b"\x01\x02", LayoutError, "too short"),
    (lambda raw: struct.pack("<Q", len(raw)) + zlib.compress(raw, 9) + zlib.compress(b"", 9), LayoutError,
     "trailing bytes"),
    (lambda raw: struct.pack("<Q", len(raw)) + zlib.compress(raw, 9, wbits=-15), LayoutError, "invalid zlib"),
    (lambda raw: struct.pack("<Q", len(raw)) + zlib.compress(raw, 9, wbits=31), LayoutError, "invalid zlib"),
])
def test_malformed_streams(store, err, frag):
    """Truncated, empty, raw-deflate (no zlib wrapper), gzip wrapper, a second stream after the first."""
    with pytest.raises(err, match=frag):
        AcqeReader(_zfile(store))


def test_any_deflate_encoding_is_accepted():
    """Levels 0..9, small windows and strategies all give valid files: the format fixes the contents,
    not the encoder."""
    meta = json.dumps({"k": ["value"] * 50}).replace(" ", "").encode()
    for level in range(10):
        for wbits in (9, 15):
            for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FIXED, zlib.Z_HUFFMAN_ONLY):
                c = zlib.compressobj(level, zlib.DEFLATED, wbits, 8, strategy)
                z = c.compress(meta) + c.flush()
                r = AcqeReader(_zfile(lambda raw, z=z: struct.pack("<Q", len(raw)) + z, meta))
                r.verify()
                assert r.metadata == {"k": ["value"] * 50}


def test_feature_bit_without_compressed_section_is_valid():
    g = _builder()
    data = g.Builder([g.S(1), g.S(2, b"{}"), g.S(4)], [], minor=1, required=1).build()
    r = AcqeReader(data)
    r.verify()
    assert r.version == (1, 1) and not r.compressed


def test_unknown_kind_with_compressed_flag_is_layout():
    g = _builder()
    data = g.Builder([g.S(1), g.S(2, b"{}"), g.S(0x7FFF0001, b"x" * 20, flags=2), g.S(4)], [], minor=1,
                     required=1).build()
    with pytest.raises(LayoutError, match="allowed only on DIRECTORY and METADATA"):
        AcqeReader(data)


def test_every_single_byte_flip_of_a_compressed_file_is_detected(tmp_path):
    p = tmp_path / "f.acqe"
    with AcqeWriter(p, alignment=16, compress_sections=True) as w:
        _fill(w, 12)
    sample = p.read_bytes()
    assert AcqeReader(sample).compressed
    rng = random.Random(5)
    missed = []
    for pos in range(len(sample)):
        b = bytearray(sample)
        b[pos] ^= 1 << rng.randrange(8)
        try:
            AcqeReader(bytes(b)).verify()
            missed.append(pos)
        except AcqeError:
            pass
    assert not missed


def test_replace_metadata_keeps_compression(tmp_path):
    for comp in (True, False):
        p = tmp_path / f"r{comp}.acqe"
        with AcqeWriter(p, compress_sections=comp) as w:
            _fill(w, 40)
        with AcqeReader(p) as r:
            before = {t.name: bytes(r._payload(t)) for t in r.tensors}
        replace_metadata(p, {"architecture": "t", "recat": {"steps": 50, "full": list(range(0, 50, 3))}})
        with AcqeReader(p) as r:
            r.verify()
            assert r.metadata["recat"]["steps"] == 50
            assert {t.name: bytes(r._payload(t)) for t in r.tensors} == before
            assert r.compressed == comp and r.version == ((1, 1) if comp else (1, 0))
            if comp:
                assert r.sections[0].compressed


def test_inspect_shows_stored_and_raw_sizes(tmp_path):
    p = tmp_path / "i.acqe"
    with AcqeWriter(p, compress_sections=True) as w:
        _fill(w, 60)
    r = AcqeReader(p)
    d = r.sections[0]
    res = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["inspect", "--no-tensors", str(p)])
    assert res.exit_code == 0, res.output
    assert "ACQE 1.1" in res.output and "COMPRESSED_SECTIONS" in res.output
    assert f"DIRECTORY @{d.offset} ({d.length:,} B, zlib of {r.raw_length(d):,} B)" in res.output
    res = CliRunner().invoke(cli, ["inspect", "--json", str(p)])
    info = json.loads(res.output)
    assert info["version"] == "1.1" and info["required_features"] == ["COMPRESSED_SECTIONS"]
    s0 = info["sections"][0]
    assert s0["compressed"] is True and s0["length"] == d.length and s0["raw_length"] == r.raw_length(d)
    assert info["sections"][2]["compressed"] is False and info["sections"][2]["raw_length"] == r.sections[2].length


def test_directory_layout_settles_even_when_lengths_oscillate(tmp_path):
    """The compressed directory's length moves DATA, which changes the directory. The writer's search only
    moves DATA later, so it ends even when the stored length oscillates (forced here: every other round's
    stored form is 256 bytes longer); the file is valid, compressed and deterministic."""
    class Oscillating(AcqeWriter):
        rounds = 0

        def _stored(self, raw):
            stored, flags = super()._stored(raw)
            if raw[:1] != b"{" and flags & C.SECTION_FLAG_COMPRESSED:     # the directory, compressed
                Oscillating.rounds += 1
                if Oscillating.rounds % 2:
                    stored = self._padded(raw, 256 // 5)
            return stored, flags

    outs = []
    for i in range(2):
        p = tmp_path / f"o{i}.acqe"
        Oscillating.rounds = 0
        with Oscillating(p, compress_sections=True) as w:
            _fill(w, 60, meta={"note": "x" * 300})
        r = AcqeReader(p)
        r.verify()
        assert [s.compressed for s in r.sections] == [True, True, False] and r.version == (1, 1)
        outs.append(p.read_bytes())
    assert outs[0] == outs[1] and Oscillating.rounds >= 2


@pytest.mark.parametrize("alignment", [16, 64, 4096])
@pytest.mark.parametrize("n", [12, 40, 333])
def test_compressed_directory_always_fits_its_layout(tmp_path, alignment, n):
    """Whatever the alignment and size, the directory ends up compressed (the layout search settles and
    pads the stream to fill the space exactly; the reader's layout checks verify the placement)."""
    import zlib

    p = tmp_path / "f.acqe"
    with AcqeWriter(p, alignment, compress_sections=True) as w:
        _fill(w, n)
    r = AcqeReader(p)
    r.verify()
    d = r.sections[0]
    if not d.compressed:   # compressing cannot move DATA earlier when the alignment swallows the gain
        assert alignment > d.length
        return
    assert d.length < r.raw_length(d)
    stream = p.read_bytes()[d.offset + 8:d.offset + d.length]
    assert len(zlib.decompress(stream)) == r.raw_length(d)


def test_padded_stream_is_valid_and_five_bytes_per_block():
    import zlib

    data = bytes(range(256)) * 7
    base = AcqeWriter._padded(data, 0)
    for k in range(4):
        s = AcqeWriter._padded(data, k)
        assert len(s) == len(base) + 5 * k and s[:8] == base[:8]
        assert zlib.decompress(s[8:]) == data
