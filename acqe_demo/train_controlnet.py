"""Train a layout ControlNet for the shipped demo model: ``python -m acqe_demo.train_controlnet``.

The conditioning image is a scene's silhouette (`acqe_demo.dataset.render_silhouette`: the objects white on
black, no colours), so the ControlNet says *where* the objects go and *which outline* they have, while the
caption still says their colours and the background. The base model places objects poorly (position accuracy
0.175, `acqe_demo/weights/TRAINING.md`), which makes layout control easy to measure.

Steps (fixed seeds, data rendered on the fly from a `ShapesDataset` stream no other stage uses):

1. ``ControlNetModel.from_unet`` on the shipped UNet (its encoder copied, zero convolutions out), a small
   conditioning embedding that brings 32x32 silhouettes down to the 8x8 latents;
2. training of the ControlNet alone (UNet, VAE and text encoder frozen) on the UNet's own objective: SD v1's
   noise schedule, epsilon prediction, min-SNR-5 weights, caption dropped 10% of the time so classifier-free
   guidance works, AdamW with a cosine learning rate after warm-up;
3. evaluation on held-out captions (`metrics.eval_scenes`) at 50 DDIM steps, guidance 4.0: the classifier's
   figures and the silhouette IoU, for the base model and with the ControlNet, same initial noise;
4. with ``--ship``: the diffusers folder ``acqe_demo/weights/shapes-controlnet/`` and the training record
   (``TRAINING-controlnet.md``, ``training-controlnet.json``, ``samples-controlnet.png``) in
   ``acqe_demo/weights/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import metrics
from .dataset import IMAGE_SIZE, ShapesDataset, image_grid, render_silhouette, save_png
from .pipeline import controlnet_pipeline, load_shapes_pipeline, silhouette_conditioning
from .training import (WEIGHTS_DIR, Reporter, _cosine_lr, _curve_summary, git_commit, min_snr_weights,
                       noised_latents, v1_conditioning, weighted_epsilon_loss)

CONTROLNET_DIR = "shapes-controlnet"


@dataclass
class ControlSettings:
    seed: int = 0
    threads: int = 2
    # A training stream apart from the UNet's (seed 5), evaluation's (12345), the held-out benchmark sets
    # (4242 + 101 k) and profiling (7919). bench_recat.py's *tuning* sets start at 31337 too: the ControlNet
    # saw those captions, so its quality is measured on the held-out sets only.
    data_seed: int = 31337
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    cfg_drop: float = 0.1
    min_snr_gamma: float = 5.0
    # Two stride-2 convolutions: 32x32 silhouettes -> 8x8, the latent size (VAE factor 4).
    embedding_channels: tuple = (16, 32, 32)
    eval_n: int = 128
    eval_steps: int = 50
    eval_guidance: float = 4.0
    eval_batch: int = 64
    conditioning_scale: float = 1.0

    @classmethod
    def quick(cls) -> "ControlSettings":
        return cls(steps=4, batch=8, warmup=2, eval_n=8, eval_steps=3, eval_batch=8)


def build_controlnet(unet, s: ControlSettings):
    """A ControlNet initialised from ``unet``'s encoder; check that its conditioning embedding lands exactly on
    the latent grid (otherwise the residuals would not line up with the UNet's features)."""
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(s.embedding_channels))
    factor = 2 ** (len(s.embedding_channels) - 1)
    latent = unet.config.sample_size
    if latent * factor != IMAGE_SIZE:
        raise ValueError(f"conditioning embedding downsamples by {factor}, but images are not {factor}x the "
                         f"{latent}x{latent} latents")
    return cn


def _freeze(*models) -> None:
    for m in models:
        m.eval()
        m.requires_grad_(False)


