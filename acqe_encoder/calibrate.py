"""`--calibrate`: data-driven sensitivity of each UNet weight tensor (torch + diffusers, imported lazily).

The UNet is rebuilt from the checkpoint (diffusers config + diffusers' own LDM converter for LDM naming)
and run on CPU on a few noisy latents at several timesteps (random text-like context; SDXL's UNets also get
a random pooled text embedding and a plain size/crop conditioning). Forward hooks on
every Conv2d / Linear record the input energy per input channel E[x_j^2] and the output energy
E||W x||^2 (bias excluded). For a weight error dW that is spread evenly over the tensor (what the
quantiser produces), E||dW x||^2 ~= SSE / numel * rows * sum_j E[x_j^2] (j over input channels and
kernel taps), so the layer's relative output error is

    NSR_out = SSE * rows * sum_j E[x_j^2] / (numel * E||W x||^2) = s * SSE / sum(W^2),
    s = sum(W^2) * rows * sum_j E[x_j^2] / (numel * E||W x||^2).

The allocator then minimises sum_l numel_l * s_l * SSE_l / sum(W_l^2) (instead of s_l = 1): layers
whose outputs are small compared with their weight and input energy (cancellation) get more bits.
"""
from __future__ import annotations

import numpy as np

from acqe_format.errors import SourceError
from acqe_format.model.architectures import LDM_UNET
from acqe_format.model.keys import Component, Naming


def _unet_state_dict(src, naming: str, unet_cfg: dict):
    """The UNet's diffusers state dict (float32) and, per diffusers key, the source tensor's name."""
    import torch
    if naming == Naming.LDM:
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
        ldm = {e.name: torch.from_numpy(np.array(e.load(), dtype=np.float32)) for e in src.entries
               if e.name.startswith(LDM_UNET) and e.is_float}
        # diffusers' converter only renames (the tensors it returns are the ones it was given), so a
        # converted tensor's storage names its source tensor: one rule for every LDM UNet layout (SD 1.x,
        # 2.x, SDXL) without a key table of our own
        by_storage = {t.data_ptr(): name for name, t in ldm.items()}
        sd = convert_ldm_unet_checkpoint(ldm, unet_cfg)
        to_src = {k: by_storage[t.data_ptr()] for k, t in sd.items() if t.data_ptr() in by_storage}
        return sd, to_src
    if naming == Naming.DIFFUSERS:
        sd = {e.name[5:]: torch.from_numpy(np.array(e.load(), dtype=np.float32)) for e in src.entries
              if e.name.startswith("unet.") and e.is_float}
        return sd, {k: "unet." + k for k in sd}
    return None, None


def _conditioning(cfg: dict, configs: dict, batch: int, size: int, g):
    """``(encoder_hidden_states, added_cond_kwargs)`` for a calibration forward pass: a random text-like
    context and, for SDXL's ``text_time`` UNets, a random pooled text embedding with the size/crop (base)
    or size/crop/aesthetic-score (refiner) conditioning of a ``size``-latent image. Raises ValueError for
    an added conditioning it cannot make."""
    import torch
    ctx = torch.randn(batch, 77, int(cfg.get("cross_attention_dim", 768)), generator=g)
    kind = cfg.get("addition_embed_type")
    if kind is None:
        return ctx, None
    if kind != "text_time":
        raise ValueError(f"calibration cannot make the UNet's {kind!r} added conditioning")
    pooled = int(((configs or {}).get(Component.TEXT_ENCODER_2) or {}).get("projection_dim", 1280))
    per_id = int(cfg.get("addition_time_embed_dim") or 0)
    n_ids, rest = divmod(int(cfg.get("projection_class_embeddings_input_dim") or 0) - pooled, max(per_id, 1))
    if per_id <= 0 or rest or n_ids not in (5, 6):
        raise ValueError("calibration cannot tell the UNet's size/crop conditioning from its config")
    px = float(size * 8)
    ids = [px, px, 0.0, 0.0, px, px] if n_ids == 6 else [px, px, 0.0, 0.0, 6.0]   # base / refiner
    return ctx, {"text_embeds": torch.randn(batch, pooled, generator=g),
                 "time_ids": torch.tensor([ids] * batch, dtype=torch.float32)}


