"""One batch of text-to-image sampling, timed: the step that generation, validation and benchmarks share.

It sits below both `recat_runtime.api` (generate, profile_cache) and `recat_runtime.cache.select`
(validation of candidate schedules), which both run batches through it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from recat_runtime.cache import schedules as S
from recat_runtime.cache.hook import RecatCacheConfig, apply_recat_cache, disable_recat_cache

__all__ = ["GenerateResult", "denoise_and_decode", "synchronize"]


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


def denoise_and_decode(pipe, prompts: Sequence[str], *, steps: int, guidance: float, seeds: Sequence[int],
                       height=None, width=None, config: RecatCacheConfig | None = None,
                       negative_prompt=None, on_step: Callable[[int, int], None] | None = None,
                       ) -> tuple[torch.Tensor, list, float, float, tuple[int, ...]]:
    """One batch: ``len(prompts) == len(seeds)`` images; returns (latents, images, loop s, decode s, full steps).
    ``on_step(done, steps)`` is called after each denoising step."""
    device = pipe.unet.device
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    extra = {}
    if on_step is not None:
        def step_end(_pipe, i, _t, tensors):
            on_step(i + 1, steps)
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
