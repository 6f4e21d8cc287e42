"""spec/ACQE.md against the code: the rANS section is in sync, the code tables match constants.py, the
annotated smallest file is byte-exact, and a decoder written from the spec alone (no acqe_format
import in `spec_decode`) reproduces the hashes of every valid vector."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = open(os.path.join(ROOT, "spec", "ACQE.md"), encoding="utf-8").read()
VALID = os.path.join(ROOT, "spec", "vectors", "valid")


def test_rans_section_in_sync():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "spec", "include_rans.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def test_code_tables_match_constants():
    from acqe_format import constants as C
    dtypes = dict(re.findall(r"^\| (\d+) \| ([A-Z0-9]+) \| \d \| ", SPEC, re.M))
    assert {int(k): v for k, v in dtypes.items()} == {int(d): d.name for d in C.DType}
    sizes = {int(a): int(b) for a, b in re.findall(r"^\| (\d+) \| [A-Z0-9]+ \| (\d) \| ", SPEC, re.M)}
    assert sizes == {int(d): C.DTYPE_INFO[d][1] for d in C.DType}
    codecs = re.findall(r"^\| (\d) \| (RAW|CODEBOOK_[A-Z]+) \|", SPEC, re.M)
    assert {int(a): b for a, b in codecs} == {int(c): c.name for c in C.CodecId}
    kinds = re.findall(r"^\| (\d) \| (DIRECTORY|METADATA|ASSETS|DATA) \|", SPEC, re.M)
    assert {int(a): b for a, b in kinds} == {int(k): k.name for k in C.SectionKind}
    for text, value in [("≤ 65 536", C.MAX_TENSORS), ("≤ 8", C.MAX_RANK), ("1 … 1024", C.MAX_NAME_BYTES),
                        ("≤ 16 MiB (16 777 216)", C.MAX_DIRECTORY_PLUS_METADATA), ("≤ 4096", C.MAX_ASSETS),
                        ("≤ 64", C.MAX_SECTIONS), ("1 … 24", C.MAX_PRECISION), ("1 … 2^20", C.MAX_CHUNK_SYMBOLS)]:
        assert text in SPEC, text
    assert C.MAX_TABLE_SLOTS == 1 << 24 and "T × 2^P ≤ 2^24" in SPEC
    assert C.MAGIC.hex(" ").upper() in SPEC and C.FOOTER_MAGIC.hex(" ").upper() in SPEC


def test_smallest_file_hexdump(tmp_path):
    from acqe_format import AcqeWriter
    with AcqeWriter(tmp_path / "e.acqe"):
        pass
    data = (tmp_path / "e.acqe").read_bytes()
    assert len(data) == 368
    for off, hexes in re.findall(r"^([0-9a-f]{4}): ((?:[0-9a-f]{2} ){15}[0-9a-f]{2})", SPEC, re.M):
        o = int(off, 16)
        assert data[o:o + 16] == bytes.fromhex(hexes), off


# --- an independent decoder, from spec/ACQE.md only ---------------------------------------------------

NP = {1: "<f4", 2: "<f2", 3: "<u2", 4: "<f8", 5: "i1", 6: "u1", 7: "<i2", 8: "<i4", 9: "<i8", 10: "u1",
      11: "<u2", 12: "<u4", 13: "<u8"}


def _convert(v32: np.ndarray, dd: int) -> bytes:
    if dd == 1:
        return v32.astype("<f4").tobytes()
    if dd == 4:
        return v32.astype("<f8").tobytes()
    if dd == 2:
        return v32.astype("<f2").tobytes()
    b = v32.view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype("<u2").tobytes()


def _rans_chunk(words, syms, table_of, freqs, cums, P):
    """spec §13.6, literally."""
    W, pos, M = len(words), 0, 1 << P
    x = 0
    if W:
        assert words[0] != 0
        x, pos = words[0], 1
        if W >= 2:
            x, pos = (x << 32) | words[1], 2
    out = []
    for i in syms:
        t = table_of(i)
        z = x & (M - 1)
        s = max(k for k in range(len(cums[t])) if cums[t][k] <= z and freqs[t][k] > 0)
        out.append(s)
        x = (x >> P) * freqs[t][s] + z - cums[t][s]
        if x < (1 << 32) and pos < W:
            assert x >= freqs[t][s] << (32 - P)
            x, pos = (x << 32) | words[pos], pos + 1
    assert pos == W and x == 0
    return out


def _inflate_section(stored: bytes) -> bytes:
    """spec §4.1: u64 raw_length, then one zlib stream that inflates to exactly raw_length bytes and ends
    at the end of the section; output limited to raw_length + 1 bytes."""
    assert len(stored) >= 8
    (raw_length,) = struct.unpack_from("<Q", stored, 0)
    assert raw_length <= 16 * 1024 * 1024
    z = zlib.decompressobj()
    raw = z.decompress(stored[8:], raw_length + 1)
    assert z.eof and z.unused_data == b"" and z.unconsumed_tail == b"" and len(raw) == raw_length
    return raw


def spec_decode(path: str, want_metadata: bool = False):
    d = open(path, "rb").read()
    assert d[:8] == b"\x89ACQE\r\n\x1a"
    major, minor, hlen, req, opt, flen, align, nsec, sto, stcrc, hcrc = struct.unpack_from("<HHIQQQIIQII", d, 8)
    assert major == 1 and hlen == 64 and flen == len(d) and zlib.crc32(d[:60]) == hcrc and req & ~1 == 0
    assert zlib.crc32(d[64:64 + 32 * nsec]) == stcrc
    secs = {}
    for i in range(nsec):
        kind, flags, off, length, crc, _r = struct.unpack_from("<IIQQII", d, 64 + 32 * i)
        # flags: 1, or 3 = REQUIRED | COMPRESSED on DIRECTORY / METADATA of a COMPRESSED_SECTIONS file
        assert flags in ((1, 3) if req & 1 and kind in (1, 2) else (1,)) or (kind > 4 and flags == 0)
        if kind in (1, 2, 3, 4):
            secs[kind] = (off, length, flags)
        if kind != 4:
            assert zlib.crc32(d[off:off + length]) == crc          # over the stored bytes
    assert hashlib.sha256(d[:flen - 48]).digest() == d[flen - 48:flen - 16] and d[-8:] == b"ACQE_END"

    def contents(kind):
        off, length, flags = secs[kind]
        stored = d[off:off + length]
        return _inflate_section(stored) if flags & 2 else stored
    dirb = contents(1)
    metadata = json.loads(contents(2).decode("utf-8"))
    (count,), pos = struct.unpack_from("<I", dirb, 0), 4
    out = {}
    for _ in range(count):
        (nlen,) = struct.unpack_from("<H", dirb, pos)
        name = dirb[pos + 2:pos + 2 + nlen].decode("utf-8")
        pos += 2 + nlen
        rank, sd, dd, _r8, codec, _r16 = struct.unpack_from("<BBBBHH", dirb, pos)
        pos += 8
        shape = struct.unpack_from(f"<{rank}Q", dirb, pos)
        pos += 8 * rank
        poff, plen, checked, pcrc = struct.unpack_from("<QQQI", dirb, pos)
        pos += 28
        p = d[poff:poff + plen]
        assert zlib.crc32(p[:checked]) == pcrc
        numel = int(np.prod(shape)) if rank else 1
        if codec == 1:
            out[name] = hashlib.sha256(p).hexdigest()
            continue
        rows = shape[0] if rank else 1
        rl = numel // rows if numel else 0
        if codec == 3:
            K, bits, smode, _ = struct.unpack_from("<IBBH", p, 0)
            q = 8
        else:
            K, P, smode, cmode, _, T, C = struct.unpack_from("<IBBBBII", p, 0)
            q = 16
        cb = np.frombuffer(p, "<f4", K, q)
        q += 4 * K
        sc = None
        if smode:
            sc = np.frombuffer(p, "<f4", rows, q)
            q += 4 * rows
        if codec == 3:
            big = int.from_bytes(p[q:], "little")
            idx = [(big >> (e * bits)) & ((1 << bits) - 1) for e in range(numel)]
        else:
            ctx = None
            if cmode:
                ctx = np.frombuffer(p, "<u2", rows, q).tolist()
                q += 2 * rows
            q += -q % 4
            fr = np.frombuffer(p, "<u4", T * K, q).reshape(T, K).tolist()
            q += 4 * T * K
            cums = [[sum(f[:s]) for s in range(K)] for f in fr]
            n_chunks = -(-numel // C)
            table = np.frombuffer(p, "<u4", 2 * n_chunks, q).reshape(-1, 2).tolist()
            q += 8 * n_chunks
            assert q == checked
            idx = []
            for c, (wc, ccrc) in enumerate(table):
                wb = p[q:q + 4 * wc]
                assert zlib.crc32(wb) == ccrc
                words = list(struct.unpack(f"<{wc}I", wb))
                q += 4 * wc
                syms = range(c * C, min(numel, (c + 1) * C))
                idx += _rans_chunk(words, syms, (lambda i: ctx[i // rl]) if ctx else (lambda i: 0), fr, cums, P)
        v = cb[np.array(idx, dtype=np.int64)] if numel else np.zeros(0, np.float32)
        if sc is not None and numel:
            v = (v.reshape(rows, rl) * sc[:, None]).reshape(-1)      # float32 * float32: one rounding
        out[name] = hashlib.sha256(_convert(np.ascontiguousarray(v, np.float32), dd)).hexdigest()
    assert pos == len(dirb)
    return (out, metadata) if want_metadata else out


@pytest.mark.parametrize("stem", sorted(f[:-5] for f in os.listdir(VALID) if f.endswith(".acqe")))
def test_spec_only_decoder_matches_vectors(stem):
    doc = json.load(open(os.path.join(VALID, stem + ".json"), encoding="utf-8"))
    with np.errstate(over="ignore"):
        got, metadata = spec_decode(os.path.join(VALID, stem + ".acqe"), want_metadata=True)
    assert got == {t["name"]: t["sha256"] for t in doc["tensors"]}
    assert metadata == doc["metadata"]
    assert doc["version"] == [1, 1 if "compressed" in stem else (7 if "future" in stem else 0)]


def test_spec_only_decoder_sees_compressed_sections():
    """The 1.1 vectors really use compression (so the test above exercises §4.1)."""
    stems = [f[:-5] for f in os.listdir(VALID) if f.endswith(".acqe") and "compressed" in f]
    assert len(stems) >= 2
    for stem in stems:
        d = open(os.path.join(VALID, stem + ".acqe"), "rb").read()
        (req,) = struct.unpack_from("<Q", d, 16)
        flags = [struct.unpack_from("<I", d, 64 + 32 * i + 4)[0] for i in range(struct.unpack_from("<I", d, 44)[0])]
        assert req == 1 and 3 in flags, stem
