"""Throughput of the chunked rANS coder (acqe_format.rans) against constriction on the same data.

    nice -n 10 python bench/bench_rans.py                 # print the table
    nice -n 10 python bench/bench_rans.py --write         # also update the rANS section of bench/RESULTS.md

Data: `--n` indices drawn from a discretised Laplace distribution over K symbols (about 3 bits of
entropy for K = 16, like 4-bit codebook indices of diffusion-model weights), one frequency table,
precision `--precision`, chunks of `--chunk` symbols. constriction codes the same symbols as one
stream with `stream.stack.AnsCoder` and `Categorical(probs, perfect=False)` (its Python API is fixed at
precision 24). Times are the best of `--repeat` runs. `CPU / wall` is the process CPU time over the
wall time of that run: below the thread count when other processes share the cores, and then
"M symbols per CPU-second" is the better measure of the code itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acqe_format import rans  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- bench_rans:start -->", "<!-- bench_rans:end -->"


def laplace_indices(k: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = k / 10
    p = np.exp(-np.abs(np.arange(k) - (k - 1) / 2) / scale)
    return rng.choice(k, n, p=p / p.sum()).astype(np.uint8 if k <= 256 else np.uint16)


def best_of(fn, repeat: int):
    """(best wall seconds, process CPU seconds of that run)."""
    best, cpu = float("inf"), 0.0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu


def row(name, n, t, cpu, bps):
    return (name, f"{n / t / 1e6:.0f}", f"{cpu / t:.2f}", f"{n / cpu / 1e6:.0f}", f"{bps:.4f}")


def run(args) -> list[tuple[str, str, str, str]]:
    idx = laplace_indices(args.k, args.n)
    n = idx.size
    counts = np.bincount(idx, minlength=args.k)
    f = rans.quantize_frequencies(counts, args.precision)
    h = rans.entropy_bits(counts) / n
    rows = []
    enc = rans.encode_chunks(idx, f, None, 1, args.precision, args.chunk)  # also compiles the kernels
    out = np.empty(n, idx.dtype)
    rans.decode_chunks(enc.words, enc.chunk_words, n, f, None, 1, args.precision, args.chunk, out=out)
    assert np.array_equal(out, idx)
    bps = 32 * enc.words.size / n
    for th in args.threads:
        t, cpu = best_of(lambda: rans.encode_chunks(idx, f, None, 1, args.precision, args.chunk, threads=th),
                         args.repeat)
        rows.append(row(f"acqe rans encode, {th} thread{'s' * (th > 1)}", n, t, cpu, bps))
    for th in args.threads:
        t, cpu = best_of(lambda: rans.decode_chunks(enc.words, enc.chunk_words, n, f, None, 1, args.precision,
                                                    args.chunk, out=out, threads=th), args.repeat)
        rows.append(row(f"acqe rans decode, {th} thread{'s' * (th > 1)}", n, t, cpu, bps))
    try:
        import constriction
    except ImportError:
        rows.append(("constriction", "not installed", "", "", ""))
        return rows, h
    sym = idx.astype(np.int32)
    model = constriction.stream.model.Categorical(counts / n, perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(sym, model)
    comp = coder.get_compressed()

    def c_encode():
        c = constriction.stream.stack.AnsCoder()
        c.encode_reverse(sym, model)
        c.get_compressed()

    def c_decode():
        constriction.stream.stack.AnsCoder(comp).decode(model, n)

    assert np.array_equal(constriction.stream.stack.AnsCoder(comp).decode(model, n), sym)
    cbps = 32 * comp.size / n
    t, cpu = best_of(c_encode, args.repeat)
    rows.append(row("constriction AnsCoder encode (1 thread)", n, t, cpu, cbps))
    t, cpu = best_of(c_decode, args.repeat)
    rows.append(row("constriction AnsCoder decode (1 thread)", n, t, cpu, cbps))
    return rows, h


def table(rows, h, args) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"K = {args.k}, n = {args.n:,} symbols, entropy {h:.4f} bits/symbol, precision {args.precision}, "
        f"chunks of {args.chunk:,} symbols; best of {args.repeat}; {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load:.1f} at the end; numpy {np.__version__}, "
        f"numba {numba.__version__}",
        "",
        "| coder | M symbols/s (wall) | CPU / wall | M symbols per CPU-second | bits/symbol |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(body: str, command: str) -> None:
    section = "\n".join([
        START,
        "## rANS entropy coder (`acqe_format/rans.py`)",
        "",
        f"Command: `{command}` (see the docstring of `bench/bench_rans.py`).",
        "",
        body,
        END,
    ])
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--precision", type=int, default=12)
    ap.add_argument("--chunk", type=int, default=1 << 16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--write", action="store_true", help="update the rANS section of bench/RESULTS.md")
    args = ap.parse_args(argv)
    rows, h = run(args)
    body = table(rows, h, args)
    multi = [float(r[2]) for r in rows if "threads" in r[0]]
    if multi and max(multi) < 1.5:
        body += (
            "\n\nThe multi-thread rows got less than 1.5 CPUs on average (CPU / wall above): other processes "
            "were using the cores, so they do not show scaling and their wall-clock figures are not the "
            "speed of the code. \"M symbols per CPU-second\" is. Chunks are independent and the kernels "
            "release the GIL, so with two free cores the 2-thread wall figure should approach twice the "
            "per-CPU-second figure; that was not measured in this run."
        )
    print(body)
    if args.write:
        write_section(body, "nice -n 10 python bench/bench_rans.py --write")


if __name__ == "__main__":
    main()
