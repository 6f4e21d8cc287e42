"""Stable Diffusion v1.x: the CompVis/LDM checkpoint layout, its diffusers configs, and name mapping.

Pure Python (no torch import): the mapping works on any tensor-like object with `.shape` and
`.reshape` (torch tensors or numpy arrays).

- `UNET_CONFIG`, `VAE_CONFIG`, `TEXT_ENCODER_CONFIG`, `SCHEDULER_CONFIG`: the diffusers configs of
  SD v1.4 (as in the `CompVis/stable-diffusion-v1-4` repository), as constants.
- `PREFIXES`: component name -> LDM key prefix.
- `diffusers_to_ldm(unet_sd, vae_sd, text_sd)`: diffusers state dicts -> `sd-v1-4.ckpt` key names.
  Generic over block counts, channel widths and layers per block (a scaled-down SD v1 UNet maps too).
- `diffusers_shapes(...)` / `ldm_shapes(...)`: the key -> shape table a config implies, computed without
  instantiating a model (used for layout detection and by the full-size stand-in generator).
- `detect(shapes)`: recognise an SD v1 LDM state dict from its key names and shapes.

Example:
    >>> from acqe_format.model import sd_v1
    >>> shapes = sd_v1.ldm_shapes()
    >>> sum(prod(s) for k, s in shapes.items() if not k.endswith("position_ids"))  # doctest: +SKIP
    1066235307
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from math import prod

from acqe_format.model.architectures import SD_V1, SD_V1_FAMILY, SD_V1_PREFIXES, component_of
from acqe_format.model.keys import Naming

ARCHITECTURE = SD_V1.name

PREFIXES = SD_V1_PREFIXES[Naming.LDM]

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

TEXT_ENCODER_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}

# SD v1's training noise schedule: every sampler of an SD v1-family model is configured with it.
NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
}

# The repository's scheduler/scheduler_config.json: PNDM (SD v1's default sampler) on that schedule.
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    **NOISE_SCHEDULE,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def sampler_config(prediction_type: str = "epsilon") -> dict:
    """SD v1's scheduler config without the class name, with an explicit ``prediction_type``: what any
    diffusers scheduler's ``from_config`` takes for an SD v1-family model."""
    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}
    cfg["prediction_type"] = prediction_type
    return cfg


# Non-model buffers of the LatentDiffusion Lightning module (1-D, num_timesteps long) in sd-v1-4.ckpt.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)
EMA_COUNTERS = ("model_ema.decay", "model_ema.num_updates")


def configs() -> dict:
    """Deep copies of the SD v1.4 diffusers configs, keyed as in the `.acqe` metadata `configs`."""
    return copy.deepcopy({"unet": UNET_CONFIG, "vae": VAE_CONFIG, "text_encoder": TEXT_ENCODER_CONFIG,
                          "scheduler": SCHEDULER_CONFIG})


class LayoutMappingError(ValueError):
    """A key does not fit the SD v1 layout."""


# --------------------------------------------------------------------------------------------------
# diffusers -> LDM name mapping
# --------------------------------------------------------------------------------------------------
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sub(rest: str, table: dict[str, str], what: str) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise LayoutMappingError(f"unexpected {what} key part {rest!r}")


def unet_structure(keys) -> tuple[int, set[int], int]:
    """(layers_per_block, up blocks with attentions, number of down blocks) from diffusers UNet keys."""
    lpb, n_down, up_attn = 0, 0, set()
    for k in keys:
        m = re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", k)
        if m:
            n_down = max(n_down, int(m[1]) + 1)
            lpb = max(lpb, int(m[2]) + 1)
        m = re.match(r"up_blocks\.(\d+)\.attentions\.", k)
        if m:
            up_attn.add(int(m[1]))
    if lpb == 0:
        raise LayoutMappingError("no down_blocks.*.resnets.* keys: not an SD v1 UNet state dict")
    return lpb, up_attn, n_down


