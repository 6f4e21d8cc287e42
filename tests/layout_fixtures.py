"""Tiny checkpoints of every registered layout, as LDM single files and as diffusers folders (offline)."""
from __future__ import annotations

import json
import os

import numpy as np

from acqe_format.model import architectures as A
from acqe_format.model.layouts import diffusers_to_ldm
from recat_runtime.testing import tiny_layout_configs, tiny_layout_models

LAYOUTS = ("stable-diffusion-v1-family", "stable-diffusion-v1-inpainting", "stable-diffusion-2-base",
           "stable-diffusion-2-v", "stable-diffusion-xl-base", "stable-diffusion-xl-refiner")


def numpy_states(models: dict) -> dict:
    return {c: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()} for c, m in models.items()}


def write_ldm(path: str, architecture: str, seed: int = 0, extra: dict | None = None) -> dict:
    """An LDM single-file ``.safetensors`` of the tiny model; adds what real files carry and conversion
    drops on purpose (an EMA copy; SD 2.x's unused last OpenCLIP block and projection; logit_scale).
    Returns the written state dict."""
    from safetensors.numpy import save_file

    arch = A.get(architecture)
    states = numpy_states(tiny_layout_models(architecture, seed))
    sd = diffusers_to_ldm(arch, states)
    rng = np.random.default_rng(seed)
    sd["model_ema.diffusion_modeltime_embed0weight"] = rng.standard_normal((8, 8)).astype(np.float32)
    for comp in arch.openclip:
        prefix = arch.prefixes["ldm"][comp]
        sd[prefix + "logit_scale"] = np.array(4.6, np.float32)
        if arch.family == "sd-v2":       # the real files hold a block and a projection SD 2.x never runs
            last = prefix + "transformer.resblocks.1."
            for k in [k for k in sd if k.startswith(last)]:
                sd[k.replace(".resblocks.1.", ".resblocks.2.")] = rng.standard_normal(sd[k].shape).astype(np.float32)
            sd[prefix + "text_projection"] = rng.standard_normal((64, 64)).astype(np.float32)
    sd.update(extra or {})
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
    return sd


def write_folder(path: str, architecture: str, seed: int = 0) -> None:
    """A diffusers pipeline folder of the tiny model, with the config files diffusers and transformers
    themselves write (every key they save), model_index.json and tokenizer configs."""
    from safetensors.numpy import save_file

    arch = A.get(architecture)
    cfgs = tiny_layout_configs(architecture)
    models = tiny_layout_models(architecture, seed)
    index = {"_class_name": arch.pipeline, "scheduler": ["diffusers", cfgs["scheduler"]["_class_name"]],
             "safety_checker": [None, None] if arch.family == "sdxl" else ["stable_diffusion", "StableDiffusionSafetyChecker"]}
    for comp, model in models.items():
        folder = os.path.join(path, comp)
        os.makedirs(folder)
        sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        name = "model.safetensors" if comp.startswith("text_encoder") else "diffusion_pytorch_model.safetensors"
        save_file(sd, os.path.join(folder, name))
        if comp.startswith("text_encoder"):
            model.config.architectures = [type(model).__name__]
            model.config.save_pretrained(folder)
        else:
            model.save_config(folder)
        index[comp] = ["diffusers" if comp in ("unet", "vae") else "transformers", type(model).__name__]
    os.makedirs(os.path.join(path, "scheduler"))
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(cfgs["scheduler"], f)
    from acqe_format.model.clip_bpe import clip_tokenizer_files

    for tok, pad in arch.pad_tokens.items():
        os.makedirs(os.path.join(path, tok))
        for name, data in clip_tokenizer_files(compact=False, pad_token=pad).items():
            with open(os.path.join(path, tok, name), "wb") as f:
                f.write(data)
        index[tok] = ["transformers", "CLIPTokenizer"]
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump(index, f)


def edit_folder_config(folder: str, component: str, **changes) -> None:
    """Sets fields of ``component/config.json`` in a folder that :func:`write_folder` wrote."""
    import json

    path = os.path.join(folder, component, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w") as f:
        json.dump(cfg, f)
