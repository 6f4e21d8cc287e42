"""Chunked rANS entropy coder of codec 2 (CODEBOOK_RANS). Normative text: `spec/ACQE-rans.md`.

The coder in one paragraph: one 64-bit state per chunk, 32-bit words, probability precision P
(1..24) with integer frequency tables that sum to exactly 2**P. The encoder starts from state 0 and
runs *backwards* over the chunk's symbols; the decoder reads the words *forwards* and must end with
every word consumed and the state back at 0. This is bit for bit the `stream.stack.AnsCoder` of
constriction (64-bit state, 32-bit words) with the word order reversed: our chunk is
`constriction_words[::-1]`, so constriction can decode our streams and we can decode its streams.

Public API (numpy in, numpy out):

- `quantize_frequencies(counts, precision)`: exact-integer frequency table for a histogram.
- `choose_precision(counts)`: the smallest precision in 12..16 that loses (almost) nothing
  (`quantization_loss` is its deterministic loss estimate).
- `coded_bits(counts, freqs)`, `entropy_bits(counts)`, `estimate_bits(counts, ...)`: rate estimates.
- `encode_chunks(indices, tables, row_contexts, row_length, precision, chunk_symbols)` ->
  `EncodedChunks(words, chunk_words)`.
- `decode_chunks(words, chunk_words, n_symbols, tables, row_contexts, row_length, precision,
  chunk_symbols, out=None, threads=None)` -> indices; raises `CodecError` on any corrupt input.
- `reference_encode_chunks` / `reference_decode_chunks`: slow pure-Python implementations written
  straight from the spec, used by the tests as a second implementation.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from acqe_format.jit_cache import ensure_numba_cache

ensure_numba_cache(os.path.dirname(os.path.abspath(__file__)))  # before any kernel is defined: numba caches beside this module

from numba import njit  # noqa: E402

from acqe_format import constants as C
from acqe_format.errors import CodecError

__all__ = [
    "DEFAULT_PRECISION",
    "MAX_ALPHABET",
    "MAX_PRECISION",
    "MIN_PRECISION",
    "EncodedChunks",
    "choose_precision",
    "coded_bits",
    "decode_chunks",
    "encode_chunks",
    "entropy_bits",
    "estimate_bits",
    "quantization_loss",
    "quantize_frequencies",
    "reference_decode_chunks",
    "reference_encode_chunks",
]

# The format's limits (spec §13.1, §15) live in constants.py; these names are kept for callers.
MIN_PRECISION = C.MIN_PRECISION
MAX_PRECISION = C.MAX_PRECISION
MAX_ALPHABET = C.MAX_K
STATE_BITS = C.RANS_STATE_BITS
WORD_BITS = C.RANS_WORD_BITS
# The encoder's choices (not limits a reader checks).
DEFAULT_PRECISION = 12
#: the precisions `choose_precision` picks from (the decoder's slot table is 2**P entries per table)
RECOMMENDED_PRECISIONS = (12, 13, 14, 15, 16)
#: decoders here use a slot -> symbol lookup table up to this precision, a binary search above it
LUT_MAX_PRECISION = 16
#: ... and only while the tables' slots are at most this many, or this many per decoded symbol
LUT_MIN_SLOTS = 1 << 16
LUT_SLOTS_PER_SYMBOL = 4
#: histogram totals are kept below this so that count * 2**24 fits in an int64 exactly
MAX_COUNT_TOTAL = 1 << 38

_WORD_MASK = np.uint64(0xFFFFFFFF)
_LOWER = np.uint64(1 << 32)  # the renormalisation bound L = 2**32: a non-final state is >= L
_U32 = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)

# per-chunk status codes written by the kernels
_OK = 0
_ERR_LEADING_ZERO = 1
_ERR_WORDS_LEFT = 2
_ERR_FINAL_STATE = 3
_ERR_SYMBOL_RANGE = 4  # encoder: index >= K
_ERR_ZERO_FREQ = 5  # encoder: index has frequency 0 in its table
_ERR_OVERFLOW = 6  # encoder: word buffer bound exceeded (cannot happen; checked anyway)
_ERR_NONCANONICAL = 7  # decoder: a word was read from a state the canonical encoder never leaves


class EncodedChunks(NamedTuple):
    """The coded stream of one tensor.

    `words` holds every chunk's words back to back (native-endian uint32 values; write them
    little-endian, e.g. `words.astype("<u4").tobytes()`); chunk `c` is
    `words[sum(chunk_words[:c]) : sum(chunk_words[:c + 1])]`.
    """

    words: np.ndarray  # uint32 [total words]
    chunk_words: np.ndarray  # int64 [n_chunks]

    def chunk(self, c: int) -> np.ndarray:
        start = int(self.chunk_words[:c].sum())
        return self.words[start : start + int(self.chunk_words[c])]


# ---------------------------------------------------------------------------------------------
# frequency tables
# ---------------------------------------------------------------------------------------------


def _as_counts(counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.dtype == np.bool_ or not (np.issubdtype(c.dtype, np.integer) or c.dtype == object):
        if np.issubdtype(c.dtype, np.floating) and np.all(np.isfinite(c)) and np.all(c == np.floor(c)):
            pass
        else:
            raise ValueError(f"counts must be non-negative integers, got dtype {c.dtype}")
    if c.size and np.any(c < 0):
        raise ValueError("counts must be non-negative")
    return c


def _check_precision(precision) -> int:
    if isinstance(precision, (bool, np.bool_)) or not isinstance(precision, (int, np.integer)):
        raise ValueError(f"precision must be an int in {MIN_PRECISION}..{MAX_PRECISION}, got {precision!r}")
    p = int(precision)
    if not MIN_PRECISION <= p <= MAX_PRECISION:
        raise ValueError(f"precision must be in {MIN_PRECISION}..{MAX_PRECISION}, got {p}")
    return p


def quantize_frequencies(counts, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Turn a histogram into an integer frequency table that sums to exactly `2**precision`.

    Every symbol with a count > 0 gets a frequency >= 1, every symbol with count 0 gets 0. The
    method uses integer arithmetic only, so every machine gives the same table:

    1. *Water-filling.* Sort the used symbols by (count, index). The `k` rarest ones are pinned to
       frequency 1, where `k` is the first position in that order whose count `c` satisfies
       `c * (M - k) >= N - (sum of the k rarest counts)` (M = 2**precision, N = total count):
       from there on every symbol's proportional share of the remaining `M - k` is >= 1.
    2. *Largest remainder.* The other symbols get `floor(c * B / R)` (B = M - k, R = their total
       count); the `B - sum` units left over go, one each, to the symbols with the largest
       remainders `c * B mod R` (ties: lower symbol index first).

    This is within a rounding error of the cross-entropy optimum (the loss is well below
    0.01 % of the entropy for the tables of our files; `tests/test_rans.py` checks it against a
    greedy optimiser).

    Args:
        counts: 1-D array of non-negative integer counts, one per symbol (K = len(counts) <= 65536).
        precision: P in 1..24.

    Returns:
        uint32 [K] frequencies summing to 2**P.

    Raises:
        ValueError: no symbol has a count, more symbols are used than 2**P, or the counts are
            negative, not integers, or total 2**38 or more.

    Example:
        >>> quantize_frequencies([5, 0, 3, 1], 4).tolist()
        [9, 0, 5, 2]
    """
    p = _check_precision(precision)
    c = _as_counts(counts)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {c.shape}")
    if c.size > MAX_ALPHABET:
        raise ValueError(f"at most {MAX_ALPHABET} symbols, got {c.size}")
    total = int(sum(int(v) for v in c)) if c.dtype == object else int(c.sum(dtype=np.float64))
    if total >= MAX_COUNT_TOTAL:
        raise ValueError(f"counts total {total}, must be < 2**38")
    c = c.astype(np.int64)
    total = int(c.sum())
    m = 1 << p
    used = np.flatnonzero(c > 0)
    n_used = used.size
    if n_used == 0:
        raise ValueError("counts are all zero: there is nothing to model")
    if n_used > m:
        raise ValueError(f"{n_used} symbols are used but precision {p} has only {m} slots")
    freqs = np.zeros(c.size, dtype=np.int64)
    # 1. water-filling: how many of the rarest symbols get pinned to 1
    order = used[np.argsort(c[used], kind="stable")]  # by count, then index
    cs = c[order]
    prefix = np.concatenate(([0], np.cumsum(cs)[:-1]))
    ks = np.arange(n_used, dtype=np.int64)
    ok = cs * (m - ks) >= total - prefix
    k = int(np.argmax(ok))  # first True; the last position is always True (n_used <= m)
    freqs[order[:k]] = 1
    rest = order[k:]
    budget = m - k
    rest_total = total - int(prefix[k])
    # 2. proportional floors + largest remainders
    scaled = c[rest] * budget
    q = scaled // rest_total
    r = scaled - q * rest_total
    left = budget - int(q.sum())
    q[np.lexsort((rest, -r))[:left]] += 1
    freqs[rest] = q
    return freqs.astype(np.uint32)