def unet_key_to_ldm(key: str, lpb: int, up_attn: set[int]) -> str:
    """One diffusers UNet2DConditionModel key -> its LDM key (without the `model.diffusion_model.` prefix)."""
    fixed = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             # SDXL's pooled-text + size/crop embedding (LDM's `label_emb`)
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + i * (lpb + 1) + j
        if kind == "resnets":
            return f"input_blocks.{idx}.0.{_sub(rest, _UNET_RESNET, 'resnet')}"
        return f"input_blocks.{idx}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    m = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"middle_block.{2 * int(m[1])}.{_sub(m[2], _UNET_RESNET, 'resnet')}"
    m = re.match(r"mid_block\.attentions\.0\.(.*)", key)
    if m:
        return f"middle_block.1.{m[1]}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = i * (lpb + 1) + j
        if kind == "resnets":
            return f"output_blocks.{idx}.0.{_sub(rest, _UNET_RESNET, 'resnet')}"
        return f"output_blocks.{idx}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        i = int(m[1])
        return f"output_blocks.{i * (lpb + 1) + lpb}.{2 if i in up_attn else 1}.conv.{m[2]}"
    raise LayoutMappingError(f"diffusers UNet key {key!r} has no SD v1 LDM counterpart")


def vae_key_to_ldm(key: str, n_up: int) -> str:
    """One diffusers AutoencoderKL key -> its LDM key (without the `first_stage_model.` prefix)."""
    for old, new in (("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")):
        if key.startswith(old):
            return new + key[len(old):]
    if re.match(r"(encoder|decoder)\.(conv_in|conv_out)\.|(post_)?quant_conv\.", key):
        return key
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{_sub(m[3], _VAE_RESNET, 'resnet')}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_sub(m[3], _VAE_RESNET, 'resnet')}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_sub(m[3], _VAE_RESNET, 'resnet')}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key)
    if m:
        return f"{m[1]}.mid.attn_1.{_sub(m[2], _VAE_ATTN, 'attention')}"
    raise LayoutMappingError(f"diffusers VAE key {key!r} has no SD v1 LDM counterpart")


def _is_vae_attn_matrix(ldm_key: str) -> bool:
    return bool(re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key))


def diffusers_to_ldm(unet_sd: dict | None = None, vae_sd: dict | None = None, text_sd: dict | None = None) -> dict:
    """Map diffusers state dicts (UNet2DConditionModel, AutoencoderKL, CLIPTextModel) to LDM key names.

    Returns a new dict with the `sd-v1-4.ckpt` names (`model.diffusion_model.*`, `first_stage_model.*`,
    `cond_stage_model.transformer.text_model.*`). Tensors are not copied, except the VAE mid-block
    attention matrices, which become 1x1 conv kernels ([C, C] -> [C, C, 1, 1]) as in LDM. When the
    text encoder state dict lacks `text_model.embeddings.position_ids` (recent transformers make it a
    non-persistent buffer), an int64 [1, max_positions] arange is added, as the real checkpoint has it.

    Raises:
        LayoutMappingError: a key has no SD v1 counterpart (another architecture).
    """
    out: dict = {}
    if unet_sd:
        lpb, up_attn, _ = unet_structure(unet_sd.keys())
        for k, v in unet_sd.items():
            out[PREFIXES["unet"] + unet_key_to_ldm(k, lpb, up_attn)] = v
    if vae_sd:
        n_up = 1 + max((int(m[1]) for k in vae_sd if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))), default=-1)
        for k, v in vae_sd.items():
            lk = vae_key_to_ldm(k, n_up)
            if _is_vae_attn_matrix(lk) and len(v.shape) == 2:
                v = v.reshape(tuple(v.shape) + (1, 1))
            out[PREFIXES["vae"] + lk] = v
    if text_sd:
        # transformers >= 5 drops the `text_model.` level from CLIPTextModel state dicts; LDM keeps it.
        items = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in text_sd.items()}
        pos_key = "text_model.embeddings.position_ids"
        emb_key = "text_model.embeddings.position_embedding.weight"
        if pos_key not in items and emb_key in items:
            emb = items[emb_key]
            n = int(emb.shape[0])
            if hasattr(emb, "new_tensor"):  # torch, without importing it here
                ids = emb.new_tensor([list(range(n))]).long()
            else:
                import numpy as np
                ids = np.arange(n, dtype=np.int64)[None]
            items = {pos_key: ids, **items}
        for k, v in items.items():
            out[PREFIXES["text_encoder"] + k] = v
    return out


