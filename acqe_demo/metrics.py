"""Quality measures for the demo model, meaningful for the shapes data.

A small CNN (`ShapesClassifier`) reads a scene back from a 32x32 image: the background colour and, for each
of the 3x3 grid cells, whether it holds an object and that object's colour, shape and size. From that
readout we score

- **prompt accuracy** (a CLIP-score analogue): does the image show what its caption says? Reported per
  caption (all stated attributes right) and per attribute (fraction of stated attributes right);
- **Fréchet distance** (an FID analogue) between generated and real images, in the classifier's
  penultimate feature space.

Chance levels come from scoring real images against the captions of *other* scenes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .dataset import (BACKGROUNDS, COLORS, GRID, SHAPES, SIZES, Scene, ShapesDataset,
                      render_scene, to_tensor_range)

N_CELLS = GRID * GRID
FEATURE_DIM = 128
CLASSIFIER_FILE = os.path.join(os.path.dirname(__file__), "weights", "classifier.pt")


CROP = 14  # pixels around each grid cell's centre that the cell reader sees (cells are 10.7 px apart)


class ShapesClassifier(nn.Module):
    """CNN reading a scene from images in [-1, 1], [N, 3, 32, 32].

    Each of the 3x3 grid cells is cropped (14x14 around its centre) and read by one shared small CNN: presence,
    colour, shape and size of the object there. The background comes from the mean of the cells' features. The
    mean of the cells' 128-d features is the "penultimate" feature vector of the Fréchet distance (as
    Inception's pooled features are for FID).
    """

    N_OUT = 2 + len(COLORS) + len(SHAPES) + len(SIZES)

    def __init__(self, width: int = 24, image_size: int = 32):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1))  # 14 -> 7
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 7 * 7, FEATURE_DIM), nn.SiLU())
        self.head = nn.Linear(FEATURE_DIM, self.N_OUT)
        self.bg = nn.Linear(FEATURE_DIM, len(BACKGROUNDS))
        centres = [round((k + 0.5) * image_size / GRID) for k in range(GRID)]
        starts = [min(max(c - CROP // 2, 0), image_size - CROP) for c in centres]
        self.crops = [(y, x) for y in starts for x in starts]  # row-major cells

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        crops = torch.stack([x[:, :, y:y + CROP, xx:xx + CROP] for y, xx in self.crops], 1)  # [N, 9, 3, C, C]
        f = self.embed(self.body(crops.flatten(0, 1))).view(n, N_CELLS, FEATURE_DIM)
        out = self.head(f)
        g = f.mean(1)
        a, b, c = 2, 2 + len(COLORS), 2 + len(COLORS) + len(SHAPES)
        return {"features": g, "bg": self.bg(g), "present": out[..., :a], "color": out[..., a:b],
                "shape": out[..., b:c], "size": out[..., c:]}


def scene_targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Per-cell targets; colour/shape/size are -100 (ignored) where a cell is empty."""
    n = len(scenes)
    t = {k: np.full((n, N_CELLS), -100, np.int64) for k in ("color", "shape", "size")}
    t["present"] = np.zeros((n, N_CELLS), np.int64)
    t["bg"] = np.array([s.background for s in scenes], np.int64)
    for i, s in enumerate(scenes):
        for o in s.objects:
            t["present"][i, o.cell] = 1
            t["color"][i, o.cell], t["shape"][i, o.cell], t["size"][i, o.cell] = o.color, o.shape, o.size
    return {k: torch.from_numpy(v) for k, v in t.items()}


