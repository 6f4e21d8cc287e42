"""ReCaT profiling: step-by-step similarity of the cached feature, the optimal schedule, and DEC.

1. :func:`profile_similarity` runs the full model over many prompt x seed samples (minibatched), records
   the deep feature of branch m at every step, turns each minibatch into per-step Gram matrices (the
   CFG unconditional and conditional halves are separate minibatches: they are different
   distributions), and streams them into a minibatch-CKA matrix ``[S, S]`` (debiased HSIC).
2. :func:`recat_schedule` picks the full steps by the exact DP on ``d(s, t) = 1 - CKA(s, t)``.
3. :func:`fit_correction` fits, for the chosen schedule, a per-step, per-channel affine map from the
   anchor's cached feature to the true feature, ``y ~ a * x + b``, by least squares over
   (sample, height, width) (CacheQuant's DEC for the cache error), streaming per-channel moments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from recat_runtime.cache.cka import MinibatchCKA
from recat_runtime.cache.hook import CacheCorrection, RecatCacheConfig, recat_cache
from recat_runtime.cache.schedules import optimal_schedule

__all__ = ["ProfileSettings", "profile_similarity", "recat_schedule", "fit_correction", "correction_from_moments",
           "PairMoments", "sample_plan", "residual_distance", "sigma_weights", "trend_correction_from_moments",
           "trend_residual_distance", "fit_correction_on_policy"]

ESTIMATOR = "minibatch-debiased-linear-cka"


@dataclass
class ProfileSettings:
    """What a profile (and every schedule derived from it) is valid for."""

    steps: int
    guidance: float = 7.5
    branch: int = 0
    height: int | None = None
    width: int | None = None
    samples: int = 64
    batch_size: int = 8
    seed: int = 0
    progress: Callable[[int, int], None] | None = field(default=None, repr=False)


def sample_plan(prompts: Sequence[str], samples: int, seed: int) -> list[tuple[str, int]]:
    """``samples`` (prompt, seed) pairs: prompts cycled in order, seeds ``seed, seed+1, ...``."""
    if not prompts:
        raise ValueError("profiling needs at least one prompt")
    return [(prompts[k % len(prompts)], seed + k) for k in range(samples)]


def _run_batches(pipe, prompts, settings: ProfileSettings, config: RecatCacheConfig, after_batch, inputs=None):
    plan = sample_plan(prompts, settings.samples, settings.seed)
    bs = max(1, settings.batch_size)
    batches = [plan[i : i + bs] for i in range(0, len(plan), bs)]
    from recat_runtime.sampling import image_inputs, run_size

    size = run_size(pipe, settings.height, settings.width)
    with recat_cache(pipe, config), torch.inference_mode():
        for i, batch in enumerate(batches):
            gens = [torch.Generator("cpu").manual_seed(s) for _, s in batch]
            extra = dict(inputs(i * bs, len(batch))) if inputs is not None else {}
            # `control_inputs` names the run's size with the control images: it must be the profile's own
            given = (extra.pop("height", size[0]), extra.pop("width", size[1]))
            if given != size:
                raise ValueError(f"the profile runs at {size[0]} x {size[1]} px, its inputs ask for "
                                 f"{given[0]} x {given[1]}")
            pipe(
                [p for p, _ in batch],
                # inpainting / refiner pipelines: their text-to-image inputs (a mask over everything, or a
                # grey image at strength 1)
                **image_inputs(pipe, None, None, len(batch), settings.height, settings.width),
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                generator=gens,
                height=settings.height,
                width=settings.width,
                output_type="latent",
                **extra,
            )
            after_batch(len(batch))
            if settings.progress is not None:
                settings.progress(i + 1, len(batches))


def _gram(x: torch.Tensor) -> np.ndarray:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return (x @ x.T).cpu().numpy()


def profile_similarity(pipe, prompts: Sequence[str], settings: ProfileSettings,
                       collect_moments: bool = False, inputs=None) -> tuple[np.ndarray, dict]:
    """Minibatch debiased linear CKA between the branch feature at every pair of steps.

    With ``collect_moments``, also accumulates the per-channel cross moments of every step pair
    (:class:`PairMoments`, in ``info["moments"]``), from which the correction for *any* schedule is
    fitted without another pass (holds one minibatch's features of all steps in memory).
    ``inputs(first, n)``: further pipeline arguments for the ``n`` samples of the plan from ``first`` on
    (a ControlNet pipeline's control images: ``bench/bench_recat.py controlnet`` profiles its trajectories);
    a height and width among them must be the profile's (``settings``, or the model's default size).

    Returns:
        ``(cka [S, S], info)`` with ``info`` = samples, minibatches, minibatch size, estimator.

    Raises:
        ValueError: fewer than 4 samples per minibatch (the debiased estimator needs n >= 4).
    """
    s_count = settings.steps
    if min(settings.batch_size, settings.samples) < 4:
        raise ValueError("CKA profiling needs minibatches of at least 4 samples (samples >= 4 and batch_size >= 4)")
    acc = MinibatchCKA(s_count)
    per_step: dict[int, list[np.ndarray]] = {}
    feats: dict[int, torch.Tensor] = {}
    cfg = settings.guidance > 1.0
    moments = PairMoments(s_count) if collect_moments else None

    def observer(step, feature):
        halves = feature.chunk(2) if cfg else (feature,)
        per_step[step] = [_gram(h) for h in halves]
        if moments is not None:
            feats[step] = feature

    def after_batch(n):
        if moments is not None:
            moments.add([feats[t] for t in range(s_count)])
            feats.clear()
        if n < 4:
            return  # a short last minibatch is skipped (estimator needs n >= 4)
        for h in range(len(per_step[0])):
            acc.add(np.stack([per_step[t][h] for t in range(s_count)]))
        per_step.clear()

    _run_batches(pipe, prompts, settings, RecatCacheConfig(s_count, branch=settings.branch, observer=observer),
                 after_batch, inputs)
    info = {
        "estimator": ESTIMATOR,
        "samples": acc.samples // (2 if cfg else 1),
        "minibatches": acc.batches,
        "minibatch_size": settings.batch_size,
        "cfg_halves": "separate minibatches" if cfg else "no cfg",
    }
    if moments is not None:
        info["moments"] = moments
    return acc.matrix(), info


def recat_schedule(similarity: np.ndarray, budget: int, weights=None) -> tuple[tuple[int, ...], float]:
    """The optimal refresh steps for a budget of B full steps (``d = 1 - CKA``); returns (steps, cost)."""
    return optimal_schedule(1.0 - np.asarray(similarity, dtype=np.float64), budget, weights)


class PairMoments:
    """Per-channel sums over (sample, pixel) for every step pair: ``S1[t, c] = sum x_t``,
    ``S2[s, t, c] = sum x_s x_t``, ``Q[s, t, c] = sum m_s m_t`` (m: a sample's spatial mean of the
    channel, summed over pixels too) and the count per channel. Enough to fit ``y_t ~ a x_s + b`` for any
    anchor s and step t, and the trend correction on spatially centred differences for any p < s < t."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps
        self.count = 0.0
        self.s1 = None
        self.s2 = None
        self.q = None

    def add(self, features: list, chunk_elements: int = 1 << 24) -> None:
        """Adds one minibatch: ``features[t]`` is step t's ``[B, C, H, W]`` feature (any dtype/device).

        The float64 products are formed a few samples at a time (at most about ``chunk_elements``
        values of all steps together), so the transient stays bounded for SD-size features."""
        t_count, b = len(features), features[0].shape[0]
        per_sample = t_count * features[0][0].numel()
        step = max(1, int(chunk_elements // max(per_sample, 1)))
        for i in range(0, b, step):
            self._add_chunk([f[i : i + step] for f in features])

    def _add_chunk(self, features: list) -> None:
        x = torch.stack([f.to(torch.float64) for f in features])  # [T, B, C, H, W]
        t, b, c = x.shape[:3]
        pixels = x.shape[3] * x.shape[4]
        means = x.mean(dim=(3, 4)).permute(2, 0, 1)                  # [C, T, B]
        q = torch.bmm(means, means.transpose(1, 2)).permute(1, 2, 0) * pixels  # [T, T, C]
        x = x.permute(2, 0, 1, 3, 4).reshape(c, t, -1)               # [C, T, B*H*W]
        s2 = torch.bmm(x, x.transpose(1, 2)).permute(1, 2, 0)        # [T, T, C]
        s1 = x.sum(-1).T                                              # [T, C]
        if self.s1 is None:
            self.s1, self.s2, self.q = np.zeros((t, c)), np.zeros((t, t, c)), np.zeros((t, t, c))
        self.s1 += s1.cpu().numpy()
        self.s2 += s2.cpu().numpy()
        self.q += q.cpu().numpy()
        self.count += x.shape[-1]

    def stats(self, s: int, t: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(n, E x_s, E x_t, E x_s^2, E x_s x_t, E x_t^2)`` per channel."""
        n = self.count
        return (n, self.s1[s] / n, self.s1[t] / n, self.s2[s, s] / n, self.s2[s, t] / n, self.s2[t, t] / n)


def _affine_fit(sx, sy, sxx, sxy, syy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel least squares ``y ~ a x + b`` from the means ``E x, E y, E x^2, E x y, E y^2``.

    Returns ``(a, b, residual variance >= 0)``. A channel whose x is constant keeps ``a = 1`` and gets
    ``b = E y - E x`` (its residual is then the variance of y)."""
    var_x = sxx - sx * sx
    cov = sxy - sx * sy
    ok = var_x > 1e-12 * np.maximum(1.0, sxx)
    a = np.where(ok, cov / np.where(ok, var_x, 1.0), 1.0)
    resid = syy - sy * sy - np.where(ok, cov * cov / np.where(ok, var_x, 1.0), 0.0)
    return a, sy - a * sx, np.maximum(resid, 0.0)


def _solve_correction(num_steps: int, full_steps, stats_for) -> tuple[CacheCorrection, dict]:
    full = set(full_steps)
    scale = shift = None
    before, after = [], []
    anchor = 0
    for t in range(num_steps):
        if t in full:
            anchor = t
            continue
        st = stats_for(anchor, t)
        if st is None:
            continue
        n, sx, sy, sxx, sxy, syy = st
        if scale is None:
            scale = np.ones((num_steps, len(sx)), np.float32)
            shift = np.zeros((num_steps, len(sx)), np.float32)
        scale[t], shift[t], mse_after = _affine_fit(sx, sy, sxx, sxy, syy)
        # mean squared error before (a=1, b=0) and after the fit, relative to E[y^2]
        mse_before = syy - 2 * sxy + sxx
        denom = max(float(syy.mean()), 1e-30)
        before.append(float(mse_before.mean()) / denom)
        after.append(float(mse_after.mean()) / denom)
    info = {
        "relative_mse_before": float(np.mean(before)) if before else 0.0,
        "relative_mse_after": float(np.mean(after)) if after else 0.0,
    }
    if not all(math.isfinite(v) for v in info.values()):
        raise ValueError("correction fit produced non-finite statistics")
    if scale is None:
        return None, info
    return CacheCorrection(scale, shift), info


def correction_from_moments(moments: PairMoments, full_steps, index=None) -> tuple[CacheCorrection, dict]:
    """The least-squares correction for ``full_steps`` from moments collected while profiling.

    ``index``: for a run on another grid, the profiled step each of its steps maps to (``full_steps`` and
    the correction's rows are then the run's steps); None: the profiled grid itself."""
    if index is None:
        return _solve_correction(moments.num_steps, full_steps, moments.stats)
    idx = [int(i) for i in index]
    return _solve_correction(len(idx), full_steps, lambda a, t: moments.stats(idx[a], idx[t]))


def _solve_trend(c_uu, c_vv, c_uv, c_uy, c_vy, v_yy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel least squares ``y ~ alpha u + beta v + b`` from the (co)variances of the two regressors
    and the target (numpy arrays that broadcast). Returns ``(alpha, beta, residual variance)``.

    The 2x2 normal equations get a ridge of 1e-6 of their trace, so a regressor that barely varies
    (features that did not move between two full steps) gives a stable, small coefficient."""
    ridge = 1e-6 * (c_uu + c_vv) + 1e-30
    a11, a22 = c_uu + ridge, c_vv + ridge
    det = a11 * a22 - c_uv * c_uv
    alpha = (a22 * c_uy - c_uv * c_vy) / det
    beta = (a11 * c_vy - c_uv * c_uy) / det
    return alpha, beta, np.maximum(v_yy - alpha * c_uy - beta * c_vy, 0.0)


def _normalised(moments: PairMoments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(E[x_t], E[x_s x_t], D[s, t])`` per channel, with ``D[a, b] = E[x_a x_b] - E[m_a m_b]`` (m: a
    sample's spatial mean); computed once for all the fits that read them."""
    n = moments.count
    m2 = moments.s2 / n
    return moments.s1 / n, m2, m2 - moments.q / n


def _trend_fit(norm: tuple[np.ndarray, np.ndarray, np.ndarray], p: int, s: int, t) -> tuple[np.ndarray, ...]:
    """The trend fit ``y_t ~ alpha x_s + beta v + b`` with ``v = c(x_s) - c(x_p)``, ``c`` the spatial
    centring of each sample's channel (so ``E[v] = 0``), for full steps p < s and cached step(s) t (an int
    or an index array), from the profiling moments (``norm = _normalised(moments)``). Returns
    ``(alpha, beta, shift, residual, E[y^2])``.

    ``E[x_a c(x_b)] = E[c(x_a) c(x_b)] = D[a, b]``, which gives every moment of ``v``."""
    m1, m2, dd = norm
    ms, my = m1[s], m1[t]
    c_uu = m2[s, s] - ms * ms
    c_vv = dd[s, s] - 2 * dd[s, p] + dd[p, p]
    c_uv = dd[s, s] - dd[s, p]
    c_uy = m2[s, t] - ms * my
    c_vy = dd[s, t] - dd[p, t]
    alpha, beta, resid = _solve_trend(c_uu, c_vv, c_uv, c_uy, c_vy, m2[t, t] - my * my)
    return alpha, beta, my - alpha * ms, resid, m2[t, t]


def trend_correction_from_moments(moments: PairMoments, full_steps, max_reach: float | None = None,
                                  index=None) -> tuple[CacheCorrection, dict]:
    """The least-squares *trend* correction for ``full_steps``: per cached step t with latest full step a
    and the one before it a', ``y_t ~ scale f(a) + trend c(f(a) - f(a')) + shift`` per channel, ``c`` the
    spatial centring (a fitted first-order forecast of the spatial detail, :class:`CacheCorrection`);
    steps before the second full step get the affine fit (``trend = 0``).

    ``max_reach``: a cached step t more than ``max_reach * (a - a')`` steps after a gets the affine fit
    too: forecasting further ahead than the two full steps are apart amplifies the error of the cached
    trajectory's features (on the demo model, adding full step 14 just before 16 cost 6.4 and 4.1 dB of
    pooled PSNR on two of three 12-image held-out sets at 11 of 50 full steps; bench/RESULTS.md, section
    "ReCaT that users can rely on").
    None: no limit (the per-budget schedules' fit).

    ``index``: as in :func:`correction_from_moments` (a run on another grid)."""
    idx = list(range(moments.num_steps)) if index is None else [int(i) for i in index]
    t_count = len(idx)
    full = sorted(set(int(x) for x in full_steps))
    affine, info = correction_from_moments(moments, full, None if index is None else idx)
    if affine is None:
        return None, info
    scale, shift = affine.scale.copy(), affine.shift.copy()
    trend = np.zeros_like(scale)
    norm = _normalised(moments)
    after = []  # relative MSE of every cached step after the fit (as "relative_mse_after" averages them)
    for t in range(1, full[1] if len(full) > 1 else t_count):  # first segment: the affine fit
        _, sx, sy, sxx, sxy, syy = moments.stats(idx[0], idx[t])
        resid = _affine_fit(sx, sy, sxx, sxy, syy)[2]
        after.append(float(resid.mean()) / max(float(syy.mean()), 1e-30))
    for i in range(1, len(full)):
        p, s = full[i - 1], full[i]
        end = full[i + 1] if i + 1 < len(full) else t_count
        for t in range(s + 1, end):
            if max_reach is not None and t - s > max_reach * (s - p):
                _, sx, sy, sxx, sxy, syy = moments.stats(idx[s], idx[t])  # keeps the affine row
                after.append(float(_affine_fit(sx, sy, sxx, sxy, syy)[2].mean()) / max(float(syy.mean()), 1e-30))
                continue
            alpha, beta, b, resid, energy = _trend_fit(norm, idx[p], idx[s], idx[t])
            scale[t], trend[t], shift[t] = alpha, beta, b
            after.append(float(resid.mean()) / max(float(energy.mean()), 1e-30))
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(trend)) and np.all(np.isfinite(shift))):
        raise ValueError("trend correction fit produced non-finite coefficients")
    info = {**info, "relative_mse_after_trend": float(np.mean(after)) if after else 0.0}
    return CacheCorrection(scale, shift, trend), info


class _CachedStepMoments:
    """Per-step, per-channel sums of ``u, v, y, u^2, v^2, u v, u y, v y, y^2`` over (sample, pixel) of
    cached steps: ``u`` the latest full-step feature, ``v`` the spatially centred difference between it and
    the one before (0 in the first segment), ``y`` the true feature."""

    def __init__(self):
        self.sums: dict[int, np.ndarray] = {}
        self.count: dict[int, float] = {}

    def __call__(self, step: int, latest, older, true) -> None:
        u = latest.to(torch.float64)
        if older is None:
            v = torch.zeros_like(u)
        else:
            v = u - older.to(torch.float64)
            v = v - v.mean(dim=(2, 3), keepdim=True)
        y = true.to(torch.float64)
        dims = (0, 2, 3)
        sums = torch.stack([u.sum(dims), v.sum(dims), y.sum(dims), (u * u).sum(dims), (v * v).sum(dims),
                            (u * v).sum(dims), (u * y).sum(dims), (v * y).sum(dims), (y * y).sum(dims)])
        self.sums[step] = self.sums.get(step, 0.0) + sums.cpu().numpy()
        self.count[step] = self.count.get(step, 0.0) + u.numel() / u.shape[1]

    def means(self, step: int) -> np.ndarray:
        return self.sums[step] / self.count[step]


def fit_correction_on_policy(pipe, prompts: Sequence[str], settings: ProfileSettings, full_steps: Sequence[int],
                             correction: CacheCorrection | None, trend: bool) -> tuple[CacheCorrection, dict]:
    """Refits the correction on the trajectory the cached schedule actually follows.

    The fits from the profiling pass regress the true feature on anchor features *of the full
    trajectory*; at inference the anchors come from a trajectory that the cache has already moved, and
    a fitted forecast (``trend``) extrapolates those errors too. This pass runs ``settings.samples``
    samples *with* the schedule and ``correction`` (the off-policy fit, or None), and at every cached
    step also computes the true deep feature at the current latent
    (:attr:`RecatCacheConfig.cached_observer`); the per-channel least squares of that feature on what the
    cached step was given (the latest full-step feature, and with ``trend`` the centred difference to the
    one before) is the new correction. Costs one full-model pass over the samples.

    Returns:
        ``(correction, info)``; info has the mean relative MSE of the cached feature after the fit.
    """
    full = tuple(int(x) for x in full_steps)
    acc = _CachedStepMoments()
    config = RecatCacheConfig(settings.steps, full, branch=settings.branch, correction=correction,
                              cached_observer=acc)
    _run_batches(pipe, prompts, settings, config, lambda n: None)
    steps = settings.steps
    scale = shift = trend_coef = None
    rel = []
    for t in sorted(acc.sums):
        mu, mv, my, uu, vv, uv, uy, vy, yy = acc.means(t)
        if trend and np.any(vv > 0):
            alpha, beta, resid = _solve_trend(uu - mu * mu, vv - mv * mv, uv - mu * mv, uy - mu * my, vy - mv * my,
                                              yy - my * my)
            b = my - alpha * mu - beta * mv
        else:  # affine on u alone (the first segment has no earlier full step; or no trend wanted)
            alpha, b, resid = _affine_fit(mu, my, uu, uy, yy)
            beta = np.zeros_like(alpha)
        if scale is None:
            scale = np.ones((steps, len(mu)), np.float32)
            shift = np.zeros((steps, len(mu)), np.float32)
            trend_coef = np.zeros((steps, len(mu)), np.float32)
        scale[t], trend_coef[t], shift[t] = alpha, beta, b
        rel.append(float(resid.mean()) / max(float(yy.mean()), 1e-30))
    if scale is None:
        return correction, {"on_policy_samples": 0}
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift)) and np.all(np.isfinite(trend_coef))):
        raise ValueError("on-policy correction fit produced non-finite coefficients")
    info = {"on_policy_samples": int(settings.samples), "relative_mse_on_policy": float(np.mean(rel))}
    return CacheCorrection(scale, shift, trend_coef if trend else None), info


