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


# --------------------------------------------------------------------------------------------------
# One tiny model per registered layout (SD 1.x, inpainting, SD 2.x base / v, SDXL base / refiner).
# They follow the conventions a single file's configs are inferred by (32 normalisation groups, 64
# channels per attention head after SD v1, SD v1's 8 heads), so a tiny LDM single file converted without
# configs rebuilds exactly these models.
def _tiny_text(openclip: bool, projection: bool = False) -> dict:
    cfg = {k: v for k, v in sd_v1.TEXT_ENCODER_CONFIG.items() if k not in ("architectures", "torch_dtype")}
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, projection_dim=64,
               hidden_act="gelu" if openclip else "quick_gelu")
    if projection:
        cfg["architectures"] = ["CLIPTextModelWithProjection"]
    return cfg


def tiny_layout_configs(architecture: str) -> dict:
    """diffusers configs (unet, vae, text_encoder[_2], scheduler) of the tiny model of a registered layout."""
    from acqe_format.model import architectures as A
    from acqe_format.model.layouts import scheduler_config

    arch = A.get(architecture)
    if arch is None:
        raise ValueError(f"no tiny model for {architecture!r}")
    unet = {"sample_size": 8, "in_channels": arch.in_channels, "out_channels": 4, "layers_per_block": 1,
            "block_out_channels": [64, 128], "norm_num_groups": 32,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 64,
            "attention_head_dim": 8}
    vae = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 64],
           "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
           "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 16, "scaling_factor": arch.vae_scaling_factor}
    if arch.vae_force_upcast:
        vae["force_upcast"] = True
    cfg = {"unet": unet, "vae": vae, "scheduler": scheduler_config(arch)}
    if arch.family == "sd-v2":
        unet.update(attention_head_dim=[1, 2], use_linear_projection=True, upcast_attention=arch.upcast_attention)
    if arch.family == "sdxl":
        base = arch is A.SDXL_BASE
        unet.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 2],
                    attention_head_dim=[1, 2], use_linear_projection=True, addition_embed_type="text_time",
                    addition_time_embed_dim=8, cross_attention_dim=128 if base else 64,
                    projection_class_embeddings_input_dim=64 + (6 if base else 5) * 8)
    if "text_encoder" in arch.components:
        cfg["text_encoder"] = _tiny_text("text_encoder" in arch.openclip)
    if "text_encoder_2" in arch.components:
        cfg["text_encoder_2"] = _tiny_text(True, projection=True)
    return cfg


def tiny_layout_models(architecture: str, seed: int = 0) -> dict:
    """Random-weight models (eval mode) of `tiny_layout_configs`, by component."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = tiny_layout_configs(architecture)
    torch.manual_seed(seed)
    models = {"unet": UNet2DConditionModel(**cfg["unet"]).eval(), "vae": AutoencoderKL(**cfg["vae"]).eval()}
    for comp in ("text_encoder", "text_encoder_2"):
        if comp in cfg:
            c = {k: v for k, v in cfg[comp].items() if k != "architectures"}
            cls = CLIPTextModelWithProjection if comp == "text_encoder_2" else CLIPTextModel
            models[comp] = cls(CLIPTextConfig(**c)).eval()
    return models


def tiny_layout_pipeline(architecture: str, seed: int = 0, img2img: bool = False):
    """The architecture's diffusers pipeline over `tiny_layout_models` (DDIM on its noise schedule and
    prediction type; tokenizers with its pad tokens), offline."""
    import diffusers
    from diffusers import DDIMScheduler

    from acqe_format.model import architectures as A
    from acqe_format.model.clip_bpe import clip_tokenizer_files
    from acqe_format.model.layouts import scheduler_config
    from recat_runtime.tokenizer import build_clip_tokenizer

    arch = A.get(architecture)
    parts = dict(tiny_layout_models(architecture, seed))
    cfg = {k: v for k, v in scheduler_config(arch).items() if not k.startswith("_")}
    parts["scheduler"] = DDIMScheduler.from_config(cfg)
    for te, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if te in parts:
            parts[tok] = build_clip_tokenizer(clip_tokenizer_files(pad_token=arch.pad_tokens[tok]))
        elif arch.family == "sdxl":
            parts[te], parts[tok] = None, None
    cls = getattr(diffusers, arch.img2img_pipeline if img2img else arch.pipeline)
    if arch.family == "sdxl":
        extra = {"add_watermarker": False}
        if "Img2Img" in cls.__name__:
            extra["requires_aesthetics_score"] = arch is A.SDXL_REFINER
    else:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = cls(**parts, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe
