"""A diffusers pipeline folder: `unet/`, `vae/`, `text_encoder/` (+ `scheduler/`) with their configs.

Tensor names become `unet.<key>`, `vae.<key>`, `text_encoder.<key>` (naming "diffusers"). Only the files
a conversion needs are read: per component the first weight file of `WEIGHT_FILES` that exists and its
`config.json`, plus `scheduler/scheduler_config.json`. Each must be a regular file (a symlink to one is
fine: Hugging Face cache snapshots link to blobs); a FIFO, a device, a socket or a dangling link where one
is expected is refused in one line. Nothing else in the folder is opened, not even for the source hash.
"""
from __future__ import annotations

import os

from acqe_encoder.sources import Entry, Source, read_json_file
from acqe_encoder.sources.files import open_regular, shown
from acqe_format.errors import SourceError

COMPONENTS = {"unet": ("config.json",), "vae": ("config.json",), "text_encoder": ("config.json",)}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")


def _open(path: str, what: str):
    try:
        return open_regular(path, what)
    except FileNotFoundError:
        raise SourceError(f"{what}: a dangling symlink (or removed while reading)") from None


def _config(path: str, what: str):
    try:
        return read_json_file(path, what)
    except FileNotFoundError:
        raise SourceError(f"{what}/{os.path.basename(path)}: a dangling symlink (or removed while reading)") from None


def open_diffusers_folder(path: str) -> Source:
    from acqe_encoder.sources.ckpt import open_ckpt
    from acqe_encoder.sources.safetensors_file import open_safetensors
    base = shown(os.path.basename(os.path.normpath(path)))
    entries: list[Entry] = []
    configs: dict = {}
    files = []
    closers = []
    try:
        for comp in COMPONENTS:
            d = os.path.join(path, comp)
            if not os.path.isdir(d):
                if os.path.lexists(d):
                    raise SourceError(f"{base}/{comp}: not a directory")
                continue
            name = next((f for f in WEIGHT_FILES if os.path.lexists(os.path.join(d, f))), None)
            if name is None:
                raise SourceError(f"{base}/{comp}: no weight file ({', '.join(WEIGHT_FILES)})")
            wf = os.path.join(d, name)
            opened = _open(wf, f"{base}/{comp}/{name}")
            sub = open_safetensors(wf, opened) if name.endswith(".safetensors") else open_ckpt(wf, opened)
            closers.append(sub.close)
            files.extend(sub.files)
            for e in sub.entries:
                entries.append(Entry(f"{comp}.{e.name}", e.shape, e.dtype, e.load))
            cfg_path = os.path.join(d, "config.json")
            if os.path.lexists(cfg_path):
                configs[comp], rf = _config(cfg_path, f"{base}/{comp}")
                files.append(rf)
        sched = os.path.join(path, "scheduler", "scheduler_config.json")
        if os.path.lexists(sched):
            configs["scheduler"], rf = _config(sched, f"{base}/scheduler")
            files.append(rf)
        if not entries:
            raise SourceError(f"{base}: a folder without unet/, vae/ or text_encoder/ weights (unknown layout)")
    except BaseException:
        for c in closers:
            c()
        raise
    src = Source(path, "diffusers", entries, {}, configs or None, None, "diffusers", files=files)
    src._closers.extend(closers)
    return src
