"""ReCaT schedules stored in a `.acqe` file's metadata, under the optional key ``"recat"``.

Layout (strict JSON; every number finite)::

    "recat": {
      "format": 1,                       # 2 when any correction has a "trend" (older readers must refuse it)
      "profiles": [{
        "sampler": "ddim", "steps": 50, "guidance": 7.5, "branch": 0,   # what it is valid for (checked)
        "height": 64, "width": 64,                                       # what it was profiled at (informative)
        "estimator": "minibatch-debiased-linear-cka", "samples": 64, "minibatches": 16, "minibatch_size": 8,
        "prompts_sha256": "...", "seed": 0,
        "similarity": [[1.0, 0.98, ...], ...],                           # [steps][steps] CKA
        "schedules": [{"budget": 10, "full_steps": [0, ...], "cost": 1.23,
                       "weighting": "late2",                                     # optional (newer files)
                       "correction": {"scale": [[...]], "shift": [[...]],
                                      "trend": [[...]]} | null,      # "trend": optional, format 2
                       "correction_fit": {"relative_mse_before": .., "relative_mse_after": ..} | null,
                       "selection": {"chosen": "late2", "psnr": 41.2, "uniform_psnr": 39.8,   # optional
                                     "validation_samples": 16, "metric": "...", "candidates": [
                                       {"weighting": "none", "full_steps": [...], "cost": .., "plain_cost": ..,
                                        "psnr": ..}, ...]} | null}]
      }]
    }

Format 3 adds to a profile an optional ``"continuous"`` object: the profile as a schedule *model* in
continuous time (:class:`recat_runtime.cache.continuous.ScheduleModel`), from which the schedule and
correction for any step count, budget, sampler and partial run are derived::

        "continuous": {"timesteps": [981.0, 961.0, ...],          # the profiled steps' timestep values
                       "weighting": "late2", "correction": "trend", "num_train_timesteps": 1000,
                       "moments": {"count": .., "mean": [P][C],    # per-channel pair moments (means):
                                   "cross": [P(P+1)/2][C],         # upper triangles, row-major, with the
                                   "centred": [P(P+1)/2][C]} | null,   # diagonal
                       "selection": {...} | null}                  # informative: the validation record

A stored schedule for exactly (sampler, steps, guidance, branch) and budget B is used as is (an exact
override); otherwise the schedule is derived from a profile with a continuous model, and with neither
the error says what *was* profiled. A block with a continuous model is written as format 3 (a runtime
that reads only 1 and 2 refuses it rather than ignore the model), and as format 4 when a model's
weighting is ``"early05"`` (which a format-3 runtime does not know: it would derive other schedules);
formats 1-3 are still read. A correction with a ``trend`` (the fitted forecast of
:class:`recat_runtime.cache.hook.CacheCorrection`) changes what ``scale`` and ``shift`` mean, so a block
holding one is written as format 2: a runtime that reads only format 1 refuses it instead of applying
half of the correction. ``weighting`` and ``selection`` (the validated choice among
candidate schedules, :mod:`recat_runtime.cache.select`) are informative: the lookup reads only
``full_steps`` and ``correction``, so profiles stored without them are read as before.
"""
from __future__ import annotations

import copy

import numpy as np

from acqe_format.model.schema import recat_format_for_weighting
from recat_runtime.cache.hook import CacheCorrection
from recat_runtime.errors import NoScheduleError

RECAT_KEY = "recat"
STORE_FORMAT = 1          # written when no correction has a trend
TREND_STORE_FORMAT = 2    # written when one does
CONTINUOUS_STORE_FORMAT = 3  # written when a profile holds a continuous schedule model
WEIGHTING_STORE_FORMAT = 4   # written when a model's weighting is newer than format 3 (schema.CONTINUOUS_WEIGHTINGS)
READ_FORMATS = (STORE_FORMAT, TREND_STORE_FORMAT, CONTINUOUS_STORE_FORMAT, WEIGHTING_STORE_FORMAT)
CONTINUOUS_KEY = "continuous"

__all__ = ["RECAT_KEY", "CONTINUOUS_KEY", "find_profile", "find_schedule", "find_model", "with_profile",
           "describe_profiles"]


def _matches(p: dict, sampler: str, steps: int, guidance: float, branch: int) -> bool:
    return (
        p.get("sampler") == sampler
        and int(p.get("steps", -1)) == int(steps)
        and abs(float(p.get("guidance", float("nan"))) - float(guidance)) < 1e-6
        and int(p.get("branch", -1)) == int(branch)
    )


def _profiles(metadata: dict) -> list[dict]:
    block = metadata.get(RECAT_KEY) or {}
    if block and block.get("format") not in READ_FORMATS:
        raise NoScheduleError(f"the file's ReCaT block has format {block.get('format')!r}; this runtime reads "
                              f"{' and '.join(map(str, READ_FORMATS))}")
    return list(block.get("profiles", []))


def describe_profiles(metadata: dict) -> str:
    """One line listing what was profiled, e.g. ``ddim 50 steps guidance 7.5 branch 0: budgets 7, 10``."""
    parts = []
    for p in _profiles(metadata):
        budgets = ", ".join(str(s["budget"]) for s in p.get("schedules", []))
        if p.get(CONTINUOUS_KEY):
            budgets = "any (continuous model)" + (f"; stored {budgets}" if budgets else "")
        parts.append(f"{p['sampler']} {p['steps']} steps guidance {p['guidance']:g} branch {p['branch']}: "
                     f"budgets {budgets or '-'}")
    return "; ".join(parts) if parts else "none"


