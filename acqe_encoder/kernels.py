"""numba kernels of the encoder: row statistics, fine log-scale histograms, exact threshold assignment.

Histogram bins ("log bins"): a float32 value's sign, exponent and top `MANT_BITS` mantissa bits, with
every exponent below `e_floor` folded into one zero bin. Bins are ordered by value, so a bin range is a
value interval. Each bin keeps count, sum and sum of squares (float64), so any cell made of whole bins
has exact statistics (count, centroid, squared error).
"""
from __future__ import annotations

import types

import numba as nb
import numpy as np

MANT_BITS = 7
_JIT = dict(nogil=True, cache=True, error_model="numpy")


def n_bins(n_oct: int) -> int:
    half = 1 + n_oct * (1 << MANT_BITS)
    return 2 * half - 1


@nb.njit(**_JIT)
def _bin_of(u, e_floor, n_oct, half):
    e = (u >> 23) & 0xFF
    if e < e_floor:
        mag = 0
    else:
        d = e - e_floor
        if d >= n_oct:
            mag = half - 1
        else:
            mag = 1 + (d << MANT_BITS) + ((u >> (23 - MANT_BITS)) & ((1 << MANT_BITS) - 1))
    if (u >> 31) & 1:
        return half - 1 - mag
    return half - 1 + mag


def bin_of_values(values: np.ndarray, e_floor: int, n_oct: int) -> np.ndarray:
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    return _bins_vec(u, e_floor, n_oct, 1 + n_oct * (1 << MANT_BITS))


@nb.njit(**_JIT)
def _bins_vec(u, e_floor, n_oct, half):
    out = np.empty(u.size, np.int64)
    for i in range(u.size):
        out[i] = _bin_of(u[i], e_floor, n_oct, half)
    return out


def _py_row_stats(x):
    """Per-row sum of squares (float64) and the count of non-finite values, for x float32 [rows, L]."""
    rows = x.shape[0]
    ss = np.zeros(rows, np.float64)
    bad = np.zeros(rows, np.int64)
    amax = np.zeros(rows, np.float32)
    for r in nb.prange(rows):
        s = 0.0
        b = 0
        m = np.float32(0.0)
        for j in range(x.shape[1]):
            v = x[r, j]
            if not np.isfinite(v):
                b += 1
            else:
                s += np.float64(v) * np.float64(v)
                a = abs(v)
                if a > m:
                    m = a
        ss[r] = s
        bad[r] = b
        amax[r] = m
    return ss, bad, amax


def _py_histogram(x, row_ctx, n_ctx, e_floor, n_oct, n_parts, row_step):
    """Per-context log-bin counts of x float32 [rows, L] over every `row_step`-th row: int64 [n_ctx, NB]."""
    half = 1 + n_oct * (1 << MANT_BITS)
    nbins = 2 * half - 1
    rows = x.shape[0]
    cnt = np.zeros((n_parts, n_ctx, nbins), np.int64)
    xu = x.view(np.uint32)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        r0 += (-r0) % row_step
        for r in range(r0, r1, row_step):
            c = row_ctx[r]
            for j in range(x.shape[1]):
                cnt[p, c, _bin_of(xu[r, j], e_floor, n_oct, half)] += 1
    return cnt.sum(axis=0)


def bin_edges(e_floor: int, n_oct: int) -> np.ndarray:
    """float64 [NB+1] value edges of the log bins (bin b covers [edges[b], edges[b+1]))."""
    m = 1 << MANT_BITS
    mags = [0.0]
    for d in range(n_oct):
        base = 2.0 ** (e_floor + d - 127)
        mags.extend(base * (1 + np.arange(m) / m))
    mags.append(np.inf)                       # upper edge of the last magnitude bin (clamped values)
    mags = np.array(mags)                     # [half + 1]: mags[i] = lower edge of magnitude bin i
    pos = mags[1:]                            # upper edges of magnitude bins 0..half-1
    # bins: negative magnitudes half-1..1, zero bin (magnitude 0, both signs), positive 1..half-1
    neg_lower = -pos[::-1][:-1]               # lower edges of negative bins half-1..1
    zero_lower = -pos[0]
    pos_lower = mags[1:-1]                    # lower edges of positive bins 1..half-1
    return np.concatenate([[-np.inf], neg_lower[1:], [zero_lower], pos_lower, [np.inf]])