def classifier_loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = F.cross_entropy(out["bg"], tgt["bg"])
    for k in ("present", "color", "shape", "size"):
        loss = loss + F.cross_entropy(out[k].reshape(-1, out[k].shape[-1]), tgt[k].reshape(-1), ignore_index=-100)
    return loss


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild degradations (blur, noise, colour shift), so generated images are read like real ones."""
    n = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    mix = torch.rand(n, 1, 1, 1, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.5)
    x = x * (1 - mix) + blur * mix
    x = x + torch.randn(x.shape, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) * 0.08)
    x = x + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.08
    return x.clamp(-1, 1)


def train_classifier(steps: int = 1200, batch: int = 64, seed: int = 1, lr: float = 2e-3, progress=None,
                     log=None) -> ShapesClassifier:
    """Train the readout classifier on freshly rendered scenes (data seed ``seed``, its own stream)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ShapesClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    data = ShapesDataset(seed=1000 + seed)
    model.train()
    for step in range(steps):
        scenes, imgs = data.batch(step * batch, batch)
        x = augment(torch.from_numpy(to_tensor_range(imgs)), g)
        loss = classifier_loss(model(x), scene_targets(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None:
            log(step, float(loss.detach()))
        if progress is not None:
            progress(step, float(loss.detach()))
    return model.eval()


def load_classifier(path: str = CLASSIFIER_FILE) -> ShapesClassifier:
    model = ShapesClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@dataclass
class Readout:
    """What the classifier sees in a batch of images."""

    bg: np.ndarray        # [N]
    present: np.ndarray   # [N, 9] bool
    color: np.ndarray     # [N, 9]
    shape: np.ndarray     # [N, 9]
    size: np.ndarray      # [N, 9]
    present_p: np.ndarray  # [N, 9] probability
    features: np.ndarray  # [N, 128]


@torch.no_grad()
def read_images(model: ShapesClassifier, images: np.ndarray, batch: int = 256) -> Readout:
    """Classify uint8 [N, 32, 32, 3] images."""
    outs = []
    for i in range(0, len(images), batch):
        outs.append(model(torch.from_numpy(to_tensor_range(images[i:i + batch]))))
    cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    p = cat["present"].softmax(-1)[..., 1]
    return Readout(bg=cat["bg"].argmax(-1).numpy(), present=(p > 0.5).numpy(), color=cat["color"].argmax(-1).numpy(),
                   shape=cat["shape"].argmax(-1).numpy(), size=cat["size"].argmax(-1).numpy(),
                   present_p=p.numpy(), features=cat["features"].numpy().astype(np.float64))


def _objects_in(r: Readout, i: int) -> list[tuple[int, int, int, int]]:
    """(cell, colour, shape, size) of the objects read in image i."""
    return [(c, int(r.color[i, c]), int(r.shape[i, c]), int(r.size[i, c])) for c in range(N_CELLS) if r.present[i, c]]


def score_scene(scene: Scene, r: Readout, i: int) -> dict[str, bool]:
    """Check each attribute the caption of ``scene`` states against image i's readout."""
    found = _objects_in(r, i)
    checks = {"background": int(r.bg[i]) == scene.background, "count": len(found) == len(scene.objects)}
    if scene.form in ("single", "pair"):
        for k, o in enumerate(scene.objects):
            at = [f for f in found if f[0] == o.cell]
            checks[f"position{k}"] = bool(at)
            # Judge appearance on the object in the stated cell, else on the best matching object anywhere.
            cands = at or found
            best = max(cands, key=lambda f: (f[1] == o.color) + (f[2] == o.shape), default=None)
            checks[f"color{k}"] = best is not None and best[1] == o.color
            checks[f"shape{k}"] = best is not None and best[2] == o.shape
            if scene.form == "single":
                checks[f"size{k}"] = best is not None and best[3] == o.size
    else:  # relation
        a, b = scene.objects
        fa = [f for f in found if f[1] == a.color and f[2] == a.shape]
        fb = [f for f in found if f[1] == b.color and f[2] == b.shape]
        checks["object0"], checks["object1"] = bool(fa), bool(fb)

        def holds(ca: int, cb: int) -> bool:
            (ra, ka), (rb, kb) = divmod(ca, GRID), divmod(cb, GRID)
            return [ra < rb, ra > rb, ka < kb, ka > kb][scene.relation]

        checks["relation"] = any(holds(x[0], y[0]) for x in fa for y in fb if x[0] != y[0])
    return checks


def prompt_accuracy(scenes: list[Scene], r: Readout) -> dict[str, float]:
    """Fraction of captions fully satisfied, fraction of stated attributes right, and per attribute kind."""
    all_ok, attrs = [], {}
    for i, s in enumerate(scenes):
        c = score_scene(s, r, i)
        all_ok.append(all(c.values()))
        for k, v in c.items():
            kind = k.rstrip("01")
            attrs.setdefault(kind, []).append(v)
    per_kind = {k: float(np.mean(v)) for k, v in sorted(attrs.items())}
    flat = [v for vs in attrs.values() for v in vs]
    return {"prompt": float(np.mean(all_ok)), "attribute": float(np.mean(flat)), **{f"attr_{k}": v for k, v in per_kind.items()}}


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (as in FID)."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def eval_scenes(n: int, seed: int = 12345) -> list[Scene]:
    """The evaluation prompts: scenes of a held-out data stream."""
    ds = ShapesDataset(seed=seed)
    return [ds[i] for i in range(n)]


def real_images(scenes: list[Scene], size: int = 32) -> np.ndarray:
    return np.stack([render_scene(s, size) for s in scenes])


def reference_figures(classifier: ShapesClassifier, scenes: list[Scene], seed: int = 777) -> dict:
    """Figures for real images: the classifier's own accuracy, chance (captions of other scenes), FD floor."""
    real = read_images(classifier, real_images(scenes))
    perm = np.random.default_rng(seed).permutation(len(scenes))
    chance = prompt_accuracy([scenes[j] for j in perm], real)
    # FD between two independent real draws of the same captions (re-sampled jitter/sizes/cells where free).
    other = eval_scenes(len(scenes), seed=seed)
    real2 = read_images(classifier, real_images(other))
    return {"real": prompt_accuracy(scenes, real), "chance": chance,
            "fd_real_vs_real": frechet_distance(real.features, real2.features)}


@torch.no_grad()
def generate(pipe, captions: list[str], steps: int = 50, guidance: float = 4.0, seed: int = 0,
             batch: int = 50, progress=None) -> np.ndarray:
    """Generate uint8 images [N, 32, 32, 3] for captions with a StableDiffusionPipeline."""
    out = []
    for i in range(0, len(captions), batch):
        g = torch.Generator().manual_seed(seed + i)
        imgs = pipe(captions[i:i + batch], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                    output_type="np").images
        out.append(np.clip(np.rint(imgs * 255), 0, 255).astype(np.uint8))
        if progress is not None:
            progress(min(i + batch, len(captions)))
    return np.concatenate(out)


def prompt_following(pipe, classifier: ShapesClassifier, n: int = 16, seed: int = 2024, steps: int = 8,
                     guidance: float = 4.0, shift: int = 5) -> tuple[dict, dict]:
    """A quick check that a pipeline follows its prompts: ``(accuracy, chance)`` of ``n`` images generated for
    held-out captions, chance being the same images scored against other scenes' captions (rolled by ``shift``),
    i.e. what a model ignoring its prompt would get."""
    scenes = eval_scenes(n, seed=seed)
    images = generate(pipe, [s.caption for s in scenes], steps=steps, guidance=guidance, seed=0, batch=n)
    if images.shape != (n, 32, 32, 3):
        raise ValueError(f"expected {n} images of 32x32x3, got {images.shape}")
    read = read_images(classifier, images)
    perm = np.roll(np.arange(n), shift)
    return prompt_accuracy(scenes, read), prompt_accuracy([scenes[j] for j in perm], read)


def evaluate_images(classifier: ShapesClassifier, scenes: list[Scene], images: np.ndarray) -> dict:
    """Prompt accuracy and Fréchet distance of images generated for ``scenes``' captions."""
    gen = read_images(classifier, images)
    real = read_images(classifier, real_images(scenes))
    return {**prompt_accuracy(scenes, gen), "fd": frechet_distance(gen.features, real.features), "n": len(scenes)}
