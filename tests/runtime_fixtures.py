"""Shared helpers for the runtime tests: write a tiny SD-v1-shaped pipeline into a `.acqe` file."""
from __future__ import annotations

import numpy as np

from acqe_format.model.sd_v1 import diffusers_to_ldm
from acqe_format import AcqeWriter, CodebookTensor
from recat_runtime.testing import SCHEDULER_CONFIG, TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG
from recat_runtime.tokenizer import clip_tokenizer_files


def codebook_of(w: np.ndarray, k: int = 16) -> CodebookTensor:
    """A crude k-level codebook with per-row scales (enough to exercise the codec path)."""
    w = np.asarray(w, np.float32)
    rows = w.shape[0]
    flat = w.reshape(rows, -1)
    scales = np.abs(flat).max(axis=1).astype(np.float32)
    scales[scales == 0] = 1.0
    codebook = np.linspace(-1, 1, k).astype(np.float32)
    idx = np.abs(flat[..., None] / scales[:, None, None] - codebook).argmin(-1)
    return CodebookTensor(shape=w.shape, codebook=codebook, indices=idx.reshape(-1).astype(np.uint8),
                          row_scales=scales, row_contexts=None)


def write_tiny_acqe(path, pipe, codebook: bool = True) -> dict[str, np.ndarray]:
    """Writes ``pipe`` (a `tiny_pipeline`) in LDM naming; returns what was written (source names)."""
    sd = diffusers_to_ldm(
        {k: v.detach().numpy() for k, v in pipe.unet.state_dict().items()},
        {k: v.detach().numpy() for k, v in pipe.vae.state_dict().items()},
        {k: v.detach().numpy() for k, v in pipe.text_encoder.state_dict().items()},
    )
    meta = {
        "architecture": "stable-diffusion-v1",
        "naming": "ldm",
        "components": {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                       "text_encoder": "cond_stage_model.transformer."},
        "configs": {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG, "text_encoder": TINY_TEXT_CONFIG,
                    "scheduler": SCHEDULER_CONFIG,
                    "tokenizer": {"files": {n: f"tokenizer/{n}" for n in ("vocab.json", "merges.txt",
                                                                             "tokenizer_config.json")}}},
    }
    written = {}
    with AcqeWriter(path) as w:
        w.set_metadata(meta)
        for name, data in clip_tokenizer_files().items():
            w.add_asset(f"tokenizer/{name}", data)
        for name, arr in sd.items():
            arr = np.asarray(arr)
            if codebook and arr.dtype == np.float32 and arr.ndim >= 2 and arr.size >= 64:
                from acqe_format import reconstruct

                ct = codebook_of(arr)
                w.add_codebook(name, ct)
                written[name] = reconstruct(ct)
            else:
                w.add_raw(name, arr)
                written[name] = arr
    return written