def trend_residual_distance(moments: PairMoments, ties: bool = False) -> np.ndarray:
    """``d3[p, s, t]`` for ``p < s < t``: the part of step t's feature that the trend correction from the
    full steps p (earlier) and s (latest) cannot explain (:func:`_trend_fit`), relative to
    ``sum_c E[y_c^2]``; the segment cost of :func:`recat_runtime.cache.schedules.optimal_schedule_trend`.
    ``ties``: also ``p == s`` (no trend to fit: the affine residual), which a finer grid mapped onto the
    profiled steps needs. Other entries are 0."""
    t_count = moments.num_steps
    norm = _normalised(moments)
    d = np.zeros((t_count, t_count, t_count))
    ts = np.arange(t_count)
    for s in range(0 if ties else 1, t_count - 1):
        tt = ts[s + 1 :]
        for p in range(s + 1 if ties else s):
            _, _, _, resid, energy = _trend_fit(norm, p, s, tt)
            d[p, s, s + 1 :] = resid.sum(-1) / np.maximum(energy.sum(-1), 1e-30)
    return d


def fit_correction(pipe, prompts: Sequence[str], settings: ProfileSettings,
                   full_steps: Sequence[int]) -> tuple[CacheCorrection, dict]:
    """Per-step, per-channel least-squares ``y ~ a x + b`` from anchor feature x to true feature y.

    A separate pass over ``settings.samples`` samples (features along the full trajectory; the anchor is
    the latest full step). Statistics are pooled over samples, CFG halves and pixels. A channel whose
    anchor feature is constant keeps ``a = 1`` and gets ``b = mean(y - x)``.

    Returns:
        ``(correction, info)``; info has the mean relative MSE of the cached feature before/after the fit.
    """
    s_count = settings.steps
    full = set(full_steps)
    state: dict = {"anchor": None, "n": np.zeros(s_count), "s": {}}

    def observer(step, feature):
        if step in full:
            state["anchor"] = feature
            return
        x = state["anchor"].to(torch.float64)
        y = feature.to(torch.float64)
        dims = (0, 2, 3)
        stats = torch.stack([
            x.sum(dims), y.sum(dims), (x * x).sum(dims), (x * y).sum(dims), (y * y).sum(dims),
        ]).cpu().numpy()
        state["n"][step] += x.numel() / x.shape[1]
        state["s"][step] = state["s"].get(step, 0) + stats

    _run_batches(pipe, prompts, settings, RecatCacheConfig(s_count, branch=settings.branch, observer=observer),
                 lambda n: None)

    def stats_for(anchor, t):
        if t not in state["s"]:
            return None
        n = state["n"][t]
        return (n, *(state["s"][t] / n))

    return _solve_correction(s_count, full_steps, stats_for)


