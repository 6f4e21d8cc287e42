"""ReCaT / DeepCache caching benchmark: quality vs full computation, and CPU wall-clock.

Subcommands (results go to bench/_out/ as JSON; `report` turns them into tables + the PNG curve):

  quality   on the project's model (a `.acqe`): PSNR of final images vs the full computation with the
            same seed, prompt accuracy and Fréchet distance (acqe_demo.metrics), for no cache, uniform
            every-N (DeepCache), DeepCache's non-uniform schedule, ReCaT at several budgets (with and
            without the per-channel correction), and the `deepcache` pip package's helper side by side.
  speed     wall-clock on CPU: UNet full step vs cached step, the denoising loop and the whole
            pipeline (VAE decode share) for an SD v1.4-size stand-in (random weights, diffusers' SD v1.4
            configs) at a small resolution, plus the deepcache helper on the same pipeline.
  load      peak memory of `load_pipeline` (subprocess, ru_maxrss) against the size of the weights.
  report    prints markdown tables and writes bench/results/cache_curve.png.
  sets      per budget, ReCaT (the schedule derived from the model's one profile) and uniform caching on
            several independent held-out sets, flagging every budget whose quality is below a smaller
            budget's, with ReCaT - uniform and bootstrap intervals: `bench_recat.py quality`, whose options it
            takes (issue 15's monotonicity table).

Examples:
  nice -n 10 python bench/bench_cache.py quality --model bench/_out/shapes.acqe --steps 50 --n 64
  nice -n 10 python bench/bench_cache.py speed --res 256 --steps 10
  python bench/bench_cache.py report
  nice -n 10 python bench/bench_cache.py sets --model demo.acqe --budgets 5 6 7 8 9 10 11 12 --sets 3 --n 64
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_common import OUT, psnr_stats, save_json  # noqa: E402


def _load(name: str):
    with open(os.path.join(OUT, name)) as f:
        return json.load(f)


def _to_uint8(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in images])


# --------------------------------------------------------------------------------------------------
# quality on the project's model
# --------------------------------------------------------------------------------------------------
def cmd_quality(a):
    import torch

    from recat_runtime.api import profile_cache
    from recat_runtime.sampling import denoise_and_decode
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache import schedules as S
    from recat_runtime.cache.store import find_schedule
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    os.makedirs(OUT, exist_ok=True)
    model = os.path.join(OUT, "cache_model.acqe")
    if a.stored:  # evaluate the schedules already stored in the file (no profiling; read-only)
        model = a.model
    else:
        shutil.copyfile(a.model, model)  # profile-cache writes into this copy, never into the input

    if a.smoke:
        captions = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "square")][: a.n]
        scenes = None
        prof_prompts = captions
    else:
        from acqe_demo.dataset import ShapesDataset, make_caption
        from acqe_demo.metrics import eval_scenes

        scenes = eval_scenes(a.n, seed=a.eval_seed)
        captions = [make_caption(s) for s in scenes]
        ds = ShapesDataset(seed=7919)  # profiling prompts: a stream neither training nor evaluation uses
        # one prompt stream: profiling takes the first a.samples, schedule validation the next ones
        prof_prompts = [make_caption(ds[i]) for i in range(a.samples + a.validation_samples)]

    steps, g = a.steps, a.guidance
    budgets = sorted(set(a.recat_budgets))
    t0 = time.perf_counter()
    if a.stored:
        from acqe_format import AcqeReader
        from recat_runtime.cache.store import find_profile

        with AcqeReader(model) as r:
            meta = r.metadata
        stored = find_profile(meta, sampler="ddim", steps=steps, guidance=g, branch=a.branch)
        if stored is None:
            raise SystemExit(f"--stored: {model} has no ReCaT profile for ddim {steps} steps guidance {g}")
        prof = {"schedules": [s for s in stored["schedules"] if s["budget"] in budgets], "similarity":
                stored["similarity"], "metadata": meta, "samples": stored.get("samples"), "stored": True}
    else:
        prof = profile_cache(model, steps=steps, budgets=budgets, prompts=prof_prompts, samples=a.samples,
                             guidance=g, device="cpu", batch_size=a.profile_batch, branch=a.branch,
                             weighting=a.weighting, validation_samples=a.validation_samples, trend=not a.no_trend,
                             on_policy_samples=a.on_policy_samples,
                             progress=lambda ph, i, n: print(f"  {ph} {i}/{n}", flush=True))
    profile_s = time.perf_counter() - t0
    meta = prof["metadata"]
    print(f"profiled in {profile_s:.0f} s: " + "; ".join(f"B={s['budget']}: {s['full_steps']}" for s in prof["schedules"]))
    for s in prof["schedules"]:
        sel = s.get("selection")
        if sel:
            print(f"  B={s['budget']}: chose {sel['chosen']} (validation PSNR {sel['psnr']:.2f}, uniform "
                  f"{sel['uniform_psnr']:.2f}); " + ", ".join(f"{c['weighting']} {c['full_steps']} {c['psnr']:.2f}"
                                                              for c in sel["candidates"]), flush=True)
    chosen = {s["budget"]: s for s in prof["schedules"]}

    pipe = load_pipeline(model, device="cpu")
    seeds = [a.seed_base + i for i in range(len(captions))]

    def run(config, label):
        imgs, loop_s, dec_s = [], 0.0, 0.0
        for i in range(0, len(captions), a.batch):
            _, im, ls, ds_, _ = denoise_and_decode(pipe, captions[i:i + a.batch], steps=steps, guidance=g,
                                                   seeds=seeds[i:i + a.batch], config=config)
            imgs.append(_to_uint8(im))
            loop_s += ls
            dec_s += ds_
        print(f"  {label}: loop {loop_s:.1f} s", flush=True)
        return np.concatenate(imgs), loop_s, dec_s

    configs = [("none", "none", None)]
    for n_int in a.intervals:
        configs.append(("uniform", f"uniform N={n_int}", RecatCacheConfig.interval(steps, n_int, branch=a.branch)))
    for b in a.quad_budgets:
        configs.append(("quadratic", f"quadratic B={b}", RecatCacheConfig.quadratic(steps, b, branch=a.branch)))
    for b in budgets:
        full, corr, _ = find_schedule(meta, sampler="ddim", steps=steps, budget=b, guidance=g, branch=a.branch)
        configs.append(("recat", f"recat B={b}", RecatCacheConfig(steps, full, branch=a.branch)))
        if corr is not None:
            configs.append(("recat+dec", f"recat+dec B={b}", RecatCacheConfig(steps, full, branch=a.branch,
                                                                              correction=corr)))
    # ReCaT variants from the same profiling pass (nothing stored): DP on the residual the correction
    # cannot remove (+ correction), and CKA weighted by each step's sigma decrement
    moments = prof.get("moments")
    if moments is not None and a.variant_budgets:
        from recat_runtime.cache.profile import correction_from_moments, residual_distance, sigma_weights
        from recat_runtime.cache.schedules import optimal_schedule

        d_res = residual_distance(moments)
        w_sig = sigma_weights(type(pipe.scheduler).from_config(pipe.scheduler.config), steps)
        for b in a.variant_budgets:
            full, _ = optimal_schedule(d_res, b)
            corr, _ = correction_from_moments(moments, full)
            configs.append(("recat-res+dec", f"recat-res+dec B={b}",
                            RecatCacheConfig(steps, full, branch=a.branch, correction=corr)))
            full, _ = optimal_schedule(1 - np.asarray(prof["similarity"]), b, w_sig)
            corr, _ = correction_from_moments(moments, full)
            configs.append(("recat-sigma+dec", f"recat-σ+dec B={b}",
                            RecatCacheConfig(steps, full, branch=a.branch, correction=corr)))
    for b in a.uniform_budgets:  # uniform at the ReCaT budgets (not a DeepCache interval)
        configs.append(("uniform-b", f"uniform B={b}", RecatCacheConfig.uniform(steps, b, branch=a.branch)))
        if moments is not None:  # the same correction ReCaT gets, fitted for the uniform schedule (fair pair)
            from recat_runtime.cache.profile import correction_from_moments

            uni = S.uniform_schedule(steps, b)
            corr, _ = correction_from_moments(moments, uni)
            configs.append(("uniform-b+dec", f"uniform+dec B={b}",
                            RecatCacheConfig(steps, uni, branch=a.branch, correction=corr)))

    if moments is not None and a.trend_budgets:
        # the fitted-trend correction (as profile-cache fits it) on uniform schedules: the
        # fair peer of a ReCaT schedule that was stored with a trend correction
        from recat_runtime.cache.profile import ProfileSettings, fit_correction_on_policy, trend_correction_from_moments

        settings = ProfileSettings(steps=steps, guidance=g, branch=a.branch, samples=a.on_policy_samples,
                                   batch_size=a.profile_batch)
        for b in a.trend_budgets:
            uni = S.uniform_schedule(steps, b)
            corr, _ = trend_correction_from_moments(moments, uni)
            if a.on_policy_samples > 0:
                corr, _ = fit_correction_on_policy(pipe, prof_prompts, settings, uni, corr, trend=True)
            configs.append(("uniform-b+trend", f"uniform+trend B={b}",
                            RecatCacheConfig(steps, uni, branch=a.branch, correction=corr)))

    if a.forecast:  # the same schedules with first-order forecasting of the cached feature (no correction)
        for n_int in a.intervals:
            configs.append(("uniform+fc", f"uniform N={n_int} +forecast",
                            RecatCacheConfig.interval(steps, n_int, branch=a.branch, forecast=True)))
        for b in budgets:
            full, _, _ = find_schedule(meta, sampler="ddim", steps=steps, budget=b, guidance=g, branch=a.branch)
            configs.append(("recat+fc", f"recat B={b} +forecast", RecatCacheConfig(steps, full, branch=a.branch,
                                                                                   forecast=True)))
        for b in a.uniform_budgets:
            configs.append(("uniform-b+fc", f"uniform B={b} +forecast",
                            RecatCacheConfig.uniform(steps, b, branch=a.branch, forecast=True)))

    classifier = None
    if scenes is not None:
        from acqe_demo.metrics import evaluate_images, load_classifier

        classifier = load_classifier(a.classifier) if a.classifier else load_classifier()

    rows = []
    ref = None
    for kind, label, cfg in configs:
        imgs, loop_s, dec_s = run(cfg, label)
        if ref is None:
            ref = imgs
        full = S.no_cache_schedule(steps) if cfg is None else cfg.full_steps
        row = {"kind": kind, "label": label, "budget": len(full), "full_steps": list(full),
               "loop_s": loop_s, "decode_s": dec_s}
        if kind in ("recat", "recat+dec"):
            b_req = int(label.rsplit("=", 1)[1])
            row["requested_budget"] = b_req
            row["weighting"] = chosen[b_req].get("weighting")
        row.update(psnr_stats(imgs, ref))
        if classifier is not None:
            ev = evaluate_images(classifier, scenes, imgs)
            row.update({"prompt_acc": ev["prompt"], "attr_acc": ev["attribute"], "fd": ev["fd"]})
        rows.append(row)
        if kind == "uniform" and label.endswith(f"N={a.peer_interval}"):
            uniform_peer = imgs

    # the deepcache pip package on the same pipeline (uniform interval, branch 0, DDIM)
    try:
        from DeepCache import DeepCacheSDHelper

        for n_int in a.peer_intervals:
            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(cache_interval=n_int, cache_branch_id=a.branch)
            helper.enable()
            try:
                imgs, loop_s, dec_s = run(None, f"deepcache-pip N={n_int}")
            finally:
                helper.disable()
            row = {"kind": "deepcache-pip", "label": f"deepcache pip N={n_int}",
                   "budget": len(S.interval_schedule(steps, n_int)), "loop_s": loop_s, "decode_s": dec_s}
            row.update(psnr_stats(imgs, ref))
            if n_int == a.peer_interval:
                row["psnr_vs_ours_uniform"] = psnr_stats(imgs, uniform_peer)["psnr"]
            if classifier is not None:
                ev = evaluate_images(classifier, scenes, imgs)
                row.update({"prompt_acc": ev["prompt"], "attr_acc": ev["attribute"], "fd": ev["fd"]})
            rows.append(row)
    except ImportError:
        print("  deepcache package not installed; skipped")

    ref_figs = None
    if classifier is not None:
        from acqe_demo.metrics import reference_figures

        ref_figs = reference_figures(classifier, scenes)
    out = {"model": a.model, "classifier": a.classifier or "acqe_demo/weights/classifier.pt", "steps": steps, "guidance": g, "n_images": len(captions), "branch": a.branch,
           "eval_seed": a.eval_seed, "seed_base": a.seed_base,
           "profile": {k: v for k, v in prof.items() if k not in ("metadata", "similarity", "moments")},
           "profile_wall_s": profile_s, "similarity": np.round(prof["similarity"], 5).tolist(),
           "threads": a.threads, "load_avg": os.getloadavg(), "rows": rows, "reference": ref_figs}
    print("wrote", save_json(a.out_name or ("cache_quality.json" if not a.smoke else "cache_quality_smoke.json"), out))


# --------------------------------------------------------------------------------------------------
# CPU speed on the SD v1.4-size stand-in
# --------------------------------------------------------------------------------------------------
def _sd14_pipeline(dtype):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from recat_runtime.testing import SCHEDULER_CONFIG, sd14_text_config, sd14_unet_config, sd14_vae_config
    from recat_runtime.tokenizer import build_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd14_unet_config()).eval().to(dtype)
    vae = AutoencoderKL(**sd14_vae_config()).eval().to(dtype)
    text = CLIPTextModel(CLIPTextConfig(**sd14_text_config())).eval().to(dtype)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=build_clip_tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def cmd_speed(a):
    import torch

    from recat_runtime.sampling import denoise_and_decode
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache.branch import branch_plan, capture_feature, shallow_forward

    from recat_runtime.loading import torch_dtype

    torch.set_num_threads(a.threads)
    dtype = torch_dtype(a.dtype)
    t0 = time.perf_counter()
    if a.model:  # the SD v1.4-size stand-in converted to .acqe: load it the way `acqe generate` does
        from recat_runtime.loading import load_pipeline

        pipe = load_pipeline(a.model, device="cpu", torch_dtype=dtype)
    else:
        pipe = _sd14_pipeline(dtype)
    build_s = time.perf_counter() - t0
    unet = pipe.unet
    lat = a.res // 8
    batch = 2 * a.batch  # CFG
    x = torch.randn(batch, 4, lat, lat, dtype=dtype)
    ehs = torch.randn(batch, 77, 768, dtype=dtype)
    res = {"model": a.model or "random init (diffusers SD v1.4 configs)", "res": a.res, "latent": lat, "steps": a.steps, "dtype": a.dtype, "threads": a.threads,
           "batch": a.batch, "build_s": build_s, "params_unet": sum(p.numel() for p in unet.parameters())}
    with torch.inference_mode():
        unet(x, 500, ehs)  # warm-up
        res["unet_full_s"] = _median_time(lambda: unet(x, 500, ehs), a.reps)
        for m in a.branches:
            plan = branch_plan(unet, m)
            f = capture_feature(unet, plan, x, 500, ehs)
            res[f"unet_cached_b{m}_s"] = _median_time(lambda: shallow_forward(unet, plan, f, x, 500, ehs),
                                                      a.reps)
        z = torch.randn(a.batch, 4, lat, lat, dtype=dtype)
        res["vae_decode_s"] = _median_time(lambda: pipe.vae.decode(z), max(1, a.reps - 1))
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}, flush=True)

    runs = []
    prompts = ["a photograph of an astronaut riding a horse"] * a.batch
    seeds = list(range(a.batch))
    plans = [("none", None)] + [(f"uniform N={n}", RecatCacheConfig.interval(a.steps, n)) for n in a.intervals]
    if a.recat_budget:
        plans.append((f"recat-like B={a.recat_budget} (quadratic schedule; speed depends only on B)",
                      RecatCacheConfig.quadratic(a.steps, a.recat_budget)))
    for label, cfg in plans:
        _, _, loop_s, dec_s, full = denoise_and_decode(pipe, prompts, steps=a.steps, guidance=7.5, seeds=seeds,
                                                       height=a.res, width=a.res, config=cfg)
        runs.append({"label": label, "budget": len(full), "loop_s": loop_s, "decode_s": dec_s,
                     "pipeline_s": loop_s + dec_s})
        print(runs[-1], flush=True)
    try:
        from DeepCache import DeepCacheSDHelper

        for n in a.intervals:
            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(cache_interval=n, cache_branch_id=0)
            helper.enable()
            try:
                _, _, loop_s, dec_s, full = denoise_and_decode(pipe, prompts, steps=a.steps, guidance=7.5,
                                                               seeds=seeds, height=a.res, width=a.res)
            finally:
                helper.disable()
            runs.append({"label": f"deepcache pip N={n}", "budget": -(-a.steps // n), "loop_s": loop_s,
                         "decode_s": dec_s, "pipeline_s": loop_s + dec_s})
            print(runs[-1], flush=True)
    except ImportError:
        pass
    res["runs"] = runs
    res["load_avg"] = os.getloadavg()
    print("wrote", save_json(f"cache_speed_{a.res}_{a.dtype}.json", res))


# --------------------------------------------------------------------------------------------------
# CPU wall-clock on the project's model (after warm-up, interleaved repetitions)
# --------------------------------------------------------------------------------------------------
def cmd_demo_speed(a):
    import torch

    from acqe_format import AcqeReader
    from recat_runtime.api import cache_config, default_guidance
    from recat_runtime.sampling import denoise_and_decode
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    with AcqeReader(a.model) as r:
        meta = r.metadata
    g = default_guidance(meta)
    pipe = load_pipeline(a.model, device="cpu")
    prompts = ["a red circle in the top left on a white background"] * a.batch
    seeds = list(range(a.batch))
    plans = [("none", cache_config("none", steps=a.steps, budget=None))]
    plans += [(f"uniform N={n}", cache_config("uniform", steps=a.steps, budget=-(-a.steps // n))) for n in a.intervals]
    for b in a.recat_budgets:
        plans.append((f"recat+dec B={b}", cache_config("recat", steps=a.steps, budget=b, metadata=meta, guidance=g)))
    denoise_and_decode(pipe, prompts, steps=3, guidance=g, seeds=seeds)  # warm-up
    times = {label: {"loop": [], "decode": []} for label, _ in plans}
    for _ in range(a.reps):
        for label, cfg in plans:
            _, _, loop_s, dec_s, full = denoise_and_decode(pipe, prompts, steps=a.steps, guidance=g, seeds=seeds,
                                                           config=cfg)
            times[label]["loop"].append(loop_s)
            times[label]["decode"].append(dec_s)
            times[label]["budget"] = len(full)
    rows = [{"label": k, "budget": v["budget"], "loop_s": float(np.median(v["loop"])),
             "decode_s": float(np.median(v["decode"]))} for k, v in times.items()]
    out = {"model": a.model, "steps": a.steps, "batch": a.batch, "threads": a.threads, "reps": a.reps,
           "rows": rows, "load_avg": os.getloadavg()}
    for r in rows:
        print(r, flush=True)
    print("wrote", save_json("cache_demo_speed.json", out))


# --------------------------------------------------------------------------------------------------
# ours vs the deepcache pip helper, interleaved (same pipeline, same seeds)
# --------------------------------------------------------------------------------------------------
def cmd_peer_ab(a):
    import torch
    from DeepCache import DeepCacheSDHelper
    from diffusers import StableDiffusionPipeline

    from acqe_demo.models import build_models, ddim_scheduler
    from recat_runtime.cache import RecatCacheConfig, recat_cache
    from recat_runtime.tokenizer import build_clip_tokenizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    unet, vae, text = build_models()  # the demo model's architecture, random weights
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text.eval(), tokenizer=build_clip_tokenizer(),
                                   unet=unet.eval(), scheduler=ddim_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle in the top left on a white background"] * a.batch

    def run():
        g = [torch.Generator().manual_seed(i) for i in range(a.batch)]
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe(prompts, num_inference_steps=a.steps, guidance_scale=4.0, generator=g,
                       output_type="latent").images
        return time.perf_counter() - t0, out

    times = {"ours": [], "deepcache_pip": []}
    for _ in range(a.reps):
        with recat_cache(pipe, RecatCacheConfig.interval(a.steps, a.interval)):
            t, ours = run()
        times["ours"].append(t)
        h = DeepCacheSDHelper(pipe=pipe)
        h.set_params(cache_interval=a.interval, cache_branch_id=0)
        h.enable()
        try:
            t, peer = run()
        finally:
            h.disable()
        times["deepcache_pip"].append(t)
    t_none, _ = run()
    out = {"steps": a.steps, "interval": a.interval, "batch": a.batch, "threads": a.threads, "reps": a.reps,
           "none_s": t_none, "max_abs_latent_diff": float((ours - peer).abs().max()),
           **{f"{k}_min_s": min(v) for k, v in times.items()},
           **{f"{k}_median_s": float(np.median(v)) for k, v in times.items()}, "load_avg": os.getloadavg()}
    print(out)
    print("wrote", save_json("cache_peer_ab.json", out))


# --------------------------------------------------------------------------------------------------
# peak memory of loading
# --------------------------------------------------------------------------------------------------
_LOAD_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
import recat_runtime.loading as L
from acqe_format import AcqeReader
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
pipe = L.load_pipeline(sys.argv[1], device="cpu", torch_dtype=L.torch_dtype(sys.argv[2]))
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nbytes = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
print(json.dumps({"load_s": dt, "rss_before_kib": base, "rss_peak_kib": peak, "weights_bytes": nbytes,
                  "file_bytes": __import__("os").path.getsize(sys.argv[1])}))
"""


