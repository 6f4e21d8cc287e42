"""A diffusers pipeline folder: `unet/`, `vae/`, `text_encoder/` (+ `scheduler/`) with their configs.

Tensor names become `unet.<key>`, `vae.<key>`, `text_encoder.<key>` (naming "diffusers").
"""
from __future__ import annotations

import os

from acqe_encoder.sources import Entry, Source, read_json_file
from acqe_format.errors import SourceError

COMPONENTS = {"unet": ("config.json",), "vae": ("config.json",), "text_encoder": ("config.json",)}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")


def open_diffusers_folder(path: str) -> Source:
    from acqe_encoder.sources.safetensors_file import open_safetensors
    base = os.path.basename(os.path.normpath(path))
    entries: list[Entry] = []
    configs: dict = {}
    closers = []
    for comp in COMPONENTS:
        d = os.path.join(path, comp)
        if not os.path.isdir(d):
            continue
        wf = next((os.path.join(d, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(d, f))), None)
        if wf is None:
            raise SourceError(f"{base}/{comp}: no weight file ({', '.join(WEIGHT_FILES)})")
        if wf.endswith(".safetensors"):
            sub = open_safetensors(wf)
        else:
            from acqe_encoder.sources.ckpt import open_ckpt
            sub = open_ckpt(wf)
        closers.append(sub.close)
        for e in sub.entries:
            entries.append(Entry(f"{comp}.{e.name}", e.shape, e.dtype, e.load))
        cfg_path = os.path.join(d, "config.json")
        if os.path.isfile(cfg_path):
            configs[comp] = read_json_file(cfg_path, f"{base}/{comp}")
    sched = os.path.join(path, "scheduler", "scheduler_config.json")
    if os.path.isfile(sched):
        configs["scheduler"] = read_json_file(sched, f"{base}/scheduler")
    if not entries:
        raise SourceError(f"{base}: a folder without unet/, vae/ or text_encoder/ weights (unknown layout)")
    src = Source(path, "diffusers", entries, {}, configs or None, None, "diffusers")
    src._closers.extend(closers)
    return src
