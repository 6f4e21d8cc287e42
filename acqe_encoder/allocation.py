"""Mixed precision under a size budget: pick one (rate, distortion) candidate per tensor.

Minimise sum_l D_l subject to sum_l R_l <= budget, where R_l is the tensor's measured size in bits
(entropy-coded indices + codebook + frequency tables + row contexts + chunk tables) and D_l is its
distortion (default: sum of squared error / mean square = numel * 10^(-SQNR/10), times an optional
sensitivity). Solved by a Lagrangian sweep (each tensor takes argmin D + lambda R; lambda bisected to
the largest total rate within the budget), then a greedy pass spends what is left on the upgrades with
the best distortion drop per bit.
"""
from __future__ import annotations

import numpy as np


def _pick(R: list[np.ndarray], D: list[np.ndarray], lam: float) -> np.ndarray:
    return np.array([int(np.argmin(d + lam * r)) for r, d in zip(R, D)], dtype=np.int64)


def allocate(R: list[np.ndarray], D: list[np.ndarray], budget_bits: float) -> tuple[np.ndarray, float]:
    """Choose one candidate per tensor. Returns (choice indices, total rate in bits).

    When even the smallest candidates exceed the budget, the smallest ones are returned (the caller
    reports the overshoot).
    """
    n = len(R)
    if n == 0:
        return np.zeros(0, np.int64), 0.0
    rmin = sum(float(r.min()) for r in R)
    if rmin >= budget_bits:
        ch = np.array([int(np.argmin(r + 1e-12 * d)) for r, d in zip(R, D)])
        return ch, rmin

    def total(ch):
        return float(sum(R[i][c] for i, c in enumerate(ch)))

    # lambda range: distortion per bit spans many decades
    lo, hi = 1e-30, 1e30
    ch_hi = _pick(R, D, hi)
    if total(ch_hi) > budget_bits:     # fall back to the smallest-rate choices
        ch_hi = np.array([int(np.argmin(r)) for r in R])
    best = ch_hi
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        ch = _pick(R, D, mid)
        if total(ch) <= budget_bits:
            hi, best = mid, ch
        else:
            lo = mid
        if hi / lo < 1 + 1e-9:
            break
    choice = best.copy()
    used = total(choice)
    # greedy: spend the slack on the upgrades with the largest distortion drop per extra bit
    for _ in range(4 * n + 16):
        slack = budget_bits - used
        best_gain, best_i, best_c = 0.0, -1, -1
        for i in range(n):
            r0, d0 = R[i][choice[i]], D[i][choice[i]]
            dr = R[i] - r0
            dd = d0 - D[i]
            ok = (dr > 0) & (dr <= slack) & (dd > 0)
            if ok.any():
                g = np.where(ok, dd / np.where(dr > 0, dr, 1), -1.0)
                c = int(np.argmax(g))
                if g[c] > best_gain:
                    best_gain, best_i, best_c = float(g[c]), i, c
        if best_i < 0:
            break
        used += float(R[best_i][best_c] - R[best_i][choice[best_i]])
        choice[best_i] = best_c
    return choice, used
