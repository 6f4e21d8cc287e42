"""Train the SDXL-layout demo model: ``python -m acqe_demo.train --model sdxl [--ship]``.

Reuses the v1 demo's trained parts (read from ``acqe_demo/weights/``): its readout classifier (it only
measures quality) and its VAE (SDXL's VAE is an SD v1 ``AutoencoderKL`` too; training another would cost
time and change nothing the demo shows). Trains the UNet and both text encoders jointly with `train.train_unet`
(same loss, schedule, EMA and caption dropout as the v1 demo; a dropped caption is an all-zero embedding and
pooled embedding, which is what ``StableDiffusionXLPipeline`` feeds for an empty negative prompt with
``force_zeros_for_empty_prompt``), with SDXL's size and crop conditioning (`models_sdxl.micro_condition`).
Evaluates at 50 DDIM steps and, with ``--ship``, writes the SDXL single-file checkpoint
``acqe_demo/weights/shapes-sdxl.safetensors`` (fp16, LDM names, diffusers configs in the header's
``acqe_configs``) and its record ``TRAINING-sdxl.md`` / ``training-sdxl.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from . import metrics, models_sdxl
from .checkpoint import clip_text_from_ldm, ldm_to_models, load_ldm_checkpoint
from .training import (WEIGHTS_DIR, Reporter, _curve_summary, evaluate, git_commit, settings_from, train_unet,
                    vae_figures, write_record)

CKPT_NAME = "shapes-sdxl.safetensors"
STAGE_FILE = "unet_stage.json"
V1_CKPT = os.path.join(WEIGHTS_DIR, "shapes-sd.ckpt")
# what a run of about half an hour on 2 shared CPU cores allows (the v1 demo: 6000 steps)
STEPS = 2500


def conditioning(text1, text2, tok1, tok2):
    """`train.train_unet`'s conditioning for SDXL: size/crop time ids, both encoders, zeros when dropped."""
    def condition(scenes, imgs, drop, rng):
        imgs, tids = models_sdxl.micro_condition(imgs, rng)
        emb, pooled = models_sdxl.encode_prompts(text1, text2, tok1, tok2, [sc.caption for sc in scenes])
        keep = torch.tensor([0.0 if d else 1.0 for d in drop])
        return imgs, emb * keep[:, None, None], {"text_embeds": pooled * keep[:, None], "time_ids": tids}

    return condition


