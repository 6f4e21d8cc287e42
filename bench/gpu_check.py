"""One-call GPU check of the ReCaT runtime: fp16, SD v1.4-size pipeline, 512 px (64x64 latents), 50 steps.

Measures, for batch 1 and 4 (after a clock ramp-up and one untimed run of each; median of 3 interleaved
rounds): the denoising loop and the whole pipeline with no cache, DeepCache-style
uniform caching (interval 5 → 10 full steps) and a ReCaT schedule (7 full steps, the budget at which
ReCaT has to match uniform interval 5); the UNet full step vs cached step (branch 0 and 2); the VAE
decode; and `acqe generate`-equivalent generation from a `.acqe` file when ``--model`` is given.
Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``.

The SD v1.4-size stand-in has random weights (diffusers' SD v1.4 configs): speed is real, images are
noise. The ReCaT schedule is read from ``bench/_out/cache_quality.json`` when present (the demo model's
profile at 50 steps, B = 7), else DeepCache's non-uniform schedule with B = 7 (same cost: speed depends
only on the number of full steps).

Usage:
  bash bench/gpu_prepare.sh   # here, first: wheels + the demo .acqe with stored schedules (see that file)
  python bench/gpu_check.py --out /tmp/gpu --model gpu_payload/shapes.acqe   # on a CUDA machine (about 1 minute)
  python bench/gpu_check.py --smoke --out /tmp/gpu-smoke     # on CPU: tiny sizes, checks the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _recat_steps(steps: int, budget: int) -> tuple[list[int], str]:
    path = os.path.join(HERE, "_out", "cache_quality.json")
    try:
        with open(path) as f:
            q = json.load(f)
        if q["steps"] == steps:
            for r in q["rows"]:
                if r["kind"] == "recat" and r["budget"] == budget:
                    return r["full_steps"], "ReCaT schedule profiled on the demo model"
    except (OSError, KeyError, ValueError):
        pass
    from recat_runtime.cache.schedules import quadratic_schedule

    return list(quadratic_schedule(steps, budget)), "DeepCache non-uniform schedule (same number of full steps)"


def _cli_generate(model: str, out: str, device: str, dtype: str, steps: int, interval: int,
                  recat_budget: int) -> list[dict]:
    """Runs `acqe generate --json` for no cache, uniform every-N and the stored ReCaT schedule."""
    import contextlib
    import io

    from acqe_cli.main import main as acqe

    rows = []
    budget = -(-steps // interval)
    for cache in ("none", "uniform", "recat"):
        png = os.path.join(out, f"generate_{cache}.png")
        args = ["generate", model, "--prompt", "a red circle above a blue square", "--steps", str(steps),
                "--cache", cache, "--full-steps", str(budget if cache == "uniform" else recat_budget), "--device", device,
                "--dtype", dtype, "--batch", "4", "--out", png, "--json"]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            rc = acqe(args)
        wall = time.perf_counter() - t0
        if rc != 0:
            rows.append({"cache": cache, "rc": rc, "full_steps": [], "loop_seconds": 0.0, "decode_seconds": 0.0,
                         "load_seconds": 0.0, "wall_s": wall})
        else:
            rows.append({**json.loads(buf.getvalue()), "rc": rc, "wall_s": wall})
        print(rows[-1], flush=True)
    return rows


def _compact_timing(pipe, unet, lat, ctx_dim, device, dtype, timed, sync, steps, interval, smoke) -> dict:
    """Dense vs compact weights (uint8 indices + 16-entry codebook per row-scaled layer, rebuilt per layer
    on the fly): UNet step times, the cached step, and weight memory. The codebooks here come from a
    uniform 16-level grid of the random weights: speed and memory depend only on the layout."""
    import copy

    import numpy as np
    import torch

    from acqe_format import CodebookTensor
    from recat_runtime.cache.branch import branch_plan, capture_feature, shallow_forward
    from recat_runtime.compact import compact_bytes, make_compact

    cunet = copy.deepcopy(unet)
    levels = np.linspace(-1, 1, 16).astype(np.float32)
    for m in cunet.modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.nn.Parameter) or w.dim() < 2 or isinstance(m, torch.nn.Embedding):
            continue
        w32 = w.detach().float().reshape(w.shape[0], -1)
        scale = w32.abs().amax(1).clamp_min(1e-12)
        idx = torch.round((w32 / scale[:, None] + 1) * 7.5).clamp(0, 15).to(torch.uint8)
        parts = CodebookTensor(tuple(w.shape), levels, idx.reshape(-1).cpu().numpy(), scale.cpu().numpy(), None,
                               "float32")
        make_compact(m, parts, dtype, device)
    sync()
    held, dense = compact_bytes(cunet)
    out = {"compact_weight_bytes": held, "dense_weight_bytes": dense}
    rows = []
    with torch.inference_mode():
        for b in (1,) if smoke else (1, 4):
            x = torch.randn(2 * b, 4, lat, lat, device=device, dtype=dtype)
            ehs = torch.randn(2 * b, 77, ctx_dim, device=device, dtype=dtype)
            row = {"batch": b, "dense_full_s": timed(lambda: unet(x, 500, ehs)),
                   "compact_full_s": timed(lambda: cunet(x, 500, ehs))}
            plan = branch_plan(cunet, 0)
            f = capture_feature(cunet, plan, x, 500, ehs)
            row["compact_cached_b0_s"] = timed(lambda: shallow_forward(cunet, plan, f, x, 500, ehs))
            rows.append(row)
            print({"compact": row}, flush=True)
    out["rows"] = rows
    del cunet
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check_out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, to check the script itself")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 4])
    p.add_argument("--model", default=None, help="optional .acqe to time load + generate from the file")
    p.add_argument("--no-compact", action="store_true", help="skip the compact-weights timing")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from recat_runtime.sampling import denoise_and_decode
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache.branch import branch_plan, capture_feature, shallow_forward

    os.makedirs(a.out, exist_ok=True)
    if a.smoke:
        torch.set_num_threads(1)  # tiny models on a shared CPU: one thread avoids OpenMP spinning
    cuda = torch.cuda.is_available() and not a.smoke
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    steps = 6 if a.smoke else a.steps
    res = 64 if a.smoke else 512
    uniform_interval = 5
    recat_budget = 2 if a.smoke else 7
    report = {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "res": res, "steps": steps,
              "smoke": a.smoke, "runs": []}

    t0 = time.perf_counter()
    if a.smoke:
        from recat_runtime.testing import tiny_pipeline

        pipe = tiny_pipeline()
        res = 16
        report["res"] = res
    else:
        from bench.bench_cache import _sd14_pipeline

        pipe = _sd14_pipeline(dtype)
    pipe.to(device)
    report["build_s"] = time.perf_counter() - t0

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, reps=15):
        fn()
        sync()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        ts.sort()
        return ts[len(ts) // 2]

    unet = pipe.unet
    lat = res // pipe.vae_scale_factor
    ctx_dim = unet.config.cross_attention_dim
    recat_steps, recat_src = _recat_steps(steps, recat_budget)
    report["recat_schedule"] = {"full_steps": recat_steps, "source": recat_src}
    with torch.inference_mode():
        # ramp the GPU clocks up (idle clocks are ~6x lower) and let cuDNN pick its kernels before timing
        x = torch.randn(2, 4, lat, lat, device=device, dtype=dtype)
        ehs = torch.randn(2, 77, ctx_dim, device=device, dtype=dtype)
        t_end = time.perf_counter() + (0.2 if a.smoke else 3.0)
        while time.perf_counter() < t_end:
            unet(x, 500, ehs)
            sync()
        for b in a.batches:
            x = torch.randn(2 * b, 4, lat, lat, device=device, dtype=dtype)
            ehs = torch.randn(2 * b, 77, ctx_dim, device=device, dtype=dtype)
            row = {"batch": b, "unet_full_s": timed(lambda: unet(x, 500, ehs))}
            for m in (0, 2):
                plan = branch_plan(unet, m)
                f = capture_feature(unet, plan, x, 500, ehs)
                row[f"unet_cached_b{m}_s"] = timed(lambda: shallow_forward(unet, plan, f, x, 500, ehs))
            z = torch.randn(b, 4, lat, lat, device=device, dtype=dtype)
            row["vae_decode_s"] = timed(lambda: pipe.vae.decode(z), reps=5)
            # one candidate speed-up of the VAE decode that needs no new weights: channels-last convolutions
            pipe.vae.to(memory_format=torch.channels_last)
            row["vae_decode_channels_last_s"] = timed(lambda: pipe.vae.decode(z), reps=5)
            pipe.vae.to(memory_format=torch.contiguous_format)
            report.setdefault("unet", []).append(row)
            print(row, flush=True)

    if not a.no_compact:
        report["compact"] = _compact_timing(pipe, unet, lat, ctx_dim, device, dtype, timed, sync, steps, uniform_interval,
                                            a.smoke)

    prompts = "a photograph of an astronaut riding a horse"
    configs = [("none", None),
               (f"uniform N={uniform_interval}", RecatCacheConfig.interval(steps, uniform_interval)),
               (f"recat B={recat_budget}", RecatCacheConfig(steps, recat_steps))]
    # the same schedule with a trend correction (coefficients of the right shape; the timing does not
    # depend on their values): what the per-channel arithmetic on a cached step adds
    from recat_runtime.cache import CacheCorrection

    channels = branch_plan(unet, 0).feature_channels
    ones = np.ones((steps, channels), np.float32)
    trend = CacheCorrection(ones, np.zeros_like(ones), 0.5 * ones)
    configs.append((f"recat B={recat_budget} + trend", RecatCacheConfig(steps, recat_steps, correction=trend)))
    def one_run(b, label, cfg):
        helper = None
        if cfg == "deepcache":  # the peer: DeepCache's own helper on the same pipeline, branch 0
            from DeepCache import DeepCacheSDHelper

            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(cache_interval=uniform_interval, cache_branch_id=0)
            helper.enable()
            cfg = None
        try:
            _, _, loop_s, dec_s, full = denoise_and_decode(pipe, [prompts] * b, steps=steps, guidance=7.5,
                                                           seeds=list(range(b)), height=res, width=res, config=cfg)
        finally:
            if helper is not None:
                helper.disable()
        return loop_s, dec_s, (-(-steps // uniform_interval) if helper is not None else len(full))

    try:
        import DeepCache  # noqa: F401

        configs.append((f"deepcache pip N={uniform_interval}", "deepcache"))
    except ImportError:
        print("deepcache package not installed; peer skipped", flush=True)
    rounds = 1 if a.smoke else 3
    for b in a.batches:
        # every configuration once untimed (cuDNN autotune and lazy init of the cached path), then
        # `rounds` interleaved timed rounds; the median of each is reported
        for label, cfg in configs:
            one_run(b, label, cfg)
        times: dict[str, list] = {label: [] for label, _ in configs}
        for _ in range(rounds):
            for label, cfg in configs:
                times[label].append(one_run(b, label, cfg))
        base = None
        for label, _ in configs:
            ts = sorted(times[label])
            loop_s, dec_s, n_full = ts[len(ts) // 2]
            base = base or loop_s
            row = {"batch": b, "label": label, "full_steps": n_full, "loop_s": loop_s, "decode_s": dec_s,
                   "pipeline_s": loop_s + dec_s, "loop_speedup": base / loop_s,
                   "loop_s_all": [t[0] for t in times[label]]}
            report["runs"].append(row)
            print(row, flush=True)
    if cuda:
        report["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30

    if a.model:  # `acqe generate` itself, from a single .acqe file (the demo model with its stored schedule)
        report["acqe_generate"] = _cli_generate(a.model, a.out, str(device), "fp16" if cuda else "fp32",
                                                steps, uniform_interval, recat_budget)

    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    md = [f"# GPU check: {report['device']}, {report['dtype']}, {res} px, {steps} DDIM steps", "",
          "| batch | UNet full | cached b0 | cached b2 | VAE decode | VAE decode, channels-last |",
          "|---:|---:|---:|---:|---:|---:|"]
    for u in report["unet"]:
        md.append(f"| {u['batch']} | {u['unet_full_s'] * 1e3:.1f} ms | {u['unet_cached_b0_s'] * 1e3:.1f} ms "
                  f"({100 * u['unet_cached_b0_s'] / u['unet_full_s']:.1f}%) | {u['unet_cached_b2_s'] * 1e3:.1f} ms | "
                  f"{u['vae_decode_s'] * 1e3:.1f} ms | {u['vae_decode_channels_last_s'] * 1e3:.1f} ms |")
    md += ["", f"ReCaT schedule: {recat_steps} ({recat_src})", "",
           "| batch | run | full steps | loop s | pipeline s | VAE share | loop speed-up |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        md.append(f"| {r['batch']} | {r['label']} | {r['full_steps']} | {r['loop_s']:.2f} | {r['pipeline_s']:.2f} | "
                  f"{100 * r['decode_s'] / r['pipeline_s']:.0f}% | {r['loop_speedup']:.2f}× |")
    c = report.get("compact")
    if c:
        md += ["", f"Compact weights (uint8 indices + codebook, rebuilt per layer): UNet weights "
                   f"{c['compact_weight_bytes'] / 2**20:.0f} MiB vs {c['dense_weight_bytes'] / 2**20:.0f} MiB dense", "",
               "| batch | full step dense | full step compact | cached step compact |", "|---:|---:|---:|---:|"]
        for r in c["rows"]:
            md.append(f"| {r['batch']} | {r['dense_full_s'] * 1e3:.1f} ms | {r['compact_full_s'] * 1e3:.1f} ms | "
                      f"{r['compact_cached_b0_s'] * 1e3:.1f} ms |")
        md += ["", "| batch | run | full steps | loop s | pipeline s | VAE share | loop speed-up |",
               "|---:|---|---:|---:|---:|---:|---:|"]
    for g in report.get("acqe_generate", []):
        md.append(f"| 4 | `acqe generate` {a.model and os.path.basename(a.model)} --cache {g['cache']} | "
                  f"{len(g['full_steps'])} | {g['loop_seconds']:.2f} | {g['loop_seconds'] + g['decode_seconds']:.2f} | "
                  f"load {g['load_seconds']:.2f} s | (wall {g['wall_s']:.2f} s) |")
    with open(os.path.join(a.out, "gpu_check.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