PERTURB_MAX_PARAMS = 50_000_000
SENSITIVITY_FLOOR = 0.1   # above this the per-layer forward passes cost too much on a CPU


def _perturbation_sensitivities(unet, cfg, configs, to_src, say, n_latents, timesteps, seed, eps: float = 1e-2):
    """Measured output sensitivity: add noise of relative power `eps` to one weight tensor at a time and
    record the UNet's relative output error, r_l = (E||dy||^2 / E||y||^2) / eps. The UNet output NSR of
    independent weight errors is then ~ sum_l r_l * relMSE_l, so s_l = r_l / numel_l, rescaled so that
    sum_l s_l numel_l = sum_l numel_l (same total weight as the data-free distortion)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    # the model's own latent size, at most 32x32 (as the large-model path): a perturbation pass runs one
    # forward per tensor, and an SD-size latent (64x64) costs minutes even for a small UNet on a CPU
    size = min(int(cfg.get("sample_size", 32)), 32)
    lat = torch.randn(n_latents * len(timesteps), int(cfg.get("in_channels", 4)), size, size, generator=g)
    ctx, added = _conditioning(cfg, configs, lat.shape[0], size, g)
    ts = torch.tensor([t for t in timesteps for _ in range(n_latents)])
    with torch.no_grad():
        y0 = unet(lat, ts, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        e0 = float((y0.double() ** 2).sum())
        r = {}
        for name, p in unet.named_parameters():
            src_name = to_src.get(name)
            if src_name is None or p.dim() < 2 or p.numel() < 1024:
                continue
            keep = p.detach().clone()
            rms = float(keep.double().pow(2).mean().sqrt())
            noise = torch.randn(p.shape, generator=g) * (rms * eps ** 0.5)
            p.add_(noise)
            y = unet(lat, ts, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
            p.copy_(keep)
            r[(src_name, p.numel())] = float(((y - y0).double() ** 2).sum()) / max(e0, 1e-30) / eps
    if not r:
        return {}
    # normalise so that sum_l s_l numel_l = sum_l numel_l, then floor at 0.1: random calibration inputs
    # cannot prove a layer useless (e.g. attention keys with random context), so no tensor is coded
    # down to nothing
    tot_n = sum(n for _, n in r)
    tot_r = sum(r.values())
    out = {name: max((v / n) * tot_n / max(tot_r, 1e-300), SENSITIVITY_FLOOR) for (name, n), v in r.items()}
    v = np.array(list(out.values()))
    say(f"calibrated {len(out)} UNet tensors by perturbation: sensitivity median {np.median(v):.3g}, "
        f"range {v.min():.3g}..{v.max():.3g}")
    return out


def sensitivities(src, plans, configs, naming, say, n_latents: int = 2, timesteps=(999, 700, 400, 100),
                  size: int = 32, seed: int = 0) -> dict[str, float]:
    """{source tensor name: s} for the UNet's Conv2d/Linear weights (empty when it cannot run)."""
    if not configs or Component.UNET not in configs or naming not in (Naming.LDM, Naming.DIFFUSERS):
        say("warning: calibration needs an SD-family UNet with its config; using data-free distortion")
        return {}
    try:
        import torch
        from diffusers import UNet2DConditionModel  # noqa: F401 - is the runtime installed?
    except ImportError as e:
        say(f"warning: calibration needs torch and diffusers ({e}); using data-free distortion")
        return {}
    cfg = {k: v for k, v in configs[Component.UNET].items() if not k.startswith("_")}
    try:
        _conditioning(cfg, configs, 1, 1, torch.Generator())
    except ValueError as e:
        say(f"warning: {e}; using data-free distortion")
        return {}
    try:
        return _measured(src, configs, naming, cfg, say, n_latents, timesteps, size, seed)
    except RUN_ERRORS as e:
        # a config that does not describe the weights (a diffusers folder's config.json is the user's):
        # the file would not load either, so this is the checkpoint's error, in one line
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [""]
        detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]   # load_state_dict's list
        raise SourceError(f"calibration cannot run the checkpoint's UNet with its config: {type(e).__name__}: "
                          f"{detail[:300]}") from None