# --------------------------------------------------------------------------------------------------
# Shapes implied by a config (no model instantiation)
# --------------------------------------------------------------------------------------------------
def _resnet(p: dict, pre: str, cin: int, cout: int, temb: int | None) -> None:
    p[pre + "norm1.weight"] = (cin,); p[pre + "norm1.bias"] = (cin,)
    p[pre + "conv1.weight"] = (cout, cin, 3, 3); p[pre + "conv1.bias"] = (cout,)
    if temb:
        p[pre + "time_emb_proj.weight"] = (cout, temb); p[pre + "time_emb_proj.bias"] = (cout,)
    p[pre + "norm2.weight"] = (cout,); p[pre + "norm2.bias"] = (cout,)
    p[pre + "conv2.weight"] = (cout, cout, 3, 3); p[pre + "conv2.bias"] = (cout,)
    if cin != cout:
        p[pre + "conv_shortcut.weight"] = (cout, cin, 1, 1); p[pre + "conv_shortcut.bias"] = (cout,)


def _transformer(p: dict, pre: str, c: int, ctx: int) -> None:
    p[pre + "norm.weight"] = (c,); p[pre + "norm.bias"] = (c,)
    p[pre + "proj_in.weight"] = (c, c, 1, 1); p[pre + "proj_in.bias"] = (c,)
    b = pre + "transformer_blocks.0."
    for a, kv in (("attn1", c), ("attn2", ctx)):
        p[f"{b}{a}.to_q.weight"] = (c, c)
        p[f"{b}{a}.to_k.weight"] = (c, kv)
        p[f"{b}{a}.to_v.weight"] = (c, kv)
        p[f"{b}{a}.to_out.0.weight"] = (c, c); p[f"{b}{a}.to_out.0.bias"] = (c,)
    for n in ("norm1", "norm2", "norm3"):
        p[f"{b}{n}.weight"] = (c,); p[f"{b}{n}.bias"] = (c,)
    p[b + "ff.net.0.proj.weight"] = (8 * c, c); p[b + "ff.net.0.proj.bias"] = (8 * c,)
    p[b + "ff.net.2.weight"] = (c, 4 * c); p[b + "ff.net.2.bias"] = (c,)
    p[pre + "proj_out.weight"] = (c, c, 1, 1); p[pre + "proj_out.bias"] = (c,)


def _sorted_like_torch(p: dict) -> dict:
    """Order keys as a torch state_dict would (module registration order) for readability."""
    return p


