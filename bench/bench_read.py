"""Read throughput of `.acqe` (RAW and entropy-coded tensors) beside safetensors loading the same
decoded tensors. Reports MB/s of decoded output (10^6 bytes / s), best of `--repeat` runs, with the
files in the page cache (warm), for 1 and 2 threads.

    python bench/bench_read.py [--params 16000000] [--repeat 3] [--tmp DIR]

Every .acqe case is read twice: through libacqe (the C decoder the reader uses by default) and through the
numpy/numba reference decoders (ACQE_PURE_PYTHON=1), in the same run.

Cases (each a set of SD-UNet-like 2-D tensors, ~`--params` parameters in total):
  raw-f16       RAW float16                         vs safetensors float16
  rans-f16      codec 2, K=16, row scales -> float16  vs safetensors of the decoded float16
  rans-f32      codec 2, K=16, row scales -> float32  vs safetensors of the decoded float32
  packed-f16    codec 3, K=16 (4-bit)     -> float16  vs safetensors of the decoded float16
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor


def shapes(params: int):
    base = [(320, 2880), (640, 5760), (1280, 11520), (320, 320), (1280, 1280), (640, 640)]
    out, total, i = [], 0, 0
    while total < params:
        s = base[i % len(base)]
        out.append(s)
        total += s[0] * s[1]
        i += 1
    return out


def codebook_tensor(rng, shape, decoded):
    rows, cols = shape
    # Laplace-like index histogram (~3.3 bits of entropy at K=16), as k-means indices of weights look
    idx = np.clip(np.round(rng.laplace(7.5, 1.6, rows * cols)), 0, 15).astype(np.uint8)
    cb = np.linspace(-1, 1, 16, dtype=np.float32)
    scales = (0.01 + 0.05 * rng.random(rows)).astype(np.float32)
    return CodebookTensor(shape, cb, idx, scales, decoded_dtype=decoded)


def build(tmp, case, params, seed=0):
    rng = np.random.default_rng(seed)
    path = os.path.join(tmp, f"{case}.acqe")
    with AcqeWriter(path) as w:
        for i, s in enumerate(shapes(params)):
            name = f"t{i}"
            if case == "raw-f16":
                w.add_raw(name, (rng.standard_normal(s) * 0.02).astype(np.float16))
            else:
                decoded = "float32" if case.endswith("f32") else "float16"
                w.add_codebook(name, codebook_tensor(rng, s, decoded),
                               codec="packed" if case.startswith("packed") else "rans")
    return path


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return n, best


def read_acqe(path, threads, decoder="c"):
    """Decode every tensor; ``decoder``: "c" (libacqe, the default reader) or "numba" (the reference
    decoders, ACQE_PURE_PYTHON=1)."""
    def run():
        n = 0
        with _decoder(decoder), AcqeReader(path) as r:
            for _name, a in r.iter_tensors(threads=threads):
                n += a.nbytes
        return n
    return run


class _decoder:
    """Readers opened inside use libacqe ("c") or the numpy/numba reference decoders ("numba")."""

    def __init__(self, which):
        self.which = which

    def __enter__(self):
        from acqe_format import native
        self.old = os.environ.get(native.ENV_PURE_PYTHON)
        os.environ[native.ENV_PURE_PYTHON] = "1" if self.which == "numba" else "0"

    def __exit__(self, *exc):
        from acqe_format import native
        if self.old is None:
            os.environ.pop(native.ENV_PURE_PYTHON, None)
        else:
            os.environ[native.ENV_PURE_PYTHON] = self.old


def read_safetensors(path):
    from safetensors.numpy import load_file

    def run():
        return sum(a.nbytes for a in load_file(path).values())
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=16_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        rows = []
        for case in ("raw-f16", "rans-f16", "rans-f32", "packed-f16"):
            path = build(tmp, case, args.params)
            with AcqeReader(path) as r:
                decoded = dict(r.iter_tensors(threads=1))     # also warms the numba cache and page cache
                params = sum(t.numel for t in r.tensors)
            st = os.path.join(tmp, f"{case}.safetensors")
            save_file(decoded, st)
            del decoded
            res = {"case": case, "params": params, "acqe_bytes": os.path.getsize(path),
                   "st_bytes": os.path.getsize(st)}
            for threads in (1, 2):
                for dec in ("c", "numba"):
                    n, dt = timed(read_acqe(path, threads, dec), args.repeat)
                    res[f"{dec}_{threads}t"] = n / dt / 1e6
            n, dt = timed(read_safetensors(st), args.repeat)
            res["safetensors"] = n / dt / 1e6
            res["decoded_bytes"] = n
            rows.append(res)
            print(f"{case}: {res}", flush=True)
        # one large tensor: chunk-parallel rANS decoding + range-parallel reconstruction inside read()
        rng = np.random.default_rng(1)
        one = os.path.join(tmp, "one.acqe")
        with AcqeWriter(one) as w:
            w.add_codebook("t", codebook_tensor(rng, (1280, 11520), "float16"), codec="rans")
        res = {"case": "rans-f16, one 1280x11520 tensor, read(threads)", "params": 1280 * 11520,
               "acqe_bytes": os.path.getsize(one)}
        for dec in ("c", "numba"):
            with _decoder(dec), AcqeReader(one) as r:
                r.read("t", threads=1)
                for threads in (1, 2):
                    n, dt = timed(lambda: r.read("t", threads=threads).nbytes, args.repeat)
                    res[f"{dec}_{threads}t"] = n / dt / 1e6
        st = os.path.join(tmp, "one.safetensors")
        with AcqeReader(one) as r:
            save_file({"t": r.read("t")}, st)
        n, dt = timed(read_safetensors(st), args.repeat)
        res["safetensors"] = n / dt / 1e6
        rows.append(res)
    print()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, numpy {np.__version__}; "
          f"best of {args.repeat}, warm page cache; MB = 10^6 bytes of decoded output")
    print()
    print("| case | params | .acqe bits/param | C (libacqe) 1 / 2 threads MB/s | numba 1 / 2 threads MB/s | "
          "C vs numba, 2 threads | safetensors MB/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['params']:,} | {r['acqe_bytes'] * 8 / r['params']:.3f} | {r['c_1t']:.0f} / "
              f"{r['c_2t']:.0f} | {r['numba_1t']:.0f} / {r['numba_2t']:.0f} | {r['c_2t'] / r['numba_2t']:.2f}x | "
              f"{r['safetensors']:.0f} |")


if __name__ == "__main__":
    main()
