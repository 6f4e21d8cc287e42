"""Mutation tests: single-byte flips and truncations of valid files are all rejected with an AcqeError
(never another exception), quickly and without allocating out of proportion to the file; mutations that
are re-sealed with correct checksums exercise the validation behind the CRCs."""
from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from acqe_format import AcqeError, AcqeReader, AcqeWriter, CodebookTensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PEAK = 8 << 20          # bytes traced per verify of a ~2 KB mutant (decoded data is a few KB)


def _crc(b) -> int:
    return zlib.crc32(b) & 0xFFFFFFFF


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> bytes:
    """A small file with every feature: metadata, assets, RAW, packed, rANS with scales/contexts/chunks."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("m") / "sample.acqe"
    with AcqeWriter(path, alignment=16) as w:
        w.set_metadata({"architecture": "mut", "components": {"u": "u."}, "n": [1, 2.5, None]})
        w.add_asset("tok/a.txt", b"hello")
        w.add_raw("u.bias", rng.standard_normal(5).astype(np.float32))
        w.add_raw("ids", np.arange(4, dtype=np.int64))
        w.add_raw("flag", np.array([True, False]))
        ct = CodebookTensor((6, 20), rng.standard_normal(6).astype(np.float32),
                            np.minimum(rng.geometric(0.4, 120) - 1, 5).astype(np.uint8),
                            (0.5 + rng.random(6)).astype(np.float32), np.array([0, 1, 0, 1, 1, 0], np.uint16))
        w.add_codebook("u.w", ct, codec="rans", chunk_size=32, precision=10)
        w.add_codebook("u.p", ct, codec="packed")
    data = path.read_bytes()
    AcqeReader(data).verify()
    return data


def _check_rejected(data: bytes) -> AcqeError:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        AcqeReader(data).verify()
    except AcqeError as e:
        err = e
    else:
        err = None
    finally:
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert peak < MAX_PEAK, f"peak {peak} bytes"
    return err


def test_every_single_byte_flip_is_detected(sample):
    rng = random.Random(1)
    missed = []
    for pos in range(len(sample)):
        b = bytearray(sample)
        b[pos] ^= 1 << rng.randrange(8)
        if _check_rejected(bytes(b)) is None:
            missed.append(pos)
    assert not missed, f"undetected flips at {missed[:10]}"


def test_every_truncation_is_rejected(sample):
    for n in range(len(sample)):
        err = _check_rejected(sample[:n])
        assert err is not None, n


def _reseal(data: bytearray) -> bytearray:
    """Recompute every checksum the (possibly broken) structure still lets us find."""
    n = len(data)
    if n < 64:
        return data
    count = struct.unpack_from("<I", data, 44)[0]
    if 64 + 32 * count <= n and count <= 64:
        entries = [list(struct.unpack_from("<IIQQII", data, 64 + 32 * i)) for i in range(count)]
        for e in entries:
            kind, _f, off, length = e[:4]
            if kind == 1 and off + length <= n:      # directory: re-seal payload CRCs first
                _reseal_payloads(data, off, length)
        for i, e in enumerate(entries):
            kind, _f, off, length = e[:4]
            if kind != 4 and off + length <= n:
                e[4] = _crc(data[off:off + length])
                struct.pack_into("<IIQQII", data, 64 + 32 * i, *e)
        struct.pack_into("<I", data, 56, _crc(data[64:64 + 32 * count]))
    struct.pack_into("<I", data, 60, _crc(data[:60]))
    if n >= 112:
        data[n - 48:n - 16] = hashlib.sha256(data[:n - 48]).digest()
    return data


def _reseal_payloads(data: bytearray, off: int, length: int) -> None:
    d = bytes(data[off:off + length])
    if len(d) < 4:
        return
    pos = 4
    for _ in range(min(struct.unpack_from("<I", d, 0)[0], 1000)):
        if pos + 2 > len(d):
            return
        nlen = struct.unpack_from("<H", d, pos)[0]
        pos += 2 + nlen
        if pos + 8 > len(d):
            return
        rank = d[pos]
        pos += 8 + 8 * rank
        if pos + 28 > len(d):
            return
        poff, plen, checked, _c = struct.unpack_from("<QQQI", d, pos)
        if poff + checked <= len(data):
            struct.pack_into("<I", data, off + pos + 24, _crc(data[poff:poff + checked]))
        pos += 28


def test_resealed_mutations_only_raise_acqe_errors(sample):
    """Random byte changes with all checksums recomputed: the structural checks alone must reject or
    accept them, and only ever through AcqeError (no IndexError, MemoryError, OverflowError, ...)."""
    rng = random.Random(2)
    rejected = accepted = 0
    for _ in range(1500):
        b = bytearray(sample)
        for _ in range(rng.choice([1, 1, 2, 4])):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice([0, 0xFF, b[pos] ^ (1 << rng.randrange(8)), rng.randrange(256)])
        try:
            AcqeReader(bytes(_reseal(b))).verify()
            accepted += 1
        except AcqeError:
            rejected += 1
    assert rejected > 1000


def test_resealed_mutations_bounded_memory(sample):
    rng = random.Random(3)
    for _ in range(150):
        b = bytearray(sample)
        pos = rng.randrange(len(b))
        b[pos] = rng.randrange(256)
        _check_rejected(bytes(_reseal(b)))     # peak memory and time asserted inside


def test_declared_huge_sizes_allocate_nothing(sample):
    """A directory declaring 2**32-1 tensors, a dim of 2**60, a section of 2**63 bytes: all refused
    before any allocation proportional to the declared size."""
    d = bytearray(sample)
    r = AcqeReader(sample)
    dsec = r.sections[0]
    struct.pack_into("<I", d, dsec.offset, 0xFFFFFFFF)
    err = _check_rejected(bytes(_reseal(d)))
    assert err is not None and "limit" in str(err)


def test_mutate_tool_subprocess(sample, tmp_path):
    """/work/shared/tools/mutate.py (when present) against the installed `acqe`, on a short budget."""
    tool = "/work/shared/tools/mutate.py"
    exe = os.path.join(os.path.dirname(sys.executable), "acqe")
    if not (os.path.exists(tool) and os.path.exists(exe)):
        pytest.skip("mutate.py or the acqe console script is not available")
    f = tmp_path / "s.acqe"
    f.write_bytes(sample)
    p = subprocess.run([sys.executable, tool, exe, str(f), "6", "3"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
