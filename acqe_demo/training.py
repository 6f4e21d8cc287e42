"""What both demo models' training shares: settings, progress, the VAE stage, the joint UNet + text encoder
loop (`train_unet`, conditioned through a function so SD v1 and SDXL differ only there), evaluation and the
training record. The models' own steps are in `acqe_demo.train` (SD v1) and `acqe_demo.train_sdxl`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .dataset import ShapesDataset, from_tensor_range, image_grid, save_png, to_tensor_range
from .models import default_configs

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


@dataclass
class Settings:
    seed: int = 0
    threads: int = 2
    classifier_steps: int = 400
    classifier_batch: int = 32
    classifier_lr: float = 3e-3
    vae_steps: int = 2400
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_object_weight: float = 20.0
    vae_init_logvar: float = -8.0
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 8e-4
    unet_warmup: int = 50
    text_lr: float = 8e-4
    weight_decay: float = 0.01
    embedding_weight_decay: float = 2.0
    cfg_drop: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    eval_n: int = 256
    eval_steps: int = 50
    eval_guidance: float = 4.0
    eval_batch: int = 64

    @classmethod
    def quick(cls) -> "Settings":
        return cls(classifier_steps=20, vae_steps=20, unet_steps=20, eval_n=16, eval_steps=5, eval_batch=16)


class Reporter:
    """A rich progress bar on a terminal, plain log lines every ``every`` steps otherwise (e.g. under nohup)."""

    def __init__(self, every: int = 25):
        self.every = every
        self.tty = sys.stdout.isatty()
        self.progress = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
            self.progress.start()

    def stage(self, name: str, total: int):
        t0 = time.time()
        task = self.progress.add_task(name, total=total, info="") if self.progress else None

        def update(step: int, loss: float, **extra) -> None:
            info = f"loss {loss:.4f}" + "".join(f" {k} {v}" for k, v in extra.items())
            if self.progress:
                self.progress.update(task, completed=step + 1, info=info)
            elif (step + 1) % self.every == 0 or step + 1 == total:
                el = time.time() - t0
                print(f"[{name}] {step + 1}/{total} {info} {el:.0f}s eta {el / (step + 1) * (total - step - 1):.0f}s",
                      flush=True)

        return update

    def close(self):
        if self.progress:
            self.progress.stop()


def _cosine_lr(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def train_vae(s: Settings, vae, report, curve: list, snapshot=None) -> None:
    """Train the VAE at a constant learning rate after warm-up (so a run's step-k state equals a k-step run)."""
    torch.manual_seed(s.seed + 2)
    # Start with a small posterior std: with std ~1 at init, sampling noise drowns the latents and the decoder
    # learns colour and shape only after the encoder has pushed log-variances down (thousands of steps).
    with torch.no_grad():
        c = vae.config.latent_channels
        vae.quant_conv.weight[c:] *= 0.1
        vae.quant_conv.bias[c:] = s.vae_init_logvar
    data = ShapesDataset(seed=s.seed * 100 + 2)
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0, betas=(0.9, 0.99), fused=True)
    g = torch.Generator().manual_seed(s.seed + 2)
    vae.train()
    update = report.stage("vae", s.vae_steps)
    for step in range(s.vae_steps):
        for pg in opt.param_groups:
            pg["lr"] = s.vae_lr * min(1.0, (step + 1) / 50)
        scenes, imgs = data.batch(step * s.vae_batch, s.vae_batch)
        x = torch.from_numpy(to_tensor_range(imgs))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
            rec = vae.decode(z).sample.float()
        # Objects cover a few % of the pixels: weight them up, or the background dominates the loss.
        w = 1.0 + s.vae_object_weight * _object_mask(scenes, imgs)
        err = (rec - x).abs() + (rec - x) ** 2
        rec_loss = (err * w).sum() / (w.sum() * x.shape[1])
        kl = post.kl().float().mean() / x[0].numel()
        loss = rec_loss + s.vae_kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        curve.append([step, float(rec_loss.detach())])
        update(step, float(rec_loss.detach()))
        if snapshot is not None:
            snapshot(step + 1, vae)
    vae.eval()


