"""Load the shipped demo model as a diffusers ``StableDiffusionPipeline``, offline.

Example:
    >>> from acqe_demo.pipeline import load_shapes_pipeline
    >>> pipe = load_shapes_pipeline()
    >>> image = pipe("a red circle in the top left on a white background", num_inference_steps=20,
    ...              guidance_scale=4.0).images[0]   # a 32x32 PIL image

and, with the shipped layout ControlNet (``python -m acqe_demo.train_controlnet --ship``), a pipeline that draws
the objects where a silhouette image puts them:

    >>> from acqe_demo.metrics import eval_scenes
    >>> from acqe_demo.pipeline import controlnet_pipeline, load_shapes_controlnet, silhouette_conditioning
    >>> cpipe = controlnet_pipeline(pipe, load_shapes_controlnet())
    >>> scenes = eval_scenes(4)
    >>> images = cpipe([s.caption for s in scenes], image=silhouette_conditioning(scenes),
    ...                num_inference_steps=20, guidance_scale=4.0).images
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .checkpoint import ldm_to_models, load_ldm_checkpoint
from .dataset import IMAGE_SIZE, render_silhouette

DEFAULT_CKPT = os.path.join(os.path.dirname(__file__), "weights", "shapes-sd.ckpt")
DEFAULT_CONTROLNET = os.path.join(os.path.dirname(__file__), "weights", "shapes-controlnet")
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


def load_shapes_controlnet(path: str = DEFAULT_CONTROLNET, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The layout ControlNet of the demo model (a diffusers ``ControlNetModel`` folder; default: the shipped
    ``acqe_demo/weights/shapes-controlnet``), conditioned on `silhouette_conditioning` images."""
    from diffusers import ControlNetModel

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"no ControlNet folder at {path}; train one with "
                                "`python -m acqe_demo.train_controlnet --ship`")
    return ControlNetModel.from_pretrained(path, torch_dtype=dtype).to(device).eval()


def silhouette_conditioning(scenes, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The ControlNet's conditioning for ``scenes``: their silhouettes (`render_silhouette`) as float32
    [N, 3, size, size] in [0, 1], the range diffusers' ControlNet pipelines pass through unchanged."""
    sil = np.stack([render_silhouette(sc, size) for sc in scenes])
    return torch.from_numpy(sil.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def controlnet_pipeline(pipe, controlnet):
    """A ``StableDiffusionControlNetPipeline`` sharing ``pipe``'s models and scheduler (no copies), plus
    ``controlnet`` (the runtime's own assembly, `recat_runtime.controlnet.controlnet_pipeline`)."""
    from recat_runtime.controlnet import controlnet_pipeline as assemble

    return assemble(pipe, controlnet, "StableDiffusionControlNetPipeline")
