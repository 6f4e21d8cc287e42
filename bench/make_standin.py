"""Write an SD v1.4 stand-in `.ckpt`: exactly the real file's keys, shapes and dtypes, random weights.

    python bench/make_standin.py [OUT.ckpt]        # default bench/_data/sd-v1-4-standin.ckpt (~4.27 GB)

What it holds, like `sd-v1-4.ckpt`:
- `state_dict`: the 12 noise-schedule buffers (float32 [1000]), UNet `model.diffusion_model.*`,
  `model_ema.decay` / `model_ema.num_updates`, VAE `first_stage_model.*`, CLIP text encoder
  `cond_stage_model.transformer.text_model.*` with the int64 `position_ids` buffer; 1,066,235,307
  parameters in the three models, float32.
- `global_step`, `epoch`, `pytorch-lightning_version`, and `callbacks`: a dict keyed by a pickled
  `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` class (as Lightning 1.x saves it),
  whose value holds the callback state. A fake module is registered only while pickling.

Weights are random but not uniform in scale: each tensor gets a fan-in scaled std (times a per-tensor
log-normal factor), per-output-row scale variation, and heavier than Gaussian tails (Student t, 6 dof);
norms are ~1, biases small. Real compression figures come from trained weights (bench_compression.py);
this file exercises the full-size path (time, memory, layout).
"""
from __future__ import annotations

import os
import sys
import types
from math import prod

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from acqe_format.model import sd_v1  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "_data", "sd-v1-4-standin.ckpt")


def schedule_buffers(n: int = 1000) -> dict[str, np.ndarray]:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    acp = np.append(1.0, ac[:-1])
    pv = betas * (1.0 - acp) / (1.0 - ac)
    out = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": acp, "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ac), "log_one_minus_alphas_cumprod": np.log(1 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1 / ac), "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1),
        "posterior_variance": pv, "posterior_log_variance_clipped": np.log(np.maximum(pv, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(acp) / (1 - ac),
        "posterior_mean_coef2": (1 - acp) * np.sqrt(alphas) / (1 - ac),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def random_tensor(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    n = prod(shape)
    if name.endswith("position_ids"):
        return np.arange(shape[-1], dtype=np.int64).reshape(shape)
    if len(shape) == 1:
        if "norm" in name and name.endswith("weight"):
            return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
        return (0.02 * rng.standard_normal(n)).astype(np.float32)
    fan_in = n // shape[0]
    std = 1.0 / np.sqrt(fan_in) * float(np.exp(0.3 * rng.standard_normal()))
    if "embedding" in name:
        std = 0.02
    x = rng.standard_t(6, size=n).astype(np.float32).reshape(shape[0], -1)
    row = np.exp(0.25 * rng.standard_normal((shape[0], 1))).astype(np.float32)
    x *= row * np.float32(std / np.sqrt(1.5))
    return x.reshape(shape)


def state_dict_numpy(unet_cfg=None, vae_cfg=None, text_cfg=None, seed: int = 0, dtype=np.float32):
    """Ordered (name, array) of an LDM SD v1 state dict (schedule buffers, UNet, EMA counters, VAE, CLIP)."""
    rng = np.random.default_rng(seed)
    shapes = sd_v1.ldm_shapes(unet_cfg, vae_cfg, text_cfg)
    for k, v in schedule_buffers().items():
        yield k, v
    ema_done = False
    for k, s in shapes.items():
        if not ema_done and not k.startswith(sd_v1.PREFIXES["unet"]):
            yield "model_ema.decay", np.array(0.9999, np.float32)
            yield "model_ema.num_updates", np.array(470000, np.int32)
            ema_done = True
        a = random_tensor(k, s, rng)
        if a.dtype == np.float32 and dtype != np.float32:
            a = a.astype(dtype)
        yield k, a


class _FakeLightning:
    """Registers `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` only while pickling."""

    NAMES = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")

    def __enter__(self):
        self.saved = {n: sys.modules.get(n) for n in self.NAMES}
        mods = [types.ModuleType(n) for n in self.NAMES]
        cls = type("ModelCheckpoint", (), {"__module__": self.NAMES[-1]})
        mods[-1].ModelCheckpoint = cls
        for n, m in zip(self.NAMES, mods):
            sys.modules[n] = m
        self.cls = cls
        return cls

    def __exit__(self, *exc):
        for n, m in self.saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def write_ckpt(out: str, unet_cfg=None, vae_cfg=None, text_cfg=None, seed: int = 0, dtype=np.float32,
               extra: dict | None = None) -> int:
    """Write the stand-in checkpoint; returns the number of model parameters."""
    import torch
    sd = {}
    n_model = 0
    for k, a in state_dict_numpy(unet_cfg, vae_cfg, text_cfg, seed, dtype):
        sd[k] = torch.from_numpy(a) if a.dtype != np.float16 else torch.from_numpy(a)
        if any(k.startswith(p) for p in sd_v1.PREFIXES.values()) and not k.endswith("position_ids"):
            n_model += a.size
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with _FakeLightning() as MC:
        ck = {"state_dict": sd, "global_step": 470000, "epoch": 6, "pytorch-lightning_version": "1.4.2",
              "callbacks": {MC: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                 "current_score": None, "dirpath": "/fsx/stable-diffusion/checkpoints"}}}
        if extra:
            ck.update(extra)
        tmp = out + ".tmp"
        torch.save(ck, tmp)
        os.replace(tmp, out)
    return n_model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    n = write_ckpt(out)
    print(f"wrote {out}: {os.path.getsize(out):,} bytes, {n:,} model parameters")