def diffusers_unet_shapes(cfg: dict | None = None) -> dict[str, tuple]:
    """Parameter shapes of a diffusers UNet2DConditionModel with an SD v1 block arrangement."""
    cfg = cfg or UNET_CONFIG
    boc, lpb = list(cfg["block_out_channels"]), int(cfg["layers_per_block"])
    ctx, c0 = int(cfg["cross_attention_dim"]), boc[0]
    temb = 4 * c0
    p: dict[str, tuple] = {}
    p["conv_in.weight"] = (c0, cfg["in_channels"], 3, 3); p["conv_in.bias"] = (c0,)
    p["time_embedding.linear_1.weight"] = (temb, c0); p["time_embedding.linear_1.bias"] = (temb,)
    p["time_embedding.linear_2.weight"] = (temb, temb); p["time_embedding.linear_2.bias"] = (temb,)
    cout = c0
    for i, kind in enumerate(cfg["down_block_types"]):
        cin, cout = cout, boc[i]
        for j in range(lpb):
            _resnet(p, f"down_blocks.{i}.resnets.{j}.", cin if j == 0 else cout, cout, temb)
        if "CrossAttn" in kind:
            for j in range(lpb):
                _transformer(p, f"down_blocks.{i}.attentions.{j}.", cout, ctx)
        if i < len(boc) - 1:
            p[f"down_blocks.{i}.downsamplers.0.conv.weight"] = (cout, cout, 3, 3)
            p[f"down_blocks.{i}.downsamplers.0.conv.bias"] = (cout,)
    cm = boc[-1]
    _transformer(p, "mid_block.attentions.0.", cm, ctx)
    _resnet(p, "mid_block.resnets.0.", cm, cm, temb)
    _resnet(p, "mid_block.resnets.1.", cm, cm, temb)
    rev = boc[::-1]
    prev = rev[0]
    for i, kind in enumerate(cfg["up_block_types"]):
        out = rev[i]
        inp = rev[min(i + 1, len(rev) - 1)]
        for j in range(lpb + 1):
            skip = inp if j == lpb else out
            rin = prev if j == 0 else out
            _resnet(p, f"up_blocks.{i}.resnets.{j}.", rin + skip, out, temb)
        if "CrossAttn" in kind:
            for j in range(lpb + 1):
                _transformer(p, f"up_blocks.{i}.attentions.{j}.", out, ctx)
        if i < len(rev) - 1:
            p[f"up_blocks.{i}.upsamplers.0.conv.weight"] = (out, out, 3, 3)
            p[f"up_blocks.{i}.upsamplers.0.conv.bias"] = (out,)
        prev = out
    p["conv_norm_out.weight"] = (c0,); p["conv_norm_out.bias"] = (c0,)
    p["conv_out.weight"] = (cfg["out_channels"], c0, 3, 3); p["conv_out.bias"] = (cfg["out_channels"],)
    return p


def diffusers_vae_shapes(cfg: dict | None = None) -> dict[str, tuple]:
    """Parameter shapes of a diffusers AutoencoderKL (SD v1 arrangement)."""
    cfg = cfg or VAE_CONFIG
    boc, lpb, lat = list(cfg["block_out_channels"]), int(cfg["layers_per_block"]), int(cfg["latent_channels"])
    p: dict[str, tuple] = {}

    def mid(pre: str, c: int) -> None:
        _resnet(p, pre + "mid_block.resnets.0.", c, c, None)
        a = pre + "mid_block.attentions.0."
        p[a + "group_norm.weight"] = (c,); p[a + "group_norm.bias"] = (c,)
        for n in ("to_q", "to_k", "to_v", "to_out.0"):
            p[f"{a}{n}.weight"] = (c, c); p[f"{a}{n}.bias"] = (c,)
        _resnet(p, pre + "mid_block.resnets.1.", c, c, None)

    p["encoder.conv_in.weight"] = (boc[0], cfg["in_channels"], 3, 3); p["encoder.conv_in.bias"] = (boc[0],)
    cout = boc[0]
    for i in range(len(cfg["down_block_types"])):
        cin, cout = cout, boc[i]
        for j in range(lpb):
            _resnet(p, f"encoder.down_blocks.{i}.resnets.{j}.", cin if j == 0 else cout, cout, None)
        if i < len(boc) - 1:
            p[f"encoder.down_blocks.{i}.downsamplers.0.conv.weight"] = (cout, cout, 3, 3)
            p[f"encoder.down_blocks.{i}.downsamplers.0.conv.bias"] = (cout,)
    mid("encoder.", boc[-1])
    p["encoder.conv_norm_out.weight"] = (boc[-1],); p["encoder.conv_norm_out.bias"] = (boc[-1],)
    p["encoder.conv_out.weight"] = (2 * lat, boc[-1], 3, 3); p["encoder.conv_out.bias"] = (2 * lat,)
    p["decoder.conv_in.weight"] = (boc[-1], lat, 3, 3); p["decoder.conv_in.bias"] = (boc[-1],)
    mid("decoder.", boc[-1])
    rev = boc[::-1]
    prev = rev[0]
    for i in range(len(cfg["up_block_types"])):
        out = rev[i]
        for j in range(lpb + 1):
            _resnet(p, f"decoder.up_blocks.{i}.resnets.{j}.", prev if j == 0 else out, out, None)
        if i < len(rev) - 1:
            p[f"decoder.up_blocks.{i}.upsamplers.0.conv.weight"] = (out, out, 3, 3)
            p[f"decoder.up_blocks.{i}.upsamplers.0.conv.bias"] = (out,)
        prev = out
    p["decoder.conv_norm_out.weight"] = (boc[0],); p["decoder.conv_norm_out.bias"] = (boc[0],)
    p["decoder.conv_out.weight"] = (cfg["out_channels"], boc[0], 3, 3); p["decoder.conv_out.bias"] = (cfg["out_channels"],)
    p["quant_conv.weight"] = (2 * lat, 2 * lat, 1, 1); p["quant_conv.bias"] = (2 * lat,)
    p["post_quant_conv.weight"] = (lat, lat, 1, 1); p["post_quant_conv.bias"] = (lat,)
    return p