def cmd_load(a):
    out = {}
    for dt in a.dtypes:
        r = subprocess.run([sys.executable, "-c", _LOAD_CHILD, a.model, dt], capture_output=True, text=True,
                           cwd=ROOT, check=True)
        out[dt] = json.loads(r.stdout.strip().splitlines()[-1])
        o = out[dt]
        o["peak_increase_over_weights"] = (o["rss_peak_kib"] - o["rss_before_kib"]) * 1024 / o["weights_bytes"]
        print(dt, o, flush=True)
    print("wrote", save_json("cache_load.json", {"model": a.model, **out}))


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def cmd_report(a):
    qname = "cache_quality_smoke.json" if a.smoke else "cache_quality.json"
    q = _load(qname) if os.path.exists(os.path.join(OUT, qname)) else None
    lines = []
    if q:
        steps = q["steps"]
        full = next(r for r in q["rows"] if r["kind"] == "none")
        has_cls = "prompt_acc" in full
        lines.append(f"Model: {q['model']}; DDIM {steps} steps, guidance {q['guidance']}, branch {q['branch']}, "
                     f"{q['n_images']} images (scenes seed {q.get('eval_seed', 12345)}, image seeds "
                     f"{q.get('seed_base', 1000)}+i), {q['threads']} thread(s).")
        prof = q["profile"]
        lines.append(f"ReCaT profile: {prof.get('samples')} samples, {prof.get('estimator')}, "
                     f"{q['profile_wall_s']:.0f} s.")
        lines.append("")
        hdr = "| schedule | full steps | PSNR vs full, mean / pooled (dB) | median | < 20 dB |"
        sep = "|---|---:|---:|---:|---:|"
        if has_cls:
            hdr += " prompt acc | attribute acc | Fréchet dist |"
            sep += "---:|---:|---:|"
        lines += [hdr, sep]
        for r in q["rows"]:
            ps = "∞ (reference)" if r["kind"] == "none" else f"{r['psnr']:.2f} / {r['psnr_pooled']:.2f}"
            label = r["label"] + (f" ({r['weighting']})" if r.get("weighting") and r["kind"] != "recat" else "")
            med = "–" if r["kind"] == "none" or "psnr_median" not in r else f"{r['psnr_median']:.2f}"
            low = "–" if "below_20db" not in r else str(r["below_20db"])
            line = f"| {label} | {r['budget']} | {ps} | {med} | {low} |"
            if has_cls:
                line += f" {r['prompt_acc']:.3f} | {r['attr_acc']:.3f} | {r['fd']:.2f} |"
            lines.append(line)
        if q.get("reference"):
            ref = q["reference"]
            lines.append("")
            lines.append(f"Real images: prompt acc {ref['real']['prompt']:.3f}; chance {ref['chance']['prompt']:.3f}; "
                         f"FD real vs real {ref['fd_real_vs_real']:.2f}.")
        _plot(q, os.path.join(OUT, "cache_curve_smoke.png") if a.smoke else os.path.join(RESULTS, "cache_curve.png"))
    for name in sorted(os.listdir(OUT)) if os.path.isdir(OUT) else []:
        if name.startswith("cache_speed_"):
            s = _load(name)
            lines.append("")
            lines.append(f"SD v1.4-size stand-in ({s.get('model', 'random init')}; build/load {s['build_s']:.0f} s), {s['res']} px ({s['latent']}² latents), {s['dtype']}, batch "
                         f"{s['batch']} (CFG → {2 * s['batch']}), {s['threads']} threads, {s['steps']} DDIM steps:")
            cached = {k: v for k, v in s.items() if k.startswith("unet_cached_")}
            lines.append(f"UNet full step {s['unet_full_s']:.2f} s; cached step " + ", ".join(
                f"branch {k.split('_b')[1].split('_')[0]}: {v:.3f} s ({100 * v / s['unet_full_s']:.1f}%)"
                for k, v in cached.items()) + f"; VAE decode {s['vae_decode_s']:.2f} s.")
            lines.append("")
            lines.append("| run | full steps | loop s | pipeline s | VAE share | loop speed-up |")
            lines.append("|---|---:|---:|---:|---:|---:|")
            base = s["runs"][0]["loop_s"]
            for r in s["runs"]:
                lines.append(f"| {r['label']} | {r['budget']} | {r['loop_s']:.1f} | {r['pipeline_s']:.1f} | "
                             f"{100 * r['decode_s'] / r['pipeline_s']:.0f}% | {base / r['loop_s']:.2f}× |")
    if os.path.exists(os.path.join(OUT, "cache_demo_speed.json")):
        d = _load("cache_demo_speed.json")
        lines.append("")
        lines.append(f"Project's model on CPU, {d['steps']} DDIM steps, batch {d['batch']} (CFG → {2 * d['batch']}), "
                     f"{d['threads']} thread, median of {d['reps']} interleaved runs after warm-up:")
        lines.append("")
        lines.append("| run | full steps | loop s | VAE decode s | loop speed-up | pipeline speed-up |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        b0 = d["rows"][0]
        for r in d["rows"]:
            lines.append(f"| {r['label']} | {r['budget']} | {r['loop_s']:.2f} | {r['decode_s']:.2f} | "
                         f"{b0['loop_s'] / r['loop_s']:.2f}× | "
                         f"{(b0['loop_s'] + b0['decode_s']) / (r['loop_s'] + r['decode_s']):.2f}× |")
    if os.path.exists(os.path.join(OUT, "cache_peer_ab.json")):
        ab = _load("cache_peer_ab.json")
        lines.append("")
        lines.append(f"Ours vs deepcache pip helper (demo architecture, random weights, DDIM {ab['steps']} steps, "
                     f"interval {ab['interval']}, batch {ab['batch']}, {ab['reps']} interleaved reps, "
                     f"{ab['threads']} thread): max |latent difference| {ab['max_abs_latent_diff']:g}; loop min/median "
                     f"ours {ab['ours_min_s']:.3f}/{ab['ours_median_s']:.3f} s, deepcache "
                     f"{ab['deepcache_pip_min_s']:.3f}/{ab['deepcache_pip_median_s']:.3f} s, no cache {ab['none_s']:.3f} s.")
    if os.path.exists(os.path.join(OUT, "cache_load.json")):
        ld = _load("cache_load.json")
        lines.append("")
        for dt in ("fp32", "bf16"):
            if dt in ld:
                o = ld[dt]
                lines.append(f"load_pipeline ({dt}): {o['load_s']:.2f} s, weights {o['weights_bytes'] / 2**20:.1f} MiB, "
                             f"peak RSS growth {(o['rss_peak_kib'] - o['rss_before_kib']) / 1024:.1f} MiB "
                             f"({o['peak_increase_over_weights']:.2f}× the weights).")
    print("\n".join(lines))


def _plot(q, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in q["rows"] if r["kind"] != "none"]
    full = next(r for r in q["rows"] if r["kind"] == "none")
    has_cls = "prompt_acc" in full
    fig, axes = plt.subplots(1, 4 if has_cls else 2, figsize=(20 if has_cls else 11, 4.5))
    axes = np.atleast_1d(axes)
    style = {"uniform": ("o-", "DeepCache uniform (every N)"), "uniform-b": ("o:", "uniform at ReCaT budgets"),
             "uniform-b+dec": ("h:", "uniform + correction"), "uniform-b+trend": ("*:", "uniform + trend correction"),
             "quadratic": ("s--", "DeepCache non-uniform"), "recat": ("^-", "ReCaT (CKA + DP)"),
             "recat+dec": ("v-", "ReCaT as stored (with its correction)"), "recat-res+dec": ("D-", "ReCaT, residual distance + corr."),
             "recat-sigma+dec": ("P-", "ReCaT, σ-weighted CKA + corr."), "deepcache-pip": ("x", "deepcache pip helper")}
    metrics = [("psnr", "mean PSNR vs full computation (dB)"), ("psnr_pooled", "pooled-MSE PSNR (dB)")]
    if has_cls:
        metrics += [("attr_acc", "attribute accuracy"), ("fd", "Fréchet distance (lower is better)")]
    for ax, (key, title) in zip(axes, metrics):
        for kind, (fmt, label) in style.items():
            rs = sorted([r for r in rows if r["kind"] == kind], key=lambda r: r["budget"])
            if rs:
                ax.plot([r["budget"] for r in rs], [r[key] for r in rs], fmt, label=label)
        if not key.startswith("psnr"):
            ax.axhline(full[key], color="gray", lw=0.8, ls="--", label="no cache")
        peer = next((r for r in rows if r["kind"] == "uniform" and r["label"].endswith("N=5")), None)
        if peer is not None:  # the level the target asks ReCaT to reach with fewer full steps
            ax.axhline(peer[key], color="tab:blue", lw=0.8, ls=":", label="DeepCache N=5 level")
        ax.set_xlabel(f"full UNet steps of {q['steps']} (fewer = faster)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"(plot: {os.path.relpath(path, ROOT)})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sets"]:        # one implementation of the held-out-sets table: bench_recat.py's
        import bench_recat

        return bench_recat.main(["quality", *argv[1:]])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--model", required=True)
    q.add_argument("--steps", type=int, default=50)
    q.add_argument("--guidance", type=float, default=4.0)
    q.add_argument("--n", type=int, default=64)
    q.add_argument("--batch", type=int, default=32)
    q.add_argument("--samples", type=int, default=48)
    q.add_argument("--profile-batch", type=int, default=8)
    q.add_argument("--branch", type=int, default=0)
    q.add_argument("--intervals", type=int, nargs="*", default=[2, 3, 5, 10])
    q.add_argument("--quad-budgets", type=int, nargs="*", default=[7, 10])
    q.add_argument("--recat-budgets", type=int, nargs="*", default=[5, 6, 7, 8, 10])
    q.add_argument("--uniform-budgets", type=int, nargs="*", default=[6, 7, 8])
    q.add_argument("--variant-budgets", type=int, nargs="*", default=[5, 7])
    q.add_argument("--forecast", action="store_true",
                   help="also the uniform / ReCaT schedules with first-order forecasting of the cached feature")
    q.add_argument("--trend-budgets", type=int, nargs="*", default=[],
                   help="uniform schedules with B full steps and the fitted-trend correction")
    q.add_argument("--on-policy-samples", type=int, default=0,
                   help="refit trend corrections on the cached trajectory over this many samples (0: off)")
    q.add_argument("--no-trend", action="store_true", help="profile-cache without the trend candidates")
    q.add_argument("--stored", action="store_true",
                   help="evaluate the schedules already stored in --model (e.g. bench/_out/cache_model.acqe from an "
                        "earlier run) instead of profiling a fresh copy; rows that need profiling moments are skipped")
    q.add_argument("--eval-seed", type=int, default=12345, help="seed of the evaluation scenes (captions)")
    q.add_argument("--seed-base", type=int, default=1000, help="image i uses seed seed-base + i")
    q.add_argument("--out-name", default=None, help="result file in bench/_out (default cache_quality.json)")
    q.add_argument("--peer-interval", type=int, default=5)
    q.add_argument("--peer-intervals", type=int, nargs="*", default=[5])
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--weighting", choices=["auto", "none", "sigma"], default="auto",
                   help="ReCaT schedule choice passed to profile_cache (auto: validated selection)")
    q.add_argument("--validation-samples", type=int, default=16,
                   help="samples for the validated selection (disjoint seeds from profiling and evaluation)")
    q.add_argument("--classifier", default=None, help="classifier weights (default: acqe_demo/weights/classifier.pt)")
    q.add_argument("--smoke", action="store_true", help="tiny run without the demo classifier")
    q.set_defaults(fn=cmd_quality)
    s = sub.add_parser("speed")
    s.add_argument("--res", type=int, default=256)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--reps", type=int, default=2)
    s.add_argument("--branches", type=int, nargs="*", default=[0, 2])
    s.add_argument("--intervals", type=int, nargs="*", default=[5])
    s.add_argument("--recat-budget", type=int, default=0)
    s.add_argument("--model", default=None, help="SD v1.4-size .acqe to load instead of random init")
    s.set_defaults(fn=cmd_speed)
    ds = sub.add_parser("demo-speed")
    ds.add_argument("--model", required=True, help="the project's model with stored ReCaT schedules")
    ds.add_argument("--steps", type=int, default=50)
    ds.add_argument("--batch", type=int, default=8)
    ds.add_argument("--reps", type=int, default=3)
    ds.add_argument("--threads", type=int, default=1)
    ds.add_argument("--intervals", type=int, nargs="*", default=[5])
    ds.add_argument("--recat-budgets", type=int, nargs="*", default=[7])
    ds.set_defaults(fn=cmd_demo_speed)
    ab = sub.add_parser("peer-ab")
    ab.add_argument("--steps", type=int, default=20)
    ab.add_argument("--interval", type=int, default=5)
    ab.add_argument("--batch", type=int, default=16)
    ab.add_argument("--reps", type=int, default=12)
    ab.add_argument("--threads", type=int, default=1)
    ab.set_defaults(fn=cmd_peer_ab)
    ld = sub.add_parser("load")
    ld.add_argument("--model", required=True)
    ld.add_argument("--dtypes", nargs="*", default=["fp32", "bf16"])
    ld.set_defaults(fn=cmd_load)
    r = sub.add_parser("report")
    r.add_argument("--smoke", action="store_true", help="report the smoke run (plot to bench/_out)")
    r.set_defaults(fn=cmd_report)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
