"""Histogram-guided clustering: entropy-constrained scalar quantisation (ECSQ) on exact bin statistics.

A tensor's weights are summarised once by per-context log-bin histograms (`kernels.histogram`: count,
sum, sum of squares per bin; contexts are groups of rows bucketed by row RMS). A quantiser is a
codebook (shared by all contexts) plus one set of decision thresholds per context. For whole-bin cells
the statistics are exact, so the rate (ideal entropy-coded bits of the per-context index histograms)
and the squared error of any candidate are computed on the histogram in O(K log B), without touching
the weights again.

Two families per tensor, parametrised by a step Delta:
- **uniform**: levels j*Delta, midpoint thresholds, one table (plain uniform quantisation + entropy
  coding, the baseline the clustering must beat);
- **ECSQ** (Chou, Lookabaugh & Gray 1989): start from the uniform grid, then iterate
  centroid = cell mean, code length l = -log2 p per context, thresholds
  t_k = (c_k + c_k+1)/2 + lambda (l_k+1 - l_k) / (2 (c_k+1 - c_k)) with lambda = 2 ln2 Delta^2 / 12
  (the high-rate slope of the uniform quantiser at that step). Cells that empty out disappear.
Both are evaluated; the allocator picks from the union of their (rate, distortion) points, so the
encoder never does worse than uniform + entropy coding at any rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from acqe_encoder import kernels

_JIT = dict(nogil=True, cache=True, error_model="numpy")
MAX_LEVELS = 16384         # cap on K for lossy candidates (levels exist only where there is data)
N_BUCKETS = 16             # finest row-context bucketing


SAMPLE_VALUES = 1 << 21    # analysis histograms look at about this many values per tensor (whole rows)


@dataclass
class TensorHist:
    """Compressed per-context histogram of one tensor (occupied bins only, prefix sums).

    Counts come from every `row_step`-th row (whole rows), scaled by `scale` to the full tensor; bin sums
    use the bin midpoint and sums of squares add the in-bin variance of a uniform spread (w^2/12).
    """
    rep: np.ndarray          # float64 [B] representative value of each occupied bin, ascending
    P0: np.ndarray           # float64 [T16, B+1] prefix counts per finest context (scaled)
    P1: np.ndarray           # float64 [T16, B+1] prefix sums
    P2: np.ndarray           # float64 [T16, B+1] prefix sums of squares
    vmin: float
    vmax: float
    energy: float            # sum of squares (all elements, exact)
    numel: int
    rows: int
    row_bucket: np.ndarray   # uint16 [rows] finest bucket of each row (0..T16-1)
    e_floor: int
    n_oct: int
    edges: np.ndarray        # float64 [NB+1] bin edges (all bins)
    blo: np.ndarray = None   # float64 [B] lower / upper value of each occupied bin (clipped to the data)
    bhi: np.ndarray = None

    def merged(self, t: int):
        """Prefix arrays with the finest buckets merged into t contexts (t divides T16); cached."""
        cache = self.__dict__.setdefault("_merged", {})
        if t not in cache:
            g = self.P0.shape[0] // t
            cache[t] = (np.ascontiguousarray(self.P0.reshape(t, g, -1).sum(1)),
                        np.ascontiguousarray(self.P1.reshape(t, g, -1).sum(1)),
                        np.ascontiguousarray(self.P2.reshape(t, g, -1).sum(1)))
        return cache[t]


def row_buckets(row_ss: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Rows ranked by sum of squares, split into equal-count buckets (deterministic, stable ties)."""
    rows = row_ss.size
    order = np.argsort(row_ss, kind="stable")
    b = np.empty(rows, np.uint16)
    b[order] = (np.arange(rows, dtype=np.int64) * n_buckets // max(rows, 1)).astype(np.uint16)
    return b


def exponent_range(amax: float) -> tuple[int, int]:
    """(e_floor, n_oct): bins cover 24 octaves below the largest magnitude."""
    if amax <= 0 or not np.isfinite(amax):
        return 1, 1
    e_max = int((np.array([amax], np.float32).view(np.uint32)[0] >> 23) & 0xFF)
    e_floor = max(1, e_max - 24 + 1)
    return e_floor, e_max - e_floor + 1


def build_hist(x2d: np.ndarray, row_ss: np.ndarray, amax: float, n_parts: int = 2,
               sample_values: int = SAMPLE_VALUES) -> TensorHist:
    rows, L = x2d.shape
    buckets = row_buckets(row_ss)
    e_floor, n_oct = exponent_range(amax)
    row_step = max(1, (rows * L) // max(sample_values, 1))
    row_step = min(row_step, max(1, rows // (4 * N_BUCKETS)))       # keep every bucket sampled
    cnt = kernels.histogram(x2d, buckets.astype(np.int64), N_BUCKETS, e_floor, n_oct, n_parts, row_step)
    tot = cnt.sum(0)
    occ = np.flatnonzero(tot).astype(np.int32)
    packed = dict(cnt=cnt[:, occ].astype(np.int32), occ=occ, e_floor=e_floor, n_oct=n_oct, amax=float(amax),
                  energy=float(row_ss.sum()), numel=int(rows * L), rows=rows, buckets=buckets)
    return unpack_hist(packed)


def unpack_hist(pk: dict) -> TensorHist:
    """A TensorHist from the compact form kept between the analysis and coding passes (`hist.packed`)."""
    cnt, occ = pk["cnt"], pk["occ"]
    scale = pk["numel"] / max(int(cnt.sum()), 1)
    edges = kernels.bin_edges(pk["e_floor"], pk["n_oct"])
    lo, hi = edges[occ], edges[occ + 1]
    amax = pk["amax"]
    lo = np.clip(np.where(np.isfinite(lo), lo, -amax), -amax, amax)
    hi = np.clip(np.where(np.isfinite(hi), hi, amax), -amax, amax)
    mid = 0.5 * (lo + hi)
    var = (hi - lo) ** 2 / 12.0
    c = cnt.astype(np.float64) * scale
    z = np.zeros((cnt.shape[0], 1))
    P0 = np.concatenate([z, np.cumsum(c, axis=1)], axis=1)
    P1 = np.concatenate([z, np.cumsum(c * mid, axis=1)], axis=1)
    P2 = np.concatenate([z, np.cumsum(c * (mid * mid + var), axis=1)], axis=1)
    rep = np.maximum.accumulate(mid)
    h = TensorHist(rep, P0, P1, P2, float(rep[0]), float(rep[-1]), pk["energy"], pk["numel"], pk["rows"],
                   pk["buckets"], pk["e_floor"], pk["n_oct"], edges, np.ascontiguousarray(lo), np.ascontiguousarray(hi))
    h.packed = pk
    return h


@nb.njit(**_JIT)
def _cells(rep, P0, P1, P2, thr, K):
    """Per-context cell stats for thresholds thr [T, K-1] (cells are bin ranges split at rep < t)."""
    T = P0.shape[0]
    B = rep.size
    n = np.zeros((T, K), np.float64)
    s1 = np.zeros((T, K), np.float64)
    s2 = np.zeros((T, K), np.float64)
    for c in range(T):
        prev = 0
        for k in range(K):
            if k < K - 1:
                b = np.searchsorted(rep, thr[c, k])     # bins with rep < t go left
            else:
                b = B
            if b < prev:
                b = prev
            n[c, k] = P0[c, b] - P0[c, prev]
            s1[c, k] = P1[c, b] - P1[c, prev]
            s2[c, k] = P2[c, b] - P2[c, prev]
            prev = b
    return n, s1, s2


@nb.njit(**_JIT)
def _bin_span(lo, hi, delta, last):
    """Grid positions j0..j1 (level j*delta) whose cells a bin [lo, hi] reaches, after position `last`."""
    j0 = int(np.floor(lo / delta + 0.5))
    j1 = int(np.floor(hi / delta + 0.5))
    return max(j0, last + 1), j1


@nb.njit(**_JIT)
def _grid_levels(blo, bhi, delta):
    """Integer grid positions j (level j*delta) whose cells can hold data: those of every occupied bin
    (`_n_levels` of them; [0] when there are none)."""
    out = np.zeros(_n_levels(blo, bhi, delta), np.int64)
    n = 0
    last = -(1 << 62)
    for b in range(blo.size):
        j0, j1 = _bin_span(blo[b], bhi[b], delta, last)
        for j in range(j0, j1 + 1):
            out[n] = j
            n += 1
            last = j
    return out


@nb.njit(**_JIT)
def _n_levels(blo, bhi, delta):
    """How many levels `_grid_levels` returns (counted without building them: the sweeps need only this)."""
    n = 0
    last = -(1 << 62)
    for b in range(blo.size):
        j0, j1 = _bin_span(blo[b], bhi[b], delta, last)
        if j1 >= j0:
            n += j1 - j0 + 1
            last = j1
    return max(n, 1)


@nb.njit(**_JIT)
def _ecsq(rep, blo, bhi, P0, P1, P2, delta, iters, uniform):
    """ECSQ from the uniform grid of step delta (only the grid levels near data). The first iterations
    use the pooled histogram (one table); the last one sets per-context thresholds from per-context
    code lengths."""
    js = _grid_levels(blo, bhi, delta)
    K = js.size
    T = P0.shape[0]
    W = P0.shape[1]
    cb = np.empty(K, np.float64)
    for k in range(K):
        cb[k] = js[k] * delta
    thr = np.empty((T, max(K - 1, 1)), np.float64)
    for c in range(T):
        for k in range(K - 1):
            thr[c, k] = 0.5 * (cb[k] + cb[k + 1])
    lam = 2.0 * np.log(2.0) * delta * delta / 12.0
    Nc = np.empty(T, np.float64)
    for c in range(T):
        Nc[c] = P0[c, W - 1]
    if not uniform and K > 1:
        # pooled statistics for the global iterations
        G0 = np.zeros((1, W)); G1 = np.zeros((1, W)); G2 = np.zeros((1, W))
        for c in range(T):
            for b in range(W):
                G0[0, b] += P0[c, b]; G1[0, b] += P1[c, b]; G2[0, b] += P2[c, b]
        gthr = np.empty((1, max(K - 1, 1)), np.float64)
        for k in range(K - 1):
            gthr[0, k] = thr[0, k]
        Ng = G0[0, W - 1]
        for it in range(iters):
            last = it == iters - 1
            if last and T > 1:
                n, s1, s2 = _cells(rep, P0, P1, P2, thr, K)
            else:
                n, s1, s2 = _cells(rep, G0, G1, G2, gthr, K)
            for k in range(K):
                nt = 0.0
                st = 0.0
                for c in range(n.shape[0]):
                    nt += n[c, k]
                    st += s1[c, k]
                if nt > 0:
                    cb[k] = st / nt
            for k in range(1, K):            # keep the codebook strictly increasing
                if cb[k] <= cb[k - 1]:
                    cb[k] = cb[k - 1] + 1e-12 * max(abs(cb[k - 1]), 1e-30)
            if last and T > 1:
                for c in range(T):
                    if Nc[c] <= 0:
                        continue
                    lmax = np.log2(Nc[c]) + 2.0
                    for k in range(K - 1):
                        la = lmax if n[c, k] <= 0 else np.log2(Nc[c] / n[c, k])
                        lb = lmax if n[c, k + 1] <= 0 else np.log2(Nc[c] / n[c, k + 1])
                        thr[c, k] = 0.5 * (cb[k] + cb[k + 1]) + lam * (lb - la) / (2.0 * (cb[k + 1] - cb[k]))
                    for k in range(1, K - 1):
                        if thr[c, k] < thr[c, k - 1]:
                            thr[c, k] = thr[c, k - 1]
            else:
                lmax = np.log2(max(Ng, 1.0)) + 2.0
                for k in range(K - 1):
                    la = lmax if n[0, k] <= 0 else np.log2(Ng / n[0, k])
                    lb = lmax if n[0, k + 1] <= 0 else np.log2(Ng / n[0, k + 1])
                    gthr[0, k] = 0.5 * (cb[k] + cb[k + 1]) + lam * (lb - la) / (2.0 * (cb[k + 1] - cb[k]))
                for k in range(1, K - 1):
                    if gthr[0, k] < gthr[0, k - 1]:
                        gthr[0, k] = gthr[0, k - 1]
                for c in range(T):
                    for k in range(K - 1):
                        thr[c, k] = gthr[0, k]
    n, s1, s2 = _cells(rep, P0, P1, P2, thr, K)
    if not uniform:
        for k in range(K):
            nt = 0.0
            st = 0.0
            for c in range(T):
                nt += n[c, k]
                st += s1[c, k]
            if nt > 0:
                cb[k] = st / nt
    sse = 0.0
    bits = 0.0
    for c in range(T):
        for k in range(K):
            if n[c, k] > 0:
                sse += s2[c, k] - 2.0 * cb[k] * s1[c, k] + n[c, k] * cb[k] * cb[k]
                bits += n[c, k] * np.log2(Nc[c] / n[c, k])
    used = np.zeros(K, np.bool_)
    for k in range(K):
        for c in range(T):
            if n[c, k] > 0:
                used[k] = True
    return cb, thr, used, max(sse, 0.0), bits


@nb.njit(**_JIT)
def _sweep(rep, blo, bhi, P0, P1, P2, deltas, iters, uniform, max_levels):
    """(used levels, index bits, sse) for each step (stops where the grid would exceed max_levels)."""
    n = deltas.size
    k_used = np.zeros(n, np.int64)
    bits = np.full(n, np.nan)
    sse = np.full(n, np.nan)
    for i in range(n):
        d = deltas[i]
        if _n_levels(blo, bhi, d) > max_levels:
            break
        cb, thr, used, s, b = _ecsq(rep, blo, bhi, P0, P1, P2, d, iters, uniform)
        k_used[i] = used.sum()
        bits[i] = b
        sse[i] = s
    return k_used, bits, sse


def sweep(h: TensorHist, deltas: np.ndarray, n_ctx: int, uniform: bool, iters: int = 4):
    P0, P1, P2 = h.merged(n_ctx)
    return _sweep(h.rep, h.blo, h.bhi, P0, P1, P2, np.ascontiguousarray(deltas, np.float64), iters,
                  uniform, MAX_LEVELS)


@dataclass
class Quantiser:
    """A concrete quantiser for one tensor: what the final pass applies."""
    codebook: np.ndarray      # float64 [K] (used levels only)
    thresholds: np.ndarray    # float64 [T, K-1]
    n_ctx: int
    sse: float                # estimated on the histogram
    index_bits: float         # estimated ideal coded bits of the indices
    uniform: bool


def quantiser(h: TensorHist, delta: float, n_ctx: int, uniform: bool, iters: int = 4) -> Quantiser:
    P0, P1, P2 = h.merged(n_ctx)
    cb, thr, used, sse, bits = _ecsq(h.rep, h.blo, h.bhi, P0, P1, P2, float(delta), iters, uniform)
    K = cb.size
    keep = np.flatnonzero(used)
    if keep.size == 0:
        keep = np.array([0])
    # dropping an empty level k merges its (empty) cell into its lower neighbour: remove threshold k-1
    # (or threshold 0 when k == 0), which keeps every used cell's interval for every context
    cbk = cb[keep]
    T = thr.shape[0]
    if keep.size < K:
        # drop empty levels; between kept levels that were adjacent keep the ECSQ threshold, across a
        # gap of dropped levels put it at the midpoint (nearest level: the gap held no data in the
        # histogram, and values there in the full tensor must go to the closer level)
        new = np.empty((T, max(keep.size - 1, 0)))
        for i in range(keep.size - 1):
            a, b = keep[i], keep[i + 1]
            new[:, i] = thr[:, a] if b == a + 1 else 0.5 * (cb[a] + cb[b])
        thr = new
    else:
        thr = thr[:, :K - 1]
    thr = np.ascontiguousarray(np.maximum.accumulate(thr, axis=1) if thr.shape[1] else thr)
    return Quantiser(cbk, thr, n_ctx, sse, bits, uniform)


def delta_grid(rms: float, n: int = 80, per_bit: int = 8, top: float = 4.0) -> np.ndarray:
    """Steps from `top` * RMS down by 2^(-1/per_bit): about 1/per_bit bit apart at high rate."""
    return rms * top * 2.0 ** (-np.arange(n) / per_bit)
