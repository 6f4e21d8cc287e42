"""ReCaT branch caching as a diffusers ``ModelHook`` on ``UNet2DConditionModel``.

Usage reads like diffusers' own cache hooks::

    config = RecatCacheConfig.uniform(num_inference_steps=50, budget=10)
    apply_recat_cache(pipe, config)          # or pipe.unet
    image = pipe(prompt, num_inference_steps=50).images[0]
    disable_recat_cache(pipe)

Each UNet call is mapped to its step: the position of its timestep in the scheduler's timesteps (so a
partial run, img2img or inpainting, starts at the step it actually starts at, and that first executed
step always runs in full), or the call count when there is no scheduler. A new run is detected when the
step goes back or the previous run used all its steps; :func:`reset_recat_cache` starts one explicitly.

ControlNet: full steps pass its residuals to the whole UNet; a cached step adds the residuals of the skips
it computes (skips 0..m) and drops those of the deeper skips and of the mid block, whose blocks it does not
run (their effect reaches it only through the cached feature of the latest full step). Applied to a
pipeline with one ControlNet at branch 0, the ControlNet itself then computes only the residual a cached
step uses (`recat_runtime.cache.controlnet_hook`; identical images). T2I-Adapter residuals
(``down_intrablock_additional_residuals``) are refused.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from recat_runtime.cache import schedules as S
from recat_runtime.cache.branch import BranchPlan, branch_plan, shallow_forward

__all__ = [
    "RECAT_CACHE_HOOK",
    "CacheCorrection",
    "RecatCacheConfig",
    "RecatCacheHook",
    "apply_recat_cache",
    "disable_recat_cache",
    "get_recat_hook",
    "reset_recat_cache",
    "recat_cache",
]

RECAT_CACHE_HOOK = "recat_cache"


@dataclass(frozen=True)
class CacheCorrection:
    """Per-step, per-channel correction of the cached feature.

    Affine (``trend is None``): ``h <- scale[t] * f(a) + shift[t]``, with ``f(a)`` the feature of the
    latest full step a. With a ``trend``: ``h <- scale[t] * f(a) + trend[t] * c(f(a) - f(a')) + shift[t]``,
    where a' is the full step before a and ``c`` subtracts each sample's spatial mean per channel: a
    fitted first-order forecast of the spatial detail. The spatial means are not extrapolated: on the
    demo model extrapolating them turned a few images' backgrounds to another colour (PSNR 7-8 dB),
    while forecasting only the detail kept the gain without those flips. Steps with no a' (the first
    segment) have ``trend[t] = 0``.

    ``scale``, ``shift`` and ``trend`` are ``[S, C]`` float32 arrays (identity rows at full steps).
    Fitted by least squares on profiling data (CacheQuant's DEC for the cache error, extended by the
    trend regressor); see ``recat_runtime.cache.profile``.
    """

    scale: np.ndarray
    shift: np.ndarray
    trend: np.ndarray | None = None

    def __post_init__(self):
        if self.scale.shape != self.shift.shape or self.scale.ndim != 2:
            raise ValueError(f"scale {self.scale.shape} and shift {self.shift.shape} must both be [steps, channels]")
        if self.trend is not None and self.trend.shape != self.scale.shape:
            raise ValueError(f"trend {self.trend.shape} must have the shape of scale {self.scale.shape}")
        arrays = (self.scale, self.shift) + (() if self.trend is None else (self.trend,))
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ValueError("correction coefficients must be finite")

    def to_json(self) -> dict:
        out = {"scale": np.round(self.scale.astype(np.float64), 6).tolist(),
               "shift": np.round(self.shift.astype(np.float64), 6).tolist()}
        if self.trend is not None:
            out["trend"] = np.round(self.trend.astype(np.float64), 6).tolist()
        return out

    def delayed(self, start: int) -> "CacheCorrection":
        """These rows for a run that begins ``start`` steps into a longer schedule: identity rows first,
        so that rows are indexed in the whole schedule's numbering."""
        if start <= 0:
            return self
        pad = lambda a, v: None if a is None else np.concatenate(  # noqa: E731
            [np.full((start, a.shape[1]), v, np.float32), a])
        return CacheCorrection(pad(self.scale, 1.0), pad(self.shift, 0.0), pad(self.trend, 0.0))

    def reindexed(self, rows) -> "CacheCorrection":
        """The correction whose step i has this one's row ``rows[i]``."""
        rows = np.asarray(rows, dtype=np.int64)
        pick = lambda a: None if a is None else np.ascontiguousarray(a[rows])      # noqa: E731
        return CacheCorrection(pick(self.scale), pick(self.shift), pick(self.trend))

    @classmethod
    def from_json(cls, obj: dict) -> "CacheCorrection":
        trend = obj.get("trend")
        return cls(np.asarray(obj["scale"], dtype=np.float32), np.asarray(obj["shift"], dtype=np.float32),
                   None if trend is None else np.asarray(trend, dtype=np.float32))


@dataclass
class RecatCacheConfig:
    """What to cache and when.

    Args:
        num_inference_steps: S, the number of UNet calls in one sampling run.
        full_steps: the steps that run the full UNet (must contain 0); ``None`` means every step.
        branch: the skip branch m to split the UNet at (0 = shallowest, DeepCache's default branch).
        correction: optional per-step correction of the cached feature (affine, or with a fitted trend).
        observer: optional ``callable(step, feature)`` called after every full step with the deep
            feature it cached (used by the profiler).
        cached_observer: optional ``callable(step, latest, older, true)`` called on every cached step with
            the feature of the latest full step, the one of the full step before it (None in the first
            segment) and the *true* deep feature at the current latent, computed by an extra full
            forward for the purpose (profiling only: it makes a cached step cost a full one). The step
            still returns the cached output, so the run follows the cached trajectory; used to fit the
            correction on-policy (:func:`recat_runtime.cache.profile.fit_correction_on_policy`).
        forecast: on a cached step use the first-order forecast of the deep feature from the last two
            full steps, ``f(a) + (t - a) / (a - a') * (f(a) - f(a'))``, instead of ``f(a)`` itself (plain
            reuse until two full steps exist). The correction, if any, applies on top.
        planner: optional ``plan(timesteps, start) -> (full_steps, correction[, restart_multistep])``,
            called when a run starts with the scheduler's timesteps (numpy) and the index of the first step
            the pipeline executes (> 0 for img2img / inpainting, which run only the tail); what it returns
            replaces ``full_steps``, ``correction`` (and ``restart_multistep`` when it says) for that run
            (:meth:`ScheduleModel.planner <recat_runtime.cache.continuous.ScheduleModel.planner>`). It also
            makes the config work for any step count the scheduler has.
        restart_multistep: at each full step that follows a cached one, a multistep solver (one that keeps
            ``lower_order_nums``: diffusers' DPM-Solver++ 2M, UniPC, DEIS) restarts its history, so that
            step is first order, and UniPC's corrector skipped, as on the run's first step. Its history
            holds the cached steps' outputs, which its higher-order update would extrapolate into the
            fresh one. No effect on other samplers. Derived ReCaT plans decide it per run
            (:data:`recat_runtime.cache.continuous.RESTART_MULTISTEP_BELOW`).

    Without a planner, a run that starts at step k > 0 refreshes at k (nothing is cached yet) and then
    follows ``full_steps``; the correction rows of that first segment were fitted for another anchor and
    are not applied.
    """

    num_inference_steps: int
    full_steps: tuple[int, ...] | None = None
    branch: int = 0
    correction: CacheCorrection | None = None
    forecast: bool = False
    observer: Callable[[int, torch.Tensor], None] | None = field(default=None, repr=False)
    cached_observer: Callable[[int, torch.Tensor, torch.Tensor | None, torch.Tensor], None] | None = field(
        default=None, repr=False)
    planner: Callable | None = field(default=None, repr=False)
    restart_multistep: bool = False

    def __post_init__(self):
        if self.full_steps is None:
            self.full_steps = S.no_cache_schedule(self.num_inference_steps)
        self.full_steps = S.check_schedule(self.full_steps, self.num_inference_steps)
        if self.forecast and self.correction is not None and self.correction.trend is not None:
            raise ValueError("forecast=True and a correction with a fitted trend both forecast the feature; "
                             "use one of them")
        if self.correction is not None and self.correction.scale.shape[0] != self.num_inference_steps:
            raise ValueError(
                f"correction has {self.correction.scale.shape[0]} steps, the schedule {self.num_inference_steps}"
            )

    @property
    def budget(self) -> int:
        """Number of full steps."""
        return len(self.full_steps)

    @classmethod
    def no_cache(cls, num_inference_steps: int, **kw) -> "RecatCacheConfig":
        return cls(num_inference_steps, S.no_cache_schedule(num_inference_steps), **kw)

    @classmethod
    def uniform(cls, num_inference_steps: int, budget: int, **kw) -> "RecatCacheConfig":
        """B full steps spread evenly (DeepCache uniform when S is a multiple of B)."""
        return cls(num_inference_steps, S.uniform_schedule(num_inference_steps, budget), **kw)

    @classmethod
    def interval(cls, num_inference_steps: int, interval: int, **kw) -> "RecatCacheConfig":
        """DeepCache's uniform 1:N schedule."""
        return cls(num_inference_steps, S.interval_schedule(num_inference_steps, interval), **kw)

    @classmethod
    def quadratic(cls, num_inference_steps: int, budget: int, **kw) -> "RecatCacheConfig":
        """DeepCache's non-uniform schedule."""
        return cls(num_inference_steps, S.quadratic_schedule(num_inference_steps, budget), **kw)


def _resolve(pipe_or_unet):
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    compiled = hasattr(unet, "_orig_mod") or getattr(unet, "_compiled_call_impl", None) is not None
    # `torch.compile(unet)` wraps the UNet: the hook goes on the UNet itself (whose forward the compiled
    # wrapper calls), where the forward's signature and the blocks are
    unet = getattr(unet, "_orig_mod", unet)
    if compiled:
        _guard_hooks_under_compile()
    scheduler = getattr(pipe_or_unet, "scheduler", None)
    if not hasattr(unet, "up_blocks") or not hasattr(unet, "down_blocks"):
        raise TypeError(f"expected a UNet2DConditionModel or a pipeline with .unet, got {type(pipe_or_unet).__name__}")
    return unet, scheduler


def _guard_hooks_under_compile() -> None:
    """torch.compile does not re-check module hooks by default (``skip_nnmodule_hook_guards``), so a ReCaT
    hook added to (or removed from) a UNet that already ran compiled would be silently ignored. Turn the
    hook guards on; code compiled before that has no such guards and is dropped once (recompiled on its
    next call). Afterwards enabling and disabling the cache reuse their compiled graphs."""
    import torch._dynamo

    if torch._dynamo.config.skip_nnmodule_hook_guards:
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        torch._dynamo.reset()


class RecatCacheHook(ModelHook):
    """Runs full steps unchanged (capturing the deep feature) and cached steps on the shallow branch."""

    _is_stateful = True

    def __init__(self, config: RecatCacheConfig, plan: BranchPlan, scheduler=None):
        super().__init__()
        self.config = config
        self.plan = plan
        self.scheduler = scheduler
        self._full = frozenset(config.full_steps)
        self._run_correction = config.correction   # this run's (a planner or a partial run may change it)
        self._correction_from = 0                  # first step whose correction row applies
        self._restart_multistep = config.restart_multistep   # this run's (a planner may decide it)
        self.run_full_steps = tuple(config.full_steps)   # the refresh steps of the latest run
        self._capturing = False
        self._handle = None
        self._signature = None
        self._correction = None
        self.reset_state(None)
        self.full_calls = 0
        self.cached_calls = 0

    # -- diffusers hook protocol
    def initialize_hook(self, module):
        consumer = module.get_submodule(self.plan.consumer_name)
        self._handle = consumer.register_forward_pre_hook(self._capture, with_kwargs=True)
        self._signature = inspect.signature(type(module).forward)
        params = list(self._signature.parameters.values())[1:]          # after `self`
        self._positional = tuple(p.name for p in params
                                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._names = frozenset(p.name for p in params)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            self._positional = ()            # *args/**kwargs: always bind
        return module

    def deinitalize_hook(self, module):  # (sic) diffusers' spelling
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.reset_state(module)
        return module

    def reset_state(self, module):
        self.step = None
        self._prev_t = None
        self.feature = None
        self._older = None          # (step, feature) of the full step before the last one (forecast, trend)
        self._feature_step = None
        self._detail = None         # (step of the latest full step, its centred difference to the one before)
        self._after_cached = False  # the previous call of this run was a cached step
        return module

    # -- internals
    def _capture(self, mod, args, kwargs):
        if self._capturing:
            x = args[0] if args else kwargs["input_tensor"]
            self.feature = x[:, : self.plan.feature_channels].detach().clone()
        return None

    def _time_key(self, timestep) -> tuple[str, float]:
        """A key that grows along one sampling run, read without synchronising a GPU.

        Pipelines pass ``t`` straight from ``for t in scheduler.timesteps``: a 0-d view into that
        tensor, so its position is known from the storage offset alone. Reading the value instead
        (``float(t)``) would make the CPU wait for the GPU at every step. Timesteps fall along a run,
        so a value key is the negated timestep.
        """
        ts = getattr(self.scheduler, "timesteps", None) if self.scheduler is not None else None
        if (torch.is_tensor(timestep) and torch.is_tensor(ts) and timestep.dim() == 0 and ts.dim() == 1
                and ts.stride(0) == 1 and timestep.device == ts.device
                and timestep.untyped_storage().data_ptr() == ts.untyped_storage().data_ptr()):
            return "position", float(timestep.storage_offset() - ts.storage_offset())
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        return "value", -t

    def _scheduler_timesteps(self):
        ts = getattr(self.scheduler, "timesteps", None) if self.scheduler is not None else None
        return ts if torch.is_tensor(ts) and ts.dim() == 1 else None

    def _position(self, key) -> int | None:
        """The index of this call's timestep in the scheduler's timesteps (None when unknown): partial runs
        (img2img, inpainting) start part-way into them."""
        if key[0] == "position":
            return int(key[1])
        ts = self._scheduler_timesteps()
        if ts is None:
            return None
        hits = (ts.detach().to("cpu", torch.float64) + key[1]).abs()   # key[1] = -t
        j = int(hits.argmin())
        return j if float(hits[j]) < 1e-3 else None

    def _locate(self, timestep) -> tuple[tuple[str, float], bool, int]:
        """(time key, whether the call starts a new run, its step) for a UNet call at ``timestep``; changes
        nothing."""
        key = self._time_key(timestep)
        n = self.config.num_inference_steps
        pos = self._position(key)
        # a position that does not advance starts a new run; a repeated *value* does not (PNDM runs one
        # timestep twice)
        went_back = self._prev_t is not None and key[0] == self._prev_t[0] and (
            key[1] <= self._prev_t[1] if key[0] == "position" else key[1] < self._prev_t[1])
        new_run = self.step is None or went_back or (pos is None and self.step + 1 >= n)
        if new_run:
            return key, True, 0 if pos is None else pos
        return key, False, self.step + 1 if pos is None else pos

    def _advance(self, timestep) -> int:
        key, new_run, self.step = self._locate(timestep)
        if new_run:
            self.feature, self._older, self._feature_step, self._detail = None, None, None, None
            self._after_cached = False
            self._start_run(self.step)
        self._prev_t = key
        return self.step

    def next_call_is_cached(self, timestep) -> bool:
        """Whether the UNet call at ``timestep`` that comes next will be a cached step (the first step of a run
        never is); changes nothing. A ControlNet called just before it then needs only the residuals of the
        skips that step computes (`recat_runtime.cache.controlnet_hook`)."""
        _, new_run, step = self._locate(timestep)
        return not new_run and self.feature is not None and step not in self._full

    def _start_run(self, start: int) -> None:
        """Sets this run's refresh steps and correction (re-planned, or the config's from ``start`` on)."""
        ts = self._scheduler_timesteps()
        calls = None if ts is None else len(ts)
        n = self.config.num_inference_steps
        corr = self.config.correction
        if self.config.planner is not None and ts is not None:
            full, corr, *restart = self.config.planner(ts.detach().to("cpu", torch.float64).numpy(), start)
            self._set_run(full, corr, start, *restart)
        elif calls is not None and calls != n and calls - start == n:
            # a config made for the run's own UNet calls (image to image: `effective_steps`), as the CLI and
            # `generate` build it: its steps (0 among them) are counted from the run's first call
            self._set_run([start + s for s in self.config.full_steps], None if corr is None else corr.delayed(start),
                          start)
        elif calls is not None and abs(calls - start - n) == 1 and bool((ts[1:] == ts[:-1]).any()):
            # one UNet call more or less than the config's steps, from a scheduler that runs a timestep twice
            # (PNDM's warm-up: S steps in S + 1 calls; its image to image executes one call more than
            # `effective_steps`): the config's schedule is stretched over the calls this run executes, the
            # full steps at the same fractions of the run, each call taking the correction row of the config
            # step it stands for
            executed = calls - start
            at = lambda s: start + min(executed - 1, round(s * executed / n))      # noqa: E731
            full = sorted({start, *(at(s) for s in self.config.full_steps)})
            if corr is not None:
                rows = np.minimum(n - 1, (np.arange(calls) - start).clip(0) * n // executed)
                corr = corr.reindexed(rows)
            self._set_run(full, corr, start)
        elif calls is not None and calls != n:
            raise ValueError(
                f"the ReCaT cache schedule is for {n} steps but the scheduler makes {calls}; "
                "build the config for the same num_inference_steps"
            )
        else:
            full = self.config.full_steps
            later = [s for s in full if s > start]
            # rows before the first scheduled refresh at or after `start` belong to an anchor this run never had
            self._set_run([start, *later], corr, start if start in full else (later[0] if later else n))

    def _set_run(self, full, correction, correction_from: int, restart_multistep: bool | None = None) -> None:
        self._full = frozenset(full)
        self._restart_multistep = bool(self.config.restart_multistep if restart_multistep is None
                                       else restart_multistep)
        self.run_full_steps = tuple(sorted(self._full))
        self._run_correction, self._correction_from = correction, correction_from
        self._correction = None        # the device copy of the previous run's coefficients

    @property
    def _needs_older(self) -> bool:
        """Whether cached steps use the full step before the latest one (forecast, fitted trend, observer)."""
        corr = self._run_correction
        return (self.config.forecast or self.config.cached_observer is not None
                or (corr is not None and corr.trend is not None))

    def _observe_cached(self, step: int, args, kwargs) -> None:
        """Runs the full UNet at this cached step only to capture the true deep feature for the observer."""
        latest = self.feature
        self._capturing = True
        try:
            self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self._capturing = False
        true, self.feature = self.feature, latest
        self.config.cached_observer(step, latest, None if self._older is None else self._older[1], true)

    def _coefficients(self, step: int, like: torch.Tensor) -> list[torch.Tensor | None]:
        """``[scale, shift, trend]`` rows of ``step`` as ``[1, C, 1, 1]`` tensors on ``like``'s device."""
        corr = self._run_correction
        if (self._correction is None or self._correction[0].device != like.device
                or self._correction[0].dtype != like.dtype):
            # once per run: on the device, in the feature's dtype, shaped [S, 1, C, 1, 1], so that a cached
            # step only indexes (a small model's step is ~2 ms on a CPU; each extra op shows)
            self._correction = [None if m is None else
                                torch.as_tensor(m, device=like.device).to(like.dtype)[:, None, :, None, None]
                                for m in (corr.scale, corr.shift, corr.trend)]
        return [None if m is None else m[step] for m in self._correction]

    def _arguments(self, module, args, kwargs) -> dict:
        """forward's arguments by name, defaults filled in: the common call (known names, no duplicates,
        nothing required missing) without ``Signature.bind``, which is slow next to a small model's cached
        step; anything else goes through bind (and raises its TypeError)."""
        pos = self._positional
        if len(args) <= len(pos) and all(k in self._names and k not in pos[:len(args)] for k in kwargs):
            a = dict(self._defaults)
            a.update(zip(pos, args))
            a.update(kwargs)
            if len(a) == len(self._names):
                return a
        bound = self._signature.bind(module, *args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def _cached_feature(self, step: int) -> torch.Tensor:
        """The deep feature a cached step feeds to the shallow branch."""
        feature = self.feature
        older = self._older
        if self.config.forecast and older is not None:
            s0, f0 = older
            s1 = self._feature_step
            feature = feature + (feature - f0) * ((step - s1) / (s1 - s0))
        corr = self._run_correction
        if corr is None or step < self._correction_from:
            return feature
        scale, shift, trend = self._coefficients(step, feature)
        out = torch.addcmul(shift, feature, scale)      # feature * scale + shift, one op
        if trend is not None and older is not None:
            if self._detail is None or self._detail[0] != self._feature_step:  # once per segment
                delta = self.feature - older[1]
                self._detail = (self._feature_step, delta - delta.mean(dim=(2, 3), keepdim=True))
            out.addcmul_(self._detail[1], trend)
        return out

    # Under torch.compile the step bookkeeping below runs as plain Python (this frame is skipped), while the
    # full forward and the shallow forward it calls are compiled as graphs of their own: tracing the
    # per-step state would recompile on every step.
    @torch.compiler.disable(recursive=False)
    def new_forward(self, module, *args, **kwargs):
        a = self._arguments(module, args, kwargs)
        # diffusers reads down residuals without a mid residual as T2I-Adapter residuals (legacy form)
        if a.get("down_intrablock_additional_residuals") is not None or (
                a.get("down_block_additional_residuals") is not None and a.get("mid_block_additional_residual") is None):
            raise ValueError("ReCaT caching does not support T2I-Adapter residuals "
                             "(`down_intrablock_additional_residuals`)")
        step = self._advance(a["timestep"])
        if step in self._full or self.feature is None:
            if self._after_cached and self._restart_multistep:
                _restart_multistep(self.scheduler)
            self._after_cached = False
            if self._needs_older and self.feature is not None:
                self._older = (self._feature_step, self.feature)
            self._feature_step = step
            self._capturing = True
            try:
                out = self.fn_ref.original_forward(*args, **kwargs)
            finally:
                self._capturing = False
            self.full_calls += 1
            if self.config.observer is not None:
                self.config.observer(step, self.feature)
            return out
        if self.config.cached_observer is not None:
            self._observe_cached(step, args, kwargs)
        self._after_cached = True
        feature = self._cached_feature(step)
        sample = shallow_forward(
            module, self.plan, feature, a["sample"], a["timestep"], a["encoder_hidden_states"],
            class_labels=a["class_labels"], timestep_cond=a["timestep_cond"],
            attention_mask=a["attention_mask"], cross_attention_kwargs=a["cross_attention_kwargs"],
            added_cond_kwargs=a["added_cond_kwargs"], encoder_attention_mask=a["encoder_attention_mask"],
            down_block_additional_residuals=a.get("down_block_additional_residuals"),
        )
        self.cached_calls += 1
        return UNet2DConditionOutput(sample=sample) if a["return_dict"] else (sample,)


def _restart_multistep(scheduler) -> None:
    """Makes a multistep solver's next step use nothing from before it, as at the start of a run: diffusers'
    multistep solvers raise their order with ``lower_order_nums``, the count of steps taken since they
    (re)started, and UniPC's corrector combines the fresh output with the previous one, the sample it
    corrects kept in ``last_sample`` (None: no correction, as on the first step). The UNet call comes
    before the scheduler's step, so this applies to the step of the current call."""
    if scheduler is None or not hasattr(scheduler, "lower_order_nums"):
        return
    scheduler.lower_order_nums = 0
    if hasattr(scheduler, "last_sample"):
        scheduler.last_sample = None


def get_recat_hook(pipe_or_unet) -> RecatCacheHook | None:
    """The active ReCaT hook, or None."""
    unet, _ = _resolve(pipe_or_unet)
    registry = getattr(unet, "_diffusers_hook", None)
    return None if registry is None else registry.get_hook(RECAT_CACHE_HOOK)


def apply_recat_cache(pipe_or_unet, config: RecatCacheConfig) -> RecatCacheHook:
    """Enables ReCaT branch caching on a pipeline's UNet (or a UNet).

    Raises:
        ValueError: caching is already enabled, or the branch does not exist in this UNet.
    """
    unet, scheduler = _resolve(pipe_or_unet)
    if get_recat_hook(unet) is not None:
        raise ValueError("ReCaT caching is already enabled on this UNet; call disable_recat_cache() first")
    plan = branch_plan(unet, config.branch)
    hook = RecatCacheHook(config, plan, scheduler)
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(hook, RECAT_CACHE_HOOK)
    controlnet = _single_controlnet(pipe_or_unet)
    if controlnet is not None and config.branch == 0 and config.cached_observer is None:
        from recat_runtime.cache.controlnet_hook import RECAT_CONTROLNET_HOOK, ShallowControlNetHook

        HookRegistry.check_if_exists_or_initialize(controlnet).register_hook(ShallowControlNetHook(hook),
                                                                            RECAT_CONTROLNET_HOOK)
    return hook


def _single_controlnet(pipe_or_unet):
    """The pipeline's ControlNet when it has exactly one (a ``ControlNetModel``), else None."""
    from diffusers import ControlNetModel

    controlnet = getattr(pipe_or_unet, "controlnet", None)
    return controlnet if isinstance(controlnet, ControlNetModel) else None


def disable_recat_cache(pipe_or_unet) -> None:
    """Removes the ReCaT hook (no-op when caching is off)."""
    unet, _ = _resolve(pipe_or_unet)
    if get_recat_hook(unet) is not None:
        unet._diffusers_hook.remove_hook(RECAT_CACHE_HOOK, recurse=False)
    controlnet = _single_controlnet(pipe_or_unet)
    registry = getattr(controlnet, "_diffusers_hook", None)
    if registry is not None:
        from recat_runtime.cache.controlnet_hook import RECAT_CONTROLNET_HOOK

        if registry.get_hook(RECAT_CONTROLNET_HOOK) is not None:
            registry.remove_hook(RECAT_CONTROLNET_HOOK, recurse=False)


def reset_recat_cache(pipe_or_unet) -> None:
    """Forgets the cached feature and step counter (the next UNet call is step 0)."""
    hook = get_recat_hook(pipe_or_unet)
    if hook is not None:
        hook.reset_state(None)


@contextlib.contextmanager
def recat_cache(pipe_or_unet, config: RecatCacheConfig):
    """Context manager: caching on inside the block, off after it."""
    hook = apply_recat_cache(pipe_or_unet, config)
    try:
        yield hook
    finally:
        disable_recat_cache(pipe_or_unet)