def _py__assign_rows(x, row_ctx, thresholds, n_thr, lut, e_floor, n_oct, n_parts, out):
    rows = x.shape[0]
    L = x.shape[1]
    half = 1 + n_oct * (1 << MANT_BITS)
    xu = x.view(np.uint32)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        for r in range(r0, r1):
            c = row_ctx[r]
            t = thresholds[c]
            lc = lut[c]
            base = r * L
            for j in range(L):
                lo = lc[_bin_of(xu[r, j], e_floor, n_oct, half)]
                if lo < 0:
                    v = x[r, j]
                    lo = 0
                    hi = n_thr
                    while lo < hi:          # count of thresholds < v
                        mid = (lo + hi) >> 1
                        if t[mid] < v:
                            lo = mid + 1
                        else:
                            hi = mid
                out[base + j] = lo


def _py__index_stats(x, row_ctx, n_ctx, k, n_parts, out):
    rows = x.shape[0]
    L = x.shape[1]
    cnt = np.zeros((n_parts, n_ctx, k), np.int64)
    s1 = np.zeros((n_parts, k), np.float64)
    s2 = np.zeros((n_parts, k), np.float64)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        for r in range(r0, r1):
            c = row_ctx[r]
            base = r * L
            for j in range(L):
                o = out[base + j]
                v = np.float64(x[r, j])
                cnt[p, c, o] += 1
                s1[p, o] += v
                s2[p, o] += v * v
    return cnt.sum(axis=0), s1.sum(axis=0), s2.sum(axis=0)


def assign(x, row_ctx, thresholds, n_thr, k, lut, e_floor, n_oct, n_parts, out):
    """Exact assignment by decision thresholds: index = #{thresholds[ctx] < v} (per-row context).

    `lut[ctx, bin]` gives the index of every log bin that lies inside one cell (-1 where a threshold
    cuts the bin); only values in cut bins are compared with the thresholds. Writes `out` (uint8/uint16,
    row-major) and returns per-(context, index) counts and per-index sums and sums of squares.
    (Two loops: assignment, then statistics; fused they run at a third of the speed.)
    """
    _assign_rows(x, row_ctx, thresholds, n_thr, lut, e_floor, n_oct, n_parts, out)
    return _index_stats(x, row_ctx, thresholds.shape[0], k, n_parts, out)


def assignment_lut(thresholds: np.ndarray, n_thr: int, edges: np.ndarray) -> np.ndarray:
    """int32 [T, NB]: the index of each bin that no threshold cuts, else -1."""
    T = thresholds.shape[0]
    lo_e, hi_e = edges[:-1], edges[1:]
    lut = np.empty((T, lo_e.size), np.int32)
    for c in range(T):
        t = thresholds[c, :n_thr]
        a = np.searchsorted(t, lo_e, side="left")     # thresholds < lower edge
        b = np.searchsorted(t, hi_e, side="left")     # thresholds < upper edge
        lut[c] = np.where(a == b, a, -1)
    return lut


# Each kernel compiled twice: multi-threaded for big tensors, serial for small ones (thread start-up
# costs more than the work below about a million values).
PARALLEL_MIN = 1 << 20
_KERNELS = {}


def _copy(f, suffix):
    """A copy of `f` under another qualified name, so numba's on-disk cache keeps both compilations."""
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    return g


for _n in ("row_stats", "histogram", "_assign_rows", "_index_stats"):
    _f = globals()["_py_" + _n]
    _KERNELS[_n] = (nb.njit(**_JIT)(_copy(_f, "_serial")), nb.njit(parallel=True, **_JIT)(_copy(_f, "_parallel")))


def _pick(name, x):
    return _KERNELS[name][1 if x.size >= PARALLEL_MIN else 0]


def row_stats(x):
    """Per-row sum of squares (float64), count of non-finite values and max |value|, for x float32 [rows, L]."""
    return _pick("row_stats", x)(x)


def histogram(x, row_ctx, n_ctx, e_floor, n_oct, n_parts, row_step):
    """Per-context log-bin counts of x float32 [rows, L] over every `row_step`-th row: int64 [n_ctx, NB]."""
    return _pick("histogram", x)(x, row_ctx, n_ctx, e_floor, n_oct, n_parts if x.size >= PARALLEL_MIN else 1, row_step)


def _assign_rows(x, row_ctx, thresholds, n_thr, lut, e_floor, n_oct, n_parts, out):
    return _pick("_assign_rows", x)(x, row_ctx, thresholds, n_thr, lut, e_floor, n_oct,
                                    n_parts if x.size >= PARALLEL_MIN else 1, out)


def _index_stats(x, row_ctx, n_ctx, k, n_parts, out):
    return _pick("_index_stats", x)(x, row_ctx, n_ctx, k, n_parts if x.size >= PARALLEL_MIN else 1, out)
