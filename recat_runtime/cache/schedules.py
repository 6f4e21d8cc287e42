"""Refresh schedules: which of the S denoising steps run the full UNet ("full steps").

A schedule is a sorted tuple of step indices in ``[0, S)`` that always contains step 0 (nothing is
cached before the first step). Every other step is a *cached* step that reuses the deep feature of the
latest full step before it. This module is pure numpy: no torch.

- :func:`no_cache_schedule` — every step full.
- :func:`uniform_schedule` — B full steps spread evenly (``floor(i*S/B)``); with ``S = N*B`` this is
  DeepCache's uniform 1:N schedule.
- :func:`interval_schedule` — DeepCache's uniform schedule by interval N: ``0, N, 2N, ...``.
- :func:`quadratic_schedule` — DeepCache's non-uniform schedule (dense around a centre step).
- :func:`optimal_schedule` — ReCaT: exact dynamic program over all segmentations that minimises the
  summed within-segment distance ``d(anchor, t)`` with at most B full steps.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "no_cache_schedule",
    "uniform_schedule",
    "interval_schedule",
    "quadratic_schedule",
    "optimal_schedule",
    "optimal_schedule_trend",
    "schedule_cost",
    "schedule_cost_trend",
    "brute_force_schedule",
    "check_schedule",
]


def check_schedule(full_steps, num_steps: int) -> tuple[int, ...]:
    """Validates a schedule and returns it as a sorted tuple of ints.

    Raises:
        ValueError: step 0 missing, a step outside ``[0, num_steps)``, or duplicates.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    steps = tuple(sorted(int(s) for s in full_steps))
    if len(set(steps)) != len(steps):
        raise ValueError(f"schedule has duplicate steps: {list(steps)}")
    if not steps or steps[0] != 0:
        raise ValueError(f"step 0 must be a full step (nothing is cached before it); got {list(steps)}")
    if steps[-1] >= num_steps:
        raise ValueError(f"schedule step {steps[-1]} is outside [0, {num_steps})")
    return steps


def _check_budget(num_steps: int, budget: int) -> int:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if budget < 1:
        raise ValueError(f"the budget of full steps must be >= 1, got {budget}")
    return min(int(budget), int(num_steps))


def no_cache_schedule(num_steps: int) -> tuple[int, ...]:
    """Every step is a full step."""
    return tuple(range(num_steps))


