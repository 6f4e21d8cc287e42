"""The whole ACQE story on a built-in model, as one library function (`acqe demo` renders it).

Two built-in models (``DemoSettings.model``): ``sd-v1``, the `sd-v1-4.ckpt`-layout checkpoint, and ``sdxl``,
the SDXL-base-layout single file (two text encoders, size/crop conditioning; `acqe_demo.models_sdxl`).
convert the shipped checkpoint -> verify -> profile ReCaT -> generate the same
prompts and seeds with the original weights, the decoded `.acqe` weights, and the `.acqe` weights with
uniform (DeepCache) and ReCaT caching -> sizes, timings, prompt accuracy, Fréchet distance, PSNR, and
a PNG grid (one row per variant). Every figure is measured on what a user would run: the generated
images of the `.acqe` rows come from weights decoded out of the file.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

WEIGHTS = os.path.join(os.path.dirname(__file__), "weights")
DEFAULT_CKPT = os.path.join(WEIGHTS, "shapes-sd.ckpt")
# model name -> (shipped checkpoint, the .acqe file's name, how the checkpoint is described)
MODELS = {"sd-v1": (DEFAULT_CKPT, "shapes.acqe", "shipped .ckpt (fp32 + pickle)"),
          "sdxl": (os.path.join(WEIGHTS, "shapes-sdxl.safetensors"), "shapes-sdxl.acqe",
                   "shipped .safetensors (fp16, SDXL layout)")}


def load_original(model: str, ckpt: str):
    """The diffusers pipeline of a shipped checkpoint's own (uncoded) weights, DDIM from its stored config."""
    if model == "sdxl":
        from acqe_demo.train_sdxl import load_pipeline

        return load_pipeline(ckpt)
    from acqe_demo.pipeline import load_shapes_pipeline

    return load_shapes_pipeline(ckpt)


@dataclass
class DemoSettings:
    model: str = "sd-v1"               # a key of MODELS
    ckpt: str | None = None            # None: the model's shipped checkpoint
    out_dir: str = "out/demo"
    bits: float | None = None          # None: the encoder's default target
    prompts: int = 64                  # evaluation prompts (one image each, fixed seeds)
    grid_prompts: int = 8              # columns of the PNG grid
    steps: int = 50
    budget: int = 10                   # cache budget: full UNet steps out of `steps`
    guidance: float = 4.0
    profile_samples: int = 32
    seed: int = 0
    threads: int = 2


@dataclass
class Variant:
    name: str
    images: np.ndarray                 # uint8 [N, H, W, 3]
    loop_seconds: float
    full_unet_steps: int               # how many steps ran the whole UNet
    figures: dict = field(default_factory=dict)


@dataclass
class DemoResult:
    acqe_path: str
    grid_path: str
    sizes: dict
    timings: dict
    variants: list[Variant]
    captions: list[str]
    reference: dict


