"""Re-sealing fuzzer, bench size: damaged-but-checksummed metadata, configs, tokenizer assets, ReCaT blocks
and component tensors through load_pipeline, `acqe inspect` and `acqe generate` (tests/reseal_fuzz.py).

    nice -n 15 .venv/bin/python bench/fuzz_reseal.py --cases 10000 --out bench/results/fuzz_reseal.json

Writes the counts and every problem found (tracebacks, hangs, silently wrong weights, memory beyond the
bound) to --out, every 100 cases, so a long run can be read while it goes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=100000, help="first case seed (CI uses 0..)")
    ap.add_argument("--generate-every", type=int, default=20, help="run `acqe generate` on every N-th case")
    ap.add_argument("--chunk", type=int, default=500, help="cases between progress writes")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fuzz_reseal.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import reseal_fuzz as F

    total = {"cases": 0, "loaded": 0, "refused": 0, "problems": 0, "unwritable": 0, "max_rss_growth": 0,
             "seconds": 0.0, "by_kind": {}}
    problems = []
    # re-sealed files go to memory when the machine has /dev/shm (each case writes and fsyncs one file)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        done = 0
        while done < a.cases:
            n = min(a.chunk, a.cases - done)
            res = F.run(n, d, seed0=a.seed + done, generate_every=a.generate_every,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
            c = res["counts"]
            for k in ("cases", "loaded", "refused", "problems", "unwritable", "seconds"):
                total[k] += c.get(k, 0)
            total["max_rss_growth"] = max(total["max_rss_growth"], c["max_rss_growth"])
            for k, v in c["by_kind"].items():
                total["by_kind"][k] = total["by_kind"].get(k, 0) + v
            problems += res["problems"]
            done += n
            os.makedirs(os.path.dirname(a.out), exist_ok=True)
            with open(a.out, "w") as f:
                json.dump({"seeds": [a.seed, a.seed + done], "rss_bound": "256 MiB + 64 x file bytes",
                           "counts": total, "problems": problems}, f, indent=1, default=str)
            print(json.dumps(total), file=sys.stderr, flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