def build_pipeline(models: dict, configs: dict):
    """``StableDiffusionXLPipeline`` as `recat_runtime.loading.load_pipeline` builds it (DDIM from the stored
    scheduler config, zeros for an empty negative prompt)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    tok1, tok2 = models_sdxl.tokenizers()
    sched = DDIMScheduler.from_config({k: v for k, v in configs["scheduler"].items() if not k.startswith("_")})
    return StableDiffusionXLPipeline(vae=models["vae"], text_encoder=models["text_encoder"],
                                     text_encoder_2=models["text_encoder_2"], tokenizer=tok1, tokenizer_2=tok2,
                                     unet=models["unet"], scheduler=sched, force_zeros_for_empty_prompt=True,
                                     add_watermarker=False).to("cpu")


def save_checkpoint(path: str, models: dict, configs: dict) -> None:
    """The SDXL single-file layout (``model.diffusion_model.``, ``first_stage_model.``,
    ``conditioner.embedders.0.transformer.``, ``conditioner.embedders.1.model.`` in OpenCLIP's names), fp16."""
    from safetensors.numpy import save_file

    from acqe_format.model.architectures import SHAPES_SDXL
    from acqe_format.model.layouts import diffusers_to_ldm

    states = {c: {k: v.detach().float().numpy() for k, v in m.state_dict().items()} for c, m in models.items()}
    sd = diffusers_to_ldm(SHAPES_SDXL, states)
    # floats in fp16 (what SDXL's own single files hold); integer buffers (position_ids) keep their type
    save_file({k: np.ascontiguousarray(v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in sd.items()},
              path,
              metadata={"acqe_configs": json.dumps(configs, sort_keys=True)})


def load_checkpoint(path: str, dtype: torch.dtype = torch.float32) -> tuple[dict, dict]:
    """``(models by component, configs)`` of a file `save_checkpoint` wrote, via diffusers' single-file converters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                     convert_open_clip_checkpoint)
    from safetensors import safe_open
    from transformers import CLIPTextModelWithProjection

    from acqe_format.model.architectures import SHAPES_SDXL

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        if "acqe_configs" not in meta:
            raise ValueError(f"{path} is not an ACQE SDXL demo checkpoint (no acqe_configs in its header)")
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    configs = json.loads(meta["acqe_configs"])
    unet = UNet2DConditionModel(**configs["unet"])
    unet.load_state_dict(convert_ldm_unet_checkpoint(state, configs["unet"]), strict=True)
    vae = AutoencoderKL(**configs["vae"])
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, configs["vae"]), strict=True)
    text1 = clip_text_from_ldm(state, configs["text_encoder"], SHAPES_SDXL.prefixes["ldm"]["text_encoder"])
    text2 = CLIPTextModelWithProjection(models_sdxl._text_config(configs["text_encoder_2"]))
    sd2 = convert_open_clip_checkpoint(text2, state, prefix=SHAPES_SDXL.prefixes["ldm"]["text_encoder_2"])
    missing, unexpected = text2.load_state_dict({k: v for k, v in sd2.items() if not k.endswith("position_ids")},
                                                strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise ValueError(f"second text encoder keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    models = {"unet": unet, "vae": vae, "text_encoder": text1, "text_encoder_2": text2}
    return {c: (m if dtype == torch.float32 else m.to(dtype)).eval() for c, m in models.items()}, configs


def load_pipeline(path: str):
    models, configs = load_checkpoint(path)
    return build_pipeline(models, configs)


def main(args) -> int:
    # one thread: with another job on the 2 cores, two threads stalled each other (30x slower steps)
    s = settings_from(args, unet_steps=STEPS, threads=1)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    out = args.out or os.path.join("bench", "_out", "shapes-train-sdxl")
    os.makedirs(out, exist_ok=True)
    report = Reporter()
    times, curves = {"classifier": 0.0, "vae": 0.0}, {"classifier": [], "vae": [], "unet": []}
    t_all = time.time()
    print(f"settings: {json.dumps(dataclasses.asdict(s))}", flush=True)

    classifier_path = args.classifier or metrics.CLASSIFIER_FILE
    classifier = metrics.load_classifier(classifier_path)
    v1_state, v1_configs = load_ldm_checkpoint(args.vae or V1_CKPT)
    vae = ldm_to_models(v1_state, v1_configs)[1]
    scaling = float(v1_configs["vae"]["scaling_factor"])
    configs = models_sdxl.default_configs(scaling)
    models = models_sdxl.build_models(configs)
    models["vae"] = vae
    vae_figs = vae_figures(vae, classifier, s)
    tok1, tok2 = models_sdxl.tokenizers()

    if args.trained:      # the UNet stage of an earlier run with the same settings (see `--trained`)
        with open(os.path.join(args.trained, STAGE_FILE)) as f:
            stage = json.load(f)
        for name in ("unet", "text_encoder", "text_encoder_2"):
            models[name] = type(models[name]).from_pretrained(os.path.join(args.trained, name)).eval()
        times["unet"], ema_updates, unet_curve = stage["seconds"], stage["ema_updates"], stage["curve"]
    else:
        t0 = time.time()
        texts = [models["text_encoder"], models["text_encoder_2"]]
        ema = train_unet(s, models["unet"], texts, vae, conditioning(*texts, tok1, tok2), scaling, report,
                         curves["unet"], scheduler_config=configs["scheduler"])
        times["unet"], ema_updates = time.time() - t0, ema.optimization_step
        unet_curve = _curve_summary(curves["unet"])
        for name in ("unet", "text_encoder", "text_encoder_2"):   # fp32, to evaluate / export again without training
            models[name].save_pretrained(os.path.join(out, name))
        with open(os.path.join(out, STAGE_FILE), "w") as f:
            json.dump({"seconds": times["unet"], "ema_updates": ema_updates, "curve": unet_curve,
                       "settings": dataclasses.asdict(s), "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f)

    t0 = time.time()
    pipe = build_pipeline(models, configs)
    evaluation = evaluate(pipe, classifier, s, report, samples_png=os.path.join(out, "samples-sdxl.png"))
    times["eval"] = time.time() - t0
    report.close()
    # the run's wall time; with --trained, plus the reused UNet stage's (what training the model took)
    times["total"] = time.time() - t_all + (times["unet"] if args.trained else 0.0)
    print(f"evaluation: {json.dumps({k: v for k, v in evaluation.items() if k != 'captions_head'})}", flush=True)

    out_dir = WEIGHTS_DIR if args.ship else out
    ckpt_path = os.path.join(out_dir, CKPT_NAME)
    save_checkpoint(ckpt_path, models, configs)
    with open(os.path.join(WEIGHTS_DIR, "training.json")) as f:
        v1 = json.load(f)
    v1_eval = v1["evaluation"]
    record = {
        "command": "python -m acqe_demo.train " + " ".join(sys.argv[1:]), "architecture": models_sdxl.ARCHITECTURE,
        "settings": dataclasses.asdict(s), "commit": git_commit(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "torch": torch.__version__, "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {k: round(v, 1) for k, v in times.items()}, "scaling_factor": scaling, "vae": vae_figs,
        "parameters": {c: sum(p.numel() for p in m.parameters()) for c, m in (*models.items(), ("classifier", classifier))},
        "ckpt_bytes": os.path.getsize(ckpt_path), "evaluation": evaluation, "ema_updates": ema_updates,
        "reused_stages": {"classifier": os.path.relpath(classifier_path), "vae": os.path.relpath(args.vae or V1_CKPT)},
        "notes": ["SDXL base layout scaled down (`acqe_demo/models_sdxl.py`); UNet and both text encoders trained "
                  "here from scratch, jointly, with size/crop conditioning",
                  "the classifier and the VAE are the v1 demo's (trained by `python -m acqe_demo.train`), not "
                  "retrained: their stage times are 0 here",
                  f"{s.unet_steps} UNet steps (the v1 demo: {v1['settings']['unet_steps']}) to fit about half an hour on 2 "
                  "shared CPU cores; the v1 demo's figures for comparison: prompt accuracy "
                  f"{v1_eval['model']['prompt']:.3f}, attribute accuracy {v1_eval['model']['attribute']:.3f}, "
                  f"Fréchet distance {v1_eval['model']['fd']:.2f}",
                  "checkpoint stored in fp16 (safetensors, SDXL single-file names, configs in the header)"],
        "curves": {"classifier": [], "vae": [], "unet": unet_curve},
    }
    if args.trained:
        record["notes"].append(f"UNet stage reused from `{args.trained}` (an earlier run of this script with the "
                               f"same settings, finished {stage.get('finished_utc', '?')}); evaluation and export "
                               "ran here")
    if args.ship:
        import shutil

        shutil.copy(os.path.join(out, "samples-sdxl.png"), os.path.join(WEIGHTS_DIR, "samples-sdxl.png"))
    write_record(os.path.join(out_dir, "TRAINING-sdxl.md"), os.path.join(out_dir, "training-sdxl.json"), record,
                 title="shapes-sdxl")
    print(f"wrote {ckpt_path} ({os.path.getsize(ckpt_path) / 1e6:.2f} MB) and the record in {out_dir}", flush=True)
    return 0
