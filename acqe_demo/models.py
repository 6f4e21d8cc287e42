"""Configs and constructors of the demo model: Stable Diffusion v1's parts, scaled down.

Same block types and arrangement as SD v1 (``CompVis/stable-diffusion-v1-4``): a ``UNet2DConditionModel``
with 4 resolution levels, 2 layers per block, down = 3 x ``CrossAttnDownBlock2D`` + ``DownBlock2D``,
mid = ``UNetMidBlock2DCrossAttn``, up = ``UpBlock2D`` + 3 x ``CrossAttnUpBlock2D``; an ``AutoencoderKL``
(here with downsampling factor 4: 32x32x3 images <-> 8x8x4 latents); a ``CLIPTextModel`` using SD v1's
tokenizer (vocabulary 49408, 77 positions, quick-GELU, causal mask); SD v1's noise schedule.
"""
from __future__ import annotations

import copy

from acqe_format.model import sd_v1
from acqe_format.model.architectures import SHAPES_SD_V1

ARCHITECTURE = SHAPES_SD_V1.name
LATENT_CHANNELS = 4
VAE_FACTOR = 4
TEXT_HIDDEN = 48

UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [32, 32, 48, 48],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 16,
    "norm_eps": 1e-5,
    "cross_attention_dim": TEXT_HIDDEN,
    # diffusers' legacy name: the number of heads per level (SD v1: 8 everywhere).
    "attention_head_dim": [1, 1, 2, 2],
    "use_linear_projection": False,
    "upcast_attention": False,
}

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": LATENT_CHANNELS,
    "norm_num_groups": 16,
    "sample_size": 32,
    "scaling_factor": 1.0,  # set after VAE training to 1 / std of the latents (SD v1: 0.18215)
}

TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "projection_dim": TEXT_HIDDEN,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}

# SD v1's training schedule (scaled_linear 0.00085 .. 0.012, 1000 steps, epsilon prediction).
SCHEDULER_CONFIG = sd_v1.sampler_config("epsilon")


def default_configs() -> dict:
    return {
        "architecture": ARCHITECTURE,
        "unet": copy.deepcopy(UNET_CONFIG),
        "vae": copy.deepcopy(VAE_CONFIG),
        "text_encoder": copy.deepcopy(TEXT_CONFIG),
        "scheduler": copy.deepcopy(SCHEDULER_CONFIG),
    }


def build_models(configs: dict | None = None):
    """Fresh (untrained) ``(unet, vae, text_encoder)`` from ``configs`` (default: `default_configs`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = configs or default_configs()
    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    return unet, vae, text


def ddim_scheduler(configs: dict | None = None):
    from diffusers import DDIMScheduler

    cfg = (configs or default_configs())["scheduler"]
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
            "clip_sample", "set_alpha_to_one", "steps_offset", "trained_betas")
    return DDIMScheduler(**{k: cfg[k] for k in keys})


def pndm_scheduler(configs: dict | None = None):
    from diffusers import PNDMScheduler

    cfg = (configs or default_configs())["scheduler"]
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
            "set_alpha_to_one", "steps_offset", "skip_prk_steps", "trained_betas")
    return PNDMScheduler(**{k: cfg[k] for k in keys})
