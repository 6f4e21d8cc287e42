"""Small SD-v1-shaped diffusers models for tests and benchmarks (random weights, built offline).

``tiny_*`` keep every structural feature of SD v1 (cross-attention down/up blocks, a plain last down
block and first up block, downsamplers, upsamplers, CLIP text encoder, KL VAE) at a few hundred
thousand parameters. :func:`sd14_unet_config` is SD v1.4's UNet config (from `acqe_format.model.sd_v1`), for speed stand-ins.
"""
from __future__ import annotations

import torch

from acqe_format.model import sd_v1

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}

TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 16,
}

TINY_TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}

# SD v1's noise schedule with epsilon prediction, for any scheduler's ``from_config``
SCHEDULER_CONFIG = sd_v1.sampler_config("epsilon")


def _without_class(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def sd14_unet_config() -> dict:
    """diffusers' UNet config of Stable Diffusion v1.4 (859.5 M parameters): `acqe_format.model.sd_v1`'s."""
    return _without_class(sd_v1.UNET_CONFIG)


def sd14_vae_config() -> dict:
    return _without_class(sd_v1.VAE_CONFIG)


def sd14_text_config() -> dict:
    return {k: v for k, v in sd_v1.TEXT_ENCODER_CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype")}


def tiny_unet(seed: int = 0, config: dict | None = None):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**(config or TINY_UNET_CONFIG)).eval()


def tiny_pipeline(seed: int = 0, scheduler: str = "ddim"):
    """A complete, offline SD-v1-shaped ``StableDiffusionPipeline`` with random weights (64 px images)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from recat_runtime.tokenizer import build_clip_tokenizer

    unet = tiny_unet(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG)).eval()
    sched = DDIMScheduler.from_config(SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
