"""GGUF export: size and fidelity of every `acqe export --type` on a model, read back with gguf-py.

    python bench/bench_gguf.py MODEL.acqe [--out bench/results/gguf_demo.json]

For each type: the GGUF file size, the export time, and how far the GGUF values are from the decoded
`.acqe` (the error the GGUF type adds on top of the `.acqe` coding): SQNR in dB over all floating tensors
(signal = decoded values), over the converted tensors only, and the worst tensor's SQNR.
The numbers in `acqe export --help` come from this script on the demo model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from acqe_export.gguf import GGUF_TYPES, export_gguf, gguf_plan, read_gguf  # noqa: E402
from acqe_format import AcqeReader  # noqa: E402


def _sqnr(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def measure(model: str, type_name: str, folder: str) -> dict:
    out = os.path.join(folder, f"model.{type_name}.gguf")
    t0 = time.perf_counter()
    rep = export_gguf(model, out, type_name)
    seconds = time.perf_counter() - t0
    want = GGUF_TYPES[type_name][0]
    sig = noise = csig = cnoise = 0.0
    worst = float("inf")
    with AcqeReader(model) as r:
        by_name = {p.name: p for p in gguf_plan(r, type_name)}
        for name, gtype, values in read_gguf(out):
            p = by_name[name]
            if not np.issubdtype(values.dtype, np.floating):
                continue
            ref = r.read(p.source, dtype="float32" if p.decoded != "float64" else None).reshape(p.shape)
            ref = ref.astype(np.float64)
            s, n = float(np.sum(ref ** 2)), float(np.sum((values.astype(np.float64) - ref) ** 2))
            sig, noise = sig + s, noise + n
            if gtype == want:
                csig, cnoise = csig + s, cnoise + n
                worst = min(worst, _sqnr(s, n))
    os.unlink(out)
    return {"type": type_name, "file_bytes": rep.file_bytes, "seconds": round(seconds, 2), "types": rep.types,
            "sqnr_db_all": round(_sqnr(sig, noise), 2), "sqnr_db_converted": round(_sqnr(csig, cnoise), 2),
            "worst_tensor_sqnr_db": round(worst, 2) if worst != float("inf") else float("inf")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for t in GGUF_TYPES:
            rows.append(measure(a.model, t, d))
            print(json.dumps(rows[-1]), flush=True)
    report = {"model": os.path.basename(a.model), "acqe_bytes": os.path.getsize(a.model), "rows": rows}
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print("| type | GGUF bytes | added error: SQNR all floats | converted tensors | worst tensor |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['type']} | {r['file_bytes']:,} | {r['sqnr_db_all']} dB | {r['sqnr_db_converted']} dB | "
              f"{r['worst_tensor_sqnr_db']} dB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
