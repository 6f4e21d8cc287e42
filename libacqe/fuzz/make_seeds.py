"""Seed files for fuzzing libacqe: small files from the Python writer that reach every decoder path, and two
tiny models converted by `acqe convert` (the real encoder: contexts, chosen precisions, packed tensors,
compressed sections).

    PYTHONPATH=. python libacqe/fuzz/make_seeds.py OUT_DIR

Every file is a few KB, so a fuzzer executes it thousands of times a second.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor


def cbt(rng, shape, k, scales=False, contexts=0, decoded="float32"):
    rows = shape[0] if shape else 1
    numel = int(np.prod(shape)) if shape else 1
    idx = np.minimum(rng.geometric(0.25, numel) - 1, k - 1).astype(np.uint16 if k > 256 else np.uint8)
    cb = np.sort(rng.standard_normal(k)).astype(np.float32)
    sc = (0.5 + rng.random(rows)).astype(np.float32) if scales else None
    ctx = (np.arange(rows) % contexts).astype(np.uint16) if contexts else None
    return CodebookTensor(tuple(shape), cb, idx, sc, ctx, decoded)


def writer_seeds(out: str) -> None:
    rng = np.random.default_rng(12)
    cases = {
        # the four-chunk loop, row contexts and row tables (rows longer than 2K), float16 out
        "rans-4chunks": [("w", cbt(rng, (8, 64), 16, scales=True, contexts=3, decoded="float16"), {"chunk_size": 64})],
        # short rows with scales: per-element reconstruction; bfloat16 and float64 outputs
        "rans-short-rows": [("a", cbt(rng, (16, 5), 40, scales=True, decoded="bfloat16"), {"chunk_size": 16}),
                            ("b", cbt(rng, (4, 7), 9, decoded="float64"), {"chunk_size": 8})],
        # K > 256 (u16 symbols), high precision (no slot table in the fast path), constant tensor
        "rans-k300-p20": [("k", cbt(rng, (6, 50), 300), {"precision": 16, "chunk_size": 100}),
                          ("p", cbt(rng, (3, 40), 5), {"precision": 20, "chunk_size": 32}),
                          ("c", CodebookTensor((5, 5), np.array([1.5], np.float32), np.zeros(25, np.uint8)), {})],
        "packed": [("q", cbt(rng, (5, 13), 7, scales=True), {"codec": "packed"}),
                   ("r", cbt(rng, (2, 3, 3), 300, decoded="float16"), {"codec": "packed"}),
                   ("e", cbt(rng, (0, 4), 3), {"codec": "packed"}),
                   ("s", cbt(rng, (), 2, scales=True), {"codec": "packed"})],
    }
    for name, tensors in cases.items():
        for compress in (False, True):
            path = os.path.join(out, f"seed-{name}{'-z' if compress else ''}.acqe")
            with AcqeWriter(path, compress_sections=compress) as w:
                w.set_metadata({"seed": name, "n": [1, 2.5, None, True], "s": "\u00e9\u4e2d"})
                if compress:
                    w.add_asset("tokenizer/vocab.json", b'{"a":0}')
                for tname, ct, kw in tensors:
                    codec = kw.pop("codec", "rans")
                    w.add_codebook(tname, ct, codec=codec, **kw)
                w.add_raw("bias", rng.standard_normal(7).astype(np.float16))
                w.add_raw("ids", np.arange(5, dtype=np.int64))
                w.add_raw("mask", np.array([True, False]))
                w.add_raw("bf", rng.standard_normal(3).astype(np.float32), dtype="bfloat16")
                w.add_raw("f64", np.array([1e300, -1e-310, np.nan], np.float64))
            AcqeReader(path).verify()


def converted_seeds(out: str) -> None:
    """A tiny 'model' in safetensors, converted by the real encoder."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(3)
    state = {
        "conv.weight": (rng.standard_t(6, (16, 8, 3, 3)) * 0.1).astype(np.float32),
        "proj.weight": (rng.standard_normal((48, 40)) * 0.05).astype(np.float32),
        "proj.bias": (rng.standard_normal(48) * 0.01).astype(np.float32),
        "norm.weight": np.ones(40, np.float32),
        "emb.weight": (rng.standard_normal((64, 24)) * 0.02).astype(np.float16),
        "position_ids": np.arange(16, dtype=np.int64)[None, :],
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "tiny.safetensors")
        save_file(state, src)
        for tag, extra in (("converted", []), ("converted-1.0", ["--format-1.0", "--bits", "3"])):
            dst = os.path.join(out, f"seed-{tag}.acqe")
            cmd = [sys.executable, "-c", "import sys; from acqe_cli.main import main; sys.exit(main())",
                   "convert", src, dst, "--min-numel", "256", "-q"] + extra
            subprocess.run(cmd, check=True, env=dict(os.environ), capture_output=True)
            AcqeReader(dst).verify()


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    writer_seeds(out)
    converted_seeds(out)
    for f in sorted(os.listdir(out)):
        print(f, os.path.getsize(os.path.join(out, f)))


if __name__ == "__main__":
    main(sys.argv[1])
