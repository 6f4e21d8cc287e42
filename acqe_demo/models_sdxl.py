"""The second demo model: Stable Diffusion XL base's parts and conditioning, scaled down to 32x32 images.

Same block arrangement as SDXL base (``stabilityai/stable-diffusion-xl-base-1.0``): a ``UNet2DConditionModel``
with 3 resolution levels, no attention at the outermost one (down = ``DownBlock2D`` + 2 x
``CrossAttnDownBlock2D``, up = 2 x ``CrossAttnUpBlock2D`` + ``UpBlock2D``), deeper transformers at the
innermost level, linear projections, and ``addition_embed_type="text_time"``: the pooled, projected embedding
of the second text encoder plus 6 Fourier-embedded numbers (original size, crop top-left, target size).
Two text encoders over SD's CLIP BPE vocabulary: a ``CLIPTextModel`` (OpenAI CLIP style: quick-GELU, pads
with ``<|endoftext|>``) and a ``CLIPTextModelWithProjection`` (OpenCLIP style: GELU, pads with ``!``); the UNet
reads the concatenation of both encoders' penultimate hidden states, as SDXL does. The VAE is the v1 demo's
(trained there; SDXL's own VAE has SD v1's architecture as well).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from acqe_format.model.architectures import SHAPES_SDXL
from acqe_format.model.layouts import scheduler_config

from .models import TEXT_CONFIG, VAE_CONFIG
from .models import UNET_CONFIG as V1_UNET_CONFIG

ARCHITECTURE = SHAPES_SDXL.name
TEXT_HIDDEN = 32          # first encoder (SDXL: CLIP ViT-L, 768)
TEXT_HIDDEN_2 = 64        # second encoder (SDXL: OpenCLIP bigG, 1280); also its projection (pooled) width
TIME_EMBED = 16           # per size/crop number (SDXL: 256)

# v1's UNet config with SDXL's arrangement and conditioning
UNET_CONFIG = dict(
    V1_UNET_CONFIG,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[32, 48, 64],
    transformer_layers_per_block=[1, 1, 2],     # SDXL: [1, 2, 10]: most transformer depth at the lowest resolution
    cross_attention_dim=TEXT_HIDDEN + TEXT_HIDDEN_2,
    attention_head_dim=[1, 2, 2],               # diffusers' legacy name: heads per level
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_EMBED,
    projection_class_embeddings_input_dim=TEXT_HIDDEN_2 + 6 * TIME_EMBED,
)

TEXT_CONFIG_1 = dict(TEXT_CONFIG, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN, projection_dim=TEXT_HIDDEN,
                     num_attention_heads=2)
# OpenCLIP-style: GELU; the projection is as wide as the tower (what the single-file converter assumes)
TEXT_CONFIG_2 = dict(TEXT_CONFIG, hidden_size=TEXT_HIDDEN_2, intermediate_size=4 * TEXT_HIDDEN_2,
                     projection_dim=TEXT_HIDDEN_2, num_attention_heads=2, hidden_act="gelu",
                     architectures=["CLIPTextModelWithProjection"])

# SDXL's noise schedule is SD v1's (scaled_linear 0.00085 .. 0.012, epsilon); the config SDXL ships
# (Euler, "leading" spacing, steps_offset 1, clip_sample and set_alpha_to_one false), which any diffusers
# scheduler's from_config takes. Without skip_prk_steps, as the shipped file stores it (exported before the
# shared config kept that key; only PNDM reads it).
SCHEDULER_CONFIG = {k: v for k, v in scheduler_config(SHAPES_SDXL).items() if k != "skip_prk_steps"}


def default_configs(scaling_factor: float | None = None) -> dict:
    vae = copy.deepcopy(VAE_CONFIG)
    if scaling_factor is not None:
        vae["scaling_factor"] = scaling_factor
    return {"architecture": ARCHITECTURE, "unet": copy.deepcopy(UNET_CONFIG), "vae": vae,
            "text_encoder": copy.deepcopy(TEXT_CONFIG_1), "text_encoder_2": copy.deepcopy(TEXT_CONFIG_2),
            "scheduler": copy.deepcopy(SCHEDULER_CONFIG)}


def _text_config(cfg: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"})


def build_models(configs: dict | None = None) -> dict:
    """Fresh (untrained) models by component: unet, vae, text_encoder, text_encoder_2."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    configs = configs or default_configs()
    return {"unet": UNet2DConditionModel(**configs["unet"]), "vae": AutoencoderKL(**configs["vae"]),
            "text_encoder": CLIPTextModel(_text_config(configs["text_encoder"])),
            "text_encoder_2": CLIPTextModelWithProjection(_text_config(configs["text_encoder_2"]))}


def tokenizers():
    """SD's CLIP tokenizer twice: padding with ``<|endoftext|>`` (first encoder) and with ``!`` (second)."""
    from acqe_format.model.clip_bpe import clip_tokenizer_files
    from recat_runtime.tokenizer import build_clip_tokenizer

    return (build_clip_tokenizer(clip_tokenizer_files(pad_token=SHAPES_SDXL.pad_tokens["tokenizer"])),
            build_clip_tokenizer(clip_tokenizer_files(pad_token=SHAPES_SDXL.pad_tokens["tokenizer_2"])))


def encode_prompts(text1, text2, tok1, tok2, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds [N, 77, 96], pooled [N, 64])`` as ``StableDiffusionXLPipeline.encode_prompt`` makes them:
    both encoders' penultimate hidden states side by side, and the second encoder's projected EOS state."""
    def ids(tok):
        return tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    h1 = text1(ids(tok1), output_hidden_states=True).hidden_states[-2]
    out2 = text2(ids(tok2), output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds


def time_ids(original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]) -> list[int]:
    """SDXL's 6 micro-conditioning numbers, in the pipeline's order."""
    return [*original, *crop, *target]


def micro_condition(imgs: np.ndarray, rng: np.random.Generator, size: int = 32, p_low: float = 0.2,
                    p_crop: float = 0.2) -> tuple[np.ndarray, torch.Tensor]:
    """SDXL's size and crop conditioning on the shapes data: uint8 ``[N, H, W, 3]`` -> (images, time ids [N, 6]).

    A fraction ``p_low`` of the images becomes "low-resolution originals" (downsampled to 16 or 24 px and
    upsampled back: blurry) with that original size; a fraction ``p_crop`` becomes crops of a 40 px original
    (edge-padded by 4 px on each side) at a random top-left offset. The rest, and what the pipeline asks for by default at
    32x32, is (32, 32, 0, 0, 32, 32): the model learns that this condition means sharp, uncropped scenes.
    """
    import torch.nn.functional as F

    out = imgs.copy()
    ids = []
    for i in range(len(imgs)):
        u = rng.random()
        if u < p_low:
            s = int(rng.choice([16, 24]))
            x = torch.from_numpy(imgs[i]).permute(2, 0, 1)[None].float()
            x = F.interpolate(F.interpolate(x, size=(s, s), mode="area"), size=(size, size), mode="bilinear",
                              align_corners=False)
            out[i] = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
            ids.append(time_ids((s, s), (0, 0), (size, size)))
        elif u < p_low + p_crop:
            pad = 4
            big = np.pad(imgs[i], ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            top, left = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
            out[i] = big[top:top + size, left:left + size]
            ids.append(time_ids((size + 2 * pad, size + 2 * pad), (top, left), (size, size)))
        else:
            ids.append(time_ids((size, size), (0, 0), (size, size)))
    return out, torch.tensor(ids, dtype=torch.float32)
