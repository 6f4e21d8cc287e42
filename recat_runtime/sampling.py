"""One batch of text-to-image sampling, timed: the step that generation, validation and benchmarks share.

It sits below both `recat_runtime.api` (generate, profile_cache) and `recat_runtime.cache.select`
(validation of candidate schedules), which both run batches through it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from recat_runtime.cache import schedules as S
from recat_runtime.cache.hook import RecatCacheConfig, apply_recat_cache, disable_recat_cache

__all__ = ["GenerateResult", "denoise_and_decode", "synchronize", "image_inputs", "effective_steps", "check_run",
           "run_timesteps", "default_size", "run_size"]


@dataclass
class GenerateResult:
    images: list                     # PIL images
    latents: torch.Tensor
    full_steps: tuple[int, ...]      # the steps that ran the whole UNet
    loop_seconds: float              # prompt encoding + denoising loop
    decode_seconds: float            # VAE decode + postprocess
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)


def synchronize(device) -> None:
    """Wait for the device's queued work (timings of CUDA work are meaningless without it)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def image_inputs(pipe, init_image, strength: float | None, n: int, height=None, width=None, mask=None) -> dict:
    """The image arguments of ``pipe``'s call: ``image``/``strength`` for image-to-image pipelines; for an
    inpainting pipeline, the ``mask`` (a PIL image: white is repainted, black kept; resized like the
    image) or, without one, a mask that repaints everything (its text-to-image use) over the initial image
    (mid-grey without one). Empty for a text-to-image pipeline without an initial image. An image pipeline
    called without one (profiling the SDXL refiner) starts from mid-grey at strength 1: the whole noise
    schedule, as text to image runs it."""
    from PIL import Image

    params = _call_parameters(pipe)
    inpaint = "mask_image" in params
    needs_image = "image" in params and "height" not in params       # SDXL / SD image-to-image pipelines
    if init_image is None and not inpaint and not needs_image:
        return {}
    if init_image is None and needs_image:
        strength = 1.0
    if init_image is None:
        h, w = run_size(pipe, height, width)        # check_run ran: both are known
        init_image = Image.new("RGB", (w, h), (127, 127, 127))
    elif height and width:
        init_image = init_image.convert("RGB").resize((width, height))
    out = {"image": [init_image.convert("RGB")] * n}
    if strength is not None:
        out["strength"] = float(strength)
    if inpaint:
        size = out["image"][0].size                 # the mask follows the image, given or made
        mask = Image.new("L", size, 255) if mask is None else mask.convert("L").resize(size)
        out["mask_image"] = [mask] * n
    return out


def control_inputs(pipe, control_image, scale: float, n: int, height=None, width=None) -> dict:
    """The ControlNet arguments of ``pipe``'s call: the control image (a PIL image for all ``n`` images, or a
    list of ``n``) resized to the run's size, with the size itself (a ControlNet pipeline otherwise takes the
    size of the control image) and the conditioning scale. Empty for a pipeline without a ControlNet.

    Raises:
        ControlNetError: a control image without a ControlNet, or a ControlNet without one.
    """
    from recat_runtime.errors import ControlNetError

    if getattr(pipe, "controlnet", None) is None:
        if control_image is not None:
            raise ControlNetError("a control image needs a ControlNet")
        return {}
    if control_image is None:
        raise ControlNetError("a ControlNet needs a control image")
    images = list(control_image) if isinstance(control_image, (list, tuple)) else [control_image] * n
    if len(images) != n:
        raise ControlNetError(f"got {len(images)} control images for {n} images")
    h, w = run_size(pipe, height, width)        # check_run ran: both are known
    # from noise the control image is the pipeline's `image`; from an initial image, that is `image` and
    # the control image is `control_image`
    key = "control_image" if "control_image" in _call_parameters(pipe) else "image"
    return {key: [im.convert("RGB").resize((w, h)) for im in images], "height": h, "width": w,
            "controlnet_conditioning_scale": float(scale)}


def _call_parameters(pipe) -> set[str]:
    import inspect

    return set(inspect.signature(type(pipe).__call__).parameters)


def default_size(pipe) -> tuple[int, int] | None:
    """(height, width) in pixels the pipeline makes when none is given (the UNet's ``sample_size`` times the
    VAE's scale, as diffusers computes it); None when the config has no usable ``sample_size``."""
    sample, scale = getattr(pipe.unet.config, "sample_size", None), pipe.vae_scale_factor
    if isinstance(sample, int) and not isinstance(sample, bool):
        return sample * scale, sample * scale
    if isinstance(sample, (list, tuple)) and len(sample) == 2 and all(isinstance(v, int) for v in sample):
        return sample[0] * scale, sample[1] * scale
    return None


def run_size(pipe, height=None, width=None) -> tuple[int | None, int | None]:
    """(height, width) of a run: the sides given, the pipeline's default (:func:`default_size`) for the
    others; None for a side neither gives (`check_run` refuses that run)."""
    default_h, default_w = default_size(pipe) or (None, None)
    return height or default_h, width or default_w


