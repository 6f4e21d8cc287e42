"""The corrections a profile's schedules need, each fitted once per (schedule, kind) and remembered.

Validation scores many candidate schedules and the chosen ones are stored with their correction; both
ask this object, so no correction is fitted twice. It never changes the caller's `ProfileSettings`:
the passes it runs get their own copies (fewer samples, their own progress label).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from recat_runtime.cache.hook import CacheCorrection
from recat_runtime.cache.profile import (PairMoments, ProfileSettings, correction_from_moments, fit_correction,
                                         fit_correction_on_policy, trend_correction_from_moments)

__all__ = ["CorrectionFitter", "KINDS"]

KINDS = ("affine", "trend")


class CorrectionFitter:
    """``fitter(full_steps, kind)`` -> the correction for that schedule; ``fitter.fit(...)`` also gives the
    fit record (relative MSE before and after, ...).

    - ``"affine"``: per-step, per-channel ``y ~ a x + b``, from the profiling pass's pair ``moments``
      when it kept them, else from a pass over ``min(settings.samples, fallback_samples)`` samples;
    - ``"trend"``: the fitted first-order forecast (needs ``moments``), refit on the cached trajectory
      over ``on_policy_samples`` samples when that is > 0.
    """

    def __init__(self, pipe, prompts: Sequence[str], settings: ProfileSettings, moments: PairMoments | None, *,
                 fallback_samples: int = 16, on_policy_samples: int = 0,
                 progress: Callable[[str, int, int], None] | None = None):
        self.pipe, self.prompts, self.settings, self.moments = pipe, prompts, settings, moments
        self.fallback_samples = int(fallback_samples)
        self.on_policy_samples = int(on_policy_samples)
        self.progress = progress
        self._fits: dict[tuple[tuple[int, ...], str], tuple[CacheCorrection, dict]] = {}

    def __call__(self, full_steps, kind: str = "affine") -> CacheCorrection:
        return self.fit(full_steps, kind)[0]

    def fit(self, full_steps, kind: str = "affine") -> tuple[CacheCorrection, dict]:
        key = (tuple(int(s) for s in full_steps), kind)
        if key not in self._fits:
            self._fits[key] = self._fit(*key)
        return self._fits[key]

    def _settings(self, label: str, samples: int) -> ProfileSettings:
        progress = self.progress
        report = (lambda i, n: progress(label, i, n)) if progress else None
        return dataclasses.replace(self.settings, samples=samples, progress=report)

    def _fit(self, full: tuple[int, ...], kind: str) -> tuple[CacheCorrection, dict]:
        if kind == "trend":
            if self.moments is None:
                raise ValueError("the trend correction is fitted from the profiling pass's pair moments, "
                                 "which this profile did not keep")
            corr, info = trend_correction_from_moments(self.moments, full)
            if self.on_policy_samples > 0:
                settings = self._settings(f"on-policy trend fit {list(full)}", self.on_policy_samples)
                corr, extra = fit_correction_on_policy(self.pipe, self.prompts, settings, full, corr, trend=True)
                info = {**info, **extra}
            return corr, info
        if kind != "affine":
            raise ValueError(f"unknown correction kind {kind!r}; choose from {', '.join(KINDS)}")
        if self.moments is not None:
            return correction_from_moments(self.moments, full)
        settings = self._settings(f"correction {list(full)}", min(self.settings.samples, self.fallback_samples))
        return fit_correction(self.pipe, self.prompts, settings, full)
