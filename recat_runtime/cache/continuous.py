"""One ReCaT profile for any step count, budget, sampler and partial run: a schedule *model* in continuous time.

A profile is measured once on one sampling grid (e.g. DDIM, 50 steps): the deep feature's pair moments
(:class:`recat_runtime.cache.profile.PairMoments`) and the CKA matrix, each indexed by the *timestep
value* t of the profiled steps. Those are properties of the model at (latent, t), not of the grid, so
for any other grid (another step count, another sampler's timesteps, the tail an img2img run executes)
each step is mapped to the profiled step nearest in t, and the distances and the least-squares correction
are those of the mapped steps (computed once on the profiled grid and indexed, so planning a long run
costs no more memory than its T x T costs).

For each budget the refresh set is the exact optimum of the model's cost on that grid
(:func:`recat_runtime.cache.schedules.optimal_schedule_trend` with the fitted trend,
:func:`~recat_runtime.cache.schedules.optimal_schedule` otherwise): a weighted within-segment distance
that the correction cannot remove; on a grid coarser than the profiled one (fewer steps), the optimum
before a last refresh placed where uniform caching has its last (:meth:`ScheduleModel.anchored_steps`).
With few full steps a multistep solver restarts at the refreshes (:data:`RESTART_MULTISTEP_BELOW`).
An optimum's cost never rises when a full step is added (budget B+1
can always take B's schedule plus one step), so quality is monotone in the budget as far as the model
sees; the measured images are checked across budgets on held-out sets (``bench/bench_recat.py quality``,
bench/RESULTS.md). A greedy *nested* order (budget B+1 = budget B plus one step) was the rule before: on
the demo model its modelled cost was 10-30% above the optimum's at 5-12 of 50 full steps (above even the
uniform schedule's at 5-7); on 512 tuning images the optimum measured better at most budgets and worse at
some (bench/RESULTS.md, "Exact per-budget schedules"), and neither was monotone on every set. Which
weighting and which correction (affine, or with the fitted trend) are chosen at profile time by
validation over several budgets (:func:`recat_runtime.api.profile_cache`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from recat_runtime.cache.hook import CacheCorrection
from recat_runtime.cache.profile import (PairMoments, correction_from_moments, residual_distance,
                                         trend_correction_from_moments, trend_residual_distance)
from recat_runtime.cache.schedules import optimal_schedule, optimal_schedule_trend, uniform_schedule

__all__ = ["ScheduleModel", "WEIGHTINGS", "timestep_weights", "DEFAULT_WEIGHTING", "KINDS", "MIN_MODELLED_BUDGET",
           "PARTIAL_WEIGHTING", "PARTIAL_UNIFORM_BELOW", "CONTROLNET_CORRECTED_FROM", "RESTART_MULTISTEP_BELOW"]

# Per-step weights of the cost in continuous time, name -> (end, q):
# - "late": w(t) = ((T - t + 1) / T)^q, the less noisy steps weigh more: errors made there have fewer
#   remaining steps to be corrected (also select.py's exact candidates: timestep_weights); they cost mean PSNR;
# - "early": w(t) = ((t + 1) / T)^q, the noisy steps weigh more: there the content forms, and an error
#   turns an image into another one, which is what pooled PSNR and the images under 20 dB count.
# "early05" is what an unvalidated profile uses: on 512 tuning images of the demo model (captions and seeds
# disjoint from the benchmark's held-out sets) it was the only rule tried that beat uniform caching on mean
# AND pooled PSNR at every budget from 5 to 10 of 50 (plain "none" lost pooled PSNR at 6 and 7-vs-uniform-10),
# for up to 1.8 dB of mean PSNR against "none" at 10 of 50 (bench/RESULTS.md, "Exact per-budget schedules").
WEIGHTINGS = {"none": ("late", 0.0), "late1": ("late", 1.0), "late2": ("late", 2.0), "late4": ("late", 4.0),
              "early05": ("early", 0.5)}
DEFAULT_WEIGHTING = "early05"

KINDS = ("none", "affine", "trend")
# How far ahead a derived trend correction may forecast, in multiples of the distance between its two full
# steps (further steps get the affine correction; see trend_correction_from_moments); None: no limit.
# Measured on the demo model (bench/RESULTS.md, "ReCaT that users can rely on": three profiles x 36 held-out
# images, B = 5..12 of 50): without the limit 7 full steps beat uniform 10 on mean and pooled PSNR with all
# three profiles (with the limit 1.0: one of three), and the worst drop when a full step is added was
# 0 / 0.63 / 0.92 dB (with 1.0: 0.99 / 0.93 / 8.3 dB). The limit had been set from one profile's 6 dB drop.
TREND_REACH: float | None = None
# Below this many full steps a derived schedule is DeepCache's uniform one, uncorrected. With 3-4 full
# steps every rule derived from the profile (optimum or nested order, any weighting, any correction) lost
# to the even spread on the demo model: on mean and pooled PSNR on 512 tuning images at 4 of 50, and on
# mean or pooled PSNR in 7 of the 8 derived cells with 3-4 full steps of DDIM/DPM++ 20, 25, 30 steps
# (bench/RESULTS.md, "Exact per-budget schedules"). Too few refreshes to cover both the noisy steps where
# content forms and the last ones, whose errors nothing corrects.
MIN_MODELLED_BUDGET = 5
# Partial runs (img2img, inpainting: only the tail from the first executed step on). The profile models
# text-to-image trajectories, and a partial run starts from a noised *given* image. Chosen on 256 tuning
# images of the demo model (two runs of 128, captions and seeds disjoint from the benchmark's held-out sets;
# strengths 0.3-0.9, 7-15 of 50 full steps; bench/RESULTS.md, "Image-to-image: a rule for partial runs"):
# - a tail that starts at or above PARTIAL_UNIFORM_BELOW x T plans with the plain weighting: early05's
#   steep weights (written for whole runs, whose noisy steps form the content) leave the tail's last
#   steps, which nothing corrects, in one long cached run; the plain weighting was ahead of uniform caching
#   on mean PSNR in all 14 such cells and of early05 in 11;
# - a tail that starts below it (strength 0.5 or less with DDIM 50) refreshes evenly and keeps the correction:
#   over those 7 cells that beat every profile-derived plan tried on summed mean and pooled PSNR and on the
#   worst cell (the model misjudges a tail whose content came from another image); +1.4 ... +3.8 dB of
#   mean PSNR over uniform caching.
PARTIAL_WEIGHTING = "none"
PARTIAL_UNIFORM_BELOW = 0.5
# A run steered by a ControlNet refreshes at DeepCache's evenly spread steps, with the profile's correction
# from CONTROLNET_CORRECTED_FROM full steps on and uncorrected below. The profile models text-to-image
# trajectories: early05 guards the noisy steps where their layout forms, which a ControlNet fixes from its
# control image (with early05 ReCaT fell below uniform caching on mean PSNR at 5-8 of 50). On 128 tuning
# images of the demo model's layout ControlNet (captions eval_scenes(64, 777878 + 101 k), k = 0, 1; disjoint
# from the held-out sets; DDIM 50; bench/RESULTS.md, "ControlNet runs refresh evenly and keep the correction"), of
# the plans tried (the optimum with early05 or with the plain weighting, uniform, uniform with the
# correction) the corrected uniform steps had the highest mean PSNR at every budget 5-12 of 50 (+1.5 ...
# +5.5 dB over uniform, +0.5 ... +1.8 over the plain optimum), and with the correction off below 7 full
# steps (where it turned 3-4 of 128 images to other content against uncorrected uniform's 0-3) the highest
# sum over budgets of (mean + pooled PSNR) / 2: 251.9 against 245.7 for the plain optimum and 196 ... 199
# for the others over 5-10 (on a second draw of 128, corrected uniform and the plain optimum from 7 on were
# within 0.3 of each other). Like MIN_MODELLED_BUDGET, a count of full steps, tuned on 50-step runs. On the
# 192 held-out images a budget: equal to uniform at 5-6 of 50, +3.2 / +4.9 / +4.7 dB mean at 7 / 10 / 12,
# but at 7 two images turned (pooled -12 dB, interval containing 0); at DDIM 25, 7 and 10 of 25 above
# uniform on mean and pooled PSNR, intervals above 0. Plans from a profile of the ControlNet's own trajectories
# (bench_recat.py controlnet --rules cn-...) scored below this rule on two tuning draws: its correction is
# this one's within 0.2 dB, its optimum turns images at 5-6 of 50 (bench/RESULTS.md, "A profile of the
# ControlNet's own trajectories does not help").
CONTROLNET_CORRECTED_FROM = 7
# A derived plan with fewer full steps than this restarts a multistep solver's history at each refresh that
# follows cached steps (`RecatCacheConfig.restart_multistep`: that step is first order). DPM++ 2M's
# second-order update extrapolates from the previous model output, which after a cached run is the cached
# step's approximation; with few refreshes the cached runs are long and that error turned images. On 256
# tuning images of the demo model (captions eval_scenes(128, 31337 + 101 k), k = 0, 1; disjoint from the
# held-out sets; bench/RESULTS.md, "DPM++ restarts at a refresh"), restarting changed ReCaT's mean / pooled
# PSNR at 5 / 6 / 7 / 8 full steps by +0.7 / +3.0, +1.7 / +6.4, +0.4 / +6.5, -0.6 / +0.2 dB with 20 steps,
# +0.5 / +3.0, +0.5 / +2.6, -0.4 / -0.1, -0.6 / +2.0 with 30 and +0.7 / +2.4, +0.5 / +3.2, -0.0 / +0.2,
# -0.1 / +0.1 with 50; from 9 full steps on (short cached runs, small errors) the first-order step costs
# more than it saves (-0.6 ... -2.0 dB mean, -0.3 ... -2.6 pooled at 9-12, in every cell). A count of full
# steps: the spacing of refreshes along the trajectory, whatever the grid. Uniform caching (uncorrected) lost
# mean PSNR with the restart at every budget 5-10 of 20 (-0.7 ... -3.3 dB): it does not restart.
# Image-to-image tails (DPM++ 30, strengths 0.6 and 0.8, 7 / 10 / 12 of 30 full steps, 128 tuning images a
# cell): the partial-run plans restarted wherever their tail has 5-8 full steps summed +14.0 dB of (mean +
# pooled) / 2 over uniform caching against +0.8 without the restart (at strength 0.6 with 7 of 30 the plan
# without it was 4.0 / 8.2 dB below uniform caching; RESULTS, "DPM++ restarts at a refresh"). UniPC 20
# (its restart also skips the corrector, which combines the fresh output with the cached one before it):
# +1.5 / +3.5, +3.0 / +4.1, +2.5 / +4.4, +2.3 / +2.8 dB over uniform caching at 5-8 full steps, against
# +1.0 / +0.6, +1.3 / -1.7, +1.6 / -4.0, +2.1 / -2.0 without a restart.
RESTART_MULTISTEP_BELOW = 9
# The trend-cost DP over a run of T steps holds T^3 costs (200 steps: 64 MB, about 2 s on one CPU core);
# a longer run plans its refresh steps with the affine cost (T^2) and still gets the trend correction.
TREND_PLAN_MAX_STEPS = 200


def _fill(full, budget: int, t_count: int) -> tuple[int, ...]:
    """``full`` with refreshes added until it has ``budget`` (at most ``t_count``): the optimum takes *at
    most* B full steps and stops early when more cost nothing in the model (a fine grid whose steps map
    to one profiled step), but the user paid for B, so each extra one splits the longest cached run."""
    full = sorted(set(int(s) for s in full))
    while len(full) < min(budget, t_count):
        ends = full[1:] + [t_count]
        k = max(range(len(full)), key=lambda i: (ends[i] - full[i], -i))
        full.insert(k + 1, (full[k] + ends[k]) // 2)       # a run of >= 2 steps: strictly inside it
    return tuple(full)


def timestep_weights(name: str, timesteps, num_train_timesteps: int = 1000) -> np.ndarray | None:
    """Per-step weights of the weighting ``name`` (a key of :data:`WEIGHTINGS`) for a run over ``timesteps``,
    normalised to mean 1 (None: all equal). The one formula behind both the derived schedules and the exact
    per-budget candidates of :mod:`recat_runtime.cache.select` (on DDIM's 50-step grid, ``(T - t + 1) / T`` is
    ``(i + 1) / 50`` at step index i).

    Raises:
        ValueError: unknown name.
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}")
    end, q = WEIGHTINGS[name]
    if q == 0.0:
        return None
    big_t = float(num_train_timesteps)
    t = np.clip(np.asarray(timesteps, dtype=np.float64), 0, big_t)
    w = (((big_t - t + 1.0) if end == "late" else (t + 1.0)) / big_t) ** q
    return w / w.mean()


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

    def weights(self, timesteps, weighting: str | None = None) -> np.ndarray | None:
        """Per-step weights of the cost for a run over ``timesteps`` (None: all equal), by the model's
        weighting or ``weighting``."""
        return timestep_weights(self.weighting if weighting is None else weighting, timesteps,
                                self.num_train_timesteps)

    def refresh_steps(self, timesteps, budget: int, weighting: str | None = None) -> tuple[int, ...]:
        """The ``budget`` refresh steps (indices into ``timesteps``) of least modelled cost (weighted by the
        model's weighting or ``weighting``)."""
        return _fill(self._optimum(timesteps, budget, weighting), budget, len(timesteps))

    def anchored_steps(self, timesteps, budget: int) -> tuple[int, ...]:
        """``budget`` refresh steps whose last is where DeepCache's uniform schedule has its last, the others
        the model's optimum over the steps before it: what a whole run on a grid coarser than the profiled
        one refreshes at (:meth:`schedule`).

        Why: weighted towards the noisy steps (``early05``), the optimum ends in one long cached run, and what
        is missed there reaches the image with nothing left to correct it. On a coarser grid each run step
        stands for several profiled ones and the model (nearest profiled step) undercounts that run: with
        DPM++ at 20 steps the optimum fell below uniform caching on held-out images at 5 and 6 full steps
        (intervals below 0). Capping the last run at uniform's length raised mean PSNR in 24 of the 25
        held-out cells of DDIM 20/30, DPM++ 20/30 and Euler 30 at 5-10 full steps (Euler 30 at 8: -0.09 dB)
        and the summed (mean + pooled)/2 gain over uniform on each of those grids (bench/RESULTS.md, "The
        last cached run no longer than uniform's"). On the profiled grid itself it raised mean PSNR too
        (+1.2 ... +2.6 dB at 5-12 of 50) but lost pooled PSNR at 7 of 50 (-1.5 dB, 5 more images turned of
        768), where the plain optimum meets the 7-vs-uniform-10 target: there the optimum stays."""
        last = uniform_schedule(len(timesteps), budget)[-1]
        return self.refresh_steps(timesteps[:last], budget - 1) + (last,)

    @cached_property
    def _affine_cost(self) -> np.ndarray:
        """:func:`residual_distance` on the profiled grid (a run's grid indexes it)."""
        return residual_distance(self.moments)

    @cached_property
    def _trend_cost(self) -> np.ndarray:
        """:func:`trend_residual_distance` on the profiled grid, ties included (a run's grid indexes it)."""
        return trend_residual_distance(self.moments, ties=True)

    def _optimum(self, timesteps, budget: int, weighting: str | None) -> tuple[int, ...]:
        idx = self.grid(timesteps)
        w = self.weights(timesteps, weighting)
        if self.kind == "none":        # no correction: what the cached step misses is the plain dissimilarity
            d = 1.0 - np.asarray(self.similarity, dtype=np.float64)[np.ix_(idx, idx)]
            return optimal_schedule(d, budget, w)[0]
        first = self._affine_cost[np.ix_(idx, idx)]
        if self.kind == "trend" and len(idx) <= TREND_PLAN_MAX_STEPS:
            pair = self._trend_cost[np.ix_(idx, idx, idx)]
            if TREND_REACH is not None:      # in the run's steps, as trend_correction_from_moments counts them
                t = np.arange(len(idx))
                p_, s_, t_ = np.meshgrid(t, t, t, indexing="ij")
                beyond = (t_ - s_) > TREND_REACH * (s_ - p_)         # affine there: its residual is the cost
                pair = np.where(beyond, first[None, :, :], pair)
            return optimal_schedule_trend(first, pair, budget, w)[0]
        return optimal_schedule(first, budget, w)[0]

    def schedule(self, timesteps, budget: int, partial: bool = False,
                 controlnet: bool = False) -> tuple[tuple[int, ...], CacheCorrection | None]:
        """``(full steps, correction)`` for a run over ``timesteps`` with ``budget`` full steps: the model's
        optimum (on a grid coarser than the profiled one, :meth:`anchored_steps`) and its correction, or
        below :data:`MIN_MODELLED_BUDGET` the uniform steps uncorrected.
        ``partial``: ``timesteps`` are the tail a partial run executes (img2img, inpainting), planned by the
        partial-run rule (:data:`PARTIAL_WEIGHTING`, :data:`PARTIAL_UNIFORM_BELOW`). ``controlnet``: a whole
        run steered by a ControlNet: the uniform steps, corrected from :data:`CONTROLNET_CORRECTED_FROM` on."""
        n = len(timesteps)
        if budget < 1:
            raise ValueError(f"the budget of full steps must be >= 1, got {budget}")
        if budget >= n:
            return tuple(range(n)), None
        if budget < MIN_MODELLED_BUDGET:
            return uniform_schedule(n, budget), None
        if controlnet and not partial:
            full = uniform_schedule(n, budget)
            return full, self.correction(timesteps, full) if budget >= CONTROLNET_CORRECTED_FROM else None
        if not partial:
            full = (self.anchored_steps(timesteps, budget) if n < len(self.timesteps)
                    else self.refresh_steps(timesteps, budget))
        elif float(timesteps[0]) < PARTIAL_UNIFORM_BELOW * self.num_train_timesteps:
            full = uniform_schedule(n, budget)
        else:
            full = self.refresh_steps(timesteps, budget, PARTIAL_WEIGHTING)
        return full, self.correction(timesteps, full)

    def correction(self, timesteps, full) -> CacheCorrection | None:
        """The model's correction for refreshes ``full`` of a run over ``timesteps`` (None: no correction)."""
        if self.kind == "none":
            return None
        idx = self.grid(timesteps)
        if self.kind == "trend":
            return trend_correction_from_moments(self.moments, full, max_reach=TREND_REACH, index=idx)[0]
        return correction_from_moments(self.moments, full, index=idx)[0]

    def planner(self, steps: int, budget: int, controlnet: bool = False) -> Callable:
        """``plan(timesteps, start) -> (full steps, correction, restart_multistep)`` for
        :class:`RecatCacheConfig`: a run over all of ``timesteps`` (length S) that executes only steps
        ``start..S-1`` (img2img, inpainting) gets the schedule derived for that tail by the partial-run
        rule, with the refresh fraction of ``budget / steps`` (at least one: the first executed step is
        always a refresh). Steps and correction rows are indexed in the whole run's numbering.
        ``controlnet``: runs steered by a ControlNet (see :meth:`schedule`). ``restart_multistep``: whether
        a multistep solver restarts at the refreshes after cached steps (a modelled, corrected plan with
        fewer than :data:`RESTART_MULTISTEP_BELOW` full steps in the run or tail; not with a ControlNet)."""
        frac = budget / steps
        memo: dict = {}     # once per (grid, start), not per run: a 1000-step plan takes about a second

        def plan(timesteps, start: int):
            timesteps = np.asarray(timesteps, dtype=np.float64)
            key = (timesteps.tobytes(), int(start))
            if key not in memo:
                memo[key] = _plan(timesteps, int(start))
            return memo[key]

        def _plan(timesteps, start: int):
            tail = timesteps[start:]
            # a whole run gets the budget the user paid for, also when its sampler makes another count of
            # UNet calls than steps (PNDM: S + 1), and so does a tail one call longer than the steps this
            # planner was made for (PNDM's image to image, planned for `effective_steps`); any other partial
            # run the budget's fraction of its tail
            whole = start == 0 or len(tail) == steps + 1
            b = budget if whole else max(1, int(np.ceil(frac * len(tail) - 1e-9)))
            full, corr = self.schedule(tail, b, partial=start > 0, controlnet=controlnet)
            full = tuple(start + s for s in full)
            # measured with the modelled, corrected plans of whole runs and image-to-image tails; not with
            # ControlNet runs (RESTART_MULTISTEP_BELOW)
            restart = not controlnet and corr is not None and MIN_MODELLED_BUDGET <= b < RESTART_MULTISTEP_BELOW
            return full, None if corr is None else corr.delayed(start), restart

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
