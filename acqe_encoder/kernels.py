"""numba kernels of the encoder: row statistics, fine log-scale histograms, exact threshold assignment.

Histogram bins ("log bins"): a float32 value's sign, exponent and top `MANT_BITS` mantissa bits, with
every exponent below `e_floor` folded into one zero bin. Bins are ordered by value, so a bin range is a
value interval. Each bin keeps count, sum and sum of squares (float64), so any cell made of whole bins
has exact statistics (count, centroid, squared error).
"""
from __future__ import annotations

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


@nb.njit(parallel=True, **_JIT)
def row_stats(x):
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


@nb.njit(parallel=True, **_JIT)
def histogram(x, row_ctx, n_ctx, e_floor, n_oct, n_parts):
    """Per-context log-bin histograms of x float32 [rows, L]: (count int64, sum f64, sumsq f64) [n_ctx, NB]."""
    half = 1 + n_oct * (1 << MANT_BITS)
    nbins = 2 * half - 1
    rows = x.shape[0]
    cnt = np.zeros((n_parts, n_ctx, nbins), np.int64)
    s1 = np.zeros((n_parts, n_ctx, nbins), np.float64)
    s2 = np.zeros((n_parts, n_ctx, nbins), np.float64)
    xu = x.view(np.uint32)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        for r in range(r0, r1):
            c = row_ctx[r]
            for j in range(x.shape[1]):
                b = _bin_of(xu[r, j], e_floor, n_oct, half)
                v = np.float64(x[r, j])
                cnt[p, c, b] += 1
                s1[p, c, b] += v
                s2[p, c, b] += v * v
    return cnt.sum(axis=0), s1.sum(axis=0), s2.sum(axis=0)


@nb.njit(parallel=True, **_JIT)
def assign(x, row_ctx, thresholds, n_thr, k, n_parts, out):
    """Exact assignment by decision thresholds: index = #{thresholds[ctx] < v} (per-row context).

    thresholds: float64 [n_ctx, K-1] ascending (first n_thr entries used). Writes `out` (uint8/uint16,
    row-major) and returns per-index (count, sum, sumsq) and per-(context, index) counts.
    """
    rows = x.shape[0]
    L = x.shape[1]
    n_ctx = thresholds.shape[0]
    cnt = np.zeros((n_parts, n_ctx, k), np.int64)
    s1 = np.zeros((n_parts, k), np.float64)
    s2 = np.zeros((n_parts, k), np.float64)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        for r in range(r0, r1):
            c = row_ctx[r]
            t = thresholds[c]
            for j in range(L):
                v = np.float64(x[r, j])
                lo = 0
                hi = n_thr
                while lo < hi:          # first threshold >= v  ->  count of thresholds < v
                    mid = (lo + hi) >> 1
                    if t[mid] < v:
                        lo = mid + 1
                    else:
                        hi = mid
                out[r * L + j] = lo
                cnt[p, c, lo] += 1
                s1[p, lo] += v
                s2[p, lo] += v * v
    return cnt.sum(axis=0), s1.sum(axis=0), s2.sum(axis=0)


@nb.njit(parallel=True, **_JIT)
def sse_exact(x, idx, codebook, n_parts):
    """Sum of squared errors of codebook[idx] (float32 values, as decoders produce) against x."""
    rows = x.shape[0]
    L = x.shape[1]
    acc = np.zeros(n_parts, np.float64)
    for p in nb.prange(n_parts):
        r0 = rows * p // n_parts
        r1 = rows * (p + 1) // n_parts
        s = 0.0
        for r in range(r0, r1):
            for j in range(L):
                d = np.float64(x[r, j]) - np.float64(codebook[idx[r * L + j]])
                s += d * d
        acc[p] = s
    return acc.sum()