# what diffusers' converter, the UNet's constructor, load_state_dict and a forward raise on a config that
# does not fit the weights
RUN_ERRORS = (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError, AssertionError)


def _measured(src, configs, naming, cfg, say, n_latents, timesteps, size, seed) -> dict[str, float]:
    import torch
    from diffusers import UNet2DConditionModel
    sd, to_src = _unet_state_dict(src, naming, configs[Component.UNET])
    if not sd:
        return {}
    # built without storage and given the checkpoint's tensors: a randomly initialised copy first would
    # double the peak memory (about 10 GB more for SDXL's UNet in float32)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    unet.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k, t in unet.state_dict().items() if t.is_meta]      # left without the checkpoint's data
    if missing:
        say(f"warning: calibration: {len(missing)} UNet weights missing; using data-free distortion")
        return {}
    unet.eval()
    n_unet = sum(p.numel() for p in unet.parameters())
    if n_unet <= PERTURB_MAX_PARAMS:
        return _perturbation_sensitivities(unet, cfg, configs, to_src, say, n_latents, timesteps, seed)
    stats: dict[str, list] = {}
    hooks = []
    for name, mod in unet.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            def hook(m, inp, out, name=name):
                x = inp[0].detach().double()
                y = out.detach().double()
                if m.bias is not None:
                    y = y - m.bias.detach().double().view(1, -1, *([1] * (y.dim() - 2))) if y.dim() > 2 and isinstance(m, torch.nn.Conv2d) else y - m.bias.detach().double()
                if isinstance(m, torch.nn.Conv2d):
                    ex2 = (x ** 2).mean(dim=(0, 2, 3))                              # per input channel
                    taps = m.kernel_size[0] * m.kernel_size[1]
                    col_energy = float(ex2.sum()) * taps
                    out_energy = float((y ** 2).sum(dim=1).mean())                  # E||Wx||^2 per position
                else:
                    ex2 = (x ** 2).reshape(-1, x.shape[-1]).mean(0)
                    col_energy = float(ex2.sum())
                    out_energy = float((y ** 2).reshape(-1, y.shape[-1]).sum(1).mean())
                s = stats.setdefault(name, [0.0, 0.0, 0])
                s[0] += col_energy; s[1] += out_energy; s[2] += 1
            hooks.append(mod.register_forward_hook(hook))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in timesteps:
            lat = torch.randn(n_latents, int(cfg.get("in_channels", 4)), size, size, generator=g)
            ctx, added = _conditioning(cfg, configs, n_latents, size, g)
            unet(lat, torch.tensor([t] * n_latents), encoder_hidden_states=ctx, added_cond_kwargs=added)
    for h in hooks:
        h.remove()
    out = {}
    params = dict(unet.named_parameters())
    for name, (col, oe, n) in stats.items():
        w = params.get(name + ".weight")
        src_name = to_src.get(name + ".weight")
        if w is None or src_name is None or oe <= 0:
            continue
        wd = w.detach().double()
        s = float((wd ** 2).sum()) * wd.shape[0] * (col / n) / (wd.numel() * (oe / n))
        if np.isfinite(s) and s > 0:
            out[src_name] = s
    if out:
        v = np.array(list(out.values()))
        say(f"calibrated {len(out)} UNet tensors: sensitivity median {np.median(v):.3g}, "
            f"range {v.min():.3g}..{v.max():.3g}")
    return out