def residual_distance(moments: PairMoments) -> np.ndarray:
    """``d(s, t)``: the part of step t's feature that the per-channel affine correction from anchor s
    cannot explain, ``sum_c Var(y_c) (1 - rho_c^2) / sum_c E[y_c^2]`` (design note §9.2). Unlike 1 - CKA,
    it does not penalise per-channel rescaling (the correction removes it) and it does see shifts shared by
    all samples."""
    t_count = moments.num_steps
    d = np.zeros((t_count, t_count))
    for s in range(t_count):
        for t in range(s + 1, t_count):
            _, sx, sy, sxx, sxy, syy = moments.stats(s, t)
            d[s, t] = float(_affine_fit(sx, sy, sxx, sxy, syy)[2].sum() / max(float(syy.sum()), 1e-30))
    return d


def sigma_weights(scheduler, steps: int) -> np.ndarray:
    """Per-step weights ``w_t = |sigma_{t+1} - sigma_t|`` with ``sigma = sqrt((1 - abar) / abar)``: in DDIM's
    ODE ``d(x / sqrt(abar)) = eps d(sigma)``, so an error in the noise prediction at step t reaches the final
    sample scaled by the step's sigma decrement (to first order). Normalised to mean 1."""
    scheduler.set_timesteps(steps)
    abar = scheduler.alphas_cumprod.double().numpy()
    ts = scheduler.timesteps.numpy().astype(np.int64)
    sig = np.sqrt((1 - abar[ts]) / abar[ts])
    nxt = np.append(sig[1:], 0.0)
    w = np.abs(sig - nxt)
    return w / w.mean()