def text_encoder_shapes(cfg: dict | None = None, position_ids: bool = True) -> dict[str, tuple]:
    """Shapes of a transformers CLIPTextModel state dict (`text_model.*`), position_ids optional."""
    cfg = cfg or TEXT_ENCODER_CONFIG
    h, n, inter = int(cfg["hidden_size"]), int(cfg["max_position_embeddings"]), int(cfg["intermediate_size"])
    p: dict[str, tuple] = {}
    e = "text_model.embeddings."
    if position_ids:
        p[e + "position_ids"] = (1, n)
    p[e + "token_embedding.weight"] = (int(cfg["vocab_size"]), h)
    p[e + "position_embedding.weight"] = (n, h)
    for layer in range(int(cfg["num_hidden_layers"])):
        b = f"text_model.encoder.layers.{layer}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            p[f"{b}self_attn.{proj}.weight"] = (h, h); p[f"{b}self_attn.{proj}.bias"] = (h,)
        p[b + "layer_norm1.weight"] = (h,); p[b + "layer_norm1.bias"] = (h,)
        p[b + "mlp.fc1.weight"] = (inter, h); p[b + "mlp.fc1.bias"] = (inter,)
        p[b + "mlp.fc2.weight"] = (h, inter); p[b + "mlp.fc2.bias"] = (h,)
        p[b + "layer_norm2.weight"] = (h,); p[b + "layer_norm2.bias"] = (h,)
    p["text_model.final_layer_norm.weight"] = (h,); p["text_model.final_layer_norm.bias"] = (h,)
    return p


class _ShapeOnly:
    """Stand-in tensor for mapping names and shapes through `diffusers_to_ldm` (``origin``: where it came from)."""

    def __init__(self, shape, origin=None):
        self.shape = tuple(shape)
        self.origin = origin

    def reshape(self, shape):
        return _ShapeOnly(shape, self.origin)


def ldm_shapes(unet_cfg: dict | None = None, vae_cfg: dict | None = None, text_cfg: dict | None = None) -> dict[str, tuple]:
    """LDM key -> shape of every model tensor an SD v1 checkpoint with these configs holds.

    With the defaults this is exactly the model part of `sd-v1-4.ckpt` (UNet + VAE + CLIP text encoder,
    1,066,235,307 parameters, plus the int64 `position_ids` buffer).
    """
    wrap = lambda d: {k: _ShapeOnly(s) for k, s in d.items()}  # noqa: E731
    m = diffusers_to_ldm(wrap(diffusers_unet_shapes(unet_cfg)), wrap(diffusers_vae_shapes(vae_cfg)),
                         wrap(text_encoder_shapes(text_cfg)))
    return {k: v.shape for k, v in m.items()}


