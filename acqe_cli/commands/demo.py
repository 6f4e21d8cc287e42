"""`acqe demo`: the whole story on the built-in trained model, with a figures table and a PNG grid."""
from __future__ import annotations

import click

from acqe_cli import checks


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@click.command("demo")
@click.option("--model", type=click.Choice(["sd-v1", "sdxl"]), default="sd-v1", show_default=True,
              help="Built-in model: sd-v1 (SD v1 layout) or sdxl (SDXL base layout: two text encoders, "
                   "size/crop conditioning).")
@click.option("--out", "out_dir", default="out/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the .acqe file, the image grid and figures.json.")
@click.option("--bits", type=checks.FiniteFloat(0.05, 64.0), default=None, help="Whole-file target in bits per parameter (default: encoder's).")
@click.option("--prompts", type=click.IntRange(2, 512), default=64, show_default=True,
              help="Evaluation prompts (one image each).")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--full-steps", "budget", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Cache budget: full UNet evaluations out of --steps.")
@click.option("--profile-samples", type=click.IntRange(8, 4096), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="CPU threads for torch (1 on a machine other jobs share: 2 threads competing stall each other).")
def command(model, out_dir, bits, prompts, steps, budget, profile_samples, threads):
    """Convert a built-in model, verify it, and generate with the original, the .acqe file, and caching."""
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    from acqe_demo.story import MODELS, DemoSettings, run_demo

    import sys
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 150)
    s = DemoSettings(model=model, out_dir=out_dir, bits=bits, prompts=prompts, steps=steps, budget=min(budget, steps),
                     grid_prompts=min(8, prompts), profile_samples=profile_samples, threads=threads)
    res = run_demo(s, say=lambda m: console.print(f"[bold cyan]{m}[/]"))

    sz = res.sizes
    t = Table(title="Sizes (every byte of the file counted)")
    for c in ("file", "bytes", "bits / parameter"):
        t.add_column(c, justify="right" if c != "file" else "left")
    t.add_row(MODELS[model][2], _fmt_bytes(sz["ckpt_bytes"]), f"{sz['ckpt_bytes'] * 8 / sz['params']:.2f}")
    t.add_row("fp16 weights (reference)", _fmt_bytes(sz["fp16_bytes"]), "16.00")
    t.add_row(".acqe (weights, configs, tokenizer, schedule)", _fmt_bytes(sz["acqe_bytes"]), f"{sz['bits_per_param']:.2f}")
    console.print(t)

    q = Table(title=f"Generation: {len(res.captions)} prompts, {s.steps} DDIM steps, guidance {s.guidance}")
    for c in ("variant", "full UNet steps", "loop s", "prompt acc", "attribute acc", "Fréchet dist", "PSNR vs original",
              "PSNR vs .acqe uncached"):
        q.add_column(c, justify="left" if c == "variant" else "right")
    for v in res.variants:
        f = v.figures
        p = f["psnr_vs_original"]
        pa = f.get("psnr_vs_acqe")
        q.add_row(v.name, str(v.full_unet_steps), f"{v.loop_seconds:.2f}", f"{f.get('prompt', float('nan')):.3f}",
                  f"{f.get('attribute', float('nan')):.3f}", f"{f.get('fd', float('nan')):.2f}",
                  "identical" if p == float("inf") else f"{p:.1f} dB",
                  "-" if pa is None else "identical" if pa == float("inf") else f"{pa:.1f} dB")
    ref = res.reference
    q.add_row("real images (classifier ceiling)", "-", "-", f"{ref['real'].get('prompt', float('nan')):.3f}",
              f"{ref['real'].get('attribute', float('nan')):.3f}", f"{ref['fd_real_vs_real']:.2f}", "-", "-")
    q.add_row("chance (captions of other scenes)", "-", "-", f"{ref['chance'].get('prompt', float('nan')):.3f}",
              f"{ref['chance'].get('attribute', float('nan')):.3f}", "-", "-", "-")
    console.print(q)
    console.print("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))
    console.print(f"Grid (rows: {', '.join(v.name for v in res.variants)}): [bold]{res.grid_path}[/]")
    for i, c in enumerate(res.captions[: s.grid_prompts]):
        console.print(f"  column {i + 1}: {c}")
    figures = {"model": model, "sizes": sz, "timings": res.timings, "reference": ref, "captions": res.captions,
               "variants": [{"name": v.name, "full_unet_steps": v.full_unet_steps, "loop_seconds": v.loop_seconds,
                             **v.figures} for v in res.variants]}
    with open(os.path.join(out_dir, "figures.json"), "w") as fh:
        json.dump(figures, fh, indent=1, default=str)
