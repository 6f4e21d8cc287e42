"""Which architecture a checkpoint is, from its tensor names and shapes, and the configs it implies.

Torch-free; works on ``{name: shape}`` tables. `detect_ldm` sorts every tensor of an LDM (single-file)
checkpoint into exactly one of: a component of the detected architecture, a deliberate drop (with the
reason the file records, e.g. ``model_ema.*``), a known non-model entry kept as it is (SD v1's noise
schedule buffers), or an *unknown group*, which is an error (`UnknownLayoutError`) unless the caller
keeps unknown tensors. A checkpoint that holds only some components of an architecture is refused in
one line naming what is missing: nothing is dropped silently.

`detect_diffusers` does the same for diffusers pipeline folders (names ``<component>.<key>``), where the
configs come with the folder. `infer_configs` derives diffusers configs from LDM shapes when the
checkpoint carries none; what shapes cannot tell (attention heads) follows the rule every Stable
Diffusion generation after v1 uses: 64 channels per head (SD v1: 8 heads).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from acqe_format.errors import AmbiguousLayoutError, UnknownLayoutError
from acqe_format.model import architectures as A
from acqe_format.model import sd_v1
from acqe_format.model.keys import Component, Naming

HEAD_WIDTH = 64                 # channels per attention head in SD 2.x / SDXL UNets and CLIP text towers

# LDM entries that are not part of any component and not an error (kept in the file as they are)
KEPT_NON_MODEL = frozenset(sd_v1.SCHEDULE_BUFFERS) | frozenset(sd_v1.EMA_COUNTERS)

# the UNet's cross-attention width tells the generation apart when no text encoder is present
_CONTEXT_WIDTH = {768: A.SD_V1_FAMILY, 1024: A.SD_V2_V, 2048: A.SDXL_BASE, 1280: A.SDXL_REFINER}

# LDM layouts told apart by their text encoders' prefixes, most specific first
_SIGNATURES = (A.SDXL_BASE, A.SDXL_REFINER, A.SD_V2_V, A.SD_V1_FAMILY)


@dataclass
class Layout:
    """Where every tensor of a checkpoint goes."""

    architecture: A.Architecture
    naming: str
    components: dict[str, str]                                  # component -> prefix
    dropped: dict[str, str] = field(default_factory=dict)       # tensor name -> reason
    kept_unknown: list[str] = field(default_factory=list)       # groups stored as they are (keep_unknown)


def group_of(name: str) -> str:
    """A tensor's group for messages: ``conditioner.embedders.2``, ``cond_stage_model.model``,
    ``model.diffusion_model``, else the first name part."""
    parts = name.split(".")
    if parts[0] == "conditioner" and len(parts) > 3:
        return ".".join(parts[:3])
    if parts[0] in ("cond_stage_model", "model") and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else name


def _summary(names) -> str:
    groups: dict[str, int] = {}
    for n in names:
        g = group_of(n)
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(f"{g}.* ({c} tensor{'s' if c > 1 else ''})" for g, c in sorted(groups.items()))


def _present(prefix: str, names) -> bool:
    return any(n.startswith(prefix) for n in names)


def _openclip_last_block(prefix: str, names) -> int | None:
    blocks = [int(m[1]) for n in names if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", n))]
    return max(blocks) if blocks else None


def _deliberate_drops(arch: A.Architecture, comps: dict[str, str], names) -> dict[str, str]:
    drops = {}
    for n in names:
        if n.startswith("model_ema.") and n not in KEPT_NON_MODEL:
            drops[n] = "EMA copy of the UNet (the stored UNet is the checkpoint's own model weights)"
        elif n.endswith(".logit_scale") and any(n.startswith(comps[c]) for c in arch.openclip if c in comps):
            drops[n] = "OpenCLIP's contrastive temperature: not used to condition the UNet"
    if arch.family == "sd-v2" and Component.TEXT_ENCODER in comps:
        prefix = comps[Component.TEXT_ENCODER]
        last = _openclip_last_block(prefix, names)
        for n in names:
            if last is not None and n.startswith(f"{prefix}transformer.resblocks.{last}."):
                drops[n] = "SD 2.x conditions on OpenCLIP's penultimate layer: its last block never runs"
            elif n == prefix + "text_projection":
                drops[n] = "SD 2.x uses OpenCLIP's hidden states, not its projected embedding"
    return drops


def detect_ldm(shapes: dict[str, tuple], *, keep_unknown: bool = False, prediction_type: str | None = None,
               hint: str | None = None) -> Layout:
    """The layout of an LDM-named checkpoint (see the module doc).

    ``prediction_type`` tells SD 2.x's 512-base (``epsilon``) from 768-v (``v_prediction``), which have the
    same tensors; ``hint`` is a registered architecture name the checkpoint itself states.

    Raises:
        UnknownLayoutError: no LDM UNet, unmatched tensor groups (unless ``keep_unknown``), or only part of
            an architecture's components.
    """
    names = list(shapes)
    if not _present(A.LDM_UNET, names):
        raise UnknownLayoutError(f"no LDM UNet ({A.LDM_UNET}*): the tensor groups {_summary(names)[:300]} match no "
                                 f"known architecture", groups=sorted({group_of(n) for n in names}), keepable=False)
    arch = A.get(hint)
    if arch is None:
        scored = []
        for cand in _SIGNATURES:
            text = [p for c, p in cand.prefixes[Naming.LDM].items() if c not in (Component.UNET, Component.VAE)]
            hits = sum(_present(p, names) for p in text)
            if hits:
                scored.append((hits, -_SIGNATURES.index(cand), cand))
        if scored:
            arch = max(scored, key=lambda s: s[:2])[2]
        else:      # a UNet (and maybe a VAE) alone: its cross-attention width says which generation
            ctx = next((int(s[-1]) for n, s in shapes.items()
                        if n.startswith(A.LDM_UNET) and n.endswith("attn2.to_k.weight") and len(s)), None)
            arch = _CONTEXT_WIDTH.get(ctx, A.SD_V1_FAMILY)
    if arch.family == "sd-v1":
        conv_in = shapes.get(A.LDM_UNET + "input_blocks.0.0.weight")
        if conv_in is not None and len(conv_in) == 4 and int(conv_in[1]) == 9:
            arch = A.SD_V1_INPAINT
        elif arch is A.SD_V1_FAMILY and sd_v1.detect(shapes).exact_sd14:
            arch = A.SD_V1
    if arch.family == "sd-v2":
        if prediction_type is None and hint is None:
            raise AmbiguousLayoutError("an SD 2.x checkpoint: 512-base (epsilon) and 768-v (v-prediction) have the "
                                       "same tensors; say which prediction type it was trained for")
        if prediction_type is not None:
            arch = A.SD_V2_BASE if prediction_type == "epsilon" else A.SD_V2_V
    comps = dict(arch.prefixes[Naming.LDM])
    missing = [c for c, p in comps.items() if not _present(p, names)]
    partial = []
    if missing:
        what = ", ".join(f"{c} ({comps[c]}*)" for c in missing)
        if not keep_unknown:
            raise UnknownLayoutError(f"the checkpoint matches {arch.name} only partly: no {what}",
                                     groups=[comps[c] for c in missing], keepable=True)
        partial = [f"only part of {arch.name}: no {what}"]
        comps = {c: p for c, p in comps.items() if c not in missing}
    drops = _deliberate_drops(arch, comps, names)
    unknown = [n for n in names if n not in drops and n not in KEPT_NON_MODEL
               and A.component_of(n, comps) is None]
    layout = Layout(arch, Naming.LDM, comps, drops)
    if unknown:
        if not keep_unknown:
            raise UnknownLayoutError(f"tensor groups outside {arch.name}'s components: {_summary(unknown)[:400]}",
                                     groups=sorted({group_of(n) for n in unknown}), keepable=True)
        layout.kept_unknown = sorted({group_of(n) for n in unknown})
    layout.kept_unknown += partial
    return layout


def detect_diffusers(components_present: dict[str, dict], *, keep_unknown: bool = False) -> Layout:
    """The layout of a diffusers pipeline folder from its components' configs (component -> config; the
    scheduler's included when the folder has one)."""
    has = set(components_present)
    te, te2 = Component.TEXT_ENCODER in has, Component.TEXT_ENCODER_2 in has
    unet = components_present.get(Component.UNET) or {}
    sched = components_present.get(Component.SCHEDULER) or {}
    if te2 and te:
        arch = A.SDXL_BASE
    elif te2:
        arch = A.SDXL_REFINER
    elif unet.get("cross_attention_dim") == 1024 or unet.get("use_linear_projection"):
        arch = A.SD_V2_V if sched.get("prediction_type") == "v_prediction" else A.SD_V2_BASE
    elif unet.get("in_channels") == 9:
        arch = A.SD_V1_INPAINT
    else:
        arch = A.SD_V1_FAMILY
    comps = dict(arch.prefixes[Naming.DIFFUSERS])
    missing = [c for c in comps if c not in has]
    partial = []
    if missing:
        what = ", ".join(f"{c}/" for c in missing)
        if not keep_unknown:
            raise UnknownLayoutError(f"the folder matches {arch.name} only partly: no {what}", groups=missing,
                                     keepable=True)
        partial = [f"only part of {arch.name}: no {what}"]
        comps = {c: p for c, p in comps.items() if c not in missing}
    return Layout(arch, Naming.DIFFUSERS, comps, kept_unknown=partial)


