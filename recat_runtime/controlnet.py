"""ControlNet on a pipeline loaded from a `.acqe` file.

A ControlNet comes as a diffusers folder (``config.json`` and ``diffusion_pytorch_model.safetensors``, as
``ControlNetModel.save_pretrained`` writes it and as published ControlNets ship). It is read offline and from
safetensors only (a pickle is never unpickled), checked against the UNet it will steer before it runs, and
put with the pipeline's own components into the architecture's ControlNet pipeline
(`acqe_format.model.architectures.Architecture.controlnet_pipeline`, or ``controlnet_img2img_pipeline`` for a
run from an initial image).

Caching works on top (`recat_runtime.cache.hook`): a full step passes the ControlNet's residuals to the whole
UNet; a cached step adds those of the shallow skips it runs and drops the rest (their blocks do not run).
"""
from __future__ import annotations

import json
import os

import torch

from recat_runtime.errors import ControlNetError

__all__ = ["load_controlnet", "check_controlnet", "check_controlnet_fits", "check_weights_match_config",
           "controlnet_pipeline",
           "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
# what decides the shapes of the residuals a ControlNet hands the UNet, and what it reads: these must be the
# UNet's own, or the first denoising step fails deep inside diffusers with a shape error (or, for
# addition_embed_type, runs without the conditioning the weights were trained with)
MATCHING_KEYS = ("block_out_channels", "layers_per_block", "cross_attention_dim",
                 "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def _read_config(folder: str) -> dict:
    if not os.path.isdir(folder):
        raise ControlNetError(f"{folder!r} is not a folder: a ControlNet is a diffusers folder with {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            raise ControlNetError(f"{folder!r} has no {name} (a ControlNet is read from a diffusers folder with "
                                  f"{CONFIG_FILE} and {WEIGHTS_FILE}; pickled weights are not read)")
    try:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ControlNetError(f"cannot read {os.path.join(folder, CONFIG_FILE)}: {e}") from None
    if not isinstance(config, dict) or config.get("_class_name", "ControlNetModel") != "ControlNetModel":
        got = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise ControlNetError(f"{folder!r} does not hold a ControlNetModel (its config says {got!r})")
    return config


def check_controlnet_fits(config: dict, unet_config, vae_scale_factor: int) -> None:
    """Raises ControlNetError unless a ControlNet with ``config`` fits the UNet with ``unet_config`` and a VAE
    that downsamples by ``vae_scale_factor``."""
    # a ControlNet sees the latents before an inpainting UNet concatenates the mask and the masked image to
    # them: the latent channels are the UNet's output channels (its input ones too, but for inpainting)
    mine, theirs = config.get("in_channels", 4), unet_config.get("out_channels", unet_config.get("in_channels"))
    if mine != theirs:
        raise ControlNetError(f"the ControlNet was made for other latents: it takes {mine!r} channels, this model's "
                              f"latents have {theirs!r}")
    for key in MATCHING_KEYS:
        mine, theirs = config.get(key), unet_config.get(key)
        if key == "block_out_channels" or isinstance(mine, (list, tuple)):
            mine = None if mine is None else list(mine)
            theirs = None if theirs is None else list(theirs)
        if mine != theirs:
            raise ControlNetError(f"the ControlNet was made for another UNet: its {key} is {mine!r}, this model's "
                                  f"is {theirs!r}")
    # the conditioning image is embedded down to the latent size by len(out_channels) - 1 stride-2 convs
    channels = config.get("conditioning_embedding_out_channels", (16, 32, 96, 256))
    if not isinstance(channels, (list, tuple)) or not channels:
        raise ControlNetError(f"conditioning_embedding_out_channels must be a list, got {channels!r}")
    if 2 ** (len(channels) - 1) != vae_scale_factor:
        raise ControlNetError(f"the ControlNet embeds its image down {2 ** (len(channels) - 1)}x, this model's VAE "
                              f"{vae_scale_factor}x: it was made for another VAE")


def check_weights_match_config(folder: str, config: dict) -> None:
    """Raises ControlNetError unless the safetensors file holds a tensor of the right shape for every
    parameter the config implies. Checked on a skeleton on the meta device and the file's header alone, so a
    config that implies a huge model (e.g. 100 000 conditioning channels: 360 GB) is refused before anything
    of its size is allocated; diffusers would allocate the model first."""
    from diffusers import ControlNetModel
    from safetensors import SafetensorError, safe_open

    try:
        with torch.device("meta"):
            skeleton = ControlNetModel.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, AssertionError) as e:
        raise ControlNetError(f"{os.path.join(folder, CONFIG_FILE)} does not describe a ControlNet: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    path = os.path.join(folder, WEIGHTS_FILE)
    try:
        with safe_open(path, framework="pt") as f:          # the header only: no tensor is read
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ControlNetError(f"cannot read {path}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    for name, shape in expected.items():
        if name not in stored:
            raise ControlNetError(f"{path} has no tensor {name} (its config asks for one of shape {list(shape)})")
        if stored[name] != shape:
            raise ControlNetError(f"{path}: {name} has shape {list(stored[name])}, its config asks for {list(shape)}")


def check_controlnet(folder: str, unet_config, vae_scale_factor: int) -> dict:
    """Everything about the ControlNet in ``folder`` that can be known without reading its weights: a
    ControlNet folder, made for this UNet and VAE (`check_controlnet_fits`), its weights' header matching its
    config (`check_weights_match_config`). Returns its config.

    Raises:
        ControlNetError: any of these fails.
    """
    config = _read_config(folder)
    check_controlnet_fits(config, unet_config, vae_scale_factor)
    check_weights_match_config(folder, config)
    return config


def load_controlnet(folder: str, unet_config, vae_scale_factor: int, *, torch_dtype=torch.float32, device="cpu"):
    """The ``ControlNetModel`` in ``folder``, checked (`check_controlnet`) before its weights are read, then for
    finite weights.

    Raises:
        ControlNetError: not a readable ControlNet folder, one that does not fit, or non-finite weights.
    """
    from diffusers import ControlNetModel

    check_controlnet(folder, unet_config, vae_scale_factor)
    try:
        model = ControlNetModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                torch_dtype=torch_dtype, low_cpu_mem_usage=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ControlNetError(f"cannot load the ControlNet in {folder!r}: {first}") from None
    # a checksum-free folder: NaN or infinite weights would turn every image into noise without an error
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ControlNetError(f"the ControlNet in {folder!r} has non-finite weights in {name}")
    return model.to(device).eval()


def controlnet_pipeline(pipe, controlnet, pipeline_name: str):
    """The diffusers ControlNet pipeline ``pipeline_name`` around ``pipe``'s components and ``controlnet``
    (the components are shared, not copied)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline_name)
    accepted = inspect.signature(cls.__init__).parameters
    parts = {k: v for k, v in pipe.components.items() if k in accepted}
    extra = {k: v for k, v in (("requires_safety_checker", False), ("add_watermarker", False)) if k in accepted}
    if "force_zeros_for_empty_prompt" in accepted:
        extra["force_zeros_for_empty_prompt"] = pipe.config.get("force_zeros_for_empty_prompt", True)
    return cls(**parts, controlnet=controlnet, **extra)

