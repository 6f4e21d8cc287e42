"""Load the shipped demo model as a diffusers ``StableDiffusionPipeline``, offline.

Example:
    >>> from acqe_demo.pipeline import load_shapes_pipeline
    >>> pipe = load_shapes_pipeline()
    >>> image = pipe("a red circle in the top left on a white background", num_inference_steps=20,
    ...              guidance_scale=4.0).images[0]   # a 64x64 PIL image
"""
from __future__ import annotations

import os

import torch

from .checkpoint import ldm_to_models, load_ldm_checkpoint

DEFAULT_CKPT = os.path.join(os.path.dirname(__file__), "weights", "shapes-sd.ckpt")
DEFAULT_GUIDANCE = 4.0


def load_shapes_pipeline(ckpt_path: str = DEFAULT_CKPT, device: str = "cpu", dtype: torch.dtype = torch.float32,
                         scheduler: str = "ddim"):
    """Build the pipeline from an sd-v1-4-layout ``.ckpt`` with its stored configs and diffusers' converters.

    Args:
        ckpt_path: the checkpoint (default: the shipped ``acqe_demo/weights/shapes-sd.ckpt``).
        device, dtype: where and in which precision the models run.
        scheduler: ``"ddim"`` (default) or ``"pndm"`` (SD v1's default sampler), both from the stored config.

    Returns:
        ``StableDiffusionPipeline`` (safety checker and feature extractor off) with SD v1's CLIP tokenizer.
    """
    from diffusers import StableDiffusionPipeline

    from recat_runtime.tokenizer import build_clip_tokenizer

    from .models import ddim_scheduler, pndm_scheduler

    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"no demo checkpoint at {ckpt_path}; train one with `python -m acqe_demo.train --ship`")
    state, configs = load_ldm_checkpoint(ckpt_path)
    unet, vae, text = ldm_to_models(state, configs, dtype=dtype)
    if scheduler not in ("ddim", "pndm"):
        raise ValueError(f"scheduler must be 'ddim' or 'pndm', got {scheduler!r}")
    sched = ddim_scheduler(configs) if scheduler == "ddim" else pndm_scheduler(configs)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=build_clip_tokenizer(), unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(device)