def _to_uint8(pil_images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in pil_images])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between uint8 image stacks (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def run_demo(s: DemoSettings, say: Callable[[str], None] = print,
             progress: Callable[[str, str, int, int], None] | None = None) -> DemoResult:
    import torch

    from acqe_demo.dataset import ShapesDataset, image_grid, make_caption, save_png
    from acqe_demo.metrics import eval_scenes, evaluate_images, load_classifier, reference_figures
    from acqe_encoder.encode import Settings, convert
    from acqe_format import AcqeReader
    from recat_runtime.api import cache_config, profile_cache
    from recat_runtime.sampling import denoise_and_decode
    from recat_runtime.loading import load_pipeline

    if s.model not in MODELS:
        raise ValueError(f"unknown demo model {s.model!r}; choose from {', '.join(MODELS)}")
    ckpt = s.ckpt or MODELS[s.model][0]
    torch.set_num_threads(s.threads)
    try:  # diffusers' pipeline classes import transformers' image processors, which warn about torchvision
        import transformers
        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    os.makedirs(s.out_dir, exist_ok=True)
    path = os.path.join(s.out_dir, MODELS[s.model][1])
    timings: dict[str, float] = {}

    say(f"1/5 convert {os.path.relpath(ckpt)} -> {path}")
    t = time.perf_counter()
    # the demo file embeds its tokenizer (182 kB) so it is a complete model on its own; its bytes are counted
    settings = Settings(embed_tokenizer=True) if s.bits is None else Settings(bits=s.bits, embed_tokenizer=True)
    report = convert(ckpt, path, settings, progress=progress)
    timings["convert"] = time.perf_counter() - t

    say("2/5 verify (every checksum, full decode, footer SHA-256)")
    t = time.perf_counter()
    with AcqeReader(path) as r:
        r.verify()
        params = sum(x.numel for x in r.tensors)
    timings["verify"] = time.perf_counter() - t
    sizes = {"ckpt_bytes": os.path.getsize(ckpt), "acqe_bytes": os.path.getsize(path), "params": params,
             "fp16_bytes": 2 * params, "bits_per_param": os.path.getsize(path) * 8 / params,
             "components": report.components}

    scenes = eval_scenes(s.prompts)
    captions = [sc.caption or make_caption(sc) for sc in scenes]
    seeds = [s.seed + i for i in range(len(captions))]

    say(f"3/5 profile ReCaT on the .acqe model ({s.profile_samples} samples, {s.steps} steps, "
        f"budget {s.budget})")
    t = time.perf_counter()
    train = ShapesDataset(seed=0)
    profile_prompts = [make_caption(train[i]) for i in range(s.profile_samples)]
    profile_cache(path, steps=s.steps, budgets=[s.budget], prompts=profile_prompts,
                  samples=s.profile_samples, guidance=s.guidance)
    timings["profile"] = time.perf_counter() - t

    say("4/5 generate: original weights, .acqe weights, .acqe + uniform cache, .acqe + ReCaT")
    variants: list[Variant] = []

    def run(name, pipe, cfg):
        pipe.set_progress_bar_config(disable=True)
        # warm-up (first-call allocations and kernel selection) so loop times compare like with like
        denoise_and_decode(pipe, captions[:2], steps=2, guidance=s.guidance, seeds=seeds[:2], config=None)
        latents, images, loop_s, _dec_s, full = denoise_and_decode(
            pipe, captions, steps=s.steps, guidance=s.guidance, seeds=seeds, config=cfg)
        variants.append(Variant(name, _to_uint8(images), loop_s, len(full)))

    t = time.perf_counter()
    original = load_original(s.model, ckpt)
    timings["load_original"] = time.perf_counter() - t
    run("original " + os.path.splitext(ckpt)[1], original, None)
    del original
    t = time.perf_counter()
    pipe = load_pipeline(path)
    timings["load_acqe"] = time.perf_counter() - t
    with AcqeReader(path) as r:
        meta = r.metadata
    run(".acqe", pipe, None)
    run(f".acqe + uniform cache ({s.budget}/{s.steps} full)", pipe,
        cache_config("uniform", steps=s.steps, budget=s.budget))
    run(f".acqe + ReCaT ({s.budget}/{s.steps} full)", pipe,
        cache_config("recat", steps=s.steps, budget=s.budget, metadata=meta, guidance=s.guidance))

    say("5/5 quality: classifier prompt accuracy, Fréchet distance, PSNR against the original")
    clf = load_classifier(os.path.join(os.path.dirname(ckpt), "classifier.pt"))
    ref = reference_figures(clf, scenes)
    base, acqe_base = variants[0].images, variants[1].images
    for i, v in enumerate(variants):
        v.figures = evaluate_images(clf, scenes, v.images)
        v.figures["psnr_vs_original"] = psnr(v.images, base)
        if i >= 1:  # what caching alone changes, separated from what the weight coding changes
            v.figures["psnr_vs_acqe"] = psnr(v.images, acqe_base)

    grid = np.concatenate([v.images[: s.grid_prompts] for v in variants])
    grid = grid.repeat(4, axis=1).repeat(4, axis=2)       # 32 px images: enlarge (nearest) to be seen
    grid_path = os.path.join(s.out_dir, "grid.png")
    save_png(grid_path, image_grid(grid, cols=min(s.grid_prompts, len(captions))))
    return DemoResult(path, grid_path, sizes, timings, variants, captions, ref)
