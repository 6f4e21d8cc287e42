"""Fuzz `acqe convert` with the hostile-checkpoint corpus (issue 11 item 6, bench size).

    nice -n 15 python bench/fuzz_convert.py --mutations 12000 [--seed 0] [--workers 1] [--json out.json]

Cases come from `tests/hostile_checkpoints.py` (seeds, every hand-written attack, then `--mutations`
seeded mutations: random well-formed checkpoints, pickle byte mutations inside valid zips, zip-level
damage, safetensors header damage, random diffusers folders), plus valid 4 and 32 MiB checkpoints. Each
is judged in a worker process by `hostile_checkpoints.judge`: `acqe convert --lossless` in-process
against torch.load(weights_only=True) / safetensors, with a 20 s alarm (+2 s per MiB of input); the
parent kills a worker that gives no answer within --hard-timeout and counts a hang, and counts a worker
that dies as a crash. Peak RSS growth per case comes from /proc/self/status (VmHWM,
reset before each case through /proc/self/clear_refs).

Prints: cases, tracebacks, hangs, crashes, silently wrong values, conversions of inputs the reference
refuses, expectation mismatches, malformed error output, and peak memory against the input size (the
stated bound: 64 MiB + 32 x input bytes, `hostile_checkpoints.memory_bound`).
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def case_timeout(base: float, size: int) -> float:
    """Seconds a case may take before it counts as a hang: `base`, plus 2 s per MiB of input (the 32 MiB
    valid checkpoints legitimately take several seconds on a loaded machine)."""
    return base + 2.0 * size / (1 << 20)


def _worker(conn, workdir: str, timeout: float) -> None:
    import hostile_checkpoints as H
    warm = True
    while True:
        msg = conn.recv()
        if msg is None:
            return
        case = msg
        work = os.path.join(workdir, "w")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        if warm:            # first conversion in this process: imports and JIT outside any measurement
            H.judge(case, work, timeout=timeout * 3)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            warm = False
        # the parent hears when the conversion is done and torch's reader (the reference) starts
        o = H.judge(case, work, timeout=case_timeout(timeout, case.size),
                    before_reference=lambda: conn.send({"stage": "reference"}))
        conn.send(o.__dict__)


class Pool:
    """Workers that each judge one case at a time; a stuck or dead worker is replaced."""

    def __init__(self, n: int, timeout: float, hard_timeout: float):
        self.ctx = mp.get_context("spawn")
        self.timeout, self.hard = timeout, hard_timeout
        self.slots = [self._start() for _ in range(n)]

    def _start(self):
        d = tempfile.mkdtemp(prefix="fuzz-convert-")
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, d, self.timeout), daemon=True)
        p.start()
        return {"p": p, "conn": parent, "dir": d, "case": None, "t0": 0.0, "stage": None}

    def _stop(self, s, kill=False):
        if kill:
            s["p"].kill()
        else:
            try:
                s["conn"].send(None)
            except OSError:
                pass
        s["p"].join(5)
        shutil.rmtree(s["dir"], ignore_errors=True)

    def run(self, cases, on_result):
        it = iter(cases)
        busy = 0
        done = False
        while True:
            for i, s in enumerate(self.slots):
                if s["case"] is None and not done:
                    try:
                        c = next(it)
                    except StopIteration:
                        done = True
                        continue
                    s["case"], s["t0"], s["stage"] = c, time.time(), None
                    s["conn"].send(c)
                    busy += 1
            if busy == 0 and done:
                break
            for i, s in enumerate(self.slots):
                c = s["case"]
                if c is None:
                    continue
                if s["conn"].poll(0.05):
                    try:
                        r = s["conn"].recv()
                    except (EOFError, OSError):
                        r = {"name": c.name, "verdict": "crash", "detail": "worker died", "size": c.size}
                        self._stop(s, kill=True)
                        self.slots[i] = s = self._start()
                    if "stage" in r:            # the conversion is judged; torch's reader runs now
                        s["stage"] = r["stage"]
                        continue
                    on_result(c, r)
                    s["case"] = None
                    busy -= 1
                elif not s["p"].is_alive():
                    on_result(c, {"name": c.name, "verdict": "crash", "detail": f"worker exit {s['p'].exitcode}",
                                  "size": c.size})
                    self._stop(s, kill=True)
                    self.slots[i] = self._start()
                    busy -= 1
                elif time.time() - s["t0"] > case_timeout(self.hard, c.size):
                    # stuck in torch's reader after acqe gave its answer: the oracle's hang, not ours
                    verdict = "reference-hang" if s["stage"] == "reference" else "hang"
                    on_result(c, {"name": c.name, "verdict": verdict,
                                  "detail": f"killed after {case_timeout(self.hard, c.size):.0f} s", "size": c.size})
                    self._stop(s, kill=True)
                    self.slots[i] = self._start()
                    busy -= 1

    def close(self):
        for s in self.slots:
            self._stop(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutations", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="per-case alarm inside the worker (s), plus 2 s per MiB of input")
    ap.add_argument("--hard-timeout", type=float, default=90.0,
                    help="per-case kill from the parent (s), plus 2 s per MiB of input")
    ap.add_argument("--no-large", action="store_true", help="skip the 4 and 32 MiB valid checkpoints")
    ap.add_argument("--json", help="write the counts and every bad case here")
    args = ap.parse_args(argv)
    import hostile_checkpoints as H

    counts = collections.Counter()
    bad, stricter = [], collections.Counter()
    worst = {"ratio": 0.0, "growth": 0, "name": "", "size": 0}
    worst_large = {"ratio": 0.0, "growth": 0, "name": "", "size": 0}     # inputs of 1 MiB and more
    worst_abs = {"growth": 0, "name": "", "size": 0}
    over_bound = 0
    seconds = 0.0
    t0 = time.time()

    def on_result(case, r):
        nonlocal over_bound, seconds
        counts[r["verdict"]] += 1
        counts["cases"] += 1
        seconds += r.get("seconds", 0.0)
        g, size = r.get("rss_growth", 0), max(r.get("size", case.size), 1)
        if g > worst_abs["growth"]:
            worst_abs.update(growth=g, name=case.name, size=size)
        if g / size > worst["ratio"]:
            worst.update(ratio=g / size, growth=g, name=case.name, size=size)
        if size >= 1 << 20 and g / size > worst_large["ratio"]:
            worst_large.update(ratio=g / size, growth=g, name=case.name, size=size)
        if g > H.memory_bound(size):
            over_bound += 1
        if r["verdict"] in H.BAD_VERDICTS + ("crash",):
            bad.append(r)
            print(f"BAD {r['verdict']}: {case.name}: {r.get('detail', '')[:300]}", flush=True)
        elif r["verdict"] == "refused-loadable":
            stricter[r.get("detail", "").split(": ", 1)[0]] += 1
        if counts["cases"] % 1000 == 0:
            print(f"{counts['cases']:,} cases, {time.time() - t0:.0f} s: {dict(counts)}", flush=True)

    pool = Pool(args.workers, args.timeout, args.hard_timeout)
    try:
        import itertools
        cases = H.corpus(seed=args.seed, mutations_n=args.mutations)
        pool.run(cases if args.no_large else itertools.chain(H.large_seeds(), cases), on_result)
    finally:
        pool.close()
    wall = time.time() - t0
    n = counts["cases"]
    summary = {
        "command": " ".join(["python", "bench/fuzz_convert.py"] + (argv if argv is not None else sys.argv[1:])),
        "cases": n, "wall_seconds": round(wall, 1), "convert_seconds": round(seconds, 1),
        "tracebacks": counts["traceback"], "hangs": counts["hang"], "crashes": counts["crash"],
        "reference_hangs": counts["reference-hang"],
        "silently_wrong_values": counts["wrong"], "accepted_what_reference_refuses": counts["accepted-refused"],
        "expectation_mismatches": counts["expect-mismatch"], "malformed_error_output": counts["bad-error"],
        "over_memory_bound": over_bound,
        "converted_equal_to_reference": counts["converted"], "converted_unchecked": counts["converted-unchecked"],
        "refused": counts["refused"], "refused_where_reference_loads": counts["refused-loadable"],
        "refused_loadable_without_documented_reason": counts["refused-unexplained"],
        "max_peak_rss_growth_bytes": worst_abs["growth"], "max_peak_rss_growth_case": worst_abs["name"],
        "max_growth_per_input_byte": round(worst["ratio"], 2), "max_ratio_case": worst["name"],
        "max_ratio_case_growth_bytes": worst["growth"], "max_ratio_case_input_bytes": worst["size"],
        "max_growth_per_input_byte_inputs_over_1MiB": round(worst_large["ratio"], 2),
        "max_ratio_case_over_1MiB": worst_large["name"], "max_ratio_case_over_1MiB_growth_bytes": worst_large["growth"],
        "memory_bound": "peak RSS growth <= 64 MiB + 32 x input bytes",
        "refused_where_reference_loads_by_reason": dict(stricter.most_common()),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary, bad=bad), f, indent=1)
    return 1 if bad or over_bound else 0


if __name__ == "__main__":
    sys.exit(main())