# --------------------------------------------------------------------------------------------------
# configs implied by LDM shapes
def _heads(channels: int, arch: A.Architecture) -> int:
    return 8 if arch.family == "sd-v1" else max(1, channels // HEAD_WIDTH)


def infer_unet_config(shapes: dict[str, tuple], arch: A.Architecture) -> dict:
    """diffusers UNet2DConditionModel config of an LDM UNet, from its shapes."""
    u = A.LDM_UNET
    keys = {k[len(u):]: tuple(s) for k, s in shapes.items() if k.startswith(u)}
    ib = sorted({int(m[1]) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    down_idx = [i for i in ib if f"input_blocks.{i}.0.op.weight" in keys]
    lpb = (down_idx[0] - 1) if down_idx else len(ib) - 1
    n_blocks = len(down_idx) + 1
    boc, types, tlpb, heads = [], [], [], []
    for b in range(n_blocks):
        idx = 1 + b * (lpb + 1)
        c = int(keys[f"input_blocks.{idx}.0.out_layers.3.weight"][0])
        boc.append(c)
        attn = f"input_blocks.{idx}.1.proj_in.weight" in keys
        types.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
        n_tf = len({m[1] for k in keys if (m := re.match(rf"input_blocks\.{idx}\.1\.transformer_blocks\.(\d+)\.", k))})
        tlpb.append(max(n_tf, 1))
        heads.append(_heads(c, arch))
    up_types = []
    for b in range(n_blocks):
        idx = b * (lpb + 1)
        up_types.append("CrossAttnUpBlock2D" if f"output_blocks.{idx}.1.proj_in.weight" in keys else "UpBlock2D")
    ctx = next((int(s[1]) for k, s in keys.items() if k.endswith("attn2.to_k.weight")), 768)
    proj = next((s for k, s in keys.items() if k.endswith("proj_in.weight")), (0, 0, 1, 1))
    cfg = copy.deepcopy(sd_v1.UNET_CONFIG)
    cfg.update(block_out_channels=boc, layers_per_block=lpb, down_block_types=types, up_block_types=up_types,
               cross_attention_dim=ctx, in_channels=int(keys["input_blocks.0.0.weight"][1]),
               out_channels=int(keys["out.2.weight"][0]), sample_size=arch.image_size // 8)
    if arch.family != "sd-v1":
        cfg.update(attention_head_dim=heads, use_linear_projection=len(proj) == 2,
                   upcast_attention=arch.upcast_attention)
    if any(t > 1 for t in tlpb):
        cfg["transformer_layers_per_block"] = tlpb
    if "label_emb.0.0.weight" in keys:          # SDXL: pooled text embedding + 6 size/crop numbers
        in_dim = int(keys["label_emb.0.0.weight"][1])
        pooled = next((int(s[-1]) for k, s in shapes.items() if k.endswith("text_projection")), 1280)
        cfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=in_dim,
                   # base-style models (both text encoders) get 6 size/crop numbers, the refiner 5 (with its score)
                   addition_time_embed_dim=(in_dim - pooled) // (6 if Component.TEXT_ENCODER in arch.components else 5))
    return cfg


def infer_vae_config(shapes: dict[str, tuple], arch: A.Architecture) -> dict:
    v = A.LDM_VAE + "encoder."
    blocks = sorted({int(m[1]) for k in shapes if (m := re.match(re.escape(v) + r"down\.(\d+)\.", k))})
    boc = [int(shapes[f"{v}down.{b}.block.0.conv2.weight"][0]) for b in blocks]
    lpb = len({m[1] for k in shapes if (m := re.match(re.escape(v) + r"down\.0\.block\.(\d+)\.", k))})
    cfg = copy.deepcopy(sd_v1.VAE_CONFIG)
    cfg.update(block_out_channels=boc, layers_per_block=lpb, down_block_types=["DownEncoderBlock2D"] * len(boc),
               up_block_types=["UpDecoderBlock2D"] * len(boc),
               latent_channels=int(shapes[A.LDM_VAE + "quant_conv.weight"][0]) // 2,
               sample_size=arch.image_size, scaling_factor=arch.vae_scaling_factor)
    if arch.vae_force_upcast:
        cfg["force_upcast"] = True
    return cfg


def infer_clip_config(shapes: dict[str, tuple], prefix: str) -> dict:
    """CLIPTextModel config of a transformers-named CLIP text tower under ``prefix``."""
    t = prefix + "text_model."
    emb = shapes[t + "embeddings.token_embedding.weight"]
    hidden = int(emb[1])
    layers = len({m[1] for k in shapes if (m := re.match(re.escape(t) + r"encoder\.layers\.(\d+)\.", k))})
    cfg = copy.deepcopy(sd_v1.TEXT_ENCODER_CONFIG)
    cfg.update(vocab_size=int(emb[0]), hidden_size=hidden, num_hidden_layers=layers,
               intermediate_size=int(shapes[t + "encoder.layers.0.mlp.fc1.weight"][0]),
               max_position_embeddings=int(shapes[t + "embeddings.position_embedding.weight"][0]),
               num_attention_heads=max(1, hidden // HEAD_WIDTH), projection_dim=hidden)
    return cfg


def infer_openclip_config(shapes: dict[str, tuple], prefix: str, layers_dropped: int, projection: bool) -> dict:
    """CLIPTextModel(WithProjection) config of an OpenCLIP text tower under ``prefix`` (gelu, pad id 1 as
    diffusers' own SD 2.x / SDXL configs say); ``layers_dropped`` blocks at the end are not stored."""
    emb = shapes[prefix + "token_embedding.weight"]
    hidden = int(emb[1])
    layers = len({m[1] for k in shapes if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k))})
    proj = shapes.get(prefix + "text_projection")
    cfg = copy.deepcopy(sd_v1.TEXT_ENCODER_CONFIG)
    cfg.update(vocab_size=int(emb[0]), hidden_size=hidden, num_hidden_layers=layers - layers_dropped,
               intermediate_size=int(shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]),
               max_position_embeddings=int(shapes[prefix + "positional_embedding"][0]),
               num_attention_heads=max(1, hidden // HEAD_WIDTH), hidden_act="gelu",
               projection_dim=int(proj[1]) if proj is not None else hidden)
    if projection:
        cfg["architectures"] = ["CLIPTextModelWithProjection"]
    return cfg


def scheduler_config(arch: A.Architecture) -> dict:
    cfg = copy.deepcopy(sd_v1.SCHEDULER_CONFIG)
    cfg["prediction_type"] = arch.prediction_type
    if arch.family == "sdxl":
        # Stability's SDXL scheduler config keeps clip_sample / set_alpha_to_one false next to Euler's keys:
        # they matter when another sampler is built from it (DDIM's defaults would clip x0 to [-1, 1], which
        # turned the SDXL demo model's images grey)
        cfg.update(_class_name="EulerDiscreteScheduler", timestep_spacing="leading", interpolation_type="linear")
    return cfg


def infer_configs(shapes: dict[str, tuple], layout: Layout) -> dict:
    """Every diffusers config an LDM checkpoint of ``layout`` implies (shapes of the stored tensors;
    ``layout.dropped`` says which were left out)."""
    arch, comps = layout.architecture, layout.components
    kept = {k: s for k, s in shapes.items() if k not in layout.dropped}
    if arch.family == "sd-v1" and arch is not A.SD_V1_INPAINT and sd_v1.detect(shapes).exact_sd14:
        cfg = sd_v1.configs()
    else:
        cfg = {Component.UNET: infer_unet_config(shapes, arch), Component.VAE: infer_vae_config(shapes, arch),
               Component.SCHEDULER: scheduler_config(arch)}
    for comp in (Component.TEXT_ENCODER, Component.TEXT_ENCODER_2):
        if comp not in comps:
            continue
        prefix = comps[comp]
        if comp in arch.openclip:
            dropped_blocks = 1 if arch.family == "sd-v2" else 0
            cfg[comp] = infer_openclip_config(shapes, prefix, dropped_blocks, comp == Component.TEXT_ENCODER_2)
        elif not (arch.family == "sd-v1" and Component.TEXT_ENCODER in cfg):
            cfg[comp] = infer_clip_config(kept, prefix)
    return cfg


# --------------------------------------------------------------------------------------------------
# diffusers -> LDM names (the inverse of what diffusers' single-file loaders do), for stand-ins and tests
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                   "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def openclip_from_transformers(text_sd: dict) -> dict:
    """A transformers CLIPTextModel(WithProjection) state dict (numpy arrays) -> OpenCLIP's names, as SD 2.x
    and SDXL single files store it: q/k/v fused into ``in_proj``, the projection transposed."""
    import numpy as np

    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in text_sd.items()}
    out = {}
    fused: dict[str, dict[str, object]] = {}
    for k, v in sd.items():
        if k == "text_model.embeddings.position_ids":
            continue
        if k == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("text_model.final_layer_norm."):
            out["ln_final." + k.rsplit(".", 1)[1]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = np.ascontiguousarray(np.asarray(v).T)
        else:
            m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", k)
            if not m:
                raise sd_v1.LayoutMappingError(f"CLIP text key {k!r} has no OpenCLIP counterpart")
            block, rest = f"transformer.resblocks.{m[1]}.", m[2]
            q = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if q:
                fused.setdefault(f"{block}attn.in_proj_{q[2]}", {})[q[1]] = v
                continue
            out[block + sd_v1._sub(rest, _OPENCLIP_LAYER, "OpenCLIP layer")] = v
    for k, parts in fused.items():
        out[k] = np.concatenate([np.asarray(parts[c]) for c in "qkv"], axis=0)
    return out


def diffusers_to_ldm(arch: A.Architecture, states: dict[str, dict]) -> dict:
    """diffusers / transformers state dicts per component (numpy arrays) -> one LDM single-file state dict
    of ``arch`` (the names Stability's checkpoints use)."""
    prefixes = arch.prefixes[Naming.LDM]
    base = sd_v1.diffusers_to_ldm(states.get(Component.UNET), states.get(Component.VAE), None)
    out = {}
    for k, v in base.items():
        out[k] = v
    for comp in (Component.TEXT_ENCODER, Component.TEXT_ENCODER_2):
        sd = states.get(comp)
        if sd is None or comp not in prefixes:
            continue
        if comp in arch.openclip:
            mapped = openclip_from_transformers(sd)
        else:
            mapped = {k[len("cond_stage_model.transformer."):]: v
                      for k, v in sd_v1.diffusers_to_ldm(None, None, sd).items()}
        out.update({prefixes[comp] + k: v for k, v in mapped.items()})
    return out


__all__ = ["Layout", "diffusers_to_ldm", "openclip_from_transformers", "detect_ldm", "detect_diffusers", "infer_configs", "group_of", "scheduler_config",
           "KEPT_NON_MODEL"]
