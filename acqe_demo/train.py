"""Train the built-in demo model from scratch: ``python -m acqe_demo.train``.

Stages (fixed seed, data rendered on the fly from `acqe_demo.dataset`):

1. the readout classifier of `acqe_demo.metrics` (used only to measure quality);
2. the ``AutoencoderKL`` (L1 + MSE reconstruction + a small KL term, bf16 autocast), then its latent
   scaling factor (1 / std of the latents, SD v1 uses 0.18215);
3. the ``UNet2DConditionModel`` and ``CLIPTextModel`` jointly on SD v1's noise schedule (epsilon prediction,
   min-SNR-5 loss weights, caption dropped 10% of the time for classifier-free guidance, EMA weights);
4. evaluation at 50 DDIM steps (prompt accuracy and Fréchet distance in classifier space, chance levels);
5. export: diffusers folders in the scratch directory, and with ``--ship`` the ``sd-v1-4.ckpt``-layout file
   ``acqe_demo/weights/shapes-sd.ckpt``, the classifier weights and the training record (``TRAINING.md``,
   ``training.json``) in ``acqe_demo/weights/``.
"""
import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time

import torch

from . import metrics
from .models import build_models, ddim_scheduler, default_configs
from .training import (WEIGHTS_DIR, Reporter, _curve_summary, evaluate, git_commit, latent_scale, settings_from,
                       train_unet, train_vae, v1_conditioning, vae_figures, write_record)

CKPT_NAME = "shapes-sd.ckpt"


def build_pipeline(unet, vae, text, tokenizer, configs):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=ddim_scheduler(configs), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).to("cpu")

MODELS = ("sd-v1", "sdxl")

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m acqe_demo.train", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sd-v1", help="sd-v1 (default) or sdxl (the SDXL-layout demo model, "
                    "`acqe_demo.train_sdxl`)")
    ap.add_argument("--out", default=None, help="scratch directory (default: bench/_out/shapes-train[-sdxl])")
    ap.add_argument("--ship", action="store_true", help="write the .ckpt, classifier and record into acqe_demo/weights")
    ap.add_argument("--quick", action="store_true", help="tiny run to check the pipeline end to end")
    ap.add_argument("--classifier", default=None, metavar="PATH",
                    help="reuse the classifier an earlier run of this script wrote (same settings) instead of stage 1")
    ap.add_argument("--vae", default=None, metavar="DIR",
                    help="reuse a VAE (diffusers folder) that this script's VAE stage wrote with the same settings")
    ap.add_argument("--trained", default=None, metavar="DIR",
                    help="--model sdxl: evaluate and export the UNet and text encoders an earlier run saved in its "
                         "scratch directory DIR (same settings) instead of training them")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a Settings field")
    args = ap.parse_args(argv)
    if args.model not in MODELS:
        ap.error(f"--model must be one of {', '.join(MODELS)}, not {args.model!r}")
    if args.model == "sdxl":
        from .train_sdxl import main as main_sdxl

        return main_sdxl(args)
    args.out = args.out or os.path.join("bench", "_out", "shapes-train")

    s = settings_from(args)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    os.makedirs(args.out, exist_ok=True)
    from recat_runtime.tokenizer import build_clip_tokenizer

    from .checkpoint import save_ldm_checkpoint

    report = Reporter()
    times, curves = {}, {"classifier": [], "vae": [], "unet": []}
    t_all = time.time()
    print(f"settings: {json.dumps(dataclasses.asdict(s))}", flush=True)

    t0 = time.time()
    if args.classifier:
        classifier = metrics.load_classifier(args.classifier)
        prev = os.path.join(os.path.dirname(args.classifier), "curves_full.json")
        if os.path.isfile(prev):
            with open(prev) as f:
                curves["classifier"] = json.load(f)["classifier"]
        times["classifier"] = 0.0
    else:
        upd = report.stage("classifier", s.classifier_steps)
        classifier = metrics.train_classifier(steps=s.classifier_steps, batch=s.classifier_batch, seed=s.seed + 1,
                                              lr=s.classifier_lr, progress=upd,
                                              log=lambda st, l: curves["classifier"].append([st, l]))
        times["classifier"] = time.time() - t0
    torch.save(classifier.state_dict(), os.path.join(args.out, "classifier.pt"))

    configs = default_configs()
    unet, vae, text = build_models(configs)
    tokenizer = build_clip_tokenizer()

    t0 = time.time()
    if args.vae:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        if os.path.isfile(os.path.join(args.vae, "curve.json")):
            with open(os.path.join(args.vae, "curve.json")) as f:
                curves["vae"] = json.load(f)[: s.vae_steps]
    else:
        train_vae(s, vae, report, curves["vae"])
    scaling = latent_scale(vae, s)
    configs["vae"]["scaling_factor"] = scaling
    vae.register_to_config(scaling_factor=scaling)
    times["vae"] = time.time() - t0
    vae_figs = vae_figures(vae, classifier, s)
    print(f"vae: {vae_figs}, scaling {scaling:.5f}", flush=True)

    t0 = time.time()
    ema = train_unet(s, unet, [text], vae, v1_conditioning(text, tokenizer), scaling, report, curves["unet"])
    times["unet"] = time.time() - t0

    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        m.save_pretrained(os.path.join(args.out, name))
    tokenizer.save_pretrained(os.path.join(args.out, "tokenizer"))

    t0 = time.time()
    pipe = build_pipeline(unet, vae, text, tokenizer, configs)
    evaluation = evaluate(pipe, classifier, s, report, samples_png=os.path.join(args.out, "samples.png"))
    times["eval"] = time.time() - t0
    report.close()
    times["total"] = time.time() - t_all
    print(f"evaluation: {json.dumps({k: v for k, v in evaluation.items() if k != 'captions_head'})}", flush=True)

    ckpt_path = os.path.join(WEIGHTS_DIR if args.ship else args.out, CKPT_NAME)
    save_ldm_checkpoint(ckpt_path, unet, vae, text, configs, global_step=s.unet_steps, ema_decay=s.ema_decay,
                        ema_updates=ema.optimization_step)
    record = {
        "settings": dataclasses.asdict(s), "commit": git_commit(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "torch": torch.__version__, "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {k: round(v, 1) for k, v in times.items()}, "scaling_factor": scaling, "vae": vae_figs,
        "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in
                       (("unet", unet), ("vae", vae), ("text_encoder", text), ("classifier", classifier))},
        "ckpt_bytes": os.path.getsize(ckpt_path), "evaluation": evaluation,
        "reused_stages": {k: v for k, v in (("classifier", args.classifier), ("vae", args.vae)) if v},
        "curves": {k: _curve_summary(v) for k, v in curves.items()},
    }
    out_dir = WEIGHTS_DIR if args.ship else args.out
    if args.ship:
        torch.save(classifier.state_dict(), metrics.CLASSIFIER_FILE)
        shutil.copy(os.path.join(args.out, "samples.png"), os.path.join(WEIGHTS_DIR, "samples.png"))
    write_record(os.path.join(out_dir, "TRAINING.md"), os.path.join(out_dir, "training.json"), record)
    with open(os.path.join(args.out, "curves_full.json"), "w") as f:
        json.dump(curves, f)
    print(f"wrote {ckpt_path} ({os.path.getsize(ckpt_path) / 1e6:.2f} MB) and the record in {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