def train_controlnet(s: ControlSettings, pipe, controlnet, report, curve: list) -> None:
    """Train ``controlnet`` against the frozen models of ``pipe``; ``curve`` gets [step, MSE, weighted loss]."""
    from diffusers import DDPMScheduler

    torch.manual_seed(s.seed + 11)
    unet, vae = pipe.unet, pipe.vae
    _freeze(unet, vae, pipe.text_encoder)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    weights = min_snr_weights(noise_sched, s.min_snr_gamma)
    scaling = vae.config.scaling_factor

    condition = v1_conditioning(pipe.text_encoder, pipe.tokenizer)
    params = [p for p in controlnet.parameters()]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.99), fused=True)
    data = ShapesDataset(seed=s.data_seed)
    rng = np.random.default_rng(s.seed + 11)
    g = torch.Generator().manual_seed(s.seed + 11)
    controlnet.train()
    update = report.stage("controlnet", s.steps)
    for step in range(s.steps):
        for pg in opt.param_groups:
            pg["lr"] = s.lr * _cosine_lr(step, s.steps, s.warmup)
        scenes, imgs = data.batch(step * s.batch, s.batch)
        # Only the caption is dropped: the silhouette stays, as it will at sampling time under CFG.
        drop = [rng.random() < s.cfg_drop for _ in scenes]
        with torch.no_grad():
            _, text, _ = condition(scenes, imgs, drop, rng)
        cond = silhouette_conditioning(scenes)
        zt, noise, t = noised_latents(vae, imgs, scaling, noise_sched, g)
        down, mid = controlnet(zt, t, text, controlnet_cond=cond, return_dict=False)
        pred = unet(zt, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        per, loss = weighted_epsilon_loss(pred, noise, t, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        curve.append([step, float(per.detach().mean()), float(loss.detach())])
        update(step, float(per.detach().mean()), gnorm=f"{float(gn):.2f}")
    controlnet.eval()


def object_mask(images: np.ndarray, threshold: int = 40) -> np.ndarray:
    """[N, H, W] bool: pixels whose colour differs from the image's most common border colour by more than
    ``threshold`` in some channel. The border is almost all background, and generated images carry no labels,
    so this is the background estimate that needs nothing but the pixels."""
    out = np.zeros(images.shape[:3], bool)
    for i, img in enumerate(images):
        border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
        colours, counts = np.unique(border, axis=0, return_counts=True)
        bg = colours[counts.argmax()].astype(np.int16)
        out[i] = np.abs(img.astype(np.int16) - bg).max(-1) > threshold
    return out


def silhouette_iou(scenes, images: np.ndarray) -> float:
    """Mean IoU between each scene's silhouette (> 127) and the object mask of its image."""
    sil = np.stack([render_silhouette(sc, images.shape[1])[..., 0] > 127 for sc in scenes])
    obj = object_mask(images)
    inter = (sil & obj).sum((1, 2))
    union = (sil | obj).sum((1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


@torch.no_grad()
def generate_controlled(cpipe, scenes, steps: int, guidance: float, seed: int, batch: int, scale: float,
                        progress=None) -> np.ndarray:
    """uint8 [N, 32, 32, 3] images for ``scenes`` with their silhouettes as control. Batch k's generator is
    seeded as in `metrics.generate`, so base and controlled images start from the same noise."""
    out = []
    for i in range(0, len(scenes), batch):
        part = scenes[i:i + batch]
        g = torch.Generator().manual_seed(seed + i)
        imgs = cpipe([sc.caption for sc in part], image=silhouette_conditioning(part), num_inference_steps=steps,
                     guidance_scale=guidance, controlnet_conditioning_scale=scale, generator=g,
                     output_type="np").images
        out.append(np.clip(np.rint(imgs * 255), 0, 255).astype(np.uint8))
        if progress is not None:
            progress(min(i + batch, len(scenes)))
    return np.concatenate(out)


def _upscale(images: np.ndarray, k: int = 4) -> np.ndarray:
    return np.kron(images, np.ones((k, k, 1), np.uint8))


def save_comparison(path: str, scenes, base: np.ndarray, ctrl: np.ndarray, n: int = 16, per_row: int = 4) -> None:
    """A grid of ``n`` examples, each as three tiles: conditioning | base model | with the ControlNet."""
    sil = np.stack([render_silhouette(sc, base.shape[1]) for sc in scenes[:n]])
    triples = np.stack([sil, base[:n], ctrl[:n]], 1).reshape(-1, *base.shape[1:])
    save_png(path, image_grid(_upscale(triples), cols=3 * per_row))


def evaluate(pipe, controlnet, classifier, s: ControlSettings, report, grid_png: str | None = None) -> dict:
    scenes = metrics.eval_scenes(s.eval_n)
    captions = [sc.caption for sc in scenes]
    pipe.set_progress_bar_config(disable=True)
    cpipe = controlnet_pipeline(pipe, controlnet)
    cpipe.set_progress_bar_config(disable=True)
    batches = math.ceil(s.eval_n / s.eval_batch)
    update = report.stage("eval", 2 * batches)
    t0 = time.time()
    base = metrics.generate(pipe, captions, steps=s.eval_steps, guidance=s.eval_guidance, seed=s.seed,
                            batch=s.eval_batch, progress=lambda k: update(math.ceil(k / s.eval_batch) - 1, 0.0))
    t_base = time.time() - t0
    t0 = time.time()
    ctrl = generate_controlled(cpipe, scenes, s.eval_steps, s.eval_guidance, s.seed, s.eval_batch,
                               s.conditioning_scale,
                               progress=lambda k: update(batches + math.ceil(k / s.eval_batch) - 1, 0.0))
    t_ctrl = time.time() - t0
    if grid_png:
        save_comparison(grid_png, scenes, base, ctrl)
    ref = metrics.reference_figures(classifier, scenes)
    real = metrics.real_images(scenes)
    return {
        "base": {**metrics.evaluate_images(classifier, scenes, base), "iou": silhouette_iou(scenes, base)},
        "controlnet": {**metrics.evaluate_images(classifier, scenes, ctrl), "iou": silhouette_iou(scenes, ctrl)},
        "real": {**ref["real"], "iou": silhouette_iou(scenes, real)},
        "chance": ref["chance"], "fd_real_vs_real": ref["fd_real_vs_real"],
        "steps": s.eval_steps, "guidance": s.eval_guidance, "conditioning_scale": s.conditioning_scale,
        "n": s.eval_n, "sampler": "DDIM", "seconds": {"base": round(t_base, 1), "controlnet": round(t_ctrl, 1)},
    }


ROWS = (("base model (no ControlNet)", "base"), ("with the ControlNet", "controlnet"),
        ("real renders (classifier ceiling)", "real"))


def _table(ev: dict) -> list[str]:
    attrs = sorted(k for k in ev["real"] if k.startswith("attr_"))
    head = ["", "prompt", "attribute", *[a[5:] for a in attrs], "silhouette IoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in ROWS + (("chance (real images, other captions)", "chance"),):
        r = ev[key]
        cells = [f"{r[k]:.3f}" if k in r else "" for k in ("prompt", "attribute", *attrs)]
        cells.append(f"{r['iou']:.3f}" if "iou" in r else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_record(path_md: str, path_json: str, record: dict) -> None:
    """The training record, as the base model's ``TRAINING.md`` (`acqe_demo.training.write_record` is bound to
    the base model's stages, so the ControlNet has its own)."""
    with open(path_json, "w") as f:
        json.dump(record, f, indent=1)
    ev, sec = record["evaluation"], record["seconds"]
    lines = [
        "# shapes-controlnet: training record",
        "",
        f"Produced by `{record['command']}` at commit `{record['commit']}` ({record['finished_utc']}), "
        f"{record['machine']}, torch {record['torch']}, diffusers {record['diffusers']}, "
        f"{record['settings']['threads']} threads.",
        "",
        "- a layout ControlNet for `shapes-sd.ckpt` (frozen): conditioning = the scene's silhouette "
        "(`acqe_demo.dataset.render_silhouette`, objects white on black, 32x32, float [0, 1]); load it with "
        "`acqe_demo.pipeline.load_shapes_controlnet()`, build inputs with `silhouette_conditioning(scenes)`",
        *[f"- {note}" for note in record.get("notes", [])],
        f"- total time: {sec['total'] / 60:.1f} min (training {sec['train']:.0f} s = {record['s_per_step']:.3f} s/step, "
        f"evaluation {sec['eval']:.0f} s)",
        f"- parameters: {json.dumps(record['parameters'])}; weights {record['weights_bytes'] / 1e6:.2f} MB "
        "(safetensors, fp32)",
        "",
        f"## Quality at {ev['steps']} {ev['sampler']} steps, guidance {ev['guidance']}, conditioning scale "
        f"{ev['conditioning_scale']}, {ev['n']} held-out captions",
        "",
        "Prompt accuracy (all stated attributes right), attribute accuracy, accuracy per attribute, and the mean IoU "
        "of the conditioning silhouette with the image's objects (pixels more than 40 away from the most common "
        "border colour). Base and ControlNet images start from the same noise.",
        "",
        *_table(ev),
        "",
        f"Fréchet distance (classifier features) to real renders: base {ev['base']['fd']:.2f}, with the ControlNet "
        f"{ev['controlnet']['fd']:.2f}, real vs real {ev['fd_real_vs_real']:.2f}.",
        "",
        "## Loss curve (mean per bucket)",
        "",
        "ControlNet (step, epsilon MSE, min-SNR weighted loss):",
        "",
        "```",
        *[" ".join(str(v) for v in row) for row in record["curves"]["controlnet"]],
        "```",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(record["settings"], indent=1),
        "```",
        "",
    ]
    with open(path_md, "w") as f:
        f.write("\n".join(lines))


def _settings(args) -> ControlSettings:
    s = ControlSettings.quick() if args.quick else ControlSettings()
    for name in ("steps", "batch", "lr"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m acqe_demo.train_controlnet", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("bench", "_out", "shapes-controlnet"), help="scratch directory")
    ap.add_argument("--ship", action="store_true", help="write the ControlNet and its record into acqe_demo/weights")
    ap.add_argument("--quick", action="store_true", help="a few steps and images, to check the script end to end")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 1500)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    args = ap.parse_args(argv)
    s = _settings(args)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    os.makedirs(args.out, exist_ok=True)
    print(f"settings: {json.dumps(dataclasses.asdict(s))}", flush=True)

    t_all = time.time()
    pipe = load_shapes_pipeline()
    classifier = metrics.load_classifier()
    controlnet = build_controlnet(pipe.unet, s)
    report = Reporter()
    curve: list = []
    t0 = time.time()
    train_controlnet(s, pipe, controlnet, report, curve)
    t_train = time.time() - t0
    controlnet.save_pretrained(os.path.join(args.out, CONTROLNET_DIR), safe_serialization=True)

    t0 = time.time()
    grid = os.path.join(args.out, "samples-controlnet.png")
    evaluation = evaluate(pipe, controlnet, classifier, s, report, grid_png=grid)
    t_eval = time.time() - t0
    report.close()
    print(f"evaluation: {json.dumps(evaluation)}", flush=True)

    out_dir = WEIGHTS_DIR if args.ship else args.out
    weights = os.path.join(out_dir, CONTROLNET_DIR)
    if args.ship:
        shutil.rmtree(weights, ignore_errors=True)
        controlnet.save_pretrained(weights, safe_serialization=True)
        shutil.copy(grid, os.path.join(WEIGHTS_DIR, "samples-controlnet.png"))
    import diffusers

    record = {
        "command": "python -m acqe_demo.train_controlnet " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": dataclasses.asdict(s), "commit": git_commit(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
        "diffusers": diffusers.__version__, "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {"train": round(t_train, 1), "eval": round(t_eval, 1), "total": round(time.time() - t_all, 1)},
        "s_per_step": t_train / max(1, s.steps),
        "parameters": {"controlnet": sum(p.numel() for p in controlnet.parameters()),
                       "unet (frozen)": sum(p.numel() for p in pipe.unet.parameters())},
        "weights_bytes": sum(os.path.getsize(os.path.join(weights, f)) for f in os.listdir(weights)),
        "evaluation": evaluation, "curves": {"controlnet": _curve_summary(curve)},
    }
    write_record(os.path.join(out_dir, "TRAINING-controlnet.md"), os.path.join(out_dir, "training-controlnet.json"),
                 record)
    with open(os.path.join(args.out, "curve_full.json"), "w") as f:
        json.dump(curve, f)
    print(f"wrote {weights} ({record['weights_bytes'] / 1e6:.2f} MB) and the record in {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
