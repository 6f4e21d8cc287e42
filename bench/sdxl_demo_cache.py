"""ReCaT vs uniform caching on the SDXL demo's converted `.acqe`, at equal full steps and at fewer.

Usage: python bench/sdxl_demo_cache.py MODEL.acqe [--budgets 10 7] [--prompts 64] [--steps 50] [--threads 1]

MODEL.acqe must hold a ReCaT profile for DDIM, ``--steps``, guidance 4 (``acqe demo --model sdxl`` leaves one
in its file; ``acqe profile-cache`` stores one). Each variant runs exactly what ``acqe generate --cache MODE
--full-steps B`` runs (`recat_runtime.api.cache_config`: the stored schedule for that budget when there is
one, else the one derived from the profile's continuous model, with its correction) on the demo's held-out
prompts and seeds (those of `acqe_demo.story`). Prints one JSON line per variant: full steps, loop time,
prompt / attribute accuracy, Fréchet distance, PSNR against the uncached images of the same file.
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 7])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    from acqe_demo.metrics import eval_scenes, evaluate_images, load_classifier
    from acqe_demo.story import _to_uint8, psnr
    from acqe_format import AcqeReader
    from recat_runtime.api import cache_config
    from recat_runtime.loading import load_pipeline
    from recat_runtime.sampling import denoise_and_decode

    torch.set_num_threads(a.threads)
    scenes = eval_scenes(a.prompts)
    captions = [sc.caption for sc in scenes]
    seeds = list(range(len(captions)))              # the story's seeds (DemoSettings.seed 0)
    with AcqeReader(a.model) as r:
        meta = r.metadata
    pipe = load_pipeline(a.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    clf = load_classifier()
    denoise_and_decode(pipe, captions[:2], steps=2, guidance=a.guidance, seeds=seeds[:2], config=None)  # warm-up
    variants = [("none", None)] + [(m, b) for b in a.budgets for m in ("uniform", "recat")]
    base = None
    for mode, budget in variants:
        cfg = cache_config(mode, steps=a.steps, budget=budget, metadata=meta, guidance=a.guidance)
        t = time.perf_counter()
        _, images, loop_s, _, full = denoise_and_decode(pipe, captions, steps=a.steps, guidance=a.guidance,
                                                        seeds=seeds, config=cfg)
        imgs = _to_uint8(images)
        base = imgs if base is None else base
        ev = evaluate_images(clf, scenes, imgs)
        print(json.dumps({"mode": mode, "budget": budget, "full_steps": sorted(int(s) for s in full),
                          "loop_s": round(loop_s, 2), "wall_s": round(time.perf_counter() - t, 1),
                          "prompt_acc": ev["prompt"], "attr_acc": ev["attribute"], "fd": ev["fd"],
                          "psnr_vs_uncached": psnr(imgs, base)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
