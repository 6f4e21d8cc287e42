"""What `acqe generate` and `acqe profile-cache` do, as library functions (the commands only parse options).

    from recat_runtime.api import generate, profile_cache
    result = generate("model.acqe", ["a red circle"], steps=50, cache="uniform", budget=10, seed=0)
    result.images[0].save("out.png")
    profile_cache("model.acqe", steps=50, budgets=[7, 10], samples=64)   # prompts: the model's domain
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from typing import Callable, Sequence

import numpy as np

from acqe_format.model import ModelInfo
from recat_runtime.cache import schedules as S
from recat_runtime.cache.branch import branch_plan
from recat_runtime.cache_fit import check_cache_fits
from recat_runtime.cache.corrections import CorrectionFitter
from recat_runtime.cache.hook import RecatCacheConfig
from recat_runtime.cache.profile import ESTIMATOR, ProfileSettings, profile_similarity, recat_schedule
from recat_runtime.cache.prompts import default_prompts
from recat_runtime.cache.store import CONTINUOUS_KEY, find_model, find_profile, find_schedule, with_profile
from recat_runtime.errors import ControlNetError, ForecastConflictError, ImageInputError, NoScheduleError
from recat_runtime.loading import load_pipeline, torch_dtype
from recat_runtime.options import CACHE_MODES, SAMPLERS
from recat_runtime.sampling import (GenerateResult, check_run, denoise_and_decode, effective_steps, run_size,
                                    run_timesteps)

__all__ = ["default_guidance", "cache_config", "generate", "profile_cache", "GenerateResult"]


def default_guidance(metadata: dict) -> float:
    """The model's guidance scale: metadata ``inference.guidance`` when present, else its architecture's
    (4.0 for the demo model, what it was trained for; SD v1's 7.5 otherwise)."""
    return ModelInfo.from_metadata(metadata).default_guidance


def _sampler_name(pipe) -> str:
    cls = type(pipe.scheduler).__name__
    for k, v in SAMPLERS.items():
        if v == cls:
            return k
    return cls


def cache_config(mode: str, *, steps: int, budget: int | None, metadata: dict | None = None,
                 sampler: str = "ddim", guidance: float = 7.5, branch: int | None = None,
                 correction: bool = True, forecast: bool = False, controlnet: bool = False) -> RecatCacheConfig | None:
    """The cache config for ``mode`` with ``budget`` full UNet steps of ``steps``.

    ``none`` → None; ``uniform`` → B full steps spread evenly; ``quadratic`` → DeepCache's non-uniform
    schedule with B full steps; ``recat`` → the schedule stored in ``metadata`` for exactly (sampler,
    steps, guidance, branch, B) when there is one, else the schedule derived from the profile's
    continuous model (:mod:`recat_runtime.cache.continuous`; any sampler, step count and budget, planned
    when the run starts, from the scheduler's timesteps), with its correction unless ``correction=False``;
    ``controlnet``: the run is steered by a ControlNet (a derived schedule uses the ControlNet rule: the
    uniform steps, corrected from :data:`recat_runtime.cache.continuous.CONTROLNET_CORRECTED_FROM` on).
    ``budget >= steps`` is the uncached run (None) in every mode: it needs no profile.

    Raises:
        NoScheduleError: ``recat`` and nothing was profiled for these settings.
        ForecastConflictError: ``forecast`` with a stored correction that has a fitted trend.
        ValueError: unknown mode or missing budget.
    """
    if mode == "none":
        return None
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}; choose from {', '.join(CACHE_MODES)}")
    if budget is None:
        raise ValueError(f"cache mode {mode!r} needs a budget of full steps")
    if budget < 1:
        raise ValueError(f"the budget of full steps must be >= 1, got {budget}")
    if budget >= steps:
        return None                   # every step full: the uncached run, whatever is (not) profiled
    if mode == "uniform":
        return RecatCacheConfig.uniform(steps, budget, branch=branch or 0, forecast=forecast)
    if mode == "quadratic":
        return RecatCacheConfig.quadratic(steps, budget, branch=branch or 0, forecast=forecast)
    try:
        full, corr, profile = find_schedule(metadata or {}, sampler=sampler, steps=steps, budget=budget,
                                            guidance=guidance, branch=branch)
    except NoScheduleError:
        found = find_model(metadata or {}, guidance=guidance, branch=branch, sampler=sampler, steps=steps)
        if found is None:
            raise
        model, profile = found
        if not correction:
            model = dataclasses.replace(model, kind="none")
        if forecast and model.kind == "trend":
            raise ForecastConflictError(
                "the stored ReCaT model's correction already forecasts the cached feature (fitted trend); use "
                "either it or the plain forecast (without the stored correction)")
        # the placeholder schedule is replaced when the run starts, from the scheduler's actual timesteps
        return RecatCacheConfig(steps, S.uniform_schedule(steps, budget), branch=int(profile["branch"]),
                                forecast=forecast, planner=model.planner(steps, budget, controlnet=controlnet))
    if forecast and correction and corr is not None and corr.trend is not None:
        raise ForecastConflictError(
            f"the stored ReCaT schedule for {budget} full steps already forecasts the cached feature "
            "(fitted-trend correction); use either it or the plain forecast (without the stored correction)")
    return RecatCacheConfig(steps, full, branch=int(profile["branch"]), correction=corr if correction else None,
                            forecast=forecast)