_LN2 = 0.6931471805599453  # a literal, not math.log(2): the same double on every machine


def quantization_loss(counts, freqs) -> float:
    """Chi-square estimate of the bits per symbol a table loses against the empirical distribution:
    sum((c/N - f/M)^2 / (f/M)) / (2 ln 2) over used symbols. It tracks the exact loss
    (`coded_bits - entropy_bits`) within a factor of about 2 (it is lower for tables with many
    pinned rare symbols) and uses only exactly rounded IEEE operations and `math.fsum`, so every
    machine computes the same value.
    """
    c = np.asarray(counts, dtype=np.int64)
    f = np.asarray(freqs, dtype=np.int64)
    n = int(c.sum())
    m = int(f.sum())
    used = c > 0
    if n == 0:
        return 0.0
    if np.any(f[used] == 0):
        return math.inf
    d = (c[used] * m - f[used] * n).astype(np.float64)  # exact in int64 for totals < 2**38, P <= 24
    return math.fsum((d * d / f[used].astype(np.float64)).tolist()) / (2.0 * _LN2 * m * float(n) * n)


def choose_precision(counts, max_loss: float = 1e-4) -> int:
    """Pick the smallest precision in 12..16 that has room for every used symbol and whose
    `quantize_frequencies` table loses at most `max_loss` bits per symbol against the empirical
    entropy: its `quantization_loss` estimate must be at most `max_loss / 2` (the estimate can be up
    to about 2 times low). Falls back to 16.

    Deterministic across machines (no transcendental functions), so the writer always produces the
    same bytes. `counts` may be 2-D [T, K] (one histogram per context): the result suits every
    context. Small precisions keep the decoder's slot table (2**P entries per table) in the L1 cache.

    Example:
        >>> choose_precision([10, 10, 10, 10]), choose_precision([10**6, 1, 1])  # 2 rare symbols
        (12, 15)
    """
    c = np.atleast_2d(_as_counts(counts)).astype(np.int64)
    best = RECOMMENDED_PRECISIONS[0]
    for row in c:
        used = int(np.count_nonzero(row))
        if used == 0:
            continue
        for p in RECOMMENDED_PRECISIONS:
            if p < best or (1 << p) < used:
                continue
            if quantization_loss(row, quantize_frequencies(row, p)) <= max_loss / 2:
                best = p
                break
        else:
            best = RECOMMENDED_PRECISIONS[-1]
    return best