def ldm_names(components: dict[str, dict[str, tuple]]) -> dict[str, tuple[str, str, tuple]]:
    """LDM key -> (component, diffusers key, LDM shape), for diffusers-named tensors given per component
    (``{"unet": {key: shape}, "vae": ..., "text_encoder": ...}``, keys without the component prefix).

    The names and shapes `diffusers_to_ldm` gives the tensors, without touching them (the VAE attention
    matrices become [C, C, 1, 1]); the text encoder's ``position_ids`` it would add is left out.

    Raises:
        LayoutMappingError: a key has no SD v1 counterpart.
    """
    def wrap(component):
        shapes = components.get(component)
        return {k: _ShapeOnly(s, (component, k)) for k, s in shapes.items()} if shapes else None

    mapped = diffusers_to_ldm(wrap("unet"), wrap("vae"), wrap("text_encoder"))
    return {k: (*v.origin, v.shape) for k, v in mapped.items() if isinstance(v, _ShapeOnly)}


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------
@dataclass
class Detection:
    """What `detect` found in a flat key -> shape table."""

    architecture: str | None                 # "stable-diffusion-v1" when every SD v1.4 tensor matches
    naming: str                              # "ldm" or "flat"
    components: dict[str, str] = field(default_factory=dict)   # component -> key prefix (present ones)
    exact_sd14: bool = False                 # all model keys and shapes equal sd-v1-4.ckpt
    notes: list[str] = field(default_factory=list)


def detect(shapes: dict[str, tuple]) -> Detection:
    """Recognise an SD v1 LDM state dict from its key names and shapes.

    `naming` is "ldm" when at least one of the LDM component prefixes holds tensors; `exact_sd14` is set
    when every SD v1.4 model tensor is present with its shape (extra non-model entries are allowed).
    """
    comps = {c: p for c, p in PREFIXES.items() if any(k.startswith(p) for k in shapes)}
    if not comps:
        return Detection(None, "flat")
    expected = ldm_shapes()
    missing = [k for k in expected if k not in shapes]
    wrong = [k for k in expected if k in shapes and tuple(shapes[k]) != tuple(expected[k])]
    extra = [k for k in shapes if component_of(k, comps) and k not in expected]
    det = Detection(None, "ldm", comps)
    if not missing and not wrong and not extra:
        det.architecture, det.exact_sd14 = ARCHITECTURE, True
    else:
        det.notes.append(f"{len(missing)} SD v1.4 tensors missing, {len(wrong)} with other shapes, "
                         f"{len(extra)} unknown")
        # A (scaled-down) SD v1 family member: same UNet entry points.
        u = PREFIXES["unet"]
        if u + "input_blocks.0.0.weight" in shapes and u + "out.2.weight" in shapes:
            det.architecture = SD_V1_FAMILY.name
    return det


def infer_unet_config(shapes: dict[str, tuple]) -> dict:
    """Best-effort diffusers UNet config of an SD v1-family LDM UNet from its shapes (heads default 8)."""
    u = PREFIXES["unet"]
    keys = [k[len(u):] for k in shapes if k.startswith(u)]
    ib = sorted({int(m[1]) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    # resnet blocks carry in_layers; downsamplers carry op
    down_idx = [i for i in ib if f"input_blocks.{i}.0.op.weight" in keys]
    lpb = (down_idx[0] - 1) if down_idx else len(ib) - 1
    n_blocks = len(down_idx) + 1
    boc, types = [], []
    for b in range(n_blocks):
        idx = 1 + b * (lpb + 1)
        boc.append(int(shapes[f"{u}input_blocks.{idx}.0.out_layers.3.weight"][0]))
        types.append("CrossAttnDownBlock2D" if f"input_blocks.{idx}.1.proj_in.weight" in keys else "DownBlock2D")
    up_types = []
    for b in range(n_blocks):
        idx = b * (lpb + 1)
        up_types.append("CrossAttnUpBlock2D" if f"output_blocks.{idx}.1.proj_in.weight" in keys else "UpBlock2D")
    ctx = next((int(shapes[u + k][1]) for k in keys if k.endswith("attn2.to_k.weight")), 768)
    cfg = copy.deepcopy(UNET_CONFIG)
    cfg.update(block_out_channels=boc, layers_per_block=lpb, down_block_types=types, up_block_types=up_types,
               cross_attention_dim=ctx, in_channels=int(shapes[u + "input_blocks.0.0.weight"][1]),
               out_channels=int(shapes[u + "out.2.weight"][0]))
    return cfg


def n_params(shapes: dict[str, tuple]) -> int:
    return sum(prod(s) for s in shapes.values())