def uniform_schedule(num_steps: int, budget: int) -> tuple[int, ...]:
    """B full steps spread evenly over S steps: ``floor(i * S / B)`` for ``i < B``.

    Example:
        >>> uniform_schedule(50, 10)
        (0, 5, 10, 15, 20, 25, 30, 35, 40, 45)
        >>> uniform_schedule(20, 7)
        (0, 2, 5, 8, 11, 14, 17)
    """
    b = _check_budget(num_steps, budget)
    return tuple(sorted({(i * num_steps) // b for i in range(b)}))


def interval_schedule(num_steps: int, interval: int) -> tuple[int, ...]:
    """DeepCache's uniform 1:N schedule: ``0, N, 2N, ...`` (``ceil(S/N)`` full steps).

    Example:
        >>> interval_schedule(20, 3)
        (0, 3, 6, 9, 12, 15, 18)
    """
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return tuple(range(0, num_steps, interval))


def quadratic_schedule(num_steps: int, budget: int, center: float = 0.44, power: float = 1.4) -> tuple[int, ...]:
    """DeepCache's non-uniform schedule: full steps dense around a centre step, sparse far from it.

    ``l_k`` evenly spaced in ``[-c^(1/p), (S-c)^(1/p)]`` (``k = 0..B``), step ``= floor(sign(l)|l|^p) + c``;
    ``p`` starts at ``power`` and drops by 0.02 until there are exactly B distinct steps (DeepCache's
    search). ``center`` is a fraction of S (DeepCache used centre 110 of 250 steps, i.e. 0.44, with
    power 1.4). DeepCache's released code evaluates the negative base in complex arithmetic; this is the
    intended real-valued, sign-symmetric version (the steps differ by at most one or two).

    Falls back to :func:`uniform_schedule` when no power in (1, power] gives B distinct steps.

    Example:
        >>> quadratic_schedule(50, 10)
        (0, 6, 12, 17, 20, 22, 26, 31, 36, 43)
    """
    b = _check_budget(num_steps, budget)
    if b >= num_steps:
        return no_cache_schedule(num_steps)
    if b == 1:
        return (0,)
    c = float(center) * num_steps
    p = float(power)
    while p > 1.0 + 1e-9:
        lo, hi = -(c ** (1.0 / p)), (num_steps - c) ** (1.0 / p)
        grid = np.linspace(lo, hi, b + 1)[:-1]
        steps = np.floor(np.sign(grid) * np.abs(grid) ** p + c + 1e-9).astype(np.int64)
        steps = np.unique(np.clip(steps, 0, num_steps - 1))
        steps[0] = 0
        steps = np.unique(steps)
        if len(steps) == b:
            return tuple(int(s) for s in steps)
        p -= 0.02
    return uniform_schedule(num_steps, b)


def _segment_costs(distance: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``P[s, e] = sum_{t=s+1}^{e-1} w_t d(s, t)`` for ``0 <= s < e <= T`` (cost of a segment anchored at s)."""
    d = np.asarray(distance, dtype=np.float64)
    t_count = d.shape[0]
    if d.shape != (t_count, t_count):
        raise ValueError(f"distance matrix must be square, got shape {d.shape}")
    w = np.ones(t_count) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (t_count,):
        raise ValueError(f"weights must have shape ({t_count},), got {w.shape}")
    if not np.all(np.isfinite(d[np.triu_indices(t_count, 1)])) or not np.all(np.isfinite(w)):
        raise ValueError("distance matrix and weights must be finite above the diagonal")
    cost = np.full((t_count, t_count + 1), np.inf)
    for s in range(t_count):
        row = w[s + 1 :] * d[s, s + 1 :]
        cost[s, s + 1] = 0.0
        cost[s, s + 2 :] = np.cumsum(row)
    return cost


def optimal_schedule(distance, budget: int, weights=None) -> tuple[tuple[int, ...], float]:
    """ReCaT's schedule: the exact minimum-cost segmentation of the T steps into at most B segments.

    Each segment starts at a full step s (its *anchor*) and its cached steps t pay ``w_t * d(s, t)``;
    step 0 is always an anchor. ``M[k][e] = min_s M[k-1][s] + P[s][e]`` over all ``s < e``, where
    ``P[s][e]`` is the cost of the segment ``[s, e)``; the answer is ``min_{k <= B} M[k][T]``. This is
    O(B T^2) time, O(B T) memory, and exact (no bound on segment lengths, unlike CacheQuant's DPS).

    Args:
        distance: ``[T, T]`` matrix; only ``d[s, t]`` with ``s < t`` is used (e.g. ``1 - CKA``).
        budget: B, the largest number of full steps (step 0 included).
        weights: optional ``[T]`` per-step weights ``w_t``.

    Returns:
        ``(full_steps, cost)``. Ties are broken towards fewer full steps, then earlier anchors.

    Example:
        >>> d = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))
        >>> optimal_schedule(d, 2)
        ((0, 3), 6.0)
    """
    seg = _segment_costs(distance, weights)
    t_count = seg.shape[0]
    b = _check_budget(t_count, budget)
    best = np.full((b + 1, t_count + 1), np.inf)  # best[k, e]: steps [0, e) in k segments
    arg = np.full((b + 1, t_count + 1), -1, dtype=np.int64)
    best[1, 1:] = seg[0, 1:]
    arg[1, 1:] = 0
    for k in range(2, b + 1):
        for e in range(k, t_count + 1):
            # the last segment starts at s (k-1 <= s < e); steps [0, s) use k-1 segments
            s_range = np.arange(k - 1, e)
            totals = best[k - 1, s_range] + seg[s_range, e]
            j = int(np.argmin(totals))  # first minimum: earliest anchor on ties
            best[k, e] = totals[j]
            arg[k, e] = s_range[j]
    finals = best[1:, t_count]
    k_best = int(np.argmin(finals)) + 1  # first minimum: fewest segments on ties
    anchors = []
    e, k = t_count, k_best
    while k >= 1:
        s = int(arg[k, e])
        anchors.append(s)
        e, k = s, k - 1
    return tuple(sorted(anchors)), float(best[k_best, t_count])


def optimal_schedule_trend(first, pair, budget: int, weights=None) -> tuple[tuple[int, ...], float]:
    """The exact optimal schedule when a cached step's cost depends on the last *two* full steps.

    With a fitted trend correction a cached step t after full steps a' < a pays ``pair[a', a, t]``;
    in the first segment (anchor 0, nothing before it) it pays ``first[0, t]``. The DP runs over the
    last two anchors: ``G[k][e, s] = min_p G[k-1][s, p] + sum_{s<t<e} w_t pair[p, s, t]``, O(B T^3)
    time, O(B T^2) memory; exact over all schedules with at most B full steps.

    Args:
        first: ``[T, T]``; row 0 is used.
        pair: ``[T, T, T]``; ``pair[p, s, t]`` with ``p < s < t`` is used.
        budget: B, the largest number of full steps (step 0 included).
        weights: optional ``[T]`` per-step weights.

    Returns:
        ``(full_steps, cost)``; ties go to fewer full steps.
    """
    d1 = np.asarray(first, dtype=np.float64)
    d3 = np.asarray(pair, dtype=np.float64)
    t_count = d1.shape[0]
    if d1.shape != (t_count, t_count) or d3.shape != (t_count,) * 3:
        raise ValueError(f"first must be [T, T] and pair [T, T, T]; got {d1.shape} and {d3.shape}")
    w = np.ones(t_count) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (t_count,):
        raise ValueError(f"weights must have shape ({t_count},), got {w.shape}")
    b = _check_budget(t_count, budget)
    iu = np.triu_indices(t_count, 1)
    if not (np.all(np.isfinite(d1[0, 1:])) and np.all(np.isfinite(d3[iu[0], iu[1], :])) and np.all(np.isfinite(w))):
        raise ValueError("costs and weights must be finite")
    seg0 = _segment_costs(d1, w)[0]                       # seg0[e]: steps 1..e-1 anchored at 0, no trend
    # seg[p, s, e] = sum_{t=s+1}^{e-1} w_t pair[p, s, t]   (p < s < e <= T)
    seg = np.full((t_count, t_count, t_count + 1), np.inf)
    for s in range(1, t_count):
        run = np.cumsum(d3[:s, s, s + 1 :] * w[s + 1 :], axis=1)  # [p, t]
        seg[:s, s, s + 1] = 0.0
        seg[:s, s, s + 2 :] = run
    # G[e, s]: best cost of steps [0, e) whose last two anchors are s < e (e itself an anchor, not paid)
    best_cost, best = seg0[t_count], (1, None)
    g = np.full((t_count + 1, t_count), np.inf)
    g[1:t_count, 0] = seg0[1:t_count]
    history = []
    for k in range(2, b + 1):
        # close with k anchors: the last segment runs from anchor e to the end
        ends = g[:t_count, :] + np.where(np.isfinite(g[:t_count, :]), seg[np.arange(t_count)[None, :],
                                          np.arange(t_count)[:, None], t_count], np.inf)
        idx = np.unravel_index(int(np.argmin(ends)), ends.shape)
        if ends[idx] < best_cost - 1e-12:
            best_cost, best = float(ends[idx]), (k, idx)
        if k == b:
            break
        nxt = np.full_like(g, np.inf)
        arg = np.full(g.shape, -1, dtype=np.int64)
        for s in range(1, t_count):
            tot = g[s, :s, None] + seg[:s, s, s + 1 :]        # [p, e] for e in (s, T]
            j = np.argmin(tot, axis=0)
            nxt[s + 1 :, s] = tot[j, np.arange(tot.shape[1])]
            arg[s + 1 :, s] = j
        nxt[t_count] = np.inf                                 # T is not a step
        history.append(arg)
        g = nxt
    k, idx = best
    if idx is None:
        return (0,), float(best_cost)
    e, s = int(idx[0]), int(idx[1])
    anchors = [e, s]
    for arg in reversed(history[: k - 2]):
        p = int(arg[e, s])
        anchors.append(p)
        e, s = s, p
    return tuple(sorted(set(anchors))), float(best_cost)


def schedule_cost_trend(first, pair, full_steps, weights=None) -> float:
    """Total cost of a given schedule under :func:`optimal_schedule_trend`'s model."""
    d1 = np.asarray(first, dtype=np.float64)
    d3 = np.asarray(pair, dtype=np.float64)
    t_count = d1.shape[0]
    steps = check_schedule(full_steps, t_count)
    w = np.ones(t_count) if weights is None else np.asarray(weights, dtype=np.float64)
    total, prev, anchor, full = 0.0, None, 0, set(steps)
    for t in range(t_count):
        if t in full:
            prev, anchor = (anchor if t else None), t
        else:
            total += w[t] * (d1[anchor, t] if prev is None else d3[prev, anchor, t])
    return float(total)


def schedule_cost(distance, full_steps, weights=None) -> float:
    """Total within-segment cost of a given schedule (what :func:`optimal_schedule` minimises)."""
    d = np.asarray(distance, dtype=np.float64)
    t_count = d.shape[0]
    steps = check_schedule(full_steps, t_count)
    w = np.ones(t_count) if weights is None else np.asarray(weights, dtype=np.float64)
    total, anchor, full = 0.0, 0, set(steps)
    for t in range(t_count):
        if t in full:
            anchor = t
        else:
            total += w[t] * d[anchor, t]
    return float(total)


def brute_force_schedule(distance, budget: int, weights=None) -> tuple[tuple[int, ...], float]:
    """Reference for tests: tries every schedule with at most B full steps (exponential; small T only)."""
    t_count = np.asarray(distance).shape[0]
    b = _check_budget(t_count, budget)
    best_steps, best_cost = None, math.inf
    for k in range(0, b):
        for rest in itertools.combinations(range(1, t_count), k):
            steps = (0, *rest)
            c = schedule_cost(distance, steps, weights)
            if c < best_cost - 1e-12:
                best_steps, best_cost = steps, c
    return best_steps, best_cost