def generate(path, prompts: Sequence[str], *, steps: int = 50, cache: str = "none", budget: int | None = None,
             seed: int = 0, batch: int = 1, height: int | None = None, width: int | None = None,
             guidance: float | None = None, device=None, dtype: str = "fp32", scheduler: str = "ddim",
             branch: int | None = None, correction: bool = True, compact: bool = False,
             forecast: bool = False, progress: Callable[[str, int, int | None], None] | None = None,
             init_image=None, strength: float = 0.8, mask_image=None, controlnet: str | None = None,
             control_image=None, control_scale: float = 1.0) -> GenerateResult:
    """Text to images from a single `.acqe` file, offline, optionally with ReCaT/DeepCache caching.

    ``compact`` keeps the UNet's codebook weights as uint8 indices on the device, rebuilt per layer
    (identical images, about half the UNet weight memory of fp16, slower steps).

    ``progress(label, done, total)``: ``"load"`` (total None) and ``"denoise"`` steps; when given, diffusers'
    own progress bar is turned off (otherwise it shows, as diffusers sets it).

    Image ``j`` of prompt ``i`` uses seed ``seed + i * batch + j``. ``budget`` (full UNet steps) is
    ignored with ``cache="none"``. ``dtype``: "fp32", "fp16", "bf16" (or any spelling of
    `acqe_format.dtypes`).

    ``init_image`` (a path or a PIL image) makes it image-to-image with the architecture's image pipeline,
    starting ``strength`` (0..1] of the way into the noise schedule; the run then makes
    ``int(steps * strength)`` UNet calls, and a cache budget counts those. The SDXL refiner only refines
    images: it needs one. ``mask_image`` (a path or a PIL image; white is repainted, black kept) is for
    inpainting models, with an initial image; without it an inpainting model repaints everything.

    ``controlnet`` (a diffusers ControlNet folder) with ``control_image`` (a path or a PIL image, resized to
    the run's size) and ``control_scale`` steers the run with a ControlNet (`recat_runtime.controlnet`), from
    noise or with ``init_image`` from an initial image (an inpainting model's ``mask_image`` too); caching
    works with it (a cached step applies the residuals of the skips it runs).

    Raises:
        ImageInputError: no initial image for a model that needs one, an unreadable image, or a mask without
            an initial image or for a model that does not inpaint.
        ControlNetError: a ControlNet without a control image, a control image without a ControlNet, a model
            that takes no ControlNet, or a ControlNet that cannot be read or does not fit the model.
    """
    from acqe_format import AcqeReader
    from acqe_format.model import architectures

    compute_dtype = torch_dtype(dtype)
    with AcqeReader(path) as r:
        metadata, model = r.metadata, r.model_info
    spec = architectures.for_file(model)
    if init_image is None and spec.pipeline == spec.img2img_pipeline and "Inpaint" not in spec.pipeline:
        raise ImageInputError(f"{spec.name} refines images: it needs an initial image", needs_image=True)
    if mask_image is not None:
        if "Inpaint" not in spec.pipeline:
            raise ImageInputError(f"{spec.name} does not inpaint: a mask needs an inpainting model")
        if init_image is None:
            raise ImageInputError("a mask needs an initial image to inpaint")
        mask_image = _open_image(mask_image, "mask")
    if (controlnet is None) != (control_image is None):
        raise ControlNetError("a ControlNet needs a control image" if control_image is None
                              else "a control image needs a ControlNet")
    if controlnet is not None:
        if not (math.isfinite(control_scale) and control_scale >= 0):
            raise ControlNetError(f"the ControlNet scale must be finite and >= 0, got {control_scale}")
        control_image = _open_image(control_image, "control image")
    if init_image is not None:
        init_image = _open_image(init_image)
        if not 0.0 < strength <= 1.0:
            raise ImageInputError(f"strength must be in (0, 1], got {strength}")
    run_steps = effective_steps(steps, strength, init_image is not None)
    guidance = model.default_guidance if guidance is None else guidance
    # resolve the schedule before paying for the load (a missing ReCaT profile fails fast)
    config = cache_config(cache, steps=run_steps, budget=budget, metadata=metadata, sampler=scheduler,
                          guidance=guidance, branch=branch, correction=correction, forecast=forecast,
                          controlnet=controlnet is not None)
    t0 = time.perf_counter()
    if progress is not None:
        progress("load", 0, None)
    pipe = load_pipeline(path, device=device, torch_dtype=compute_dtype, scheduler=scheduler, compact=compact,
                         img2img=init_image is not None, controlnet=controlnet)
    load_s = time.perf_counter() - t0
    check_cache_fits(pipe.unet, config)
    on_step = None
    if progress is not None:
        progress("load", 1, 1)
        pipe.set_progress_bar_config(disable=True)
        on_step = lambda done, total: progress("denoise", done, total)  # noqa: E731
    all_prompts = [p for p in prompts for _ in range(batch)]
    seeds = [seed + k for k in range(len(all_prompts))]
    latents, images, loop_s, dec_s, full = denoise_and_decode(
        pipe, all_prompts, steps=steps, guidance=guidance, seeds=seeds, height=height, width=width, config=config,
        on_step=on_step, init_image=init_image, strength=strength if init_image is not None else None,
        mask=mask_image, control_image=control_image, control_scale=control_scale)
    info = {"device": str(pipe.unet.device), "dtype": dtype, "scheduler": scheduler, "cache": cache,
            "guidance": guidance,
            "branch": None if config is None else config.branch,
            "correction": bool(config is not None and (config.correction is not None or (
                config.planner is not None and full_correction_kind(config) != "none"))),
            "recat_schedule": None if cache != "recat" or config is None else (
                "derived" if config.planner is not None else "stored"),
            "forecast": bool(config is not None and config.forecast),
            "controlnet": controlnet, "control_scale": None if controlnet is None else float(control_scale)}
    if compact:
        from recat_runtime.compact import compact_bytes

        held, dense = compact_bytes(pipe.unet)
        info.update(compact_weight_bytes=held, dense_weight_bytes=dense)
    return GenerateResult(images, latents, full, loop_s, dec_s, load_s, info)


