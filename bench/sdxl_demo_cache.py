"""ReCaT vs uniform caching on the SDXL demo's converted `.acqe`, at equal full steps and at fewer.

Usage: python bench/sdxl_demo_cache.py MODEL.acqe [--budgets 10 7] [--prompts 64] [--steps 50] [--threads 1]
                                       [--original CHECKPOINT]

MODEL.acqe must hold a ReCaT profile for DDIM, ``--steps``, guidance 4 (``acqe demo --model sdxl`` leaves one
in its file; ``acqe profile-cache`` stores one). Each variant runs exactly what ``acqe generate --cache MODE
--full-steps B`` runs (`recat_runtime.api.cache_config`: the stored schedule for that budget when there is
one, else the one derived from the profile's continuous model, with its correction) on the demo's held-out
prompts and seeds (those of `acqe_demo.story`). Prints one JSON line per variant: full steps, loop time,
prompt / attribute accuracy, Fréchet distance, PSNR against the uncached images of the same file.
``--original``: first the same prompts and seeds on the checkpoint's own weights (and PSNR against them).
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--budgets", type=int, nargs="*", default=[10, 7], help="none: only the uncached rows")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--original", default=None, help="the SDXL demo checkpoint the .acqe was converted from")
    a = ap.parse_args(argv)

    import torch

    from acqe_demo.metrics import eval_scenes, evaluate_images, load_classifier
    from acqe_demo.story import _to_uint8, load_original, psnr
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
    acqe = load_pipeline(a.model, device="cpu")
    clf = load_classifier()
    variants = [("none", None, acqe)] + [(m, b, acqe) for b in a.budgets for m in ("uniform", "recat")]
    if a.original:
        variants.insert(0, ("original", None, load_original("sdxl", a.original)))
    for p in {id(v[2]): v[2] for v in variants}.values():
        p.set_progress_bar_config(disable=True)
        denoise_and_decode(p, captions[:2], steps=2, guidance=a.guidance, seeds=seeds[:2], config=None)  # warm-up
    base = original = None
    for mode, budget, pipe in variants:
        cfg = None if mode == "original" else cache_config(mode, steps=a.steps, budget=budget, metadata=meta,
                                                           guidance=a.guidance)
        t = time.perf_counter()
        _, images, loop_s, _, full = denoise_and_decode(pipe, captions, steps=a.steps, guidance=a.guidance,
                                                        seeds=seeds, config=cfg)
        imgs = _to_uint8(images)
        if mode == "original":
            original = imgs
        elif base is None:
            base = imgs
        ev = evaluate_images(clf, scenes, imgs)
        row = {"mode": mode, "budget": budget, "full_steps": sorted(int(s) for s in full),
               "loop_s": round(loop_s, 2), "wall_s": round(time.perf_counter() - t, 1),
               "prompt_acc": ev["prompt"], "attr_acc": ev["attribute"], "fd": ev["fd"], "n": len(captions)}
        if base is not None:
            row["psnr_vs_uncached"] = psnr(imgs, base)
        if original is not None:
            row["psnr_vs_original"] = psnr(imgs, original)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
