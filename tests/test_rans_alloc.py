"""The decoder's memory stays proportional to the stream: many tables at high precision with few symbols
(as a crafted payload can declare) are decoded by search, not by 2**P-slot tables per context."""
import tracemalloc

import numpy as np

from acqe_format import rans


def _tables(n_tables, k, precision, rng):
    counts = rng.integers(1, 1000, size=(n_tables, k))
    return np.stack([rans.quantize_frequencies(c, precision) for c in counts])


def _roundtrip(n, n_tables, precision, rng, row_length=8):
    k = 16
    tables = _tables(n_tables, k, precision, rng)
    rows = -(-n // row_length)
    ctx = rng.integers(0, n_tables, size=rows).astype(np.uint16)
    idx = rng.integers(0, k, size=n).astype(np.uint8)
    enc = rans.encode_chunks(idx, tables, ctx, row_length, precision, 4096)
    tracemalloc.start()
    out = rans.decode_chunks(enc.words, enc.chunk_words, n, tables, ctx, row_length, precision, 4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(out, idx)
    return peak


def test_small_stream_many_tables_does_not_build_slot_tables():
    rng = np.random.default_rng(0)
    peak = _roundtrip(n=64, n_tables=256, precision=16, rng=rng)
    # slot tables would take 256 * 2**16 * 6 bytes = 96 MiB
    assert peak < 8 << 20, peak


def test_long_stream_same_result_through_slot_tables():
    rng = np.random.default_rng(1)
    _roundtrip(n=1 << 18, n_tables=2, precision=12, rng=rng)
