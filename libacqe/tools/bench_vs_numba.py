"""Decode every tensor of a file to float16 with libacqe and with the Python reader's numba path, side by side.

    PYTHONPATH=. python libacqe/tools/bench_vs_numba.py /tmp/standin.acqe [--threads 2] [--rounds 3]

Rounds alternate the contenders (numba, C reused buffers, C fresh buffers, C through the CPython extension)
so that a change in machine load hits all of them; each figure is the best of its rounds, wall time with
the file in the page cache. Also reported: CPU seconds (user + sys) of each best round, and the load average.

- numba: `AcqeReader(path).iter_tensors(threads=T, dtype="float16")`, consuming every array.
- C, reused: `libacqe/build/acqe-bench --threads T --dtype f16` (one output buffer per thread, reused).
- C, fresh: the same with `--fresh` (a new malloc per tensor: page faults included, as numba's arrays have).
- C via extension: `_libacqe.File.decode_into` into a new numpy array per tensor, large tensors on T threads,
  small ones T at a time (the GIL is released while decoding).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.dirname(HERE)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def run_numba(path, threads):
    from acqe_format import AcqeReader
    n = 0
    with AcqeReader(path) as r:
        for _name, a in r.iter_tensors(threads=threads, dtype="float16"):
            n += a.size
    return n


def run_c(path, threads, fresh):
    cmd = [os.path.join(LIB, "build", "acqe-bench"), path, "--threads", str(threads), "--dtype", "f16", "--repeat", "1"]
    out = subprocess.run(cmd + (["--fresh"] if fresh else []), check=True, capture_output=True, text=True).stdout
    return int(out.split(": ", 1)[1].split()[0])


def build_ext():
    so = os.path.join(LIB, "build", "_libacqe" + sysconfig.get_config_var("EXT_SUFFIX"))
    srcs = [os.path.join(LIB, "python", "_libacqe.c")] + [os.path.join(LIB, "src", f) for f in
                                                            ("util.c", "float.c", "json.c", "open.c", "decode.c", "file.c")]
    if not os.path.exists(so) or any(os.path.getmtime(s) > os.path.getmtime(so) for s in srcs):
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-std=c99", "-I" + sysconfig.get_paths()["include"],
                        "-I" + LIB, *srcs, "-lz", "-pthread", "-o", so], check=True)
    import importlib.util
    spec = importlib.util.spec_from_file_location("_libacqe", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_ext(ext, path, threads):
    f = ext.File(path)
    rows = f.tensors()
    n = 0

    def one(i, t):
        dt = "float16" if rows[i][3] in ("float32", "float16", "bfloat16", "float64") else None
        out = np.empty(f.output_nbytes(i, dt), np.uint8)
        f.decode_into(i, out, dt, t)
        return rows[i][5]

    small = [i for i, r in enumerate(rows) if r[5] < (1 << 20)]
    for i, r in enumerate(rows):
        if r[5] >= (1 << 20):
            n += one(i, threads)
    with ThreadPoolExecutor(threads) as ex:
        n += sum(ex.map(lambda i: one(i, 1), small))
    f.close()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["make", "-C", LIB, "-s", "build/acqe-bench"], check=True)
    ext = build_ext()
    with open(a.path, "rb") as fh:          # page cache
        while fh.read(1 << 24):
            pass
    contenders = {
        "numba (AcqeReader.iter_tensors)": lambda: run_numba(a.path, a.threads),
        "C, reused buffers (acqe-bench)": lambda: run_c(a.path, a.threads, False),
        "C, fresh buffers (acqe-bench --fresh)": lambda: run_c(a.path, a.threads, True),
        "C via the CPython extension": lambda: run_ext(ext, a.path, a.threads),
    }
    run_numba(a.path, a.threads)            # numba compiles (or loads its cache) once, outside the timing
    best = {k: (float("inf"), 0.0, 0) for k in contenders}
    for _ in range(a.rounds):
        for k, fn in contenders.items():
            c0, t0 = cpu(), time.perf_counter()
            n = fn()
            t, c = time.perf_counter() - t0, cpu() - c0
            if t < best[k][0]:
                best[k] = (t, c, n)
    load = os.getloadavg()
    print(f"{a.path}: {os.path.getsize(a.path):,} bytes; float16 out; {a.threads} threads; best of {a.rounds}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    base = best["numba (AcqeReader.iter_tensors)"][0]
    print("| decoder | values | wall s | CPU s | M values/s | vs numba |")
    print("|---|---|---|---|---|---|")
    for k, (t, c, n) in best.items():
        print(f"| {k} | {n:,} | {t:.2f} | {c:.2f} | {n / t / 1e6:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
