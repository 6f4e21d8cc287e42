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


def _compact_timing(pipe, unet, lat, ctx_dim, device, dtype, timed, sync, steps, interval, smoke,
                    compile_unet: bool = False) -> dict:
    """Dense vs compact weights (uint8 indices + 16-entry codebook per row-scaled layer, rebuilt when a
    layer runs): UNet full-step time per rebuild backend (`recat_runtime.rebuild`: torch = gather,
    multiply and cast kernels; triton = one fused pass; compile = the formula through torch.compile), the
    cached step, and UNet weight memory (compact parts + the other parameters vs everything dense).
    Targets (issue 13): compact full step <= 1.15x dense at batch 1 and 4, weight memory <= 55% of fp16.
    The codebooks come from a uniform 16-level grid of the random weights: speed and memory depend only on
    the layout."""
    import copy

    import numpy as np
    import torch

    from acqe_format import CodebookTensor
    from recat_runtime import rebuild as R
    from recat_runtime.cache.branch import branch_plan, capture_feature, shallow_forward
    from recat_runtime.compact import CompactTensor, compact_bytes, make_compact

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
    others = sum(p.numel() * p.element_size() for p in cunet.parameters() if not isinstance(p, CompactTensor))
    all_dense = sum(p.numel() * p.element_size() for p in unet.parameters())
    out = {"compact_weight_bytes": held, "dense_weight_bytes": dense, "unet_weight_bytes_compact": held + others,
           "unet_weight_bytes_dense": all_dense, "unet_weight_ratio": (held + others) / all_dense,
           "triton": R.triton_available()}
    backends = ["torch"] + (["triton"] if R.triton_available() and device.type == "cuda" else []) + \
        ([] if smoke else ["compile"])
    rows = []
    with torch.inference_mode():
        for b in (1,) if smoke else (1, 4):
            x = torch.randn(2 * b, 4, lat, lat, device=device, dtype=dtype)
            ehs = torch.randn(2 * b, 77, ctx_dim, device=device, dtype=dtype)
            row = {"batch": b, "dense_full_s": timed(lambda: unet(x, 500, ehs))}
            R.set_backend("torch")
            ref = cunet(x, 500, ehs).sample          # each fused rebuild must give exactly the formula's output
            R.set_backend("auto")
            for backend in backends:
                R.set_backend(backend)
                try:
                    row[f"compact_full_{backend}_s"] = timed(lambda: cunet(x, 500, ehs))
                    row[f"compact_{backend}_equal_torch"] = bool(torch.equal(cunet(x, 500, ehs).sample, ref))
                finally:
                    R.set_backend("auto")
                row[f"ratio_{backend}"] = row[f"compact_full_{backend}_s"] / row["dense_full_s"]
            plan = branch_plan(cunet, 0)
            f = capture_feature(cunet, plan, x, 500, ehs)
            row["compact_cached_b0_s"] = timed(lambda: shallow_forward(cunet, plan, f, x, 500, ehs))
            if compile_unet:   # the whole UNet through torch.compile, dense and compact (inductor fuses the rebuild)
                cd, cc = torch.compile(unet), torch.compile(cunet)
                row["compiled_dense_full_s"] = timed(lambda: cd(x, 500, ehs), reps=10)
                row["compiled_compact_full_s"] = timed(lambda: cc(x, 500, ehs), reps=10)
                row["ratio_compiled"] = row["compiled_compact_full_s"] / row["compiled_dense_full_s"]
            rows.append(row)
            print({"compact": row}, flush=True)
    out["rows"] = rows
    del cunet
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _profile_timing(pipe, steps: int, res: int, sync, smoke: bool) -> dict:
    """The ReCaT profiling pass as `acqe convert --profile-cache` runs it (its default samples, DDIM, CKA and
    pair moments of the branch-0 feature), on the SD v1.4-size pipeline: the "stated time for SD v1.4 on a
    GPU"."""
    from acqe_cli.commands.convert import PROFILE_SAMPLES
    from recat_runtime.api import profile_feature_bytes, auto_profile_batch
    from recat_runtime.cache.profile import ProfileSettings, profile_similarity

    samples = 4 if smoke else PROFILE_SAMPLES
    prompts = [f"a photograph of object {k} on a table" for k in range(samples)]
    batch = auto_profile_batch(samples, profile_feature_bytes(pipe, steps, 7.5, 0, res, res))
    settings = ProfileSettings(steps=steps, guidance=7.5, branch=0, height=res, width=res, samples=samples,
                               batch_size=batch, seed=0)
    pipe.set_progress_bar_config(disable=True)
    sync()
    t0 = time.perf_counter()
    _, info = profile_similarity(pipe, prompts, settings, collect_moments=True)
    sync()
    return {"samples": samples, "steps": steps, "batch": batch, "seconds": time.perf_counter() - t0,
            "moments_collected": info.get("moments") is not None}


