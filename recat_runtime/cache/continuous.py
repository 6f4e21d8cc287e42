"""One ReCaT profile for any step count, budget, sampler and partial run: a schedule *model* in continuous time.

A profile is measured once on one sampling grid (e.g. DDIM, 50 steps): the deep feature's pair moments
(:class:`recat_runtime.cache.profile.PairMoments`) and the CKA matrix, each indexed by the *timestep
value* t of the profiled steps. Those are properties of the model at (latent, t), not of the grid, so
for any other grid (another step count, another sampler's timesteps, the tail an img2img run executes)
each step is mapped to the profiled step nearest in t, and the distances and the least-squares correction
are computed on that mapped grid.

The refresh set is built **nested**: a greedy order of refresh steps (step 0 first, then the step whose
addition lowers the schedule's cost most, ...), and budget B takes the first B of that order. So budget
B+1 refreshes every step budget B refreshes and one more: its modelled cost can only go down, and it never
moves a refresh away from where a smaller budget had it (per-budget optimal schedules do, which made 8
full steps 3.7 dB worse than 7 on the demo model). The cost is a weighted within-segment distance; which
weighting and which correction (affine, or with the fitted trend) are chosen at profile time by
validation over several budgets (:func:`recat_runtime.api.profile_cache`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from recat_runtime.cache.hook import CacheCorrection
from recat_runtime.cache.profile import (PairMoments, correction_from_moments, residual_distance,
                                         trend_correction_from_moments, trend_residual_distance)
from recat_runtime.cache.schedules import schedule_cost, schedule_cost_trend

__all__ = ["ScheduleModel", "WEIGHTINGS", "KINDS", "nested_order", "nested_order_trend"]

# per-step weights in continuous time, w(t) = ((T - t) / T)^q: later (less noisy) steps weigh more, since
# errors made there have fewer remaining steps to be corrected (select.py's "late" family, in t not index)
WEIGHTINGS = {"none": 0.0, "late1": 1.0, "late2": 2.0, "late4": 4.0}
KINDS = ("none", "affine", "trend")
# How far ahead a derived trend correction may forecast, in multiples of the distance between its two full
# steps (further steps get the affine correction; see trend_correction_from_moments); None: no limit.
# Measured on the demo model (bench/RESULTS.md, "ReCaT that users can rely on": three profiles x 36 held-out
# images, B = 5..12 of 50): without the limit 7 full steps beat uniform 10 on mean and pooled PSNR with all
# three profiles (with the limit 1.0: one of three), and the worst drop when a full step is added was
# 0 / 0.63 / 0.92 dB (with 1.0: 0.99 / 0.93 / 8.3 dB). The limit had been set from one profile's 6 dB drop.
TREND_REACH: float | None = None


def nested_order(distance: np.ndarray, budget: int, weights=None) -> list[int]:
    """The first ``budget`` refresh steps in greedy nested order (step 0 first): each next step is the one
    that lowers :func:`schedule_cost` most (ties: the earlier step)."""
    t_count = distance.shape[0]
    order = [0]
    while len(order) < min(budget, t_count):
        rest = [s for s in range(1, t_count) if s not in order]
        costs = [schedule_cost(distance, order + [s], weights) for s in rest]
        order.append(rest[int(np.argmin(costs))])
    return order


def nested_order_trend(first: np.ndarray, pair: np.ndarray, budget: int, weights=None) -> list[int]:
    """:func:`nested_order` under the trend cost (a cached step's cost depends on its last two full steps)."""
    t_count = first.shape[0]
    order = [0]
    while len(order) < min(budget, t_count):
        rest = [s for s in range(1, t_count) if s not in order]
        costs = [schedule_cost_trend(first, pair, order + [s], weights) for s in rest]
        order.append(rest[int(np.argmin(costs))])
    return order


def _remap(moments: PairMoments, idx: np.ndarray) -> PairMoments:
    """The moments seen on a grid whose step i is the profiled step ``idx[i]``."""
    out = PairMoments(len(idx))
    out.count = moments.count
    out.s1 = moments.s1[idx]
    out.s2 = moments.s2[np.ix_(idx, idx)]
    out.q = moments.q[np.ix_(idx, idx)]
    return out


@dataclass(frozen=True)
class ScheduleModel:
    """A profile in continuous time: derives the refresh steps and correction for any timestep grid.

    Args:
        timesteps: ``[P]`` timestep values of the profiled steps (as the profiled sampler ran them).
        similarity: ``[P, P]`` CKA between the profiled steps (used when there are no moments).
        moments: the pair moments of the profiling pass (None: no correction, 1 - CKA distance).
        weighting: a key of :data:`WEIGHTINGS`.
        kind: the correction, one of :data:`KINDS` (``"none"`` without moments).
        num_train_timesteps: T of the noise schedule (the scale of t in the weights).
    """

    timesteps: np.ndarray
    similarity: np.ndarray
    moments: PairMoments | None = None
    weighting: str = "none"
    kind: str = "affine"
    num_train_timesteps: int = 1000

    def __post_init__(self):
        p = len(self.timesteps)
        if self.similarity.shape != (p, p):
            raise ValueError(f"similarity {self.similarity.shape} does not match {p} profiled timesteps")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown correction kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.kind != "none" and self.moments is None:
            raise ValueError(f"a {self.kind} correction needs the profiling pass's pair moments")
        if self.moments is not None and self.moments.num_steps != p:
            raise ValueError(f"moments have {self.moments.num_steps} steps, the profile {p}")

    def grid(self, timesteps) -> np.ndarray:
        """For each timestep value, the index of the profiled step nearest in t."""
        t = np.asarray(timesteps, dtype=np.float64).reshape(-1)
        prof = np.asarray(self.timesteps, dtype=np.float64)
        return np.abs(t[:, None] - prof[None, :]).argmin(axis=1)

    def weights(self, timesteps) -> np.ndarray | None:
        q = WEIGHTINGS[self.weighting]
        if q == 0.0:
            return None
        t = np.clip(np.asarray(timesteps, dtype=np.float64), 0, self.num_train_timesteps)
        w = ((self.num_train_timesteps - t + 1.0) / self.num_train_timesteps) ** q
        return w / w.mean()

    def order(self, timesteps, budget: int) -> list[int]:
        """The first ``budget`` refresh steps (indices into ``timesteps``), in nested order."""
        idx = self.grid(timesteps)
        w = self.weights(timesteps)
        if self.moments is None:
            d = 1.0 - np.asarray(self.similarity, dtype=np.float64)[np.ix_(idx, idx)]
            return nested_order(d, budget, w)
        m = _remap(self.moments, idx)
        first = residual_distance(m)
        if self.kind == "trend":
            pair = trend_residual_distance(m)
            if TREND_REACH is not None:
                t = np.arange(len(idx))
                p_, s_, t_ = np.meshgrid(t, t, t, indexing="ij")
                beyond = (t_ - s_) > TREND_REACH * (s_ - p_)         # affine there: its residual is the cost
                pair = np.where(beyond, first[None, :, :], pair)
            return nested_order_trend(first, pair, budget, w)
        return nested_order(first, budget, w)

    def schedule(self, timesteps, budget: int) -> tuple[tuple[int, ...], CacheCorrection | None]:
        """``(full steps, correction)`` for a run over ``timesteps`` with ``budget`` full steps."""
        n = len(timesteps)
        if budget < 1:
            raise ValueError(f"the budget of full steps must be >= 1, got {budget}")
        if budget >= n:
            return tuple(range(n)), None
        full = tuple(sorted(self.order(timesteps, budget)))
        if self.kind == "none":
            return full, None
        m = _remap(self.moments, self.grid(timesteps))
        if self.kind == "trend":
            return full, trend_correction_from_moments(m, full, max_reach=TREND_REACH)[0]
        return full, correction_from_moments(m, full)[0]

    def planner(self, steps: int, budget: int) -> Callable:
        """``plan(timesteps, start) -> (full steps, correction)`` for :class:`RecatCacheConfig`: a run over
        all of ``timesteps`` (length S) that executes only steps ``start..S-1`` (img2img, inpainting) gets
        the schedule derived for that tail, with the refresh fraction of ``budget / steps`` (at least one:
        the first executed step is always a refresh). Steps and correction rows are indexed in the whole
        run's numbering."""
        frac = budget / steps
        memo: dict = {}     # planning takes a good fraction of a second: once per (grid, start), not per run

        def plan(timesteps, start: int):
            timesteps = np.asarray(timesteps, dtype=np.float64)
            key = (timesteps.tobytes(), int(start))
            if key not in memo:
                memo[key] = _plan(timesteps, int(start))
            return memo[key]

        def _plan(timesteps, start: int):
            total = len(timesteps)
            tail = timesteps[start:]
            b = budget if (start == 0 and total == steps) else max(1, int(np.ceil(frac * len(tail) - 1e-9)))
            full, corr = self.schedule(tail, b)
            full = tuple(start + s for s in full)
            return full, None if corr is None else corr.delayed(start)

        plan.model = self       # what planned it (reports, tests)
        return plan

    # -- stored form (recat_runtime.cache.store writes it under a profile's "continuous" key)
    def to_json(self) -> dict:
        out = {"timesteps": [round(float(t), 6) for t in self.timesteps], "weighting": self.weighting,
               "correction": self.kind, "num_train_timesteps": int(self.num_train_timesteps)}
        if self.moments is not None:
            m, p = self.moments, self.moments.num_steps
            iu = np.triu_indices(p)
            # 9 significant digits: variances come from E[x^2] - E[x]^2, which cancels digits
            r = lambda a: [[float("%.9g" % v) for v in row] for row in np.asarray(a, np.float64)]  # noqa: E731
            # upper triangles (with the diagonal) of the symmetric per-channel moments, as means
            out["moments"] = {"count": float(m.count), "mean": r(m.s1 / m.count),
                              "cross": r(m.s2[iu] / m.count), "centred": r(m.q[iu] / m.count)}
        return out

    @classmethod
    def from_json(cls, obj: dict, similarity) -> "ScheduleModel":
        ts = np.asarray(obj["timesteps"], dtype=np.float64)
        p = len(ts)
        moments = None
        if obj.get("moments") is not None:
            mj = obj["moments"]
            mean = np.asarray(mj["mean"], np.float64)
            c = mean.shape[1] if mean.ndim == 2 else -1
            iu = np.triu_indices(p)
            cross, centred = np.asarray(mj["cross"], np.float64), np.asarray(mj["centred"], np.float64)
            if mean.shape != (p, c) or cross.shape != (len(iu[0]), c) or centred.shape != cross.shape:
                raise ValueError(f"moments must be [{p}][C] and [{len(iu[0])}][C] matrices")
            n = float(mj["count"])
            if not n > 0:
                raise ValueError("moments count must be > 0")
            moments = PairMoments(p)
            moments.count = n
            moments.s1 = mean * n
            full = lambda tri: _symmetric(tri, p, c) * n  # noqa: E731
            moments.s2, moments.q = full(cross), full(centred)
        return cls(ts, np.asarray(similarity, np.float64), moments, obj.get("weighting", "none"),
                   obj.get("correction", "none" if moments is None else "affine"),
                   int(obj.get("num_train_timesteps", 1000)))


def _symmetric(tri: np.ndarray, p: int, c: int) -> np.ndarray:
    out = np.zeros((p, p, c))
    iu = np.triu_indices(p)
    out[iu] = tri
    out[(iu[1], iu[0])] = tri
    return out