def _object_mask(scenes, imgs: np.ndarray) -> torch.Tensor:
    """[N, 1, H, W] float mask of the pixels that differ from the scene's background colour."""
    from .dataset import BACKGROUNDS, BG_NAMES

    bg = np.array([BACKGROUNDS[BG_NAMES[sc.background]] for sc in scenes], np.int16)[:, None, None, :]
    return torch.from_numpy((np.abs(imgs.astype(np.int16) - bg).max(-1) > 2).astype(np.float32))[:, None]


@torch.no_grad()
def latent_scale(vae, s: Settings, n: int = 256) -> float:
    _, imgs = ShapesDataset(seed=s.seed * 100 + 3).batch(0, n)
    zs = []
    for i in range(0, n, 64):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            zs.append(vae.encode(torch.from_numpy(to_tensor_range(imgs[i:i + 64]))).latent_dist.mean.float())
    return float(1.0 / torch.cat(zs).std())


@torch.no_grad()
def vae_figures(vae, classifier, s: Settings, n: int = 128) -> dict:
    scenes, imgs = ShapesDataset(seed=s.seed * 100 + 4).batch(0, n)
    recs = []
    for i in range(0, n, 64):
        x = torch.from_numpy(to_tensor_range(imgs[i:i + 64]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recs.append(vae.decode(vae.encode(x).latent_dist.mean).sample.float())
    rec = torch.cat(recs).clamp(-1, 1)
    x = torch.from_numpy(to_tensor_range(imgs))
    mse = float(F.mse_loss(rec, x))
    out = {"psnr_db": 10 * math.log10(4.0 / mse), "l1": float((rec - x).abs().mean())}
    rec_u8 = from_tensor_range(rec.numpy())
    out["classifier_on_reconstructions"] = metrics.prompt_accuracy(scenes, metrics.read_images(classifier, rec_u8))["prompt"]
    return out


def v1_conditioning(text, tokenizer):
    """SD v1's conditioning for `train_unet`: the CLIP encoder's last hidden states; a dropped caption is ""."""
    def condition(scenes, imgs, drop, rng):
        captions = ["" if d else sc.caption for sc, d in zip(scenes, drop)]
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return imgs, text(ids).last_hidden_state, None

    return condition


def min_snr_weights(noise_sched, gamma: float) -> torch.Tensor:
    """Per-timestep loss weights ``min(SNR, gamma) / SNR`` of an epsilon-prediction objective (min-SNR-gamma)."""
    ac = noise_sched.alphas_cumprod
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def noised_latents(vae, imgs: np.ndarray, scaling: float, noise_sched, g: torch.Generator):
    """``(z_t, noise, t)`` for uint8 images ``imgs``: a sample of their VAE posterior (bf16 autocast) times
    ``scaling``, noised at uniformly drawn training timesteps. Draws from ``g`` in a fixed order (posterior,
    noise, timesteps), so a run is reproducible from its seed."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        post = vae.encode(torch.from_numpy(to_tensor_range(imgs))).latent_dist
    z0 = (post.mean.float() + post.std.float() * torch.randn(post.mean.shape, generator=g)) * scaling
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(imgs),), generator=g)
    return noise_sched.add_noise(z0, noise, t), noise, t


def weighted_epsilon_loss(pred, noise, t, weights):
    """``(per-sample MSE, weighted mean loss)`` of a noise prediction."""
    per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    return per, (per * weights[t]).mean()


def train_unet(s: Settings, unet, texts: list, vae, condition, scaling: float, report, curve: list,
               scheduler_config: dict | None = None):
    """Train the UNet and the text encoders ``texts`` jointly. ``condition(scenes, images, drop, rng)`` returns
    ``(images, encoder_hidden_states, added_cond_kwargs or None)`` for a batch (``drop``: captions dropped for
    classifier-free guidance; it may change the images, e.g. SDXL's size/crop conditioning)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(s.seed + 3)
    cfg = scheduler_config or default_configs()["scheduler"]
    noise_sched = DDPMScheduler(num_train_timesteps=cfg["num_train_timesteps"], beta_start=cfg["beta_start"],
                                beta_end=cfg["beta_end"], beta_schedule=cfg["beta_schedule"],
                                prediction_type=cfg["prediction_type"], clip_sample=False)
    weights = min_snr_weights(noise_sched, s.min_snr_gamma)

    groups = [{"params": list(unet.parameters()), "lr": s.unet_lr, "weight_decay": s.weight_decay, "base": s.unet_lr}]
    for text in texts:
        emb = text.get_input_embeddings().weight
        groups += [
            {"params": [p for p in text.parameters() if p is not emb], "lr": s.text_lr, "weight_decay": s.weight_decay,
             "base": s.text_lr},
            # Rows of tokens never seen in captions get no gradient: weight decay shrinks them towards zero.
            {"params": [emb], "lr": s.text_lr, "weight_decay": s.embedding_weight_decay, "base": s.text_lr}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.99), fused=True)
    params = list(unet.parameters()) + [p for text in texts for p in text.parameters()]
    ema = EMAModel(params, decay=s.ema_decay, use_ema_warmup=False, foreach=True)
    data = ShapesDataset(seed=s.seed * 100 + 5)
    rng = np.random.default_rng(s.seed + 5)
    g = torch.Generator().manual_seed(s.seed + 5)
    unet.train()
    for text in texts:
        text.train()
    update = report.stage("unet+text", s.unet_steps)
    for step in range(s.unet_steps):
        f = _cosine_lr(step, s.unet_steps, s.unet_warmup)
        for pg in opt.param_groups:
            pg["lr"] = pg["base"] * f
        scenes, imgs = data.batch(step * s.unet_batch, s.unet_batch)
        drop = [rng.random() < s.cfg_drop for _ in scenes]
        imgs, cond, added = condition(scenes, imgs, drop, rng)
        zt, noise, t = noised_latents(vae, imgs, scaling, noise_sched, g)
        pred = unet(zt, t, cond, added_cond_kwargs=added).sample
        per, loss = weighted_epsilon_loss(pred, noise, t, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        curve.append([step, float(per.detach().mean()), float(loss.detach())])
        update(step, float(per.detach().mean()), gnorm=f"{float(gn):.2f}")
    ema.copy_to(params)
    unet.eval()
    for text in texts:
        text.eval()
    return ema

def evaluate(pipe, classifier, s: Settings, report, samples_png: str | None = None) -> dict:
    scenes = metrics.eval_scenes(s.eval_n)
    captions = [sc.caption for sc in scenes]
    pipe.set_progress_bar_config(disable=True)
    update = report.stage("eval", math.ceil(s.eval_n / s.eval_batch))
    t0 = time.time()
    imgs = metrics.generate(pipe, captions, steps=s.eval_steps, guidance=s.eval_guidance, seed=s.seed,
                            batch=s.eval_batch, progress=lambda k: update(math.ceil(k / s.eval_batch) - 1, 0.0))
    gen_time = time.time() - t0
    if samples_png:
        save_png(samples_png, image_grid(np.kron(imgs[:32], np.ones((4, 4, 1), np.uint8)), cols=8))
    figs = metrics.evaluate_images(classifier, scenes, imgs)
    ref = metrics.reference_figures(classifier, scenes)
    return {"model": figs, **ref, "steps": s.eval_steps, "guidance": s.eval_guidance, "n": s.eval_n,
            "sampler": "DDIM", "seconds": gen_time, "captions_head": captions[:32]}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        return "unknown"


def _curve_summary(curve: list, buckets: int = 40) -> list:
    """Mean loss per bucket of steps (the record keeps a compact curve)."""
    if not curve:
        return []
    arr = np.asarray(curve, dtype=np.float64)
    edges = np.linspace(0, len(arr), min(buckets, len(arr)) + 1).astype(int)
    return [[int(arr[b - 1, 0]) + 1, *[round(float(v), 5) for v in arr[a:b, 1:].mean(0)]]
            for a, b in zip(edges[:-1], edges[1:])]


def write_record(path_md: str, path_json: str, record: dict, title: str = "shapes-sd") -> None:
    with open(path_json, "w") as f:
        json.dump(record, f, indent=1)
    ev = record.get("evaluation", {})
    m, real, chance = ev.get("model", {}), ev.get("real", {}), ev.get("chance", {})
    lines = [
        f"# {title}: training record",
        "",
        f"Produced by `{record.get('command', 'python -m acqe_demo.train --ship')}` at commit `{record['commit']}` "
        f"({record['finished_utc']}), {record['machine']}, torch {record['torch']}, {record['settings']['threads']} threads.",
        "",
        (f"- stages reused from an earlier run of this script with the same settings (their time is not in the "
         f"total below): {record['reused_stages']}" if record.get("reused_stages") else "- all stages run here"),
        *[f"- {note}" for note in record.get("notes", [])],
        f"- total time: {record['seconds']['total'] / 60:.1f} min "
        f"(classifier {record['seconds']['classifier']:.0f} s, VAE {record['seconds']['vae']:.0f} s, "
        f"UNet+text {record['seconds']['unet']:.0f} s, evaluation {record['seconds']['eval']:.0f} s)",
        f"- parameters: {json.dumps(record['parameters'])}; checkpoint {record.get('ckpt_bytes', 0) / 1e6:.2f} MB",
        f"- VAE: PSNR {record['vae']['psnr_db']:.2f} dB, L1 {record['vae']['l1']:.4f}, latent scaling factor "
        f"{record['scaling_factor']:.5f}; classifier reads {100 * record['vae']['classifier_on_reconstructions']:.1f}% "
        "of reconstructed captions fully right",
        "",
        f"## Quality at {ev.get('steps')} {ev.get('sampler')} steps, guidance {ev.get('guidance')}, "
        f"{ev.get('n')} held-out captions",
        "",
        "| | prompt accuracy (all attributes) | attribute accuracy | Fréchet distance |",
        "|---|---|---|---|",
        f"| generated (shipped EMA weights) | {m.get('prompt', 0):.3f} | {m.get('attribute', 0):.3f} | {m.get('fd', 0):.2f} |",
        f"| real renders (classifier ceiling) | {real.get('prompt', 0):.3f} | {real.get('attribute', 0):.3f} | "
        f"{ev.get('fd_real_vs_real', 0):.2f} (real vs real) |",
        f"| chance (real images, other captions) | {chance.get('prompt', 0):.3f} | {chance.get('attribute', 0):.3f} | |",
        "",
        "Per attribute (generated / real / chance):",
        "",
    ]
    for k in sorted(k for k in m if k.startswith("attr_")):
        lines.append(f"- {k[5:]}: {m[k]:.3f} / {real.get(k, 0):.3f} / {chance.get(k, 0):.3f}")
    lines += ["", "## Loss curves (mean per bucket)", "", "UNet (step, epsilon MSE, min-SNR weighted loss):", "", "```"]
    lines += [" ".join(str(v) for v in row) for row in record["curves"]["unet"]]
    lines += ["```", "", "VAE (step, L1+MSE reconstruction):", "", "```"]
    lines += [" ".join(str(v) for v in row) for row in record["curves"]["vae"]]
    lines += ["```", "", "Classifier (step, loss):", "", "```"]
    lines += [" ".join(str(v) for v in row) for row in record["curves"]["classifier"]]
    lines += ["```", "", "## Settings", "", "```json", json.dumps(record["settings"], indent=1), "```", ""]
    with open(path_md, "w") as f:
        f.write("\n".join(lines))

def settings_from(args, **defaults) -> Settings:
    """The run's settings: `Settings` (or its quick variant) with ``defaults`` and then ``--set`` applied."""
    s = Settings.quick() if args.quick else dataclasses.replace(Settings(), **defaults)
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep or not hasattr(s, k):
            raise SystemExit(f"--set takes KEY=VALUE with KEY a field of Settings, not {kv!r}")
        setattr(s, k, type(getattr(s, k))(v))
    return s