def _open_image(image, what: str = "initial image"):
    """A PIL image from a path (or the image itself); ImageInputError for a file PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    try:
        with Image.open(image) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageInputError(f"cannot read the {what} {str(image)!r}: {type(e).__name__}: {e}") from None


def full_correction_kind(config: RecatCacheConfig) -> str:
    """The correction kind of a config planned from a continuous model (``"none"`` otherwise)."""
    model = getattr(config.planner, "model", None)
    return "none" if model is None else model.kind


def _continuous_model(pipe, steps: int, similarity, moments, scorer, *, correction: bool, trend: bool, budgets,
                      max_values: int, progress=None) -> dict:
    """The stored form of the profile's continuous schedule model, its weighting and correction chosen by
    validation over several budgets (``scorer`` None: the default weighting, with the fitted-trend correction when
    the moments allow it, else the affine one, else none)."""
    from recat_runtime.cache.continuous import DEFAULT_WEIGHTING, ScheduleModel
    from recat_runtime.cache.select import pooled_psnr

    timesteps = run_timesteps(pipe, steps)
    if moments is not None:
        c = moments.s1.shape[1]
        if (steps * (steps + 1) + steps) * c > max_values:
            moments = None       # too large to store: derived schedules will run uncorrected
    kinds = (["trend"] if (trend and moments is not None and correction) else []) + \
            (["affine"] if (moments is not None and correction) else ["none"])
    # late4 is no longer a candidate: in the one recorded validation (bench/RESULTS.md) it had the lowest mean
    # PSNR of its correction kind at every budget; early05 takes its place, so validation (minutes on a CPU,
    # part of `acqe demo`) does not get longer
    weightings = ("none", DEFAULT_WEIGHTING, "late2") if scorer is not None else (DEFAULT_WEIGHTING,)
    budgets = sorted({b for b in (budgets or [round(steps * f) for f in (0.1, 0.14, 0.2)]) if 1 < b < steps})
    records, best = [], None
    if scorer is not None and budgets:
        total = len(kinds) * len(weightings)
        for i, (kind, w) in enumerate((k, w) for k in kinds for w in weightings):
            model = ScheduleModel(timesteps, np.asarray(similarity), moments, w, kind)
            rows = []
            for b in budgets:
                # what a run with this budget executes (the planner's whole-run plan, its solver restart too)
                full, corr, restart = model.planner(steps, b)(timesteps, 0)
                per = scorer.psnrs(full, corr, restart_multistep=restart)
                rows.append({"budget": b, "full_steps": list(full), "psnr": round(float(per.mean()), 4),
                             "psnr_pooled": round(pooled_psnr(per), 4)})
            score = sum((r["psnr"] + r["psnr_pooled"]) / 2 for r in rows)
            # budgets whose validation quality is below a smaller budget's (the model's optimum never costs more
            # with more full steps, the images can; a candidate showing it ranks after every one that does not)
            drops = sum(1 for j in range(1, len(rows)) for key in ("psnr", "psnr_pooled")
                        if rows[j][key] < max(r[key] for r in rows[:j]))
            records.append({"weighting": w, "correction": kind, "score": round(score, 4),
                            "monotone_drops": drops, "budgets": rows})
            if best is None or (-drops, score) > (-best[3], best[0] + 1e-9):
                best = (score, w, kind, drops)
            if progress:
                progress("continuous model", i + 1, total)
    _, w, kind, _ = best if best is not None else (None, DEFAULT_WEIGHTING, kinds[0], 0)
    model = ScheduleModel(timesteps, np.asarray(similarity), moments, w, kind)
    out = model.to_json()
    out["selection"] = None if not records else {
        "criterion": "fewest budgets below a smaller budget's quality, then the sum over budgets of (mean + "
                     "pooled per-sample PSNR) / 2 vs the full computation",
        "validation_samples": len(scorer.plan), "chosen": {"weighting": w, "correction": kind},
        "candidates": records}
    return out


def _prompts_digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()


# a profiling minibatch chosen by `profile_cache(batch_size=None)`: as many samples as keep every step's
# branch feature under this many bytes, at most PROFILE_BATCH_MAX and at least 8. Small models then profile
# in few, large UNet calls (the shipped demo model: 32 samples in one minibatch, 6.0 s instead of 10.2 s
# with 8 on 2 CPU threads), while an SD-size model at 512 px (0.5 GB of features per sample) keeps 8.
PROFILE_BATCH_BYTES = 256 << 20
PROFILE_BATCH_MAX = 32


def auto_profile_batch(samples: int, sample_bytes: int) -> int:
    """The profiling minibatch for ``samples`` samples whose features of all steps take ``sample_bytes`` each."""
    fits = PROFILE_BATCH_BYTES // max(int(sample_bytes), 1)
    return max(1, min(int(samples), max(8, min(PROFILE_BATCH_MAX, fits))))


def profile_feature_bytes(pipe, steps: int, guidance: float, branch: int, height: int, width: int) -> int:
    """Bytes of one sample's branch features over all steps (both CFG halves), in the UNet's dtype."""
    plan = branch_plan(pipe.unet, branch)
    down = 2 ** sum(1 for b in pipe.unet.down_blocks[: max(plan.down_block, 0)] if b.downsamplers is not None)
    return (steps * (2 if guidance > 1 else 1) * plan.feature_channels
            * (height // pipe.vae_scale_factor // down) * (width // pipe.vae_scale_factor // down)
            * pipe.unet.dtype.itemsize)


def profile_cache(path, *, steps: int, budgets: Sequence[int], prompts: Sequence[str] | None = None, samples: int = 64,
                  branch: int = 0, guidance: float | None = None, scheduler: str = "ddim", height=None, width=None,
                  device=None, dtype: str = "fp32", batch_size: int | None = 8, seed: int = 0, correction: bool = True,
                  reprofile: bool = False, progress: Callable[[str, int, int], None] | None = None,
                  write: bool = True, correction_samples: int = 16, moments_max_bytes: int = 2 << 30,
                  weighting: str = "auto", validation_samples: int = 32, trend: bool = True,
                  on_policy_samples: int = 0, continuous: bool = True,
                  model_budgets: Sequence[int] | None = None, moments_max_values: int = 600_000) -> dict:
    """Profiles the model in ``path``, computes ReCaT schedules for each budget, stores them in the file.

    The CKA matrix of an earlier profile with the same (sampler, steps, guidance, branch) is reused
    unless ``reprofile``. The per-channel correction is fitted from pair moments gathered during the
    profiling pass when one minibatch's features of all steps (in the model's dtype) fit in
    ``moments_max_bytes``, else by a second pass over ``correction_samples`` samples (per distinct
    schedule). The residual-DP and trend candidates need those moments: for a large model at a large
    resolution, a smaller ``batch_size`` keeps them (SD v1 at 512 px: batch 8 in fp16, 4 in fp32).
    ``batch_size=None`` picks it from the features' size (:func:`auto_profile_batch`). The CKA of a stored
    profile is averaged over minibatches, so per-budget schedules depend on the batch size; the continuous
    model (from the pair moments) does not.

    ``weighting`` chooses the per-step weights of the DP's within-segment ``1 - CKA``:

    - ``"auto"`` (default): validated selection (:mod:`recat_runtime.cache.select`): per budget, the DP
      schedules of the weightings ``none, sigma, late1, late2, late4``, the residual-distance DP (when
      pair moments were collected) and the uniform schedule are each run on ``validation_samples``
      samples (prompt/seed pairs disjoint from the profiling ones: seeds ``seed + 1e6 + k``) with their
      correction, and the one whose decoded images have the highest mean per-sample PSNR against the
      full computation is stored, with the selection record (every candidate's schedule and PSNR).
      ``validation_samples=0`` disables validation: plain CKA (``"none"``). With ``trend`` (and pair
      moments), the candidates also include the schedules scored with the fitted-trend correction (a
      least-squares first-order forecast of the cached feature's spatial detail); ``on_policy_samples > 0``
      refits it on the cached trajectory over that many profiling samples
      (:func:`recat_runtime.cache.profile.fit_correction_on_policy`; one extra full pass per candidate).
    - ``"none"``: plain within-segment similarity (no validation); ``"sigma"``: weighed by each step's
      sigma decrement (lost by 1.8-2.4 dB on the shipped demo model at 7-8 full steps of 50);
      ``"late1"``/``"late2"``/``"late4"``: ``((T - t + 1) / T)^q`` at timestep t.

    ``continuous`` (default) also stores the profile as a schedule model in continuous time
    (:mod:`recat_runtime.cache.continuous`), from which `generate` derives schedules for any sampler,
    step count and budget (``budgets`` may then be empty: the per-budget schedules are exact overrides). Its
    weighting (``none``, ``early05``, ``late2``; unvalidated: ``early05``) and correction (affine or trend) are chosen on the
    validation samples over ``model_budgets`` (default: 10%, 14% and 20% of the steps): first the fewest
    budgets whose mean or pooled PSNR is below a smaller budget's, then the highest sum over those budgets
    of (mean + pooled PSNR) / 2, pooled PSNR being the one the worst images dominate.
    The pair moments are stored with it when they hold at most ``moments_max_values`` numbers (else the
    derived schedules run without a correction).

    The prompts are a stream: profiling uses the first ``samples`` (cycled), validation continues it.
    ``prompts=None``: prompts in the model's domain (:func:`recat_runtime.cache.prompts.default_prompts`).
    Returns a summary dict (schedules with their selection records, costs, timings, correction fit).
    """
    from acqe_format import AcqeReader
    from recat_runtime.cache import select as SEL
    from recat_runtime.cache.profile import residual_distance, trend_residual_distance

    if weighting not in ("auto",) + SEL.WEIGHTINGS:
        raise ValueError(f"weighting must be one of auto, {', '.join(SEL.WEIGHTINGS)}; got {weighting!r}")
    if validation_samples < 0:
        raise ValueError(f"validation_samples must be >= 0, got {validation_samples}")
    t_start = time.perf_counter()       # the reported total includes reading and decoding the model
    with AcqeReader(path) as r:
        metadata, model = r.metadata, r.model_info
    guidance = model.default_guidance if guidance is None else float(guidance)
    if prompts is None:     # one stream: profiling takes the first `samples`, validation continues it
        prompts = default_prompts(model.architecture, samples + (validation_samples if weighting == "auto" else 0))
    pipe = load_pipeline(path, device=device, torch_dtype=torch_dtype(dtype), scheduler=scheduler)
    load_s = time.perf_counter() - t_start
    check_run(pipe, steps, height, width)        # profiling runs start from noise (or a default-size image)
    if progress:      # progress comes through the callback: no diffusers bar per profiling batch
        pipe.set_progress_bar_config(disable=True)
    sampler = _sampler_name(pipe)
    h, w = run_size(pipe, height, width)        # check_run ran: both are known
    sample_bytes = profile_feature_bytes(pipe, steps, guidance, branch, h, w)
    if batch_size is None:
        batch_size = auto_profile_batch(samples, sample_bytes)
    settings = ProfileSettings(steps=steps, guidance=guidance, branch=branch, height=height, width=width,
                               samples=samples, batch_size=batch_size, seed=seed)
    existing = None if reprofile else find_profile(metadata, sampler=sampler, steps=steps, guidance=guidance,
                                                   branch=branch)
    t0 = time.perf_counter()
    if existing is not None:
        similarity = np.asarray(existing["similarity"], dtype=np.float64)
        prof = {k: existing[k] for k in existing if k != "schedules"}
        reused, moments = True, None
    else:
        if progress:
            settings.progress = lambda i, n: progress("profile", i, n)
        # keep one minibatch's features of all steps when that is small: corrections then need no 2nd pass
        collect = correction and batch_size * sample_bytes <= moments_max_bytes
        similarity, info = profile_similarity(pipe, prompts, settings, collect_moments=collect)
        moments = info.pop("moments", None)
        prof = {"sampler": sampler, "steps": steps, "guidance": float(guidance), "branch": branch,
                "height": int(h), "width": int(w), "seed": seed, "prompts": len(prompts),
                "prompts_sha256": _prompts_digest(prompts), "dtype": dtype, **info,
                "similarity": similarity}
        reused = False
    profile_s = time.perf_counter() - t0

    fresh_scheduler = lambda: type(pipe.scheduler).from_config(pipe.scheduler.config)  # noqa: E731
    validate = weighting == "auto" and validation_samples > 0
    names = SEL.WEIGHTINGS if validate else ("none" if weighting == "auto" else weighting,)
    weights = {n: SEL.step_weights(n, steps, fresh_scheduler()) for n in names}
    residual = residual_distance(moments) if (validate and moments is not None) else None
    use_trend = bool(trend and correction and residual is not None)
    trend_costs = (residual, trend_residual_distance(moments)) if use_trend else None

    fitter = CorrectionFitter(pipe, prompts, settings, moments, fallback_samples=correction_samples,
                              on_policy_samples=on_policy_samples, progress=progress)

    scorer = None
    val_s = 0.0
    if validate:
        vplan = SEL.validation_plan(prompts, samples, validation_samples, seed)
        scorer = SEL.ValidationScorer(pipe, vplan, steps=steps, guidance=guidance, branch=branch, height=height,
                                      width=width, batch_size=batch_size,
                                      correction_for=fitter if correction else None)
    scores: dict = {}
    schedules = []
    d_plain = 1 - similarity
    for bi, b in enumerate(budgets):
        if validate:
            t1 = time.perf_counter()
            cands = SEL.candidate_schedules(similarity, b, weights, residual, trend_costs)
            chosen, scored = SEL.select_schedule(cands, scorer, scores)
            val_s += time.perf_counter() - t1
            full, name, cost = tuple(chosen["full_steps"]), chosen["weighting"], chosen["cost"]
            kind = chosen["correction"]
            uni = next(c for c in scored if c["weighting"] == "uniform")
            selection = {"metric": SEL.METRIC, "validation_samples": int(validation_samples),
                         "validation_seeds": f"{seed + SEL.VALIDATION_SEED_OFFSET}+k",
                         "correction": bool(correction), "chosen": name, "psnr": chosen["psnr"],
                         "uniform_psnr": uni["psnr"], "candidates": scored}
            if progress:
                progress("validate", bi + 1, len(budgets))
        else:
            name, kind = names[0], "affine"
            full, cost = recat_schedule(similarity, b, weights[name])
            selection = None
        entry = {"budget": int(b), "full_steps": list(full), "weighting": name, "cost": round(float(cost), 6),
                 "uniform_cost": round(S.schedule_cost(d_plain, S.uniform_schedule(steps, b), weights.get(name)), 6),
                 "correction": None, "correction_fit": None, "selection": selection}
        if correction and len(full) < steps:
            corr, fit = fitter.fit(full, kind)
            entry["correction"] = corr.to_json()
            entry["correction_fit"] = {k: round(v, 6) for k, v in fit.items()}
        schedules.append(entry)
    model_s = 0.0
    if continuous and not (reused and prof.get(CONTINUOUS_KEY)):
        t1 = time.perf_counter()
        prof[CONTINUOUS_KEY] = _continuous_model(pipe, steps, similarity, moments, scorer, correction=correction,
                                                 trend=trend, budgets=model_budgets, max_values=moments_max_values,
                                                 progress=progress)
        model_s = time.perf_counter() - t1
    new_meta = with_profile(metadata, prof, schedules)
    if write:
        from acqe_format import replace_metadata

        replace_metadata(path, new_meta)
    return {
        "sampler": sampler, "steps": steps, "guidance": guidance, "branch": branch,
        "reused_similarity": reused, "samples": prof.get("samples"), "estimator": prof.get("estimator", ESTIMATOR),
        "weighting": weighting, "validation_samples": int(validation_samples) if validate else 0,
        "load_seconds": load_s, "profile_seconds": profile_s, "validation_seconds": val_s, "model_seconds": model_s,
        "total_seconds": time.perf_counter() - t_start,
        "continuous": {k: v for k, v in (prof.get(CONTINUOUS_KEY) or {}).items() if k != "moments"} or None,
        "schedules": [{k: v for k, v in s.items() if k != "correction"} for s in schedules],
        "similarity": similarity, "metadata": new_meta, "moments": moments,
    }