def run_timesteps(pipe, steps: int) -> np.ndarray:
    """The timestep values ``pipe``'s sampler runs in ``steps`` steps (float64), from a copy of its scheduler
    (the pipeline's own keeps its state)."""
    probe = type(pipe.scheduler).from_config(pipe.scheduler.config)
    probe.set_timesteps(steps)
    return torch.as_tensor(probe.timesteps).double().cpu().numpy()


def check_run(pipe, steps: int, height=None, width=None, with_image: bool = False) -> None:
    """Refuses, as a `SamplingSettingsError`, a run that diffusers would stop with a ValueError part-way in:
    more steps than the scheduler's training timesteps, or (no initial image to take the size from) an image
    side that is not a multiple of 8, given or the model's default. Both can come from an intact file with
    valid configs (found by the re-sealing fuzzer: ``num_train_timesteps`` 2, ``sample_size`` 1)."""
    from recat_runtime.errors import SamplingSettingsError

    trained = getattr(pipe.scheduler.config, "num_train_timesteps", None)
    if trained is not None:
        # the scheduler's own timesteps for this run, on a copy: with SD's `steps_offset` 1 and "leading"
        # spacing, even steps == num_train_timesteps indexes one past the trained betas
        try:
            last = float(run_timesteps(pipe, steps).max())
        except ValueError:
            last = float("inf")
        if not last < trained:
            raise SamplingSettingsError(f"{steps} steps do not fit the {trained} training timesteps of this "
                                        "model's scheduler: use fewer steps")
    if with_image:
        return
    sample, scale = getattr(pipe.unet.config, "sample_size", None), pipe.vae_scale_factor
    h, w = run_size(pipe, height, width)
    if h is None or w is None:
        # re-seal fuzzer seed 307680: a config without unet.sample_size (diffusers would multiply None)
        raise SamplingSettingsError(f"this model's UNet config has no usable sample_size ({sample!r}): give a "
                                    "height and width")
    if h % 8 or w % 8:
        raise SamplingSettingsError(
            f"a {w}x{h} px image is not a multiple of 8 (this model's default is unet.sample_size {sample} x "
            f"the VAE's scale {scale}): give a height and width that are")


def effective_steps(steps: int, strength: float | None, with_image: bool) -> int:
    """UNet calls of one run: image-to-image starts at ``strength`` of the schedule (diffusers' rule)."""
    if not with_image or strength is None:
        return steps
    return max(1, min(int(steps * strength), steps))


def denoise_and_decode(pipe, prompts: Sequence[str], *, steps: int, guidance: float, seeds: Sequence[int],
                       height=None, width=None, config: RecatCacheConfig | None = None,
                       negative_prompt=None, on_step: Callable[[int, int], None] | None = None,
                       init_image=None, strength: float | None = None, mask=None, control_image=None,
                       control_scale: float = 1.0) -> tuple[torch.Tensor, list, float, float, tuple[int, ...]]:
    """One batch: ``len(prompts) == len(seeds)`` images; returns (latents, images, loop s, decode s, full steps).
    ``on_step(done, steps)`` is called after each denoising step. ``init_image`` (a PIL image) and
    ``strength`` make it image-to-image (the pipeline must take an image: see `load_pipeline`'s ``img2img``);
    ``mask`` (a PIL image) is an inpainting pipeline's mask. ``control_image`` (a PIL image, or one per
    prompt) and ``control_scale`` steer a ControlNet pipeline (`load_pipeline`'s ``controlnet``)."""
    device = pipe.unet.device
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    # first: without an initial image, image_inputs makes one at the default size this checks
    check_run(pipe, steps, height, width, with_image=init_image is not None)
    extra = image_inputs(pipe, init_image, strength, len(prompts), height, width, mask=mask)
    control = control_inputs(pipe, control_image, control_scale, len(prompts), height, width)
    if control:
        height, width = control.pop("height"), control.pop("width")
        extra.update(control)
    if on_step is not None:
        total = effective_steps(steps, extra.get("strength"), "image" in extra)

        def step_end(_pipe, i, _t, tensors):
            on_step(i + 1, total)
            return tensors
        extra["callback_on_step_end"] = step_end
    hook = apply_recat_cache(pipe, config) if config is not None else None
    try:
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            latents = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                           height=height, width=width, output_type="latent",
                           negative_prompt=negative_prompt, **extra).images
        synchronize(device)
        t1 = time.perf_counter()
    finally:
        if hook is not None:
            disable_recat_cache(pipe)
    with torch.inference_mode():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(image, output_type="pil")
    synchronize(device)
    t2 = time.perf_counter()
    # the steps that actually refreshed (a planned or partial run replaces the config's)
    full = hook.run_full_steps if hook is not None else S.no_cache_schedule(steps)
    return latents, images, t1 - t0, t2 - t1, tuple(full)