def find_profile(metadata: dict, *, sampler: str, steps: int, guidance: float, branch: int) -> dict | None:
    for p in _profiles(metadata):
        if _matches(p, sampler, steps, guidance, branch):
            return p
    return None


def _stored_schedule(entry: dict, steps: int) -> tuple[tuple[int, ...], CacheCorrection | None]:
    """An entry's (full steps, correction), checked: a damaged or hostile block is a one-line error."""
    from recat_runtime.cache.schedules import check_schedule

    try:
        full = check_schedule([int(x) for x in entry["full_steps"]], steps)
        corr = entry.get("correction")
        corr = CacheCorrection.from_json(corr) if corr else None
        if corr is not None and corr.scale.shape[0] != steps:
            raise ValueError(f"correction has {corr.scale.shape[0]} steps, the profile {steps}")
    except (KeyError, TypeError, ValueError) as e:
        raise NoScheduleError(f"the stored schedule for {entry.get('budget')!r} full steps is malformed: {e}") from e
    return full, corr


def find_schedule(metadata: dict, *, sampler: str, steps: int, budget: int, guidance: float,
                  branch: int | None = None) -> tuple[tuple[int, ...], CacheCorrection | None, dict]:
    """The stored schedule for (sampler, steps, guidance, branch, budget).

    ``branch=None`` accepts the first profile with any branch (the branch then comes from the profile).

    Returns:
        ``(full_steps, correction or None, profile)``.

    Raises:
        NoScheduleError: nothing was profiled for these settings (the message lists what was).
    """
    for p in _profiles(metadata):
        b = p.get("branch") if branch is None else branch
        if not _matches(p, sampler, steps, guidance, b):
            continue
        for s in p.get("schedules", []):
            if int(s["budget"]) == int(budget):
                return _stored_schedule(s, int(steps)) + (p,)
    want = f"{sampler} {steps} steps guidance {guidance:g}" + ("" if branch is None else f" branch {branch}")
    raise NoScheduleError(
        f"no ReCaT schedule for {want} with {budget} full steps (profiled: {describe_profiles(metadata)}); "
        f"profile the model for these settings first", sampler=sampler, steps=int(steps), budget=int(budget),
        guidance=float(guidance))


def find_model(metadata: dict, *, guidance: float, branch: int | None = None, sampler: str | None = None,
               steps: int | None = None):
    """The continuous schedule model of a profile for ``guidance`` and ``branch`` (any when None), of any
    sampler and step count, as ``(ScheduleModel, profile)``, or None. The guidance must match: it changes
    the trajectory, so a profile at another guidance scale describes other features. Among several, the one
    profiled with ``sampler`` and ``steps`` comes first, then one with ``sampler``, then the first stored.

    Raises:
        NoScheduleError: the stored model is malformed.
    """
    from recat_runtime.cache.continuous import ScheduleModel

    cands = [p for p in _profiles(metadata) if p.get(CONTINUOUS_KEY)
             and (branch is None or int(p.get("branch", -1)) == int(branch))
             and abs(float(p.get("guidance", float("nan"))) - float(guidance)) < 1e-6]
    if not cands:
        return None
    p = min(cands, key=lambda q: (q.get("sampler") != sampler or int(q.get("steps", -1)) != steps,
                                  q.get("sampler") != sampler))
    try:
        return ScheduleModel.from_json(p[CONTINUOUS_KEY], p["similarity"]), p
    except (KeyError, TypeError, ValueError) as e:
        raise NoScheduleError(f"the stored continuous ReCaT model is malformed: {e}") from e


def with_profile(metadata: dict, profile: dict, schedules: list[dict]) -> dict:
    """A copy of ``metadata`` with ``profile`` (and its ``schedules``) added or merged.

    A profile for the same (sampler, steps, guidance, branch) is replaced, keeping its schedules for
    other budgets unless ``profile["similarity"]`` changed.
    """
    meta = copy.deepcopy(metadata)
    block = meta.setdefault(RECAT_KEY, {"format": STORE_FORMAT, "profiles": []})
    profiles = block.setdefault("profiles", [])
    entry = copy.deepcopy(profile)
    entry["similarity"] = np.round(np.asarray(entry["similarity"], dtype=np.float64), 6).tolist()
    keep: list[dict] = []
    for i, p in enumerate(profiles):
        if _matches(p, entry["sampler"], entry["steps"], entry["guidance"], entry["branch"]):
            if p.get("similarity") == entry["similarity"]:
                keep = p.get("schedules", [])
            profiles.pop(i)
            break
    new_budgets = {int(s["budget"]) for s in schedules}
    entry["schedules"] = sorted([s for s in keep if int(s["budget"]) not in new_budgets] + list(schedules),
                                key=lambda s: int(s["budget"]))
    profiles.append(entry)
    has_trend = any((s.get("correction") or {}).get("trend") is not None
                    for p in profiles for s in p.get("schedules", []))
    models = [p[CONTINUOUS_KEY] for p in profiles if p.get(CONTINUOUS_KEY)]
    block["format"] = (max([CONTINUOUS_STORE_FORMAT] + [recat_format_for_weighting(m["weighting"]) for m in models])
                       if models else TREND_STORE_FORMAT if has_trend else STORE_FORMAT)
    return meta
