"""Write and read the demo model in the ``sd-v1-4.ckpt`` layout (a Lightning-style dict).

The file holds ``state_dict`` (LDM/CompVis key names for the UNet, VAE and CLIP text encoder, plus the
noise-schedule buffers and EMA counters the real checkpoint has), ``global_step`` and ``acqe_configs`` (a JSON
string with the diffusers configs), and loads with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import json
import math

import torch

from acqe_format.model.sd_v1 import diffusers_to_ldm

SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def schedule_buffers(scheduler_config: dict) -> dict[str, torch.Tensor]:
    """LDM's DDPM noise-schedule buffers (float32, as stored in sd-v1-4.ckpt) for a scaled_linear schedule."""
    if scheduler_config.get("beta_schedule") != "scaled_linear":
        raise ValueError(f"only SD v1's scaled_linear schedule is supported, got {scheduler_config.get('beta_schedule')!r}")
    n = int(scheduler_config["num_train_timesteps"])
    betas = torch.linspace(math.sqrt(scheduler_config["beta_start"]), math.sqrt(scheduler_config["beta_end"]), n,
                           dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    bufs = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(), "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(), "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {k: bufs[k].to(torch.float32) for k in SCHEDULE_BUFFERS}


def save_ldm_checkpoint(path: str, unet, vae, text_encoder, configs: dict, global_step: int,
                        ema_decay: float = 0.0, ema_updates: int = 0) -> dict:
    """Write the models as an sd-v1-4-style ``.ckpt`` (fp32) and return the saved dict."""
    def sd(m):
        return {k: v.detach().to(torch.float32).clone().contiguous() for k, v in m.state_dict().items()}

    state = diffusers_to_ldm(sd(unet), sd(vae), sd(text_encoder))
    state = {k: v.contiguous() for k, v in state.items()}
    state.update(schedule_buffers(configs["scheduler"]))
    state["model_ema.decay"] = torch.tensor(float(ema_decay), dtype=torch.float32)
    state["model_ema.num_updates"] = torch.tensor(int(ema_updates), dtype=torch.int32)
    ckpt = {"state_dict": state, "global_step": int(global_step), "acqe_configs": json.dumps(configs, sort_keys=True)}
    torch.save(ckpt, path)
    return ckpt


def load_ldm_checkpoint(path: str) -> tuple[dict, dict]:
    """``(state_dict, configs)`` of a shapes-sd ``.ckpt`` (safe: ``weights_only=True``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "acqe_configs" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an ACQE demo checkpoint (needs 'state_dict' and 'acqe_configs'); "
                         f"found keys {sorted(ckpt)[:8]}")
    return ckpt["state_dict"], json.loads(ckpt["acqe_configs"])


def ldm_to_models(state_dict: dict, configs: dict, dtype: torch.dtype = torch.float32):
    """Rebuild ``(unet, vae, text_encoder)`` from LDM keys with diffusers' own single-file converters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet = UNet2DConditionModel(**configs["unet"])
    unet.load_state_dict(convert_ldm_unet_checkpoint(state_dict, configs["unet"]), strict=True)
    vae = AutoencoderKL(**configs["vae"])
    vae.load_state_dict(convert_ldm_vae_checkpoint(state_dict, configs["vae"]), strict=True)
    text = clip_text_from_ldm(state_dict, configs["text_encoder"])
    models = (unet, vae, text)
    if dtype != torch.float32:
        models = tuple(m.to(dtype) for m in models)
    return tuple(m.eval() for m in models)


def clip_text_from_ldm(state_dict: dict, config: dict, prefix: str | None = None):
    """The ``CLIPTextModel`` whose transformers-named tensors sit under ``prefix`` (default: SD v1's
    ``cond_stage_model.transformer.``; SDXL's first encoder: ``conditioner.embedders.0.transformer.``)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    text_sd = convert_ldm_clip_checkpoint(state_dict, remove_prefix=prefix)
    text_sd = {k: v for k, v in text_sd.items() if not k.endswith("position_ids")}
    target = text.state_dict()
    if not any(k.startswith("text_model.") for k in target):  # transformers >= 5 flattens the names
        text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items()}
    missing, unexpected = text.load_state_dict(text_sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"text encoder keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return text