def coded_bits(counts, freqs) -> float:
    """Ideal cost in bits of coding a histogram with a frequency table: sum c * log2(2**P / f).

    `counts` and `freqs` may be 1-D [K] or 2-D [T, K] (contexts); P is log2 of a table's sum.
    Returns `inf` when a counted symbol has frequency 0. The real stream adds about
    `CHUNK_OVERHEAD_BITS` per chunk (at most 64; see `estimate_bits`).

    Example:
        >>> round(coded_bits([3, 1], [3, 1]), 6)  # 3 * log2(4/3) + 1 * log2(4/1)
        3.245112
    """
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    f = np.atleast_2d(np.asarray(freqs, dtype=np.float64))
    if c.shape != f.shape:
        raise ValueError(f"counts shape {c.shape} != freqs shape {f.shape}")
    sums = f.sum(axis=1, keepdims=True)
    mask = c > 0
    if np.any(mask & (f <= 0)):
        return math.inf
    with np.errstate(divide="ignore"):
        bits = np.where(mask, c * (np.log2(np.broadcast_to(sums, f.shape)) - np.log2(np.where(mask, f, 1))), 0.0)
    return float(bits.sum())


def entropy_bits(counts) -> float:
    """Empirical entropy of a histogram times its total, in bits (1-D or 2-D [T, K] per context)."""
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    n = c.sum(axis=1, keepdims=True)
    mask = c > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = np.where(mask, c * (np.log2(np.where(n > 0, n, 1)) - np.log2(np.where(mask, c, 1))), 0.0)
    return float(bits.sum())


#: average cost of one chunk's termination over the ideal cost: measured 20 to 26 bits (K = 4..256,
#: 1 to 7 bits per symbol, chunks of 4096 and 65536 symbols); the worst case is 64 bits
CHUNK_OVERHEAD_BITS = 24.0


def estimate_bits(counts, precision: int | None = None, chunk_symbols: int | None = None) -> float:
    """Cheap estimate of the coded size in bits for the encoder's rate allocation.

    Ideal cost with the table `quantize_frequencies` would store (precision None: `choose_precision`),
    plus `CHUNK_OVERHEAD_BITS` per chunk when `chunk_symbols` is given. Frequency-table side
    information is the container's business and is not included.
    """
    c = np.atleast_2d(_as_counts(counts)).astype(np.int64)
    p = choose_precision(c) if precision is None else _check_precision(precision)
    bits = 0.0
    for row in c:
        if row.sum() > 0:
            bits += coded_bits(row, quantize_frequencies(row, p))
    if chunk_symbols:
        n = int(c.sum())
        bits += CHUNK_OVERHEAD_BITS * (-(-n // int(chunk_symbols)))
    return bits


# ---------------------------------------------------------------------------------------------
# argument checking shared by encoder and decoder
# ---------------------------------------------------------------------------------------------


def _int_arg(name, v, lo, err) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise err(f"{name} must be an int, got {type(v).__name__}")
    v = int(v)
    if v < lo:
        raise err(f"{name} must be >= {lo}, got {v}")
    return v


def _prepare_tables(tables, precision: int, err) -> np.ndarray:
    """Validate frequency tables -> uint32 [T, K] (C-contiguous)."""
    t = np.asarray(tables)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise err(f"frequency tables must be [T, K] with T, K >= 1, got shape {np.shape(tables)}")
    if t.shape[1] > MAX_ALPHABET:
        raise err(f"frequency table has {t.shape[1]} symbols, the limit is {MAX_ALPHABET}")
    if not np.issubdtype(t.dtype, np.integer):
        raise err(f"frequency tables must be integers, got dtype {t.dtype}")
    if np.any(t < 0):
        raise err("frequency table has a negative entry")
    sums = t.astype(np.int64).sum(axis=1)
    bad = np.flatnonzero(sums != (1 << precision))
    if bad.size:
        raise err(f"frequency table {int(bad[0])} sums to {int(sums[bad[0]])}, must be 2**{precision} = {1 << precision}")
    return np.ascontiguousarray(t, dtype=np.uint32)


def _prepare_contexts(row_contexts, n_symbols: int, row_length: int, n_tables: int, err) -> np.ndarray | None:
    if row_contexts is None:
        return None
    rc = np.asarray(row_contexts)
    if rc.ndim != 1 or not (np.issubdtype(rc.dtype, np.integer) or rc.size == 0):
        raise err(f"row_contexts must be a 1-D integer array, got shape {rc.shape} dtype {rc.dtype}")
    if rc.size * row_length != n_symbols:
        raise err(f"{rc.size} rows of {row_length} symbols != {n_symbols} symbols")
    if rc.size and (int(rc.min()) < 0 or int(rc.max()) >= n_tables):
        raise err(f"row context {int(rc.max()) if rc.size and int(rc.max()) >= n_tables else int(rc.min())} "
                  f"is outside the {n_tables} frequency tables")
    return np.ascontiguousarray(rc, dtype=np.int32)


def _n_chunks(n_symbols: int, chunk_symbols: int) -> int:
    return -(-n_symbols // chunk_symbols)


def _cumulative(freqs: np.ndarray) -> np.ndarray:
    """[T, K] uint32 -> [T, K + 1] uint32 left cumulative frequencies (cum[:, K] = 2**P)."""
    cum = np.zeros((freqs.shape[0], freqs.shape[1] + 1), dtype=np.uint64)
    np.cumsum(freqs, axis=1, dtype=np.uint64, out=cum[:, 1:])
    return cum.astype(np.uint32)


def _thread_count(threads, n_tasks: int) -> int:
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            threads = os.cpu_count() or 1
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return max(1, min(threads, n_tasks))


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _helpers(n: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least n threads (kernels release the GIL, so threads run in parallel)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)  # its threads finish what they run, then exit
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="acqe-rans")
            _POOL_SIZE = n
        return _POOL


def _run_parallel(fn, n_chunks: int, threads: int, group: int) -> None:
    """Call fn(c0, c1) over [0, n_chunks) cut into ranges of `group` chunks, on `threads` threads.

    The calling thread works too and `threads - 1` helpers pull ranges from a shared counter, so a
    busy pool (another caller decoding at the same time) only slows this call down, never blocks it.
    """
    if n_chunks == 0:
        return
    bounds = list(range(0, n_chunks, group)) + [n_chunks]
    tasks = list(zip(bounds[:-1], bounds[1:]))
    if threads <= 1 or len(tasks) == 1:
        fn(0, n_chunks)
        return
    counter = itertools.count()

    def worker():
        while True:
            i = next(counter)  # atomic: it runs with the GIL held
            if i >= len(tasks):
                return
            fn(*tasks[i])

    pool = _helpers(threads - 1)
    futures = [pool.submit(worker) for _ in range(min(threads, len(tasks)) - 1)]
    try:
        worker()
    finally:
        for f in futures:
            f.result()


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------

_JIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)


@njit(**_JIT)
def _encode_kernel(indices, freqs, cum, ctx, row_length, precision, chunk_symbols, c0, c1,
                   scratch, cap_end, counts, status):
    """Encode chunks [c0, c1), one symbol at a time from the end of each chunk (spec section 5).

    Chunk c's words are written backwards so that they end just before scratch[cap_end[c]]; then
    counts[c] = its word count and status[c] = 0. On a bad index status[c] is the error code and
    counts[c] the position of the offending symbol. (Encoding four chunks in lockstep, as the decoder
    does, was measured slower here: the divider is the bottleneck and the emit branches mispredict.)"""
    n = indices.shape[0]
    P = np.uint64(precision)
    sh = np.uint64(64 - precision)
    single = ctx.shape[0] == 0
    for c in range(c0, c1):
        i0 = c * chunk_symbols
        i1 = min(n, i0 + chunk_symbols)
        lo = cap_end[c] - ((i1 - i0) * (precision + 1) + 31) // 32 - 2
        pos = cap_end[c]
        x = _ZERO
        st = 0
        bad = 0
        i = i1
        while i > i0:
            if single:
                t = 0
                seg0 = i0
            else:
                r = (i - 1) // row_length
                t = ctx[r]
                seg0 = max(i0, r * row_length)
            ft = freqs[t]
            ct = cum[t]
            K = ft.shape[0]
            for j in range(i - 1, seg0 - 1, -1):
                s = indices[j]
                if s >= K:
                    st = _ERR_SYMBOL_RANGE
                    bad = j
                    break
                f = np.uint64(ft[s])
                if f == 0:
                    st = _ERR_ZERO_FREQ
                    bad = j
                    break
                if (x >> sh) >= f:
                    pos -= 1
                    if pos < lo:
                        st = _ERR_OVERFLOW
                        bad = j
                        break
                    scratch[pos] = np.uint32(x & _WORD_MASK)
                    x >>= _U32
                q = x // f
                x = (q << P) + (x % f) + np.uint64(ct[s])
            if st != 0:
                counts[c] = bad  # position of the offending symbol
                break
            i = seg0
        if st == 0:
            if x >= _LOWER:
                pos -= 2
                scratch[pos] = np.uint32(x >> _U32)
                scratch[pos + 1] = np.uint32(x & _WORD_MASK)
            elif x != _ZERO:
                pos -= 1
                scratch[pos] = np.uint32(x)
            counts[c] = cap_end[c] - pos
        status[c] = st


@njit(**_JIT)
def _gather_kernel(scratch, cap_end, counts, out):
    o = 0
    for c in range(counts.shape[0]):
        k = counts[c]
        s = cap_end[c] - k
        for j in range(k):
            out[o + j] = scratch[s + j]
        o += k


@njit(**_JIT)
def _dec_init(words, pos, end):
    """Initial state of a chunk: (x, pos, first word is zero)."""
    x = _ZERO
    zero = False
    if pos < end:
        zero = words[pos] == 0
        x = np.uint64(words[pos])
        pos += 1
        if pos < end:
            x = (x << _U32) | np.uint64(words[pos])
            pos += 1
    return x, pos, zero


@njit(**_JIT)
def _dec_step(x, pos, end, bad, words, fbt, syt, out, j, P, mask, csh):
    """One branchless decode step with the slot table. `words` has a readable word at `end`."""
    slot = x & mask
    e = np.uint64(fbt[slot])
    out[j] = syt[slot]
    f = (e >> np.uint64(16)) + _ONE
    x = (x >> P) * f + (e & np.uint64(0xFFFF))
    take = (x < _LOWER) & (pos < end)
    bad |= take & (x < (f << csh))
    w = np.uint64(words[pos])
    x = ((x << _U32) | w) if take else x
    pos += take
    return x, pos, bad


@njit(**_JIT)
def _dec_segment(i, cend, ctx, row_length):
    """(table, end) of the run of symbols from i that share one table, within a chunk ending at cend."""
    if ctx.shape[0] == 0:
        return 0, cend
    r = i // row_length
    return ctx[r], min(cend, (r + 1) * row_length)


@njit(**_JIT)
def _dec_finish(c, x, pos, end, zero, bad, status, final):
    if zero:
        status[c] = _ERR_LEADING_ZERO
    elif bad:
        status[c] = _ERR_NONCANONICAL
    elif pos != end:
        status[c] = _ERR_WORDS_LEFT
        final[c] = np.uint64(end - pos)
    elif x != _ZERO:
        status[c] = _ERR_FINAL_STATE
        final[c] = x
    else:
        status[c] = _OK


@njit(**_JIT)
def _decode_lut_kernel(words, word_start, n, C, ctx, row_length, precision, fb, sy, c0, c1, out, status, final):
    """Decode chunks [c0, c1) with slot tables fb[t, slot] = (freq - 1) << 16 | (slot - cum[sym]) and
    sy[t, slot] = sym (P <= 16). Full chunks are decoded four at a time in lockstep: their states are
    independent, so the CPU overlaps the four dependency chains. `words` is padded by one word."""
    P = np.uint64(precision)
    csh = np.uint64(32 - precision)
    mask = (_ONE << P) - _ONE
    n_full = n // C
    c = c0
    while c + 3 < c1 and c + 3 < n_full:
        a0 = c * C
        a1 = a0 + C
        a2 = a1 + C
        a3 = a2 + C
        e0 = word_start[c + 1]
        e1 = word_start[c + 2]
        e2 = word_start[c + 3]
        e3 = word_start[c + 4]
        x0, p0, z0 = _dec_init(words, word_start[c], e0)
        x1, p1, z1 = _dec_init(words, e0, e1)
        x2, p2, z2 = _dec_init(words, e1, e2)
        x3, p3, z3 = _dec_init(words, e2, e3)
        b0 = False
        b1 = False
        b2 = False
        b3 = False
        t0, s0 = _dec_segment(a0, a0 + C, ctx, row_length)
        t1, s1 = _dec_segment(a1, a1 + C, ctx, row_length)
        t2, s2 = _dec_segment(a2, a2 + C, ctx, row_length)
        t3, s3 = _dec_segment(a3, a3 + C, ctx, row_length)
        f0 = fb[t0]
        f1 = fb[t1]
        f2 = fb[t2]
        f3 = fb[t3]
        y0 = sy[t0]
        y1 = sy[t1]
        y2 = sy[t2]
        y3 = sy[t3]
        k = 0
        while k < C:
            m = min(min(s0 - a0, s1 - a1), min(s2 - a2, s3 - a3))
            for j in range(k, m):
                x0, p0, b0 = _dec_step(x0, p0, e0, b0, words, f0, y0, out, a0 + j, P, mask, csh)
                x1, p1, b1 = _dec_step(x1, p1, e1, b1, words, f1, y1, out, a1 + j, P, mask, csh)
                x2, p2, b2 = _dec_step(x2, p2, e2, b2, words, f2, y2, out, a2 + j, P, mask, csh)
                x3, p3, b3 = _dec_step(x3, p3, e3, b3, words, f3, y3, out, a3 + j, P, mask, csh)
            k = m
            if k < C:
                if s0 - a0 == k:
                    t0, s0 = _dec_segment(a0 + k, a0 + C, ctx, row_length)
                    f0 = fb[t0]
                    y0 = sy[t0]
                if s1 - a1 == k:
                    t1, s1 = _dec_segment(a1 + k, a1 + C, ctx, row_length)
                    f1 = fb[t1]
                    y1 = sy[t1]
                if s2 - a2 == k:
                    t2, s2 = _dec_segment(a2 + k, a2 + C, ctx, row_length)
                    f2 = fb[t2]
                    y2 = sy[t2]
                if s3 - a3 == k:
                    t3, s3 = _dec_segment(a3 + k, a3 + C, ctx, row_length)
                    f3 = fb[t3]
                    y3 = sy[t3]
        _dec_finish(c, x0, p0, e0, z0, b0, status, final)
        _dec_finish(c + 1, x1, p1, e1, z1, b1, status, final)
        _dec_finish(c + 2, x2, p2, e2, z2, b2, status, final)
        _dec_finish(c + 3, x3, p3, e3, z3, b3, status, final)
        c += 4
    while c < c1:  # the remaining chunks one at a time
        i = c * C
        cend = min(n, i + C)
        end = word_start[c + 1]
        x, pos, z = _dec_init(words, word_start[c], end)
        b = False
        while i < cend:
            t, s = _dec_segment(i, cend, ctx, row_length)
            ft = fb[t]
            yt = sy[t]
            for j in range(i, s):
                x, pos, b = _dec_step(x, pos, end, b, words, ft, yt, out, j, P, mask, csh)
            i = s
        _dec_finish(c, x, pos, end, z, b, status, final)
        c += 1


@njit(**_JIT)
def _decode_search_kernel(words, word_start, n, C, ctx, row_length, precision, cum, c0, c1, out, status, final):
    """Decode chunks [c0, c1) by binary search in the cumulative tables (any P; used for P > 16)."""
    P = np.uint64(precision)
    csh = np.uint64(32 - precision)
    mask = (_ONE << P) - _ONE
    for c in range(c0, c1):
        i = c * C
        cend = min(n, i + C)
        end = word_start[c + 1]
        x, pos, z = _dec_init(words, word_start[c], end)
        b = False
        while i < cend:
            t, s = _dec_segment(i, cend, ctx, row_length)
            ct = cum[t]
            K = ct.shape[0] - 1
            for j in range(i, s):
                slot = x & mask
                lo = 0  # the last symbol with ct[symbol] <= slot (it has a non-zero frequency)
                hi = K
                while hi - lo > 1:
                    mid = (lo + hi) >> 1
                    if np.uint64(ct[mid]) <= slot:
                        lo = mid
                    else:
                        hi = mid
                out[j] = lo
                a = np.uint64(ct[lo])
                f = np.uint64(ct[lo + 1]) - a
                x = (x >> P) * f + (slot - a)
                if x < _LOWER and pos < end:
                    b |= x < (f << csh)
                    x = (x << _U32) | np.uint64(words[pos])
                    pos += 1
            i = s
        _dec_finish(c, x, pos, end, z, b, status, final)


# ---------------------------------------------------------------------------------------------
# encoder
# ---------------------------------------------------------------------------------------------


def _index_array(indices) -> np.ndarray:
    a = np.asarray(indices)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {a.dtype}")
    a = a.reshape(-1)
    if a.dtype not in (np.uint8, np.uint16, np.int32, np.int64):
        if a.size and (int(a.min()) < 0):
            raise ValueError("indices must be non-negative")
        a = a.astype(np.int64)
    elif a.dtype in (np.int32, np.int64) and a.size and int(a.min()) < 0:
        raise ValueError("indices must be non-negative")
    return np.ascontiguousarray(a)


def encode_chunks(indices, tables, row_contexts, row_length: int, precision: int, chunk_symbols: int,
                  threads: int | None = None) -> EncodedChunks:
    """Entropy-code indices (row-major) into independent rANS chunks.

    Args:
        indices: integer array, flattened in row-major order; n_symbols = indices.size.
        tables: [T, K] (or [K]) integer frequency tables, each summing to 2**precision.
        row_contexts: None (every row uses table 0) or an integer array [n_symbols / row_length]:
            row r is coded with table row_contexts[r].
        row_length: symbols per row (>= 1).
        precision: P in 1..24.
        chunk_symbols: symbols per chunk (>= 1); the last chunk may be shorter.
        threads: worker threads (None: one per available CPU).

    Returns:
        EncodedChunks(words, chunk_words): all chunks' words back to back, and the word count of each
        of the ceil(n_symbols / chunk_symbols) chunks.

    Raises:
        ValueError: bad arguments, an index >= K, or an index whose frequency is 0 in its table.
    """
    p = _check_precision(precision)
    row_length = _int_arg("row_length", row_length, 1, ValueError)
    chunk_symbols = _int_arg("chunk_symbols", chunk_symbols, 1, ValueError)
    idx = _index_array(indices)
    n = idx.size
    freqs = _prepare_tables(tables, p, ValueError)
    ctx = _prepare_contexts(row_contexts, n, row_length, freqs.shape[0], ValueError)
    n_chunks = _n_chunks(n, chunk_symbols)
    if n_chunks == 0:
        return EncodedChunks(np.zeros(0, np.uint32), np.zeros(0, np.int64))
    cum = _cumulative(freqs)
    sizes = np.full(n_chunks, chunk_symbols, dtype=np.int64)
    sizes[-1] = n - (n_chunks - 1) * chunk_symbols
    caps = (sizes * (p + 1) + 31) // 32 + 2
    cap_end = np.cumsum(caps)
    scratch = np.empty(int(cap_end[-1]), dtype=np.uint32)
    counts = np.zeros(n_chunks, dtype=np.int64)
    status = np.zeros(n_chunks, dtype=np.int64)
    ctx_arg = ctx if ctx is not None else np.zeros(0, np.int32)

    def run(c0, c1):
        _encode_kernel(idx, freqs, cum, ctx_arg, row_length, p, chunk_symbols, c0, c1,
                       scratch, cap_end, counts, status)

    nt = _thread_count(threads, n_chunks)
    _run_parallel(run, n_chunks, nt if n >= (1 << 16) else 1, max(1, -(-n_chunks // (4 * nt))))
    bad = np.flatnonzero(status)
    if bad.size:
        c = int(bad[0])
        j = int(counts[c])
        code = int(status[c])
        if code == _ERR_SYMBOL_RANGE:
            raise ValueError(f"index {int(idx[j])} at position {j} is outside the {freqs.shape[1]}-symbol tables")
        if code == _ERR_ZERO_FREQ:
            t = 0 if ctx is None else int(ctx[j // row_length])
            raise ValueError(f"index {int(idx[j])} at position {j} has frequency 0 in table {t}")
        raise RuntimeError(f"rANS encoder word buffer overflow in chunk {c}")  # pragma: no cover
    words = np.empty(int(counts.sum()), dtype=np.uint32)
    _gather_kernel(scratch, cap_end, counts, words)
    return EncodedChunks(words, counts)


# ---------------------------------------------------------------------------------------------
# decoder
# ---------------------------------------------------------------------------------------------


def _build_lut(freqs: np.ndarray, cum: np.ndarray, p: int):
    """slot -> packed (freq - 1) << 16 | (slot - cum), and slot -> symbol, for P <= 16."""
    T, K = freqs.shape
    m = 1 << p
    fb = np.empty((T, m), dtype=np.uint32)
    sym = np.empty((T, m), dtype=np.uint16)
    slots = np.arange(m, dtype=np.uint32)
    ks = np.arange(K, dtype=np.uint16)
    for t in range(T):
        s = np.repeat(ks, freqs[t])
        sym[t] = s
        fb[t] = ((freqs[t][s] - np.uint32(1)) << np.uint32(16)) | (slots - cum[t][s])
    return fb, sym


def _as_words(words) -> np.ndarray:
    if isinstance(words, np.ndarray) and words.dtype.kind == "u" and words.dtype.itemsize == 4:
        w = words
    else:
        if isinstance(words, np.ndarray):
            buf = np.ascontiguousarray(words).view(np.uint8).reshape(-1)
        else:
            buf = np.frombuffer(memoryview(words).cast("B"), dtype=np.uint8)
        if buf.size % 4:
            raise CodecError(f"rANS word data is {buf.size} bytes, not a multiple of 4")
        w = buf.view("<u4")
    if w.ndim != 1:
        w = w.reshape(-1)
    if not w.dtype.isnative:
        w = w.astype(np.uint32)
    return np.ascontiguousarray(w)


def decode_chunks(words, chunk_words, n_symbols: int, tables, row_contexts, row_length: int,
                  precision: int, chunk_symbols: int, out: np.ndarray | None = None,
                  threads: int | None = None) -> np.ndarray:
    """Decode the chunks written by `encode_chunks`, checking everything the spec requires.

    Args:
        words: every chunk's words back to back: a uint32 array, or bytes-like little-endian u32 data.
        chunk_words: the word count of each of the ceil(n_symbols / chunk_symbols) chunks.
        n_symbols, tables, row_contexts, row_length, precision, chunk_symbols: as for `encode_chunks`.
        out: optional uint8/uint16 [n_symbols] array to decode into (default: uint8 when K <= 256,
            else uint16).
        threads: worker threads (None: one per available CPU).

    Returns:
        The decoded indices (`out` when given).

    Raises:
        CodecError: a frequency table does not sum to 2**precision, a row context is out of range,
            the chunk word counts do not match the data, a chunk starts with a zero word, a word is
            read from a state the canonical encoder cannot leave, a chunk's words are not consumed
            exactly, or a chunk does not end in state 0. A chunk that passes these checks is exactly
            what `encode_chunks` produces for the decoded symbols.
    """
    if isinstance(precision, (int, np.integer)) and not isinstance(precision, bool) \
            and MIN_PRECISION <= int(precision) <= MAX_PRECISION:
        p = int(precision)
    else:
        raise CodecError(f"rANS precision must be in {MIN_PRECISION}..{MAX_PRECISION}, got {precision!r}")
    n = _int_arg("n_symbols", n_symbols, 0, CodecError)
    row_length = _int_arg("row_length", row_length, 1, CodecError)
    chunk_symbols = _int_arg("chunk_symbols", chunk_symbols, 1, CodecError)
    freqs = _prepare_tables(tables, p, CodecError)
    K = freqs.shape[1]
    ctx = _prepare_contexts(row_contexts, n, row_length, freqs.shape[0], CodecError)
    w = _as_words(words)
    cw = np.asarray(chunk_words)
    n_chunks = _n_chunks(n, chunk_symbols)
    if cw.ndim != 1 or cw.size != n_chunks or (cw.size and not np.issubdtype(cw.dtype, np.integer)):
        raise CodecError(f"expected {n_chunks} chunk word counts, got shape {cw.shape}")
    cw = cw.astype(np.int64)
    if cw.size and int(cw.min()) < 0:
        raise CodecError("negative chunk word count")
    word_start = np.zeros(n_chunks + 1, dtype=np.int64)
    np.cumsum(cw, out=word_start[1:])
    if int(word_start[-1]) != w.size:
        raise CodecError(f"chunk word counts add up to {int(word_start[-1])}, the data holds {w.size} words")
    if out is None:
        out = np.empty(n, dtype=np.uint8 if K <= 256 else np.uint16)
    else:
        if not isinstance(out, np.ndarray) or out.dtype not in (np.uint8, np.uint16) or out.shape != (n,) \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writable contiguous uint8/uint16 array of n_symbols elements")
        if K > np.iinfo(out.dtype).max + 1:
            raise ValueError(f"out dtype {out.dtype} cannot hold {K} symbols")
    if n_chunks == 0:
        return out
    cum = _cumulative(freqs)
    status = np.zeros(n_chunks, dtype=np.int64)
    final = np.zeros(n_chunks, dtype=np.uint64)
    ctx_arg = ctx if ctx is not None else np.zeros(0, np.int32)
    # The slot tables cost 6 bytes per slot per table; a crafted payload (tiny stream, many tables, high P)
    # must not make the reader allocate out of proportion to its data, so small streams search instead.
    if p <= LUT_MAX_PRECISION and (freqs.shape[0] << p) <= max(LUT_MIN_SLOTS, LUT_SLOTS_PER_SYMBOL * n):
        fb, sy = _build_lut(freqs, cum, p)
        wp = np.empty(w.size + 1, dtype=np.uint32)  # one readable word past the end (branchless refill)
        wp[:-1] = w
        wp[-1] = 0

        def run(c0, c1):
            _decode_lut_kernel(wp, word_start, n, chunk_symbols, ctx_arg, row_length, p, fb, sy,
                               c0, c1, out, status, final)
    else:
        def run(c0, c1):
            _decode_search_kernel(w, word_start, n, chunk_symbols, ctx_arg, row_length, p, cum,
                                  c0, c1, out, status, final)

    nt = _thread_count(threads, n_chunks)
    _run_parallel(run, n_chunks, nt if n >= (1 << 16) else 1, 4 * max(1, -(-n_chunks // (16 * nt))))
    bad = np.flatnonzero(status)
    if bad.size:
        c = int(bad[0])
        raise CodecError(_chunk_error(c, n_chunks, int(status[c]), int(final[c])))
    return out


def _chunk_error(c: int, n_chunks: int, code: int, info: int) -> str:
    where = f"rANS chunk {c} of {n_chunks}"
    if code == _ERR_LEADING_ZERO:
        return f"{where}: first word is 0 (a valid stream never starts with a zero word)"
    if code == _ERR_WORDS_LEFT:
        return f"{where}: {info} words left unread after its last symbol"
    if code == _ERR_FINAL_STATE:
        return f"{where}: final state {info:#x} is not the initial state 0"
    if code == _ERR_NONCANONICAL:
        return f"{where}: a word is read from a state below f * 2**(32-P) (not a canonical stream)"
    return f"{where}: error {code}"  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# reference implementation: plain Python integers, written straight from spec/ACQE-rans.md
# ---------------------------------------------------------------------------------------------


def _ref_tables(tables, precision):
    t = np.asarray(tables)
    if t.ndim == 1:
        t = t[None, :]
    freqs = [[int(v) for v in row] for row in t]
    cums = []
    for row in freqs:
        acc, cr = 0, []
        for v in row:
            cr.append(acc)
            acc += v
        if acc != 1 << precision:
            raise CodecError(f"frequency table sums to {acc}, must be {1 << precision}")
        cums.append(cr)
    return freqs, cums


def _ref_table_of(i, row_contexts, row_length):
    return 0 if row_contexts is None else int(row_contexts[i // row_length])


def reference_encode_chunks(indices, tables, row_contexts, row_length, precision, chunk_symbols) -> EncodedChunks:
    """Slow reference encoder (pure Python ints); same output as `encode_chunks`."""
    idx = [int(v) for v in np.asarray(indices).reshape(-1)]
    n = len(idx)
    freqs, cums = _ref_tables(tables, precision)
    P = precision
    all_words, counts = [], []
    for c0 in range(0, n, chunk_symbols):
        c1 = min(n, c0 + chunk_symbols)
        x = 0
        emitted = []
        for i in range(c1 - 1, c0 - 1, -1):
            t = _ref_table_of(i, row_contexts, row_length)
            s = idx[i]
            f, a = freqs[t][s], cums[t][s]
            if f == 0:
                raise ValueError(f"index {s} at position {i} has frequency 0 in table {t}")
            if (x >> (64 - P)) >= f:  # renormalise: push the low word out
                emitted.append(x & 0xFFFFFFFF)
                x >>= 32
            x = ((x // f) << P) + (x % f) + a
        if x >= 1 << 32:  # flush: the state, high word first
            head = [x >> 32, x & 0xFFFFFFFF]
        elif x > 0:
            head = [x]
        else:
            head = []
        chunk = head + emitted[::-1]
        all_words.extend(chunk)
        counts.append(len(chunk))
    return EncodedChunks(np.array(all_words, dtype=np.uint32), np.array(counts, dtype=np.int64))


def reference_decode_chunks(words, chunk_words, n_symbols, tables, row_contexts, row_length, precision,
                            chunk_symbols) -> np.ndarray:
    """Slow reference decoder (pure Python ints); raises CodecError exactly when `decode_chunks` does."""
    P = precision
    freqs, cums = _ref_tables(tables, precision)
    w = [int(v) for v in _as_words(words)]
    counts = [int(v) for v in np.asarray(chunk_words).reshape(-1)]
    n_chunks = -(-n_symbols // chunk_symbols)
    if len(counts) != n_chunks or sum(counts) != len(w):
        raise CodecError("chunk word counts do not match the data")
    out = []
    start = 0
    for c in range(n_chunks):
        end = start + counts[c]
        pos = start
        x = 0
        if pos < end:
            if w[pos] == 0:
                raise CodecError(f"rANS chunk {c}: first word is 0")
            x = w[pos]
            pos += 1
            if pos < end:
                x = (x << 32) | w[pos]
                pos += 1
        for i in range(c * chunk_symbols, min(n_symbols, (c + 1) * chunk_symbols)):
            t = _ref_table_of(i, row_contexts, row_length)
            slot = x & ((1 << P) - 1)
            s = bisect.bisect_right(cums[t], slot) - 1  # the largest s with c[t][s] <= slot
            out.append(s)
            x = (x >> P) * freqs[t][s] + slot - cums[t][s]
            if x < (1 << 32) and pos < end:
                if x < freqs[t][s] << (32 - P):
                    raise CodecError(f"rANS chunk {c}: word {pos - start} is read from a non-canonical state")
                x = (x << 32) | w[pos]
                pos += 1
        if pos != end:
            raise CodecError(f"rANS chunk {c}: {end - pos} words left unread")
        if x != 0:
            raise CodecError(f"rANS chunk {c}: final state {x:#x} is not 0")
        start = end
    return np.array(out, dtype=np.int64)
