"""Hypothesis property tests of the chunked rANS coder: round trips over any alphabet, table shape,
context layout and chunking; corrupt input only ever gives CodecError; coded size near the ideal.

Sized to stay fast with NUMBA_DISABLE_JIT=1 (plain Python runs about 1 µs per symbol).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acqe_format import rans
from acqe_format.errors import CodecError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _table_counts(rng, k, kind):
    if kind == "single":
        c = np.zeros(k, np.int64)
        c[rng.integers(k)] = 1
    elif kind == "uniform":
        c = np.ones(k, np.int64)
    elif kind == "skewed":
        c = np.floor(1e6 * np.exp(-np.arange(k) / max(1.0, k / 8))).astype(np.int64)
        c[rng.integers(k)] += 1
        c = c[rng.permutation(k)]
    else:  # sparse random
        c = rng.integers(0, 1000, k) * (rng.random(k) < 0.5)
        c[rng.integers(k)] += 1
    return c


@st.composite
def problems(draw, max_rows=40, max_row_length=80):
    k = draw(st.sampled_from([1, 2, 3, 16, 255, 256, 257, 4096, 65536]) | st.integers(1, 300))
    n_tables = draw(st.integers(1, 3))
    kinds = [draw(st.sampled_from(["single", "uniform", "skewed", "random"])) for _ in range(n_tables)]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    counts = np.array([_table_counts(rng, k, kd) for kd in kinds])
    used = int(max(np.count_nonzero(c) for c in counts))
    p_min = max(1, (used - 1).bit_length())
    p = draw(st.integers(p_min, 24) | st.integers(p_min, max(p_min, 16)))
    tables = np.array([rans.quantize_frequencies(c, p) for c in counts])
    rows = draw(st.integers(0, max_rows))
    row_length = draw(st.integers(1, max_row_length))
    use_ctx = n_tables > 1 or draw(st.booleans())
    ctx = rng.integers(0, n_tables, rows).astype(np.uint16) if use_ctx else None
    if ctx is None:
        ctx_per_row = np.zeros(rows, np.int64)
    else:
        ctx_per_row = ctx.astype(np.int64)
    idx = np.empty(rows * row_length, dtype=np.uint8 if k <= 256 else np.uint16)
    for r in range(rows):
        f = tables[ctx_per_row[r]].astype(np.float64)
        idx[r * row_length:(r + 1) * row_length] = rng.choice(k, row_length, p=f / f.sum())
    chunk = draw(st.integers(1, 64) | st.integers(1, 5000))
    return idx, tables, ctx, row_length, p, chunk


@SETTINGS
@given(problems(), st.sampled_from([1, 2]))
def test_roundtrip_matches_reference(problem, threads):
    idx, tables, ctx, row_length, p, chunk = problem
    enc = rans.encode_chunks(idx, tables, ctx, row_length, p, chunk, threads=threads)
    assert enc.chunk_words.size == -(-idx.size // chunk)
    assert int(enc.chunk_words.sum()) == enc.words.size
    dec = rans.decode_chunks(enc.words, enc.chunk_words, idx.size, tables, ctx, row_length, p, chunk,
                             threads=threads)
    np.testing.assert_array_equal(dec, idx)
    if idx.size <= 1500:  # the pure-Python reference is slow; compare on the smaller cases
        ref = rans.reference_encode_chunks(idx, tables, ctx, row_length, p, chunk)
        for c in range(enc.chunk_words.size):
            assert np.array_equal(enc.chunk(c), ref.chunk(c)), f"first differing chunk: {c}"
        np.testing.assert_array_equal(
            rans.reference_decode_chunks(enc.words, enc.chunk_words, idx.size, tables, ctx, row_length, p, chunk),
            idx)


@SETTINGS
@given(problems(max_rows=10, max_row_length=60), st.data())
def test_corruption_gives_codec_error_or_another_canonical_stream(problem, data):
    idx, tables, ctx, row_length, p, chunk = problem
    enc = rans.encode_chunks(idx, tables, ctx, row_length, p, chunk)
    words = enc.words.copy()
    cw = enc.chunk_words.copy()
    action = data.draw(st.sampled_from(["flip", "word", "shift", "truncate", "garbage"]))
    if action == "flip" and words.size:
        i = data.draw(st.integers(0, words.size - 1))
        words[i] ^= np.uint32(1 << data.draw(st.integers(0, 31)))
    elif action == "word" and words.size:
        i = data.draw(st.integers(0, words.size - 1))
        words[i] = data.draw(st.integers(0, 2**32 - 1))
    elif action == "shift" and cw.size >= 2:
        c = data.draw(st.integers(0, cw.size - 2))
        d = data.draw(st.integers(-int(cw[c]), int(cw[c + 1])))
        cw[c] += d
        cw[c + 1] -= d
    elif action == "truncate" and words.size:
        cut = data.draw(st.integers(1, words.size))
        words = words[:-cut]
        c = int(np.flatnonzero(cw)[-1])
        cw[c] = max(0, cw[c] - cut)
    elif action == "garbage":
        m = data.draw(st.integers(0, 40))
        words = np.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=m, max_size=m)), np.uint32)
        cw = np.zeros_like(cw)
        if cw.size:
            cw[-1] = m
    try:
        dec = rans.decode_chunks(words, cw, idx.size, tables, ctx, row_length, p, chunk)
    except CodecError as e:
        assert "\n" not in str(e)
        if idx.size <= 600:
            with pytest.raises(CodecError):
                rans.reference_decode_chunks(words, cw, idx.size, tables, ctx, row_length, p, chunk)
        return
    # accepted: then it is exactly the canonical encoding of what was decoded
    again = rans.encode_chunks(dec, tables, ctx, row_length, p, chunk)
    np.testing.assert_array_equal(again.words, words)
    np.testing.assert_array_equal(again.chunk_words, cw)
    assert np.array_equal(dec, idx) == (np.array_equal(words, enc.words) and np.array_equal(cw, enc.chunk_words))


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 4096), st.floats(0.05, 50.0), st.integers(0, 2**32 - 1))
def test_long_stream_within_0_1_percent_of_ideal(k, scale, seed):
    rng = np.random.default_rng(seed)
    n = 100_000
    p = np.exp(-np.abs(np.arange(k) - k / 2) / scale)
    idx = rng.choice(k, n, p=p / p.sum()).astype(np.uint16)
    counts = np.bincount(idx, minlength=k)
    prec = rans.choose_precision(counts)
    f = rans.quantize_frequencies(counts, prec)
    ideal = rans.coded_bits(counts, f)
    enc = rans.encode_chunks(idx, f, None, 1, prec, 1 << 20)
    assert 32 * enc.words.size <= ideal * 1.001 + 3 * 32
    # the quantized table itself costs little over the empirical entropy (< 0.001 bit per symbol)
    assert ideal <= rans.entropy_bits(counts) + 1e-3 * n


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=300), st.integers(1, 24))
def test_quantize_frequencies_properties(counts, p):
    c = np.array(counts, dtype=np.int64)
    used = int(np.count_nonzero(c))
    if used == 0 or used > 2**p:
        with pytest.raises(ValueError):
            rans.quantize_frequencies(c, p)
        return
    f = rans.quantize_frequencies(c, p)
    assert f.dtype == np.uint32 and int(f.sum()) == 2**p
    assert np.array_equal(f > 0, c > 0)
    assert np.array_equal(f, rans.quantize_frequencies(c.astype(np.uint64), p))  # dtype-independent
    # monotone: a larger count never gets a smaller frequency; equal counts differ by at most 1
    order = np.lexsort((np.arange(c.size), c))
    fs = f[order].astype(np.int64)
    cs = c[order]
    assert np.all((np.diff(fs) >= 0) | ((np.diff(cs) == 0) & (np.abs(np.diff(fs)) <= 1)))