def _controlnet_timing(pipe, steps: int, res: int, interval: int, sync, smoke: bool) -> dict:
    """One image (CFG) through a ControlNet pipeline on the SD v1.4-size model: uncached, uniform caching
    with the whole ControlNet at every step, and with the ControlNet shortened on cached steps
    (`recat_runtime/cache/controlnet_hook.py`); median loop seconds (bench_recat.py controlnet-speed)."""
    import numpy as np

    from bench.bench_recat import CONTROLNET_RUNS, controlnet_run_times, with_fresh_controlnet

    cpipe = with_fresh_controlnet(pipe)
    budget = -(-steps // interval)
    times = controlnet_run_times(cpipe, steps=steps, budget=budget, guidance=7.5, height=res, width=res,
                                 reps=1 if smoke else 3, sync=sync)
    med = {k: float(np.median(times[k])) for k in CONTROLNET_RUNS}
    return {"steps": steps, "budget": budget, "res": res, "median_s": med, "all_s": times,
            "speedup": {k: med[CONTROLNET_RUNS[0]] / v for k, v in med.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check_out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, to check the script itself")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 4])
    p.add_argument("--model", default=None, help="optional .acqe to time load + generate from the file")
    p.add_argument("--no-compact", action="store_true", help="skip the compact-weights timing")
    p.add_argument("--compile-unet", action="store_true",
                   help="compact timing: also torch.compile the whole UNet, dense and compact (minutes)")
    p.add_argument("--compact-only", action="store_true", help="only the UNet and compact-weights timings")
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
                                            a.smoke, a.compile_unet)
    if a.compact_only:
        configs_to_run, a.model = False, None
    else:
        configs_to_run = True

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
    for b in a.batches if configs_to_run else ():
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

    if configs_to_run:
        report["profile"] = _profile_timing(pipe, steps, res, sync, a.smoke)
        print(report["profile"], flush=True)
        report["controlnet"] = _controlnet_timing(pipe, steps, res, uniform_interval, sync, a.smoke)
        print(report["controlnet"]["median_s"], flush=True)

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
    if report.get("profile"):
        pr = report["profile"]
        md += ["", f"ReCaT profile (as `acqe convert --profile-cache`): {pr['samples']} samples x {pr['steps']} steps, "
                   f"minibatch {pr['batch']}: {pr['seconds']:.1f} s"]
    if report.get("controlnet"):
        cn = report["controlnet"]
        md += ["", f"ControlNet run, batch 1, uniform {cn['budget']} of {cn['steps']}: "
                   + "; ".join(f"{k} {v:.2f} s ({cn['speedup'][k]:.2f}x)" for k, v in cn["median_s"].items())]
    if report["runs"]:
        md += ["", f"ReCaT schedule: {recat_steps} ({recat_src})", "",
               "| batch | run | full steps | loop s | pipeline s | VAE share | loop speed-up |",
               "|---:|---|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        md.append(f"| {r['batch']} | {r['label']} | {r['full_steps']} | {r['loop_s']:.2f} | {r['pipeline_s']:.2f} | "
                  f"{100 * r['decode_s'] / r['pipeline_s']:.0f}% | {r['loop_speedup']:.2f}× |")
    c = report.get("compact")
    if c:
        backends = [k[len("ratio_"):] for k in c["rows"][0] if k.startswith("ratio_")]
        md += ["", f"Compact weights (uint8 indices + codebook, rebuilt when a layer runs): UNet weights "
                   f"{c['unet_weight_bytes_compact'] / 2**20:.0f} MiB vs {c['unet_weight_bytes_dense'] / 2**20:.0f} MiB "
                   f"dense ({100 * c['unet_weight_ratio']:.0f}%; target <= 55%)", "",
               "| batch | full step dense | " + " | ".join(f"compact, {k} rebuild" for k in backends)
               + " | cached step compact |", "|---:|---:|" + "---:|" * (len(backends) + 1)]
        for r in c["rows"]:
            cells = []
            for k in backends:
                t = r.get(f"compact_full_{k}_s", r.get("compiled_compact_full_s"))
                exact = r.get(f"compact_{k}_equal_torch")
                cells.append(f"{t * 1e3:.1f} ms ({r[f'ratio_{k}']:.2f}x{'' if exact is None else ', exact' if exact else ', NOT exact'})")
            md.append(f"| {r['batch']} | {r['dense_full_s'] * 1e3:.1f} ms | " + " | ".join(cells)
                      + f" | {r['compact_cached_b0_s'] * 1e3:.1f} ms |")
        md.append("(target: compact full step <= 1.15x dense; exact = same output bits as the torch rebuild)")
    if report.get("acqe_generate"):
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
