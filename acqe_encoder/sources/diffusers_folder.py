"""A diffusers pipeline folder: `unet/`, `vae/`, `text_encoder/`, `text_encoder_2/` (+ `scheduler/`,
`tokenizer*/`) with their configs.

Tensor names become `<component>.<key>` (naming "diffusers"). Only the files a conversion needs are read:
per component the first weight file of `WEIGHT_FILES` that exists and its `config.json`, plus
`scheduler/scheduler_config.json` and each tokenizer's `tokenizer_config.json` (its pad token). Each must
be a regular file (a symlink to one is fine: Hugging Face cache snapshots link to blobs); a FIFO, a
device, a socket or a dangling link where one is expected is refused in one line.

Components the folder's `model_index.json` names beyond these are read too when they hold weights (the
layout detection then refuses them, or keeps them when asked); the safety checker and its feature
extractor are left out on purpose, and the file records why.
"""
from __future__ import annotations

import os

from acqe_encoder.sources import Entry, Source, read_json_file
from acqe_encoder.sources.files import open_regular, shown
from acqe_format.errors import SourceError

COMPONENTS = {"unet": ("config.json",), "vae": ("config.json",), "text_encoder": ("config.json",),
              "text_encoder_2": ("config.json",)}
TOKENIZERS = ("tokenizer", "tokenizer_2")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")
# model_index.json entries that are not part of generation, and why the file does not carry them
LEFT_OUT = {"safety_checker": "the NSFW safety checker is not part of image generation",
            "feature_extractor": "the safety checker's image preprocessor (no weights)",
            "scheduler": None, "tokenizer": None, "tokenizer_2": None}


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


MAX_VOCAB_FILE = 4 << 20      # CLIP's vocab.json is 1.6 MB, merges.txt 0.5 MB


def _check_vocabulary(folder: str, what: str) -> list:
    """A folder tokenizer's vocabulary must be CLIP's BPE (the one the file embeds for it): a tokenizer with
    other or added tokens is refused in one line, never replaced silently."""
    from acqe_encoder.sources import strict_json
    from acqe_encoder.sources.files import read_bounded
    from acqe_format.model.clip_bpe import differs_from_clip

    read = []
    merges_path, vocab_path = os.path.join(folder, "merges.txt"), os.path.join(folder, "vocab.json")
    merges = vocab = None
    if os.path.lexists(merges_path):
        data, rf = read_bounded(merges_path, MAX_VOCAB_FILE, f"{what}/merges.txt")
        read.append(rf)
        try:
            merges = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{what}/merges.txt: not UTF-8 text") from None
    if os.path.lexists(vocab_path):
        data, rf = read_bounded(vocab_path, MAX_VOCAB_FILE, f"{what}/vocab.json")
        read.append(rf)
        vocab = strict_json.loads(data, f"{what}/vocab.json", 4)
    why = differs_from_clip(merges, vocab) if (merges is not None or vocab is not None) else None
    if why:
        raise SourceError(f"{what}: not CLIP's BPE tokenizer: {why}; .acqe files embed CLIP's")
    return read


def _listed_components(path: str, base: str, files: list) -> list[str]:
    """Component folders `model_index.json` names (an entry whose value is a [library, class] pair)."""
    index = os.path.join(path, "model_index.json")
    if not os.path.lexists(index):
        return []
    data, rf = _config(index, base)
    files.append(rf)
    return [k for k, v in data.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2
            and v[1] is not None]


def open_diffusers_folder(path: str) -> Source:
    from acqe_encoder.sources.ckpt import open_ckpt
    from acqe_encoder.sources.safetensors_file import open_safetensors
    base = shown(os.path.basename(os.path.normpath(path)))
    entries: list[Entry] = []
    configs: dict = {}
    files = []
    closers = []
    dropped, reasons, tokenizers = [], {}, {}
    try:
        listed = _listed_components(path, base, files)
        extra = [c for c in listed if c not in COMPONENTS and c not in LEFT_OUT]
        for c in listed:
            if LEFT_OUT.get(c):
                dropped.append(f"{c}/")
                reasons[f"{c}/"] = LEFT_OUT[c]
        for comp in list(COMPONENTS) + extra:
            d = os.path.join(path, comp)
            if not os.path.isdir(d):
                if os.path.lexists(d):
                    raise SourceError(f"{base}/{comp}: not a directory")
                continue
            name = next((f for f in WEIGHT_FILES if os.path.lexists(os.path.join(d, f))), None)
            if name is None:
                if comp in extra:
                    continue        # a component without weights (e.g. an image processor's settings)
                raise SourceError(f"{base}/{comp}: no weight file ({', '.join(WEIGHT_FILES)})")
            wf = os.path.join(d, name)
            opened = _open(wf, f"{base}/{comp}/{name}")
            sub = open_safetensors(wf, opened) if name.endswith(".safetensors") else open_ckpt(wf, opened)
            closers.append(sub.close)
            files.extend(sub.files)
            for e in sub.entries:
                entries.append(Entry(f"{comp}.{e.name}", e.shape, e.dtype, e.load))
            cfg_path = os.path.join(d, "config.json")
            if os.path.lexists(cfg_path) and comp in COMPONENTS:
                configs[comp], rf = _config(cfg_path, f"{base}/{comp}")
                files.append(rf)
        sched = os.path.join(path, "scheduler", "scheduler_config.json")
        if os.path.lexists(sched):
            configs["scheduler"], rf = _config(sched, f"{base}/scheduler")
            files.append(rf)
        for tok in TOKENIZERS:
            tc = os.path.join(path, tok, "tokenizer_config.json")
            if os.path.lexists(tc):
                tokenizers[tok], rf = _config(tc, f"{base}/{tok}")
                files.append(rf)
            files.extend(_check_vocabulary(os.path.join(path, tok), f"{base}/{tok}"))
        if not entries:
            raise SourceError(f"{base}: a folder without unet/, vae/ or text_encoder/ weights (unknown layout)")
    except BaseException:
        for c in closers:
            c()
        raise
    src = Source(path, "diffusers", entries, {}, configs or None, None, "diffusers", dropped, reasons, tokenizers,
                 files=files)
    src._closers.extend(closers)
    return src
