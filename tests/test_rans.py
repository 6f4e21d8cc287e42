"""Unit, differential and compatibility tests of the chunked rANS coder (acqe_format/rans.py).

Sized to run under NUMBA_DISABLE_JIT=1 too (then the numba kernels run as plain Python).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from acqe_format import rans
from acqe_format.errors import AcqeFormatError, CodecError

SPEC = Path(__file__).resolve().parents[1] / "spec" / "ACQE-rans.md"


def laplace_indices(rng, k, n, scale=2.0):
    p = np.exp(-np.abs(np.arange(k) - (k - 1) / 2) / scale)
    p /= p.sum()
    return rng.choice(k, n, p=p).astype(np.uint8 if k <= 256 else np.uint16)


def roundtrip(idx, tables, ctx, row_length, p, chunk, threads=1):
    enc = rans.encode_chunks(idx, tables, ctx, row_length, p, chunk, threads=threads)
    dec = rans.decode_chunks(enc.words, enc.chunk_words, idx.size, tables, ctx, row_length, p, chunk,
                             threads=threads)
    np.testing.assert_array_equal(dec, idx)
    return enc


def first_bad_chunk(a: rans.EncodedChunks, b: rans.EncodedChunks):
    """Index of the first chunk whose words differ (None when equal), for readable failures."""
    for c in range(max(a.chunk_words.size, b.chunk_words.size)):
        if c >= a.chunk_words.size or c >= b.chunk_words.size or not np.array_equal(a.chunk(c), b.chunk(c)):
            return c
    return None


# --- quantize_frequencies ----------------------------------------------------------------------


def test_quantize_docstring_example():
    assert rans.quantize_frequencies([5, 0, 3, 1], 4).tolist() == [9, 0, 5, 2]


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(rans, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("p", [1, 2, 8, 12, 16, 24])
def test_quantize_invariants(p):
    rng = np.random.default_rng(p)
    for _ in range(20):
        k = int(rng.integers(1, min(2**p, 3000) + 1))
        counts = rng.integers(0, 10**int(rng.integers(1, 7)), k) * (rng.random(k) < 0.7)
        if counts.sum() == 0:
            counts[0] = 1
        f = rans.quantize_frequencies(counts, p)
        assert f.dtype == np.uint32 and int(f.sum()) == 2**p
        assert np.all((f > 0) == (counts > 0))


def test_quantize_exact_when_representable():
    f = np.array([3, 1, 0, 12, 16], dtype=np.int64)
    assert rans.quantize_frequencies(f, 5).tolist() == f.tolist()
    assert rans.quantize_frequencies(f * 1000, 5).tolist() == f.tolist()


def test_quantize_errors():
    with pytest.raises(ValueError):
        rans.quantize_frequencies([0, 0], 8)
    with pytest.raises(ValueError):
        rans.quantize_frequencies([1, 1, 1], 1)  # 3 used symbols, 2 slots
    with pytest.raises(ValueError):
        rans.quantize_frequencies([1, -1], 8)
    with pytest.raises(ValueError):
        rans.quantize_frequencies([1, 1], 25)
    with pytest.raises(ValueError):
        rans.quantize_frequencies([0.5, 1], 8)


def greedy_optimum(counts, p):
    """Cross-entropy-optimal table by greedy marginal gains (float logs; reference only)."""
    counts = np.asarray(counts, dtype=np.float64)
    used = counts > 0
    f = used.astype(np.int64)
    for _ in range(2**p - int(f.sum())):
        gain = np.where(used, counts * np.log2((f + 1) / np.maximum(f, 1)), -1.0)
        f[int(np.argmax(gain))] += 1
    return f


@pytest.mark.parametrize("seed", range(6))
def test_quantize_close_to_optimal(seed):
    rng = np.random.default_rng(seed)
    k = [4, 16, 16, 64, 200, 256][seed]
    p = 10
    counts = np.floor(rng.pareto(1.0, k) * 50).astype(np.int64)
    counts[0] += 1
    ours = rans.coded_bits(counts, rans.quantize_frequencies(counts, p))
    best = rans.coded_bits(counts, greedy_optimum(counts, p))
    n = counts.sum()
    assert ours >= best - 1e-6 * n
    assert ours - best <= 2e-3 * n + 1e-3 * best  # per symbol: < 0.002 bits + 0.1 %


def test_coded_bits_and_entropy():
    assert rans.coded_bits([1, 1], [1, 1]) == pytest.approx(2.0)
    assert rans.coded_bits([1, 2], [2, 0]) == float("inf")
    assert rans.entropy_bits([2, 2]) == pytest.approx(4.0)
    c = np.array([[3, 1], [0, 5]])
    f = np.array([[3, 1], [1, 3]])
    assert rans.coded_bits(c, f) == pytest.approx(3 * 2 - 3 * np.log2(3) + 2 + 5 * (2 - np.log2(3)))
    assert rans.estimate_bits([5, 5], precision=4) == pytest.approx(10.0)


def test_choose_precision():
    assert rans.choose_precision([10, 10, 10, 10]) == 12
    skewed = np.r_[10**7, np.ones(255, dtype=np.int64)]
    assert rans.choose_precision(skewed) > 12
    assert rans.choose_precision(np.ones(40000, dtype=np.int64)) == 16
    assert rans.choose_precision([[10, 10, 0, 0], [10**6, 1, 1, 0]]) == 15  # fits every context
    # the rule keeps the real loss (coded_bits - entropy) at or below 1e-4 bits per symbol
    rng = np.random.default_rng(0)
    for k, scale in ((16, 0.5), (16, 0.8), (16, 1.6), (305, 42.0), (256, 20.0), (64, 2.0)):
        p = np.exp(-np.abs(np.arange(k) - (k - 1) / 2) / scale)
        c = np.bincount(rng.choice(k, 10**6, p=p / p.sum()), minlength=k)
        prec = rans.choose_precision(c)
        loss = (rans.coded_bits(c, rans.quantize_frequencies(c, prec)) - rans.entropy_bits(c)) / c.sum()
        assert loss <= 1e-4 or prec == 16, (k, scale, prec, loss)
        est = rans.quantization_loss(c, rans.quantize_frequencies(c, prec))
        assert est <= loss * 1.05 + 1e-9


# --- round trips and the reference implementation ----------------------------------------------


@pytest.mark.parametrize("p", [1, 4, 12, 16, 17, 24])
def test_roundtrip_precisions(p):
    rng = np.random.default_rng(p)
    k = min(2**p, 40)
    idx = laplace_indices(rng, k, 3000, scale=3.0)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=k), p)
    roundtrip(idx, f, None, 1, p, 700)


def test_roundtrip_contexts_differential():
    rng = np.random.default_rng(7)
    k, rows, row_length = 16, 37, 29
    ctx = rng.integers(0, 3, rows).astype(np.uint16)
    idx = np.empty(rows * row_length, dtype=np.uint8)
    tables = []
    for t in range(3):
        tables.append(rans.quantize_frequencies(np.arange(1, k + 1) ** (t + 1), 12))
    tables = np.array(tables)
    for r in range(rows):
        f = tables[ctx[r]].astype(np.float64)
        idx[r * row_length:(r + 1) * row_length] = rng.choice(k, row_length, p=f / f.sum())
    for chunk in (1, 5, 29, 100, 10**6):
        enc = roundtrip(idx, tables, ctx, row_length, 12, chunk)
        ref = rans.reference_encode_chunks(idx, tables, ctx, row_length, 12, chunk)
        assert first_bad_chunk(enc, ref) is None, f"chunk {first_bad_chunk(enc, ref)} differs (chunk={chunk})"
        dec = rans.reference_decode_chunks(enc.words, enc.chunk_words, idx.size, tables, ctx, row_length, 12, chunk)
        np.testing.assert_array_equal(dec, idx)


def test_threads_give_same_bytes():
    rng = np.random.default_rng(3)
    idx = laplace_indices(rng, 16, 70_000)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=16), 12)
    a = rans.encode_chunks(idx, f, None, 1, 12, 4096, threads=1)
    b = rans.encode_chunks(idx, f, None, 1, 12, 4096, threads=2)
    assert np.array_equal(a.words, b.words) and np.array_equal(a.chunk_words, b.chunk_words)
    out = np.empty(idx.size, np.uint16)
    rans.decode_chunks(b.words, b.chunk_words, idx.size, f, None, 1, 12, 4096, out=out, threads=2)
    np.testing.assert_array_equal(out, idx)


def test_empty_and_tiny():
    f = np.array([3, 1], np.uint32)
    enc = rans.encode_chunks(np.zeros(0, np.uint8), f, None, 1, 2, 8)
    assert enc.words.size == 0 and enc.chunk_words.size == 0
    assert rans.decode_chunks(enc.words, enc.chunk_words, 0, f, None, 1, 2, 8).size == 0
    enc = roundtrip(np.array([1], np.uint8), f, None, 1, 2, 8)
    assert enc.words.tolist() == [3]  # x = (0 // 1) << 2 | 3
    # a run of the first symbol from state 0 stays in state 0: zero words
    enc = roundtrip(np.zeros(50, np.uint8), f, None, 1, 2, 8)
    assert enc.words.size == 0 and enc.chunk_words.tolist() == [0] * 7


def test_single_symbol_table_costs_nothing():
    f = np.array([0, 0, 1 << 12], np.uint32)
    enc = roundtrip(np.full(5000, 2, np.uint8), f, None, 1, 12, 1000)
    assert enc.words.size == 0


def test_large_alphabet():
    rng = np.random.default_rng(11)
    k = 65536
    idx = rng.integers(0, k, 5000).astype(np.uint16)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=k), 16)
    roundtrip(idx, f, None, 1, 16, 2000)
    roundtrip(idx, rans.quantize_frequencies(np.bincount(idx, minlength=k), 20), None, 1, 20, 2000)


def test_bytes_input_and_out_param():
    rng = np.random.default_rng(5)
    idx = laplace_indices(rng, 8, 2000)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=8), 12)
    enc = rans.encode_chunks(idx, f, None, 1, 12, 512)
    raw = enc.words.astype("<u4").tobytes()
    np.testing.assert_array_equal(rans.decode_chunks(raw, enc.chunk_words, idx.size, f, None, 1, 12, 512), idx)
    big = enc.words.astype(">u4")
    np.testing.assert_array_equal(rans.decode_chunks(big, enc.chunk_words, idx.size, f, None, 1, 12, 512), idx)
    with pytest.raises(ValueError):
        rans.decode_chunks(enc.words, enc.chunk_words, idx.size, f, None, 1, 12, 512, out=np.empty(3, np.uint8))


def test_coded_size_close_to_ideal():
    rng = np.random.default_rng(9)
    idx = laplace_indices(rng, 16, 200_000)
    counts = np.bincount(idx, minlength=16)
    f = rans.quantize_frequencies(counts, 12)
    ideal = rans.coded_bits(counts, f)
    enc = rans.encode_chunks(idx, f, None, 1, 12, 1 << 20)
    assert 32 * enc.words.size <= ideal * 1.001 + 64


# --- encoder input errors ----------------------------------------------------------------------


def test_encode_rejects_bad_input():
    f = np.array([2, 0, 2], np.uint32)
    with pytest.raises(ValueError, match="frequency 0"):
        rans.encode_chunks(np.array([0, 1, 2]), f, None, 1, 2, 8)
    with pytest.raises(ValueError, match="outside"):
        rans.encode_chunks(np.array([0, 3]), f, None, 1, 2, 8)
    with pytest.raises(ValueError, match="sums to"):
        rans.encode_chunks(np.array([0]), np.array([1, 1]), None, 1, 2, 8)
    with pytest.raises(ValueError):
        rans.encode_chunks(np.array([0, 0, 0]), f, np.array([0]), 2, 2, 8)  # 1 row of 2 != 3
    with pytest.raises(ValueError):
        rans.encode_chunks(np.array([0, 0]), f, np.array([1]), 2, 2, 8)  # context 1, one table
    with pytest.raises(ValueError):
        rans.encode_chunks(np.array([0, 0]), f, None, 1, 2, 0)


# --- decoder validation: corrupt input gives CodecError ----------------------------------------


def _valid_stream():
    rng = np.random.default_rng(2)
    idx = laplace_indices(rng, 16, 3000)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=16), 12)
    return idx, f, rans.encode_chunks(idx, f, None, 1, 12, 1000)


def test_decode_rejects_bad_metadata():
    idx, f, enc = _valid_stream()
    n = idx.size
    args = (None, 1, 12, 1000)
    bad_table = f.copy()
    bad_table[0] += 1
    cases = [
        (enc.words, enc.chunk_words, n, bad_table) + args,
        (enc.words, enc.chunk_words[:-1], n, f) + args,
        (enc.words[:-1], enc.chunk_words, n, f) + args,
        (enc.words, enc.chunk_words, n, f, np.array([1]), n, 12, 1000),
        (enc.words, enc.chunk_words, n, f, None, 1, 25, 1000),
        (enc.words, enc.chunk_words, n, f, None, 1, 12, 0),
        (enc.words, enc.chunk_words - np.array([1, 0, -1]), n, f) + args,
        (enc.words.tobytes()[:-1], enc.chunk_words, n, f) + args,
    ]
    for i, case in enumerate(cases):
        with pytest.raises(CodecError):
            rans.decode_chunks(*case)
    assert issubclass(CodecError, AcqeFormatError) and issubclass(CodecError, ValueError)


def test_decode_rejects_table_that_wraps_in_32_bits():
    wraps = np.array([0xFFFFFFFF, 0x1001], dtype=np.uint32)  # sums to 2**12 modulo 2**32
    assert int(wraps.sum(dtype=np.uint32)) == 1 << 12
    with pytest.raises(CodecError, match="sums to 4294971392"):
        rans.decode_chunks(np.zeros(0, np.uint32), [0], 1, wraps, None, 1, 12, 1)
    with pytest.raises(CodecError):
        rans.reference_decode_chunks(np.zeros(0, np.uint32), [0], 1, wraps, None, 1, 12, 1)


def test_decode_detects_each_failure_kind():
    idx, f, enc = _valid_stream()
    w = enc.words.copy()
    w[0] = 0
    with pytest.raises(CodecError, match="first word is 0"):
        rans.decode_chunks(w, enc.chunk_words, idx.size, f, None, 1, 12, 1000)
    # move the first word of chunk 1 to the end of chunk 0: chunk 0 has a word left over
    cw = enc.chunk_words.copy()
    cw[0] += 1
    cw[1] -= 1
    with pytest.raises(CodecError, match="chunk 0 of 3"):
        rans.decode_chunks(enc.words, cw, idx.size, f, None, 1, 12, 1000)
    # a one-symbol table never changes the state, so the third word is never needed
    one = np.array([0, 16], np.uint32)
    with pytest.raises(CodecError, match="chunk 0 of 1: 1 words left unread"):
        rans.decode_chunks(np.array([1, 2, 3], np.uint32), [3], 10, one, None, 1, 4, 10)
    with pytest.raises(CodecError, match="final state 0x100000002 is not"):
        rans.decode_chunks(np.array([1, 2], np.uint32), [2], 10, one, None, 1, 4, 10)
    w = enc.words.copy()
    w[5] ^= 1 << 7
    with pytest.raises(CodecError, match="chunk 0 of 3"):
        rans.decode_chunks(w, enc.chunk_words, idx.size, f, None, 1, 12, 1000)


def test_accepted_streams_are_canonical():
    """Flip one bit anywhere: the decoder either rejects the chunk, or decodes other symbols whose
    canonical encoding is exactly the corrupted words (decoding is a bijection on accepted chunks)."""
    rng = np.random.default_rng(4)
    idx = laplace_indices(rng, 16, 400)
    f = rans.quantize_frequencies(np.bincount(idx, minlength=16), 12)
    enc = rans.encode_chunks(idx, f, None, 1, 12, 400)
    rejected = 0
    for i in range(enc.words.size):
        for bit in (0, 5, 13, 31):
            w = enc.words.copy()
            w[i] ^= np.uint32(1 << bit)
            try:
                dec = rans.decode_chunks(w, enc.chunk_words, idx.size, f, None, 1, 12, 400)
            except CodecError:
                rejected += 1
                with pytest.raises(CodecError):
                    rans.reference_decode_chunks(w, enc.chunk_words, idx.size, f, None, 1, 12, 400)
                continue
            assert not np.array_equal(dec, idx)
            again = rans.encode_chunks(dec, f, None, 1, 12, 400)
            np.testing.assert_array_equal(again.words, w)
            ref = rans.reference_decode_chunks(w, enc.chunk_words, idx.size, f, None, 1, 12, 400)
            np.testing.assert_array_equal(ref, dec)
    assert rejected >= 0.9 * 4 * enc.words.size


# --- constriction: a second, independent implementation ----------------------------------------


def test_constriction_compatible_both_ways():
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(12)
    for trial in range(12):
        k = int(rng.integers(2, 200))
        counts = rng.integers(1, 1000, k)  # constriction gives every symbol >= 1: no zero frequencies
        f = rans.quantize_frequencies(counts, 24)
        n = int(rng.integers(1, 2000))
        idx = rng.choice(k, n, p=f / f.sum()).astype(np.int32)
        model = constriction.stream.model.Categorical(f / 2.0**24, perfect=True)
        enc = rans.encode_chunks(idx, f, None, 1, 24, n)
        # ours -> constriction (our chunk is constriction's compressed words reversed)
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(enc.words[::-1]))
        np.testing.assert_array_equal(coder.decode(model, n), idx)
        assert coder.is_empty()
        # constriction -> ours, and identical words
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(idx, model)
        theirs = np.ascontiguousarray(coder.get_compressed()[::-1])
        np.testing.assert_array_equal(theirs, enc.words)
        np.testing.assert_array_equal(rans.decode_chunks(theirs, [theirs.size], n, f, None, 1, 24, n), idx)


def test_constriction_compatible_with_contexts():
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(13)
    k, rows, row_length = 12, 9, 50
    tables = np.array([rans.quantize_frequencies(rng.integers(1, 100, k), 24) for _ in range(3)])
    ctx = rng.integers(0, 3, rows)
    idx = rng.integers(0, k, rows * row_length).astype(np.int32)
    enc = rans.encode_chunks(idx, tables, ctx, row_length, 24, idx.size)
    models = [constriction.stream.model.Categorical(t / 2.0**24, perfect=True) for t in tables]
    coder = constriction.stream.stack.AnsCoder()
    for r in reversed(range(rows)):  # a stack: push the last row first
        coder.encode_reverse(idx[r * row_length:(r + 1) * row_length], models[ctx[r]])
    np.testing.assert_array_equal(coder.get_compressed()[::-1], enc.words)


# --- the worked example in the spec ------------------------------------------------------------


def _spec_block(name):
    text = SPEC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {name} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"block {name} not found in {SPEC.name}"
    return m.group(1)


def _parse_kv(block):
    vals = {}
    for line in block.splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, val = line.split(":", 1)
            vals[key.strip()] = val.strip()
    return vals


def _ints(s):
    return [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", s)]


@pytest.mark.parametrize("name", ["example-1", "example-2"])
def test_spec_worked_examples(name):
    v = _parse_kv(_spec_block(name))
    p = int(v["precision"])
    tables = np.array([_ints(t) for t in v["tables"].split(";")], dtype=np.uint32)
    idx = np.array(_ints(v["symbols"]), dtype=np.uint8)
    ctx = np.array(_ints(v["row_contexts"])) if v["row_contexts"] != "none" else None
    row_length = int(v["row_length"])
    chunk = int(v["chunk_symbols"])
    want_words = _ints(v["words"])
    want_counts = _ints(v["chunk_words"])
    enc = rans.encode_chunks(idx, tables, ctx, row_length, p, chunk)
    assert enc.words.tolist() == want_words
    assert enc.chunk_words.tolist() == want_counts
    ref = rans.reference_encode_chunks(idx, tables, ctx, row_length, p, chunk)
    assert ref.words.tolist() == want_words
    dec = rans.decode_chunks(np.array(want_words, np.uint32), want_counts, idx.size, tables, ctx, row_length, p, chunk)
    np.testing.assert_array_equal(dec, idx)
    if "bytes" in v:
        assert np.array(want_words, "<u4").tobytes().hex(" ") == v["bytes"]
