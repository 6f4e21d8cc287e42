"""ReCaT that users can rely on (issue 15): one profile, any setting, monotone in the budget.

Subcommands (JSON to bench/_out/, tables on stdout):

  quality   per budget B, the quality of `acqe generate --cache recat --full-steps B` (the schedule derived
            from the model's one profile, with its correction) against the full computation, on several
            independent held-out prompt/seed sets, next to uniform caching at the same budget; flags every
            budget whose quality is below a smaller budget's.
  exact     derived (from the model's one profile) vs exactly profiled (a profile made at that step count
            and sampler) at a few budgets per step count.
  img2img   image-to-image (a partial run: the last strength x S steps) with uniform caching and ReCaT at the
            budget fraction B/S, against the uncached image-to-image output.
  controlnet text to image steered by the demo model's layout ControlNet, uniform caching and ReCaT at equal
            budgets, against the uncached ControlNet output; the layout's survival by the readout classifier.
  controlnet-speed  a ControlNet run's time uncached, cached with the whole ControlNet every step, and cached
            with the ControlNet shortened on cached steps.
  overhead  the per-step cost of the hook + correction on a cached step of the demo model (batch 1, CPU):
            a hooked cached UNet call vs the bare shallow forward on the same inputs.

Examples:
  nice -n 10 python bench/bench_recat.py quality --model demo.acqe --budgets 5 6 7 8 9 10 11 12 --sets 3 --n 12
  nice -n 10 python bench/bench_recat.py exact --model demo.acqe --steps 20 25 30 --n 12
  nice -n 10 python bench/bench_recat.py img2img --model demo.acqe --strengths 0.5 0.75 --budgets 7 10
  nice -n 10 python bench/bench_recat.py controlnet --model demo.acqe --budgets 5 7 10 --sets 3 --n 64
  nice -n 10 python bench/bench_recat.py controlnet-speed --model demo.acqe --budget 10 --reps 5
  nice -n 10 python bench/bench_recat.py overhead --model demo.acqe
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_common import OUT, mse_stats, paired_difference, psnr_stats, save_json  # noqa: E402


def monotone_violations(by_budget: dict[int, dict], keys=("psnr", "psnr_pooled"), tol: float = 0.0) -> list[str]:
    """Budgets whose quality (each of ``keys``) is lower than some smaller budget's by more than ``tol`` dB."""
    out = []
    budgets = sorted(by_budget)
    for key in keys:
        best_b, best = None, -np.inf
        for b in budgets:
            v = by_budget[b][key]
            if v < best - tol:
                out.append(f"{key}: B={b} {v:.2f} dB < B={best_b} {best:.2f} dB")
            if v > best:
                best_b, best = b, v
    return out


def _versus_uniform(rows) -> dict:
    """Per budget run with both kinds: ReCaT minus uniform on the same images (all sets pooled), with
    bootstrap intervals and a verdict: "at least uniform" (both point estimates >= 0), "below" (an interval
    entirely under 0), else "below, within noise" (a point estimate under 0 whose interval contains 0)."""
    out = {}
    both = sorted({r["budget"] for r in rows if r["kind"] == "recat"} & {r["budget"] for r in rows if r["kind"] == "uniform"})
    for b in both:
        mse = {kind: np.concatenate([r["mse"] for r in sorted(rows, key=lambda r: r["set"])
                                     if r["kind"] == kind and r["budget"] == b]) for kind in ("recat", "uniform")}
        v = paired_difference(mse["recat"], mse["uniform"])
        if v["mean"] >= 0 and v["pooled"] >= 0:
            v["verdict"] = "at least uniform"
        elif v["mean_ci"][1] < 0 or v["pooled_ci"][1] < 0:
            v["verdict"] = "below"
        else:
            v["verdict"] = "below, within noise"
        out[b] = v
    return out


def _eval_sets(n: int, sets: int, eval_seed: int, seed_base: int = 50_000):
    """``sets`` independent (captions, seeds) sets: scenes ``eval_scenes(n, eval_seed + 101 k)``, seeds
    ``seed_base + 10000 k + i``. The defaults are the held-out sets every recorded result uses; tuning
    runs pass another ``eval_seed`` and ``seed_base`` so that no caption or initial noise is shared."""
    from acqe_demo.dataset import make_caption
    from acqe_demo.metrics import eval_scenes

    return [([make_caption(s) for s in eval_scenes(n, seed=eval_seed + 101 * k)],
             [seed_base + 10_000 * k + i for i in range(n)]) for k in range(sets)]


