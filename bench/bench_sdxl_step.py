"""SDXL base at full size, one UNet step from the converted file (issue 14, items 4 and 5).

Loads the UNet of the SDXL stand-in converted by `bench/bench_sdxl.py` exactly as `acqe generate` does
(every weight decoded from the .acqe), then times on the CPU, batch 1, one repetition each (a 1024 px
step takes minutes on 2 cores):

- one full forward at a 32x32 latent (256 px);
- at a 128x128 latent (1024 px, SDXL's native size): one full step, and one cached step of each branch
  (the shallow part fed the deep feature a full step captured; ReCaT and uniform caching run exactly this).

    PYTHONPATH=$PWD nice python bench/bench_sdxl_step.py --model bench/_data/sdxl-base-standin-full.acqe

Writes bench/_out/sdxl_step.json and prints a Markdown table. Random weights: this measures cost, not
image quality.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(HERE, "_data", "sdxl-base-standin-full.acqe"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--branches", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--latent", type=int, default=128, help="latent side of the cached-step timing (128: 1024 px)")
    ap.add_argument("--out", default=os.path.join(HERE, "_out", "sdxl_step.json"))
    a = ap.parse_args(argv)
    import torch

    from recat_runtime.cache.branch import branch_plan, capture_feature, shallow_forward
    from recat_runtime.loading import load_unet

    torch.set_num_threads(a.threads)
    load_s, unet = _timed(lambda: load_unet(a.model, torch_dtype=torch.float32, threads=a.threads))
    unet.eval()
    cfg = unet.config
    res = {"model": a.model, "threads": a.threads, "dtype": "float32", "batch": 1, "load_s": round(load_s, 2),
           "unet_params": sum(p.numel() for p in unet.parameters()), "load_avg_start": os.getloadavg()}
    print(f"loaded the UNet ({res['unet_params'] / 1e9:.2f} B parameters) in {load_s:.1f} s", flush=True)

    def inputs(side: int):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, cfg.in_channels, side, side, generator=g)
        ctx = torch.randn(1, 77, cfg.cross_attention_dim, generator=g)
        pixels = float(side * 8)
        added = {"text_embeds": torch.randn(1, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim,
                                            generator=g),
                 "time_ids": torch.tensor([[pixels, pixels, 0.0, 0.0, pixels, pixels]])}
        return x, ctx, added

    with torch.inference_mode():
        x, ctx, added = inputs(32)
        unet(x, 500, ctx, added_cond_kwargs=added)           # warm-up (allocator, kernels)
        s, out = _timed(lambda: unet(x, 500, ctx, added_cond_kwargs=added).sample)
        res["forward_32x32_s"] = round(s, 3)
        res["forward_32x32_finite"] = bool(torch.isfinite(out).all())
        print(f"full forward at a 32x32 latent: {s:.2f} s", flush=True)

        x, ctx, added = inputs(a.latent)
        s, _ = _timed(lambda: unet(x, 500, ctx, added_cond_kwargs=added))
        res["full_step_s"] = round(s, 2)
        print(f"full step at {a.latent * 8} px: {s:.1f} s", flush=True)
        for m in a.branches:
            plan = branch_plan(unet, m)
            f = capture_feature(unet, plan, x, 500, ctx, added_cond_kwargs=added)
            s, _ = _timed(lambda: shallow_forward(unet, plan, f, x, 500, ctx, added_cond_kwargs=added))
            res[f"cached_step_b{m}_s"] = round(s, 2)
            res[f"cached_share_b{m}"] = round(s / res["full_step_s"], 4)
            print(f"cached step, branch {m}: {s:.2f} s ({100 * s / res['full_step_s']:.1f}% of a full step)",
                  flush=True)
    res["load_avg_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n| UNet from the .acqe | 32x32 latent, full | {a.latent * 8} px, full | "
          + " | ".join(f"{a.latent * 8} px, cached (branch {m})" for m in a.branches) + " |")
    print("|---:|---:|---:|" + "---:|" * len(a.branches))
    print(f"| {res['load_s']} s | {res['forward_32x32_s']} s | {res['full_step_s']} s | "
          + " | ".join(f"{res[f'cached_step_b{m}_s']} s ({100 * res[f'cached_share_b{m}']:.1f}%)"
                       for m in a.branches) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
