"""stable-diffusion.cpp (a third-party C++ runtime) loads what `acqe export` writes, and generates.

    python bench/bench_sdcpp.py MODEL.acqe --sdcpp-python /tmp/sdcpp-venv/bin/python --work /tmp/sdcpp \
        [--gguf f16 --gguf q8_0 --gguf q4_0] [--safetensors fp16] [--out bench/results/sdcpp.json]

For each export of MODEL (GGUF types, and safetensors for comparison) it runs, in a fresh process of the
interpreter that has `stable-diffusion-cpp-python` installed (it compiles stable-diffusion.cpp from source:
build it once, outside CI), ``StableDiffusion(model_path=...)`` and one 64x64 image in 1 step, and records
the load time, the generation time and the process's peak resident memory. Meant for the full-size SD v1.4
stand-in (`bench/make_standin.py`, then `acqe convert`): with random weights the image is noise; what
counts is that the file loads and runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# runs inside the stable-diffusion-cpp-python interpreter (no project code there)
RUNNER = r"""
import json, resource, sys, time
import stable_diffusion_cpp as sdcpp
path, threads, out_png = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
sd = sdcpp.StableDiffusion(model_path=path, n_threads=threads, verbose=False)
t1 = time.perf_counter()
images = sd.generate_image(prompt="a red circle above a blue square", width=64, height=64, sample_steps=1,
                           cfg_scale=7.0, seed=0)
t2 = time.perf_counter()
images[0].save(out_png)
px = list(images[0].getdata())
print(json.dumps({"load_seconds": round(t1 - t0, 2), "generate_seconds": round(t2 - t1, 2),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "image_size": list(images[0].size), "image_mean": sum(sum(p) for p in px) / (3 * len(px))}))
"""


def export(model: str, work: str, kind: str, type_name: str) -> tuple[str, float]:
    from acqe_export import export_gguf, export_safetensors

    out = os.path.join(work, f"{os.path.splitext(os.path.basename(model))[0]}.{type_name}.{kind}")
    t0 = time.perf_counter()
    if kind == "gguf":
        export_gguf(model, out, type=type_name)
    else:
        export_safetensors(model, out, dtype=type_name)
    return out, time.perf_counter() - t0


def run(python: str, path: str, threads: int) -> dict:
    png = path + ".png"
    proc = subprocess.run([python, "-c", RUNNER, path, str(threads), png], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the .acqe file (SD v1 layout)")
    p.add_argument("--sdcpp-python", required=True, help="python with stable-diffusion-cpp-python installed")
    p.add_argument("--work", required=True, help="folder for the exported files (several GB for SD v1.4)")
    p.add_argument("--gguf", action="append", default=None, help="GGUF types to export and run (repeatable)")
    p.add_argument("--safetensors", action="append", default=None, help="safetensors dtypes (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the exported files")
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    jobs = [("gguf", t) for t in (a.gguf or ["f16", "q8_0", "q4_0"])] + \
           [("safetensors", t) for t in (a.safetensors or ["fp16"])]
    rows = []
    for kind, t in jobs:
        path, export_s = export(a.model, a.work, kind, t)
        row = {"format": kind, "type": t, "file_bytes": os.path.getsize(path), "export_seconds": round(export_s, 1),
               **run(a.sdcpp_python, path, a.threads)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not a.keep:
            os.unlink(path)
    report = {"model": os.path.basename(a.model), "acqe_bytes": os.path.getsize(a.model), "threads": a.threads,
              "rows": rows}
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print("| file | bytes | load s | 64x64, 1 step s | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['format']} {r['type']} | {r['file_bytes']:,} | failed: {r['error'][-1]} | | |")
        else:
            print(f"| {r['format']} {r['type']} | {r['file_bytes']:,} | {r['load_seconds']} | {r['generate_seconds']} | "
                  f"{r['peak_rss_bytes'] / 2**30:.2f} GiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