def _runner(pipe, steps, guidance, batch, inputs=None):
    """``run(captions, seeds, config) -> (uint8 images, refresh steps of the last batch)`` in batches of
    ``batch``; ``inputs(i)``: further `denoise_and_decode` arguments for the batch starting at caption i (an
    initial image, control images)."""
    from recat_runtime.sampling import denoise_and_decode

    def run(captions, seeds, config):
        imgs, fulls = [], None
        for i in range(0, len(captions), batch):
            _, im, _, _, full = denoise_and_decode(pipe, captions[i:i + batch], steps=steps, guidance=guidance,
                                                   seeds=seeds[i:i + batch], config=config,
                                                   **(inputs(i) if inputs is not None else {}))
            imgs.append(np.stack([np.asarray(x.convert("RGB")) for x in im]))
            fulls = full
        return np.concatenate(imgs), list(fulls)

    return run


def _meta(path):
    from acqe_format import AcqeReader

    with AcqeReader(path) as r:
        return r.metadata


def cmd_quality(a):
    import torch

    from recat_runtime.api import cache_config, default_guidance
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    meta = _meta(a.model)
    g = default_guidance(meta) if a.guidance is None else a.guidance
    pipe = load_pipeline(a.model, device="cpu", scheduler=a.sampler)
    pipe.set_progress_bar_config(disable=True)
    run = _runner(pipe, a.steps, g, a.batch)
    uniform_budgets = sorted(set(a.budgets) | {10}) if a.uniform_budgets is None else a.uniform_budgets
    budgets = sorted(set(a.budgets) | set(uniform_budgets))
    rows = []
    t0 = time.perf_counter()
    for k, (captions, seeds) in enumerate(_eval_sets(a.n, a.sets, a.eval_seed, a.seed_base)):
        ref, _ = run(captions, seeds, None)
        for b in budgets:
            kinds = [("recat", cache_config("recat", steps=a.steps, budget=b, metadata=meta, sampler=a.sampler,
                                            guidance=g))] if b in a.budgets else []
            if b in uniform_budgets:
                kinds.append(("uniform", RecatCacheConfig.uniform(a.steps, b)))
            for kind, cfg in kinds:
                imgs, full = run(captions, seeds, cfg)
                st = psnr_stats(imgs, ref, per_image_mse=True)
                rows.append({"set": k, "kind": kind, "budget": b, "full_steps": full, **st})
                print(f"set {k} {kind:8s} B={b:2d}: {st['psnr']:6.2f} / pooled {st['psnr_pooled']:6.2f} dB, "
                      f"<20 dB {st['below_20db']}  {full}", flush=True)
    summary, flags = {}, {}
    for kind in sorted({r["kind"] for r in rows}):
        agg = {}
        for b in sorted({r["budget"] for r in rows if r["kind"] == kind}):
            rs = [r for r in rows if r["kind"] == kind and r["budget"] == b]
            mse = np.concatenate([r["mse"] for r in rs])
            agg[b] = {**mse_stats(mse),        # all sets' images pooled (the sets are equal in size)
                      "per_set": [(round(r["psnr"], 2), round(r["psnr_pooled"], 2)) for r in rs]}
        summary[kind] = agg
        flags[kind] = {"all sets": monotone_violations(agg)}
        for k in range(a.sets):
            per = {r["budget"]: r for r in rows if r["kind"] == kind and r["set"] == k}
            flags[kind][f"set {k}"] = monotone_violations(per)
    print(f"\n{a.sampler}, {a.steps} steps, guidance {g:g}, {a.sets} held-out sets x {a.n} images "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| kind | B | mean PSNR (per set) | pooled PSNR (per set) | mean / pooled all | images < 20 dB |")
    print("|---|---|---|---|---|---|")
    for kind, agg in summary.items():
        for b, s in agg.items():
            ps = " / ".join(f"{m:.2f}" for m, _ in s["per_set"])
            pp = " / ".join(f"{p:.2f}" for _, p in s["per_set"])
            print(f"| {kind} | {b} | {ps} | {pp} | {s['psnr']:.2f} / {s['psnr_pooled']:.2f} | "
                  f"{s['below_20db']} of {s['n']} |")
    for kind, f in flags.items():
        bad = {k: v for k, v in f.items() if v}
        print(f"monotonicity {kind}: " + ("no budget below a smaller one" if not bad else json.dumps(bad)))
    versus = _versus_uniform(rows)
    if versus:
        print("\nReCaT minus uniform at equal budget, all sets (95% paired bootstrap intervals over images):")
        print("| B | mean PSNR difference | pooled PSNR difference | images < 20 dB, ReCaT vs uniform | verdict |")
        print("|---|---|---|---|---|")
        for b, v in versus.items():
            print(f"| {b} | {v['mean']:+.2f} [{v['mean_ci'][0]:+.2f}, {v['mean_ci'][1]:+.2f}] | {v['pooled']:+.2f} "
                  f"[{v['pooled_ci'][0]:+.2f}, {v['pooled_ci'][1]:+.2f}] | {summary['recat'][b]['below_20db']} vs "
                  f"{summary['uniform'][b]['below_20db']} | {v['verdict']} |")
    for r in rows:
        r.pop("mse")
    print("wrote", save_json(a.out_name or f"recat_quality_{a.sampler}_{a.steps}.json",
                         {"model": a.model, "steps": a.steps, "sampler": a.sampler, "guidance": g, "sets": a.sets,
                          "n": a.n, "rows": rows, "summary": summary, "flags": flags, "versus_uniform": versus,
                          "load_avg": os.getloadavg()}))


def cmd_exact(a):
    import torch

    from recat_runtime.api import cache_config, default_guidance, profile_cache
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    meta = _meta(a.model)
    g = default_guidance(meta) if a.guidance is None else a.guidance
    (captions, seeds), = _eval_sets(a.n, 1, a.eval_seed, a.seed_base)
    from acqe_demo.dataset import ShapesDataset, make_caption

    ds = ShapesDataset(seed=7919)
    prompts = [make_caption(ds[i]) for i in range(a.samples + a.validation_samples)]
    rows = []
    for steps in a.steps:
        exact_path = os.path.join(OUT, f"exact_{a.sampler}_{steps}.acqe")
        os.makedirs(OUT, exist_ok=True)
        shutil.copyfile(a.model, exact_path)
        with_meta = dict(meta)
        with_meta.pop("recat", None)
        from acqe_format import replace_metadata

        replace_metadata(exact_path, with_meta)
        t0 = time.perf_counter()
        profile_cache(exact_path, steps=steps, budgets=[], prompts=prompts, samples=a.samples, scheduler=a.sampler,
                      guidance=g, device="cpu", validation_samples=a.validation_samples)
        prof_s = time.perf_counter() - t0
        exact_meta = _meta(exact_path)
        pipe = load_pipeline(a.model, device="cpu", scheduler=a.sampler)
        pipe.set_progress_bar_config(disable=True)
        run = _runner(pipe, steps, g, a.batch)
        ref, _ = run(captions, seeds, None)
        for frac in a.fractions:
            b = max(2, round(frac * steps))
            for kind, m in (("derived", meta), ("exact", exact_meta), ("uniform", None)):
                cfg = (RecatCacheConfig.uniform(steps, b) if m is None else
                       cache_config("recat", steps=steps, budget=b, metadata=m, sampler=a.sampler, guidance=g))
                imgs, full = run(captions, seeds, cfg)
                st = psnr_stats(imgs, ref)
                rows.append({"steps": steps, "budget": b, "kind": kind, "full_steps": full, **st,
                             "profile_s": prof_s if kind == "exact" else None})
                print(f"{a.sampler} S={steps} B={b} {kind:8s}: {st['psnr']:.2f} / pooled {st['psnr_pooled']:.2f} dB "
                      f"<20 dB {st['below_20db']}  {full}", flush=True)
    print("\n| sampler | S | B | derived mean / pooled | exactly profiled mean / pooled | uniform mean / pooled |")
    print("|---|---|---|---|---|---|")
    for steps in a.steps:
        for b in sorted({r["budget"] for r in rows if r["steps"] == steps}):
            d, e, u = (next(r for r in rows if r["steps"] == steps and r["budget"] == b and r["kind"] == k)
                       for k in ("derived", "exact", "uniform"))
            print(f"| {a.sampler} | {steps} | {b} | " + " | ".join(
                f"{r['psnr']:.2f} / {r['psnr_pooled']:.2f}" for r in (d, e, u)) + " |")
    print("wrote", save_json(a.out_name or f"recat_exact_{a.sampler}.json", {"model": a.model, "rows": rows}))


def cmd_img2img(a):
    """Image-to-image with caching on the demo model: each held-out caption turns a rendered scene of
    *another* held-out caption into its own (one scene per batch), at ``--strengths`` (the run executes the
    last strength x S steps); uniform caching and ReCaT with the budget fraction B/S of the whole run,
    against the uncached image-to-image output of the same file, seeds and initial images. ``--controlnet``:
    every run steered by the layout ControlNet too (each caption by its own scene's silhouette)."""
    import torch
    from PIL import Image

    from acqe_demo.dataset import render_scene, render_silhouette
    from acqe_demo.metrics import eval_scenes
    from recat_runtime.api import cache_config, default_guidance
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.loading import load_pipeline
    from recat_runtime.sampling import effective_steps

    torch.set_num_threads(a.threads)
    meta = _meta(a.model)
    g = default_guidance(meta)
    pipe = load_pipeline(a.model, device="cpu", scheduler=a.sampler, img2img=True, controlnet=a.controlnet)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    t0 = time.perf_counter()
    for k, (captions, seeds) in enumerate(_eval_sets(a.n, a.sets, a.eval_seed, a.seed_base)):
        scenes = eval_scenes(a.n, seed=a.eval_seed + 101 * k)
        # batch i starts from the scene of the caption after its first: never an image of its own captions
        inits = [Image.fromarray(render_scene(scenes[(i + a.batch) % a.n])) for i in range(0, a.n, a.batch)]
        # with --controlnet each caption is steered by its own scene's silhouette (the layout ControlNet)
        control = [Image.fromarray(render_silhouette(sc)) for sc in scenes] if a.controlnet else None

        for strength in a.strengths:
            run = _runner(pipe, a.steps, g, a.batch, inputs=lambda i, s=strength: {
                "init_image": inits[i // a.batch], "strength": s,
                **({"control_image": control[i:i + a.batch]} if control else {})})
            ref, _ = run(captions, seeds, None)
            executed = effective_steps(a.steps, strength, True)
            for b in a.budgets:
                for kind, cfg in (("uniform", RecatCacheConfig.uniform(a.steps, b)),
                                  ("recat", cache_config("recat", steps=a.steps, budget=b, metadata=meta,
                                                         sampler=a.sampler, guidance=g,
                                                         controlnet=a.controlnet is not None))):
                    imgs, full = run(captions, seeds, cfg)    # every batch runs the same tail plan
                    n_full = len(full)
                    st = psnr_stats(imgs, ref, per_image_mse=True)
                    rows.append({"set": k, "strength": strength, "budget": b, "kind": kind, "executed": executed,
                                 "full_steps": n_full, **st})
                    print(f"set {k} strength {strength} B={b} {kind:8s}: {st['psnr']:6.2f} / pooled "
                          f"{st['psnr_pooled']:6.2f} dB, <20 dB {st['below_20db']}, {n_full} full of {executed} "
                          f"executed", flush=True)
    print(f"\nimage-to-image, {a.sampler} {a.steps} steps, guidance {g:g}, {a.sets} sets x {a.n} images "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| strength | steps run | B of S | kind | full steps run | mean / pooled PSNR | images < 20 dB | ReCaT - uniform: mean [95% CI] | pooled [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = []
    for strength in a.strengths:
        for b in a.budgets:
            mse = {}
            for kind in ("uniform", "recat"):
                rs = [r for r in rows if r["strength"] == strength and r["budget"] == b and r["kind"] == kind]
                mse[kind] = np.concatenate([r["mse"] for r in rs])
                summary.append({"strength": strength, "budget": b, "kind": kind, "executed": rs[0]["executed"],
                                "full_steps": rs[0]["full_steps"], **mse_stats(mse[kind])})
            v = paired_difference(mse["recat"], mse["uniform"])
            summary[-1]["versus_uniform"] = v
            for r in summary[-2:]:
                diff = (f"{v['mean']:+.2f} [{v['mean_ci'][0]:+.2f}, {v['mean_ci'][1]:+.2f}] | {v['pooled']:+.2f} "
                        f"[{v['pooled_ci'][0]:+.2f}, {v['pooled_ci'][1]:+.2f}]") if r["kind"] == "recat" else " | "
                print(f"| {strength} | {r['executed']} | {b} of {a.steps} | {r['kind']} | {r['full_steps']} | "
                      f"{r['psnr']:.2f} / {r['psnr_pooled']:.2f} | {r['below_20db']} of {r['n']} | {diff} |")
    for r in rows:
        r.pop("mse")
    name = a.out_name or ("recat_img2img_controlnet.json" if a.controlnet else "recat_img2img.json")
    print("wrote", save_json(name, {"model": a.model, "controlnet": a.controlnet, "sampler": a.sampler,
                                    "steps": a.steps, "sets": a.sets,
                                    "n": a.n, "rows": rows, "summary": summary, "load_avg": os.getloadavg()}))


# Plans a ControlNet run can be given, compared in `controlnet --rules` (tuning runs): "recat" is what
# `acqe generate --controlnet` does; the others are candidates. Each is a RecatCacheConfig for DDIM. The
# "cn-" ones plan from a profile of the ControlNet's own trajectories (`--profile-samples` prompts, each with
# its silhouette) instead of the file's text-to-image profile: the optimum with early05 or the plain
# weighting, or DeepCache's steps with that profile's correction.
CONTROLNET_RULES = ("early05", "plain", "uniform-corrected", "cn-early05", "cn-plain", "cn-uniform-corrected")


def _controlnet_rule_config(kind: str, steps: int, budget: int, meta: dict, guidance: float, cn_model=None):
    from recat_runtime.api import cache_config
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache.schedules import uniform_schedule
    from recat_runtime.cache.store import find_model

    if kind == "uniform":
        return RecatCacheConfig.uniform(steps, budget)
    if kind in ("recat", "early05"):        # early05: the text-to-image rule
        return cache_config("recat", steps=steps, budget=budget, metadata=meta, sampler="ddim", guidance=guidance,
                            controlnet=kind == "recat")
    model, profile = find_model(meta, guidance=guidance, branch=None, sampler="ddim", steps=steps)
    branch = int(profile["branch"])
    if kind.startswith("cn-"):      # _controlnet_profile profiles branch 0 (ProfileSettings' default)
        model, kind, branch = cn_model, kind[3:], 0
    refresh_steps = {       # each keeps its profile's correction for the steps it picks
        "early05": lambda ts: model.refresh_steps(ts, budget, "early05"),
        "plain": lambda ts: model.refresh_steps(ts, budget, "none"),
        "uniform-corrected": lambda ts: uniform_schedule(len(ts), budget),      # DeepCache's steps
    }.get(kind)
    if refresh_steps is None:
        raise ValueError(f"unknown ControlNet rule {kind!r}")

    def plan(timesteps, start):
        ts = np.asarray(timesteps, np.float64)
        full = refresh_steps(ts)
        return full, model.correction(ts, full)

    plan.model = model
    return RecatCacheConfig(steps, uniform_schedule(steps, budget), branch=branch, planner=plan)


def _controlnet_profile(pipe, a, guidance):
    """A schedule model (trend correction) profiled on the ControlNet's own trajectories: ``a.profile_samples``
    captions of the scenes ``eval_scenes(n, a.profile_seed)`` (a stream disjoint from the tuning and held-out
    sets), each steered by its silhouette, seeds 0, 1, ... as `acqe convert --profile-cache` profiles."""
    from PIL import Image

    from acqe_demo.dataset import make_caption, render_silhouette
    from acqe_demo.metrics import eval_scenes
    from recat_runtime.cache.continuous import ScheduleModel
    from recat_runtime.cache.profile import ProfileSettings, profile_similarity
    from recat_runtime.sampling import control_inputs, run_timesteps

    scenes = eval_scenes(a.profile_samples, seed=a.profile_seed)
    control = [Image.fromarray(render_silhouette(sc)) for sc in scenes]

    def inputs(first, n):
        return control_inputs(pipe, control[first:first + n], a.control_scale, n)

    t0 = time.perf_counter()
    settings = ProfileSettings(steps=a.steps, guidance=guidance, samples=a.profile_samples,
                               batch_size=a.profile_samples)
    similarity, info = profile_similarity(pipe, [make_caption(sc) for sc in scenes], settings,
                                          collect_moments=True, inputs=inputs)
    print(f"profiled the ControlNet's trajectories: {a.profile_samples} samples, {time.perf_counter() - t0:.1f} s")
    return ScheduleModel(run_timesteps(pipe, a.steps), similarity, info["moments"], "early05", "trend")


def cmd_controlnet(a):
    """Text to image steered by the demo model's layout ControlNet (each held-out caption with its own scene's
    silhouette), uncached vs uniform caching and ReCaT at equal budgets: PSNR against the uncached ControlNet
    output of the same file and seeds, and whether the layout survives caching (the readout classifier's
    position and prompt accuracy on every image set)."""
    import torch
    from PIL import Image

    from acqe_demo import metrics
    from acqe_demo.dataset import render_silhouette
    from recat_runtime.api import default_guidance
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    meta = _meta(a.model)
    g = default_guidance(meta)
    pipe = load_pipeline(a.model, device="cpu", scheduler="ddim", controlnet=a.controlnet)
    pipe.set_progress_bar_config(disable=True)
    classifier = metrics.load_classifier()
    cn_model = _controlnet_profile(pipe, a, g) if any(r.startswith("cn-") for r in a.rules) else None
    rows, layout = [], []
    t0 = time.perf_counter()
    for k, (captions, seeds) in enumerate(_eval_sets(a.n, a.sets, a.eval_seed, a.seed_base)):
        scenes = metrics.eval_scenes(a.n, seed=a.eval_seed + 101 * k)
        control = [Image.fromarray(render_silhouette(sc)) for sc in scenes]

        run = _runner(pipe, a.steps, g, a.batch, inputs=lambda i, c=control: {
            "control_image": c[i:i + a.batch], "control_scale": a.control_scale})

        def read(kind, budget, imgs):
            acc = metrics.prompt_accuracy(scenes, metrics.read_images(classifier, imgs))
            layout.append({"set": k, "kind": kind, "budget": budget, "prompt": acc["prompt"],
                           "position": acc["attr_position"], "n": len(imgs)})

        ref, _ = run(captions, seeds, None)
        read("uncached", a.steps, ref)
        for b in a.budgets:
            for kind in ("uniform", "recat", *a.rules):
                cfg = _controlnet_rule_config(kind, a.steps, b, meta, g, cn_model)
                imgs, full = run(captions, seeds, cfg)
                n_full = len(full)
                st = psnr_stats(imgs, ref, per_image_mse=True)
                read(kind, b, imgs)
                rows.append({"set": k, "budget": b, "kind": kind, "full_steps": n_full, **st})
                print(f"set {k} B={b} {kind:8s}: {st['psnr']:6.2f} / pooled {st['psnr_pooled']:6.2f} dB, "
                      f"<20 dB {st['below_20db']}, position accuracy {layout[-1]['position']:.3f}", flush=True)
    print(f"\nControlNet ({a.controlnet}, scale {a.control_scale:g}), DDIM {a.steps} steps, guidance {g:g}, "
          f"{a.sets} sets x {a.n} images ({time.perf_counter() - t0:.0f} s)")
    print("| B of S | kind | mean / pooled PSNR vs uncached ControlNet | images < 20 dB | position / prompt accuracy "
          "| ReCaT - uniform: mean [95% CI] | pooled [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    acc = lambda kind, b: [r for r in layout if r["kind"] == kind and r["budget"] == b]  # noqa: E731
    pos = lambda rs: (np.average([r["position"] for r in rs], weights=[r["n"] for r in rs]),  # noqa: E731
                      np.average([r["prompt"] for r in rs], weights=[r["n"] for r in rs]))
    p_ref = pos(acc("uncached", a.steps))
    print(f"| {a.steps} of {a.steps} | uncached | (reference) | | {p_ref[0]:.3f} / {p_ref[1]:.3f} | | |")
    summary = []
    for b in a.budgets:
        kinds = ("uniform", "recat", *a.rules)
        mse = {kind: np.concatenate([r["mse"] for r in rows if r["kind"] == kind and r["budget"] == b])
               for kind in kinds}
        for kind in kinds:
            v = None if kind == "uniform" else paired_difference(mse[kind], mse["uniform"])
            st, p_k = mse_stats(mse[kind]), pos(acc(kind, b))
            summary.append({"budget": b, "kind": kind, **st, "position": p_k[0], "prompt": p_k[1],
                            **({"versus_uniform": v} if v is not None else {})})
            diff = (f"{v['mean']:+.2f} [{v['mean_ci'][0]:+.2f}, {v['mean_ci'][1]:+.2f}] | {v['pooled']:+.2f} "
                    f"[{v['pooled_ci'][0]:+.2f}, {v['pooled_ci'][1]:+.2f}]") if v is not None else " | "
            print(f"| {b} of {a.steps} | {kind} | {st['psnr']:.2f} / {st['psnr_pooled']:.2f} | {st['below_20db']} of "
                  f"{st['n']} | {p_k[0]:.3f} / {p_k[1]:.3f} | {diff} |")
    for r in rows:
        r.pop("mse")
    print("wrote", save_json(a.out_name or "recat_controlnet.json",
                             {"model": a.model, "controlnet": a.controlnet, "control_scale": a.control_scale,
                              "steps": a.steps, "sets": a.sets, "n": a.n, "eval_seed": a.eval_seed,
                              "seed_base": a.seed_base, "rules": a.rules,
                              **({"profile_samples": a.profile_samples, "profile_seed": a.profile_seed}
                                 if cn_model is not None else {}),
                              "command": " ".join(["python", *sys.argv]), "rows": rows, "layout": layout,
                              "summary": summary, "load_avg": os.getloadavg()}))


def cmd_overhead(a):
    """Hooked cached step (bookkeeping + correction + shallow forward) vs the bare shallow forward."""
    import torch

    from recat_runtime.api import cache_config, default_guidance
    from recat_runtime.cache import apply_recat_cache, disable_recat_cache
    from recat_runtime.cache.branch import shallow_forward
    from recat_runtime.loading import load_pipeline

    torch.set_num_threads(a.threads)
    meta = _meta(a.model)
    g = default_guidance(meta)
    pipe = load_pipeline(a.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    unet, sched = pipe.unet, pipe.scheduler
    steps = 50
    cfg = cache_config("recat", steps=steps, budget=a.budget, metadata=meta, guidance=g)
    sched.set_timesteps(steps)
    ts = sched.timesteps
    torch.manual_seed(0)
    c = unet.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size)       # batch 1, CFG halves
    ehs = torch.randn(2, 77, c.cross_attention_dim)
    hook = apply_recat_cache(pipe, cfg)
    times_hook, times_bare = [], []
    try:
        with torch.inference_mode():
            for rep in range(a.reps):
                for i, t in enumerate(ts):
                    t0 = time.perf_counter()
                    unet(x, t, ehs)
                    dt = time.perf_counter() - t0
                    if i not in hook.run_full_steps:
                        # the same cached step without the hook: the feature as reused, no correction
                        t1 = time.perf_counter()
                        shallow_forward(unet, hook.plan, hook.feature, x, t, ehs)
                        times_bare.append(time.perf_counter() - t1)
                        times_hook.append(dt)
    finally:
        disable_recat_cache(pipe)
    th, tb = float(np.median(times_hook)), float(np.median(times_bare))
    kind = cfg.planner.model.kind if cfg.planner is not None else ("stored" if cfg.correction is not None else "none")
    res = {"budget": a.budget, "correction": kind, "cached_step_hooked_ms": th * 1e3,
           "cached_step_bare_ms": tb * 1e3, "overhead": (th - tb) / th, "samples": len(times_hook),
           "threads": a.threads, "load_avg": os.getloadavg()}
    print(json.dumps(res, indent=1))
    print("wrote", save_json("recat_overhead.json", res))


SD14_STANDIN = "sd14-standin"
CONTROLNET_RUNS = ("uncached", "cached, whole ControlNet", "cached, ControlNet shortened")


def with_fresh_controlnet(pipe, pipeline_name: str = "StableDiffusionControlNetPipeline"):
    """``pipe`` as a ControlNet pipeline with a ControlNet made from its UNet (``ControlNetModel.from_unet``;
    its conditioning embedding downsamples by the VAE's scale), for timing: the weights do not matter."""
    from diffusers import ControlNetModel

    from recat_runtime.controlnet import controlnet_pipeline

    levels = int(np.log2(pipe.vae_scale_factor)) + 1
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[:levels])
    net = net.to(device=pipe.unet.device, dtype=pipe.unet.dtype).eval()
    out = controlnet_pipeline(pipe, net, pipeline_name)
    out.set_progress_bar_config(disable=True)
    return out


def controlnet_run_times(pipe, *, steps: int, budget: int, guidance: float, height: int, width: int, reps: int,
                         sync=lambda: None) -> dict[str, list[float]]:
    """Denoising seconds of one image (CFG) from a ControlNet pipeline, ``reps`` times each: uncached, uniform
    caching at ``budget`` of ``steps`` applied to the UNet alone (the whole ControlNet every step), and applied
    to the pipeline (the ControlNet shortened on cached steps). One untimed run first; the three interleaved,
    so that a load change hits all alike. ``sync`` waits for a GPU. Shared with `bench/gpu_check.py`."""
    import torch
    from PIL import Image

    from recat_runtime.cache import RecatCacheConfig, apply_recat_cache, disable_recat_cache

    control = Image.new("RGB", (width, height), (255, 255, 255))

    def once(target):
        if target is not None:
            apply_recat_cache(target, RecatCacheConfig.uniform(steps, budget))
        try:
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                pipe("a red circle", image=control, num_inference_steps=steps, guidance_scale=guidance, height=height,
                     width=width, generator=torch.Generator().manual_seed(0), output_type="latent")
            sync()
            return time.perf_counter() - t0
        finally:
            if target is not None:
                disable_recat_cache(target)

    targets = dict(zip(CONTROLNET_RUNS, (None, pipe.unet, pipe)))
    once(None)
    times = {k: [] for k in CONTROLNET_RUNS}
    for _ in range(reps):
        for k, target in targets.items():
            times[k].append(once(target))
    return times


def cmd_controlnet_speed(a):
    """Denoising time of a ControlNet run (batch 1, CFG) uncached, with uniform caching at B of S with the
    whole ControlNet at every step (the cache applied to the UNet alone), and with the ControlNet shortened on
    cached steps (the cache applied to the pipeline: the skip-0 residual only). The weights do not matter
    for time: without ``--controlnet`` a ControlNet made from the model's UNet is used; ``--model
    sd14-standin`` times SD v1.4's shapes with random weights (no file)."""
    import torch

    from recat_runtime.api import default_guidance
    from recat_runtime.loading import load_pipeline
    from recat_runtime.sampling import run_size

    torch.set_num_threads(a.threads)
    if a.model == SD14_STANDIN:
        from bench_cache import _sd14_pipeline

        base, g, name = _sd14_pipeline(torch.float32), 7.5, "StableDiffusionControlNetPipeline"
    else:
        from acqe_format.model import ModelInfo, architectures

        meta = _meta(a.model)
        g, name = default_guidance(meta), architectures.for_file(ModelInfo.from_metadata(meta)).controlnet_pipeline
        base = None if a.controlnet else load_pipeline(a.model, device="cpu")
    if a.controlnet:
        pipe = load_pipeline(a.model, device="cpu", controlnet=a.controlnet)
    else:
        pipe = with_fresh_controlnet(base, name)
    pipe.set_progress_bar_config(disable=True)
    h, w = run_size(pipe, a.height, a.height)
    times = controlnet_run_times(pipe, steps=a.steps, budget=a.budget, guidance=g, height=h, width=w, reps=a.reps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"ControlNet run, batch 1, {h}x{w}, DDIM {a.steps} steps, uniform {a.budget} of {a.steps}, {a.threads} "
          f"thread(s), median of {a.reps}:")
    for k, v in med.items():
        print(f"  {k:30s} {v:7.3f} s  ({med['uncached'] / v:.2f}x)")
    print("wrote", save_json(a.out_name or "recat_controlnet_speed.json",
                             {"model": a.model, "controlnet": a.controlnet, "steps": a.steps, "budget": a.budget,
                              "height": h, "width": w, "threads": a.threads, "seconds": times, "median": med,
                              "load_avg": os.getloadavg()}))


def _held_out_args(p, *, n: int, batch: int) -> None:
    """The options every image-quality subcommand shares: the model, the held-out sets, threads, output."""
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--eval-seed", type=int, default=4242, help="held-out scenes: eval_scenes(n, eval_seed + 101 k)")
    p.add_argument("--seed-base", type=int, default=50_000,
                   help="held-out seeds: seed_base + 10000 k + i (tuning runs: 300000 with --eval-seed 31337)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-name", default=None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    _held_out_args(q, n=12, batch=12)
    q.add_argument("--steps", type=int, default=50)
    q.add_argument("--sampler", default="ddim")
    q.add_argument("--guidance", type=float, default=None)
    q.add_argument("--budgets", type=int, nargs="+", default=list(range(5, 13)))
    q.add_argument("--uniform-budgets", type=int, nargs="*", default=None,
                   help="uniform caching at these budgets (default: every --budgets value, and 10)")
    q.add_argument("--sets", type=int, default=3)
    e = sub.add_parser("exact")
    _held_out_args(e, n=12, batch=12)
    e.add_argument("--steps", type=int, nargs="+", default=[20, 25, 30])
    e.add_argument("--sampler", default="ddim")
    e.add_argument("--guidance", type=float, default=None)
    e.add_argument("--fractions", type=float, nargs="+", default=[0.14, 0.2])
    e.add_argument("--samples", type=int, default=64)
    e.add_argument("--validation-samples", type=int, default=32)
    i = sub.add_parser("img2img")
    _held_out_args(i, n=64, batch=16)
    i.add_argument("--steps", type=int, default=50)
    i.add_argument("--sampler", default="ddim")
    i.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.75])
    i.add_argument("--budgets", type=int, nargs="+", default=[7, 10])
    i.add_argument("--sets", type=int, default=3)
    i.add_argument("--controlnet", default=None,
                   help="a ControlNet folder (acqe_demo/weights/shapes-controlnet): image to image steered by it")
    c = sub.add_parser("controlnet")
    _held_out_args(c, n=64, batch=16)
    c.add_argument("--controlnet", default=os.path.join(ROOT, "acqe_demo", "weights", "shapes-controlnet"))
    c.add_argument("--control-scale", type=float, default=1.0)
    c.add_argument("--steps", type=int, default=50)
    c.add_argument("--budgets", type=int, nargs="+", default=[5, 7, 10])
    c.add_argument("--sets", type=int, default=3)
    c.add_argument("--rules", nargs="*", default=[], choices=CONTROLNET_RULES,
                   help="candidate plans to run beside uniform and ReCaT's (tuning runs: pass --eval-seed "
                        "777878 --seed-base 910000)")
    c.add_argument("--profile-samples", type=int, default=16,
                   help="the cn- rules: samples of the profile of the ControlNet's trajectories")
    c.add_argument("--profile-seed", type=int, default=2468,
                   help="the cn- rules: that profile's scenes, eval_scenes(samples, profile_seed)")
    cs = sub.add_parser("controlnet-speed")
    cs.add_argument("--model", required=True, help=f"a .acqe file, or {SD14_STANDIN!r}")
    cs.add_argument("--controlnet", default=None, help="a ControlNet folder (default: one made from the UNet)")
    cs.add_argument("--steps", type=int, default=50)
    cs.add_argument("--budget", type=int, default=10)
    cs.add_argument("--height", type=int, default=None)
    cs.add_argument("--reps", type=int, default=5)
    cs.add_argument("--threads", type=int, default=1)
    cs.add_argument("--out-name", default=None)
    o = sub.add_parser("overhead")
    o.add_argument("--model", required=True)
    o.add_argument("--budget", type=int, default=7)
    o.add_argument("--reps", type=int, default=3)
    o.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    {"quality": cmd_quality, "exact": cmd_exact, "img2img": cmd_img2img, "controlnet": cmd_controlnet,
     "controlnet-speed": cmd_controlnet_speed, "overhead": cmd_overhead}[a.cmd](a)


if __name__ == "__main__":
    main()
